#!/usr/bin/env bash
# The one test command (README "Tests"): installs what the tests need, then runs
# every test. Services (the SMTP server, Redis, Dovecot, headless Chromium) are
# started by the tests themselves on free 127.0.0.1 ports.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "==> [$(date +%H:%M:%S)] $*"; }

step "checking system packages"
missing=()
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# Redis (single node and Cluster tests): the tests start their own servers.
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v cargo >/dev/null 2>&1 || { echo "cargo (Rust) is required: https://rustup.rs" >&2; exit 1; }
# Outlook add-in tests: a private Dovecot (Auto Capture over IMAP), headless
# Chromium driven by playwright-core (the task pane), xmllint (the manifest).
{ command -v dovecot >/dev/null 2>&1 && { [ -x /usr/lib/dovecot/imap ] || [ -x /usr/libexec/dovecot/imap ]; }; } \
  || missing+=(dovecot-core dovecot-imapd)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -d /usr/share/fonts/truetype/dejavu ] || missing+=(fonts-dejavu-core)   # readable screenshots
command -v xmllint >/dev/null 2>&1 || missing+=(libxml2-utils)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
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
# standardwebhooks: the independent verifier of every webhook delivery (tests/realtime.rs).
if ! python3 -c 'import standardwebhooks' 2>/dev/null; then
  python3 -m pip install -q standardwebhooks 2>/dev/null \
    || python3 -m pip install -q --break-system-packages standardwebhooks
fi
python3 -c 'import standardwebhooks' || { echo "standardwebhooks could not be installed" >&2; exit 1; }
# schemathesis: the schema-driven API tests over docs/openapi.yaml (tests/schema.rs).
if [ "$(schemathesis --version 2>/dev/null | awk '{print $NF}')" != "4.32.5" ]; then
  python3 -m pip install -q schemathesis==4.32.5 2>/dev/null \
    || python3 -m pip install -q --break-system-packages schemathesis==4.32.5
fi
command -v schemathesis >/dev/null 2>&1 || { echo "schemathesis could not be installed" >&2; exit 1; }
if ! python3 -c 'import openapi_spec_validator' 2>/dev/null; then
  python3 -m pip install -q openapi-spec-validator 2>/dev/null \
    || python3 -m pip install -q --break-system-packages openapi-spec-validator
fi

# Fuzzing (scripts/fuzz.sh): cargo-fuzz on the nightly toolchain installed beside stable.
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  step "installing cargo-fuzz 0.13.2 (the fuzz targets under fuzz/)"
  cargo install cargo-fuzz --version 0.13.2 --locked
fi

step "validating the OpenAPI description (docs/openapi.yaml)"
python3 -m openapi_spec_validator docs/openapi.yaml

step "installing the add-in test tools (playwright-core and office-addin-manifest, pinned in tests/addin/package-lock.json; no browser download: Debian's chromium is used)"
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix tests/addin --no-audit --no-fund --loglevel=error

step "building (debug, every workspace member, all targets)"
cargo build --workspace --all-targets

step "running the test suite (includes loadtest's smoke run: a few seconds of load, nothing lost or doubled)"
cargo test --workspace --all-targets

step "fuzzing each target for 10 s from its committed corpus (fuzz/, nightly cargo-fuzz, unoptimized build; fails on a crash)"
FUZZ_PROFILE=--dev ./scripts/fuzz.sh -max_total_time=10
step "all tests passed"
