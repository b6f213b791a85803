#!/usr/bin/env bash
# Runs every test cairn has, on a fresh machine with only the Rust toolchain,
# cargo-nextest, gcc and Python 3. Installs whatever else the tests need
# (cargo-nextest if missing; openssl with apt-get if missing; moto's S3
# server into target/s3-venv).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "cargo-nextest not found; installing it with cargo" >&2
  cargo install --locked cargo-nextest
fi

# The status page's browser test (tests/serve_api.rs) loads the page in
# headless Chromium, from Debian's package (CI runs as root).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "chromium not found; installing it with apt-get" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "warning: chromium not found; tests/serve_api.rs's browser test will fail (apt-get install chromium)" >&2
  fi
fi

# tests/serve_repo.rs makes its TLS certificates with the openssl tool.
if ! command -v openssl >/dev/null 2>&1; then
  echo "openssl not found; installing it with apt-get" >&2
  apt-get update -qq && apt-get install -y -qq openssl >/dev/null
fi

# The S3 tests run against moto's S3 server on loopback, from a venv.
CAIRN_S3_VENV="$(bash scripts/s3-server.sh)"
export CAIRN_S3_VENV

cargo nextest run --workspace --no-fail-fast "$@"
# nextest does not run doctests; the chunker's crate docs carry an example.
cargo test --workspace --doc --quiet
