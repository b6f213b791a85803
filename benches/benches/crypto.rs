//! Encryption's own cost, one core, over 16 MiB (a pack's worth) of noise:
//! sealing and opening pack pieces of 128 KiB (a shared frame's size) with
//! each pack cipher (XChaCha20-Poly1305, AES-256-GCM) in place, and naming
//! 16 KiB chunks with keyed against
//! plain BLAKE3. The end-to-end figures (encrypted against `--plaintext`)
//! are in docs/PERFORMANCE.md; this isolates the cipher from the pipeline.

use cairn_benches::noise;
use cairn_store::Id;
use cairn_store::format::crypto::{PackCipher, RepositoryKeys};
use cairn_store::id::IdHasher;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const SIZE: usize = 16 * 1024 * 1024;
const PIECE: usize = 128 * 1024;
const CHUNK: usize = 16 * 1024;

fn crypto(c: &mut Criterion) {
    let data = noise(SIZE, 3);
    let keys = RepositoryKeys::generate(Id::of(b"bench repository")).expect("random keys");
    let mut group = c.benchmark_group("crypto");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(10);
    for (name, cipher) in [
        ("xchacha20poly1305", PackCipher::XChaCha20Poly1305),
        ("aes256gcm", PackCipher::Aes256Gcm),
    ] {
        let sealer = keys.pack_sealer_with(cipher).expect("pack key");
        let opener = keys
            .pack_opener(cipher, &sealer.ephemeral(), "bench pack")
            .expect("pack key");
        let sealed: Vec<(u64, Vec<u8>)> = data
            .chunks(PIECE)
            .enumerate()
            .map(|(index, piece)| {
                let offset = 40 + (index * (PIECE + 16)) as u64;
                let mut bytes = piece.to_vec();
                sealer.seal_piece(offset, &mut bytes);
                (offset, bytes)
            })
            .collect();
        group.bench_function(format!("{name} seal pieces of 128 KiB/16MiB"), |b| {
            b.iter(|| {
                let mut buffer = Vec::with_capacity(PIECE + 16);
                for (index, piece) in data.chunks(PIECE).enumerate() {
                    buffer.clear();
                    buffer.extend_from_slice(piece);
                    sealer.seal_piece(40 + (index * (PIECE + 16)) as u64, &mut buffer);
                    black_box(&buffer);
                }
            })
        });
        group.bench_function(format!("{name} open pieces of 128 KiB/16MiB"), |b| {
            b.iter(|| {
                let mut buffer = Vec::with_capacity(PIECE + 16);
                for (offset, piece) in &sealed {
                    buffer.clear();
                    buffer.extend_from_slice(piece);
                    opener
                        .open_piece(*offset, &mut buffer, &|| "bench pack".into())
                        .expect("sealed above");
                    black_box(&buffer);
                }
            })
        });
    }
    let keyed = keys.id_hasher();
    for (name, hasher) in [("plain", IdHasher::Plain), ("keyed", keyed)] {
        group.bench_function(format!("blake3 {name} ids of 16 KiB chunks/16MiB"), |b| {
            b.iter(|| {
                for chunk in data.chunks(CHUNK) {
                    black_box(hasher.id(chunk));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, crypto);
criterion_main!(benches);
