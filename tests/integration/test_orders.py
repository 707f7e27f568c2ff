"""The order service (`microshop serve order`) behind a whole shop (shop.py: inventory and
payment services, no user service so that any caller id is a customer): POST /api/v1/orders
(the checkout contract: items of product ids and quantities, priced by the inventory, a card
to charge) with Idempotency-Key, GET by id (views, ETag, read-your-writes with
X-Min-Position), the user's list (cursor pages), cancel, PATCH status (shipped, delivered)
with If-Match, the events endpoint, the outbox, metrics, and the views agreeing with the event
stream. Every rejected request must write nothing. The saga across the services is in
test_checkout.py."""
import base64
import contextlib
import json
import os
import subprocess
import time
import uuid

import pytest

from conftest import (BACKEND, NEVER_ISSUED_ID, RFC3339, SLOW, UUID_RE, RawConn, assert_problem,
                      ident, poll, run_threads)
from shop import ADDRESS, CARD, Shop, shipping_for, start_shop  # noqa: F401

JSON = {"Content-Type": "application/json"}
DROP = object()  # marks a field left out of a body
READ = "order_read.db"  # the SQLite read database (ignored on PostgreSQL)
ORDER_KEYS = {"id", "user_id", "items", "subtotal_cents", "shipping_cents", "total_cents",
              "currency", "status", "version", "created_at", "updated_at", "shipping_address",
              "payment_status", "stock_status"}
OPTIONAL_KEYS = {"reason", "payment_id"}
EVENT_KEYS = {"event_id", "type", "version", "position", "data", "recorded_at"}
CHECKOUT_EVENTS = ["OrderCreated", "StockReserved", "PaymentCaptured", "OrderConfirmed"]
CARD_12, CARD_19 = "411111111117", "4111111111111111110"  # Luhn-valid, shortest and longest


# ---- helpers (other order test modules import them) ----

def uid():
    return str(uuid.uuid4())


def item(quantity=1, product=None):
    """An order line; without `product` a random id no inventory knows (fine for requests
    refused before the quote)."""
    if isinstance(product, dict):
        product = product["id"]
    return {"product_id": product or uid(), "quantity": quantity}


def order_body(items=None, **changes):
    b = {"items": items if items is not None else [item(2), item(1)],
         "payment": {"card_number": CARD}}
    b.update(changes)
    return {k: v for k, v in b.items() if v is not DROP}


def good_body(s, *lines, **changes):
    """A body the shop `s` confirms: (quantity, price) lines of endlessly stocked products
    (default: 2 at 150 and 1 at 999)."""
    lines = lines or ((2, 150), (1, 999))
    return order_body(items=[item(q, s.stocked(price)) for q, price in lines], **changes)


def post_order(s, user, body=None, key=None, role="customer", raw=None, headers=None):
    h = dict(JSON)
    if key is not None:
        h["Idempotency-Key"] = key
    h.update(headers or {})
    data = raw if raw is not None else json.dumps(good_body(s) if body is None else body)
    return s.request("POST", "/api/v1/orders", user=user, role=role, data=data, headers=h)


def create(s, user, body=None, key=None):
    """Places an order that is confirmed; returns (order, position)."""
    r = post_order(s, user, body, key)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "confirmed", r.text
    return r.json(), int(r.headers["X-Position"])


def get_order(s, oid, user=None, role="customer", min_pos=None, headers=None):
    h = dict(headers or {})
    if min_pos is not None:
        h["X-Min-Position"] = str(min_pos)
    return s.get(f"/api/v1/orders/{oid}", user=user, role=role, headers=h)


def cancel(s, oid, user, role="customer", reason="changed my mind", body=None):
    return s.request("POST", f"/api/v1/orders/{oid}/cancel", user=user, role=role,
                     data=json.dumps({"reason": reason} if body is None else body),
                     headers=JSON)


def patch_status(s, oid, status, if_match, user=None, role="admin", body=None, headers=None):
    h = dict(JSON)
    if if_match is not None:
        h["If-Match"] = if_match
    h.update(headers or {})
    return s.request("PATCH", f"/api/v1/orders/{oid}/status", user=user or uid(), role=role,
                     data=json.dumps({"status": status} if body is None else body), headers=h)


def etag(doc):
    return f'"{doc["version"]}"'


def events_of(s, oid, user=None, role="admin"):
    r = s.get(f"/api/v1/orders/{oid}/events", user=user or uid(), role=role)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert set(doc) == {"items", "next_cursor"} and doc["next_cursor"] is None, doc
    return doc["items"]


def write_state(s):
    """What a rejected request must not change: the write database's rows."""
    db = s.db
    return (db.count("events"), db.count("outbox"), db.count("snapshots"),
            db.query("SELECT max(position) FROM events")[0][0],
            db.query("SELECT max(seq) FROM outbox")[0][0])


@contextlib.contextmanager
def nothing_written(s):
    before = write_state(s)
    yield
    assert write_state(s) == before, "a rejected request wrote to the event store"


def committed(s):
    """The highest position stored in the write database (0 when empty)."""
    return s.db.query("SELECT coalesce(max(position), 0) FROM events")[0][0]


def subtotal_of(doc):
    return sum(i["quantity"] * i["unit_price_cents"] for i in doc["items"])


def assert_order(doc, user=None, body=None):
    assert ORDER_KEYS <= set(doc) <= ORDER_KEYS | OPTIONAL_KEYS, doc
    assert UUID_RE.match(doc["id"]) and UUID_RE.match(doc["user_id"]), doc
    assert RFC3339.match(doc["created_at"]) and RFC3339.match(doc["updated_at"]), doc
    assert doc["updated_at"] >= doc["created_at"]
    assert doc["subtotal_cents"] == subtotal_of(doc), doc
    assert doc["shipping_cents"] == shipping_for(doc["subtotal_cents"]), doc
    assert doc["total_cents"] == doc["subtotal_cents"] + doc["shipping_cents"], doc
    assert doc["payment_status"] in ("none", "captured", "declined", "refunded", "voided"), doc
    assert doc["stock_status"] in ("none", "reserved", "released", "committed"), doc
    assert CARD not in json.dumps(doc)
    if user is not None:
        assert doc["user_id"] == user.lower()
    if body is not None:
        assert [{"product_id": i["product_id"], "quantity": i["quantity"]}
                for i in doc["items"]] == [{**i, "product_id": i["product_id"].lower()}
                                           for i in body["items"]]
        assert doc["shipping_address"] == body.get("shipping_address")


# event type -> what it changes in the view
TRANSITIONS = {
    "StockReserved": {"stock_status": "reserved"},
    "StockReleased": {"stock_status": "released"},
    "StockCommitted": {"stock_status": "committed"},
    "PaymentCaptured": {"payment_status": "captured"},
    "PaymentDeclined": {"payment_status": "declined"},
    "PaymentRefunded": {"payment_status": "refunded"},
    "PaymentVoided": {"payment_status": "voided"},
    "OrderConfirmed": {"status": "confirmed"},
    "OrderRejected": {"status": "rejected"},
    "OrderCancelled": {"status": "cancelled"},
    "OrderShipped": {"status": "shipped"},
    "OrderDelivered": {"status": "delivered"},
}


