"""Distributed tracing: every process exports its spans as OTLP/HTTP JSON to
OTEL_EXPORTER_OTLP_ENDPOINT. A checkout through the gateway is one trace over the gateway, the
order service, the inventory and the payment service, with parent links that hold together; a
caller's valid traceparent is continued and an invalid one starts a new trace; the database
statements of a request are CLIENT spans under its spans, with the SQL but no values;
OTEL_SERVICE_NAME names the resource; sampled out, no span leaves but requests work; a collector
that refuses for a while still gets the spans; none at all costs the requests nothing and is
counted."""
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import BACKEND, SLOW, ident, poll
from shop import ADDRESS, CARD, JSON, line, start_shop  # noqa: F401 - start_shop is a fixture


class Receiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1: keeps every span POSTed to /v1/traces (with
    its service.name), answering 503 to the first `refuse` of them (`posts` counts them). The
    log lines the services export beside (POST /v1/logs) are answered 200 and not kept."""

    def __init__(self, refuse=0):
        self.lock = threading.Lock()
        self.spans, self.posts, self.refuse = [], 0, refuse
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                refused = False
                with receiver.lock:
                    if self.path == "/v1/traces":
                        receiver.posts += 1
                        refused = receiver.posts <= receiver.refuse
                        if not refused:
                            receiver._keep(json.loads(body))
                status = 503 if refused else 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def _keep(self, doc):
        for rs in doc["resourceSpans"]:
            attrs = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
            service = attrs["service.name"]["stringValue"]
            for ss in rs["scopeSpans"]:
                assert ss["scope"]["name"] == "microshop"
                for sp in ss["spans"]:
                    sp["service"] = service
                    sp["attrs"] = {a["key"]: next(iter(a["value"].values()))
                                   for a in sp.get("attributes", [])}
                    self.spans.append(sp)

    def trace(self, trace_id):
        with self.lock:
            return [s for s in self.spans if s["traceId"] == trace_id]

    def all(self):
        with self.lock:
            return list(self.spans)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def otel_env(endpoint, **extra):
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200", **extra}


def checkout(s, gw, headers=None):
    """A customer's confirmed checkout through the gateway; the response."""
    user = s.known_customer(via=gw)
    p = s.stocked()
    r = gw.request("POST", "/api/v1/orders",
                   headers={**JSON, **ident(user), **(headers or {})},
                   json={"items": [line(p, 1)], "payment": {"card_number": CARD},
                         "shipping_address": ADDRESS})
    assert r.status_code == 201, r.text
    return r


def root_of(rx, trace_id, services):
    """The trace's spans once every service in `services` has exported its part of it."""
    def complete():
        spans = rx.trace(trace_id)
        have = {s["service"] for s in spans}
        ids = {s["spanId"] for s in spans}
        # every parent but the root's is in the trace (spans arrive out of order)
        dangling = [s for s in spans if s.get("parentSpanId") and s["parentSpanId"] not in ids]
        return spans if services <= have and len(dangling) <= 1 else None
    return poll(complete, 20 * SLOW, interval=0.05, what=f"the spans of {services}")


def gateway_server_span(rx, path="/api/v1/orders", method="POST"):
    def find():
        got = [s for s in rx.all() if s["service"] == "gateway" and s["kind"] == 2
               and s["attrs"].get("url.path") == path
               and s["attrs"].get("http.request.method") == method]
        return got[-1] if got else None
    return poll(find, 20 * SLOW, interval=0.05, what="the gateway's server span")


