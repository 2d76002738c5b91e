#!/usr/bin/env bash
# The project's checks, in the order a reviewer cares about them: formatting, lints, the test
# suite (the README's test command), docs, and type checks of every other target: std-net on
# Windows, kqueue and std-net on macOS and the BSDs.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n=== %s\n' "$*"; }

# Connection-churn tests hold thousands of sockets at once (client and server in one process).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "tests (README): cargo test --workspace"
cargo test --workspace

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

step "each backend alone (Cargo features), clippy -D warnings"
for f in uring epoll stdnet; do
  cargo clippy -p gnet --no-default-features --features "$f" --all-targets -- -D warnings
done

# Cross checks need a target's std: `rustup target add` installs it, loudly, and a target
# that cannot be installed fails the run (nothing is skipped in silence).
need_target() {
  local t=$1
  if ! rustup target list --installed 2>/dev/null | grep -qx "$t"; then
    echo "installing the $t target"
    rustup target add "$t" || {
      echo "FAILED: the $t target cannot be installed; the $t check cannot run" >&2
      exit 1
    }
  fi
}

step "the std-net backend for Windows, with and without the signal feature, clippy -D warnings"
need_target x86_64-pc-windows-gnu
for f in stdnet stdnet,signal; do
  cargo clippy -p gnet --no-default-features --features "$f" --target x86_64-pc-windows-gnu -- -D warnings
done
# What the Windows job of .github/workflows/ci.yml runs: the libraries' own tests (the
# behavioural tests in tests/ are Unix-only).
cargo clippy --workspace --lib --profile test --target x86_64-pc-windows-gnu -- -D warnings

# kqueue (macOS and the BSDs) cannot run here: these are type checks (clippy) with the test
# suites included (--all-targets: the conformance suite and the behavioural tests, kqueue in
# their backend lists). Nothing is linked (that needs each system's SDK or sysroot). The
# default features build kqueue and stdnet together; each alone is checked too (the library
# only: the tests are the same code).
for t in x86_64-apple-darwin aarch64-apple-darwin x86_64-unknown-freebsd x86_64-unknown-netbsd; do
  step "kqueue and stdnet for $t, clippy --all-targets -D warnings"
  need_target "$t"
  cargo clippy --workspace --all-targets --target "$t" -- -D warnings
  for f in kqueue stdnet; do
    cargo clippy -p gnet --no-default-features --features "$f" --target "$t" -- -D warnings
  done
done

# OpenBSD and DragonFly have no prebuilt std: they are checked with the nightly toolchain,
# which builds std from source (-Zbuild-std, needs rust-src). Where nightly or rust-src cannot
# be installed, the run says so loudly and goes on: the issue that asks for these checks
# allows that for these two only. A check that runs and fails fails the run. The library
# only, not --all-targets: building the test harness's dependencies from source for two more
# systems would double the time of this script.
step "kqueue and stdnet for OpenBSD and DragonFly (nightly, -Zbuild-std), clippy -D warnings"
tier3=(x86_64-unknown-openbsd x86_64-unknown-dragonfly)
nightly_ready() {
  rustup +nightly component list --installed 2>/dev/null | grep -q '^rust-src' &&
    cargo +nightly clippy --version >/dev/null 2>&1
}
if ! nightly_ready; then
  echo "installing the nightly toolchain with rust-src and clippy"
  rustup toolchain install nightly --profile minimal --component rust-src,clippy || true
fi
if nightly_ready; then
  for t in "${tier3[@]}"; do
    cargo +nightly clippy -Zbuild-std=std,panic_abort -p gnet --no-default-features \
      --features kqueue,stdnet --target "$t" -- -D warnings
  done
else
  {
    echo "########################################################################################"
    echo "# NOT CHECKED: ${tier3[*]}"
    echo "# The nightly toolchain with rust-src and clippy cannot be installed here, so these"
    echo "# targets, which have no prebuilt std, were not even type-checked in this run."
    echo "########################################################################################"
  } >&2
fi

step "the stated rust-version (1.80) builds gnet and gnet-backends with their tests"
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
if ! rustup run "$msrv" rustc --version >/dev/null 2>&1; then
  rustup toolchain install "$msrv" --profile minimal || {
    echo "FAILED: Rust $msrv (the stated rust-version) cannot be installed; the check cannot run" >&2
    exit 1
  }
fi
cargo "+$msrv" check -p gnet -p gnet-backends --all-targets

step "the codec fuzz targets: built, and each run for ${FUZZ_SECONDS:=10} s (ci/fuzz.sh; nightly, cargo-fuzz)"
FUZZ_SECONDS="$FUZZ_SECONDS" bash ci/fuzz.sh

step "done"