def rebuild(events):
    """The public order view from its events, independently of the server's code."""
    view = None
    for n, e in enumerate(events, 1):
        assert set(e) == EVENT_KEYS, e
        assert e["version"] == n, f"version gap: {[x['version'] for x in events]}"
        d = e["data"]
        if e["type"] == "OrderCreated":
            assert view is None, "a second OrderCreated"
            view = {"id": d["order_id"], "user_id": d["user_id"], "items": d["items"],
                    "subtotal_cents": d["subtotal_cents"], "shipping_cents": d["shipping_cents"],
                    "total_cents": d["total_cents"], "currency": d["currency"],
                    "status": d["status"], "version": 1, "created_at": d["created_at"],
                    "updated_at": d["at"], "shipping_address": d["shipping_address"],
                    "payment_status": "none", "stock_status": "none"}
            continue
        assert view is not None, "an event before OrderCreated"
        assert e["type"] in TRANSITIONS, f"an event this test does not know: {e['type']}"
        view.update(TRANSITIONS[e["type"]], version=view["version"] + 1)
        view["updated_at"] = d.get("at", view["updated_at"])
        if e["type"] in ("OrderRejected", "OrderCancelled"):
            view.pop("reason", None)
            if d.get("reason") is not None:
                view["reason"] = d["reason"]
        if e["type"].startswith("Payment") and d.get("payment_id"):
            view["payment_id"] = d["payment_id"]
    return view


def assert_streams_contiguous(db):
    """Every stream's versions are exactly 1..n; positions are unique and increasing."""
    rows = db.query("SELECT stream_id, version, position FROM events ORDER BY position")
    seen = {}
    for stream, version, _ in rows:
        seen.setdefault(stream, []).append(version)
    for stream, versions in seen.items():
        assert versions == list(range(1, len(versions) + 1)), f"{stream}: {versions}"
    positions = [p for _, _, p in rows]
    assert positions == sorted(set(positions))
    return seen


@pytest.fixture(scope="module")
def osrv():
    """One shop shared by this module's tests (each test uses its own users); attributes the
    shop has not are its order service's (db, request, metric, ...)."""
    with Shop(user=False) as s:
        yield s


# ---- POST /api/v1/orders ----

def test_create_returns_confirmed_order_and_writes_events_and_outbox(osrv):
    user = uid()
    cheap, dear = osrv.stocked(150), osrv.stocked(1000)
    body = order_body(items=[item(2, cheap), item(3, dear["id"].upper())],
                      shipping_address=ADDRESS)
    events, outbox = osrv.db.count("events"), osrv.db.count("outbox")
    r = post_order(osrv, user, body)
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"] == "application/json"
    doc = r.json()
    assert_order(doc, user, body)
    assert set(doc) == ORDER_KEYS | {"payment_id"}
    assert doc["items"] == [{"product_id": cheap["id"], "quantity": 2, "unit_price_cents": 150},
                            {"product_id": dear["id"], "quantity": 3, "unit_price_cents": 1000}]
    assert (doc["subtotal_cents"], doc["shipping_cents"], doc["total_cents"]) == \
        (3300, 499, 3799)
    assert (doc["status"], doc["currency"]) == ("confirmed", "EUR")
    assert (doc["payment_status"], doc["stock_status"]) == ("captured", "reserved")
    assert r.headers["Location"] == f"/api/v1/orders/{doc['id']}"
    assert r.headers["ETag"] == etag(doc)
    pos = int(r.headers["X-Position"])

    rows = osrv.db.query("SELECT version, type, data, position FROM events WHERE stream_id = ? "
                         "ORDER BY version", [f"order-{doc['id']}"])
    assert [t for _, t, _, _ in rows] == CHECKOUT_EVENTS
    assert [v for v, _, _, _ in rows] == list(range(1, len(rows) + 1))
    assert rows[-1][0] == doc["version"] and rows[-1][3] == pos
    assert osrv.db.count("events") == events + len(rows)
    assert osrv.db.count("outbox") == outbox + len(rows)
    created = json.loads(rows[0][2])
    assert created["order_id"] == doc["id"] and created["total_cents"] == doc["total_cents"]
    assert created["status"] == "pending" and created["card_last4"] == CARD[-4:]
    out = osrv.db.query("SELECT aggregate_type, aggregate_id, type, payload FROM outbox_messages "
                        "WHERE aggregate_id = ? ORDER BY seq", [doc["id"]])
    assert [(a, b, c, json.loads(p)) for a, b, c, p in out] == \
        [("order", doc["id"], t, json.loads(d)) for _, t, d, _ in rows]
    # each row references its event: the event is stored once
    assert osrv.db.query("SELECT payload, event_position FROM outbox WHERE aggregate_id = ? "
                         "ORDER BY seq", [doc["id"]]) == [("", p) for _, _, _, p in rows]

    g = get_order(osrv, doc["id"], user, min_pos=pos)
    assert g.status_code == 200, g.text
    assert g.json() == doc and g.headers["ETag"] == etag(doc)


def test_card_number_is_accepted_but_never_stored(osrv):
    user = uid()
    doc, pos = create(osrv, user, good_body(osrv))
    assert CARD not in json.dumps(doc)
    assert get_order(osrv, doc["id"], user, min_pos=pos).status_code == 200
    texts = [json.dumps(osrv.db.query(f"SELECT * FROM {t}")) for t in
             ("events", "outbox", "snapshots")]
    texts += [json.dumps(osrv.db.query(f"SELECT * FROM {t}", file=READ))
              for t in ("order_views", "user_order_views")]
    assert doc["id"] in texts[0] and doc["id"] in texts[3]
    for text in texts:
        assert CARD not in text


BOUNDARIES = {
    "max-quantity": lambda s: order_body(items=[item(10000, s.stocked(150))]),
    "zero-price-JPY": lambda s: order_body(items=[item(1, s.stocked(0, "JPY"))]),
    "100-items": lambda s: order_body(items=[item(1, s.stocked(100 + i)) for i in range(100)]),
    "address-null": lambda s: good_body(s, shipping_address=None),
    "no-address": lambda s: good_body(s),
    "address": lambda s: good_body(s, shipping_address={
        "line1": "x", "city": "y", "postal_code": "AB-1 2", "country": "DE"}),
    "card-12": lambda s: good_body(s, payment={"card_number": CARD_12}),
    "card-19": lambda s: good_body(s, payment={"card_number": CARD_19}),
}


@pytest.mark.parametrize("case", list(BOUNDARIES))
def test_create_accepts_boundary_values(osrv, case):
    user = uid()
    body = BOUNDARIES[case](osrv)
    doc, _ = create(osrv, user, body)
    assert_order(doc, user, body)
    prices = {p["id"]: p["price_cents"] for p in osrv.__dict__["_stocked"].values()}
    assert doc["subtotal_cents"] == sum(i["quantity"] * prices[i["product_id"]]
                                        for i in body["items"])
    if case == "zero-price-JPY":
        assert (doc["currency"], doc["subtotal_cents"]) == ("JPY", 0)


