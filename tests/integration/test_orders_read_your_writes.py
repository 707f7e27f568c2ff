"""One order reads its own writes with no header: after a 201 or 200 from a write, GET, PATCH,
cancel and the events of that order, by the same or any client, see that write at once
(queries.c: a view that is missing or older than the stream's durable head is read again once
the projector has passed it). Lists keep X-Min-Position.

The projector's lag is real under load (the loop below) and stretched at will by fault
injection: ptrace stops the projector thread alone (test_orders_unsynced.stalled)."""
import threading

import requests

from conftest import SLOW, assert_problem
from shop import start_shop  # noqa: F401
from test_orders import (CHECKOUT_EVENTS, JSON, cancel, create, events_of, good_body,
                         osrv, patch_status, uid)  # noqa: F401
from test_orders_unsynced import stalled


def test_post_then_read_back_at_once_never_misses(osrv):
    """400 times: place an order and read it back on another connection at once."""
    base = f"http://127.0.0.1:{osrv.port}"
    writer, reader = requests.Session(), requests.Session()
    body = good_body(osrv)
    for i in range(400):
        user = uid()
        who = {"X-User-Id": user, "X-User-Role": "customer"}
        r = writer.post(base + "/api/v1/orders", json=body, headers={**who, **JSON})
        assert r.status_code == 201, r.text
        doc = r.json()
        g = reader.get(f"{base}/api/v1/orders/{doc['id']}", headers=who)
        assert g.status_code == 200, f"iteration {i}: {g.status_code} {g.text}"
        assert g.json() == doc, f"iteration {i}"
        assert g.headers["ETag"] == f'"{doc["version"]}"', f"iteration {i}"
        if i % 10 == 0:  # a change read back at once, by the admin this time
            p = patch_status(osrv, doc["id"], "shipped", f'"{doc["version"]}"')
            assert p.status_code == 200, p.text
            g = reader.get(f"{base}/api/v1/orders/{doc['id']}",
                           headers={"X-User-Id": uid(), "X-User-Role": "admin"})
            assert g.status_code == 200 and g.json() == p.json(), f"iteration {i}: {g.text}"
            assert g.headers["ETag"] == f'"{p.json()["version"]}"'


def read_in_background(s, oid, user):
    """GET the order on a thread; returns (thread, answer dict)."""
    answer = {}
    t = threading.Thread(target=lambda: answer.update(
        r=s.get(f"/api/v1/orders/{oid}", user=user)))
    t.start()
    return t, answer


def test_a_read_waits_for_the_projector_instead_of_answering_404(start_shop):
    s = start_shop(user=False)
    user = uid()
    create(s, user)  # the projector has something to do first
    with stalled(s, "projector", 0.03):
        doc, _ = create(s, user)  # acknowledged while the views cannot move
        t, answer = read_in_background(s, doc["id"], user)
        t.join(0.5 * SLOW)
        assert t.is_alive(), f"answered from a view without the order: {answer}"
        # commands and the events come from the stream: they see the order at once
        assert [e["type"] for e in events_of(s, doc["id"], user, "customer")] == CHECKOUT_EVENTS
        p = patch_status(s, doc["id"], "shipped", f'"{doc["version"]}"')
        assert p.status_code == 200, p.text
        c = cancel(s, doc["id"], user)
        assert "shipped" in assert_problem(c, 409)["detail"]
    t.join(10 * SLOW)
    assert not t.is_alive(), "the read was not answered once the projector ran"
    r = answer["r"]
    assert r.status_code == 200, r.text
    # it waited for the stream's durable head, so it sees the PATCH made meanwhile too
    assert r.json() == p.json() and r.headers["ETag"] == f'"{p.json()["version"]}"'


def test_a_stale_view_is_not_answered(start_shop):
    s = start_shop(user=False)
    user = uid()
    doc, _ = create(s, user)
    assert s.get(f"/api/v1/orders/{doc['id']}", user=user).json() == doc
    with stalled(s, "projector", 0.03):
        c = cancel(s, doc["id"], user)
        assert c.status_code == 200, c.text
        t, answer = read_in_background(s, doc["id"], user)
        t.join(0.5 * SLOW)
        assert t.is_alive(), f"answered the view from before the cancel: {answer}"
    t.join(10 * SLOW)
    r = answer["r"]
    assert r.status_code == 200 and r.json() == c.json(), r.text
    assert r.json()["status"] == "cancelled"


def test_a_read_that_cannot_catch_up_answers_504_at_its_deadline(start_shop):
    deadline = 1.0 * SLOW
    s = start_shop(user=False, order_args=("--request-timeout-ms", str(int(deadline * 1000))))
    user = uid()
    with stalled(s, "projector", 0.03):
        doc, _ = create(s, user)
        r = s.get(f"/api/v1/orders/{doc['id']}", user=user)
        assert_problem(r, 504)
    # an id nobody wrote is still 404 at once, with the projector running
    assert_problem(s.get(f"/api/v1/orders/{uid()}", user=user), 404)
    assert s.get(f"/api/v1/orders/{doc['id']}", user=user).json() == doc
