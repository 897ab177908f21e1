#!/usr/bin/env python3
"""Turns a bench run's JSON results into the markdown report docs/src/performance.md quotes.

Usage: bench_report.py RUN_DIR [STEP_5_NOTE]. A result a run does not have (an older bench.sh, a
step skipped) is reported as "not measured"; a target is marked met or not only from results that
were sustained, never from a probe that was not (issue 28)."""
import json
import os
import platform
import subprocess
import sys
from datetime import date

from bench_results import latency_problem, previous_run, search_probes, sustained

out, rpc_note = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "")


def load(name):
    path = os.path.join(out, f"{name}.json")
    return json.load(open(path)) if os.path.exists(path) else None


raw = load("raw-producer")
single = load("ingest-single")
batch = load("ingest-batch100")
pipe = load("pipeline-sustained")
rpc = load("redpanda-connect")
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())

def eps(r):
    return r["events_per_s"] if r else 0.0

# Sustained: the highest open-loop rate whose events all reached the output topic while the
# load ran (>= 95 %, e2e p99 <= 2 s, nothing refused); scripts/bench.sh searches for it.
pipe_rate = pipe.get("delivered_per_s", 0.0) if pipe else 0.0
probes = sorted(
    (json.load(open(os.path.join(out, f))) for f in os.listdir(out) if f.startswith("pipeline-at-")),
    key=lambda d: d["rate"],
)
rows = []
def concurrency(r, of):
    # Steps 1 and 2b keep the best of runs at several client counts (scripts/bench.sh `best`).
    return f" (best of {of} clients: {r['clients']})" if r and r.get("clients") and (r.get("label") or "").rsplit("-", 1)[-1].isdigit() else ""


rows.append(("1. raw rdkafka producer (acks=all)" + concurrency(raw, "4 / 8"), f"{eps(raw):,.0f} msg/s", "limit", ""))
rows.append(("2a. gateway, single events", f"{eps(single):,.0f} ev/s", f"{eps(single)/eps(raw):.2f} × (1)" if raw else "", ""))
ok = eps(batch) >= 0.9 * eps(raw)
rows.append(("2b. gateway, batches of 100" + concurrency(batch, "8 / 16 / 32"), f"{eps(batch):,.0f} ev/s", f"{eps(batch)/eps(raw):.2f} × (1)" if raw else "", "≥ 0.9 × (1): " + ("met" if ok else "NOT met")))
# 2c: the floor under a single-event request (CPU per request = CPU s per million events, in µs).
def cpu_us(r, name):
    return (r.get("processes") or {}).get(name, {}).get("cpu_s_per_million") if r else None


gw_batch_us = cpu_us(batch, "gateway")
if gw_batch_us:
    # Shown, no longer a target: an absolute rate per core was met on one machine and missed by
    # 2x on the next (issue 28); the targets below are ratios to floors measured in the same run.
    rows.append(("2b. gateway, events/s per core of its own (batches of 100)", f"{1e6 / gw_batch_us:,.0f} ev/s ({gw_batch_us:.1f} µs CPU per event)", "", "(shown)"))
# Where the two cores go in steps 1 and 2b (µs of CPU per event; the load generator measures
# itself): the raw producer's path has no HTTP client and no gateway.
def split(r, names):
    parts = [(n, cpu_us(r, n)) for n in names]
    return ", ".join(f"{n} {v:.1f}" for n, v in parts if v is not None)
if cpu_us(raw, "loadgen") is not None and cpu_us(batch, "loadgen") is not None:
    rows.append(("1, 2b. CPU µs per event: (1) / (2b)", f"{split(raw, ('loadgen', 'kafka'))} / {split(batch, ('loadgen', 'gateway', 'kafka'))}",
                 "the load generator is the raw producer in (1), the HTTP client in (2b)", "(shown)"))


gw_us = cpu_us(single, "gateway")
for mode, what in (("http", "HTTP alone (actix-web answering 202)"), ("kafka", "HTTP + one acked produce")):
    f = load(f"floor-{mode}")
    us = cpu_us(f, "floor")
    if us is not None:
        rows.append((f"2c. floor under (2a): {what}", f"{eps(f):,.0f} req/s, {us:.1f} µs CPU per request",
                     f"gateway (2a): {gw_us:.1f} µs" if gw_us is not None else "", "(shown)"))