def test_prices_and_totals_are_the_servers_and_cannot_be_sent(osrv):
    user = uid()
    p = osrv.stocked(150)
    with nothing_written(osrv):
        for changes, field in (({"total_cents": 1}, "total_cents"),
                               ({"subtotal_cents": 1}, "subtotal_cents"),
                               ({"shipping_cents": 0}, "shipping_cents"),
                               ({"currency": "EUR"}, "currency")):
            assert_problem(post_order(osrv, user, good_body(osrv, **changes)), 400, field)
        old = order_body(items=[{**item(1, p), "unit_price_cents": 1}])
        assert_problem(post_order(osrv, user, old), 400, "items[0].unit_price_cents")


def test_create_needs_identity(osrv):
    with nothing_written(osrv):
        for headers in ({}, {"X-User-Id": uid()}, {"X-User-Role": "customer"},
                        ident("not-a-uuid"), ident(uid(), "root")):
            r = osrv.request("POST", "/api/v1/orders", data=json.dumps(good_body(osrv)),
                             headers={**JSON, **headers})
            assert_problem(r, 401)


P = "items[0]."


BAD_KINDS = [
    ({"total_cents": 100}, "total_cents"),
    ({"status": "shipped"}, "status"),
    ({"currency": "EUR"}, "currency"),
    ({"items": {"product_id": uid()}}, "items"),
    ({"items": "many"}, "items"),
    ({"items": [item(quantity="2")]}, P + "quantity"),
    ({"items": [item(quantity=1.5)]}, P + "quantity"),
    ({"items": [item(quantity=None)]}, P + "quantity"),
    ({"items": [{**item(), "unit_price_cents": 100}]}, P + "unit_price_cents"),
    ({"items": [{**item(), "color": "red"}]}, P + "color"),
    ({"items": [{**item(), "product_id": 7}]}, P + "product_id"),
    ({"items": ["x"]}, "items[0]"),
    ({"shipping_address": "1 Main St"}, "shipping_address"),
    ({"shipping_address": {**ADDRESS, "zip": "1"}}, "shipping_address.zip"),
    ({"shipping_address": {**ADDRESS, "city": 5}}, "shipping_address.city"),
    ({"payment": None}, "payment"),
    ({"payment": "4242424242424242"}, "payment"),
    ({"payment": {"card_number": 4242424242424242}}, "payment.card_number"),
    ({"payment": {"card_number": CARD, "cvv": "123"}}, "payment.cvv"),
]


@pytest.mark.parametrize("changes,field", BAD_KINDS, ids=[f"{n}:{f}" for n, (_, f) in
                                                          enumerate(BAD_KINDS)])
def test_create_rejects_wrong_kinds_and_unknown_fields_with_400(osrv, changes, field):
    with nothing_written(osrv):
        r = post_order(osrv, uid(), order_body(**changes))
        assert_problem(r, 400, field)


BAD_VALUES = [
    ({"items": DROP}, "items"),
    ({"payment": DROP}, "payment"),
    ({"items": []}, "items"),
    ({"items": [item() for _ in range(101)]}, "items"),
    ({"items": [item(quantity=0)]}, P + "quantity"),
    ({"items": [item(quantity=10001)]}, P + "quantity"),
    ({"items": [item(quantity=-1)]}, P + "quantity"),
    ({"items": [item(product="not-a-uuid")]}, P + "product_id"),
    ({"items": [{"quantity": 1}]}, P + "product_id"),
    ({"items": [{"product_id": uid()}]}, P + "quantity"),
    ({"items": [item(product="0a1d2e9c-31a7-4f6e-8a4e-7c1d5b9e2f10"),
                item(product="0A1D2E9C-31A7-4F6E-8A4E-7C1D5B9E2F10")]}, "items[1].product_id"),
    ({"shipping_address": {k: v for k, v in ADDRESS.items() if k != "city"}},
     "shipping_address.city"),
    ({"shipping_address": {**ADDRESS, "country": "de"}}, "shipping_address.country"),
    ({"shipping_address": {**ADDRESS, "postal_code": "1234567890123"}},
     "shipping_address.postal_code"),
    ({"shipping_address": {**ADDRESS, "line1": ""}}, "shipping_address.line1"),
    ({"payment": {}}, "payment.card_number"),
    ({"payment": {"card_number": ""}}, "payment.card_number"),
    ({"payment": {"card_number": "42424242"}}, "payment.card_number"),
    ({"payment": {"card_number": "41111111111"}}, "payment.card_number"),  # 11 digits
    ({"payment": {"card_number": "4242-4242-4242-4242"}}, "payment.card_number"),
    ({"payment": {"card_number": "4" + "1" * 18 + "3"}}, "payment.card_number"),  # 20 digits
    ({"payment": {"card_number": "4242424242424241"}}, "payment.card_number"),  # Luhn
    ({"payment": {"card_number": "1" * 12}}, "payment.card_number"),  # Luhn
]


@pytest.mark.parametrize("changes,field", BAD_VALUES, ids=[
    ("missing-" if c.get(f, 0) is DROP else f"{n}:") + f for n, (c, f) in enumerate(BAD_VALUES)])
def test_create_rejects_missing_and_invalid_values_with_422(osrv, changes, field):
    with nothing_written(osrv):
        r = post_order(osrv, uid(), order_body(**changes))
        assert_problem(r, 422, field)


def test_a_rule_violation_is_found_before_the_quote(osrv):
    """A body that breaks a rule and names unknown products is 422 for the rule: it never
    reaches the inventory."""
    with nothing_written(osrv):
        r = post_order(osrv, uid(), order_body(items=[item(0), item(1)]))
        doc = assert_problem(r, 422, P + "quantity")
        assert [e["field"] for e in doc["errors"]] == [P + "quantity"], doc


@pytest.mark.parametrize("raw", ["", "{", "[]", '"order"', "null",
                                 '{"items": [], "items": [], "payment": {}}'])
def test_create_rejects_bodies_that_are_not_one_json_object(osrv, raw):
    with nothing_written(osrv):
        assert_problem(post_order(osrv, uid(), raw=raw), 400)


def test_create_rejects_non_json_content_type_with_415(osrv):
    with nothing_written(osrv):
        r = osrv.request("POST", "/api/v1/orders", user=uid(), data=json.dumps(good_body(osrv)),
                         headers={"Content-Type": "text/plain"})
        assert_problem(r, 415)


# ---- Idempotency-Key ----

