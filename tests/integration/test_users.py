"""POST /api/v1/users, GET and PATCH /api/v1/users/{id}."""
import json
import os
import threading
import uuid

import pytest

from conftest import (ARGON2_PREFIX, NEVER_ISSUED_ID, SLOW, admin, assert_problem, assert_user,
                      ident, new_email, poll, unchanged)

PASSWORD = "correct horse battery"
DROP = object()  # marks a field left out of the body
JSON = {"Content-Type": "application/json"}


def body(**changes):
    b = {"email": new_email(), "name": "Ada Lovelace", "password": PASSWORD}
    b.update(changes)
    return {k: v for k, v in b.items() if v is not DROP}


def post(server, doc=None, raw=None, headers=JSON):
    data = raw if raw is not None else json.dumps(doc).encode()
    return server.request("POST", "/api/v1/users", data=data, headers=headers)


# ---- registration ----

def test_create_returns_user_writes_hash_and_outbox_event(server):
    db = server.db
    users, events = db.count("users"), db.count("outbox")
    doc = body(email=f"Ada.{uuid.uuid4().hex[:8]}@Example.COM")
    r = post(server, doc)
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"] == "application/json"
    user = r.json()
    assert_user(user, email=doc["email"], name="Ada Lovelace")
    assert user["created_at"] == user["updated_at"]
    assert r.headers["Location"] == f"/api/v1/users/{user['id']}"
    assert "password" not in r.text and "argon2" not in r.text
    assert db.count("users") == users + 1 and db.count("outbox") == events + 1

    (email_key, stored_hash), = db.query(
        "SELECT email_key, password_hash FROM users WHERE id = ?", [user["id"]])
    assert email_key == doc["email"].lower()
    assert stored_hash.startswith(ARGON2_PREFIX) and PASSWORD not in stored_hash
    (outbox_id, agg_type, etype, payload), = db.query(
        "SELECT id, aggregate_type, type, payload FROM outbox WHERE aggregate_id = ?",
        [user["id"]])
    assert (agg_type, etype) == ("user", "user.created")
    # the relay publishes it to the local feed and marks it (at least once: by id)
    poll(lambda: db.query("SELECT published_at FROM outbox WHERE id = ?", [outbox_id])[0][0],
         5 * SLOW, what="the relay to publish user.created")
    with open(os.path.join(db.data_dir, "user-outbox.jsonl")) as feed:
        lines = [json.loads(line) for line in feed]
    assert any(m["id"] == outbox_id and m["payload"] == json.loads(payload) for m in lines)
    event = json.loads(payload)
    assert event["user_id"] == user["id"] and event["email"] == doc["email"]
    assert PASSWORD not in payload and "argon2" not in payload


def test_create_then_get_reads_the_same_user(server):
    user = server.create_user()
    r = server.get(f"/api/v1/users/{user['id']}", user=user["id"])
    assert r.status_code == 200
    assert r.json() == user


@pytest.mark.parametrize("changes", [
    {"name": "x" * 100},
    {"name": "é" * 100},                      # 100 code points, 200 bytes
    {"name": "Zoë \"Z\" \\ 李 😀 </script>"},
    {"password": "12345678"},
    {"password": "p" * 128},
    {"password": "ñ" * 8},
    {"email": f"first.last+tag-{uuid.uuid4().hex[:6]}@mail.example.co.uk"},
    {"email": f"{uuid.uuid4().hex[:8]}{'l' * 56}@{'d' * 63}.{'e' * 63}.{'f' * 57}.com"},
], ids=["name-100", "name-100-multibyte", "name-escapes-and-emoji", "password-8",
        "password-128", "password-8-multibyte", "email-plus-subdomains", "email-254"])
def test_create_accepts_boundary_values(server, changes):
    doc = body(**changes)
    r = post(server, doc)
    assert r.status_code == 201, r.text
    assert_user(r.json(), email=doc["email"], name=doc["name"])


@pytest.mark.parametrize("ctype", ["application/json; charset=utf-8", "Application/JSON"])
def test_create_accepts_json_content_type_variants(server, ctype):
    r = post(server, body(), headers={"Content-Type": ctype})
    assert r.status_code == 201, r.text


