"""The gateway's ops console (admin listener): its OTLP/HTTP JSON receiver (POST /v1/traces) and
trace queries (/ops/api/traces), and the page itself (/ops) in a real headless Chromium driven
over the DevTools protocol: it loads without console errors or exceptions, shows every
service healthy, lists a trace and draws its waterfall; an order placed through the API is
found there with spans of the gateway, order, inventory and payment services (once the
services export their spans), and its log lines from the gateway and the order service are
found in the Logs panel by its trace id (typed into the filter, or picked by a click on the
trace), a line's trace link drawing that trace. Screenshots are kept in the test's tmp dir and in
$MS_ARTEFACTS (default build/test-artefacts/console)."""
import json
import os
import re
import secrets
import time
import types

import pytest
import requests

from browser import Browser
from conftest import SLOW, RawConn, assert_problem, free_port, ident, poll, raw_request
from shop import JSON, Shop, line

SERVICES = ("user", "order", "inventory", "payment")


# ---- OTLP documents ----

def span(trace_id, span_id, name, parent="", start=0, dur_ms=5, kind=2, status=0, attrs=None):
    base = time.time_ns() if start == 0 else start
    return {"traceId": trace_id, "spanId": span_id, "parentSpanId": parent, "name": name,
            "kind": kind, "startTimeUnixNano": str(base),
            "endTimeUnixNano": str(base + dur_ms * 1_000_000),
            "attributes": [{"key": k, "value": v} for k, v in (attrs or {}).items()],
            "status": {"code": status, "message": "boom" if status == 2 else ""}}


def export(service, spans):
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"scope": {"name": "microshop"}, "spans": spans}]}]}


def a_trace():
    """A checkout's shape: gateway -> order -> inventory and payment, as four exports."""
    tid, ids = secrets.token_hex(16), [secrets.token_hex(8) for _ in range(6)]
    t0 = time.time_ns()
    ms = 1_000_000
    return tid, [
        export("gateway", [span(tid, ids[0], "POST /api/v1/orders", start=t0, dur_ms=40),
                           span(tid, ids[1], "POST order", ids[0], t0 + ms, 38, kind=3)]),
        export("order", [span(tid, ids[2], "POST /api/v1/orders", ids[1], t0 + 2 * ms, 35),
                         span(tid, ids[3], "POST inventory", ids[2], t0 + 3 * ms, 10, kind=3)]),
        export("inventory", [span(tid, ids[4], "POST /internal/v1/reservations", ids[3],
                                  t0 + 4 * ms, 8)]),
        export("payment", [span(tid, ids[5], "POST /internal/v1/payments", ids[2], t0 + 15 * ms,
                                12, status=2, attrs={"payment.declined": {"boolValue": True}})]),
    ]


# ---- the shop ----

