#!/usr/bin/env python3
"""Deterministic, seeded workload for cairn's comparison benchmark.

Models the nightly state of one of our users' services, in three components:

  db/app.sqlite         SQLite database (page size 4096), ~300 MB at scale 1:
                        `docs` (text body + JSON `meta`, unique key index,
                        time index, index on a JSON field) and `events` (JSON
                        payloads, time index). Like most long-lived SQLite
                        files it has churned without VACUUM: an event-log
                        retention job deleted old events, so roughly two
                        thirds of the file is free pages still holding stale
                        rows. The live data is what the dump holds.
  db/dump.sql           plain-SQL dump of the live data (~80 MB), as the
                        service's own nightly `.dump` job would write it.
  vectors/snapshot.tar  Qdrant-style collection snapshot, ~250 MB: four
                        segments of 768-dimensional float32 vectors
                        (random, roughly unit length, mostly incompressible),
                        a u64 ids file and a JSON-lines payload file. Fixed mtimes,
                        uids and order, so the same state gives the same bytes.
  memory/               ~20,000 Markdown and JSON files of 0.5-16 KiB in
                        nested folders (agent/kind/month/).

Commands:
  workload.py generate DIR --seed N --scale S
  workload.py next-night DIR [--seed N]

`next-night` applies one night of change: ~0.5% of database rows updated,
~1% inserted, ~0.2% deleted, dump regenerated; vector snapshot rebuilt with
1% more vectors appended and 0.5% rewritten; ~1% of memory files changed,
~1% added, ~0.2% deleted. The night counter and id counters live in
DIR/.workload.json, outside the three component folders.

Everything is derived from random.Random streams seeded by (seed, night,
component), so a given seed, scale and night always produce the same bytes
(with the same SQLite library version). `--scale` multiplies every size and
count. Only the standard library is used.
"""

import argparse
import io
import json
import math
import os
import random
import sqlite3
import sys
import tarfile
import time

MB = 1_000_000
PAGE_SIZE = 4096
# Base epoch for every timestamp and mtime written: 2024-01-01T00:00:00Z.
EPOCH = 1_704_067_200
DAY = 86_400

# Sizes at scale 1.0.
DB_FILE_BYTES = 300 * MB
DOCS = 49_000
LIVE_EVENTS = 18_000
HISTORY_ROUNDS = 60
VECTOR_DIM = 768
VECTORS = 76_000
SEGMENTS = 4
MEMORY_FILES = 20_000
MEMORY_MIN, MEMORY_MAX = 512, 16 * 1024

# Nightly change rates.
DB_UPDATE, DB_INSERT, DB_DELETE = 0.005, 0.01, 0.002
VEC_APPEND, VEC_REWRITE = 0.01, 0.005
MEM_CHANGE, MEM_ADD, MEM_DELETE = 0.01, 0.01, 0.002

STATE_FILE = ".workload.json"
AGENTS = ["atlas", "birch", "cedar", "delta", "ember", "fjord", "grove", "heron"]
MEMORY_KINDS = ["episodic", "semantic", "procedural", "notes", "journal"]
DOC_KINDS = ["note", "fact", "summary", "transcript", "plan", "profile", "email", "page"]
EVENT_KINDS = ["user", "assistant", "tool_call", "tool_result", "system", "retrieval"]


def rng_for(seed, night, what):
    """An independent, reproducible random stream (str seeds hash with SHA-512)."""
    return random.Random(f"cairn-workload:{seed}:{night}:{what}")


