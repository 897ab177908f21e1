"""What both bench_report.py and bench_charts.py read from a run's JSON results."""
import json
import os


def sustained(d):
    """A search probe counts as sustained as scripts/bench.sh `sustained` decides: nothing
    refused, sent at most 100 ms behind schedule, request p99 at most 1 s, at least 95 % delivered
    during the load, e2e p99 at most 2 s."""
    e, q = d.get("e2e_latency_ms") or {}, d.get("request_latency_ms") or {}
    return (d["failed"] == 0 and d.get("send_late_ms", 1e9) <= 100 and q.get("p99", 1e9) <= 1000
            and d["delivered_per_s"] >= 0.95 * d["rate"] and e.get("p99", 1e9) <= 2000)


def search_probes(out, label):
    """The probes of the search `label` (`<label>-at-<rate>.json` in `out`), by offered rate."""
    prefix = f"{label}-at-"
    return sorted((json.load(open(os.path.join(out, f))) for f in os.listdir(out)
                   if f.startswith(prefix) and f.endswith(".json") and f[len(prefix):-5].isdigit()),
                  key=lambda d: d["rate"])
