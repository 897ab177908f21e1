#!/usr/bin/env python3
"""Checks that every metric the Grafana dashboards query is one the services export.

For every dashboard (default: deploy/observability/dashboards/*.json) it takes each PromQL expression
of each panel (rows, collapsed rows and their nested panels included), of each templating variable
(label_values(...), query_result(...), metrics(...)) and of each annotation query, finds the metric
names the expression selects, and looks them up in the metrics exported by the SOURCES: URLs of
/metrics endpoints or files holding a saved scrape, in the Prometheus text exposition format (or
OpenMetrics text). A name exists when a sample of that name is exposed or a `# TYPE` line declares
it (a histogram family `x` exposes `x_bucket`, `x_sum` and `x_count`; a summary `x`, `x_sum` and
`x_count`); the names of all SOURCES are pooled.

Prints, per dashboard, each panel with a missing name (every panel with -v), then
`N passed, M failed`: N panels (and templating variables, annotations) whose names all exist, M
with a missing name or an expression that cannot be read. Exits 1 when M > 0, 2 when a source
cannot be read or there is no dashboard.

Usage:
  scripts/check_dashboards.py deploy/observability/metrics-contract.prom
  scripts/check_dashboards.py http://127.0.0.1:8081/metrics http://127.0.0.1:8082/metrics \\
      http://127.0.0.1:8083/metrics http://127.0.0.1:8084/metrics
  scripts/check_dashboards.py --dashboard my.json -v saved-scrape.txt
  scripts/check_dashboards.py --self-test

Standard library only (Python 3.8+).
"""
from __future__ import annotations

import argparse
import io
import json
import re
import sys
import urllib.error
import urllib.request
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DASHBOARDS = ROOT / "deploy" / "observability" / "dashboards"

# ---------------------------------------------------------------------------------------------------
# Prometheus text exposition
# ---------------------------------------------------------------------------------------------------

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")

# The series names a `# TYPE name type` line stands for (OpenMetrics adds _total/_created to counters).
FAMILY_SUFFIXES = {
    "counter": ("",),
    "gauge": ("",),
    "untyped": ("",),
    "unknown": ("",),
    "stateset": ("",),
    "info": ("", "_info"),
    "histogram": ("_bucket", "_sum", "_count"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count"),
}


def _quoted(s: str, i: int) -> tuple[str, int]:
    """The double-quoted string starting at s[i] == '"', unescaped, and the index after it."""
    out = []
    i += 1
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            out.append({"n": "\n", '"': '"', "\\": "\\"}.get(s[i + 1], "\\" + s[i + 1]))
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    raise ValueError("unterminated string")


def _sample_name(line: str) -> str:
    """The metric name of a sample line: `name{labels} value [ts]`, `name value`, or the UTF-8 form
    `{"name", label="v"} value`."""
    line = line.lstrip()
    if line.startswith("{"):
        i = 1
        while i < len(line) and line[i] in " \t":
            i += 1
        if i < len(line) and line[i] == '"':
            name, j = _quoted(line, i)
            rest = line[j:].lstrip()
            if rest.startswith((",", "}")):  # `{"name", ...}`: a quoted name, not a label
                return name
        raise ValueError("sample without a metric name")
    m = METRIC_NAME.match(line)
    if not m:
        raise ValueError("sample without a metric name")
    return m.group(0)


def parse_exposition(text: str) -> tuple[set[str], dict[str, str], list[str]]:
    """Returns (exported series names, {family: type} from # TYPE lines, problems)."""
    names: set[str] = set()
    types: dict[str, str] = {}
    problems: list[str] = []
    openmetrics = any(line.strip() == "# EOF" for line in text.splitlines())
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            m = re.match(r"#\s*TYPE\s+", line)
            if m:
                rest = line[m.end():]
                try:
                    if rest.startswith('"'):  # a quoted UTF-8 family name
                        fam, j = _quoted(rest, 0)
                        typ = rest[j:].strip().lower()
                    else:
                        fam, _, typ = rest.partition(" ")
                        typ = typ.strip().lower()
                except ValueError as err:
                    problems.append(f"line {n}: {err}")
                    continue
                types[fam] = typ
                suffixes = FAMILY_SUFFIXES.get(typ)
                if suffixes is None:
                    problems.append(f"line {n}: unknown type {typ!r} for {fam}")
                    suffixes = ("",)
                if openmetrics and typ == "counter":
                    suffixes = ("_total", "_created")
                names.update(fam + s for s in suffixes)
            continue
        try:
            names.add(_sample_name(line))
        except ValueError as err:
            problems.append(f"line {n}: {err}: {raw[:80]!r}")
    return names, types, problems


def read_source(src: str, timeout: float = 10.0) -> str:
    if re.match(r"https?://", src):
        req = urllib.request.Request(src, headers={
            # The text format: no protobuf, no OpenMetrics negotiation needed.
            "Accept": "text/plain;version=0.0.4;q=1,*/*;q=0.1",
            "User-Agent": "metastream-check-dashboards",
        })
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read().decode("utf-8", "replace")
    return Path(src).read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------------
# PromQL: the metric names an expression selects
# ---------------------------------------------------------------------------------------------------

# Keywords of PromQL (case-insensitive in the language): aggregations, modifiers, set operators.
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
OTHER_KEYWORDS = {"offset", "bool", "and", "or", "unless", "atan2", "inf", "nan", "start", "end"}
KEYWORDS = AGGREGATIONS | LABEL_LIST_KEYWORDS | OTHER_KEYWORDS

_NUMBER = re.compile(
    r"""0[xX][0-9a-fA-F]+(?:_?[0-9a-fA-F])*         # hex
      | (?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?     # decimal, float
        (?:(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)?  # a duration unit: 5m, 1h30m
    """, re.X)
# Grafana variables: $__rate_interval, $service, ${service}, ${service:regex}, [[service]].
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[A-Za-z0-9_.:]+\]\]")


