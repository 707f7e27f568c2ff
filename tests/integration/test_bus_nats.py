"""The event bus: `serve user` with NATS_URL publishes its outbox to NATS JetStream (stream
MICROSHOP_USER, subjects user.>) through a real nats-server this module starts (free ports, a
temporary store, killed at the end). The stream is watched on the server's monitoring endpoint
(/jsz). Skipped when nats-server is not installed (scripts/bootstrap.sh test installs it)."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile

import pytest
import requests

from conftest import BINARY, SLOW, clean_env, poll

STREAM = "MICROSHOP_USER"


def _server_binary():
    return shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if os.access(p, os.X_OK)),
        None)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsServer:
    """nats-server -js on free ports; `stream(name)` reads a stream's state from /jsz."""

    def __init__(self, binary):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="ms-nats-")
        self.port, self.mon_port = _free_port(), _free_port()
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
    nats.start()
    poll(lambda: nats.messages(STREAM) == 1, 30 * SLOW, 0.1, what="the event in the stream")
    poll(lambda: _unpublished(s.db) == 0, 20 * SLOW, 0.1, what="the outbox row marked")


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
