//! Chunking throughput over 64 MiB of noise: FastCDC cut points alone
//! (`chunk_slice`), and the streaming chunker that also hashes every chunk
//! with BLAKE3 on all cores (`ChunkStream`, what backup runs).

use cairn_benches::noise;
use cairn_chunker::{ChunkStream, ChunkerParams, chunk_slice};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const SIZE: usize = 64 * 1024 * 1024;

fn chunker(c: &mut Criterion) {
    let data = noise(SIZE, 1);
    let params = ChunkerParams::DEFAULT;
    let mut group = c.benchmark_group("chunker");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(10);
    group.bench_function("chunk_slice/noise-64MiB", |b| {
        b.iter(|| chunk_slice(black_box(&data), &params).count())
    });
    group.bench_function("ChunkStream+blake3/noise-64MiB", |b| {
        b.iter(|| {
            let mut stream = ChunkStream::new(black_box(&data[..]), params);
            let mut chunks = 0;
            while let Some(batch) = stream.next_batch().expect("reading a slice cannot fail") {
                chunks += batch.chunks.len();
            }
            chunks
        })
    });
    group.finish();
}

criterion_group!(benches, chunker);
criterion_main!(benches);
