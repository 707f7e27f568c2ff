"""Fixtures and helpers for microshop's black-box integration tests.

Every test drives the real binary ($MS_BINARY) over real sockets against a real database:
SQLite under a temp data dir, or a fresh PostgreSQL database per server when
MS_TEST_BACKEND=postgres (MS_TEST_PG_URL names a superuser on db "postgres").
A server stopped at teardown must exit 0 after SIGTERM (the ASan build turns leaks into a
non-zero status), otherwise the test fails with the tail of the server's stderr.
"""
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid

import pytest
import requests
from requests.structures import CaseInsensitiveDict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.path.abspath(os.environ.get("MS_BINARY") or os.path.join(ROOT, "build", "microshop"))
BACKEND = os.environ.get("MS_TEST_BACKEND", "sqlite")
PG_URL = os.environ.get("MS_TEST_PG_URL", "")
TABLES = ("users", "user_profiles", "user_preferences", "outbox")
# Columns a request writes. The outbox relay marks rows published_at in the background, which
# is not a request changing the database.
OWN_COLUMNS = {"outbox": "seq, id, aggregate_type, aggregate_id, type, payload, created_at"}
ARGON2_PREFIX = "$argon2id$v=19$m=19456,t=2,p=1$"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

if BACKEND not in ("sqlite", "postgres"):
    raise RuntimeError(f"MS_TEST_BACKEND must be sqlite or postgres, not {BACKEND!r}")
if BACKEND == "postgres" and not PG_URL:
    raise RuntimeError("MS_TEST_BACKEND=postgres needs MS_TEST_PG_URL")


def _is_sanitized(path):
    try:
        with open(path, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


# Sanitizer builds run about 3x slower: every wait scales with this.
SLOW = 3 if _is_sanitized(BINARY) else 1


def poll(cond, timeout, interval=0.02, what="condition"):
    """Calls cond() until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def clean_env(extra=None):
    """The environment for a child: ours without microshop settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MICROSHOP_")
           and k not in ("DATABASE_URL", "READ_DATABASE_URL", "NATS_URL")}
    env.update(extra or {})
    return env


# ---- identity and payloads ----

# A well-formed id that no service ever issues (they issue v7 ids): the "unknown id" cases use
# it in parametrize lists, whose test ids must be the same in every pytest-xdist worker.
NEVER_ISSUED_ID = "5e1f0c3a-8d2b-4f6e-9a7c-0b3d5f7e9a1c"


def ident(user_id, role="customer"):
    return {"X-User-Id": user_id, "X-User-Role": role}


def admin():
    return ident(str(uuid.uuid4()), "admin")


def new_email():
    return f"u-{uuid.uuid4().hex[:12]}@example.com"


# ---- database access (both backends) ----

def _pg_url(dbname):
    u = urllib.parse.urlsplit(PG_URL)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + dbname, u.query, u.fragment))


class Database:
    """One server's storage: the SQLite file under data_dir or a fresh PostgreSQL database.
    `sqlite_file` names the SQLite file that query/count read by default (the service's
    `<target>.db`); their `file=` reads another one (e.g. the order service's read database,
    order_read.db). On PostgreSQL every table is in the one database and `file` is ignored."""

    def __init__(self, sqlite_file="user.db"):
        self.data_dir = tempfile.mkdtemp(prefix="ms-it-")
        self.sqlite_file = sqlite_file
        self.name, self._pg = None, None
        if BACKEND == "postgres":
            import psycopg2
            self.name = "ms_it_" + uuid.uuid4().hex[:16]
            conn = psycopg2.connect(PG_URL)
            conn.autocommit = True
            conn.cursor().execute(f"CREATE DATABASE {self.name}")
            conn.close()
            self.url = _pg_url(self.name)

    @property
    def env(self):
        return {"DATABASE_URL": self.url} if self.name else {}

    @property
    def sqlite_path(self):
        return os.path.join(self.data_dir, self.sqlite_file)

    @contextlib.contextmanager
    def _conn(self, file=None):
        """A reading connection: one kept autocommit PostgreSQL session, or a fresh read-only
        SQLite one (each sees the latest commit)."""
        if self.name:
            import psycopg2
            if self._pg is None:
                self._pg = psycopg2.connect(self.url, application_name="ms-it")
                self._pg.autocommit = True
            yield self._pg
            return
        path = os.path.join(self.data_dir, file) if file else self.sqlite_path
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            yield conn
        finally:
            conn.close()

    def _rows(self, conn, sql, params=()):
        cur = conn.cursor()
        cur.execute(sql.replace("?", "%s") if self.name else sql, tuple(params))
        return [tuple(r) for r in cur.fetchall()]

    def query(self, sql, params=(), file=None):
        """Rows of a SELECT written with `?` placeholders (`file`: another SQLite file)."""
        with self._conn(file) as conn:
            return self._rows(conn, sql, params)

    def count(self, table, where="", params=(), file=None):
        return self.query(f"SELECT count(*) FROM {table} {where}", params, file)[0][0]

    def snapshot(self):
        """Every row of every table, to prove a rejected request changed nothing."""
        with self._conn() as conn:
            return {t: sorted(self._rows(conn, f"SELECT {OWN_COLUMNS.get(t, '*')} FROM {t}"),
                              key=repr) for t in TABLES}

    @contextlib.contextmanager
    def write_lock(self, table):
        """Holds the database write lock (SQLite) or an exclusive lock on `table` (PostgreSQL)."""
        if self.name:
            import psycopg2
            conn = psycopg2.connect(self.url)
            conn.cursor().execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        else:
            conn = sqlite3.connect(self.sqlite_path, isolation_level=None, timeout=5)
            conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.rollback()
            conn.close()

    def drop(self):
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if self._pg is not None:
            self._pg.close()
        if self.name:
            import psycopg2
            conn = psycopg2.connect(PG_URL)
            conn.autocommit = True
            conn.cursor().execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
            conn.close()


