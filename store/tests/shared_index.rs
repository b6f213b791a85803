//! Two writers into one repository at the same time deduplicate against
//! each other once one has shared its index: the second takes in index
//! files written after it started, and stores nothing the first stored.

use cairn_chunker::ChunkerParams;
use cairn_store::Repository;
use cairn_store::backend::LocalBackend;
use cairn_store::format::keys::{SigningKey, generate_signing_key, public_key_of};
use cairn_store::format::pack::BlobKind;
use cairn_store::id::Id;
use cairn_store::index::{IndexCache, MemoryIndex};
use cairn_store::ops::common::blob_writer::BlobWriter;
use std::sync::Arc;
use std::time::Duration;

const MIB: usize = 1024 * 1024;

/// Incompressible bytes, different for each seed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = 0u64;
    while out.len() < len {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&seed.to_le_bytes());
        hasher.update(&counter.to_le_bytes());
        out.extend_from_slice(hasher.finalize().as_bytes());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// A fresh repository in a temporary directory (kept alive by the guard).
fn new_repository() -> (tempfile::TempDir, Repository, SigningKey) {
    let directory = tempfile::tempdir().expect("tempdir");
    let key = generate_signing_key().expect("key");
    let repository = Repository::init(
        Arc::new(LocalBackend::new(directory.path())),
        ChunkerParams::DEFAULT,
        3,
        public_key_of(&key),
        None,
    )
    .expect("init");
    (directory, repository, key)
}

#[test]
fn a_running_writer_takes_in_what_another_indexed_after_it_started() {
    let (_directory, repository, key) = new_repository();
    let (first_index, second_index) = (MemoryIndex::new(), MemoryIndex::new());
    second_index
        .set_trusted(&[public_key_of(&key)])
        .expect("trust");
    let present = repository.list_packs().expect("list packs");
    let first = BlobWriter::new(&repository, &first_index, present.clone(), Some(&key));
    let second = BlobWriter::new(&repository, &second_index, present, Some(&key))
        .with_refresh_interval(Duration::ZERO);

    // The first writer stores and indexes 4 MiB while the second runs.
    let shared: Vec<Vec<u8>> = (0..4).map(|seed| noise(seed, MIB)).collect();
    for blob in &shared {
        assert!(first.add(BlobKind::Data, Id::of(blob), blob).expect("add"));
    }
    first.finish().expect("finish first");

    // The second fills a pack of its own; uploading it is when it refreshes.
    let pack_worth = 17;
    for seed in 100..100 + pack_worth {
        let blob = noise(seed, MIB);
        assert!(
            second
                .add(BlobKind::Data, Id::of(&blob), &blob)
                .expect("add")
        );
    }
    for blob in &shared {
        assert!(
            !second.add(BlobKind::Data, Id::of(blob), blob).expect("add"),
            "a blob the other writer indexed was stored again"
        );
    }
    let statistics = second.finish().expect("finish second");
    assert_eq!(statistics.new_blobs, pack_worth);
    assert_eq!(statistics.reused_blobs, shared.len() as u64);
}

#[test]
fn without_a_refresh_the_same_writer_would_store_them_again() {
    // The control for the test above: with the default interval nothing is
    // taken in mid-run, so the blobs count as new (this is what makes the
    // first test meaningful).
    let (_directory, repository, key) = new_repository();
    let (first_index, second_index) = (MemoryIndex::new(), MemoryIndex::new());
    second_index
        .set_trusted(&[public_key_of(&key)])
        .expect("trust");
    let present = repository.list_packs().expect("list packs");
    let first = BlobWriter::new(&repository, &first_index, present.clone(), Some(&key));
    let second = BlobWriter::new(&repository, &second_index, present, Some(&key));
    let blob = noise(7, MIB);
    assert!(
        first
            .add(BlobKind::Data, Id::of(&blob), &blob)
            .expect("add")
    );
    first.finish().expect("finish first");
    assert!(
        second
            .add(BlobKind::Data, Id::of(&blob), &blob)
            .expect("add")
    );
    second.finish().expect("finish second");
}
