#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for N seconds each with the nightly toolchain.
# Usage: scripts/fuzz.sh [SECONDS per target, default 60] [TARGET ...]
# Seeds come from fuzz/seeds/<target>; the growing corpus lives in target/fuzz-corpus/<target>
# (not committed); a crash is written to fuzz/artifacts/<target>/ and stops the script.
# Prints, per target, libFuzzer's final line: runs, coverage (cov), features (ft), corpus size.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(body json_mapping v2_request grpc_request tree_models)
command -v cargo-fuzz > /dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
for target in "${targets[@]}"; do
  corpus=target/fuzz-corpus/$target
  mkdir -p "$corpus"
  cp -n fuzz/seeds/"$target"/* "$corpus"/ 2> /dev/null || true
  start=$SECONDS
  log=target/fuzz-$target.log
  cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$corpus" -- \
    -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=65536 > "$log" 2>&1 \
    || { echo "$target: FAILED (see $log and fuzz/artifacts/$target/)"; tail -30 "$log"; exit 1; }
  # The last status line (#runs, cov, ft, corp) and libFuzzer's "Done N runs in S second(s)".
  status=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -1 || true)
  echo "$target ($((SECONDS - start)) s): ${done_line:-?}; ${status:-no status line, see $log}"
done
