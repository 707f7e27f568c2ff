"""The payment service: POST /internal/v1/payments (authorize and capture), POST
/internal/v1/payments/{order_id}/refund, GET /api/v1/payments/{id} and GET
/api/v1/payments?order_id=. Idempotency by order id, declines, the outbox events, and the card
number never kept beyond its last four digits, and the voided tombstone a refund of an order
without payment leaves. Chaos is in test_payment_chaos.py."""
import concurrent.futures
import contextlib
import json
import os
import threading
import uuid

import pytest

from conftest import (BACKEND, RFC3339, SLOW, UUID_RE, ServerSet, admin, assert_problem, ident,
                      poll)

CARD = "4242424242424242"
DECLINED = "4000000000000002"
OTHER_CARD = "5555555555554444"  # Luhn-valid, accepted by the sandbox
NIL_USER = "00000000-0000-0000-0000-000000000000"
JSON = {"Content-Type": "application/json"}
PAYMENT_KEYS = {"id", "order_id", "user_id", "amount_cents", "currency", "status", "card_last4",
                "created_at", "refunds"}
TABLES = ("payments", "transactions", "refunds", "outbox")
# the relay marks outbox rows published in the background: not a request writing
OWN_COLUMNS = {"outbox": "seq, id, aggregate_type, aggregate_id, type, payload, created_at"}


def uid():
    return str(uuid.uuid4())


@pytest.fixture(scope="module")
def psrv():
    servers = ServerSet()
    try:
        # the access log is on so that the log check below covers it too
        yield servers.start("--access-log", target="payment")
    finally:
        servers.close()


def state(s):
    return {t: sorted(s.db.query(f"SELECT {OWN_COLUMNS.get(t, '*')} FROM {t}"), key=repr)
            for t in TABLES}


@contextlib.contextmanager
def nothing_written(s):
    before = state(s)
    yield
    assert state(s) == before, "a rejected request wrote to the database"


def charge_body(order=None, user=None, amount=1999, currency="EUR", card=CARD):
    return {"order_id": order or uid(), "user_id": user or uid(), "amount_cents": amount,
            "currency": currency, "card_number": card}


def charge(s, body=None, raw=None, headers=JSON):
    data = raw if raw is not None else json.dumps(body).encode()
    return s.request("POST", "/internal/v1/payments", data=data, headers=headers)


def refund(s, order, body=None, raw=None):
    if raw is None and body is None:
        return s.request("POST", f"/internal/v1/payments/{order}/refund")
    data = raw if raw is not None else json.dumps(body).encode()
    return s.request("POST", f"/internal/v1/payments/{order}/refund", data=data, headers=JSON)


def assert_payment(doc, body, status="captured"):
    assert set(doc) == PAYMENT_KEYS, doc
    assert UUID_RE.match(doc["id"]) and RFC3339.match(doc["created_at"]), doc
    assert doc["order_id"] == body["order_id"] and doc["user_id"] == body["user_id"], doc
    assert doc["amount_cents"] == body["amount_cents"] and doc["currency"] == body["currency"]
    assert doc["card_last4"] == body["card_number"][-4:], doc
    assert doc["status"] == status, doc


def count(s, table, where="", params=()):
    return s.db.count(table, where, params)


def events(s, order):
    """The outbox rows of the payment of `order`: [(type, payload)] in order."""
    rows = s.db.query("SELECT o.type, o.payload FROM outbox o JOIN payments p"
                      " ON p.id = o.aggregate_id WHERE p.order_id = ? ORDER BY o.seq", [order])
    return [(t, json.loads(p)) for t, p in rows]


# ---- authorize and capture ----

def test_charge_captures_and_records_everything(psrv):
    body = charge_body()
    r = charge(psrv, body)
    assert r.status_code == 201, r.text
    doc = r.json()
    assert_payment(doc, body)
    assert doc["refunds"] == []
    assert r.headers["Location"] == f"/api/v1/payments/{doc['id']}"
    tx = psrv.db.query("SELECT kind, outcome, amount_cents, provider FROM transactions"
                       " WHERE payment_id = ?", [doc["id"]])
    assert tx == [("authorize_capture", "approved", 1999, "sandbox")]
    [(kind, payload)] = events(psrv, body["order_id"])
    assert kind == "payment.captured"
    assert payload == {"payment_id": doc["id"], "order_id": body["order_id"],
                       "user_id": body["user_id"], "amount_cents": 1999, "currency": "EUR",
                       "card_last4": "4242", "captured_at": doc["created_at"]}


