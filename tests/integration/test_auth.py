"""Authentication: POST /api/v1/auth/token, bearer tokens at the gateway (HS256 and RS256 with
a JWKS), and the identity the gateway signs for the services (MICROSHOP_IDENTITY_SECRET).
Every refusal is checked: no token, malformed, alg none, an HS256 token at an RS256 gateway,
bad signature, expired, nbf in the future, unknown kid, a customer on an admin route; a
customer cannot reach another's user or order, an admin can; an identity forged straight at
a service is refused; a wrong password is a 401 like an unknown email; bad bodies name the
field and change nothing."""
import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import tempfile
import time
import uuid

import pytest

from conftest import (BINARY, SLOW, Database, Server, assert_problem, clean_env, ident,
                      new_email, poll, unchanged)
from shop import JSON, Shop, line, start_shop  # noqa: F401 - start_shop is a fixture

JWT_SECRET = "test-jwt-secret-0123456789abcdef-0123"
IDENTITY_SECRET = "test-identity-secret-0123456789abcdef"
PASSWORD = "correct horse battery"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(claims, secret=JWT_SECRET, header=None, sig=None):
    """An HS256 token signed with `secret` (or carrying the signature `sig` as given)."""
    h = header or {"alg": "HS256", "typ": "JWT"}
    signing = b64(json.dumps(h).encode()) + "." + b64(json.dumps(claims).encode())
    if sig is None:
        sig = b64(hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest())
    return signing + "." + sig


def claims(sub, role="customer", **over):
    now = int(time.time())
    c = {"sub": sub, "role": role, "iat": now, "exp": now + 300, "iss": "microshop",
         "aud": "microshop"}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def assert_invalid_token(r, why=None):
    doc = assert_problem(r, 401)
    assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"', r.headers
    if why:
        assert re.search(why, doc["detail"]), doc
    return doc


def identity_signature(user, role, method, path, t=None, secret=IDENTITY_SECRET):
    t = int(time.time()) if t is None else t
    msg = f"v1\n{t}\n{user}\n{role}\n{method}\n{path}".encode()
    return f"v1;t={t};sig={b64(hmac.new(secret.encode(), msg, hashlib.sha256).digest())}"


@pytest.fixture(scope="module")
def hs_shop():
    """A shop behind a gateway with HS256 tokens and signed identities."""
    with Shop(gateway=True, env={"MICROSHOP_JWT_SECRET": JWT_SECRET,
                                 "MICROSHOP_IDENTITY_SECRET": IDENTITY_SECRET}) as s:
        yield s


def register(gw, email=None, password=PASSWORD):
    email = email or new_email()
    r = gw.request("POST", "/api/v1/users", json={"email": email, "name": "Ada",
                                                   "password": password})
    assert r.status_code == 201, r.text
    return r.json()["id"], email


