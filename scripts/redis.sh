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
    command -v redis-cli >/dev/null && wait_ping
    return 0
  fi
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p "$DIR"
  redis-server --bind "$HOST" --port "$PORT" --dir "$DIR" \
    --appendonly yes --appendfsync everysec --save "" \
    --daemonize yes --pidfile "$PID" --logfile "$DIR/redis.log"
  wait_port "$HOST" "$PORT" 20 redis
  wait_ping
  log "redis ready on $HOST:$PORT (AOF everysec, data in $DIR)"
}

# Redis listens before it has loaded its AOF, answering LOADING meanwhile: ready means PONG.
wait_ping() {
  local i reply=""
  for ((i = 0; i < 1200; i++)); do
    reply=$(redis-cli -h "$HOST" -p "$PORT" ping 2>/dev/null || true)
    [[ $reply == PONG ]] && return 0
    sleep 0.1
  done
  die "redis on $HOST:$PORT did not answer PING within 120s (last answer: ${reply:-none}; see $DIR/redis.log)"
}

case "${1:-}" in
  start) start ;;
  stop) stop_pid "$PID" redis ;;
  status) port_open "$HOST" "$PORT" && echo "redis: up on $HOST:$PORT" || echo "redis: down" ;;
  *) die "usage: $0 start|stop|status" ;;
esac
