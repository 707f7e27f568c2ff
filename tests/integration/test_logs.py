"""Logs: every line of every process is one JSON object; the gateway writes one "access" line
per answer (a 200, a cache hit, a 401, a 404, a 429 alike) with its fields and never a token,
a password or a query string; MICROSHOP_ACCESS_LOG=off silences it and a bad value stops the
gateway; GET/PUT /admin/log-level reads and changes the level while the process runs, beside
/metrics (the gateway's admin listener, a service's own listener), and refuses bad bodies
without changing anything."""
import json
import re
import uuid

import pytest
import requests

from conftest import SLOW, assert_problem, poll
from shop import JSON, start_shop  # noqa: F401 - start_shop is a fixture

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
