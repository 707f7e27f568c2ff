"""Checkout across the services (issue #12): POST /api/v1/orders quotes the items at the
inventory's prices, reserves the stock, charges the card and confirms, or rejects the order
(out of stock, card declined) leaving stock and payments as they were; cancel refunds and
releases, shipping commits the reservation; Idempotency-Key charges once. Every check reads
the other services too: the inventory's stock and reservation, the payment service's
payments. The shop (shop.py) has two inventory instances on one database and a user service."""
import contextlib
import json
import subprocess
import threading
import uuid

import pytest

from conftest import BINARY, SLOW, UUID_RE, assert_problem, clean_env, poll, run_threads
from shop import (ADDRESS, CARD, DECLINED, SHIPPING, Shop, line, shipping_for,  # noqa: F401
                  start_shop)
from test_orders import nothing_written, patch_status

CHECKOUT_EVENTS = ["OrderCreated", "StockReserved", "PaymentCaptured", "OrderConfirmed"]
ORDER_KEYS = {"id", "user_id", "items", "subtotal_cents", "shipping_cents", "total_cents",
              "currency", "status", "version", "created_at", "updated_at", "shipping_address",
              "payment_status", "stock_status"}


@pytest.fixture(scope="module")
def shop():
    """Two inventory instances on one database behind the order service."""
    with Shop(instances=2) as s:
        yield s


def totals(*lines):
    """(subtotal, shipping, total) of (price, quantity) pairs."""
    subtotal = sum(p * q for p, q in lines)
    return subtotal, shipping_for(subtotal), subtotal + shipping_for(subtotal)


def payment_rows(shop):
    return shop.payment_svc.db.count("payments")


@contextlib.contextmanager
def untouched(shop, *products):
    """Asserts that the block writes nothing anywhere: no order event, no payment, and the
    products' stock as it was."""
    stock = [shop.stock(p) for p in products]
    payments = payment_rows(shop)
    with nothing_written(shop):
        yield
    assert [shop.stock(p) for p in products] == stock
    assert payment_rows(shop) == payments


def test_shop_starts_every_process_and_brings_them_back(shop):
    """The harness itself: every process healthy, a customer and a product made through
    their services, and kill -9 / restart on the same port and data."""
    for name, s in shop.servers.items():
        assert s.get("/health").status_code == 200, name
    assert shop.inventory_names == ["inventory", "inventory2"]
    user = shop.customer()
    assert UUID_RE.match(user)
    p = shop.product(stock=3, price=250)
    assert shop.stock(p) == {"available": 3, "on_hand": 3, "reserved": 0}
    assert shop.payments(str(uuid.uuid4())) == []
    for name, how in (("inventory2", shop.kill), ("payment", shop.restart)):
        port = shop.server(name).port
        back = how(name)
        assert back.port == port and back.get("/health").status_code == 200
    # the second instance reads the same database: the product is there
    r = shop.server("inventory2").get(f"/api/v1/products/{p['id']}")
    assert r.status_code == 200 and r.json()["available"] == 3


def test_happy_checkout_reserves_charges_and_confirms(shop):
    user = shop.customer()
    a, b = shop.product(stock=10, price=1250), shop.product(stock=5, price=300)
    r = shop.checkout(user, [(a, 2), (b, 1)])
    assert r.status_code == 201, r.text
    doc = r.json()
    subtotal, shipping, total = totals((1250, 2), (300, 1))
    assert set(doc) == ORDER_KEYS | {"payment_id"}, doc
    assert (doc["status"], doc["payment_status"], doc["stock_status"]) == \
        ("confirmed", "captured", "reserved")
    assert (doc["subtotal_cents"], doc["shipping_cents"], doc["total_cents"]) == \
        (subtotal, shipping, total) == (2800, SHIPPING, 3299)
    assert doc["items"] == [{"product_id": a["id"], "quantity": 2, "unit_price_cents": 1250},
                            {"product_id": b["id"], "quantity": 1, "unit_price_cents": 300}]
    assert doc["currency"] == "EUR" and doc["user_id"] == user
    assert doc["shipping_address"] == ADDRESS
    assert r.headers["Location"] == f"/api/v1/orders/{doc['id']}"
    assert r.headers["ETag"] == f'"{doc["version"]}"'
    g = shop.get(f"/api/v1/orders/{doc['id']}", user=user,
                 headers={"X-Min-Position": r.headers["X-Position"]})
    assert g.status_code == 200 and g.json() == doc

    # the stock is reserved, not taken
    assert shop.stock(a) == {"available": 8, "on_hand": 10, "reserved": 2}
    assert shop.stock(b) == {"available": 4, "on_hand": 5, "reserved": 1}
    res = shop.reservation(doc["id"])
    assert res["status"] == "reserved", res
    # one captured payment of the order's amount
    (pay,) = shop.payments(doc["id"])
    assert (pay["status"], pay["amount_cents"], pay["currency"], pay["card_last4"]) == \
        ("captured", total, "EUR", "4242")
    assert pay["id"] == doc["payment_id"] and pay["user_id"] == user
    # the events, in order
    evs = shop.events(doc["id"])
    assert [e["type"] for e in evs] == CHECKOUT_EVENTS
    assert [e["version"] for e in evs] == list(range(1, len(evs) + 1))
    assert evs[-1]["version"] == doc["version"]
    created = evs[0]["data"]
    assert created["status"] == "pending"
    assert (created["subtotal_cents"], created["shipping_cents"], created["total_cents"]) == \
        (subtotal, shipping, total)
    assert created["card_last4"] == "4242"
    assert evs[2]["data"]["payment_id"] == pay["id"]
    assert CARD not in json.dumps(evs) and CARD not in r.text