class PromQLError(ValueError):
    pass


def _tokens(expr: str) -> list[tuple[str, str]]:
    """Lexes a PromQL expression into (kind, text): ident, number, string, var, op, and the
    brackets ( ) { } [ ]. Comments are dropped."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c.isspace():
            i += 1
        elif c == "#":  # a comment, to the end of the line
            j = expr.find("\n", i)
            i = n if j < 0 else j
        elif c in "\"'`":
            j = i + 1
            while j < n and expr[j] != c:
                j += 2 if expr[j] == "\\" and c != "`" else 1
            if j >= n:
                raise PromQLError(f"unterminated string at {i}")
            out.append(("string", expr[i + 1:j]))
            i = j + 1
        elif (m := _GRAFANA_VAR.match(expr, i)) and (c == "$" or expr.startswith("[[", i)):
            out.append(("var", m.group(0)))
            i = m.end()
        elif c.isdigit() or (c == "." and i + 1 < n and expr[i + 1].isdigit()):
            m = _NUMBER.match(expr, i)
            out.append(("number", m.group(0)))
            i = m.end()
        elif (m := METRIC_NAME.match(expr, i)):
            out.append(("ident", m.group(0)))
            i = m.end()
        elif c in "(){}[]":
            out.append((c, c))
            i += 1
        elif c in "+-*/%^=!<>,:@~":
            m = re.compile(r"==|!=|=~|!~|>=|<=|[-+*/%^=<>,:@~]").match(expr, i)
            if not m:
                raise PromQLError(f"unexpected {c!r} at {i}")
            out.append(("op", m.group(0)))
            i = m.end()
        else:
            raise PromQLError(f"unexpected {c!r} at {i}")
    return out


def _matching(tokens: list[tuple[str, str]], i: int) -> int:
    """The index of the bracket closing the one at tokens[i]."""
    pairs = {"(": ")", "{": "}", "[": "]"}
    stack = [pairs[tokens[i][0]]]
    j = i + 1
    while j < len(tokens):
        k = tokens[j][0]
        if k in pairs:
            stack.append(pairs[k])
        elif k in ")}]":
            if k != stack[-1]:
                raise PromQLError(f"{k!r} closes {stack[-1]!r}")
            stack.pop()
            if not stack:
                return j
        j += 1
    raise PromQLError(f"unclosed {tokens[i][0]!r}")


def _name_matchers(tokens: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """The __name__ matchers of a {...} matcher list (the tokens between the braces): names given
    with `=` (or as a quoted UTF-8 name) and regexes given with `=~`."""
    names, regexes = [], []
    for j, (kind, text) in enumerate(tokens):
        prev_ok = j == 0 or tokens[j - 1] == ("op", ",")
        nxt = tokens[j + 1] if j + 1 < len(tokens) else ("op", ",")
        if kind == "ident" and text == "__name__" and j + 2 < len(tokens) and tokens[j + 2][0] == "string":
            if tokens[j + 1] == ("op", "="):
                names.append(tokens[j + 2][1])
            elif tokens[j + 1] == ("op", "=~"):
                regexes.append(tokens[j + 2][1])
        elif kind == "string" and prev_ok and nxt == ("op", ","):
            names.append(text)  # {"utf8.metric.name", label="x"}
        elif kind == "string" and prev_ok and j == len(tokens) - 1:
            names.append(text)
    return names, regexes


def metric_names(expr: str) -> tuple[set[str], set[str]]:
    """Returns (metric names, __name__ regexes) that a PromQL expression selects. Raises
    PromQLError when the expression cannot be read (unbalanced brackets, an unknown character)."""
    toks = _tokens(expr)
    stack = []
    for kind, _ in toks:
        if kind in "({[":
            stack.append({"(": ")", "{": "}", "[": "]"}[kind])
        elif kind in ")}]":
            if not stack or stack.pop() != kind:
                raise PromQLError(f"unbalanced {kind!r}")
    if stack:
        raise PromQLError(f"unclosed {stack[-1]!r}")
    names: set[str] = set()
    regexes: set[str] = set()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][0] if i + 1 < len(toks) else None
        if kind == "[":  # range, subquery or a Grafana [[var]] already lexed: nothing selected inside
            i = _matching(toks, i) + 1
            continue
        if kind == "{":  # matchers of a selector; a bare {...} may name the metric with __name__
            close = _matching(toks, i)
            n, r = _name_matchers(toks[i + 1:close])
            names.update(n)
            regexes.update(r)
            i = close + 1
            continue
        if kind == "ident":
            low = text.lower()
            if low in LABEL_LIST_KEYWORDS:
                if nxt == "(":  # by (a, b), on(x), group_left(y): label names
                    i = _matching(toks, i + 1) + 1
                    continue
            elif low in KEYWORDS:
                pass
            elif nxt == "(":
                pass  # a function: rate(, histogram_quantile(, label_replace(
            else:
                names.add(text)
        i += 1
    return names, regexes


def _split_args(s: str) -> list[str]:
    """Top-level comma-separated arguments of s (brackets and strings respected)."""
    args, depth, cur, quote = [], 0, [], None
    i = 0
    while i < len(s):
        c = s[i]
        if quote:
            cur.append(c)
            if c == "\\" and i + 1 < len(s):
                cur.append(s[i + 1])
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
            cur.append(c)
        elif c in "([{":
            depth += 1
            cur.append(c)
        elif c in ")]}":
            depth -= 1
            cur.append(c)
        elif c == "," and depth == 0:
            args.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    if "".join(cur).strip():
        args.append("".join(cur).strip())
    return args


def variable_query_exprs(query) -> tuple[list[str], list[str]]:
    """The PromQL expressions and metric-name regexes of a Prometheus templating query: a string
    (label_values(metric{...}, label), label_values(label), label_names(), metrics(regex),
    query_result(expr), or PromQL) or Grafana's object form ({"query": ..., "qryType", "metric"})."""
    if isinstance(query, dict):
        if isinstance(query.get("query"), str) and query["query"].strip():
            return variable_query_exprs(query["query"])
        metric = query.get("metric")
        return ([metric] if isinstance(metric, str) and metric else []), []
    if not isinstance(query, str) or not query.strip():
        return [], []
    q = query.strip()
    m = re.fullmatch(r"(label_values|label_names|metrics|query_result)\s*\((.*)\)", q, re.S)
    if not m:
        return [q], []
    fn, args = m.group(1), _split_args(m.group(2))
    if fn == "label_values":
        return (args[:1] if len(args) >= 2 else []), []
    if fn == "label_names":
        return (args[:1] if args else []), []
    if fn == "metrics":
        return [], ([args[0].strip("\"'")] if args else [])
    return ([m.group(2)] if m.group(2).strip() else []), []


