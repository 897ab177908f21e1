#!/usr/bin/env bash
# Start or stop the four metastream services (built binaries) and the nginx edge on :8080.
# The edge routes only the public paths; the gateway's admin API (/v1/...) and the gateway's and
# consumer-api's /metrics are on their admin ports (9081, 9084), the transformers' /metrics on
# their own ports (8082, 8083).
# Usage: scripts/services.sh start|stop|status
# Logs: var/log/<service>.log. Pid files: var/run/<service>.pid. Config: METASTREAM_ENV (default dev).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SERVICES=(gateway pre-transformer post-transformer consumer-api)
declare -A PORTS=([gateway]=8081 [pre-transformer]=8082 [post-transformer]=8083 [consumer-api]=8084)
# gateway.admin_listen and consumer_api.admin_listen (config/default.yaml).
declare -A ADMIN_PORTS=([gateway]=9081 [consumer-api]=9084)
EDGE_PORT="${EDGE_PORT:-8080}"
BIN="${METASTREAM_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug}"
RUN="$VAR/run"
LOGS="$VAR/log"

start_service() {
  local name=$1
  if pid_alive "$RUN/$name.pid"; then log "$name already running (pid $(cat "$RUN/$name.pid"))"; return 0; fi
  [[ -x "$BIN/$name" ]] || die "$BIN/$name not built: run 'make build'"
  port_open 127.0.0.1 "${PORTS[$name]}" && die "port ${PORTS[$name]} for $name is taken by another process"
  if [[ -n ${ADMIN_PORTS[$name]:-} ]] && port_open 127.0.0.1 "${ADMIN_PORTS[$name]}"; then
    die "admin port ${ADMIN_PORTS[$name]} for $name is taken by another process"
  fi
  # exec: the pid file names the service itself, not a wrapper shell.
  (cd "$ROOT" && METASTREAM_ENV="${METASTREAM_ENV:-dev}" exec "$BIN/$name" >> "$LOGS/$name.log" 2>&1 < /dev/null) &
  echo $! > "$RUN/$name.pid"
}

# Ready when /readyz answers 200 on the service's port and, for those with one, its admin port.
wait_ready() {
  local name=$1 port=${PORTS[$1]} admin=${ADMIN_PORTS[$1]:-} i
  for ((i = 0; i < 600; i++)); do
    if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
      [[ -z $admin ]] && return 0
      curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && return 0
    fi
    pid_alive "$RUN/$name.pid" || { tail -n 20 "$LOGS/$name.log" >&2; die "$name exited (log: $LOGS/$name.log)"; }
    sleep 0.1
  done
  die "$name not ready after 60s (log: $LOGS/$name.log)"
}

start_edge() {
  if pid_alive "$RUN/nginx.pid"; then return 0; fi
  command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || apt_install nginx-light
  local nginx; nginx=$(command -v nginx || echo /usr/sbin/nginx)
  port_open 127.0.0.1 "$EDGE_PORT" && die "port $EDGE_PORT for the edge is taken by another process"
  mkdir -p "$VAR/nginx"
  sed -e "s#@VAR@#$VAR#g" -e "s#@ROOT@#$ROOT#g" -e "s#@EDGE_PORT@#$EDGE_PORT#" \
    -e "s#@GATEWAY_PORT@#${PORTS[gateway]}#" -e "s#@CONSUMER_API_PORT@#${PORTS[consumer-api]}#" \
    "$ROOT/deploy/nginx/metastream.conf.in" > "$VAR/nginx/nginx.conf"
  "$nginx" -e "$LOGS/nginx-error.log" -p "$VAR/nginx" -c "$VAR/nginx/nginx.conf"
  wait_port 127.0.0.1 "$EDGE_PORT" 10 nginx
}

start() {
  mkdir -p "$RUN" "$LOGS"
  for s in "${SERVICES[@]}"; do start_service "$s"; done
  for s in "${SERVICES[@]}"; do wait_ready "$s"; done
  start_edge
  cat <<MSG

metastream is running (logs in $LOGS, stop with 'make stop'):
  edge (nginx)        http://localhost:$EDGE_PORT   /ingest, /ingest/batch, /hooks/, /cloudevents, /api/v1/lineage, /datahub/,
                                              /openapi.json -> gateway;
                                              /consume, /metadata/ -> consumer-api; nothing else
  gateway             http://localhost:${PORTS[gateway]}   /ingest, /ingest/batch, /hooks/{source}, /cloudevents, /api/v1/lineage, /datahub/{source}/...,
                                              /healthz, /readyz, /openapi.json
  gateway admin       http://localhost:${ADMIN_PORTS[gateway]}   /v1/... (the admin API, the metastream CLI), /metrics
  operator console    http://localhost:${ADMIN_PORTS[gateway]}/console   (sign in with an admin key; dev: dev-admin-key)
  pre-transformer     http://localhost:${PORTS[pre-transformer]}   /readyz, /metrics
  post-transformer    http://localhost:${PORTS[post-transformer]}   /readyz, /metrics
  consumer-api        http://localhost:${PORTS[consumer-api]}   /consume, /metadata/{source}/{id}, /healthz, /readyz, /openapi.json
  consumer-api admin  http://localhost:${ADMIN_PORTS[consumer-api]}   /metrics

Try it:
  curl -X POST http://localhost:$EDGE_PORT/ingest -H "Authorization: Bearer your-secret-key" -H "Content-Type: application/json" -d '{"id":"12345","source":"jira","payload":{"title":"Fix login bug","description":"Users are unable to log in due to a server error.","status":"open","assignee":"john.doe"},"metadata":{"created_at":"2024-07-20T12:34:56Z"}}'
  curl -X GET http://localhost:$EDGE_PORT/consume -H "Authorization: Bearer your-secret-key"
  curl http://localhost:$EDGE_PORT/metadata/jira/12345 -H "Authorization: Bearer your-secret-key"
Operate it (admin ports, never through the edge):
  curl http://localhost:${ADMIN_PORTS[gateway]}/v1/sources -H "Authorization: Bearer dev-admin-key"
  curl http://localhost:${ADMIN_PORTS[gateway]}/metrics; curl http://localhost:${ADMIN_PORTS[consumer-api]}/metrics
MSG
}

stop() {
  if pid_alive "$RUN/nginx.pid"; then
    log "stopping nginx"; kill -QUIT "$(cat "$RUN/nginx.pid")" 2>/dev/null || true
    for _ in $(seq 50); do pid_alive "$RUN/nginx.pid" || break; sleep 0.1; done
  fi
  rm -f "$RUN/nginx.pid"
  for s in "${SERVICES[@]}"; do stop_pid "$RUN/$s.pid" "$s"; done
}

status() {
  for s in "${SERVICES[@]}"; do
    if pid_alive "$RUN/$s.pid"; then echo "$s: running (pid $(cat "$RUN/$s.pid"))"; else echo "$s: stopped"; fi
  done
  pid_alive "$RUN/nginx.pid" && echo "edge: running on :$EDGE_PORT" || echo "edge: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status" ;;
esac
