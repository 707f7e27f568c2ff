"""The order service decides a command only on durable events. On SQLite a batch of events is
committed to the WAL, and visible to readers, a moment before the es-sync thread's fdatasync
makes it durable (eventstore/writer.c, "durability"); a command loaded in that moment must
wait for the fsync (commands.c, loaded()), because an answer such as a 409 given on events a
power cut takes back would be a lie.

The moment is stretched by fault injection, without a test hook in the server: ptrace stops
the es-sync thread alone (PTRACE_SEIZE + PTRACE_INTERRUPT is no group stop, the other threads
run on) and PTRACE_DETACH lets it go."""
import contextlib
import ctypes
import errno
import glob
import os
import threading
import time

import pytest

from conftest import BACKEND, SLOW, assert_problem, poll
from shop import start_shop  # noqa: F401
from test_orders import committed, create, etag, good_body, patch_status, post_order, uid

PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT = 17, 0x4206, 0x4207
WALL = 0x40000000  # waitpid's __WALL: a thread that is not the leader

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.restype = ctypes.c_long
_libc.ptrace.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p)


def ptrace(request, tid):
    if _libc.ptrace(request, tid, None, None) == -1:
        e = ctypes.get_errno()
        raise OSError(e, f"ptrace({request:#x}, {tid}): {os.strerror(e)}")


def thread_of(pid, name):
    """The id of the thread of `pid` named `name` (its comm)."""
    for task in glob.glob(f"/proc/{pid}/task/*"):
        with open(os.path.join(task, "comm")) as f:
            if f.read().strip() == name:
                return int(os.path.basename(task))
    raise AssertionError(f"no thread named {name!r} in process {pid}")


def thread_activity(pid, tid):
    """The thread's state letter and its context switches so far."""
    with open(f"/proc/{pid}/task/{tid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return (fields["State"].split()[0], int(fields["voluntary_ctxt_switches"]),
            int(fields["nonvoluntary_ctxt_switches"]))


def is_idle(pid, tid, quiet=0.1):
    """Asleep and not woken for `quiet` seconds: waiting for work, not in its midst."""
    before = thread_activity(pid, tid)
    time.sleep(quiet)
    return before[0] == "S" and thread_activity(pid, tid) == before


# x86_64 system calls a thread waits in: poll, select, nanosleep, futex, clock_nanosleep,
# epoll_wait, pselect6, ppoll, epoll_pwait, epoll_pwait2
WAITING_SYSCALLS = {7, 23, 35, 202, 230, 232, 270, 271, 281, 441}


def stopped_in_a_wait(pid, tid):
    """For a thread in a ptrace stop: was it stopped inside a waiting system call (rather than
    running, where it may hold a lock)? /proc reports the interrupted call, or -1 outside one."""
    with open(f"/proc/{pid}/task/{tid}/syscall") as f:
        nr = f.read().split()[0]
    return nr.lstrip("-").isdigit() and int(nr) in WAITING_SYSCALLS


def detach(tid):
    try:
        ptrace(PTRACE_DETACH, tid)
    except OSError as e:
        if e.errno != errno.ESRCH:  # gone with the server: nothing to let go
            raise


@contextlib.contextmanager
def stalled(s, name, quiet=0.1):
    """Stops the server's thread `name` and only it, once it has slept `quiet` seconds; lets it
    go at the end, whatever happens (a stalled syncer would hang the server's shutdown). Skips
    the test where ptrace is not permitted."""
    pid = s.proc.pid
    tid = thread_of(pid, name)
    deadline = time.monotonic() + 10 * SLOW
    while True:
        # stopped while it waits for work, it holds no lock and leaves no work half done (the
        # syncer answers a batch before it takes the writer's lock to count it synced)
        poll(lambda: is_idle(pid, tid, quiet), 5 * SLOW, what=f"{name} to wait for work")
        try:
            ptrace(PTRACE_SEIZE, tid)
        except OSError as e:
            if e.errno in (errno.EPERM, errno.EACCES, errno.ENOSYS):
                pytest.skip(f"ptrace is not permitted here, cannot stall {name}: {e.strerror}")
            raise
        try:
            ptrace(PTRACE_INTERRUPT, tid)
            _, status = os.waitpid(tid, WALL)
            assert os.WIFSTOPPED(status), f"{name} did not stop: status {status:#x}"
            caught_waiting = stopped_in_a_wait(pid, tid)
        except BaseException:
            detach(tid)
            raise
        if caught_waiting:
            break
        # it woke between the check and the stop (a loaded machine widens that moment) and
        # may hold a lock the test's requests need: let it go and try again
        detach(tid)
        assert time.monotonic() < deadline, f"{name} was never stopped in a wait"
    try:
        yield
    finally:
        detach(tid)


@pytest.mark.skipif(BACKEND != "sqlite", reason="PostgreSQL's commit is durable once visible: "
                    "no es-sync thread")
def test_a_command_decides_only_on_durable_events(start_shop):
    deadline = 1.0 * SLOW
    s = start_shop(user=False, order_args=("--request-timeout-ms", str(int(deadline * 1000))))
    user = uid()
    durable, _ = create(s, user)
    body = good_body(s, (1, 500))
    before = committed(s)
    answer = {}
    post = threading.Thread(target=lambda: answer.update(r=post_order(s, user, body)))
    with stalled(s, "es-sync"):
        post.start()
        # the OrderCreated is committed to the WAL and readable, but not fdatasync'ed ...
        rows = poll(lambda: s.db.query("SELECT stream_id, position, type FROM events "
                                       "WHERE position > ? ORDER BY position", [before]),
                    5 * SLOW, what="the new order's event in the WAL")
        assert rows[0][2] == "OrderCreated" and len({r[0] for r in rows}) == 1, rows
        stream, position, _ = rows[0]
        oid = stream[len("order-"):]
        # ... so the POST is not answered: durable before 201
        post.join(0.5 * SLOW)
        assert post.is_alive(), f"POST answered while its event was not durable: {answer}"

        # the other threads run on: a command on a durable order is decided at once
        r = patch_status(s, durable["id"], "delivered", etag(durable))
        assert "confirmed" in assert_problem(r, 409)["detail"]

        # a refusal on the order that is not durable would be a lie: it waits for the
        # fsync until the request's deadline
        t0 = time.monotonic()
        r = patch_status(s, oid, "delivered", '"1"')
        elapsed = time.monotonic() - t0
        assert_problem(r, 504)
        assert 0.9 * deadline <= elapsed < deadline + 5 * SLOW, elapsed
        assert post.is_alive(), f"POST answered while its event was not durable: {answer}"

    post.join(10 * SLOW)
    assert not post.is_alive() and "r" in answer, "POST not answered after the fsync"
    r = answer["r"]
    # its deadline passed in the stall: the saga may still have been running at the answer
    assert r.status_code in (201, 202), r.text
    assert r.json()["id"] == oid and int(r.headers["X-Position"]) >= position
    doc = s.settled(user, oid)
    assert doc["status"] == "confirmed", doc
    r = patch_status(s, oid, "delivered", etag(doc))  # durable now: decided on at once
    assert "confirmed" in assert_problem(r, 409)["detail"]
    # the refused commands appended nothing
    assert s.db.count("events", "WHERE stream_id = ?", [stream]) == doc["version"]
    assert s.db.count("events") == durable["version"] + doc["version"]
