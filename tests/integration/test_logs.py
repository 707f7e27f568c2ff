"""Logs: every line of every process is one JSON object; the gateway writes one "access" line
per answer (a 200, a cache hit, a 401, a 404, a 429 alike) with its fields and never a token,
a password or a query string; MICROSHOP_ACCESS_LOG=off silences it and a bad value stops the
gateway; GET/PUT /admin/log-level reads and changes the level while the process runs, beside
/metrics (the gateway's admin listener, a service's own listener), and refuses bad bodies
without changing anything.

Exported: every process sends its lines as OTLP/HTTP JSON to ${OTEL_EXPORTER_OTLP_ENDPOINT}/v1/logs;
the gateway's admin listener receives them (POST /v1/logs, checking every field) into a ring of
5000 records, and GET /ops/api/logs filters them by trace id, service and lowest level: the
lines of one order come from the gateway and the order service under its trace id."""
import json
import re
import secrets
import time
import types
import uuid

import pytest
import requests

from conftest import SLOW, RawConn, assert_problem, free_port, ident, poll, raw_request
from shop import CARD, JSON, line, start_shop  # noqa: F401 - start_shop is a fixture

JWT_SECRET = "test-jwt-secret-0123456789abcdef-0123"
PASSWORD = "correct horse battery"
SECRET_QUERY = "q-secret-" + uuid.uuid4().hex


def log_lines(server):
    """Every line of the server's stderr, parsed; fails on one that is not a JSON object."""
    out = []
    for raw in server.log_text().splitlines():
        try:
            doc = json.loads(raw)
        except ValueError:
            pytest.fail(f"a log line of {server.target} is not JSON: {raw!r}")
        assert isinstance(doc, dict), raw
        assert {"ts", "level", "service", "msg"} <= set(doc), raw
        out.append(doc)
    return out


def access_lines(gw, **match):
    return [x for x in log_lines(gw) if x["msg"] == "access"
            and all(x.get(k) == v for k, v in match.items())]


def one_access_line(gw, **match):
    """The access line matching `match`, once written (it follows the answer)."""
    lines = poll(lambda: access_lines(gw, **match), 10 * SLOW, what=f"an access line {match}")
    assert len(lines) == 1, lines
    return lines[0]


def assert_access(line, method, path, status, route=None):
    assert line["level"] == "info" and line["service"] == "gateway", line
    assert (line["method"], line["path"], line["status"]) == (method, path, status), line
    assert line.get("route") == route, line
    assert isinstance(line["duration_ms"], (int, float)) and line["duration_ms"] >= 0, line
    assert re.fullmatch(r"\d+(\.\d{1,3})?", json.dumps(line["duration_ms"])), line
    assert isinstance(line["bytes_in"], int) and isinstance(line["bytes_out"], int), line
    assert line["client"] == "127.0.0.1", line
    # every request has a span context (recorded or not): the line names it
    assert re.fullmatch(r"[0-9a-f]{32}", line.get("trace_id", "")), line
    assert re.fullmatch(r"[0-9a-f]{16}", line.get("span_id", "")), line


def assert_no_secrets(shop, *secrets):
    """No process logged a secret, a header holding one, or a query string."""
    for name, server in shop.servers.items():
        text = server.log_text()
        log_lines(server)
        for s in secrets:
            assert s not in text, f"{name} logged {s!r}"
        for word in ("Bearer", "Authorization", "authorization", "Cookie", SECRET_QUERY):
            assert word not in text, f"{name} logged {word!r}"