def ratio_target(what, value, floor, factor, missing):
    """A target `value <= factor x floor` (µs of CPU per event): the row's ratio and verdict, or
    "not measured" and why when either side is missing."""
    if value is None or not floor:
        return "", f"≤ {factor} × {what}: not measured ({missing})"
    return f"{value / floor:.2f} × {what}", f"≤ {factor} × {what}: " + ("met" if value <= factor * floor else "NOT met")


# The gateway against its floor: actix-web plus one acknowledged produce, driven as 2a (issue 28;
# it replaced "≤ 25 µs", an absolute figure of one machine).
floor_kafka_us = cpu_us(load("floor-kafka"), "floor")
ratio, target = ratio_target("floor (2c, + one acked produce)", gw_us, floor_kafka_us, 1.2,
                             "no 2a result" if gw_us is None else "no floor: step 2c did not run")
rows.append(("2a. gateway, CPU per single-event request", f"{gw_us:.1f} µs" if gw_us is not None else "not measured", ratio, target))
# 2d: the floor under a transformer (loadgen --mode kafka-transform; the load generator is the
# stage, so its own CPU is the floor).
ftrans = load("floor-transform")
floor_transform_us = cpu_us(ftrans, "loadgen") if ftrans and ftrans.get("acked") else None
if floor_transform_us is not None:
    broker_us = cpu_us(ftrans, "kafka")
    rows.append(("2d. floor under a transformer: consume → produce in a transaction per 500 (rdkafka, read_committed, no Redis)",
                 f"{eps(ftrans):,.0f} ev/s, {floor_transform_us:.1f} µs CPU per event" + (f" (the broker: {broker_us:.1f})" if broker_us is not None else ""),
                 "", "(the transformers' floor)"))
else:
    rows.append(("2d. floor under a transformer", "not measured" + (" (it read no event)" if ftrans else " (no result: step 2d failed, or this run has none)"), "", ""))
pipe_probes = search_probes(out, "pipeline")
no_rate = f"no sustained rate found ({len(pipe_probes)} probes)" if pipe_probes else "not run"
rows.append(("3. full pipeline, sustained to the output topic" + (f" (at {pipe['rate']:,} ev/s offered)" if pipe else ""),
             f"{pipe_rate:,.0f} ev/s" if pipe else no_rate, f"{pipe_rate/eps(batch):.2f} × (2b)" if pipe and batch else "",
             "(shown: issue 17 retired ≥ 0.5 × (2b) for step 7's comparison)"))
# Each transformer against the floor of 2d, at step 3's sustained rate (issue 28; it replaced
# "≥ 100,000 events/s per core", met on one machine and missed by 2x on the next).
for stage in ("pre-transformer", "post-transformer"):
    us = cpu_us(pipe, stage)
    ratio, target = ratio_target("floor (2d)", us, floor_transform_us, 1.5,
                                 "step 3 found no sustained rate" if not pipe else ("no floor: no result of step 2d" if floor_transform_us is None else f"no {stage} in step 3"))
    rows.append((f"3. {stage}, CPU per event at the sustained rate", f"{us:.1f} µs" if us is not None else "not measured", ratio, target))
for p in (25, 50):
    e, r = load(f"e2e-at-{p}"), load(f"raw-roundtrip-at-{p}")
    if not pipe:
        # A rate "at 50 %" of no maximum measures nothing (older runs measured it at 100 ev/s).
        if p == 50:
            rows.append((f"4. e2e latency at {p} %", "not measured (step 3 found no sustained rate)", "", "p99 ≤ 3 × raw p99: not measured"))
        continue
    if e and e.get("e2e_latency_ms") and r and r.get("e2e_latency_ms"):
        el, rl = e["e2e_latency_ms"], r["e2e_latency_ms"]
        target = ""
        if p == 50:
            target = "p99 ≤ 3 × raw p99: " + ("met" if el["p99"] <= 3 * rl["p99"] else "NOT met")
            # The raw round trip is the yardstick; when it caught one of the broker's occasional
            # stalls its p99 says nothing about the broker's usual tail, and neither does the ratio.
            if rl["p99"] > 10 * max(rl["p50"], 0.001):
                target += f" (no evidence: the raw baseline stalled, its p99 {rl['p99'] / max(rl['p50'], 0.001):.0f}× its p50)"
        rows.append((f"4. e2e latency at {p} % ({e['rate']} ev/s)", f"p50 {el['p50']:.1f} / p99 {el['p99']:.1f} / p99.9 {el['p999']:.1f} ms",
                     f"raw Kafka p99 {rl['p99']:.1f} ms ({el['p99']/max(rl['p99'],0.001):.1f} ×)", target))
