#!/usr/bin/env bash
# `make bench` / `make bench-quick`: measures, in one run on one broker with the same payloads,
#  1. the limit: a raw rdkafka producer (acks=all) straight to the broker;
#  2. gateway ingest only (transformers stopped): single events and batches of 100; and (2c) the
#     floor under a single-event request: HTTP alone, and HTTP plus one acknowledged produce;
#     (2d) the floor under a transformer: a raw consume -> produce loop in Kafka transactions;
#  3. the full pipeline, sustained, through to the output topic: the highest ingest rate whose
#     events all arrive during the load (searched, open loop);
#  4. end-to-end latency at 25 % and 50 % of the measured maximum, next to a raw Kafka
#     produce -> consume round trip at the same rates;
#  4b. the cost of exactly once: steps 3 and 4 (at 50 %) and 7a's latency points again with
#     delivery.guarantee=at_least_once;
#  5. (full run only) Redpanda Connect doing the gateway's job (http_server -> kafka), if it builds;
#  6. downstream: GET /consume (max=1000) against a raw Kafka consumer reading the same topic;
#  7. the whole pipeline against Redpanda Connect doing the same job (three processes, with Redis;
#     scripts/bench-redpanda-pipeline.sh), both searched as in step 3 with single events (the
#     prototype's POST /ingest) and with batches of 100; the latency of single events at an idle
#     trickle and at 10, 25, 50 and 75 % of each one's single-event maximum, with the hops of
#     each, and metastream's at the peer's 50 % rate (issue 28's targets).
# Every search warms the pipeline before its first probe and halves its rate while the first
# probes fail; a step whose rate derives from a search that found no sustained rate is skipped,
# not run at a made-up rate (the report then says "not measured").
# Order: 1, 2, 7b (the peer, while metastream is stopped: step 7a needs its maximum), 3, 4, 7a,
# 4b, 6, 5. Release builds; results in bench/results/ (JSON per step, a markdown table per run,
# PNG charts).
# Usage: scripts/bench.sh [quick]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

QUICK=${1:-}
SECS=20; [[ $QUICK == quick ]] && SECS=5
# The idle trickle of the latency steps sends one event every 50 ms: 10 s (200 events) is the
# least that gives its p99 any meaning.
TRICKLE_SECS=20; [[ $QUICK == quick ]] && TRICKLE_SECS=10
SIZE=${BENCH_EVENT_SIZE:-1024}
RUN="bench-$(date +%Y%m%d-%H%M%S)"
OUT="$ROOT/bench/results/$RUN"
REL="${CARGO_TARGET_DIR:-$ROOT/target}/release"
LG="$REL/metastream-loadgen"
mkdir -p "$OUT"

pid_alive "$VAR/run/gateway.pid" && die "a dev stack is running (make stop first): the benchmark needs the machine to itself"
"$ROOT/scripts/kafka.sh" start
"$ROOT/scripts/redis.sh" start
# A dev broker that kept many runs' topics holds more than memory can cache: the readers of
# step 6 then wait on the disk (by hand, with 34 GiB of logs and 24 GiB of memory: 50 % iowait,
# the raw consumer at 168,000 messages/s against 550,000-750,000 on a clean broker). Said in the
# report, not refused: the broker's data is the user's.
BROKER_DATA=$(du -sb "$VAR/kafka/data" 2>/dev/null | cut -f1); BROKER_DATA=${BROKER_DATA:-0}
MEM_AVAILABLE=$(( $(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo) * 1024 ))
printf '{"broker_data_bytes": %s, "mem_available_bytes": %s}\n' "$BROKER_DATA" "$MEM_AVAILABLE" > "$OUT/machine.json"
if (( BROKER_DATA > MEM_AVAILABLE / 2 )); then
  log "WARNING: the dev broker holds $((BROKER_DATA >> 30)) GiB of logs, $((MEM_AVAILABLE >> 30)) GiB of memory is available: reads may come from disk (for a clean broker: make stop, then delete $VAR/kafka/data)"
