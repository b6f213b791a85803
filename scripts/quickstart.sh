#!/usr/bin/env bash
# cairn's main job, end to end, on a local repository: build, create a
# repository, back up a directory twice (the second run shows dedup), list
# snapshots, verify every byte, restore, compare with the source, then apply
# the nightly retention policy (forget + prune).
#
#   bash scripts/quickstart.sh [DIRECTORY]
#
# Without DIRECTORY it backs up this project's own source folders (chunker,
# store, cli, tests) as four components.
#
# Everything it creates lives under target/quickstart/ (repository, keys,
# index cache, restore), so it never touches your real cairn configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then
  components=(--component "source=$(realpath "$1")")
  sources=("$(realpath "$1")")
  names=(source)
else
  components=("$PWD/chunker" "$PWD/store" "$PWD/cli" "$PWD/tests")
  sources=("${components[@]}")
  names=(chunker store cli tests)
fi

cargo build --release -p cairn-cli
cairn=$PWD/target/release/cairn
work=$PWD/target/quickstart
rm -rf "$work"
mkdir -p "$work"
export CAIRN_CONFIG_DIR=$work/config CAIRN_CACHE_DIR=$work/cache CAIRN_REPO=$work/repo
# The repository is encrypted (the default); a demo passphrase unless one
# is given, so the script runs without a terminal.
export CAIRN_PASSWORD=${CAIRN_PASSWORD:-quickstart demo passphrase}

run() { echo; echo "\$ cairn $*"; "$cairn" "$@"; }

run init
run backup "${components[@]}" --tag quickstart --label purpose=demo
# The second backup finds every chunk already stored and adds almost nothing.
run backup "${components[@]}" --tag quickstart
run snapshots
run verify --read-data
run restore latest --target "$work/restore"
echo
for i in "${!names[@]}"; do
  if diff -r --no-dereference "${sources[$i]}" "$work/restore/${names[$i]}" >/dev/null; then
    echo "restored $work/restore/${names[$i]} is identical to ${sources[$i]}"
  else
    echo "restored $work/restore/${names[$i]} differs from ${sources[$i]} (changed during the run?)" >&2
    exit 1
  fi
done
# The nightly retention job. The packs are minutes old, younger than the
# default grace period (1h), so this prune marks nothing yet: a prune only
# ever deletes what an earlier run marked, once the grace period is over.
run forget --keep-last 1 --prune
run snapshots --forgotten
echo
echo "repository: $work/repo ($(du -sh "$work/repo" | cut -f1))"
