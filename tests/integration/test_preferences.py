"""GET and PUT /api/v1/users/{id}/preferences."""
import json
import uuid

import pytest

from conftest import NEVER_ISSUED_ID, RFC3339, admin, assert_problem, ident, unchanged

DEFAULTS = {"language": "en", "currency": "USD", "marketing_emails": False, "updated_at": None}
PREFS = {"language": "pt-BR", "currency": "EUR", "marketing_emails": True}


def path(uid):
    return f"/api/v1/users/{uid}/preferences"


def put(server, uid, doc=None, raw=None, who=None, ctype="application/json"):
    h = {"Content-Type": ctype, **(who if who is not None else ident(uid))}
    data = raw if raw is not None else json.dumps(doc).encode()
    return server.request("PUT", path(uid), data=data, headers=h)


def stored(server, uid):
    return server.db.query("SELECT * FROM user_preferences WHERE user_id = ?", [uid])


def without_time(doc):
    assert RFC3339.match(doc["updated_at"] or ""), doc
    return {k: v for k, v in doc.items() if k != "updated_at"}


@pytest.fixture(scope="module")
def owner(server):
    """A user with PREFS stored; tests using it must leave them unchanged."""
    user = server.create_user()
    assert put(server, user["id"], PREFS).status_code == 200
    return user


def test_defaults_before_any_put(server):
    user = server.create_user()
    r = server.get(path(user["id"]), user=user["id"])
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.json() == DEFAULTS
    assert stored(server, user["id"]) == []


def test_put_stores_and_get_reads_it(server):
    user = server.create_user()
    r = put(server, user["id"], PREFS)
    assert r.status_code == 200, r.text
    assert without_time(r.json()) == PREFS
    assert server.get(path(user["id"]), user=user["id"]).json() == r.json()
    assert len(stored(server, user["id"])) == 1


def test_omitted_fields_reset_to_defaults(server):
    user = server.create_user()
    put(server, user["id"], PREFS)
    r = put(server, user["id"], {"currency": "JPY"})
    assert r.status_code == 200, r.text
    assert without_time(r.json()) == {"language": "en", "currency": "JPY",
                                      "marketing_emails": False}
    r = put(server, user["id"], {})
    assert r.status_code == 200 and without_time(r.json()) == {
        "language": "en", "currency": "USD", "marketing_emails": False}
    assert server.get(path(user["id"]), user=user["id"]).json() == r.json()


@pytest.mark.parametrize("doc", [{"language": "de"}, {"language": "fil"}, {"language": "zh-CN"},
                                 {"currency": "GBP"}, {"marketing_emails": False}])
def test_put_accepts_valid_values(server, doc):
    user = server.create_user()
    r = put(server, user["id"], doc)
    assert r.status_code == 200, r.text
    assert without_time(r.json()) == {"language": "en", "currency": "USD",
                                      "marketing_emails": False, **doc}


def test_admin_reads_and_writes_any_preferences(server):
    user = server.create_user()
    r = put(server, user["id"], PREFS, who=admin())
    assert r.status_code == 200
    assert server.get(path(user["id"]), headers=admin()).json() == r.json()


BAD_PREFS = [
    ("language-number", {"language": 1}, 400, "language"),
    ("currency-null", {"currency": None}, 400, "currency"),
    ("marketing-string", {"marketing_emails": "yes"}, 400, "marketing_emails"),
    ("marketing-number", {"marketing_emails": 1}, 400, "marketing_emails"),
    ("unknown-field", {"theme": "dark"}, 400, "theme"),
    ("language-upper", {"language": "EN"}, 422, "language"),
    ("language-underscore", {"language": "pt_BR"}, 422, "language"),
    ("language-region-lower", {"language": "pt-br"}, 422, "language"),
    ("language-one-letter", {"language": "e"}, 422, "language"),
    ("language-empty", {"language": ""}, 422, "language"),
    ("language-long", {"language": "english"}, 422, "language"),
    ("currency-unknown", {"currency": "XYZ"}, 422, "currency"),
    ("currency-lower", {"currency": "eur"}, 422, "currency"),
    ("currency-4", {"currency": "EURO"}, 422, "currency"),
    ("currency-empty", {"currency": ""}, 422, "currency"),
]


@pytest.mark.parametrize("doc,status,field", [c[1:] for c in BAD_PREFS],
                         ids=[c[0] for c in BAD_PREFS])
def test_put_rejects_bad_values_and_keeps_the_stored_ones(server, owner, doc, status, field):
    assert len(stored(server, owner["id"])) == 1
    with unchanged(server.db):
        assert_problem(put(server, owner["id"], {"language": "de", **doc}), status, field)


def test_put_reports_every_invalid_field(server, owner):
    user = owner
    with unchanged(server.db):
        doc = assert_problem(put(server, user["id"], {"language": "xx_YY", "currency": "ABC"}),
                             422)
    assert {e["field"] for e in doc["errors"]} == {"language", "currency"}


@pytest.mark.parametrize("raw", [b'{"language": "en"', b"[1]", b"true",
                                 b'{"currency": "EUR", "currency": "USD"}'],
                         ids=["truncated", "array", "bool", "duplicate-key"])
def test_put_rejects_malformed_json(server, owner, raw):
    with unchanged(server.db):
        assert_problem(put(server, owner["id"], raw=raw), 400, "body")


def test_put_rejects_non_json_with_415(server, owner):
    with unchanged(server.db):
        assert_problem(put(server, owner["id"], {}, ctype="application/xml"), 415)


@pytest.mark.parametrize("method", ["GET", "PUT"])
@pytest.mark.parametrize("who,status", [
    ({}, 401),
    ({"X-User-Role": "customer"}, 401),
    ({"X-User-Id": str(uuid.uuid4()), "X-User-Role": ""}, 401),
    (ident(str(uuid.uuid4())), 403),
], ids=["anonymous", "no-id", "empty-role", "other-customer"])
def test_preferences_need_identity_and_ownership(server, owner, method, who, status):
    with unchanged(server.db):
        r = server.request(method, path(owner["id"]), headers=who,
                           json={} if method == "PUT" else None)
        assert_problem(r, status)
        assert "pt-BR" not in r.text


@pytest.mark.parametrize("method", ["GET", "PUT"])
@pytest.mark.parametrize("uid", [NEVER_ISSUED_ID, "12345"])
def test_preferences_of_unknown_user_are_404(server, method, uid):
    with unchanged(server.db):
        r = server.request(method, path(uid), headers=admin(),
                           json=PREFS if method == "PUT" else None)
        assert_problem(r, 404)
