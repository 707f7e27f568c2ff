"""`microshop run` as a supervisor: the gateway (public and admin listeners) and every service,
scaled and restarted through the gateway's admin routes, a child killed brought back, the
admin routes' bad bodies answered with the field they name, and the admin routes never on the
public port."""
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
import requests

from conftest import (BINARY, SLOW, assert_problem, clean_env, free_port, new_email, poll,
                      refuses_connections)
from test_ops import child_serving, children_of, free_port_range

SERVICES = ("user", "order", "inventory", "payment")
JSON = {"Content-Type": "application/json"}


def requests_served(addr, endpoint):
    """How many requests for `endpoint` the process at addr has answered (its own /metrics)."""
    text = requests.get(f"http://{addr}/metrics", timeout=5 * SLOW).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("requests_total{") and f'endpoint="{endpoint}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def healthy(addr):
    try:
        return requests.get(f"http://{addr}/health", timeout=2 * SLOW).status_code == 200
    except requests.RequestException:
        return False


class Run:
    def __init__(self, *args):
        self.data = tempfile.mkdtemp(prefix="ms-it-sup-")
        self.base = free_port_range(5)
        self.admin_port = free_port()
        self.api = f"http://127.0.0.1:{self.base}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.log = open(os.path.join(self.data, "run.log"), "wb")
        self.proc = subprocess.Popen(
            [BINARY, "run", "--data", self.data, "--port-base", str(self.base),
             "--admin", f"127.0.0.1:{self.admin_port}", *args],
            stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL, env=clean_env())
        banner = b""
        deadline = time.monotonic() + 30 * SLOW
        while b"Ctrl-C" not in banner and time.monotonic() < deadline:
            if select.select([self.proc.stdout], [], [], 0.1)[0]:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                banner += chunk
        self.banner = banner.decode()
        assert "Ctrl-C" in self.banner, self.banner + self.log_tail()
        # the demo customer's token, printed for people to paste
        token = re.search(r"CUSTOMER=(\S+)", self.banner)
        assert token, self.banner
        self.customer = {"Authorization": f"Bearer {token.group(1)}"}

    def log_tail(self):
        with open(os.path.join(self.data, "run.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")[-3000:]

    def child(self, target):
        return child_serving(self.proc.pid, target)

    def scale(self, service, replicas):
        r = requests.post(f"{self.admin}/admin/scale", json={"service": service,
                                                             "replicas": replicas},
                          timeout=40 * SLOW)
        assert r.status_code == 200, r.text
        assert len(r.json()["instances"]) == replicas, r.text
        return r.json()["instances"]

    def stop(self):
        kids = children_of(self.proc.pid)
        self.proc.send_signal(signal.SIGINT)
        status = self.proc.wait(40 * SLOW)
        for kid in kids:
            assert not os.path.exists(f"/proc/{kid}"), "a child outlived the supervisor"
        return status

    def close(self):
        if self.proc.poll() is None:
            for pid in children_of(self.proc.pid):
                os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.log.close()
        shutil.rmtree(self.data, ignore_errors=True)


@pytest.fixture(scope="module")
def shop():
    run = Run()
    try:
        yield run
        assert run.stop() == 0, run.log_tail()
        assert refuses_connections(run.base) and refuses_connections(run.admin_port)
    finally:
        run.close()


TOKENS = {}  # user id -> the Authorization header of its token


def auth(user):
    return TOKENS[user]


def checkout(shop):
    """A new customer signs up, signs in and buys one demo T-shirt through the gateway (auth is
    on in `microshop run`); the customer's and the order's ids."""
    email = new_email()
    r = requests.post(f"{shop.api}/api/v1/users", json={
        "email": email, "name": "Ada", "password": "correct horse battery"},
        timeout=10 * SLOW)
    assert r.status_code == 201, r.text
    user = r.json()["id"]
    r = requests.post(f"{shop.api}/api/v1/auth/token", json={
        "email": email, "password": "correct horse battery"}, timeout=10 * SLOW)
    assert r.status_code == 200 and r.json()["token_type"] == "Bearer", r.text
    TOKENS[user] = {"Authorization": f"Bearer {r.json()['access_token']}"}
    items = requests.get(f"{shop.api}/api/v1/products", params={"limit": 100},
                         timeout=10 * SLOW).json()["items"]
    tee = next(p for p in items if p["sku"] == "MS-TEE-001")
    r = requests.post(f"{shop.api}/api/v1/orders",
                      headers={**auth(user), "Idempotency-Key": str(uuid.uuid4())},
                      json={"items": [{"product_id": tee["id"], "quantity": 1}],
                            "payment": {"card_number": "4242424242424242"}},
                      timeout=20 * SLOW)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "confirmed", r.text
    return user, r.json()["id"]


def test_every_process_is_up_and_the_banner_says_where(shop):
    assert f"127.0.0.1:{shop.base}" in shop.banner and f"127.0.0.1:{shop.admin_port}" in shop.banner
    assert healthy(f"127.0.0.1:{shop.base}") and healthy(f"127.0.0.1:{shop.admin_port}")
    for i, name in enumerate(SERVICES, 1):
        assert healthy(f"127.0.0.1:{shop.base + i}"), name
        assert shop.child(name), (name, children_of(shop.proc.pid))
    assert shop.child("gateway")
    assert len(children_of(shop.proc.pid)) == 5
    r = requests.get(f"{shop.admin}/ready", timeout=5 * SLOW)
    assert r.status_code == 200 and r.json()["service"] == "gateway"
    # the process's metrics are on the admin listener only
    r = requests.get(f"{shop.admin}/metrics", timeout=5 * SLOW)
    assert r.status_code == 200 and "# TYPE" in r.text


def test_a_checkout_through_the_gateway(shop):
    user, order = checkout(shop)
    r = requests.get(f"{shop.api}/api/v1/orders/{order}", headers=auth(user), timeout=10 * SLOW)
    assert r.status_code == 200 and r.json()["user_id"] == user


SMOKE = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "smoke.py")


