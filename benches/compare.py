#!/usr/bin/env python3
"""cairn vs restic, rustic and borg on the nightly workload (benches/workload.py).

Run through benches/compare.sh, which installs the tools and builds cairn.
This script owns the measurement: it generates the workload, measures the
hardware references, then runs, for each tool, phase by phase (so every
tool sees exactly the same bytes). cairn runs twice: encrypted (its
default, like restic's and rustic's) and with `init --plaintext`, so the
cost of encryption is measured in the same run. rustic runs when its
binary is given (--rustic) or on PATH:

  first backup -> [workload.py next-night] -> next-night backup
  -> unchanged re-backup -> full restore into an empty directory
  -> full data verification -> forget + prune
  -> (with --s3-venv) backup and restore of the latest state over a
     loopback S3 server (moto's), cairn and restic only

Before every measured step it syncs and drops the page cache (when the
kernel lets it) and records whether that worked. Each step runs under
GNU time (`/usr/bin/time -f`) for wall time, user+sys CPU and peak RSS;
`du -sb` gives the repository size after the step. Results go to
OUT/results.json (raw) and OUT/results.md (the table, also printed).

Standard library only.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKLOAD = os.path.join(HERE, "workload.py")
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

    def measure(self, label, command, tool=None, cwd=None, drop=True, sync_after=False):
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
    try:
        with open("/etc/os-release") as source:
            for line in source:
                if line.startswith("PRETTY_NAME="):
                    info["os"] = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return info


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
    for name in ["work", "repos", "restore", "env", "logs"]:
        shutil.rmtree(os.path.join(out, name), ignore_errors=True)
    for name in ["results.json", "results.md"]:
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    with open(os.path.join(out, MARKER), "w") as marker:
        marker.write("made by benches/compare.sh; its contents are replaced on every run\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cairn", required=True, help="path to the release cairn binary")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--borg-encryption", default="none",
                        help="borg init --encryption mode (default none; e.g. repokey-blake2)")
    parser.add_argument("--rustic", default=shutil.which("rustic"),
                        help="path to the rustic binary (default: rustic on PATH; none: skipped)")
    parser.add_argument("--keep", action="store_true",
                        help="keep workload, repositories and restores (default: delete the big ones)")
    parser.add_argument("--s3-venv",
                        help="venv with moto's server (scripts/s3-server.sh): also measure "
                             "backup and restore over S3 on loopback, cairn against restic")
    args = parser.parse_args()

    out = os.path.abspath(args.out)
    prepare_out(out)
    cairn = os.path.abspath(args.cairn)
    rustic = os.path.abspath(args.rustic) if args.rustic else None
    TOOLS[:] = [tool for tool in ALL_TOOLS if tool != "rustic" or rustic]
    work = os.path.join(out, "work")
    repos = {tool: os.path.join(out, "repos", tool) for tool in ALL_TOOLS}
    restores = {tool: os.path.join(out, "restore", tool) for tool in ALL_TOOLS}
    env_root = os.path.join(out, "env")
    environments = {
        # The passphrase unlocks the repository's key slot (Argon2id at its
        # default cost, paid once per command, as restic pays scrypt's).
        "cairn": {"CAIRN_CONFIG_DIR": os.path.join(env_root, "cairn-config"),
                  "CAIRN_CACHE_DIR": os.path.join(env_root, "cairn-cache"),
                  "CAIRN_PASSWORD": "cairn-bench"},
        "cairn-plain": {"CAIRN_CONFIG_DIR": os.path.join(env_root, "cairn-plain-config"),
                        "CAIRN_CACHE_DIR": os.path.join(env_root, "cairn-plain-cache")},
        "rustic": {"RUSTIC_REPOSITORY": repos["rustic"], "RUSTIC_PASSWORD": "cairn-bench",
                   "RUSTIC_CACHE_DIR": os.path.join(env_root, "rustic-cache"),
                   "RUSTIC_NO_PROGRESS": "true"},
        "restic": {"RESTIC_REPOSITORY": repos["restic"], "RESTIC_PASSWORD": "cairn-bench",
                   "RESTIC_CACHE_DIR": os.path.join(env_root, "restic-cache")},
        "borg": {"BORG_REPO": repos["borg"], "BORG_BASE_DIR": os.path.join(env_root, "borg"),
                 "BORG_PASSPHRASE": "cairn-bench",
                 "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
                 "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"},
    }
    os.makedirs(os.path.join(out, "repos"), exist_ok=True)
    runner = Runner(out, environments)

    results = {
        "scale": args.scale,
        "seed": args.seed,
        "machine": machine_info(out),
        "versions": {
            "cairn": version_of([cairn, "--version"]),
            "cairn_git": version_of(["git", "-C", ROOT, "describe", "--always", "--dirty"]),
            "restic": version_of(["restic", "version"]),
            "rustic": version_of([rustic, "--version"]) if rustic else "not run",
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
        "steps": {},
        "references": {},
    }

    def save():
        with open(os.path.join(out, "results.json"), "w") as target:
            json.dump(results, target, indent=2)

    # ---- workload, night 0
    log(f"generating the workload (scale {args.scale}, seed {args.seed}) in {work}")
    generated = subprocess.run([sys.executable, WORKLOAD, "generate", work, "--seed",
                                str(args.seed), "--scale", str(args.scale)],
                               capture_output=True, text=True, check=True)
    results["workload"] = {"night0": json.loads(generated.stdout)}
    night0_bytes, night0_files = tree_bytes(work)
    log(f"workload: {night0_bytes / MB:.1f} MB in {night0_files} files")

    # ---- hardware references over the first night's bytes
    file_list = "find db vectors memory -type f -print0"
    references = {
        "cat": f"{file_list} | xargs -0 cat > /dev/null",
        "b3sum": f"{file_list} | xargs -0 b3sum > /dev/null",
        "zstd -3 -T0 (tar stream)": "tar -cf - db vectors memory | zstd -3 -T0 -q -c > /dev/null",
    }
    for name, command in references.items():
        label = "ref-" + name.split()[0]
        measured = runner.measure(label, shell(command), cwd=work)
        measured["bytes"] = night0_bytes
        results["references"][name] = measured
    save()

    # ---- repositories
    init_commands = {
        "cairn": [cairn, "init", "--repo", repos["cairn"]],
        "cairn-plain": [cairn, "init", "--plaintext", "--repo", repos["cairn-plain"]],
        "restic": ["restic", "init"],
        "rustic": [rustic, "init"],
        "borg": ["borg", "init", "--encryption", args.borg_encryption],
    }
    for tool in TOOLS:
        runner.measure(f"init-{tool}", init_commands[tool], tool=tool, drop=False)

    def backup_command(tool, archive):
        if tool in CAIRN_TOOLS:
            command = [cairn, "backup", "--repo", repos[tool], "--json"]
            for name in COMPONENTS:
                command += ["--component", f"{name}={os.path.join(work, name)}"]
            return command
        if tool == "restic":
            return ["restic", "backup"] + COMPONENTS
        if tool == "rustic":
            return [rustic, "backup"] + COMPONENTS
        return ["borg", "create", "--stats", "--compression", "zstd,3", f"::{archive}"] + COMPONENTS

    def record(step, tool, measured, source_bytes):
        measured["repo_bytes"] = du_bytes(repos[tool])
        measured["source_bytes"] = source_bytes
        results["steps"].setdefault(step, {})[tool] = measured
        save()

    def backup_step(step, archive, source_bytes):
        for tool in TOOLS:
            before = du_bytes(repos[tool])
            measured = runner.measure(f"{step}-{tool}", backup_command(tool, archive),
                                      tool=tool, cwd=work)
            measured["repo_bytes_before"] = before
            record(step, tool, measured, source_bytes)
            if tool in CAIRN_TOOLS and measured["exit_status"] in (0, 3):
                try:
                    with open(os.path.join(out, measured["stdout"])) as source:
                        stats = json.load(source)
                    measured["cairn_stats"] = {key: stats.get(key) for key in
                                               ("new_chunks", "reused_chunks", "new_bytes",
                                                "stored_bytes", "unchanged_files")}
                except (OSError, ValueError):
                    pass

    backup_step("first backup", "night1", night0_bytes)

    log("applying one night of change (workload.py next-night)")
    changed = subprocess.run([sys.executable, WORKLOAD, "next-night", work],
                             capture_output=True, text=True, check=True)
    results["workload"]["night1"] = json.loads(changed.stdout)
    night1_bytes, night1_files = tree_bytes(work)

    backup_step("next-night backup", "night2", night1_bytes)
    backup_step("unchanged re-backup", "night2-again", night1_bytes)

    # ---- restore
    restore_commands = {
        "cairn": [cairn, "restore", "--repo", repos["cairn"], "latest", "--target", restores["cairn"]],
        "cairn-plain": [cairn, "restore", "--repo", repos["cairn-plain"], "latest", "--target",
                        restores["cairn-plain"]],
        "restic": ["restic", "restore", "latest", "--target", restores["restic"]],
        "rustic": [rustic, "restore", "latest", restores["rustic"]],
        "borg": ["borg", "extract", "::night2-again"],
    }
    results["restore_check"] = {}
    for tool in TOOLS:
        os.makedirs(restores[tool])
        measured = runner.measure(f"restore-{tool}", restore_commands[tool], tool=tool,
                                  cwd=restores[tool], sync_after=True)
        record("full restore", tool, measured, night1_bytes)
        # The workload's state file lies outside the three components.
        diff = subprocess.run(["diff", "-r", "--no-dereference", "-q",
                               "--exclude", ".workload.json", work, restores[tool]],
                              capture_output=True, text=True)
        identical = diff.returncode == 0
        results["restore_check"][tool] = {
            "identical": identical,
            "differences": diff.stdout.splitlines()[:20] + diff.stderr.splitlines()[:5],
        }
        log(f"restore-{tool}: diff -r against the source: {'identical' if identical else 'DIFFERENT'}")
        save()
    # What writing this tree costs on this filesystem, whoever writes it:
    # the latest night's files copied by one tar into another, into an empty
    # directory beside the restores (the floor under any restore's time).
    # The source is read once first and not dropped, so the copy pays for
    # writing alone: a restore reads a repository half the tree's size.
    copy_target = os.path.join(out, "restore", "copy-reference")
    os.makedirs(copy_target)
    sources = " ".join(COMPONENTS)
    subprocess.run(shell(f"tar -C {shlex.quote(work)} -cf - {sources} > /dev/null"), check=True)
    measured = runner.measure("ref-copy", shell(
        f"tar -C {shlex.quote(work)} -cf - {sources} | tar -C {shlex.quote(copy_target)} -xf -"),
        drop=False, sync_after=True)
    measured["bytes"] = night1_bytes
    results["references"]["write (tar into tar, latest night's tree, source cached)"] = measured
    save()
    # Removed only now: ext4 skips recently deleted inodes when it allocates
    # new ones, so a restore right after another tool's 20,000 files were
    # deleted pays for it (measured: 1.6 s against 2.9 s for the small files).
    if not args.keep:
        for tool in TOOLS:
            shutil.rmtree(restores[tool], ignore_errors=True)
        shutil.rmtree(copy_target, ignore_errors=True)

    # ---- verify
    verify_commands = {
        "cairn": [cairn, "verify", "--repo", repos["cairn"], "--read-data", "--json"],
        "cairn-plain": [cairn, "verify", "--repo", repos["cairn-plain"], "--read-data", "--json"],
        "restic": ["restic", "check", "--read-data"],
        "rustic": [rustic, "check", "--read-data"],
        "borg": ["borg", "check", "--verify-data"],
    }
    for tool in TOOLS:
        measured = runner.measure(f"verify-{tool}", verify_commands[tool], tool=tool)
        record("full verification", tool, measured, night1_bytes)

    # ---- retention: forget all but the newest snapshot, give the space back
    # cairn deletes in two phases; with --grace 0s (nothing else runs here)
    # the second prune run deletes what the first marked.
    def cairn_prune(tool):
        repo = shlex.quote(repos[tool])
        return shell(f"{shlex.quote(cairn)} forget --repo {repo} --keep-last 1 --prune --grace 0s"
                     f" && {shlex.quote(cairn)} prune --repo {repo} --grace 0s")
    prune_commands = {
        "cairn": cairn_prune("cairn"),
        "cairn-plain": cairn_prune("cairn-plain"),
        "restic": ["restic", "forget", "--keep-last", "1", "--prune"],
        "rustic": [rustic, "forget", "--keep-last", "1", "--prune"],
        "borg": shell("borg prune --keep-last 1 && borg compact"),
    }
    for tool in TOOLS:
        before = du_bytes(repos[tool])
        measured = runner.measure(f"prune-{tool}", prune_commands[tool], tool=tool)
        measured["repo_bytes_before"] = before
        record("forget + prune", tool, measured, before)

    if args.s3_venv:
        s3_steps(args.s3_venv, cairn, out, work, runner, results, environments, night1_bytes,
                 args.keep)
        save()

    cache_variables = {"cairn": "CAIRN_CACHE_DIR", "cairn-plain": "CAIRN_CACHE_DIR",
                       "restic": "RESTIC_CACHE_DIR", "rustic": "RUSTIC_CACHE_DIR",
                       "borg": "BORG_BASE_DIR"}
    results["cache_bytes"] = {tool: du_bytes(environments[tool][cache_variables[tool]])
                              for tool in TOOLS}
    results["workload"]["night0_bytes"] = night0_bytes
    results["workload"]["night0_files"] = night0_files
    results["workload"]["night1_bytes"] = night1_bytes
    results["workload"]["night1_files"] = night1_files
    save()

    markdown = render(results)
    with open(os.path.join(out, "results.md"), "w") as target:
        target.write(markdown)
    print(markdown)
    if not args.keep:
        for path in [work, os.path.join(out, "repos"), os.path.join(out, "restore")]:
            shutil.rmtree(path, ignore_errors=True)
    failures = [(step, tool) for step, tools in results["steps"].items()
                for tool, measured in tools.items() if measured["exit_status"] != 0]
    s3_identical = all(check["identical"] for check in results.get("restore_check_s3", {}).values())
    if failures or not results["restore_check"]["cairn"]["identical"] or not s3_identical:
        sys.exit(1)


# ---------------------------------------------------------------------------
# Over S3

S3_TOOLS = ["restic", "cairn"]
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


def s3_steps(venv, cairn, out, work, runner, results, environments, source_bytes, keep):
    """Backup of the latest state into a fresh repository on a loopback S3
    server, then a full restore, for cairn and restic, on the same server."""
    server, endpoint = start_moto(venv, runner.logs)
    env_root = os.path.join(out, "env")
    try:
        s3_env = {
            "cairn": {**environments["cairn"], **S3_CREDENTIALS, "CAIRN_S3_ENDPOINT": endpoint,
                      "CAIRN_CACHE_DIR": os.path.join(env_root, "cairn-s3-cache"),
                      "CAIRN_REPO": f"s3://{S3_BUCKET}/cairn"},
            "restic": {**environments["restic"], **S3_CREDENTIALS,
                       "RESTIC_CACHE_DIR": os.path.join(env_root, "restic-s3-cache"),
                       "RESTIC_REPOSITORY": f"s3:{endpoint}/{S3_BUCKET}/restic"},
        }
        runner.environments.update({f"{tool}-s3": s3_env[tool] for tool in S3_TOOLS})
        runner.measure("s3-init-cairn", [cairn, "init"], tool="cairn-s3", drop=False)
        runner.measure("s3-init-restic", ["restic", "init"], tool="restic-s3", drop=False)
        backups = {
            "cairn": [cairn, "backup", "--json"] +
                     [arg for name in COMPONENTS for arg in
                      ("--component", f"{name}={os.path.join(work, name)}")],
            "restic": ["restic", "backup"] + COMPONENTS,
        }
        for tool in S3_TOOLS:
            measured = runner.measure(f"s3-backup-{tool}", backups[tool], tool=f"{tool}-s3",
                                      cwd=work)
            measured["source_bytes"] = source_bytes
            results["steps"].setdefault("backup over S3", {})[tool] = measured
        results.setdefault("restore_check_s3", {})
        for tool in S3_TOOLS:
            target = os.path.join(out, "restore", f"{tool}-s3")
            os.makedirs(target)
            restore = ([cairn, "restore", "latest", "--target", target] if tool == "cairn"
                       else ["restic", "restore", "latest", "--target", target])
            measured = runner.measure(f"s3-restore-{tool}", restore, tool=f"{tool}-s3",
                                      cwd=target, sync_after=True)
            measured["source_bytes"] = source_bytes
            results["steps"].setdefault("restore over S3", {})[tool] = measured
            diff = subprocess.run(["diff", "-r", "--no-dereference", "-q", "--exclude",
                                   ".workload.json", work, target], capture_output=True, text=True)
            results["restore_check_s3"][tool] = {"identical": diff.returncode == 0,
                                                 "differences": diff.stdout.splitlines()[:20]}
            log(f"s3-restore-{tool}: {'identical' if diff.returncode == 0 else 'DIFFERENT'}")
        if not keep:  # after both restores, as for the local ones
            for tool in S3_TOOLS:
                shutil.rmtree(os.path.join(out, "restore", f"{tool}-s3"), ignore_errors=True)
        results["s3"] = {"server": version_of([os.path.join(venv, "bin", "python"), "-c",
                                               "import moto; print('moto', moto.__version__)"]),
                         "endpoint": "loopback"}
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


def render(results):
    machine = results["machine"]
    steps = results["steps"]
    lines = []
    add = lines.append
    scale = results["scale"]
    tools = [tool for tool in ALL_TOOLS if tool in results["settings"] and
             any(tool in measured for measured in steps.values())]
    add(f"# cairn vs {', '.join(tool for tool in tools if tool not in CAIRN_TOOLS)}: "
        f"nightly workload at scale {scale:g}")
    add("")
    if scale != 1.0:
        add(f"> Scale {scale:g}: the data set is {scale:g}× the size of the real one. "
            "Fixed costs (process start, key and index loading, repository "
            "opening) weigh far more than at full scale; use these figures to "
            "check the harness, not to compare tools.")
        add("")
    add(f"- Date: {machine['date']}")
    add(f"- Machine: {machine.get('nproc')} CPUs ({machine.get('cpu', 'unknown CPU')}), "
        f"{machine.get('ram_bytes', 0) / 2**30:.1f} GiB RAM, kernel {machine['kernel']}, "
        f"{machine.get('os', '')}; filesystem {machine['filesystem']}")
    if machine.get("ext4_without_journal"):
        add("- The filesystem is ext4 without a journal: allocating an inode, it skips "
            "those freed in the last seconds (minutes while their inode table block is "
            "unwritten), so deleting many files shortly before this run (a previous run's "
            "clean-up included) slows every tool's restore. This script deletes its own "
            "trees only after all its restores.")
    versions = results["versions"]
    add(f"- Versions: {versions['cairn']} ({versions['cairn_git']}), {versions['restic']}, "
        f"{versions.get('rustic', 'rustic not run')}, {versions['borg']}")
    for tool in tools:
        add(f"- {tool}: {results['settings'][tool]}")
    # None: a step that keeps the cache on purpose (the write reference,
    # whose source is read once first so that only writing is paid).
    drops = [m["caches_dropped"] for tools in steps.values() for m in tools.values()]
    drops += [m["caches_dropped"] for m in results["references"].values()]
    drops = [dropped for dropped in drops if dropped is not None]
    if all(drops):
        add("- Page cache: dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) before every step "
            "(but the write reference, whose source is cached on purpose)")
    elif not any(drops):
        add("- Page cache: could NOT be dropped (not root?); every step after the first ran warm")
    else:
        add("- Page cache: dropped before some steps only (see results.json)")
    workload = results["workload"]
    night0 = workload["night0"]["summary"]
    add(f"- Workload (seed {results['seed']}): night 0 {mb(workload['night0_bytes'])} in "
        f"{workload['night0_files']:,} files (db {mb(night0['db']['bytes'])}, "
        f"vectors {mb(night0['vectors']['bytes'])}, memory {mb(night0['memory']['bytes'])} in "
        f"{night0['memory']['files']:,} files); night 1 {mb(workload['night1_bytes'])} in "
        f"{workload['night1_files']:,} files")
    add("- MB = 10^6 bytes. Throughput = source bytes the step covers ÷ wall time "
        "(for restore and verify: the latest snapshot's bytes).")
    add("")

    add("## Hardware references (cold cache)")
    add("")
    add("Reading, hashing and compressing cover the first night's bytes, read cold. "
        "Writing covers the latest night's: `tar | tar` from a source already in the "
        "page cache into an empty directory beside the restores, so only the writing "
        "is paid, a floor under any tool's restore (its `sync` after is in brackets).")
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

    add("## Results")
    add("")
    add("Each tool's figure, then cairn's (encrypted, its default) ÷ each peer's and ÷ "
        "cairn's own with `--plaintext`: for throughput, above 1 is faster; for time, "
        "CPU, memory and size, below 1 is better.")
    add("")
    peers = [tool for tool in tools if tool != "cairn"]
    add("| step | metric | " + " | ".join(tools) + " | " +
        " | ".join(f"cairn ÷ {peer}" for peer in peers) + " |")
    add("| --- | --- |" + " ---: |" * (len(tools) + len(peers)))

    def row(step, metric, value, text):
        measured_here = steps.get(step, {})
        cells = {}
        values = {}
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

    for step in ["first backup", "next-night backup", "unchanged re-backup",
                 "full restore", "full verification", "forget + prune",
                 "backup over S3", "restore over S3"]:
        if step not in steps:
            continue
        if step.endswith("over S3"):
            row(step, "throughput", throughput, lambda v: f"{v / MB:,.1f} MB/s")
            common(step)
            if step.startswith("restore"):
                row(step, "wall time until on disk (+ `sync` after)",
                    lambda m: m["wall_s"] + (m.get("sync_after_s") or 0), lambda v: f"{v:.2f} s")
            continue
        if step == "forget + prune":
            common(step)
            row(step, "space given back",
                lambda m: m["repo_bytes_before"] - m["repo_bytes"], mb)
            row(step, "repository size after", lambda m: m["repo_bytes"], mb)
            continue
        if step != "unchanged re-backup":
            row(step, "throughput", throughput, lambda v: f"{v / MB:,.1f} MB/s")
        common(step)
        if step == "full restore":
            row(step, "wall time until on disk (+ `sync` after)",
                lambda m: m["wall_s"] + (m.get("sync_after_s") or 0), lambda v: f"{v:.2f} s")
        if step.endswith("backup"):
            if step != "first backup":
                row(step, "repository growth",
                    lambda m: m["repo_bytes"] - m["repo_bytes_before"], mb)
            row(step, "repository size after", lambda m: m["repo_bytes"], mb)
    add("")
    check = results.get("restore_check", {})
    for tool in tools:
        if tool in check:
            verdict = ("byte-identical to the source (`diff -r`)" if check[tool]["identical"]
                       else "DIFFERS from the source: " + "; ".join(check[tool]["differences"][:5]))
            add(f"- {tool} restore: {verdict}")
    for tool, verdict in results.get("restore_check_s3", {}).items():
        add(f"- {tool} restore over S3: " +
            ("byte-identical to the source" if verdict["identical"] else "DIFFERS from the source"))
    if "s3" in results:
        add(f"- Over S3: a fresh repository per tool on {results['s3']['server']}'s server on "
            "loopback (in-memory, single-process Python), holding the next-night state; "
            "the server's own speed bounds both tools")
    stats = steps.get("next-night backup", {}).get("cairn", {}).get("cairn_stats")
    if stats:
        add(f"- cairn next-night backup: {stats.get('new_chunks')} new chunks "
            f"({mb(stats.get('new_bytes') or 0)} raw, {mb(stats.get('stored_bytes') or 0)} stored)")
    caches = results.get("cache_bytes", {})
    if caches:
        add("- Local caches after the run (not counted in repository size): " +
            ", ".join(f"{tool} {mb(size)}" for tool, size in caches.items()))
    add("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
