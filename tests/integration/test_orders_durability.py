"""The order service across crashes: kill -9 during a load of checkouts and cancels (a whole
shop, shop.py), then restart on the same database. Every acknowledged write must be there
(events, outbox rows, views), no stream may have a version gap, every saga cut by the kill
ends by itself after the restart (stock and payments agreeing with the orders), and the
projector must resume from its checkpoint."""
import contextlib
import fcntl
import json
import os
import sqlite3
import struct
import threading
import time

import pytest
import requests

from conftest import BACKEND, SLOW, poll
from shop import start_shop  # noqa: F401
from test_orders import (READ, assert_streams_contiguous, cancel, committed, create, etag,
                         events_of, get_order, good_body, list_orders, post_order, rebuild, uid)

CLIENTS = 8


def checkpoint(db):
    rows = db.query("SELECT position FROM projection_checkpoints WHERE name = 'order_views'",
                    file=READ)
    return rows[0][0] if rows else 0


@contextlib.contextmanager
def views_locked(db):
    """Holds the read database's write lock (SQLite) or an exclusive lock on order_views
    (PostgreSQL): the projector cannot commit, so its checkpoint falls behind."""
    if BACKEND == "postgres":
        import psycopg2
        conn = psycopg2.connect(db.url)
        conn.cursor().execute("LOCK TABLE order_views IN ACCESS EXCLUSIVE MODE")
    else:
        conn = sqlite3.connect(os.path.join(db.data_dir, READ), isolation_level=None,
                               timeout=10 * SLOW)
        conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.rollback()
        conn.close()


def projected(s):
    return s.metric("projection_position", projection="order_views")


def load_until_killed(s, users, min_acked, max_seconds, lag_from):
    """CLIENTS threads POST orders (some keyed, some then cancelled) until the order service
    of shop `s` is SIGKILLed, which happens once `min_acked` orders were confirmed or after
    `max_seconds`. From `lag_from` acknowledged orders on, the projector is kept from
    committing (views_locked).
    Returns ({order id: (order, position)}, {order id: (cancelled order, position)})."""
    acked, cancelled, unexpected = {}, {}, []
    lock = threading.Lock()
    dead = threading.Event()

    def client(i):
        n = 0
        while not dead.is_set():
            n += 1
            user = users[(i + n) % len(users)]
            key = f"load-{i}-{n}" if n % 3 == 0 else None
            try:
                r = post_order(s, user, good_body(s, (1 + n % 5, 100 + i)), key)
                if r.status_code != 201 or r.json()["status"] != "confirmed":
                    unexpected.append((r.status_code, r.text[:200]))
                    continue
                doc = r.json()
                with lock:
                    acked[doc["id"]] = (doc, int(r.headers["X-Position"]))
                if n % 4 == 1:
                    c = cancel(s, doc["id"], user, reason=f"load {i}/{n}")
                    if c.status_code != 200:
                        unexpected.append((c.status_code, c.text[:200]))
                        continue
                    with lock:
                        cancelled[doc["id"]] = (c.json(), int(c.headers["X-Position"]))
            except requests.RequestException:
                if not s.order_svc.killed:  # set before the SIGKILL is sent
                    raise
                return
    errors = []

    def run(i):
        try:
            client(i)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + max_seconds
    with contextlib.ExitStack() as stack:
        locked = False
        while len(acked) < min_acked and time.monotonic() < deadline and not errors:
            if len(acked) >= lag_from and not locked:
                stack.enter_context(views_locked(s.db))
                locked = True
            time.sleep(0.01)
        s.order_svc.kill()  # SIGKILL with requests in flight
        dead.set()
    for t in threads:
        t.join(30 * SLOW)
    assert not errors, errors
    assert not unexpected, unexpected[:5]
    return acked, cancelled


def settled_everywhere(s):
    """Every order's saga has ended (no pending order, no compensation left half done),
    judged from the events: [(order id, its events)]."""
    out = []
    for (stream,) in s.db.query("SELECT DISTINCT stream_id FROM events"):
        oid = stream[len("order-"):]
        evs = events_of(s, oid)
        view = rebuild(evs)
        if view["status"] == "pending":
            return None
        if view["status"] in ("rejected", "cancelled") and (
                view["stock_status"] == "reserved" or view["payment_status"] == "captured"):
            return None
        out.append((oid, evs))
    return out


