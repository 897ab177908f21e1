#!/usr/bin/env bash
# metastream's image (deploy/Dockerfile), built and run for real on this machine, with no image
# registry: Debian's docker.io engine, base images made here with debootstrap (Debian bookworm) and
# `docker import`, and the machine's own Rust toolchain in the build stage.
#   scripts/image.sh test     the whole check (`make test-image`): start the engine, make the bases,
#                             build the image, run the four services from it against the host's
#                             Kafka and Redis, send the prototype's two calls; ends with
#                             "image: N passed, M failed". When dockerd cannot start, it fails
#                             naming why; only with METASTREAM_SKIP_IMAGE=1 set on purpose (a
#                             machine that cannot run an engine) does it skip, saying so in a
#                             banner and in its summary line.
#   scripts/image.sh start|stop|status   the engine alone (dockerd; stop: only one this script started)
#   scripts/image.sh bases    the two base images (made once, then reused)
#   scripts/image.sh build    bases, then the image, tagged metastream:local
# The engine: `dockerd --bridge=none --iptables=false`, its own socket and config; every build and
# container uses the host's network (--network host), so no bridge exists and every connection stays
# on loopback. Images, layers and the build cache live in $CACHE/docker (outside the work tree, like
# Kafka's jars): the bases and the dependency layer (cargo-chef) survive between runs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DATA_ROOT="${METASTREAM_DOCKER_DATA:-$CACHE/docker}"
# The socket, pid file and exec root: a short path (unix sockets are limited to 108 bytes).
ENGINE_RUN="${METASTREAM_DOCKER_RUN:-/run/metastream-docker}"
SOCK="$ENGINE_RUN/docker.sock"
ENGINE_PID="$ENGINE_RUN/dockerd.pid"
OURS="$ENGINE_RUN/started-by-metastream"
WORK="$VAR/image"
LOGS="$VAR/log"
ENGINE_LOG="$LOGS/dockerd.log"

DOCKERFILE="$ROOT/deploy/Dockerfile"
RELEASE=$(sed -n 's/^ARG DEBIAN_RELEASE=//p' "$DOCKERFILE")
RUST_WANT=$(sed -n 's/^ARG RUST_VERSION=//p' "$DOCKERFILE")
IMAGE="${IMAGE_TEST_TAG:-metastream:local}"
# What the Dockerfile's toolchain stage installs with apt-get, already in the base (the stage's
# apt-get then finds nothing to do): the C toolchain, OpenSSL and zlib headers for librdkafka
# (rdkafka's bundled build, with ssl) and openssl-sys.
TOOLCHAIN_PKGS="gcc,g++,make,pkg-config,libssl-dev,zlib1g-dev,ca-certificates"
# What the binaries link beyond glibc (libssl3; libz is copied in by the Dockerfile), as the
# distroless cc base has them.
RUNTIME_PKGS="libssl3,ca-certificates"

# The docker client of the docker.io package (same API as its dockerd), on our socket.
docker_cli() {
  local cli=/usr/bin/docker
  [[ -x $cli ]] || cli=$(command -v docker)
  DOCKER_HOST="unix://$SOCK" DOCKER_BUILDKIT=0 "$cli" "$@"
}
engine_up() { [[ -S $SOCK ]] && docker_cli version >/dev/null 2>&1; }

