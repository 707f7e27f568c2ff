"""The event bus: `serve user` with NATS_URL publishes its outbox to NATS JetStream (stream
MICROSHOP_USER, subjects user.>) through a real nats-server this module starts (free ports, a
temporary store, killed at the end), and `serve order` with NATS_URL follows that stream into
its user directory with a durable pull consumer (order_user_directory): each event applied
once, acked after its commit, across restarts, kill -9, a switch from the HTTP feed and NATS
going away. The stream and consumer are watched on the server's monitoring endpoint (/jsz).
Skipped when nats-server is not installed (scripts/bootstrap.sh test installs it)."""
import os
import shutil
import signal
import subprocess
import tempfile

import pytest
import requests

from conftest import BINARY, SLOW, clean_env, free_port, poll
from shop import DECLINED, start_shop  # noqa: F401 - start_shop is a fixture
from user_directory import (CONSUMER, checkpoint, kill_9_while_registering, outbox_ids, received_ids,
                            wait_directory)

STREAM = "MICROSHOP_USER"


def _server_binary():
    return shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if os.access(p, os.X_OK)),
        None)


class NatsServer:
    """nats-server -js on free ports; `stream(name)` reads a stream's state from /jsz."""

    def __init__(self, binary):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="ms-nats-")
        self.port, self.mon_port = free_port(), free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        self.proc = subprocess.Popen(
            [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-m",
             str(self.mon_port), "-sd", os.path.join(self.dir, "store")],
            stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        poll(self._up, 20 * SLOW, what="nats-server's monitoring endpoint")

    def _up(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"nats-server exited with {self.proc.returncode}")
        try:
            return requests.get(f"http://127.0.0.1:{self.mon_port}/healthz", timeout=2).ok
        except requests.ConnectionError:
            return False

    def stream(self, name):
        """The stream's state ({"messages": ..., ...}) or None while it does not exist."""
        r = requests.get(f"http://127.0.0.1:{self.mon_port}/jsz",
                         params={"accounts": "true", "streams": "true"}, timeout=5)
        r.raise_for_status()
        for acc in r.json().get("account_details") or []:
            for st in acc.get("stream_detail") or []:
                if st["name"] == name:
                    return st["state"]
        return None

    def messages(self, name):
        st = self.stream(name)
        return st["messages"] if st else 0

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.log.close()

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def nats():
    binary = _server_binary()
    if not binary:
        pytest.skip("nats-server not installed (bash scripts/bootstrap.sh test installs it)")
    srv = NatsServer(binary)
    try:
        yield srv
    finally:
        srv.stop()
        srv.remove()


def _unpublished(db):
    return db.count("outbox", "WHERE published_at IS NULL")


def test_users_events_reach_the_stream_once(nats, start_server):
    nats.start()
    env = {"NATS_URL": nats.url}
    s = start_server(env=env)
    for _ in range(3):
        s.create_user()
    poll(lambda: nats.messages(STREAM) == 3, 20 * SLOW, 0.1, what="3 messages in the stream")
    poll(lambda: _unpublished(s.db) == 0, 20 * SLOW, 0.1, what="the outbox rows marked")
    assert s.db.count("outbox") == 3
    st = nats.stream(STREAM)
    assert st["first_seq"] == 1 and st["last_seq"] == 3
    # the file feed is not written when the bus is the publisher
    assert not os.path.exists(os.path.join(s.db.data_dir, "user-outbox.jsonl"))

    # a crash between publish and mark: the restarted relay sends the rows again, the stream
    # drops them as repeats of their Nats-Msg-Id
    s.kill()
    _mark_all_unpublished(s.db)
    assert _unpublished(s.db) == 3
    s2 = start_server(env=env, db=s.db)
    poll(lambda: _unpublished(s2.db) == 0, 20 * SLOW, 0.1, what="the rows published again")
    assert nats.messages(STREAM) == 3
    assert s2.metric("outbox_published_total", service="user") == 3


def _mark_all_unpublished(db):
    if db.name:
        import psycopg2
        conn = psycopg2.connect(db.url)
        conn.autocommit = True
        conn.cursor().execute("UPDATE outbox SET published_at = NULL")
        conn.close()
    else:
        import sqlite3
        conn = sqlite3.connect(db.sqlite_path, timeout=5)
        conn.execute("UPDATE outbox SET published_at = NULL")
        conn.commit()
        conn.close()


def test_server_down_at_start_events_wait_in_the_outbox(nats, start_server):
    # NATS is not up yet: the service starts all the same and the outbox holds the events
    s = start_server(env={"NATS_URL": nats.url})
    s.create_user()
    assert _unpublished(s.db) == 1
    poll(lambda: (s.metric("outbox_publish_failures_total", service="user") or 0) >= 1,
         20 * SLOW, 0.1, what="a failed publish counted")
    # the relay's batch holds the row and retries it: counted, never dropped
    poll(lambda: (s.metric("batch_flushes_total", batch="outbox", result="error") or 0) >= 1,
         20 * SLOW, 0.1, what="the relay's failed flush counted")
    assert s.metric("batch_queue_items", batch="outbox") == 1
    nats.start()
    poll(lambda: nats.messages(STREAM) == 1, 30 * SLOW, 0.1, what="the event in the stream")
    poll(lambda: _unpublished(s.db) == 0, 20 * SLOW, 0.1, what="the outbox row marked")
    assert s.metric("batch_items_total", batch="outbox") == 1
    assert s.metric("batch_queue_items", batch="outbox") == 0
    assert s.metric("batch_dropped_total", batch="outbox") == 0


@pytest.mark.parametrize("url", ["http://127.0.0.1:4222", "127.0.0.1:4222", "nats://host:99999"])
def test_bad_nats_url_exits_2(url):
    data = tempfile.mkdtemp(prefix="ms-it-")
    try:
        p = subprocess.run([BINARY, "serve", "user", "--listen", "127.0.0.1:0", "--data", data],
                           env=clean_env({"NATS_URL": url}), capture_output=True,
                           timeout=30 * SLOW, stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    assert p.returncode == 2, p.stderr
    assert b"NATS_URL" in p.stderr


# ---- the consumer: the order service follows the user stream with a durable pull consumer ----

DURABLE = "order_user_directory"


def consumer_state(nats, stream, durable):
    """The durable consumer's state from /jsz ({"name", "config", "ack_floor", ...}) or None."""
    r = requests.get(f"http://127.0.0.1:{nats.mon_port}/jsz",
                     params={"accounts": "true", "streams": "true", "consumers": "true",
                             "config": "true"},
                     timeout=5)
    r.raise_for_status()
    for acc in r.json().get("account_details") or []:
        for st in acc.get("stream_detail") or []:
            if st["name"] != stream:
                continue
            for c in st.get("consumer_detail") or []:
                if c["name"] == durable:
                    return c
    return None


def start_user(start_server, nats, port, db=None):
    return start_server("--listen", f"127.0.0.1:{port}", db=db, env={"NATS_URL": nats.url})


def start_order(start_server, nats, user_port, db=None, bus=True):
    env = {"MICROSHOP_USER_URL": f"http://127.0.0.1:{user_port}"}
    if bus:
        env["NATS_URL"] = nats.url
    return start_server(target="order", db=db, env=env)


def test_order_follows_the_user_stream_with_a_durable_consumer(nats, start_server):
    nats.start()
    port = free_port()
    # the order service first: the user stream does not exist yet, the consumer keeps trying
    order = start_order(start_server, nats, port)
    assert order.get("/health").status_code == 200
    user = start_user(start_server, nats, port)
    users = [user.create_user() for _ in range(5)]
    wait_directory(order, users)
    r = user.request("PATCH", f"/api/v1/users/{users[2]['id']}", user=users[2]["id"],
                     json={"name": "Grace Hopper"})
    assert r.status_code == 200, r.text
    users[2]["name"] = "Grace Hopper"
    wait_directory(order, users)
    # the durable pull consumer, on the producer's stream, filtered to its subjects, all acked
    c = poll(lambda: consumer_state(nats, STREAM, DURABLE), 10 * SLOW, what="the durable")
    assert c["config"]["durable_name"] == DURABLE
    assert c["config"]["filter_subject"] == "user.>"
    assert c["config"]["ack_policy"] == "explicit"
    assert not c["config"].get("deliver_subject"), "a pull consumer has no deliver subject"
    poll(lambda: consumer_state(nats, STREAM, DURABLE)["ack_floor"]["stream_seq"] == 6,
         10 * SLOW, 0.05, what="every message acked")
    assert consumer_state(nats, STREAM, DURABLE)["num_ack_pending"] == 0
    # the checkpoint is the stream's sequence; each outbox id received once
    poll(lambda: checkpoint(order) == 6, 10 * SLOW, what="the checkpoint at the stream's last")
    assert received_ids(order) == outbox_ids(user)
    assert order.metric("bus_consumer_position", consumer=CONSUMER) == 6
    assert order.metric("bus_consumer_lag_events", consumer=CONSUMER) == 0
    assert order.metric("bus_consumer_applied_total", consumer=CONSUMER) == 6
    assert '"durable":"order_user_directory"' in order.log_text()

    # a restart binds to the same durable: nothing delivered again, nothing applied twice
    assert order.stop() == 0, order.log_tail()
    order = start_order(start_server, nats, port, db=order.db)
    users += [user.create_user()]
    wait_directory(order, users)
    poll(lambda: checkpoint(order) == 7, 10 * SLOW, what="the checkpoint after the restart")
    assert received_ids(order) == outbox_ids(user)
    assert order.metric("bus_consumer_applied_total", consumer=CONSUMER) == 1
    assert order.metric("bus_consumer_duplicates_total", consumer=CONSUMER) == 0


def test_switching_from_the_feed_to_the_bus_applies_nothing_twice(nats, start_server):
    """The HTTP feed's event ids and the stream's Nats-Msg-Id are both the outbox id: a consumer
    that followed the feed and now follows the stream skips what it had (counted as duplicates)."""
    nats.start()
    port = free_port()
    user = start_user(start_server, nats, port)
    order = start_order(start_server, nats, port, bus=False)
    users = [user.create_user() for _ in range(3)]
    wait_directory(order, users)
    assert order.metric("bus_consumer_applied_total", consumer=CONSUMER) == 3
    assert order.stop() == 0, order.log_tail()
    poll(lambda: nats.messages(STREAM) == 3, 20 * SLOW, 0.1, what="3 messages in the stream")
    order = start_order(start_server, nats, port, db=order.db)
    users += [user.create_user() for _ in range(2)]
    wait_directory(order, users)
    poll(lambda: order.metric("bus_consumer_duplicates_total", consumer=CONSUMER) == 3,
         10 * SLOW, 0.05, what="the feed's 3 events skipped as duplicates")
    assert order.metric("bus_consumer_applied_total", consumer=CONSUMER) == 2
    assert received_ids(order) == outbox_ids(user)
    assert consumer_state(nats, STREAM, DURABLE) is not None


def test_kill_9_mid_stream_applies_each_event_once(nats, start_server):
    nats.start()
    port = free_port()
    user = start_user(start_server, nats, port)
    order = start_order(start_server, nats, port)
    users = [user.create_user() for _ in range(5)]
    wait_directory(order, users)
    order, more = kill_9_while_registering(
        user, order, lambda db: start_order(start_server, nats, port, db=db))
    users += more
    wait_directory(order, users, timeout=60)
    poll(lambda: received_ids(order) == outbox_ids(user), 20 * SLOW, 0.05,
         what="every outbox id received")
    n = len(users)
    assert order.db.count("bus_received", "WHERE consumer = ?", (CONSUMER,)) == n
    poll(lambda: nats.messages(STREAM) == n, 20 * SLOW, 0.1, what="every event in the stream")
    poll(lambda: checkpoint(order) == n, 20 * SLOW, what="the checkpoint at the stream's last")


def test_nats_down_then_back_the_consumer_catches_up(nats, start_server):
    nats.start()
    port = free_port()
    user = start_user(start_server, nats, port)
    order = start_order(start_server, nats, port)
    users = [user.create_user() for _ in range(2)]
    wait_directory(order, users)
    nats.stop()
    failures = order.metric("bus_consumer_failures_total", consumer=CONSUMER)
    poll(lambda: order.metric("bus_consumer_failures_total", consumer=CONSUMER) > failures,
         30 * SLOW, 0.1, what="the consumer to notice NATS is gone")
    # both services keep serving; the user's events wait in its outbox
    users += [user.create_user() for _ in range(3)]
    for _ in range(5):
        assert order.get("/health").status_code == 200
    assert _unpublished(user.db) == 3
    nats.start()  # the same store: the stream and the durable are still there
    wait_directory(order, users, timeout=60)
    poll(lambda: received_ids(order) == outbox_ids(user), 20 * SLOW, 0.05,
         what="every outbox id received")
    # a server killed may lose the consumer's last acks: those messages come again and are
    # skipped (duplicates), never applied twice
    assert order.metric("bus_consumer_applied_total", consumer=CONSUMER) == 5
    assert order.db.count("bus_received", "WHERE consumer = ?", (CONSUMER,)) == 5


def test_failing_transactions_nak_and_keep_the_order_across_kill_9(nats, start_server):
    """While the consumer's database refuses writes, each fetched batch fails, is nak'ed and
    fetched again; a kill -9 then leaves messages unacked, which the next process gets before
    newer ones: a user's rename is never overwritten by its older creation."""
    nats.start()
    port = free_port()
    user = start_user(start_server, nats, port)
    order = start_order(start_server, nats, port)
    users = [user.create_user()]
    wait_directory(order, users)
    failures = order.metric("bus_consumer_failures_total", consumer=CONSUMER)
    with order.db.write_lock("user_directory"):
        users.append(user.create_user())
        poll(lambda: order.metric("bus_consumer_failures_total", consumer=CONSUMER) > failures,
             30 * SLOW, 0.1, what="a failed transaction counted")
        r = user.request("PATCH", f"/api/v1/users/{users[1]['id']}", user=users[1]["id"],
                         json={"name": "Grace Hopper"})
        assert r.status_code == 200, r.text
        users[1]["name"] = "Grace Hopper"
        poll(lambda: nats.messages(STREAM) == 3, 20 * SLOW, 0.1, what="3 messages in the stream")
        order.kill()
    order = start_order(start_server, nats, port, db=order.db)
    users.append(user.create_user())
    wait_directory(order, users)
    poll(lambda: received_ids(order) == outbox_ids(user), 20 * SLOW, 0.05,
         what="every outbox id received")
    poll(lambda: consumer_state(nats, STREAM, DURABLE)["num_ack_pending"] == 0, 20 * SLOW, 0.05,
         what="every message acked")


def test_low_stock_alerts_follow_the_inventory_stream(nats, start_server):
    import uuid
    nats.start()
    inventory = start_server(target="inventory", env={"NATS_URL": nats.url})
    order = start_server(target="order", env={"NATS_URL": nats.url,
                                              "MICROSHOP_INVENTORY_URL": inventory.url})
    boss = str(uuid.uuid4())
    r = inventory.request("POST", "/api/v1/products", user=boss, role="admin",
                          json={"sku": "ALERT-N", "name": "Last few", "price_cents": 500,
                                "currency": "EUR", "stock": 6, "low_stock_threshold": 5})
    assert r.status_code == 201, r.text
    product = r.json()["id"]
    r = inventory.request("POST", "/internal/v1/reservations",
                          json={"order_id": str(uuid.uuid4()),
                                "items": [{"product_id": product, "quantity": 2}]})
    assert r.status_code == 201, r.text
    poll(lambda: order.db.query("SELECT sku, available, threshold FROM low_stock_alerts "
                                "WHERE product_id = ?", (product,)) == [("ALERT-N", 4, 5)],
         30 * SLOW, 0.05, what="the order service's low-stock alert")
    c = consumer_state(nats, "MICROSHOP_INVENTORY", "order_low_stock")
    assert c and c["config"]["filter_subject"] == "inventory.>"
    poll(lambda: order.metric("bus_consumer_applied_total", consumer="order.low_stock") >= 1,
         10 * SLOW, 0.05, what="the alert counted")


def test_checkout_over_nats(nats, start_shop):
    """The whole checkout with every service on NATS JetStream: outboxes published to their
    streams, the order service's consumers on durable consumers. A happy checkout, a declined
    card and a cancel end as they do on the local bus, and their events reach the streams."""
    nats.start()
    s = start_shop(env={"NATS_URL": nats.url})
    user = s.customer()
    poll(lambda: s.order_svc.db.count("user_directory") == 1, 20 * SLOW,
         what="the user directory to fill from MICROSHOP_USER")
    p = s.product(stock=3, price=1500, low_stock_threshold=2)
    r = s.checkout(user, [(p, 2)])
    assert r.status_code == 201, r.text
    doc = r.json()
    assert (doc["status"], doc["subtotal_cents"], doc["shipping_cents"], doc["total_cents"]) == (
        "confirmed", 3000, 499, 3499)
    assert [x["amount_cents"] for x in s.payments(doc["id"]) if x["status"] == "captured"] == [
        3499]
    declined = s.checkout(user, [(p, 1)], card=DECLINED).json()
    assert (declined["status"], declined["reason"], declined["stock_status"]) == (
        "rejected", "payment_declined", "released")
    r = s.order_svc.request("POST", f"/api/v1/orders/{doc['id']}/cancel", user=user,
                            json={"reason": "changed my mind"})
    assert r.status_code == 200, r.text
    assert (r.json()["payment_status"], r.json()["stock_status"]) == ("refunded", "released")
    assert s.stock(p)["available"] == 3
    # every service published its events to its stream; the low-stock alert came over NATS
    for stream in ("MICROSHOP_ORDER", "MICROSHOP_INVENTORY", "MICROSHOP_PAYMENT",
                   "MICROSHOP_USER"):
        poll(lambda: nats.messages(stream) > 0, 20 * SLOW, what=f"events in {stream}")
    poll(lambda: s.order_svc.db.count("low_stock_alerts") == 1, 20 * SLOW,
         what="the low-stock alert from MICROSHOP_INVENTORY")