def test_any_luhn_valid_card_is_accepted(psrv):
    for card in (OTHER_CARD, "378282246310005", "4111111111111111110", "000000000000"):
        body = charge_body(card=card)
        r = charge(psrv, body)
        assert r.status_code == 201, (card, r.text)
        assert_payment(r.json(), body)


def test_uuids_are_stored_lower_case(psrv):
    body = charge_body()
    r = charge(psrv, {**body, "order_id": body["order_id"].upper()})
    assert r.status_code == 201, r.text
    assert r.json()["order_id"] == body["order_id"]
    again = charge(psrv, body)
    assert again.status_code == 201 and again.json()["id"] == r.json()["id"]


def test_declined_card_answers_402_and_records_the_decline(psrv):
    body = charge_body(card=DECLINED)
    r = charge(psrv, body)
    doc = assert_problem(r, 402)
    assert doc["reason"] == "payment_declined", doc
    rows = psrv.db.query("SELECT id, status, card_last4 FROM payments WHERE order_id = ?",
                         [body["order_id"]])
    assert len(rows) == 1 and rows[0][1:] == ("declined", "0002")
    assert rows[0][0] in doc["detail"]
    assert psrv.db.query("SELECT kind, outcome FROM transactions WHERE payment_id = ?",
                         [rows[0][0]]) == [("authorize_capture", "declined")]
    [(kind, payload)] = events(psrv, body["order_id"])
    assert kind == "payment.declined" and payload["reason"] == "card_declined", payload
    assert payload["payment_id"] == rows[0][0] and "captured_at" not in payload
    # the same request again: the same answer, nothing new
    with nothing_written(psrv):
        again = charge(psrv, body)
        assert assert_problem(again, 402)["reason"] == "payment_declined"
    # the declined payment reads like any other
    got = psrv.get(f"/api/v1/payments/{rows[0][0]}", user=body["user_id"])
    assert got.status_code == 200
    assert_payment(got.json(), body, status="declined")


def test_same_request_twice_is_one_payment(psrv):
    body = charge_body()
    first = charge(psrv, body)
    assert first.status_code == 201
    with nothing_written(psrv):
        second = charge(psrv, body)
    assert second.status_code == 201 and second.json() == first.json()
    assert count(psrv, "payments", "WHERE order_id = ?", [body["order_id"]]) == 1


@pytest.mark.parametrize("change,field", [
    ({"amount_cents": 2000}, "amount_cents"),
    ({"currency": "USD"}, "currency"),
    ({"card_number": OTHER_CARD}, "card_number"),
    ({"user_id": "00000000-0000-4000-8000-000000000001"}, "user_id"),
])
def test_same_order_other_details_is_409(psrv, change, field):
    body = charge_body()
    assert charge(psrv, body).status_code == 201
    with nothing_written(psrv):
        r = charge(psrv, {**body, **change})
        doc = assert_problem(r, 409, field)
    assert doc["reason"] == "conflict"


def test_concurrent_identical_charges_make_one_payment(psrv):
    body = charge_body()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: charge(psrv, body), range(20)))
    assert [a.status_code for a in answers] == [201] * 20, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    pid = answers[0].json()["id"]
    assert count(psrv, "payments", "WHERE order_id = ?", [body["order_id"]]) == 1
    assert count(psrv, "transactions", "WHERE payment_id = ?", [pid]) == 1
    assert [k for k, _ in events(psrv, body["order_id"])] == ["payment.captured"]


BAD_KINDS = [
    ({"order_id": 7}, "order_id"), ({"user_id": None}, "user_id"),
    ({"amount_cents": 19.99}, "amount_cents"), ({"amount_cents": "1999"}, "amount_cents"),
    ({"currency": ["EUR"]}, "currency"), ({"card_number": 4242424242424242}, "card_number"),
    ({"cvc": "123"}, "cvc"),
]
INVALID = [
    ({"order_id": "not-a-uuid"}, "order_id"), ({"user_id": "123"}, "user_id"),
    ({"amount_cents": 0}, "amount_cents"), ({"amount_cents": -5}, "amount_cents"),
    ({"amount_cents": 10 ** 13}, "amount_cents"), ({"currency": "eur"}, "currency"),
    ({"currency": "ZZZ"}, "currency"), ({"card_number": "4242424242424241"}, "card_number"),
    ({"card_number": "4242 4242 4242 4242"}, "card_number"),
    ({"card_number": "42424242424"}, "card_number"),
    ({"card_number": "42424242424242424242"}, "card_number"), ({"card_number": ""}, "card_number"),
]


