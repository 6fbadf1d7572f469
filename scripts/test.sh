#!/usr/bin/env bash
# The one test command (README "Tests"): installs what the tests need, then runs
# every test. Services (the SMTP server, and later Redis, Dovecot, Chromium) are
# started by the tests themselves on free 127.0.0.1 ports.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "==> [$(date +%H:%M:%S)] $*"; }

step "checking system packages"
missing=()
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v cargo >/dev/null 2>&1 || { echo "cargo (Rust) is required: https://rustup.rs" >&2; exit 1; }
if ((${#missing[@]})); then
  step "installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

step "installing Python test tools (aiosmtpd: the SMTP server the delivery tests talk to)"
if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
  python3 -m pip install -q aiosmtpd 2>/dev/null \
    || python3 -m pip install -q --break-system-packages aiosmtpd
fi
python3 -c 'import aiosmtpd' || { echo "aiosmtpd could not be installed" >&2; exit 1; }

step "building (debug, every workspace member, all targets)"
cargo build --workspace --all-targets

step "running the test suite (includes loadtest's smoke run: a few seconds of load, nothing lost or doubled)"
cargo test --workspace --all-targets
step "all tests passed"
