#!/usr/bin/env bash
# Runs every test cairn has, on a fresh machine with only the Rust toolchain,
# cargo-nextest, gcc and Python 3 (as root, for the FUSE tests). Installs
# whatever else the tests need (cargo-nextest if missing; chromium and
# openssl with apt-get if missing; moto's S3 server into target/s3-venv).
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

# `cairn mount`'s tests (tests/mount.rs) need FUSE: /dev/fuse, which the
# fuse module gives, and root (they mount with mount(2); fusermount3 from
# Debian's fuse3 is only needed by a non-root user). Load the module when
# it is not loaded yet; without it those tests fail and say why.
if [ ! -e /dev/fuse ] && [ "$(id -u)" = 0 ] && command -v modprobe >/dev/null 2>&1; then
  modprobe fuse || echo "warning: no /dev/fuse and 'modprobe fuse' failed: tests/mount.rs will fail" >&2
fi

cargo nextest run --workspace --no-fail-fast "$@"
# nextest does not run doctests; the chunker's crate docs carry an example.
cargo test --workspace --doc --quiet
