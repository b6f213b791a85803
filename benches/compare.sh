#!/usr/bin/env bash
# cairn vs restic, rustic and borg on four workloads, in one run.
#
#   bash benches/compare.sh [--workloads LIST] [--nights N] [--scale S]
#                           [--apps-scale S] [--scale-chunks LIST] [--scale-repeats N]
#                           [--tree-source DIR] [--out DIR] [--seed N]
#                           [--borg-encryption MODE] [--keep] [--no-s3]
#
# Installs what is missing (restic, borgbackup, b3sum, zstd, sqlite3, GNU
# time, postgresql) with apt, rustic with `cargo install rustic-rs
# --no-default-features --locked` into target/tools (once: about 10 minutes
# on 2 cores) unless one is on PATH or in ~/.cargo/bin, a venv with chromadb
# and matplotlib (target/realapps-venv, once), builds cairn in release, then
# hands over to benches/compare.py. Workloads (--workloads, comma-separated;
# default all):
#   modelled  benches/workload.py's nightly data (restic, rustic, cairn,
#             cairn --plaintext, borg)
#   tree      a copy of `rustc --print sysroot` (or --tree-source DIR)
#   apps      benches/realapps.py: a Chroma store and pg_dumps of a pgbench
#             cluster, the applications' own nightly change
#   scale     a small nightly backup into a cairn repository already
#             holding 100 k and 1 M chunks (--scale-chunks 100000,1000000,
#             10000000 for 10 M; grown 1 M chunks a backup, each under
#             1 GB), timed --scale-repeats times (default 3, the median
#             reported), plotted into OUT/scale.png
# Each workload with nights runs --nights nights (default 3) and reports,
# per night, every tool's growth and the `zstd -3 --long --patch-from`
# floor. Every step: wall time, throughput, CPU, peak RSS, with the page
# cache dropped before it (needs root; without it the report says so).
# Then, unless --no-s3, backup and restore of the first workload's latest
# state over a loopback S3 server (moto's, scripts/s3-server.sh): cairn,
# restic and rustic. Writes OUT/results.md (also printed), OUT/results.json
# and OUT/scale.png.
#
# Defaults: --out target/compare, --seed 1, --scale 1.0 (modelled: 725 MB
# in 20,003 files), --apps-scale 1.0 (60,000 embeddings, pgbench -s 15),
# --borg-encryption none. A full run needs ~10 GB free and about an hour on
# 2 cores; `--workloads modelled --nights 2 --scale 0.1 --no-s3` is a quick
# check. --keep keeps the workloads, repositories and restores in OUT. On
# ext4 without a journal, run it five minutes or more after deleting many
# files (a previous run's clean-up too): recently freed inodes slow every
# tool's restore, and the report says when that applies.
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
        --workloads | --nights | --apps-scale | --scale-chunks | --scale-repeats | --tree-source)
            extra+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
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
    [pgbench]=postgresql [pg_dump]=postgresql-client [runuser]=util-linux
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
# python3 -m venv needs Debian's python3-venv.
if ! python3 -c "import ensurepip" > /dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv > /dev/null
fi

# chromadb for the real-applications workload, matplotlib for the scale plot.
venv="$root/target/realapps-venv"
if ! "$venv/bin/python" -c "import chromadb, matplotlib" > /dev/null 2>&1; then
    echo "[compare] installing chromadb and matplotlib into $venv (once)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check chromadb matplotlib >&2
fi
extra+=(--realapps-venv "$venv")

rustic="$(command -v rustic || true)"
[ -n "$rustic" ] || [ ! -x "$HOME/.cargo/bin/rustic" ] || rustic="$HOME/.cargo/bin/rustic"
if [ -z "$rustic" ]; then
    rustic="$root/target/tools/bin/rustic"
    if [ ! -x "$rustic" ]; then
        echo "[compare] installing rustic (cargo install rustic-rs, once)" >&2
        cargo install --quiet rustic-rs --no-default-features --locked --root "$root/target/tools"
    fi
fi
extra+=(--rustic "$rustic")

echo "[compare] building cairn (release)" >&2
(cd "$root" && nice -n 10 cargo build --release --quiet -p cairn-cli)
cairn="${CARGO_TARGET_DIR:-$root/target}/release/cairn"
case "$cairn" in /*) ;; *) cairn="$root/$cairn" ;; esac

if [ "$s3" = 1 ]; then
    echo "[compare] installing moto's S3 server (scripts/s3-server.sh)" >&2
    extra+=(--s3-venv "$(bash "$root/scripts/s3-server.sh")")
fi

exec python3 "$here/compare.py" --cairn "$cairn" --scale "$scale" --out "$out" "${extra[@]}"
