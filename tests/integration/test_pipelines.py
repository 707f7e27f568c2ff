"""The CI/CD pipelines (Jenkinsfile, .gitlab-ci.yml) against the tree they build: no Jenkins or
GitLab runs here, so what can be checked offline is: both name the stages the delivery needs,
every make target and script they call exists, the reports they publish are the files
`make test` writes (tests/run.sh), and the GitLab file is valid YAML whose jobs use declared
stages and no keyword GitLab refuses next to `rules`."""
import os
import re
import subprocess

import pytest
import yaml

from conftest import ROOT, SLOW

JENKINSFILE = os.path.join(ROOT, "Jenkinsfile")
GITLAB = os.path.join(ROOT, ".gitlab-ci.yml")
# build, tests + sanitizer, static analysis, coverage, image, scan, staging, its tests, load,
# production with both strategies, notifications
NEEDED = ("make test", "make image", "make test-deploy", "trivy image", "render.sh staging",
          "scripts/smoke.py", "scripts/slo_gate.py", "render.sh canary",
          "argo rollouts status", "patch service order", "slack")


def text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def make_targets():
    out = subprocess.run(["make", "-pRrq", "-C", ROOT, "-f", "Makefile", ":"],
                         capture_output=True, text=True, timeout=30 * SLOW).stdout
    return {m.group(1) for m in re.finditer(r"^([a-z][a-z0-9-]*):", out, re.M)}


@pytest.mark.parametrize("path", [JENKINSFILE, GITLAB])
def test_each_pipeline_has_every_delivery_step(path):
    body = text(path).lower()
    missing = [n for n in NEEDED if n.lower() not in body]
    assert not missing, f"{os.path.basename(path)} lacks {missing}"


@pytest.mark.parametrize("path", [JENKINSFILE, GITLAB])
def test_every_make_target_and_script_a_pipeline_calls_exists(path):
    body = text(path)
    # a make at a command's start (a step's `sh '...'` or a job's `- ...`), comments left out
    code = "\n".join(line for line in body.splitlines()
                     if not line.lstrip().startswith(("#", "//")))
    called = re.findall(r"(?:^\s*- |sh ')make ([a-z][a-z0-9-]*(?: [a-z][a-z0-9-]*)*)", code, re.M)
    targets = {t for group in called for t in group.split()}
    assert targets, "no make target called"
    assert targets <= make_targets(), targets - make_targets()
    for script in set(re.findall(r"\b((?:scripts|deploy/[a-z0-9]+)/[\w./-]+\.(?:py|sh))", body)):
        assert os.path.isfile(os.path.join(ROOT, script)), script


@pytest.mark.parametrize("path", [JENKINSFILE, GITLAB])
def test_the_published_reports_are_the_files_make_test_writes(path):
    body, run = text(path), text(os.path.join(ROOT, "tests", "run.sh"))
    assert "build/test-results/*.xml" in body
    assert "build/test-results/coverage/cobertura.xml" in body
    assert "results=$root/build/test-results" in run
    assert '--junitxml="$results/it-' in run and '--output-junit "$results/unit-' in run
    assert '--cobertura "$results/coverage/cobertura.xml"' in run


def test_the_gitlab_pipeline_is_well_formed():
    doc = yaml.safe_load(text(GITLAB))
    stages = doc["stages"]
    jobs = {k: v for k, v in doc.items() if isinstance(v, dict) and "script" in v
            and not k.startswith(".")}
    assert len(jobs) >= 9
    for name, job in jobs.items():
        assert job["stage"] in stages, name
        assert not ("rules" in job and "when" in job), f"{name}: `when` beside `rules`"
        for need in job.get("needs", []):
            assert need in jobs, (name, need)
    assert set(stages) == {j["stage"] for j in jobs.values()}, "a stage without jobs"
    prod = jobs["deploy-production"]
    assert prod["rules"][0]["when"] == "manual"
    test = jobs["test"]
    assert test["artifacts"]["reports"]["coverage_report"]["coverage_format"] == "cobertura"
    # the coverage regex reads the summary line gcovr prints
    assert re.search(test["coverage"].strip("/"), "lines: 41.6% (7517 out of 18078)")


def test_the_jenkinsfile_is_balanced_and_gates_production():
    body = text(JENKINSFILE)
    code = re.sub(r"'''.*?'''|'[^'\n]*'|\"[^\"\n]*\"|//[^\n]*", "", body, flags=re.S)
    assert code.count("{") == code.count("}") and code.count("(") == code.count(")")
    stages = re.findall(r"stage\('([^']+)'\)", body)
    assert len(stages) == len(set(stages)) >= 8, stages
    prod = body[body.index("stage('Deploy to production')"):]
    assert prod.index("when { branch 'main' }") < prod.index("input message")
    assert "junit testResults: 'build/test-results/*.xml'" in body
