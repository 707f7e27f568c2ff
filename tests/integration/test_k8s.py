"""deploy/k8s without a cluster: every overlay rendered by `kubectl kustomize` (Debian's kubectl
1.20 embeds Kustomize v2.0.3, so the kustomizations use only the fields it knows, which is
checked here too, whatever kubectl runs the test) and the rendered objects checked against each
other: probes, resources and the non-root security context of every workload; HPAs, VPAs,
Services and PodDisruptionBudgets pointing at workloads and pods that exist; the network
policies' default deny and DNS; no secret values; the canary's steps and analysis; every
environment variable a container gets is one the binary reads. yamllint over deploy/ is clean.
What needs a cluster (admission, the controllers, the adapter's metric) is not tested here.
"""
import os
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import BINARY, ROOT, SLOW

K8S = os.path.join(ROOT, "deploy", "k8s")
KUBECTL = os.environ.get("MS_KUBECTL") or shutil.which("kubectl")
HINT = "bash scripts/bootstrap.sh test installs it (Debian package {})"
pytestmark = pytest.mark.skipif(
    not KUBECTL, reason="kubectl not found: " + HINT.format("kubernetes-client"))

OVERLAYS = {"staging": "microshop-staging", "production": "microshop", "blue-green": "microshop",
            "canary": "microshop"}
TARGETS = {"gateway": 8080, "user": 8081, "order": 8082, "inventory": 8083, "payment": 8084}
# The Secrets the operator creates (deploy/k8s/README.md); the repository holds none.
SECRETS = {"microshop-auth": {"jwt-secret", "identity-secret"},
           "microshop-db": {f"{t}-database-url" for t in TARGETS if t != "gateway"}}
# What Kustomize v2.0.3 (kubectl 1.20) understands; newer fields would render elsewhere only.
KUSTOMIZE_V2_FIELDS = {"apiVersion", "kind", "resources", "bases", "namespace", "namePrefix",
                       "nameSuffix", "commonLabels", "commonAnnotations", "images",
                       "configMapGenerator", "secretGenerator", "generatorOptions",
                       "patchesStrategicMerge", "patchesJson6902"}
CLUSTER_SCOPED = {"Namespace"}
WORKLOADS = ("Deployment", "Rollout")


def render(path):
    r = subprocess.run([KUBECTL, "kustomize", path], capture_output=True, text=True,
                       timeout=120 * SLOW)
    assert r.returncode == 0, f"kubectl kustomize {path}:\n{r.stderr}"
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert docs, f"{path} rendered nothing"
    return docs


@pytest.fixture(scope="module")
def rendered():
    return {o: render(os.path.join(K8S, "overlays", o)) for o in OVERLAYS}


def of_kind(docs, *kinds):
    return [d for d in docs if d["kind"] in kinds]


def named(docs, kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} in the render"
    return found[0]


def pod_template(docs, workload):
    """A Deployment's template, or a Rollout's own or that of the Deployment it refers to."""
    spec = workload["spec"]
    if "template" in spec:
        return spec["template"]
    ref = spec["workloadRef"]
    assert ref["kind"] == "Deployment", f"{workload['metadata']['name']}: workloadRef {ref}"
    return named(docs, "Deployment", ref["name"])["spec"]["template"]


