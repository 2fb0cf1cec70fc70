#!/usr/bin/env bash
# The test command README.md gives. From a fresh clone: services up, release build, all tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "test: cargo not found; installing the Rust toolchain with rustup"
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  . "$HOME/.cargo/env"
fi

bash .ci/services.sh

export BARAZA_TEST_REDIS_URL="${BARAZA_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
export BARAZA_TEST_POSTGRES_URL="${BARAZA_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
# Snapshots are reviewed and committed; CI never writes new ones.
export INSTA_UPDATE=no CI=true

started=$(date +%s)
cargo build --release --locked
cargo test --locked --no-fail-fast
echo "test: build and tests took $(( $(date +%s) - started )) s"