def login(gw, email, password=PASSWORD):
    r = gw.request("POST", "/api/v1/auth/token", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert set(doc) == {"access_token", "token_type", "expires_in"}, doc
    assert doc["token_type"] == "Bearer" and doc["expires_in"] == 900
    assert r.headers["Cache-Control"] == "no-store"
    return doc["access_token"]


def admin_token():
    """An admin's token, minted by `microshop token` as an operator would."""
    p = subprocess.run([BINARY, "token", "--sub", str(uuid.uuid4()), "--role", "admin",
                        "--ttl", "300"], env=clean_env({"MICROSHOP_JWT_SECRET": JWT_SECRET}),
                       capture_output=True, timeout=20 * SLOW, check=True)
    return p.stdout.decode().strip()


# ---- the token endpoint and its use ----

def test_register_token_and_use_it_through_the_gateway(hs_shop):
    gw = hs_shop.server("gateway")
    user, email = register(gw)
    token = login(gw, email.upper())  # emails match case-insensitively
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert payload["sub"] == user and payload["role"] == "customer"
    assert payload["iss"] == payload["aud"] == "microshop"
    assert payload["exp"] - payload["iat"] == 900
    r = gw.get(f"/api/v1/users/{user}", headers=bearer(token))
    assert r.status_code == 200 and r.json()["email"] == email, r.text
    # a scheme in other case is still Bearer
    r = gw.get(f"/api/v1/users/{user}", headers={"Authorization": f"bearer {token}"})
    assert r.status_code == 200, r.text
    # a valid token on a public route is fine; an anonymous caller too
    assert gw.get("/api/v1/products", headers=bearer(token)).status_code == 200
    assert gw.get("/api/v1/products").status_code == 200


def test_wrong_password_and_unknown_email_are_the_same_401(hs_shop):
    gw = hs_shop.server("gateway")
    _, email = register(gw)
    answers = []
    for body in ({"email": email, "password": "wrong password!"},
                 {"email": new_email(), "password": PASSWORD}):
        r = gw.request("POST", "/api/v1/auth/token", json=body)
        doc = assert_problem(r, 401)
        assert PASSWORD not in r.text and "wrong password" not in r.text
        answers.append((doc["type"], doc["title"], doc["detail"]))
    assert answers[0] == answers[1]


def test_bad_token_bodies_name_the_field_and_change_nothing(hs_shop):
    gw = hs_shop.server("gateway")
    _, email = register(gw)
    user_db = hs_shop.server("user").db
    with unchanged(user_db):
        r = gw.request("POST", "/api/v1/auth/token", data="email=a", headers={
            "Content-Type": "application/x-www-form-urlencoded"})
        assert_problem(r, 415)
        r = gw.request("POST", "/api/v1/auth/token", data="{", headers=JSON)
        assert_problem(r, 400)
        cases = [
            ({"password": PASSWORD}, 422, "email"),
            ({"email": email}, 422, "password"),
            ({"email": 5, "password": PASSWORD}, 400, "email"),
            ({"email": email, "password": ["x"]}, 400, "password"),
            ({"email": email, "password": PASSWORD, "role": "admin"}, 400, "role"),
            ({"email": "not-an-email", "password": PASSWORD}, 422, "email"),
            ({"email": email, "password": "short"}, 422, "password"),
        ]
        for body, status, field in cases:
            assert_problem(gw.request("POST", "/api/v1/auth/token", json=body), status, field)


# ---- refusals at the gateway (HS256) ----

def test_every_bad_token_is_a_401(hs_shop):
    gw = hs_shop.server("gateway")
    user, email = register(gw)
    path = f"/api/v1/users/{user}"
    now = int(time.time())
    r = gw.get(path)
    assert_invalid_token(r, "bearer token is required")
    good = make_token(claims(user))
    assert gw.get(path, headers=bearer(good)).status_code == 200
    bad = {
        "not bearer": ({"Authorization": f"Basic {b64(b'a:b')}"}, "not a Bearer token"),
        "empty": ({"Authorization": "Bearer "}, "empty|not a Bearer"),
        "malformed": (bearer("abc.def"), "malformed"),
        "not json": (bearer("bm90.anNvbg.c2ln"), "malformed"),
        "alg none": (bearer(make_token(claims(user), header={"alg": "none"}, sig="")),
                     "algorithm"),
        "alg none signed": (bearer(make_token(claims(user), header={"alg": "none"})),
                            "algorithm"),
        "bad signature": (bearer(make_token(claims(user), secret="x" * 40)), "signature"),
        "tampered": (bearer(good.rsplit(".", 1)[0][:-2] + "xx." + good.rsplit(".", 1)[1]),
                     "signature|malformed"),
        "expired": (bearer(make_token(claims(user, iat=now - 4000, exp=now - 3600))),
                    "expired"),
        "no exp": (bearer(make_token(claims(user, exp=None))), "expiry"),
        "nbf future": (bearer(make_token(claims(user, nbf=now + 3600))), "not valid yet"),
        "issuer": (bearer(make_token(claims(user, iss="evil"))), "issuer"),
        "audience": (bearer(make_token(claims(user, aud="other"))), "audience"),
        "role": (bearer(make_token(claims(user, role="root"))), "role"),
        "subject": (bearer(make_token(claims("nobody"))), "subject"),
        "too long": (bearer(make_token(claims(user, pad="p" * 9000))), "8 KiB"),
    }
    for name, (headers, why) in bad.items():
        r = gw.get(path, headers=headers)
        doc = assert_invalid_token(r, why)
        # the token itself is never echoed
        token = headers["Authorization"].split(" ", 1)[-1]
        assert not token or token not in r.text, name
    # a bad token on a public route is refused too
    assert_invalid_token(gw.get("/api/v1/products", headers=bearer("abc.def.ghi")))
    assert_invalid_token(gw.request("POST", "/api/v1/auth/token", headers=bearer("x.y.z"),
                                    json={"email": email, "password": PASSWORD}))


def test_roles_and_ownership_through_the_gateway(hs_shop):
    gw = hs_shop.server("gateway")
    a, a_email = register(gw)
    b, b_email = register(gw)
    ta, tb, admin = login(gw, a_email), login(gw, b_email), admin_token()
    # a customer on an admin route
    body = {"sku": "SKU-" + uuid.uuid4().hex[:10], "name": "Widget", "price_cents": 500,
            "currency": "EUR", "stock": 5}
    r = gw.request("POST", "/api/v1/products", headers=bearer(ta), json=body)
    assert_problem(r, 403)
    r = gw.request("POST", "/api/v1/products", headers=bearer(admin), json=body)
    assert r.status_code == 201, r.text
    product = r.json()
    # users: a customer reaches only its own; an admin everyone
    assert_problem(gw.get(f"/api/v1/users/{b}", headers=bearer(ta)), 403)
    assert gw.get(f"/api/v1/users/{b}", headers=bearer(tb)).status_code == 200
    assert gw.get(f"/api/v1/users/{b}", headers=bearer(admin)).status_code == 200
    # a client's X-User-Id / X-User-Role do not override the token's subject
    r = gw.get(f"/api/v1/users/{b}", headers={**bearer(ta), **ident(b, "admin")})
    assert_problem(r, 403)
    r = gw.get(f"/api/v1/users/{a}", headers={**bearer(ta), **ident(b, "admin"),
                                              "X-Identity-Signature": "v1;t=0;sig=x"})
    assert r.status_code == 200 and r.json()["id"] == a, r.text
    # orders: b's order is b's (and the admin's), not a's
    order = hs_shop.server("order")
    poll(lambda: order.db.count("user_directory", "WHERE user_id IN (?, ?)", [a, b]) == 2,
         20 * SLOW, what="the order service to know both users")
    r = gw.request("POST", "/api/v1/orders", headers={**JSON, **bearer(tb),
                                                      "Idempotency-Key": uuid.uuid4().hex},
                   json={"items": [line(product, 1)],
                         "payment": {"card_number": "4242424242424242"}})
    assert r.status_code == 201, r.text
    oid = r.json()["id"]
    assert gw.get(f"/api/v1/orders/{oid}", headers=bearer(tb)).status_code == 200
    # the order service hides others' orders from a customer (404, not 403: no existence
    # leak); their order list is a plain 403
    assert_problem(gw.get(f"/api/v1/orders/{oid}", headers=bearer(ta)), 404)
    assert_problem(gw.get(f"/api/v1/users/{b}/orders", headers=bearer(ta)), 403)
    r = gw.get(f"/api/v1/users/{b}/orders", headers=bearer(admin))
    assert r.status_code == 200 and [o["id"] for o in r.json()["items"]] == [oid], r.text
    assert gw.get(f"/api/v1/orders/{oid}", headers=bearer(admin)).status_code == 200
    # a customer cannot change an order's status (an admin route)
    assert_problem(gw.request("PATCH", f"/api/v1/orders/{oid}/status", headers=bearer(tb),
                              json={"status": "shipped"}), 403)


# ---- signed identity at the services ----

def test_a_forged_identity_straight_at_a_service_is_refused(hs_shop):
    gw = hs_shop.server("gateway")
    user_svc = hs_shop.server("user")
    victim, _ = register(gw)
    path = f"/api/v1/users/{victim}"
    # no signature, a malformed one, a wrong secret, another route's, an old one
    forged = [
        {},
        {"X-Identity-Signature": "garbage"},
        {"X-Identity-Signature": identity_signature(victim, "admin", "GET", path,
                                                    secret="w" * 40)},
        {"X-Identity-Signature": identity_signature(victim, "admin", "GET", path + "/profile")},
        {"X-Identity-Signature": identity_signature(victim, "admin", "PATCH", path)},
        {"X-Identity-Signature": identity_signature(victim, "admin", "GET", path,
                                                    t=int(time.time()) - 120)},
        {"X-Identity-Signature": identity_signature(victim, "customer", "GET", path)},
    ]
    for extra in forged:
        r = user_svc.get(path, headers={**ident(victim, "admin"), **extra})
        assert_problem(r, 401)
    # the right signature is accepted (what the gateway sends)
    r = user_svc.get(path, headers={**ident(victim, "admin"), "X-Identity-Signature":
                                    identity_signature(victim, "admin", "GET", path)})
    assert r.status_code == 200, r.text
    # the order service refuses an unsigned identity too
    assert_problem(hs_shop.server("order").get(f"/api/v1/users/{victim}/orders",
                                               headers=ident(victim)), 401)


# ---- RS256 with a JWKS ----

def rsa_key(directory, name):
    """A 2048-bit RSA key made with the openssl CLI: (PEM path, n, e) in base64url."""
    pem = os.path.join(directory, f"{name}.pem")
    subprocess.run(["openssl", "genrsa", "-out", pem, "2048"], check=True, capture_output=True)
    out = subprocess.run(["openssl", "rsa", "-in", pem, "-noout", "-modulus"], check=True,
                         capture_output=True).stdout.decode()
    n = bytes.fromhex(out.strip().split("=", 1)[1])
    return pem, b64(n), b64((65537).to_bytes(3, "big"))


def rs256_token(pem, kid, claims_):
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims_).encode())
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", pem], input=signing.encode(),
                         check=True, capture_output=True).stdout
    return signing + "." + b64(sig)