def test_duplicate_email_is_409_case_insensitively(server):
    email = f"Grace.{uuid.uuid4().hex[:8]}@Example.com"
    server.create_user(email=email)
    with unchanged(server.db):
        r = post(server, body(email=email.upper()))
        assert_problem(r, 409, "email")
        r = post(server, body(email=email.lower()))
        assert_problem(r, 409, "email")


def test_concurrent_duplicates_create_exactly_one_user(server):
    email = f"race-{uuid.uuid4().hex[:8]}@example.com"
    db = server.db
    users, events = db.count("users"), db.count("outbox")
    results = []

    def register(variant):
        results.append(post(server, body(email=variant)).status_code)

    threads = [threading.Thread(target=register, args=(v,))
               for v in (email, email.upper(), email.title(), email.capitalize())]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [201, 409, 409, 409], results
    assert db.count("users") == users + 1 and db.count("outbox") == events + 1


BAD_CREATE = [
    # id, field changes, status, field named in errors
    ("email-number", {"email": 42}, 400, "email"),
    ("email-null", {"email": None}, 400, "email"),
    ("name-bool", {"name": True}, 400, "name"),
    ("name-object", {"name": {"first": "Ada"}}, 400, "name"),
    ("password-array", {"password": ["x" * 10]}, 400, "password"),
    ("unknown-field", {"role": "admin"}, 400, "role"),
    ("missing-email", {"email": DROP}, 422, "email"),
    ("missing-name", {"name": DROP}, 422, "name"),
    ("missing-password", {"password": DROP}, 422, "password"),
    ("email-plain", {"email": "plainaddress"}, 422, "email"),
    ("email-no-domain-dot", {"email": "ada@example"}, 422, "email"),
    ("email-empty-local", {"email": "@example.com"}, 422, "email"),
    ("email-two-at", {"email": "a@b@example.com"}, 422, "email"),
    ("email-space", {"email": "ada lovelace@example.com"}, 422, "email"),
    ("email-double-dot", {"email": "ada..l@example.com"}, 422, "email"),
    ("email-trailing-dot", {"email": "ada@example.com."}, 422, "email"),
    ("email-hyphen-label", {"email": "ada@-example.com"}, 422, "email"),
    ("email-numeric-tld", {"email": "ada@example.123"}, 422, "email"),
    ("email-local-65", {"email": "a" * 65 + "@example.com"}, 422, "email"),
    ("email-empty", {"email": ""}, 422, "email"),
    ("email-255", {"email": f"{'l' * 64}@{'d' * 63}.{'e' * 63}.{'f' * 58}.com"}, 422, "email"),
    ("email-non-ascii", {"email": "zoë@example.com"}, 422, "email"),
    ("name-empty", {"name": ""}, 422, "name"),
    ("name-101", {"name": "x" * 101}, 422, "name"),
    ("name-101-multibyte", {"name": "é" * 101}, 422, "name"),
    ("name-leading-space", {"name": " Ada"}, 422, "name"),
    ("name-trailing-space", {"name": "Ada "}, 422, "name"),
    ("name-only-space", {"name": " "}, 422, "name"),
    ("name-newline", {"name": "Ada\nLovelace"}, 422, "name"),
    ("name-tab", {"name": "Ada\tLovelace"}, 422, "name"),
    ("name-del", {"name": "Ada\x7f"}, 422, "name"),
    ("name-c1-control", {"name": "Ada\u0085Lovelace"}, 422, "name"),  # NEL, category Cc
    ("password-7", {"password": "1234567"}, 422, "password"),
    ("password-129", {"password": "p" * 129}, 422, "password"),
    ("password-empty", {"password": ""}, 422, "password"),
]


@pytest.mark.parametrize("changes,status,field", [c[1:] for c in BAD_CREATE],
                         ids=[c[0] for c in BAD_CREATE])
def test_create_rejects_bad_fields_and_writes_nothing(server, changes, status, field):
    with unchanged(server.db):
        doc = assert_problem(post(server, body(**changes)), status, field)
    if changes.get(field, None) is DROP:
        assert any(e["field"] == field and "required" in e["message"] for e in doc["errors"])


def test_create_reports_every_invalid_field(server):
    with unchanged(server.db):
        doc = assert_problem(post(server, {"email": "nope", "name": "", "password": "x"}), 422)
    assert {e["field"] for e in doc["errors"]} == {"email", "name", "password"}