def smoke(*args):
    return subprocess.run([sys.executable, SMOKE, *args], capture_output=True, text=True,
                          timeout=120 * SLOW)


def test_the_pipelines_smoke_check_passes_with_and_without_an_admin_token(shop):
    """scripts/smoke.py, the deploy pipelines' check of a new environment."""
    admin = re.search(r"ADMIN=(\S+)", shop.banner).group(1)
    with_admin = smoke("--url", shop.api, "--admin-token", admin, "--orders", "2")
    assert with_admin.returncode == 0, with_admin.stdout + with_admin.stderr
    assert "smoke: ok (2 orders confirmed" in with_admin.stdout
    # without one it buys a product the catalogue already stocks (the demo catalogue here)
    plain = smoke("--url", shop.api, "--orders", "1")
    assert plain.returncode == 0, plain.stdout + plain.stderr


def test_the_smoke_check_fails_loudly(shop):
    # a customer's token is no admin's: adding the product is refused, and the step is named
    customer = shop.customer["Authorization"].split()[1]
    r = smoke("--url", shop.api, "--admin-token", customer)
    assert r.returncode == 1 and "POST /api/v1/products answered 403" in r.stderr, r.stderr
    # nothing listening
    r = smoke("--url", f"http://127.0.0.1:{free_port()}", "--timeout", "2")
    assert r.returncode == 1 and "smoke: FAILED: GET /api/v1/products" in r.stderr, r.stderr
    r = smoke("--url", shop.api, "--orders", "0")
    assert r.returncode == 2 and "--orders" in r.stderr


def test_admin_routes_are_not_on_the_public_port(shop):
    for method, path in (("GET", "/admin/instances"), ("GET", "/admin/breakers"),
                         ("POST", "/admin/scale"), ("POST", "/admin/restart"),
                         ("POST", "/admin/breakers/order"), ("GET", "/metrics")):
        r = requests.request(method, shop.api + path, json={"service": "order", "replicas": 2},
                             timeout=5 * SLOW)
        assert r.status_code == 404, (method, path, r.status_code)
    assert len(children_of(shop.proc.pid)) == 5
    assert requests.get(f"{shop.api}/health", timeout=5 * SLOW).status_code == 200


def test_the_status_view_names_every_upstream(shop):
    doc = requests.get(f"{shop.admin}/admin/instances", timeout=5 * SLOW).json()
    names = {u["name"]: u for u in doc["upstreams"]}
    assert set(SERVICES) <= set(names), doc
    assert [i["address"] for i in names["order"]["instances"]] == [f"127.0.0.1:{shop.base + 2}"]
    breakers = requests.get(f"{shop.admin}/admin/breakers", timeout=5 * SLOW).json()["breakers"]
    assert set(SERVICES) <= {b["upstream"] for b in breakers}, breakers