def test_rs256_tokens_with_a_jwks(start_shop):
    d = tempfile.mkdtemp(prefix="ms-jwks-")
    pem, n, e = rsa_key(d, "k1")
    other_pem, _, _ = rsa_key(d, "k2")
    jwks = os.path.join(d, "jwks.json")
    with open(jwks, "w") as f:
        json.dump({"keys": [{"kty": "RSA", "kid": "k1", "n": n, "e": e, "alg": "RS256",
                             "use": "sig"}]}, f)
    s = start_shop(gateway=True, env={"MICROSHOP_JWKS_FILE": jwks,
                                      "MICROSHOP_JWT_PRIVATE_KEY": pem,
                                      "MICROSHOP_JWT_KID": "k1",
                                      "MICROSHOP_IDENTITY_SECRET": IDENTITY_SECRET})
    gw = s.server("gateway")
    user, email = register(gw)
    token = login(gw, email)
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"] == "k1"
    path = f"/api/v1/users/{user}"
    assert gw.get(path, headers=bearer(token)).status_code == 200
    assert gw.get(path, headers=bearer(rs256_token(pem, "k1", claims(user)))).status_code == 200
    # an HS256 token (even one whose secret is the public key's text) is key confusion
    with open(pem, "rb") as f:
        pub = subprocess.run(["openssl", "rsa", "-pubout"], input=f.read(), check=True,
                             capture_output=True).stdout.decode()
    for secret in (JWT_SECRET, pub):
        assert_invalid_token(gw.get(path, headers=bearer(make_token(claims(user), secret))),
                             "algorithm")
    assert_invalid_token(gw.get(path, headers=bearer(
        make_token(claims(user), header={"alg": "none", "kid": "k1"}, sig=""))), "algorithm")
    # unknown kid; a known kid signed by another key; expired; nbf in the future
    assert_invalid_token(gw.get(path, headers=bearer(rs256_token(other_pem, "k2", claims(user)))),
                         "key id")
    assert_invalid_token(gw.get(path, headers=bearer(rs256_token(other_pem, "k1", claims(user)))),
                         "signature")
    now = int(time.time())
    assert_invalid_token(gw.get(path, headers=bearer(rs256_token(
        pem, "k1", claims(user, iat=now - 7200, exp=now - 3600)))), "expired")
    assert_invalid_token(gw.get(path, headers=bearer(rs256_token(
        pem, "k1", claims(user, nbf=now + 3600)))), "not valid yet")


