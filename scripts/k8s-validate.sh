#!/usr/bin/env bash
# Validates metastream's deployment files offline (make k8s-validate, part of make test):
#   - renders every Kubernetes overlay (k8s/overlays/*, and each with the components its
#     kustomization lists commented out, e.g. prod with components/keda) with `kubectl kustomize`;
#   - validates every object against the Kubernetes JSON schemas (kubernetes-validate, pinned in
#     scripts/k8s-validate.requirements.txt, installed into var/venv); CRDs without a built-in schema
#     (KEDA ScaledObject, prometheus-operator ServiceMonitor/PodMonitor) are skipped by name;
#   - runs metastream's own checks (scripts/k8s_checks.py): probes, limits, security contexts,
#     transformer replicas <= kafka.partitions, METASTREAM__* variables are config keys, shutdown
#     grace, the topic Job, Ingress routes, NetworkPolicies, the Dockerfile against CI's build;
#   - checks deploy/docker-compose.yml with `docker compose config` and against the manifests.
# Ends with "N passed, M failed"; exits non-zero on any failure. Needs python3 and kubectl; uses
# docker compose when installed, else builds an equivalent from compose-go (the library docker
# compose uses) with Go, else skips that check and says so.
# Usage: scripts/k8s-validate.sh            validate
#        scripts/k8s-validate.sh sync-config  copy config/*.yaml into k8s/base/config/ (the ConfigMap's source)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

K8S_VERSION="${K8S_VERSION:-1.31.0}"
WORK="$VAR/k8s-validate"
VENV="$VAR/venv"
REQUIREMENTS="$ROOT/scripts/k8s-validate.requirements.txt"

banner() { printf '\033[1;33m%s\033[0m\n' "!!! $*" >&2; }

