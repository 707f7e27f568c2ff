"""deploy/monitoring against the binary: promtool on the Prometheus configs, the alerts and their
unit tests; the Grafana dashboards' structure; every metric a dashboard or an alert names
exported by a running `microshop run`; the supervisor's Prometheus targets file; and Debian's
real `prometheus` scraping every process of a `microshop run` through that file, replicas
included. The Jaeger and Filebeat configs are parsed and checked for what microshop relies on.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest
import requests
import yaml

from conftest import ROOT, SLOW, free_port, poll
from test_supervisor import SERVICES, Run, checkout

MON = os.path.join(ROOT, "deploy", "monitoring")
DASHBOARDS = os.path.join(MON, "grafana", "dashboards")
DASHBOARD_FILES = ("red.json", "business.json", "infrastructure.json")
PROCESSES = ("gateway",) + SERVICES
HINT = "bash scripts/bootstrap.sh test installs it (Debian package prometheus)"


def tool(name):
    path = shutil.which(name)
    assert path, f"{name} not found: {HINT}"
    return path


def promtool(*args):
    r = subprocess.run([tool("promtool"), *args], cwd=MON, capture_output=True, text=True,
                       timeout=120 * SLOW)
    assert r.returncode == 0, f"promtool {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def load_yaml(*parts):
    with open(os.path.join(MON, *parts)) as f:
        return yaml.safe_load(f)


def load_dashboard(name):
    with open(os.path.join(DASHBOARDS, name)) as f:
        return json.load(f)


def panels(dash):
    """Every panel, rows' nested panels included."""
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])


def alert_rules():
    return [r for g in load_yaml("alerts.yml")["groups"] for r in g["rules"] if "alert" in r]


# ---- PromQL: the metric names an expression reads ----

# Keywords and operators that read like identifiers; anything called with "(" is a function or
# an aggregation and is skipped on that ground.
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                "group_left", "group_right", "inf", "nan", "Inf", "NaN"}


def metric_names(expr):
    """The metric names in a PromQL expression (a Grafana one: $variables allowed)."""
    m = re.fullmatch(r"\s*label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*\w+\s*\)\s*", expr)
    if m:  # a Grafana variable's query
        return {m.group(1)}
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values)
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # ranges and subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)  # Grafana variables ($__rate_interval, $service)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", e):
        if m.group(2) or m.group(1) in PROMQL_WORDS:
            continue
        names.add(m.group(1))
    return names


def test_metric_names_reads_promql():
    assert metric_names('histogram_quantile(0.99, sum by (service, le) (rate('
                        'request_duration_seconds_bucket{service=~"$service",'
                        'endpoint!="/internal/v1/events"}[$__rate_interval])))') == {
        "request_duration_seconds_bucket"}
    assert metric_names('sum(rate(a_total{x="y"}[5m])) / sum(b) > 0.05 and on (s) c '
                        'or max(d offset 5m) unless e_total * 60') == {
        "a_total", "b", "c", "d", "e_total"}
    assert metric_names("label_values(requests_total, service)") == {"requests_total"}
    assert metric_names("up == 0") == {"up"}


def dashboard_exprs():
    """(where, expr) for every query of every dashboard, variables included."""
    out = []
    for name in DASHBOARD_FILES:
        dash = load_dashboard(name)
        for p in panels(dash):
            for t in p.get("targets", []):
                out.append((f"{name}: {p['title']}", t["expr"]))
        for v in dash.get("templating", {}).get("list", []):
            q = v.get("query")
            if v.get("type") == "query":
                out.append((f"{name}: ${v['name']}", q["query"] if isinstance(q, dict) else q))
    return out


# ---- Prometheus configs and alerts (no process needed) ----

def test_promtool_accepts_every_prometheus_config():
    out = promtool("check", "config", "prometheus.yml", "prometheus-run.yml")
    assert out.count("SUCCESS: 1 rule files found") == 2, out
    # the compose stack's, scraping the services by their container names
    out = promtool("check", "config", os.path.join(ROOT, "deploy", "compose", "prometheus.yml"))
    assert "is valid prometheus config file syntax" in out, out


def test_promtool_accepts_the_alert_rules():
    assert "SUCCESS: 7 rules found" in promtool("check", "rules", "alerts.yml")


def test_promtool_alert_unit_tests_pass():
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