def test_same_key_and_same_body_returns_the_same_order_once(osrv):
    user, key = uid(), f"checkout-{uuid.uuid4().hex}"
    body = good_body(osrv, shipping_address=ADDRESS)
    events, outbox = osrv.db.count("events"), osrv.db.count("outbox")
    first = post_order(osrv, user, body, key)
    assert first.status_code == 201, first.text
    oid = first.json()["id"]
    n = len(events_of(osrv, oid))
    # the same JSON with other spacing and key order is the same request
    respaced = json.dumps(dict(reversed(list(body.items()))), indent=3)
    assert respaced != json.dumps(body)
    for raw in (json.dumps(body), respaced):
        again = post_order(osrv, user, key=key, raw=raw)
        assert again.status_code == 201, again.text
        assert again.json() == first.json()
        assert again.headers["Location"] == first.headers["Location"]
        assert again.headers["ETag"] == first.headers["ETag"]
        assert again.headers["X-Position"] == first.headers["X-Position"]
    assert osrv.db.count("events") == events + n and osrv.db.count("outbox") == outbox + n
    assert osrv.db.count("events", "WHERE stream_id = ?", [f"order-{oid}"]) == n
    assert osrv.db.count("outbox", "WHERE aggregate_id = ?", [oid]) == n
    assert len(osrv.payments(oid)) == 1
    r = osrv.get(f"/api/v1/users/{user}/orders", user=user,
                 headers={"X-Min-Position": first.headers["X-Position"]})
    assert [o["id"] for o in r.json()["items"]] == [oid]


def test_idempotent_retry_is_not_counted_as_a_new_order(osrv):
    user, key = uid(), uuid.uuid4().hex
    body = good_body(osrv, (1, 4200))
    created = osrv.metric("orders_created_total", service="order")
    amounts = osrv.metric("order_amount_count", service="order")
    for _ in range(3):
        assert post_order(osrv, user, body, key).status_code == 201
    assert osrv.metric("orders_created_total", service="order") == created + 1, \
        "orders_created_total counted idempotent retries as orders"
    assert osrv.metric("order_amount_count", service="order") == amounts + 1


def test_same_key_with_another_body_is_409_and_writes_nothing(osrv):
    user, key = uid(), uuid.uuid4().hex
    body = good_body(osrv)
    doc, pos = create(osrv, user, body, key)
    other = good_body(osrv, (3, 150), (1, 999))
    with nothing_written(osrv):
        assert_problem(post_order(osrv, user, other, key), 409)
        assert_problem(post_order(osrv, user, {**body, "shipping_address": ADDRESS}, key), 409)
    g = get_order(osrv, doc["id"], user, min_pos=pos)
    assert g.json() == doc
    assert len(osrv.payments(doc["id"])) == 1


def test_keys_belong_to_their_user(osrv):
    key, body = uuid.uuid4().hex, good_body(osrv)
    a, _ = create(osrv, uid(), body, key)
    b, _ = create(osrv, uid(), body, key)
    assert a["id"] != b["id"]


def test_without_a_key_two_identical_posts_create_two_orders(osrv):
    user, body = uid(), good_body(osrv)
    a, _ = create(osrv, user, body)
    b, _ = create(osrv, user, body)
    assert a["id"] != b["id"] and a["items"] == b["items"]
    assert len(osrv.payments(a["id"])) == len(osrv.payments(b["id"])) == 1


@pytest.mark.parametrize("key", ["", "a" * 256, "two words", "tab\there", "caf\u00e9"],
                         ids=["empty", "256-chars", "space", "tab", "non-ascii"])
def test_malformed_idempotency_key_is_400(osrv, key):
    raw = ("POST /api/v1/orders HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
           f"X-User-Id: {uid()}\r\nX-User-Role: customer\r\n").encode()
    payload = json.dumps(good_body(osrv)).encode()
    raw += b"Idempotency-Key: " + key.encode("utf-8") + b"\r\n"
    raw += f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload
    with nothing_written(osrv), RawConn(osrv) as c:
        c.send(raw)
        assert_problem(c.response(), 400, "Idempotency-Key")


def test_longest_idempotency_key_is_accepted(osrv):
    user, key = uid(), "k" * 254 + "~"
    create(osrv, user, good_body(osrv), key)
    # a new body, the same key
    assert post_order(osrv, user, good_body(osrv, (5, 150)), key).status_code == 409


def test_concurrent_posts_with_one_key_create_exactly_one_order(osrv):
    user, key, body = uid(), uuid.uuid4().hex, good_body(osrv)
    events = osrv.db.count("events")
    results = run_threads(16, lambda i: post_order(osrv, user, body, key))
    statuses = [r.status_code for r in results]
    # replays while the saga runs answer 202 (pending), the others 201
    assert set(statuses) <= {201, 202} and 201 in statuses, \
        [(r.status_code, r.text[:200]) for r in results]
    ids = {r.json()["id"] for r in results}
    assert len(ids) == 1
    oid = ids.pop()
    assert {r.headers["Location"] for r in results} == {f"/api/v1/orders/{oid}"}
    done = [r for r in results if r.status_code == 201]
    assert len({r.headers["X-Position"] for r in done}) == 1
    evs = events_of(osrv, oid)
    assert [e["type"] for e in evs] == CHECKOUT_EVENTS
    assert osrv.db.count("events") == events + len(evs)
    assert [p["status"] for p in osrv.payments(oid)] == ["captured"]


# ---- GET /api/v1/orders/{id} ----

def test_get_etag_and_if_none_match(osrv):
    user = uid()
    doc, pos = create(osrv, user)
    tag, v = etag(doc), doc["version"]
    r = get_order(osrv, doc["id"], user, min_pos=pos)
    assert r.status_code == 200 and r.headers["ETag"] == tag
    assert r.headers["Content-Type"] == "application/json"
    not_modified = get_order(osrv, doc["id"], user, headers={"If-None-Match": tag})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["ETag"] == tag
    assert get_order(osrv, doc["id"], user,
                     headers={"If-None-Match": f'"{v + 70}"'}).status_code == 200
    # RFC 9110: a list of tags, weak comparison, and "*" match too
    for value in (f'"{v + 70}", {tag}', f"W/{tag}", '*'):
        assert get_order(osrv, doc["id"], user,
                         headers={"If-None-Match": value}).status_code == 304, value
    c = cancel(osrv, doc["id"], user)
    assert c.status_code == 200, c.text
    r = get_order(osrv, doc["id"], user, min_pos=c.headers["X-Position"],
                  headers={"If-None-Match": tag})
    assert r.status_code == 200 and r.json() == c.json()
    assert r.headers["ETag"] == etag(c.json()) and c.json()["version"] > v


def test_get_is_for_the_owner_and_admins(osrv):
    owner = uid()
    doc, pos = create(osrv, owner)
    assert_problem(get_order(osrv, doc["id"], uid(), min_pos=pos), 404)
    r = get_order(osrv, doc["id"], uid(), role="admin", min_pos=pos)
    assert r.status_code == 200 and r.json() == doc
    r = get_order(osrv, doc["id"].upper(), owner.upper(), min_pos=pos)
    assert r.status_code == 200 and r.json() == doc
    assert_problem(osrv.get(f"/api/v1/orders/{doc['id']}"), 401)


@pytest.mark.parametrize("oid", ["not-a-uuid", "123", NEVER_ISSUED_ID])
def test_get_unknown_or_malformed_id_is_404(osrv, oid):
    assert_problem(get_order(osrv, oid, uid(), role="admin", min_pos=committed(osrv)), 404)


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "0x10", "1 2", "", "+5",
                                   "99999999999999999999"])
