#!/usr/bin/env bash
# Runs cargo-fuzz targets (fuzz/cargo-fuzz), each for FUZZ_SECONDS (default
# 600), one after another, growing the committed corpora in fuzz/corpus/
# from them and the seeds in fuzz/seeds/ (kept apart so `cargo fuzz cmin`
# on a corpus never removes a seed).
# A crash stops the run with the input libFuzzer saved under
# fuzz/cargo-fuzz/artifacts/<target>/: copy it to fuzz/regressions/<target>/
# (named for what it found), fix the bug, and `make test` replays it for
# good. Nightly is used for fuzzing only; the product builds on stable.
#
#   tools/fuzz/run.sh                 # every target
#   tools/fuzz/run.sh uapi_get key_file
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
seconds="${FUZZ_SECONDS:-600}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/vpblu/fuzz-target}"

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "tools/fuzz/run.sh: $1 is missing: $2" >&2; exit 1; }
}
need rustup "install rustup (https://rustup.rs is not reachable here; Debian: apt-get install rustup)"
if ! rustup run nightly cargo --version >/dev/null 2>&1; then
  echo "installing the nightly toolchain (for cargo-fuzz only)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd "$root/fuzz/cargo-fuzz/fuzz_targets" && ls *.rs | sed 's/\.rs$//')
fi

cd "$root/fuzz/cargo-fuzz"
for target in "${targets[@]}"; do
  corpus="$root/fuzz/corpus/$target"
  [ -d "$corpus" ] || { echo "no corpus directory $corpus: is $target a target?" >&2; exit 1; }
  before=$(ls "$corpus" | wc -l)
  echo "== fuzzing $target for ${seconds} s (corpus: $before inputs)"
  # libFuzzer writes new inputs into the first directory only; the
  # hand-written seeds and the regressions are read, never changed.
  seeds=("$corpus")
  [ -d "$root/fuzz/seeds/$target" ] && seeds+=("$root/fuzz/seeds/$target")
  [ -d "$root/fuzz/regressions/$target" ] && seeds+=("$root/fuzz/regressions/$target")
  log="$CARGO_TARGET_DIR/fuzz-$target.log"
  mkdir -p "$CARGO_TARGET_DIR"
  started=$(date +%s)
  status=0
  cargo +nightly fuzz run --fuzz-dir . "$target" "${seeds[@]}" \
    -- -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==|SUMMARY|Test unit written)' "$log" || true
  [ "$status" -eq 0 ] || tail -40 "$log"
  after=$(ls "$corpus" | wc -l)
  echo "== $target: exit $status after $(( $(date +%s) - started )) s; corpus $before -> $after inputs"
  if [ "$status" -ne 0 ]; then
    echo "$target found a crash: see fuzz/cargo-fuzz/artifacts/$target/" >&2
    exit "$status"
  fi
done
