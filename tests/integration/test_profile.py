"""GET and PUT /api/v1/users/{id}/profile."""
import json
import uuid

import pytest

from conftest import NEVER_ISSUED_ID, RFC3339, admin, assert_problem, ident, unchanged

ADDRESS = {"line1": "1 Infinite Loop", "city": "Cupertino", "postal_code": "95014",
           "country": "US"}
PROFILE = {"phone": "+14155550100", "address": ADDRESS}
EMPTY = {"phone": None, "address": None, "updated_at": None}


def path(uid):
    return f"/api/v1/users/{uid}/profile"


def put(server, uid, doc=None, raw=None, who=None, ctype="application/json"):
    h = {"Content-Type": ctype, **(who if who is not None else ident(uid))}
    data = raw if raw is not None else json.dumps(doc).encode()
    return server.request("PUT", path(uid), data=data, headers=h)


def stored(server, uid):
    return server.db.query("SELECT * FROM user_profiles WHERE user_id = ?", [uid])


@pytest.fixture(scope="module")
def owner(server):
    """A user with PROFILE stored; tests using it must leave it unchanged."""
    user = server.create_user()
    assert put(server, user["id"], PROFILE).status_code == 200
    return user


def test_profile_is_all_null_before_any_put(server):
    user = server.create_user()
    r = server.get(path(user["id"]), user=user["id"])
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.json() == EMPTY


def test_put_stores_and_get_reads_it(server):
    user = server.create_user()
    r = put(server, user["id"], PROFILE)
    assert r.status_code == 200, r.text
    got = r.json()
    assert RFC3339.match(got.pop("updated_at")), r.text
    assert got == PROFILE
    assert server.get(path(user["id"]), user=user["id"]).json() == r.json()
    assert len(stored(server, user["id"])) == 1


def test_put_replaces_the_whole_profile(server):
    user = server.create_user()
    put(server, user["id"], PROFILE)
    r = put(server, user["id"], {"phone": "+4930123456"})
    assert r.status_code == 200, r.text
    assert r.json()["phone"] == "+4930123456" and r.json()["address"] is None
    r = put(server, user["id"], {"address": ADDRESS})
    assert r.json()["phone"] is None and r.json()["address"] == ADDRESS
    r = put(server, user["id"], {})
    doc = r.json()
    assert r.status_code == 200 and doc["phone"] is None and doc["address"] is None
    assert RFC3339.match(doc["updated_at"])
    assert server.get(path(user["id"]), user=user["id"]).json() == doc


def test_put_accepts_explicit_nulls_and_boundary_values(server):
    user = server.create_user()
    r = put(server, user["id"], {"phone": None, "address": None})
    assert r.status_code == 200 and r.json()["address"] is None
    edge = {"line1": "x" * 200, "city": "ü" * 100, "postal_code": "SW1A 1AA-123"[:12],
            "country": "GB"}
    r = put(server, user["id"], {"phone": "+123456789012345", "address": edge})
    assert r.status_code == 200, r.text
    assert r.json()["address"] == edge and r.json()["phone"] == "+123456789012345"


def test_admin_reads_and_writes_any_profile(server):
    user = server.create_user()
    r = put(server, user["id"], PROFILE, who=admin())
    assert r.status_code == 200
    assert server.get(path(user["id"]), headers=admin()).json() == r.json()