@pytest.mark.parametrize("price,quantity,shipping", [
    (4999, 1, SHIPPING), (5000, 1, 0), (2500, 2, 0), (1, 1, SHIPPING)])
def test_shipping_is_free_from_a_subtotal_of_5000(shop, price, quantity, shipping):
    user = shop.customer()
    p = shop.product(stock=5, price=price)
    r = shop.checkout(user, [(p, quantity)])
    assert r.status_code == 201, r.text
    doc = r.json()
    assert (doc["subtotal_cents"], doc["shipping_cents"], doc["total_cents"]) == \
        (price * quantity, shipping, price * quantity + shipping)
    assert [x["amount_cents"] for x in shop.payments(doc["id"])] == [doc["total_cents"]]


def test_out_of_stock_is_rejected_and_touches_nothing(shop):
    user = shop.customer()
    p, other = shop.product(stock=1, price=700), shop.product(stock=9, price=100)
    payments = payment_rows(shop)
    r = shop.checkout(user, [(other, 2), (p, 2)])
    assert r.status_code == 201, r.text
    doc = r.json()
    assert (doc["status"], doc["reason"]) == ("rejected", "out_of_stock"), doc
    assert doc["payment_status"] == "none" and doc["stock_status"] == "none", doc
    assert "payment_id" not in doc
    assert shop.event_types(doc["id"]) == ["OrderCreated", "OrderRejected"]
    assert shop.events(doc["id"])[1]["data"]["reason"] == "out_of_stock"
    # neither line reserved (all or nothing), no payment asked for
    assert shop.stock(p) == {"available": 1, "on_hand": 1, "reserved": 0}
    assert shop.stock(other) == {"available": 9, "on_hand": 9, "reserved": 0}
    assert shop.payments(doc["id"]) == [] and payment_rows(shop) == payments
    assert shop.order(user, doc["id"]) == doc


def test_declined_card_is_rejected_and_the_stock_released(shop):
    user = shop.customer()
    p = shop.product(stock=4, price=999)
    r = shop.checkout(user, [(p, 3)], card=DECLINED)
    assert r.status_code == 201, r.text
    doc = r.json()
    assert (doc["status"], doc["reason"], doc["payment_status"]) == \
        ("rejected", "payment_declined", "declined"), doc
    # the release follows the rejection: it ends by itself
    doc = poll(lambda: (lambda d: d if d["stock_status"] == "released" else None)(
        shop.order(user, doc["id"])), 10 * SLOW, what="the stock released")
    assert shop.stock(p) == {"available": 4, "on_hand": 4, "reserved": 0}
    assert shop.reservation(doc["id"])["status"] == "released"
    (pay,) = shop.payments(doc["id"])
    assert pay["status"] == "declined" and pay["amount_cents"] == doc["total_cents"]
    assert doc["payment_id"] == pay["id"]
    assert shop.event_types(doc["id"]) == ["OrderCreated", "StockReserved", "PaymentDeclined",
                                           "OrderRejected", "StockReleased"]
    assert DECLINED not in json.dumps(shop.events(doc["id"]))


