#!/usr/bin/env python3
"""A purchase through a running microshop's public API, as a deploy pipeline checks a new
environment (staging after a deploy, the green colour before the switch, compose after `up`).

    scripts/smoke.py --url https://staging.example.com [--admin-token TOKEN] [--orders N]

Signs up a new customer, signs in, finds a product with stock (or, given an admin token, adds
one with 1000 units), places N orders with Idempotency-Keys, waits until each saga has ended,
checks each is confirmed and listed in the customer's orders, and that a retried POST with the
same key answers the same order. Exit 0 when all holds, 1 with the failing step otherwise, 2 on
bad arguments. Only the standard library: a pipeline's runner image needs nothing but python3.
"""
import argparse
import json
import sys
import time
import urllib.error
import urllib.request
import uuid

ADDRESS = {"line1": "1 Smoke Street", "city": "Berlin", "postal_code": "10115", "country": "DE"}
CARD = "4242424242424242"  # the payment service's sandbox card that is always accepted


class Failed(Exception):
    pass


class Api:
    def __init__(self, url, timeout):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def call(self, method, path, body=None, token=None, headers=None):
        """(status, parsed JSON body or None, headers)."""
        h = {"Accept": "application/json", **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        if token:
            h["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                status, raw, rh = r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            status, raw, rh = e.code, e.read(), e.headers
        except (urllib.error.URLError, OSError) as e:
            raise Failed(f"{method} {path}: {e}") from None
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = None
        return status, doc, rh

    def expect(self, want, method, path, **kw):
        status, doc, _ = self.call(method, path, **kw)
        if status not in want:
            raise Failed(f"{method} {path} answered {status}, expected {sorted(want)}: {doc}")
        return doc


def product_with_stock(api, admin_token, units):
    if admin_token:
        sku = "SMOKE-" + uuid.uuid4().hex[:10].upper()
        doc = api.expect({201}, "POST", "/api/v1/products", token=admin_token, body={
            "sku": sku, "name": "Smoke test item", "price_cents": 1299, "currency": "EUR",
            "stock": 1000})
        return doc["id"]
    items = api.expect({200}, "GET", "/api/v1/products?limit=100")["items"]
    for p in items:
        if p.get("available", 0) >= units:
            return p["id"]
    raise Failed(f"no product has {units} units in stock (give --admin-token to add one)")


def customer(api):
    email = f"smoke-{uuid.uuid4().hex[:12]}@example.com"
    password = "smoke-" + uuid.uuid4().hex
    user = api.expect({201}, "POST", "/api/v1/users",
                      body={"email": email, "name": "Smoke Test", "password": password})
    tok = api.expect({200}, "POST", "/api/v1/auth/token",
                     body={"email": email, "password": password})
    if tok.get("token_type") != "Bearer" or not tok.get("access_token"):
        raise Failed(f"POST /api/v1/auth/token gave no bearer token: {tok}")
    return user["id"], tok["access_token"]


def settled(api, token, oid, deadline):
    while True:
        doc = api.expect({200}, "GET", f"/api/v1/orders/{oid}", token=token)
        if doc["status"] != "pending":
            return doc
        if time.monotonic() > deadline:
            raise Failed(f"order {oid} still pending after the deadline")
        time.sleep(0.1)


def smoke(api, admin_token, orders, settle_s):
    started = time.monotonic()
    pid = product_with_stock(api, admin_token, orders)
    print(f"smoke: product {pid}")
    uid, token = customer(api)
    print(f"smoke: customer {uid} signed in")
    placed = []
    for i in range(orders):
        key = str(uuid.uuid4())
        body = {"items": [{"product_id": pid, "quantity": 1}], "shipping_address": ADDRESS,
                "payment": {"card_number": CARD}}
        doc = api.expect({201, 202}, "POST", "/api/v1/orders", body=body, token=token,
                         headers={"Idempotency-Key": key})
        again = api.expect({200, 201, 202}, "POST", "/api/v1/orders", body=body, token=token,
                           headers={"Idempotency-Key": key})
        if again["id"] != doc["id"]:
            raise Failed(f"a retry with the same Idempotency-Key made order {again['id']}, "
                         f"not {doc['id']}")
        placed.append(doc["id"])
    for oid in placed:
        doc = settled(api, token, oid, time.monotonic() + settle_s)
        if doc["status"] != "confirmed":
            raise Failed(f"order {oid} ended {doc['status']} ({doc.get('reason')})")
    listed = api.expect({200}, "GET", f"/api/v1/users/{uid}/orders?limit=100", token=token)
    missing = set(placed) - {o["id"] for o in listed["items"]}
    if missing:
        raise Failed(f"the customer's order list lacks {sorted(missing)}")
    print(f"smoke: ok ({orders} orders confirmed in {time.monotonic() - started:.1f} s)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="the gateway's public base URL")
    ap.add_argument("--admin-token", help="an admin access token (adds the product it buys)")
    ap.add_argument("--orders", type=int, default=3, help="orders to place (3)")
    ap.add_argument("--timeout", type=float, default=10, help="seconds per request (10)")
    ap.add_argument("--settle", type=float, default=60, help="seconds for a saga to end (60)")
    a = ap.parse_args()
    if not 1 <= a.orders <= 1000:
        ap.error("--orders must be within 1..1000")
    try:
        smoke(Api(a.url, a.timeout), a.admin_token, a.orders, a.settle)
    except Failed as e:
        print(f"smoke: FAILED: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