# ---- configuration ----

def test_without_a_key_the_token_endpoint_is_503(start_server):
    srv = start_server()
    user = srv.create_user()
    r = srv.request("POST", "/api/v1/auth/token", json={"email": user["email"],
                                                          "password": PASSWORD})
    doc = assert_problem(r, 503)
    assert doc["detail"] == "tokens are not configured"


@pytest.mark.parametrize("target,env,what", [
    ("gateway", {"MICROSHOP_JWT_SECRET": "too short"}, "MICROSHOP_JWT_SECRET"),
    ("gateway", {"MICROSHOP_JWKS_FILE": "/nonexistent/jwks.json"}, "MICROSHOP_JWKS_FILE"),
    ("gateway", {"MICROSHOP_JWT_SECRET": JWT_SECRET, "MICROSHOP_JWKS_FILE": "/x"}, "not both"),
    ("gateway", {"MICROSHOP_IDENTITY_SECRET": "short"}, "MICROSHOP_IDENTITY_SECRET"),
    ("user", {"MICROSHOP_JWT_SECRET": "too short"}, "MICROSHOP_JWT_SECRET"),
    ("user", {"MICROSHOP_JWT_SECRET": JWT_SECRET, "MICROSHOP_JWT_TTL": "0"}, "MICROSHOP_JWT_TTL"),
    ("user", {"MICROSHOP_JWT_PRIVATE_KEY": "/nonexistent.pem"}, "MICROSHOP_JWT_KID"),
    ("user", {"MICROSHOP_JWT_PRIVATE_KEY": "/nonexistent.pem", "MICROSHOP_JWT_KID": "k"},
     "MICROSHOP_JWT_PRIVATE_KEY"),
])
def test_bad_configuration_stops_the_process(target, env, what):
    db = Database(f"{target}.db")
    p = subprocess.run([BINARY, "serve", target, "--listen", "127.0.0.1:0", "--data",
                        db.data_dir], env=clean_env({**db.env, **env}), capture_output=True,
                       timeout=30 * SLOW)
    assert p.returncode == 2, p.stderr[-2000:]
    assert what.encode() in p.stderr
    for v in env.values():  # secrets are never logged
        if "secret" in v or "short" in v:
            assert v.encode() not in p.stderr
