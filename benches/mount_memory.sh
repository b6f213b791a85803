#!/usr/bin/env bash
# Peak memory of `cairn mount` on a repository of many small files, while
# `ls -l`, `find` and reads walk all of it: the figure in
# docs/PERFORMANCE.md ("mount"). Needs root and /dev/fuse.
#
#   bash benches/mount_memory.sh [FILES] [WORKDIR]
#
# FILES (default 200000) small files: half in one directory (one tree of
# FILES/2 entries), half in FILES/2000 directories of 1000. The debug
# binary is used (the team builds debug; the dependencies are optimised).
set -euo pipefail
cd "$(dirname "$0")/.."
files="${1:-200000}"
work="${2:-target/mount-memory}"
cargo build -q -p cairn-cli
cairn="$PWD/target/debug/cairn"

rm -rf "$work"
mkdir -p "$work/src" "$work/mnt"
work="$(cd "$work" && pwd)"
export CAIRN_CONFIG_DIR="$work/config" CAIRN_CACHE_DIR="$work/cache"
export CAIRN_PASSWORD="mount memory bench" CAIRN_KDF_MEMORY_MIB=8 CAIRN_KDF_PASSES=1

python3 - "$work/src" "$files" <<'PY'
import os, sys
root, files = sys.argv[1], int(sys.argv[2])
half = files // 2
os.makedirs(f"{root}/flat")
for i in range(half):
    with open(f"{root}/flat/file-{i:07d}.txt", "w") as f:
        f.write(f"flat file {i}\n" * (1 + i % 7))
for d in range((files - half + 999) // 1000):
    os.makedirs(f"{root}/tree/d{d:04d}")
for i in range(files - half):
    with open(f"{root}/tree/d{i // 1000:04d}/f{i:07d}.md", "w") as f:
        f.write(f"# note {i}\n" * (1 + i % 5))
PY

repo="$work/repo"
"$cairn" --repo "$repo" init >/dev/null
/usr/bin/time -f "backup: %e s, peak RSS %M KiB" "$cairn" --repo "$repo" backup --component app="$work/src" >/dev/null
/usr/bin/time -f "ls (whole snapshot listed, for comparison): %e s, peak RSS %M KiB" \
  "$cairn" --repo "$repo" ls latest >/dev/null

"$cairn" --repo "$repo" mount "$work/mnt" 2>"$work/mount.log" &
mount_pid=$!
trap 'kill -TERM $mount_pid 2>/dev/null || true; wait $mount_pid 2>/dev/null || true' EXIT
for _ in $(seq 600); do [ -d "$work/mnt/snapshots" ] && break; sleep 0.1; done
peak() { awk '/VmHWM/ {print $2}' "/proc/$mount_pid/status"; }
now() { awk '/VmRSS/ {print $2}' "/proc/$mount_pid/status"; }
echo "mounted: peak RSS $(peak) KiB"

step() {
  local name="$1"; shift
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null
  end=$(date +%s.%N)
  printf '%s: %.2f s, mount peak RSS %s KiB, now %s KiB\n' "$name" "$(echo "$end - $start" | bc)" "$(peak)" "$(now)"
}
step "ls -l of one directory of $((files / 2)) files" ls -l "$work/mnt/latest/app/flat"
step "second ls -l of it (kernel cache)" ls -l "$work/mnt/latest/app/flat"
step "find over all $files files, with stat" find "$work/mnt/latest/app" -type f -size -2k
step "read every file of 10 directories" sh -c "cat $work/mnt/latest/app/tree/d000*/* | wc -c"
step "du of the whole snapshot" du -s "$work/mnt/latest/app"
echo "mount process: $(grep -c . "$work/mount.log") line(s) on stderr"
