"""HTTP/1.1 protocol edge cases over raw sockets: limits, timeouts, smuggling, pipelining."""
import json
import select
import time

import pytest

from conftest import (SLOW, RawConn, ServerSet, admin, assert_problem, new_email, raw_request,
                      unchanged)

HEALTH = raw_request("GET", "/health")


def user_body():
    return json.dumps({"email": new_email(), "name": "Raw", "password": "raw password 1"})


def assert_closed_after(conn, resp, status):
    """The answer is `status` with Connection: close, and nothing more comes."""
    assert_problem(resp, status)
    assert resp.headers.get("Connection", "").lower() == "close", dict(resp.headers)
    assert conn.is_closed(), "the connection stayed open (or answered a smuggled request)"


# ---- keep-alive, HEAD, versions ----

def test_keep_alive_serves_several_requests_on_one_connection(server):
    with RawConn(server) as c:
        for _ in range(3):
            c.send(HEALTH)
            r = c.response()
            assert r.status_code == 200 and r.json() == {"status": "healthy", "service": "user"}
            assert "close" not in r.headers.get("Connection", "")


def test_connection_close_is_honoured(server):
    with RawConn(server) as c:
        c.send(raw_request("GET", "/health", {"Connection": "close"}))
        r = c.response()
        assert r.status_code == 200 and r.headers["Connection"].lower() == "close"
        assert c.is_closed()


def test_http10_without_keep_alive_is_closed_after_the_answer(server):
    with RawConn(server) as c:
        c.send(raw_request("GET", "/health", version="HTTP/1.0", host=None))
        r = c.response()
        assert r.status_code == 200 and r.json()["status"] == "healthy"
        assert c.is_closed()


def test_http10_keep_alive_stays_open(server):
    with RawConn(server) as c:
        req = raw_request("GET", "/health", {"Connection": "keep-alive"}, version="HTTP/1.0",
                          host=None)
        c.send(req)
        r = c.response()
        assert r.status_code == 200 and r.headers["Connection"].lower() == "keep-alive"
        c.send(req)
        assert c.response().status_code == 200


def test_head_has_content_length_but_no_body(server):
    user = server.create_user()
    with RawConn(server) as c:
        c.send(raw_request("HEAD", f"/api/v1/users/{user['id']}", admin()))
        r = c.response(head=True)
        assert r.status_code == 200 and r.content == b""
        assert int(r.headers["Content-Length"]) == len(json.dumps(user, separators=(",", ":")))
        c.send(raw_request("HEAD", "/health"))
        r = c.response(head=True)
        assert r.status_code == 200 and int(r.headers["Content-Length"]) > 0
        # a body sent after a HEAD answer would be read as the next status line here
        c.send(HEALTH)
        assert c.response().json()["status"] == "healthy"


# ---- routing ----

def test_unknown_path_is_404_problem(server):
    doc = assert_problem(server.get("/api/v1/nope"), 404)
    assert doc["instance"] == "/api/v1/nope"
    assert_problem(server.get("/"), 404)
    assert_problem(server.get("/api/v1/users/x/profile/extra", headers=admin()), 404)


@pytest.mark.parametrize("method,path,allow", [
    ("DELETE", "/api/v1/users/00000000-0000-4000-8000-000000000000", {"GET", "PATCH"}),
    ("PUT", "/api/v1/users", {"POST"}),
    ("GET", "/api/v1/users", {"POST"}),
    ("POST", "/api/v1/users/00000000-0000-4000-8000-000000000000/profile", {"GET", "PUT"}),
    ("PATCH", "/api/v1/users/00000000-0000-4000-8000-000000000000/preferences", {"GET", "PUT"}),
    ("POST", "/health", {"GET"}),
    ("DELETE", "/metrics", {"GET"}),
])
def test_wrong_method_is_405_with_allow(server, method, path, allow):
    with unchanged(server.db):
        r = server.request(method, path, headers=admin())
    assert_problem(r, 405)
    assert {m.strip() for m in r.headers["Allow"].split(",")} >= allow


