#!/bin/bash
# Where the server's CPU goes, per thread, under load: each thread's CPU (% of
# one core), voluntary and involuntary context switches a second, and its CPU
# per answered request, over 5 s in the middle of a `loadtest compare` run
# (`/proc/PID/task/*/stat` and `status`). On a two-core box shared with the
# generator and Redis this is what tells a saturated request thread from one
# that waits on a commit cycle, and whether work moved to another thread left
# the request thread or only added CPU.
#
#   loadtest/scripts/thread_cpu.sh BIN [embedded|redis|cluster] [CONNS] [pixel|click]
#
# BIN is a release build of mailbeacon (the binary itself: it is copied under
# a name of its own, by which its threads are found; environment variables
# given to this script reach it). Run from the repository root after
# `cargo build --release -p loadtest`.
set -euo pipefail
BIN=$(readlink -f "$1"); TARGET=${2:-embedded}; CONNS=${3:-64}; KIND=${4:-pixel}
SCRATCH=$(mktemp -d)
# The process is found by its name: a copy with a name of its own.
cp "$BIN" "$SCRATCH/mb-threads"
# shellcheck source=under_load.sh
. "$(dirname "$0")/under_load.sh"
under_load "$SCRATCH/mb-threads" mb-threads "$TARGET" "$CONNS" "$KIND" "$SCRATCH/report.md"
snap() {
  for t in /proc/"$P"/task/*; do
    [ -r "$t/stat" ] || continue
    printf '%s %s %s %s %s\n' "$(basename "$t")" "$(tr ' ' _ < "$t/comm")" \
      "$(awk '{print $14+$15}' "$t/stat")" \
      "$(awk '/^voluntary_ctxt_switches/ {print $2}' "$t/status")" \
      "$(awk '/^nonvoluntary_ctxt_switches/ {print $2}' "$t/status")"
  done | LC_ALL=C sort
}
TICK=$(getconf CLK_TCK)
snap > "$SCRATCH/a"; sleep 5; snap > "$SCRATCH/b"
wait "$LOAD" || true
RATE=$(grep -E "^\| 1 \| $KIND " "$SCRATCH/report.md" | head -1 | awk -F'|' '{print $6 + 0}')
echo "$TARGET, $KIND, $CONNS connections: $RATE req/s over the whole run"
printf '%-18s %8s %12s %12s %10s\n' thread "CPU %" "vol. sw/s" "invol. sw/s" "µs/req"
# Threads alive in both snapshots, by id; the same name may appear more than
# once (a pool), each on its own line.
LC_ALL=C join "$SCRATCH/a" "$SCRATCH/b" | awk -v tick="$TICK" -v rate="$RATE" '{
  cpu = ($7 - $3) * 100 / tick / 5; vol = ($8 - $4) / 5; inv = ($9 - $5) / 5;
  if (cpu < 0.5 && vol < 10) next;
  printf "%-18s %8.1f %12.0f %12.0f %10.1f\n", $2, cpu, vol, inv, (rate ? cpu * 1e4 / rate : 0) }'
rm -rf "$SCRATCH"