def test_kill_9_during_load_loses_no_acknowledged_order(start_shop):
    s = start_shop(user=False)
    db = s.db
    users = [uid() for _ in range(6)]
    acked, cancelled = load_until_killed(s, users, min_acked=120, max_seconds=5 * SLOW,
                                         lag_from=30)
    assert len(acked) >= 20, f"only {len(acked)} orders acknowledged before the kill"

    # the write database as the crash left it: every acknowledged event is there
    assert_streams_contiguous(db)
    top = committed(s)
    for oid, (doc, pos) in acked.items():
        rows = db.query("SELECT version, type, position FROM events WHERE stream_id = ? "
                        "ORDER BY version", [f"order-{oid}"])
        assert [t for _, t, _ in rows[:4]] == ["OrderCreated", "StockReserved",
                                               "PaymentCaptured", "OrderConfirmed"], (oid, rows)
        assert rows[doc["version"] - 1][::2] == (doc["version"], pos), (oid, rows)
        if oid in cancelled:
            c, cpos = cancelled[oid]
            assert rows[doc["version"]][1] == "OrderCancelled", (oid, rows)
            assert rows[c["version"] - 1][::2] == (c["version"], cpos), (oid, rows)
    out = db.query("SELECT aggregate_id, type FROM outbox ORDER BY seq")
    events = db.query("SELECT stream_id, type FROM events ORDER BY position")
    assert out == [(sid[len("order-"):], t) for sid, t in events], \
        "the outbox does not hold exactly one row per event"
    cp_before = checkpoint(db)
    assert 0 <= cp_before < top, "the projector was not behind at the kill"

    # restart on the same data: the sagas cut by the kill end by themselves, and the
    # projector resumes from its checkpoint
    s2 = s.start("order")
    orders = poll(lambda: settled_everywhere(s), 30 * SLOW, interval=0.2,
                  what="every saga to end after the restart")
    top = committed(s)
    poll(lambda: projected(s2) == top, 10 * SLOW, what="the projector to catch up")
    after = db.count("events", "WHERE position > ?", [cp_before])
    assert s2.metric("projection_events_total", projection="order_views") == after, \
        f"projector re-applied events before its checkpoint {cp_before}"
    assert checkpoint(db) == top

    for oid, (doc, pos) in acked.items():
        want, want_pos = cancelled.get(oid, (doc, pos))
        r = get_order(s2, oid, doc["user_id"], min_pos=want_pos)
        assert r.status_code == 200, (oid, r.status_code, r.text)
        got = r.json()
        if oid in cancelled:
            assert got == want
        else:  # a cancel may have been in flight at the kill
            assert got == want or got["status"] == "cancelled", got
    # the other services agree with every order, acknowledged or cut by the kill
    reserved = {}
    for oid, evs in orders:
        view = rebuild(evs)
        captured = [p for p in s.payments(oid) if p["status"] == "captured"]
        assert len(captured) == (view["payment_status"] == "captured"), (view, captured)
        if view["stock_status"] == "reserved":
            for i in view["items"]:
                reserved[i["product_id"]] = reserved.get(i["product_id"], 0) + i["quantity"]
    for pid, units in reserved.items():
        assert s.stock(pid)["reserved"] == units, pid
    # views complete again: one view per stream, each order once in its user's list
    assert db.count("order_views", file=READ) == len(orders)
    index = db.query("SELECT order_id FROM user_order_views", file=READ)
    assert sorted(r[0] for r in index) == sorted(oid for oid, _ in orders)
    owners = {}
    for data, in db.query("SELECT data FROM events WHERE type = 'OrderCreated'"):
        d = json.loads(data)
        owners.setdefault(d["user_id"], []).append(d["order_id"])
    for user in users:
        seen, cursor = [], None
        while True:
            r = list_orders(s2, user, limit=50, cursor=cursor)
            assert r.status_code == 200, r.text
            seen += r.json()["items"]
            cursor = r.json()["next_cursor"]
            if cursor is None:
                break
        ids = [o["id"] for o in seen]
        assert len(ids) == len(set(ids))
        assert {oid for oid, (doc, _) in acked.items() if doc["user_id"] == user} <= set(ids)
        assert sorted(ids) == sorted(owners.get(user, []))
        assert [(o["created_at"], o["id"]) for o in seen] == \
            sorted(((o["created_at"], o["id"]) for o in seen), reverse=True)
        for o in seen:
            assert o == rebuild(events_of(s2, o["id"]))

    # positions are never reused: a new write goes after everything stored
    doc, pos = create(s2, users[0], good_body(s))
    assert pos > top
    assert get_order(s2, doc["id"], users[0], min_pos=pos).json() == doc