def test_access_lines_for_answers_from_every_stage(start_shop):
    s = start_shop(gateway=True, env={"MICROSHOP_JWT_SECRET": JWT_SECRET})
    gw = s.server("gateway")
    user_port = s.server("user").port
    email = f"logs-{uuid.uuid4().hex[:8]}@example.com"
    body = {"email": email, "name": "Ada", "password": PASSWORD}
    r = gw.request("POST", "/api/v1/users", json=body, headers={"X-Request-Id": "reg-1"})
    assert r.status_code == 201, r.text
    user = r.json()["id"]
    line = one_access_line(gw, request_id="reg-1")
    assert_access(line, "POST", "/api/v1/users", 201, "/api/v1/users")
    assert line["bytes_in"] == len(r.request.body) and line["bytes_out"] == len(r.content)
    assert line["upstream"] == f"127.0.0.1:{user_port}" and "user" not in line, line
    r = gw.request("POST", "/api/v1/auth/token", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}

    # a 200 forwarded (the query string is never logged), then the same read from the cache
    r = gw.get(f"/api/v1/users/{user}/orders", params={"token": SECRET_QUERY},
               headers={**auth, "X-Request-Id": "ok-1"})
    assert r.status_code == 200, r.text
    line = one_access_line(gw, request_id="ok-1")
    assert_access(line, "GET", f"/api/v1/users/{user}/orders", 200, "/api/v1/users/{id}/orders")
    assert (line["user"], line["bytes_in"], line["bytes_out"]) == (user, 0, len(r.content)), line
    assert line["upstream"].startswith("127.0.0.1:") and "cache" not in line, line
    for rid, cache in (("read-1", "MISS"), ("read-2", "HIT")):
        r = gw.get(f"/api/v1/users/{user}", headers={**auth, "X-Request-Id": rid})
        assert r.status_code == 200 and r.headers["X-Cache"] == cache.lower(), r.headers
        line = one_access_line(gw, request_id=rid)
        assert_access(line, "GET", f"/api/v1/users/{user}", 200, "/api/v1/users/{id}")
        assert (line["cache"], line["user"], line["bytes_out"]) == (cache, user, len(r.content))
        assert ("upstream" in line) == (cache == "MISS"), line

    # a 401 from auth: no user, no upstream
    bad = "not-a-token-" + uuid.uuid4().hex
    r = gw.get(f"/api/v1/users/{user}", headers={"Authorization": f"Bearer {bad}",
                                                 "X-Request-Id": "unauth-1"})
    assert_problem(r, 401)
    line = one_access_line(gw, request_id="unauth-1")
    assert_access(line, "GET", f"/api/v1/users/{user}", 401, "/api/v1/users/{id}")
    assert "user" not in line and "upstream" not in line and line["bytes_out"] == len(r.content)

    # a 404 from the router, before any stage: no route, no request id of the gateway's
    path = "/api/v1/nothing-" + uuid.uuid4().hex[:8]
    r = gw.get(path, params={"access_token": SECRET_QUERY}, headers=auth)
    assert_problem(r, 404)
    line = one_access_line(gw, path=path)
    assert_access(line, "GET", path, 404)
    assert "request_id" not in line and "user" not in line and "upstream" not in line, line

    # one line per answer, not per process or stage
    assert len(access_lines(gw, request_id="read-2")) == 1
    assert_no_secrets(s, token, bad, PASSWORD)


def test_a_429_is_logged_and_access_log_off_writes_none(start_shop):
    s = start_shop(gateway=True, gateway_env={"MICROSHOP_RATE_LIMIT_RPS": "1",
                                              "MICROSHOP_RATE_LIMIT_BURST": "1"})
    gw = s.server("gateway")
    codes = []
    for i in range(3):
        codes.append(gw.get("/api/v1/products", headers={"X-Request-Id": f"rl-{i}"}).status_code)
    assert 429 in codes, codes
    i = codes.index(429)
    line = one_access_line(gw, request_id=f"rl-{i}")
    assert_access(line, "GET", "/api/v1/products", 429, "/api/v1/products")
    assert "upstream" not in line, line
    assert_no_secrets(s)

    quiet = start_shop(gateway=True, gateway_env={"MICROSHOP_ACCESS_LOG": "off"})
    gw = quiet.server("gateway")
    assert gw.get("/api/v1/products", headers={"X-Request-Id": "quiet-1"}).status_code == 200
    assert gw.get("/api/v1/nothing").status_code == 404
    assert gw.admin("PUT", "/admin/log-level", json={"level": "info"}).status_code == 200
    assert access_lines(gw) == [] and not [x for x in log_lines(gw) if x["msg"] == "request"]


