#!/usr/bin/env bash
# Smoke test of the dev stack, as a newcomer runs it: start it like `make run`, send the
# prototype's two curl calls verbatim through the edge on :8080, check what comes back.
# Stops afterwards what it started; uses a stack that is already running.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

started=0
if ! pid_alive "$VAR/run/gateway.pid"; then
  (cd "$ROOT" && cargo build --workspace --bins -q)
  "$ROOT/scripts/services.sh" start >/dev/null
  started=1
fi
cleanup() { [[ $started == 1 ]] && "$ROOT/scripts/services.sh" stop >/dev/null 2>&1 || true; }
trap cleanup EXIT

fail() { printf 'smoke: FAILED: %s\n' "$*" >&2; echo "0 passed, 1 failed"; exit 1; }

ingest=$(curl -sS -w '\n%{http_code}' -X POST http://localhost:8080/ingest -H "Authorization: Bearer your-secret-key" -H "Content-Type: application/json" -d '{"id":"12345","source":"jira","payload":{"title":"Fix login bug","description":"Users are unable to log in due to a server error.","status":"open","assignee":"john.doe"},"metadata":{"created_at":"2024-07-20T12:34:56Z"}}')
code=$(tail -n1 <<<"$ingest")
[[ $code == 202 ]] || fail "POST /ingest answered $code: $(head -n1 <<<"$ingest")"
offset=$(head -n1 <<<"$ingest" | python3 -c 'import json,sys; print(json.load(sys.stdin)["offset"])')
partition=$(head -n1 <<<"$ingest" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partition"])')

# Whether a /consume answer (on stdin) holds this event, processed by both stages.
checker="$VAR/log/smoke-find-event.py"
mkdir -p "$VAR/log"
cat > "$checker" <<'PY'
import json, sys
partition, offset = int(sys.argv[1]), int(sys.argv[2])
body = json.load(sys.stdin)
assert isinstance(body["events"], list) and body["count"] == len(body["events"]), body
for item in body["events"]:
    e = item["event"]
    assert e["id"] and e["source"], item
    if e["id"] == "12345" and e["provenance"]["ingest_partition"] == partition and e["provenance"]["ingest_offset"] == offset:
        assert e["source"] == "jira"
        assert e["payload"]["title"] == "Fix login bug"
        assert e["payload"]["assignee"] == "john.doe"
        assert e["metadata"]["created_at"] == "2024-07-20T12:34:56Z"
        assert "processed_at" in e["metadata"], "pre stage timestamp missing"
        assert e["metadata"]["processing_info"]["stage"] == "post", "post stage info missing"
        sys.exit(0)
sys.exit(3)
PY

# The prototype's second call, verbatim. The default group may hold any number of events from
# earlier runs: read on (the same group, up to 1000 per call) until this event's turn comes.
# Answers reach Python on stdin, so their size does not matter.
found=0
answer="$VAR/log/smoke-consume.json"
code=$(curl -sS -o "$answer" -w '%{http_code}' -X GET http://localhost:8080/consume -H "Authorization: Bearer your-secret-key")
[[ $code == 200 ]] || fail "GET /consume answered $code: $(head -c 300 "$answer")"
deadline=$((SECONDS + 180))
while :; do
  rc=0
  python3 "$checker" "$partition" "$offset" < "$answer" || rc=$?
  if [[ $rc == 0 ]]; then found=1; break; fi
  [[ $rc == 3 ]] || fail "GET /consume answered an unexpected body: $(head -c 300 "$answer")"
  ((SECONDS < deadline)) || break
  code=$(curl -sS -o "$answer" -w '%{http_code}' "http://localhost:8080/consume?max=1000&wait_ms=1000" -H "Authorization: Bearer your-secret-key")
  [[ $code == 200 ]] || fail "GET /consume answered $code: $(head -c 300 "$answer")"
done
if [[ $found == 1 ]]; then
    echo "smoke: the prototype's two calls work through the edge on :8080"
    # Every metric a dashboard panel queries is one the services export, after this traffic
    # (consumer lag arrives with librdkafka's statistics, every 5 s: allow a few rounds).
    urls=(http://127.0.0.1:8081/metrics http://127.0.0.1:8082/metrics http://127.0.0.1:8083/metrics http://127.0.0.1:8084/metrics)
    for _ in $(seq 20); do
      if python3 "$ROOT/scripts/check_dashboards.py" "${urls[@]}" > "$VAR/log/dashboards-check.txt" 2>&1; then
        echo "smoke: every dashboard panel queries metrics the running services export ($(tail -n 1 "$VAR/log/dashboards-check.txt"))"
        echo "2 passed, 0 failed"
        exit 0
      fi
      sleep 2
    done
    cat "$VAR/log/dashboards-check.txt" >&2
    fail "dashboard panels query metrics the services do not export"
fi
fail "GET /consume did not return the ingested jira event within 180 s"
