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
