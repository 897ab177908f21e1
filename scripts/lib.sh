# Shared helpers for metastream's scripts. Source it; do not run it.
# Everything the scripts start keeps its data, logs and pid file under $VAR (ignored by git).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VAR="${METASTREAM_VAR:-$ROOT/var}"
CACHE="${METASTREAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/metastream}"

log() { printf '\033[1;34m[metastream]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[metastream] error:\033[0m %s\n' "$*" >&2; exit 1; }

# port_open HOST PORT — true when something accepts TCP connections there.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_port HOST PORT SECONDS WHAT — wait for a listener, fail loudly on timeout.
wait_port() {
  local host=$1 port=$2 secs=$3 what=$4 i
  for ((i = 0; i < secs * 10; i++)); do
    port_open "$host" "$port" && return 0
    sleep 0.1
  done
  die "$what did not start listening on $host:$port within ${secs}s"
}

# pid_alive FILE — true when FILE names a running process.
pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pid FILE WHAT — stop a process we started (TERM, then KILL after 20 s); ignore others.
stop_pid() {
  local file=$1 what=$2 pid i
  if ! pid_alive "$file"; then rm -f "$file"; return 0; fi
  pid=$(cat "$file")
  log "stopping $what (pid $pid)"
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  rm -f "$file"
}

# apt_install PKG... — install Debian packages when a command is missing (CI machines start bare).
apt_install() {
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  log "installing $* from Debian's packages"
  if ! $sudo apt-get install -y -qq "$@" >/dev/null 2>&1; then
    $sudo apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null \
      || die "could not install $* with apt-get"
  fi
}

# python_tools VENV REQUIREMENTS FALLBACK_DIR: the pinned packages of REQUIREMENTS in the virtual
# environment VENV (made, or remade when the pins change), or, where no venv can be made, installed
# into FALLBACK_DIR with pip --target. Sets PY (the interpreter to run) and, for the fallback,
# PYTHONPATH. Returns non-zero when pip cannot install them.
python_tools() {
  local venv=$1 requirements=$2 fallback=$3 stamp
  stamp=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [[ -x $venv/bin/python && -f $venv/.requirements && $(cat "$venv/.requirements") == "$stamp" ]]; then
    PY="$venv/bin/python"; return 0
  fi
  if [[ -f $fallback/.requirements && $(cat "$fallback/.requirements") == "$stamp" ]]; then
    PY="python3"; export PYTHONPATH="$fallback${PYTHONPATH:+:$PYTHONPATH}"; return 0
  fi
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    log "python3 -m venv failed: installing python3-venv"
    (apt_install python3-venv) || true
    python3 -m venv "$venv" >/dev/null 2>&1 || rm -rf "$venv"
  fi
  if [[ -x $venv/bin/python ]]; then
    log "installing $(grep -c '==' "$requirements") pinned packages into $venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --root-user-action=ignore -r "$requirements" || return 1
    echo "$stamp" > "$venv/.requirements"
    PY="$venv/bin/python"
  else
    log "no virtual environment possible: installing the pinned packages into $fallback (pip --target)"
    python3 -m pip --version >/dev/null 2>&1 || (apt_install python3-pip) || true
    rm -rf "$fallback"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --target "$fallback" -r "$requirements" || return 1
    echo "$stamp" > "$fallback/.requirements"
    PY="python3"; export PYTHONPATH="$fallback${PYTHONPATH:+:$PYTHONPATH}"
  fi
}

# ensure_dev_stack: starts the dev stack (as `make run`, building first) unless it runs already,
# and stops it again when the calling script exits if it started it.
ensure_dev_stack() {
  DEV_STACK_STARTED=0
  if ! pid_alive "$VAR/run/gateway.pid"; then
    (cd "$ROOT" && cargo build --workspace --bins -q)
    "$ROOT/scripts/services.sh" start >/dev/null
    DEV_STACK_STARTED=1
  fi
  trap '[[ $DEV_STACK_STARTED == 1 ]] && "$ROOT/scripts/services.sh" stop >/dev/null 2>&1 || true' EXIT
}