fi
log "building release binaries"
(cd "$ROOT" && cargo build --release --workspace --bins -q && cargo build --release -p gateway --example ingest_floor -q)

# The services, from the release build, on this run's own topics and keys.
export METASTREAM_BIN="$REL" METASTREAM_ENV=dev RUST_LOG=warn
export METASTREAM__TELEMETRY__LOG_FORMAT=json
export METASTREAM__KAFKA__TOPICS__INGEST="$RUN.ingest" METASTREAM__KAFKA__TOPICS__PROCESSED="$RUN.processed"
export METASTREAM__KAFKA__TOPICS__OUTPUT="$RUN.output" METASTREAM__KAFKA__TOPICS__DEAD_LETTER="$RUN.dead-letter"
export METASTREAM__REDIS__KEY_PREFIX="$RUN:" METASTREAM__PRE_TRANSFORMER__GROUP_ID="$RUN.pre"
export METASTREAM__POST_TRANSFORMER__GROUP_ID="$RUN.post" METASTREAM__CONSUMER_API__GROUP_PREFIX="$RUN.consume-"
export METASTREAM__GATEWAY__MAX_IN_FLIGHT=20000 METASTREAM__GATEWAY__WORKERS=2
# This run's topics hold gigabytes, its Redis keys megabytes: delete them at the end (the
# results are in $OUT).
cleanup() {
  "$ROOT/scripts/services.sh" stop >/dev/null 2>&1 || true
  "$ROOT/scripts/bench-redpanda-pipeline.sh" stop >/dev/null 2>&1 || true
  "$LG" --delete-topics "$RUN." >/dev/null 2>&1 || true
  redis-cli --scan --pattern "$RUN:*" 2>/dev/null | xargs -r -n 500 redis-cli DEL >/dev/null 2>&1 || true
}
trap cleanup EXIT
"$ROOT/scripts/services.sh" start >/dev/null
# Step 4's raw round trip runs on a topic made now, not by its first run: a partition created
# seconds before stalled appends for up to a few hundred ms (by hand: p99 50-200 ms on a fresh
# topic, 9 ms on one that existed) — the broker settling, not its steady cost. Step 2d's output
# topic too.
"$LG" --create-topic --topic "$RUN.roundtrip" >/dev/null
"$LG" --create-topic --topic "$RUN.transform-out" >/dev/null
# Every process whose CPU and memory a step reports: the services, and the broker and Redis (when
# the project's scripts started them), so the report shows where the whole machine's CPU goes.
pids() { for s in gateway pre-transformer post-transformer consumer-api; do
  [[ -f "$VAR/run/$s.pid" ]] && pid_alive "$VAR/run/$s.pid" && printf -- '--pid %s=%s ' "$s" "$(cat "$VAR/run/$s.pid")"; done
  pid_alive "$VAR/kafka/kafka.pid" && printf -- '--pid kafka=%s ' "$(cat "$VAR/kafka/kafka.pid")"
  pid_alive "$VAR/redis/redis.pid" && printf -- '--pid redis=%s ' "$(cat "$VAR/redis/redis.pid")"
  true; }
# lg LABEL ARGS...: one load generator run, its results in LABEL.json; it runs for $SECS, or
# for $LG_SECS when the caller sets it (LG_SECS=10 lg ...: the trickle, the warm-ups).
lg() { local label=$1; shift; log "$label"; "$LG" --label "$label" --event-size "$SIZE" --seconds "${LG_SECS:-$SECS}" --json "$OUT/$label.json" "$@" | tee -a "$OUT/raw.txt"; }
val() { python3 - "$OUT/$1.json" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."):
    d = d[k]
print(d)
PY
}