class Text:
    """Cheap English-like text: a Zipf-weighted vocabulary of made-up words
    assembled into a fixed pool of sentences, then sentences drawn at random.
    Compresses about as well as prose (zstd -3: ~3x)."""

    def __init__(self, seed):
        rng = random.Random(f"cairn-workload:{seed}:text")
        onsets = ["b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t",
                  "v", "w", "st", "tr", "pl", "ch", "sh", "th", "gr", "br", ""]
        vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io", "y"]
        codas = ["", "", "n", "r", "s", "t", "l", "m", "nd", "st", "rk", "ng"]
        words = set()
        while len(words) < 6000:
            words.add("".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                              for _ in range(rng.choice((1, 1, 2, 2, 2, 3, 3, 4)))))
        words = sorted(words)
        rng.shuffle(words)
        weights = [1.0 / (rank + 3) for rank in range(len(words))]
        cumulative = []
        total = 0.0
        for weight in weights:
            total += weight
            cumulative.append(total)
        punctuation = [".", ".", ".", ".", "?", "!", ";", ":"]
        self.words = words
        self.sentences = []
        for _ in range(30_000):
            count = rng.randint(5, 22)
            chosen = rng.choices(words, cum_weights=cumulative, k=count)
            chosen[0] = chosen[0].capitalize()
            if rng.random() < 0.2:
                chosen.insert(rng.randrange(count), str(rng.randint(0, 99_999)))
            self.sentences.append(" ".join(chosen) + rng.choice(punctuation))
        self.mean_sentence = sum(map(len, self.sentences)) / len(self.sentences) + 1

    def text(self, rng, length):
        """About `length` characters of prose (cut at `length`)."""
        count = max(1, int(length / self.mean_sentence) + 1)
        return " ".join(rng.choices(self.sentences, k=count))[:length]

    def paragraphs(self, rng, length):
        """Prose in paragraphs of 2-6 sentences, about `length` characters."""
        out = []
        size = 0
        while size < length:
            paragraph = " ".join(rng.choices(self.sentences, k=rng.randint(2, 6)))
            out.append(paragraph)
            size += len(paragraph) + 2
        return "\n\n".join(out)[:length]

    def title(self, rng):
        return " ".join(rng.choices(self.words, k=rng.randint(2, 7))).capitalize()


def scaled(count, scale, minimum=1):
    return max(minimum, int(round(count * scale)))


def log_uniform(rng, low, high):
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


def hex_id(rng, digits=16):
    return f"{rng.getrandbits(4 * digits):0{digits}x}"


def set_mtime(path, night, offset=0):
    stamp = EPOCH + night * DAY + offset
    os.utime(path, (stamp, stamp))


# --------------------------------------------------------------------------
# Database


SCHEMA = """
CREATE TABLE docs(
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    meta TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX docs_updated ON docs(updated_at);
CREATE INDEX docs_kind ON docs(json_extract(meta, '$.kind'));
CREATE TABLE events(
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    session TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX events_ts ON events(ts);
"""


def doc_body_length(rng):
    return min(12_000, max(80, int(rng.lognormvariate(6.7, 0.8))))


def make_doc(rng, text, doc_id, stamp):
    agent = rng.choice(AGENTS)
    meta = {
        "kind": rng.choice(DOC_KINDS),
        "agent": agent,
        "source": rng.choice(["chat", "web", "mail", "import", "tool"]),
        "tags": rng.sample(text.words[:400], rng.randint(0, 5)),
        "score": round(rng.random(), 4),
        "links": [rng.randrange(1, doc_id + 1) for _ in range(rng.randint(0, 4))],
        "version": 1,
        "lang": "en",
    }
    return (
        doc_id,
        f"doc/{agent}/{doc_id:08d}-{hex_id(rng, 12)}",
        text.title(rng),
        text.paragraphs(rng, doc_body_length(rng)),
        json.dumps(meta, separators=(",", ":")),
        stamp,
        stamp,
    )


def make_event(rng, text, event_id, stamp):
    kind = rng.choice(EVENT_KINDS)
    payload = {
        "role": kind,
        "turn": rng.randint(0, 400),
        "tokens": rng.randint(3, 2000),
        "text": text.text(rng, min(6000, max(40, int(rng.lognormvariate(6.1, 0.9))))),
    }
    if kind.startswith("tool"):
        payload["tool"] = rng.choice(["search", "read_file", "calendar", "shell", "fetch"])
        payload["ok"] = rng.random() > 0.05
    return (event_id, stamp, hex_id(rng), kind, json.dumps(payload, separators=(",", ":")))


