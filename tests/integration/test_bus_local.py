"""The embedded event bus (`local`): every service serves its outbox at GET /internal/v1/events
(after/limit paging, a long poll that never blocks its loop), and the order service follows the
user service's feed into its user directory (MICROSHOP_USER_URL): each event applied once, in
one transaction with its received id and the checkpoint, across kill -9 and a producer that
goes away and comes back; and the inventory's stock.low into its low-stock alerts
(MICROSHOP_INVENTORY_URL)."""
import threading
import time
import uuid

import pytest

from conftest import SLOW, assert_problem, free_port, poll, unchanged
from shop import start_shop  # noqa: F401
from user_directory import (CONSUMER, checkpoint, directory, kill_9_while_registering, received,
                            wait_directory)



def feed(s, **params):
    r = s.get("/internal/v1/events", params=params)
    assert r.status_code == 200, f"{r.status_code} {r.text}"
    return r.json()


def register(s, n, name="Ada Lovelace"):
    return [s.create_user(name=name) for _ in range(n)]


# ---- the feed ----

def test_feed_pages_after_and_limit(start_server):
    s = start_server()
    users = register(s, 5)
    page = feed(s, after=0, limit=2)
    assert [i["seq"] for i in page["items"]] == [1, 2]
    assert page["next_after"] == 2
    first = page["items"][0]
    assert set(first) == {"seq", "id", "aggregate_type", "aggregate_id", "type", "payload",
                          "created_at"}
    assert first["type"] == "user.created" and first["aggregate_type"] == "user"
    assert first["aggregate_id"] == users[0]["id"]
    assert first["payload"] == {"user_id": users[0]["id"], "email": users[0]["email"],
                                "name": users[0]["name"], "created_at": users[0]["created_at"]}
    page = feed(s, after=2, limit=2)
    assert [i["seq"] for i in page["items"]] == [3, 4] and page["next_after"] == 4
    page = feed(s, after=4)  # the default limit covers the rest
    assert [i["aggregate_id"] for i in page["items"]] == [users[4]["id"]]
    assert page["next_after"] == 5 and page["head"] == 5
    page = feed(s, after=5)
    assert page["items"] == [] and page["next_after"] == 5
    # every id once, in seq order, over the whole feed
    everything = feed(s, after=0, limit=1000)["items"]
    assert [i["seq"] for i in everything] == [1, 2, 3, 4, 5]
    assert len({i["id"] for i in everything}) == 5


@pytest.mark.parametrize("params,field", [
    ({"after": "-1"}, "after"),
    ({"after": "x"}, "after"),
    ({"after": ""}, "after"),
    ({"limit": "0"}, "limit"),
    ({"limit": "1001"}, "limit"),
    ({"limit": "2.5"}, "limit"),
    ({"wait_ms": "30001"}, "wait_ms"),
    ({"wait_ms": "soon"}, "wait_ms"),
])
def test_feed_bad_parameters_are_400(start_server, params, field):
    s = start_server()
    register(s, 1)
    with unchanged(s.db):
        r = s.get("/internal/v1/events", params=params)
    assert_problem(r, 400, field)


def test_long_poll_returns_when_a_user_registers(start_server):
    s = start_server("--threads", "1")
    register(s, 1)
    out = {}

    def long_poll():
        t0 = time.monotonic()
        out["page"] = feed(s, after=1, wait_ms=9000)
        out["seconds"] = time.monotonic() - t0

    t = threading.Thread(target=long_poll)
    t.start()
    poll(lambda: s.metric("active_connections") >= 2, 10 * SLOW, what="the long poll connected")
    new = s.create_user()
    t.join(20 * SLOW)
    assert not t.is_alive()
    assert [i["aggregate_id"] for i in out["page"]["items"]] == [new["id"]]
    assert out["page"]["next_after"] == 2
    assert out["seconds"] < 9, "the long poll waited out wait_ms although a row had arrived"