# ---------------------------------------------------------------------------------------------------
# Grafana dashboards
# ---------------------------------------------------------------------------------------------------

def _is_prometheus(ds, default: bool = True) -> bool:
    """Whether a datasource reference means Prometheus (unset: the dashboard's default, Prometheus)."""
    if ds is None or ds == "":
        return default
    other = re.compile(r"loki|tempo|jaeger|zipkin|elastic|influx|graphite|grafana", re.I)
    if isinstance(ds, str):  # legacy: a datasource name, or a variable
        return not other.search(ds)
    typ = ds.get("type")
    if typ in (None, ""):  # a uid alone
        return not other.search(str(ds.get("uid") or ""))
    # "datasource": "-- Mixed --" / "-- Dashboard --" on a panel; the targets name their own.
    return typ in ("prometheus", "datasource")


def iter_panels(panels, path=()):
    for p in panels or []:
        yield p, path
        # Rows keep their panels in "panels" when collapsed; old dashboards used rows[].panels.
        if p.get("panels"):
            yield from iter_panels(p["panels"], path + (p.get("title") or "row",))


def dashboard_items(dash: dict) -> list[dict]:
    """Every checkable item of a dashboard: {"label", "exprs", "regexes"}."""
    items = []
    for v in (dash.get("templating") or {}).get("list") or []:
        if v.get("type") != "query" or not _is_prometheus(v.get("datasource")):
            continue
        exprs, regexes = variable_query_exprs(v.get("query"))
        if not exprs and not regexes and isinstance(v.get("definition"), str):
            exprs, regexes = variable_query_exprs(v["definition"])
        items.append({"label": f"variable ${v.get('name')}", "exprs": exprs, "regexes": regexes})
    for a in (dash.get("annotations") or {}).get("list") or []:
        if a.get("expr") and _is_prometheus(a.get("datasource")):
            items.append({"label": f"annotation {a.get('name')!r}", "exprs": [a["expr"]], "regexes": []})
    panels = list(dash.get("panels") or [])
    for row in dash.get("rows") or []:  # schemaVersion < 16
        panels.append({"type": "row", "title": row.get("title"), "panels": row.get("panels")})
    for p, path in iter_panels(panels):
        exprs = []
        for t in p.get("targets") or []:
            ds = t.get("datasource") or p.get("datasource")
            if isinstance(t.get("expr"), str) and t["expr"].strip() and _is_prometheus(ds):
                exprs.append(t["expr"])
        if p.get("type") == "row" and not exprs:
            continue
        if not exprs:
            continue  # text panels, library panels, other datasources
        where = " / ".join(path + (p.get("title") or f"panel {p.get('id')}",))
        items.append({"label": f"[{p.get('id')}] {where}", "exprs": exprs, "regexes": []})
    return items