def generate_db(directory, seed, scale, text):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "app.sqlite")
    for leftover in (path, path + "-journal", path + "-wal"):
        if os.path.exists(leftover):
            os.remove(leftover)
    rng = rng_for(seed, 0, "db")
    docs = scaled(DOCS, scale)
    live_events = scaled(LIVE_EVENTS, scale)
    target = DB_FILE_BYTES * scale
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute(f"PRAGMA page_size={PAGE_SIZE}")
    connection.execute("PRAGMA journal_mode=DELETE")
    # Generation need not survive a power cut; fsync per round only costs time.
    connection.execute("PRAGMA synchronous=OFF")
    connection.executescript(SCHEMA)

    # History: docs and events written round by round (one round per day),
    # so their pages interleave in the file as they would in a real one. The
    # file's growth per doc and per event is measured as it goes, and each
    # round writes as many events as keep the file on course for its target.
    def file_bytes():
        return connection.execute("PRAGMA page_count").fetchone()[0] * PAGE_SIZE

    doc_id = event_id = 0
    doc_growth = event_growth = 0
    for round_number in range(HISTORY_ROUNDS):
        stamp = EPOCH - (HISTORY_ROUNDS - round_number) * DAY
        docs_goal = docs * (round_number + 1) // HISTORY_ROUNDS
        doc_rows = []
        while doc_id < docs_goal:
            doc_id += 1
            doc_rows.append(make_doc(rng, text, doc_id, stamp + doc_id % DAY))
        before = file_bytes()
        connection.execute("BEGIN")
        connection.executemany("INSERT INTO docs VALUES(?,?,?,?,?,?,?)", doc_rows)
        connection.execute("COMMIT")
        after = file_bytes()
        doc_growth += after - before
        per_doc = doc_growth / max(1, doc_id)
        per_event = event_growth / event_id if event_id else 1400
        rounds_left = HISTORY_ROUNDS - round_number
        room = target - after - per_doc * (docs - doc_id)
        count = max(0, int(room / per_event / rounds_left))
        if round_number == HISTORY_ROUNDS - 1:
            count = max(count, live_events - event_id)
        event_rows = []
        for _ in range(count):
            event_id += 1
            event_rows.append(make_event(rng, text, event_id, stamp + event_id % DAY))
        connection.execute("BEGIN")
        connection.executemany("INSERT INTO events VALUES(?,?,?,?,?)", event_rows)
        connection.execute("COMMIT")
        event_growth += file_bytes() - after

    # The retention job: keep only the newest events. No VACUUM, as in the
    # wild: the file keeps its size and the freed pages keep their bytes.
    connection.execute("BEGIN")
    connection.execute("DELETE FROM events WHERE id <= ?", (max(0, event_id - live_events),))
    connection.execute("COMMIT")
    connection.close()
    set_mtime(path, 0)
    write_dump(directory)
    set_mtime(os.path.join(directory, "dump.sql"), 0)
    return {"next_doc_id": doc_id + 1, "next_event_id": event_id + 1}


def write_dump(directory):
    path = os.path.join(directory, "app.sqlite")
    dump = os.path.join(directory, "dump.sql")
    connection = sqlite3.connect(path)
    with open(dump + ".tmp", "w", encoding="utf-8", newline="\n") as out:
        for line in connection.iterdump():
            out.write(line)
            out.write("\n")
    connection.close()
    os.replace(dump + ".tmp", dump)


def modify_text(rng, text, body):
    """Edit a document the way people do: rewrite a span, or append."""
    if rng.random() < 0.5 or len(body) < 200:
        return body + "\n\n" + text.paragraphs(rng, rng.randint(80, 800))
    start = rng.randrange(len(body) - 100)
    end = min(len(body), start + rng.randint(20, 400))
    return body[:start] + text.text(rng, rng.randint(20, 400)) + body[end:]