if [[ ${1:-} == sync-config ]]; then
  rm -f k8s/base/config/*.yaml
  cp config/*.yaml k8s/base/config/
  log "copied $(ls config/*.yaml | tr '\n' ' ')into k8s/base/config/"
  log "list any new file under metastream-config in k8s/base/kustomization.yaml"
  exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [sync-config]"

fail_early() { printf '[k8s-validate] error: %s\n0 passed, 1 failed\n' "$*" >&2; exit 1; }

# kubectl renders the overlays (`kubectl kustomize`). Where it is missing, build the same
# renderer, kustomize, from the Go module proxy into var/bin and put a `kubectl kustomize` shim
# in front of it.
if ! command -v kubectl >/dev/null; then
  KUSTOMIZE_VERSION=v5.6.0
  if [[ ! -x "$ROOT/var/bin/kustomize" ]]; then
    command -v go >/dev/null \
      || fail_early "kubectl not found and no Go to build kustomize: install kubectl (Kubernetes' apt repository or google-cloud-sdk)"
    log "kubectl not found: building kustomize $KUSTOMIZE_VERSION from the Go module proxy"
    GOBIN="$ROOT/var/bin" GOFLAGS=-mod=mod go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" \
      || fail_early "kubectl not found and building kustomize failed"
  fi
  mkdir -p "$ROOT/var/bin/shim"
  cat > "$ROOT/var/bin/shim/kubectl" <<SHIM
#!/usr/bin/env bash
# kubectl stand-in for k8s-validate: 'kubectl kustomize DIR' and 'kubectl version --client'.
case "\$1" in
  kustomize) shift; exec "$ROOT/var/bin/kustomize" build "\$@" ;;
  version) echo "Kustomize Version: \$("$ROOT/var/bin/kustomize" version)"; exit 0 ;;
  *) echo "kubectl shim: only 'kustomize' and 'version' are supported" >&2; exit 1 ;;
esac
SHIM
  chmod +x "$ROOT/var/bin/shim/kubectl"
  export PATH="$ROOT/var/bin/shim:$PATH"
fi
command -v python3 >/dev/null || fail_early "python3 not found (Debian: apt-get install python3)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || fail_early "python3 is $(python3 -V 2>&1 | cut -d' ' -f2); scripts/k8s_checks.py needs 3.11 or newer (tomllib)"

# --- Python tools, pinned, in var/venv (or var/pylib when no venv can be made) -------------------
python_tools "$VENV" "$REQUIREMENTS" "$VAR/pylib" || fail_early "pip could not install $REQUIREMENTS"

# --- a `docker compose config` ----------------------------------------------------------------------
COMPOSE="" COMPOSE_SKIP=""
if command -v docker >/dev/null && docker compose version >/dev/null 2>&1; then
  COMPOSE="docker compose"
elif command -v docker-compose >/dev/null && [[ $(docker-compose version --short 2>/dev/null) == 2.* ]]; then
  COMPOSE="docker-compose"
elif command -v go >/dev/null; then
  # The compose plugin is not installed (the docker CLI alone has no `compose`): build the same
  # loader and validator from compose-go, the library docker compose is made of (Go module proxy).
  tool="$VAR/bin/compose-config"
  src="$ROOT/scripts/compose-config"
  if [[ ! -x $tool || -n $(find "$src" -newer "$tool" -type f 2>/dev/null) ]]; then
    command -v docker >/dev/null || banner "docker CLI not found"
    log "docker compose is not installed: building scripts/compose-config (compose-go) into $tool"
    mkdir -p "$VAR/bin"
    if ! (cd "$src" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly go build -o "$tool" .) >"$WORK.go-build.log" 2>&1; then
      cat "$WORK.go-build.log" >&2
      rm -f "$tool"
    fi
  fi
  if [[ -x $tool ]]; then
    COMPOSE="$tool"
  else
    COMPOSE_SKIP="docker compose is not installed and scripts/compose-config did not build (see above)"
  fi
else
  COMPOSE_SKIP="neither docker compose nor Go (to build its compose-go equivalent) is installed"
fi
if [[ -n $COMPOSE_SKIP ]]; then
  banner "THE COMPOSE CHECK IS SKIPPED: $COMPOSE_SKIP."
  banner "deploy/docker-compose.yml is NOT validated on this machine."
fi

# --- the variants to render ---------------------------------------------------------------------------
rm -rf "$WORK"
mkdir -p "$WORK/variants" "$WORK/trees"
for overlay in k8s/overlays/*/; do
  overlay=${overlay%/}
  name=$(basename "$overlay")
  mkdir -p "$WORK/variants/$name"
  printf 'resources:\n  - %s\n' "$(realpath --relative-to="$WORK/variants/$name" "$overlay")" \
    > "$WORK/variants/$name/kustomization.yaml"
  # Each optional component the overlay lists commented out: a copy of k8s/ with it enabled.
  for comp in $(sed -n 's|^[[:space:]]*#[[:space:]]*-[[:space:]]*\.\./\.\./components/\([A-Za-z0-9_-]*\).*|\1|p' "$overlay/kustomization.yaml"); do
    tree="$WORK/trees/$name+$comp"
    mkdir -p "$tree"
    cp -r k8s "$tree/"
    sed -i "s|^\([[:space:]]*\)#[[:space:]]*-[[:space:]]*\(\.\./\.\./components/$comp\)|\1- \2|" \
      "$tree/k8s/overlays/$name/kustomization.yaml"
    mkdir -p "$WORK/variants/$name+$comp"
    printf 'resources:\n  - %s\n' "$(realpath --relative-to="$WORK/variants/$name+$comp" "$tree/k8s/overlays/$name")" \
      > "$WORK/variants/$name+$comp/kustomization.yaml"
  done
done

log "kubectl $(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p' | sed 's/^/kustomize /'), kubernetes-validate $("$PY" -c 'import kubernetes_validate.version as v; print(v.__version__)' 2>/dev/null || echo '?'), schemas of Kubernetes $K8S_VERSION"
exec "$PY" "$ROOT/scripts/k8s_checks.py" --root "$ROOT" --variants "$WORK/variants" \
  --k8s-version "$K8S_VERSION" --compose "$COMPOSE" --compose-skip "$COMPOSE_SKIP"
