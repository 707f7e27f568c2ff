"""Operations: /health, /ready, /metrics, logs, configuration errors, graceful drain, pool
exhaustion, kill -9 durability and the `microshop run` supervisor."""
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

import pytest
import requests

from conftest import (BACKEND, BINARY, SLOW, RawConn, admin, assert_problem, clean_env, ident,
                      new_email, poll, raw_request, refuses_connections)

METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# ---- health, readiness, metrics ----

def test_health_and_ready(server):
    r = server.get("/health")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.json() == {"status": "healthy", "service": "user"}
    r = server.get("/ready")
    assert r.status_code == 200
    doc = r.json()
    assert doc["status"] == "ready" and doc["service"] == "user"


def requests_total(server, method, endpoint, status):
    return server.metric("requests_total", service="user", method=method, endpoint=endpoint,
                         status=str(status)) or 0


def test_requests_total_counts_by_route_template(server):
    user = server.create_user()
    endpoint = "/api/v1/users/{id}"
    before = requests_total(server, "GET", endpoint, 200)
    missing = requests_total(server, "GET", endpoint, 404)
    for _ in range(2):
        assert server.get(f"/api/v1/users/{user['id']}", user=user["id"]).status_code == 200
    ghost = str(uuid.uuid4())
    assert server.get(f"/api/v1/users/{ghost}", headers=admin()).status_code == 404
    assert server.get(f"/unknown/{ghost}").status_code == 404
    assert requests_total(server, "GET", endpoint, 200) == before + 2
    assert requests_total(server, "GET", endpoint, 404) == missing + 1
    text = server.metrics()
    assert user["id"] not in text and ghost not in text and "/unknown" not in text
    assert requests_total(server, "POST", "/api/v1/users", 201) >= 1


