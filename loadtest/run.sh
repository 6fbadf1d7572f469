#!/usr/bin/env bash
# The full load-test comparison, from a fresh machine: installs what is missing
# (Debian: nginx, wrk, redis-server, redis-tools, libnginx-mod-http-lua,
# lua-nginx-redis), builds the workspace in release
# mode, then runs every target side by side and every fault mode, and writes the
# Markdown report to loadtest/last-run.md (also printed).
#
#   ./loadtest/run.sh                       # everything: ~15 min with the defaults
#   ./loadtest/run.sh --reps 3              # any `loadtest compare` option passes through
#   MAILBEACON_REDIS_BIN=/path/to/mailbeacon ./loadtest/run.sh   # Redis targets from another build
#   NO_INSTALL=1 ./loadtest/run.sh          # skip apt-get
#
# Everything binds 127.0.0.1; every run is bounded in time; only processes this
# starts are stopped, by PID. Scratch: $TMPDIR/mailbeacon-loadtest/run-*, removed
# after a passing run (the data directories take gigabytes; --keep-scratch keeps it).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "==> [$(date +%H:%M:%S)] $*" >&2; }

if [[ "${NO_INSTALL:-0}" != 1 ]]; then
  need=()
  command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
  command -v wrk >/dev/null 2>&1 || need+=(wrk)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
  command -v timeout >/dev/null 2>&1 || need+=(coreutils)
  [[ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ]] || need+=(libnginx-mod-http-lua)
  [[ -f /usr/share/lua/5.1/nginx/redis.lua ]] || need+=(lua-nginx-redis)
  if ((${#need[@]})); then
    step "installing ${need[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo (Rust) is required: https://rustup.rs" >&2; exit 1; }

step "building (release: mailbeacon, loadtest, hyper-min)"
cargo build --release --workspace --bins

args=(--out loadtest/last-run.md)
if [[ -n "${MAILBEACON_REDIS_BIN:-}" ]]; then
  args+=(--mailbeacon-redis "$MAILBEACON_REDIS_BIN")
fi
step "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
step "running: target/release/loadtest compare ${args[*]} $*"
exec target/release/loadtest compare "${args[@]}" "$@"