def test_the_static_config_scrapes_every_process_at_its_default_port():
    cfg = load_yaml("prometheus.yml")
    assert cfg["global"]["scrape_interval"] == "15s" and cfg["rule_files"] == ["alerts.yml"]
    (job,) = cfg["scrape_configs"]
    assert job["job_name"] == "microshop" and job["honor_labels"] is True
    got = {g["labels"]["service"]: g["targets"] for g in job["static_configs"]}
    assert got == {"gateway": ["127.0.0.1:9080"], "user": ["127.0.0.1:8081"],
                   "order": ["127.0.0.1:8082"], "inventory": ["127.0.0.1:8083"],
                   "payment": ["127.0.0.1:8084"]}
    run_cfg = load_yaml("prometheus-run.yml")
    (job,) = run_cfg["scrape_configs"]
    assert job["file_sd_configs"][0]["files"] == ["../../data/prometheus-targets.json"]


def test_every_alert_has_its_labels_annotations_and_a_unit_test_that_fires_it():
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert {"ServiceDown", "HighErrorRate", "HighLatencyP99", "DatabasePoolExhausted",
            "CircuitBreakerOpen", "OutboxLagHigh", "ProjectionLagHigh"} == names
    for r in rules:
        assert r["labels"]["severity"] in ("critical", "warning"), r
        assert r["annotations"]["summary"] and r["annotations"]["description"], r
        anchor = "docs/operations.md#alert-" + r["alert"].lower()
        assert r["annotations"]["runbook"] == anchor, r
    fired = set()
    for t in load_yaml("alerts_test.yml")["tests"]:
        for case in t.get("alert_rule_test", []):
            if case.get("exp_alerts"):
                fired.add(case["alertname"])
    assert fired == names, f"alerts no unit test fires: {names - fired}"


# ---- Grafana ----

