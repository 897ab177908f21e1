#!/bin/sh
# Creates metastream's four Kafka topics if they do not exist yet, with the partition count and
# replication factor of metastream's own configuration, read in the services' order:
#   $METASTREAM_CONFIG_DIR/default.yaml, then $METASTREAM_CONFIG_DIR/$METASTREAM_ENV.yaml, then the
#   environment (METASTREAM__KAFKA__PARTITIONS, METASTREAM__KAFKA__TOPICS__INGEST, ...).
# Runs in the apache/kafka image (POSIX sh, awk, /opt/kafka/bin/kafka-topics.sh):
#   - Kubernetes: the Job metastream-create-topics (k8s/base/topics/job.yaml);
#   - docker compose: the service create-topics (deploy/docker-compose.yml).
# Kafka client security comes from the services' own librdkafka variables
# (METASTREAM__KAFKA__PROPERTIES__SECURITY_PROTOCOL, ..._SASL_MECHANISMS, ..._SASL_USERNAME,
# ..._SASL_PASSWORD, ..._SSL_CA_LOCATION), translated to the Java client's; a complete Java client
# properties file at $KAFKA_ADMIN_CONFIG replaces that translation.
# Idempotent: an existing topic is left as it is (a topic with fewer partitions than configured is
# reported, not altered: adding partitions moves keys between partitions).
set -eu

CONFIG_DIR="${METASTREAM_CONFIG_DIR:-/app/config}"
KAFKA_BIN="${KAFKA_BIN:-/opt/kafka/bin}"
WAIT_SECONDS="${WAIT_SECONDS:-180}"
# The Kafka scripts write their own logs under LOG_DIR; keep it off a read-only root filesystem.
export LOG_DIR="${LOG_DIR:-/tmp/kafka-logs}"

say() { printf '[create-topics] %s\n' "$*"; }
die() { printf '[create-topics] error: %s\n' "$*" >&2; exit 1; }

# yaml_get FILE DOTTED.KEY: the scalar at that key of a block-style YAML file indented by two
# spaces (config/*.yaml), unquoted; nothing when the file or the key is missing.
yaml_get() {
  [ -f "$1" ] || return 0
  awk -v path="$2" '
    BEGIN { n = split(path, want, ".") }
    /^[ \t]*#/ || /^[ \t]*$/ { next }
    {
      line = $0
      indent = match(line, /[^ ]/) - 1
      depth = int(indent / 2) + 1
      sub(/^ +/, "", line)
      if (line !~ /^[A-Za-z0-9_.-]+:/) next
      key = line; sub(/:.*/, "", key)
      val = line; sub(/^[^:]*:[ \t]*/, "", val)
      stack[depth] = key
      for (i = depth + 1; i <= 16; i++) stack[i] = ""
      if (depth != n) next
      for (i = 1; i <= n; i++) if (stack[i] != want[i]) next
      sub(/[ \t]+#.*$/, "", val)
      if (val ~ /^".*"$/ || val ~ /^\047.*\047$/) val = substr(val, 2, length(val) - 2)
      print val
      exit
    }' "$1"
}

# setting DOTTED.KEY: the effective value, environment first, then the env file, then the defaults.
setting() {
  var="METASTREAM__$(printf '%s' "$1" | tr 'a-z' 'A-Z' | sed 's/\./__/g')"
  eval "value=\${$var:-}"
  if [ -z "$value" ] && [ -n "${METASTREAM_ENV:-}" ]; then
    value=$(yaml_get "$CONFIG_DIR/$METASTREAM_ENV.yaml" "$1")
  fi
  if [ -z "$value" ]; then
    value=$(yaml_get "$CONFIG_DIR/default.yaml" "$1")
  fi
  printf '%s' "$value"
}

[ -f "$CONFIG_DIR/default.yaml" ] || die "$CONFIG_DIR/default.yaml not found (METASTREAM_CONFIG_DIR)"

bootstrap=$(setting kafka.bootstrap_servers)
partitions=$(setting kafka.partitions)
replication=$(setting kafka.replication_factor)
topics=""
for t in ingest processed output dead_letter; do
  name=$(setting "kafka.topics.$t")
  [ -n "$name" ] || die "kafka.topics.$t is not set"
  topics="$topics $name"
done
case "$partitions" in '' | *[!0-9]*) die "kafka.partitions is not a number: '$partitions'" ;; esac
case "$replication" in '' | *[!0-9]*) die "kafka.replication_factor is not a number: '$replication'" ;; esac
[ -n "$bootstrap" ] || die "kafka.bootstrap_servers is not set"

