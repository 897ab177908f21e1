#!/usr/bin/env bash
# The API contract against the live dev stack: schemathesis (pinned, from PyPI, in
# var/venv-contract) generates requests from each listener's /openapi.json — valid and invalid
# data, missing and wrong keys, undocumented methods — and checks every answer: no server error,
# status codes, content types, headers and bodies as documented, invalid data refused, no
# operation reachable without its key. Starts the dev stack if it is not running (and stops it
# afterwards). Ends with "N passed, M failed" (one per listener).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

python_tools "$VAR/venv-contract" "$ROOT/scripts/contract.requirements.txt" "$VAR/pylib-contract" \
  || die "pip could not install scripts/contract.requirements.txt"
ST=("$PY" -m schemathesis.cli)
[[ $PY == python3 ]] || ST=("$(dirname "$PY")/st")

ensure_dev_stack

passed=0 failed=0
mkdir -p "$VAR/log/contract"
# listener, token: the gateway's public and admin listeners and the consumer-api's public one.
for target in "8081 your-secret-key gateway" "9081 dev-admin-key gateway-admin" "8084 your-secret-key consumer-api"; do
  read -r port token name <<<"$target"
  log "contract: $name (:$port)"
  if (cd "$ROOT/scripts/contract" && ST_TARGET="http://127.0.0.1:$port" ST_TOKEN="$token" \
      "${ST[@]}" --config-file schemathesis.toml run "http://127.0.0.1:$port/openapi.json" --checks all \
      --report junit --report-dir "$VAR/log/contract/$name" >"$VAR/log/contract/$name.log" 2>&1); then
    passed=$((passed + 1))
    printf 'ok    %s: %s\n' "$name" "$(grep -E '^[0-9]+ (passed|operations)|passed|Test cases:' "$VAR/log/contract/$name.log" | tail -1)"
  else
    failed=$((failed + 1))
    printf 'FAIL  %s (full output: %s)\n' "$name" "$VAR/log/contract/$name.log"
    tail -60 "$VAR/log/contract/$name.log"
  fi
done
# Subscriptions the run created (to allowed loopback URLs) would keep a consumer each in the dev
# consumer-api: deleted.
subs=$(curl -fsS -H "Authorization: Bearer dev-admin-key" http://127.0.0.1:9081/v1/subscriptions \
  | "$PY" -c 'import json,sys; print(" ".join(s["id"] for s in json.load(sys.stdin)["subscriptions"]))' || true)
for id in $subs; do
  curl -fsS -o /dev/null -X DELETE -H "Authorization: Bearer dev-admin-key" "http://127.0.0.1:9081/v1/subscriptions/$id" || true
done
echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
