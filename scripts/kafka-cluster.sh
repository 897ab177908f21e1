#!/usr/bin/env bash
# A local three-node Apache Kafka 4.x cluster in KRaft combined mode (the jars scripts/kafka.sh
# installs from Maven Central), for the cluster fault scenarios: node N listens on
# 127.0.0.1:1909(2N) (clients) and 1909(2N+1) (controller); topics get replication factor 3 and
# min.insync.replicas 2. Data and logs in var/kafka-cluster/node-N.
# Usage: scripts/kafka-cluster.sh start|stop|status|bootstrap|start-node N|kill-node N|stop-node N
set -euo pipefail
source "$(dirname "$0")/lib.sh"

VERSION="${KAFKA_VERSION:-4.3.1}"
LIBS="$CACHE/kafka-$VERSION-$(sha1sum "$ROOT/scripts/kafka/pom.xml" | cut -c1-8)/libs"
BASE="$VAR/kafka-cluster"
NODES=(1 2 3)
port() { echo $((19090 + 2 * $1)); }
controller_port() { echo $((19091 + 2 * $1)); }
dir() { echo "$BASE/node-$1"; }

# java_args N: JAVA_ARGS set to java's options for node N (its log folder, the Kafka jars).
java_args() {
  JAVA_ARGS=(-Xms128m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true -Dkafka.logs.dir="$(dir "$1")/logs"
    -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.properties" -cp "$LIBS/*")
}
kafka_java() { java_args "$1"; shift; java "${JAVA_ARGS[@]}" "$@"; }

configure() {
  local n=$1 d; d=$(dir "$n")
  mkdir -p "$d/data" "$d/logs"
  sed -e "s#@NODE@#$n#" -e "s#@DATA@#$d/data#" -e "s#@PORT@#$(port "$n")#g" -e "s#@CONTROLLER_PORT@#$(controller_port "$n")#g" \
    "$ROOT/scripts/kafka/cluster.properties.in" > "$d/server.properties"
}

start_node() {
  local n=$1 d; d=$(dir "$n")
  if pid_alive "$d/kafka.pid"; then return 0; fi
  configure "$n"
  [[ -f "$d/logs/server.log" ]] && mv "$d/logs/server.log" "$d/logs/server.log.1"
  java_args "$n"
  nohup java "${JAVA_ARGS[@]}" kafka.Kafka "$d/server.properties" > "$d/logs/stdout.log" 2>&1 &
  echo $! > "$d/kafka.pid"
}

wait_node() {
  local n=$1 d i; d=$(dir "$n")
  for ((i = 0; i < 900; i++)); do
    grep -q "Kafka Server started" "$d/logs/server.log" 2>/dev/null && port_open 127.0.0.1 "$(port "$n")" && return 0
    pid_alive "$d/kafka.pid" || { tail -n 20 "$d/logs/stdout.log" >&2; die "kafka node $n exited during start"; }
    sleep 0.1
  done
  die "kafka node $n did not start within 90 s (see $d/logs/server.log)"
}

start() {
  "$ROOT/scripts/kafka.sh" install
  local n
  if [[ ! -f "$(dir 1)/data/meta.properties" ]]; then
    for n in "${NODES[@]}"; do configure "$n"; done
    local id; id=$(kafka_java 1 kafka.tools.StorageTool random-uuid)
    for n in "${NODES[@]}"; do
      kafka_java "$n" kafka.tools.StorageTool format -t "$id" -c "$(dir "$n")/server.properties" \
        > "$(dir "$n")/logs/format.log" 2>&1 || { cat "$(dir "$n")/logs/format.log" >&2; die "formatting node $n failed"; }
    done
  fi
  log "starting a three-node kafka $VERSION cluster on $(bootstrap) (logs in $BASE/node-N/logs)"
  for n in "${NODES[@]}"; do start_node "$n"; done
  for n in "${NODES[@]}"; do wait_node "$n"; done
  log "kafka cluster ready on $(bootstrap)"
}

bootstrap() { local n out=""; for n in "${NODES[@]}"; do out+="${out:+,}127.0.0.1:$(port "$n")"; done; echo "$out"; }

case "${1:-}" in
  start) start ;;
  stop) for n in "${NODES[@]}"; do stop_pid "$(dir "$n")/kafka.pid" "kafka node $n"; done ;;
  status) for n in "${NODES[@]}"; do pid_alive "$(dir "$n")/kafka.pid" && echo "node $n: up on $(port "$n")" || echo "node $n: down"; done ;;
  bootstrap) bootstrap ;;
  start-node) start_node "${2:?node}"; wait_node "$2" ;;
  stop-node) stop_pid "$(dir "${2:?node}")/kafka.pid" "kafka node $2" ;;
  kill-node)
    d=$(dir "${2:?node}")
    if pid_alive "$d/kafka.pid"; then
      pid=$(cat "$d/kafka.pid"); log "SIGKILL to kafka node $2 (pid $pid)"; kill -9 "$pid"
      for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$d/kafka.pid" ;;
  *) die "usage: $0 start|stop|status|bootstrap|start-node N|stop-node N|kill-node N" ;;
esac