BAD_BODIES = [
    ("truncated", b'{"email": "a@example.com", "name": '),
    ("trailing-comma", b'{"email": "a@example.com",}'),
    ("not-json", b"email=a@example.com"),
    ("empty", b""),
    ("invalid-utf8", b'{"email": "\xff@example.com", "name": "A", "password": "12345678"}'),
    ("array", b'[{"email": "a@example.com"}]'),
    ("string", b'"a@example.com"'),
    ("null", b"null"),
    ("number", b"42"),
    ("duplicate-key", json.dumps(body()).encode()[:-1] + b', "name": "Other"}'),
    ("two-documents", b'{"email": "a@example.com"} {}'),
    ("nul-escape", b'{"email": "a@example.com", "name": "A\\u0000B", "password": "12345678"}'),
    ("lone-surrogate", b'{"email": "a@example.com", "name": "\\ud800", "password": "12345678"}'),
    ("nested-too-deep", b'{"name": ' + b"[" * 100000 + b"]" * 100000 + b"}"),
]


@pytest.mark.parametrize("raw", [c[1] for c in BAD_BODIES], ids=[c[0] for c in BAD_BODIES])
def test_create_rejects_malformed_bodies_with_400(server, raw):
    with unchanged(server.db):
        assert_problem(post(server, raw=raw), 400, "body")


def test_json_syntax_error_says_line_column_and_byte(server):
    raw = b'{\n  "email": "a@example.com",\n  "name": ]\n}'
    with unchanged(server.db):
        doc = assert_problem(post(server, raw=raw), 400, "body")
    position = raw.index(b"]")
    assert "line 3" in doc["detail"], doc
    assert "column" in doc["detail"], doc
    assert f"byte {position}" in doc["detail"] or f"byte {position + 1}" in doc["detail"], doc


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded",
                                   "application/json; charset=latin-1", "application/jsonx"])
def test_create_rejects_non_json_content_type_with_415(server, ctype):
    headers = {"Content-Type": ctype} if ctype else {}
    with unchanged(server.db):
        assert_problem(post(server, body(), headers=headers), 415)


def test_body_over_one_mebibyte_is_413_and_exactly_one_is_not(server):
    def sized(n):
        head = json.dumps(body(name="")).encode()
        raw = head.replace(b'"name": ""', b'"name": "' + b"x" * (n - len(head)) + b'"')
        assert len(raw) == n
        return raw

    with unchanged(server.db):
        assert_problem(post(server, raw=sized(1024 * 1024 + 1)), 413)
        assert_problem(post(server, raw=sized(1024 * 1024)), 422, "name")


# ---- reading ----

@pytest.fixture(scope="module")
def someone(server):
    """A user that tests only read or fail to change."""
    return server.create_user(name="Someone")


IDENTITY_FAILURES = [
    ("none", lambda uid: {}, 401),
    ("id-only", lambda uid: {"X-User-Id": uid}, 401),
    ("role-only", lambda uid: {"X-User-Role": "admin"}, 401),
    ("id-not-uuid", lambda uid: ident("user-1", "admin"), 401),
    ("id-empty", lambda uid: ident("", "admin"), 401),
    ("unknown-role", lambda uid: ident(uid, "root"), 401),
    ("other-customer", lambda uid: ident(str(uuid.uuid4())), 403),
]


@pytest.mark.parametrize("make_headers,status", [c[1:] for c in IDENTITY_FAILURES],
                         ids=[c[0] for c in IDENTITY_FAILURES])
def test_get_user_needs_identity_and_ownership(server, someone, make_headers, status):
    user = someone
    r = server.get(f"/api/v1/users/{user['id']}", headers=make_headers(user["id"]))
    doc = assert_problem(r, status)
    assert user["email"] not in r.text and doc["instance"] == f"/api/v1/users/{user['id']}"


def test_admin_reads_any_user(server):
    user = server.create_user()
    r = server.get(f"/api/v1/users/{user['id']}", headers=admin())
    assert r.status_code == 200 and r.json() == user


@pytest.mark.parametrize("uid", [NEVER_ISSUED_ID, "not-a-uuid", "0" * 36,
                                 "123e4567-e89b-12d3-a456-42661417400"])