# Waits until both transformers report no consumer lag (librdkafka reports every 5 s), so a
# step does not measure the previous step's backlog.
drain() {
  local i lag
  for ((i = 0; i < 40; i++)); do
    sleep 3
    lag=$(for p in 8082 8083; do curl -fsS "http://127.0.0.1:$p/metrics" 2>/dev/null; done \
      | awk '/^metastream_kafka_consumer_lag_messages/ { s += $NF } END { print s + 0 }')
    [[ $lag == 0 ]] && return 0
  done
  log "the pipeline still lags by $lag messages; measuring anyway"
}

# The best of one step's runs at several concurrencies, saved as the step's result: a closed-loop
# rate with too few requests in flight measures their latency, not the system's capacity (the
# raw producer with 4 clients took 137k messages/s, with 8 clients 240k; the gateway's batches
# 74k with 8 clients, 112k-135k with 16 or 32).
best() { local into=$1; shift; python3 - "$OUT" "$into" "$@" <<'PY'
import json, os, shutil, sys
out, into, names = sys.argv[1], sys.argv[2], sys.argv[3:]
rate, name = max((json.load(open(os.path.join(out, f"{n}.json")))["events_per_s"], n) for n in names)
shutil.copy(os.path.join(out, f"{name}.json"), os.path.join(out, f"{into}.json"))
PY
}

# 1. The limit: a raw producer (256 sends in flight per client) at 4 and 8 clients, the better.
lg raw-producer-4 --mode kafka-produce --topic "$RUN.raw" --clients 4 $(pids)
lg raw-producer-8 --mode kafka-produce --topic "$RUN.raw" --clients 8 $(pids)
best raw-producer raw-producer-4 raw-producer-8
# 2. Gateway only: transformers stopped, and the gateway on a topic of its own, so step 3 does
#    not start behind millions of events.
"$ROOT/scripts/services.sh" stop >/dev/null
METASTREAM__KAFKA__TOPICS__INGEST="$RUN.ingest-only" "$ROOT/scripts/services.sh" start >/dev/null
kill "$(cat "$VAR/run/pre-transformer.pid")" "$(cat "$VAR/run/post-transformer.pid")"
sleep 2
lg ingest-single --mode http --batch 1 --clients 64 $(pids)
for c in 8 16 32; do lg "ingest-batch100-$c" --mode http --batch 100 --clients "$c" $(pids); done
best ingest-batch100 ingest-batch100-8 ingest-batch100-16 ingest-batch100-32
"$ROOT/scripts/services.sh" stop >/dev/null
# 2c. The floor under 2a's single-event request on this machine: an actix-web server set up as
#     the gateway's listener answering 202 once it read the body (`http`), or once it also
#     produced the body, keyed, with the gateway's producer and had it acknowledged (`kafka`);
#     crates/gateway/examples/ingest_floor.rs. Driven as 2a, on the same topic.
for mode in http kafka; do
  (cd "$ROOT" && METASTREAM__KAFKA__TOPICS__INGEST="$RUN.ingest-only" exec "$REL/examples/ingest_floor" "$mode") >"$OUT/floor-$mode.log" 2>&1 &
  floor=$!
  wait_port 127.0.0.1 8081 30 "ingest_floor $mode (log: $OUT/floor-$mode.log)"
  lg "floor-$mode" --mode http --batch 1 --clients 64 --pid "floor=$floor"
  kill "$floor"; wait "$floor" || true
done
# 2d. The floor under a transformer: the least CPU per event a transactional consume -> produce
#     stage can take on this machine (loadgen --mode kafka-transform: a read_committed group
#     consumer and a transactional producer set up as the transformers' are, each batch of 500
#     written to another topic and committed with its offsets; no Redis, no operations). Fed by
#     step 1's raw producer: it reads that topic's backlog from the start, so its batches are
#     full. The load generator is the stage here: its own CPU (`loadgen`) is the floor. A floor
#     that fails leaves the transformers' targets "not measured" rather than ending the run.
lg floor-transform --mode kafka-transform --topic "$RUN.raw" --to-topic "$RUN.transform-out" --transaction-events 500 $(pids) \
  || log "WARNING: the transformer floor (2d) failed: see $OUT/raw.txt"