def test_a_checkout_is_one_trace_over_every_service(start_shop, receiver):
    s = start_shop(gateway=True, env=otel_env(receiver.url))
    gw = s.server("gateway")
    checkout(s, gw)
    root = gateway_server_span(receiver)
    assert "parentSpanId" not in root or not root["parentSpanId"]
    assert root["name"].startswith("POST ")
    spans = root_of(receiver, root["traceId"], {"gateway", "order", "inventory", "payment"})
    ids = {sp["spanId"] for sp in spans}
    for sp in spans:
        assert sp["traceId"] == root["traceId"]
        if sp is not root and sp["spanId"] != root["spanId"]:
            assert sp.get("parentSpanId") in ids, sp
        assert int(sp["endTimeUnixNano"]) >= int(sp["startTimeUnixNano"])
    # the gateway's CLIENT call is the order service's SERVER span's parent
    order_server = [sp for sp in spans if sp["service"] == "order" and sp["kind"] == 2
                    and sp["attrs"].get("http.route") == "/api/v1/orders"]
    assert len(order_server) == 1, order_server
    parent = next(sp for sp in spans if sp["spanId"] == order_server[0]["parentSpanId"])
    assert (parent["service"], parent["kind"], parent["name"]) == ("gateway", 3, "POST")
    assert parent["parentSpanId"] == root["spanId"]
    o = order_server[0]["attrs"]
    assert o["http.request.method"] == "POST" and o["url.path"] == "/api/v1/orders"
    assert o["http.response.status_code"] == "201" and o["client.address"] == "127.0.0.1"
    # the order service's calls to the inventory and the payment service (its other CLIENT
    # spans are database statements, checked below)
    clients = [sp for sp in spans if sp["service"] == "order" and sp["kind"] == 3
               and "db.system.name" not in sp["attrs"]]
    assert clients and all(c["attrs"]["server.address"] == "127.0.0.1" for c in clients)
    assert all(c["attrs"]["http.response.status_code"].startswith("2") for c in clients)
    assert {sp["service"] for sp in spans if sp["kind"] == 2} >= {"inventory", "payment"}
    # the checkout's steps: INTERNAL spans under the order service's SERVER span, each the
    # parent of its call
    steps = {sp["name"]: sp for sp in spans if sp["service"] == "order" and sp["kind"] == 1}
    assert {"check_inventory", "save_order", "reserve", "pay"} <= set(steps), sorted(steps)
    for name in ("check_inventory", "save_order", "reserve", "pay"):
        assert steps[name]["parentSpanId"] == order_server[0]["spanId"], name
    for name in ("check_inventory", "reserve", "pay"):
        assert [c for c in clients if c["parentSpanId"] == steps[name]["spanId"]], name
    # the database statements of each service's request: CLIENT spans under its spans
    check_db_spans(receiver, root["traceId"], {"order", "inventory", "payment"})
    # spans are counted on /metrics
    poll(lambda: (s.order_svc.metric("trace_spans_exported_total") or 0) >= 1, 20 * SLOW,
         what="exported spans counted")
    assert s.order_svc.metric("trace_spans_started_total") >= 1


SYSTEM = {"sqlite": "sqlite", "postgres": "postgresql"}[BACKEND]


def check_db_spans(rx, trace_id, services):
    """Every service in `services` has database spans in the trace, each a CLIENT span whose
    parent is a span of the same service, with the semantic-convention attributes."""
    def arrived():
        spans = rx.trace(trace_id)
        have = {sp["service"] for sp in spans if "db.system.name" in sp["attrs"]}
        ids = {sp["spanId"] for sp in spans}
        parents = all(sp["parentSpanId"] in ids for sp in spans if "db.system.name" in sp["attrs"])
        return spans if have >= services and parents else None
    spans = poll(arrived, 20 * SLOW, interval=0.05, what=f"the database spans of {services}")
    by_id = {sp["spanId"]: sp for sp in spans}
    db = [sp for sp in spans if "db.system.name" in sp["attrs"]]
    for sp in db:
        a = sp["attrs"]
        assert sp["kind"] == 3, sp
        parent = by_id[sp["parentSpanId"]]
        assert parent["service"] == sp["service"] and parent["kind"] in (1, 2), (sp, parent)
        assert a["db.system.name"] == SYSTEM
        op = a["db.operation.name"]
        assert op.isupper() and a["db.query.text"].upper().lstrip().startswith(op), a
        assert sp["name"] == (f"{op} {a['db.collection.name']}"
                              if "db.collection.name" in a else op), sp["name"]
        if SYSTEM == "postgresql":
            assert a["server.address"] and int(a["server.port"]) > 0, a
        else:
            assert "server.address" not in a
    # at least one statement names its table, and the order service's read one
    assert any("db.collection.name" in sp["attrs"] for sp in db)
    assert any(sp["service"] == "order" and sp["attrs"]["db.operation.name"] == "SELECT"
               for sp in db)


def test_database_spans_carry_no_values(start_shop, receiver):
    s = start_shop(env=otel_env(receiver.url))
    user = s.customer()
    name = f"Tracy {uuid.uuid4().hex}"
    r = s.server("user").request("PATCH", f"/api/v1/users/{user}", user=user,
                                 headers=JSON, json={"name": name})
    assert r.status_code == 200, r.text

    def updated():
        return [sp for sp in receiver.all() if sp["service"] == "user"
                and sp["attrs"].get("db.operation.name") == "UPDATE"] or None
    update = poll(updated, 20 * SLOW, interval=0.05, what="the user's UPDATE span")[0]
    server = poll(lambda: next((sp for sp in receiver.trace(update["traceId"])
                                if sp["kind"] == 2), None), 20 * SLOW, interval=0.05,
                  what="the request's span")
    assert server["name"] == "PATCH /api/v1/users/{id}"
    assert update["parentSpanId"] == server["spanId"] and update["kind"] == 3
    assert update["name"] == "UPDATE users"
    assert update["attrs"]["db.collection.name"] == "users"
    assert update["attrs"]["db.query.text"].startswith("UPDATE users SET name = $2")
    # BEGIN and COMMIT of its transaction beside it; nowhere the values
    poll(lambda: {"BEGIN", "COMMIT"} <= {sp["attrs"].get("db.operation.name")
                                         for sp in receiver.trace(update["traceId"])},
         20 * SLOW, interval=0.05, what="BEGIN and COMMIT")
    assert name not in json.dumps(receiver.trace(update["traceId"]))
    # the registration's INSERT, queued from the password hash's callback, is in its trace too
    insert = poll(lambda: [sp for sp in receiver.all() if sp["service"] == "user"
                           and sp["name"] == "INSERT users"] or None, 20 * SLOW, interval=0.05,
                  what="the registration's INSERT span")[0]
    parent = poll(lambda: next((sp for sp in receiver.trace(insert["traceId"])
                                if sp["spanId"] == insert["parentSpanId"]), None), 20 * SLOW,
                  interval=0.05, what="the INSERT's parent")
    assert parent["name"] == "POST /api/v1/users" and parent["kind"] == 2


