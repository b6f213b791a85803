#!/usr/bin/env python3
"""cairn vs restic, rustic and borg on four workloads, in one run.

Run through benches/compare.sh, which installs the tools and builds cairn.
This script owns the measurement. Each workload (--workloads, default all)
gets fresh repositories, and every tool sees exactly the same bytes, phase
by phase. cairn runs twice: encrypted (its default, like restic's and
rustic's, all reading one passphrase file) and with `init --plaintext`, so
the cost of encryption is measured in the same run. rustic runs when its
binary is given (--rustic) or on PATH.

  modelled  benches/workload.py's nightly data (borg too): night 1 (first
            backup), nights 2..N (--nights, default 3), unchanged
            re-backup, full restore (checked with diff -r), full
            verification, forget + prune; hardware references
  tree      a copy of `rustc --print sysroot` (1.3 GB, 52k files): backup,
            unchanged re-backup, restore, verify
  apps      benches/realapps.py: a Chroma store and pg_dumps of a pgbench
            cluster, made by the applications themselves, night after night
            (same steps as modelled, no prune)
  scale     a small nightly backup into one cairn repository already holding
            100 k, 1 M (--scale-chunks; add 10 M) chunks: time and peak RSS,
            plotted into OUT/scale.png
  (with --s3-venv) backup and restore of the first workload's latest state
  over a loopback S3 server (moto's): cairn, restic and rustic

For every night after the first it records the `zstd -3 --long
--patch-from` floor (realapps.patch_floor) next to every tool's growth.
Before every measured step it syncs and drops the page cache (when the
kernel lets it) and records whether that worked. Each step runs under GNU
time (`/usr/bin/time -f`) for wall time, user+sys CPU and peak RSS; `du
-sb` gives the repository size after the step. Results go to
OUT/results.json (raw) and OUT/results.md (the tables, also printed).

Standard library only (the apps workload and the plot use the
realapps venv).
"""

import argparse
import datetime
import json
import os
import platform
import random
import shlex
import shutil
import socket
import subprocess
import sys
import time

import realapps

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKLOAD = os.path.join(HERE, "workload.py")
REALAPPS = os.path.join(HERE, "realapps.py")
WORKLOADS = ["modelled", "tree", "apps", "scale"]
ALL_TOOLS = ["restic", "rustic", "cairn", "cairn-plain", "borg"]
# Filled in by main(): the tools this run measures, in ALL_TOOLS order.
TOOLS = []
CAIRN_TOOLS = ("cairn", "cairn-plain")
COMPONENTS = ["db", "vectors", "memory"]
MARKER = ".cairn-compare"
TIME_FORMAT = "%e %U %S %M"
MB = 1e6


def log(message):
    print(f"[compare] {message}", file=sys.stderr, flush=True)


