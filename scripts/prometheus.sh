#!/usr/bin/env bash
# A real Prometheus (Debian's `prometheus` package) scraping the dev stack, and the check that every
# Grafana panel's query returns data through it.
#   scripts/prometheus.sh start|stop   Prometheus on 127.0.0.1:9095, scraping the dev stack every 1 s
#   scripts/prometheus.sh check        starts the dev stack and Prometheus if needed, sends traffic,
#                                      evaluates every dashboard query (scripts/query_dashboards.py);
#                                      ends with "N passed, M failed"
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PROM_DIR="$VAR/prometheus"
PROM_PORT=9095
PID="$PROM_DIR/prometheus.pid"

HOSTILE_PORT=9096

start() {
  if pid_alive "$PID"; then return 0; fi
  command -v prometheus >/dev/null || apt_install prometheus
  # A fresh database: samples of an earlier run must not stand in for this one's.
  rm -rf "$PROM_DIR/data"
  mkdir -p "$PROM_DIR/data"
  # The gateway's and consumer-api's /metrics are on their admin ports; the transformers' on theirs.
  cat > "$PROM_DIR/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: metastream
    static_configs:
      - targets: ["127.0.0.1:9081", "127.0.0.1:8082", "127.0.0.1:8083", "127.0.0.1:9084"]
  # prometheus.sh check serves here the exposition of a label value with a quote, a backslash and a newline.
  - job_name: hostile-label
    static_configs:
      - targets: ["127.0.0.1:$HOSTILE_PORT"]
YAML
  log "starting prometheus on 127.0.0.1:$PROM_PORT (data in $PROM_DIR)"
  prometheus --config.file="$PROM_DIR/prometheus.yml" --storage.tsdb.path="$PROM_DIR/data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" --storage.tsdb.retention.time=1d \
    > "$PROM_DIR/prometheus.log" 2>&1 &
  echo $! > "$PID"
  wait_port 127.0.0.1 "$PROM_PORT" 30 "prometheus (see $PROM_DIR/prometheus.log)"
}

stop() { stop_pid "$PID" prometheus; }

# A label value with every character the exposition format escapes, rendered by the services' own
# code (crates/adapters/examples/exposition.rs), scraped by Prometheus and read back through its
# API: it must come back byte for byte, and the scrape must succeed.
hostile_label() {
  local dir="$PROM_DIR/hostile"
  mkdir -p "$dir"
  (cd "$ROOT" && cargo run -q -p adapters --example exposition) > "$dir/metrics"
  python3 -m http.server "$HOSTILE_PORT" --bind 127.0.0.1 --directory "$dir" >/dev/null 2>&1 &
  local server=$!
  local ok=1
  for _ in $(seq 20); do
    sleep 1
    if python3 - "http://127.0.0.1:$PROM_PORT" <<'PY'
import json, sys, urllib.parse, urllib.request
base = sys.argv[1]
q = urllib.parse.urlencode({"query": 'http_server_requests_total{job="hostile-label"}'})
result = json.load(urllib.request.urlopen(f"{base}/api/v1/query?{q}"))["data"]["result"]
up = json.load(urllib.request.urlopen(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": 'up{job="hostile-label"}'})))["data"]["result"]
want = 'a"b\\c\nd'
if up and up[0]["value"][1] == "1" and result and result[0]["metric"].get("route") == want:
    print(f"ok    a label value with a quote, a backslash and a newline round-trips through a Prometheus scrape: {want!r}")
    sys.exit(0)
sys.exit(1)
PY
    then ok=0; break; fi
  done
  kill "$server" 2>/dev/null || true
  if [[ $ok != 0 ]]; then echo "FAIL  the hostile label did not come back through Prometheus"; return 1; fi
}

check() {
  ensure_dev_stack
  local started=0
  if ! pid_alive "$PID"; then start; started=1; fi
  local hostile=0
  hostile_label || hostile=1
  # Traffic through the edge: events of two sources, a batch, a poison event, a consume.
  for i in $(seq 20); do
    curl -sS -o /dev/null -X POST http://localhost:8080/ingest -H "Authorization: Bearer your-secret-key" \
      -H "Content-Type: application/json" -d "{\"id\":\"prom-$i\",\"source\":\"jira\",\"payload\":{\"title\":\"t$i\"}}"
  done
  curl -sS -o /dev/null -X POST http://localhost:8080/ingest/batch -H "Authorization: Bearer your-secret-key" \
    -H "Content-Type: application/json" -d '[{"id":"prom-b1","source":"github","payload":{}},{"id":"prom-b2","source":"nosuchsource","payload":{}}]'
  curl -sS -o /dev/null "http://localhost:8080/consume?group=prometheus-check&wait_ms=1000" -H "Authorization: Bearer your-secret-key"
  # Rate windows need samples on both sides of the traffic, and consumer lag arrives with
  # librdkafka's statistics every 5 s: let a few rounds of scrapes pass, then ask.
  local out="$PROM_DIR/query-dashboards.txt" rc=1
  for _ in $(seq 10); do
    sleep 3
    if python3 "$ROOT/scripts/query_dashboards.py" "http://127.0.0.1:$PROM_PORT" --window 30s > "$out" 2>&1; then rc=0; break; fi
  done
  [[ $started == 1 ]] && stop
  cat "$out"
  [[ $hostile == 0 ]] || rc=1
  return $rc
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  check) check ;;
  *) echo "usage: $0 start|stop|check" >&2; exit 2 ;;
esac
