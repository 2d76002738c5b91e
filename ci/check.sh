#!/usr/bin/env bash
# The project's checks, in the order a reviewer cares about them: formatting, lints, the test
# suite (the README's test command), docs, and a portability check of the std-net backend.
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

step "the std-net backend for Windows, with and without the signal feature, clippy -D warnings"
if ! rustup target list --installed 2>/dev/null | grep -q x86_64-pc-windows-gnu; then
  rustup target add x86_64-pc-windows-gnu || {
    echo "FAILED: the x86_64-pc-windows-gnu target cannot be installed; the Windows check cannot run" >&2
    exit 1
  }
fi
for f in stdnet stdnet,signal; do
  cargo clippy -p gnet --no-default-features --features "$f" --target x86_64-pc-windows-gnu -- -D warnings
done

step "the stated rust-version (1.80) builds gnet and gnet-backends with their tests"
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
if ! rustup run "$msrv" rustc --version >/dev/null 2>&1; then
  rustup toolchain install "$msrv" --profile minimal || {
    echo "FAILED: Rust $msrv (the stated rust-version) cannot be installed; the check cannot run" >&2
    exit 1
  }
fi
cargo "+$msrv" check -p gnet -p gnet-backends --all-targets

step "done"
