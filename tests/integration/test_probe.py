"""`microshop probe`: the health check of the container images (they have no shell or curl).

Exit 0 on a 2xx answer, 1 on anything else with a one-line reason on stderr, 2 on bad usage;
the deadline (--timeout-ms) covers the whole request, so a silent server cannot hang it.
"""
import http.server
import socket
import subprocess
import threading

import pytest

from conftest import BINARY, SLOW, clean_env, free_port


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server naming
        self.server.paths.append(self.path)
        status = 503 if self.path.startswith("/down") else 200
        body = b"{}"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.paths = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def silent_server():
    """Accepts connections and reads the request, but never answers."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    held, stop = [], threading.Event()

    def accept():
        ls.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = ls.accept()
                held.append(c)
            except OSError:
                pass
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield ls.getsockname()[1]
    stop.set()
    t.join()
    for c in held:
        c.close()
    ls.close()


def probe(*args, env=None):
    return subprocess.run([BINARY, "probe", *args], capture_output=True, text=True,
                          env=clean_env(env), timeout=60 * SLOW)


def test_2xx_is_healthy(http_server):
    port = http_server.server_address[1]
    r = probe(f"http://127.0.0.1:{port}/health")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert http_server.paths == ["/health"]


def test_url_from_the_environment(http_server):
    port = http_server.server_address[1]
    r = probe(env={"MICROSHOP_PROBE_URL": f"http://localhost:{port}/ready?x=1"})
    assert r.returncode == 0, r.stderr
    assert http_server.paths == ["/ready?x=1"]


def test_503_is_unhealthy(http_server):
    port = http_server.server_address[1]
    r = probe(f"http://127.0.0.1:{port}/down")
    assert r.returncode == 1
    assert "status 503" in r.stderr
    assert r.stderr.count("\n") == 1


def test_refused_port():
    port = free_port()
    r = probe(f"http://127.0.0.1:{port}/health", "--timeout-ms", "5000")
    assert r.returncode == 1
    assert "refused" in r.stderr.lower()


def test_silent_server_past_the_deadline(silent_server):
    r = probe(f"http://127.0.0.1:{silent_server}/health", "--timeout-ms", "300")
    assert r.returncode == 1
    assert "deadline" in r.stderr


@pytest.mark.parametrize("args", [
    [], ["https://127.0.0.1/health"], ["http://127.0.0.1:99999/"], ["http://:80/"],
    ["http://127.0.0.1/", "--timeout-ms", "0"], ["http://127.0.0.1/", "--bogus"],
])
def test_bad_usage(args):
    r = probe(*args)
    assert r.returncode == 2
    assert "microshop probe" in r.stderr
