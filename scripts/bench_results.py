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


def latency_problem(d):
    """Why a latency point (a fixed open-loop rate, not a search probe) does not show the latency
    of the rate it names, or None. The load generator fell behind its schedule: the rate was not
    offered, nothing was measured (`"not measured: ..."`). Requests were refused, or acknowledged
    events never reached the reader (within the load generator's 60 s): the system did not carry
    the rate, and its percentiles leave those events out (`"NOT met: ..."`)."""
    late = d.get("send_late_ms")
    if late is None or late > 100:
        return "not measured: the load generator sent up to " + (f"{late:,.0f} ms" if late is not None else "? ms") + " behind its schedule"
    if d["failed"]:
        return f"NOT met: {d['failed']:,} events refused"
    read = (d.get("e2e_latency_ms") or {}).get("count", 0)
    if read < d["acked"]:
        return f"NOT met: {d['acked'] - read:,} acknowledged events never reached the reader"
    return None


def previous_run(out):
    """The run before `out` among its siblings named bench-* (by name, i.e. by start time), or
    None."""
    out = os.path.abspath(out)
    parent, me = os.path.dirname(out), os.path.basename(out)
    runs = sorted(d for d in os.listdir(parent) if d.startswith("bench-") and d < me and os.path.isdir(os.path.join(parent, d)))
    return os.path.join(parent, runs[-1]) if runs else None