def test_scale_payment_out_and_back_in(shop):
    user, order = checkout(shop)
    pay = requests.get(f"{shop.api}/api/v1/orders/{order}", headers=auth(user),
                       timeout=10 * SLOW).json()["payment_id"]
    first = f"127.0.0.1:{shop.base + 4}"
    instances = shop.scale("payment", 2)
    assert instances[0] == first
    second = instances[1]
    assert healthy(second)
    endpoint = "/api/v1/payments/{id}"

    def read():
        r = requests.get(f"{shop.api}/api/v1/payments/{pay}", headers=auth(user),
                         timeout=10 * SLOW)
        assert r.status_code == 200 and r.json()["order_id"] == order, r.text

    def second_gets_traffic():
        for _ in range(10):
            read()
        return requests_served(second, endpoint) > 0
    poll(second_gets_traffic, 20 * SLOW, interval=0.1,
         what="the gateway to send reads to the second payment instance")
    assert requests_served(first, endpoint) > 0
    pid2 = next(p for p in children_of(shop.proc.pid)
                if child_cmd_has(p, second))

    assert shop.scale("payment", 1) == [first]
    poll(lambda: not os.path.exists(f"/proc/{pid2}") or zombie(pid2), 30 * SLOW,
         what="the second payment process to stop")
    poll(lambda: refuses_connections(int(second.rsplit(":", 1)[1])), 10 * SLOW,
         what="the second payment instance's port to close")
    for _ in range(20):
        read()
    checkout(shop)


def test_the_order_service_stays_one_instance_on_sqlite(shop):
    r = requests.post(f"{shop.admin}/admin/scale", json={"service": "order", "replicas": 2},
                      timeout=10 * SLOW)
    assert_problem(r, 422, "replicas")
    assert "PostgreSQL" in r.json()["errors"][0]["message"], r.text
    doc = requests.get(f"{shop.admin}/admin/instances", timeout=5 * SLOW).json()
    order = next(u for u in doc["upstreams"] if u["name"] == "order")
    assert [i["address"] for i in order["instances"]] == [f"127.0.0.1:{shop.base + 2}"], doc


def test_the_order_service_follows_a_scaled_inventory(shop):
    first = f"127.0.0.1:{shop.base + 3}"
    second = shop.scale("inventory", 2)[1]
    try:
        def second_gets_saga_calls():
            checkout(shop)
            # a checkout's calls alternate over the instances: a quote here, a reservation there
            return (requests_served(second, "/internal/v1/quotes")
                    + requests_served(second, "/internal/v1/reservations")) > 0
        poll(second_gets_saga_calls, 30 * SLOW, interval=0.1,
             what="the order service to reserve stock at the second inventory instance")
    finally:
        assert shop.scale("inventory", 1) == [first]
    checkout(shop)


def child_cmd_has(pid, addr):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return addr.encode() in f.read().split(b"\0")
    except OSError:
        return False


def zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_restart_order_through_the_admin_listener(shop):
    user, order = checkout(shop)
    before = shop.child("order")
    r = requests.post(f"{shop.admin}/admin/restart", json={"service": "order"},
                      timeout=10 * SLOW)
    assert r.status_code == 202, r.text
    assert r.json()["restarting"] == [f"127.0.0.1:{shop.base + 2}"]

    def restarted():
        kid = shop.child("order")
        return kid and kid != before and healthy(f"127.0.0.1:{shop.base + 2}")
    poll(restarted, 30 * SLOW, interval=0.1, what="a new order process")

    def reads():
        r = requests.get(f"{shop.api}/api/v1/orders/{order}", headers=auth(user),
                         timeout=10 * SLOW)
        return r.status_code == 200
    poll(reads, 15 * SLOW, interval=0.1, what="reads through the gateway to recover")
    # one instance's restart by address; an address the service does not have is a 404
    r = requests.post(f"{shop.admin}/admin/restart",
                      json={"service": "order", "instance": "127.0.0.1:1"}, timeout=10 * SLOW)
    assert_problem(r, 404, "instance")


def test_a_killed_child_is_restarted(shop):
    before = shop.child("inventory")
    os.kill(before, signal.SIGKILL)

    def restarted():
        kid = shop.child("inventory")
        return kid and kid != before and healthy(f"127.0.0.1:{shop.base + 3}")
    poll(restarted, 20 * SLOW, interval=0.1, what="the supervisor to restart the inventory")
    r = requests.get(f"{shop.api}/api/v1/products", params={"limit": 1}, timeout=10 * SLOW)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path,body,status,field", [
    ("/admin/scale", {"service": "order"}, 422, "replicas"),
    ("/admin/scale", {"replicas": 2}, 422, "service"),
    ("/admin/scale", {"service": "order", "replicas": "2"}, 400, "replicas"),
    ("/admin/scale", {"service": "order", "replicas": 0}, 422, "replicas"),
    ("/admin/scale", {"service": "order", "replicas": 9}, 422, "replicas"),
    ("/admin/scale", {"service": "gateway", "replicas": 2}, 422, "service"),
    ("/admin/scale", {"service": "order", "replicas": 2, "extra": 1}, 400, "extra"),
    ("/admin/restart", {}, 422, "service"),
    ("/admin/restart", {"service": 7}, 400, "service"),
    ("/admin/restart", {"service": "nothing"}, 422, "service"),
    ("/admin/restart", {"service": "order", "instance": 5}, 400, "instance"),
    ("/admin/breakers/order", {}, 422, "state"),
    ("/admin/breakers/order", {"state": "half"}, 422, "state"),
    ("/admin/breakers/order", {"state": True}, 400, "state"),
])
def test_bad_admin_bodies_name_the_field(shop, path, body, status, field):
    r = requests.post(shop.admin + path, json=body, timeout=10 * SLOW)
    assert_problem(r, status, field)