def test_query_string_is_not_part_of_the_path(server):
    r = server.get("/health?verbose=1#frag")
    assert r.status_code == 200 and r.json()["status"] == "healthy"


# ---- bodies ----

def test_chunked_request_body_creates_a_user(server):
    body = user_body().encode()
    chunks = [body[:7], body[7:30], body[30:]]
    wire = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in chunks)
    wire += b"0\r\nX-Checksum: none\r\n\r\n"  # with a trailer field
    with RawConn(server) as c:
        c.send(raw_request("POST", "/api/v1/users",
                           {"Content-Type": "application/json",
                            "Transfer-Encoding": "chunked"}) + wire)
        r = c.response()
        assert r.status_code == 201, r.text
        assert r.json()["email"] == json.loads(body)["email"]
        c.send(HEALTH)  # the connection is still in step
        assert c.response().status_code == 200
    assert server.db.count("users", "WHERE id = ?", [r.json()["id"]]) == 1


def test_expect_100_continue(server):
    body = user_body().encode()
    with RawConn(server) as c:
        c.send(raw_request("POST", "/api/v1/users",
                           {"Content-Type": "application/json", "Expect": "100-continue",
                            "Content-Length": str(len(body))}))
        interim = c.response()
        assert interim.status_code == 100, interim.status_code
        c.send(body)
        r = c.response()
        assert r.status_code == 201, r.text


def test_unsupported_expectation_is_417(server):
    with RawConn(server) as c:
        c.send(raw_request("POST", "/api/v1/users", {"Expect": "something-else",
                                                      "Content-Type": "application/json"},
                           body=user_body()))
        assert_problem(c.response(), 417)


def test_content_length_over_limit_is_413_before_the_body(server):
    with unchanged(server.db), RawConn(server) as c:
        c.send(raw_request("POST", "/api/v1/users", {"Content-Type": "application/json",
                                                      "Content-Length": str(1024 * 1024 + 1)}))
        assert_closed_after(c, c.response(), 413)


def test_chunked_body_over_limit_is_413(server):
    chunk = b"x" * 65536
    with unchanged(server.db), RawConn(server) as c:
        c.send(raw_request("POST", "/api/v1/users", {"Content-Type": "application/json",
                                                      "Transfer-Encoding": "chunked"}))
        try:
            for _ in range(17):  # 1.0625 MiB
                c.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            c.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and stop reading early
        assert_closed_after(c, c.response(), 413)


# ---- header limits ----

def head_of_size(n):
    """A GET /health whose header block (request line to the blank line) is n bytes."""
    base = len(raw_request("GET", "/health", {"X-Big": ""}))
    return raw_request("GET", "/health", {"X-Big": "a" * (n - base)})


def test_header_block_of_16k_is_served_and_one_byte_more_is_431(server):
    with RawConn(server) as c:
        c.send(head_of_size(16 * 1024))
        assert c.response().status_code == 200
        c.send(head_of_size(16 * 1024 + 1))
        assert_closed_after(c, c.response(), 431)


def test_the_largest_header_limit_is_served_whole():
    # the input buffer's backpressure (64 KiB) applies while a handler works, never to a
    # header block still arriving: a head at the largest limit allowed (64 KiB) is served
    servers = ServerSet()
    try:
        big = servers.start("--max-header-bytes", str(64 * 1024))
        with RawConn(big) as c:
            c.send(head_of_size(64 * 1024))
            assert c.response().status_code == 200
            c.send(head_of_size(64 * 1024 + 1))
            assert_closed_after(c, c.response(), 431)
    finally:
        servers.close()


def test_huge_header_block_is_431(server):
    with RawConn(server) as c:
        try:
            c.send(head_of_size(1024 * 1024))
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert_closed_after(c, c.response(), 431)


def test_101_header_fields_are_431_and_100_are_served(server):
    def many(n):  # Host plus n-1 others
        return raw_request("GET", "/health", {f"X-H{i}": "v" for i in range(n - 1)})

    with RawConn(server) as c:
        c.send(many(100))
        assert c.response().status_code == 200
        c.send(many(101))
        assert_closed_after(c, c.response(), 431)