def test_cancel_of_a_confirmed_order_refunds_and_releases(shop):
    user = shop.customer()
    p = shop.product(stock=6, price=2000)
    doc = shop.checkout(user, [(p, 2)]).json()
    assert doc["status"] == "confirmed", doc
    assert shop.stock(p)["reserved"] == 2
    r = shop.request("POST", f"/api/v1/orders/{doc['id']}/cancel", user=user,
                     json={"reason": "changed my mind"})
    assert r.status_code == 200, r.text
    c = r.json()
    assert (c["status"], c["reason"], c["payment_status"], c["stock_status"]) == \
        ("cancelled", "changed my mind", "refunded", "released"), c
    assert c["version"] > doc["version"] and r.headers["ETag"] == f'"{c["version"]}"'
    (pay,) = shop.payments(doc["id"])
    assert pay["status"] == "refunded" and pay["id"] == doc["payment_id"]
    assert shop.stock(p) == {"available": 6, "on_hand": 6, "reserved": 0}
    assert shop.reservation(doc["id"])["status"] == "released"
    types = shop.event_types(doc["id"])
    assert types[:4] == CHECKOUT_EVENTS
    assert types[4] == "OrderCancelled"
    assert sorted(types[5:]) == ["PaymentRefunded", "StockReleased"], types
    assert shop.order(user, doc["id"]) == c
    # a second cancel, and shipping a cancelled order, are refused and change nothing
    with nothing_written(shop):
        assert_problem(shop.request("POST", f"/api/v1/orders/{doc['id']}/cancel", user=user,
                                    json={"reason": "again"}), 409)
        assert_problem(patch_status(shop, doc["id"], "shipped", f'"{c["version"]}"'), 409)
    assert len(shop.payments(doc["id"])) == 1


def test_cancel_of_a_rejected_order_is_409(shop):
    user = shop.customer()
    p = shop.product(stock=0, price=100)
    doc = shop.checkout(user, [(p, 1)]).json()
    assert doc["status"] == "rejected", doc
    with nothing_written(shop):
        assert_problem(shop.request("POST", f"/api/v1/orders/{doc['id']}/cancel", user=user,
                                    json={"reason": "x"}), 409)


def test_idempotency_key_replay_is_the_same_order_charged_once(shop):
    user, key = shop.customer(), "checkout-" + uuid.uuid4().hex
    p = shop.product(stock=10, price=450)
    first = shop.checkout(user, [(p, 2)], key=key)
    assert first.status_code == 201, first.text
    doc = first.json()
    events = shop.db.count("events")
    for card in (CARD, "5555555555554444"):  # the card is not part of the request's identity
        again = shop.checkout(user, [(p, 2)], key=key, card=card)
        assert again.status_code == 201, again.text
        assert again.json() == doc
        assert again.headers["Location"] == first.headers["Location"]
        assert again.headers["ETag"] == first.headers["ETag"]
    assert shop.db.count("events") == events
    assert [x["status"] for x in shop.payments(doc["id"])] == ["captured"]
    assert shop.stock(p) == {"available": 8, "on_hand": 10, "reserved": 2}


def test_same_key_with_another_body_is_409(shop):
    user, key = shop.customer(), uuid.uuid4().hex
    p = shop.product(stock=10, price=450)
    doc = shop.checkout(user, [(p, 2)], key=key).json()
    assert doc["status"] == "confirmed", doc
    with untouched(shop, p):
        assert_problem(shop.checkout(user, [(p, 3)], key=key), 409)
        assert_problem(shop.checkout(user, [(p, 2)], key=key, address=None), 409)
    assert len(shop.payments(doc["id"])) == 1


@pytest.mark.parametrize("where", [0, 1])
def test_unknown_product_is_422_and_writes_nothing(shop, where):
    user = shop.customer()
    p = shop.product(stock=10, price=450)
    lines = [(p, 1)]
    lines.insert(where, (str(uuid.uuid4()), 1))
    with untouched(shop, p):
        doc = assert_problem(shop.checkout(user, lines), 422, f"items[{where}].product_id")
    assert [e["field"] for e in doc["errors"]] == [f"items[{where}].product_id"], doc


def test_mixed_currencies_are_422_and_write_nothing(shop):
    user = shop.customer()
    eur, usd = shop.product(price=100, currency="EUR"), shop.product(price=100, currency="USD")
    with untouched(shop, eur, usd):
        assert_problem(shop.checkout(user, [(eur, 1), (usd, 1)]), 422, "items[1].product_id")