def test_long_poll_answers_empty_at_wait_ms_and_never_blocks_the_loop(start_server):
    s = start_server("--threads", "1")  # one loop: /health is served by the polling loop
    register(s, 1)
    out = {}

    def long_poll():
        t0 = time.monotonic()
        out["page"] = feed(s, after=1, wait_ms=9000)
        out["seconds"] = time.monotonic() - t0

    t = threading.Thread(target=long_poll)
    t.start()
    poll(lambda: s.metric("active_connections") >= 2, 10 * SLOW, what="the long poll connected")
    answered = 0
    while t.is_alive() and answered < 3:
        assert s.get("/health").status_code == 200
        answered += 1
    assert answered == 3 and t.is_alive(), "/health waited for the long poll"
    t.join(30 * SLOW)
    assert not t.is_alive()
    assert out["page"] == {"items": [], "next_after": 1, "head": 1}
    assert out["seconds"] >= 8.9


def test_a_drain_ends_a_long_poll(start_server):
    s = start_server()
    register(s, 1)
    out = {}
    t = threading.Thread(target=lambda: out.update(r=s.get("/internal/v1/events",
                                                           params={"after": 1,
                                                                   "wait_ms": 9000})))
    t.start()
    # the poll's connection and the scrape's own
    poll(lambda: s.metric("active_connections") >= 2, 10 * SLOW, what="the long poll connected")
    # connected is not yet received: a drain closes a connection that has sent no whole
    # request, and no metric shows a request in flight; the poll waits 9 s, so half a second
    # lets it arrive without making the drain's bound below any looser
    time.sleep(0.5)
    t0 = time.monotonic()
    assert s.stop() == 0, s.log_tail()
    t.join(30 * SLOW)
    assert out["r"].status_code == 200 and out["r"].json()["items"] == []
    assert time.monotonic() - t0 < 8, "the drain waited for the long poll"


def test_order_feed_serves_its_event_store_outbox(start_shop):
    """The order service's outbox rows reference their events (outbox_messages): the feed
    serves each with its event's data as the payload object."""
    from test_orders import create, events_of, uid
    s = start_shop(user=False)
    user = uid()
    orders = [create(s, user)[0] for _ in range(3)]
    page = feed(s, after=0, wait_ms=2000)
    items = page["items"]
    # every event of the three checkouts, in the order they were written
    want = sorted(((e["position"], o["id"], e["type"], e["data"]) for o in orders
                   for e in events_of(s, o["id"])))
    assert [(i["aggregate_id"], i["type"], i["payload"]) for i in items] == \
        [w[1:] for w in want]
    assert [i["aggregate_id"] for i in items if i["type"] == "OrderCreated"] == \
        [o["id"] for o in orders]
    assert [i["seq"] for i in items] == sorted(i["seq"] for i in items)
    assert page["next_after"] == items[-1]["seq"]
    assert feed(s, after=page["next_after"])["items"] == []


# ---- the consumer: the order service's user directory ----

def outbox_events(user):
    return user.db.query("SELECT seq, id FROM outbox ORDER BY seq")


def start_user(start_server, port, db=None):
    return start_server("--listen", f"127.0.0.1:{port}", db=db)


def start_order(start_server, user_port, db=None):
    return start_server(target="order", db=db,
                        env={"MICROSHOP_USER_URL": f"http://127.0.0.1:{user_port}"})


def test_order_keeps_a_directory_of_users(start_server):
    port = free_port()
    user = start_user(start_server, port)
    order = start_order(start_server, port)
    users = register(user, 5)
    wait_directory(order, users)
    # a rename reaches the directory
    r = user.request("PATCH", f"/api/v1/users/{users[2]['id']}", user=users[2]["id"],
                     json={"name": "Grace Hopper"})
    assert r.status_code == 200, r.text
    users[2]["name"] = "Grace Hopper"
    wait_directory(order, users)
    poll(lambda: checkpoint(order) == 6, 10 * SLOW, what="the checkpoint at the last seq")
    assert received(order) == 6
    assert order.metric("bus_consumer_position", consumer=CONSUMER) == 6
    assert order.metric("bus_consumer_lag_events", consumer=CONSUMER) == 0
    assert order.metric("bus_consumer_applied_total", consumer=CONSUMER) == 6


