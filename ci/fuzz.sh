#!/usr/bin/env bash
# Builds the codec fuzz targets (`fuzz/`, cargo-fuzz) and runs each for a bounded time.
#
#   ci/fuzz.sh            build, then run every target for FUZZ_SECONDS (default 20) seconds
#   ci/fuzz.sh --build    build only
#
# cargo-fuzz needs a nightly toolchain; this installs nightly (rustup) and cargo-fuzz (cargo
# install) when they are missing, and fails loudly when it cannot: a CI that skipped the
# fuzz targets silently would stop noticing that they no longer build.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export CARGO_TERM_COLOR=never

secs="${FUZZ_SECONDS:-20}"
build_only=false
[[ "${1:-}" == "--build" ]] && build_only=true

fail() { echo "FAILED: $*" >&2; exit 1; }

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal ||
    fail "the nightly toolchain cannot be installed; cargo-fuzz needs it"
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked ||
    fail "cargo-fuzz cannot be installed (cargo install cargo-fuzz)"
fi

targets=$(cargo +nightly fuzz list)
[[ -n "$targets" ]] || fail "no fuzz targets in fuzz/"

echo "=== cargo fuzz build ($(echo $targets))"
cargo +nightly fuzz build

$build_only && exit 0
for t in $targets; do
  echo "=== cargo fuzz run $t for ${secs} s"
  # -rss_limit_mb: a decoder that buffered without bound would trip it. AddressSanitizer's
  # quarantine alone takes some 250 MB (a 10 s run reached 374 MB), hence the headroom.
  cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -rss_limit_mb=1536
done
echo "=== every fuzz target ran ${secs} s without a failure"
