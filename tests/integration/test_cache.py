"""The gateway's read cache: GET /api/v1/products/{id} and GET /api/v1/users/{id} answered
from an in-process LRU, then from Redis (REDIS_URL), else from the service; a write through
the gateway drops what it changed at once, an event from the services' feeds drops what it
names; Redis going away only sends reads to the services, and it is used again once back; a
cached user is served only to that user or an admin; a caller who wrote reads that service past
the cache for a minute, through any gateway that shares the secret of its signed cookie."""
import base64
import hashlib
import hmac
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import pytest
import requests

from conftest import BINARY, SLOW, admin, clean_env, free_port, ident, new_email, poll
from shop import JSON, start_shop  # noqa: F401 - start_shop is a fixture

LONG_TTL = {"MICROSHOP_CACHE_TTL_MS": "600000"}  # only an invalidation can drop an entry
SECRET = "f" * 40
SHARED = {**LONG_TTL, "MICROSHOP_IDENTITY_SECRET": SECRET}  # gateways that honour each other
USER_BIT, INVENTORY_BIT = 1, 2


class RedisServer:
    """A throwaway redis-server on a free port (no persistence) that can stop and start again
    on the same port."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ms-redis-")
        self.port = free_port()
        self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        poll(self.ping, 10 * SLOW, 0.05, what="redis-server to answer")

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def redis():
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    r = RedisServer()
    r.start()
    try:
        yield r
    finally:
        r.close()


def metric(gw, name, **labels):
    return gw.metric(name, **labels) or 0


def wait_following(gw, redis=False):
    """Until the gateway's follower has reached both feeds and Redis when it has one: each
    flushes once when reached, so with Redis it takes three flushes (two would also be one
    feed and Redis, and an event the other feed's head already covers would never count)."""
    poll(lambda: metric(gw, "cache_invalidations_total", source="flush") >= (3 if redis else 2),
         20 * SLOW, what="the cache to follow the feeds")
    if redis:
        poll(lambda: metric(gw, "cache_redis_up") == 1, 20 * SLOW, what="Redis to be up")


def new_product(s, gw, price=1299):
    """A product made through the gateway, once the gateway has seen its product.created (so
    the event cannot drop what a test caches next)."""
    before = metric(gw, "cache_invalidations_total", source="event")
    r = gw.request("POST", "/api/v1/products", headers=admin(), json={
        "sku": "SKU-" + uuid.uuid4().hex[:12], "name": "Widget", "price_cents": price,
        "currency": "EUR", "stock": 10})
    assert r.status_code == 201, r.text
    poll(lambda: metric(gw, "cache_invalidations_total", source="event") > before, 20 * SLOW,
         what="the gateway to see product.created")
    return r.json()


def read(gw, path, **kw):
    r = gw.get(path, **kw)
    assert r.status_code in (200, 304), r.text
    return r


def test_a_product_read_is_a_miss_then_a_hit(start_shop):
    s = start_shop(gateway=True, env=LONG_TTL)
    gw = s.server("gateway")
    wait_following(gw)
    p = new_product(s, gw)
    path = f"/api/v1/products/{p['id']}"
    first, second = read(gw, path), read(gw, path)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("miss", "hit")
    assert first.json() == second.json() and second.json()["price_cents"] == 1299
    assert second.headers["Content-Type"].startswith("application/json")
    assert first.headers["ETag"] == second.headers["ETag"]
    assert metric(gw, "cache_requests_total", tier="lru", result="hit") >= 1
    assert metric(gw, "cache_requests_total", tier="lru", result="miss") >= 1
    # a client's copy is still good: 304 from the cache
    r = gw.get(path, headers={"If-None-Match": second.headers["ETag"]})
    assert (r.status_code, r.headers["X-Cache"], r.content) == (304, "hit", b"")
    r = gw.get(path, headers={"If-None-Match": '"something-else"'})
    assert (r.status_code, r.headers["X-Cache"]) == (200, "hit")
    if shutil.which("promtool"):  # the cache's families are well-formed
        text = "".join(line + "\n" for line in gw.metrics().splitlines()
                       if line.startswith(("cache_", "# HELP cache_", "# TYPE cache_")))
        check = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                               capture_output=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
    # lists are never cached
    r = gw.get("/api/v1/products", params={"limit": 5})
    assert r.status_code == 200 and "X-Cache" not in r.headers
    # the service's answer to an unknown product is not kept
    for _ in range(2):
        r = gw.get(f"/api/v1/products/{uuid.uuid4()}")
        assert (r.status_code, r.headers["X-Cache"]) == (404, "miss")


def test_a_write_through_the_gateway_is_seen_at_once(start_shop):
    s = start_shop(gateway=True, env=LONG_TTL)
    gw = s.server("gateway")
    wait_following(gw)
    p = new_product(s, gw, price=1000)
    path = f"/api/v1/products/{p['id']}"
    read(gw, path)
    assert read(gw, path).headers["X-Cache"] == "hit"
    r = gw.request("PUT", f"{path}/price", headers={**admin(), **JSON},
                   json={"price_cents": 1500})
    assert r.status_code == 200, r.text
    assert metric(gw, "cache_invalidations_total", source="write") >= 1
    assert read(gw, path).json()["price_cents"] == 1500
    r = gw.request("PUT", f"{path}/stock", headers={**admin(), **JSON}, json={"on_hand": 3})
    assert r.status_code == 200, r.text
    assert read(gw, path).json()["available"] == 3


def test_a_change_made_behind_the_gateway_is_seen_after_its_event(start_shop):
    s = start_shop(gateway=True, env=LONG_TTL)
    gw, inv = s.server("gateway"), s.inventory_svc
    wait_following(gw)
    p = new_product(s, gw, price=1000)
    path = f"/api/v1/products/{p['id']}"
    read(gw, path)
    assert read(gw, path).headers["X-Cache"] == "hit"
    events = metric(gw, "cache_invalidations_total", source="event")
    # straight to the inventory: the gateway only hears of it through price.changed
    r = inv.request("PUT", f"{path}/price", headers=admin(), json={"price_cents": 2000})
    assert r.status_code == 200, r.text
    poll(lambda: read(gw, path).json()["price_cents"] == 2000, 20 * SLOW,
         what="the gateway to serve the new price")
    assert metric(gw, "cache_invalidations_total", source="event") > events
    for _ in range(3):  # and the old price does not come back
        assert read(gw, path).json()["price_cents"] == 2000
    # a stock count writes stock.counted: `available` is not stale for the TTL either
    r = inv.request("PUT", f"{path}/stock", headers=admin(), json={"on_hand": 4})
    assert r.status_code == 200, r.text
    poll(lambda: read(gw, path).json()["available"] == 4, 20 * SLOW,
         what="the gateway to serve the new stock")


def test_the_lru_keeps_at_most_its_entries(start_shop):
    s = start_shop(gateway=True, env={**LONG_TTL, "MICROSHOP_CACHE_ENTRIES": "1"})
    gw = s.server("gateway")
    wait_following(gw)
    p, q = new_product(s, gw), new_product(s, gw)
    first, second = f"/api/v1/products/{p['id']}", f"/api/v1/products/{q['id']}"
    assert [read(gw, x).headers["X-Cache"] for x in (first, first, second, second, first)] == [
        "miss", "hit", "miss", "hit", "miss"]


def test_the_follower_flushes_after_losing_a_feed(start_shop):
    s = start_shop(gateway=True, env=LONG_TTL)
    gw = s.server("gateway")
    wait_following(gw)
    p = new_product(s, gw)
    path = f"/api/v1/products/{p['id']}"
    read(gw, path)
    flushes = metric(gw, "cache_invalidations_total", source="flush")
    s.stop("inventory")
    # what is cached still answers while the service is away
    r = gw.get(path)
    assert (r.status_code, r.headers["X-Cache"]) == (200, "hit")
    s.start("inventory")
    # events may have been missed meanwhile: everything cached before is dropped
    poll(lambda: metric(gw, "cache_invalidations_total", source="flush") > flushes, 30 * SLOW,
         0.1, what="a flush once the feed is back")
    assert read(gw, path).headers["X-Cache"] == "miss"


def test_the_redis_tier_is_shared_by_gateways(start_shop, redis):
    # no LRU: every read asks Redis
    s = start_shop(gateway=True, env={"REDIS_URL": redis.url, "MICROSHOP_CACHE_ENTRIES": "0"})
    gw = s.server("gateway")
    wait_following(gw, redis=True)
    p = new_product(s, gw, price=700)
    path = f"/api/v1/products/{p['id']}"
    assert read(gw, path).headers["X-Cache"] == "miss"
    poll(lambda: read(gw, path).headers["X-Cache"] == "hit", 20 * SLOW,
         what="a read answered from Redis")
    assert metric(gw, "cache_requests_total", tier="redis", result="hit") >= 1
    assert metric(gw, "cache_requests_total", tier="lru", result="hit") == 0
    # a second gateway (its start moves the generation on)
    gw2 = s.add_gateway("gateway2")
    wait_following(gw2, redis=True)
    read(gw, path)  # fills Redis again, under the new generation
    poll(lambda: read(gw2, path).headers["X-Cache"] == "hit", 20 * SLOW,
         what="the second gateway to read Redis")
    assert metric(gw2, "cache_requests_total", tier="redis", result="hit") >= 1
    # a write through one gateway deletes the Redis entry the other one reads
    r = gw2.request("PUT", f"{path}/price", headers={**admin(), **JSON},
                    json={"price_cents": 900})
    assert r.status_code == 200, r.text
    assert read(gw, path).json()["price_cents"] == 900


def test_reads_go_on_while_redis_is_away_and_use_it_again_when_back(start_shop, redis):
    s = start_shop(gateway=True, env={"REDIS_URL": redis.url, "MICROSHOP_CACHE_ENTRIES": "0",
                                      "MICROSHOP_CACHE_TTL_MS": "0"})
    gw = s.server("gateway")
    wait_following(gw, redis=True)
    p = new_product(s, gw)
    path = f"/api/v1/products/{p['id']}"
    read(gw, path)
    poll(lambda: read(gw, path).headers["X-Cache"] == "hit", 20 * SLOW, what="a Redis hit")
    # a Redis that does not answer (stopped, its socket open): the budget runs out, the
    # services answer, and the wedged connection is dropped
    redis.proc.send_signal(signal.SIGSTOP)
    try:
        for _ in range(30):
            r = gw.get(path)
            assert r.status_code == 200 and r.json()["id"] == p["id"], r.text
        poll(lambda: metric(gw, "cache_redis_up") == 0, 20 * SLOW, what="Redis seen wedged")
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    poll(lambda: read(gw, path).headers["X-Cache"] == "hit", 30 * SLOW, 0.1,
         what="a Redis hit once it answers again")
    redis.stop()
    for _ in range(20):
        r = gw.get(path)
        assert r.status_code == 200 and r.json()["id"] == p["id"], r.text
    poll(lambda: metric(gw, "cache_redis_up") == 0, 20 * SLOW, what="Redis seen down")
    r = gw.get(path)
    assert (r.status_code, r.headers["X-Cache"]) == (200, "miss")
    hits = metric(gw, "cache_requests_total", tier="redis", result="hit")
    redis.start()  # the same port, empty
    poll(lambda: metric(gw, "cache_redis_up") == 1, 30 * SLOW, 0.1, what="Redis seen back")
    poll(lambda: read(gw, path).headers["X-Cache"] == "hit", 30 * SLOW, 0.1,
         what="a Redis hit again")
    assert metric(gw, "cache_requests_total", tier="redis", result="hit") > hits


def test_a_cached_user_is_only_served_to_that_user_or_an_admin(start_shop):
    s = start_shop(gateway=True, env=LONG_TTL)
    gw = s.server("gateway")
    wait_following(gw)
    before = metric(gw, "cache_invalidations_total", source="event")
    r = gw.request("POST", "/api/v1/users", json={
        "email": new_email(), "name": "Ada", "password": "correct horse battery"})
    assert r.status_code == 201, r.text
    uid = r.json()["id"]
    poll(lambda: metric(gw, "cache_invalidations_total", source="event") > before, 20 * SLOW,
         what="the gateway to see user.created")
    path = f"/api/v1/users/{uid}"
    mine = read(gw, path, headers=ident(uid))
    assert mine.headers["X-Cache"] == "miss"
    assert read(gw, path, headers=ident(uid)).headers["X-Cache"] == "hit"
    other = gw.get(path, headers=ident(str(uuid.uuid4())))
    assert other.status_code == 403 and other.headers.get("X-Cache") != "hit", other.text
    assert gw.get(path).status_code == 401
    by_admin = read(gw, path, headers=admin())
    assert by_admin.headers["X-Cache"] == "hit" and by_admin.json() == mine.json()
    # the owner's own change through the gateway is seen at once
    events = metric(gw, "cache_invalidations_total", source="event")
    r = gw.request("PATCH", path, headers={**ident(uid), **JSON}, json={"name": "Grace"})
    assert r.status_code == 200, r.text
    assert read(gw, path, headers=ident(uid)).json()["name"] == "Grace"
    poll(lambda: metric(gw, "cache_invalidations_total", source="event") > events, 20 * SLOW,
         what="the gateway to see user.updated")
    # an admin's change made straight at the user service: only user.updated tells the gateway
    # (the owner's read just now skipped the cache: its own write; the admin's fills it)
    read(gw, path, headers=admin())
    assert read(gw, path, headers=admin()).headers["X-Cache"] == "hit"
    events = metric(gw, "cache_invalidations_total", source="event")
    r = s.server("user").request("PATCH", path, headers={**admin(), **JSON},
                                 json={"name": "Hedy"})
    assert r.status_code == 200, r.text
    poll(lambda: read(gw, path, headers=admin()).json()["name"] == "Hedy", 20 * SLOW,
         what="the gateway to serve the new name")
    assert metric(gw, "cache_invalidations_total", source="event") > events
    for _ in range(3):  # and the old name does not come back
        assert read(gw, path, headers=ident(uid)).json()["name"] == "Hedy"


def test_a_bad_redis_url_stops_the_gateway_at_start():
    p = subprocess.run([BINARY, "serve", "gateway", "--listen", "127.0.0.1:0"],
                       env=clean_env({"REDIS_URL": "http://127.0.0.1:6379"}),
                       capture_output=True, timeout=20 * SLOW)
    assert p.returncode != 0
    assert b"REDIS_URL" in p.stderr


def fresh_cookie(user, until_ms, mask, secret=SECRET):
    """An ms_fresh cookie as a gateway signs it."""
    mac = hmac.new(secret.encode(), f"{user}|{until_ms}|{mask}".encode(), hashlib.sha256).digest()
    sig = base64.urlsafe_b64encode(mac[:16]).rstrip(b"=").decode()
    return f"ms_fresh={until_ms}.{mask}.{sig}"


def two_gateways(start_shop):
    s = start_shop(gateway=True, gateway_env=SHARED)
    gw, gw2 = s.server("gateway"), s.add_gateway("gateway2", SHARED)
    wait_following(gw)
    wait_following(gw2)
    return s, gw, gw2


def seen_by(gateways, write):
    """write(), then until every gateway has seen one more event (what write() caused, when
    nothing else is under way): nothing the test caches next is dropped by it."""
    before = [metric(g, "cache_invalidations_total", source="event") for g in gateways]
    result = write()
    for g, n in zip(gateways, before):
        poll(lambda g=g, n=n: metric(g, "cache_invalidations_total", source="event") > n,
             20 * SLOW, what="the gateway to see the event")
    return result


def cached_hit(gw, path, want, **kw):
    """Polls until gw answers path from its cache with `want` (a predicate on the document)."""
    poll(lambda: (lambda r: r.headers["X-Cache"] == "hit" and want(r.json()))(read(gw, path, **kw)),
         20 * SLOW, what=f"a hit at {gw.url} with the expected document")


def test_a_writer_reads_its_own_user_change_through_another_gateway(start_shop):
    s, gw, gw2 = two_gateways(start_shop)

    def register():
        r = gw.request("POST", "/api/v1/users", json={
            "email": new_email(), "name": "Ada", "password": "correct horse battery"})
        assert r.status_code == 201, r.text
        return r.json()["id"]
    uid = seen_by((gw, gw2), register)
    path = f"/api/v1/users/{uid}"
    someone = admin()  # another caller who may read the user (a stable admin id)
    writer = requests.Session()  # keeps the gateway's cookies, as a browser does

    def patch(name):
        r = writer.patch(gw.url + path, headers={**ident(uid), **JSON}, json={"name": name},
                         timeout=10 * SLOW)
        assert r.status_code == 200, r.text
        assert "ms_fresh=" in r.headers.get("Set-Cookie", ""), r.headers
    # a read that skips the cache does not fill it: once gateway2 has dropped the user, the
    # writer's read there leaves it empty for the next caller
    seen_by((gw2,), lambda: patch("Grace"))
    mine = writer.get(gw2.url + path, headers=ident(uid), timeout=10 * SLOW)
    assert (mine.status_code, mine.headers["X-Cache"], mine.json()["name"]) == (
        200, "bypass", "Grace")
    assert read(gw2, path, headers=someone).headers["X-Cache"] == "miss"
    # every round: gateway2 holds the user in its LRU (a hit for another caller), the owner
    # changes it through the first gateway and at once reads it through gateway2
    name = "Grace"
    for i in range(6):
        cached_hit(gw2, path, lambda d, n=name: d["name"] == n, headers=someone)
        name = f"Name {i}"
        patch(name)
        mine = writer.get(gw2.url + path, headers=ident(uid), timeout=10 * SLOW)
        assert mine.status_code == 200, mine.text
        assert (mine.headers["X-Cache"], mine.json()["name"]) == ("bypass", name), (i, mine.text)
    assert metric(gw2, "cache_bypass_total", reason="own_write") >= 7
    # the other caller keeps the cache (once the event has dropped the old answer), the writer
    # still skips it
    hits = metric(gw2, "cache_requests_total", tier="lru", result="hit")
    cached_hit(gw2, path, lambda d: d["name"] == name, headers=someone)
    assert metric(gw2, "cache_requests_total", tier="lru", result="hit") > hits
    mine = writer.get(gw2.url + path, headers=ident(uid), timeout=10 * SLOW)
    assert (mine.headers["X-Cache"], mine.json()["name"]) == ("bypass", name)


def test_an_admin_reads_its_own_price_change_through_another_gateway(start_shop):
    s, gw, gw2 = two_gateways(start_shop)
    p = seen_by((gw, gw2), lambda: new_product(s, gw, price=1000))
    path = f"/api/v1/products/{p['id']}"
    writer_id = str(uuid.uuid4())
    writer = requests.Session()
    price = 1000
    for i in range(6):
        cached_hit(gw2, path, lambda d, want=price: d["price_cents"] == want)  # anyone
        price = 1100 + i
        r = writer.put(gw.url + f"{path}/price", headers={**ident(writer_id, "admin"), **JSON},
                       json={"price_cents": price}, timeout=10 * SLOW)
        assert r.status_code == 200, r.text
        mine = writer.get(gw2.url + path, headers=ident(writer_id, "admin"), timeout=10 * SLOW)
        assert mine.status_code == 200, mine.text
        assert (mine.headers["X-Cache"], mine.json()["price_cents"]) == ("bypass", price), (
            i, mine.text)
        assert mine.headers.get("ETag"), mine.headers
    assert metric(gw2, "cache_bypass_total", reason="own_write") >= 6
    # only the writer: others, with or without an identity, are answered from the cache (once
    # the last price's event has dropped the old answer)
    hits = metric(gw2, "cache_requests_total", tier="lru", result="hit")
    cached_hit(gw2, path, lambda d: d["price_cents"] == price)
    cached_hit(gw2, path, lambda d: d["price_cents"] == price, headers=ident(str(uuid.uuid4())))
    assert metric(gw2, "cache_requests_total", tier="lru", result="hit") >= hits + 2
    # a write to the user service next: the cookie keeps the inventory and adds the user
    # service (one until, the union of the services written)
    u = s.customer(via=gw)
    r = writer.patch(gw.url + f"/api/v1/users/{u}", headers={**ident(writer_id, "admin"),
                     **JSON}, json={"name": "Renamed"}, timeout=10 * SLOW)
    assert r.status_code == 200, r.text
    _, mask, _ = writer.cookies["ms_fresh"].split(".")
    assert int(mask) == USER_BIT | INVENTORY_BIT, writer.cookies["ms_fresh"]
    for target in (path, f"/api/v1/users/{u}"):
        mine = writer.get(gw2.url + target, headers=ident(writer_id, "admin"), timeout=10 * SLOW)
        assert (mine.status_code, mine.headers["X-Cache"]) == (200, "bypass"), (target, mine.text)


def test_a_fresh_cookie_counts_only_when_signed_for_its_caller(start_shop):
    s, gw, gw2 = two_gateways(start_shop)
    p = seen_by((gw, gw2), lambda: new_product(s, gw))
    path = f"/api/v1/products/{p['id']}"
    writer_id, caller = str(uuid.uuid4()), str(uuid.uuid4())
    writer = requests.Session()

    def put():
        r = writer.put(gw.url + f"{path}/price", headers={**ident(writer_id, "admin"), **JSON},
                       json={"price_cents": 4242}, timeout=10 * SLOW)
        assert r.status_code == 200, r.text
    seen_by((gw2,), put)  # its event cannot drop what gateway2 caches next
    real = "ms_fresh=" + writer.cookies["ms_fresh"]
    until = int(real.split("=")[1].split(".")[0])
    assert until > time.time() * 1000, real
    cached_hit(gw2, path, lambda d: d["price_cents"] == 4242)
    later = int(time.time() * 1000) + 60000

    def as_caller(cookie, who=caller):
        return read(gw2, path, headers={**ident(who), "Cookie": cookie})
    ignored = {
        "the writer's own cookie": real,
        "signed for another caller": fresh_cookie(writer_id, later, INVENTORY_BIT),
        "signed with another secret": fresh_cookie(caller, later, INVENTORY_BIT, "x" * 40),
        "a changed mask": fresh_cookie(caller, later, USER_BIT).replace(
            f".{USER_BIT}.", f".{INVENTORY_BIT}."),
        "a changed until": fresh_cookie(caller, later, INVENTORY_BIT).replace(
            f"={later}.", f"={later + 1}."),
        "unsigned": f"ms_fresh={later}.{INVENTORY_BIT}",
        "expired": fresh_cookie(caller, int(time.time() * 1000) - 1000, INVENTORY_BIT),
        "the user service only": fresh_cookie(caller, later, USER_BIT),
        "another cookie's name": "x" + fresh_cookie(caller, later, INVENTORY_BIT),
    }
    for why, cookie in ignored.items():
        hits = metric(gw2, "cache_requests_total", tier="lru", result="hit")
        r = as_caller("a=b; " + cookie)
        assert (r.headers["X-Cache"], r.json()["price_cents"]) == ("hit", 4242), why
        assert metric(gw2, "cache_requests_total", tier="lru", result="hit") == hits + 1, why
    # the same cookie, signed for this caller with the gateways' secret, is honoured
    bypassed = metric(gw2, "cache_bypass_total", reason="own_write")
    r = as_caller(fresh_cookie(caller, later, INVENTORY_BIT) + "; a=b")
    assert r.headers["X-Cache"] == "bypass", r.headers
    assert metric(gw2, "cache_bypass_total", reason="own_write") == bypassed + 1
    # and the writer's own, with the writer's identity
    assert as_caller(real, writer_id).headers["X-Cache"] == "bypass"


def test_a_writers_read_skips_redis_too(start_shop, redis):
    env = {**SHARED, "REDIS_URL": redis.url, "MICROSHOP_CACHE_ENTRIES": "0"}
    s = start_shop(gateway=True, gateway_env=env)
    gw = s.server("gateway")
    wait_following(gw, redis=True)
    p = new_product(s, gw, price=700)
    path = f"/api/v1/products/{p['id']}"
    read(gw, path)
    poll(lambda: read(gw, path).headers["X-Cache"] == "hit", 20 * SLOW, what="a Redis hit")
    writer_id = str(uuid.uuid4())
    writer = requests.Session()
    r = writer.put(gw.url + f"{path}/price", headers={**ident(writer_id, "admin"), **JSON},
                   json={"price_cents": 800}, timeout=10 * SLOW)
    assert r.status_code == 200, r.text
    lookups = [metric(gw, "cache_requests_total", tier="redis", result=x) for x in ("hit", "miss")]
    for _ in range(3):
        mine = writer.get(gw.url + path, headers=ident(writer_id, "admin"), timeout=10 * SLOW)
        assert (mine.headers["X-Cache"], mine.json()["price_cents"]) == ("bypass", 800)
    assert [metric(gw, "cache_requests_total", tier="redis", result=x)
            for x in ("hit", "miss")] == lookups
    # nor did those reads fill it: the next caller's lookup misses
    assert read(gw, path).headers["X-Cache"] == "miss"