@contextlib.contextmanager
def unchanged(db):
    """Asserts that the block changes no row in any table."""
    before = db.snapshot()
    yield
    after = db.snapshot()
    assert after == before, "a rejected request changed the database"


# ---- servers ----

class Server:
    """One `microshop serve TARGET` process (user by default) on a port the kernel picked."""

    def __init__(self, db, args=(), env=None, target="user"):
        self.db = db
        self.target = target
        self.log_path = os.path.join(db.data_dir, f"server-{uuid.uuid4().hex[:6]}.log")
        self.log = open(self.log_path, "wb")
        self.killed = False  # SIGKILLed on purpose: no exit status to check
        if target == "gateway" and "--admin" not in args:
            args = ("--admin", "127.0.0.1:0", *args)  # never the default 9080 another may hold
        cmd = [BINARY, "serve", target, "--listen", "127.0.0.1:0", "--data", db.data_dir, *args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL, env=clean_env({**db.env, **(env or {})}))
        self.port = poll(self._listening, 15 * SLOW, what="the 'listening' log line")
        # with --tls-cert the public listener speaks HTTPS; its certificate verifies it
        self.verify = args[args.index("--tls-cert") + 1] if "--tls-cert" in args else True
        scheme = "http" if self.verify is True else "https"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        # a gateway's /metrics and /admin routes are on its admin listener only
        self.admin_url = None
        if target == "gateway":
            self.admin_url = "http://127.0.0.1:%d" % poll(
                lambda: self._listening("admin listening"), 15 * SLOW,
                what="the 'admin listening' log line")
        poll(self._healthy, 10 * SLOW, what="GET /health = 200")

    def _listening(self, msg="listening"):
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
        for line in self.log_text().splitlines():
            if f'"msg":"{msg}"' in line:
                return int(json.loads(line)["addr"].rsplit(":", 1)[1])
        return None

    def _healthy(self):
        try:
            return requests.get(self.url + "/health", timeout=2 * SLOW,
                                verify=self.verify).status_code == 200
        except requests.ConnectionError:
            return False

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_tail(self, n=40):
        """The last lines of stderr, or the start of a sanitizer report when there is one."""
        lines = self.log_text().splitlines()
        for i, line in enumerate(lines):
            if re.search(r"ERROR: (Address|Leak)Sanitizer|runtime error:", line):
                report = [x for x in lines[i:] if not re.match(r"\s*(=>)?0x", x)]
                return "\n".join(lines[max(0, i - 3):i] + report[:n])
        return "\n".join(lines[-n:])

    def request(self, method, path, user=None, role="customer", headers=None, **kw):
        """A request through `requests`; `user` is sent as the caller identity."""
        h = dict(headers or {})
        if user:
            h.update(ident(user, role))
        kw.setdefault("timeout", 10 * SLOW)
        kw.setdefault("verify", self.verify)
        return requests.request(method, self.url + path, headers=h, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def create_user(self, email=None, name="Ada Lovelace", password="correct horse battery"):
        body = {"email": email or new_email(), "name": name, "password": password}
        r = self.request("POST", "/api/v1/users", json=body)
        assert r.status_code == 201, f"{r.status_code} {r.text}"
        return r.json()

    def admin(self, method, path, **kw):
        """A request to the admin listener (a gateway's), else to the server itself."""
        kw.setdefault("timeout", 10 * SLOW)
        return requests.request(method, (self.admin_url or self.url) + path, **kw)

    def metrics(self):
        r = self.admin("GET", "/metrics")
        assert r.status_code == 200
        return r.text

    def metric(self, name, **labels):
        """The value of one sample of /metrics (None when absent); labels must all match."""
        for line in self.metrics().splitlines():
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
            if not m or m.group(1) != name:
                continue
            have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                return float(m.group(4))
        return None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server still running after {timeout} s:\n{self.log_tail()}")

    def stop(self, timeout=None):
        """SIGTERM and wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout or 20 * SLOW)

    def kill(self):
        self.killed = True
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class ServerSet:
    """Starts servers and, at the end, stops them and checks that each exited 0."""

    def __init__(self):
        self.servers, self.dbs = [], []

    def start(self, *args, env=None, db=None, target="user"):
        """Starts a `serve target` server on `db` (a new database by default) with extra
        flags `args`."""
        if db is None:
            db = Database(sqlite_file=f"{target}.db")
            self.dbs.append(db)
        s = Server(db, args, env, target)
        self.servers.append(s)
        return s

    def close(self):
        problems = []
        for s in self.servers:
            try:
                rc = s.stop()
            except AssertionError as e:
                s.kill()
                problems.append(str(e))
                continue
            finally:
                s.log.close()
            if rc != 0 and not s.killed:
                problems.append(f"server on port {s.port} exited with status {rc} "
                                f"after SIGTERM; stderr tail:\n{s.log_tail()}")
        for db in self.dbs:
            db.drop()
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def start_server():
    """A factory: start_server(*flags, env=None, db=None, target="user") -> Server (fresh for
    this test)."""
    servers = ServerSet()
    try:
        yield servers.start
    finally:
        servers.close()


@pytest.fixture(scope="module")
def server():
    """One server shared by a module's tests (tests create their own users)."""
    servers = ServerSet()
    try:
        yield servers.start()
    finally:
        servers.close()


# ---- assertions ----

def assert_problem(resp, status, field=None):
    """Checks an RFC 9457 answer; with `field`, an errors[] entry must name it."""
    body = resp.content[:600]
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {body!r}"
    ctype = resp.headers.get("Content-Type", "")
    assert ctype.startswith("application/problem+json"), f"Content-Type {ctype!r}"
    doc = resp.json()
    assert re.match(r"^urn:microshop:problem:[a-z0-9-]+$", doc.get("type", "")), doc
    assert doc.get("status") == status, doc
    assert isinstance(doc.get("title"), str) and doc["title"], doc
    assert isinstance(doc.get("detail"), str) and doc["detail"], doc
    assert isinstance(doc.get("instance"), str), doc
    if "errors" in doc or field:
        errors = doc.get("errors")
        assert isinstance(errors, list) and errors, doc
        for e in errors:
            assert isinstance(e.get("field"), str) and isinstance(e.get("message"), str), doc
    if field:
        assert field in [e["field"] for e in doc["errors"]], f"no error names {field!r}: {doc}"
    if status == 401:
        assert resp.headers.get("WWW-Authenticate"), "401 without WWW-Authenticate"
    if status in (429, 503):
        assert resp.headers.get("Retry-After"), f"{status} without Retry-After"
    return doc


def assert_user(doc, email=None, name=None):
    assert set(doc) == {"id", "email", "name", "created_at", "updated_at"}, doc
    assert UUID_RE.match(doc["id"]), doc
    assert RFC3339.match(doc["created_at"]) and RFC3339.match(doc["updated_at"]), doc
    if email is not None:
        assert doc["email"] == email
    if name is not None:
        assert doc["name"] == name


# ---- raw HTTP over sockets ----

class RawResponse:
    def __init__(self, status_code, reason, headers, content):
        self.status_code, self.reason = status_code, reason
        self.headers, self.content = headers, content

    @property
    def text(self):
        return self.content.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.content)


