"""The order service's user directory, the consumer both bus tests watch (the HTTP feed in
test_bus_local, NATS JetStream in test_bus_nats): what it holds, what it received, where its
checkpoint is, and a kill -9 of the order service while users keep registering."""
import threading

from conftest import SLOW, poll

CONSUMER = "order.user_directory"


def directory(order):
    return {r[0]: (r[1], r[2]) for r in
            order.db.query("SELECT user_id, email, name FROM user_directory")}


def wait_directory(order, users, timeout=30):
    want = {u["id"]: (u["email"], u["name"]) for u in users}
    poll(lambda: directory(order) == want, timeout * SLOW, 0.05,
         what=f"the order's user directory to hold {len(want)} users")


def received(order):
    return order.db.count("bus_received", "WHERE consumer = ?", (CONSUMER,))


def received_ids(order):
    return sorted(r[0] for r in order.db.query(
        "SELECT event_id FROM bus_received WHERE consumer = ?", (CONSUMER,)))


def checkpoint(order):
    rows = order.db.query("SELECT last_seq FROM bus_checkpoints WHERE consumer = ? AND "
                          "producer = 'user'", (CONSUMER,))
    return rows[0][0] if rows else 0


def outbox_ids(user):
    return sorted(r[0] for r in user.db.query("SELECT id FROM outbox"))


def kill_9_while_registering(user, order, restart):
    """Registers up to 40 users on another thread; once the order service has applied 3 of
    them it is killed with SIGKILL and `restart(db)` starts it again on the same database.
    Returns the new order server and the users registered meanwhile."""
    before = checkpoint(order)
    more, stop = [], threading.Event()

    def keep_registering():
        while not stop.is_set() and len(more) < 40:
            more.append(user.create_user())

    t = threading.Thread(target=keep_registering)
    t.start()
    try:
        poll(lambda: checkpoint(order) >= before + 3, 20 * SLOW, what="some of the load applied")
        order.kill()
        order = restart(order.db)
    finally:
        stop.set()
        t.join(60 * SLOW)
    return order, more
