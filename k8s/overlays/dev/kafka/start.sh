#!/bin/sh
# Starts the single-node KRaft broker of overlays/dev and deploy/docker-compose.yml from the
# apache/kafka image, without the image's own start scripts (they write under /etc/kafka and
# /opt/kafka, which a read-only root filesystem forbids): formats the data volume once, then runs
# the broker with server.properties from this directory. Logs go to stdout and $LOG_DIR (/tmp).
set -eu
here=$(dirname "$0")
: "${CLUSTER_ID:?set CLUSTER_ID (22 characters of base64url, e.g. from kafka-storage.sh random-uuid)}"
export LOG_DIR="${LOG_DIR:-/tmp/kafka-logs}"
data=$(sed -n 's/^log\.dirs=//p' "$here/server.properties")
if [ ! -f "$data/meta.properties" ]; then
  echo "[kafka] formatting $data (cluster $CLUSTER_ID)"
  /opt/kafka/bin/kafka-storage.sh format --standalone -t "$CLUSTER_ID" -c "$here/server.properties"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$here/server.properties"
