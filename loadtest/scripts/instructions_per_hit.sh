#!/bin/bash
# Instructions the request thread executes per answered hit, counted by
# valgrind's callgrind: repeatable for the same binary and inputs whatever
# else the machine is doing, where req/s and CPU time on this shared box swing
# by 40 % from one run to the next. It shows a change to the request thread's
# own work (user space: parsing, the token, the event, hyper, tokio, malloc)
# that is too small for a throughput run to show. What it does not count:
# the kernel (the sends and wake-ups) and time spent waiting.
#
#   loadtest/scripts/instructions_per_hit.sh BIN [embedded|redis|cluster] [CONNS] [pixel|click]
#
# Two `loadtest compare` runs under callgrind, 5 s and 15 s of load; the
# difference of the two counts over the difference of their answered hits is
# the cost of one hit, without start-up, and without the API (preparing the
# emails, reading the reports for the check). Under valgrind the server runs
# about 50 times slower, so batches are smaller than at full speed: compare
# builds with each other, not with a full-speed run.
# BIN is a release build of mailbeacon; environment variables given to this
# script reach it. Needs valgrind. Run from the repository root after
# `cargo build --release -p loadtest`.
set -euo pipefail
BIN=$(readlink -f "$1"); TARGET=${2:-embedded}; CONNS=${3:-16}; KIND=${4:-pixel}
command -v valgrind > /dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
SCRATCH=$(mktemp -d)
count() { # DURATION: prints "instructions of the main thread, answered hits"
  local d=$1
  printf '#!/bin/sh\nexec valgrind --tool=callgrind --separate-threads=yes --dump-instr=no --callgrind-out-file=%s/cg.%s.%%p %s "$@"\n' \
    "$SCRATCH" "$d" "$BIN" > "$SCRATCH/run.sh"
  chmod +x "$SCRATCH/run.sh"
  target/release/loadtest compare --mailbeacon "$SCRATCH/run.sh" --targets "$TARGET" --kinds "$KIND" \
    --conns "$CONNS" --duration "$d" --emails 200 --recipients 1 --links 1 --faults none --no-wrk \
    --out "$SCRATCH/r.$d.md" > "$SCRATCH/log.$d" 2>&1
  # Thread 1 is the main thread: the request runtime runs on it. The API's
  # share (preparing the emails, and reading the reports, which grows with
  # the events) is left out: what is left is the hits' own cost.
  local ir api hits
  ir=$(awk '/^summary:/ {print $2; exit}' "$SCRATCH"/cg."$d".*-01)
  api=$(callgrind_annotate --inclusive=yes "$SCRATCH"/cg."$d".*-01 2>/dev/null |
    awk '/:mailbeacon::http::api::\{\{closure\}\}( \[|$)/ {gsub(",", "", $1); if ($1 > m) m = $1} END {print m + 0}')
  ir=$((ir - api))
  hits=$(grep -E "^\| 1 \| $KIND " "$SCRATCH/r.$d.md" | tail -1 | awk -F'|' '{print $7 + 0}')
  echo "$ir $hits"
}
A=$(count 5); B=$(count 15)
echo "$A $B" | awk -v t="$TARGET" -v k="$KIND" -v c="$CONNS" '{
  printf "%s, %s, %s connections: %d and %d hits answered; request thread %.0f instructions per hit\n",
    t, k, c, $2, $4, ($3 - $1) / ($4 - $2) }'
rm -rf "$SCRATCH"