# Steps 1 and 2 wrote gigabytes that no later step reads: deleted now, so the broker's logs stay
# small enough for step 6's readers to read from memory.
"$LG" --delete-topics "$RUN.raw" >/dev/null 2>&1 || true
"$LG" --delete-topics "$RUN.ingest-only" >/dev/null 2>&1 || true
"$LG" --delete-topics "$RUN.transform-out" >/dev/null 2>&1 || true

sustained() { python3 - "$OUT/$1.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
e2e = d.get("e2e_latency_ms") or {}
req = d.get("request_latency_ms") or {}
# Sustained: nothing refused, the requests left on schedule (at most 100 ms late: a run that fell
# behind did not offer its rate), answered in time (p99 <= 1 s), and >= 95 % of the offered
# rate reached the output during the load with e2e p99 <= 2 s.
ok = (d["failed"] == 0 and d.get("send_late_ms", 1e9) <= 100 and req.get("p99", 1e9) <= 1000
      and d["delivered_per_s"] >= 0.95 * d["rate"] and e2e.get("p99", 1e9) <= 2000)
print("yes" if ok else "no")
PY
}
PROBES=8; [[ $QUICK == quick ]] && PROBES=4
BISECT=2; [[ $QUICK == quick ]] && BISECT=0
# The warm-up before a search's first probe: WARM_RATE events/s for WARM_SECS, then the search's
# drain. A cold pipeline spends its first seconds joining consumer groups and opening producers
# and transactions: bench-quick's step 3 once probed 8,000 ev/s on a cold pipeline, failed inside
# those seconds and reported 0 ev/s. The warm-up's results (LABEL-warmup.json) are no probe.
WARM_RATE=500 WARM_SECS=5
# search LABEL START DRAIN ARGS...: the open-loop load ARGS (with --e2e-topic) searched for the
# highest sustained rate (`sustained`), from the rate START: after a warm-up, grow by 30 % while
# sustained (or halve while the first probes are not: a first failure is not a maximum of 0),
# then bisect between the last sustained rate and the first not; DRAIN runs before each probe.
# PROBES and BISECT bound it (a caller may set them for one search). The best probe is copied to
# LABEL-sustained.json; FOUND is its rate (0: no probe was sustained).
search() {
  local label=$1 rate=$2 drainfn=$3 good=0 bad=0 i; shift 3
  "$drainfn"
  LG_SECS=$WARM_SECS lg "$label-warmup" --rate "$WARM_RATE" "$@" || true
  for ((i = 0; i < PROBES; i++)); do
    "$drainfn"
    lg "$label-at-$rate" --rate "$rate" "$@"
    if [[ $(sustained "$label-at-$rate") == yes ]]; then
      good=$rate; [[ $bad -gt 0 ]] && break; rate=$((rate * 13 / 10 / 100 * 100))
    else
      bad=$rate; [[ $good -gt 0 ]] && break; rate=$((rate / 2 / 100 * 100)); [[ $rate -lt 100 ]] && break
    fi
  done
  for ((i = 0; i < BISECT && good > 0 && bad - good > 500; i++)); do
    rate=$(((good + bad) / 2 / 100 * 100))
    "$drainfn"
    lg "$label-at-$rate" --rate "$rate" "$@"
    if [[ $(sustained "$label-at-$rate") == yes ]]; then good=$rate; else bad=$rate; fi
  done
  [[ $good -gt 0 ]] && cp "$OUT/$label-at-$good.json" "$OUT/$label-sustained.json"
  FOUND=$good
  [[ $good -gt 0 ]] || log "$label: no sustained rate found (the steps that derive their rate from it are skipped)"
}
# latency NAME MAX DRAIN ARGS...: the e2e latency of single events (open loop, one per POST
# /ingest, 256 senders as in 7a's search) at an idle trickle (--rate 20: one event every 50 ms,
# for $TRICKLE_SECS) and at 10, 25, 50 and 75 % of MAX (a single-event search's maximum; 0: none
# was found, so the trickle alone), into lat-NAME-trickle.json and lat-NAME-at-P.json, each with
# its hops (e2e_hops_ms). DRAIN runs before each point; ARGS name the target (--url,
# --e2e-topic, --pid).
latency() {
  local name=$1 max=$2 drainfn=$3 p; shift 3
  "$drainfn"
  LG_SECS=$TRICKLE_SECS lg "lat-$name-trickle" --mode http --batch 1 --clients 256 --rate 20 "$@"
  [[ $max -gt 0 ]] || { log "lat-$name: no sustained maximum, so the idle trickle alone"; return 0; }
  for p in 10 25 50 75; do
    "$drainfn"
    lg "lat-$name-at-$p" --mode http --batch 1 --clients 256 --rate "$(( max * p / 100 > 20 ? max * p / 100 : 20 ))" "$@"
  done
}

