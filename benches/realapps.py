#!/usr/bin/env python3
"""Real-applications workload for cairn's benchmark: the nightly state that two
real applications write themselves, night after night.

  OUT/chroma/          a Chroma persistent store (chromadb's PersistentClient):
                       one collection of 60,000 seeded 384-dimensional float32
                       embeddings (no model is ever loaded: every call passes
                       `embeddings=` itself) with short documents and metadata.
                       Each next night upserts 2% of the points with new
                       vectors, adds 1% new points and deletes 0.5%: Chroma
                       rewrites its HNSW files (data_level0.bin and friends)
                       and its SQLite file in place.
  OUT/pg/pgbench.sql   `pg_dump` plain format and
  OUT/pg/pgbench.dump  `pg_dump -Fc` (custom, compressed) of a private
                       PostgreSQL cluster holding `pgbench -i -s 15` data. Each
                       next night runs `pgbench` transactions (one client,
                       seeded) before dumping again.

The cluster itself and the night counter live in STATE (default OUT.state),
outside OUT: the dumps, not the cluster's files, are what gets backed up, as
in most deployments. The cluster listens on no TCP port, only on a Unix
socket in a private directory, and is started and stopped by each night, so
nothing keeps running between nights. initdb refuses root: as root the
server runs as the `postgres` user (made by Debian's postgresql package).

Commands:
  realapps.py --night 0 --out OUT [--state STATE] [--seed N] [--scale S]
      makes night 0 from scratch (OUT and STATE are emptied first)
  realapps.py --night N --out OUT [--state STATE]
      applies night N's change; STATE must hold night N-1
  realapps.py --patch-floor PREV CUR
      prints (JSON) the `zstd -3 --long --patch-from` floor of going from the
      tree PREV to the tree CUR: the sum, over the files of CUR that differ
      from PREV's file of the same path, of the patch's size (a new file:
      its zstd -3 --long size; an unchanged or deleted file: 0)

Needs chromadb and numpy: without them it makes a venv (--venv, default
target/realapps-venv), installs chromadb there with pip and runs itself
again inside it. Needs PostgreSQL's server and client (initdb, pg_ctl,
pgbench, pg_dump: Debian's `postgresql` package) and zstd.

`--scale` multiplies the number of embeddings, the pgbench scale and the
number of transactions. A given seed, scale and night give the same
application operations; the files' bytes also depend on the versions of
Chroma and PostgreSQL (printed in the JSON summary).
"""

import argparse
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_VENV = os.path.join(ROOT, "target", "realapps-venv")

# Sizes at scale 1.0.
EMBEDDINGS = 60_000
DIMENSIONS = 384
PGBENCH_SCALE = 15
TRANSACTIONS = 10_000
# Nightly change of the Chroma collection, as fractions of its live points.
UPSERT, ADD, DELETE = 0.02, 0.01, 0.005
COLLECTION = "bench"
STATE_FILE = "realapps.json"
WORDS = ("alpha beta gamma delta river stone cloud paper signal vector index query answer "
         "memory agent user record ledger invoice ticket order search result cache store "
         "backup night north south east west green blue amber policy report summary").split()


def log(message):
    print(f"[realapps] {message}", file=sys.stderr, flush=True)


def run(command, **kwargs):
    """Runs a command, failing loudly with its output when it fails."""
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        sys.exit(f"realapps: {' '.join(command)} failed ({done.returncode}):\n"
                 f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


# ---------------------------------------------------------------------------
# Chroma


def ensure_chromadb(venv):
    """Re-executes this script inside `venv` (made on demand) unless chromadb
    imports here."""
    try:
        import chromadb  # noqa: F401
        import numpy  # noqa: F401
        return
    except ImportError:
        pass
    python = os.path.join(venv, "bin", "python")
    # (A venv's python links to the base interpreter: compare prefixes.)
    if os.path.realpath(sys.prefix) == os.path.realpath(venv):
        sys.exit(f"realapps: chromadb does not import in {venv}; remove it and run again")
    if not os.path.exists(python):
        log(f"making {venv} with chromadb (pip, once)")
        run([sys.executable, "-m", "venv", venv])
        run([python, "-m", "pip", "install", "--quiet", "chromadb"])
    os.execv(python, [python, os.path.abspath(__file__)] + sys.argv[1:])


def open_collection(path):
    import chromadb
    from chromadb.config import Settings
    client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
    # embedding_function=None: every call passes its own embeddings, so no
    # model is ever loaded or downloaded.
    collection = client.get_or_create_collection(COLLECTION, embedding_function=None,
                                                 metadata={"hnsw:space": "cosine"})
    try:
        batch = client.get_max_batch_size()
    except AttributeError:
        batch = 5000
    return client, collection, max(1, min(batch, 5000))


def embeddings(rng, count):
    import numpy
    generator = numpy.random.default_rng(rng.getrandbits(64))
    vectors = generator.standard_normal((count, DIMENSIONS), dtype=numpy.float32)
    vectors /= numpy.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def document(rng, point, night):
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 48)))
    return (f"point {point} night {night}: {words}",
            {"night": night, "source": rng.choice(WORDS), "rank": rng.randint(0, 999)})