# ---- request smuggling and malformed heads: 400 and close ----

TAIL = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"  # must never be answered
SMUGGLING = [
    ("cl-and-te", b"POST /api/v1/users HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("te-and-cl", b"POST /api/v1/users HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Length: 5\r\n\r\n0\r\n\r\n"),
    ("two-content-lengths", b"POST /api/v1/users HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
                            b"Content-Length: 5\r\n\r\n{}"),
    ("content-length-list", b"POST /api/v1/users HTTP/1.1\r\nHost: t\r\n"
                            b"Content-Length: 2, 5\r\n\r\n{}"),
    ("content-length-not-number", b"POST /api/v1/users HTTP/1.1\r\nHost: t\r\n"
                                  b"Content-Length: 2x\r\n\r\n{}"),
    ("content-length-negative", b"POST /api/v1/users HTTP/1.1\r\nHost: t\r\n"
                                b"Content-Length: -1\r\n\r\n{}"),
    ("te-chunked-then-gzip", b"POST /api/v1/users HTTP/1.1\r\nHost: t\r\n"
                             b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
    ("te-gzip", b"POST /api/v1/users HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n"),
    ("te-identity", b"POST /api/v1/users HTTP/1.1\r\nHost: t\r\n"
                    b"Transfer-Encoding: identity\r\n\r\n"),
    ("obs-fold", b"GET /health HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n folded\r\n\r\n"),
    ("obs-fold-tab", b"GET /health HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n\tfolded\r\n\r\n"),
    ("space-before-colon", b"GET /health HTTP/1.1\r\nHost : t\r\n\r\n"),
    ("space-before-colon-te", b"POST /api/v1/users HTTP/1.1\r\nHost: t\r\n"
                              b"Transfer-Encoding : chunked\r\nContent-Length: 1\r\n\r\n{"),
    ("bare-lf", b"GET /health HTTP/1.1\nHost: t\n\n"),
    ("bare-lf-in-header", b"GET /health HTTP/1.1\r\nHost: t\nX-A: 1\r\n\r\n"),
    ("bare-cr", b"GET /health HTTP/1.1\r\nHost: t\rX-A: 1\r\n\r\n"),
    ("http11-without-host", b"GET /health HTTP/1.1\r\nX-A: 1\r\n\r\n"),
    ("two-hosts", b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ("header-without-colon", b"GET /health HTTP/1.1\r\nHost: t\r\nNoColon\r\n\r\n"),
    ("bad-chunk-size", b"POST /api/v1/users HTTP/1.1\r\nHost: t\r\n"
                       b"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
                       b"zz\r\n{}\r\n0\r\n\r\n"),
    ("garbage-request-line", b"HELLO\r\n\r\n"),
    ("lowercase-method", b"get /health HTTP/1.1\r\nHost: t\r\n\r\n"),
    ("nul-in-header", b"GET /health HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n"),
    ("space-in-target", b"GET /he alth HTTP/1.1\r\nHost: t\r\n\r\n"),
]


@pytest.mark.parametrize("wire", [c[1] for c in SMUGGLING], ids=[c[0] for c in SMUGGLING])
def test_ambiguous_or_malformed_requests_are_400_and_close(server, wire):
    with unchanged(server.db), RawConn(server) as c:
        c.send(wire + TAIL)
        assert_closed_after(c, c.response(), 400)


# ---- pipelining ----

def test_pipelined_requests_are_answered_in_order(server):
    users = [server.create_user() for _ in range(3)]
    wire = b"".join(raw_request("GET", f"/api/v1/users/{u['id']}", admin()) for u in users[:2])
    wire += HEALTH + raw_request("GET", f"/api/v1/users/{users[2]['id']}", admin())
    wire += raw_request("GET", "/api/v1/nope")
    with RawConn(server) as c:
        c.send(wire)
        answers = [c.response() for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 404]
    assert answers[0].json()["id"] == users[0]["id"]
    assert answers[1].json()["id"] == users[1]["id"]
    assert answers[2].json()["status"] == "healthy"
    assert answers[3].json()["id"] == users[2]["id"]


def test_pipelined_writes_with_bodies_are_answered_in_order(server):
    bodies = [user_body() for _ in range(3)]
    wire = b"".join(raw_request("POST", "/api/v1/users", {"Content-Type": "application/json"},
                                body=b) for b in bodies)
    with RawConn(server) as c:
        c.send(wire + HEALTH)
        answers = [c.response() for _ in range(4)]
    assert [a.status_code for a in answers] == [201, 201, 201, 200]
    assert [a.json()["email"] for a in answers[:3]] == [json.loads(b)["email"] for b in bodies]


def test_request_after_connection_close_is_not_answered(server):
    with RawConn(server) as c:
        c.send(raw_request("GET", "/health", {"Connection": "close"}) + HEALTH)
        assert c.response().status_code == 200
        assert c.is_closed()


def test_empty_lines_before_a_request_are_ignored(server):
    with RawConn(server) as c:
        c.send(b"\r\n\r\n" + HEALTH)
        assert c.response().status_code == 200


def test_http_2_request_line_is_505(server):
    with RawConn(server) as c:
        c.send(b"GET /health HTTP/2.0\r\nHost: t\r\n\r\n")
        assert_closed_after(c, c.response(), 505)


def test_pipelined_request_after_an_error_is_not_answered(server):
    with RawConn(server) as c:
        c.send(raw_request("GET", "/health", {"X-Big": "a" * (17 * 1024)}) + HEALTH)
        assert_closed_after(c, c.response(), 431)


# ---- timeouts (a server with short limits) ----

@pytest.fixture(scope="module")
def quick():
    servers = ServerSet()
    try:
        yield servers.start("--headers-timeout-ms", "500", "--idle-timeout-ms", "600",
                            "--body-timeout-ms", "500")
    finally:
        servers.close()


def test_partial_head_gets_408_then_close(quick):
    with RawConn(quick) as c:
        t0 = time.monotonic()
        c.send(b"GET /health HTTP/1.1\r\nHost: t\r\n")
        r = c.response()
        elapsed = time.monotonic() - t0
        assert_closed_after(c, r, 408)
    assert 0.4 <= elapsed < 3 * SLOW, elapsed


def test_slowloris_trickle_cannot_extend_the_header_deadline(quick):
    with RawConn(quick) as c:
        t0 = time.monotonic()
        c.send(b"GET /health HTTP/1.1\r\nHost: t\r\n")
        for i in range(30):  # a header line every 100 ms, for up to 3 s
            if select.select([c.sock], [], [], 0.1)[0]:
                break  # the server answered
            try:
                c.send(b"X-Drip-%d: 1\r\n" % i)
            except (BrokenPipeError, ConnectionResetError):
                break
        assert_problem(c.response(), 408)
    assert time.monotonic() - t0 < 2 * SLOW


def test_stalled_body_gets_408(quick):
    with unchanged(quick.db), RawConn(quick) as c:
        c.send(raw_request("POST", "/api/v1/users", {"Content-Type": "application/json",
                                                      "Content-Length": "100"}) + b'{"email"')
        t0 = time.monotonic()
        assert_closed_after(c, c.response(), 408)
    assert time.monotonic() - t0 >= 0.4


def test_idle_keep_alive_connection_is_closed(quick):
    with RawConn(quick) as c:
        c.send(HEALTH)
        assert c.response().status_code == 200
        t0 = time.monotonic()
        assert c.is_closed(timeout=5 * SLOW)
        assert 0.5 <= time.monotonic() - t0 < 3 * SLOW


def test_connection_that_never_sends_is_closed(quick):
    with RawConn(quick) as c:
        t0 = time.monotonic()
        assert c.is_closed(timeout=5 * SLOW)
        assert 0.5 <= time.monotonic() - t0 < 3 * SLOW


def test_active_connection_survives_past_the_idle_limit(quick):
    with RawConn(quick) as c:
        for _ in range(4):  # 4 x 300 ms > 600 ms idle limit, never idle that long
            c.send(HEALTH)
            assert c.response().status_code == 200
            time.sleep(0.3)
