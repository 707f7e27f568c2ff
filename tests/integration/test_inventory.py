"""The inventory service (`microshop serve inventory`): the public catalogue (products, prices,
stock), the internal quote and reservation API keyed by order id, and the outbox events each
write commits with it. Every rejected request is checked to have written nothing."""
import contextlib
import json
import os
import uuid

import pytest

from conftest import RFC3339, UUID_RE, ServerSet, assert_problem, poll

TABLES = ("products", "stock_levels", "price_history", "reservations", "reservation_lines",
          "outbox")
# the relay marks outbox rows published in the background: not a request's write
OWN_COLUMNS = {"outbox": "seq, id, aggregate_type, aggregate_id, type, payload, created_at"}
PUBLIC_KEYS = {"id", "sku", "name", "price_cents", "currency", "available"}
ADMIN_KEYS = PUBLIC_KEYS | {"on_hand", "reserved", "low_stock_threshold", "created_at",
                            "updated_at"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def inv():
    servers = ServerSet()
    try:
        yield servers.start(target="inventory")
    finally:
        servers.close()


def uid():
    return str(uuid.uuid4())


def admin_id():
    return uid()


def new_sku():
    return "SKU-" + uuid.uuid4().hex[:10]


def create(s, stock=10, price=1299, currency="EUR", **extra):
    body = {"sku": new_sku(), "name": "Widget", "price_cents": price, "currency": currency,
            "stock": stock, **extra}
    r = s.request("POST", "/api/v1/products", user=admin_id(), role="admin", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def reserve(s, order_id, items):
    return s.request("POST", "/internal/v1/reservations", json={"order_id": order_id,
                                                                 "items": items})


def line(product, quantity=1):
    return {"product_id": product["id"], "quantity": quantity}


def product(s, pid):
    r = s.get(f"/api/v1/products/{pid}")
    assert r.status_code == 200, r.text
    return r.json()


def stock(s, pid):
    (row,) = s.db.query("SELECT on_hand, reserved FROM stock_levels WHERE product_id = ?", [pid])
    return row


def events(s, aggregate_id, type_=None):
    rows = s.db.query("SELECT type, payload FROM outbox WHERE aggregate_id = ? ORDER BY seq",
                      [aggregate_id])
    return [(t, json.loads(p)) for t, p in rows if type_ in (None, t)]


def snapshot(db):
    return {t: sorted(db.query(f"SELECT {OWN_COLUMNS.get(t, '*')} FROM {t}"), key=repr)
            for t in TABLES}


@contextlib.contextmanager
def nothing_written(s):
    before = snapshot(s.db)
    yield
    assert snapshot(s.db) == before, "a rejected request changed the database"


# ---- products ----

def test_create_product_returns_it_and_writes_event(inv):
    body = {"sku": new_sku(), "name": "Blue mug", "price_cents": 1299, "currency": "EUR",
            "stock": 7, "low_stock_threshold": 2}
    r = inv.request("POST", "/api/v1/products", user=admin_id(), role="admin", json=body)
    assert r.status_code == 201, r.text
    doc = r.json()
    assert set(doc) == ADMIN_KEYS and UUID_RE.match(doc["id"]), doc
    assert RFC3339.match(doc["created_at"])
    assert r.headers["Location"] == f"/api/v1/products/{doc['id']}"
    assert (doc["sku"], doc["name"], doc["price_cents"], doc["currency"]) == (
        body["sku"], "Blue mug", 1299, "EUR")
    assert (doc["available"], doc["on_hand"], doc["reserved"], doc["low_stock_threshold"]) == (
        7, 7, 0, 2)
    assert stock(inv, doc["id"]) == (7, 0)
    ((etype, payload),) = events(inv, doc["id"])
    assert etype == "product.created"
    assert payload["product_id"] == doc["id"] and payload["sku"] == body["sku"]
    assert create(inv)["low_stock_threshold"] == 5  # the default threshold
    # the relay publishes the event to the service's feed
    feed = os.path.join(inv.db.data_dir, "inventory-outbox.jsonl")

    def published():
        if not os.path.exists(feed):
            return False
        with open(feed) as f:
            return any(json.loads(x)["aggregate_id"] == doc["id"] for x in f if x.strip())
    poll(published, 10, what="product.created in the outbox feed")


def test_get_and_list_products_need_no_identity(inv):
    p = create(inv, stock=4)
    doc = product(inv, p["id"])
    assert set(doc) == PUBLIC_KEYS and doc["available"] == 4
    assert product(inv, p["id"].upper())["id"] == p["id"]
    assert_problem(inv.get(f"/api/v1/products/{uid()}"), 404)
    assert_problem(inv.get("/api/v1/products/not-a-uuid"), 404)
    # page through the whole catalogue two at a time: every product once, in sku order
    mine = {create(inv)["sku"] for _ in range(3)} | {p["sku"]}
    seen, cursor = [], None
    while True:
        r = inv.get("/api/v1/products", params={"limit": 2, **({"cursor": cursor} if cursor
                                                               else {})})
        assert r.status_code == 200, r.text
        page = r.json()
        assert set(page) == {"items", "next_cursor"} and len(page["items"]) <= 2
        for item in page["items"]:
            assert set(item) == PUBLIC_KEYS, item
        seen += [i["sku"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) and mine <= set(seen)
    assert len(inv.get("/api/v1/products").json()["items"]) == min(10, len(seen))


@pytest.mark.parametrize("query,field", [
    ({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"limit": "x"}, "limit"),
    ({"cursor": "!!"}, "cursor"), ({"cursor": "YSBi"}, "cursor"),  # "a b" is no sku
])
def test_list_rejects_bad_paging(inv, query, field):
    assert_problem(inv.get("/api/v1/products", params=query), 400, field)


def test_create_product_conflict_on_taken_sku(inv):
    p = create(inv)
    body = {"sku": p["sku"], "name": "Other", "price_cents": 1, "currency": "EUR", "stock": 1}
    with nothing_written(inv):
        r = inv.request("POST", "/api/v1/products", user=admin_id(), role="admin", json=body)
        assert_problem(r, 409, "sku")


GOOD = {"sku": "GOOD-1", "name": "Widget", "price_cents": 100, "currency": "EUR", "stock": 1}


@pytest.mark.parametrize("change,status,field", [
    ({"sku": ""}, 422, "sku"), ({"sku": "has space"}, 422, "sku"), ({"sku": "x" * 65}, 422, "sku"),
    ({"sku": 5}, 400, "sku"), ({"name": ""}, 422, "name"), ({"name": " pad"}, 422, "name"),
    ({"price_cents": -1}, 422, "price_cents"), ({"price_cents": 100000001}, 422, "price_cents"),
    ({"price_cents": 1.5}, 400, "price_cents"), ({"currency": "eur"}, 422, "currency"),
    ({"currency": "XXX"}, 422, "currency"), ({"stock": -1}, 422, "stock"),
    ({"stock": "3"}, 400, "stock"), ({"low_stock_threshold": -2}, 422, "low_stock_threshold"),
    ({"low_stock_threshold": None}, 400, "low_stock_threshold"), ({"extra": 1}, 400, "extra"),
    ({"sku": None}, 400, "sku"),
])
def test_create_product_rejects_bad_input(inv, change, status, field):
    body = {**GOOD, "sku": new_sku(), **change}
    with nothing_written(inv):
        r = inv.request("POST", "/api/v1/products", user=admin_id(), role="admin", json=body)
        assert_problem(r, status, field)


@pytest.mark.parametrize("missing", ["sku", "name", "price_cents", "currency", "stock"])
def test_create_product_requires_fields(inv, missing):
    body = {k: v for k, v in {**GOOD, "sku": new_sku()}.items() if k != missing}
    with nothing_written(inv):
        r = inv.request("POST", "/api/v1/products", user=admin_id(), role="admin", json=body)
        assert_problem(r, 422, missing)


def test_create_product_rejects_non_json(inv):
    with nothing_written(inv):
        r = inv.request("POST", "/api/v1/products", user=admin_id(), role="admin", data="{",
                        headers=JSON)
        assert_problem(r, 400)
        r = inv.request("POST", "/api/v1/products", user=admin_id(), role="admin", data="x",
                        headers={"Content-Type": "text/plain"})
        assert_problem(r, 415)


def admin_calls(pid):
    return [("POST", "/api/v1/products", {**GOOD, "sku": new_sku()}),
            ("PUT", f"/api/v1/products/{pid}/price", {"price_cents": 5}),
            ("GET", f"/api/v1/products/{pid}/price-history", None),
            ("PUT", f"/api/v1/products/{pid}/stock", {"on_hand": 3})]


def test_admin_endpoints_need_an_admin(inv):
    p = create(inv)
    with nothing_written(inv):
        for method, path, body in admin_calls(p["id"]):
            kw = {"json": body} if body is not None else {}
            assert_problem(inv.request(method, path, **kw), 401)
            assert_problem(inv.request(method, path, user=uid(), role="customer", **kw), 403)
            assert_problem(inv.request(method, path, headers={"X-User-Id": uid()}, **kw), 401)


def test_price_change_appends_history_and_event(inv):
    p = create(inv, price=1000)
    a = admin_id()
    r = inv.request("PUT", f"/api/v1/products/{p['id']}/price", user=a, role="admin",
                    json={"price_cents": 1250})
    assert r.status_code == 200, r.text
    assert set(r.json()) == ADMIN_KEYS and r.json()["price_cents"] == 1250
    assert product(inv, p["id"])["price_cents"] == 1250
    for price in (1300, 1400):
        r = inv.request("PUT", f"/api/v1/products/{p['id']}/price", user=a, role="admin",
                        json={"price_cents": price})
        assert r.status_code == 200
    with nothing_written(inv):  # the same price again records nothing
        r = inv.request("PUT", f"/api/v1/products/{p['id']}/price", user=a, role="admin",
                        json={"price_cents": 1400})
        assert r.status_code == 200 and r.json()["price_cents"] == 1400
    r = inv.request("GET", f"/api/v1/products/{p['id']}/price-history", user=a, role="admin")
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [i["price_cents"] for i in items] == [1400, 1300, 1250, 1000]  # newest first
    for i in items:
        assert set(i) == {"price_cents", "currency", "changed_at"} and i["currency"] == "EUR"
        assert RFC3339.match(i["changed_at"])
    assert r.json()["next_cursor"] is None
    # paged
    r = inv.request("GET", f"/api/v1/products/{p['id']}/price-history", user=a, role="admin",
                    params={"limit": 3})
    page = r.json()
    assert [i["price_cents"] for i in page["items"]] == [1400, 1300, 1250]
    r = inv.request("GET", f"/api/v1/products/{p['id']}/price-history", user=a, role="admin",
                    params={"limit": 3, "cursor": page["next_cursor"]})
    assert [i["price_cents"] for i in r.json()["items"]] == [1000]
    assert r.json()["next_cursor"] is None
    changed = [e for t, e in events(inv, p["id"]) if t == "price.changed"]
    assert [(e["old_price_cents"], e["price_cents"]) for e in changed] == [
        (1000, 1250), (1250, 1300), (1300, 1400)]


@pytest.mark.parametrize("body,status,field", [
    ({"price_cents": -1}, 422, "price_cents"), ({"price_cents": "9"}, 400, "price_cents"),
    ({}, 422, "price_cents"), ({"price_cents": 1, "currency": "USD"}, 400, "currency"),
])
def test_price_rejects_bad_input(inv, body, status, field):
    p = create(inv)
    with nothing_written(inv):
        r = inv.request("PUT", f"/api/v1/products/{p['id']}/price", user=admin_id(),
                        role="admin", json=body)
        assert_problem(r, status, field)


def test_product_routes_answer_404_for_unknown_products(inv):
    a = admin_id()
    with nothing_written(inv):
        for pid in (uid(), "nope"):
            assert_problem(inv.request("PUT", f"/api/v1/products/{pid}/price", user=a,
                                       role="admin", json={"price_cents": 1}), 404)
            assert_problem(inv.request("PUT", f"/api/v1/products/{pid}/stock", user=a,
                                       role="admin", json={"on_hand": 1}), 404)
            assert_problem(inv.request("GET", f"/api/v1/products/{pid}/price-history", user=a,
                                       role="admin"), 404)
    p = create(inv)
    with nothing_written(inv):
        r = inv.request("GET", f"/api/v1/products/{p['id']}/price-history", user=a,
                        role="admin", params={"cursor": "eA"})
        assert_problem(r, 400, "cursor")


def test_stock_put_sets_on_hand_never_below_reserved(inv):
    p = create(inv, stock=10)
    a = admin_id()
    r = inv.request("PUT", f"/api/v1/products/{p['id']}/stock", user=a, role="admin",
                    json={"on_hand": 20})
    assert r.status_code == 200, r.text
    assert (r.json()["on_hand"], r.json()["available"]) == (20, 20)
    assert reserve(inv, uid(), [line(p, 8)]).status_code == 201
    with nothing_written(inv):
        r = inv.request("PUT", f"/api/v1/products/{p['id']}/stock", user=a, role="admin",
                        json={"on_hand": 7})
        assert_problem(r, 409, "on_hand")
    r = inv.request("PUT", f"/api/v1/products/{p['id']}/stock", user=a, role="admin",
                    json={"on_hand": 8})
    assert r.status_code == 200 and (r.json()["available"], r.json()["reserved"]) == (0, 8)


@pytest.mark.parametrize("body,status,field", [
    ({"on_hand": -1}, 422, "on_hand"), ({"on_hand": 1000000001}, 422, "on_hand"),
    ({"on_hand": True}, 400, "on_hand"), ({}, 422, "on_hand"), ({"stock": 3}, 400, "stock"),
])
def test_stock_put_rejects_bad_input(inv, body, status, field):
    p = create(inv)
    with nothing_written(inv):
        r = inv.request("PUT", f"/api/v1/products/{p['id']}/stock", user=admin_id(),
                        role="admin", json=body)
        assert_problem(r, status, field)


def test_stock_low_when_available_crosses_below_threshold(inv):
    p = create(inv, stock=8, low_stock_threshold=5)
    assert reserve(inv, uid(), [line(p, 3)]).status_code == 201  # 5 left: not below
    assert events(inv, p["id"], "stock.low") == []
    assert reserve(inv, uid(), [line(p, 1)]).status_code == 201  # 4 left: crossed
    ((_, low),) = events(inv, p["id"], "stock.low")
    assert low == {"product_id": p["id"], "sku": p["sku"], "available": 4, "threshold": 5}
    assert reserve(inv, uid(), [line(p, 1)]).status_code == 201  # already below: no new event
    assert len(events(inv, p["id"], "stock.low")) == 1
    # a stock count can cross too
    q = create(inv, stock=10, low_stock_threshold=3)
    r = inv.request("PUT", f"/api/v1/products/{q['id']}/stock", user=admin_id(), role="admin",
                    json={"on_hand": 2})
    assert r.status_code == 200
    ((_, low),) = events(inv, q["id"], "stock.low")
    assert (low["available"], low["threshold"]) == (2, 3)


# ---- quotes ----

def test_quote_prices_lines_without_reserving(inv):
    p, q = create(inv, stock=3, price=500), create(inv, stock=9, price=250)
    with nothing_written(inv):
        r = inv.request("POST", "/internal/v1/quotes", json={"items": [line(p, 2), line(q, 20)]})
    assert r.status_code == 200, r.text
    assert r.json() == {"currency": "EUR", "items": [
        {"product_id": p["id"], "quantity": 2, "unit_price_cents": 500, "currency": "EUR",
         "available": 3},
        {"product_id": q["id"], "quantity": 20, "unit_price_cents": 250, "currency": "EUR",
         "available": 9}]}


def bad_lines(p):
    return [
        ({"items": []}, 422, "items"),
        ({"items": [{"product_id": p["id"], "quantity": 0}]}, 422, "items[0].quantity"),
        ({"items": [{"product_id": p["id"], "quantity": 10001}]}, 422, "items[0].quantity"),
        ({"items": [{"product_id": "x", "quantity": 1}]}, 422, "items[0].product_id"),
        ({"items": [line(p), line(p)]}, 422, "items[1].product_id"),
        ({"items": [line(p), {"product_id": uid(), "quantity": 1}]}, 422, "items[1].product_id"),
        ({"items": [{"product_id": p["id"], "quantity": "1"}]}, 400, "items[0].quantity"),
        ({"items": [{"product_id": p["id"], "quantity": 1, "price": 3}]}, 400, "items[0].price"),
        ({"items": [{"quantity": 1}]}, 422, "items[0].product_id"),
        ({"items": ["x"]}, 400, "items[0]"),
        ({"items": {}}, 400, "items"),
        ({}, 422, "items"),
        ({"items": [line(p)] * 101}, 422, "items"),
    ]


def test_quote_rejects_bad_input(inv):
    p, usd = create(inv), create(inv, currency="USD")
    with nothing_written(inv):
        for body, status, field in bad_lines(p) + [
                ({"items": [line(p)], "x": 1}, 400, "x"),
                ({"items": [line(p), line(usd)]}, 422, "items[1].product_id")]:
            r = inv.request("POST", "/internal/v1/quotes", json=body)
            assert_problem(r, status, field)


# ---- reservations ----

def test_reserve_commit_and_release(inv):
    p, q = create(inv, stock=10, price=700), create(inv, stock=5, price=300)
    order = uid()
    r = reserve(inv, order, [line(p, 4), line(q, 2)])
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["order_id"] == order and doc["status"] == "reserved"
    assert sorted(doc["items"], key=lambda i: i["product_id"]) == sorted([
        {"product_id": p["id"], "quantity": 4, "unit_price_cents": 700, "currency": "EUR"},
        {"product_id": q["id"], "quantity": 2, "unit_price_cents": 300, "currency": "EUR"}],
        key=lambda i: i["product_id"])
    assert stock(inv, p["id"]) == (10, 4) and product(inv, p["id"])["available"] == 6
    assert inv.get(f"/internal/v1/reservations/{order}").json() == doc
    ((t, e),) = events(inv, order)
    assert t == "stock.reserved" and e["order_id"] == order and len(e["items"]) == 2
    r = inv.request("POST", f"/internal/v1/reservations/{order}/commit")
    assert r.status_code == 200 and r.json() == {"order_id": order, "status": "committed"}
    assert stock(inv, p["id"]) == (6, 0) and stock(inv, q["id"]) == (3, 0)
    assert [t for t, _ in events(inv, order)] == ["stock.reserved", "stock.committed"]
    assert inv.get(f"/internal/v1/reservations/{order}").json()["status"] == "committed"
    # another order released gives its units back
    other = uid()
    assert reserve(inv, other, [line(p, 6)]).status_code == 201
    assert product(inv, p["id"])["available"] == 0
    r = inv.request("POST", f"/internal/v1/reservations/{other}/release")
    assert r.status_code == 200 and r.json() == {"order_id": other, "status": "released"}
    assert stock(inv, p["id"]) == (6, 0)
    assert [t for t, _ in events(inv, other)] == ["stock.reserved", "stock.released"]


def test_reserve_commit_release_are_idempotent(inv):
    p = create(inv, stock=10)
    order = uid()
    first = reserve(inv, order, [line(p, 3)])
    assert first.status_code == 201
    with nothing_written(inv):
        again = reserve(inv, order.upper(), [line(p, 3)])
        assert again.status_code == 201 and again.json() == first.json()
        assert_problem(reserve(inv, order, [line(p, 4)]), 409)
        assert reserve(inv, order, [line(p, 4)]).json()["reason"] == "conflict"
    assert inv.request("POST", f"/internal/v1/reservations/{order}/commit").status_code == 200
    with nothing_written(inv):
        r = inv.request("POST", f"/internal/v1/reservations/{order}/commit")
        assert r.status_code == 200 and r.json()["status"] == "committed"
        r = inv.request("POST", f"/internal/v1/reservations/{order}/release")
        assert assert_problem(r, 409)["reason"] == "committed"
    assert stock(inv, p["id"]) == (7, 0)
    # release twice
    order2 = uid()
    assert reserve(inv, order2, [line(p, 2)]).status_code == 201
    assert inv.request("POST", f"/internal/v1/reservations/{order2}/release").status_code == 200
    with nothing_written(inv):
        r = inv.request("POST", f"/internal/v1/reservations/{order2}/release")
        assert r.status_code == 200 and r.json()["status"] == "released"
        r = inv.request("POST", f"/internal/v1/reservations/{order2}/commit")
        assert assert_problem(r, 409)["reason"] == "released"
        r = reserve(inv, order2, [line(p, 2)])
        assert assert_problem(r, 409)["reason"] == "released"
    assert stock(inv, p["id"]) == (7, 0)


def test_release_before_reserve_leaves_a_tombstone(inv):
    p = create(inv, stock=5)
    order = uid()
    r = inv.request("POST", f"/internal/v1/reservations/{order}/release")
    assert r.status_code == 200 and r.json() == {"order_id": order, "status": "released"}
    assert stock(inv, p["id"]) == (5, 0)
    with nothing_written(inv):
        doc = assert_problem(reserve(inv, order, [line(p, 1)]), 409)
        assert doc["reason"] == "released"
    assert stock(inv, p["id"]) == (5, 0)
    assert inv.get(f"/internal/v1/reservations/{order}").json()["items"] == []


def test_reserve_is_all_lines_or_none(inv):
    p, q, r_ = create(inv, stock=10), create(inv, stock=2), create(inv, stock=1)
    order = uid()
    with nothing_written(inv):
        r = reserve(inv, order, [line(p, 5), line(q, 3), line(r_, 2)])
        doc = assert_problem(r, 409, "items[1].quantity")
        assert doc["reason"] == "out_of_stock"
        assert {e["field"] for e in doc["errors"]} == {"items[1].quantity", "items[2].quantity"}
    assert stock(inv, p["id"]) == (10, 0) and stock(inv, q["id"]) == (2, 0)
    assert_problem(inv.get(f"/internal/v1/reservations/{order}"), 404)
    # the same order may try again once it fits
    assert reserve(inv, order, [line(p, 5), line(q, 2)]).status_code == 201
    assert stock(inv, p["id"]) == (10, 5) and stock(inv, q["id"]) == (2, 2)


def test_reserve_rejects_bad_input(inv):
    p, usd = create(inv), create(inv, currency="USD")
    with nothing_written(inv):
        for body, status, field in bad_lines(p):
            r = inv.request("POST", "/internal/v1/reservations", json={"order_id": uid(), **body})
            assert_problem(r, status, field)
        for body, status, field in [
                ({"order_id": "x", "items": [line(p)]}, 422, "order_id"),
                ({"order_id": 1, "items": [line(p)]}, 400, "order_id"),
                ({"items": [line(p)]}, 422, "order_id"),
                ({"order_id": uid(), "items": [line(p)], "status": "x"}, 400, "status"),
                ({"order_id": uid(), "items": [line(p), line(usd)]}, 422,
                 "items[1].product_id")]:
            r = inv.request("POST", "/internal/v1/reservations", json=body)
            assert_problem(r, status, field)
        r = inv.request("POST", "/internal/v1/reservations", data="[]", headers=JSON)
        assert_problem(r, 400)


def test_unknown_reservations(inv):
    with nothing_written(inv):
        assert_problem(inv.request("POST", f"/internal/v1/reservations/{uid()}/commit"), 404)
        assert_problem(inv.get(f"/internal/v1/reservations/{uid()}"), 404)
        for path in ("/internal/v1/reservations/x", "/internal/v1/reservations/x/commit",
                     "/internal/v1/reservations/x/release"):
            method = "GET" if path.endswith("/x") else "POST"
            assert_problem(inv.request(method, path), 404)
