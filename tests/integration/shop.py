"""A whole shop for checkout tests: the user, inventory (one or two instances on ONE database),
payment and order services on the test's backend, the order service wired to the others
through MICROSHOP_USER_URL / MICROSHOP_INVENTORY_URL / MICROSHOP_PAYMENT_URL.

Each service listens on a port picked before it starts, so that kill(name) and restart(name)
bring it back on the same port and data and the order service's URLs stay right. Fixtures:
`shop` (one per module, the cheap default: tests make their own customers and products) and
`start_shop` (a factory for a test that needs its own, e.g. other flags)."""
import json
import uuid

import pytest

from conftest import SLOW, Database, ServerSet, admin, free_port, ident, new_email, poll

CARD = "4242424242424242"
DECLINED = "4000000000000002"
ADDRESS = {"line1": "1 Infinite Loop", "city": "Cupertino", "postal_code": "95014",
           "country": "US"}
SHIPPING = 499              # cents, below FREE_SHIPPING_FROM
FREE_SHIPPING_FROM = 5000   # subtotal in cents from which shipping is free
JSON = {"Content-Type": "application/json"}


def shipping_for(subtotal):
    return 0 if subtotal >= FREE_SHIPPING_FROM else SHIPPING


def line(product, quantity=1):
    """One order line: `product` is a product document or its id."""
    pid = product["id"] if isinstance(product, dict) else product
    return {"product_id": pid, "quantity": quantity}


