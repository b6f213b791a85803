//! Which chunking suits a file changed in place from one night to the next?
//!
//! `chunk_profiles OLD NEW [LEVEL]` cuts both versions of a file with each
//! candidate profile (FastCDC at several sizes, fixed-size chunks at several
//! multiples of 4 KiB) and prints, per profile, what a cairn repository
//! would store: the first night's unique chunks, and what the second night
//! adds (chunks of NEW not in OLD), each compressed as cairn compresses
//! blobs (`compress_blob`, zstd at LEVEL, default 3), plus chunk counts,
//! since every chunk costs an index entry and a pack header entry. It
//! measures sizes only, never time, and never writes anything.

use cairn_chunker::{ChunkerParams, Chunking, Id, chunk_slice};
use cairn_store::format::pack::compress_blob;
use rayon::prelude::*;
use std::collections::HashSet;
use std::process::ExitCode;

/// Bytes and count of the chunks of `data` not in `known`, compressed;
/// every new chunk is added to `known`.
fn store(data: &[u8], chunking: Chunking, known: &mut HashSet<Id>, level: i32) -> (u64, u64) {
    let chunks: Vec<(Id, &[u8])> = chunk_slice(data, chunking)
        .map(|range| (Id::of(&data[range.clone()]), &data[range]))
        .collect();
    let new: Vec<&[u8]> = chunks
        .into_iter()
        .filter(|(id, _)| known.insert(*id))
        .map(|(_, bytes)| bytes)
        .collect();
    let bytes = new
        .par_iter()
        .map(|raw| compress_blob(raw, level).1.len() as u64)
        .sum();
    (bytes, new.len() as u64)
}

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let (Some(old_path), Some(new_path)) = (arguments.first(), arguments.get(1)) else {
        eprintln!("usage: chunk_profiles OLD NEW [ZSTD_LEVEL]");
        return ExitCode::from(2);
    };
    let level = match arguments.get(2).map(|level| level.parse::<i32>()) {
        None => 3,
        Some(Ok(level)) => level,
        Some(Err(error)) => {
            eprintln!("zstd level {:?}: {error}", arguments[2]);
            return ExitCode::from(2);
        }
    };
    let read = |path: &String| {
        std::fs::read(path).map_err(|error| eprintln!("cannot read {path}: {error}"))
    };
    let (Ok(old), Ok(new)) = (read(old_path), read(new_path)) else {
        return ExitCode::from(1);
    };
    let cdc = |min, avg, max| {
        Chunking::ContentDefined(ChunkerParams {
            min_size: min,
            avg_size: avg,
            max_size: max,
        })
    };
    let profiles = [
        ("fastcdc 2K/8K/32K", cdc(2048, 8192, 32768)),
        ("fastcdc 4K/16K/64K", cdc(4096, 16384, 65536)),
        ("fastcdc 16K/64K/256K", cdc(16384, 65536, 262144)),
        ("fastcdc 512K/1M/8M", cdc(524288, 1048576, 8388608)),
        ("fixed 4K", Chunking::Fixed(4096)),
        ("fixed 8K", Chunking::Fixed(8192)),
        ("fixed 16K", Chunking::Fixed(16384)),
        ("fixed 32K", Chunking::Fixed(32768)),
        ("fixed 64K", Chunking::Fixed(65536)),
    ];
    println!(
        "old {} ({} bytes), new {} ({} bytes), zstd level {level}\n",
        old_path,
        old.len(),
        new_path,
        new.len()
    );
    println!("| profile | first night stored | chunks | next night adds | new chunks |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    for (name, chunking) in profiles {
        let mut known = HashSet::new();
        let (first_bytes, first_chunks) = store(&old, chunking, &mut known, level);
        let (added_bytes, added_chunks) = store(&new, chunking, &mut known, level);
        println!(
            "| {name} | {:.1} MiB | {first_chunks} | {:.2} MiB | {added_chunks} |",
            mib(first_bytes),
            mib(added_bytes)
        );
    }
    ExitCode::SUCCESS
}