alo, alo_e2e, eos_e2e = load("alo-pipeline-sustained"), load("alo-e2e-at-50"), load("e2e-at-50")
if not pipe:
    alo_e2e = eos_e2e = None  # at 50 % of no maximum: not a measurement
alo_probes = search_probes(out, "alo-pipeline")
if alo or alo_probes:
    alo_rate = alo.get("delivered_per_s", 0.0) if alo else 0.0
    rows.append(("4b. at_least_once instead: pipeline sustained" + (f" (at {alo['rate']:,} ev/s offered)" if alo else ""),
                 (f"{alo_rate:,.0f} ev/s" if alo else f"no sustained rate found ({len(alo_probes)} probes)")
                 + (f" (exactly once: {pipe_rate:,.0f})" if pipe else " (exactly once: no sustained rate found)"),
                 f"exactly once = {pipe_rate/alo_rate:.2f} × at least once" if alo and pipe and alo_rate else "", "the cost of exactly once"))
    if alo_e2e and alo_e2e.get("e2e_latency_ms") and eos_e2e and eos_e2e.get("e2e_latency_ms"):
        a, e = alo_e2e["e2e_latency_ms"], eos_e2e["e2e_latency_ms"]
        rows.append((f"4b. at_least_once e2e at {alo_e2e['rate']} ev/s", f"p50 {a['p50']:.1f} / p99 {a['p99']:.1f} ms",
                     f"exactly once: p50 {e['p50']:.1f} / p99 {e['p99']:.1f} ms", "the cost of exactly once"))
