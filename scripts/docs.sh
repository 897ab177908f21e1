#!/usr/bin/env bash
# The docs book (docs/, mdBook) and its generated API reference (docs/src/reference/).
#   scripts/docs.sh install    mdBook $MDBOOK_VERSION into ~/.cache/metastream with cargo install,
#                              unless it is there (about 1.5 min, once, on 2 cores)
#   scripts/docs.sh reference  rewrites docs/src/reference/ from the OpenAPI documents the
#                              listeners serve, as `gateway openapi public|admin` and
#                              `consumer-api openapi public` print them
#                              (scripts/openapi_reference.py)
#   scripts/docs.sh check      fails, naming the pages and showing the diff, when the committed
#                              reference differs from what the documents give
#   scripts/docs.sh build      install, check, `mdbook build` into var/book (a chapter SUMMARY.md
#                              lists but that is missing fails it), then every relative link and
#                              anchor: in the Markdown (scripts/check_docs_links.py) and in the
#                              built HTML (scripts/check_book_html.py)
#   scripts/docs.sh test       = build (make test)
# BIN_DIR (default target/debug, or $CARGO_TARGET_DIR/debug) holds the built gateway and
# consumer-api: build them first (`cargo build --workspace --bins`, as make test does).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

MDBOOK_VERSION=0.5.4
MDBOOK_DIR="$CACHE/mdbook-$MDBOOK_VERSION"
MDBOOK="$MDBOOK_DIR/bin/mdbook"
BIN_DIR="${BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/debug}"
REFERENCE=docs/src/reference
BOOK="$VAR/book"
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

install_mdbook() {
  if [[ -x $MDBOOK && $("$MDBOOK" --version) == "mdbook v$MDBOOK_VERSION" ]]; then return 0; fi
  local started=$SECONDS
  command -v cargo >/dev/null || die "cargo is needed to install mdBook"
  log "installing mdBook $MDBOOK_VERSION into $MDBOOK_DIR (cargo install, once)"
  # Only the search feature: `serve` and `watch` would build a web server and a file watcher
  # that building the book does not use.
  cargo install mdbook --locked --version "$MDBOOK_VERSION" --no-default-features \
    --features search --root "$MDBOOK_DIR" --quiet \
    || die "cargo install mdbook $MDBOOK_VERSION failed"
  log "mdBook $MDBOOK_VERSION installed in $(( SECONDS - started ))s"
}

# generate OUT: the reference pages, written into OUT from the documents the services print.
generate() {
  local out=$1 documents="$SCRATCH/documents" pair service listener
  for service in gateway consumer-api; do
    [[ -x $BIN_DIR/$service ]] \
      || die "$BIN_DIR/$service is missing: build it first (cargo build --workspace --bins)"
  done
  rm -rf "$documents" && mkdir -p "$documents"
  for pair in gateway:public gateway:admin consumer-api:public; do
    service=${pair%%:*} listener=${pair#*:}
    "$BIN_DIR/$service" openapi "$listener" > "$documents/$service-$listener.json" \
      || die "$BIN_DIR/$service openapi $listener failed"
  done
  python3 scripts/openapi_reference.py "$documents" "$out" >/dev/null \
    || die "scripts/openapi_reference.py could not write the reference (above)"
}

reference() {
  generate "$SCRATCH/generated"
  rm -rf "$REFERENCE" && cp -r "$SCRATCH/generated" "$REFERENCE"
  log "wrote $REFERENCE/ from the services' OpenAPI documents"
}

check() {
  local fresh="$SCRATCH/generated"
  generate "$fresh"
  if ! diff -r -q "$REFERENCE" "$fresh" >/dev/null 2>&1; then
    { diff -r -q "$REFERENCE" "$fresh"; diff -r -u "$REFERENCE" "$fresh"; } \
      | sed "s|$fresh|(generated)|g" >&2 || true
    die "$REFERENCE/ differs from the OpenAPI documents: run scripts/docs.sh reference, commit"
  fi
  log "$REFERENCE/ matches the OpenAPI documents"
}

build() {
  local started=$SECONDS
  install_mdbook
  check
  rm -rf "$BOOK"
  MDBOOK_LOG=warn "$MDBOOK" build docs --dest-dir "$BOOK" || die "mdbook build failed"
  python3 scripts/check_docs_links.py
  python3 scripts/check_book_html.py "$BOOK"
  log "docs: the book is in $BOOK ($(( SECONDS - started ))s)"
}

case "${1:-}" in
  install) install_mdbook ;;
  reference) reference ;;
  check) check ;;
  build | test) build ;;
  *) die "usage: scripts/docs.sh install|reference|check|build|test" ;;
esac
