//! Index lookups of present and absent blob ids in `MemoryIndex` and in the
//! on-disk `SledIndex` (in a temporary directory), each filled through
//! `insert_pack` with 1,000-blob packs.
//!
//! Entries: 1,000,000 by default, `CAIRN_BENCH_INDEX_ENTRIES` to change it;
//! 10,000 when run as a test (`cargo test --benches`). Filling the indexes
//! is timed once and printed, not benchmarked. An index is built only if
//! one of its benchmarks is selected.

use cairn_benches::{SplitMix64, pack_entries, random_ids};
use cairn_store::Id;
use cairn_store::format::index::PackEntry;
use cairn_store::index::{IndexCache, MemoryIndex, SledIndex};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use std::cell::OnceCell;
use std::hint::black_box;
use std::time::Instant;

const BLOBS_PER_PACK: usize = 1000;
/// Queries cycle through this many ids (a power of two).
const QUERIES: usize = 1 << 16;

fn entry_count() -> usize {
    if let Some(count) = std::env::var("CAIRN_BENCH_INDEX_ENTRIES")
        .ok()
        .and_then(|value| value.parse().ok())
    {
        return count;
    }
    if std::env::args().any(|arg| arg == "--bench") {
        1_000_000
    } else {
        10_000
    }
}

fn fill(name: &str, index: &dyn IndexCache, packs: &[PackEntry]) {
    let started = Instant::now();
    for pack in packs {
        index.insert_pack(pack, true).expect("insert_pack");
    }
    index.flush().expect("flush");
    let seconds = started.elapsed().as_secs_f64();
    let entries: usize = packs.iter().map(|pack| pack.blobs.len()).sum();
    eprintln!(
        "index/{name}: inserted {entries} entries in {seconds:.2} s ({:.0} entries/s)",
        entries as f64 / seconds
    );
}

/// Benchmarks lookups of `queries`, cycling; `index` is called (and the
/// index built) only if this benchmark is selected.
fn lookup_case<'a, I: IndexCache + 'a>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    index: impl Fn() -> &'a I,
    queries: &[Id],
    expect_found: bool,
) {
    group.bench_function(name, |b| {
        let index = index();
        let mut next = 0;
        b.iter(|| {
            next = (next + 1) & (QUERIES - 1);
            let found = index.lookup(black_box(&queries[next])).expect("lookup");
            debug_assert_eq!(found.is_some(), expect_found);
            found
        })
    });
}

fn lookups(c: &mut Criterion) {
    let count = entry_count();
    let ids = random_ids(count, 5);
    let packs = pack_entries(&ids, BLOBS_PER_PACK, 6);
    let mut rng = SplitMix64::new(7);
    let present: Vec<Id> = (0..QUERIES)
        .map(|_| ids[rng.below(count as u64) as usize])
        .collect();
    let absent = random_ids(QUERIES, 8);

    let memory = OnceCell::new();
    let memory = || {
        memory.get_or_init(|| {
            let index = MemoryIndex::new();
            fill("MemoryIndex", &index, &packs);
            index
        })
    };
    let directory = tempfile::tempdir().expect("temporary directory");
    let sled = OnceCell::new();
    let sled = || {
        sled.get_or_init(|| {
            let index = SledIndex::open(&directory.path().join("cache")).expect("open sled");
            fill("SledIndex", &index, &packs);
            index
        })
    };

    let mut group = c.benchmark_group(format!("index-{count}"));
    group.throughput(Throughput::Elements(1));
    lookup_case(
        &mut group,
        "MemoryIndex/present",
        || memory(),
        &present,
        true,
    );
    lookup_case(
        &mut group,
        "MemoryIndex/absent",
        || memory(),
        &absent,
        false,
    );
    lookup_case(&mut group, "SledIndex/present", || sled(), &present, true);
    lookup_case(&mut group, "SledIndex/absent", || sled(), &absent, false);
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