def test_bad_min_position_is_400(osrv, value):
    doc, _ = create(osrv, uid())
    r = get_order(osrv, doc["id"], doc["user_id"], headers={"X-Min-Position": value})
    assert_problem(r, 400, "X-Min-Position")
    r = osrv.get(f"/api/v1/users/{doc['user_id']}/orders", user=doc["user_id"],
                 headers={"X-Min-Position": value})
    assert_problem(r, 400, "X-Min-Position")


def test_position_never_reached_is_504_at_the_deadline(start_shop):
    # 1 s: the checkout itself must end within the deadline less 250 ms to be answered 201
    s = start_shop(user=False, order_args=("--request-timeout-ms", str(1000 * SLOW)))
    user = uid()
    doc, pos = create(s, user)
    for path in (f"/api/v1/orders/{doc['id']}", f"/api/v1/users/{user}/orders"):
        t0 = time.monotonic()
        r = s.get(path, user=user, headers={"X-Min-Position": str(pos + 1000)})
        elapsed = time.monotonic() - t0
        assert_problem(r, 504)
        assert 0.3 * SLOW <= elapsed < 5 * SLOW, elapsed
    r = get_order(s, doc["id"], user, min_pos=pos)  # the server is fine afterwards
    assert r.status_code == 200 and r.json() == doc


def test_read_your_writes(osrv):
    user = uid()
    for i in range(40):
        r = post_order(osrv, user, good_body(osrv, (i + 1, 100 + i % 3)))
        assert r.status_code == 201, r.text
        doc, pos = r.json(), r.headers["X-Position"]
        g = get_order(osrv, doc["id"], user, min_pos=pos)
        assert g.status_code == 200, f"iteration {i}: {g.status_code} {g.text}"
        assert g.json() == doc
        if i % 4 == 0:
            c = cancel(osrv, doc["id"], user)
            assert c.status_code == 200, c.text
            g = get_order(osrv, doc["id"], user, min_pos=c.headers["X-Position"])
            assert g.status_code == 200 and g.json() == c.json()
            assert g.json()["status"] == "cancelled"
    lst = osrv.get(f"/api/v1/users/{user}/orders?limit=100", user=user,
                   headers={"X-Min-Position": str(committed(osrv))})
    assert len(lst.json()["items"]) == 40


# ---- GET /api/v1/users/{id}/orders ----

def list_orders(s, user, caller=None, role="customer", limit=None, cursor=None, min_pos=None):
    params = {}
    if limit is not None:
        params["limit"] = limit
    if cursor is not None:
        params["cursor"] = cursor
    h = {"X-Min-Position": str(min_pos)} if min_pos is not None else {}
    return s.get(f"/api/v1/users/{user}/orders", user=caller or user, role=role,
                 params=params, headers=h)


def test_paging_returns_every_order_once_newest_first(osrv):
    user, other = uid(), uid()
    mine = [create(osrv, user, good_body(osrv, (1, 1 + i % 4)))[0] for i in range(23)]
    create(osrv, other)
    pos = committed(osrv)
    expected = sorted(mine, key=lambda o: (o["created_at"], o["id"]), reverse=True)

    r = list_orders(osrv, user, min_pos=pos)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    doc = r.json()
    assert set(doc) == {"items", "next_cursor"}
    assert doc["items"] == expected[:10] and isinstance(doc["next_cursor"], str)

    for limit in (1, 5, 7, 23, 100):
        seen, cursor, pages = [], None, 0
        while True:
            r = list_orders(osrv, user, limit=limit, cursor=cursor)
            assert r.status_code == 200, r.text
            page = r.json()
            assert 0 < len(page["items"]) <= limit
            seen += page["items"]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert pages <= 23
        assert [o["id"] for o in seen] == [o["id"] for o in expected], f"limit {limit}"
        assert seen == expected
        assert pages == -(-23 // limit)


def test_list_for_a_user_without_orders_is_empty(osrv):
    r = list_orders(osrv, uid(), min_pos=committed(osrv))
    assert r.status_code == 200 and r.json() == {"items": [], "next_cursor": None}


def test_list_is_for_self_and_admins(osrv):
    user = uid()
    doc, pos = create(osrv, user)
    assert_problem(list_orders(osrv, user, caller=uid(), min_pos=pos), 403)
    r = list_orders(osrv, user, caller=uid(), role="admin", min_pos=pos)
    assert r.status_code == 200 and r.json()["items"] == [doc]
    assert_problem(osrv.get(f"/api/v1/users/{user}/orders"), 401)


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "", "5x", "1.5"])
def test_bad_limit_is_400(osrv, limit):
    user = uid()
    assert_problem(list_orders(osrv, user, limit=limit), 400, "limit")


def b64(text):
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("cursor", ["!!!", "garbage", b64("no separator"),
                                    b64("2026-01-01T00:00:00.000Z|not-a-uuid"), b64("x" * 200)])
def test_garbage_cursor_is_400(osrv, cursor):
    user = uid()
    assert_problem(list_orders(osrv, user, cursor=cursor), 400, "cursor")


# ---- POST /api/v1/orders/{id}/cancel ----

UNCHANGED_BY_CANCEL = ("id", "user_id", "items", "subtotal_cents", "shipping_cents",
                       "total_cents", "currency", "created_at", "shipping_address", "payment_id")


def test_cancel_by_owner_then_again_is_409(osrv):
    user = uid()
    doc, pos = create(osrv, user)
    r = cancel(osrv, doc["id"], user, reason="found it cheaper")
    assert r.status_code == 200, r.text
    c = r.json()
    assert_order(c, user)
    assert (c["status"], c["reason"], c["payment_status"], c["stock_status"]) == \
        ("cancelled", "found it cheaper", "refunded", "released")
    assert {k: c[k] for k in UNCHANGED_BY_CANCEL} == {k: doc[k] for k in UNCHANGED_BY_CANCEL}
    assert c["version"] > doc["version"]
    assert r.headers["ETag"] == etag(c) and int(r.headers["X-Position"]) > pos
    evs = events_of(osrv, doc["id"])
    assert [e["type"] for e in evs][len(CHECKOUT_EVENTS)] == "OrderCancelled"
    assert evs[-1]["version"] == c["version"]
    assert osrv.db.count("outbox", "WHERE aggregate_id = ?", [doc["id"]]) == len(evs)
    with nothing_written(osrv):
        again = cancel(osrv, doc["id"], user)
        assert "already cancelled" in assert_problem(again, 409)["detail"]
        assert "cancelled" in assert_problem(
            patch_status(osrv, doc["id"], "shipped", etag(c)), 409)["detail"]
    assert rebuild(events_of(osrv, doc["id"])) == c


