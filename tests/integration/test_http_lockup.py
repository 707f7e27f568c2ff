"""A server that cannot be locked up: the connection cap and EMFILE on accept (under a low
open-file limit), chunk lines held to RFC 9112 7.1.1, and the whole-body deadline."""
import contextlib
import json
import os
import resource
import socket
import struct
import subprocess
import time

import pytest

from conftest import (BINARY, SLOW, RawConn, assert_problem, clean_env, new_email, poll,
                      raw_request, unchanged)

LIMITS = [256, 1024]  # the server's open-file limits in the flood tests
ROUNDS = 10


def flood_size(nofile):
    """Connections per round: more than the server may open."""
    return nofile + 100


@pytest.fixture(scope="module", autouse=True)
def own_nofile_limit():
    """This process holds a flood of sockets at once: its own soft limit goes up to the hard
    one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    most = flood_size(max(LIMITS))
    if hard != resource.RLIM_INFINITY and hard < most + 100:
        pytest.skip(f"the hard open-file limit ({hard}) is too low for {most} sockets")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def children_nofile(limit):
    """Servers started inside inherit an open-file soft limit of `limit` (ours is restored)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def nofile_of(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no 'Max open files' line")


def cpu_seconds(pid):
    """User plus system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def health_answers(s):
    """True when GET /health is answered 200 on a new connection."""
    try:
        with RawConn(s, timeout=1 * SLOW) as c:
            c.send(raw_request("GET", "/health"))
            return c.response().status_code == 200
    except (OSError, EOFError):
        return False


def flood_rounds(s, flood):
    """ROUNDS times: `flood` connections opened at once, held a moment, closed. After each round
    /health answers and the server sits idle (a server spinning on accept burns a core per
    loop thread). Returns the server's open descriptors after the first and the last round."""
    fds = []
    for _ in range(ROUNDS):
        socks = []
        try:
            for _ in range(flood):
                k = socket.create_connection(("127.0.0.1", s.port), timeout=10 * SLOW)
                # closed with a reset: thousands of client ports left in TIME_WAIT would make
                # other tests' port choices fail for a minute
                k.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                socks.append(k)
            time.sleep(0.3)  # pacing: the server accepts, sheds or pauses meanwhile
        finally:
            for k in socks:
                k.close()
        poll(lambda: health_answers(s), 5 * SLOW, interval=0.05, what="GET /health after a flood")
        before = cpu_seconds(s.proc.pid)
        time.sleep(0.5)
        used = cpu_seconds(s.proc.pid) - before
        assert used < 0.2, f"the server used {used:.2f} s of CPU in 0.5 s idle: spinning"
        assert s.proc.poll() is None, s.log_tail()
        fds.append(open_fds(s.proc.pid))
    return fds[0], fds[-1]


def rejected(s, reason):
    return s.metric("http_connections_rejected_total", service="user", reason=reason)


@pytest.mark.parametrize("nofile", LIMITS)
def test_connections_over_the_cap_are_shed_and_the_server_recovers(start_server, nofile):
    with children_nofile(nofile):
        s = start_server("--threads", "2")
    assert nofile_of(s.proc.pid) == nofile
    cap = s.metric("http_connections_max", service="user")
    # (limit - 64 - 4 per pooled connection) * 0.9, split over two loops: below the limit
    assert 8 <= cap < nofile - 64, cap
    assert rejected(s, "limit") == 0
    first, last = flood_rounds(s, flood_size(nofile))
    assert last <= first + 2, f"descriptors leak across rounds: {first} -> {last}"
    assert rejected(s, "limit") >= ROUNDS * (flood_size(nofile) - cap), s.metrics()
    assert rejected(s, "emfile") == 0
    # the service itself still works
    assert s.create_user()["id"]


@pytest.mark.parametrize("nofile", LIMITS)
def test_emfile_on_accept_pauses_instead_of_spinning(start_server, nofile):
    # a cap above what the limit allows: the process runs out of descriptors first
    with children_nofile(nofile):
        s = start_server("--threads", "2", "--max-connections", "100000")
    assert s.metric("http_connections_max", service="user") >= 100000
    first, last = flood_rounds(s, flood_size(nofile))
    assert last <= first + 2, f"descriptors leak across rounds: {first} -> {last}"
    assert rejected(s, "emfile") >= 1, s.metrics()
    assert '"out of file descriptors: accepting paused"' in s.log_text()
    assert s.create_user()["id"]


def test_max_connections_flag_and_env(start_server):
    s = start_server("--threads", "2", "--max-connections", "10")
    assert s.metric("http_connections_max", service="user") == 10
    s2 = start_server("--threads", "2", env={"MICROSHOP_MAX_CONNECTIONS": "7"})
    assert s2.metric("http_connections_max", service="user") == 8  # 4 per loop thread


def test_new_flags_are_listed_and_checked():
    help_ = subprocess.run([BINARY, "help", "user"], capture_output=True, text=True,
                           env=clean_env(), timeout=15 * SLOW)
    assert help_.returncode == 0, help_.stderr
    for flag in ("--max-connections", "MICROSHOP_MAX_CONNECTIONS", "--body-deadline-ms",
                 "MICROSHOP_BODY_DEADLINE_MS", "--body-min-rate", "MICROSHOP_BODY_MIN_RATE"):
        assert flag in help_.stdout, flag
    for flag, bad in (("--max-connections", "-1"), ("--body-deadline-ms", "0"),
                      ("--body-min-rate", "fast")):
        p = subprocess.run([BINARY, "serve", "user", flag, bad], capture_output=True, text=True,
                           env=clean_env(), timeout=15 * SLOW)
        assert p.returncode == 2, (flag, p.returncode, p.stderr)
        assert flag in p.stderr and bad in p.stderr, p.stderr


# ---- chunk lines (RFC 9112 7.1.1) ----

def user_json():
    return json.dumps({"email": new_email(), "name": "Hidden", "password": "hidden password"})


def chunked_post(body):
    head = raw_request("POST", "/api/v1/users", {"Content-Type": "application/json",
                                                 "Transfer-Encoding": "chunked"})
    return head + body


def assert_only_a_400_then_close(c):
    r = c.response()
    assert_problem(r, 400)
    assert r.headers.get("Connection", "").lower() == "close", dict(r.headers)
    assert c.is_closed(), "another answer came: a hidden request ran"


def test_bare_lf_in_a_chunk_extension_runs_no_hidden_request(server):
    """Behind a front end that ends chunk lines at LF, "3;" is a chunk line and the rest is
    still body to it; http-parser took "\\nxxx" into the extension, ended the body at "0", and
    ran the POST hidden after it as a request of its own."""
    hidden = raw_request("POST", "/api/v1/users", {"Content-Type": "application/json"},
                         body=user_json())
    with unchanged(server.db), RawConn(server) as c:
        c.send(chunked_post(b"3;\nxxx\r\nabc\r\n0\r\n\r\n" + hidden))
        assert_only_a_400_then_close(c)


@pytest.mark.parametrize("body", [
    b"5;a\n{}\n0\n\n",  # was read as one endless extension: answered only at the body timeout
    b"3\nabc\r\n0\r\n\r\n",  # bare LF right after the size
    b"3;a\x01\r\nabc\r\n0\r\n\r\n",  # a control byte
    b"3;a\rb\r\nabc\r\n0\r\n\r\n",  # a bare CR
    b'3;a="abc\r\nabc\r\n0\r\n\r\n',  # an unterminated quoted string
    b"3 \r\nabc\r\n0\r\n\r\n",  # white space without an extension
    b"3;a=" + b"v" * 5000 + b"\r\nabc\r\n0\r\n\r\n",  # over the 4 KiB chunk-line cap
    b"0\r\nX-T: 1\n\r\n",  # a bare LF in the trailer
], ids=["bare-lf-extension-hang", "bare-lf-after-size", "control-byte", "bare-cr",
        "unterminated-quote", "trailing-space", "extension-too-long", "bare-lf-trailer"])
def test_malformed_chunk_lines_are_400_and_close(server, body):
    # RawConn's receive timeout (10 s) is well under the 30 s body timeout: a wait fails here
    with unchanged(server.db), RawConn(server) as c:
        c.send(chunked_post(body))
        assert_only_a_400_then_close(c)


def test_valid_chunk_extensions_and_trailers_are_served(server):
    data = user_json().encode()
    body = (b"%x ; a = b ;flag\r\n" % 10 + data[:10] + b"\r\n" +
            b'%x;q="x \\" y"\r\n' % (len(data) - 10) + data[10:] + b"\r\n" +
            b"0;last\r\nX-Trailer: done\r\n\r\n")
    with RawConn(server) as c:
        c.send(chunked_post(body) + raw_request("GET", "/health"))
        r = c.response()
        assert r.status_code == 201, r.text
        assert r.json()["email"] == json.loads(data)["email"]
        assert c.response().json()["status"] == "healthy"  # framing ended where it should


# ---- slow bodies ----

def test_trickled_body_gets_408_at_the_whole_body_deadline(start_server):
    deadline = 2.0
    s = start_server("--body-deadline-ms", str(int(deadline * 1000)))
    with unchanged(s.db), RawConn(s) as c:
        c.send(raw_request("POST", "/api/v1/users", {"Content-Type": "application/json",
                                                      "Content-Length": "200"}))
        t0 = time.monotonic()
        c.sock.settimeout(0.5)
        answered = b""
        for b in user_json().encode()[:100]:  # a byte every 0.5 s, far inside --body-timeout-ms
            try:
                c.send(bytes([b]))
                answered = c.sock.recv(65536)
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            break
        elapsed = time.monotonic() - t0
        c.sock.settimeout(c.timeout)
        c.buf = answered
        r = c.response()
        assert_problem(r, 408)
        assert "did not arrive in time" in r.json()["detail"], r.json()
        assert c.is_closed()
    assert deadline - 0.2 <= elapsed < deadline + 3 * SLOW, elapsed