def test_kill_9_mid_way_applies_each_event_once(start_server):
    port = free_port()
    user = start_user(start_server, port)
    order = start_order(start_server, port)
    users = register(user, 5)
    wait_directory(order, users)
    order, more = kill_9_while_registering(
        user, order, lambda db: start_order(start_server, port, db=db))
    users += more
    wait_directory(order, users, timeout=30)
    events = outbox_events(user)
    poll(lambda: checkpoint(order) == events[-1][0], 10 * SLOW, what="the checkpoint at the end")
    assert received(order) == len(events)
    got = order.db.query("SELECT event_id FROM bus_received WHERE consumer = ?", (CONSUMER,))
    assert sorted(r[0] for r in got) == sorted(e[1] for e in events)


def test_producer_down_then_back(start_server):
    port = free_port()
    user = start_user(start_server, port)
    order = start_order(start_server, port)
    users = register(user, 2)
    wait_directory(order, users)
    assert user.stop() == 0
    # the order service keeps serving and keeps trying
    failures = order.metric("bus_consumer_failures_total", consumer=CONSUMER)
    poll(lambda: order.metric("bus_consumer_failures_total", consumer=CONSUMER) > failures,
         20 * SLOW, what="the consumer to notice the producer is gone")
    for _ in range(5):
        assert order.get("/health").status_code == 200
    assert order.get("/api/v1/orders/00000000-0000-7000-8000-000000000000",
                     user=users[0]["id"]).status_code == 404
    user = start_user(start_server, port, db=user.db)
    users += register(user, 3)
    wait_directory(order, users, timeout=30)
    assert received(order) == 5 and checkpoint(order) == 5


def test_malformed_user_url_exits_2(start_server, tmp_path):
    import subprocess
    from conftest import BINARY, clean_env
    p = subprocess.run([BINARY, "serve", "order", "--listen", "127.0.0.1:0", "--data",
                        str(tmp_path)], env=clean_env({"MICROSHOP_USER_URL": "http://x"}),
                       capture_output=True, text=True, timeout=30 * SLOW)
    assert p.returncode == 2
    assert "MICROSHOP_USER_URL" in p.stderr


# ---- the consumer: the order service's low-stock alerts ----

def test_order_records_low_stock_alerts_from_the_inventory(start_server):
    inventory = start_server(target="inventory")
    user_port = free_port()
    user = start_user(start_server, user_port)
    order = start_server(target="order", env={
        "MICROSHOP_USER_URL": f"http://127.0.0.1:{user_port}",
        "MICROSHOP_INVENTORY_URL": inventory.url})
    boss = str(uuid.uuid4())
    r = inventory.request("POST", "/api/v1/products", user=boss, role="admin",
                          json={"sku": "ALERT-1", "name": "Last few", "price_cents": 500,
                                "currency": "EUR", "stock": 6, "low_stock_threshold": 5})
    assert r.status_code == 201, r.text
    product = r.json()["id"]
    assert order.db.count("low_stock_alerts") == 0
    r = inventory.request("POST", "/internal/v1/reservations",
                          json={"order_id": str(uuid.uuid4()),
                                "items": [{"product_id": product, "quantity": 2}]})
    assert r.status_code == 201, r.text  # available 6 -> 4: below the threshold of 5
    poll(lambda: order.db.query("SELECT sku, available, threshold FROM low_stock_alerts "
                                "WHERE product_id = ?", (product,)) == [("ALERT-1", 4, 5)],
         20 * SLOW, what="the order service's low-stock alert")
    assert '"msg":"low stock"' in order.log_text() and '"sku":"ALERT-1"' in order.log_text()
    # both consumers' metrics, each family written once
    for consumer in ("order.low_stock", CONSUMER):
        assert order.metric("bus_consumer_failures_total", consumer=consumer) is not None
    text = order.metrics()
    assert text.count("# TYPE bus_consumer_position gauge") == 1, text
    register(user, 1)
    poll(lambda: len(directory(order)) == 1, 20 * SLOW, what="the user directory, alongside")