def test_unknown_user_is_422_user_invalid_and_writes_nothing(shop):
    p = shop.product(stock=10, price=450)
    with untouched(shop, p):
        doc = assert_problem(shop.checkout(str(uuid.uuid4()), [(p, 1)]), 422)
    assert doc["reason"] == "user_invalid", doc


def test_a_registered_user_is_known_at_once(shop):
    """Registered a moment ago: the directory may not have it yet, the user service has."""
    p = shop.product(stock=10, price=450)
    for _ in range(5):
        r = shop.checkout(shop.customer(), [(p, 1)])
        assert r.status_code == 201 and r.json()["status"] == "confirmed", r.text


def test_shipping_commits_the_reservation_then_delivered(shop):
    user = shop.customer()
    p = shop.product(stock=10, price=800)
    doc = shop.checkout(user, [(p, 3)]).json()
    assert doc["status"] == "confirmed", doc
    r = patch_status(shop, doc["id"], "shipped", f'"{doc["version"]}"')
    assert r.status_code == 200, r.text
    s = r.json()
    assert (s["status"], s["stock_status"], s["payment_status"]) == \
        ("shipped", "committed", "captured"), s
    assert shop.reservation(doc["id"])["status"] == "committed"
    assert shop.stock(p) == {"available": 7, "on_hand": 7, "reserved": 0}
    r = patch_status(shop, doc["id"], "delivered", f'"{s["version"]}"')
    assert r.status_code == 200 and r.json()["status"] == "delivered", r.text
    types = shop.event_types(doc["id"])
    assert types == CHECKOUT_EVENTS + ["OrderShipped", "StockCommitted", "OrderDelivered"]
    assert shop.stock(p) == {"available": 7, "on_hand": 7, "reserved": 0}
    with nothing_written(shop):  # delivered: nothing more to cancel
        assert_problem(shop.request("POST", f"/api/v1/orders/{doc['id']}/cancel", user=user,
                                    json={"reason": "x"}), 409)


@pytest.mark.parametrize("status", ["confirmed", "rejected", "pending", "cancelled"])
def test_the_saga_owns_the_other_statuses(shop, status):
    user = shop.customer()
    doc = shop.checkout(user, [(shop.product(price=100), 1)]).json()
    with nothing_written(shop):
        assert_problem(patch_status(shop, doc["id"], status, f'"{doc["version"]}"'), 422,
                       "status")


def test_parallel_checkouts_over_two_inventories_never_oversell(shop):
    units, attempts = 10, 50
    p = shop.product(stock=units, price=1500)
    users = [shop.customer() for _ in range(attempts)]
    payments = payment_rows(shop)
    lowest, done = [units], threading.Event()

    def watch():  # available never below zero, as any reader of the database sees it
        while not done.is_set():
            lowest[0] = min(lowest[0], shop.stock(p, api=False)["available"])
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        answers = run_threads(attempts, lambda i: shop.checkout(users[i], [(p, 1)]))
    finally:
        done.set()
        watcher.join(30 * SLOW)
    assert {a.status_code for a in answers} <= {201, 202}, \
        [(a.status_code, a.text[:200]) for a in answers]
    docs = [a.json() if a.status_code == 201 else shop.settled(users[i], a.json()["id"])
            for i, a in enumerate(answers)]
    confirmed = [d for d in docs if d["status"] == "confirmed"]
    rejected = [d for d in docs if d["status"] == "rejected"]
    assert len(confirmed) == units and len(rejected) == attempts - units, \
        [(d["status"], d.get("reason")) for d in docs]
    assert {d["reason"] for d in rejected} == {"out_of_stock"}
    assert lowest[0] >= 0
    assert shop.stock(p) == {"available": 0, "on_hand": units, "reserved": units}
    for d in confirmed:
        (pay,) = shop.payments(d["id"])
        assert (pay["status"], pay["amount_cents"]) == ("captured", 1500 + SHIPPING)
        assert shop.reservation(d["id"])["status"] == "reserved"
    for d in rejected:
        assert shop.payments(d["id"]) == []
    assert payment_rows(shop) == payments + units
    assert len({d["id"] for d in docs}) == attempts


# ---- shops of their own ----