def test_admin_cancels_any_order_others_get_404(osrv):
    owner = uid()
    doc, _ = create(osrv, owner)
    with nothing_written(osrv):
        assert_problem(cancel(osrv, doc["id"], uid()), 404)
        r = osrv.request("POST", f"/api/v1/orders/{doc['id']}/cancel",
                         data=json.dumps({"reason": "x"}), headers=JSON)
        assert_problem(r, 401)
    r = cancel(osrv, doc["id"], uid(), role="admin", reason="fraud suspected")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"


def test_cancel_shipped_order_is_409(osrv):
    user = uid()
    doc, _ = create(osrv, user)
    assert patch_status(osrv, doc["id"], "shipped", etag(doc)).status_code == 200
    with nothing_written(osrv):
        detail = assert_problem(cancel(osrv, doc["id"], user), 409)["detail"]
        assert "shipped" in detail, detail


@pytest.mark.parametrize("body,status,field", [
    ({}, 422, "reason"),
    ({"reason": ""}, 422, "reason"),
    ({"reason": "x" * 501}, 422, "reason"),
    ({"reason": " padded "}, 422, "reason"),
    ({"reason": "line\nbreak"}, 422, "reason"),
    ({"reason": None}, 400, "reason"),
    ({"reason": 42}, 400, "reason"),
    ({"reason": "ok", "refund": True}, 400, "refund"),
], ids=["missing", "empty", "501-chars", "spaces", "control", "null", "number", "unknown"])
def test_cancel_rejects_bad_bodies_and_writes_nothing(osrv, body, status, field):
    user = uid()
    doc, _ = create(osrv, user)
    with nothing_written(osrv):
        assert_problem(cancel(osrv, doc["id"], user, body=body), status, field)


def test_cancel_accepts_a_500_character_reason(osrv):
    user = uid()
    doc, _ = create(osrv, user)
    r = cancel(osrv, doc["id"], user, reason="\u00e9" * 500)
    assert r.status_code == 200 and r.json()["reason"] == "\u00e9" * 500


@pytest.mark.parametrize("oid", ["not-a-uuid", NEVER_ISSUED_ID])
def test_cancel_unknown_order_is_404(osrv, oid):
    with nothing_written(osrv):
        assert_problem(cancel(osrv, oid, uid(), role="admin"), 404)


# ---- PATCH /api/v1/orders/{id}/status ----

def test_status_moves_confirmed_shipped_delivered(osrv):
    user = uid()
    doc, pos = create(osrv, user)
    r = patch_status(osrv, doc["id"], "shipped", etag(doc))
    assert r.status_code == 200, r.text
    shipped = r.json()
    assert (shipped["status"], shipped["stock_status"]) == ("shipped", "committed")
    assert shipped["version"] > doc["version"] and r.headers["ETag"] == etag(shipped)
    p2 = int(r.headers["X-Position"])
    assert p2 > pos
    r = patch_status(osrv, doc["id"], "delivered", etag(shipped))
    assert r.status_code == 200, r.text
    delivered = r.json()
    assert (delivered["status"], r.headers["ETag"]) == ("delivered", etag(delivered))
    assert delivered["version"] == shipped["version"] + 1
    assert "reason" not in delivered
    g = get_order(osrv, doc["id"], user, min_pos=r.headers["X-Position"])
    assert g.json() == delivered and g.headers["ETag"] == etag(delivered)
    with nothing_written(osrv):
        for status in ("shipped", "delivered"):
            detail = assert_problem(patch_status(osrv, doc["id"], status, etag(delivered)),
                                    409)["detail"]
            assert "delivered" in detail, detail
        assert_problem(cancel(osrv, doc["id"], user), 409)


def test_delivered_needs_shipped_first(osrv):
    doc, _ = create(osrv, uid())
    with nothing_written(osrv):
        detail = assert_problem(patch_status(osrv, doc["id"], "delivered", etag(doc)),
                                409)["detail"]
        assert "confirmed" in detail and "delivered" in detail, detail


@pytest.mark.parametrize("status", ["confirmed", "rejected", "pending", "cancelled"])
def test_statuses_the_saga_owns_are_422(osrv, status):
    doc, _ = create(osrv, uid())
    with nothing_written(osrv):
        assert_problem(patch_status(osrv, doc["id"], status, etag(doc)), 422, "status")


def test_status_is_admin_only(osrv):
    user = uid()
    doc, _ = create(osrv, user)
    with nothing_written(osrv):
        assert_problem(patch_status(osrv, doc["id"], "shipped", etag(doc), user=user,
                                    role="customer"), 403)
        r = osrv.request("PATCH", f"/api/v1/orders/{doc['id']}/status",
                         data=json.dumps({"status": "shipped"}),
                         headers={**JSON, "If-Match": etag(doc)})
        assert_problem(r, 401)


@pytest.mark.parametrize("if_match,status", [
    (None, 428), ("abc", 400), ('"1', 400), ('"-1"', 400), ('"1x"', 400), ("", 400),
    ("older", 409), ('"0"', 409), ('"100"', 409)])
def test_status_needs_the_current_if_match(osrv, if_match, status):
    doc, _ = create(osrv, uid())
    if if_match == "older":
        if_match = f'"{doc["version"] - 1}"'
    with nothing_written(osrv):
        doc_ = assert_problem(patch_status(osrv, doc["id"], "shipped", if_match), status,
                              "If-Match" if status == 400 else None)
        if status == 409:
            assert doc_["detail"].startswith("stale version"), doc_


@pytest.mark.parametrize("body,status,field", [
    ({}, 422, "status"),
    ({"status": "SHIPPED"}, 422, "status"),
    ({"status": "lost"}, 422, "status"),
    ({"status": 3}, 400, "status"),
    ({"status": "shipped", "carrier": "UPS"}, 400, "carrier"),
], ids=["missing", "upper", "unknown-status", "number", "unknown"])
def test_status_rejects_bad_bodies_and_writes_nothing(osrv, body, status, field):
    doc, _ = create(osrv, uid())
    with nothing_written(osrv):
        assert_problem(patch_status(osrv, doc["id"], None, etag(doc), body=body), status,
                       field)


@pytest.mark.parametrize("oid", ["not-a-uuid", NEVER_ISSUED_ID])
def test_status_of_unknown_order_is_404(osrv, oid):
    with nothing_written(osrv):
        assert_problem(patch_status(osrv, oid, "shipped", '"4"'), 404)


# ---- concurrency ----

