#!/usr/bin/env bash
# Runs the fuzz targets (all, or those named as arguments) for FUZZ_SECONDS each (default 60),
# one after the other; installs cargo-fuzz when it is missing. Stops at the first target that
# crashes, panics or hangs, naming the input that did it, and exits non-zero.
#
#   bash fuzz/run.sh                      # every target, 60 s each (what `make fuzz` runs)
#   FUZZ_SECONDS=600 bash fuzz/run.sh ring
#
# Stable Rust is enough: the targets are built without a sanitizer (`-s none`; ringlb's own code
# has no `unsafe`), with debug assertions and overflow checks. FUZZ_SANITIZER=address builds with
# AddressSanitizer instead, which needs a nightly flag: RUSTC_BOOTSTRAP=1 is then set for the build.
# The corpora grow in fuzz/corpus/<target> and crashes land in fuzz/artifacts/<target> (neither is
# committed); fuzz/corpus-seeds/ holds the committed seeds.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
SANITIZER="${FUZZ_SANITIZER:-none}"
ALL_TARGETS=(manifest_parse manifest_edit admin_body ring http_heads)
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=("${ALL_TARGETS[@]}"); fi
if [ "$SANITIZER" != none ]; then export RUSTC_BOOTSTRAP=1; fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

echo "==> building the fuzz targets (sanitizer: $SANITIZER)"
cargo fuzz build -s "$SANITIZER"

for target in "${targets[@]}"; do
  case "$target" in
    manifest_parse | manifest_edit) seeds=fuzz/corpus-seeds/manifest; dict=fuzz/manifest.dict ;;
    admin_body) seeds=fuzz/corpus-seeds/admin_body; dict=fuzz/admin_body.dict ;;
    ring) seeds=""; dict="" ;;
    http_heads) seeds=fuzz/corpus-seeds/http; dict=fuzz/http.dict ;;
    *) echo "unknown fuzz target '$target' (known: ${ALL_TARGETS[*]})" >&2; exit 2 ;;
  esac
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  log="$(mktemp)"
  echo "==> fuzzing $target for ${FUZZ_SECONDS}s"
  args=(-max_total_time="$FUZZ_SECONDS" -timeout=30 -print_final_stats=1)
  if [ -n "$dict" ]; then args+=(-dict="$dict"); fi
  # shellcheck disable=SC2086 # $seeds is one directory or nothing
  if ! cargo fuzz run -s "$SANITIZER" "$target" "$corpus" $seeds -- "${args[@]}" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "FUZZ FAILURE: $target crashed; the input is in fuzz/artifacts/$target/ (full log: $log)" >&2
    exit 1
  fi
  grep -E '^Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb' "$log" | sed "s/^/  $target: /"
  rm -f "$log"
done
echo "==> no crash in: ${targets[*]}"