def test_the_provisioned_datasource_is_the_one_every_dashboard_names():
    (ds,) = load_yaml("grafana", "provisioning", "datasources", "prometheus.yml")["datasources"]
    assert ds["type"] == "prometheus" and ds["uid"] == "microshop-prometheus"
    (prov,) = load_yaml("grafana", "provisioning", "dashboards", "microshop.yml")["providers"]
    assert prov["type"] == "file" and prov["options"]["path"]
    assert sorted(os.listdir(DASHBOARDS)) == sorted(DASHBOARD_FILES)
    for name in DASHBOARD_FILES:
        dash = load_dashboard(name)
        for p in panels(dash):
            if p["type"] != "row":
                assert p["datasource"]["uid"] == ds["uid"], (name, p["title"])
                for t in p["targets"]:
                    assert t["datasource"]["uid"] == ds["uid"], (name, p["title"])
        for v in dash["templating"]["list"]:
            if v["type"] == "query":
                assert v["datasource"]["uid"] == ds["uid"], (name, v["name"])


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_dashboard_structure(name):
    dash = load_dashboard(name)
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    assert dash["uid"] and dash["title"] and isinstance(dash["panels"], list)
    ids, boxes = set(), []
    for p in panels(dash):
        assert isinstance(p["id"], int) and p["id"] not in ids, p.get("title")
        ids.add(p["id"])
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in ("x", "y", "w", "h")), p["title"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["w"] > 0 and g["h"] > 0, p["title"]
        for other_title, o in boxes:  # no two panels on the same cells
            overlap = (g["x"] < o["x"] + o["w"] and o["x"] < g["x"] + g["w"] and
                       g["y"] < o["y"] + o["h"] and o["y"] < g["y"] + g["h"])
            assert not overlap, (p["title"], other_title)
        boxes.append((p["title"], g))
        if p["type"] == "row":
            continue
        assert p["type"] in ("timeseries", "stat"), p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(set(refs)) == len(refs), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and metric_names(t["expr"]), (p["title"], t["expr"])


def test_the_dashboards_show_what_they_promise():
    def names(name):
        dash = load_dashboard(name)
        return {n for p in panels(dash) for t in p.get("targets", [])
                for n in metric_names(t["expr"])}, dash

    red, dash = names("red.json")
    assert {"requests_total", "request_duration_seconds_bucket"} <= red
    (var,) = dash["templating"]["list"]
    assert var["name"] == "service"
    for p in panels(dash):
        for t in p.get("targets", []):
            assert 'service=~"$service"' in t["expr"], (p["title"], t["expr"])
    business, _ = names("business.json")
    assert {"orders_created_total", "order_amount_bucket", "order_amount_sum",
            "order_sagas_ended_total"} <= business
    infra, _ = names("infrastructure.json")
    assert {"db_pool_connections", "db_pool_waiting", "db_pool_timeouts_total",
            "cache_requests_total", "http_client_breaker_state", "http_client_retries_total",
            "http_client_ejections_total", "process_resident_memory_bytes",
            "process_cpu_seconds_total"} <= infra


# ---- Jaeger and Filebeat ----

def test_the_jaeger_fragment_receives_otlp_over_http():
    doc = load_yaml("jaeger", "docker-compose.yml")
    jaeger = doc["services"]["jaeger"]
    assert jaeger["image"].startswith("jaegertracing/all-in-one")
    assert "4318:4318" in jaeger["ports"] and jaeger["environment"]["COLLECTOR_OTLP_ENABLED"]
    assert doc["x-microshop-tracing"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    # Jaeger takes no /v1/logs: the lines stay on stderr for Filebeat
    assert doc["x-microshop-tracing"]["OTEL_LOGS_EXPORTER"] == "none"


def test_filebeat_decodes_the_json_lines_and_ships_them_to_elasticsearch():
    doc = load_yaml("filebeat", "filebeat.yml")
    kinds = {i["type"]: i for i in doc["filebeat.inputs"]}
    assert kinds["container"]["paths"] == ["/var/lib/docker/containers/*/*.log"]
    (decode,) = [p["decode_json_fields"] for p in doc["processors"] if "decode_json_fields" in p]
    assert decode["fields"] == ["message"] and decode["add_error_key"] is True
    (ts,) = [p["timestamp"] for p in doc["processors"] if "timestamp" in p]
    assert ts["field"] == "microshop.ts"
    assert doc["output.elasticsearch"]["index"].startswith("microshop-logs-")
    assert doc["setup.template.pattern"] == "microshop-logs-*"


# ---- against a running `microshop run` ----

@pytest.fixture(scope="module")
def shop():
    run = Run()
    try:
        checkout(run)  # the order metrics and the gateway's upstream calls appear with traffic
        yield run
        assert run.stop() == 0, run.log_tail()
    finally:
        run.close()


def read_targets(run):
    with open(os.path.join(run.data, "prometheus-targets.json")) as f:
        return json.load(f)


def scrape(addr):
    r = requests.get(f"http://{addr}/metrics", timeout=10 * SLOW)
    assert r.status_code == 200, (addr, r.status_code)
    return r.text


def sample_names(text):
    return {re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            for line in text.splitlines() if line and not line.startswith("#")}


def test_the_targets_file_lists_every_process(shop):
    groups = read_targets(shop)
    by_service = {g["labels"]["service"]: g for g in groups}
    assert len(groups) == len(PROCESSES) and set(by_service) == set(PROCESSES), groups
    assert by_service["gateway"]["targets"] == [f"127.0.0.1:{shop.admin_port}"]
    for i, name in enumerate(SERVICES, 1):
        assert by_service[name]["targets"] == [f"127.0.0.1:{shop.base + i}"], groups
        assert by_service[name]["labels"]["instance_name"] == f"{name}-1"
    with open(os.path.join(shop.data, "instances.json")) as f:
        instances = json.load(f)["services"]
    for name in SERVICES:
        assert instances[name] == "http://" + by_service[name]["targets"][0]


def test_every_metric_the_dashboards_and_alerts_name_is_exported(shop):
    exported = {"up"}  # Prometheus's own, per target
    for g in read_targets(shop):
        for addr in g["targets"]:
            exported |= sample_names(scrape(addr))
    wanted = dashboard_exprs() + [(f"alerts.yml: {r['alert']}", r["expr"])
                                  for r in alert_rules()]
    missing = sorted({(where, n) for where, expr in wanted for n in metric_names(expr)
                      if n not in exported})
    assert not missing, f"named but not exported: {missing}"


class Prometheus:
    """Debian's prometheus with prometheus-run.yml, rewritten to scrape every second and read
    the run's targets file, on a free port with its storage in a temp dir."""

    def __init__(self, targets_file):
        self.dir = tempfile.mkdtemp(prefix="ms-it-prom-")
        cfg = load_yaml("prometheus-run.yml")
        cfg["global"]["scrape_interval"] = cfg["global"]["evaluation_interval"] = "1s"
        cfg["rule_files"] = [os.path.join(MON, f) for f in cfg["rule_files"]]
        (job,) = cfg["scrape_configs"]
        job["file_sd_configs"] = [{"files": [targets_file], "refresh_interval": "1s"}]
        config = os.path.join(self.dir, "prometheus.yml")
        with open(config, "w") as f:
            yaml.safe_dump(cfg, f)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(self.dir, "prometheus.log"), "wb")
        self.proc = subprocess.Popen(
            [tool("prometheus"), f"--config.file={config}",
             f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle"],
            stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)

    def log_tail(self):
        with open(os.path.join(self.dir, "prometheus.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")[-3000:]

    def query(self, q):
        """The result vector of an instant query; [] while Prometheus is not answering yet."""
        assert self.proc.poll() is None, "prometheus exited:\n" + self.log_tail()
        try:
            r = requests.get(f"{self.url}/api/v1/query", params={"query": q},
                             timeout=10 * SLOW)
        except requests.ConnectionError:
            return []
        if r.status_code == 503:  # starting: the TSDB is not open yet
            return []
        assert r.status_code == 200 and r.json()["status"] == "success", r.text
        return r.json()["data"]["result"]

    def up(self):
        """{target address: (service, value)} of the `up` series now."""
        return {s["metric"]["instance"]: (s["metric"]["service"], s["value"][1])
                for s in self.query('up{job="microshop"}')}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60 * SLOW)
        finally:
            self.log.close()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self.log.closed:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def slo_gate(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "slo_gate.py"), *args],
                          capture_output=True, text=True, timeout=60 * SLOW)


