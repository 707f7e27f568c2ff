"""The gateway's own edge rules: per-client rate limits (429 with Retry-After, never more than
the set rate lets through), header and body limits (431, 413, nothing forwarded), per-route
deadlines (504), and session consistency: a client's
list reads through the gateway include its own writes, on this gateway (by user) and on
another that shares the secret (by the signed cookie), which no other client can use."""
import base64
import hashlib
import hmac
import os
import signal
import time

import requests

from conftest import SLOW, RawConn, assert_problem, ident, poll, raw_request
from shop import JSON, line, start_shop  # noqa: F401 - start_shop is a fixture

SECRET = "s" * 40


def test_rate_limit_answers_429_with_retry_after_and_never_lets_more_through(start_shop):
    rate, burst = 5, 5
    s = start_shop(gateway=True, gateway_env={"MICROSHOP_RATE_LIMIT_RPS": str(rate),
                                              "MICROSHOP_RATE_LIMIT_BURST": str(burst)})
    gw = s.server("gateway")
    started = time.monotonic()
    # until the first refusal: however slow the machine, the bucket refills at only 5/s
    answers = []
    while len(answers) < 200 and 429 not in [a.status_code for a in answers]:
        answers.append(gw.get("/api/v1/products"))
    codes = [a.status_code for a in answers]
    assert codes[:burst] == [200] * burst, codes
    assert codes[-1] == 429, codes
    r = answers[-1]
    assert_problem(r, 429)
    assert 1 <= int(r.headers["Retry-After"]) <= 1, r.headers
    # over a longer run the gateway lets through at most the burst plus the rate's refill
    ok = 0
    while time.monotonic() - started < 2.5:
        ok += gw.get("/api/v1/products").status_code == 200
        time.sleep(0.01)
    elapsed = time.monotonic() - started
    allowed = burst + rate * elapsed
    assert ok + codes.count(200) <= allowed + 1, (ok, codes.count(200), allowed)
    assert ok >= 1  # the bucket refills: the client is not locked out
    # after the time it was told, the client gets in again
    time.sleep(int(r.headers["Retry-After"]))
    assert gw.get("/api/v1/products").status_code == 200


def test_rate_limit_zero_turns_it_off_and_a_bad_setting_stops_the_gateway(start_shop):
    s = start_shop(gateway=True, gateway_env={"MICROSHOP_RATE_LIMIT_RPS": "0"})
    gw = s.server("gateway")
    assert all(gw.get("/api/v1/products").status_code == 200 for _ in range(50))
    try:
        start_shop(gateway=True, gateway_env={"MICROSHOP_RATE_LIMIT_RPS": "fast"})
    except AssertionError as e:  # the harness reports the exit status and the log
        assert "exited with 2" in str(e) and "MICROSHOP_RATE_LIMIT_RPS" in str(e), e
    else:
        raise AssertionError("a gateway with a malformed rate limit started")


def test_a_stopped_service_is_a_504_at_the_routes_deadline(start_shop):
    s = start_shop(gateway=True)
    gw = s.server("gateway")
    p = s.product()
    inv = s.server("inventory")
    os.kill(inv.proc.pid, signal.SIGSTOP)
    try:
        t = time.monotonic()
        r = gw.get(f"/api/v1/products/{p['id']}", timeout=30)
        assert_problem(r, 504)
        assert time.monotonic() - t < 14 * SLOW  # the route's deadline (10 s), not the client's
    finally:
        os.kill(inv.proc.pid, signal.SIGCONT)
    poll(lambda: gw.get(f"/api/v1/products/{p['id']}").status_code == 200, 20 * SLOW,
         what="the inventory to answer again")


def _cookie(user, position):
    mac = hmac.new(SECRET.encode(), f"{user}|{position}".encode(), hashlib.sha256).digest()
    return f"ms_pos={position}.{base64.urlsafe_b64encode(mac[:16]).rstrip(b'=').decode()}"