def next_night_db(directory, seed, night, state, text):
    path = os.path.join(directory, "app.sqlite")
    rng = rng_for(seed, night, "db")
    stamp = EPOCH + night * DAY
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA synchronous=OFF")
    connection.execute("BEGIN")
    counts = {}

    ids = [row[0] for row in connection.execute("SELECT id FROM docs ORDER BY id")]
    n = len(ids)
    updated = rng.sample(ids, min(n, round(n * DB_UPDATE)))
    for doc in updated:
        body, meta = connection.execute(
            "SELECT body, meta FROM docs WHERE id=?", (doc,)).fetchone()
        meta = json.loads(meta)
        meta["version"] = meta.get("version", 1) + 1
        meta["score"] = round(rng.random(), 4)
        connection.execute(
            "UPDATE docs SET body=?, meta=?, updated_at=? WHERE id=?",
            (modify_text(rng, text, body), json.dumps(meta, separators=(",", ":")),
             stamp + rng.randrange(DAY), doc))
    remaining = sorted(set(ids) - set(updated))
    deleted = rng.sample(remaining, min(len(remaining), round(n * DB_DELETE)))
    connection.executemany("DELETE FROM docs WHERE id=?", [(doc,) for doc in deleted])
    doc_id = state["next_doc_id"]
    new_docs = []
    for _ in range(round(n * DB_INSERT)):
        new_docs.append(make_doc(rng, text, doc_id, stamp + rng.randrange(DAY)))
        doc_id += 1
    connection.executemany("INSERT INTO docs VALUES(?,?,?,?,?,?,?)", new_docs)
    state["next_doc_id"] = doc_id
    counts["docs"] = {"rows": n, "updated": len(updated), "deleted": len(deleted),
                      "inserted": len(new_docs)}

    ids = [row[0] for row in connection.execute("SELECT id FROM events ORDER BY id")]
    n = len(ids)
    updated = rng.sample(ids, min(n, round(n * DB_UPDATE)))
    for event in updated:
        (payload,) = connection.execute(
            "SELECT payload FROM events WHERE id=?", (event,)).fetchone()
        payload = json.loads(payload)
        payload["acknowledged"] = night
        connection.execute("UPDATE events SET payload=? WHERE id=?",
                           (json.dumps(payload, separators=(",", ":")), event))
    # Retention: the oldest events go.
    deleted = ids[:round(n * DB_DELETE)]
    connection.executemany("DELETE FROM events WHERE id=?", [(e,) for e in deleted])
    event_id = state["next_event_id"]
    new_events = []
    for _ in range(round(n * DB_INSERT)):
        new_events.append(make_event(rng, text, event_id, stamp + rng.randrange(DAY)))
        event_id += 1
    connection.executemany("INSERT INTO events VALUES(?,?,?,?,?)", new_events)
    state["next_event_id"] = event_id
    counts["events"] = {"rows": n, "updated": len(updated), "deleted": len(deleted),
                        "inserted": len(new_events)}
    connection.execute("COMMIT")
    connection.close()
    set_mtime(path, night)
    write_dump(directory)
    set_mtime(os.path.join(directory, "dump.sql"), night)
    return counts


# --------------------------------------------------------------------------
# Vector snapshot

def _exponent_table():
    """Maps a random byte to the top byte of a float32: random sign, and an
    exponent giving magnitudes of 2^-9..2^-4, weighted so that a
    768-component vector has a squared norm of about 1."""
    table = bytearray(256)
    for value in range(256):
        low = value & 0x7F
        top = 61 if low < 24 else (60 if low < 115 else 59)
        table[value] = (value & 0x80) | top
    return bytes(table)


EXPONENT_TABLE = _exponent_table()


def vector_bytes(rng, count):
    """`count` random float32 vectors (little-endian), no per-float Python."""
    data = bytearray(rng.randbytes(count * VECTOR_DIM * 4))
    data[3::4] = data[3::4].translate(EXPONENT_TABLE)
    return data