def slo_gate_judges_from_this_prometheus(shop, prom):
    """scripts/slo_gate.py, the pipelines' gate, on live series: checkouts pass it, a p99 bound
    no request can meet fails it, an unknown service has no traffic, a dead Prometheus fails."""
    def gate(*extra):
        return slo_gate("--prometheus", prom.url, "--service", "gateway", "--window", "1m", *extra)

    checkout(shop)
    poll(lambda: gate().returncode == 0, 30 * SLOW, 0.5, what="the gate to see the checkout")
    r = gate("--max-p99", "0")
    assert r.returncode == 1 and "FAILED: p99" in r.stderr, r.stdout + r.stderr
    r = slo_gate("--prometheus", prom.url, "--service", "nosuchservice", "--window", "1m")
    assert r.returncode == 1 and "no answers in the window" in r.stderr, r.stderr
    r = slo_gate("--prometheus", prom.url, "--service", "nosuchservice", "--window", "1m",
                 "--allow-no-traffic")
    assert r.returncode == 0, r.stderr
    r = slo_gate("--prometheus", f"http://127.0.0.1:{free_port()}", "--service", "gateway")
    assert r.returncode == 1 and "did not answer" in r.stderr, r.stderr
    for bad in (("--service", 'x"}'), ("--window", "5 minutes"), ("--max-error-ratio", "2")):
        r = gate(*bad)
        assert r.returncode == 2 and bad[0] in r.stderr, (bad, r.stderr)


def test_prometheus_scrapes_every_process_of_microshop_run(shop):
    targets = os.path.join(shop.data, "prometheus-targets.json")
    prom = Prometheus(targets)
    try:
        expect = {a: (g["labels"]["service"], "1") for g in read_targets(shop)
                  for a in g["targets"]}
        poll(lambda: prom.up() == expect, 90 * SLOW, 0.25,
             what=f"every target up in Prometheus ({expect})")

        # every process's requests_total, labelled by the process itself
        def services():
            return {s["metric"]["service"] for s in prom.query("count by (service) (requests_total)")}
        poll(lambda: services() >= set(PROCESSES), 30 * SLOW, 0.25,
             what="requests_total from every service and the gateway")
        assert services() == set(PROCESSES)
        # the rules were loaded from alerts.yml
        r = requests.get(f"{prom.url}/api/v1/rules", timeout=10 * SLOW).json()
        loaded = {rule["name"] for g in r["data"]["groups"] for rule in g["rules"]}
        assert loaded == {a["alert"] for a in alert_rules()}
        slo_gate_judges_from_this_prometheus(shop, prom)

        # a replica is scraped once it is in the targets file, and dropped when it leaves
        shop.scale("payment", 2)
        payments = [a for g in read_targets(shop) if g["labels"]["service"] == "payment"
                    for a in g["targets"]]
        assert len(payments) == 2 and f"127.0.0.1:{shop.base + 4}" in payments
        names = sorted(g["labels"]["instance_name"] for g in read_targets(shop)
                       if g["labels"]["service"] == "payment")
        assert names == ["payment-1", "payment-2"]
        poll(lambda: {a for a, (svc, v) in prom.up().items() if svc == "payment" and v == "1"}
             == set(payments), 60 * SLOW, 0.25, what="both payment instances up in Prometheus")
        shop.scale("payment", 1)
        assert [a for g in read_targets(shop) if g["labels"]["service"] == "payment"
                for a in g["targets"]] == [f"127.0.0.1:{shop.base + 4}"]
        poll(lambda: {a for a, (svc, _) in prom.up().items() if svc == "payment"}
             == {f"127.0.0.1:{shop.base + 4}"}, 60 * SLOW, 0.25,
             what="the retired payment instance dropped from Prometheus's targets")
        assert prom.stop() == 0, prom.log_tail()
    finally:
        prom.close()