def test_a_bad_access_log_value_stops_the_gateway(start_shop):
    with pytest.raises(AssertionError) as e:
        start_shop(gateway=True, gateway_env={"MICROSHOP_ACCESS_LOG": "sometimes"})
    assert "exited with 2" in str(e.value) and "MICROSHOP_ACCESS_LOG" in str(e.value), e.value


def test_the_level_changes_while_running(start_shop):
    s = start_shop(gateway=True)
    gw = s.server("gateway")
    assert gw.get("/admin/log-level").status_code == 404  # the admin listener's, never public
    r = gw.admin("GET", "/admin/log-level")
    assert r.status_code == 200 and r.json() == {"level": "info"}, r.text
    assert not [x for x in log_lines(gw) if x["level"] == "debug"]

    r = gw.admin("PUT", "/admin/log-level", json={"level": "debug"})
    assert r.status_code == 200 and r.json() == {"level": "debug"}, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert gw.admin("GET", "/admin/log-level").json() == {"level": "debug"}
    assert gw.get("/api/v1/products", headers={"X-Request-Id": "dbg-1"}).status_code == 200
    debug = poll(lambda: [x for x in log_lines(gw) if x["msg"] == "upstream answered"],
                 10 * SLOW, what="a debug line")
    assert debug[0]["level"] == "debug" and debug[0]["status"] == 200, debug
    one_access_line(gw, request_id="dbg-1")

    r = gw.admin("PUT", "/admin/log-level", json={"level": "warn"})
    assert r.status_code == 200 and r.json() == {"level": "warn"}, r.text
    changed = [x for x in log_lines(gw) if x["msg"] == "log level changed"]
    assert [(x["level"], x["was"]) for x in changed] == [("debug", "info"), ("warn", "debug")]
    assert gw.get("/api/v1/products", headers={"X-Request-Id": "warn-1"}).status_code == 200
    # an answer later, on the same loop thread as warn-1's line would have been: still none
    assert gw.get("/api/v1/products", headers={"X-Request-Id": "warn-2"}).status_code == 200
    lines = log_lines(gw)
    assert not [x for x in lines if x.get("request_id", "").startswith("warn-")]
    assert len([x for x in lines if x["msg"] == "upstream answered"]) == len(debug)

    # a service's own listener serves it beside its /metrics
    user = s.server("user")
    r = user.get("/admin/log-level")
    assert r.status_code == 200 and r.json() == {"level": "info"}, r.text
    r = user.request("PUT", "/admin/log-level", json={"level": "error"})
    assert r.status_code == 200 and r.json() == {"level": "error"}
    assert gw.admin("GET", "/admin/log-level").json() == {"level": "warn"}  # each its own


def test_bad_bodies_change_nothing(start_server):
    server = start_server()  # a service's own listener

    def put(**kw):
        return server.admin("PUT", "/admin/log-level", **kw)

    assert_problem(put(json={"level": "loud"}), 422, "level")
    doc = assert_problem(put(json={"level": "DEBUG"}), 422, "level")
    msg = [e["message"] for e in doc["errors"] if e["field"] == "level"][0]
    assert all(w in msg for w in ("debug", "info", "warn", "error")), doc
    assert_problem(put(json={}), 422, "level")
    assert_problem(put(json={"level": 3}), 400, "level")
    assert_problem(put(json={"level": "debug", "colour": "red"}), 400)
    assert_problem(put(data="{", headers=JSON), 400)
    assert_problem(put(json=["debug"]), 400)
    assert_problem(put(data="level=debug",
                       headers={"Content-Type": "application/x-www-form-urlencoded"}), 415)
    assert server.admin("GET", "/admin/log-level").json() == {"level": "info"}
    assert not [x for x in log_lines(server) if x["msg"] == "log level changed"]
    r = server.admin("POST", "/admin/log-level", json={"level": "debug"})
    assert r.status_code == 405 and "PUT" in r.headers["Allow"]


# ---- exported lines: the gateway's receiver and queries ----