@pytest.fixture(scope="module")
def shop():
    """Every service behind a gateway whose admin port is known before the services start,
    so that each exports its spans there (OTEL_EXPORTER_OTLP_ENDPOINT)."""
    port = free_port()
    s = Shop(gateway=True, gateway_args=("--admin", f"127.0.0.1:{port}"),
             env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"})
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def gw(shop):
    return shop.server("gateway")


def post_otlp(gw, doc, content_type="application/json"):
    return gw.admin("POST", "/v1/traces", data=json.dumps(doc),
                    headers={"Content-Type": content_type})


# ---- the receiver and the queries ----

def test_the_receiver_keeps_spans_and_the_queries_answer(gw):
    tid, exports = a_trace()
    for doc in exports:
        r = post_otlp(gw, doc)
        assert r.status_code == 200, r.text
        assert r.json() == {}
    r = gw.admin("GET", "/ops/api/traces", params={"limit": 1000})
    assert r.status_code == 200
    mine = [t for t in r.json()["traces"] if t["trace_id"] == tid]
    assert len(mine) == 1, r.json()
    t = mine[0]
    assert t["root_name"] == "POST /api/v1/orders" and t["root_service"] == "gateway"
    assert set(t["services"]) == {"gateway", "order", "inventory", "payment"}
    assert t["span_count"] == 6 and t["error"] is True
    assert t["duration_ms"] == pytest.approx(40.0)

    r = gw.admin("GET", f"/ops/api/traces/{tid}")
    assert r.status_code == 200
    doc = r.json()
    assert [s["service"] for s in doc["spans"]] == [
        "gateway", "gateway", "order", "order", "inventory", "payment"]  # by start
    root = doc["spans"][0]
    assert root["parent_span_id"] is None and root["kind"] == "server"
    pay = doc["spans"][-1]
    assert pay["status"] == {"code": "error", "message": "boom"} and pay["error"] is True
    assert pay["attributes"] == {"payment.declined": True}
    assert pay["parent_span_id"] == doc["spans"][2]["span_id"]
    assert pay["start_unix_nano"].isdigit() and pay["duration_ms"] == pytest.approx(12.0)

    # a service filter; the newest trace first
    tid2, exports2 = a_trace()
    post_otlp(gw, exports2[2])  # inventory only
    listed = [t["trace_id"] for t in gw.admin("GET", "/ops/api/traces", params={
        "service": "inventory", "limit": 1000}).json()["traces"]]
    assert listed.index(tid2) < listed.index(tid), listed
    only_pay = gw.admin("GET", "/ops/api/traces", params={"service": "payment",
                                                          "limit": 1000}).json()["traces"]
    assert tid2 not in [t["trace_id"] for t in only_pay] and tid in [
        t["trace_id"] for t in only_pay]
    assert len(gw.admin("GET", "/ops/api/traces", params={"limit": 1}).json()["traces"]) == 1
    # work no request began (a root CLIENT span: a feed's poll) is left out on demand
    tid3 = secrets.token_hex(16)
    post_otlp(gw, export("order", [span(tid3, secrets.token_hex(8), "GET", kind=3)]))

    def ids(**params):
        return [t["trace_id"] for t in gw.admin("GET", "/ops/api/traces", params={
            "limit": 1000, **params}).json()["traces"]]
    assert tid3 in ids() and tid3 in ids(background=1) and tid in ids(background=0)
    assert tid3 not in ids(background=0)
    assert t["root_kind"] == "server" and t["background"] is False


def test_the_receiver_refuses_what_is_not_otlp_json(gw):
    tid, exports = a_trace()
    # protobuf is not spoken
    assert_problem(post_otlp(gw, exports[0], "application/x-protobuf"), 415)
    # not JSON, not the shape, every span malformed: 400 naming what
    r = gw.admin("POST", "/v1/traces", data="{", headers=JSON)
    assert_problem(r, 400, "body")
    assert_problem(post_otlp(gw, {"resourceSpans": 3}), 400, "resourceSpans")
    assert_problem(post_otlp(gw, {"resourceSpans": [{"scopeSpans": [{"spans": {}}]}]}), 400,
                   "resourceSpans[0].scopeSpans[0].spans")
    bad = export("order", [span("XYZ", "b7ad6b7169203331", "x"),
                           span(tid, "b7ad6b71692033", "x"),
                           span("0" * 32, "b7ad6b7169203331", "x")])
    doc = assert_problem(post_otlp(gw, bad), 400)
    fields = [e["field"] for e in doc["errors"]]
    assert fields == ["resourceSpans[0].scopeSpans[0].spans[0].traceId",
                      "resourceSpans[0].scopeSpans[0].spans[1].spanId",
                      "resourceSpans[0].scopeSpans[0].spans[2].traceId"], doc
    late = span(tid, "b7ad6b7169203331", "x")
    late["endTimeUnixNano"] = str(int(late["startTimeUnixNano"]) - 1)
    assert_problem(post_otlp(gw, export("order", [late])), 400,
                   "resourceSpans[0].scopeSpans[0].spans[0].endTimeUnixNano")
    # some malformed, the rest kept: OTLP's partial success
    good = span(tid, "c7ad6b7169203331", "kept")
    r = post_otlp(gw, export("order", [good, span(tid, "nothex", "dropped")]))
    assert r.status_code == 200, r.text
    partial = r.json()["partialSuccess"]
    assert partial["rejectedSpans"] == 1 and "spans[1].spanId" in partial["errorMessage"]
    names = [s["name"] for s in gw.admin("GET", f"/ops/api/traces/{tid}").json()["spans"]]
    assert names == ["kept"]
    # the root spans of probes, scrapes, exports and the console's own polling are not kept
    ops_tid = secrets.token_hex(16)
    noise = [span(ops_tid, secrets.token_hex(8), n) for n in (
        "POST /v1/traces", "GET /admin/instances", "GET /ops/api/traces", "GET /health")]
    noise[0]["attributes"] = [{"key": "http.route", "value": {"stringValue": "/v1/traces"}}]
    r = post_otlp(gw, export("gateway", noise))
    assert r.status_code == 200 and r.json() == {}, r.text
    assert_problem(gw.admin("GET", f"/ops/api/traces/{ops_tid}"), 404)
    assert gw.metric("otlp_receiver_spans_total", outcome="ignored") >= 4
    # an empty export is fine
    r = post_otlp(gw, {})
    assert r.status_code == 200 and r.json() == {}
    assert gw.metric("otlp_receiver_spans_total", outcome="rejected") >= 1
    # a body past the limit is refused from its Content-Length, before it is sent
    admin_port = int(gw.admin_url.rsplit(":", 1)[1])
    with RawConn(types.SimpleNamespace(port=admin_port)) as c:
        c.send(raw_request("POST", "/v1/traces", headers={
            "Content-Type": "application/json", "Content-Length": str(5 << 20)}))
        assert c.response().status_code == 413


def test_the_store_is_bounded_and_drops_the_oldest_traces(start_server):
    """1000 traces, 20000 spans, 2000 spans a trace: past them the trace updated longest ago
    goes (on a gateway of its own: the module's store stays as the other tests left it)."""
    gw = start_server(target="gateway")
    first = secrets.token_hex(16)
    t0 = time.time_ns() - 10 ** 12  # older than anything else
    spans = [span(first, secrets.token_hex(8), "first", start=t0)] + [
        span(secrets.token_hex(16), secrets.token_hex(8), f"t{i}", start=t0 + i + 1)
        for i in range(1000)]
    r = post_otlp(gw, export("order", spans))
    assert r.status_code == 200 and r.json() == {}, r.text
    doc = gw.admin("GET", "/ops/api/traces", params={"limit": 1000}).json()
    assert doc["stored_traces"] == 1000 and len(doc["traces"]) == 1000
    assert_problem(gw.admin("GET", f"/ops/api/traces/{first}"), 404)
    assert doc["traces"][-1]["root_name"] == "t0" and doc["traces"][0]["root_name"] == "t999"
    assert gw.metric("otlp_receiver_traces_evicted_total") == 1
    # a trace holds 2000 spans at most: the rest are refused, as a partial success
    big = secrets.token_hex(16)
    r = post_otlp(gw, export("order", [span(big, secrets.token_hex(8), f"s{i}", start=t0)
                                       for i in range(2001)]))
    assert r.status_code == 200, r.text
    assert r.json()["partialSuccess"]["rejectedSpans"] == 1, r.text
    assert gw.admin("GET", f"/ops/api/traces/{big}").json()["span_count"] == 2000
    # 20000 spans in all: ten more full traces push out what came before them
    for _ in range(10):
        tid = secrets.token_hex(16)
        r = post_otlp(gw, export("order", [span(tid, secrets.token_hex(8), f"s{i}")
                                           for i in range(2000)]))
        assert r.status_code == 200 and r.json() == {}, r.text
    doc = gw.admin("GET", "/ops/api/traces", params={"limit": 1000}).json()
    assert doc["stored_spans"] == 20000 and doc["stored_traces"] == 10, doc["stored_traces"]
    assert gw.admin("GET", f"/ops/api/traces/{tid}").json()["span_count"] == 2000
    assert gw.metric("otlp_receiver_stored_spans") == 20000


def test_an_export_past_4_mib_is_refused_whatever_the_listener_allows(start_server):
    gw = start_server("--max-body-bytes", str(8 << 20), target="gateway")
    tid = secrets.token_hex(16)
    one = span(tid, secrets.token_hex(8), "x" * 1000)
    n = (4 << 20) // len(json.dumps(one)) + 10
    doc = export("order", [one] * n)
    assert len(json.dumps(doc)) > 4 << 20
    doc = assert_problem(post_otlp(gw, doc), 413)
    assert "4 MiB" in doc["detail"]
    assert_problem(gw.admin("GET", f"/ops/api/traces/{tid}"), 404)


def test_trace_queries_check_their_parameters(gw):
    for bad in ("ABCDEF0123456789ABCDEF0123456789", "abc", "0af7651916cd43dd8448eb211c80319cz"):
        assert_problem(gw.admin("GET", f"/ops/api/traces/{bad}"), 400, "trace_id")
    assert_problem(gw.admin("GET", f"/ops/api/traces/{secrets.token_hex(16)}"), 404)
    for bad in ("0", "1001", "x", ""):
        assert_problem(gw.admin("GET", "/ops/api/traces", params={"limit": bad}), 400, "limit")
    assert_problem(gw.admin("GET", "/ops/api/traces", params={"background": "yes"}), 400,
                   "background")


def test_the_console_files_come_from_the_binary_under_a_strict_policy(gw):
    for path, ctype in (("/ops", "text/html"), ("/ops/app.js", "text/javascript"),
                        ("/ops/app.css", "text/css"), ("/ops/chart.js", "text/javascript")):
        r = gw.admin("GET", path)
        assert r.status_code == 200, path
        assert r.headers["Content-Type"].startswith(ctype), (path, r.headers)
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    page = gw.admin("GET", "/ops").text
    assert not re.search(r"(src|href)=\"(https?:)?//", page), "the page links outside"
    assert "Chart.js v" in gw.admin("GET", "/ops/chart.js").text[:200]
    # the public listener does not serve it
    assert gw.get("/ops").status_code == 404


# ---- the page in Chromium ----

@pytest.fixture(scope="module")
def browser():
    b = Browser()
    try:
        yield b
    finally:
        b.close()


ALL_HEALTHY = ("document.body.dataset.health === 'healthy' && " + " && ".join(
    f"!!document.querySelector('#services tr[data-service=\"{s}\"][data-health=\"healthy\"]')"
    for s in SERVICES))


def open_console(browser, gw):
    browser.errors.clear()
    browser.navigate(gw.admin_url + "/ops")
    browser.wait_for(ALL_HEALTHY, 30 * SLOW, what="the console to show every service healthy")


def test_the_console_shows_every_service_healthy(browser, gw, shop, tmp_path):
    open_console(browser, gw)
    assert browser.evaluate("typeof Chart") == "function"
    assert set(browser.evaluate("document.body.dataset.services").split(",")) == set(SERVICES)
    # a little traffic through the gateway: the charts get points, the table numbers
    for _ in range(5):
        assert gw.get("/api/v1/products", params={"limit": 5}).status_code == 200
    browser.wait_for("document.querySelectorAll('#charts canvas').length === 4", 10 * SLOW,
                     what="a chart per service")
    browser.wait_for(
        "[...document.querySelectorAll('#services tr[data-service=\"inventory\"] td.num')]"
        ".some(td => td.textContent !== '–')", 20 * SLOW, what="numbers for the inventory")
    paths = browser.screenshot("services.png", tmp_path)
    assert all(os.path.getsize(p) > 10_000 for p in paths)
    assert browser.errors == [], browser.errors


def test_a_trace_is_listed_and_drawn(browser, gw, tmp_path):
    tid, exports = a_trace()
    for doc in exports:
        assert post_otlp(gw, doc).status_code == 200
    open_console(browser, gw)
    row = f"#traces tr[data-trace-id=\"{tid}\"]"
    browser.wait_for(f"!!document.querySelector('{row}')", 20 * SLOW, what="the trace listed")
    assert set(browser.evaluate(f"document.querySelector('{row}').dataset.services")
               .split(",")) == {"gateway", "order", "inventory", "payment"}
    browser.evaluate(f"document.querySelector('{row}').click()")
    browser.wait_for(f"document.getElementById('waterfall').dataset.traceId === '{tid}'",
                     10 * SLOW, what="the waterfall drawn")
    bars = browser.evaluate(
        "[...document.querySelectorAll('#waterfall .wf-row')].map(r => "
        "[r.dataset.service, r.classList.contains('error'), "
        "parseFloat(r.querySelector('.wf-label').style.paddingLeft)])")
    # tree order: each child under its parent, indented one step further
    assert bars == [["gateway", False, 0], ["gateway", False, 14], ["order", False, 28],
                    ["order", False, 42], ["inventory", False, 56], ["payment", True, 42]], bars
    browser.screenshot("trace-waterfall.png", tmp_path)
    assert browser.errors == [], browser.errors


def test_an_order_through_the_api_is_traced_across_the_services(browser, shop, gw, tmp_path):
    tid = place_traced_order(shop, gw)
    want = {"gateway", "order", "inventory", "payment"}

    def traced():
        got = gw.admin("GET", f"/ops/api/traces/{tid}")
        return got.status_code == 200 and want <= set(got.json()["services"])
    poll(traced, 30 * SLOW, interval=0.2, what="spans of the order from every service")
    open_console(browser, gw)
    row = f"#traces tr[data-trace-id=\"{tid}\"]"
    browser.wait_for(f"!!document.querySelector('{row}')", 20 * SLOW, what="the order's trace")
    browser.evaluate(f"document.querySelector('{row}').click()")
    browser.wait_for(f"document.getElementById('waterfall').dataset.traceId === '{tid}'",
                     10 * SLOW, what="the order's waterfall")
    drawn = set(browser.evaluate(
        "[...document.querySelectorAll('#waterfall .wf-row')].map(r => r.dataset.service)"))
    assert want <= drawn, drawn
    browser.screenshot("order-trace.png", tmp_path)
    assert browser.errors == [], browser.errors


def place_traced_order(shop, gw):
    """An order through the gateway's API under a trace id of the test's: that id."""
    r = gw.request("POST", "/api/v1/users", json={
        "email": f"console-{secrets.token_hex(4)}@example.com", "name": "Ada",
        "password": "correct horse battery"})
    assert r.status_code == 201, r.text
    user = r.json()["id"]
    p = shop.product(stock=5, price=2500)
    poll(lambda: shop.order_svc.db.count("user_directory", "WHERE user_id = ?", [user]) == 1,
         20 * SLOW, what="the order service to know the user")
    tid = secrets.token_hex(16)
    r = gw.request("POST", "/api/v1/orders", headers={
        **JSON, **ident(user), "traceparent": f"00-{tid}-{secrets.token_hex(8)}-01"},
        json={"items": [line(p, 1)], "payment": {"card_number": "4242424242424242"}})
    assert r.status_code == 201, r.text
    return tid


LOG_ROWS = "[...document.querySelectorAll('#logs tbody tr')]"


def test_an_orders_log_lines_are_found_by_its_trace_id(browser, shop, gw, tmp_path):
    tid = place_traced_order(shop, gw)
    want = {("gateway", "access"), ("order", "order accepted")}

    def exported():
        got = gw.admin("GET", "/ops/api/logs", params={"trace_id": tid}).json()["logs"]
        return want <= {(x["service"], x["msg"]) for x in got}
    poll(exported, 30 * SLOW, interval=0.2, what="the order's lines from gateway and order")
    poll(lambda: gw.admin("GET", f"/ops/api/traces/{tid}").status_code == 200, 30 * SLOW,
         interval=0.2, what="the order's trace")
    open_console(browser, gw)
    # typed into the filter: only that trace's lines, from both services
    browser.evaluate(f"(() => {{ const i = document.getElementById('log-trace'); i.focus(); "
                     f"i.value = '{tid}'; i.dispatchEvent(new Event('input')); }})()")
    browser.wait_for(f"document.getElementById('logs').dataset.traceId === '{tid}' && "
                     f"{LOG_ROWS}.some(r => r.dataset.service === 'order')", 20 * SLOW,
                     what="the order's lines in the Logs panel")
    rows = browser.evaluate(
        f"{LOG_ROWS}.map(r => [r.dataset.service, r.dataset.traceId, "
        "r.querySelector('td.msg').textContent])")
    assert {(svc, msg) for svc, _, msg in rows} >= want, rows
    assert all(t == tid for _, t, _ in rows), rows
    browser.screenshot("order-logs.png", tmp_path)
    # a line's trace link draws that trace
    browser.evaluate(f"document.querySelector('#logs a.trace-link[data-trace-id=\"{tid}\"]')"
                     ".click()")
    browser.wait_for(f"document.getElementById('waterfall').dataset.traceId === '{tid}'",
                     10 * SLOW, what="the waterfall of the line's trace")
    # a half-typed id asks nothing and is marked; a click on a listed trace filters by it
    browser.evaluate("(() => { const i = document.getElementById('log-trace'); "
                     "i.value = 'abc'; i.dispatchEvent(new Event('input')); })()")
    assert browser.evaluate("document.getElementById('log-trace').classList.contains('invalid')")
    other, exports = a_trace()
    for doc in exports:
        assert post_otlp(gw, doc).status_code == 200
    row = f"#traces tr[data-trace-id=\"{other}\"]"
    browser.wait_for(f"!!document.querySelector('{row}')", 20 * SLOW, what="another trace listed")
    browser.evaluate(f"document.querySelector('{row}').click()")
    browser.wait_for(f"document.getElementById('logs').dataset.traceId === '{other}'", 10 * SLOW,
                     what="the logs filtered by the clicked trace")
    assert browser.evaluate("document.getElementById('log-trace').value") == other
    assert not browser.evaluate("document.getElementById('log-trace').classList"
                                ".contains('invalid')")
    assert browser.evaluate(f"{LOG_ROWS}.length") == 0  # that trace has no lines
    # and the waterfall's link to its lines
    row = f"#traces tr[data-trace-id=\"{tid}\"]"
    browser.wait_for(f"!!document.querySelector('{row}')", 20 * SLOW, what="the order's trace")
    browser.evaluate(f"document.querySelector('{row}').click()")
    browser.wait_for(f"document.getElementById('waterfall').dataset.traceId === '{tid}'",
                     10 * SLOW, what="the order's waterfall")
    browser.evaluate("document.getElementById('log-trace').value = ''")
    browser.evaluate("document.querySelector('#waterfall a.wf-logs').click()")
    browser.wait_for(f"document.getElementById('logs').dataset.traceId === '{tid}' && "
                     f"{LOG_ROWS}.length > 0", 10 * SLOW, what="the waterfall's log lines")
    browser.screenshot("order-trace-logs.png", tmp_path)
    assert browser.errors == [], browser.errors


def test_microshop_run_points_every_process_at_its_console(monkeypatch):
    """`microshop run` sets OTEL_EXPORTER_OTLP_ENDPOINT to the gateway's admin listener for
    every child (the user had none), and the banner names /ops."""
    from test_supervisor import Run
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    run = Run()
    try:
        assert "/ops" in run.banner, run.banner
        want = f"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{run.admin_port}".encode()
        for target in ("gateway", *SERVICES):
            pid = run.child(target)
            assert pid, f"no child serves {target}"
            with open(f"/proc/{pid}/environ", "rb") as f:
                assert want in f.read().split(b"\0"), target
        r = requests.get(run.admin + "/ops", timeout=10 * SLOW)
        assert r.status_code == 200 and "microshop ops" in r.text
        assert run.stop() == 0, run.log_tail()
    finally:
        run.close()
