"""The payment service's chaos settings: GET/PUT /internal/v1/chaos while running, the flags
and environment variables at start, a chaos failure answered 503 + Retry-After before anything
is written, and latency served by a timer that leaves the loop free for other requests."""
import json
import select
import subprocess
import tempfile
import time

import pytest

from conftest import (BINARY, RawConn, assert_problem, clean_env, raw_request)

from test_payments import JSON, charge, charge_body, nothing_written, refund

CHAOS = "/internal/v1/chaos"


def put_chaos(s, doc=None, raw=None):
    data = raw if raw is not None else json.dumps(doc).encode()
    return s.request("PUT", CHAOS, data=data, headers=JSON)


def settings(s):
    r = s.get(CHAOS)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    return r.json()


def test_defaults_are_no_chaos(start_server):
    s = start_server(target="payment")
    assert settings(s) == {"latency_ms": 0, "failure_rate": 0.0}


def test_failure_rate_one_answers_503_and_writes_nothing(start_server):
    s = start_server(target="payment")
    paid = charge_body()
    assert charge(s, paid).status_code == 201
    r = put_chaos(s, {"latency_ms": 0, "failure_rate": 1.0})
    assert r.status_code == 200 and r.json() == {"latency_ms": 0, "failure_rate": 1.0}
    body = charge_body()
    with nothing_written(s):
        for _ in range(3):
            doc = assert_problem(charge(s, body), 503)
            assert doc["reason"] == "provider_unavailable", doc
            assert assert_problem(refund(s, paid["order_id"]), 503)["reason"] == \
                "provider_unavailable"
    # reads are not the provider: they still answer
    assert s.get("/api/v1/payments", params={"order_id": paid["order_id"]},
                 headers={"X-User-Id": paid["user_id"], "X-User-Role": "customer"}
                 ).status_code == 200
    # the retry after the provider recovers goes through, once
    assert put_chaos(s, {"latency_ms": 0, "failure_rate": 0}).status_code == 200
    assert charge(s, body).status_code == 201
    assert refund(s, paid["order_id"]).json()["status"] == "refunded"
    assert s.db.count("payments", "WHERE order_id = ?", [body["order_id"]]) == 1


def test_a_partial_failure_rate_fails_some_and_writes_only_what_succeeded(start_server):
    s = start_server(target="payment")
    assert put_chaos(s, {"latency_ms": 0, "failure_rate": 0.5}).status_code == 200
    ok = failed = 0
    for _ in range(60):
        r = charge(s, charge_body())
        assert r.status_code in (201, 503), r.text
        ok, failed = ok + (r.status_code == 201), failed + (r.status_code == 503)
    # 60 rolls at one half: all on one side has a chance of 2 ** -59
    assert ok and failed
    assert s.db.count("payments") == ok and s.db.count("transactions") == ok


def test_latency_delays_the_answer_without_blocking_the_loop(start_server):
    # one loop thread: /health is served by the very loop that waits
    s = start_server("--threads", "1", target="payment")
    assert put_chaos(s, {"latency_ms": 300, "failure_rate": 0}).status_code == 200
    t0 = time.monotonic()
    assert charge(s, charge_body()).status_code == 201
    assert time.monotonic() - t0 >= 0.3
    # a long delay: /health answers again and again while the charge is still waiting
    assert put_chaos(s, {"latency_ms": 3000, "failure_rate": 0}).status_code == 200
    body = json.dumps(charge_body()).encode()
    with RawConn(s) as slow:
        slow.send(raw_request("POST", "/internal/v1/payments", JSON, body))
        sent = time.monotonic()
        healthy = 0
        while time.monotonic() - sent < 1.0:
            assert s.get("/health").status_code == 200
            ready, _, _ = select.select([slow.sock], [], [], 0)
            assert not ready, "the delayed charge was answered before its latency"
            healthy += 1
        assert healthy >= 2
        answer = slow.response()
        assert answer.status_code == 201, answer.text
        assert time.monotonic() - sent >= 3.0