def write_points(collection, batch, rng, ids, night, upsert):
    vectors = embeddings(rng, len(ids))
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        docs, metas = zip(*(document(rng, point, night) for point in chunk))
        call = collection.upsert if upsert else collection.add
        call(ids=[f"p{point}" for point in chunk], embeddings=vectors[start:start + len(chunk)],
             documents=list(docs), metadatas=list(metas))


def chroma_night(out, state, night, rng, scale):
    path = os.path.join(out, "chroma")
    client, collection, batch = open_collection(path)
    if night == 0:
        count = max(100, round(EMBEDDINGS * scale))
        write_points(collection, batch, rng, list(range(count)), night, upsert=False)
        state["live"] = count
        state["next_id"] = count
        state["deleted"] = []
        change = {"added": count}
    else:
        deleted = set(state["deleted"])
        live = [point for point in range(state["next_id"]) if point not in deleted]
        upserts = sorted(rng.sample(live, max(1, round(len(live) * UPSERT))))
        removals = sorted(rng.sample(live, max(1, round(len(live) * DELETE))))
        additions = list(range(state["next_id"], state["next_id"] + max(1, round(len(live) * ADD))))
        write_points(collection, batch, rng, upserts, night, upsert=True)
        write_points(collection, batch, rng, additions, night, upsert=False)
        for start in range(0, len(removals), batch):
            collection.delete(ids=[f"p{point}" for point in removals[start:start + batch]])
        state["next_id"] += len(additions)
        state["deleted"] = sorted(deleted | set(removals))
        state["live"] = len(live) + len(additions) - len(set(removals))
        change = {"upserted": len(upserts), "added": len(additions), "deleted": len(removals)}
    # Let go of the store before the files are read: Chroma persists its
    # HNSW index and SQLite file as the client closes.
    del collection
    try:
        client.clear_system_cache()
    except AttributeError:
        pass
    del client
    import gc
    gc.collect()
    change["live"] = state["live"]
    return change


# ---------------------------------------------------------------------------
# PostgreSQL


def pg_bin(name):
    """Debian keeps initdb and pg_ctl in /usr/lib/postgresql/V/bin."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted((entry for entry in os.listdir("/usr/lib/postgresql")
                       if os.path.exists(f"/usr/lib/postgresql/{entry}/bin/{name}")),
                      key=lambda v: int(v) if v.isdigit() else 0) if os.path.isdir(
                          "/usr/lib/postgresql") else []
    if not versions:
        sys.exit(f"realapps: {name} not found; install PostgreSQL (apt-get install postgresql)")
    return f"/usr/lib/postgresql/{versions[-1]}/bin/{name}"


def as_server_user(command):
    """initdb and postgres refuse root: as root, run them as `postgres`."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--"] + command


def chown_to_server_user(path):
    if os.geteuid() == 0:
        import pwd
        user = pwd.getpwnam("postgres")
        os.chown(path, user.pw_uid, user.pw_gid)


