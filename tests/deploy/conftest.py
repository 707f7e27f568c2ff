"""The compose stack of deploy/compose, driven through docker-compose against the engine of
$DOCKER_HOST (tests/deploy/run.sh starts a private one and builds the images first).

Settings (run.sh sets them): MS_DEPLOY_PROJECT, the compose project name; MICROSHOP_PORT and
MICROSHOP_PROMETHEUS_PORT, the loopback ports the stack publishes. Every wait polls a
condition with a generous deadline; nothing asserts how long anything took.
"""
import json
import os
import subprocess
import threading
import time
import uuid

import pytest
import requests
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPOSE_DIR = os.path.join(ROOT, "deploy", "compose")
BASE_FILE = os.path.join(COMPOSE_DIR, "docker-compose.yml")
REPLICAS_FILE = os.path.join(COMPOSE_DIR, "docker-compose.replicas.yml")
PROJECT = os.environ.get("MS_DEPLOY_PROJECT", "msdeploy")
PORT = int(os.environ.get("MICROSHOP_PORT", "8080"))
PROM_PORT = int(os.environ.get("MICROSHOP_PROMETHEUS_PORT", "9090"))
GATEWAY = f"http://127.0.0.1:{PORT}"
PROMETHEUS = f"http://127.0.0.1:{PROM_PORT}"
JWT_SECRET = os.environ.get("MICROSHOP_JWT_SECRET",
                            "dev-only-jwt-secret-change-me-0123456789abcdef")
CARD = "4242424242424242"
ADDRESS = {"line1": "1 Infinite Loop", "city": "Cupertino", "postal_code": "95014",
           "country": "US"}
# a request that hangs past this is a failure of "fail fast", whatever its status would be
CLIENT_TIMEOUT = 30
# statuses a checkout may get while an instance it needs is gone
UNAVAILABLE = (503, 504)
ACKNOWLEDGED = (201, 202)


def poll(cond, timeout, interval=0.5, what="condition"):
    """Calls cond() until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def docker(*args, check=True, timeout=300):
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {r.returncode} {r.stderr.strip()}")
    return r


class Stack:
    """One compose project made of `files`; containers are named PROJECT_SERVICE_1."""

    def __init__(self, files):
        self.files = files
        self.healthy_seconds = None

    def compose(self, *args, check=True, timeout=600):
        cmd = ["docker-compose", "-p", PROJECT]
        for f in self.files:
            cmd += ["-f", f]
        r = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout,
                           cwd=COMPOSE_DIR)
        if check and r.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)}: {r.stderr.strip()[-2000:]}")
        return r

    def container(self, service):
        return f"{PROJECT}_{service}_1"

    def services(self):
        """The services `up` starts: those of no profile (`config --services` lists all)."""
        doc = yaml.safe_load(self.compose("config").stdout)
        return [name for name, svc in doc["services"].items() if not svc.get("profiles")]

    def health(self, service):
        r = docker("inspect", "-f", "{{.State.Status}} {{if .State.Health}}"
                   "{{.State.Health.Status}}{{end}}", self.container(service), check=False)
        return r.stdout.strip() if r.returncode == 0 else "missing"

    def all_healthy(self):
        return all(self.health(s) == "running healthy" for s in self.services())

    def up(self):
        start = time.monotonic()
        self.compose("up", "-d")
        poll(self.all_healthy, 600, what="every container of the stack to be healthy")
        self.healthy_seconds = time.monotonic() - start

    def down(self):
        self.compose("down", "-v", "--remove-orphans", "-t", "5", check=False)

    def logs(self):
        return self.compose("logs", "--no-color", "--tail", "40", check=False).stdout

    def psql(self, db, sql):
        """One value of `sql` in service database `db`, through the postgres container."""
        r = docker("exec", self.container("postgres"), "psql", "-h", "/tmp", "-U", "postgres",
                   "-d", db, "-tAc", sql)
        return r.stdout.strip()

    def token(self, sub, role):
        """An access token minted as an operator would: `microshop token` in the gateway's
        container, with the stack's key (its environment)."""
        r = docker("exec", self.container("gateway"), "/usr/local/bin/microshop", "token",
                   "--sub", sub, "--role", role, "--ttl", "3600")
        return r.stdout.strip()

    # ---- the shop, through the gateway on 127.0.0.1 ----

    def request(self, method, path, token=None, **kw):
        headers = dict(kw.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, GATEWAY + path, headers=headers,
                                timeout=CLIENT_TIMEOUT, **kw)

    def customer(self):
        """A registered customer: (id, token), the token from POST /api/v1/auth/token; the
        order service knows the user (its directory, fed by the user service's events)."""
        email = f"u-{uuid.uuid4().hex[:12]}@example.com"
        password = "correct horse battery"
        r = self.request("POST", "/api/v1/users", json={
            "email": email, "name": "Ada Lovelace", "password": password})
        assert r.status_code == 201, f"{r.status_code} {r.text}"
        uid = r.json()["id"]
        r = self.request("POST", "/api/v1/auth/token", json={"email": email,
                                                              "password": password})
        assert r.status_code == 200, f"{r.status_code} {r.text}"
        poll(lambda: self.psql("order", "SELECT count(*) FROM user_directory "
                                        f"WHERE user_id = '{uid}'") == "1",
             120, what="the order service to know the user")
        return uid, r.json()["access_token"]

    def product(self, admin_token, stock=10 ** 6, price=1500):
        body = {"sku": "SKU-" + uuid.uuid4().hex[:12], "name": "Widget", "price_cents": price,
                "currency": "EUR", "stock": stock}
        r = self.request("POST", "/api/v1/products", token=admin_token, json=body)
        assert r.status_code == 201, f"{r.status_code} {r.text}"
        return r.json()

    def checkout(self, token, product, quantity=1):
        body = {"items": [{"product_id": product["id"], "quantity": quantity}],
                "shipping_address": ADDRESS, "payment": {"card_number": CARD}}
        return self.request("POST", "/api/v1/orders", token=token, data=json.dumps(body),
                            headers={"Content-Type": "application/json",
                                     "Idempotency-Key": uuid.uuid4().hex})

    def order_status(self, token, oid):
        r = self.request("GET", f"/api/v1/orders/{oid}", token=token)
        return r.status_code, (r.json() if r.status_code == 200 else r.text)

    def all_readable(self, token, oids):
        """Every order of oids answers 200 with its id (polled: a restarted instance may still
        be coming back)."""
        for oid in oids:
            poll(lambda: (lambda s: s[0] == 200 and s[1]["id"] == oid)(
                self.order_status(token, oid)), 180, what=f"order {oid} to be readable")
        return True


