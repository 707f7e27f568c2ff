"""A headless Chromium and one page driven over the DevTools protocol (python3-websocket):
the console's tests and bench/console.sh share it. Console errors, failed resource loads and
uncaught exceptions are collected in `errors`; screenshots go to the test's tmp dir and to
$MS_ARTEFACTS/console (default build/test-artefacts/console)."""
import base64
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import requests
import websocket  # python3-websocket, from bootstrap.sh's test set

from conftest import ROOT, SLOW, poll

ARTEFACTS = os.environ.get("MS_ARTEFACTS") or os.path.join(ROOT, "build", "test-artefacts")


def chromium_binary():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("chromium is not installed (bootstrap.sh test installs it)")


class Browser:
    """A headless Chromium and one page, driven over the DevTools protocol. Console errors,
    failed resource loads and uncaught exceptions are collected in `errors`."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="ms-chromium.")
        self.proc = subprocess.Popen(
            [chromium_binary(), "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
             "--window-size=1440,1100", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            start_new_session=True)  # its own group: every helper process is stopped with it
        self.stderr = []
        found = queue.Queue()

        def read_stderr():
            for raw in self.proc.stderr:
                text = raw.decode("utf-8", "replace")
                self.stderr.append(text)
                m = re.search(r"DevTools listening on (ws://\S+)", text)
                if m:
                    found.put(m.group(1))
        threading.Thread(target=read_stderr, daemon=True).start()
        self.ws = None
        try:
            browser_url = found.get(timeout=30 * SLOW)
        except queue.Empty:
            self.close()
            raise AssertionError("chromium gave no DevTools URL:\n" + "".join(self.stderr[-20:]))
        port = int(re.match(r"ws://[^:/]+:(\d+)/", browser_url).group(1))
        pages = [t for t in requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
                 if t["type"] == "page"]
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"],
                                              timeout=30 * SLOW, suppress_origin=True)
        self.next_id = 0
        self.errors = []
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable")

    def _event(self, msg):
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            self.errors.append("exception: " + d.get("text", "") + " " +
                               str(d.get("exception", {}).get("description", "")))
        elif method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
            self.errors.append("console.error: " + " ".join(
                str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            self.errors.append("log: " + p["entry"]["text"] + " " + p["entry"].get("url", ""))

    def call(self, method, **params):
        self.next_id += 1
        mine = self.next_id
        self.ws.send(json.dumps({"id": mine, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mine:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def evaluate(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expr, timeout, what):
        """Polls a JavaScript expression until it is truthy (collecting events meanwhile)."""
        def check():  # a page still loading has no body yet: not yet, not an error
            v = self.evaluate(f"(() => {{ try {{ return {expr}; }} catch (e) {{ return null; }} }})()")
            if not v:
                time.sleep(0.1)
            return v
        return poll(check, timeout, interval=0, what=what)

    def navigate(self, url):
        self.call("Page.navigate", url=url)

    def screenshot(self, name, tmp_path):
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        paths = []
        for d in (str(tmp_path), os.path.join(ARTEFACTS, "console")):
            os.makedirs(d, exist_ok=True)
            paths.append(os.path.join(d, name))
            with open(paths[-1], "wb") as f:
                f.write(png)
        return paths

    def close(self):
        if self.ws is not None:
            try:
                self.ws.close()
            except OSError:
                pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10 * SLOW)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        try:  # helpers of the group that outlived the browser itself
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(self.profile, ignore_errors=True)
