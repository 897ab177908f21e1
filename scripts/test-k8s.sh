#!/usr/bin/env bash
# make test-k8s (part of make test): the manifests applied to a real Kubernetes control plane.
#   1. scripts/kube.sh builds (or takes from ~/.cache) kube-apiserver, kube-controller-manager,
#      kube-scheduler and kubectl at the pinned version and starts them, with etcd, on loopback;
#   2. the CRDs the overlays use come from their projects' released definitions, pinned:
#      prometheus-operator's ServiceMonitor (prod, components/observability) and KEDA's
#      ScaledObject and TriggerAuthentication (components/keda), taken from the Go module proxy;
#   3. scripts/test_k8s_apply.py applies both overlays server-side on fake nodes and checks
#      rollouts, re-apply, a rolling update, HPAs, PDBs and a node drain ("N passed, M failed").
# The control plane is stopped at the end, pass or fail; its logs stay in var/kube.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

PROMETHEUS_OPERATOR=github.com/prometheus-operator/prometheus-operator@v0.85.0
KEDA=github.com/kedacore/keda/v2@v2.18.3

module_dir() {
  local dir
  dir=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [[ -d $dir ]] || die "could not download $1 from the Go module proxy"
  echo "$dir"
}

command -v go >/dev/null || die "Go is needed (to build the Kubernetes programs and fetch the CRDs)"
command -v python3 >/dev/null || die "python3 is needed (scripts/test_k8s_apply.py)"
started=$(date +%s)
scripts/kube.sh build
built=$(date +%s)

crds="$VAR/kube-crds"
rm -rf "$crds" && mkdir -p "$crds"
cp "$(module_dir "$PROMETHEUS_OPERATOR")/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" "$crds/"
keda=$(module_dir "$KEDA")
cp "$keda/config/crd/bases/keda.sh_scaledobjects.yaml" "$keda/config/crd/bases/keda.sh_triggerauthentications.yaml" "$crds/"

trap 'scripts/kube.sh stop' EXIT
scripts/kube.sh start
bin=$(scripts/kube.sh bin)
set +e
python3 scripts/test_k8s_apply.py "$bin/kubectl" "$(scripts/kube.sh kubeconfig)" "$crds"
rc=$?
set -e
log "test-k8s: $(( built - started ))s to build or find the programs, $(( $(date +%s) - built ))s to run"
exit $rc
