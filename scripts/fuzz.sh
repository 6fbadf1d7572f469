#!/usr/bin/env bash
# Runs every fuzz target under fuzz/ (cargo-fuzz, libFuzzer, nightly toolchain)
# from the committed corpus, failing on the first crash. Used by the test command
# with a short budget; for long runs give more, e.g.
#   nice -n 19 scripts/fuzz.sh -runs=10000000
# Arguments are passed to libFuzzer (default: -max_total_time=10 per target).
# New inputs go to a scratch directory, not the committed corpus.
# FUZZ_PROFILE picks cargo-fuzz's build: -O (default: optimized, with debug
# assertions, for long runs) or --dev (unoptimized: builds in about half the
# time, which is what the test command's brief run needs). FUZZ_SANITIZER picks
# the sanitizer: address (default) or none (about 10x the executions per second
# on the prepare and router targets, for runs of 10^7).
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
((${#args[@]})) || args=(-max_total_time=10)
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch" /tmp/mailbeacon-fuzz-router-* /dev/shm/mailbeacon-fuzz-router-*' EXIT
profile="${FUZZ_PROFILE:--O}"
sanitizer="${FUZZ_SANITIZER:-address}"
(cd fuzz && cargo +nightly fuzz build "$profile" -s "$sanitizer")
for target in prepare activities token router; do
  echo "==> [$(date +%H:%M:%S)] fuzzing $target (${args[*]})"
  mkdir -p "$scratch/$target"
  status=0
  (cd fuzz && cargo +nightly fuzz run "$profile" -s "$sanitizer" "$target" "$scratch/$target" "corpus/$target" -- \
     "${args[@]}" -print_final_stats=1) >"$scratch/$target.log" 2>&1 || status=$?
  # libFuzzer's progress lines are in the log; its final stats and any crash here.
  grep -E 'stat::number_of_executed_units|stat::new_units_added|ERROR|panicked|SUMMARY|crash-' "$scratch/$target.log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$scratch/$target.log" >&2
    echo "fuzz target $target failed (artifact under fuzz/artifacts/$target/)" >&2
    exit 1
  fi
done
