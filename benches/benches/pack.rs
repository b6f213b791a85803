//! Writing one full pack (cairn's default target size, 16 MiB) from
//! content-defined chunks: `compress_blob` at cairn's default zstd level for
//! each chunk, `PackWriter::add`, then `finish` (CBOR header and the BLAKE3
//! pack id). Chunk ids are computed beforehand, so this is packing and
//! compression only. On noise every chunk ends up stored raw (zstd is tried
//! and refused); on text every chunk is compressed.

use cairn_benches::{noise, text};
use cairn_chunker::{ChunkerParams, chunk_slice};
use cairn_store::Id;
use cairn_store::format::config::{DEFAULT_PACK_TARGET_SIZE, DEFAULT_ZSTD_LEVEL};
use cairn_store::format::pack::{BlobKind, PackWriter, compress_blob};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::ops::Range;

fn write_pack(data: &[u8], chunks: &[(Range<usize>, Id)]) -> (Id, usize) {
    let mut writer = PackWriter::new();
    for (range, id) in chunks {
        let raw = &data[range.clone()];
        let (compression, stored) = compress_blob(raw, DEFAULT_ZSTD_LEVEL);
        writer.add(BlobKind::Data, *id, raw.len() as u32, compression, &stored);
    }
    let (id, bytes, _) = writer.finish();
    (id, bytes.len())
}

fn pack(c: &mut Criterion) {
    let size = DEFAULT_PACK_TARGET_SIZE as usize;
    let mut group = c.benchmark_group("pack");
    group.throughput(Throughput::Bytes(size as u64));
    group.sample_size(10);
    for (name, data) in [("noise", noise(size, 3)), ("text", text(size, 4))] {
        let chunks: Vec<(Range<usize>, Id)> = chunk_slice(&data, &ChunkerParams::DEFAULT)
            .map(|range| {
                let id = Id::of(&data[range.clone()]);
                (range, id)
            })
            .collect();
        let (_, stored) = write_pack(&data, &chunks);
        eprintln!(
            "pack/{name}: {} chunks, {size} bytes stored as {stored} ({:.2}x)",
            chunks.len(),
            size as f64 / stored as f64
        );
        group.bench_function(format!("write-16MiB/{name}"), |b| {
            b.iter(|| write_pack(black_box(&data), &chunks))
        });
    }
    group.finish();
}

criterion_group!(benches, pack);
criterion_main!(benches);
