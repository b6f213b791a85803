#!/usr/bin/env bash
# cairn vs restic, rustic and borg on the nightly workload, in one run.
#
#   bash benches/compare.sh [--scale S] [--out DIR] [--seed N]
#                           [--borg-encryption MODE] [--keep] [--no-s3]
#
# Installs what is missing (restic, borgbackup, b3sum, zstd, sqlite3, GNU
# time) with apt, rustic with `cargo install rustic-rs --no-default-features
# --locked` into target/tools (once: about 10 minutes on 2 cores), builds
# cairn in release, then hands over to
# benches/compare.py, which generates the workload (benches/workload.py),
# measures the hardware references and every tool's (cairn encrypted, as
# restic and rustic are, and cairn --plaintext) first backup, next-night
# backup, unchanged re-backup, full restore, full verification and forget +
# prune of all but the newest snapshot, then cairn's and restic's backup and
# restore over a loopback S3 server (moto's, installed into a venv by
# scripts/s3-server.sh; --no-s3 skips it), and writes
# OUT/results.md (also printed) and OUT/results.json.
#
# Defaults: --scale 1.0 (725 MB of source data in 20,003 files; needs ~4 GB
# free and about 5 minutes on 2 cores), --out target/compare, --seed 1,
# --borg-encryption none. --keep keeps the workload, repositories and
# restores in OUT; otherwise only results, logs and caches stay. Dropping the
# page cache before each step needs root; without it the run still works and
# the report says so. On ext4 without a journal, run it five minutes or more
# after deleting many files (a previous run's clean-up too): recently freed
# inodes slow every tool's restore, and the report says when that applies.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
scale=1.0
out="$root/target/compare"
extra=()
s3=1

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --scale) scale="${2:?--scale needs a value}"; shift 2 ;;
        --out) out="${2:?--out needs a value}"; shift 2 ;;
        --seed | --borg-encryption) extra+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
        --keep) extra+=("$1"); shift ;;
        --no-s3) s3=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "compare.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

# command -> Debian package
declare -A packages=(
    [restic]=restic [borg]=borgbackup [b3sum]=b3sum [zstd]=zstd
    [sqlite3]=sqlite3 [/usr/bin/time]=time [findmnt]=util-linux [python3]=python3
)
missing=()
for command in "${!packages[@]}"; do
    command -v "$command" > /dev/null 2>&1 || missing+=("${packages[$command]}")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "[compare] installing: ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" > /dev/null
fi

rustic="$(command -v rustic || true)"
if [ -z "$rustic" ]; then
    rustic="$root/target/tools/bin/rustic"
    if [ ! -x "$rustic" ]; then
        echo "[compare] installing rustic (cargo install rustic-rs, once)" >&2
        cargo install --quiet rustic-rs --no-default-features --locked --root "$root/target/tools"
    fi
fi
extra+=(--rustic "$rustic")

echo "[compare] building cairn (release)" >&2
(cd "$root" && cargo build --release --quiet -p cairn-cli)
cairn="${CARGO_TARGET_DIR:-$root/target}/release/cairn"
case "$cairn" in /*) ;; *) cairn="$root/$cairn" ;; esac

if [ "$s3" = 1 ]; then
    echo "[compare] installing moto's S3 server (scripts/s3-server.sh)" >&2
    extra+=(--s3-venv "$(bash "$root/scripts/s3-server.sh")")
fi

exec python3 "$here/compare.py" --cairn "$cairn" --scale "$scale" --out "$out" "${extra[@]}"
