#!/usr/bin/env bash
# Install (from Maven Central, with mvn) and start or stop a single-node Apache Kafka 4.x broker in
# KRaft mode, run with the machine's Java 17.
# Usage: scripts/kafka.sh install|start|stop|status, or scripts/kafka.sh cluster [start|stop|...]
# for the local three-node cluster (scripts/kafka-cluster.sh).
# If something already listens on KAFKA_PORT, it is used and left alone.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

VERSION="${KAFKA_VERSION:-4.3.1}"
HOST=127.0.0.1
PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
# The cache folder changes with the pom, so a changed dependency list is resolved again.
LIBS="$CACHE/kafka-$VERSION-$(sha1sum "$ROOT/scripts/kafka/pom.xml" | cut -c1-8)/libs"
# Another broker beside the dev one (the fault suite's): its own folder and ports.
DIR="${KAFKA_DIR:-$VAR/kafka}"
PID="$DIR/kafka.pid"
# KAFKA_PROXIED="NAME:LISTEN:ADVERTISED,...": a listener NAME on LISTEN that advertises ADVERTISED,
# a fault proxy's port in front of it. A client that bootstraps through the proxy is told the
# proxy's address for every later connection too, so none of them goes around it.
PROXIED="${KAFKA_PROXIED:-}"

install() {
  if [[ -f "$LIBS/.complete" ]]; then return 0; fi
  command -v java >/dev/null || die "java not found: install a Java 17 JDK (Debian: openjdk-17-jre-headless)"
  command -v mvn >/dev/null || die "mvn not found: install Maven (Debian: maven)"
  log "resolving Apache Kafka $VERSION and its dependencies from Maven Central into $LIBS"
  rm -rf "$LIBS"; mkdir -p "$LIBS"
  mvn -q -B -f "$ROOT/scripts/kafka/pom.xml" -Dkafka.version="$VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIBS" \
    || die "mvn could not resolve org.apache.kafka:kafka_2.13:$VERSION"
  touch "$LIBS/.complete"
}

java_major() { java -version 2>&1 | awk -F'"' '/version/ { split($2, v, "."); print (v[1] == 1 ? v[2] : v[1]) }'; }

JAVA_OPTS=(-Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true
  -Dkafka.logs.dir="$DIR/logs" -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.properties"
  -cp "$LIBS/*")
kafka_java() { java "${JAVA_OPTS[@]}" "$@"; }

start() {
  if port_open "$HOST" "$PORT"; then
    pid_alive "$PID" && log "kafka already running (ours, pid $(cat "$PID"))" \
      || log "kafka: something already listens on $HOST:$PORT; using it"
    return 0
  fi
  install
  (( $(java_major) >= 17 )) || die "Kafka $VERSION needs Java 17 or newer; found $(java -version 2>&1 | head -1)"
  mkdir -p "$DIR/data" "$DIR/logs"
  local listeners="" advertised="" protocols="" name listen adv
  if [[ -n $PROXIED ]]; then
    while IFS=: read -r name listen adv; do
      [[ $name =~ ^[A-Z][A-Z0-9_]*$ && $listen =~ ^[0-9]+$ && $adv =~ ^[0-9]+$ ]] \
        || die "KAFKA_PROXIED: '$name:$listen:$adv' is not NAME:LISTEN_PORT:ADVERTISED_PORT"
      listeners+=",$name://$HOST:$listen"; advertised+=",$name://$HOST:$adv"; protocols+=",$name:PLAINTEXT"
    done < <(tr ',' '\n' <<< "$PROXIED")
  fi
  sed -e "s#@DATA@#$DIR/data#" -e "s#@PORT@#$PORT#g" -e "s#@CONTROLLER_PORT@#$CONTROLLER_PORT#g" \
    -e "s#@EXTRA_LISTENERS@#$listeners#" -e "s#@EXTRA_ADVERTISED@#$advertised#" -e "s#@EXTRA_PROTOCOLS@#$protocols#" \
    "$ROOT/scripts/kafka/server.properties.in" > "$DIR/server.properties"
  if [[ ! -f "$DIR/data/meta.properties" ]]; then
    local cluster_id
    cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid)
    kafka_java kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$DIR/server.properties" \
      > "$DIR/logs/format.log" 2>&1 || { cat "$DIR/logs/format.log" >&2; die "formatting Kafka storage failed"; }
  fi
  [[ -f "$DIR/logs/server.log" ]] && mv "$DIR/logs/server.log" "$DIR/logs/server.log.1"
  log "starting kafka $VERSION on $HOST:$PORT (logs in $DIR/logs)"
  nohup java "${JAVA_OPTS[@]}" kafka.Kafka "$DIR/server.properties" > "$DIR/logs/stdout.log" 2>&1 &
  echo $! > "$PID"
  # After an unclean stop (the fault suite's SIGKILL) the broker recovers every partition's log
  # before it listens: with the thousands of partitions a long-lived dev broker accumulates
  # (every test makes its own topics) that took over a minute here. Allow three.
  local i
  for ((i = 0; i < 1800; i++)); do
    port_open "$HOST" "$PORT" && break
    pid_alive "$PID" || { tail -n 20 "$DIR/logs/stdout.log" >&2; die "kafka exited during start"; }
    sleep 0.1
  done
  port_open "$HOST" "$PORT" || die "kafka did not listen on $HOST:$PORT within 180s (see $DIR/logs)"
  # The port opens before the broker has joined its own quorum: wait for the start-up line.
  for ((i = 0; i < 1800; i++)); do
    grep -q "Kafka Server started" "$DIR/logs/server.log" 2>/dev/null && break
    sleep 0.1
  done
  grep -q "Kafka Server started" "$DIR/logs/server.log" 2>/dev/null \
    || die "kafka did not finish starting within 180s (see $DIR/logs/server.log)"
  log "kafka ready on $HOST:$PORT"
}

case "${1:-}" in
  # The three-node cluster of the cluster fault scenarios: scripts/kafka-cluster.sh.
  cluster) shift; exec "$ROOT/scripts/kafka-cluster.sh" "${@:-start}" ;;
  install) install ;;
  start) start ;;
  stop) stop_pid "$PID" kafka ;;
  status) port_open "$HOST" "$PORT" && echo "kafka: up on $HOST:$PORT" || echo "kafka: down" ;;
  *) die "usage: $0 install|start|stop|status" ;;
esac