def test_a_client_reads_its_own_writes_in_its_list_through_the_gateway(start_shop):
    env = {"MICROSHOP_IDENTITY_SECRET": SECRET}
    s = start_shop(gateway=True, gateway_env=env)
    gw = s.server("gateway")
    gw2 = s.add_gateway("gateway2", env)
    user = s.known_customer(gw)
    p = s.stocked()
    session = requests.Session()  # keeps the gateway's cookie, as a browser does
    for i in range(15):
        # odd rounds write through one gateway and read through the other: the cookie carries it
        w, r = (gw, gw2) if i % 2 else (gw, gw)
        res = session.post(w.url + "/api/v1/orders", headers={
            **JSON, **ident(user), "Idempotency-Key": f"ryw-{i}"},
            json={"items": [line(p, 1)], "payment": {"card_number": "4242424242424242"}})
        assert res.status_code in (201, 202), res.text
        assert "ms_pos=" in res.headers.get("Set-Cookie", ""), res.headers
        listed = session.get(r.url + f"/api/v1/users/{user}/orders",
                             params={"limit": 100}, headers=ident(user))
        assert listed.status_code == 200, listed.text
        assert res.json()["id"] in [o["id"] for o in listed.json()["items"]], (i, listed.text)


def test_the_position_cookie_is_honoured_only_when_signed_for_its_caller(start_shop):
    s = start_shop(gateway=True, gateway_env={"MICROSHOP_IDENTITY_SECRET": SECRET})
    gw = s.server("gateway")
    user, other = s.known_customer(gw), s.known_customer(gw)
    far = 10 ** 12  # a position the store will not reach: a list read must wait for it

    def listing(cookie, who=user):
        return requests.get(gw.url + f"/api/v1/users/{who}/orders", timeout=30,
                            headers={**ident(who), "Cookie": cookie})
    # forged, or signed for another caller: ignored, the list answers at once
    assert listing(f"ms_pos={far}.AAAAAAAAAAAAAAAAAAAAAA").status_code == 200
    assert listing(_cookie(other, far)).status_code == 200
    assert listing("xms_pos=" + _cookie(user, far)[len("ms_pos="):]).status_code == 200
    # signed for this caller: the gateway asks the order service to wait for that position,
    # which it cannot reach: the read route's deadline answers
    assert_problem(listing("a=b; " + _cookie(user, far)), 504)


def user_posts_served(s):
    """POSTs to /api/v1/users the user service has answered (its own /metrics)."""
    text = s.server("user").request("GET", "/metrics").text
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
               if ln.startswith("requests_total{") and 'method="POST"' in ln
               and 'endpoint="/api/v1/users"' in ln)


def test_headers_and_bodies_over_the_limits_end_at_the_gateway(start_shop):
    s = start_shop(gateway=True)
    gw = s.server("gateway")
    before = user_posts_served(s)
    with RawConn(gw) as c:  # a body over 1 MiB is refused before it is read
        c.send(raw_request("POST", "/api/v1/users", {"Content-Type": "application/json",
                                                      "Content-Length": str(1024 * 1024 + 1)}))
        r = c.response()
        assert_problem(r, 413)
        assert c.is_closed()
    base = len(raw_request("POST", "/api/v1/users", {"X-Big": "", "Content-Length": "2"}))
    with RawConn(gw) as c:  # a header block one byte over 16 KiB
        c.send(raw_request("POST", "/api/v1/users", {"X-Big": "a" * (16 * 1024 + 1 - base),
                                                      "Content-Length": "2"}) + b"{}")
        r = c.response()
        assert_problem(r, 431)
        assert c.is_closed()
    assert user_posts_served(s) == before  # nothing reached the service
    ok = gw.request("POST", "/api/v1/users", json={"email": "x"})  # and the gateway still works
    assert_problem(ok, 422, "email")
    assert user_posts_served(s) == before + 1
