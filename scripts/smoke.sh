#!/usr/bin/env bash
# Smoke test of the dev stack, as a newcomer runs it: start it like `make run`, send the
# prototype's two curl calls verbatim through the edge on :8080, check what comes back. Also: every
# error the edge answers itself is metastream's JSON; the admin API and /metrics are on the admin
# ports (gateway 9081, consumer-api 9084), not on the edge nor the public ports.
# Stops afterwards what it started; uses a stack that is already running.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ensure_dev_stack

passed=0
fail() { printf 'smoke: FAILED: %s\n' "$*" >&2; echo "$passed passed, 1 failed"; exit 1; }
mkdir -p "$VAR/log"

# Requests the edge answers by itself (no route, /v1 not routed, oversized header, oversized request
# line, malformed request, refused method, body over the edge limit): each answer must be
# {"error": ..., "message": ...} with Content-Type: application/json. Raw sockets, so that curl's
# own checks do not stand between the request and nginx.
edge_checker="$VAR/log/smoke-edge-errors.py"
cat > "$edge_checker" <<'PY'
import json, socket, sys

host, port = sys.argv[1], int(sys.argv[2])

def exchange(request: bytes):
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:  # nginx may close while a refused request is still sent
                break
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1."):
        raise ValueError(f"no HTTP status line: {data[:200]!r}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out, rest = b"", body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    return int(lines[0].split()[1]), headers, body

def get(path: str, extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" + extra + b"\r\n"

# (what, request, status, error code)
CASES = [
    ("unknown path", get("/no/such/path"), 404, "not_found"),
    ("GET /v1/sources (the admin API is not routed at the edge)", get("/v1/sources"), 404, "not_found"),
    ("GET /metrics (not routed at the edge)", get("/metrics"), 404, "not_found"),
    ("a path that would need JSON escaping", get('/a"b\\c'), 404, "not_found"),
    ("a 64 KiB header", get("/ingest", b"X-Big: " + b"a" * 65536 + b"\r\n"), 431, "headers_too_large"),
    ("a 9 KiB request line", get("/" + "a" * 9216), 414, "uri_too_long"),
    ("a malformed request (GARBAGE)", b"GARBAGE\r\n\r\n", 400, "bad_request"),
    ("a bad method (lower case)", b"get /ingest HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", 400, "bad_request"),
    ("TRACE", b"TRACE /ingest HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", 405, "method_not_allowed"),
    ("a body over the edge limit (64 MiB)", b"POST /ingest HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
     b"Content-Length: 70000000\r\nConnection: close\r\n\r\n", 413, "payload_too_large"),
]
failed = 0
for what, request, want_status, want_code in CASES:
    problems = []
    try:
        status, headers, body = exchange(request)
    except (OSError, ValueError) as err:
        print(f"FAIL  edge, {what}: {err!r}")
        failed += 1
        continue
    if status != want_status:
        problems.append(f"status {status}, expected {want_status}")
    ctype = headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() != "application/json":
        problems.append(f"Content-Type {ctype!r}, expected application/json")
    try:
        doc = json.loads(body)
    except ValueError:
        problems.append(f"body is not JSON: {body[:200]!r}")
    else:
        if not (isinstance(doc, dict) and isinstance(doc.get("error"), str) and isinstance(doc.get("message"), str)):
            problems.append(f"body has no string `error` and `message`: {doc!r}")
        elif doc["error"] != want_code:
            problems.append(f"error {doc['error']!r}, expected {want_code!r}")
    if problems:
        failed += 1
        print(f"FAIL  edge, {what}: " + "; ".join(problems))
    else:
        print(f"ok    edge, {what}: {status} {body.decode(errors='replace')[:100]}")
print(f"{len(CASES) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
if ! python3 "$edge_checker" 127.0.0.1 8080 > "$VAR/log/smoke-edge-errors.txt" 2>&1; then
  cat "$VAR/log/smoke-edge-errors.txt" >&2
  fail "the edge answered an error that is not metastream's JSON (above)"
fi
echo "smoke: every error the edge answers itself is JSON ($(tail -n 1 "$VAR/log/smoke-edge-errors.txt"))"
passed=$((passed + 1))

# The admin API and /metrics: on the admin ports, not on the public ones. status_of: the HTTP status
# of a GET, 000 when nothing answers.
status_of() { curl -sS -o /dev/null -w '%{http_code}' "$@" 2>/dev/null || true; }
for url in http://127.0.0.1:8081/v1/sources http://127.0.0.1:8081/metrics http://127.0.0.1:8084/metrics; do
  code=$(status_of "$url" -H "Authorization: Bearer dev-admin-key")
  [[ $code == 404 ]] || fail "GET $url (a public port) answered $code, expected 404"
done
code=$(status_of http://127.0.0.1:9081/v1/sources -H "Authorization: Bearer dev-admin-key")
[[ $code == 200 ]] || fail "GET http://127.0.0.1:9081/v1/sources (the gateway's admin port) answered $code, expected 200"
for url in http://127.0.0.1:9081/metrics http://127.0.0.1:9084/metrics; do
  code=$(status_of "$url")
  [[ $code == 200 ]] || fail "GET $url (an admin port) answered $code, expected 200"
done
echo "smoke: the admin API and /metrics answer on the admin ports 9081 and 9084 only"
passed=$((passed + 1))

# A scoped key, as an operator makes one with the CLI: it writes jira through the edge, not
# github (403), and is refused once revoked (401).
cli="$ROOT/target/debug/metastream"
key=$("$cli" keys create smoke-jira --scope ingest:jira 2>"$VAR/log/smoke-key.txt") || fail "metastream keys create: $(cat "$VAR/log/smoke-key.txt")"
key_id=$(sed -n 's/^created \(key_[0-9a-f]*\).*/\1/p' "$VAR/log/smoke-key.txt")
[[ $key == msk_* && -n $key_id ]] || fail "metastream keys create printed '$key' / $(cat "$VAR/log/smoke-key.txt")"
as_key() { curl -sS -o /dev/null -w '%{http_code}' -X POST http://localhost:8080/ingest -H "Authorization: Bearer $key" -H "Content-Type: application/json" -d "{\"id\":\"smoke-key\",\"source\":\"$1\",\"payload\":{}}"; }
code=000
for _ in $(seq 50); do code=$(as_key jira); [[ $code == 202 ]] && break; sleep 0.1; done
[[ $code == 202 ]] || fail "a key scoped ingest:jira could not write jira: $code"
code=$(as_key github)
[[ $code == 403 ]] || fail "a key scoped ingest:jira writing github answered $code, not 403"
"$cli" keys list | grep -q "id: $key_id" || fail "metastream keys list does not show $key_id"
"$cli" keys revoke "$key_id" >/dev/null || fail "metastream keys revoke $key_id failed"
for _ in $(seq 50); do code=$(as_key jira); [[ $code == 401 ]] && break; sleep 0.02; done
[[ $code == 401 ]] || fail "a revoked key answered $code, not 401"
echo "smoke: a key made with the CLI writes only its source through the edge, and stops when revoked"
passed=$((passed + 1))

ingest=$(curl -sS -w '\n%{http_code}' -X POST http://localhost:8080/ingest -H "Authorization: Bearer your-secret-key" -H "Content-Type: application/json" -d '{"id":"12345","source":"jira","payload":{"title":"Fix login bug","description":"Users are unable to log in due to a server error.","status":"open","assignee":"john.doe"},"metadata":{"created_at":"2024-07-20T12:34:56Z"}}')
code=$(tail -n1 <<<"$ingest")
[[ $code == 202 ]] || fail "POST /ingest answered $code: $(head -n1 <<<"$ingest")"
offset=$(head -n1 <<<"$ingest" | python3 -c 'import json,sys; print(json.load(sys.stdin)["offset"])')
partition=$(head -n1 <<<"$ingest" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partition"])')

# Whether a /consume answer (on stdin) holds this event, processed by both stages.
checker="$VAR/log/smoke-find-event.py"
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
    passed=$((passed + 1))
    # Every metric a dashboard panel queries is one the services export, after this traffic
    # (consumer lag arrives with librdkafka's statistics, every 5 s: allow a few rounds).
    # gateway and consumer-api: their admin ports; the transformers: their only port.
    urls=(http://127.0.0.1:9081/metrics http://127.0.0.1:8082/metrics http://127.0.0.1:8083/metrics http://127.0.0.1:9084/metrics)
    for _ in $(seq 20); do
      if python3 "$ROOT/scripts/check_dashboards.py" "${urls[@]}" > "$VAR/log/dashboards-check.txt" 2>&1; then
        echo "smoke: every dashboard panel queries metrics the running services export ($(tail -n 1 "$VAR/log/dashboards-check.txt"))"
        echo "$((passed + 1)) passed, 0 failed"
        exit 0
      fi
      sleep 2
    done
    cat "$VAR/log/dashboards-check.txt" >&2
    fail "dashboard panels query metrics the services do not export"
fi
fail "GET /consume did not return the ingested jira event within 180 s"