def check(dashboards: list[Path], exported: set[str], verbose: bool = False) -> tuple[int, int]:
    passed = failed = 0
    for path in dashboards:
        try:
            dash = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            print(f"{path.name}: cannot read: {err}")
            failed += 1
            continue
        if "dashboard" in dash and "panels" not in dash:  # an export wrapped for the HTTP API
            dash = dash["dashboard"]
        items = dashboard_items(dash)
        lines, d_pass = [], 0
        for item in items:
            used, missing, problems = set(), set(), []
            for expr in item["exprs"]:
                try:
                    names, regexes = metric_names(expr)
                except PromQLError as err:
                    problems.append(f"cannot read {expr!r}: {err}")
                    continue
                used |= names
                missing |= names - exported
                for rx in regexes:
                    item["regexes"].append(rx)
            for rx in item["regexes"]:
                try:
                    hit = [n for n in exported if re.fullmatch(rx, n)]
                except re.error as err:
                    problems.append(f"bad regex {rx!r}: {err}")
                    continue
                used.add(f"~{rx}")
                if not hit:
                    missing.add(f"~{rx} (no exported name matches)")
            if missing or problems:
                failed += 1
                detail = []
                if missing:
                    detail.append("missing " + ", ".join(sorted(missing)))
                detail += problems
                lines.append(f"  FAIL  {item['label']}: " + "; ".join(detail))
            else:
                passed += 1
                d_pass += 1
                if verbose:
                    lines.append(f"  ok    {item['label']}: " + (", ".join(sorted(used)) or "(no metric)"))
        title = dash.get("title") or ""
        print(f"{path.name} ({title}): {d_pass}/{len(items)} ok")
        for line in lines:
            print(line)
    return passed, failed