# ---- the engine ------------------------------------------------------------------------------
# engine_start: sets ENGINE_STARTED=1 when it started dockerd; on failure returns 1 with the reason
# in ENGINE_ERROR (the caller decides whether that skips or fails).
ENGINE_STARTED=0
ENGINE_ERROR=""
engine_start() {
  if engine_up; then log "docker engine already running on $SOCK"; return 0; fi
  if ! command -v dockerd >/dev/null; then
    if ! (apt_install docker.io) || ! command -v dockerd >/dev/null; then
      ENGINE_ERROR="Debian's docker.io could not be installed (apt-get install docker.io failed)"; return 1
    fi
  fi
  mkdir -p "$ENGINE_RUN" "$DATA_ROOT" "$LOGS"
  # Its own (empty) daemon.json: nothing configured for another engine applies to this one.
  echo '{}' > "$ENGINE_RUN/daemon.json"
  local driver
  for driver in overlay2 vfs; do
    # vfs copies every layer whole: used only where the kernel refuses overlay.
    [[ $driver == vfs ]] && log "dockerd did not start with overlay2; trying --storage-driver vfs"
    log "starting dockerd (data in $DATA_ROOT, socket $SOCK, storage $driver, log $ENGINE_LOG)"
    rm -f "$SOCK" "$ENGINE_PID"
    local logged; logged=$(stat -c %s "$ENGINE_LOG" 2>/dev/null || echo 0)
    dockerd --config-file "$ENGINE_RUN/daemon.json" --data-root "$DATA_ROOT" \
      --exec-root "$ENGINE_RUN/exec" --pidfile "$ENGINE_PID" -H "unix://$SOCK" \
      --bridge=none --iptables=false --ip-forward=false --ip-masq=false --storage-driver "$driver" \
      >> "$ENGINE_LOG" 2>&1 < /dev/null &
    local pid=$! i
    for ((i = 0; i < 600; i++)); do
      if engine_up; then
        echo "$pid" > "$OURS"; ENGINE_STARTED=1
        log "docker engine ready ($(docker_cli version -f '{{.Server.Version}}'), storage $driver)"
        return 0
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    # The reason: this attempt's last error lines.
    ENGINE_ERROR="dockerd ($driver) exited or did not answer within 60 s: $(tail -c +$((logged + 1)) "$ENGINE_LOG" \
      | grep -iE 'level=(error|fatal)|failed' | tail -n 2 | tr '\n' ' ')"
    # Only a storage problem is worth a second try with vfs.
    grep -qiE 'overlay|storage|graphdriver' <<<"$ENGINE_ERROR" || return 1
  done
  return 1
}