def point_payload(rng, text, point_id, night):
    return {
        "id": point_id,
        "doc_key": f"doc/{rng.choice(AGENTS)}/{rng.randrange(1, 10**8):08d}",
        "chunk": rng.randint(0, 40),
        "preview": text.text(rng, rng.randint(40, 120)),
        "tags": rng.sample(text.words[:200], rng.randint(0, 3)),
        "updated": EPOCH + night * DAY,
    }


def segment_uuid(seed, index):
    r = random.Random(f"cairn-workload:{seed}:segment:{index}")
    h = f"{r.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def write_snapshot(path, seed, night, segments, ids, payload):
    """Writes the tarball deterministically: fixed order, mtimes, owners."""
    stamp = EPOCH + night * DAY
    members = []
    config = {
        "params": {"vectors": {"size": VECTOR_DIM, "distance": "Cosine"},
                   "shard_number": 1, "on_disk_payload": True},
        "optimizer_config": {"default_segment_number": SEGMENTS},
        "snapshot": {"night": night, "points": len(ids)},
    }
    members.append(("collection/config.json",
                    json.dumps(config, indent=2, sort_keys=True).encode()))
    for index, data in enumerate(segments):
        base = f"collection/0/segments/{segment_uuid(seed, index)}"
        info = {"version": night + 1, "vector_count": len(data) // (4 * VECTOR_DIM),
                "dim": VECTOR_DIM, "dtype": "float32", "storage": "mmap"}
        members.append((f"{base}/segment.json", json.dumps(info, sort_keys=True).encode()))
        members.append((f"{base}/vector_storage/vectors/chunk_0.mmap", data))
    members.append(("collection/0/id_tracker/point_ids.u64", ids))
    members.append(("collection/0/payload_storage/payload.json", payload))
    with open(path + ".tmp", "wb") as raw:
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
            directories = set()
            for name, data in members:
                parts = name.split("/")[:-1]
                for depth in range(1, len(parts) + 1):
                    directory = "/".join(parts[:depth])
                    if directory not in directories:
                        directories.add(directory)
                        tar.addfile(_tarinfo(directory, 0, stamp, tarfile.DIRTYPE))
                tar.addfile(_tarinfo(name, len(data), stamp, tarfile.REGTYPE),
                            io.BytesIO(data))
    os.replace(path + ".tmp", path)
    set_mtime(path, night)


def _tarinfo(name, size, stamp, kind):
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = stamp
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.uid = info.gid = 1000
    info.uname = info.gname = "qdrant"
    return info


def encode_payload(points):
    """One JSON object per line keyed by point id: a local change stays local."""
    return "".join(json.dumps(p, separators=(",", ":"), sort_keys=True) + "\n"
                   for p in points).encode()