def find_dashboards(paths: list[str] | None) -> list[Path]:
    out: list[Path] = []
    for p in [Path(x) for x in paths] if paths else [DEFAULT_DASHBOARDS]:
        out += sorted(p.glob("*.json")) if p.is_dir() else [p]
    return out


def run(sources: list[str], dashboards: list[Path], verbose: bool, timeout: float) -> int:
    exported: set[str] = set()
    for src in sources:
        try:
            text = read_source(src, timeout)
        except (OSError, urllib.error.URLError, ValueError) as err:
            print(f"error: cannot read {src}: {err}")
            print("0 passed, 1 failed")
            return 2
        names, types, problems = parse_exposition(text)
        for p in problems:
            print(f"warning: {src}: {p}")
        print(f"{src}: {len(names)} series names, {len(types)} families")
        exported |= names
    if not dashboards:
        print("error: no dashboard found")
        print("0 passed, 1 failed")
        return 2
    passed, failed = check(dashboards, exported, verbose)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------------
# --self-test
# ---------------------------------------------------------------------------------------------------

SELF_TEST_EXPOSITION = r'''# HELP req_total Requests.
# TYPE req_total counter
req_total{service="gw",route="/a{b}",status="200"} 3 1700000000000
req_total{service="gw",route="quote \" and \\ and }",status="500"} 1
# TYPE lat_seconds histogram
lat_seconds_bucket{le="0.1"} 1
lat_seconds_bucket{le="+Inf"} 2
lat_seconds_sum 0.3
lat_seconds_count 2
# TYPE declared_only_seconds histogram
# TYPE rpc_seconds summary
rpc_seconds{quantile="0.5"} 0.01
rpc_seconds_sum 1
rpc_seconds_count 100
# TYPE queue_depth gauge
queue_depth{service="gw"} 4
untyped_thing 1
recorded:rate5m{job="x"} 0.5
{"dotted.name", service="gw"} 1
'''

SELF_TEST_DASHBOARD = {
    "title": "self-test",
    "schemaVersion": 39,
    "templating": {"list": [
        {"name": "service", "type": "query", "datasource": {"type": "prometheus", "uid": "prometheus"},
         "query": {"query": "label_values(queue_depth, service)", "refId": "v"}},
        {"name": "route", "type": "query", "datasource": "Prometheus",
         "query": 'label_values(req_total{service="$service"}, route)'},
        {"name": "label", "type": "query", "query": "label_values(service)"},
        {"name": "metric", "type": "query", "query": "metrics(lat_.*)"},
        {"name": "interval", "type": "interval", "query": "1m,5m"},
        {"name": "struct", "type": "query", "query": {"qryType": 1, "metric": "queue_depth", "label": "service", "query": ""}},
    ]},
    "annotations": {"list": [{"name": "deploys", "datasource": {"type": "prometheus", "uid": "prometheus"},
                              "expr": "changes(req_total[5m]) > 0"}]},
    "panels": [
        {"id": 1, "type": "timeseries", "title": "rate",
         "targets": [{"expr": 'sum by (route, status) (rate(req_total{service="$service", route=~"${route:regex}"}[$__rate_interval]))'}]},
        {"id": 2, "type": "row", "title": "open row", "collapsed": False, "panels": []},
        {"id": 3, "type": "timeseries", "title": "p99",
         "targets": [{"expr": "histogram_quantile(0.99, sum by (le) (rate(lat_seconds_bucket[5m])))"},
                     {"expr": "sum(rate(lat_seconds_sum[5m])) / sum(rate(lat_seconds_count[5m]))", "hide": True}]},
        {"id": 4, "type": "row", "title": "collapsed row", "collapsed": True, "panels": [
            {"id": 5, "type": "stat", "title": "nested ok",
             "targets": [{"expr": 'queue_depth offset 1h * on(service) group_left(route) max by (service, route) (req_total) unless on() vector(0)'}]},
            {"id": 6, "type": "timeseries", "title": "nested missing",
             "targets": [{"expr": 'sum(rate(req_total[$__rate_interval])) + sum(rate(gone_total{service=~"$service"}[5m] @ end()))'}]},
        ]},
        {"id": 7, "type": "text", "title": "notes", "options": {"content": "no query"}},
        {"id": 8, "type": "timeseries", "title": "logs elsewhere",
         "datasource": {"type": "loki", "uid": "loki"}, "targets": [{"expr": 'rate({app="x"}[5m])'}]},
        {"id": 9, "type": "stat", "title": "summary, untyped, recording rule, utf-8, declared only",
         "targets": [{"expr": 'rpc_seconds{quantile="0.5"} + untyped_thing + recorded:rate5m + {"dotted.name"} '
                              "+ max_over_time(rpc_seconds_count[1h:5m]) + -1.5e3 + 0x1F + Inf # a comment\n"
                              "+ count(declared_only_seconds_bucket)"}]},
        {"id": 10, "type": "stat", "title": "__name__ matchers",
         "targets": [{"expr": 'count({__name__="queue_depth"}) + count({__name__=~"lat_seconds_(sum|count)"})'}]},
    ],
}