def record(msg, trace_id=None, span_id=None, severity=9, t=None, **attrs):
    r = {"timeUnixNano": str(t or time.time_ns()), "severityNumber": severity,
         "severityText": {5: "DEBUG", 9: "INFO", 13: "WARN", 17: "ERROR"}.get(severity, ""),
         "body": {"stringValue": msg},
         "attributes": [{"key": k, "value": v if isinstance(v, dict) else {"stringValue": v}}
                        for k, v in attrs.items()]}
    if trace_id:
        r["traceId"], r["spanId"] = trace_id, span_id or secrets.token_hex(8)
    return r


def log_export(service, records):
    return {"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeLogs": [{"scope": {"name": "microshop"}, "logRecords": records}]}]}


def post_logs(gw, doc, content_type="application/json"):
    return gw.admin("POST", "/v1/logs", data=json.dumps(doc), headers={"Content-Type": content_type})


def logs(gw, **params):
    r = gw.admin("GET", "/ops/api/logs", params={"limit": 1000, **params})
    assert r.status_code == 200, r.text
    return r.json()


def test_the_log_receiver_keeps_records_and_filters_them(start_server):
    gw = start_server(target="gateway")
    tid, other = secrets.token_hex(16), secrets.token_hex(16)
    t0 = time.time_ns()
    r = post_logs(gw, log_export("gateway", [
        record("access", tid, t=t0, method="POST", **{"status": {"intValue": "201"}}),
        record("slow upstream", tid, severity=13, t=t0 + 3),
        record("unrelated", other, t=t0 + 4)]))
    assert r.status_code == 200 and r.json() == {}, r.text
    r = post_logs(gw, log_export("order", [
        record("order accepted", tid.upper(), t=t0 + 1, order_id="o-1"),
        record("debug detail", tid, severity=5, t=t0 + 2),
        record("no trace", t=t0 + 5)]))
    assert r.status_code == 200 and r.json() == {}, r.text

    # by trace id: only that trace's lines, from both services, newest first
    doc = logs(gw, trace_id=tid)
    assert [(x["service"], x["msg"]) for x in doc["logs"]] == [
        ("gateway", "slow upstream"), ("order", "debug detail"), ("order", "order accepted"),
        ("gateway", "access")], doc
    assert all(x["trace_id"] == tid for x in doc["logs"])  # stored lower-case
    accepted = doc["logs"][2]
    assert accepted["level"] == "info" and accepted["attributes"] == {"order_id": "o-1"}
    assert accepted["time_unix_nano"] == str(t0 + 1) and accepted["span_id"]
    assert doc["logs"][3]["attributes"] == {"method": "POST", "status": 201}
    assert doc["matched"] == 4 and doc["stored_logs"] == 6
    assert sorted(doc["services"]) == ["gateway", "order"]
    # by service and by lowest level, and the limit keeps the newest
    assert [x["msg"] for x in logs(gw, service="order")["logs"]] == [
        "no trace", "debug detail", "order accepted"]
    assert [x["msg"] for x in logs(gw, trace_id=tid, level="info")["logs"]] == [
        "slow upstream", "order accepted", "access"]
    assert [x["msg"] for x in logs(gw, level="warn")["logs"]] == ["slow upstream"]
    assert [x["msg"] for x in logs(gw, trace_id=tid, limit=1)["logs"]] == ["slow upstream"]
    none = logs(gw, trace_id=secrets.token_hex(16))
    assert none["logs"] == [] and none["matched"] == 0
    nulls = logs(gw, service="order")["logs"][0]
    assert nulls["trace_id"] is None and nulls["span_id"] is None

    # lines about operations traffic are accepted, not kept
    r = post_logs(gw, log_export("gateway", [
        record("request", endpoint="/v1/logs"), record("request", endpoint="/health"),
        record("access", path="/ops/api/logs")]))
    assert r.status_code == 200 and r.json() == {}, r.text
    assert logs(gw)["stored_logs"] == 6
    assert gw.metric("otlp_receiver_log_records_total", outcome="accepted") == 6
    assert gw.metric("otlp_receiver_log_records_total", outcome="ignored") == 3
    assert gw.metric("otlp_receiver_stored_log_records") == 6


