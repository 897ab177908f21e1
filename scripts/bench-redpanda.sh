#!/usr/bin/env bash
# Step 5 of the benchmark: Redpanda Connect doing the gateway's job (http_server input -> kafka
# output, acks=all) on the same broker, driven by the same load generator. Built here, from the
# Go module proxy, as a slim binary holding only the components needed; its source is written at
# run time into var/ (nothing of it is committed). Prints one line: what happened.
# Usage: scripts/bench-redpanda.sh OUT RUN SECONDS EVENT_SIZE
set -uo pipefail
source "$(dirname "$0")/lib.sh"
OUT=$1; RUN=$2; SECS=$3; SIZE=$4
VERSION=${REDPANDA_CONNECT_VERSION:-v4.31.0}
DIR="$VAR/redpanda-connect"
BIN="$DIR/rpc-slim-$VERSION"
LG="${CARGO_TARGET_DIR:-$ROOT/target}/release/metastream-loadgen"

if [[ ! -x $BIN ]]; then
  command -v go >/dev/null || { echo "not run: Go is not installed"; exit 0; }
  mkdir -p "$DIR/src"
  cat > "$DIR/src/main.go" <<'GO'
package main

import (
	"context"

	"github.com/redpanda-data/benthos/v4/public/service"

	_ "github.com/redpanda-data/connect/v4/public/components/io"
	_ "github.com/redpanda-data/connect/v4/public/components/kafka"
	_ "github.com/redpanda-data/connect/v4/public/components/pure"
)

func main() { service.RunCLI(context.Background()) }
GO
  printf 'module metastream.dev/redpanda-connect-slim\n\ngo 1.22\n' > "$DIR/src/go.mod"
  if ! (cd "$DIR/src" && GOFLAGS=-mod=mod timeout 1200 go get "github.com/redpanda-data/connect/v4@$VERSION" >"$DIR/build.log" 2>&1 \
        && GOFLAGS=-mod=mod timeout 1200 go build -o "$BIN" . >>"$DIR/build.log" 2>&1); then
    echo "not run: building Redpanda Connect $VERSION failed ($(tail -n 1 "$DIR/build.log" | cut -c1-160)); see $DIR/build.log"
    exit 0
  fi
fi
PORT=18195
"$LG" --create-topic --topic "$RUN.redpanda" >/dev/null 2>&1 || { echo "not run: could not create the topic $RUN.redpanda"; exit 0; }
cat > "$DIR/config.yaml" <<YAML
http:
  enabled: false
input:
  http_server:
    address: 127.0.0.1:$PORT
    path: /ingest
output:
  kafka_franz:
    seed_brokers: [ "127.0.0.1:9092" ]
    topic: $RUN.redpanda
    key: '\${! json("source") }:\${! json("id") }'
    max_in_flight: 256
logger:
  level: WARN
YAML
"$BIN" -c "$DIR/config.yaml" >"$DIR/run.log" 2>&1 &
RPID=$!
trap 'kill $RPID 2>/dev/null' EXIT
wait_port 127.0.0.1 "$PORT" 30 redpanda-connect >/dev/null 2>&1 || { echo "not run: Redpanda Connect did not start (see $DIR/run.log)"; exit 0; }
"$LG" --label redpanda-connect --mode http --url "http://127.0.0.1:$PORT" --batch 1 --clients 64 --seconds "$SECS" \
  --event-size "$SIZE" --json "$OUT/redpanda-connect.json" --pid "redpanda-connect=$RPID" >> "$OUT/raw.txt" 2>&1
echo "ran Redpanda Connect $VERSION (http_server -> kafka_franz, single events, 64 clients)"
