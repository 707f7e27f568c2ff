"""Checkout through crashes: under a load of checkouts, the order, inventory and payment
processes are killed with SIGKILL in turn and started again on the same data. Afterwards:

- every order a client saw acknowledged (201/202, or found again by its Idempotency-Key) is
  terminal, and so is every other order the services know of;
- stock reconciles exactly: for each product, reserved = the quantities of confirmed orders,
  on_hand untouched, and every reservation agrees with its order;
- payments reconcile exactly: one captured payment per confirmed order, of its total; none for
  any other order; never two payments for one order;
- every event of every outbox reached its consumers: the order service's checkpoints on the
  user and inventory feeds are at those feeds' last seq, each event applied once.

Clients retry a failed request with the same Idempotency-Key, as a real client would: a retry
must answer the same order and never charge twice."""
import random
import threading
import time
import uuid

import requests

from conftest import SLOW, admin, poll
from shop import CARD, DECLINED, line, start_shop  # noqa: F401 - a fixture

STOCK = 40  # units per product: some checkouts must run out


def checkout_until(shop, stop, users, products, acked, errors):
    """One client: checkouts with a key each, retried on failure until answered."""
    rnd = random.Random()
    while not stop.is_set():
        user = rnd.choice(users)
        items = [line(p, rnd.randint(1, 3)) for p in rnd.sample(products, rnd.randint(1, 2))]
        card = DECLINED if rnd.random() < 0.15 else CARD
        key = str(uuid.uuid4())
        deadline = time.monotonic() + 60 * SLOW
        while time.monotonic() < deadline:
            try:
                r = shop.checkout(user, items, card=card, key=key)
            except requests.RequestException:
                time.sleep(0.05)  # the order service is down: try again, same key
                continue
            if r.status_code in (201, 202):
                acked.append((user, r.json()["id"]))
                break
            if r.status_code in (503, 504):  # a service it needs is down: same key again
                time.sleep(0.05)
                continue
            errors.append(f"{r.status_code} {r.text}")
            break
        else:
            errors.append(f"checkout {key} never answered")


def all_orders(shop, users):
    """Every order of every user (admin list), as {id: document}."""
    found = {}
    for u in users:
        cursor = None
        while True:
            params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            r = shop.order_svc.get(f"/api/v1/users/{u}/orders", headers=admin(), params=params)
            assert r.status_code == 200, r.text
            doc = r.json()
            for o in doc["items"]:
                found[o["id"]] = o
            cursor = doc.get("next_cursor")
            if not cursor:
                break
    return found


def feed_head(server):
    """The last seq of a service's outbox feed once it serves every row written, else None: on
    PostgreSQL the feed holds rows behind a gap until the relay has taken the gap for a rollback
    (up to a second), so the last seq served is not yet the end."""
    after, last = 0, 0
    while True:
        r = server.get("/internal/v1/events", params={"after": after, "limit": 1000})
        assert r.status_code == 200, r.text
        page = r.json()
        if not page["items"]:
            return last if last == page["head"] else None
        last = after = page["items"][-1]["seq"]


