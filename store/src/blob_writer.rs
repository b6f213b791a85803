//! [`BlobWriter`]: the write side of a backup. Deduplicates blobs against
//! the index and against this session, compresses new ones, fills packs,
//! uploads each full pack, and writes index files for uploaded packs.
//!
//! Order of writes (what a crash at any instant leaves behind):
//! 1. A pack is uploaded whole (the backend makes it appear atomically).
//! 2. Every [`INDEX_FILE_PACKS`] packs, and at `finish`, an index file
//!    listing them is written. Only then are they added to the local cache.
//! 3. The caller writes the snapshot manifest after `finish` returns.
//!
//! A crash after 1 and before 2 leaves packs that no index file lists; the
//! next backup adopts them (reads their headers and indexes them), so their
//! chunks are reused. A crash before 3 leaves no snapshot, which is fine:
//! nothing refers to the new blobs yet. Never writes a manifest, never
//! deletes anything.

use crate::backend::ObjectKind;
use crate::error::Result;
use crate::id::Id;
use crate::index::{IndexCache, IndexFile, PackEntry};
use crate::pack::{BlobKind, PackWriter, compress_blob};
use crate::repository::Repository;
use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Packs per index file: small enough that an interrupted backup leaves
/// little to adopt, large enough to keep the number of index files low.
const INDEX_FILE_PACKS: usize = 64;

pub struct BlobWriter<'a> {
    repository: &'a Repository,
    index: &'a dyn IndexCache,
    compression_level: i32,
    pack_target_size: u64,
    /// Blobs stored (or being stored) by this session.
    session: Mutex<HashSet<Id>>,
    data_pack: Mutex<PackWriter>,
    tree_pack: Mutex<PackWriter>,
    /// Uploaded packs that no index file lists yet.
    unindexed: Mutex<Vec<PackEntry>>,
    statistics: WriterCounters,
}

#[derive(Default)]
struct WriterCounters {
    new_blobs: AtomicU64,
    reused_blobs: AtomicU64,
    new_raw_bytes: AtomicU64,
    new_stored_bytes: AtomicU64,
    packs_written: AtomicU64,
    index_files_written: AtomicU64,
}

/// What a session added to the repository.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStatistics {
    pub new_blobs: u64,
    pub reused_blobs: u64,
    /// Uncompressed size of the new blobs.
    pub new_raw_bytes: u64,
    /// Their size as stored.
    pub new_stored_bytes: u64,
    pub packs_written: u64,
    pub index_files_written: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values stay consistent even if a holder panicked: every
    // update is a single push or insert.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl<'a> BlobWriter<'a> {
    pub fn new(repository: &'a Repository, index: &'a dyn IndexCache) -> Self {
        let config = repository.config();
        BlobWriter {
            repository,
            index,
            compression_level: config.compression.level,
            pack_target_size: config.pack_target_size,
            session: Mutex::new(HashSet::new()),
            data_pack: Mutex::new(PackWriter::new()),
            tree_pack: Mutex::new(PackWriter::new()),
            unindexed: Mutex::new(Vec::new()),
            statistics: WriterCounters::default(),
        }
    }

    /// Stores a blob unless the repository or this session already has it.
    /// Returns whether it was new.
    pub fn add(&self, kind: BlobKind, id: Id, raw: &[u8]) -> Result<bool> {
        let known = lock(&self.session).contains(&id) || self.index.lookup(&id)?.is_some();
        if known || !lock(&self.session).insert(id) {
            self.statistics.reused_blobs.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        let (compression, stored) = compress_blob(raw, self.compression_level);
        let full_pack = {
            let slot = match kind {
                BlobKind::Data => &self.data_pack,
                BlobKind::Tree => &self.tree_pack,
            };
            let mut pack = lock(slot);
            pack.add(kind, id, raw.len() as u32, compression, &stored);
            if pack.len() >= self.pack_target_size {
                Some(std::mem::take(&mut *pack))
            } else {
                None
            }
        };
        let counters = &self.statistics;
        counters.new_blobs.fetch_add(1, Ordering::Relaxed);
        counters
            .new_raw_bytes
            .fetch_add(raw.len() as u64, Ordering::Relaxed);
        counters
            .new_stored_bytes
            .fetch_add(stored.len() as u64, Ordering::Relaxed);
        if let Some(pack) = full_pack {
            self.upload(pack)?;
        }
        Ok(true)
    }

    /// Indexes packs found in the repository that no index file lists
    /// (left by an interrupted backup), so their blobs are reused.
    pub fn adopt(&self, packs: Vec<PackEntry>) -> Result<()> {
        for pack in &packs {
            self.index.insert_pack(pack)?;
        }
        lock(&self.unindexed).extend(packs);
        Ok(())
    }

    fn upload(&self, pack: PackWriter) -> Result<()> {
        let (id, bytes, blobs) = pack.finish();
        self.repository
            .backend()
            .create(ObjectKind::Pack, &id.to_hex(), &bytes)?;
        self.statistics
            .packs_written
            .fetch_add(1, Ordering::Relaxed);
        let ready = {
            let mut unindexed = lock(&self.unindexed);
            unindexed.push(PackEntry {
                id,
                size: bytes.len() as u64,
                blobs,
            });
            if unindexed.len() >= INDEX_FILE_PACKS {
                std::mem::take(&mut *unindexed)
            } else {
                Vec::new()
            }
        };
        self.write_index_file(ready)
    }

    fn write_index_file(&self, packs: Vec<PackEntry>) -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        let file = IndexFile::new(packs);
        let id = self
            .repository
            .write_object(ObjectKind::Index, &file.encode())?;
        self.statistics
            .index_files_written
            .fetch_add(1, Ordering::Relaxed);
        for pack in &file.packs {
            self.index.insert_pack(pack)?;
        }
        self.index.mark_index_file(&id)
    }

    /// Uploads the partly filled packs and indexes everything uploaded.
    /// After this returns, every blob added is in an index file.
    pub fn finish(&self) -> Result<WriterStatistics> {
        for slot in [&self.data_pack, &self.tree_pack] {
            let pack = std::mem::take(&mut *lock(slot));
            if !pack.is_empty() {
                self.upload(pack)?;
            }
        }
        let rest = std::mem::take(&mut *lock(&self.unindexed));
        self.write_index_file(rest)?;
        self.index.flush()?;
        let counters = &self.statistics;
        Ok(WriterStatistics {
            new_blobs: counters.new_blobs.load(Ordering::Relaxed),
            reused_blobs: counters.reused_blobs.load(Ordering::Relaxed),
            new_raw_bytes: counters.new_raw_bytes.load(Ordering::Relaxed),
            new_stored_bytes: counters.new_stored_bytes.load(Ordering::Relaxed),
            packs_written: counters.packs_written.load(Ordering::Relaxed),
            index_files_written: counters.index_files_written.load(Ordering::Relaxed),
        })
    }
}
