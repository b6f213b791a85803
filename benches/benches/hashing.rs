//! BLAKE3 chunk ids (`Id::of`, one thread) for the default minimum,
//! average and maximum chunk sizes; 16 KiB is the typical chunk.

use cairn_benches::noise;
use cairn_chunker::Id;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn hashing(c: &mut Criterion) {
    let mut group = c.benchmark_group("blake3");
    for size in [4 * 1024, 16 * 1024, 64 * 1024] {
        let chunk = noise(size, 2);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(
            BenchmarkId::new("Id::of", format!("{}KiB", size / 1024)),
            &chunk,
            |b, chunk| b.iter(|| Id::of(black_box(chunk))),
        );
    }
    group.finish();
}

criterion_group!(benches, hashing);
criterion_main!(benches);