def generate_vectors(directory, seed, scale, text):
    os.makedirs(directory, exist_ok=True)
    rng = rng_for(seed, 0, "vectors")
    total = scaled(VECTORS, scale, SEGMENTS)
    sizes = [total // SEGMENTS + (1 if i < total % SEGMENTS else 0) for i in range(SEGMENTS)]
    segments = [vector_bytes(rng, size) for size in sizes]
    point_ids = list(range(1, total + 1))
    ids = b"".join(p.to_bytes(8, "little") for p in point_ids)
    payload = encode_payload(point_payload(rng, text, p, 0) for p in point_ids)
    write_snapshot(os.path.join(directory, "snapshot.tar"), seed, 0, segments, ids, payload)
    return {"next_point_id": total + 1}


def next_night_vectors(directory, seed, night, state, text):
    path = os.path.join(directory, "snapshot.tar")
    rng = rng_for(seed, night, "vectors")
    segments, ids, payload = [], b"", b""
    with tarfile.open(path, "r") as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            data = tar.extractfile(member).read()
            if member.name.endswith("chunk_0.mmap"):
                segments.append(bytearray(data))
            elif member.name.endswith("point_ids.u64"):
                ids = data
            elif member.name.endswith("payload.json"):
                payload = data
    stride = 4 * VECTOR_DIM
    counts = [len(s) // stride for s in segments]
    total = sum(counts)
    points = [json.loads(line) for line in payload.decode().splitlines()]
    # Rewrite 0.5% of vectors in place (re-embedded documents).
    rewritten = rng.sample(range(total), min(total, round(total * VEC_REWRITE)))
    fresh = vector_bytes(rng, len(rewritten))
    for k, position in enumerate(sorted(rewritten)):
        segment = 0
        while position >= counts[segment]:
            position -= counts[segment]
            segment += 1
        segments[segment][position * stride:(position + 1) * stride] = \
            fresh[k * stride:(k + 1) * stride]
    for position in rewritten:
        points[position]["updated"] = EPOCH + night * DAY
    # Append 1% new vectors to the last (growing) segment.
    appended = max(1, round(total * VEC_APPEND))
    segments[-1] += vector_bytes(rng, appended)
    next_point = state["next_point_id"]
    new_ids = list(range(next_point, next_point + appended))
    ids += b"".join(p.to_bytes(8, "little") for p in new_ids)
    points.extend(point_payload(rng, text, p, night) for p in new_ids)
    state["next_point_id"] = next_point + appended
    write_snapshot(path, seed, night, segments, ids, encode_payload(points))
    return {"vectors": total, "rewritten": len(rewritten), "appended": appended}


# --------------------------------------------------------------------------
# Memory files


def memory_path(rng, index):
    agent = rng.choice(AGENTS)
    kind = rng.choice(MEMORY_KINDS)
    month = f"2023-{rng.randint(1, 12):02d}" if rng.random() < 0.5 else f"2024-{rng.randint(1, 12):02d}"
    extension = "json" if rng.random() < 0.5 else "md"
    slug = "-".join(rng.sample(["plan", "user", "meeting", "trip", "code", "recipe", "bug",
                                "idea", "review", "call", "notes", "draft", "todo"], 2))
    return os.path.join(agent, kind, month, f"{index:06d}-{slug}.{extension}")


def memory_content(rng, text, relative, size, version=1):
    if relative.endswith(".json"):
        record = {
            "id": os.path.basename(relative).split("-")[0],
            "version": version,
            "importance": round(rng.random(), 3),
            "tags": rng.sample(text.words[:300], rng.randint(1, 6)),
            "summary": text.text(rng, 160),
            "facts": [],
        }
        length = len(json.dumps(record, indent=2))
        while length < size:
            fact = {"text": text.text(rng, rng.randint(60, 300)),
                    "confidence": round(rng.random(), 2)}
            record["facts"].append(fact)
            length += len(fact["text"]) + 60
        return json.dumps(record, indent=2) + "\n"
    head = f"# {text.title(rng)}\n\nversion: {version}\n\n"
    return head + text.paragraphs(rng, max(64, size - len(head))) + "\n"


def write_memory_file(root, relative, content, night, offset):
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        out.write(content)
    set_mtime(path, night, offset)


def generate_memory(root, seed, scale, text):
    rng = rng_for(seed, 0, "memory")
    count = scaled(MEMORY_FILES, scale)
    for index in range(count):
        relative = memory_path(rng, index)
        size = log_uniform(rng, MEMORY_MIN, MEMORY_MAX)
        write_memory_file(root, relative, memory_content(rng, text, relative, size), 0, index)
    return {"next_memory_index": count}


def list_files(root):
    found = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories.sort()
        for name in sorted(files):
            found.append(os.path.relpath(os.path.join(directory, name), root))
    return found


def next_night_memory(root, seed, night, state, text):
    rng = rng_for(seed, night, "memory")
    files = list_files(root)
    n = len(files)
    changed = rng.sample(files, min(n, round(n * MEM_CHANGE)))
    for relative in changed:
        path = os.path.join(root, relative)
        with open(path, encoding="utf-8") as source:
            old = source.read()
        if relative.endswith(".md"):
            new = modify_text(rng, text, old.rstrip("\n")) + "\n"
        else:
            # Applications rewrite JSON files whole.
            new = memory_content(rng, text, relative, len(old) + rng.randint(-200, 600),
                                 version=night + 1)
        write_memory_file(root, relative, new, night, rng.randrange(DAY))
    remaining = sorted(set(files) - set(changed))
    deleted = rng.sample(remaining, min(len(remaining), round(n * MEM_DELETE)))
    for relative in deleted:
        os.remove(os.path.join(root, relative))
    index = state["next_memory_index"]
    added = round(n * MEM_ADD)
    for _ in range(added):
        relative = memory_path(rng, index)
        size = log_uniform(rng, MEMORY_MIN, MEMORY_MAX)
        write_memory_file(root, relative, memory_content(rng, text, relative, size),
                          night, rng.randrange(DAY))
        index += 1
    state["next_memory_index"] = index
    return {"files": n, "changed": len(changed), "deleted": len(deleted), "added": added}


# --------------------------------------------------------------------------


def tree_bytes(path):
    total = files = 0
    for directory, _, names in os.walk(path):
        for name in names:
            total += os.lstat(os.path.join(directory, name)).st_size
            files += 1
    return total, files


def summary(directory):
    out = {}
    for component in ("db", "vectors", "memory"):
        size, files = tree_bytes(os.path.join(directory, component))
        out[component] = {"bytes": size, "files": files}
    out["total_bytes"] = sum(c["bytes"] for c in out.values())
    return out


def load_state(directory):
    with open(os.path.join(directory, STATE_FILE), encoding="utf-8") as source:
        return json.load(source)


def save_state(directory, state):
    path = os.path.join(directory, STATE_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as out:
        json.dump(state, out, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def generate(directory, seed, scale):
    import shutil
    os.makedirs(directory, exist_ok=True)
    for component in ("db", "vectors", "memory"):
        shutil.rmtree(os.path.join(directory, component), ignore_errors=True)
    started = time.monotonic()
    text = Text(seed)
    state = {"seed": seed, "scale": scale, "night": 0}
    timings = {}
    for name, function in (("db", generate_db), ("vectors", generate_vectors),
                           ("memory", generate_memory)):
        t0 = time.monotonic()
        state.update(function(os.path.join(directory, name), seed, scale, text))
        timings[name] = round(time.monotonic() - t0, 2)
    save_state(directory, state)
    return {"command": "generate", "seed": seed, "scale": scale, "night": 0,
            "seconds": round(time.monotonic() - started, 2), "component_seconds": timings,
            "summary": summary(directory)}


def next_night(directory, seed):
    started = time.monotonic()
    state = load_state(directory)
    if seed is None:
        seed = state["seed"]
    night = state["night"] + 1
    text = Text(state["seed"])
    changes = {
        "db": next_night_db(os.path.join(directory, "db"), seed, night, state, text),
        "vectors": next_night_vectors(os.path.join(directory, "vectors"), seed, night,
                                      state, text),
        "memory": next_night_memory(os.path.join(directory, "memory"), seed, night,
                                    state, text),
    }
    state["night"] = night
    save_state(directory, state)
    return {"command": "next-night", "seed": seed, "night": night, "changes": changes,
            "seconds": round(time.monotonic() - started, 2), "summary": summary(directory)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("generate", help="write night 0 into DIR")
    make.add_argument("directory", metavar="DIR")
    make.add_argument("--seed", type=int, default=1)
    make.add_argument("--scale", type=float, default=1.0)
    night = commands.add_parser("next-night", help="apply one night of change to DIR")
    night.add_argument("directory", metavar="DIR")
    night.add_argument("--seed", type=int, default=None,
                       help="seed for this night's changes (default: the generate seed)")
    args = parser.parse_args(argv)
    if args.command == "generate":
        if args.scale <= 0:
            parser.error("--scale must be positive")
        result = generate(args.directory, args.seed, args.scale)
    else:
        result = next_night(args.directory, args.seed)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
