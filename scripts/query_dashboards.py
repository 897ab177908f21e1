#!/usr/bin/env python3
"""Evaluates every PromQL query of every Grafana dashboard through a real Prometheus.

check_dashboards.py proves the metric names exist; this proves each query parses in Prometheus and
returns data once the stack has served traffic. For each panel target (and templating variable
query and annotation) of deploy/observability/dashboards/*.json it substitutes the Grafana
variables as Grafana does — $__rate_interval and friends by a window fitting the scrape interval,
a variable that includes "All" by its all-value (`.*`), a single-value variable by each of its
values in turn (from its `label_values(...)` query, asked of Prometheus) — sends the expression to
PROMETHEUS/api/v1/query and requires status "success" for every value and at least one sample for
one of them (a per-service panel has data for the services it is about). A panel that cannot
return data is a failure.

Prints one line per failing item (every item with -v), then `N passed, M failed`; exits 1 when
M > 0, 2 when Prometheus cannot be reached.

Usage: scripts/query_dashboards.py http://127.0.0.1:9090 [--window 30s] [-v]
Standard library only.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_dashboards import DEFAULT_DASHBOARDS, dashboard_items  # noqa: E402

# Grafana's interval variables, then any other variable ($x, ${x}, ${x:fmt}, [[x]]).
INTERVALS = re.compile(r"\$\{?__(rate_interval|interval|range)(_ms|_s)?\}?")
VARIABLE = re.compile(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[A-Za-z0-9_.:]+\]\]")


def concrete(expr: str, window: str, values: dict[str, str]) -> str:
    """The expression as Grafana would send it for these variable values."""
    expr = INTERVALS.sub(window, expr)

    def value(m: re.Match) -> str:
        name = m.group(0).strip("$[]{}").split(":")[0]
        return values.get(name, ".*")

    return VARIABLE.sub(value, expr)


LABEL_VALUES = re.compile(r"^\s*label_values\((?:(?P<metric>.+),\s*)?(?P<label>[A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$")


def label_values(prometheus: str, query: str, values: dict[str, str]) -> list[str]:
    """The values a `label_values(metric, label)` variable offers, from Prometheus."""
    m = LABEL_VALUES.match(concrete(query, "30s", values))
    if not m:
        return []
    params = [("match[]", m.group("metric"))] if m.group("metric") else []
    url = f"{prometheus.rstrip('/')}/api/v1/label/{m.group('label')}/values?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp).get("data") or []


def assignments(prometheus: str, dash: dict) -> list[dict[str, str]]:
    """Every combination of variable values to evaluate a dashboard with: all-values where a
    variable includes All, each offered value (in turn) where it does not."""
    combos: list[dict[str, str]] = [{}]
    for v in (dash.get("templating") or {}).get("list") or []:
        name = v.get("name")
        if v.get("includeAll"):
            for c in combos:
                c[name] = v.get("allValue") or ".*"
            continue
        query = v.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        next_combos = []
        for c in combos:
            offered = label_values(prometheus, query or "", c) or [str((v.get("current") or {}).get("value", ".*"))]
            next_combos += [{**c, name: o} for o in offered]
        combos = next_combos
    return combos


def query(prometheus: str, expr: str, timeout: float = 10.0) -> tuple[bool, str]:
    url = prometheus.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as err:
        try:
            body = json.load(err)
        except ValueError:
            return False, f"HTTP {err.code}"
    if body.get("status") != "success":
        return False, f"{body.get('errorType')}: {body.get('error')}"
    data = body.get("data") or {}
    result = data.get("result")
    if data.get("resultType") in ("scalar", "string"):
        return True, "a scalar"
    if not result:
        return False, "no data"
    return True, f"{len(result)} series"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prometheus", help="base URL of Prometheus, e.g. http://127.0.0.1:9090")
    ap.add_argument("--window", default="30s", help="what $__rate_interval and $__interval become (default 30s)")
    ap.add_argument("--dashboard", action="append", help="a dashboard file (default: every one in deploy/observability/dashboards)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    try:
        urllib.request.urlopen(args.prometheus.rstrip("/") + "/-/ready", timeout=5).read()
    except (urllib.error.URLError, OSError) as err:
        print(f"cannot reach Prometheus at {args.prometheus}: {err}")
        return 2
    paths = [Path(p) for p in args.dashboard] if args.dashboard else sorted(DEFAULT_DASHBOARDS.glob("*.json"))
    passed = failed = 0
    for path in paths:
        dash = json.loads(path.read_text(encoding="utf-8"))
        dash = dash.get("dashboard", dash) if "panels" not in dash else dash
        combos = assignments(args.prometheus, dash)
        for item in dashboard_items(dash):
            problems = []
            for expr in item["exprs"]:
                answers = [(c, *query(args.prometheus, concrete(expr, args.window, c))) for c in combos]
                broken = [f"{what} with {c}" for c, ok, what in answers if not ok and what != "no data"]
                data = [(c, what) for c, ok, what in answers if ok]
                if broken:
                    problems.append(f"{'; '.join(broken)}: {expr}")
                elif not data:
                    problems.append(f"no data for any of {combos}: {concrete(expr, args.window, combos[0])}")
                elif args.verbose:
                    print(f"  ok    {path.name} {item['label']}: {data[0][1]} with {data[0][0]}")
            if problems:
                failed += 1
                for p in problems:
                    print(f"  FAIL  {path.name} {item['label']}: {p}")
            else:
                passed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