# 7b. Redpanda Connect doing the whole job: three processes (http_server -> ingest topic;
#     kafka_franz -> timestamp -> Redis SET -> notice topic; kafka_franz -> processing info ->
#     output topic; configuration and its tuning in scripts/bench-redpanda-pipeline.sh) on this
#     run's topics and Redis keys. First its ingest process alone (as step 2: where its searches
#     start), then the searches of steps 7a and 3 (single events; batches of 100), the latency of
#     single events (the trickle and 10-75 % of its single-event maximum, as 7a's) and e2e latency
#     of batches of 10 at 50 % of its batch maximum (as step 4). Each measurement takes the three
#     processes' CPU and memory, and the broker's and Redis'. Run before metastream's steps 3-7a
#     (metastream's services are stopped here), so that 7a knows the peer's maximum
#     (RPC_SINGLE_MAX) and measures metastream at the peer's 50 % rate in the same session as
#     its own points.
RPCP="$ROOT/scripts/bench-redpanda-pipeline.sh"
rpc_quiet() { "$RPCP" quiet; }
RPC_SINGLE_MAX=0
rpc_pipeline() {
  local url
  RPCP_NOTE=$("$RPCP" build) || return 0
  url=$("$RPCP" start "$RUN" ingest-only "$RUN:rpc:") \
    || { RPCP_NOTE="not run: Redpanda Connect's ingest process did not start (see var/redpanda-connect/pipeline/)"; return 0; }
  lg rpc-pipeline-ingest-single --mode http --url "$url" --batch 1 --clients 64 $(pids) $("$RPCP" pids)
  for c in 8 16 32; do lg "rpc-pipeline-ingest-batch100-$c" --mode http --url "$url" --batch 100 --clients "$c" $(pids) $("$RPCP" pids); done
  best rpc-pipeline-ingest-batch100 rpc-pipeline-ingest-batch100-8 rpc-pipeline-ingest-batch100-16 rpc-pipeline-ingest-batch100-32
  url=$("$RPCP" start "$RUN" pipeline "$RUN:rpc:") \
    || { RPCP_NOTE="not run: Redpanda Connect's pipeline did not start (see var/redpanda-connect/pipeline/)"; return 0; }
  search rpc-pipeline-single "$(python3 -c "print(max(500, int($(val rpc-pipeline-ingest-single events_per_s) * 0.2 / 100) * 100))")" rpc_quiet \
    --mode http --url "$url" --batch 1 --clients 256 --e2e-topic "$RUN.rpc-output" $(pids) $("$RPCP" pids)
  RPC_SINGLE_MAX=$FOUND
  latency rpc "$RPC_SINGLE_MAX" rpc_quiet --url "$url" --e2e-topic "$RUN.rpc-output" $(pids) $("$RPCP" pids)
  search rpc-pipeline-batch100 "$(python3 -c "print(max(1000, int($(val rpc-pipeline-ingest-batch100 events_per_s) * 0.1 / 500) * 500))")" rpc_quiet \
    --mode http --url "$url" --batch 100 --clients 8 --e2e-topic "$RUN.rpc-output" $(pids) $("$RPCP" pids)
  if [[ $FOUND -gt 0 ]]; then
    rpc_quiet
    lg rpc-e2e-batch-at-50 --mode http --url "$url" --batch 10 --clients 32 --rate "$((FOUND / 2))" --e2e-topic "$RUN.rpc-output" $(pids) $("$RPCP" pids)
  fi
  "$RPCP" stop
  RPCP_NOTE="ran Redpanda Connect ${REDPANDA_CONNECT_VERSION:-v4.31.0} as three processes (http_server → kafka_franz; kafka_franz → redis → kafka_franz; kafka_franz → kafka_franz)"
}
RPCP_NOTE="not run"
rpc_pipeline
echo "$RPCP_NOTE" > "$OUT/rpc-pipeline-note.txt"
# Its topics are read by no later step: deleted, as steps 1 and 2's, for step 6's readers.
"$LG" --delete-topics "$RUN.rpc-" >/dev/null 2>&1 || true