def test_unknown_or_malformed_id_is_404(server, uid):
    assert_problem(server.get(f"/api/v1/users/{uid}", headers=admin()), 404)


def test_customer_asking_for_own_unknown_id_is_404(server):
    uid = str(uuid.uuid4())
    assert_problem(server.get(f"/api/v1/users/{uid}", user=uid), 404)


# ---- renaming ----

def patch(server, uid, doc=None, raw=None, headers=None, who=None):
    h = dict(JSON if headers is None else headers)
    h.update(who if who is not None else ident(uid))
    data = raw if raw is not None else json.dumps(doc).encode()
    return server.request("PATCH", f"/api/v1/users/{uid}", data=data, headers=h)


def test_patch_renames_and_writes_user_updated_event(server):
    user = server.create_user(name="Ada")
    db = server.db
    r = patch(server, user["id"], {"name": "Ada King"})
    assert r.status_code == 200, r.text
    got = r.json()
    assert_user(got, email=user["email"], name="Ada King")
    assert got["id"] == user["id"] and got["created_at"] == user["created_at"]
    assert got["updated_at"] >= user["updated_at"]
    assert server.get(f"/api/v1/users/{user['id']}", user=user["id"]).json() == got
    rows = db.query("SELECT type, payload FROM outbox WHERE aggregate_id = ? ORDER BY seq",
                    [user["id"]])
    assert [t for t, _ in rows] == ["user.created", "user.updated"]
    assert json.loads(rows[1][1])["name"] == "Ada King"


def test_admin_may_rename_anyone(server):
    user = server.create_user()
    r = patch(server, user["id"], {"name": "Renamed"}, who=admin())
    assert r.status_code == 200 and r.json()["name"] == "Renamed"


def test_empty_patch_is_a_no_op(server):
    user = server.create_user()
    with unchanged(server.db):
        r = patch(server, user["id"], {})
    assert r.status_code == 200 and r.json() == user


BAD_PATCH = [
    ("email", {"email": "new@example.com"}, 400, "email"),
    ("password", {"password": "new password 123"}, 400, "password"),
    ("id", {"id": str(uuid.uuid4())}, 400, "id"),
    ("name-number", {"name": 7}, 400, "name"),
    ("name-null", {"name": None}, 400, "name"),
    ("name-empty", {"name": ""}, 422, "name"),
    ("name-101", {"name": "n" * 101}, 422, "name"),
    ("name-control", {"name": "A\x01B"}, 422, "name"),
    ("name-trailing-space", {"name": "Ada "}, 422, "name"),
    ("valid-name-with-unknown-field", {"name": "Ok", "nickname": "x"}, 400, "nickname"),
]


@pytest.mark.parametrize("doc,status,field", [c[1:] for c in BAD_PATCH],
                         ids=[c[0] for c in BAD_PATCH])
def test_patch_rejects_bad_fields_and_changes_nothing(server, someone, doc, status, field):
    with unchanged(server.db):
        assert_problem(patch(server, someone["id"], doc), status, field)


@pytest.mark.parametrize("raw", [b'{"name": "x"', b'["name"]', b'{"name": "a", "name": "b"}'],
                         ids=["truncated", "array", "duplicate-key"])
def test_patch_rejects_malformed_json(server, someone, raw):
    with unchanged(server.db):
        assert_problem(patch(server, someone["id"], raw=raw), 400, "body")


def test_patch_rejects_non_json_with_415(server, someone):
    with unchanged(server.db):
        assert_problem(patch(server, someone["id"], {"name": "X"},
                             headers={"Content-Type": "text/plain"}), 415)


@pytest.mark.parametrize("make_headers,status", [c[1:] for c in IDENTITY_FAILURES],
                         ids=[c[0] for c in IDENTITY_FAILURES])
def test_patch_needs_identity_and_ownership(server, someone, make_headers, status):
    with unchanged(server.db):
        assert_problem(patch(server, someone["id"], {"name": "Mallory"},
                             who=make_headers(someone["id"])), status)


@pytest.mark.parametrize("uid", [NEVER_ISSUED_ID, "nope"])
def test_patch_unknown_user_is_404(server, uid):
    with unchanged(server.db):
        assert_problem(patch(server, uid, {"name": "Ghost"}, who=admin()), 404)
