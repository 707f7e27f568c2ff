"""How soon the ops console is usable on `microshop run`: a headless Chromium loads /ops with
its cache off, again and again, and the page itself reports (performance.now(), from the
navigation's start, at the DOM change that made each true) when its DOM was interactive, when every service stood healthy in the
table (the first data drawn: the page is of use from then on) and when the charts were
drawn. The reference, in the same run, is the same browser loading a blank page.

    bench/console.sh [--rounds N]
"""
import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from browser import Browser  # noqa: E402
from test_supervisor import Run  # noqa: E402

SERVICES = ("user", "order", "inventory", "payment")
HEALTHY = ("document.body.dataset.health === 'healthy' && " + " && ".join(
    f"!!document.querySelector('#services tr[data-service=\"{s}\"][data-health=\"healthy\"]')"
    for s in SERVICES))
CHARTS = "document.querySelectorAll('#charts canvas').length === 4"


def when(expr):
    """JavaScript: a promise of performance.now() at the first DOM change after which expr
    holds (a MutationObserver: exact, where polling per frame would add up to a frame)."""
    return ("new Promise(done => { const ok = () => { try { return !!(" + expr + "); } "
            "catch (e) { return false; } }; if (ok()) return done(performance.now()); "
            "const seen = new MutationObserver(() => { if (ok()) { seen.disconnect(); "
            "done(performance.now()); } }); seen.observe(document, {subtree: true, "
            "childList: true, attributes: true, characterData: true}); })")


def load(b, url, checks):
    b.call("Page.navigate", url="about:blank")
    b.wait_for("document.readyState === 'complete'", 10, "a blank page")
    b.call("Page.navigate", url=url)
    b.wait_for("document.readyState !== 'loading' && location.href !== 'about:blank'", 10,
               "the page to start")
    out = {"dom interactive": b.evaluate(
        "performance.getEntriesByType('navigation')[0].domInteractive")}
    for name, expr in checks.items():
        out[name] = b.evaluate(when(expr))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    run, b = Run(), Browser()
    try:
        b.call("Network.enable")
        b.call("Network.setCacheDisabled", cacheDisabled=True)
        figures = {}
        for _ in range(args.rounds):
            blank = load(b, "data:text/html,<title>blank</title>ok", {})
            figures.setdefault("reference: a blank page, dom interactive", []).append(
                blank["dom interactive"])
            got = load(b, run.admin + "/ops", {"every service healthy": HEALTHY,
                                                "charts drawn": CHARTS})
            for k, v in got.items():
                figures.setdefault("/ops, " + k, []).append(v)
        assert b.errors == [], b.errors
        print(f"{'what (ms from the navigation start)':46} {'median':>8} {'max':>8}")
        for k, v in figures.items():
            print(f"{k:46} {statistics.median(v):8.0f} {max(v):8.0f}")
        print(f"rounds: {args.rounds}; the goal: every service healthy within 1000 ms")
    finally:
        b.close()
        run.stop()
        run.close()


if __name__ == "__main__":
    main()
