"""Outbox commit order on PostgreSQL: a consumer that follows a service's feed by seq never
passes over a row. A sequence value is taken at INSERT but seen at COMMIT, so a transaction that
took a lower seq and commits late could land behind a higher seq already served; the services
take the outbox's advisory lock at the start of every outbox-writing transaction, so the later
writer waits and takes the next seq only after the earlier one committed.

The test holds a real service transaction open after its outbox INSERT (a trigger, installed
by the test, sleeps in it) well past the relay's gap wait (1 s), while a second request writes
its own outbox row and a consumer follows the feed. Without the lock the second row commits
first, the relay takes the gap for a rollback, the feed serves the higher seq and the consumer's
checkpoint passes the lower row for good; with it the consumer sees both, in order."""
import threading

import pytest

from conftest import BACKEND, SLOW, poll

pytestmark = pytest.mark.skipif(BACKEND != "postgres",
                                reason="SQLite has one writer: commits are in seq order")

HOLD_S = 3  # longer than the relay's gap wait (1 s) and a few of the feed's polls

SLOW_TRIGGER = f"""
CREATE FUNCTION ms_test_hold_outbox() RETURNS trigger AS $$
BEGIN
    IF NEW.payload LIKE '%Held Writer%' THEN PERFORM pg_sleep({HOLD_S}); END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER ms_test_hold AFTER INSERT ON outbox
    FOR EACH ROW EXECUTE FUNCTION ms_test_hold_outbox();
"""


class Follower(threading.Thread):
    """A consumer of GET /internal/v1/events: asks after its checkpoint, long-polling, and
    moves the checkpoint to next_after, as the bus consumers do."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server, self.after, self.seen = server, 0, []
        self.stopping, self.error = threading.Event(), None

    def run(self):
        try:
            while not self.stopping.is_set():
                r = self.server.get("/internal/v1/events",
                                    params={"after": self.after, "wait_ms": 200})
                assert r.status_code == 200, r.text
                page = r.json()
                self.seen.extend(i["aggregate_id"] for i in page["items"])
                self.after = page["next_after"]
        except Exception as e:  # reported by the test, not lost in the thread
            self.error = e


def test_a_late_commit_is_never_passed_over(start_server):
    s = start_server()
    first = s.create_user(name="Early Writer")
    import psycopg2
    conn = psycopg2.connect(s.db.url)
    conn.autocommit = True
    conn.cursor().execute(SLOW_TRIGGER)

    def seq_taken():
        cur = conn.cursor()
        cur.execute("SELECT last_value FROM outbox_seq_seq")
        return cur.fetchone()[0] >= 2

    follower = Follower(s)
    follower.start()
    results = {}

    def create(name):
        results[name] = s.create_user(name=name)

    held = threading.Thread(target=create, args=("Held Writer",))
    held.start()
    # the held transaction has its seq (2) and sleeps before its commit
    poll(seq_taken, 10 * SLOW, what="the held transaction to take its seq")
    late = threading.Thread(target=create, args=("Later Writer",))
    late.start()
    held.join(30 * SLOW)
    late.join(30 * SLOW)
    assert set(results) == {"Held Writer", "Later Writer"}, results
    held_id, later_id = results["Held Writer"]["id"], results["Later Writer"]["id"]

    # the seqs the rows took: the later request's is the higher one
    cur = conn.cursor()
    cur.execute("SELECT aggregate_id, seq FROM outbox ORDER BY seq")
    seqs = dict(cur.fetchall())
    assert seqs[first["id"]] < seqs[held_id] < seqs[later_id], seqs

    poll(lambda: later_id in follower.seen, 30 * SLOW, interval=0.05,
         what="the consumer to reach the later row")
    follower.stopping.set()
    follower.join(10 * SLOW)
    conn.close()
    assert follower.error is None, follower.error
    # every row once, in seq order: the held row was not passed over
    assert follower.seen == [first["id"], held_id, later_id], follower.seen