class Shop:
    """The processes of one shop. Attributes the shop does not have are the order service's
    (db, request, get, metric, port, url, ...), so a Shop stands in for the order server."""

    def __init__(self, instances=1, user=True, order_args=(), order_env=None, drop_env=(),
                 env=None, gateway=False, order_instances=1, gateway_args=(), gateway_env=None,
                 payment_instances=1):
        """`env` goes to every service (NATS_URL, for instance), order_env to the order
        service only; with `gateway`, a gateway in front of them all (servers["gateway"]),
        started with gateway_args and gateway_env. order_instances > 1 adds order2, ... on the
        order service's database (behind the gateway with the first); payment_instances > 1
        adds payment2, ... on the payment service's database (the order service calls them
        all)."""
        self._common_env = dict(env or {})
        self._set = ServerSet()
        self._specs = {}   # name -> (target, db, args, env)
        self.servers = {}  # name -> the running Server
        self.with_user = user
        try:
            if user:
                self._spec("user", "user", Database("user.db"))
            inv_db = Database("inventory.db")  # shared by every inventory instance
            self.inventory_names = []
            for i in range(instances):
                name = "inventory" if i == 0 else f"inventory{i + 1}"
                self._spec(name, "inventory", inv_db, own_db=(i == 0))
                self.inventory_names.append(name)
            pay_db = Database("payment.db")  # shared by every payment instance
            payment_names = []
            for i in range(payment_instances):
                name = "payment" if i == 0 else f"payment{i + 1}"
                self._spec(name, "payment", pay_db, own_db=(i == 0))
                payment_names.append(name)
            env = {"MICROSHOP_INVENTORY_URL": ",".join(
                self.servers[n].url for n in self.inventory_names),
                "MICROSHOP_PAYMENT_URL": ",".join(self.servers[n].url for n in payment_names)}
            if user:
                env["MICROSHOP_USER_URL"] = self.servers["user"].url
            env.update(order_env or {})
            for k in drop_env:  # e.g. an order service without a payment service to ask
                env.pop(k, None)
            order_db = Database("order.db")
            self._spec("order", "order", order_db, args=order_args, env=env)
            for i in range(2, order_instances + 1):
                self._spec(f"order{i}", "order", order_db, args=order_args, env=env,
                           own_db=False)
            if gateway:
                self.add_gateway("gateway", gateway_env, gateway_args)
        except BaseException:
            self._set.close()
            raise

    def add_gateway(self, name, env=None, args=()):
        """A gateway (servers[name]) in front of every service instance, with `env` and the
        flags `args` besides."""
        urls = {f"MICROSHOP_{n.upper()}_URL": ",".join(
            self.servers[i].url for i in self.servers if i.rstrip("0123456789") == n)
            for n in ("user", "order", "inventory", "payment") if n in self.servers}
        self._spec(name, "gateway", Database(f"{name}.db"), args=args,
                   env={**urls, **(env or {})})
        return self.servers[name]

    def _spec(self, name, target, db, args=(), env=None, own_db=True):
        if own_db:
            self._set.dbs.append(db)
        port = free_port()
        self._specs[name] = (target, db, ("--listen", f"127.0.0.1:{port}", *args),
                             {**self._common_env, **(env or {})})
        self._start(name)

    def _start(self, name):
        target, db, args, env = self._specs[name]
        self.servers[name] = self._set.start(*args, env=env, db=db, target=target)
        return self.servers[name]

    # ---- the processes ----

    def server(self, name):
        return self.servers[name]

    @property
    def order_svc(self):
        return self.servers["order"]

    @property
    def inventory_svc(self):
        return self.servers["inventory"]

    @property
    def payment_svc(self):
        return self.servers["payment"]

    @property
    def user_svc(self):
        return self.servers["user"]

    def __getattr__(self, attr):
        if attr.startswith("_") or attr in ("servers", "inventory_names"):
            raise AttributeError(attr)
        return getattr(self.servers["order"], attr)

    def restart(self, name):
        """SIGTERM (it must exit 0), then the same process again on its port and data."""
        self.stop(name)
        return self._start(name)

    def stop(self, name):
        """SIGTERM (it must exit 0); start(name) brings it back on its port and data."""
        rc = self.servers[name].stop()
        assert rc == 0, f"{name} exited with {rc}:\n{self.servers[name].log_tail()}"

    def start(self, name):
        return self._start(name)

    def kill(self, name, restart=True):
        """kill -9, then (with `restart`) the same process again on its port and data."""
        self.servers[name].kill()
        return self._start(name) if restart else None

    def close(self):
        self._set.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- the user service ----

    def customer(self, via=None):
        """A registered customer's id (a random one when the shop has no user service),
        registered through `via` (a gateway) or straight at the user service."""
        if not self.with_user:
            return str(uuid.uuid4())
        r = (via or self.servers["user"]).request("POST", "/api/v1/users", json={
            "email": new_email(), "name": "Ada Lovelace", "password": "correct horse battery"})
        assert r.status_code == 201, f"{r.status_code} {r.text}"
        return r.json()["id"]

    def known_customer(self, via=None):
        """customer(via), once the order service knows it (its directory of users)."""
        user = self.customer(via)
        poll(lambda: self.order_svc.db.count("user_directory", "WHERE user_id = ?", [user]) == 1,
             20 * SLOW, what="the order service to know the user")
        return user

    # ---- the inventory ----

    def product(self, stock=10, price=1299, currency="EUR", **extra):
        body = {"sku": "SKU-" + uuid.uuid4().hex[:12], "name": "Widget", "price_cents": price,
                "currency": currency, "stock": stock, **extra}
        r = self.servers["inventory"].request("POST", "/api/v1/products", headers=admin(),
                                              json=body)
        assert r.status_code == 201, f"{r.status_code} {r.text}"
        return r.json()

    def stocked(self, price=150, currency="EUR"):
        """A product at `price` with practically endless stock, made once per shop (for tests
        of the order service that are not about stock)."""
        cache = self.__dict__.setdefault("_stocked", {})
        if (price, currency) not in cache:
            cache[(price, currency)] = self.product(stock=10 ** 9, price=price, currency=currency)
        return cache[(price, currency)]

    def stock(self, pid, api=True):
        """{available, on_hand, reserved} of a product: on_hand and reserved from the
        inventory's database (its API shows them only in answers to admin writes); with `api`,
        the public GET's available must agree (only when nothing moves the stock meanwhile)."""
        pid = pid["id"] if isinstance(pid, dict) else pid
        inv = self.servers["inventory"]
        (on_hand, reserved), = inv.db.query(
            "SELECT on_hand, reserved FROM stock_levels WHERE product_id = ?", [pid])
        if api:
            r = inv.get(f"/api/v1/products/{pid}")
            assert r.status_code == 200, f"{r.status_code} {r.text}"
            assert r.json()["available"] == on_hand - reserved, (r.json(), on_hand, reserved)
        return {"available": on_hand - reserved, "on_hand": on_hand, "reserved": reserved}

    def reservation(self, order_id):
        """The inventory's reservation of an order (None when it has none)."""
        r = self.servers["inventory"].get(f"/internal/v1/reservations/{order_id}")
        if r.status_code == 404:
            return None
        assert r.status_code == 200, f"{r.status_code} {r.text}"
        return r.json()

    # ---- the payment service ----

    def payments(self, order_id):
        """Every payment of an order (admin GET /api/v1/payments?order_id=)."""
        r = self.servers["payment"].get("/api/v1/payments", params={"order_id": order_id},
                                        headers=admin())
        assert r.status_code == 200, f"{r.status_code} {r.text}"
        doc = r.json()
        assert doc["next_cursor"] is None, doc
        return doc["items"]

    # ---- the order service ----

    def checkout(self, user, items, card=CARD, key=None, address=ADDRESS, headers=None,
                 **extra):
        """POST /api/v1/orders as customer `user`; `items` are line() dicts or (product,
        quantity) pairs; extra fields go into the body as they are. Returns the response."""
        lines = [i if isinstance(i, dict) else line(*i) for i in items]
        body = {"items": lines, "shipping_address": address, **extra}
        if card is not None:
            body["payment"] = {"card_number": card}
        h = dict(JSON)
        if key is not None:
            h["Idempotency-Key"] = key
        h.update(headers or {})
        return self.servers["order"].request("POST", "/api/v1/orders", data=json.dumps(body),
                                             headers={**h, **ident(user)})

    def order(self, user, oid, role="customer"):
        """GET /api/v1/orders/{id} as `user`; the document (200 asserted)."""
        r = self.servers["order"].get(f"/api/v1/orders/{oid}", headers=ident(user, role))
        assert r.status_code == 200, f"{r.status_code} {r.text}"
        return r.json()

    def settled(self, user, oid, timeout=20):
        """The order once its saga has ended (status no longer pending)."""
        return poll(lambda: (lambda d: d if d["status"] != "pending" else None)(
            self.order(user, oid)), timeout * SLOW, interval=0.05,
            what=f"order {oid} to leave pending")

    def events(self, oid):
        """The order's events (admin GET /api/v1/orders/{id}/events)."""
        r = self.servers["order"].get(f"/api/v1/orders/{oid}/events", headers=admin())
        assert r.status_code == 200, f"{r.status_code} {r.text}"
        doc = r.json()
        assert doc["next_cursor"] is None, doc
        return doc["items"]

    def event_types(self, oid):
        return [e["type"] for e in self.events(oid)]


@pytest.fixture(scope="module")
def shop():
    """One shop shared by a module's tests (each test makes its own customers and products)."""
    with Shop() as s:
        yield s


@pytest.fixture
def start_shop():
    """A factory: start_shop(instances=1, user=True, order_args=(), order_env=None,
    drop_env=(), env=None, gateway=False, order_instances=1, gateway_args=(),
    gateway_env=None, payment_instances=1) -> Shop,
    stopped (each process must exit 0) at the end of the test."""
    shops = []

    def start(**kw):
        shops.append(Shop(**kw))
        return shops[-1]
    try:
        yield start
    finally:
        problems = []
        for s in shops:
            try:
                s.close()
            except BaseException as e:  # noqa: BLE001 - every shop is stopped, then reported
                problems.append(str(e))
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)