@pytest.mark.parametrize("action", ["cancel", "ship", "mixed"])
def test_concurrent_commands_on_one_order_have_exactly_one_winner(osrv, action):
    user = uid()
    doc, _ = create(osrv, user)

    def act(i):
        if action == "cancel" or (action == "mixed" and i % 2):
            return cancel(osrv, doc["id"], user, reason=f"cancel {i}")
        return patch_status(osrv, doc["id"], "shipped", etag(doc))
    results = run_threads(12, act)
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] + [409] * 11, [(r.status_code, r.text[:120]) for r in results]
    for r in results:
        if r.status_code == 409:
            assert_problem(r, 409)
    winner, = [r for r in results if r.status_code == 200]
    won = winner.json()
    assert winner.headers["ETag"] == etag(won) and won["status"] in ("cancelled", "shipped")
    evs = events_of(osrv, doc["id"])
    assert evs[-1]["version"] == won["version"]
    assert evs[len(CHECKOUT_EVENTS)]["type"] in ("OrderCancelled", "OrderShipped")
    assert int(winner.headers["X-Position"]) == evs[-1]["position"]
    assert rebuild(evs) == won
    assert osrv.db.count("outbox", "WHERE aggregate_id = ?", [doc["id"]]) == len(evs)
    # the losers left nothing behind at the inventory or the payment service: a cancelled
    # order was refunded and its stock released, a shipped one keeps both (committed)
    (pay,) = osrv.payments(doc["id"])
    reservation = osrv.reservation(doc["id"])["status"]
    if won["status"] == "cancelled":
        assert (won["payment_status"], won["stock_status"]) == ("refunded", "released"), won
        assert (pay["status"], reservation) == ("refunded", "released")
    else:
        assert (won["payment_status"], won["stock_status"]) == ("captured", "committed"), won
        assert (pay["status"], reservation) == ("captured", "committed")


def test_concurrent_posts_and_commands_keep_streams_contiguous(osrv):
    users = [uid() for _ in range(4)]
    orders = [create(osrv, u)[0] for u in users]

    def work(i):
        o = orders[i % 4]
        out = []
        for v in range(o["version"], o["version"] + 3):
            out.append(patch_status(osrv, o["id"], "shipped", f'"{v}"').status_code)
            out.append(post_order(osrv, users[i % 4]).status_code)
            out.append(cancel(osrv, o["id"], o["user_id"]).status_code)
        return out
    codes = [c for r in run_threads(8, work) for c in r]
    assert set(codes) <= {200, 201, 409}, codes
    assert codes.count(201) == 8 * 3
    assert_streams_contiguous(osrv.db)
    for o in orders:
        types = [e["type"] for e in events_of(osrv, o["id"])]
        assert types[:len(CHECKOUT_EVENTS)] == CHECKOUT_EVENTS
        after = types[len(CHECKOUT_EVENTS):]
        assert ("OrderShipped" in after) != ("OrderCancelled" in after), types


# ---- GET /api/v1/orders/{id}/events and the outbox ----

def test_events_endpoint_and_outbox_match_what_happened(osrv):
    user = uid()
    doc, p1 = create(osrv, user, good_body(osrv, shipping_address=ADDRESS))
    r2 = patch_status(osrv, doc["id"], "shipped", etag(doc))
    assert r2.status_code == 200, r2.text
    r3 = patch_status(osrv, doc["id"], "delivered", etag(r2.json()))
    assert r3.status_code == 200, r3.text

    r = osrv.get(f"/api/v1/orders/{doc['id']}/events", user=user)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    evs = r.json()["items"]
    assert r.json()["next_cursor"] is None
    types = [e["type"] for e in evs]
    assert types == CHECKOUT_EVENTS + ["OrderShipped", "StockCommitted", "OrderDelivered"]
    assert [e["version"] for e in evs] == list(range(1, len(evs) + 1))
    by_version = {e["version"]: e for e in evs}
    assert by_version[doc["version"]]["position"] == p1
    assert by_version[r2.json()["version"]]["position"] == int(r2.headers["X-Position"])
    assert evs[-1]["position"] == int(r3.headers["X-Position"])
    assert [e["position"] for e in evs] == sorted({e["position"] for e in evs})
    assert len({e["event_id"] for e in evs}) == len(evs)
    for e in evs:
        assert set(e) == EVENT_KEYS and UUID_RE.match(e["event_id"])
        assert RFC3339.match(e["recorded_at"]) and isinstance(e["data"], dict)
    created = evs[0]["data"]
    assert (created["order_id"], created["user_id"], created["total_cents"]) == \
        (doc["id"], user, doc["total_cents"])
    assert created["shipping_address"] == ADDRESS and created["items"] == doc["items"]
    assert by_version[r2.json()["version"]]["data"]["at"] == r2.json()["updated_at"]
    assert evs[-1]["data"]["at"] == r3.json()["updated_at"]
    assert rebuild(evs) == r3.json()

    rows = osrv.db.query("SELECT event_id, type, version, position, data, recorded_at "
                         "FROM events WHERE stream_id = ? ORDER BY version",
                         [f"order-{doc['id']}"])
    assert [(a, b, c, d, json.loads(e), f) for a, b, c, d, e, f in rows] == \
        [(e["event_id"], e["type"], e["version"], e["position"], e["data"], e["recorded_at"])
         for e in evs]
    out = osrv.db.query("SELECT id, aggregate_type, type, payload FROM outbox_messages "
                        "WHERE aggregate_id = ? ORDER BY seq", [doc["id"]])
    assert [(t, ty, json.loads(p)) for _, t, ty, p in out] == \
        [("order", e["type"], e["data"]) for e in evs]
    # the relay publishes every row to the local feed, in order
    poll(lambda: all(r[0] for r in osrv.db.query(
        "SELECT published_at FROM outbox WHERE aggregate_id = ?", [doc["id"]])),
        5 * SLOW, what="the relay to publish the order's events")
    with open(os.path.join(osrv.db.data_dir, "order-outbox.jsonl")) as feed:
        lines = [json.loads(line) for line in feed]
    published = [m["id"] for m in lines]
    assert [o[0] for o in out] == [i for i in published if i in {o[0] for o in out}]
    # each message carries its event's data, read from the event the row references
    payloads = {m["id"]: m["payload"] for m in lines}
    assert [payloads[o[0]] for o in out] == [e["data"] for e in evs]
    assert len({o[0] for o in out}) == len(evs)

    assert events_of(osrv, doc["id"], role="admin") == evs
    assert_problem(osrv.get(f"/api/v1/orders/{doc['id']}/events", user=uid()), 404)
    assert_problem(osrv.get(f"/api/v1/orders/{doc['id']}/events"), 401)
    for oid in (uid(), "not-a-uuid"):
        assert_problem(osrv.get(f"/api/v1/orders/{oid}/events", user=uid(), role="admin"), 404)


def test_outbox_has_one_row_per_event(osrv):
    create(osrv, uid())
    rows = osrv.db.query("SELECT stream_id, type, data FROM events ORDER BY position")
    out = osrv.db.query("SELECT aggregate_type, aggregate_id, type, payload FROM outbox_messages "
                        "ORDER BY seq")
    assert len(out) == len(rows)
    assert [("order", s[len("order-"):], t, json.loads(d)) for s, t, d in rows] == \
        [(a, b, c, json.loads(p)) for a, b, c, p in out]


# ---- metrics ----