def test_graceful_restart_keeps_views_and_checkpoint(start_shop):
    s = start_shop(user=False)
    user = uid()
    docs = [create(s, user, good_body(s, (1, 10 * (i + 1)))) for i in range(12)]
    c = cancel(s, docs[0][0]["id"], user)
    assert c.status_code == 200
    top = int(c.headers["X-Position"])
    assert top == committed(s)
    poll(lambda: projected(s) == top, 5 * SLOW, what="the projector to catch up")
    s.stop("order")
    assert checkpoint(s.db) == top
    s2 = s.start("order")
    assert projected(s2) == top
    assert s2.metric("projection_events_total", projection="order_views") == 0
    r = list_orders(s2, user, limit=100, min_pos=top)
    assert sorted(o["id"] for o in r.json()["items"]) == sorted(d["id"] for d, _ in docs)
    assert get_order(s2, docs[0][0]["id"], user, min_pos=top).json() == c.json()
    # the restarted writer continues the stream with the next version
    doc = docs[1][0]
    r = s2.request("PATCH", f"/api/v1/orders/{doc['id']}/status", user=uid(),
                   role="admin", json={"status": "shipped"}, headers={"If-Match": etag(doc)})
    assert r.status_code == 200 and int(r.headers["X-Position"]) > top
    versions = [e["version"] for e in events_of(s2, doc["id"])]
    assert versions == list(range(1, r.json()["version"] + 1))
    assert r.json()["version"] > doc["version"]


WAL_INDEX_DMS = 128  # SQLite's "dead-man switch" byte in the -shm file (os_unix.c UNIX_SHM_DMS)


def dms_holder(shm_path):
    """The pid of a process holding a lock on the WAL index's dead-man-switch byte, or None
    when another process could take it exclusively (F_GETLK: asks, takes nothing)."""
    fd = os.open(shm_path, os.O_RDONLY)
    try:
        query = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, WAL_INDEX_DMS, 1, 0)
        l_type, _, _, _, pid = struct.unpack("hhqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK, query))
        return None if l_type == fcntl.F_UNLCK else pid
    finally:
        os.close(fd)


@pytest.mark.skipif(BACKEND != "sqlite", reason="SQLite's WAL index")
def test_server_keeps_its_wal_index_lock_while_it_serves_reads(start_shop):
    """SQLite holds a shared lock on the -shm's DMS byte for as long as a connection has the
    WAL index mapped; a process that finds the byte unlocked believes it is alone and
    truncates and rebuilds the -shm under the server (SIGBUS in sqlite3WalFindFrame, or a
    reader trusting a WAL index being rewritten). Closing any descriptor of the -shm in the
    server process drops that POSIX lock."""
    s = start_shop(user=False)
    user = uid()
    doc, pos = create(s, user)
    shm = {name: os.path.join(s.db.data_dir, name + "-shm") for name in ("order.db", READ)}
    assert dms_holder(shm["order.db"]) == s.proc.pid, "no WAL-index lock after a write"
    for _ in range(3):  # pooled reads of the write database and of the read database
        assert s.get(f"/api/v1/orders/{doc['id']}/events", user=user).status_code == 200
        assert get_order(s, doc["id"], user, min_pos=pos).status_code == 200
    for name, path in shm.items():
        assert dms_holder(path) == s.proc.pid, \
            f"after pooled reads the server holds no lock on {name}-shm's DMS byte"