def test_metrics_exposition_is_valid(server):
    server.create_user()
    for wire in (b"HELLO\r\n\r\n", b"BREW /pot HTTP/1.1\r\nHost: t\r\n\r\n",
                 b"GET /\"quote\\ HTTP/1.1\r\nHost: t\r\n\r\n",
                 raw_request("GET", "/health", {"X-Big": "a" * 20000})):
        with RawConn(server) as c:  # refused requests must not break the exposition
            c.send(wire)
            assert c.response().status_code >= 400
    r = server.get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == METRICS_TYPE
    text = r.text
    assert text.endswith("\n")
    for family in ("requests_total", "request_duration_seconds", "active_connections",
                   "process_resident_memory_bytes", "process_cpu_seconds_total",
                   "process_open_fds", "process_start_time_seconds", "db_pool_size",
                   "db_pool_connections", "db_pool_waiting", "db_pool_timeouts_total"):
        assert re.search(rf"^# TYPE {family} ", text, re.M), f"no family {family}"
    assert server.metric("process_resident_memory_bytes") > 1e6
    assert server.metric("active_connections", service="user") >= 1
    assert 0 < time.time() - server.metric("process_start_time_seconds") < 3600

    labels = 'service="user",method="POST",endpoint="/api/v1/users"'
    buckets = re.findall(rf'^request_duration_seconds_bucket\{{{labels},le="([^"]+)"\}} (\S+)$',
                         text, re.M)
    assert buckets and buckets[-1][0] == "+Inf", buckets
    bounds = [float(b) for b, _ in buckets]
    counts = [float(c) for _, c in buckets]
    assert bounds == sorted(bounds) and counts == sorted(counts)
    count = server.metric("request_duration_seconds_count", service="user", method="POST",
                          endpoint="/api/v1/users")
    assert counts[-1] == count >= 1
    assert server.metric("request_duration_seconds_sum", service="user", method="POST",
                         endpoint="/api/v1/users") > 0

    check = subprocess.run(["promtool", "check", "metrics"], input=r.content,
                           capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


def test_logs_are_json_lines_without_secrets(start_server):
    s = start_server("--access-log")
    secret = "Sup3r-secret-passphrase"
    r = s.request("POST", "/api/v1/users",
                  json={"email": new_email(), "name": "Log", "password": secret})
    assert r.status_code == 201
    uid = r.json()["id"]
    assert s.get(f"/api/v1/users/{uid}", user=uid).status_code == 200
    text = s.log_text()
    assert secret not in text and "$argon2" not in text
    docs = [json.loads(line) for line in text.splitlines() if line.strip()]
    for d in docs:
        assert {"ts", "level", "service", "msg"} <= set(d) and d["service"] == "user", d
    access = [d for d in docs if d["msg"] == "request"]
    assert any(d.get("path") == "/api/v1/users" and str(d.get("status")) == "201"
               for d in access), access


# ---- configuration ----

CONFIG_ERRORS = [
    ("threads-zero", ["--threads", "0"], {}, "--threads"),
    ("threads-word", ["--threads", "many"], {}, "--threads"),
    ("listen-no-port", ["--listen", "nope"], {}, "--listen"),
    ("listen-port-range", ["--listen", "127.0.0.1:70000"], {}, "--listen"),
    ("listen-hostname", ["--listen", "example.com:80"], {}, "--listen"),
    ("log-level", ["--log-level", "loud"], {}, "--log-level"),
    ("unknown-flag", ["--bogus", "1"], {}, "--bogus"),
    ("missing-value", ["--request-timeout-ms"], {}, "--request-timeout-ms"),
    ("pool-size-zero", ["--db-pool-size", "0"], {}, "--db-pool-size"),
    ("negative-body-limit", ["--max-body-bytes", "-1"], {}, "--max-body-bytes"),
    ("bool-flag", ["--access-log=maybe"], {}, "--access-log"),
    ("stray-argument", ["oops"], {}, "oops"),
    ("mysql-url", [], {"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
    ("env-threads", [], {"MICROSHOP_THREADS": "0"}, "MICROSHOP_THREADS"),
    ("env-pool-timeout", [], {"MICROSHOP_DB_POOL_TIMEOUT_MS": "soon"},
     "MICROSHOP_DB_POOL_TIMEOUT_MS"),
]


def run_cli(args, env=None, timeout=None):
    return subprocess.run([BINARY, *args], capture_output=True, text=True,
                          env=clean_env(env), timeout=timeout or 15 * SLOW)


def assert_one_line_error(p, mention):
    assert p.returncode == 2, f"status {p.returncode}, stderr: {p.stderr}"
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, p.stderr
    assert mention in lines[0], lines[0]
    assert p.stdout == ""


@pytest.mark.parametrize("args,env,mention", [c[1:] for c in CONFIG_ERRORS],
                         ids=[c[0] for c in CONFIG_ERRORS])
def test_bad_configuration_exits_2_naming_the_setting(args, env, mention):
    data = tempfile.mkdtemp(prefix="ms-it-")
    try:
        p = run_cli(["serve", "user", "--listen", "127.0.0.1:0", "--data", data, *args], env)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    assert_one_line_error(p, mention)


def test_unwritable_data_dir_exits_2():
    with tempfile.NamedTemporaryFile() as f:  # a file where a directory should be
        p = run_cli(["serve", "user", "--listen", "127.0.0.1:0", "--data", f.name])
    assert_one_line_error(p, f.name)


@pytest.mark.parametrize("args,mention", [(["serve", "nosuch"], "nosuch"),
                                          (["serve"], "TARGET"),
                                          (["run", "--port-base", "0"], "--port-base")])
def test_bad_commands_exit_2(args, mention):
    p = run_cli(args)
    assert p.returncode == 2, p.stderr
    assert mention in p.stderr


def test_port_in_use_fails_to_start():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = "127.0.0.1:%d" % taken.getsockname()[1]
        data = tempfile.mkdtemp(prefix="ms-it-")
        try:
            p = run_cli(["serve", "user", "--listen", addr, "--data", data])
        finally:
            shutil.rmtree(data, ignore_errors=True)
    assert p.returncode != 0 and addr in p.stderr, p.stderr


def test_flags_win_over_environment(start_server):
    s = start_server("--threads", "1", env={"MICROSHOP_THREADS": "3",
                                            "MICROSHOP_LISTEN": "not-an-address"})
    listening = [json.loads(line) for line in s.log_text().splitlines()
                 if '"msg":"listening"' in line]
    assert listening[0]["threads"] == 1
    s2 = start_server(env={"MICROSHOP_THREADS": "3"})
    assert '"threads":3' in s2.log_text()


def test_help_and_version():
    p = run_cli(["version"])
    assert p.returncode == 0 and re.search(r"\d+\.\d+\.\d+", p.stdout), p
    p = run_cli(["help", "user"])
    assert p.returncode == 0, p.stderr
    for flag in ("--listen", "--data", "--threads", "--db-pool-size", "--db-pool-overflow",
                 "--db-pool-timeout-ms", "--db-busy-timeout-ms", "--request-timeout-ms",
                 "--headers-timeout-ms", "--idle-timeout-ms", "--body-timeout-ms",
                 "--drain-timeout-ms", "--max-body-bytes", "--max-header-bytes",
                 "--max-headers", "--log-level", "--access-log", "DATABASE_URL"):
        assert flag in p.stdout, flag


# ---- graceful drain ----

def test_sigterm_finishes_the_request_in_flight_then_exits_0(start_server):
    s = start_server("--db-busy-timeout-ms", "30000", "--request-timeout-ms", "30000")
    email = new_email()
    body = json.dumps({"email": email, "name": "Drain", "password": "drain password"})
    with RawConn(s) as late, RawConn(s) as inflight:
        late.send(b"GET /ready HTTP/1.1\r\nHost: t\r\n")  # its head completes after SIGTERM
        with s.db.write_lock("users"):
            inflight.send(raw_request("POST", "/api/v1/users",
                                      {"Content-Type": "application/json"}, body=body))
            poll(lambda: s.metric("db_pool_connections", service="user", state="in_use"),
                 10 * SLOW, what="the POST to hold a database connection")
            s.signal(signal.SIGTERM)
            poll(lambda: refuses_connections(s.port), 5 * SLOW,
                 what="new connections to be refused")
            assert s.proc.poll() is None, "exited with a request in flight"
            late.send(b"\r\n")
            r = late.response()
            assert_problem(r, 503)
            assert r.headers["Connection"].lower() == "close"
            assert not select.select([inflight.sock], [], [], 0)[0]
        r = inflight.response()
        assert r.status_code == 201, r.text
        assert r.json()["email"] == email
        assert r.headers["Connection"].lower() == "close"
    assert s.wait(15 * SLOW) == 0, s.log_tail()
    assert refuses_connections(s.port)
    assert s.db.count("users", "WHERE email = ?", [email]) == 1


def test_sigint_drains_too(start_server):
    s = start_server()
    user = s.create_user()
    s.signal(signal.SIGINT)
    assert s.wait(15 * SLOW) == 0, s.log_tail()
    assert refuses_connections(s.port)
    assert s.db.count("users", "WHERE id = ?", [user["id"]]) == 1


def test_idle_keep_alive_connections_do_not_hold_up_shutdown(start_server):
    s = start_server()
    with RawConn(s) as idle:
        idle.send(raw_request("GET", "/health"))
        assert idle.response().status_code == 200
        t0 = time.monotonic()
        s.signal(signal.SIGTERM)
        assert idle.is_closed(), "the idle connection was not closed on SIGTERM"
    assert s.wait(15 * SLOW) == 0, s.log_tail()
    assert time.monotonic() - t0 < 3 * SLOW  # the drain limit is 10 s


def test_drain_timeout_bounds_shutdown_with_a_stuck_request(start_server):
    s = start_server("--drain-timeout-ms", "500", "--db-busy-timeout-ms", "8000",
                     "--request-timeout-ms", "8000")
    user = s.create_user()
    with s.db.write_lock("user_preferences"), RawConn(s) as stuck:
        stuck.send(raw_request("PUT", f"/api/v1/users/{user['id']}/preferences",
                               {"Content-Type": "application/json", **ident(user["id"])},
                               body="{}"))
        poll(lambda: s.metric("db_pool_connections", service="user", state="in_use"),
             5 * SLOW, what="the PUT to hold a database connection")
        t0 = time.monotonic()
        s.signal(signal.SIGTERM)
        try:
            s.proc.wait(0.5 + 2 * SLOW)
        except subprocess.TimeoutExpired:
            pass
        elapsed = time.monotonic() - t0
        exited_in_time = s.proc.returncode is not None
    assert s.wait(15 * SLOW) == 0, s.log_tail()
    assert exited_in_time, f"running {elapsed:.1f} s after SIGTERM, --drain-timeout-ms 500"


# ---- deadlines ----

def test_request_deadline_answers_504_in_time(start_server):
    # the user is made by a server without the short deadline: a password hash on a loaded
    # machine can take longer than 500 ms
    first = start_server()
    user = first.create_user()
    s = start_server("--request-timeout-ms", "500", "--db-busy-timeout-ms", "5000", db=first.db)
    with s.db.write_lock("user_preferences"):
        t0 = time.monotonic()
        r = s.request("PUT", f"/api/v1/users/{user['id']}/preferences", user=user["id"],
                      json={"language": "de"})
        elapsed = time.monotonic() - t0
    assert_problem(r, 504)
    assert elapsed < 0.5 + 1.0 * SLOW, f"answered after {elapsed:.2f} s"
    assert s.get("/health").status_code == 200


# ---- pool exhaustion ----

def test_pool_exhaustion_answers_503_quickly_and_recovers(start_server):
    s = start_server("--threads", "1", "--db-pool-size", "1", "--db-pool-overflow", "0",
                     "--db-pool-timeout-ms", "300", "--db-busy-timeout-ms", "4000")
    first, second = s.create_user(), s.create_user()

    def put_prefs(user):
        return s.request("PUT", f"/api/v1/users/{user['id']}/preferences", user=user["id"],
                         json={"currency": "EUR"})

    blocked = {}
    worker = threading.Thread(target=lambda: blocked.update(r=put_prefs(first)))
    with s.db.write_lock("user_preferences"):
        worker.start()
        poll(lambda: s.metric("db_pool_connections", service="user", state="in_use") == 1,
             5 * SLOW, what="the first PUT to hold the only connection")
        t0 = time.monotonic()
        r = put_prefs(second)  # another write needs the pool
        elapsed = time.monotonic() - t0
        assert_problem(r, 503)
        assert elapsed < 2.0, f"503 took {elapsed:.2f} s"
        # a read by id never queues for the pool: inline on SQLite, pipelined on PostgreSQL
        r = s.get(f"/api/v1/users/{second['id']}", user=second["id"])
        assert r.status_code == 200 and r.json()["id"] == second["id"], r.text
        assert worker.is_alive(), f"the first request did not wait for the lock: {blocked}"
    worker.join(10 * SLOW)
    assert blocked["r"].status_code == 200, blocked["r"].text
    assert blocked["r"].json()["currency"] == "EUR"
    assert s.metric("db_pool_timeouts_total", service="user") >= 1
    assert s.get("/health").status_code == 200 and s.get("/ready").status_code == 200
    assert put_prefs(second).status_code == 200


# ---- PostgreSQL connection loss ----

pg_only = pytest.mark.skipif(BACKEND != "postgres", reason="PostgreSQL sessions only")


def pg_admin(sql):
    import psycopg2
    conn = psycopg2.connect(os.environ["MS_TEST_PG_URL"])
    conn.autocommit = True
    try:
        conn.cursor().execute(sql)
    finally:
        conn.close()


def terminate_sessions(db):
    """Ends the server's PostgreSQL sessions (not the test's own reading session)."""
    pg_admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
             f"WHERE datname = '{db.name}' AND application_name <> 'ms-it'")


@pg_only
def test_pre_ping_replaces_a_connection_the_database_dropped(start_server):
    s = start_server("--threads", "1")
    user = s.create_user()
    assert s.get(f"/api/v1/users/{user['id']}", user=user["id"]).status_code == 200
    terminate_sessions(s.db)
    time.sleep(1.1)  # pre-ping checks connections idle for more than a second
    r = s.get(f"/api/v1/users/{user['id']}", user=user["id"])
    assert r.status_code == 200, r.text
    assert s.metric("db_pool_reconnects_total", service="user") >= 1


@pg_only
def test_ready_follows_the_database(start_server):
    s = start_server("--threads", "1")
    user = s.create_user()
    pg_admin(f"ALTER DATABASE {s.db.name} ALLOW_CONNECTIONS false")
    try:
        terminate_sessions(s.db)
        time.sleep(1.1)
        r = s.get("/ready")
        assert_problem(r, 503)
        assert_problem(s.get(f"/api/v1/users/{user['id']}", user=user["id"]), 503)
        assert s.get("/health").status_code == 200  # liveness does not depend on the database
    finally:
        pg_admin(f"ALTER DATABASE {s.db.name} ALLOW_CONNECTIONS true")
    poll(lambda: s.get("/ready").status_code == 200, 5 * SLOW, what="/ready = 200")
    assert s.get(f"/api/v1/users/{user['id']}", user=user["id"]).status_code == 200


# ---- durability ----

def test_kill_9_keeps_every_acknowledged_user(start_server):
    s = start_server()
    db = s.db
    acked, lock, done = [], threading.Lock(), threading.Event()

    def register():
        while not done.is_set():
            try:
                r = s.request("POST", "/api/v1/users", json={
                    "email": new_email(), "name": "Durable", "password": "durable password"})
            except requests.RequestException:
                return
            if r.status_code != 201:
                return
            with lock:
                acked.append(r.json()["id"])
                if len(acked) == 12 and not done.is_set():
                    done.set()
                    s.kill()  # right after a 201, with other registrations in flight

    threads = [threading.Thread(target=register) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60 * SLOW)
    assert done.is_set() and len(acked) >= 12, f"only {len(acked)} users were acknowledged"

    s2 = start_server(db=db)
    for uid in acked:
        assert s2.get(f"/api/v1/users/{uid}", headers=admin()).status_code == 200, uid
        assert db.count("outbox", "WHERE aggregate_id = ? AND type = 'user.created'",
                        [uid]) == 1, uid
    # all or nothing for the requests cut off too: no user without its event or vice versa
    users = {r[0] for r in db.query("SELECT id FROM users")}
    events = [r[0] for r in db.query("SELECT aggregate_id FROM outbox WHERE type = 'user.created'")]
    assert sorted(events) == sorted(users)


# ---- microshop run ----

def free_port_range(n):
    """A base port B with B..B+n-1 all free right now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65000:
            continue
        try:
            socks = []
            for p in range(base, base + n):
                k = socket.socket()
                socks.append(k)
                # as the servers bind: a port whose old connections wait in TIME_WAIT is free
                k.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                k.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for k in socks:
                k.close()
    raise AssertionError("no free port range")


def children_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:  # gone (ENOENT or ESRCH)
        return []


def child_serving(pid, target):
    """The supervisor's child that runs `serve TARGET`, or None."""
    for kid in children_of(pid):
        try:
            with open(f"/proc/{kid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:  # it exited meanwhile (ENOENT or ESRCH)
            continue
        if b"serve" in args and target.encode() in args:
            return kid
    return None


def test_run_supervises_the_user_service():
    data = tempfile.mkdtemp(prefix="ms-it-run-")
    base = free_port_range(6)
    with socket.socket() as s:  # the gateway's admin listener
        s.bind(("127.0.0.1", 0))
        admin_port = s.getsockname()[1]
    log = open(os.path.join(data, "run.log"), "wb")
    sup = subprocess.Popen([BINARY, "run", "--data", data, "--port-base", str(base),
                            "--admin", f"127.0.0.1:{admin_port}"],
                           stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                           env=clean_env())
    try:
        banner = b""
        deadline = time.monotonic() + 20 * SLOW
        while b"Ctrl-C" not in banner and time.monotonic() < deadline:
            if select.select([sup.stdout], [], [], 0.1)[0]:
                chunk = os.read(sup.stdout.fileno(), 65536)
                if not chunk:
                    break
                banner += chunk
        text = banner.decode()
        url = f"http://127.0.0.1:{base + 1}"
        api = f"http://127.0.0.1:{base}"
        assert "Ctrl-C" in text and url in text and api in text, text

        # the example lines must work as printed: run them and read the user they print
        example = text.split("Try a checkout", 1)[1].split("\n", 1)[1].split("\n\n")[0]
        assert f"{api}/api/v1/auth/token" in example and "Bearer $TOKEN" in example, example
        p = subprocess.run(["bash", "-c", example], capture_output=True, text=True,
                           timeout=20 * SLOW)
        assert p.returncode == 0, p.stderr
        # the examples print JSON documents back to back (curl adds no newline)
        outputs, text_out, at = [], p.stdout.strip(), 0
        while at < len(text_out):
            doc, at = json.JSONDecoder().raw_decode(text_out, at)
            outputs.append(doc)
            while at < len(text_out) and text_out[at].isspace():
                at += 1
        # the demo catalogue the supervisor added through the inventory's API
        listed = next(o for o in outputs if "items" in o and o["items"] and "sku" in o["items"][0])
        assert len(listed["items"]) == 3 and all(p["available"] >= 0 for p in listed["items"])
        # the checkout it pasted: two demo T-shirts, paid, read back by their buyer
        order = next(o for o in outputs if "user_id" in o)
        assert order["status"] == "confirmed", order
        assert [i["quantity"] for i in order["items"]] == [2], order
        assert order["total_cents"] == order["subtotal_cents"] + order["shipping_cents"], order
        uid = order["user_id"]
        # auth is on: the banner's admin token reads the user through the gateway, and an
        # identity the gateway did not sign is refused by the service itself
        admin_token = re.search(r"ADMIN=(\S+)", text).group(1)
        by_admin = {"Authorization": f"Bearer {admin_token}"}
        r = requests.get(f"{api}/api/v1/users/{uid}", headers=by_admin, timeout=10 * SLOW)
        assert r.status_code == 200 and r.json()["email"] == "demo@microshop.example", r.text
        r = requests.get(f"{url}/api/v1/users/{uid}", headers=admin(), timeout=10 * SLOW)
        assert r.status_code == 401, r.text
        customer_token = re.search(r"CUSTOMER=(\S+)", text).group(1)
        r = requests.get(f"{api}/api/v1/users/{uid}", timeout=10 * SLOW,
                         headers={"Authorization": f"Bearer {customer_token}"})
        assert r.status_code == 200 and r.json()["id"] == uid, r.text

        child = child_serving(sup.pid, "user")
        assert child, children_of(sup.pid)
        os.kill(child, signal.SIGKILL)

        def restarted():
            kid = child_serving(sup.pid, "user")
            if not kid or kid == child:
                return False
            try:
                return requests.get(url + "/health", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False
        poll(restarted, 15 * SLOW, what="the supervisor to restart the user service")
        r = requests.get(f"{api}/api/v1/users/{uid}", headers=by_admin, timeout=10 * SLOW)
        assert r.status_code == 200, r.text

        kids = children_of(sup.pid)
        for target in ("gateway", "user", "order", "inventory", "payment"):
            assert child_serving(sup.pid, target), (target, kids)
        assert len(kids) == 5, kids
        sup.send_signal(signal.SIGINT)
        assert sup.wait(30 * SLOW) == 0
        for kid in kids:
            assert not os.path.exists(f"/proc/{kid}"), "a child outlived the supervisor"
        assert refuses_connections(base + 1)
    finally:
        if sup.poll() is None:
            for pid in children_of(sup.pid):
                os.kill(pid, signal.SIGKILL)
            sup.kill()
            sup.wait()
        sup.stdout.close()
        log.close()
        with open(os.path.join(data, "run.log"), "rb") as f:
            text = f.read().decode("utf-8", "replace")
        shutil.rmtree(data, ignore_errors=True)
    # anywhere in the log: the services' own lines at shutdown may come after the supervisor's
    assert "exited" in text or "signal 9" in text, text[-3000:]
