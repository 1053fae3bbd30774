#!/usr/bin/env bash
# The project's setup step, for a fresh machine (as root) and for CI alike: the pinned
# user-space toolchain first (cargo needs it before any `cargo xtask` can start, and
# rustup here does not install toolchains by itself), then `cargo xtask setup` (Debian
# packages, the dated nightly with rust-src, bpf-linker). Idempotent and quick when all
# is there.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$HOME/.cargo/bin:$PATH"
rustup toolchain install "$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)" \
  --profile minimal -c clippy,rustfmt --no-self-update
cargo xtask setup
