"""The gateway (`microshop serve gateway`): every service's /api/v1 routes behind one listener,
forwarded through the service client. A checkout and its reads work through it as they do on
the services; internal routes and unknown paths end at the gateway; a request id goes both
ways; a service that is down is a 503 and comes back by itself; a bad upstream list stops
the gateway at start."""
import subprocess

import requests

from conftest import BINARY, SLOW, UUID_RE, assert_problem, clean_env, ident, poll
from shop import JSON, line, start_shop  # noqa: F401 - start_shop is a fixture


def test_a_checkout_through_the_gateway(start_shop):
    s = start_shop(gateway=True)
    gw = s.server("gateway")
    r = gw.request("POST", "/api/v1/users", json={
        "email": "gw@example.com", "name": "Ada", "password": "correct horse battery"})
    assert r.status_code == 201, r.text
    user = r.json()["id"]
    assert UUID_RE.match(r.headers["X-Request-Id"])
    p = s.product(stock=5, price=2500)
    listed = gw.get("/api/v1/products", params={"limit": 100}).json()["items"]
    assert p["id"] in [x["id"] for x in listed]
    poll(lambda: s.order_svc.db.count("user_directory") == 1, 20 * SLOW,
         what="the order service to know the user")
    r = gw.request("POST", "/api/v1/orders", headers={**JSON, **ident(user),
                                                      "Idempotency-Key": "gw-1"},
                   json={"items": [line(p, 2)], "payment": {"card_number": "4242424242424242"}})
    assert r.status_code == 201, r.text
    doc = r.json()
    assert (doc["status"], doc["total_cents"]) == ("confirmed", 5000)
    # the service's headers come back as they were
    assert r.headers["Location"] == f"/api/v1/orders/{doc['id']}"
    assert r.headers["ETag"] == f'"{doc["version"]}"' and "X-Position" in r.headers
    got = gw.get(f"/api/v1/orders/{doc['id']}", headers=ident(user))
    assert got.status_code == 200 and got.json()["id"] == doc["id"]
    pay = gw.get(f"/api/v1/payments/{doc['payment_id']}", headers=ident(user))
    assert pay.status_code == 200 and pay.json()["amount_cents"] == 5000, pay.text
    # a client's request id is kept; the query string goes along
    r = gw.get(f"/api/v1/users/{user}/orders", params={"limit": 1},
               headers={**ident(user), "X-Request-Id": "trace-me-42"})
    assert r.status_code == 200 and len(r.json()["items"]) == 1
    assert r.headers["X-Request-Id"] == "trace-me-42"
    # the services' problems come through unchanged
    assert_problem(gw.request("POST", "/api/v1/orders", headers={**JSON, **ident(user)},
                              json={"items": []}), 422, "items")


def test_internal_routes_and_unknown_paths_end_at_the_gateway(start_shop):
    s = start_shop(gateway=True)
    gw = s.server("gateway")
    for path in ("/internal/v1/events", "/internal/v1/quotes", "/internal/v1/chaos",
                 "/internal/v1/payments", "/api/v1/nothing", "/api/v2/orders"):
        for method in ("GET", "POST"):
            r = gw.request(method, path, json={})
            assert r.status_code == 404, (method, path, r.status_code, r.text)
    r = gw.request("DELETE", "/api/v1/products")
    assert r.status_code == 405 and "GET" in r.headers["Allow"]
    # the gateway's own health and metrics, with the route templates as endpoints
    assert gw.get("/health").status_code == 200
    gw.get("/api/v1/products")
    assert gw.get("/metrics").status_code == 404  # the admin listener's, never public
    text = gw.metrics()
    assert 'endpoint="/api/v1/products"' in text
    assert "http_client_requests_total" in text


def test_a_service_down_is_503_and_comes_back(start_shop):
    s = start_shop(gateway=True)
    gw = s.server("gateway")
    assert gw.get("/api/v1/products").status_code == 200
    s.stop("inventory")
    r = gw.get("/api/v1/products")
    assert_problem(r, 503)
    s.start("inventory")
    poll(lambda: gw.get("/api/v1/products").status_code == 200, 20 * SLOW,
         what="the gateway to reach the inventory again")
    # the other services were reachable throughout
    assert gw.request("POST", "/api/v1/users", json={
        "email": "gw2@example.com", "name": "Ada", "password": "correct horse battery"}
    ).status_code == 201


def test_a_malformed_upstream_list_stops_the_gateway():
    p = subprocess.run([BINARY, "serve", "gateway", "--listen", "127.0.0.1:0"],
                       env=clean_env({"MICROSHOP_ORDER_URL": "https://nope"}),
                       capture_output=True, timeout=20 * SLOW)
    assert p.returncode == 2
    assert b"MICROSHOP_ORDER_URL" in p.stderr