# Java client settings for the admin calls.
client_config=""
if [ -n "${KAFKA_ADMIN_CONFIG:-}" ] && [ -f "$KAFKA_ADMIN_CONFIG" ]; then
  client_config="$KAFKA_ADMIN_CONFIG"
  say "using the Kafka client properties in $client_config"
elif [ -n "${METASTREAM__KAFKA__PROPERTIES__SECURITY_PROTOCOL:-}" ]; then
  client_config="${TMPDIR:-/tmp}/metastream-kafka-admin.properties"
  protocol=$(printf '%s' "$METASTREAM__KAFKA__PROPERTIES__SECURITY_PROTOCOL" | tr 'a-z' 'A-Z')
  mechanism=$(printf '%s' "${METASTREAM__KAFKA__PROPERTIES__SASL_MECHANISMS:-${METASTREAM__KAFKA__PROPERTIES__SASL_MECHANISM:-PLAIN}}" | tr 'a-z' 'A-Z')
  umask 077
  {
    echo "security.protocol=$protocol"
    case "$protocol" in
      SASL_*)
        echo "sasl.mechanism=$mechanism"
        case "$mechanism" in
          PLAIN) module=org.apache.kafka.common.security.plain.PlainLoginModule ;;
          SCRAM-SHA-256 | SCRAM-SHA-512) module=org.apache.kafka.common.security.scram.ScramLoginModule ;;
          *) die "sasl.mechanisms $mechanism: set KAFKA_ADMIN_CONFIG to a Java client properties file" ;;
        esac
        user="${METASTREAM__KAFKA__PROPERTIES__SASL_USERNAME:-}"
        pass="${METASTREAM__KAFKA__PROPERTIES__SASL_PASSWORD:-}"
        echo "sasl.jaas.config=$module required username=\"$user\" password=\"$pass\";"
        ;;
    esac
    if [ -n "${METASTREAM__KAFKA__PROPERTIES__SSL_CA_LOCATION:-}" ]; then
      echo "ssl.truststore.type=PEM"
      echo "ssl.truststore.location=$METASTREAM__KAFKA__PROPERTIES__SSL_CA_LOCATION"
    fi
  } > "$client_config"
  case "$protocol" in
    SASL_*) say "Kafka client: security.protocol=$protocol, sasl.mechanism=$mechanism" ;;
    *) say "Kafka client: security.protocol=$protocol" ;;
  esac
fi

kafka_topics() {
  if [ -n "$client_config" ]; then
    "$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$bootstrap" --command-config "$client_config" "$@"
  else
    "$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$bootstrap" "$@"
  fi
}

say "bootstrap $bootstrap; topics:$topics; $partitions partitions, replication factor $replication"

# Wait for the broker (it may still be starting next to us).
waited=0
until kafka_topics --list > /dev/null 2>&1; do
  [ "$waited" -lt "$WAIT_SECONDS" ] || die "Kafka at $bootstrap did not answer within ${WAIT_SECONDS}s"
  say "waiting for Kafka at $bootstrap"
  sleep 5
  waited=$((waited + 5))
done

for topic in $topics; do
  kafka_topics --create --if-not-exists --topic "$topic" \
    --partitions "$partitions" --replication-factor "$replication"
done

# Report what exists, and warn about topics created earlier with fewer partitions.
status=0
for topic in $topics; do
  count=$(kafka_topics --describe --topic "$topic" | awk '
    { for (i = 1; i < NF; i++) if ($i == "PartitionCount:") { print $(i + 1); exit } }')
  case "$count" in '' | *[!0-9]*) say "$topic: not found after creation"; status=1; continue ;; esac
  if [ "$count" -lt "$partitions" ]; then
    say "WARNING: $topic has $count partitions, fewer than kafka.partitions=$partitions;" \
      "transformers beyond $count replicas will idle (kafka-topics.sh --alter --partitions adds some)"
  else
    say "$topic: $count partitions"
  fi
done
exit "$status"
