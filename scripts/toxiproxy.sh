#!/usr/bin/env bash
# Build (from the Go module proxy) and start or stop toxiproxy, the TCP fault proxy the fault
# suite's network scenarios put between every service and Kafka and Redis (latency, cut links,
# bandwidth limits, connections reset). Its HTTP API listens on 127.0.0.1:$TOXIPROXY_PORT (8474);
# the proxies themselves are made by the suite (crates/faults/src/stack/proxy.rs).
# Usage: scripts/toxiproxy.sh install|start|stop|status|url
set -euo pipefail
source "$(dirname "$0")/lib.sh"

VERSION=v2.12.0
MODULE=github.com/Shopify/toxiproxy/v2
HOST=127.0.0.1
PORT="${TOXIPROXY_PORT:-8474}"
BIN="$CACHE/toxiproxy-$VERSION/bin"
DIR="$VAR/toxiproxy"
PID="$DIR/toxiproxy.pid"

install() {
  [[ -x $BIN/toxiproxy-server ]] && return 0
  command -v go >/dev/null || die "Go is needed to build toxiproxy $VERSION from the Go module proxy (Debian: golang)"
  log "building toxiproxy $VERSION from the Go module proxy into $BIN"
  mkdir -p "$BIN"
  (cd /tmp && GOBIN="$BIN" GOFLAGS=-mod=mod go install "$MODULE/cmd/server@$VERSION") \
    || die "could not build $MODULE/cmd/server@$VERSION"
  mv "$BIN/server" "$BIN/toxiproxy-server"
}

start() {
  if pid_alive "$PID"; then log "toxiproxy already running (pid $(cat "$PID"))"; return 0; fi
  port_open "$HOST" "$PORT" && die "something else listens on $HOST:$PORT (set TOXIPROXY_PORT)"
  install
  mkdir -p "$DIR"
  log "starting toxiproxy $VERSION, API on $HOST:$PORT (log $DIR/toxiproxy.log)"
  nohup "$BIN/toxiproxy-server" -host "$HOST" -port "$PORT" > "$DIR/toxiproxy.log" 2>&1 &
  echo $! > "$PID"
  wait_port "$HOST" "$PORT" 10 toxiproxy
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop_pid "$PID" toxiproxy ;;
  status) pid_alive "$PID" && echo "toxiproxy: up on $HOST:$PORT" || echo "toxiproxy: down" ;;
  url) echo "http://$HOST:$PORT" ;;
  *) die "usage: $0 install|start|stop|status|url" ;;
esac