# PromQL -> the metric names it selects.
SELF_TEST_PROMQL = [
    ("rate(x[5m])", {"x"}),
    ("histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m])))", {"x_bucket"}),
    ('sum without (instance) (rate(a_total{job="j", path=~"/v1/.+"}[$__rate_interval] offset -5m))', {"a_total"}),
    ("a / on(service, le) group_right(route) b", {"a", "b"}),
    ("a and ignoring(x) b or c unless d", {"a", "b", "c", "d"}),
    ("SUM BY (le) (x) > bool 3", {"x"}),
    ('label_replace(up_metric, "dst", "$1", "src", "(.*)")', {"up_metric"}),
    ("topk(5, x) atan2 y", {"x", "y"}),
    ("max_over_time(deriv(x[5m])[1h:1m])", {"x"}),
    ("x @ 1700000000 + y @ start()", {"x", "y"}),
    ("$__range_s * x + ${__interval_ms} * y", {"x", "y"}),
    ("[[metric]] + z", {"z"}),
    ("1 + 2e3 * 0.5 - NaN", set()),
    ('count by (__name__) ({__name__="x", job="y"})', {"x"}),
    ("quantile(0.5, sum(rate(x_count[5m])) by (service))", {"x_count"}),
    ("absent(x_total) or vector(1)", {"x_total"}),
    ("ns:rec_rule:rate5m", {"ns:rec_rule:rate5m"}),
    ('x{label="a,b (c)"} # trailing comment with y', {"x"}),
    ("sum(x) by (le) / sum(y) without (a)", {"x", "y"}),
    ("rate(x[1h30m]) / rate(y[5m:30s])", {"x", "y"}),
]


