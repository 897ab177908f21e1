#!/usr/bin/env bash
# Start or stop a local Redis (Debian's redis-server) with AOF persistence (appendfsync everysec).
# Usage: scripts/redis.sh start|stop|status
# If something already answers on REDIS_PORT, it is used and left alone.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

HOST=127.0.0.1
PORT="${REDIS_PORT:-6379}"
DIR="$VAR/redis"
PID="$DIR/redis.pid"

start() {
  if port_open "$HOST" "$PORT"; then
    pid_alive "$PID" && log "redis already running (ours, pid $(cat "$PID"))" \
      || log "redis: something already listens on $HOST:$PORT; using it"
    return 0
  fi
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p "$DIR"
  redis-server --bind "$HOST" --port "$PORT" --dir "$DIR" \
    --appendonly yes --appendfsync everysec --save "" \
    --daemonize yes --pidfile "$PID" --logfile "$DIR/redis.log"
  wait_port "$HOST" "$PORT" 20 redis
  log "redis listening on $HOST:$PORT (AOF everysec, data in $DIR)"
}

case "${1:-}" in
  start) start ;;
  stop) stop_pid "$PID" redis ;;
  status) port_open "$HOST" "$PORT" && echo "redis: up on $HOST:$PORT" || echo "redis: down" ;;
  *) die "usage: $0 start|stop|status" ;;
esac