# 3. The full pipeline, sustained: the highest open-loop ingest rate whose events all reach the
#    output topic while the load runs, without a backlog building up (`search`, batches of 100;
#    start: a tenth of the gateway's closed-loop rate of batches).
"$ROOT/scripts/services.sh" start >/dev/null
search pipeline "$(python3 -c "print(max(1000, int($(val ingest-batch100 events_per_s) * 0.1 / 500) * 500))")" drain \
  --mode http --batch 100 --clients 8 --e2e-topic "$RUN.output" $(pids)
MAX_RATE=$FOUND
# 4. Latency at 25 % and 50 % of the sustained maximum, and raw Kafka at the same rates (on a
#    topic made at the start); skipped when step 3 found no sustained rate.
for pctl in 25 50; do
  [[ $MAX_RATE -gt 0 ]] || break
  RATE=$((MAX_RATE * pctl / 100))
  # batches of 10 from 32 clients: closer to many small producers than step 3's batches of 100
  drain
  lg "e2e-at-$pctl" --mode http --batch 10 --clients 32 --rate "$RATE" --e2e-topic "$RUN.output" $(pids)
  lg "raw-roundtrip-at-$pctl" --mode kafka-roundtrip --topic "$RUN.roundtrip" --rate "$RATE"
done

# 7a. The whole pipeline with single events, the prototype's API (one event per POST /ingest, as
#     most clients send): searched as step 3 searches batches of 100 (start: a fifth of the
#     gateway's closed-loop single-event rate; 256 senders, so that the pool does not cap an
#     open-loop rate of single requests). Then issue 28's latency points under exactly once
#     (`latency eos`); the raw Kafka round trip at the 50 % point's rate (its target is 3 x that
#     p99 + 20 ms); and metastream at the peer's 50 % rate (its target: the peer's p99 there).
search pipeline-single "$(python3 -c "print(max(500, int($(val ingest-single events_per_s) * 0.2 / 100) * 100))")" drain \
  --mode http --batch 1 --clients 256 --e2e-topic "$RUN.output" $(pids)
SINGLE_MAX=$FOUND
latency eos "$SINGLE_MAX" drain --e2e-topic "$RUN.output" $(pids)
if [[ $SINGLE_MAX -gt 0 ]]; then
  lg lat-raw-at-50 --mode kafka-roundtrip --topic "$RUN.roundtrip" --rate "$((SINGLE_MAX / 2))"
fi
if [[ $RPC_SINGLE_MAX -gt 0 ]]; then
  drain
  lg lat-eos-at-peer50 --mode http --batch 1 --clients 256 --rate "$((RPC_SINGLE_MAX / 2))" --e2e-topic "$RUN.output" $(pids)