def self_test() -> int:
    ok = bad = 0

    def expect(what: str, cond: bool, got=None):
        nonlocal ok, bad
        if cond:
            ok += 1
            print(f"ok    {what}")
        else:
            bad += 1
            print(f"FAIL  {what}" + (f": got {got!r}" if got is not None else ""))

    names, types, problems = parse_exposition(SELF_TEST_EXPOSITION)
    want = {"req_total", "lat_seconds_bucket", "lat_seconds_sum", "lat_seconds_count",
            "declared_only_seconds_bucket", "declared_only_seconds_sum", "declared_only_seconds_count",
            "rpc_seconds", "rpc_seconds_sum", "rpc_seconds_count", "queue_depth", "untyped_thing",
            "recorded:rate5m", "dotted.name"}
    expect("exposition: series names (histogram families -> _bucket/_sum/_count, summaries, "
           "escaped label values, timestamps, untyped, UTF-8 names)", names == want, sorted(names ^ want))
    expect("exposition: a histogram family's own name is not a series", "lat_seconds" not in names)
    expect("exposition: # TYPE lines read", types.get("lat_seconds") == "histogram" and len(types) == 5, types)
    expect("exposition: no problem reported", not problems, problems)
    om_names, _, _ = parse_exposition("# TYPE c counter\nc_total 1\nc_created 1\n# EOF\n")
    expect("exposition: OpenMetrics counter family -> c_total, c_created", om_names == {"c_total", "c_created"}, om_names)

    for expr, want_names in SELF_TEST_PROMQL:
        try:
            got, _ = metric_names(expr)
        except PromQLError as err:
            got = f"error: {err}"
        expect(f"promql: {expr!r} -> {sorted(want_names)}", got == want_names, got)
    _, rx = metric_names('{__name__=~"lat_.+"}')
    expect("promql: __name__=~ regex collected", rx == {"lat_.+"}, rx)
    for broken in ("sum(rate(x[5m])", "x{a=\"b\"", "rate(x[5m]))", 'x{a="b}'):
        try:
            metric_names(broken)
            expect(f"promql: {broken!r} rejected", False, "accepted")
        except PromQLError:
            expect(f"promql: {broken!r} rejected", True)

    for q, want_q in [
        ("label_values(m{a=\"b\"}, lbl)", (['m{a="b"}'], [])),
        ("label_values(lbl)", ([], [])),
        ("query_result(topk(3, m))", (["topk(3, m)"], [])),
        ("metrics(lat_.*)", ([], ["lat_.*"])),
        ({"query": "label_values(m, x)", "refId": "A"}, (["m"], [])),
        ({"qryType": 1, "metric": "m", "label": "x"}, (["m"], [])),
    ]:
        got = variable_query_exprs(q)
        expect(f"templating: {q!r}", got == want_q, got)

    # The whole check on the embedded dashboard, from a file and from a URL: exactly one item fails,
    # the nested panel whose query uses gone_total.
    import tempfile
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = SELF_TEST_EXPOSITION.encode()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            dash = Path(tmp) / "self-test.json"
            dash.write_text(json.dumps(SELF_TEST_DASHBOARD))
            scrape = Path(tmp) / "scrape.prom"
            scrape.write_text(SELF_TEST_EXPOSITION)
            url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
            for label, sources in (("file", [str(scrape)]), ("url", [url])):
                buf = io.StringIO()
                with redirect_stdout(buf):
                    rc = run(sources, [dash], verbose=True, timeout=5)
                out = buf.getvalue()
                fails = [l for l in out.splitlines() if l.lstrip().startswith("FAIL")]
                # 6 variables (the interval one is not a query) -> 5, 1 annotation, panels 1 3 5 6 9 10.
                expect(f"check ({label}): exit 1, summary '11 passed, 1 failed'",
                       rc == 1 and out.splitlines()[-1] == "11 passed, 1 failed", (rc, out.splitlines()[-1:]))
                expect(f"check ({label}): the missing metric gone_total of the nested panel is reported",
                       len(fails) == 1 and "collapsed row / nested missing" in fails[0]
                       and "missing gone_total" in fails[0], fails)
                expect(f"check ({label}): panels of other datasources and text panels are skipped",
                       "logs elsewhere" not in out and "notes" not in out, out)
                expect(f"check ({label}): hidden targets and variables are checked",
                       "lat_seconds_count" in out and "variable $route: req_total" in out, out)
            buf = io.StringIO()
            with redirect_stdout(buf):
                rc = run([url.replace("/metrics", "/nothing")], [dash], verbose=False, timeout=5)
            expect("check: an unreadable source exits 2", rc == 2, (rc, buf.getvalue()))
    finally:
        server.shutdown()
        server.server_close()

    print(f"{ok} passed, {bad} failed")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Check that the metrics used by Grafana dashboards are exported.",
        epilog="Sources: URLs (http://127.0.0.1:8081/metrics) or files with a saved scrape.")
    ap.add_argument("sources", nargs="*", help="metrics URLs or exposition files (names are pooled)")
    ap.add_argument("--dashboard", "-d", action="append",
                    help=f"dashboard JSON file or directory (repeatable; default {DEFAULT_DASHBOARDS.relative_to(ROOT)}/)")
    ap.add_argument("--verbose", "-v", action="store_true", help="also list the panels that pass, with their metrics")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per URL (default 10)")
    ap.add_argument("--self-test", action="store_true", help="test the parsers on an embedded fixture")
    args = ap.parse_args(argv)
    if args.self_test:
        return self_test()
    if not args.sources:
        ap.error("give at least one metrics URL or exposition file (or --self-test)")
    return run(args.sources, find_dashboards(args.dashboard), args.verbose, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