@pytest.mark.parametrize("doc,status,field", [
    ({"latency_ms": -1, "failure_rate": 0}, 422, "latency_ms"),
    ({"latency_ms": 30001, "failure_rate": 0}, 422, "latency_ms"),
    ({"latency_ms": 1.5, "failure_rate": 0}, 400, "latency_ms"),
    ({"latency_ms": 0, "failure_rate": 1.01}, 422, "failure_rate"),
    ({"latency_ms": 0, "failure_rate": -0.1}, 422, "failure_rate"),
    ({"latency_ms": 0, "failure_rate": "0.5"}, 400, "failure_rate"),
    ({"latency_ms": 0}, 422, "failure_rate"),
    ({"failure_rate": 0.5}, 422, "latency_ms"),
    ({"latency_ms": 0, "failure_rate": 0, "jitter_ms": 5}, 400, "jitter_ms"),
])
def test_bad_chaos_settings_change_nothing(start_server, doc, status, field):
    s = start_server(target="payment")
    assert put_chaos(s, {"latency_ms": 7, "failure_rate": 0.25}).status_code == 200
    assert_problem(put_chaos(s, doc), status, field)
    assert settings(s) == {"latency_ms": 7, "failure_rate": 0.25}


def test_chaos_body_not_json(start_server):
    s = start_server(target="payment")
    assert_problem(put_chaos(s, raw=b"{"), 400, "body")
    assert_problem(s.request("PUT", CHAOS, data=b"{}", headers={"Content-Type": "text/plain"}),
                   415)
    assert settings(s) == {"latency_ms": 0, "failure_rate": 0.0}


def test_flags_set_chaos_at_start(start_server):
    s = start_server("--chaos-latency-ms", "40", "--chaos-failure-rate", "0.75",
                     target="payment")
    assert settings(s) == {"latency_ms": 40, "failure_rate": 0.75}
    s = start_server("--chaos-failure-rate", "1", target="payment")
    with nothing_written(s):
        assert_problem(charge(s, charge_body()), 503)


def test_environment_sets_chaos_and_flags_win(start_server):
    env = {"MICROSHOP_CHAOS_LATENCY_MS": "25", "MICROSHOP_CHAOS_FAILURE_RATE": "0.5"}
    assert settings(start_server(env=env, target="payment")) == {"latency_ms": 25,
                                                                 "failure_rate": 0.5}
    s = start_server("--chaos-latency-ms", "5", env=env, target="payment")
    assert settings(s) == {"latency_ms": 5, "failure_rate": 0.5}


@pytest.mark.parametrize("args", [
    ["--chaos-failure-rate", "1.5"], ["--chaos-failure-rate", "half"],
    ["--chaos-failure-rate", "nan"], ["--chaos-latency-ms", "30001"],
    ["--chaos-latency-ms", "-1"],
])
def test_bad_chaos_flags_exit_2(args):
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.run([BINARY, "serve", "payment", "--listen", "127.0.0.1:0", "--data", d,
                            *args], capture_output=True, text=True, timeout=30, env=clean_env())
    assert p.returncode == 2, p.stderr
    assert "--chaos-" in p.stderr


def test_help_lists_the_chaos_flags():
    p = subprocess.run([BINARY, "help", "payment"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0
    for flag in ("--chaos-latency-ms", "MICROSHOP_CHAOS_LATENCY_MS", "--chaos-failure-rate",
                 "MICROSHOP_CHAOS_FAILURE_RATE"):
        assert flag in p.stdout
    # the other targets do not take them
    p = subprocess.run([BINARY, "help", "user"], capture_output=True, text=True, timeout=30)
    assert "--chaos-" not in p.stdout


def test_other_targets_refuse_chaos_flags():
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.run([BINARY, "serve", "user", "--data", d, "--chaos-latency-ms", "5"],
                           capture_output=True, text=True, timeout=30, env=clean_env())
    assert p.returncode == 2 and "chaos-latency-ms" in p.stderr


def test_latency_past_the_request_deadline_writes_nothing(start_server):
    s = start_server("--request-timeout-ms", "200", target="payment")
    assert put_chaos(s, {"latency_ms": 400, "failure_rate": 0}).status_code == 200
    with nothing_written(s):
        r = charge(s, charge_body())
        assert r.status_code in (503, 504), r.text
        assert_problem(r, r.status_code)