def test_the_log_receiver_names_what_is_wrong(start_server):
    gw = start_server(target="gateway")
    tid = secrets.token_hex(16)
    assert_problem(post_logs(gw, log_export("order", [record("x")]), "application/x-protobuf"),
                   415)
    assert_problem(gw.admin("POST", "/v1/logs", data="{", headers=JSON), 400, "body")
    assert_problem(post_logs(gw, {"resourceLogs": 3}), 400, "resourceLogs")
    assert_problem(post_logs(gw, {"resourceLogs": [{"resource": 3}]}), 400,
                   "resourceLogs[0].resource")
    assert_problem(post_logs(gw, {"resourceLogs": [{"scopeLogs": {}}]}), 400,
                   "resourceLogs[0].scopeLogs")
    assert_problem(post_logs(gw, {"resourceLogs": [{"scopeLogs": [{"logRecords": {}}]}]}), 400,
                   "resourceLogs[0].scopeLogs[0].logRecords")
    # each field of a record, named
    at = "resourceLogs[0].scopeLogs[0].logRecords[0]"
    cases = {
        "timeUnixNano": {"timeUnixNano": "soon"},
        "observedTimeUnixNano": {"observedTimeUnixNano": "-1"},
        "severityNumber": {"severityNumber": 25},
        "severityText": {"severityText": 3},
        "body": {"body": "text"},
        "traceId": {"traceId": "XYZ"},
        "spanId": {"spanId": "b7ad6b71692033"},
        "attributes": {"attributes": {"k": "v"}},
    }
    for field, change in cases.items():
        bad = {**record("x", tid), **change}
        assert_problem(post_logs(gw, log_export("order", [bad])), 400, f"{at}.{field}")
    no_time = record("x")
    del no_time["timeUnixNano"]
    assert_problem(post_logs(gw, log_export("order", [no_time])), 400, f"{at}.timeUnixNano")
    assert_problem(post_logs(gw, log_export("order", [{**record("x"), "traceId": "0" * 32}])),
                   400, f"{at}.traceId")
    assert_problem(post_logs(gw, log_export("order", [3])), 400, at)
    assert logs(gw)["stored_logs"] == 0
    # some malformed, the rest kept: OTLP's partial success
    r = post_logs(gw, log_export("order", [record("kept", tid), record("bad", "nothex")]))
    assert r.status_code == 200, r.text
    partial = r.json()["partialSuccess"]
    assert partial["rejectedLogRecords"] == 1, partial
    assert "logRecords[1].traceId" in partial["errorMessage"], partial
    assert [x["msg"] for x in logs(gw)["logs"]] == ["kept"]
    # an observed time alone, an empty trace id, a body that is not a string: all fine
    odd = {"observedTimeUnixNano": str(time.time_ns()), "traceId": "", "spanId": "",
           "body": {"kvlistValue": {"values": [{"key": "a", "value": {"intValue": "1"}}]}}}
    r = post_logs(gw, log_export("order", [odd]))
    assert r.status_code == 200 and r.json() == {}, r.text
    got = logs(gw, service="order")["logs"][0]
    assert got["msg"] == '{"a":1}' and got["trace_id"] is None and got["level"] == "info", got
    assert post_logs(gw, {}).json() == {}
    assert gw.metric("otlp_receiver_log_records_total", outcome="rejected") >= 1
    # a body past 4 MiB is refused from its Content-Length
    admin_port = int(gw.admin_url.rsplit(":", 1)[1])
    with RawConn(types.SimpleNamespace(port=admin_port)) as c:
        c.send(raw_request("POST", "/v1/logs", headers={
            "Content-Type": "application/json", "Content-Length": str(5 << 20)}))
        assert c.response().status_code == 413
    # the query's parameters, each named
    for name, bad in (("trace_id", "ABCDEF0123456789ABCDEF0123456789"), ("trace_id", "abc"),
                      ("trace_id", tid + "0"), ("level", "loud"), ("level", "INFO"),
                      ("limit", "0"), ("limit", "1001"), ("limit", "x")):
        assert_problem(gw.admin("GET", "/ops/api/logs", params={name: bad}), 400, name)
    assert gw.get("/ops/api/logs").status_code == 404  # the admin listener's, never public
    assert gw.get("/v1/logs").status_code == 404


