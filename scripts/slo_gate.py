#!/usr/bin/env python3
"""The deploy pipelines' SLO gate: asks Prometheus whether a service kept its objectives over a
recent window, the same two checks the canary's AnalysisTemplate makes (deploy/k8s/overlays/
canary/analysis-template.yaml), so a pipeline stops a rollout on the figures a Rollout would.

    scripts/slo_gate.py --prometheus http://prometheus:9090 --service gateway \\
        [--window 5m] [--max-error-ratio 0.01] [--max-p99 0.5] [--allow-no-traffic]

Error ratio: 5xx answers over all answers (requests_total). p99: request_duration_seconds over
every route but the event feed's long polls. A window with no answers fails unless
--allow-no-traffic: a gate that saw nothing has proven nothing. Exit 0 when both hold, 1 when
one does not or Prometheus cannot answer, 2 on bad arguments. Only the standard library.
"""
import argparse
import json
import math
import re
import sys
import urllib.error
import urllib.parse
import urllib.request


def queries(service, window):
    sel = f'service="{service}"'
    return {
        "answers": f"sum(increase(requests_total{{{sel}}}[{window}]))",
        "error_ratio": f'sum(rate(requests_total{{{sel},status=~"5.."}}[{window}])) / '
                       f"sum(rate(requests_total{{{sel}}}[{window}]))",
        "p99_seconds": "histogram_quantile(0.99, sum by (le) (rate(request_duration_seconds_bucket"
                       f'{{{sel},endpoint!="/internal/v1/events"}}[{window}])))',
    }


def instant(prometheus, expr, timeout):
    """The value of a scalar-like instant query: NaN when the vector is empty."""
    url = prometheus.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            doc = json.load(r)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise RuntimeError(f"Prometheus at {prometheus} did not answer: {e}") from None
    if doc.get("status") != "success":
        raise RuntimeError(f"Prometheus refused the query {expr!r}: {doc.get('error')}")
    result = doc["data"]["result"]
    return float(result[0]["value"][1]) if result else math.nan


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prometheus", required=True, help="Prometheus's base URL")
    ap.add_argument("--service", required=True, help="the service label (gateway, order, ...)")
    ap.add_argument("--window", default="5m", help="a PromQL duration (5m)")
    ap.add_argument("--max-error-ratio", type=float, default=0.01, help="highest 5xx share (0.01)")
    ap.add_argument("--max-p99", type=float, default=0.5, help="highest p99 in seconds (0.5)")
    ap.add_argument("--allow-no-traffic", action="store_true",
                    help="pass a window without answers")
    ap.add_argument("--timeout", type=float, default=10, help="seconds per query (10)")
    a = ap.parse_args()
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,62}", a.service):
        ap.error("--service must be a service name such as gateway or order")
    if not re.fullmatch(r"[1-9][0-9]*[smh]", a.window):
        ap.error("--window must be a PromQL duration such as 30s, 5m or 1h")
    if not 0 <= a.max_error_ratio <= 1 or a.max_p99 < 0:
        ap.error("--max-error-ratio must be within 0..1 and --max-p99 at least 0")

    try:
        got = {k: instant(a.prometheus, q, a.timeout) for k, q in queries(a.service, a.window).items()}
    except RuntimeError as e:
        print(f"slo gate: FAILED: {e}", file=sys.stderr)
        return 1
    answers = 0.0 if math.isnan(got["answers"]) else got["answers"]
    print(f"slo gate: {a.service} over {a.window}: {answers:.0f} answers, "
          f"error ratio {got['error_ratio']:.4f}, p99 {got['p99_seconds']:.3f} s")
    failures = []
    if answers == 0 and not a.allow_no_traffic:
        failures.append("no answers in the window (--allow-no-traffic to pass it)")
    if not math.isnan(got["error_ratio"]) and got["error_ratio"] > a.max_error_ratio:
        failures.append(f"error ratio {got['error_ratio']:.4f} > {a.max_error_ratio}")
    if not math.isnan(got["p99_seconds"]) and got["p99_seconds"] > a.max_p99:
        failures.append(f"p99 {got['p99_seconds']:.3f} s > {a.max_p99} s")
    for f in failures:
        print(f"slo gate: FAILED: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