def test_metrics_count_orders_amounts_appends_and_projection(osrv):
    m = osrv.metric
    before = {k: m(k, service="order") or 0 for k in
              ("orders_created_total", "order_amount_count", "order_amount_sum")}
    bucket10 = m("order_amount_bucket", service="order", le="10")
    bucket25 = m("order_amount_bucket", service="order", le="25")
    inf = m("order_amount_bucket", service="order", le="+Inf")
    appends, evs = m("eventstore_appends_total"), m("eventstore_events_total")
    batches = m("eventstore_group_commit_size_count")
    durations = m("eventstore_append_duration_seconds_count")
    syncs = m("eventstore_fsync_duration_seconds_count")
    user = uid()
    # totals with shipping: 7 + 499, 1234 + 499, 50000 (free shipping)
    docs = [create(osrv, user, good_body(osrv, (1, cents)))[0] for cents in (7, 1234, 50000)]
    assert [d["total_cents"] for d in docs] == [506, 1733, 50000]
    written = sum(d["version"] for d in docs)
    assert m("orders_created_total", service="order") == before["orders_created_total"] + 3
    assert m("order_amount_count", service="order") == before["order_amount_count"] + 3
    assert m("order_amount_sum", service="order") == \
        pytest.approx(before["order_amount_sum"] + 5.06 + 17.33 + 500.0)
    assert m("order_amount_bucket", service="order", le="10") == bucket10 + 1
    assert m("order_amount_bucket", service="order", le="25") == bucket25 + 2
    assert m("order_amount_bucket", service="order", le="+Inf") == inf + 3
    assert m("eventstore_appends_total") >= appends + 3
    assert m("eventstore_events_total") == evs + written
    assert m("eventstore_group_commit_size_count") > batches
    assert m("eventstore_append_duration_seconds_count") >= durations + 3
    # SQLite: each answered append waited for a syncer's fdatasync (one may cover several);
    # PostgreSQL's commit flushes by itself
    if BACKEND == "sqlite":
        assert m("eventstore_fsync_duration_seconds_count") > syncs
        assert m("eventstore_fsync_duration_seconds_sum") > 0
    else:
        assert m("eventstore_fsync_duration_seconds_count") == syncs == 0
    top = committed(osrv)
    assert m("eventstore_committed_position") == top
    poll(lambda: m("projection_position", projection="order_views") == top, 5 * SLOW,
         what="projection_position to reach the last commit")
    assert m("projection_lag_events", projection="order_views") == 0
    assert 0 <= m("projection_lag_seconds", projection="order_views") < 60
    (checkpoint,), = osrv.db.query("SELECT position FROM projection_checkpoints "
                                   "WHERE name = 'order_views'", file=READ)
    assert checkpoint == top


def test_metrics_exposition_passes_promtool(osrv):
    create(osrv, uid())
    r = osrv.get("/metrics")
    assert r.status_code == 200
    text = r.text
    for family, kind in (("orders_created_total", "counter"), ("order_amount", "histogram"),
                         ("eventstore_appends_total", "counter"),
                         ("eventstore_conflicts_total", "counter"),
                         ("eventstore_group_commit_size", "histogram"),
                         ("eventstore_append_duration_seconds", "histogram"),
                         ("eventstore_fsync_duration_seconds", "histogram"),
                         ("eventstore_committed_position", "gauge"),
                         ("projection_lag_events", "gauge"), ("projection_lag_seconds", "gauge"),
                         ("projection_position", "gauge"), ("requests_total", "counter")):
        assert f"# TYPE {family} {kind}\n" in text, f"no {kind} {family}"
    check = subprocess.run(["promtool", "check", "metrics"], input=r.content,
                           capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


def test_conflicts_are_counted(osrv):
    conflicts = osrv.metric("eventstore_conflicts_total")
    lost = 0
    for _ in range(5):
        doc, _ = create(osrv, uid())
        results = run_threads(8, lambda i: cancel(osrv, doc["id"], doc["user_id"]))
        assert sorted(r.status_code for r in results) == [200] + [409] * 7
        # a loser read the new version ("already cancelled") or lost the append itself
        lost += sum("changed while" in r.json()["detail"] for r in results
                    if r.status_code == 409)
    assert osrv.metric("eventstore_conflicts_total") == conflicts + lost


# ---- the views agree with the events ----

def test_views_equal_a_rebuild_from_the_events(osrv):
    user = uid()
    a, _ = create(osrv, user, good_body(osrv, shipping_address=ADDRESS))
    b, _ = create(osrv, user)
    assert cancel(osrv, b["id"], user, reason="no longer needed").status_code == 200
    c, _ = create(osrv, user)
    assert patch_status(osrv, c["id"], "shipped", etag(c)).status_code == 200
    top = committed(osrv)
    poll(lambda: osrv.metric("projection_position", projection="order_views") >= top,
         5 * SLOW, what="the projector to catch up")
    streams = assert_streams_contiguous(osrv.db)
    views = {r[0]: r[1:] for r in osrv.db.query(
        "SELECT id, user_id, status, total_cents, currency, version, data FROM order_views",
        file=READ)}
    index = osrv.db.query("SELECT user_id, order_id, created_at FROM user_order_views",
                          file=READ)
    assert len(index) == len({r[1] for r in index}) == len(streams)
    ids = [s[len("order-"):] for s in streams]
    assert set(views) == set(ids)
    by_user = {}
    for oid in ids:
        expected = rebuild(events_of(osrv, oid))
        g = get_order(osrv, oid, uid(), role="admin", min_pos=top)
        assert g.status_code == 200 and g.json() == expected, oid
        assert g.headers["ETag"] == etag(expected)
        user_id, status, total, currency, version, data = views[oid]
        assert (user_id, status, total, currency, version) == \
            (expected["user_id"], expected["status"], expected["total_cents"],
             expected["currency"], expected["version"])
        assert json.loads(data) == expected
        by_user.setdefault(expected["user_id"], []).append(expected)
    for user_id, order_id, created_at in index:
        assert views[order_id][0] == user_id
        assert json.loads(views[order_id][5])["created_at"] == created_at
    # every user's list holds each of their orders once, newest first
    for user_id in (user,) + tuple(list(by_user)[:5]):
        r = list_orders(osrv, user_id, role="admin", caller=uid(), limit=100)
        want = sorted(by_user[user_id], key=lambda o: (o["created_at"], o["id"]), reverse=True)
        assert r.json()["items"] == want[:100]


def test_idempotency_fingerprint_leaves_the_card_out(osrv):
    """The stored request fingerprint never hashes the card number: a retry that differs only
    in the card is the same request, and the stored hash is that of the body without it."""
    import hashlib
    user, key = uid(), "card-" + uuid.uuid4().hex
    body = good_body(osrv, payment={"card_number": "4242424242424242"})
    first = post_order(osrv, user, body, key)
    assert first.status_code == 201, first.text
    again = post_order(osrv, user, {**body, "payment": {"card_number": "4000000000000002"}}, key)
    assert again.status_code == 201, again.text
    assert again.json() == first.json() and again.json()["status"] == "confirmed"
    (meta,), = osrv.db.query("SELECT metadata FROM events WHERE stream_id = ? AND version = 1",
                             [f"order-{first.json()['id']}"])
    without = {k: v for k, v in body.items() if k != "payment"}
    canonical = json.dumps(without, sort_keys=True, separators=(",", ":"))
    assert json.loads(meta)["request_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