class Cluster:
    """A private cluster in STATE/pgdata, on a Unix socket in a fresh
    directory under /tmp (a socket path must stay short), no TCP."""

    def __init__(self, state_dir):
        self.data = os.path.join(state_dir, "pgdata")
        self.log = os.path.join(state_dir, "postgres.log")
        self.socket_dir = None
        with socket.socket() as probe:  # a port number names the socket file
            probe.bind(("127.0.0.1", 0))
            self.port = str(probe.getsockname()[1])

    def init(self):
        os.makedirs(self.data)
        chown_to_server_user(self.data)
        run(as_server_user([pg_bin("initdb"), "-D", self.data, "-U", "postgres", "--auth=trust",
                            "-E", "UTF8", "--locale=C", "--no-sync"]))

    def start(self):
        self.socket_dir = tempfile.mkdtemp(prefix="realapps-pg-")
        chown_to_server_user(self.socket_dir)
        if not os.path.exists(self.log):
            open(self.log, "a").close()
            chown_to_server_user(self.log)
        options = (f"-k {self.socket_dir} -p {self.port} -c listen_addresses='' "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        run(as_server_user([pg_bin("pg_ctl"), "-D", self.data, "-l", self.log, "-o", options,
                            "-w", "start"]))

    def stop(self):
        if self.socket_dir:
            run(as_server_user([pg_bin("pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop"]))
            shutil.rmtree(self.socket_dir, ignore_errors=True)
            self.socket_dir = None

    def client(self, name):
        return [pg_bin(name), "-h", self.socket_dir, "-p", self.port, "-U", "postgres"]


def pg_night(out, state_dir, state, night, seed, scale):
    cluster = Cluster(state_dir)
    if night == 0:
        cluster.init()
    cluster.start()
    try:
        if night == 0:
            pgbench_scale = max(1, round(PGBENCH_SCALE * scale))
            run(cluster.client("pgbench") + ["-i", "-q", "-s", str(pgbench_scale), "postgres"])
            change = {"pgbench_scale": pgbench_scale}
        else:
            transactions = max(10, round(TRANSACTIONS * scale))
            # One client and a fixed seed: the same accounts every run.
            run(cluster.client("pgbench") + ["-n", "-c", "1", "-t", str(transactions),
                                             f"--random-seed={seed * 1000 + night}", "postgres"])
            change = {"transactions": transactions}
        target = os.path.join(out, "pg")
        os.makedirs(target, exist_ok=True)
        run(cluster.client("pg_dump") + ["-f", os.path.join(target, "pgbench.sql"), "postgres"])
        run(cluster.client("pg_dump") + ["-Fc", "-f", os.path.join(target, "pgbench.dump"),
                                         "postgres"])
    finally:
        cluster.stop()
    return change


# ---------------------------------------------------------------------------
# The zstd --patch-from floor


def zstd_size(arguments):
    """Size of zstd's output, counted as it streams (files reach 100s of MB)."""
    process = subprocess.Popen(["zstd", "-q", "-c"] + arguments, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    total = 0
    while True:
        block = process.stdout.read(1 << 20)
        if not block:
            break
        total += len(block)
    error = process.stderr.read().decode(errors="replace")
    if process.wait() != 0:
        sys.exit(f"realapps: zstd {' '.join(arguments)} failed: {error}")
    return total


def window_log(*sizes):
    """--long's window: large enough that the whole reference is in reach."""
    largest = max(list(sizes) + [1])
    return min(31, max(27, math.ceil(math.log2(largest)) + 1))


def same_file(left, right):
    if os.path.getsize(left) != os.path.getsize(right):
        return False
    with open(left, "rb") as a, open(right, "rb") as b:
        while True:
            x, y = a.read(1 << 20), b.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def patch_floor(previous, current):
    total = changed = added = unchanged = 0
    files = {}
    for directory, _, entries in os.walk(current):
        for entry in sorted(entries):
            path = os.path.join(directory, entry)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            relative = os.path.relpath(path, current)
            before = os.path.join(previous, relative)
            size = os.path.getsize(path)
            if os.path.isfile(before) and not os.path.islink(before):
                if same_file(before, path):
                    unchanged += 1
                    continue
                window = window_log(size, os.path.getsize(before))
                patch = zstd_size(["-3", f"--long={window}", f"--patch-from={before}", path])
                changed += 1
            else:
                patch = zstd_size(["-3", f"--long={window_log(size)}", path])
                added += 1
            files[relative] = patch
            total += patch
    return {"floor_bytes": total, "changed_files": changed, "new_files": added,
            "unchanged_files": unchanged, "files": files}


# ---------------------------------------------------------------------------


def tree_bytes(root):
    total = count = 0
    for directory, _, entries in os.walk(root):
        for entry in entries:
            total += os.lstat(os.path.join(directory, entry)).st_size
            count += 1
    return total, count


def night(out, state_dir, number, seed, scale):
    state_path = os.path.join(state_dir, STATE_FILE)
    if number == 0:
        for path in (out, state_dir):
            shutil.rmtree(path, ignore_errors=True)
            os.makedirs(path)
        state = {"night": -1, "seed": seed, "scale": scale}
    else:
        try:
            with open(state_path) as source:
                state = json.load(source)
        except OSError:
            sys.exit(f"realapps: {state_path} missing: make night 0 first")
        if state["night"] != number - 1:
            sys.exit(f"realapps: {state_dir} holds night {state['night']}, not {number - 1}")
        seed, scale = state["seed"], state["scale"]
    started = time.monotonic()
    rng = random.Random(f"realapps/{seed}/{number}/chroma")
    summary = {"night": number, "seed": seed, "scale": scale}
    summary["chroma"] = chroma_night(out, state, number, rng, scale)
    summary["pg"] = pg_night(out, state_dir, state, number, seed, scale)
    state["night"] = number
    with open(state_path + ".tmp", "w") as target:
        json.dump(state, target)
    os.replace(state_path + ".tmp", state_path)
    import chromadb
    summary["versions"] = {"chromadb": chromadb.__version__,
                           "postgresql": run([pg_bin("pg_ctl"), "--version"]).strip()}
    summary["bytes"], summary["files"] = tree_bytes(out)
    summary["seconds"] = round(time.monotonic() - started, 1)
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--night", type=int)
    parser.add_argument("--out")
    parser.add_argument("--state", help="cluster and night counter (default: OUT.state)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--venv", default=DEFAULT_VENV,
                        help="venv with chromadb (made on demand; default target/realapps-venv)")
    parser.add_argument("--patch-floor", nargs=2, metavar=("PREV", "CUR"))
    args = parser.parse_args()
    if args.patch_floor:
        result = patch_floor(*args.patch_floor)
    else:
        if args.night is None or not args.out:
            parser.error("--night and --out are needed (or --patch-floor PREV CUR)")
        ensure_chromadb(args.venv)
        out = os.path.abspath(args.out)
        state_dir = os.path.abspath(args.state or out.rstrip("/") + ".state")
        result = night(out, state_dir, args.night, args.seed, args.scale)
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
