#!/usr/bin/env bash
# Installs the S3-compatible server the S3 tests and benchmark run on
# loopback: moto's server, from PyPI, into a virtual environment under
# target/ (so nothing outside the worktree changes). Idempotent and quick
# once installed. Prints the venv's path.
#
# moto 5.2.5 is pinned because it honours If-None-Match: * on PutObject
# (412 when the key exists), which cairn's create-only writes rely on.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${CAIRN_S3_VENV:-$PWD/target/s3-venv}"
moto_version="5.2.5"

if [ -x "$venv/bin/moto_server" ] &&
  "$venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$moto_version')" 2>/dev/null; then
  echo "$venv"
  exit 0
fi

python="${PYTHON:-python3}"
if ! "$python" -m venv --help >/dev/null 2>&1; then
  echo "python3 -m venv is unavailable; installing python3-venv with apt" >&2
  apt-get update -qq && apt-get install -y -qq python3-venv >&2
fi
mkdir -p "$(dirname "$venv")"
"$python" -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$moto_version" >&2
echo "$venv"
