# Shared by the scripts that sample the server in the middle of a `loadtest
# compare` run (sourced, not run).
#
#   under_load MB NAME TARGET CONNS KIND OUT
#
# starts `loadtest compare` in the background with MB as the mailbeacon binary
# (or a script that execs the binary NAME), writing its report to OUT, sets
# LOAD to its pid, waits until the process named NAME burns more than 30 % of
# a core (the load has started), then two more seconds, and sets P to its pid.
under_load() {
  local mb=$1 name=$2 target=$3 conns=$4 kind=$5 out=$6 a b
  target/release/loadtest compare --mailbeacon "$mb" --targets "$target" --kinds "$kind" \
    --conns "$conns" --duration 15 --emails 1000 --recipients 1 --links 1 --faults none --no-wrk \
    --out "$out" > "$out.log" 2>&1 &
  LOAD=$!
  P=
  for _ in $(seq 1 600); do
    P=$(pgrep -x "$name" | head -1 || true)
    if [ -n "$P" ]; then
      a=$(awk '{print $14+$15}' "/proc/$P/stat"); sleep 1
      b=$(awk '{print $14+$15}' "/proc/$P/stat" 2>/dev/null || echo "$a")
      [ $((b - a)) -gt 30 ] && break
    else sleep 1; fi
  done
  sleep 2
}