@pytest.mark.parametrize("change,field", BAD_KINDS)
def test_charge_fields_of_the_wrong_kind_are_400(psrv, change, field):
    with nothing_written(psrv):
        assert_problem(charge(psrv, {**charge_body(), **change}), 400, field)


@pytest.mark.parametrize("change,field", INVALID)
def test_charge_invalid_values_are_422(psrv, change, field):
    with nothing_written(psrv):
        assert_problem(charge(psrv, {**charge_body(), **change}), 422, field)


@pytest.mark.parametrize("field", ["order_id", "user_id", "amount_cents", "currency",
                                   "card_number"])
def test_charge_missing_fields_are_422(psrv, field):
    body = charge_body()
    del body[field]
    with nothing_written(psrv):
        assert_problem(charge(psrv, body), 422, field)


def test_charge_body_not_json(psrv):
    with nothing_written(psrv):
        assert_problem(charge(psrv, raw=b'{"order_id":', headers=JSON), 400, "body")
        assert_problem(charge(psrv, raw=b"[]", headers=JSON), 400, "body")
        assert_problem(charge(psrv, raw=json.dumps(charge_body()).encode(),
                              headers={"Content-Type": "text/plain"}), 415)


# ---- refunds ----

def test_refund_refunds_in_full_once(psrv):
    body = charge_body(amount=4200)
    pid = charge(psrv, body).json()["id"]
    r = refund(psrv, body["order_id"], {"reason": "order cancelled"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert_payment(doc, body, status="refunded")
    assert doc["id"] == pid and len(doc["refunds"]) == 1
    assert doc["refunds"][0]["amount_cents"] == 4200 and RFC3339.match(
        doc["refunds"][0]["created_at"])
    assert psrv.db.query("SELECT reason FROM refunds WHERE payment_id = ?", [pid]) == [
        ("order cancelled",)]
    assert psrv.db.query("SELECT kind, outcome FROM transactions WHERE payment_id = ?"
                         " ORDER BY created_at, kind", [pid]) == [
        ("authorize_capture", "approved"), ("refund", "approved")]
    kinds = events(psrv, body["order_id"])
    assert [k for k, _ in kinds] == ["payment.captured", "payment.refunded"]
    assert kinds[1][1]["amount_cents"] == 4200 and kinds[1][1]["reason"] == "order cancelled"
    # again, with or without a body: the same answer, nothing new
    with nothing_written(psrv):
        assert refund(psrv, body["order_id"]).json() == doc
        assert refund(psrv, body["order_id"], {"reason": "again"}).json() == doc
    # the charge again still names the same payment
    assert charge(psrv, body).json() == doc


def test_concurrent_refunds_make_one_refund(psrv):
    body = charge_body()
    pid = charge(psrv, body).json()["id"]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: refund(psrv, body["order_id"]), range(10)))
    assert [a.status_code for a in answers] == [200] * 10, [a.text for a in answers]
    assert all(a.json()["status"] == "refunded" for a in answers)
    assert count(psrv, "refunds", "WHERE payment_id = ?", [pid]) == 1
    assert count(psrv, "transactions", "WHERE payment_id = ? AND kind = 'refund'", [pid]) == 1


def test_refund_of_a_declined_payment_changes_nothing(psrv):
    body = charge_body(card=DECLINED)
    assert charge(psrv, body).status_code == 402
    with nothing_written(psrv):
        r = refund(psrv, body["order_id"])
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "declined" and r.json()["refunds"] == []


def test_refund_of_a_malformed_order_id_is_404(psrv):
    with nothing_written(psrv):
        assert_problem(refund(psrv, "not-a-uuid"), 404)


# ---- voided: the refund of an order that has no payment ----

