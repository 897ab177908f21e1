#!/usr/bin/env bash
# A local three-node Apache Kafka 4.x cluster in KRaft combined mode (the jars scripts/kafka.sh
# installs from Maven Central), for the cluster fault scenarios: node N listens on
# 127.0.0.1:1909(2N) (clients) and 1909(2N+1) (controller); topics get replication factor 3 and
# min.insync.replicas 2. Data and logs in var/kafka-cluster/node-N.
#
# Node 3 can be cut off from the other two and from the clients (the fault suite's
# `cluster-partition-broker`): started with KAFKA_CLUSTER_PROXY=1 (remembered in the cluster's
# folder), every connection to node 3 and every connection node 3 makes passes through a
# toxiproxy proxy (scripts/toxiproxy.sh, which must run): node 3 advertises its proxy to clients
# and to the others, reaches the others' controllers through proxies of its own (its
# controller.quorum.voters), and replicates through a listener the others advertise only to it
# (FROM3, node 3's inter.broker.listener.name), also proxied. `isolate 3` cuts all of them (no
# byte passes; connections hang, as when packets are dropped); `heal 3` restores them.
# Usage: scripts/kafka-cluster.sh start|stop|status|bootstrap|start-node N|kill-node N|stop-node N
#        |isolate 3|heal 3
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
  if proxied; then proxied_listeners "$n" "$d/server.properties"; fi
}

# The isolatable node 3 (see the top): its proxies, as name:listen:upstream.
ISOLATED=3
from3_port() { echo $((19390 + 2 * $1)); }   # node N's FROM3 listener (only node 3 uses it)
PROXIES=(
  "cluster-to-3:19196:127.0.0.1:$(port 3)"                # clients and nodes 1, 2 -> node 3
  "cluster-to-3-controller:19197:127.0.0.1:$(controller_port 3)"
  "cluster-3-to-1:19292:127.0.0.1:$(from3_port 1)"        # node 3 -> node 1 (replication)
  "cluster-3-to-1-controller:19293:127.0.0.1:$(controller_port 1)"
  "cluster-3-to-2:19294:127.0.0.1:$(from3_port 2)"
  "cluster-3-to-2-controller:19295:127.0.0.1:$(controller_port 2)"
)
proxied() { [[ -f $BASE/proxied ]]; }
toxiproxy_api() { "$ROOT/scripts/toxiproxy.sh" url; }

proxied_listeners() {
  local n=$1 f=$2
  if (( n == ISOLATED )); then
    sed -i -e "s#^listeners=.*#listeners=PLAINTEXT://127.0.0.1:$(port 3),CONTROLLER://127.0.0.1:$(controller_port 3),FROM3://127.0.0.1:$(from3_port 3)#" \
      -e "s#^advertised.listeners=.*#advertised.listeners=PLAINTEXT://127.0.0.1:19196,FROM3://127.0.0.1:$(from3_port 3)#" \
      -e "s#^inter.broker.listener.name=.*#inter.broker.listener.name=FROM3#" \
      -e "s#^controller.quorum.voters=.*#controller.quorum.voters=1@127.0.0.1:19293,2@127.0.0.1:19295,3@127.0.0.1:$(controller_port 3)#" "$f"
  else
    sed -i -e "s#^listeners=.*#listeners=PLAINTEXT://127.0.0.1:$(port "$n"),CONTROLLER://127.0.0.1:$(controller_port "$n"),FROM3://127.0.0.1:$(from3_port "$n")#" \
      -e "s#^advertised.listeners=.*#advertised.listeners=PLAINTEXT://127.0.0.1:$(port "$n"),FROM3://127.0.0.1:$((19290 + 2 * n))#" \
      -e "s#^controller.quorum.voters=.*#controller.quorum.voters=1@127.0.0.1:$(controller_port 1),2@127.0.0.1:$(controller_port 2),3@127.0.0.1:19197#" "$f"
  fi
  sed -i -e "s#^listener.security.protocol.map=.*#listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,FROM3:PLAINTEXT#" "$f"
}

make_proxies() {
  local api entry name listen upstream code
  api=$(toxiproxy_api)
  curl -sf "$api/version" >/dev/null || die "toxiproxy does not answer at $api: start it (scripts/toxiproxy.sh start)"
  for entry in "${PROXIES[@]}"; do
    name=${entry%%:*} entry=${entry#*:} listen=${entry%%:*} upstream=${entry#*:}
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$api/proxies" \
      -d "{\"name\":\"$name\",\"listen\":\"127.0.0.1:$listen\",\"upstream\":\"$upstream\",\"enabled\":true}")
    [[ $code == 201 || $code == 409 ]] || die "toxiproxy: creating $name answered $code"
  done
}

# toxics add|remove: every proxy of node 3 cut (toxiproxy's timeout toxic, both ways) or restored.
toxics() {
  local api entry name stream
  api=$(toxiproxy_api)
  for entry in "${PROXIES[@]}"; do
    name=${entry%%:*}
    for stream in upstream downstream; do
      if [[ $1 == add ]]; then
        curl -sf -X POST "$api/proxies/$name/toxics" \
          -d "{\"name\":\"cut-$stream\",\"type\":\"timeout\",\"stream\":\"$stream\",\"attributes\":{\"timeout\":0}}" >/dev/null \
          || die "toxiproxy: cutting $name ($stream) failed"
      else
        curl -s -o /dev/null -X DELETE "$api/proxies/$name/toxics/cut-$stream"
      fi
    done
  done
}
isolate() { toxics add; log "kafka node 3 cut off from nodes 1 and 2 and from the clients"; }
heal() { toxics remove; log "kafka node 3 reachable again"; }

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
  mkdir -p "$BASE"
  if [[ ${KAFKA_CLUSTER_PROXY:-} == 1 ]]; then touch "$BASE/proxied"; fi
  if proxied; then make_proxies; fi
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

# Node 3 through its proxy when it is isolatable: even the first connection must not go around it.
bootstrap() {
  local n out="" p
  for n in "${NODES[@]}"; do
    p=$(port "$n"); if proxied && (( n == ISOLATED )); then p=19196; fi
    out+="${out:+,}127.0.0.1:$p"
  done
  echo "$out"
}

case "${1:-}" in
  start) start ;;
  stop) for n in "${NODES[@]}"; do stop_pid "$(dir "$n")/kafka.pid" "kafka node $n"; done; rm -f "$BASE/proxied" ;;
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
  isolate | heal)
    [[ ${2:-} == "$ISOLATED" ]] || die "only node $ISOLATED can be cut off"
    proxied || die "the cluster was not started with KAFKA_CLUSTER_PROXY=1: node 3 cannot be cut off"
    "$1" ;;
  *) die "usage: $0 start|stop|status|bootstrap|start-node N|stop-node N|kill-node N|isolate 3|heal 3" ;;
esac