fi

# 4b. What exactly once costs: the searches and latency steps again with the transformers under
#     at_least_once (steps 3, 4 and 7a ran under the default, exactly_once), side by side: step
#     3's search (from step 3's maximum, at most 3 probes, no bisection), step 4's batches at
#     50 %, and 7a's latency points at the same offered rates as under exactly once (percentages
#     of 7a's maximum), so that each rate shows both guarantees.
"$ROOT/scripts/services.sh" stop >/dev/null
export METASTREAM__DELIVERY__GUARANTEE=at_least_once
"$ROOT/scripts/services.sh" start >/dev/null
ALO_PROBES=3; [[ $QUICK == quick ]] && ALO_PROBES=2
PROBES=$ALO_PROBES BISECT=0 search alo-pipeline "$(( MAX_RATE > 1000 ? MAX_RATE : 1000 ))" drain \
  --mode http --batch 100 --clients 8 --e2e-topic "$RUN.output" $(pids)
if [[ $MAX_RATE -gt 0 ]]; then
  drain
  lg "alo-e2e-at-50" --mode http --batch 10 --clients 32 --rate "$((MAX_RATE / 2))" --e2e-topic "$RUN.output" $(pids)
fi
latency alo "$SINGLE_MAX" drain --e2e-topic "$RUN.output" $(pids)
"$ROOT/scripts/services.sh" stop >/dev/null
unset METASTREAM__DELIVERY__GUARANTEE

# 6. Downstream: the output topic (filled by the steps above) read from the start by a raw
#    rdkafka consumer, then through GET /consume?max=1000 (a new group each) by one caller and by
#    two callers of the group (a reader pipelining its HTTP calls, as the raw consumer fetches
#    ahead on its own thread), the same number of events; three rounds, the median of each
#    reported (a read of this size takes about a second: single runs vary by a third);
#    target: /consume >= 0.5 x raw.
CONSUME_N=500000; [[ $QUICK == quick ]] && CONSUME_N=100000
"$ROOT/scripts/services.sh" start >/dev/null
# (Not `lg`: a read is bounded by its event count, with --seconds only as a safety cap.)
lgc() { local label=$1; shift; log "$label"; "$LG" --label "$label" --seconds 120 --json "$OUT/$label.json" "$@" | tee -a "$OUT/raw.txt"; }
for round in 1 2 3; do
  lgc "consume-raw-$round" --mode kafka-consume --topic "$RUN.output" --max-events "$CONSUME_N"
  lgc "consume-http-$round" --mode http-consume --url "http://127.0.0.1:8084" --max-events "$CONSUME_N" $(pids)
  lgc "consume-http2-$round" --mode http-consume --consume-clients 2 --url "http://127.0.0.1:8084" --max-events "$CONSUME_N" $(pids)
done
"$ROOT/scripts/services.sh" stop >/dev/null

# 5. Redpanda Connect (full run only).
RPC_NOTE="not run (bench-quick)"
if [[ $QUICK != quick ]]; then
  RPC_NOTE=$("$ROOT/scripts/bench-redpanda.sh" "$OUT" "$RUN" "$SECS" "$SIZE" || true)
fi

python3 "$ROOT/scripts/bench_report.py" "$OUT" "$RPC_NOTE" | tee "$OUT/report.md"
# The report's pictures (search.png, hops.png, cpu.png, latency.png), with matplotlib from PyPI in
# var/venv-bench.
if python_tools "$VAR/venv-bench" "$ROOT/scripts/bench.requirements.txt" "$VAR/pylib-bench"; then
  log "charts"; "$PY" "$ROOT/scripts/bench_charts.py" "$OUT" || log "WARNING: the charts could not be drawn"
else
  log "WARNING: pip could not install scripts/bench.requirements.txt: no charts"
fi
log "results in $OUT"