@pytest.mark.parametrize("path", ["/admin/scale", "/admin/restart", "/admin/breakers/order"])
def test_admin_bodies_must_be_json_objects(shop, path):
    r = requests.post(shop.admin + path, data="service=order",
                      headers={"Content-Type": "application/x-www-form-urlencoded"},
                      timeout=10 * SLOW)
    assert_problem(r, 415)
    r = requests.post(shop.admin + path, data="{\"service\": ", headers=JSON, timeout=10 * SLOW)
    assert_problem(r, 400)
    r = requests.post(shop.admin + path, data="[1]", headers=JSON, timeout=10 * SLOW)
    assert_problem(r, 400)


def test_breaker_override_of_an_unknown_upstream_is_404(shop):
    r = requests.post(f"{shop.admin}/admin/breakers/nothing", json={"state": "open"},
                      timeout=10 * SLOW)
    assert_problem(r, 404)


def test_breaker_override_opens_and_releases(shop):
    r = requests.post(f"{shop.admin}/admin/breakers/payment", json={"state": "open"},
                      timeout=10 * SLOW)
    assert r.status_code == 200, r.text
    try:
        r = requests.get(f"{shop.api}/api/v1/payments/{uuid.uuid4()}",
                         headers=shop.customer, timeout=10 * SLOW)
        assert r.status_code == 503, r.text
        view = requests.get(f"{shop.admin}/admin/breakers", timeout=5 * SLOW).json()
        payment = next(b for b in view["breakers"] if b["upstream"] == "payment")
        assert payment["override"] == "open", view
    finally:
        r = requests.post(f"{shop.admin}/admin/breakers/payment", json={"state": "auto"},
                          timeout=10 * SLOW)
        assert r.status_code == 200, r.text
    r = requests.get(f"{shop.api}/api/v1/payments/{uuid.uuid4()}",
                     headers=shop.customer, timeout=10 * SLOW)
    assert r.status_code == 404, r.text


def test_admin_listener_refuses_a_public_address():
    p = subprocess.run([BINARY, "serve", "gateway", "--admin", "0.0.0.0:0", "--listen",
                        "127.0.0.1:0", "--data", tempfile.gettempdir()],
                       capture_output=True, text=True, timeout=20 * SLOW, env=clean_env())
    assert p.returncode == 2 and "MICROSHOP_ADMIN_PUBLIC" in p.stderr, p.stderr


def test_replicas_for_every_service_but_the_order_service():
    run = Run("--replicas", "2")
    try:
        with open(os.path.join(run.data, "run.log"), "rb") as f:
            assert b"order runs one" in f.read()
        doc = requests.get(f"{run.admin}/admin/instances", timeout=5 * SLOW).json()
        counts = {u["name"]: len(u["instances"]) for u in doc["upstreams"]}
        assert counts == {"user": 2, "order": 1, "inventory": 2, "payment": 2}, doc
        # gateway + 2 user + 1 order + 2 inventory + 2 payment, every one serving
        assert len(children_of(run.proc.pid)) == 8
        for u in doc["upstreams"]:
            for i in u["instances"]:
                poll(lambda: healthy(i["address"]), 30 * SLOW, what=f"{i['address']} healthy")
        checkout(run)
        assert run.stop() == 0, run.log_tail()
    finally:
        run.close()


@pytest.mark.parametrize("args,mention", [(["--replicas", "0"], "--replicas"),
                                          (["--replicas", "order=x"], "--replicas"),
                                          (["--replicas", "gateway=2"], "--replicas"),
                                          (["--replicas", "order=2"], "PostgreSQL"),
                                          (["--admin", "nowhere"], "--admin")])
def test_bad_run_flags_exit_2(args, mention):
    p = subprocess.run([BINARY, "run", "--data", tempfile.gettempdir(), *args],
                       capture_output=True, text=True, timeout=20 * SLOW, env=clean_env())
    assert p.returncode == 2 and mention in p.stderr, p.stderr
