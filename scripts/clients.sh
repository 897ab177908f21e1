#!/usr/bin/env bash
# The real webhook clients that metastream's e2e tests run against the gateway (tests/clients/):
# GitHub's example deliveries signed by @octokit/webhooks-methods (npm, pinned in
# tests/clients/package.json + package-lock.json, installed into var/clients/node) and the
# openlineage-python, CloudEvents and acryl-datahub SDKs (PyPI, pinned in
# scripts/clients.requirements.txt, installed into the venv var/clients/venv).
#   scripts/clients.sh install   install them; again only when the pinned files change
#   scripts/clients.sh paths     print METASTREAM_CLIENTS_NODE_PATH=… and METASTREAM_CLIENTS_PYTHON=…
set -euo pipefail
source "$(dirname "$0")/lib.sh"

mkdir -p "$VAR/clients"
CLIENTS="$(cd "$VAR/clients" && pwd)"
NODE_DIR="$CLIENTS/node"
VENV="$CLIENTS/venv"
PKG="$ROOT/tests/clients"
REQUIREMENTS="$ROOT/scripts/clients.requirements.txt"

need() { command -v "$1" >/dev/null 2>&1 || die "$1 is not installed: $2"; }
# sha1_of FILE... — one sha1 over the files' contents: the stamp of an install.
sha1_of() { cat "$@" | sha1sum | cut -d' ' -f1; }

install_node() {
  need node "the GitHub client (tests/clients/github.mjs) needs Node.js >= 20"
  need npm "it installs tests/clients/package.json"
  (($(node -p 'process.versions.node.split(".")[0]') >= 20)) || die "Node.js >= 20 needed, found $(node --version)"
  [[ -f $PKG/package-lock.json ]] \
    || die "tests/clients/package-lock.json is missing: make it with npm install --prefix tests/clients --package-lock-only"
  local stamp
  stamp=$(sha1_of "$PKG/package.json" "$PKG/package-lock.json")
  if [[ -f $NODE_DIR/.stamp && $(cat "$NODE_DIR/.stamp") == "$stamp" && -d $NODE_DIR/node_modules ]]; then
    log "npm clients up to date in $NODE_DIR"; return 0
  fi
  log "installing tests/clients/package.json (npm ci) into $NODE_DIR"
  rm -rf "$NODE_DIR" && mkdir -p "$NODE_DIR"
  cp "$PKG/package.json" "$PKG/package-lock.json" "$NODE_DIR/"
  npm ci --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error >&2 \
    || die "npm could not install tests/clients/package.json (npm registry unreachable, or package-lock.json out of date: npm install --prefix tests/clients --package-lock-only)"
  local name
  for name in $(node -p 'Object.keys(require(process.argv[1]).dependencies).join(" ")' "$PKG/package.json"); do
    [[ -f $NODE_DIR/node_modules/$name/package.json ]] || die "npm ci did not install $name"
  done
  echo "$stamp" >"$NODE_DIR/.stamp"
}

install_python() {
  need python3 "the OpenLineage, CloudEvents and DataHub clients run in a Python venv"
  local stamp
  stamp=$(sha1_of "$REQUIREMENTS")
  if [[ -f $VENV/.stamp && $(cat "$VENV/.stamp") == "$stamp" ]] && "$VENV/bin/python" -c '' 2>/dev/null; then
    log "Python clients up to date in $VENV"; return 0
  fi
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    log "python3 -m venv failed: installing python3-venv"
    rm -rf "$VENV"; apt_install python3-venv
    python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
  fi
  log "installing scripts/clients.requirements.txt ($(grep -c '==' "$REQUIREMENTS") pinned packages) into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --root-user-action=ignore -r "$REQUIREMENTS" \
    || die "pip could not install scripts/clients.requirements.txt (is PyPI reachable?)"
  DATAHUB_TELEMETRY_ENABLED=false "$VENV/bin/python" -c 'import openlineage.client, cloudevents.core, requests, datahub.emitter.rest_emitter' \
    || die "the venv $VENV cannot import the clients it installed"
  echo "$stamp" >"$VENV/.stamp"
}

case "${1:-}" in
  install)
    start=$SECONDS
    install_node
    install_python
    log "clients ready in $CLIENTS ($((SECONDS - start)) s)"
    ;;
  paths)
    [[ -f $NODE_DIR/.stamp && -f $VENV/.stamp ]] || die "the clients are not installed: run scripts/clients.sh install"
    echo "METASTREAM_CLIENTS_NODE_PATH=$NODE_DIR/node_modules"
    echo "METASTREAM_CLIENTS_PYTHON=$VENV/bin/python"
    ;;
  *) die "usage: scripts/clients.sh install|paths" ;;
esac
