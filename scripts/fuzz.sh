#!/usr/bin/env bash
# `make fuzz`: runs the cargo-fuzz (libFuzzer) targets in fuzz/ for FUZZ_SECONDS each, one after
# the other, and exits non-zero when one crashes (a panic, a failed invariant, a leak, a timeout
# or running out of memory), naming the input it saved and how to replay and minimize it.
# See fuzz/README.md for what each target checks.
#
# Usage: scripts/fuzz.sh [target...]      (every target in fuzz/fuzz_targets/ when none is named)
# Environment: FUZZ_SECONDS (60 per target), FUZZ_MAX_LEN (65536 bytes per input),
#   FUZZ_RSS_LIMIT_MB (2048), FUZZ_TIMEOUT (10 s per input), FUZZ_TARGET_DIR (fuzz/target: kept
#   apart from the workspace's target/, whose builds use other flags).
#
# The seed corpora in fuzz/corpus/ are only read; what libFuzzer finds goes to a working corpus
# under the target dir (kept between runs, ignored by git), so the committed seeds stay small.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_MAX_LEN=${FUZZ_MAX_LEN:-65536}
FUZZ_RSS_LIMIT_MB=${FUZZ_RSS_LIMIT_MB:-2048}
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-10}
FUZZ_DIR="$ROOT/fuzz"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$FUZZ_DIR/target}"
[[ $FUZZ_SECONDS =~ ^[1-9][0-9]*$ ]] || die "FUZZ_SECONDS must be a whole number of seconds, not '$FUZZ_SECONDS'"

# libFuzzer instrumentation needs a nightly compiler; cargo-fuzz is a cargo subcommand that CI
# machines do not have until it is installed here.
if ! cargo +nightly --version >/dev/null 2>&1; then
  command -v rustup >/dev/null || die "fuzzing needs a nightly Rust toolchain and rustup to install it"
  log "installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

if (($#)); then
  targets=("$@")
else
  targets=()
  for file in "$FUZZ_DIR"/fuzz_targets/*.rs; do targets+=("$(basename "$file" .rs)"); done
fi
for t in "${targets[@]}"; do
  [[ -f $FUZZ_DIR/fuzz_targets/$t.rs ]] || die "no fuzz target '$t' (fuzz/fuzz_targets/$t.rs)"
done

cd "$ROOT"
log "building the fuzz targets (nightly, release with debug assertions, AddressSanitizer) in $CARGO_TARGET_DIR"
start=$SECONDS
if (($#)); then
  for t in "${targets[@]}"; do cargo +nightly fuzz build "$t"; done
else
  cargo +nightly fuzz build
fi
log "built in $((SECONDS - start)) s"

mkdir -p "$CARGO_TARGET_DIR/fuzz-logs"
summary=()
failed=0
for t in "${targets[@]}"; do
  work="$CARGO_TARGET_DIR/fuzz-corpus/$t"
  artifacts="$FUZZ_DIR/artifacts/$t"
  logfile="$CARGO_TARGET_DIR/fuzz-logs/$t.log"
  mkdir -p "$work" "$artifacts" "$FUZZ_DIR/corpus/$t"
  marker=$(mktemp)
  args=(-max_total_time="$FUZZ_SECONDS" -max_len="$FUZZ_MAX_LEN" -rss_limit_mb="$FUZZ_RSS_LIMIT_MB"
    -timeout="$FUZZ_TIMEOUT" -print_final_stats=1)
  [[ -f $FUZZ_DIR/dicts/$t.dict ]] && args+=(-dict="$FUZZ_DIR/dicts/$t.dict")

  log "fuzzing $t for ${FUZZ_SECONDS}s (log: $logfile)"
  start=$SECONDS
  # The working corpus comes first: libFuzzer writes the inputs it finds into the first one.
  if cargo +nightly fuzz run "$t" "$work" "$FUZZ_DIR/corpus/$t" -- "${args[@]}" >"$logfile" 2>&1; then
    result=ok
  else
    result=FAILED
    failed=1
  fi
  runs=$(sed -n 's/^Done \([0-9]*\) runs in .*/\1/p' "$logfile" | tail -n1)
  [[ -n $runs ]] || runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$logfile" | tail -n1)
  summary+=("$(printf '%-16s %6ss %12s execs  %s' "$t" "$((SECONDS - start))" "${runs:-?}" "$result")")

  if [[ $result == FAILED ]]; then
    tail -n 60 "$logfile" >&2
    mapfile -t found < <(find "$artifacts" -type f -newer "$marker" \
      \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | sort)
    if ((${#found[@]})); then
      for artifact in "${found[@]}"; do
        rel=${artifact#"$ROOT"/}
        printf '\n\033[1;31m[metastream] %s found a failing input:\033[0m %s\n' "$t" "$rel" >&2
        printf '  replay:     cargo +nightly fuzz run %s %s\n' "$t" "$rel" >&2
        printf '  minimize:   cargo +nightly fuzz tmin %s %s\n' "$t" "$rel" >&2
        printf '  then add the (minimized) bytes to crates/domain/tests/fuzz_regressions.rs (fuzz/README.md)\n' >&2
      done
    else
      printf '\n\033[1;31m[metastream] %s failed without saving an input; see %s\033[0m\n' "$t" "$logfile" >&2
    fi
  fi
  rm -f "$marker"
done

printf '\n%-16s %7s %12s\n' target time runs
printf '%s\n' "${summary[@]}"
((failed == 0)) || die "a fuzz target failed (above)"
log "no crash in ${#targets[@]} target(s), ${FUZZ_SECONDS}s each"
