#!/usr/bin/env bash
# Start or stop a local Redis (Debian's redis-server) with AOF persistence (appendfsync everysec).
# Usage: scripts/redis.sh start|stop|status
# If something already answers on REDIS_PORT, it is used and left alone.
#
# Or a local Redis Cluster of 3 masters and 3 replicas on 127.0.0.1:7001-7006 (AOF everysec,
# cluster-node-timeout 2 s, so a dead master's replica takes over within a few seconds):
#   scripts/redis.sh cluster                 start it (created on first start; reused after)
#   scripts/redis.sh cluster-stop            stop every node
#   scripts/redis.sh cluster-reset           stop every node and delete the cluster's data
#   scripts/redis.sh cluster-status          the nodes and their roles
#   scripts/redis.sh cluster-urls            the seed URLs, for METASTREAM__REDIS__URLS
#   scripts/redis.sh cluster-node-start PORT start one node again (after a fault test killed it)
# Data, logs and pid files in var/redis-cluster/PORT.
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

# wait_ping [PORT] [LOG]: Redis listens before it has loaded its AOF, answering LOADING
# meanwhile: ready means PONG.
wait_ping() {
  local port=${1:-$PORT} logfile=${2:-$DIR/redis.log} i reply=""
  for ((i = 0; i < 1200; i++)); do
    reply=$(redis-cli -h "$HOST" -p "$port" ping 2>/dev/null || true)
    [[ $reply == PONG ]] && return 0
    sleep 0.1
  done
  die "redis on $HOST:$port did not answer PING within 120s (last answer: ${reply:-none}; see $logfile)"
}

CLUSTER_DIR="$VAR/redis-cluster"
CLUSTER_PORTS=(7001 7002 7003 7004 7005 7006)

cluster_node_start() {
  local port=$1 dir="$CLUSTER_DIR/$1"
  pid_alive "$dir/redis.pid" && return 0
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p "$dir"
  redis-server --bind "$HOST" --port "$port" --dir "$dir" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
    --appendonly yes --appendfsync everysec --save "" \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
  wait_port "$HOST" "$port" 20 "redis cluster node $port"
  wait_ping "$port" "$dir/redis.log"
}

# cluster_ok PORT: the node sees every slot served.
cluster_ok() { redis-cli -h "$HOST" -p "$1" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; }

# cluster_synced_replicas: how many nodes are replicas whose link to their master is up.
cluster_synced_replicas() {
  local port n=0
  for port in "${CLUSTER_PORTS[@]}"; do
    redis-cli -h "$HOST" -p "$port" info replication 2>/dev/null | tr -d '\r' | grep -q '^master_link_status:up' && n=$((n + 1))
  done
  echo "$n"
}

cluster_start() {
  local port i nodes=()
  for port in "${CLUSTER_PORTS[@]}"; do cluster_node_start "$port"; nodes+=("$HOST:$port"); done
  # Created once (its nodes.conf names its slots); after a restart the nodes find each other.
  if ! grep -q 'myself' "$CLUSTER_DIR/${CLUSTER_PORTS[0]}/nodes.conf" 2>/dev/null \
    || ! redis-cli -h "$HOST" -p "${CLUSTER_PORTS[0]}" cluster info | grep -q '^cluster_slots_assigned:16384'; then
    log "creating the redis cluster (3 masters, 3 replicas)"
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$CLUSTER_DIR/create.log" 2>&1 \
      || { cat "$CLUSTER_DIR/create.log" >&2; die "redis --cluster create failed"; }
  fi
  for ((i = 0; i < 600; i++)); do
    local all=1
    for port in "${CLUSTER_PORTS[@]}"; do cluster_ok "$port" || { all=0; break; }; done
    # Ready: every slot served, and each master has its replica, in sync (a failover needs one).
    if ((all)) && [[ $(cluster_synced_replicas) -eq 3 ]] \
      && redis-cli -h "$HOST" -p "${CLUSTER_PORTS[0]}" --cluster check "$HOST:${CLUSTER_PORTS[0]}" >/dev/null 2>&1; then
      log "redis cluster ready on $HOST:${CLUSTER_PORTS[0]}-${CLUSTER_PORTS[-1]} (3 masters + 3 replicas, AOF everysec, data in $CLUSTER_DIR)"
      return 0
    fi
    sleep 0.1
  done
  redis-cli -h "$HOST" -p "${CLUSTER_PORTS[0]}" cluster nodes >&2 || true
  die "the redis cluster did not become ready within 60 s (scripts/redis.sh cluster-reset starts it over, empty)"
}

cluster_stop() {
  local port
  for port in "${CLUSTER_PORTS[@]}"; do stop_pid "$CLUSTER_DIR/$port/redis.pid" "redis cluster node $port"; done
}

cluster_urls() {
  local port urls=()
  for port in "${CLUSTER_PORTS[@]}"; do urls+=("redis://$HOST:$port"); done
  (IFS=,; echo "${urls[*]}")
}

case "${1:-}" in
  start) start ;;
  stop) stop_pid "$PID" redis ;;
  status) port_open "$HOST" "$PORT" && echo "redis: up on $HOST:$PORT" || echo "redis: down" ;;
  cluster) cluster_start ;;
  cluster-stop) cluster_stop ;;
  cluster-reset) cluster_stop; rm -rf "$CLUSTER_DIR"; log "redis cluster data deleted" ;;
  cluster-status) redis-cli -h "$HOST" -p "${CLUSTER_PORTS[0]}" cluster nodes 2>/dev/null || echo "redis cluster: down" ;;
  cluster-urls) cluster_urls ;;
  cluster-node-start) [[ -n ${2:-} ]] || die "usage: $0 cluster-node-start PORT"; cluster_node_start "$2" ;;
  *) die "usage: $0 start|stop|status|cluster|cluster-stop|cluster-reset|cluster-status|cluster-urls|cluster-node-start PORT" ;;
esac
