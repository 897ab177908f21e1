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
  scripts/check_dashboards.py http://127.0.0.1:9081/metrics http://127.0.0.1:8082/metrics \\
      http://127.0.0.1:8083/metrics http://127.0.0.1:9084/metrics
  (the gateway's and the consumer-api's /metrics are on their admin ports, 9081 and 9084)
  scripts/check_dashboards.py --dashboard my.json -v saved-scrape.txt
  python3 scripts/test_check_dashboards.py   (its own tests)

Standard library only (Python 3.8+).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.request
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Check that the metrics used by Grafana dashboards are exported.",
        epilog="Sources: URLs (http://127.0.0.1:9081/metrics) or files with a saved scrape.")
    ap.add_argument("sources", nargs="*", help="metrics URLs or exposition files (names are pooled)")
    ap.add_argument("--dashboard", "-d", action="append",
                    help=f"dashboard JSON file or directory (repeatable; default {DEFAULT_DASHBOARDS.relative_to(ROOT)}/)")
    ap.add_argument("--verbose", "-v", action="store_true", help="also list the panels that pass, with their metrics")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per URL (default 10)")
    args = ap.parse_args(argv)
    if not args.sources:
        ap.error("give at least one metrics URL or exposition file")
    return run(args.sources, find_dashboards(args.dashboard), args.verbose, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
