"""Two order and two inventory instances behind the gateway (docker-compose.replicas.yml):
under a steady load of checkouts, one of each is killed and started again; while one is gone
the errors are 503/504 only, and every order acknowledged with 201/202 is readable after."""
import collections
import uuid

from conftest import (ACKNOWLEDGED, UNAVAILABLE, Load, docker, poll,
                      replica_stack)  # noqa: F401 - replica_stack is a fixture


def test_killing_one_replica_of_each_loses_nothing(replica_stack, record_property):
    s = replica_stack
    _, token = s.customer()
    p = s.product(s.token(str(uuid.uuid4()), "admin"))
    load = Load(s, token, p)
    try:
        for service in ("order", "inventory2"):
            before = load.count()
            poll(lambda: load.count() >= before + 5, 120, what="checkouts before the kill")
            docker("kill", s.container(service))
            mark = load.count()
            poll(lambda: load.count() >= mark + 10, 180, what="checkouts with one instance gone")
            docker("start", s.container(service))
            poll(lambda: s.health(service) == "running healthy", 180,
                 what=f"{service} to be healthy again")
            mark = load.count()
            poll(lambda: load.count() >= mark + 5, 120, what="checkouts after the restart")
    finally:
        statuses, acked = load.stop()
    record_property("statuses", dict(collections.Counter(map(str, statuses))))
    assert acked, statuses
    wrong = [x for x in statuses if x not in ACKNOWLEDGED + UNAVAILABLE]
    assert not wrong, wrong
    assert s.all_readable(token, acked)
    # with both instances back, checkouts succeed
    poll(lambda: s.checkout(token, p).status_code in ACKNOWLEDGED, 120,
         what="a checkout to succeed with every instance back")
