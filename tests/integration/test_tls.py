"""TLS 1.3 on the public listener (--tls-cert/--tls-key): HTTPS works as HTTP does, older
protocols and plain HTTP are refused, the header deadline covers the handshake, the admin
listener stays plain, and bad certificate settings stop the process at start."""
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading

import pytest
import requests

from conftest import (BINARY, SLOW, Database, RawConn, ServerSet, clean_env, ident, new_email,
                      poll, raw_request)

HEALTH = raw_request("GET", "/health")


def make_cert(directory, name, cn="127.0.0.1"):
    """A self-signed P-256 certificate for 127.0.0.1; returns (cert path, key path)."""
    cert, key = os.path.join(directory, f"{name}.crt"), os.path.join(directory, f"{name}.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", f"/CN={cn}",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def certs():
    d = tempfile.mkdtemp(prefix="ms-tls-")
    try:
        yield {"dir": d, "good": make_cert(d, "good"), "other": make_cert(d, "other")}
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_server(certs):
    servers = ServerSet()
    cert, key = certs["good"]
    try:
        yield servers.start("--tls-cert", cert, "--tls-key", key, "--threads", "2",
                            "--max-header-bytes", "65536")
    finally:
        servers.close()


def client_context(cert, **kw):
    ctx = ssl.create_default_context(cafile=cert)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def tls_conn(server, cert, alpn=None):
    """A RawConn whose socket speaks TLS (handshake done)."""
    c = RawConn(server)
    ctx = client_context(cert)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    c.sock = ctx.wrap_socket(c.sock, server_hostname="127.0.0.1")
    return c


def read_until_closed(sock, timeout):
    """Everything the server sends until it closes (reset counts as closed)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    except (ConnectionResetError, ssl.SSLEOFError):
        return data


def test_https_get_with_a_verified_certificate(tls_server, certs):
    r = requests.get(tls_server.url + "/health", verify=certs["good"][0], timeout=10 * SLOW)
    assert r.status_code == 200 and r.json() == {"status": "healthy", "service": "user"}
    assert tls_server.url.startswith("https://")
    line = next(x for x in tls_server.log_text().splitlines() if '"msg":"listening"' in x)
    assert json.loads(line)["tls"] == "1.3"


def test_the_session_is_tls_1_3_with_http_1_1_by_alpn(tls_server, certs):
    with tls_conn(tls_server, certs["good"][0], alpn=["h2", "http/1.1"]) as c:
        assert c.sock.version() == "TLSv1.3"
        assert c.sock.selected_alpn_protocol() == "http/1.1"
        c.send(HEALTH)
        assert c.response().status_code == 200


def test_tls_1_2_is_refused(tls_server, certs):
    ctx = client_context(certs["good"][0], maximum_version=ssl.TLSVersion.TLSv1_2)
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=10 * SLOW) as s:
        with pytest.raises(ssl.SSLError):
            ctx.wrap_socket(s, server_hostname="127.0.0.1")
    # the server is unharmed
    assert tls_server.get("/health").status_code == 200


def test_a_client_that_does_not_trust_the_certificate_fails(tls_server, certs):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(tls_server.url + "/health", verify=certs["other"][0], timeout=10 * SLOW)


def test_plain_http_to_the_tls_port_gets_no_http_answer(tls_server):
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=10 * SLOW) as s:
        s.sendall(HEALTH)
        data = read_until_closed(s, 10 * SLOW)
    assert b"HTTP/" not in data, data[:200]
    assert tls_server.get("/health").status_code == 200


def test_keep_alive_and_pipelining_on_one_tls_connection(tls_server, certs):
    with tls_conn(tls_server, certs["good"][0]) as c:
        for _ in range(3):
            c.send(HEALTH)
            r = c.response()
            assert r.status_code == 200 and "close" not in r.headers.get("Connection", "")
        c.send(HEALTH * 4)  # several requests in one record: answered in order
        for _ in range(4):
            assert c.response().status_code == 200
        c.send(raw_request("GET", "/health", {"Connection": "close"}))
        r = c.response()
        assert r.status_code == 200 and r.headers["Connection"].lower() == "close"
        assert c.is_closed()


def test_post_with_a_body_over_tls(tls_server, certs):
    created = tls_server.create_user(name="Grace Hopper")  # requests, over HTTPS
    r = tls_server.get(f"/api/v1/users/{created['id']}", user=created["id"])
    assert r.status_code == 200 and r.json()["name"] == "Grace Hopper"
    # a body in several records, after its headers in another
    body = json.dumps({"email": new_email(), "name": "Split Body",
                       "password": "split body password"}).encode()
    with tls_conn(tls_server, certs["good"][0]) as c:
        c.send(raw_request("POST", "/api/v1/users", {"Content-Type": "application/json",
                                                     "Content-Length": str(len(body))}))
        for i in range(0, len(body), 20):
            c.send(body[i:i + 20])
        r = c.response()
        assert r.status_code == 201, r.text
        uid = r.json()["id"]
        c.send(raw_request("GET", f"/api/v1/users/{uid}", ident(uid)))
        r = c.response()
        assert r.status_code == 200 and r.json()["name"] == "Split Body"


def test_a_large_request_and_answer_span_many_records(tls_server, certs):
    path = "/" + "a" * 50_000  # a problem's "instance" echoes it: 50 KB both ways
    with tls_conn(tls_server, certs["good"][0]) as c:
        for _ in range(2):
            c.send(raw_request("GET", path))
            r = c.response()
            assert r.status_code == 404 and r.json()["instance"] == path


def test_parallel_sessions_on_every_loop(tls_server, certs):
    """One SSL_CTX serves both loop threads: many sessions at once, each with several
    requests."""
    cert = certs["good"][0]
    errors = []

    def client():
        try:
            with requests.Session() as s:
                for _ in range(10):
                    r = s.get(tls_server.url + "/health", verify=cert, timeout=10 * SLOW)
                    assert r.status_code == 200 and r.json()["status"] == "healthy"
        except Exception as e:  # reported below, on the test's thread
            errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_the_header_deadline_covers_the_handshake(start_server, certs):
    cert, key = certs["good"]
    s = start_server("--tls-cert", cert, "--tls-key", key, "--headers-timeout-ms", "300",
                     "--idle-timeout-ms", "600000")
    # connects and sends nothing: closed by the header deadline, not the (long) idle one
    with socket.create_connection(("127.0.0.1", s.port), timeout=10 * SLOW) as raw:
        assert read_until_closed(raw, 10 * SLOW) == b""
    # half a ClientHello: the same
    with socket.create_connection(("127.0.0.1", s.port), timeout=10 * SLOW) as raw:
        raw.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        assert read_until_closed(raw, 10 * SLOW) == b""
    # handshake done, half a request: 408 inside the session, then closed
    with tls_conn(s, cert) as c:
        c.send(b"GET /health HTTP/1.1\r\nHost: test\r\n")
        r = c.response()
        assert r.status_code == 408 and r.headers["Connection"].lower() == "close"
        assert c.is_closed()
    assert s.get("/health").status_code == 200


def test_sigterm_closes_idle_tls_connections_and_exits_0(start_server, certs):
    cert, key = certs["good"]
    s = start_server("--tls-cert", cert, "--tls-key", key)
    c = tls_conn(s, cert)
    try:
        c.send(HEALTH)
        assert c.response().status_code == 200
        s.signal(signal.SIGTERM)
        assert c.is_closed(timeout=10 * SLOW)  # close_notify, then the end of the stream
    finally:
        c.close()
    assert s.wait(20 * SLOW) == 0, s.log_tail()


def test_the_gateway_serves_https_while_its_admin_listener_stays_plain(start_server, certs):
    cert, key = certs["good"]
    gw = start_server("--tls-cert", cert, "--tls-key", key, target="gateway")
    assert gw.url.startswith("https://") and gw.admin_url.startswith("http://")
    assert gw.get("/health").status_code == 200
    assert gw.admin("GET", "/health").status_code == 200
    assert "requests_total" in gw.metrics()


def run_serve(args, env=None):
    db = Database()
    try:
        return subprocess.run([BINARY, "serve", "user", "--listen", "127.0.0.1:0", "--data",
                               db.data_dir, *args], env=clean_env({**db.env, **(env or {})}),
                              capture_output=True, text=True, timeout=30 * SLOW)
    finally:
        db.drop()


@pytest.mark.parametrize("case", ["cert-only", "key-only-env", "missing-cert", "missing-key",
                                  "mismatch", "key-as-cert", "unreadable-key"])
def test_bad_tls_settings_exit_2_with_one_sentence(certs, case):
    cert, key = certs["good"]
    other_key = certs["other"][1]
    missing = os.path.join(certs["dir"], "absent.pem")
    unreadable = os.path.join(certs["dir"], "dir.key")
    os.makedirs(unreadable, exist_ok=True)
    args, env, mention = {
        "cert-only": (["--tls-cert", cert], {}, "--tls-key"),
        "key-only-env": ([], {"MICROSHOP_TLS_KEY": key}, "MICROSHOP_TLS_CERT"),
        "missing-cert": (["--tls-cert", missing, "--tls-key", key], {}, missing),
        "missing-key": (["--tls-cert", cert, "--tls-key", missing], {}, missing),
        "mismatch": (["--tls-cert", cert, "--tls-key", other_key], {}, other_key),
        "key-as-cert": (["--tls-cert", key, "--tls-key", key], {}, key),
        "unreadable-key": (["--tls-cert", cert, "--tls-key", unreadable], {}, unreadable),
    }[case]
    p = run_serve(args, env)
    assert p.returncode == 2, f"status {p.returncode}, stderr: {p.stderr}"
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and mention in lines[0], p.stderr
    assert p.stdout == ""


def test_the_environment_variables_turn_tls_on(start_server, certs):
    cert, key = certs["good"]
    s = start_server("--tls-cert", cert, env={"MICROSHOP_TLS_KEY": key})
    assert s.url.startswith("https://")
    r = requests.get(s.url + "/health", verify=cert, timeout=10 * SLOW)
    assert r.status_code == 200
    with socket.create_connection(("127.0.0.1", s.port), timeout=10 * SLOW) as raw:
        raw.sendall(HEALTH)
        assert b"HTTP/" not in read_until_closed(raw, 10 * SLOW)
    poll(lambda: s.get("/health").status_code == 200, 5 * SLOW, what="GET /health")