def test_kill_9_of_each_service_under_checkout_load_reconciles(start_shop):
    s = start_shop()
    users = [s.customer() for _ in range(6)]
    products = [s.product(stock=STOCK, price=700 + 100 * i, low_stock_threshold=10)
                for i in range(5)]
    # the order service must know the users first: its directory follows the user feed
    poll(lambda: s.order_svc.db.count("user_directory") == len(users), 20 * SLOW,
         what="the user directory to hold every customer")

    stop, acked, errors = threading.Event(), [], []
    clients = [threading.Thread(target=checkout_until,
                                args=(s, stop, users, products, acked, errors))
               for _ in range(6)]
    for t in clients:
        t.start()
    try:
        for name in ("order", "inventory", "payment", "order"):
            n = len(acked)
            poll(lambda: len(acked) >= n + 40, 30 * SLOW,
                 what=f"40 more acknowledged checkouts before killing {name}")
            s.kill(name)  # SIGKILL with requests in flight, then the same process again
    finally:
        poll(lambda: len(acked) >= 200, 30 * SLOW,
             what="the load to go on after the last kill")
        stop.set()
        for t in clients:
            t.join(90 * SLOW)
    assert not errors, errors[:5]

    # every acknowledged order, and every other, ends (resumed sagas included)
    def settled():
        orders = all_orders(s, users)
        # the lists are the read views: an order restarted mid-load lists each acknowledged
        # order once its projector has caught up, which a gone order never is
        if any(oid not in orders for _, oid in acked):
            return None
        open_ = [o for o in orders.values() if o["status"] == "pending"
                 or (o["status"] in ("rejected", "cancelled")
                     and (o["payment_status"] == "captured" or o["stock_status"] == "reserved"))]
        return orders if not open_ else None
    orders = poll(settled, 60 * SLOW, interval=0.2, what="every saga to end")
    for user, oid in acked:
        assert oid in orders, f"acknowledged order {oid} is gone"
    confirmed = {oid: o for oid, o in orders.items() if o["status"] == "confirmed"}
    assert confirmed, "no checkout was confirmed"
    assert any(o["status"] == "rejected" for o in orders.values())

    # stock: what confirmed orders hold is what the inventory holds reserved
    held = {p["id"]: 0 for p in products}
    for o in confirmed.values():
        assert o["stock_status"] == "reserved" and o["payment_status"] == "captured", o
        assert o["total_cents"] == o["subtotal_cents"] + o["shipping_cents"]
        assert o["subtotal_cents"] == sum(i["quantity"] * i["unit_price_cents"]
                                          for i in o["items"])
        for i in o["items"]:
            held[i["product_id"]] += i["quantity"]
    for p in products:
        st = s.stock(p)
        assert st["on_hand"] == STOCK, (p["id"], st)
        assert st["reserved"] == held[p["id"]], (p["id"], st, held[p["id"]])
        assert st["available"] >= 0

    # every reservation agrees with its order; payments: one capture per confirmed order
    for oid, o in orders.items():
        res = s.reservation(oid)
        pays = s.payments(oid)
        assert len(pays) <= 1, f"order {oid} has {len(pays)} payments"
        captured = [p for p in pays if p["status"] == "captured"]
        if oid in confirmed:
            assert res and res["status"] == "reserved", (o, res)
            assert sorted((i["product_id"], i["quantity"]) for i in res["items"]) == sorted(
                (i["product_id"], i["quantity"]) for i in o["items"])
            assert len(captured) == 1 and captured[0]["amount_cents"] == o["total_cents"], pays
            assert o["payment_id"] == captured[0]["id"]
        else:
            assert not captured, (o, pays)
            assert res is None or res["status"] == "released", (o, res)

    # every outbox event reached the order service's consumers, each applied once
    def delivered():
        cps = dict(s.order_svc.db.query(
            "SELECT producer, last_seq FROM bus_checkpoints WHERE consumer IN "
            "('order.user_directory', 'order.low_stock')"))
        user, inventory = feed_head(s.user_svc), feed_head(s.inventory_svc)
        return cps if user is not None and cps.get("user") == user and \
            inventory is not None and cps.get("inventory") == inventory else None
    poll(delivered, 30 * SLOW, interval=0.2, what="the consumers to reach the feeds' heads")
    received = s.order_svc.db.query(
        "SELECT consumer, COUNT(*), COUNT(DISTINCT event_id) FROM bus_received GROUP BY consumer")
    for consumer, n, distinct in received:
        assert n == distinct, consumer
    assert s.order_svc.db.count("user_directory") == len(users)
    # a product that sold below its threshold raised an alert the order service keeps: outbox
    # rows commit in seq order on both backends (on PostgreSQL under the outbox's lock), so no
    # stock.low is passed over however long its reservation took to commit
    low = [p["id"] for p in products if STOCK - held[p["id"]] < 10]
    alerted = {r[0] for r in s.order_svc.db.query("SELECT product_id FROM low_stock_alerts")}
    assert set(low) <= alerted, (low, alerted)

    # and a retry of an acknowledged checkout's key still answers that order, charging nothing
    user, oid = acked[0]
    before = len(s.payments(oid))
    assert s.order(user, oid)["id"] == oid
    assert len(s.payments(oid)) == before