# engine_stop: stops dockerd if this script started it (the pid it recorded); leaves others alone.
engine_stop() {
  [[ -f $OURS ]] || return 0
  local pid; pid=$(cat "$OURS")
  if [[ -f $ENGINE_PID && $(cat "$ENGINE_PID") == "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    log "stopping dockerd (pid $pid)"
    kill "$pid" 2>/dev/null || true
    local i; for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    # dockerd leaves its host network namespace mounted under the exec root.
    unmount_under "$ENGINE_RUN"
  fi
  rm -f "$OURS"
}

# ---- the base images -------------------------------------------------------------------------
# The Debian mirror the host's apt uses (debootstrap's own default where none is found).
mirror() {
  local m
  m=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [[ -n $m ]] || m=$(awk '$1 == "deb" && $3 ~ /^[a-z]+$/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
  echo "$m"
}

# unmount_under DIR: whatever debootstrap left mounted inside DIR (an interrupted run).
unmount_under() {
  local dir=$1
  awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do umount -l "$m" || true; done
}

# bootstrap DIR PACKAGES: a minbase Debian root file system with PACKAGES, in DIR.
bootstrap() {
  local dir=$1 pkgs=$2
  command -v debootstrap >/dev/null || apt_install debootstrap
  # A mirror's hiccup should not fail the run: up to three attempts; the packages already
  # downloaded stay in the cache directory.
  local attempt
  for attempt in 1 2 3; do
    unmount_under "$dir"; rm -rf --one-file-system "$dir"; mkdir -p "$dir" "$WORK/debs"
    log "debootstrap $RELEASE (minbase + $pkgs) into $dir"
    if debootstrap --variant=minbase --include="$pkgs" --cache-dir="$WORK/debs" "$RELEASE" "$dir" $(mirror) \
        > "$WORK/debootstrap.log" 2>&1; then
      break
    fi
    tail -n 30 "$WORK/debootstrap.log" >&2
    [[ -f $dir/debootstrap/debootstrap.log ]] && tail -n 30 "$dir/debootstrap/debootstrap.log" >&2
    unmount_under "$dir"
    (( attempt < 3 )) || die "debootstrap of $RELEASE failed three times (log: $WORK/debootstrap.log)"
    log "debootstrap failed (attempt $attempt of 3); trying again in 15 s"
    sleep 15
  done
  unmount_under "$dir"
  # What an image does not need: package lists and caches, documentation.
  rm -rf "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* \
    "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/*
}

# import DIR TAG CHANGE...: DIR as the image TAG (docker import, with Dockerfile CHANGEs), then DIR removed.
import() {
  local dir=$1 tag=$2; shift 2
  local changes=() c
  for c in "$@"; do changes+=(--change "$c"); done
  log "importing $dir as $tag"
  tar -C "$dir" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . \
    | docker_cli import "${changes[@]}" --message "made by scripts/image.sh" - "$tag" >/dev/null \
    || die "docker import of $tag failed"
  rm -rf --one-file-system "$dir"
}

have_image() { docker_cli image inspect "$1" >/dev/null 2>&1; }

# drop_other_tags TAG: removes the images of TAG's repository with another tag (bases made of an
# earlier package list or toolchain).
drop_other_tags() {
  local repo=${1%:*} old
  for old in $(docker_cli image ls --format '{{.Repository}}:{{.Tag}}' "$repo"); do
    [[ $old == "$1" ]] || docker_cli image rm "$old" >/dev/null 2>&1 || true
  done
}

# The tags name what they are made of: a change to the package lists or the toolchain makes a new one.
base_tags() {
  command -v rustc >/dev/null || die "rustc not found: the build stage's toolchain is the machine's (rustup)"
  RUSTC_VERSION=$(rustc --version | awk '{ print $2 }')
  [[ $RUSTC_VERSION == "$RUST_WANT" || $RUSTC_VERSION == "$RUST_WANT".* ]] \
    || die "deploy/Dockerfile builds with Rust $RUST_WANT; this machine's rustc is $RUSTC_VERSION"
  local key
  key=$( { echo "$RELEASE $TOOLCHAIN_PKGS"; rustc -vV; cat /usr/local/share/ca-certificates/*.crt 2>/dev/null; } \
    | sha1sum | cut -c1-10)
  TOOLCHAIN_TAG="metastream-base/toolchain:$RELEASE-rust$RUSTC_VERSION-$key"
  key=$(echo "$RELEASE $RUNTIME_PKGS" | sha1sum | cut -c1-10)
  RUNTIME_TAG="metastream-base/runtime:$RELEASE-$key"
}

bases() {
  base_tags
  local t0=$SECONDS
  if have_image "$TOOLCHAIN_TAG"; then
    log "toolchain base $TOOLCHAIN_TAG: made before, reused"
  else
    local dir="$WORK/rootfs-toolchain" sysroot
    bootstrap "$dir" "$TOOLCHAIN_PKGS"
    # The machine's Rust toolchain (rustup's, without its documentation), as the rust image lays it
    # out: the toolchain in /usr/local/rust, CARGO_HOME /usr/local/cargo.
    sysroot=$(rustc --print sysroot)
    log "copying the machine's Rust $RUSTC_VERSION ($sysroot) into the toolchain base"
    mkdir -p "$dir/usr/local/rust" "$dir/usr/local/cargo/bin"
    local part
    for part in bin lib libexec etc; do
      [[ -e $sysroot/$part ]] && cp -a "$sysroot/$part" "$dir/usr/local/rust/"
    done
    # The certificate authorities this machine adds to Debian's (its way out to crates.io may
    # pass through a TLS proxy of its own): cargo in the build stage trusts what the host trusts.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
      cp /usr/local/share/ca-certificates/*.crt "$dir/usr/local/share/ca-certificates/"
      chroot "$dir" update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates in the toolchain base failed"
    fi
    import "$dir" "$TOOLCHAIN_TAG" \
      "ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
      "ENV CARGO_HOME=/usr/local/cargo"
  fi
  if have_image "$RUNTIME_TAG"; then
    log "runtime base $RUNTIME_TAG: made before, reused"
  else
    local dir="$WORK/rootfs-runtime"
    bootstrap "$dir" "$RUNTIME_PKGS"
    import "$dir" "$RUNTIME_TAG" "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  fi
  drop_other_tags "$TOOLCHAIN_TAG"; drop_other_tags "$RUNTIME_TAG"
  rm -rf "$WORK/debs"
  log "base images ready in $((SECONDS - t0)) s"
}

# ---- the image -------------------------------------------------------------------------------
build() {
  bases
  local t0=$SECONDS args
  args=(--network host --cpu-shares 256 --force-rm -f "$DOCKERFILE"
    --build-arg "TOOLCHAIN_IMAGE=$TOOLCHAIN_TAG" --build-arg "RUNTIME_IMAGE=$RUNTIME_TAG")
  mkdir -p "$LOGS"
  log "building $IMAGE from deploy/Dockerfile on the local bases (log: $LOGS/image-build.log)"
  # The legacy builder (BuildKit would fetch the Dockerfile's syntax image from a registry). The
  # stages are tagged too, so that pruning untagged images keeps today's layers (the dependency
  # layer among them) and drops those of earlier builds.
  local stage
  : > "$LOGS/image-build.log"
  for stage in planner build; do
    docker_cli build "${args[@]}" --target "$stage" -t "metastream-stage:$stage" "$ROOT" >> "$LOGS/image-build.log" 2>&1 \
      || { tail -n 60 "$LOGS/image-build.log" >&2; die "docker build (stage $stage) failed (log: $LOGS/image-build.log)"; }
  done
  docker_cli build "${args[@]}" -t "$IMAGE" "$ROOT" >> "$LOGS/image-build.log" 2>&1 \
    || { tail -n 60 "$LOGS/image-build.log" >&2; die "docker build failed (log: $LOGS/image-build.log)"; }
  # This engine is metastream's own: what a failed build left behind may go too.
  docker_cli container prune -f >/dev/null || true
  docker_cli image prune -f >/dev/null || true
  log "built $IMAGE in $((SECONDS - t0)) s ($(docker_cli image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
}

# ---- the run ---------------------------------------------------------------------------------
# Ports apart from the dev stack's (scripts/services.sh: 8080-8084, 9081, 9084), which `make test`
# may have running; the services bind loopback only (host network).
SERVICES=(gateway pre-transformer post-transformer consumer-api)
declare -A PORTS=([gateway]=28081 [pre-transformer]=28082 [post-transformer]=28083 [consumer-api]=28084)
declare -A ADMIN_PORTS=([gateway]=29081 [consumer-api]=29084)
KAFKA="${METASTREAM_TEST_KAFKA:-127.0.0.1:${KAFKA_PORT:-9092}}"
REDIS_URL="redis://127.0.0.1:${REDIS_PORT:-6379}"
container() { echo "metastream-image-$1"; }

# Stopped with SIGTERM first: the services leave their consumer groups as they drain, so that the
# next run's consumers are not kept waiting for a dead member's session to expire.
remove_containers() {
  local s names=()
  for s in "${SERVICES[@]}"; do names+=("$(container "$s")"); done
  docker_cli stop -t 25 "${names[@]}" >/dev/null 2>&1 || true
  docker_cli rm -f "${names[@]}" >/dev/null 2>&1 || true
}

show_logs() {
  local s
  for s in "${SERVICES[@]}"; do
    printf '\n----- %s (container %s), last 40 lines -----\n' "$s" "$(container "$s")" >&2
    docker_cli logs --tail 40 "$(container "$s")" >&2 2>&1 || echo "(no container)" >&2
  done
}

passed=0
fail() {
  show_logs
  printf '\033[1;31m[metastream] test-image FAILED:\033[0m %s\n' "$*" >&2
  echo "image: $passed passed, 1 failed"
  exit 1
}

# The services' configuration: the dev config baked into the image (METASTREAM_ENV=dev: the
# prototype's token), the host's Kafka and Redis, and names of their own (topics, consumer groups,
# Redis keys), so that neither the dev stack nor an earlier test's data is mixed in.
env_args() {
  echo "METASTREAM_ENV=dev"
  echo "METASTREAM__KAFKA__BOOTSTRAP_SERVERS=$KAFKA"
  echo "METASTREAM__KAFKA__TOPICS__INGEST=metastream_image_ingest"
  echo "METASTREAM__KAFKA__TOPICS__PROCESSED=metastream_image_processed"
  echo "METASTREAM__KAFKA__TOPICS__OUTPUT=metastream_image_output"
  echo "METASTREAM__KAFKA__TOPICS__DEAD_LETTER=metastream_image_dead_letter"
  echo "METASTREAM__KAFKA__TOPICS__AUDIT=metastream_image_audit"
  echo "METASTREAM__REDIS__URL=$REDIS_URL"
  echo "METASTREAM__REDIS__KEY_PREFIX=metastream-image:"
  echo "METASTREAM__PRE_TRANSFORMER__GROUP_ID=metastream-image-pre-transformer"
  echo "METASTREAM__POST_TRANSFORMER__GROUP_ID=metastream-image-post-transformer"
  echo "METASTREAM__CONSUMER_API__GROUP_PREFIX=metastream-image-consume-"
  echo "METASTREAM__WEBHOOKS__GROUP_PREFIX=metastream-image-webhook-"
  echo "METASTREAM__GATEWAY__LISTEN=127.0.0.1:${PORTS[gateway]}"
  echo "METASTREAM__GATEWAY__ADMIN_LISTEN=127.0.0.1:${ADMIN_PORTS[gateway]}"
  echo "METASTREAM__PRE_TRANSFORMER__LISTEN=127.0.0.1:${PORTS[pre-transformer]}"
  echo "METASTREAM__POST_TRANSFORMER__LISTEN=127.0.0.1:${PORTS[post-transformer]}"
  echo "METASTREAM__CONSUMER_API__LISTEN=127.0.0.1:${PORTS[consumer-api]}"
  echo "METASTREAM__CONSUMER_API__ADMIN_LISTEN=127.0.0.1:${ADMIN_PORTS[consumer-api]}"
}

run_services() {
  local s port
  port_open "${KAFKA%:*}" "${KAFKA##*:}" || fail "no Kafka on $KAFKA (make infra starts it)"
  port_open 127.0.0.1 "${REDIS_PORT:-6379}" || fail "no Redis on 127.0.0.1:${REDIS_PORT:-6379} (make infra starts it)"
  for port in "${PORTS[@]}" "${ADMIN_PORTS[@]}"; do
    port_open 127.0.0.1 "$port" && fail "port $port is taken by another process"
  done
  env_args > "$WORK/services.env"
  remove_containers
  # As Kubernetes runs them: read-only root file system, /tmp writable, the image's user (65532).
  for s in "${SERVICES[@]}"; do
    docker_cli run -d --name "$(container "$s")" --network host --read-only --tmpfs /tmp \
      --env-file "$WORK/services.env" "$IMAGE" "$s" >/dev/null \
      || fail "docker run $IMAGE $s failed"
  done
  local i admin
  for s in "${SERVICES[@]}"; do
    admin=${ADMIN_PORTS[$s]:-}
    for ((i = 0; i < 600; i++)); do
      if curl -fsS "http://127.0.0.1:${PORTS[$s]}/readyz" >/dev/null 2>&1 \
        && { [[ -z $admin ]] || curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1; }; then
        break
      fi
      [[ $(docker_cli inspect -f '{{.State.Running}}' "$(container "$s")" 2>/dev/null) == true ]] \
        || fail "$s exited in its container"
      sleep 0.1
    done
    ((i < 600)) || fail "$s (in its container) not ready on :${PORTS[$s]} after 60 s"
  done
  echo "image: the four services run from $IMAGE and are ready (gateway :${PORTS[gateway]} and :${ADMIN_PORTS[gateway]}, pre-transformer :${PORTS[pre-transformer]}, post-transformer :${PORTS[post-transformer]}, consumer-api :${PORTS[consumer-api]} and :${ADMIN_PORTS[consumer-api]})"
  passed=$((passed + 1))
}

# The prototype's two calls, on the gateway's and the consumer-api's own ports, with an id of this
# run's: the ingest is accepted (202), and /consume hands the event out processed by both stages.
prototype_calls() {
  local id="image-$(date +%s)-$RANDOM" gw="http://127.0.0.1:${PORTS[gateway]}" api="http://127.0.0.1:${PORTS[consumer-api]}"
  local ingest code
  ingest=$(curl -sS -w '\n%{http_code}' -X POST "$gw/ingest" -H "Authorization: Bearer your-secret-key" -H "Content-Type: application/json" -d '{"id":"'"$id"'","source":"jira","payload":{"title":"Fix login bug","description":"Users are unable to log in due to a server error.","status":"open","assignee":"john.doe"},"metadata":{"created_at":"2024-07-20T12:34:56Z"}}') \
    || fail "POST /ingest: no answer from the gateway's container"
  code=$(tail -n1 <<<"$ingest")
  [[ $code == 202 ]] || fail "POST /ingest answered $code: $(head -n1 <<<"$ingest")"
  echo "image: POST /ingest of event $id answered 202: $(head -n1 <<<"$ingest")"
  passed=$((passed + 1))

  local checker="$WORK/find-event.py" answer="$WORK/consume.json"
  cat > "$checker" <<'PY'
import json, sys
want = sys.argv[1]
body = json.load(sys.stdin)
assert isinstance(body["events"], list) and body["count"] == len(body["events"]), body
for item in body["events"]:
    e = item["event"]
    if e["id"] == want:
        assert e["source"] == "jira", e
        assert e["payload"]["title"] == "Fix login bug", e
        assert e["payload"]["assignee"] == "john.doe", e
        assert e["metadata"]["created_at"] == "2024-07-20T12:34:56Z", e
        assert "processed_at" in e["metadata"], "pre stage timestamp missing"
        assert e["metadata"]["processing_info"]["stage"] == "post", "post stage info missing"
        sys.exit(0)
sys.exit(3)
PY
  # The second call verbatim first; then on with the same group (earlier runs' events may come
  # first: an answer that was never acknowledged is handed out again) until this run's event.
  code=$(curl -sS -o "$answer" -w '%{http_code}' -X GET "$api/consume" -H "Authorization: Bearer your-secret-key") || code=000
  local deadline=$((SECONDS + 120)) rc
  while :; do
    [[ $code == 200 ]] || fail "GET /consume answered $code: $(head -c 300 "$answer" 2>/dev/null)"
    rc=0; python3 "$checker" "$id" < "$answer" || rc=$?
    if [[ $rc == 0 ]]; then break; fi
    [[ $rc == 3 ]] || fail "GET /consume answered an unexpected body: $(head -c 300 "$answer")"
    ((SECONDS < deadline)) || fail "GET /consume did not hand out event $id within 120 s"
    code=$(curl -sS -o "$answer" -w '%{http_code}' "$api/consume?max=1000&wait_ms=1000" -H "Authorization: Bearer your-secret-key") || code=000
  done
  echo "image: GET /consume handed out event $id, processed by both stages"
  passed=$((passed + 1))
}

# No engine: a failure, unless the caller asked on purpose to skip the image test.
no_engine() {
  if [[ ${METASTREAM_SKIP_IMAGE:-} == 1 ]]; then
    printf '\n\033[1;33m%s\n  test-image SKIPPED (METASTREAM_SKIP_IMAGE=1): dockerd could not start: %s\n  (log: %s)\n%s\033[0m\n\n' \
      "==================================================================================" "$*" "$ENGINE_LOG" \
      "==================================================================================" >&2
    echo "image: 0 passed, 0 failed, 1 skipped (METASTREAM_SKIP_IMAGE=1: dockerd could not start: $*)"
    exit 0
  fi
  echo "image: 0 passed, 1 failed (dockerd could not start: $*; log: $ENGINE_LOG; set METASTREAM_SKIP_IMAGE=1 to skip on a machine that cannot run an engine)"
  exit 1
}

test_image() {
  local t0=$SECONDS
  mkdir -p "$WORK" "$LOGS"
  engine_start || no_engine "$ENGINE_ERROR"
  trap 'remove_containers; if [[ $ENGINE_STARTED == 1 ]]; then engine_stop; fi' EXIT
  build
  local t1=$SECONDS
  run_services
  prototype_calls
  log "image test: $((SECONDS - t0)) s in all (build $((t1 - t0)) s, run $((SECONDS - t1)) s)"
  echo "image: $passed passed, 0 failed"
}

case "${1:-}" in
  test) test_image ;;
  start) mkdir -p "$LOGS"; engine_start || die "dockerd could not start: $ENGINE_ERROR" ;;
  stop) engine_stop ;;
  status) engine_up && echo "docker engine: up on $SOCK" || echo "docker engine: down" ;;
  bases) engine_up || die "no docker engine on $SOCK: scripts/image.sh start"; bases ;;
  build) engine_up || die "no docker engine on $SOCK: scripts/image.sh start"; build ;;
  *) die "usage: $0 test|start|stop|status|bases|build" ;;
esac
