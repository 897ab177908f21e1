#!/usr/bin/env python3
"""Tests of scripts/check_dashboards.py: the exposition and PromQL parsers, templating queries,
and the whole check on an embedded dashboard, read from a file and from a URL.

Run: python3 scripts/test_check_dashboards.py (make test runs it); exits non-zero on a failure.
"""

import io
import json
import sys
from contextlib import redirect_stdout
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from check_dashboards import PromQLError, metric_names, parse_exposition, run, variable_query_exprs  # noqa: E402

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


if __name__ == "__main__":
    sys.exit(self_test())