def assert_voided(doc, order):
    assert set(doc) == PAYMENT_KEYS, doc
    assert UUID_RE.match(doc["id"]) and RFC3339.match(doc["created_at"]), doc
    assert {k: doc[k] for k in ("order_id", "user_id", "amount_cents", "currency", "status",
                                "card_last4", "refunds")} == {
        "order_id": order, "user_id": NIL_USER, "amount_cents": 0, "currency": "XXX",
        "status": "voided", "card_last4": "", "refunds": []}, doc


def test_refund_of_an_order_without_payment_voids_it(psrv):
    order = uid()
    transactions, refunds = count(psrv, "transactions"), count(psrv, "refunds")
    r = refund(psrv, order.upper(), {"reason": "checkout timed out"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert_voided(doc, order)
    # no provider call, no refund: nothing was charged or paid back
    assert count(psrv, "transactions") == transactions
    assert count(psrv, "refunds") == refunds
    assert psrv.db.query("SELECT id, status, amount_cents FROM payments WHERE order_id = ?",
                         [order]) == [(doc["id"], "voided", 0)]
    assert events(psrv, order) == [("payment.voided", {
        "payment_id": doc["id"], "order_id": order, "voided_at": doc["created_at"],
        "reason": "checkout timed out"})]
    # again, with or without a reason: the same payment, nothing new
    with nothing_written(psrv):
        assert refund(psrv, order).json() == doc
        again = refund(psrv, order, {"reason": "again"})
        assert again.status_code == 200 and again.json() == doc


@pytest.mark.parametrize("card", [CARD, DECLINED])
def test_charge_of_a_voided_order_is_409_and_charges_nothing(psrv, card):
    order = uid()
    voided = refund(psrv, order)
    assert voided.status_code == 200 and voided.json()["status"] == "voided", voided.text
    with nothing_written(psrv):
        for _ in range(2):
            doc = assert_problem(charge(psrv, charge_body(order=order, card=card)), 409)
            assert doc["reason"] == "voided" and voided.json()["id"] in doc["detail"], doc
    assert count(psrv, "transactions", "WHERE payment_id = ?", [voided.json()["id"]]) == 0
    assert [k for k, _ in events(psrv, order)] == ["payment.voided"]
    # the refund still answers the tombstone
    assert refund(psrv, order).json() == voided.json()


def test_a_voided_payment_is_shown_to_admins_only(psrv):
    order = uid()
    doc = refund(psrv, order).json()
    got = psrv.get(f"/api/v1/payments/{doc['id']}", headers=admin())
    assert got.status_code == 200 and got.json() == doc
    listed = psrv.get("/api/v1/payments", params={"order_id": order}, headers=admin())
    assert listed.status_code == 200 and listed.json() == {"items": [doc], "next_cursor": None}
    # the tombstone has the nil user: no customer owns it, not even one claiming that id
    for customer in (uid(), NIL_USER):
        assert_problem(psrv.get(f"/api/v1/payments/{doc['id']}", user=customer), 404)
        r = psrv.get("/api/v1/payments", params={"order_id": order}, user=customer)
        assert r.status_code == 200 and r.json() == {"items": [], "next_cursor": None}


def test_concurrent_charge_and_refund_never_leave_money_taken(psrv):
    """The saga's void racing a charge still in flight: either the charge claimed the order
    first (captured, then refunded by the refund) or the refund did (voided, the charge 409 and
    the provider never called). Never a captured payment left behind."""
    outcomes = set()
    for _ in range(12):
        body = charge_body()
        order = body["order_id"]
        start = threading.Barrier(2)

        def go(call):
            start.wait(10 * SLOW)
            return call()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            c = pool.submit(go, lambda: charge(psrv, body))
            r = pool.submit(go, lambda: refund(psrv, order))
            c, r = c.result(), r.result()
        assert r.status_code == 200, r.text
        [(pid, status)] = psrv.db.query("SELECT id, status FROM payments WHERE order_id = ?",
                                        [order])
        # by kind: each call's timestamp is taken when it arrived, so the refund that waited
        # for the charge may carry the earlier one
        kinds = psrv.db.query("SELECT kind, outcome FROM transactions WHERE payment_id = ?"
                              " ORDER BY kind", [pid])
        if status == "refunded":
            assert c.status_code == 201 and c.json()["id"] == pid, c.text
            assert_payment(r.json(), body, status="refunded")
            assert kinds == [("authorize_capture", "approved"), ("refund", "approved")]
            assert [k for k, _ in events(psrv, order)] == ["payment.captured", "payment.refunded"]
        else:
            assert status == "voided", status
            assert assert_problem(c, 409)["reason"] == "voided", c.text
            assert_voided(r.json(), order)
            assert kinds == []
            assert [k for k, _ in events(psrv, order)] == ["payment.voided"]
        outcomes.add(status)
        # whoever won, the order's payment is settled: refunds and charges change nothing now
        with nothing_written(psrv):
            assert refund(psrv, order).json()["status"] == status
    assert outcomes <= {"refunded", "voided"}


def test_migration_3_keeps_payments_and_admits_tombstones(start_server):
    """A database as migration 2 left it (no 'voided', amounts above 0) is upgraded on start
    with every payment, transaction and refund kept and the references still enforced."""
    s = start_server(target="payment")
    kept = charge_body()
    assert charge(s, kept).status_code == 201
    assert refund(s, kept["order_id"]).status_code == 200
    assert charge(s, charge_body(card=DECLINED)).status_code == 402
    assert charge(s, charge_body()).status_code == 201
    assert s.stop() == 0, s.log_tail()
    before = state(s)
    old_checks = ("CHECK (amount_cents > 0)",
                  "CHECK (status IN ('pending', 'captured', 'declined', 'refunded'))")
    if s.db.name:
        import psycopg2
        conn = psycopg2.connect(s.db.url)
        conn.autocommit = True
        conn.cursor().execute(
            "ALTER TABLE payments DROP CONSTRAINT payments_status_check,"
            " DROP CONSTRAINT payments_amount_cents_check,"
            f" ADD CONSTRAINT payments_amount_cents_check {old_checks[0]},"
            f" ADD CONSTRAINT payments_status_check {old_checks[1]};"
            "DELETE FROM schema_migrations WHERE version = 3")
        conn.close()
    else:
        import sqlite3
        conn = sqlite3.connect(s.db.sqlite_path, isolation_level=None)
        conn.executescript(
            "PRAGMA foreign_keys = OFF;"
            "CREATE TABLE p AS SELECT * FROM payments; DROP TABLE payments;"
            "CREATE TABLE payments (id TEXT PRIMARY KEY, order_id TEXT NOT NULL UNIQUE,"
            " user_id TEXT NOT NULL,"
            f" amount_cents INTEGER NOT NULL {old_checks[0]}, currency TEXT NOT NULL,"
            f" status TEXT NOT NULL {old_checks[1]}, card_last4 TEXT NOT NULL,"
            " created_at TEXT NOT NULL, updated_at TEXT NOT NULL);"
            "INSERT INTO payments SELECT * FROM p; DROP TABLE p;"
            "DELETE FROM schema_migrations WHERE version = 3;")
        conn.close()
    s2 = start_server(db=s.db, target="payment")
    assert state(s2) == before
    assert s2.db.query("SELECT MAX(version) FROM schema_migrations") == [(3,)]
    order = uid()
    assert refund(s2, order).json()["status"] == "voided"
    assert assert_problem(charge(s2, charge_body(order=order)), 409)["reason"] == "voided"
    assert refund(s2, kept["order_id"]).json()["status"] == "refunded"
    if not s.db.name:  # SQLite rebuilt the table: the references still hold and are enforced
        assert s2.db.query("PRAGMA foreign_key_check") == []
        import sqlite3
        conn = sqlite3.connect(s.db.sqlite_path, isolation_level=None, timeout=5)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            with pytest.raises(sqlite3.IntegrityError):
                conn.execute("INSERT INTO refunds (id, payment_id, amount_cents, created_at)"
                             " VALUES (?, ?, 1, 'x')", (uid(), uid()))
        finally:
            conn.close()


@pytest.mark.parametrize("raw,status,field", [
    (b'{"reason": 5}', 400, "reason"),
    (b'{"why": "x"}', 400, "why"),
    (b'{"reason": ', 400, "body"),
    (b'"cancelled"', 400, "body"),
    (json.dumps({"reason": "x" * 201}).encode(), 422, "reason"),
    (json.dumps({"reason": " padded"}).encode(), 422, "reason"),
])
def test_refund_bad_bodies(psrv, raw, status, field):
    body = charge_body()
    assert charge(psrv, body).status_code == 201
    with nothing_written(psrv):
        assert_problem(refund(psrv, body["order_id"], raw=raw), status, field)
    assert psrv.db.query("SELECT status FROM payments WHERE order_id = ?",
                         [body["order_id"]]) == [("captured",)]


# ---- reads ----

@pytest.fixture(scope="module")
def paid(psrv):
    body = charge_body()
    r = charge(psrv, body)
    assert r.status_code == 201
    return body, r.json()


def test_owner_and_admin_read_a_payment(psrv, paid):
    body, doc = paid
    for who in (ident(body["user_id"]), admin()):
        r = psrv.get(f"/api/v1/payments/{doc['id']}", headers=who)
        assert r.status_code == 200 and r.json() == doc
        r = psrv.get("/api/v1/payments", params={"order_id": body["order_id"]}, headers=who)
        assert r.status_code == 200 and r.json() == {"items": [doc], "next_cursor": None}


def test_other_customers_see_no_payment(psrv, paid):
    """Like orders: another customer's payment does not exist for them (404, not 403)."""
    body, doc = paid
    stranger = uid()
    assert_problem(psrv.get(f"/api/v1/payments/{doc['id']}", user=stranger), 404)
    r = psrv.get("/api/v1/payments", params={"order_id": body["order_id"]}, user=stranger)
    assert r.status_code == 200 and r.json() == {"items": [], "next_cursor": None}


def test_reads_need_an_identity(psrv, paid):
    body, doc = paid
    for headers in ({}, {"X-User-Id": body["user_id"]}, ident("nope"), ident(uid(), "root")):
        assert_problem(psrv.get(f"/api/v1/payments/{doc['id']}", headers=headers), 401)
        assert_problem(psrv.get("/api/v1/payments", params={"order_id": body["order_id"]},
                                headers=headers), 401)


def test_unknown_or_malformed_payment_ids_are_404(psrv):
    for pid in (uid(), "not-a-uuid"):
        assert_problem(psrv.get(f"/api/v1/payments/{pid}", headers=admin()), 404)


def test_list_of_an_order_without_payment_is_empty(psrv):
    r = psrv.get("/api/v1/payments", params={"order_id": uid()}, headers=admin())
    assert r.status_code == 200 and r.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize("params,field", [
    ({}, "order_id"), ({"order_id": "x"}, "order_id"), ({"order_id": ""}, "order_id"),
    ({"order_id": "00000000-0000-4000-8000-000000000001", "limit": "0"}, "limit"),
    ({"order_id": "00000000-0000-4000-8000-000000000001", "limit": "many"}, "limit"),
    ({"order_id": "00000000-0000-4000-8000-000000000001", "cursor": "abc"}, "cursor"),
])
def test_list_bad_parameters_are_400(psrv, params, field):
    assert_problem(psrv.get("/api/v1/payments", params=params, headers=admin()), 400, field)


# ---- the card number is never kept ----

def test_card_number_is_never_stored_or_logged(psrv):
    secret = "4916338506082832"  # Luhn-valid, used only here
    declined_body = charge_body(card=DECLINED)
    bodies = [charge_body(card=secret), charge_body(card=secret, amount=7)]
    for b in bodies:
        assert charge(psrv, b).status_code == 201
    assert charge(psrv, declined_body).status_code == 402
    assert charge(psrv, {**bodies[0], "amount_cents": 8}).status_code == 409
    assert charge(psrv, {**bodies[0], "card_number": secret + "0"}).status_code == 422
    assert refund(psrv, bodies[0]["order_id"]).status_code == 200
    # the events reach the feed file, so that it is searched with everything in it
    feed = os.path.join(psrv.db.data_dir, "payment-outbox.jsonl")

    def published():
        if not os.path.exists(feed):
            return False
        with open(feed, encoding="utf-8") as f:
            text = f.read()
        return bodies[0]["order_id"] in text and declined_body["order_id"] in text
    poll(published, 10 * SLOW, what="the events in the outbox feed")
    needles = [secret.encode(), DECLINED.encode(), secret[:12].encode()]
    for root, _, files in os.walk(psrv.db.data_dir):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
            for n in needles:
                assert n not in data, f"{name} holds a card number"
    if BACKEND == "postgres":
        for t in TABLES:
            for row in psrv.db.query(f"SELECT * FROM {t}"):
                text = repr(row)
                assert secret not in text and DECLINED not in text, f"{t} holds a card number"
    assert psrv.log_path.startswith(psrv.db.data_dir)  # so the walk above read the log too