def test_the_ring_drops_the_oldest_records(start_server):
    gw = start_server(target="gateway")
    t0 = time.time_ns() - 10 ** 12
    first = record("first", t=t0)
    rest = [record(f"r{i}", t=t0 + i + 1) for i in range(5000)]
    r = post_logs(gw, log_export("order", [first] + rest))
    assert r.status_code == 200 and r.json() == {}, r.text
    doc = logs(gw, limit=1000)
    assert doc["stored_logs"] == 5000 and doc["matched"] == 5000
    assert doc["logs"][0]["msg"] == "r4999" and len(doc["logs"]) == 1000
    assert "first" not in [x["msg"] for x in logs(gw, service="order", limit=1000)["logs"]]
    assert gw.metric("otlp_receiver_log_records_evicted_total") == 1


def test_an_orders_lines_are_found_by_its_trace_id(start_shop):
    """Every process exports its lines to the gateway's receiver, as `microshop run` sets it
    up: an order's trace id finds the gateway's access line and the order service's line."""
    port = free_port()
    s = start_shop(gateway=True, gateway_args=("--admin", f"127.0.0.1:{port}"),
                   env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                        "OTEL_BLRP_SCHEDULE_DELAY": "200", "OTEL_BSP_SCHEDULE_DELAY": "200"})
    gw = s.server("gateway")
    user = s.known_customer(via=gw)
    p = s.stocked()
    tid = secrets.token_hex(16)
    r = gw.request("POST", "/api/v1/orders", headers={
        **JSON, **ident(user), "traceparent": f"00-{tid}-{secrets.token_hex(8)}-01"},
        json={"items": [line(p, 1)], "payment": {"card_number": CARD}})
    assert r.status_code == 201, r.text
    order_id = r.json()["id"]

    def found():
        doc = logs(gw, trace_id=tid)
        msgs = {(x["service"], x["msg"]) for x in doc["logs"]}
        return doc if {("gateway", "access"), ("order", "order accepted")} <= msgs else None
    doc = poll(found, 30 * SLOW, interval=0.2, what="the order's lines from gateway and order")
    assert all(x["trace_id"] == tid for x in doc["logs"]), doc
    assert re.fullmatch(r"[0-9a-f]{16}", doc["logs"][0]["span_id"]), doc
    accepted = [x for x in doc["logs"] if x["msg"] == "order accepted"][0]
    assert accepted["attributes"]["order_id"] == order_id and accepted["level"] == "info"
    access = [x for x in doc["logs"] if x["msg"] == "access"][0]
    assert access["attributes"]["status"] == 201 and access["attributes"]["method"] == "POST"
    # lines of another request are not among them
    assert gw.get("/api/v1/products").status_code == 200
    assert all(x["trace_id"] == tid for x in logs(gw, trace_id=tid)["logs"])
    # the exporters count what they sent; nothing was lost
    for name in ("gateway", "order"):
        assert s.server(name).metric("log_records_exported_total") > 0, name
        assert s.server(name).metric("log_records_dropped_total") == 0, name
    # the exports (spans and lines) of the lines are not themselves in the console
    assert not [t for t in gw.admin("GET", "/ops/api/traces", params={"limit": 1000}).json()[
        "traces"] if t["root_name"] in ("POST /v1/logs", "POST /v1/traces")]
    assert_no_secrets(s, CARD)


def test_logs_export_off_and_a_bad_setting(start_server):
    """OTEL_LOGS_EXPORTER=none: the spans go on, the lines stay on stderr; a value but otlp or
    none stops the process naming it."""
    port = free_port()
    gw = start_server("--admin", f"127.0.0.1:{port}", target="gateway", env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_LOGS_EXPORTER": "none"})
    assert gw.get("/api/v1/nothing").status_code == 404
    poll(lambda: (gw.metric("trace_spans_exported_total") or 0) > 0, 20 * SLOW,
         what="the gateway's spans exported")
    assert gw.metric("log_records_exported_total") == 0
    assert logs(gw)["stored_logs"] == 0
    with pytest.raises(AssertionError) as e:
        start_server(target="user", env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                                         "OTEL_LOGS_EXPORTER": "console"})
    assert "OTEL_LOGS_EXPORTER" in str(e.value), e.value