def test_otel_service_name_names_the_resource(start_shop, receiver):
    s = start_shop(env=otel_env(receiver.url, OTEL_SERVICE_NAME="shop-eu",
                                OTEL_RESOURCE_ATTRIBUTES="service.name=ignored,team=shop"))
    user = s.customer()
    r = s.server("user").get(f"/api/v1/users/{user}", headers=ident(user))
    assert r.status_code == 200
    got = poll(lambda: [sp for sp in receiver.all()
                        if sp["kind"] == 2 and sp["name"] == "GET /api/v1/users/{id}"] or None,
               20 * SLOW, interval=0.05, what="the user service's span")
    assert {sp["service"] for sp in got} == {"shop-eu"}
    assert {sp["service"] for sp in receiver.all()} == {"shop-eu"}


def test_a_valid_traceparent_is_continued_and_an_invalid_one_is_not(start_shop, receiver):
    s = start_shop(gateway=True, env=otel_env(receiver.url))
    gw = s.server("gateway")
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    user = s.customer(via=gw)
    r = gw.get(f"/api/v1/users/{user}", headers={
        **ident(user), "traceparent": f"00-{trace_id}-{span_id}-01"})
    assert r.status_code == 200, r.text
    spans = root_of(receiver, trace_id, {"gateway", "user"})
    root = next(sp for sp in spans if sp["service"] == "gateway" and sp["kind"] == 2)
    assert root["parentSpanId"] == span_id
    user_server = next(sp for sp in spans if sp["service"] == "user" and sp["kind"] == 2)
    assert user_server["attrs"]["http.route"] == "/api/v1/users/{id}"
    assert user_server["name"] == "GET /api/v1/users/{id}"

    bad = trace_id.upper()  # upper-case hex is invalid: a new trace
    r = gw.get(f"/api/v1/users/{user}/orders", headers={
        **ident(user), "traceparent": f"00-{bad}-{span_id}-01"})
    assert r.status_code == 200, r.text
    root = gateway_server_span(receiver, f"/api/v1/users/{user}/orders", "GET")
    assert root["traceId"] != trace_id.lower()
    assert not root.get("parentSpanId")


def test_sampled_out_nothing_is_exported(start_shop, receiver):
    s = start_shop(gateway=True, env=otel_env(receiver.url, OTEL_TRACES_SAMPLER_ARG="0"))
    gw = s.server("gateway")
    checkout(s, gw)
    # an unsampled caller's flag is followed too
    user = s.customer(via=gw)
    r = gw.get(f"/api/v1/users/{user}", headers={
        **ident(user), "traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00"})
    assert r.status_code == 200
    for name in ("gateway", "order", "user"):
        assert s.server(name).metric("trace_spans_started_total") == 0
    assert receiver.all() == []


def test_spans_arrive_after_the_collector_refused_a_while(start_shop):
    rx = Receiver(refuse=3)
    try:
        s = start_shop(env=otel_env(rx.url))
        user = s.customer()
        r = s.server("user").get(f"/api/v1/users/{user}", headers=ident(user))
        assert r.status_code == 200
        poll(lambda: any(sp["service"] == "user" and sp["kind"] == 2 for sp in rx.all()),
             30 * SLOW, interval=0.05, what="the user service's spans after the refusals")
        assert rx.posts > 3
        assert sum(s.server(n).metric("trace_export_failures_total")
                   for n in ("user", "order", "inventory", "payment")) >= 1
    finally:
        rx.close()


def test_no_collector_costs_the_requests_nothing(start_shop):
    rx = Receiver()
    endpoint = rx.url
    rx.close()  # nothing listens there now
    s = start_shop(gateway=True, env=otel_env(endpoint, OTEL_BSP_MAX_QUEUE_SIZE="4"))
    gw = s.server("gateway")
    for _ in range(3):
        checkout(s, gw)
    order = s.order_svc

    def counted():
        return ((order.metric("trace_spans_dropped_total") or 0) +
                (order.metric("trace_export_failures_total") or 0)) > 0
    poll(counted, 20 * SLOW, what="the lost spans counted")
    assert order.metric("trace_spans_exported_total") == 0