BAD_PROFILES = [
    ("phone-number-type", {"phone": 14155550100}, 400, "phone"),
    ("address-string", {"address": "1 Main St"}, 400, "address"),
    ("address-array", {"address": [ADDRESS]}, 400, "address"),
    ("unknown-top-field", {"phone": "+14155550100", "fax": "+14155550101"}, 400, "fax"),
    ("unknown-nested-field", {"address": {**ADDRESS, "foo": "bar"}}, 400, "address.foo"),
    ("nested-wrong-type", {"address": {**ADDRESS, "city": 5}}, 400, "address.city"),
    ("nested-null", {"address": {**ADDRESS, "line1": None}}, 400, "address.line1"),
    ("phone-no-plus", {"phone": "14155550100"}, 422, "phone"),
    ("phone-letters", {"phone": "+1415555CALL"}, 422, "phone"),
    ("phone-too-long", {"phone": "+1234567890123456"}, 422, "phone"),
    ("phone-too-short", {"phone": "+123456"}, 422, "phone"),
    ("phone-leading-zero", {"phone": "+0415555010"}, 422, "phone"),
    ("phone-spaces", {"phone": "+1 415 555 0100"}, 422, "phone"),
    ("phone-empty", {"phone": ""}, 422, "phone"),
    ("missing-line1", {"address": {k: v for k, v in ADDRESS.items() if k != "line1"}},
     422, "address.line1"),
    ("missing-country", {"address": {k: v for k, v in ADDRESS.items() if k != "country"}},
     422, "address.country"),
    ("empty-address", {"address": {}}, 422, "address.city"),
    ("country-lowercase", {"address": {**ADDRESS, "country": "us"}}, 422, "address.country"),
    ("country-alpha3", {"address": {**ADDRESS, "country": "USA"}}, 422, "address.country"),
    ("country-digits", {"address": {**ADDRESS, "country": "12"}}, 422, "address.country"),
    ("postal-empty", {"address": {**ADDRESS, "postal_code": ""}}, 422, "address.postal_code"),
    ("postal-13", {"address": {**ADDRESS, "postal_code": "1" * 13}}, 422,
     "address.postal_code"),
    ("postal-symbols", {"address": {**ADDRESS, "postal_code": "95014!"}}, 422,
     "address.postal_code"),
    ("line1-201", {"address": {**ADDRESS, "line1": "x" * 201}}, 422, "address.line1"),
    ("line1-empty", {"address": {**ADDRESS, "line1": ""}}, 422, "address.line1"),
    ("line1-newline", {"address": {**ADDRESS, "line1": "1 Main\nSt"}}, 422, "address.line1"),
    ("city-101", {"address": {**ADDRESS, "city": "c" * 101}}, 422, "address.city"),
    ("city-leading-space", {"address": {**ADDRESS, "city": " Paris"}}, 422, "address.city"),
]


@pytest.mark.parametrize("doc,status,field", [c[1:] for c in BAD_PROFILES],
                         ids=[c[0] for c in BAD_PROFILES])
def test_put_rejects_bad_profiles_and_keeps_the_stored_one(server, owner, doc, status, field):
    before = stored(server, owner["id"])
    assert len(before) == 1
    with unchanged(server.db):
        assert_problem(put(server, owner["id"], doc), status, field)


def test_put_reports_every_invalid_nested_field(server, owner):
    user = owner
    bad = {"phone": "555", "address": {"line1": "", "city": "Lyon", "postal_code": "?",
                                       "country": "fr"}}
    with unchanged(server.db):
        doc = assert_problem(put(server, user["id"], bad), 422)
    assert {e["field"] for e in doc["errors"]} == {
        "phone", "address.line1", "address.postal_code", "address.country"}


@pytest.mark.parametrize("raw", [b'{"phone": ', b"[]", b'"x"',
                                 b'{"phone": "+14155550100", "phone": null}'],
                         ids=["truncated", "array", "string", "duplicate-key"])
def test_put_rejects_malformed_json(server, owner, raw):
    with unchanged(server.db):
        assert_problem(put(server, owner["id"], raw=raw), 400, "body")


def test_put_rejects_non_json_with_415(server, owner):
    with unchanged(server.db):
        assert_problem(put(server, owner["id"], {"phone": None}, ctype="text/plain"), 415)


@pytest.mark.parametrize("method", ["GET", "PUT"])
@pytest.mark.parametrize("who,status", [
    ({}, 401),
    ({"X-User-Id": "not-a-uuid", "X-User-Role": "customer"}, 401),
    ({"X-User-Id": str(uuid.uuid4()), "X-User-Role": "guest"}, 401),
    (ident(str(uuid.uuid4())), 403),
], ids=["anonymous", "bad-id", "bad-role", "other-customer"])
def test_profile_needs_identity_and_ownership(server, owner, method, who, status):
    with unchanged(server.db):
        r = server.request(method, path(owner["id"]), headers=who,
                           json={"phone": None} if method == "PUT" else None)
        assert_problem(r, status)
        assert "Cupertino" not in r.text


@pytest.mark.parametrize("method", ["GET", "PUT"])
@pytest.mark.parametrize("uid", [NEVER_ISSUED_ID, "nope"])
def test_profile_of_unknown_user_is_404(server, method, uid):
    with unchanged(server.db):
        r = server.request(method, path(uid), headers=admin(),
                           json=PROFILE if method == "PUT" else None)
        assert_problem(r, 404)