def test_without_inventory_or_payment_checkout_is_503_and_writes_nothing(start_shop):
    for env in ({"MICROSHOP_PAYMENT_URL": None}, {"MICROSHOP_INVENTORY_URL": None}):
        s = start_shop(user=False, drop_env=list(env))
        p = s.product(stock=5)
        with nothing_written(s):
            assert_problem(s.checkout(s.customer(), [(p, 1)]), 503)
        assert s.stock(p)["reserved"] == 0


@pytest.mark.parametrize("var", ["MICROSHOP_INVENTORY_URL", "MICROSHOP_PAYMENT_URL"])
def test_malformed_service_url_exits_2(tmp_path, var):
    p = subprocess.run([BINARY, "serve", "order", "--listen", "127.0.0.1:0", "--data",
                        str(tmp_path)], env=clean_env({var: "http://x"}),
                       capture_output=True, text=True, timeout=30 * SLOW)
    assert p.returncode == 2, p.stderr
    assert var in p.stderr


def test_inventory_unreachable_is_503_or_504_and_writes_nothing(start_shop):
    s = start_shop(user=False)
    p = s.product(stock=5)
    s.stop("inventory")
    payments = payment_rows(s)
    with nothing_written(s):
        r = s.checkout(s.customer(), [(p, 1)])
        assert r.status_code in (503, 504), r.text
        assert_problem(r, r.status_code)
    assert payment_rows(s) == payments
    s.start("inventory")
    assert s.stock(p)["reserved"] == 0
    r = s.checkout(s.customer(), [(p, 1)])
    assert r.status_code == 201 and r.json()["status"] == "confirmed", r.text


def put_latency(s, ms):
    r = s.payment_svc.request("PUT", "/internal/v1/chaos",
                              json={"latency_ms": ms, "failure_rate": 0})
    assert r.status_code == 200, r.text


# A charge slower than the request's deadline but well within the 5 s a detached saga gives
# a remote call (saga.c, ORDER_SAGA_CALL_MS): not scaled for sanitizer builds on purpose.
DEADLINE_MS, SLOW_CHARGE_MS = 1000, 3000


def test_a_slow_checkout_answers_202_and_ends_by_itself(start_shop):
    s = start_shop(user=False, order_args=("--request-timeout-ms", str(DEADLINE_MS)))
    p = s.product(stock=5, price=1000)
    put_latency(s, SLOW_CHARGE_MS)
    user = s.customer()
    r = s.checkout(user, [(p, 2)])
    assert r.status_code == 202, r.text
    doc = r.json()
    assert doc["status"] == "pending" and r.headers["Location"] == f"/api/v1/orders/{doc['id']}"
    # still running: a cancel is refused
    assert_problem(s.request("POST", f"/api/v1/orders/{doc['id']}/cancel", user=user,
                             json={"reason": "x"}), 409)
    done = s.settled(user, doc["id"])
    assert (done["status"], done["payment_status"], done["stock_status"]) == \
        ("confirmed", "captured", "reserved"), done
    assert [x["status"] for x in s.payments(doc["id"])] == ["captured"]
    assert s.stock(p) == {"available": 3, "on_hand": 5, "reserved": 2}


def test_a_pending_order_whose_card_is_lost_ends_rejected_after_kill_9(start_shop):
    s = start_shop(user=False, order_args=("--request-timeout-ms", str(DEADLINE_MS)))
    p = s.product(stock=5, price=1000)
    put_latency(s, SLOW_CHARGE_MS)
    user = s.customer()
    r = s.checkout(user, [(p, 2)])
    assert r.status_code == 202, r.text
    oid = r.json()["id"]
    s.kill("order")  # the card was only in the request: the restarted saga cannot charge
    put_latency(s, 0)
    done = s.settled(user, oid)
    assert (done["status"], done["reason"]) == ("rejected", "timeout"), done
    done = poll(lambda: (lambda d: d if d["stock_status"] == "released" and
                         d["payment_status"] in ("refunded", "voided") else None)(
        s.order(user, oid)), 20 * SLOW, what="the compensation to end")
    assert s.stock(p) == {"available": 5, "on_hand": 5, "reserved": 0}
    # the charge in flight at the kill was either refunded, or refused by the void
    poll(lambda: all(x["status"] != "captured" for x in s.payments(oid)), 20 * SLOW,
         what="no captured payment left")
    types = s.event_types(oid)
    assert "OrderRejected" in types and types[-1] in ("StockReleased", "PaymentRefunded",
                                                     "PaymentVoided"), types