hop_runs = [(who, r) for who, r in (("exactly once", eos_e2e), ("at least once", alo_e2e)) if r and r.get("e2e_hops_ms")]
def median_run(label):
    """The median (by events/s) of a step's rounds, `label-1` … `label-3`."""
    runs = sorted((r for r in (load(f"{label}-{i}") for i in (1, 2, 3)) if r), key=eps)
    return runs[len(runs) // 2] if runs else None
craw, chttp, chttp2 = median_run("consume-raw"), median_run("consume-http"), median_run("consume-http2")
if craw and chttp:
    for run, who in ((chttp, "one caller"), (chttp2, "two callers")):
        if not run:
            continue
        ratio = eps(run) / eps(craw) if eps(craw) else 0.0
        lat = run.get("request_latency_ms") or {}
        target = "≥ 0.5 × raw: " + ("met" if ratio >= 0.5 else "NOT met") if who == "two callers" else "(shown)"
        rows.append((f"6. GET /consume max=1000, {who} ({run['acked']:,} events, median of 3)",
                     f"{eps(run):,.0f} ev/s (call p50 {lat.get('p50', 0):.1f} / p99 {lat.get('p99', 0):.1f} ms)",
                     f"{ratio:.2f} × raw consumer ({eps(craw):,.0f} ev/s, median of 3)", target))
if rpc:
    rows.append(("5. Redpanda Connect http_server → kafka", f"{eps(rpc):,.0f} ev/s", f"{eps(rpc)/eps(raw):.2f} × (1)" if raw else "", ""))
else:
    rows.append(("5. Redpanda Connect", rpc_note or "not run", "", ""))

print(f"Run {os.path.basename(out)} on {date.today()}, commit {commit}, {os.cpu_count()} cores ({cpu}), event size {single['event_size'] if single else '?'} B.\n")
machine = load("machine")
if machine:
    data, mem = machine["broker_data_bytes"] / 2**30, machine["mem_available_bytes"] / 2**30
    print(f"The broker held {data:.1f} GiB of logs at the start, with {mem:.1f} GiB of memory available"
          + (" — **more than half of it: reads (step 6) may have come from disk, not the page cache; compare with care.**\n" if data > mem / 2 else ".\n"))
print("| step | throughput / latency | ratio | target |")
print("|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
if hop_runs:
    # From the times the pipeline puts on what it publishes (Kafka timestamps, ms): where the
    # end-to-end latency of step 4 at 50 % goes. A hop after a transactional producer includes
    # the wait for its transaction's commit (delivery.transaction_interval_ms).
    print("\nWhere step 4's end-to-end time goes at 50 % (p50 / p99 ms per hop):\n")
    print("| guarantee | client send → gateway produce | → pre-transformer notice | → post-transformer publish | → reader (read_committed) | e2e |")
    print("|---|---|---|---|---|---|")
    for who, r in hop_runs:
        h, e = r["e2e_hops_ms"], r["e2e_latency_ms"]
        cells = [f"{h[n]['p50']:.1f} / {h[n]['p99']:.1f}" if n in h else "—" for n in ("send_to_gateway", "gateway_to_notice", "notice_to_publish", "publish_to_read")]
        print(f"| {who} | " + " | ".join(cells) + f" | {e['p50']:.1f} / {e['p99']:.1f} |")
if probes:
    print("\nStep 3's search (open loop, batches of 100; sustained = nothing refused, requests sent at most 100 ms behind schedule, "
          "request p99 at most 1 s, at least 95 % delivered during the load, e2e p99 at most 2 s):\n")
    print("| offered ev/s | delivered during the load ev/s | request p50 / p99 ms | sent late by (max) ms | e2e p50 / p99 ms | sustained |")
    print("|---|---|---|---|---|---|")
    for d in probes:
        e = d.get("e2e_latency_ms") or {}
        q = d.get("request_latency_ms") or {}
        late = d.get("send_late_ms")
        ok = (d["failed"] == 0 and (late if late is not None else 1e9) <= 100 and q.get("p99", 1e9) <= 1000
              and d["delivered_per_s"] >= 0.95 * d["rate"] and e.get("p99", 1e9) <= 2000)
        late_text = f"{late:,.0f}" if late is not None else "not measured"
        print(f"| {d['rate']:,} | {d['delivered_per_s']:,.0f} | {q.get('p50', 0):.1f} / {q.get('p99', 0):.1f} | {late_text} | {e.get('p50', 0):.0f} / {e.get('p99', 0):.0f} | {'yes' if ok else 'no'} |")
mem = {}
# Memory and CPU at step 3's sustained rate (peak RSS also over the steps before it). Without a
# sustained rate there is no full load to read them at: not measured, rather than figures from
# a lighter or failed run (issue 28: a failed probe once made "services ≤ broker" read "met").
for r in ((single, batch, load("e2e-at-50"), pipe) if pipe else ()):
    for name, p in ((r or {}).get("processes") or {}).items():
        mem[name] = max(mem.get(name, 0), p["peak_rss_mib"])
        mem[name + " cpu"] = p["cpu_s_per_million"]
if not pipe:
    print("\nMemory and CPU per event at step 3's sustained rate: not measured (no sustained rate found); "
          "peak RSS ≤ 100 MiB and services ≤ broker: not measured.")
if mem:
    # What a stage could take with a core of its own: the capacity the single-box ratio of step 3
    # hides, since there every stage, the broker, Redis and the load generator share the cores.
    print("\n| service | peak RSS (MiB) | target ≤ 100 MiB | CPU s per million events (step 3, at the sustained rate) | events/s per core of its own |")
    print("|---|---|---|---|---|")
    for name in ("gateway", "pre-transformer", "post-transformer", "consumer-api", "kafka", "redis"):
        if name in mem:
            cpu = mem.get(name + " cpu", 0)
            per_core = f"{1e6 / cpu:,.0f}" if cpu >= 0.5 else "—"
            target = ("met" if mem[name] <= 100 else "NOT met") if name not in ("kafka", "redis") else "— (the broker, Redis)"
            print(f"| {name} | {mem[name]:.1f} | {target} | {cpu:.1f} | {per_core} |")
    if "loadgen" in mem:
        print(f"| load generator (its sender and e2e reader) | {mem['loadgen']:.1f} | — | {mem.get('loadgen cpu', 0):.1f} | — |")
    services = sum(mem.get(n + " cpu", 0) for n in ("gateway", "pre-transformer", "post-transformer"))
    if "kafka cpu" in mem and services:
        broker = mem["kafka cpu"]
        print(f"\nStep 3, CPU seconds per million events: metastream's three pipeline services together {services:.1f}, "
              f"the broker {broker:.1f}, Redis {mem.get('redis cpu', 0):.1f} — services ≤ broker (issue 17's target): "
              f"{'met' if services <= broker else 'NOT met'} ({services / broker:.2f} ×).")

# Step 7: the whole pipeline against Redpanda Connect doing the same job (three processes), both
# searched with single events (the prototype's POST /ingest) and batches of 100, with issue 17's
# targets computed from the same run.
def cpu_of(run, names):
    procs = (run or {}).get("processes") or {}
    return sum(procs[n]["cpu_s_per_million"] for n in names if n in procs) if run and all(n in procs for n in names) else None


def fmt(v, spec=",.0f", none="—"):
    return none if v is None else format(v, spec)


MS_STAGES = ("gateway", "pre-transformer", "post-transformer")
RPC_STAGES = ("rpc-ingest", "rpc-pre", "rpc-post")
note_path = os.path.join(out, "rpc-pipeline-note.txt")
rpcp_note = open(note_path).read().strip() if os.path.exists(note_path) else "not run: this run has no step 7b (an older bench.sh)"
columns = [  # (heading, search label, e2e label, ingest-only label, its stages)
    # (single events at 50 %: the Latency section's point; e2e-single-at-50 before issue 28)
    ("metastream, single events", "pipeline-single", "lat-eos-at-50" if load("lat-eos-at-50") else "e2e-single-at-50", "ingest-single", MS_STAGES),
    ("Redpanda Connect, single events", "rpc-pipeline-single", "lat-rpc-at-50" if load("lat-rpc-at-50") else "rpc-e2e-single-at-50", "rpc-pipeline-ingest-single", RPC_STAGES),
    ("metastream, batches of 100", "pipeline", "e2e-at-50", "ingest-batch100", MS_STAGES),
    ("Redpanda Connect, batches of 100", "rpc-pipeline-batch100", "rpc-e2e-batch-at-50", "rpc-pipeline-ingest-batch100", RPC_STAGES),
]
cols = []
for heading, label, e2e_label, ingest_label, stages in columns:
    probes_ = search_probes(out, label)
    best = load(f"{label}-sustained")
    cols.append({
        # (a latency "at 50 %" of a search that found no maximum was measured at a made-up rate)
        "heading": heading, "stages": stages, "best": best, "e2e": load(e2e_label) if best else None, "ingest": load(ingest_label),
        "probes": probes_,
        # The search found its limit when some probe above the best one was not sustained.
        "bounded": bool(best) and any(not sustained(p) and p["rate"] > best["rate"] for p in probes_),
        "rate": best.get("delivered_per_s", 0.0) if best else 0.0,
    })
print("\n## The whole pipeline against Redpanda Connect\n")
rpc_ran = any(c["best"] or c["probes"] for c in cols if c["stages"] is RPC_STAGES)
if not rpc_ran:
    print(f"Redpanda Connect: {rpcp_note if rpcp_note.startswith('not run') else 'not run: no results of step 7b in this run'}.\n")
else:
    print(f"Redpanda Connect: {rpcp_note}. Both searched as step 3 (open loop, same `sustained`); metastream "
          "under its default exactly_once, Redpanda Connect at least once (kafka_franz commits after the output's ack). "
          "CPU seconds per million events at each one's sustained rate; e2e latency at 50 % of each one's own maximum "
          "(single events as searched; batches of 10 from 32 clients, as step 4).\n")
if any(c["best"] or c["probes"] or c["ingest"] for c in cols):
    print("| | " + " | ".join(c["heading"] for c in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")

    def row(name, f):
        print(f"| {name} | " + " | ".join(f(c) for c in cols) + " |")

    row("ingest alone, closed loop (steps 2 and 7b)", lambda c: f"{eps(c['ingest']):,.0f} ev/s" if c["ingest"] else "—")
    row("pipeline sustained to the output topic", lambda c: (("" if c["bounded"] else "≥ ") + f"{c['rate']:,.0f} ev/s (at {c['best']['rate']:,} offered)") if c["best"]
        else ("none of " + str(len(c["probes"])) + " probes sustained" if c["probes"] else "not run"))
    row("request p50 / p99 at that rate (ms)", lambda c: f"{c['best']['request_latency_ms']['p50']:.1f} / {c['best']['request_latency_ms']['p99']:.1f}" if c["best"] else "—")
    row("e2e p50 / p99 at 50 % (ms)", lambda c: f"{c['e2e']['e2e_latency_ms']['p50']:.1f} / {c['e2e']['e2e_latency_ms']['p99']:.1f} (at {c['e2e']['rate']:,} ev/s)"
        if c["e2e"] and c["e2e"].get("e2e_latency_ms") else "—")
    for i, what in enumerate(("ingest (gateway / http_server process)", "pre (pre-transformer / process 2)", "post (post-transformer / process 3)")):
        row(f"CPU s per million events: {what}", lambda c, i=i: fmt(cpu_of(c["best"], c["stages"][i:i + 1]), ".1f"))
    row("CPU s per million events: the three together", lambda c: fmt(cpu_of(c["best"], c["stages"]), ".1f"))
    row("CPU s per million events: the broker", lambda c: fmt(cpu_of(c["best"], ("kafka",)), ".1f"))
    row("CPU s per million events: Redis", lambda c: fmt(cpu_of(c["best"], ("redis",)), ".1f"))

    def peak(c, name):
        runs = c["probes"] + [r for r in (c["e2e"], c["best"]) if r]
        v = [r["processes"][name]["peak_rss_mib"] for r in runs if name in (r.get("processes") or {})]
        return max(v) if v else None
    for i, what in enumerate(("ingest", "pre", "post")):
        row(f"peak RSS (MiB, overload probes included): {what}", lambda c, i=i: fmt(peak(c, c["stages"][i]), ".1f"))

    ms_single, rpc_single, ms_batch, rpc_batch = cols
    print("\nIssue 17's targets (same run, same machine):\n")

    def verdict(ok):
        return "not measured" if ok is None else ("met" if ok else "NOT met")
    if ms_single["best"] and rpc_single["best"] and rpc_single["rate"]:
        r = ms_single["rate"] / rpc_single["rate"]
        bound = "".join(f" ({who}'s search never failed: its figure is a lower bound)"
                        for who, c in (("metastream", ms_single), ("Redpanda Connect", rpc_single)) if not c["bounded"])
        print(f"- full pipeline sustained, single events ≥ 4 × the peer's: {ms_single['rate']:,.0f} vs {rpc_single['rate']:,.0f} ev/s, "
              f"{r:.2f} × — **{verdict(r >= 4)}**{bound}")
    else:
        print("- full pipeline sustained, single events ≥ 4 × the peer's: not measured (a search found no sustained rate or did not run)")
    for ms, rpc, what in ((ms_single, rpc_single, "single events"), (ms_batch, rpc_batch, "batches of 100")):
        a, b = cpu_of(ms["best"], MS_STAGES), cpu_of(rpc["best"], RPC_STAGES)
        if a is not None and b:
            print(f"- CPU per event of metastream's three pipeline services ≤ 0.2 × the peer's three processes ({what}): "
                  f"{a:.1f} vs {b:.1f} s per million, {a / b:.2f} × — **{verdict(a <= 0.2 * b)}**")
        else:
            print(f"- CPU per event of metastream's three pipeline services ≤ 0.2 × the peer's three processes ({what}): not measured")
    for ms, what in ((ms_single, "single events"), (ms_batch, "batches of 100")):
        a, k = cpu_of(ms["best"], MS_STAGES), cpu_of(ms["best"], ("kafka",))
        if a is not None and k:
            print(f"- CPU per event of metastream's services ≤ the broker's own, same traffic ({what}): "
                  f"{a:.1f} vs {k:.1f} s per million, {a / k:.2f} × — **{verdict(a <= k)}**")
        else:
            print(f"- CPU per event of metastream's services ≤ the broker's own, same traffic ({what}): not measured")
    for c in cols:
        if not c["probes"]:
            continue
        print(f"\n{c['heading']}, the search:\n")
        print("| offered ev/s | delivered during the load ev/s | request p50 / p99 ms | sent late by (max) ms | e2e p50 / p99 ms | sustained |")
        print("|---|---|---|---|---|---|")
        for d in c["probes"]:
            e, q = d.get("e2e_latency_ms") or {}, d.get("request_latency_ms") or {}
            print(f"| {d['rate']:,} | {d['delivered_per_s']:,.0f} | {q.get('p50', 0):.1f} / {q.get('p99', 0):.1f} | "
                  f"{d.get('send_late_ms', 0):,.0f} | {e.get('p50', 0):.0f} / {e.get('p99', 0):.0f} | {'yes' if sustained(d) else 'no'} |")

# Issue 28: latency as a first-class result. Single events (one per POST /ingest, open loop) at
# an idle trickle (one event every 50 ms) and at 10, 25, 50 and 75 % of the single-event
# maximum (step 7a's; for the peer its own), under both guarantees and for the peer, with where
# the time goes (hops: from the Kafka timestamps metastream puts on what it publishes; the peer
# publishes none); then the targets, each from results that were sustained.
LAT_POINTS = (("trickle", "idle trickle"), ("at-10", "10 %"), ("at-25", "25 %"), ("at-50", "50 %"), ("at-75", "75 %"))
LAT_SYSTEMS = (  # (name in the files, heading, the search whose maximum the points take)
    ("eos", "metastream, exactly once", "pipeline-single"),
    ("alo", "metastream, at least once", "pipeline-single"),
    ("rpc", "Redpanda Connect (at least once)", "rpc-pipeline-single"),
)
HOPS = ("send_to_gateway", "gateway_to_notice", "notice_to_publish", "publish_to_read")
print("\n## Latency\n")
raw = load("lat-raw-at-50")
lat_any = any(load(f"lat-{n}-trickle") for n, _, _ in LAT_SYSTEMS)
if not lat_any:
    print("Not measured: this run has no latency points (an older bench.sh).")
else:
    print("Single events, open loop (one per POST /ingest), e2e from each request's intended send time to a `read_committed` "
          "reader of the output topic: an idle trickle (one event every 50 ms) and 10 / 25 / 50 / 75 % of the single-event "
          "search's sustained maximum — metastream's (step 7a, under exactly once) for both guarantees, so that each rate shows "
          "both; the peer's own for Redpanda Connect. Hops in p50 / p99 ms (metastream only).\n")
    print("| system | load | offered ev/s | e2e p50 / p99 / p99.9 ms | client → gateway produce | → pre-transformer notice "
          "| → post-transformer publish | → reader | note |")
    print("|---|---|---|---|---|---|---|---|---|")

    def lat_row(heading, what, d):
        e = d.get("e2e_latency_ms") or {}
        h = d.get("e2e_hops_ms") or {}
        cells = [f"{h[n]['p50']:.1f} / {h[n]['p99']:.1f}" if n in h else "—" for n in HOPS]
        problem = latency_problem(d) if d.get("mode") == "Http" else None
        e2e = f"{e['p50']:.1f} / {e['p99']:.1f} / {e['p999']:.1f}" if e else "not measured"
        print(f"| {heading} | {what} | {d['rate']:,} | {e2e} | " + " | ".join(cells) + f" | {problem or ''} |")

    for name, heading, search_label in LAT_SYSTEMS:
        best = load(f"{search_label}-sustained")
        if not any(load(f"lat-{name}-{suffix}") for suffix, _ in LAT_POINTS):
            print(f"| {heading} | — | — | not measured (not run) | — | — | — | — | |")
            continue
        for suffix, what in LAT_POINTS:
            d = load(f"lat-{name}-{suffix}")
            if d:
                lat_row(heading, what, d)
            elif suffix != "trickle" and not best:
                print(f"| {heading} | 10 / 25 / 50 / 75 % | — | not measured (no sustained single-event rate found) | — | — | — | — | |")
                break
            else:
                print(f"| {heading} | {what} | — | not measured | — | — | — | — | |")
        if name == "eos" and load("lat-eos-at-peer50"):
            lat_row(heading, "the peer's 50 % rate", load("lat-eos-at-peer50"))
    if raw and raw.get("e2e_latency_ms"):
        r = raw["e2e_latency_ms"]
        print(f"| raw Kafka produce → consume | at metastream's 50 % | {raw['rate']:,} | {r['p50']:.1f} / {r['p99']:.1f} / {r['p999']:.1f} | — | — | — | — | |")

# The targets (issue 28). A result that is missing, or rests on a search that found no
# sustained rate, or a point whose rate was not offered, is "not measured", never "met".
targets = []


def e2e(d):
    return (d or {}).get("e2e_latency_ms") or None


eos_peer, rpc_50, rpc_best = load("lat-eos-at-peer50"), load("lat-rpc-at-50"), load("rpc-pipeline-single-sustained")
what = "exactly once at the peer's 50 % rate: e2e p99 ≤ the peer's p99 there, and p50 ≤ 15 ms"
if not rpc_best:
    targets.append((what, "—", "not measured (the peer's search found no sustained rate, or did not run)"))
elif not (e2e(eos_peer) and e2e(rpc_50)):
    targets.append((what, "—", "not measured (" + ("no metastream point at the peer's rate" if not e2e(eos_peer) else "no peer point at 50 %") + ")"))
elif latency_problem(rpc_50):
    targets.append((what, "—", f"not measured (the peer's point: {latency_problem(rpc_50).split(': ', 1)[1]})"))
else:
    a, b = e2e(eos_peer), e2e(rpc_50)
    measured = f"at {eos_peer['rate']:,} ev/s: p99 {a['p99']:.1f} vs the peer's {b['p99']:.1f} ms; p50 {a['p50']:.1f} ms"
    problem = latency_problem(eos_peer)
    if problem:
        targets.append((what, measured, problem))
    else:
        ok = a["p99"] <= b["p99"] and a["p50"] <= 15
        targets.append((what, measured, "met" if ok else "NOT met"))
trickle = load("lat-eos-trickle")
what = "idle trickle (one event every 50 ms) under exactly once: e2e p99 ≤ 25 ms"
if not e2e(trickle):
    targets.append((what, "—", "not measured"))
else:
    problem = latency_problem(trickle)
    t = e2e(trickle)
    targets.append((what, f"p50 {t['p50']:.1f} / p99 {t['p99']:.1f} ms ({t['count']} events)", problem or ("met" if t["p99"] <= 25 else "NOT met")))
eos_50, single_best = load("lat-eos-at-50"), load("pipeline-single-sustained")
what = "at 50 % of metastream's own maximum under exactly once: e2e p99 ≤ 3 × the raw Kafka round trip's p99 + 20 ms"
if not single_best:
    targets.append((what, "—", "not measured (step 7a found no sustained rate)"))
elif not (e2e(eos_50) and e2e(raw)):
    targets.append((what, "—", "not measured (" + ("no point at 50 %" if not e2e(eos_50) else "no raw round trip at that rate") + ")"))
else:
    a, r = e2e(eos_50), e2e(raw)
    bound = 3 * r["p99"] + 20
    measured = f"at {eos_50['rate']:,} ev/s: p99 {a['p99']:.1f} ms; raw p99 {r['p99']:.1f} ms, so ≤ {bound:.1f} ms"
    # The raw round trip is the yardstick; one that caught a broker stall says nothing of
    # the broker's usual tail.
    if r["p99"] > 10 * max(r["p50"], 0.001):
        measured += f" (the raw baseline stalled: its p99 {r['p99'] / max(r['p50'], 0.001):.0f}× its p50)"
    targets.append((what, measured, latency_problem(eos_50) or ("met" if a["p99"] <= bound else "NOT met")))
print("\nIssue 28's latency targets (same run, same machine):\n")
print("| target | measured | verdict |")
print("|---|---|---|")
for t in targets:
    print(f"| {t[0]} | {t[1]} | **{t[2]}** |")

# The CPU per event of each process next to the previous run's (by name in the same directory),
# so that a latency gained is not CPU spent: at each search's sustained maximum (rates differ
# between runs: compare with them in view), and the floors of the same runs, which show how
# much of a difference is the machine's.
prev_dir = previous_run(out)
print("\n## CPU per event against the previous run\n")
if not prev_dir:
    print("No previous run (no bench-* directory before this one in " + os.path.dirname(os.path.abspath(out)) + ").")
else:
    def load_prev(name):
        path = os.path.join(prev_dir, f"{name}.json")
        return json.load(open(path)) if os.path.exists(path) else None

    prev_pipe = load_prev("pipeline-sustained")
    prev_secs = (prev_pipe or load_prev("raw-producer") or {}).get("seconds")
    print(f"Previous run: {os.path.basename(prev_dir)}" + (f" ({prev_secs:.0f} s per measurement)." if prev_secs else ".")
          + " CPU µs per event (= CPU s per million events); — where a run has no sustained rate or no such process.\n")
    sets = (("single events, 7a's maximum", "pipeline-single-sustained"), ("batches of 100, step 3's maximum", "pipeline-sustained"))
    print("| process | " + " | ".join(f"{what}: this run | previous" for what, _ in sets) + " |")
    print("|---" * (1 + 2 * len(sets)) + "|")

    def at(run):
        return f" (at {run['rate']:,}/s)" if run and run.get("rate") else ""
    print("| offered rate | " + " | ".join(f"{at(load(name)).strip(' ()') or '—'} | {at(load_prev(name)).strip(' ()') or '—'}" for _, name in sets) + " |")
    for proc in ("gateway", "pre-transformer", "post-transformer", "kafka", "redis", "loadgen"):
        cells = []
        for _, name in sets:
            for run in (load(name), load_prev(name)):
                cells.append(fmt(cpu_us(run, proc), ".1f"))
        print(f"| {proc} | " + " | ".join(cells) + " |")
    floors = (("2c floor: HTTP + one acked produce", "floor-kafka", "floor"), ("2d floor: consume → produce in transactions", "floor-transform", "loadgen"))
    print()
    for what, name, proc in floors:
        a, b = (cpu_us(r, proc) for r in (load(name), load_prev(name)))
        print(f"- {what}: this run {fmt(a, '.1f', 'not measured')}, previous run {fmt(b, '.1f', 'not measured')} µs per event")
