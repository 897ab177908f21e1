#!/usr/bin/env bash
# The operator console's browser tests (tests/console): Python Playwright (PyPI, pinned in
# tests/console/requirements.txt, venv var/console/venv) driving Debian's chromium (installed
# with apt when missing; Playwright's own browser download is never used), axe-core (npm, pinned
# in tests/console/package.json + package-lock.json, installed into var/console/node) injected
# into each page. Against the dev stack with real Kafka and Redis: started as `make run` does
# unless it runs already (and stopped afterwards if this script started it). Screenshots go to
# var/console-screenshots/. Ends with pytest's "N passed" line.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

start=$SECONDS
mkdir -p "$VAR/console"
CONSOLE_VAR="$(cd "$VAR/console" && pwd)"
PKG="$ROOT/tests/console"
NODE_DIR="$CONSOLE_VAR/node"

command -v chromium >/dev/null 2>&1 || apt_install chromium
CHROMIUM=$(command -v chromium) || die "chromium is not installed"

python_tools "$CONSOLE_VAR/venv" "$PKG/requirements.txt" "$CONSOLE_VAR/pylib" \
  || die "pip could not install tests/console/requirements.txt (is PyPI reachable?)"

stamp=$(cat "$PKG/package.json" "$PKG/package-lock.json" | sha1sum | cut -d' ' -f1)
if [[ ! -f $NODE_DIR/.stamp || $(cat "$NODE_DIR/.stamp") != "$stamp" || ! -f $NODE_DIR/node_modules/axe-core/axe.min.js ]]; then
  command -v npm >/dev/null 2>&1 || die "npm is not installed: axe-core comes from the npm registry"
  log "installing tests/console/package.json (npm ci) into $NODE_DIR"
  rm -rf "$NODE_DIR" && mkdir -p "$NODE_DIR"
  cp "$PKG/package.json" "$PKG/package-lock.json" "$NODE_DIR/"
  npm ci --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error >&2 \
    || die "npm could not install tests/console/package.json (registry unreachable, or package-lock.json out of date)"
  echo "$stamp" >"$NODE_DIR/.stamp"
fi

ensure_dev_stack
# A stack left running from before the console existed would fail every test for a reason
# that is not the console's: say so.
code=$(curl -sS -o /dev/null -w '%{http_code}' http://127.0.0.1:9081/console 2>/dev/null || true)
[[ $code == 200 ]] || die "GET http://127.0.0.1:9081/console answered $code: the running gateway has no console (restart it: make stop; make run)"
log "console test setup ready in $((SECONDS - start)) s"

mkdir -p "$VAR/console-screenshots"
CONSOLE_ADMIN_URL=http://127.0.0.1:9081 CONSOLE_EDGE_URL=http://127.0.0.1:8080 \
  CONSOLE_CONSUMER_URL=http://127.0.0.1:8084 CONSOLE_PUBLIC_URL=http://127.0.0.1:8081 \
  CONSOLE_CHROMIUM="$CHROMIUM" CONSOLE_AXE="$NODE_DIR/node_modules/axe-core/axe.min.js" \
  CONSOLE_SCREENSHOTS="$VAR/console-screenshots" \
  "$PY" -m pytest "$PKG" -p no:cacheprovider -q "$@"
log "console tests done in $((SECONDS - start)) s"