class RawConn:
    """A client connection that sends exact bytes and parses answers one by one."""

    def __init__(self, server, timeout=None):
        self.timeout = timeout or 10 * SLOW
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=self.timeout)
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("the server closed the connection")
        self.buf += chunk

    def response(self, head=False):
        """Reads one answer; `head` for a HEAD request (no body whatever the headers say)."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        raw_head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw_head.decode("latin-1").split("\r\n")
        version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
        assert version == "HTTP/1.1", lines[0]
        headers = CaseInsensitiveDict()
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip()] = v.strip()
        status = int(status)
        n = 0 if head or status < 200 or status in (204, 304) else int(headers["Content-Length"])
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return RawResponse(status, reason, headers, body)

    def is_closed(self, timeout=None):
        """True when the server closes the connection within `timeout` without sending more."""
        if self.buf:
            return False
        self.sock.settimeout(timeout or 5 * SLOW)
        try:
            return self.sock.recv(65536) == b""
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(self.timeout)


def raw_request(method, path, headers=None, body=b"", version="HTTP/1.1", host="test"):
    """The bytes of one request; Host first unless host=None, Content-Length when a body."""
    body = body.encode() if isinstance(body, str) else body
    lines = [f"{method} {path} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    hdrs = dict(headers or {})
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k in hdrs):
        hdrs["Content-Length"] = str(len(body))
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refuses_connections(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except (ConnectionRefusedError, ConnectionResetError):  # reset: queued on a closing listener
        return True


def run_threads(n, fn):
    """Runs fn(i) on n threads released together; returns their results in order."""
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def body(i):
        try:
            barrier.wait(30 * SLOW)
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120 * SLOW)
    assert not errors, errors
    return results
