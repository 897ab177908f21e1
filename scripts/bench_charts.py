#!/usr/bin/env python3
"""PNG charts of one `make bench` run, drawn from its JSON results into the run's directory:

- `search.png`: delivered against offered events/s in the open-loop searches, metastream and
  Redpanda Connect, single events and batches of 100 (filled: sustained; hollow: not);
- `hops.png`: end-to-end latency at 50 % of the maximum, p50 and p99 of each hop, under exactly
  once and at least once;
- `cpu.png`: CPU microseconds per event by process at each system's sustained rate — the three
  pipeline processes, the broker, Redis and the load generator;
- `latency.png`: e2e p99 (and p50) of single events against the offered rate — the idle trickle
  and 10-75 % of the maximum — for metastream under exactly once and at least once and for
  Redpanda Connect, in one picture (log scales), with the raw Kafka round trip and issue 28's
  targets (hollow: a point whose rate was not carried or not offered).

Usage: bench_charts.py RUN_DIR (scripts/bench.sh runs it with matplotlib from
scripts/bench.requirements.txt). A chart whose results are missing (bench-quick has no step 7)
is drawn with what there is, or skipped with a line saying so.
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench_results import latency_problem, search_probes, sustained  # noqa: E402

out = sys.argv[1]


def load(name):
    path = os.path.join(out, f"{name}.json")
    return json.load(open(path)) if os.path.exists(path) else None


def search_chart():
    shapes = (("single events", "pipeline-single", "rpc-pipeline-single"), ("batches of 100", "pipeline", "rpc-pipeline-batch100"))
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    drawn = False
    for ax, (shape, ours, peer) in zip(axes, shapes):
        top = 0
        for who, prefix, colour in (("metastream", ours, "tab:blue"), ("Redpanda Connect", peer, "tab:orange")):
            runs = search_probes(out, prefix)
            if not runs:
                continue
            drawn = True
            x = [d["rate"] for d in runs]
            y = [d["delivered_per_s"] for d in runs]
            top = max(top, *x, *y)
            ax.plot(x, y, color=colour, alpha=0.5)
            for d in runs:
                ok = sustained(d)
                ax.scatter(d["rate"], d["delivered_per_s"], color=colour if ok else "white", edgecolors=colour, zorder=3,
                           label=f"{who}, {'sustained' if ok else 'not sustained'}")
        if top:
            ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=0.8, label="delivered = offered")
        ax.set_title(f"Open-loop search, {shape}")
        ax.set_xlabel("offered events/s")
        ax.set_ylabel("delivered to the output topic during the load, events/s")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        if unique:
            ax.legend(unique.values(), unique.keys(), fontsize=8)
        ax.grid(alpha=0.3)
    return fig if drawn else None


def hops_chart():
    hops = (("send_to_gateway", "client → gateway\nproduce"), ("gateway_to_notice", "→ pre-transformer\nnotice"),
            ("notice_to_publish", "→ post-transformer\npublish"), ("publish_to_read", "→ reader\n(read_committed)"))
    runs = [(who, r) for who, r in (("exactly once", load("e2e-at-50")), ("at least once", load("alo-e2e-at-50"))) if r and r.get("e2e_hops_ms")]
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / (2 * len(runs))
    colours = {"exactly once": ("#9ecae1", "#3182bd"), "at least once": ("#fdae6b", "#e6550d")}
    for i, (who, r) in enumerate(runs):
        h = r["e2e_hops_ms"]
        for j, q in enumerate(("p50", "p99")):
            offset = (2 * i + j) * width - 0.4 + width / 2
            ax.bar([k + offset for k in range(len(hops))], [h.get(n, {}).get(q, 0) for n, _ in hops], width,
                   color=colours[who][j], label=f"{who}, {q} (e2e {q} {r['e2e_latency_ms'][q]:.0f} ms)")
    ax.set_xticks(range(len(hops)))
    ax.set_xticklabels([label for _, label in hops])
    ax.set_ylabel("ms")
    ax.set_title(f"End-to-end latency by hop at 50 % of the sustained maximum ({runs[0][1]['rate']:,} events/s)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def cpu_chart():
    columns = (
        ("metastream\nsingle events", "pipeline-single-sustained", ("gateway", "pre-transformer", "post-transformer")),
        ("Redpanda Connect\nsingle events", "rpc-pipeline-single-sustained", ("rpc-ingest", "rpc-pre", "rpc-post")),
        ("metastream\nbatches of 100", "pipeline-sustained", ("gateway", "pre-transformer", "post-transformer")),
        ("Redpanda Connect\nbatches of 100", "rpc-pipeline-batch100-sustained", ("rpc-ingest", "rpc-pre", "rpc-post")),
    )
    parts = (("ingest", "#3182bd"), ("pre", "#6baed6"), ("post", "#9ecae1"), ("broker", "#e6550d"), ("Redis", "#fd8d3c"), ("load generator", "#bdbdbd"))
    present = [(label, load(name), stages) for label, name, stages in columns if load(name)]
    if not present:
        return None
    fig, ax = plt.subplots(figsize=(11, 5.5))
    for x, (label, run, stages) in enumerate(present):
        procs = run.get("processes") or {}
        values = [procs.get(n, {}).get("cpu_s_per_million", 0) for n in (*stages, "kafka", "redis", "loadgen")]
        bottom = 0
        for (part, colour), v in zip(parts, values):
            ax.bar(x, v, bottom=bottom, color=colour, label=part if x == 0 else None)
            if v >= 8:
                ax.text(x, bottom + v / 2, f"{v:.0f}", ha="center", va="center", fontsize=7)
            bottom += v
        ax.text(x, bottom, f"{bottom:.0f} µs\nat {run['rate']:,}/s", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(present)))
    ax.set_xticklabels([label for label, _, _ in present])
    ax.set_ylabel("CPU µs per event (= CPU s per million events)")
    ax.set_title("Where the machine's CPU goes per event, at each system's sustained rate")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.15)
    return fig


def latency_chart():
    systems = (("eos", "metastream, exactly once", "tab:blue"), ("alo", "metastream, at least once", "tab:green"),
               ("rpc", "Redpanda Connect (at least once)", "tab:orange"))
    points = ("trickle", "at-10", "at-25", "at-50", "at-75")
    fig, ax = plt.subplots(figsize=(10, 6))
    drawn = False
    for name, who, colour in systems:
        runs = sorted((r for r in (load(f"lat-{name}-{p}") for p in points) if r and r.get("e2e_latency_ms")), key=lambda d: d["rate"])
        if not runs:
            continue
        drawn = True
        x = [d["rate"] for d in runs]
        ax.plot(x, [d["e2e_latency_ms"]["p99"] for d in runs], color=colour, label=f"{who}, p99")
        ax.plot(x, [d["e2e_latency_ms"]["p50"] for d in runs], color=colour, linestyle="--", linewidth=0.9, alpha=0.7, label=f"{who}, p50")
        for d in runs:
            ok = latency_problem(d) is None
            ax.scatter(d["rate"], d["e2e_latency_ms"]["p99"], color=colour if ok else "white", edgecolors=colour, zorder=3)
    peer = load("lat-eos-at-peer50")
    if peer and peer.get("e2e_latency_ms"):
        drawn = True
        ax.scatter(peer["rate"], peer["e2e_latency_ms"]["p99"], marker="*", s=160, zorder=4,
                   color="tab:blue" if latency_problem(peer) is None else "white", edgecolors="tab:blue",
                   label="metastream, exactly once, p99 at the peer's 50 % rate")
    if not drawn:
        return None
    raw = load("lat-raw-at-50")
    if raw and raw.get("e2e_latency_ms"):
        ax.scatter(raw["rate"], raw["e2e_latency_ms"]["p99"], marker="s", color="grey", zorder=3, label="raw Kafka produce → consume, p99")
        # Issue 28: at 50 % of metastream's maximum, p99 <= 3 x the raw round trip's p99 + 20 ms.
        ax.scatter(raw["rate"], 3 * raw["e2e_latency_ms"]["p99"] + 20, marker="_", s=500, color="black", zorder=3,
                   label="targets (exactly once): 3 × raw p99 + 20 ms at 50 %; 25 ms at the trickle")
    # Issue 28: the idle trickle's p99 <= 25 ms.
    ax.scatter(20, 25, marker="_", s=500, color="black", zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered events/s (single events, open loop; log)")
    ax.set_ylabel("end-to-end latency, ms (log)")
    ax.set_title("End-to-end latency against offered rate: idle trickle (20/s) and 10-75 % of the maximum")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return fig


for name, draw in (("search", search_chart), ("hops", hops_chart), ("cpu", cpu_chart), ("latency", latency_chart)):
    fig = draw()
    if fig is None:
        print(f"  {name}.png: no results to draw")
        continue
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"{name}.png"), dpi=110)
    plt.close(fig)
    print(f"  {name}.png")