class Load:
    """Checkouts in a loop on `threads` threads until stop(); every answer's status is kept,
    and the ids of acknowledged (201/202) orders. A request that raises (connection reset,
    client timeout) is recorded as its exception's name."""

    def __init__(self, stack, token, product, threads=2):
        self.stack, self.token, self.product = stack, token, product
        self.statuses, self.acked = [], []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                r = self.stack.checkout(self.token, self.product)
                status, oid = r.status_code, (r.json().get("id") if r.status_code in
                                              ACKNOWLEDGED else None)
            except requests.RequestException as e:
                status, oid = type(e).__name__, None
            with self._lock:
                self.statuses.append(status)
                if oid:
                    self.acked.append(oid)
            time.sleep(0.05)

    def count(self):
        with self._lock:
            return len(self.statuses)

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(CLIENT_TIMEOUT + 10)
        return list(self.statuses), list(self.acked)


def _stack_fixture(files, record):
    stack = Stack(files)
    stack.down()  # a project left over by an interrupted run
    try:
        stack.up()
        record(stack)
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.down()


@pytest.fixture(scope="session")
def timings():
    """Seconds to healthy, by stack, written beside the JUnit file (MS_DEPLOY_RESULTS)."""
    found = {}
    yield found
    out = os.environ.get("MS_DEPLOY_RESULTS")
    if out and found:
        with open(os.path.join(out, "deploy-timings.json"), "w") as f:
            json.dump(found, f, indent=2)


@pytest.fixture(scope="module")
def stack(timings):
    yield from _stack_fixture([BASE_FILE],
                              lambda s: timings.__setitem__("base_healthy_s",
                                                            round(s.healthy_seconds, 1)))


@pytest.fixture(scope="module")
def replica_stack(timings):
    yield from _stack_fixture([BASE_FILE, REPLICAS_FILE],
                              lambda s: timings.__setitem__("replicas_healthy_s",
                                                            round(s.healthy_seconds, 1)))
