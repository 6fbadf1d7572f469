#!/bin/bash
# The shape of group commit under load, independent of how fast the disk is
# this hour: events per committed batch (the server's `mailbeacon_batch_size`
# histogram) and fsyncs per 100 events (perf trace on the store's process:
# redis-server for the Redis targets, the server itself for the embedded
# journal), over 5 s in the middle of a `loadtest compare` run.
#
#   loadtest/scripts/commit_shape.sh BIN [redis|cluster|embedded] [CONNS]
#
# BIN is a release build of mailbeacon. Needs perf (linux-perf) and curl; run
# from the repository root after `cargo build --release -p loadtest`. Rates
# from the same run are printed too, but on a shared disk they swing several
# times over from one run to the next; the two ratios above move far less.
set -euo pipefail
BIN=$(readlink -f "$1"); TARGET=${2:-redis}; CONNS=${3:-64}
SCRATCH=$(mktemp -d); PORT=$((40000 + RANDOM % 20000))
cp "$BIN" "$SCRATCH/mb-shape"
printf '#!/bin/sh\nMAILBEACON_METRICS_LISTEN=127.0.0.1:%s exec %s/mb-shape "$@"\n' "$PORT" "$SCRATCH" > "$SCRATCH/run.sh"
chmod +x "$SCRATCH/run.sh"
# shellcheck source=under_load.sh
. "$(dirname "$0")/under_load.sh"
under_load "$SCRATCH/run.sh" mb-shape "$TARGET" "$CONNS" pixel "$SCRATCH/report.md"
WHO=$P; [ "$TARGET" != embedded ] && WHO=$(pgrep -f redis-server | head -1)
batches() { curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^mailbeacon_batch_size_(sum|count)/ {printf "%s ", $2}'; }
A=$(batches)
timeout -s INT 5 perf trace -s -e fdatasync -p "$WHO" > "$SCRATCH/trace" 2>&1 || true
B=$(batches)
F=$(awk '$1 == "fdatasync" {c += $2; t += $4} END {print c + 0, t + 0}' "$SCRATCH/trace")
echo "$A $B $F" | awk -v t="$TARGET" -v c="$CONNS" '{ev = $3 - $1; n = $4 - $2;
  printf "%s, %s connections: %.0f events/s, %.1f events per batch, %d fsyncs (%.2f per 100 events, %.3f ms each)\n",
  t, c, ev / 5, ev / n, $5, $5 * 100 / ev, ($5 ? $6 / $5 : 0)}'
wait "$LOAD" || true
grep -E "^\| 1 \| pixel" "$SCRATCH/report.md" | head -1 | awk -F'|' '{print "whole run:", $6, "req/s, p99", $8, "ms, server us/req", $13}'
rm -rf "$SCRATCH"
