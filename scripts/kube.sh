#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, for `make test-k8s` (scripts/k8s_apply_test.py):
# etcd (Debian's etcd-server), kube-apiserver, kube-controller-manager and kube-scheduler, and the
# kubectl that drives them, all at the version scripts/kube/go.mod pins (v1.34.3), built from the
# released k8s.io/kubernetes Go module and cached under ~/.cache/metastream/kube-<version>/bin.
#
# There is no kubelet: scripts/kube_fake_nodes.py registers fake nodes and plays their kubelet
# (pods it is given become Running and Ready, Job pods succeed, deleted pods terminate).
#
# Usage: scripts/kube.sh build        build (or reuse) the four programs
#        scripts/kube.sh start        start etcd and the control plane (fresh data every time)
#        scripts/kube.sh stop         stop them
#        scripts/kube.sh kubeconfig   print the kubeconfig's path
#        scripts/kube.sh bin          print the directory of the programs
#
# Everything listens on 127.0.0.1 only: etcd on 12379/12380, the API server on 16443, the
# controller manager and the scheduler on 16457/16459 (health only). The API server's serving
# certificate, the service-account key pair and the administrator's bearer token are made at each
# start with openssl and live in var/kube; none of them is used anywhere else.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

MODULE_DIR="$ROOT/scripts/kube"
KUBE_VERSION=$(sed -n 's/^require k8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$MODULE_DIR/go.mod")
[[ -n $KUBE_VERSION ]] || die "scripts/kube/go.mod does not pin k8s.io/kubernetes"
BIN="$CACHE/kube-$KUBE_VERSION/bin"
PROGRAMS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
DIR="$VAR/kube"
KUBECONFIG_FILE="$DIR/admin.kubeconfig"
HOST=127.0.0.1
ETCD_PORT=12379
API_PORT=16443

build() {
  local missing=() p start
  for p in "${PROGRAMS[@]}"; do [[ -x $BIN/$p ]] || missing+=("$p"); done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "Kubernetes $KUBE_VERSION programs cached in $BIN"
    return 0
  fi
  command -v go >/dev/null || die "Go is needed to build ${missing[*]} (k8s.io/kubernetes $KUBE_VERSION)"
  mkdir -p "$BIN"
  start=$(date +%s)
  log "building ${missing[*]} from k8s.io/kubernetes $KUBE_VERSION (Go module proxy; ~5-10 min cold)"
  local pkgs=()
  for p in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$p"); done
  # Into a scratch directory first, so a build cut short never leaves a half-written program.
  rm -rf "$BIN.tmp" && mkdir -p "$BIN.tmp"
  (cd "$MODULE_DIR" && CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags=-s -o "$BIN.tmp/" "${pkgs[@]}") \
    || die "building ${missing[*]} from k8s.io/kubernetes $KUBE_VERSION failed"
  mv "$BIN.tmp"/* "$BIN/" && rmdir "$BIN.tmp"
  log "built ${missing[*]} in $(( $(date +%s) - start ))s"
}

certificates() {
  command -v openssl >/dev/null || apt_install openssl
  local pki=$DIR/pki
  mkdir -p "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=metastream-test-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n' > "$pki/san.ext"
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -extfile "$pki/san.ext" -out "$pki/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  # The administrator: a bearer token in group system:masters, for kubectl and the controllers.
  local token
  token=$(openssl rand -hex 24)
  printf '%s,metastream-admin,metastream-admin,system:masters\n' "$token" > "$pki/tokens.csv"
  chmod 600 "$pki"/*.key "$pki/tokens.csv"
  cat > "$KUBECONFIG_FILE" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: metastream-test
    cluster:
      server: https://$HOST:$API_PORT
      certificate-authority: $pki/ca.crt
users:
  - name: metastream-admin
    user:
      token: $token
contexts:
  - name: metastream-test
    context: {cluster: metastream-test, user: metastream-admin}
current-context: metastream-test
EOF
  chmod 600 "$KUBECONFIG_FILE"
}

# run NAME COMMAND...: start a program in the background, its log and pid file in var/kube.
run() {
  local name=$1; shift
  "$@" >"$DIR/$name.log" 2>&1 &
  echo $! > "$DIR/$name.pid"
}

wait_healthy() {
  local what=$1 url=$2 secs=$3 i
  for ((i = 0; i < secs * 4; i++)); do
    if curl -fsk --max-time 2 -H "Authorization: Bearer $(token)" "$url" >/dev/null 2>&1; then return 0; fi
    pid_alive "$DIR/$what.pid" || die "$what exited; the end of var/kube/$what.log:
$(tail -n 20 "$DIR/$what.log")"
    sleep 0.25
  done
  die "$what was not healthy at $url within ${secs}s; see var/kube/$what.log"
}

token() { cut -d, -f1 "$DIR/pki/tokens.csv"; }

start() {
  build
  command -v etcd >/dev/null || apt_install etcd-server
  command -v etcd >/dev/null || die "Debian's etcd-server installed no etcd"
  command -v curl >/dev/null || apt_install curl
  stop_all quiet
  port_open "$HOST" "$ETCD_PORT" && die "something else listens on $HOST:$ETCD_PORT (etcd's port)"
  port_open "$HOST" "$API_PORT" && die "something else listens on $HOST:$API_PORT (the API server's port)"
  rm -rf "$DIR" && mkdir -p "$DIR"
  certificates
  local pki=$DIR/pki
  run etcd etcd --name metastream-test --data-dir "$DIR/etcd" \
    --listen-client-urls "http://$HOST:$ETCD_PORT" --advertise-client-urls "http://$HOST:$ETCD_PORT" \
    --listen-peer-urls "http://$HOST:12380" --initial-advertise-peer-urls "http://$HOST:12380" \
    --initial-cluster "metastream-test=http://$HOST:12380" --unsafe-no-fsync
  wait_port "$HOST" "$ETCD_PORT" 30 etcd
  # --endpoint-reconciler-type=none: the `kubernetes` Service's endpoint would be 127.0.0.1, which
  # endpoint validation refuses (loopback); nothing in the tests reaches the API by that Service.
  run kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://$HOST:$ETCD_PORT" \
    --bind-address "$HOST" --secure-port "$API_PORT" --advertise-address "$HOST" \
    --endpoint-reconciler-type none \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --token-auth-file "$pki/tokens.csv" \
    --authorization-mode Node,RBAC \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-cluster-ip-range 10.96.0.0/16 \
    --allow-privileged=false --profiling=false
  wait_healthy kube-apiserver "https://$HOST:$API_PORT/readyz" 120
  run kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$KUBECONFIG_FILE" \
    --authentication-kubeconfig "$KUBECONFIG_FILE" --authorization-kubeconfig "$KUBECONFIG_FILE" \
    --bind-address "$HOST" --secure-port 16457 --leader-elect=false \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --use-service-account-credentials=false --profiling=false
  run kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$KUBECONFIG_FILE" \
    --authentication-kubeconfig "$KUBECONFIG_FILE" --authorization-kubeconfig "$KUBECONFIG_FILE" \
    --bind-address "$HOST" --secure-port 16459 --leader-elect=false --profiling=false
  wait_healthy kube-controller-manager "https://$HOST:16457/healthz" 60
  wait_healthy kube-scheduler "https://$HOST:16459/healthz" 60
  log "Kubernetes $KUBE_VERSION control plane ready on https://$HOST:$API_PORT (kubeconfig $KUBECONFIG_FILE)"
}

stop_all() {
  local p
  for p in kube-scheduler kube-controller-manager kube-apiserver etcd; do
    if [[ ${1:-} == quiet ]]; then stop_pid "$DIR/$p.pid" "$p" 2>/dev/null; else stop_pid "$DIR/$p.pid" "$p"; fi
  done
}

case "${1:-}" in
  build) build ;;
  start) start ;;
  stop) stop_all ;;
  kubeconfig) echo "$KUBECONFIG_FILE" ;;
  bin) echo "$BIN" ;;
  *) die "usage: $0 build|start|stop|kubeconfig|bin" ;;
esac