def pods(docs):
    """(workload, pod template) of every Deployment and Rollout."""
    return [(w, pod_template(docs, w)) for w in of_kind(docs, *WORKLOADS)]


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi)?$")
FACTOR = {None: 1, "m": 1e-3, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def quantity(q):
    m = QUANTITY.match(str(q))
    assert m, f"quantity {q!r} not understood"
    return float(m.group(1)) * FACTOR[m.group(2)]


def kustomizations():
    for top, _, files in os.walk(K8S):
        for f in files:
            if f in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
                yield os.path.join(top, f)


def test_kustomizations_use_only_what_kustomize_v2_knows():
    paths = list(kustomizations())
    assert len(paths) >= 5
    for p in paths:
        with open(p) as f:
            k = yaml.safe_load(f)
        extra = set(k) - KUSTOMIZE_V2_FIELDS
        assert not extra, f"{os.path.relpath(p, ROOT)}: {sorted(extra)} unknown to Kustomize v2.0.3"


def test_base_renders_without_a_namespace():
    docs = render(os.path.join(K8S, "base"))
    assert not [d for d in docs if "namespace" in d["metadata"]]
    assert {w["metadata"]["name"] for w in of_kind(docs, "Deployment")} == set(TARGETS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_into_its_namespace(rendered, overlay):
    docs = rendered[overlay]
    ns = OVERLAYS[overlay]
    named(docs, "Namespace", ns)
    for d in docs:
        if d["kind"] not in CLUSTER_SCOPED:
            assert d["metadata"].get("namespace") == ns, f"{d['kind']}/{d['metadata']['name']}"
    targets = set()
    for w, tpl in pods(docs):
        for c in tpl["spec"]["containers"]:
            assert c["args"][0] == "serve", c["args"]
            targets.add(c["args"][1])
    assert targets == set(TARGETS), f"{overlay} runs {sorted(targets)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_has_probes_resources_and_runs_as_non_root(rendered, overlay):
    docs = rendered[overlay]
    for w, tpl in pods(docs):
        where = f"{overlay} {w['kind']}/{w['metadata']['name']}"
        spec = tpl["spec"]
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True and pod_sc.get("runAsUser") == 10001, where
        for c in spec["containers"]:
            target = c["args"][1]
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            assert ports["http"] == TARGETS[target], where
            assert re.match(r"^[^:]+:[^:]+$", c["image"]), f"{where}: untagged image {c['image']}"
            # the gateway answers /health and /ready on its admin listener only
            probe_port = "admin" if target == "gateway" else "http"
            for probe, path in (("startupProbe", "/ready"), ("readinessProbe", "/ready"),
                                ("livenessProbe", "/health")):
                assert probe in c, f"{where}: no {probe}"
                get = c[probe]["httpGet"]
                assert get["path"] == path and get["port"] == probe_port, f"{where} {probe}"
                assert get["port"] in ports, f"{where} {probe}: no port {get['port']}"
            res = c["resources"]
            for r in ("cpu", "memory"):
                req, lim = res["requests"][r], res["limits"][r]
                assert quantity(req) <= quantity(lim), f"{where}: {r} request {req} > limit {lim}"
            # idle RSS measured 6.5-8.6 MiB plus libpq's 5 MiB: a request under 16 MiB is a typo
            assert quantity(res["requests"]["memory"]) >= 16 * 1024**2, where
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            anns = tpl["metadata"]["annotations"]
            assert anns["prometheus.io/scrape"] == "true", where
            assert int(anns["prometheus.io/port"]) in ports.values(), where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_references_only(rendered, overlay):
    docs = rendered[overlay]
    for s in of_kind(docs, "Secret"):
        assert not s.get("data") and not s.get("stringData"), f"Secret {s['metadata']['name']}"
    refs = set()
    for _, tpl in pods(docs):
        for c in tpl["spec"]["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
                elif re.search(r"SECRET|PASSWORD|DATABASE_URL|PRIVATE_KEY", e["name"]):
                    pytest.fail(f"{overlay}: {e['name']} given as a value, not a secretKeyRef")
    assert refs == {(n, k) for n, keys in SECRETS.items() for k in keys}, sorted(refs)
    with open(os.path.join(K8S, "README.md")) as f:
        readme = f.read()
    for name, keys in SECRETS.items():
        assert name in readme and all(k in readme for k in keys), f"README: {name} {keys}"
    for cm in of_kind(docs, "ConfigMap"):
        for k in cm.get("data", {}):
            assert not re.search(r"SECRET|PASSWORD|DATABASE_URL", k), f"ConfigMap key {k}"


def test_every_environment_variable_is_one_the_binary_reads(rendered):
    """A misspelt name would be ignored silently; every name given must be in the binary."""
    with open(BINARY, "rb") as f:
        binary = f.read()
    for overlay, docs in rendered.items():
        names = set()
        for cm in of_kind(docs, "ConfigMap"):
            if cm["metadata"]["name"] == "microshop-config":
                names.update(cm["data"])
        for _, tpl in pods(docs):
            for c in tpl["spec"]["containers"]:
                names.update(e["name"] for e in c.get("env", []))
                for src in c.get("envFrom", []):
                    named(docs, "ConfigMap", src["configMapRef"]["name"])
        assert len(names) > 10
        for n in sorted(names):
            assert n.encode() + b"\0" in binary, f"{overlay}: {n} is read by no microshop code"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscalers_point_at_workloads_in_the_render(rendered, overlay):
    docs = rendered[overlay]
    workloads = {(w["kind"], w["metadata"]["name"]) for w in of_kind(docs, *WORKLOADS)}
    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    assert {h["metadata"]["name"] for h in hpas} == {"gateway", "user", "inventory", "payment"}
    for h in hpas:
        spec = h["spec"]
        where = f"{overlay} HPA/{h['metadata']['name']}"
        assert h["apiVersion"] == "autoscaling/v2", where
        ref = spec["scaleTargetRef"]
        assert (ref["kind"], ref["name"]) in workloads, f"{where}: {ref} not in the render"
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"], where
        metrics = {}
        for m in spec["metrics"]:
            if m["type"] == "Resource":
                metrics[m["resource"]["name"]] = m["resource"]["target"]["averageUtilization"]
            elif m["type"] == "Pods":
                metrics[m["pods"]["metric"]["name"]] = m["pods"]["target"]["averageValue"]
        assert metrics == {"cpu": 70, "memory": 80, "http_requests_per_second": "100"}, where
        up, down = spec["behavior"]["scaleUp"], spec["behavior"]["scaleDown"]
        assert up["stabilizationWindowSeconds"] == 0, where
        assert {"type": "Percent", "value": 100, "periodSeconds": 15} in up["policies"], where
        assert down["stabilizationWindowSeconds"] == 300, where
        assert down["policies"] == [{"type": "Percent", "value": 10, "periodSeconds": 60}], where
    vpas = of_kind(docs, "VerticalPodAutoscaler")
    assert vpas
    for v in vpas:
        ref = v["spec"]["targetRef"]
        assert (ref["kind"], ref["name"]) in workloads, f"VPA/{v['metadata']['name']}: {ref}"
        assert v["spec"]["updatePolicy"]["updateMode"] == "Off"


def test_the_adapter_rule_makes_the_metric_the_hpas_use(rendered):
    docs = rendered["production"]
    cm = named(docs, "ConfigMap", "microshop-prometheus-adapter")
    rules = yaml.safe_load(cm["data"]["config.yaml"])["rules"]
    made = {r["name"]["as"]: r for r in rules}
    rule = made["http_requests_per_second"]
    assert rule["seriesQuery"].startswith("requests_total{")
    assert re.match(rule["name"]["matches"], "requests_total")
    assert "rate(<<.Series>>" in rule["metricsQuery"]
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_and_disruption_budgets_select_pods(rendered, overlay):
    docs = rendered[overlay]
    templates = pods(docs)
    for s in of_kind(docs, "Service"):
        where = f"{overlay} Service/{s['metadata']['name']}"
        sel = s["spec"]["selector"]
        matching = [tpl for _, tpl in templates if selects(sel, tpl["metadata"]["labels"])]
        assert matching, f"{where}: selector {sel} matches no pods"
        for tpl in matching:
            names = {p["name"] for c in tpl["spec"]["containers"] for p in c["ports"]}
            for p in s["spec"]["ports"]:
                assert p["targetPort"] in names, f"{where}: targetPort {p['targetPort']}"
    for name, port in TARGETS.items():
        svc = named(docs, "Service", name)
        assert port in [p["port"] for p in svc["spec"]["ports"]], f"Service {name}"
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        sel = pdb["spec"]["selector"]["matchLabels"]
        assert any(selects(sel, tpl["metadata"]["labels"]) for _, tpl in templates), \
            f"{overlay} PDB/{pdb['metadata']['name']}: {sel} matches no pods"
        assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable") == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_allow_dns(rendered, overlay):
    docs = rendered[overlay]
    policies = of_kind(docs, "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {}
            and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert deny, f"{overlay}: no default deny of ingress and egress"
    dns = False
    for p in policies:
        if p["spec"]["podSelector"] != {}:
            continue
        for rule in p["spec"].get("egress", []):
            ports = {(x["protocol"], x["port"]) for x in rule.get("ports", [])}
            to_system = any(t.get("namespaceSelector", {}).get("matchLabels", {})
                            .get("kubernetes.io/metadata.name") == "kube-system"
                            for t in rule.get("to", []))
            dns |= to_system and {("UDP", 53), ("TCP", 53)} <= ports
    assert dns, f"{overlay}: DNS (UDP and TCP 53 to kube-system) not allowed"
    # every policy picks pods that exist, and the calls the system makes are allowed both ways
    labels = [tpl["metadata"]["labels"] for _, tpl in pods(docs)]
    for p in policies:
        sel = p["spec"]["podSelector"].get("matchLabels", {})
        assert any(selects(sel, lb) for lb in labels), f"NetworkPolicy {p['metadata']['name']}"

    def allowed(src, dst, port):
        def peer_ok(peers, who):
            return any(selects(x.get("podSelector", {}).get("matchLabels", {}), who)
                       and "namespaceSelector" not in x for x in peers)
        def port_ok(rule):
            return not rule.get("ports") or any(x["port"] == port for x in rule["ports"])
        src_l = {"app.kubernetes.io/name": src, "app.kubernetes.io/part-of": "microshop"}
        dst_l = {"app.kubernetes.io/name": dst, "app.kubernetes.io/part-of": "microshop"}
        out = inn = False
        for p in policies:
            sel = p["spec"]["podSelector"].get("matchLabels", {})
            for rule in p["spec"].get("egress", []) if selects(sel, src_l) else []:
                if port_ok(rule) and ("to" not in rule or peer_ok(rule["to"], dst_l)):
                    out = True
            for rule in p["spec"].get("ingress", []) if selects(sel, dst_l) else []:
                if port_ok(rule) and ("from" not in rule or peer_ok(rule["from"], src_l)):
                    inn = True
        return out and inn

    calls = [("gateway", t) for t in TARGETS if t != "gateway"]
    calls += [("order", t) for t in ("user", "inventory", "payment")]
    for src, dst in calls:
        assert allowed(src, dst, TARGETS[dst]), f"{overlay}: {src} -> {dst} not allowed"
    assert not allowed("user", "payment", TARGETS["payment"]), "user -> payment is no call"
    assert not allowed("payment", "order", TARGETS["order"]), "payment -> order is no call"


def test_canary_rolls_out_in_steps_with_an_analysis(rendered):
    docs = rendered["canary"]
    ro = named(docs, "Rollout", "order")
    canary = ro["spec"]["strategy"]["canary"]
    steps = canary["steps"]
    assert [s["setWeight"] for s in steps if "setWeight" in s] == [10, 25, 50, 75, 100]
    # a pause after every weight but the last
    for i, s in enumerate(steps[:-1]):
        if "setWeight" in s:
            assert "pause" in steps[i + 1], f"no pause after setWeight {s['setWeight']}"
    labels = pod_template(docs, ro)["metadata"]["labels"]
    assert selects(ro["spec"]["selector"]["matchLabels"], labels)
    refs = [t["templateName"] for t in canary["analysis"]["templates"]]
    queries = []
    for name in refs:
        at = named(docs, "AnalysisTemplate", name)
        for m in at["spec"]["metrics"]:
            assert "successCondition" in m and "failureLimit" in m, m["name"]
            queries.append(m["provider"]["prometheus"]["query"])
    assert any("requests_total" in q and '5..' in q for q in queries), "no error-rate analysis"
    assert any("histogram_quantile(0.99" in q and "request_duration_seconds_bucket" in q
               for q in queries), "no p99 analysis"


def test_blue_green_service_names_the_live_colour(rendered):
    docs = rendered["blue-green"]
    colours = {}
    for w, tpl in pods(docs):
        lb = tpl["metadata"]["labels"]
        if lb["app.kubernetes.io/name"] == "order":
            colours[lb["microshop.example/colour"]] = w["metadata"]["name"]
    assert colours == {"blue": "order-blue", "green": "order-green"}
    live = named(docs, "Service", "order")["spec"]["selector"]
    assert live.get("microshop.example/colour") in colours, live
    assert not [w for w in of_kind(docs, "Deployment") if w["metadata"]["name"] == "order"]


def test_yamllint_is_clean():
    tool = shutil.which("yamllint")
    assert tool, "yamllint not found: " + HINT.format("yamllint")
    deploy = os.path.join(ROOT, "deploy")
    r = subprocess.run([tool, "-f", "parsable", "-c", ".yamllint", "."], cwd=deploy,
                       capture_output=True, text=True, timeout=120 * SLOW)
    assert r.returncode == 0 and not r.stdout.strip(), f"yamllint:\n{r.stdout}{r.stderr}"


def render_with_image(overlay, image):
    return subprocess.run(["bash", os.path.join(K8S, "render.sh"), overlay, image],
                          capture_output=True, text=True, timeout=120 * SLOW,
                          env={**os.environ, "KUBECTL": KUBECTL})


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
@pytest.mark.parametrize("image", ["registry.example.com:5000/shop/microshop:1a2b3c4",
                                   "registry.example.com/microshop@sha256:" + "ab" * 32])
def test_render_sh_points_every_container_at_the_built_image(rendered, overlay, image):
    """deploy/k8s/render.sh, the pipelines' deploy step: the overlay as it is, but every
    container runs the image the pipeline built."""
    r = render_with_image(overlay, image)
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert len(docs) == len(rendered[overlay])
    images = {c["image"] for d in of_kind(docs, "Deployment")
              for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {image}


@pytest.mark.parametrize("args", [["staging"], ["nosuch", "a/b:c"], ["../base", "a/b:c"],
                                  ["staging", "a b"], ["staging", "microshop"],
                                  ["staging", "a/b@sha256:12"]])
def test_render_sh_refuses_bad_arguments(args):
    r = subprocess.run(["bash", os.path.join(K8S, "render.sh"), *args], capture_output=True,
                       text=True, timeout=30 * SLOW, env={**os.environ, "KUBECTL": KUBECTL})
    assert r.returncode == 2 and r.stdout == "" and r.stderr, (args, r)

