"""Never oversell: two inventory processes on ONE database (the same SQLite file, or the same
PostgreSQL database) take parallel reservations for the last units of a product. Exactly the
units on hand are reserved, the rest answer 409 out_of_stock, and available is never
negative."""
import threading
import uuid

import requests

from conftest import SLOW, assert_problem

UNITS, ATTEMPTS = 10, 50


def test_parallel_reservations_never_oversell(start_server):
    first = start_server(target="inventory")
    second = start_server(db=first.db, target="inventory")
    body = {"sku": "LAST-" + uuid.uuid4().hex[:8], "name": "Last units", "price_cents": 999,
            "currency": "EUR", "stock": UNITS}
    r = first.request("POST", "/api/v1/products", user=str(uuid.uuid4()), role="admin",
                      json=body)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    orders = [str(uuid.uuid4()) for _ in range(ATTEMPTS)]
    answers = [None] * ATTEMPTS
    start = threading.Barrier(ATTEMPTS)

    def attempt(i):
        server = (first, second)[i % 2]
        start.wait()
        answers[i] = requests.post(server.url + "/internal/v1/reservations",
                                   json={"order_id": orders[i],
                                         "items": [{"product_id": pid, "quantity": 1}]},
                                   timeout=60 * SLOW)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(ATTEMPTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = [a.status_code for a in answers]
    assert sorted(set(statuses)) == [201, 409], statuses
    assert statuses.count(201) == UNITS and statuses.count(409) == ATTEMPTS - UNITS
    for a in answers:
        if a.status_code == 409:
            doc = assert_problem(a, 409, "items[0].quantity")
            assert doc["reason"] == "out_of_stock", doc
    # both processes (and the database) agree
    for server in (first, second):
        doc = server.get(f"/api/v1/products/{pid}").json()
        assert doc["available"] == 0, doc
    (row,) = first.db.query("SELECT on_hand, reserved FROM stock_levels WHERE product_id = ?",
                            [pid])
    assert row == (UNITS, UNITS)
    won = {orders[i] for i in range(ATTEMPTS) if statuses[i] == 201}
    rows = first.db.query("SELECT order_id, quantity FROM reservation_lines WHERE product_id = ?",
                          [pid])
    assert sorted(rows) == sorted((o, 1) for o in won)
    assert first.db.count("reservations") == UNITS
    assert first.db.count("outbox", "WHERE type = 'stock.reserved'") == UNITS
    # giving one back lets exactly one more through
    assert second.request("POST", f"/internal/v1/reservations/{next(iter(won))}/release"
                          ).status_code == 200
    late = [str(uuid.uuid4()) for _ in range(2)]
    got = [first.request("POST", "/internal/v1/reservations",
                         json={"order_id": o, "items": [{"product_id": pid, "quantity": 1}]}
                         ).status_code for o in late]
    assert got == [201, 409]
    assert first.db.query("SELECT on_hand - reserved FROM stock_levels WHERE product_id = ?",
                          [pid]) == [(0,)]


def parallel(calls):
    """Runs the thunks at once (one thread each) and returns their results in order."""
    results = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i):
        start.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def post(server, path, body=None):
    return lambda: requests.post(server.url + path, json=body, timeout=60 * SLOW)


def test_racing_calls_for_one_order_settle_once(start_server):
    first = start_server(target="inventory")
    second = start_server(db=first.db, target="inventory")
    r = first.request("POST", "/api/v1/products", user=str(uuid.uuid4()), role="admin",
                      json={"sku": "RACE-" + uuid.uuid4().hex[:8], "name": "Raced",
                            "price_cents": 5, "currency": "EUR", "stock": 100})
    pid = r.json()["id"]
    items = [{"product_id": pid, "quantity": 3}]
    # the same reserve ten times at once: one reservation, ten identical 201s
    order = str(uuid.uuid4())
    got = parallel([post((first, second)[i % 2], "/internal/v1/reservations",
                         {"order_id": order, "items": items}) for i in range(10)])
    assert [g.status_code for g in got] == [201] * 10, [g.text for g in got]
    assert all(g.json() == got[0].json() for g in got)
    assert first.db.query("SELECT reserved FROM stock_levels WHERE product_id = ?",
                          [pid]) == [(3,)]
    assert first.db.count("outbox", "WHERE type = 'stock.reserved'") == 1
    # commits racing each other and a release: exactly one of commit or release wins
    calls = [post((first, second)[i % 2], f"/internal/v1/reservations/{order}/commit")
             for i in range(4)] + [post(second, f"/internal/v1/reservations/{order}/release")]
    statuses = [g.status_code for g in parallel(calls)]
    (on_hand, reserved), = first.db.query(
        "SELECT on_hand, reserved FROM stock_levels WHERE product_id = ?", [pid])
    assert reserved == 0
    if statuses[4] == 200:  # the release won: every commit is 409
        assert statuses[:4] == [409] * 4 and on_hand == 100, statuses
    else:
        assert statuses == [200] * 4 + [409] and on_hand == 97, statuses
    # reserves and releases of twenty other orders racing: a release either comes first
    # (a tombstone, the reserve is refused) or gives the units back; nothing stays reserved
    orders = [str(uuid.uuid4()) for _ in range(20)]
    calls = []
    for i, o in enumerate(orders):
        calls.append(post(first, "/internal/v1/reservations", {"order_id": o, "items": items}))
        calls.append(post(second, f"/internal/v1/reservations/{o}/release"))
    got = parallel(calls)
    for i in range(0, len(got), 2):
        assert got[i].status_code in (201, 409), got[i].text
        if got[i].status_code == 409:
            assert got[i].json()["reason"] == "released"
        assert got[i + 1].status_code == 200, got[i + 1].text
    assert first.db.query("SELECT reserved FROM stock_levels WHERE product_id = ?",
                          [pid]) == [(0,)]
    marks = ",".join("?" * len(orders))
    assert first.db.query(f"SELECT DISTINCT status FROM reservations WHERE order_id IN ({marks})",
                          orders) == [("released",)]