def drop_caches():
    """sync, then ask the kernel to drop page cache, dentries and inodes."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as control:
            control.write("3\n")
        return True
    except OSError:
        return False


def du_bytes(path):
    if not os.path.exists(path):
        return 0
    out = subprocess.run(["du", "-sb", path], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def tree_bytes(root, names=COMPONENTS):
    total = files = 0
    for name in names:
        for directory, _, entries in os.walk(os.path.join(root, name)):
            for entry in entries:
                total += os.lstat(os.path.join(directory, entry)).st_size
                files += 1
    return total, files


class Runner:
    def __init__(self, out, environments):
        self.out = out
        self.environments = environments
        self.logs = os.path.join(out, "logs")
        os.makedirs(self.logs, exist_ok=True)

    def measure(self, label, command, tool=None, cwd=None, drop=True, sync_after=False,
                extra_env=None):
        """Runs `command` under GNU time; returns its measurements. With
        `sync_after`, also times a `sync` straight after it: what the step
        left unwritten (cairn's restore syncs before it renames; restic's
        and borg's leave their files to the kernel)."""
        dropped = drop_caches() if drop else None
        time_file = os.path.join(self.logs, f"{label}.time")
        stdout = os.path.join(self.logs, f"{label}.out")
        stderr = os.path.join(self.logs, f"{label}.err")
        env = dict(os.environ)
        if tool:
            env.update(self.environments[tool])
        env.update(extra_env or {})
        wrapped = ["/usr/bin/time", "-f", TIME_FORMAT, "-o", time_file, "--"] + command
        log(f"{label}: {' '.join(command)}")
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            status = subprocess.run(wrapped, cwd=cwd, env=env, stdout=out, stderr=err).returncode
        sync_s = None
        if sync_after:
            started = time.monotonic()
            os.sync()
            sync_s = round(time.monotonic() - started, 3)
        with open(time_file) as source:
            # GNU time prefixes "Command exited with non-zero status N" on failure.
            fields = source.read().strip().splitlines()[-1].split()
        wall, user, system, rss_kb = float(fields[0]), float(fields[1]), float(fields[2]), int(fields[3])
        result = {
            "command": command,
            "exit_status": status,
            "wall_s": wall,
            "cpu_s": round(user + system, 2),
            "user_s": user,
            "sys_s": system,
            "peak_rss_bytes": rss_kb * 1024,
            "caches_dropped": dropped,
            "sync_after_s": sync_s,
            "stdout": os.path.relpath(stdout, self.out),
            "stderr": os.path.relpath(stderr, self.out),
        }
        if status != 0:
            log(f"{label}: exit status {status}; see {stderr}")
            with open(stderr, errors="replace") as source:
                tail = source.read()[-2000:]
            if tail:
                log(tail)
        return result


def shell(command):
    return ["bash", "-c", command]


def machine_info(out):
    info = {"nproc": os.cpu_count(), "kernel": platform.release(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    try:
        info["nproc"] = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout)
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/cpuinfo") as source:
            for line in source:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as source:
            for line in source:
                if line.startswith("MemTotal"):
                    info["ram_bytes"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    found = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "--target", out],
                           capture_output=True, text=True)
    info["filesystem"] = " on ".join(found.stdout.split()) or "unknown"
    info["ext4_without_journal"] = ext4_without_journal(found.stdout.split())
    info["loadavg_start"] = load_average()
    try:
        with open("/etc/os-release") as source:
            for line in source:
                if line.startswith("PRETTY_NAME="):
                    info["os"] = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return info


def load_average():
    try:
        with open("/proc/loadavg") as source:
            return " ".join(source.read().split()[:3])
    except OSError:
        return None


def ext4_without_journal(fstype_and_source):
    """Whether OUT lies on ext4 without a journal (None: not ext4, or
    unknown). Such an ext4, allocating an inode, skips those freed in the
    last seconds (minutes while their inode table block is unwritten), and
    the skipping cost the benchmark's restores, every tool's, up to half
    again their kernel time after mass deletions (measured on the 2-core
    VM of docs/PERFORMANCE.md). Its mount options name a data mode only
    when there is a journal."""
    if len(fstype_and_source) != 2 or fstype_and_source[0] != "ext4":
        return None
    device = os.path.basename(os.path.realpath(fstype_and_source[1]))
    try:
        with open(f"/proc/fs/ext4/{device}/options") as source:
            options = source.read().split()
    except OSError:
        return None
    return not any(option.startswith("data=") for option in options)


def version_of(command):
    try:
        done = subprocess.run(command, capture_output=True, text=True)
        return (done.stdout or done.stderr).strip().splitlines()[0]
    except (OSError, IndexError):
        return "unknown"


def prepare_out(out):
    """OUT must be new, empty, or made by an earlier run of this script."""
    if os.path.exists(out) and os.listdir(out) and not os.path.exists(os.path.join(out, MARKER)):
        sys.exit(f"compare: {out} is not empty and was not made by compare.sh; choose another --out")
    os.makedirs(out, exist_ok=True)
    for name in ["work", "repos", "restore", "env", "logs", "previous", "trash"]:
        shutil.rmtree(os.path.join(out, name), ignore_errors=True)
    for name in ["results.json", "results.md", "scale.png"]:
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    with open(os.path.join(out, MARKER), "w") as marker:
        marker.write("made by benches/compare.sh; its contents are replaced on every run\n")


def discard(out, path):
    """Moves `path` into OUT/trash, deleted only after the workload's last
    step (empty_trash): on a filesystem mounted with `discard` every unlink
    waits for the device (deleting a restored sysroot took minutes here,
    between two measured steps), and on ext4 without a journal freshly
    freed inodes slow the next restores. Not kept to the end of the run:
    the whole run's trees would need about 20 GB."""
    if not os.path.lexists(path):
        return
    trash = os.path.join(out, "trash")
    os.makedirs(trash, exist_ok=True)
    os.rename(path, os.path.join(trash, f"{len(os.listdir(trash))}-{os.path.basename(path)}"))


def empty_trash(out):
    log("deleting the finished trees")
    shutil.rmtree(os.path.join(out, "trash"), ignore_errors=True)


# ---------------------------------------------------------------------------
# Workloads: each is a tree of components in OUT/work/NAME, made night by
# night, backed up by every tool into its own repositories.


RUSTIC = []  # main() puts the rustic binary's path here


def present_tools():
    """The tools to run now: rustic only once its binary exists."""
    return [tool for tool in TOOLS
            if tool != "rustic" or (RUSTIC and os.access(RUSTIC[0], os.X_OK))]


class Workload:
    """What one workload needs: its components, how to make night k (0 =
    the first), how many nights, and which tools and extra steps it gets."""

    def __init__(self, name, title, components, make_night, nights, tools, prune=False,
                 floor=True, references=False):
        self.name, self.title, self.components = name, title, components
        self.make_night, self.nights, self.tools = make_night, nights, tools
        self.prune, self.floor, self.references = prune, floor, references


def restore_floor(runner, out, name, work, components, repo, source_bytes):
    """What any restore of this workload's latest night needs of this
    machine's disk, measured beside the restores: reading cairn's
    repository cold, and writing the tree the way cairn's restore writes
    it (files of 4 MiB and more with O_DIRECT in 4 MiB writes by dd, one
    file per core at once, the rest buffered by tar, from a source already
    cached, then one sync). One dd at a time in 1 MiB writes was slower
    than cairn's own restore of the modelled workload: no floor.
    On the benchmark's VM a buffered write and its sync run at about a
    third of a direct write's speed, so `tar | tar` alone is no floor for
    a restore of large files."""
    sources = " ".join(components)
    floor = {}
    direct_target = os.path.join(out, "restore", name, "direct-reference")
    os.makedirs(direct_target)
    quoted_work, quoted_target = shlex.quote(work), shlex.quote(direct_target)
    subprocess.run(shell(f"tar -C {quoted_work} -cf - {sources} > /dev/null"), check=True)
    measured = runner.measure(f"{name}-ref-direct", shell(
        f"cd {quoted_work} && "
        f"find {sources} '(' -type d -o '!' -type f -o -size -4096k ')' -print0 | "
        f"tar --null --no-recursion -T - -cf - | tar -C {quoted_target} -xf - && "
        f"find {sources} -type f -size +4095k -print0 | xargs -0 -P {os.cpu_count() or 1} -I{{}} "
        f"dd if={{}} of={quoted_target}/{{}} bs=4M oflag=direct status=none"),
        drop=False, sync_after=True)
    measured["bytes"] = source_bytes
    floor["write"] = measured
    # Last: dropping the page cache also drops the inode tables that ext4
    # without a journal reads while it allocates inodes (see the report's
    # header), which made the write above, measured after it, take 3 to 10
    # times as long on the modelled workload's and the tree's many files.
    if repo:
        measured = runner.measure(f"{name}-floor-read", shell(
            f"find {shlex.quote(repo)} -type f -print0 | xargs -0 cat > /dev/null"))
        measured["bytes"] = du_bytes(repo)
        floor["read"] = measured
    return floor


def floor_lines(add, record, nproc):
    """The restore targets in seconds next to the machine's floor (see
    `restore_floor`) and the restores' CPU spread over every core."""
    floor = record.get("restore_floor")
    restores = record["steps"].get("full restore", {})
    if not floor or "cairn" not in restores:
        return
    write = floor["write"]
    parts = []
    if "read" in floor:
        read = floor["read"]
        parts.append(f"reading cairn's repository cold ({mb(read['bytes'])}) took "
                     f"{read['wall_s']:.2f} s")
    parts.append(f"writing the tree as cairn's restore writes it {write['wall_s']:.2f} s "
                 f"(+ {write.get('sync_after_s') or 0:.2f} s sync)")
    targets = []
    for tool, times in (("restic", 3), ("rustic", 2)):
        if tool in restores:
            targets.append(f"{times}× {tool} is {restores[tool]['wall_s'] / times:.2f} s")
    cpus = ", ".join(f"{tool} {restores[tool]['cpu_s'] / nproc:.2f} s"
                     for tool in ("cairn", "cairn-plain", "restic", "rustic") if tool in restores)
    add(f"Restore floor on this machine: {'; '.join(parts)}. The full-restore targets: "
        f"{', '.join(targets)}; cairn took {restores['cairn']['wall_s']:.2f} s. Each restore's "
        f"CPU spread evenly over {nproc} cores (a bound no restore beats): {cpus}.")
    add("")


def workload_modelled(args, work):
    def make(night):
        command = ([sys.executable, WORKLOAD, "generate", work, "--seed", str(args.seed),
                    "--scale", str(args.scale)] if night == 0
                   else [sys.executable, WORKLOAD, "next-night", work])
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        return json.loads(done.stdout)
    return Workload("modelled", f"modelled nightly workload (benches/workload.py, scale "
                    f"{args.scale:g}, seed {args.seed})", COMPONENTS, make, args.nights,
                    present_tools(), prune=True, references=True)


def workload_tree(args, work):
    source = args.tree_source or subprocess.run(
        ["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True).stdout.strip()

    def make(night):
        os.makedirs(work, exist_ok=True)
        subprocess.run(["cp", "-a", source, os.path.join(work, "sysroot")], check=True)
        size, files = tree_bytes(work, ["sysroot"])
        return {"source": source, "bytes": size, "files": files}
    # One night: a tree that does not change (backup, unchanged, restore, verify).
    return Workload("tree", f"real tree: a copy of the Rust toolchain's sysroot ({source})",
                    ["sysroot"], make, 1, [tool for tool in present_tools() if tool != "borg"],
                    floor=False)


def workload_apps(args, work):
    state = work.rstrip("/") + ".state"

    def make(night):
        command = [sys.executable, REALAPPS, "--night", str(night), "--out", work,
                   "--state", state, "--seed", str(args.seed), "--scale", str(args.apps_scale)]
        if args.realapps_venv:
            command += ["--venv", args.realapps_venv]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"compare: realapps.py night {night} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout)
    return Workload("apps", "real applications (benches/realapps.py): a Chroma store and "
                    "pg_dump (plain and custom) of a pgbench cluster", ["chroma", "pg"], make,
                    args.nights, [tool for tool in present_tools() if tool != "borg"])


def run_workload(bench, workload):
    """Every tool through the workload's nights, then unchanged re-backup,
    restore (checked with diff -r), verify and, for the modelled one,
    forget + prune."""
    out, runner, results = bench["out"], bench["runner"], bench["results"]
    cairn, rustic = bench["cairn"], bench["rustic"]
    name = workload.name
    work = os.path.join(out, "work", name)
    previous = os.path.join(out, "previous", name)
    repos = {tool: os.path.join(out, "repos", name, tool) for tool in workload.tools}
    restores = {tool: os.path.join(out, "restore", name, tool) for tool in workload.tools}
    record_root = results["workloads"].setdefault(name, {"title": workload.title, "steps": {},
                                                         "nights": [], "tools": workload.tools})
    steps = record_root["steps"]
    components = workload.components

    def save():
        bench["save"]()

    def repo_env(tool):
        return {"cairn": {"CAIRN_REPO": repos.get("cairn", "")},
                "cairn-plain": {"CAIRN_REPO": repos.get("cairn-plain", "")},
                "restic": {"RESTIC_REPOSITORY": repos.get("restic", "")},
                "rustic": {"RUSTIC_REPOSITORY": repos.get("rustic", "")},
                "borg": {"BORG_REPO": repos.get("borg", "")}}[tool]

    def measure(label, command, tool, **kwargs):
        return runner.measure(f"{name}-{label}-{tool}", command, tool=tool,
                              extra_env=repo_env(tool), **kwargs)

    log(f"[{name}] night 1: making the workload in {work}")
    summary = workload.make_night(0)
    source_bytes, source_files = tree_bytes(work, components)
    record_root["nights"].append({"night": 1, "summary": summary, "bytes": source_bytes,
                                  "files": source_files})
    log(f"[{name}] {source_bytes / MB:.1f} MB in {source_files} files")
    save()

    if workload.references:
        file_list = f"find {' '.join(components)} -type f -print0"
        references = {
            "cat": f"{file_list} | xargs -0 cat > /dev/null",
            "b3sum": f"{file_list} | xargs -0 b3sum > /dev/null",
            "zstd -3 -T0 (tar stream)": f"tar -cf - {' '.join(components)} | zstd -3 -T0 -q -c > /dev/null",
        }
        for reference, command in references.items():
            measured = runner.measure(f"{name}-ref-{reference.split()[0]}", shell(command), cwd=work)
            measured["bytes"] = source_bytes
            results["references"][reference] = measured
        save()

    init_commands = {
        "cairn": [cairn, "init"],
        "cairn-plain": [cairn, "init", "--plaintext"],
        "restic": ["restic", "init"],
        "rustic": [rustic, "init"],
        "borg": ["borg", "init", "--encryption", bench["borg_encryption"]],
    }
    for tool in workload.tools:
        os.makedirs(os.path.dirname(repos[tool]), exist_ok=True)
        measure("init", init_commands[tool], tool, drop=False)

    def backup_command(tool, archive):
        if tool in CAIRN_TOOLS:
            command = [cairn, "backup", "--json"]
            for component in components:
                command += ["--component", f"{component}={os.path.join(work, component)}"]
            return command
        if tool == "restic":
            return ["restic", "backup"] + components
        if tool == "rustic":
            return [rustic, "backup"] + components
        return ["borg", "create", "--stats", "--compression", "zstd,3", f"::{archive}"] + components

    def record(step, tool, measured, source):
        measured["repo_bytes"] = du_bytes(repos[tool])
        measured["source_bytes"] = source
        steps.setdefault(step, {})[tool] = measured
        save()

    def backup_step(step, archive, source):
        for tool in workload.tools:
            before = du_bytes(repos[tool])
            measured = measure(step.replace(" (first backup)", "").replace(" ", "-"), backup_command(tool, archive), tool,
                               cwd=work)
            measured["repo_bytes_before"] = before
            record(step, tool, measured, source)
            if tool in CAIRN_TOOLS and measured["exit_status"] in (0, 3):
                try:
                    with open(os.path.join(out, measured["stdout"])) as source_file:
                        stats = json.load(source_file)
                    measured["cairn_stats"] = {key: stats.get(key) for key in
                                               ("new_chunks", "reused_chunks", "new_bytes",
                                                "stored_bytes", "unchanged_files")}
                except (OSError, ValueError):
                    pass

    backup_step("night 1 (first backup)", "night1", source_bytes)
    for night in range(2, workload.nights + 1):
        if workload.floor:
            # The floor needs the night before as it was: the applications
            # rewrite files in place, so a real copy, not hard links.
            discard(out, previous)
            os.makedirs(os.path.dirname(previous), exist_ok=True)
            subprocess.run(["cp", "-a", work, previous], check=True)
        log(f"[{name}] night {night}: applying one night of change")
        summary = workload.make_night(night - 1)
        source_bytes, source_files = tree_bytes(work, components)
        entry = {"night": night, "summary": summary, "bytes": source_bytes, "files": source_files}
        if workload.floor:
            log(f"[{name}] night {night}: zstd --patch-from floor")
            floor = realapps.patch_floor(previous, work)
            entry["floor"] = {key: value for key, value in floor.items() if key != "files"}
            entry["floor_files"] = floor["files"]
            discard(out, previous)
        record_root["nights"].append(entry)
        backup_step(f"night {night} backup", f"night{night}", source_bytes)
    backup_step("unchanged re-backup", "unchanged", source_bytes)

    last_archive = "unchanged"
    restore_commands = {
        "cairn": [cairn, "restore", "latest", "--target", restores.get("cairn", "")],
        "cairn-plain": [cairn, "restore", "latest", "--target", restores.get("cairn-plain", "")],
        "restic": ["restic", "restore", "latest", "--target", restores.get("restic", "")],
        "rustic": [rustic, "restore", "latest", restores.get("rustic", "")],
        "borg": ["borg", "extract", f"::{last_archive}"],
    }
    checks = record_root.setdefault("restore_check", {})
    for tool in workload.tools:
        os.makedirs(restores[tool])
        measured = measure("restore", restore_commands[tool], tool, cwd=restores[tool],
                           sync_after=True)
        record("full restore", tool, measured, source_bytes)
        differences = []
        for component in components:
            diff = subprocess.run(["diff", "-r", "--no-dereference", "-q",
                                   os.path.join(work, component),
                                   os.path.join(restores[tool], component)],
                                  capture_output=True, text=True)
            differences += diff.stdout.splitlines()[:20] + diff.stderr.splitlines()[:5]
        checks[tool] = {"identical": not differences, "differences": differences[:20]}
        log(f"[{name}] restore-{tool}: diff -r: {'identical' if not differences else 'DIFFERENT'}")
        save()
    if workload.references:
        copy_target = os.path.join(out, "restore", name, "copy-reference")
        os.makedirs(copy_target)
        sources = " ".join(components)
        subprocess.run(shell(f"tar -C {shlex.quote(work)} -cf - {sources} > /dev/null"), check=True)
        measured = runner.measure(f"{name}-ref-copy", shell(
            f"tar -C {shlex.quote(work)} -cf - {sources} | tar -C {shlex.quote(copy_target)} -xf -"),
            drop=False, sync_after=True)
        measured["bytes"] = source_bytes
        results["references"]["write (tar into tar, latest night's tree, source cached)"] = measured
    floor = restore_floor(runner, out, name, work, components, repos.get("cairn"), source_bytes)
    record_root["restore_floor"] = floor
    if workload.references:
        results["references"]["write (large files with O_DIRECT, the rest by tar; source cached)"] = \
            floor["write"]
    save()
    # Removed only after every restore: ext4 skips recently freed inodes.
    if not bench["keep"]:
        discard(out, os.path.join(out, "restore", name))

    verify_commands = {
        "cairn": [cairn, "verify", "--read-data", "--json"],
        "cairn-plain": [cairn, "verify", "--read-data", "--json"],
        "restic": ["restic", "check", "--read-data"],
        "rustic": [rustic, "check", "--read-data"],
        "borg": ["borg", "check", "--verify-data"],
    }
    for tool in workload.tools:
        measured = measure("verify", verify_commands[tool], tool)
        record("full verification", tool, measured, source_bytes)

    if workload.prune:
        # cairn deletes in two phases; with --grace 0s (nothing else runs
        # here) the second prune run deletes what the first marked.
        def cairn_prune():
            return shell(f"{shlex.quote(cairn)} forget --keep-last 1 --prune --grace 0s"
                         f" && {shlex.quote(cairn)} prune --grace 0s")
        prune_commands = {
            "cairn": cairn_prune(), "cairn-plain": cairn_prune(),
            "restic": ["restic", "forget", "--keep-last", "1", "--prune"],
            "rustic": [rustic, "forget", "--keep-last", "1", "--prune"],
            "borg": shell("borg prune --keep-last 1 && borg compact"),
        }
        for tool in workload.tools:
            before = du_bytes(repos[tool])
            measured = measure("prune", prune_commands[tool], tool)
            measured["repo_bytes_before"] = before
            record("forget + prune", tool, measured, before)
    return work, components, source_bytes


def cleanup_workload(bench, name):
    if bench["keep"]:
        return
    out = bench["out"]
    for path in [os.path.join(out, "work", name), os.path.join(out, "work", name + ".state"),
                 os.path.join(out, "repos", name), os.path.join(out, "restore", name)]:
        discard(out, path)


# ---------------------------------------------------------------------------
# Scale: a small nightly backup into a repository already holding many chunks


def random_file(path, size, rng):
    with open(path, "wb") as target:
        left = size
        while left:
            block = min(left, 64 << 20)
            target.write(rng.randbytes(block))
            left -= block


def small_night(directory, rng, files=200, size=16 * 1024):
    """The small nightly change: `files` new text-like files (~3 MB)."""
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    words = [rng.randbytes(6).hex() for _ in range(2000)]
    for index in range(files):
        text = " ".join(rng.choice(words) for _ in range(size // 13))
        with open(os.path.join(directory, f"note-{index:04}.md"), "w") as target:
            target.write(text)


# One growing backup holds per-chunk state for everything it adds (the
# session's dedup set, the unindexed packs' entries, the file's chunk list):
# about 500 bytes a chunk, so adding 9 M chunks in one backup peaked near
# 13 GB. The repository is grown instead by backups of at most STEP_CHUNKS
# new chunks each, in files of at most FILE_CHUNKS chunks written in
# 64 MiB blocks, so every step stays well under 1 GB whatever the target.
STEP_CHUNKS = 1_000_000
FILE_CHUNKS = 1 << 18


def grow(bench, bulk, env, rng, held, target, chunk, step):
    """Adds `target - held` unique chunks through `cairn backup`s of at most
    `step` new chunks each. Returns the steps' measurements."""
    runner, cairn = bench["runner"], bench["cairn"]
    steps = []
    while held < target:
        adding = min(step, target - held)
        log(f"[scale] {held:,} -> {held + adding:,} chunks: writing "
            f"{adding * chunk / MB:.0f} MB of random data")
        written = []
        for start in range(0, adding, FILE_CHUNKS):
            path = os.path.join(bulk, f"bulk-{held + start:012}.bin")
            random_file(path, min(FILE_CHUNKS, adding - start) * chunk, rng)
            written.append(path)
        measured = runner.measure(f"scale-build-{held + adding}", [
            cairn, "backup", "--json", "--component", f"bulk={bulk}",
            "--chunking", "bulk=fixed:512"], tool="cairn", extra_env=env, drop=False)
        measured["chunks_added"] = adding
        steps.append(measured)
        if measured["exit_status"] != 0:
            raise SystemExit(f"scale: growing the repository failed at {held:,} chunks")
        # The data is in the repository now; only its chunks matter (an
        # emptied file costs the next step nothing to re-read).
        for path in written:
            os.truncate(path, 0)
        held += adding
    return steps


def summarise_build(steps):
    """One build's totals: wall and CPU summed, peak RSS the largest step's."""
    if not steps:
        return None
    return {"steps": steps,
            "wall_s": round(sum(step["wall_s"] for step in steps), 2),
            "cpu_s": round(sum(step["cpu_s"] for step in steps), 2),
            "peak_rss_bytes": max(step["peak_rss_bytes"] for step in steps),
            "exit_status": max(step["exit_status"] for step in steps)}


def run_scale(bench, targets, repeats=3, step=STEP_CHUNKS):
    """Builds one encrypted cairn repository up to each target chunk count
    with real `cairn backup`s of random data cut into 512-byte fixed chunks
    (`--chunking bulk=fixed:512`, the smallest the chunker allows: every
    chunk unique, through cairn's own write path), at most `step` chunks a
    backup; after each target, times a small nightly backup (~3 MB of new
    files in its own component) `repeats` times with the caches dropped and
    keeps the median (by wall time), since other work may load the machine."""
    out, runner, results, cairn = bench["out"], bench["runner"], bench["results"], bench["cairn"]
    repo = os.path.join(out, "repos", "scale", "cairn")
    work = os.path.join(out, "work", "scale")
    bulk, small = os.path.join(work, "bulk"), os.path.join(work, "small")
    os.makedirs(bulk, exist_ok=True)
    os.makedirs(os.path.dirname(repo), exist_ok=True)
    env = {"CAIRN_REPO": repo}
    runner.measure("scale-init", [cairn, "init"], tool="cairn", extra_env=env, drop=False)
    rng = random.Random(f"scale/{bench['seed']}")
    chunk = 512
    held = 0
    scale = results.setdefault("scale_workload", {"chunk_bytes": chunk, "points": []})
    scale.update({"step_chunks": step, "repeats": repeats})
    points = scale["points"]
    for target in [0] + targets:
        build = summarise_build(grow(bench, bulk, env, rng, held, target, chunk, step))
        held = max(held, target)
        runs = []
        for repeat in range(repeats):
            small_night(small, rng)
            measured = runner.measure(f"scale-nightly-{target}-{repeat + 1}", [
                cairn, "backup", "--json", "--component", f"small={small}"], tool="cairn",
                extra_env=env)
            measured["load_average"] = os.getloadavg()
            runs.append(measured)
        nightly = sorted(runs, key=lambda run: run["wall_s"])[len(runs) // 2]
        points.append({"chunks": target, "build": build, "nightly": nightly, "nightly_runs": runs,
                       "repo_bytes": du_bytes(repo), "load_average": os.getloadavg()})
        log(f"[scale] {target:,} chunks: nightly {nightly['wall_s']:.2f} s, "
            f"{nightly['peak_rss_bytes'] / 2**20:.0f} MiB; repository {du_bytes(repo) / MB:.0f} MB")
        bench["save"]()
    if not bench["keep"]:
        discard(out, work)
        discard(out, os.path.join(out, "repos", "scale"))


PLOT = """
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
points = json.load(open(sys.argv[1]))["scale_workload"]["points"]
chunks = [p["chunks"] for p in points]
fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
left.plot(chunks, [p["nightly"]["wall_s"] for p in points], "o-", label="wall (median of runs)")
left.plot(chunks, [p["nightly"]["cpu_s"] for p in points], "s--", label="CPU (user+sys)")
left.legend(fontsize=8)
left.set_xscale("symlog", linthresh=10000); left.set_ylim(bottom=0)
left.set_xlabel("chunks already in the repository"); left.set_ylabel("seconds")
left.set_title("small nightly backup: time")
right.plot(chunks, [p["nightly"]["peak_rss_bytes"] / 2**20 for p in points], "o-", color="C1")
right.set_xscale("symlog", linthresh=10000); right.set_ylim(bottom=0)
right.set_xlabel("chunks already in the repository"); right.set_ylabel("peak RSS (MiB)")
right.set_title("small nightly backup: memory")
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
"""


def plot_scale(results_path, target, python):
    """docs/scale.png's source: matplotlib from the real-applications venv."""
    if not python or not os.path.exists(python):
        log("scale: no venv python with matplotlib; no plot")
        return False
    done = subprocess.run([python, "-c", PLOT, results_path, target], capture_output=True,
                          text=True)
    if done.returncode != 0:
        log(f"scale: plot failed: {done.stderr[-1000:]}")
        return False
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cairn", help="path to the release cairn binary")
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help=f"comma-separated, from {','.join(WORKLOADS)} (default: all)")
    parser.add_argument("--nights", type=int, default=3,
                        help="nights of the modelled and real-applications workloads (default 3)")
    parser.add_argument("--scale", type=float, default=1.0, help="modelled workload's scale")
    parser.add_argument("--apps-scale", type=float, default=1.0,
                        help="real applications' scale (1.0: 60,000 embeddings, pgbench -s 15)")
    parser.add_argument("--tree-source", help="tree for the real-tree workload "
                        "(default: `rustc --print sysroot`)")
    parser.add_argument("--scale-repeats", type=int, default=3,
                        help="small nightly backups timed at each scale point; the median "
                             "is reported (default 3)")
    parser.add_argument("--scale-chunks", default="100000,1000000",
                        help="chunk counts of the scale workload (default 100000,1000000; "
                             "add 10000000 for 10 M)")
    parser.add_argument("--realapps-venv", help="venv with chromadb and matplotlib "
                        "(default: realapps.py's, target/realapps-venv)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out")
    parser.add_argument("--borg-encryption", default="none",
                        help="borg init --encryption mode (default none; e.g. repokey-blake2)")
    parser.add_argument("--rustic", default=shutil.which("rustic"),
                        help="path to the rustic binary (default: rustic on PATH; none: skipped)")
    parser.add_argument("--keep", action="store_true",
                        help="keep workloads, repositories and restores (default: delete them)")
    parser.add_argument("--s3-venv",
                        help="venv with moto's server (scripts/s3-server.sh): also measure "
                             "backup and restore over S3 on loopback: cairn, restic, rustic")
    parser.add_argument("--render", metavar="RESULTS_JSON",
                        help="only print the tables of an earlier (or unfinished) run's results.json")
    args = parser.parse_args()
    if args.render:
        with open(args.render) as source:
            print(render(json.load(source)))
        return
    selected = [name.strip() for name in args.workloads.split(",") if name.strip()]
    unknown = [name for name in selected if name not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    if not args.cairn or not args.out:
        parser.error("--cairn and --out are needed")
    if args.nights < 2:
        parser.error("--nights must be at least 2")

    out = os.path.abspath(args.out)
    prepare_out(out)
    cairn = os.path.abspath(args.cairn)
    rustic = os.path.abspath(args.rustic) if args.rustic else None
    TOOLS[:] = [tool for tool in ALL_TOOLS if tool != "rustic" or rustic]
    if rustic and not os.access(rustic, os.X_OK):
        # Still being built elsewhere: each workload takes rustic in if the
        # binary is there when the workload starts (the report says per
        # workload which tools ran).
        log(f"{rustic} is not there yet: workloads starting before it is are run without it")
    RUSTIC[:] = [rustic] if rustic else []
    env_root = os.path.join(out, "env")
    os.makedirs(env_root, exist_ok=True)
    # Every encrypted tool reads its passphrase from a file, as their users'
    # cron jobs do.
    password_file = os.path.join(env_root, "password")
    with open(password_file, "w") as target:
        target.write("cairn-bench\n")
    os.chmod(password_file, 0o600)
    environments = {
        # The passphrase unlocks the repository's key slot (Argon2id at its
        # default cost, paid once per command, as restic pays scrypt's).
        "cairn": {"CAIRN_CONFIG_DIR": os.path.join(env_root, "cairn-config"),
                  "CAIRN_CACHE_DIR": os.path.join(env_root, "cairn-cache"),
                  "CAIRN_PASSWORD_FILE": password_file},
        "cairn-plain": {"CAIRN_CONFIG_DIR": os.path.join(env_root, "cairn-plain-config"),
                        "CAIRN_CACHE_DIR": os.path.join(env_root, "cairn-plain-cache")},
        "rustic": {"RUSTIC_PASSWORD_FILE": password_file,
                   "RUSTIC_CACHE_DIR": os.path.join(env_root, "rustic-cache"),
                   "RUSTIC_NO_PROGRESS": "true"},
        "restic": {"RESTIC_PASSWORD_FILE": password_file,
                   "RESTIC_CACHE_DIR": os.path.join(env_root, "restic-cache")},
        "borg": {"BORG_BASE_DIR": os.path.join(env_root, "borg"),
                 "BORG_PASSCOMMAND": f"cat {shlex.quote(password_file)}",
                 "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
                 "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"},
    }
    os.makedirs(os.path.join(out, "repos"), exist_ok=True)
    runner = Runner(out, environments)
    venv_python = os.path.join(args.realapps_venv or realapps.DEFAULT_VENV, "bin", "python")

    results = {
        "seed": args.seed,
        "scale": args.scale,
        "apps_scale": args.apps_scale,
        "nights": args.nights,
        "selected": selected,
        "machine": machine_info(out),
        "versions": {
            "cairn": version_of([cairn, "--version"]),
            "cairn_git": version_of(["git", "-C", ROOT, "describe", "--always", "--dirty"]),
            "restic": version_of(["restic", "version"]),
            "rustic": (version_of([rustic, "--version"]) if rustic and os.access(rustic, os.X_OK)
                       else "not run"),
            "borg": version_of(["borg", "--version"]),
            "b3sum": version_of(["b3sum", "--version"]),
            "zstd": version_of(["zstd", "--version"]),
            "python": platform.python_version(),
        },
        "settings": {
            "cairn": "defaults: FastCDC 4/16/64 KiB, keyed BLAKE3, zstd, ed25519-signed manifests, "
                     "AES-256-GCM packs where the CPU has AES-NI, else XChaCha20-Poly1305 (X25519 to the read key), passphrase slot (Argon2id, 2 lanes)",
            "cairn-plain": "the same with `init --plaintext`: no encryption, plain BLAKE3 ids",
            "rustic": "defaults: restic's repository format 2, compression (zstd), AES-256 encryption",
            "restic": "defaults: repository format 2 with compression auto (zstd), AES-256 encryption",
            "borg": f"--encryption {args.borg_encryption}, --compression zstd,3, default chunker (buzhash 19,23,21: ~2 MiB chunks)",
        },
        "references": {},
        "workloads": {},
    }

    def save():
        with open(os.path.join(out, "results.json"), "w") as target:
            json.dump(results, target, indent=2)

    bench = {"out": out, "runner": runner, "results": results, "cairn": cairn, "rustic": rustic,
             "save": save, "keep": args.keep, "borg_encryption": args.borg_encryption,
             "seed": args.seed}
    makers = {"modelled": workload_modelled, "tree": workload_tree, "apps": workload_apps}
    s3_done = False
    for name in selected:
        if name == "scale":
            targets = [int(value) for value in args.scale_chunks.split(",") if value.strip()]
            run_scale(bench, targets, repeats=max(1, args.scale_repeats))
            empty_trash(out)
            if plot_scale(os.path.join(out, "results.json"), os.path.join(out, "scale.png"),
                          venv_python):
                results["scale_workload"]["plot"] = "scale.png"
            save()
            continue
        workload = makers[name](args, os.path.join(out, "work", name))
        work, components, source_bytes = run_workload(bench, workload)
        if args.s3_venv and not s3_done:
            # Over S3 on the first workload run (the modelled one by default).
            s3_steps(args.s3_venv, bench, name, work, components, source_bytes)
            s3_done = True
            save()
        cleanup_workload(bench, name)
        empty_trash(out)

    cache_variables = {"cairn": "CAIRN_CACHE_DIR", "cairn-plain": "CAIRN_CACHE_DIR",
                       "restic": "RESTIC_CACHE_DIR", "rustic": "RUSTIC_CACHE_DIR",
                       "borg": "BORG_BASE_DIR"}
    results["machine"]["loadavg_end"] = load_average()
    if RUSTIC and os.access(RUSTIC[0], os.X_OK):
        results["versions"]["rustic"] = version_of([RUSTIC[0], "--version"])
    results["cache_bytes"] = {tool: du_bytes(environments[tool][cache_variables[tool]])
                              for tool in TOOLS}
    save()

    markdown = render(results)
    with open(os.path.join(out, "results.md"), "w") as target:
        target.write(markdown)
    print(markdown)
    empty_trash(out)
    failures = [(name, step, tool) for name, record in results["workloads"].items()
                for step, tools in record["steps"].items()
                for tool, measured in tools.items() if measured["exit_status"] != 0]
    failures += [("s3", step, tool) for step, tools in results.get("s3_steps", {}).items()
                 for tool, measured in tools.items() if measured["exit_status"] != 0]
    different = [name for name, record in results["workloads"].items()
                 if not all(check["identical"] for tool, check in
                            record.get("restore_check", {}).items() if tool in CAIRN_TOOLS)]
    s3_identical = all(check["identical"] for check in results.get("restore_check_s3", {}).values())
    if failures or different or not s3_identical:
        log(f"failures: {failures}; restores differing: {different}")
        sys.exit(1)


# ---------------------------------------------------------------------------
# Over S3

S3_TOOLS = ["restic", "rustic", "cairn"]
S3_BUCKET = "cairn-bench"
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "cairn-bench", "AWS_SECRET_ACCESS_KEY": "cairn-bench",
                  "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}


def start_moto(venv, logs):
    """moto's S3 server on a free loopback port, with the bucket made."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_file = open(os.path.join(logs, "moto.log"), "wb")
    server = subprocess.Popen([os.path.join(venv, "bin", "moto_server"), "-H", "127.0.0.1",
                               "-p", str(port)], stdout=log_file, stderr=log_file)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                sys.exit(f"compare: moto's server did not start; see {logs}/moto.log")
            time.sleep(0.1)
    make_bucket = ("import boto3, sys; boto3.client('s3', endpoint_url=sys.argv[1])"
                   ".create_bucket(Bucket=sys.argv[2])")
    subprocess.run([os.path.join(venv, "bin", "python"), "-c", make_bucket, endpoint, S3_BUCKET],
                   env={**os.environ, **S3_CREDENTIALS}, check=True)
    return server, endpoint


def rustic_s3_profile(env_root, endpoint, password_file):
    """rustic takes its opendal S3 backend's settings from a profile (TOML
    in $XDG_CONFIG_HOME/rustic/), as its users configure it; returns the
    environment that finds it."""
    config_home = os.path.join(env_root, "rustic-s3-config")
    os.makedirs(os.path.join(config_home, "rustic"), exist_ok=True)
    with open(os.path.join(config_home, "rustic", "s3.toml"), "w") as profile:
        profile.write(f"""[repository]
repository = "opendal:s3"
password-file = "{password_file}"

[repository.options]
bucket = "{S3_BUCKET}"
root = "/rustic"
endpoint = "{endpoint}"
region = "us-east-1"
access_key_id = "{S3_CREDENTIALS['AWS_ACCESS_KEY_ID']}"
secret_access_key = "{S3_CREDENTIALS['AWS_SECRET_ACCESS_KEY']}"
""")
    return {"XDG_CONFIG_HOME": config_home}


def s3_steps(venv, bench, name, work, components, source_bytes):
    """Backup of the workload's latest state into a fresh repository on a
    loopback S3 server, then a full restore, for cairn, restic and rustic, on
    the same server."""
    out, runner, results = bench["out"], bench["runner"], bench["results"]
    cairn, rustic = bench["cairn"], bench["rustic"]
    tools = [tool for tool in S3_TOOLS if tool in present_tools() or tool == "restic"]
    server, endpoint = start_moto(venv, runner.logs)
    env_root = os.path.join(out, "env")
    environments = runner.environments
    try:
        s3_env = {
            "cairn": {**environments["cairn"], **S3_CREDENTIALS, "CAIRN_S3_ENDPOINT": endpoint,
                      "CAIRN_CACHE_DIR": os.path.join(env_root, "cairn-s3-cache"),
                      "CAIRN_REPO": f"s3://{S3_BUCKET}/cairn"},
            "restic": {**environments["restic"], **S3_CREDENTIALS,
                       "RESTIC_CACHE_DIR": os.path.join(env_root, "restic-s3-cache"),
                       "RESTIC_REPOSITORY": f"s3:{endpoint}/{S3_BUCKET}/restic"},
        }
        if "rustic" in tools:
            s3_env["rustic"] = {**environments["rustic"],
                                "RUSTIC_CACHE_DIR": os.path.join(env_root, "rustic-s3-cache"),
                                **rustic_s3_profile(env_root, endpoint,
                                                    environments["rustic"]["RUSTIC_PASSWORD_FILE"])}
        runner.environments.update({f"{tool}-s3": s3_env[tool] for tool in tools})
        inits = {"cairn": [cairn, "init"], "restic": ["restic", "init"],
                 "rustic": [rustic, "-P", "s3", "init"]}
        for tool in tools:
            runner.measure(f"s3-init-{tool}", inits[tool], tool=f"{tool}-s3", drop=False)
        backups = {
            "cairn": [cairn, "backup", "--json"] +
                     [arg for component in components for arg in
                      ("--component", f"{component}={os.path.join(work, component)}")],
            "restic": ["restic", "backup"] + components,
            "rustic": [rustic, "-P", "s3", "backup"] + components,
        }
        steps = results.setdefault("s3_steps", {})
        for tool in tools:
            measured = runner.measure(f"s3-backup-{tool}", backups[tool], tool=f"{tool}-s3",
                                      cwd=work)
            measured["source_bytes"] = source_bytes
            steps.setdefault("backup over S3", {})[tool] = measured
        results.setdefault("restore_check_s3", {})
        for tool in tools:
            target = os.path.join(out, "restore", f"{tool}-s3")
            os.makedirs(target)
            restore = {"cairn": [cairn, "restore", "latest", "--target", target],
                       "restic": ["restic", "restore", "latest", "--target", target],
                       "rustic": [rustic, "-P", "s3", "restore", "latest", target]}[tool]
            measured = runner.measure(f"s3-restore-{tool}", restore, tool=f"{tool}-s3",
                                      cwd=target, sync_after=True)
            measured["source_bytes"] = source_bytes
            steps.setdefault("restore over S3", {})[tool] = measured
            differences = []
            for component in components:
                diff = subprocess.run(["diff", "-r", "--no-dereference", "-q",
                                       os.path.join(work, component),
                                       os.path.join(target, component)],
                                      capture_output=True, text=True)
                differences += diff.stdout.splitlines()[:20] + diff.stderr.splitlines()[:5]
            results["restore_check_s3"][tool] = {"identical": not differences,
                                                 "differences": differences[:20]}
            log(f"s3-restore-{tool}: {'identical' if not differences else 'DIFFERENT'}")
        if not bench["keep"]:  # after all restores, as for the local ones
            for tool in tools:
                discard(out, os.path.join(out, "restore", f"{tool}-s3"))
        results["s3"] = {"server": version_of([os.path.join(venv, "bin", "python"), "-c",
                                               "import moto; print('moto', moto.__version__)"]),
                         "endpoint": "loopback", "workload": name}
    finally:
        server.terminate()
        server.wait()


# ---------------------------------------------------------------------------
# Report


def mb(value):
    if abs(value) < MB:
        return f"{value / 1e3:,.1f} kB"
    return f"{value / MB:,.1f} MB"


def ratio(value, base):
    if not base or value is None:
        return "–"
    return f"{value / base:.2f}×"


def table(add, steps, tools, step_order):
    """One workload's steps: each tool's figure, then cairn ÷ each other tool."""
    peers = [tool for tool in tools if tool != "cairn"]
    add("| step | metric | " + " | ".join(tools) + " | " +
        " | ".join(f"cairn ÷ {peer}" for peer in peers) + " |")
    add("| --- | --- |" + " ---: |" * (len(tools) + len(peers)))

    def row(step, metric, value, text):
        measured_here = steps.get(step, {})
        cells, values = {}, {}
        for tool in tools:
            measured = measured_here.get(tool)
            if measured is None:
                cells[tool], values[tool] = "–", None
                continue
            values[tool] = value(measured)
            cells[tool] = text(values[tool])
            if measured["exit_status"] != 0:
                cells[tool] += f" (exit {measured['exit_status']})"
        add(f"| {step} | {metric} | " + " | ".join(cells[tool] for tool in tools) + " | " +
            " | ".join(ratio(values.get("cairn"), values[peer]) for peer in peers) + " |")

    def throughput(m):
        return m["source_bytes"] / max(m["wall_s"], 0.01)

    def common(step):
        row(step, "wall time", lambda m: m["wall_s"], lambda v: f"{v:.2f} s")
        row(step, "CPU user+sys", lambda m: m["cpu_s"], lambda v: f"{v:.2f} s")
        row(step, "peak RSS", lambda m: m["peak_rss_bytes"], lambda v: f"{v / 2**20:,.0f} MiB")

    for step in step_order:
        if step not in steps:
            continue
        if step == "forget + prune":
            common(step)
            row(step, "space given back", lambda m: m["repo_bytes_before"] - m["repo_bytes"], mb)
            row(step, "repository size after", lambda m: m["repo_bytes"], mb)
            continue
        if step != "unchanged re-backup":
            row(step, "throughput", throughput, lambda v: f"{v / MB:,.1f} MB/s")
        common(step)
        if step.startswith("full restore") or step.startswith("restore"):
            row(step, "wall time until on disk (+ `sync` after)",
                lambda m: m["wall_s"] + (m.get("sync_after_s") or 0), lambda v: f"{v:.2f} s")
        if "backup" in step and "over S3" not in step:
            if not step.startswith("night 1 "):
                row(step, "repository growth", lambda m: m["repo_bytes"] - m["repo_bytes_before"], mb)
            row(step, "repository size after", lambda m: m["repo_bytes"], mb)


def nights_table(add, record, tools):
    """Growth per night and cumulative size, next to the zstd floor."""
    steps = record["steps"]
    add("| night | source | zstd --patch-from floor | " +
        " | ".join(f"{tool} growth (total)" for tool in tools) +
        " | cairn ÷ floor | " + " | ".join(f"cairn ÷ {tool}" for tool in tools if tool != "cairn")
        + " |")
    add("| --- | ---: | ---: |" + " ---: |" * (len(tools) + len(tools)))
    for night in record["nights"]:
        number = night["night"]
        step = "night 1 (first backup)" if number == 1 else f"night {number} backup"
        growth = {}
        cells = []
        for tool in tools:
            measured = steps.get(step, {}).get(tool)
            if measured is None:
                growth[tool] = None
                cells.append("–")
                continue
            growth[tool] = measured["repo_bytes"] - measured.get("repo_bytes_before", 0)
            cells.append(f"{mb(growth[tool])} ({mb(measured['repo_bytes'])})")
        floor = night.get("floor", {}).get("floor_bytes")
        floor_text = mb(floor) if floor is not None else "–"
        add(f"| {number} | {mb(night['bytes'])} | {floor_text} | " + " | ".join(cells) + " | " +
            ratio(growth.get("cairn"), floor) + " | " +
            " | ".join(ratio(growth.get("cairn"), growth[tool]) for tool in tools
                       if tool != "cairn") + " |")


def render(results):
    machine = results["machine"]
    lines = []
    add = lines.append
    add("# cairn vs restic, rustic and borg: " + ", ".join(results["selected"]))
    add("")
    add(f"- Date: {machine['date']}")
    add(f"- Machine: {machine.get('nproc')} CPUs ({machine.get('cpu', 'unknown CPU')}), "
        f"{machine.get('ram_bytes', 0) / 2**30:.1f} GiB RAM, kernel {machine['kernel']}, "
        f"{machine.get('os', '')}; filesystem {machine['filesystem']}")
    if machine.get("loadavg_start"):
        add(f"- Load average (1, 5, 15 min) at the start: {machine['loadavg_start']}; at the end: "
            f"{machine.get('loadavg_end', '?')}. Anything above 0 is other work sharing the "
            "machine's cores with this run.")
    if machine.get("ext4_without_journal"):
        add("- The filesystem is ext4 without a journal: allocating an inode, it skips "
            "those freed in the last seconds (minutes while their inode table block is "
            "unwritten), so deleting many files shortly before this run (a previous run's "
            "clean-up included) slows every tool's restore. This script deletes each "
            "workload's trees only after all its restores.")
    versions = results["versions"]
    add(f"- Versions: {versions['cairn']} ({versions['cairn_git']}), {versions['restic']}, "
        f"{versions.get('rustic', 'rustic not run')}, {versions['borg']}, {versions['zstd']}")
    tools_seen = [tool for tool in ALL_TOOLS if any(
        tool in measured for record in results["workloads"].values()
        for measured in record["steps"].values())]
    for tool in tools_seen:
        add(f"- {tool}: {results['settings'][tool]}")
    add("- restic, rustic and cairn read the same passphrase from a file (RESTIC_PASSWORD_FILE, "
        "RUSTIC_PASSWORD_FILE, CAIRN_PASSWORD_FILE); so does borg (BORG_PASSCOMMAND) when "
        "--borg-encryption asks for a key")
    drops = [m["caches_dropped"] for record in results["workloads"].values()
             for tools in record["steps"].values() for m in tools.values()]
    drops += [m["caches_dropped"] for m in results["references"].values()]
    drops = [dropped for dropped in drops if dropped is not None]
    if drops and all(drops):
        add("- Page cache: dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) before every step "
            "(but the write reference, whose source is cached on purpose)")
    elif drops and not any(drops):
        add("- Page cache: could NOT be dropped (not root?); every step after the first ran warm")
    elif drops:
        add("- Page cache: dropped before some steps only (see results.json)")
    add("- MB = 10^6 bytes. Throughput = source bytes the step covers ÷ wall time "
        "(for restore and verify: the latest snapshot's bytes). Ratios are cairn's "
        "(encrypted, its default) ÷ each other tool's, cairn-plain (`init --plaintext`) "
        "included: for throughput above 1 is faster; for time, CPU, memory and size below "
        "1 is better.")
    add("")

    if results["references"]:
        add("## Hardware references (cold cache, modelled workload)")
        add("")
        add("Reading, hashing and compressing cover the first night's bytes, read cold. "
            "Writing covers the latest night's: `tar | tar` from a source already in the "
            "page cache into an empty directory beside the restores (its `sync` after in brackets).")
        add("")
        add("| reference | wall | throughput | CPU (user+sys) | peak RSS |")
        add("| --- | ---: | ---: | ---: | ---: |")
        for name, measured in results["references"].items():
            synced = measured.get("sync_after_s")
            after = f" (+ {synced:.2f} s)" if synced is not None else ""
            add(f"| `{name}` | {measured['wall_s']:.2f} s{after} | "
                f"{measured['bytes'] / MB / max(measured['wall_s'], 0.01):,.0f} MB/s | "
                f"{measured['cpu_s']:.2f} s | {measured['peak_rss_bytes'] / 2**20:,.0f} MiB |")
        add("")

    for name, record in results["workloads"].items():
        tools = [tool for tool in ALL_TOOLS if tool in record["tools"]]
        first = record["nights"][0]
        add(f"## {record['title']}")
        add("")
        add(f"Night 1: {mb(first['bytes'])} in {first['files']:,} files; "
            f"{len(record['nights'])} night(s).")
        add("")
        order = ([f"night 1 (first backup)"] +
                 [f"night {night['night']} backup" for night in record["nights"][1:]] +
                 ["unchanged re-backup", "full restore", "full verification", "forget + prune"])
        table(add, record["steps"], tools, order)
        add("")
        if len(record["nights"]) > 1:
            add("Growth per night (repository size after it in brackets), next to the "
                "`zstd -3 --long --patch-from` floor (the sum, over the files that changed, of "
                "each one's patch against its version of the night before; new files whole):")
            add("")
            nights_table(add, record, tools)
            add("")
        floor_lines(add, record, machine.get("nproc") or 1)
        for tool, check in record.get("restore_check", {}).items():
            verdict = ("byte-identical to the source (`diff -r`)" if check["identical"]
                       else "DIFFERS from the source: " + "; ".join(check["differences"][:5]))
            add(f"- {tool} restore: {verdict}")
        add("")

    if results.get("s3_steps"):
        s3 = results.get("s3", {})
        add(f"## Over S3 ({s3.get('server', 'moto')} on loopback, "
            f"{s3.get('workload', '')} workload's latest state)")
        add("")
        tools = [tool for tool in ["restic", "rustic", "cairn"]
                 if any(tool in measured for measured in results["s3_steps"].values())]
        table(add, results["s3_steps"], tools, ["backup over S3", "restore over S3"])
        add("")
        for tool, verdict in results.get("restore_check_s3", {}).items():
            add(f"- {tool} restore over S3: " +
                ("byte-identical to the source" if verdict["identical"] else "DIFFERS from the source"))
        add("- A fresh repository per tool on the same in-memory, single-process Python server: "
            "the server's own speed bounds every tool")
        add("")

    if results.get("scale_workload"):
        scale = results["scale_workload"]
        add(f"## Scale: a small nightly backup into a repository already holding N chunks")
        add("")
        add(f"One encrypted cairn repository, grown by real `cairn backup`s of random data cut "
            f"into {scale['chunk_bytes']}-byte fixed chunks (`--chunking bulk=fixed:512`: every "
            "chunk unique, through cairn's own write path), at most "
            f"{scale.get('step_chunks', 0):,} chunks a backup; after each growth, a small nightly "
            "backup (200 new files, ~3 MB, its own component) with the page cache dropped, "
            f"run {scale.get('repeats', 1)} times: the median by wall time is shown, with the "
            "1-minute load average when it ended.")
        add("")
        add("| chunks held | repository | growing it: wall / peak RSS | nightly backup: wall | "
            "CPU | peak RSS | load |")
        add("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for point in scale["points"]:
            build = point.get("build")
            grown = (f"{build['wall_s']:.1f} s / {build['peak_rss_bytes'] / 2**20:,.0f} MiB"
                     if build else "–")
            nightly = point["nightly"]
            status = f" (exit {nightly['exit_status']})" if nightly["exit_status"] else ""
            load = (f"{nightly['load_average'][0]:.1f}" if nightly.get("load_average")
                    else "–")
            add(f"| {point['chunks']:,} | {mb(point['repo_bytes'])} | {grown} | "
                f"{nightly['wall_s']:.2f} s{status} | {nightly['cpu_s']:.2f} s | "
                f"{nightly['peak_rss_bytes'] / 2**20:,.0f} MiB | {load} |")
        add("")
        if scale.get("plot"):
            add("Plotted into OUT/scale.png (docs/scale.png).")
            add("")

    caches = results.get("cache_bytes", {})
    if caches:
        add("- Local caches after the run (not counted in repository size): " +
            ", ".join(f"{tool} {mb(size)}" for tool, size in caches.items()))
    add("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
