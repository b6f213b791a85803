//! [`BlobWriter`]: the write side of a backup. Deduplicates blobs against
//! the index and against this session, compresses new ones, fills packs,
//! uploads each full pack, and writes index files for uploaded packs.
//!
//! Every [`REFRESH_INTERVAL`], a long session also indexes what it has
//! uploaded so far and takes in index files other processes have written
//! since it started (leaving out packs a prune has marked), so concurrent
//! backups deduplicate against each other, not only against what existed
//! when they started.
//!
//! Small compressible data blobs are gathered per group (small files'
//! per thread as well, see [`FrameSharing`]) into shared zstd frames of
//! about [`FRAME_TARGET`] bytes (docs/FORMAT.md section 7): a 4 KiB
//! database page compressed alone pays for zstd's tables as much as for
//! its bytes, and misses the repeats in its neighbours. A frame is
//! compressed by the worker that fills it, outside every lock.
//!
//! Full packs are handed to uploader threads through a queue of
//! [`UPLOAD_QUEUE`] packs, so workers keep chunking while a pack is written
//! and synced. There are as many uploaders as the backend wants requests in
//! flight (one for a local disk, several for object storage, where each
//! upload waits on round trips); the queue and the uploader count bound
//! memory.
//!
//! Order of writes (what a crash at any instant leaves behind):
//! 1. A pack is uploaded whole (the backend makes it appear atomically).
//! 2. Every [`INDEX_FILE_PACKS`] packs, and at `finish`, an index file
//!    listing them is written, sealed by the writer's key (FORMAT.md
//!    section 9). Only then are they added to the local cache.
//! 3. The caller writes the snapshot manifest after `finish` returns.
//!
//! A crash after 1 and before 2 leaves packs that no index file lists; the
//! next backup adopts them (reads their headers and indexes them), so their
//! chunks are reused. A crash before 3 leaves no snapshot, which is fine:
//! nothing refers to the new blobs yet. Never writes a manifest, never
//! deletes anything.
//!
//! Deduplication trusts only vouched index entries (sealed by a key
//! trusted here) and this session's own packs: a blob some unverified
//! index file claims is stored again, so no snapshot written through here
//! can name a chunk that exists only in a planted listing.

use crate::backend::ObjectKind;
use crate::error::{Result, StoreError};
use crate::format::index::BlobLocation;
use crate::format::index::{IndexFile, PackEntry};
use crate::format::keys::{SigningKey, public_key_of};
use crate::format::pack::{
    BlobEntry, BlobKind, Compression, FRAME_TARGET, MAX_BLOB_SIZE, PackWriter, compress_blob,
    compress_frame, delta, looks_incompressible,
};
use crate::id::Id;
use crate::index::{IndexCache, take_in_new_index_files};
use crate::repository::Repository;
use crate::repository::{marked_packs, read_marks};
use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

/// Packs per index file: small enough that an interrupted backup leaves
/// little to adopt, large enough to keep the number of index files low.
const INDEX_FILE_PACKS: usize = 64;
/// Full packs waiting for an uploader.
const UPLOAD_QUEUE: usize = 2;
/// Frame buffers kept for reuse (each twice [`FRAME_TARGET`]): as many as
/// a backup's threads compress at once, and a few more.
const SPARE_FRAMES: usize = 4;
/// How often a session shares its index and takes in others'.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(20);

/// A finished pack on its way to the backend.
struct FinishedPack {
    id: Id,
    bytes: Vec<u8>,
    blobs: Vec<BlobEntry>,
}

/// What the uploader threads share with the writer.
#[derive(Default)]
struct Uploaded {
    /// Uploaded packs that no index file lists yet.
    unindexed: Vec<PackEntry>,
    /// The first upload error; the uploaders stop after it.
    error: Option<StoreError>,
    /// Set with the first error, and stays set once the error is taken.
    stopped: bool,
}

pub struct BlobWriter<'a> {
    repository: &'a Repository,
    index: &'a dyn IndexCache,
    /// Seals the index files written; without it they are written unsigned
    /// (hints no reader acts on).
    signer: Option<&'a SigningKey>,
    /// Whether the cache counts this writer's index files as vouched (its
    /// key is trusted here).
    vouches: bool,
    compression_level: i32,
    pack_target_size: u64,
    /// Blobs stored (or being stored) by this session.
    session: Mutex<HashSet<Id>>,
    /// Data packs being filled, one per group (a backup's component), so
    /// that restoring one component reads its own packs, not the gaps left
    /// by the others' blobs. Together they hold at most about one pack's
    /// target size: past that, the fullest goes out.
    data_packs: Mutex<Vec<PackWriter>>,
    /// Blobs gathered for the next shared frames of each group: one frame
    /// for the group, and one for each thread adding small files' blobs
    /// (see [`FrameSharing`]).
    frames: Mutex<HashMap<(usize, Option<ThreadId>), FrameBuilder>>,
    /// Byte buffers of frames already compressed, for the next frames (at
    /// most [`SPARE_FRAMES`]).
    spare_frames: Mutex<Vec<Vec<u8>>>,
    tree_pack: Mutex<PackWriter>,
    /// Packs that existed when the backup started, less those a prune has
    /// marked for deletion.
    present: RwLock<HashMap<Id, u64>>,
    last_refresh: Mutex<Instant>,
    refresh_interval: Duration,
    /// Packs this session relies on: those it found reused blobs in, and
    /// those it wrote. Checked against deletion marks before the snapshot
    /// is committed.
    relied: Arc<Mutex<HashSet<Id>>>,
    /// The parent snapshot whose chunks [`Self::all_stored`] is asked
    /// about, and whether the packs remembered for it all exist (decided
    /// at the first question).
    parent: Option<Id>,
    parent_covered: std::sync::OnceLock<bool>,
    uploaded: Arc<Mutex<Uploaded>>,
    queue: Mutex<Option<SyncSender<FinishedPack>>>,
    uploaders: Mutex<Vec<JoinHandle<()>>>,
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
    unvouched_stored_again: AtomicU64,
    delta_blobs: AtomicU64,
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
    /// New blobs that an index file no trusted key vouches for already
    /// listed in a present pack: stored again rather than trusted (a
    /// repository from before signed index files, until `cairn repair
    /// index`; or a planted index file).
    pub unvouched_stored_again: u64,
    /// New blobs stored as a delta against a chunk of the parent snapshot
    /// (docs/FORMAT.md section 7.1); their stored bytes are counted in
    /// `new_stored_bytes`.
    pub delta_blobs: u64,
}

impl WriterStatistics {
    /// Adds what another session stored as new (e.g. blobs copied out of
    /// packs a prune marked); its reuse counts are not this session's.
    pub fn add_new(&mut self, other: &WriterStatistics) {
        self.new_blobs += other.new_blobs;
        self.new_raw_bytes += other.new_raw_bytes;
        self.new_stored_bytes += other.new_stored_bytes;
        self.packs_written += other.packs_written;
        self.index_files_written += other.index_files_written;
        self.unvouched_stored_again += other.unvouched_stored_again;
        self.delta_blobs += other.delta_blobs;
    }
}

impl Drop for BlobWriter<'_> {
    /// A backup that failed part way still lets queued packs finish, so
    /// no uploader outlives the writer.
    fn drop(&mut self) {
        let _ = self.drain_uploads();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values stay consistent even if a holder panicked: every
    // update is a single push or insert.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// One uploader thread: takes packs off the queue until it closes or any
/// uploader fails. When every uploader has returned, the receiver is gone
/// and the writer's next send fails, so it learns of the error.
fn upload_packs(
    repository: &Repository,
    receiver: &Mutex<Receiver<FinishedPack>>,
    uploaded: &Mutex<Uploaded>,
    relied: &Mutex<HashSet<Id>>,
) {
    loop {
        if lock(uploaded).stopped {
            return;
        }
        // The lock is held only while waiting for the next pack, so the
        // other uploaders upload meanwhile.
        let Ok(pack) = lock(receiver).recv() else {
            return;
        };
        let created = repository
            .backend()
            .create(ObjectKind::Pack, &pack.id.to_hex(), &pack.bytes);
        let mut shared = lock(uploaded);
        match created {
            Ok(_) => {
                lock(relied).insert(pack.id);
                shared.unindexed.push(PackEntry {
                    id: pack.id,
                    size: pack.bytes.len() as u64,
                    blobs: pack.blobs,
                })
            }
            Err(error) => {
                if shared.error.is_none() {
                    shared.error = Some(error);
                }
                shared.stopped = true;
                return;
            }
        }
    }
}

impl<'a> BlobWriter<'a> {
    /// `present` lists the packs in the repository with their sizes: an
    /// indexed blob whose pack is gone is stored again (self-healing).
    /// `signer` seals the index files written (see the field).
    pub fn new(
        repository: &'a Repository,
        index: &'a dyn IndexCache,
        present: HashMap<Id, u64>,
        signer: Option<&'a SigningKey>,
    ) -> Self {
        let config = repository.config();
        let uploaded = Arc::new(Mutex::new(Uploaded::default()));
        let relied = Arc::new(Mutex::new(HashSet::new()));
        let (queue, receiver) = sync_channel::<FinishedPack>(UPLOAD_QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        let uploaders = (0..repository.backend().parallelism().max(1))
            .map(|_| {
                let repository = repository.clone();
                let receiver = receiver.clone();
                let uploaded = uploaded.clone();
                let relied = relied.clone();
                std::thread::spawn(move || upload_packs(&repository, &receiver, &uploaded, &relied))
            })
            .collect();
        let vouches = signer.is_some_and(|key| index.trusted().contains(&public_key_of(key)));
        BlobWriter {
            repository,
            index,
            signer,
            vouches,
            compression_level: config.compression.level,
            pack_target_size: config.pack_target_size,
            session: Mutex::new(HashSet::new()),
            data_packs: Mutex::new(Vec::new()),
            frames: Mutex::new(HashMap::new()),
            spare_frames: Mutex::new(Vec::new()),
            tree_pack: Mutex::new(PackWriter::new()),
            present: RwLock::new(present),
            last_refresh: Mutex::new(Instant::now()),
            refresh_interval: REFRESH_INTERVAL,
            relied,
            parent: None,
            parent_covered: std::sync::OnceLock::new(),
            uploaded,
            queue: Mutex::new(Some(queue)),
            uploaders: Mutex::new(uploaders),
            statistics: WriterCounters::default(),
        }
    }

    /// How the repository names blobs (keyed when it is encrypted).
    pub fn id_hasher(&self) -> crate::id::IdHasher {
        self.repository.id_hasher()
    }

    /// Stores a blob unless the repository or this session already has it.
    /// Returns whether it was new.
    pub fn add(&self, kind: BlobKind, id: Id, raw: &[u8]) -> Result<bool> {
        self.add_in(kind, id, raw, 0, FrameSharing::Group)
    }

    /// [`Self::add`], keeping data blobs of one `group` together in packs
    /// of their own (trees share one pack whatever their group); a small
    /// data blob joins the shared frame `sharing` names.
    pub fn add_in(
        &self,
        kind: BlobKind,
        id: Id,
        raw: &[u8],
        group: usize,
        sharing: FrameSharing,
    ) -> Result<bool> {
        self.add_near(kind, id, raw, group, sharing, None)
    }

    /// [`Self::add_in`] for a blob that may resemble the stored data blob
    /// `near` (the chunk it replaces in the parent snapshot's version of
    /// its file): if new, it is stored as a delta against that chunk (or
    /// the whole root of that chunk's chain) when that saves enough
    /// ([`delta::worth_it`]), whole otherwise.
    pub fn add_near(
        &self,
        kind: BlobKind,
        id: Id,
        raw: &[u8],
        group: usize,
        sharing: FrameSharing,
        near: Option<Id>,
    ) -> Result<bool> {
        // Readers refuse larger blobs, so writing one would make the
        // snapshot unreadable; refuse it here, loudly.
        if raw.len() > MAX_BLOB_SIZE as usize {
            return Err(StoreError::Invalid(format!(
                "a {} blob of {} bytes exceeds the format's limit of {MAX_BLOB_SIZE} bytes{}",
                match kind {
                    BlobKind::Data => "data",
                    BlobKind::Tree => "tree",
                },
                raw.len(),
                if kind == BlobKind::Tree {
                    " (a directory whose files hold too many chunks in total; use larger chunks)"
                } else {
                    ""
                }
            )));
        }
        let known = lock(&self.session).contains(&id) || self.in_present_pack(&id)?;
        if known || !lock(&self.session).insert(id) {
            self.statistics.reused_blobs.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        let counters = &self.statistics;
        counters.new_blobs.fetch_add(1, Ordering::Relaxed);
        counters
            .new_raw_bytes
            .fetch_add(raw.len() as u64, Ordering::Relaxed);
        if kind == BlobKind::Data
            && let Some(near) = near
            && let Some((base, stored)) = self.try_delta(id, raw, near)
        {
            let full_pack = self.add_to_data_pack(group, |pack| {
                pack.add_delta(id, raw.len() as u32, base, &stored)
            });
            self.statistics.delta_blobs.fetch_add(1, Ordering::Relaxed);
            self.stored(stored.len(), full_pack)?;
            return Ok(true);
        }
        if kind == BlobKind::Data && raw.len() < FRAME_TARGET && !raw.is_empty() {
            if !looks_incompressible(raw) {
                let thread = match sharing {
                    FrameSharing::Group => None,
                    FrameSharing::Thread => Some(std::thread::current().id()),
                };
                let full = {
                    let mut frames = lock(&self.frames);
                    let frame = frames
                        .entry((group, thread))
                        .or_insert_with(|| self.new_frame());
                    frame.members.push((kind, id, raw.len() as u32));
                    frame.raw.extend_from_slice(raw);
                    (frame.raw.len() >= FRAME_TARGET)
                        .then(|| std::mem::replace(frame, self.new_frame()))
                };
                if let Some(frame) = full {
                    self.store_frame(frame, group)?;
                }
                return Ok(true);
            }
            // Incompressible: stored raw on its own, without a trial.
            self.store_sole(kind, id, raw, group, (Compression::None, raw.to_vec()))?;
            return Ok(true);
        }
        let compressed = compress_blob(raw, self.compression_level);
        self.store_sole(kind, id, raw, group, compressed)?;
        Ok(true)
    }

    /// `raw` as a delta against `near`, or the whole root of `near`'s
    /// chain if `near` is already [`delta::MAX_CHAIN`] deep, with the base
    /// used: `None` when no such base is stored in a present pack under a
    /// vouched listing, when it cannot be read back (a damaged base is
    /// verify's to report; storing whole is always correct), or when the
    /// delta does not save enough.
    fn try_delta(&self, id: Id, raw: &[u8], near: Id) -> Option<(Id, Vec<u8>)> {
        if raw.len() < delta::MIN_DELTA_INPUT || near == id {
            return None;
        }
        let chain = self.delta_base(near)?;
        let (base, location) = chain[0];
        if base == id {
            return None;
        }
        // Through the frames held for bases: the bases of a changed file's
        // pages lie side by side in the previous version's shared frames.
        let base_raw = self.repository.read_base_at(&location, 0).ok()?;
        let patch = delta::compress(raw, base_raw.bytes(), self.compression_level).ok()?;
        if !delta::could_be_worth_it(patch.len(), raw.len()) {
            return None;
        }
        // What storing it whole would take: its own compression (a small
        // blob gathered into a shared frame may take a little less), made
        // only when the delta is not clearly smaller anyway.
        if !delta::clearly_worth_it(patch.len(), raw.len()) {
            let (_, whole) = compress_blob(raw, self.compression_level);
            if !delta::worth_it(patch.len(), whole.len()) {
                return None;
            }
        }
        // Prune must not delete the packs the delta decodes through, the
        // base's and those down its chain, under this session (B2).
        lock(&self.relied).extend(chain.iter().map(|(_, location)| location.pack));
        Some((base, patch))
    }

    /// The base a delta against `near` uses, and where it lies, first; then
    /// the rest of the chain it decodes through, down to a whole blob. The
    /// base is `near` itself if its chain is shorter than
    /// [`delta::MAX_CHAIN`], otherwise the whole blob at the root of its
    /// chain (alone). Only vouched listings in present packs count, as for
    /// deduplication.
    fn delta_base(&self, near: Id) -> Option<Vec<(Id, BlobLocation)>> {
        let vouched = |id: &Id| {
            self.index
                .locate(id)
                .ok()
                .flatten()
                .filter(|located| located.vouched && self.is_present(&located.location.pack))
                .map(|located| located.location)
        };
        let first = vouched(&near)?;
        let mut chain = vec![(near, first)];
        // A chain is followed one step further than the limit allows: a
        // listing claiming a longer one is not used at all.
        while let Some(next) = chain.last().and_then(|(_, location)| location.entry.base) {
            if chain.len() > delta::MAX_CHAIN {
                return None;
            }
            chain.push((next, vouched(&next)?));
        }
        // `chain` runs from `near` down to its whole root; `near` as a base
        // makes a chain one longer than its own.
        if chain.len() <= delta::MAX_CHAIN {
            Some(chain)
        } else {
            chain.pop().map(|root| vec![root])
        }
    }

    /// Puts one blob with stored bytes of its own into its pack.
    fn store_sole(
        &self,
        kind: BlobKind,
        id: Id,
        raw: &[u8],
        group: usize,
        (compression, stored): (Compression, Vec<u8>),
    ) -> Result<()> {
        let raw_length = raw.len() as u32;
        let full_pack = match kind {
            BlobKind::Data => self.add_to_data_pack(group, |pack| {
                pack.add(kind, id, raw_length, compression, &stored)
            }),
            BlobKind::Tree => {
                let mut pack = lock(&self.tree_pack);
                pack.add(kind, id, raw_length, compression, &stored);
                (pack.len() >= self.pack_target_size).then(|| std::mem::take(&mut *pack))
            }
        };
        self.stored(stored.len(), full_pack)
    }

    /// Counts `length` stored bytes, and uploads the pack they filled.
    fn stored(&self, length: usize, full_pack: Option<PackWriter>) -> Result<()> {
        self.statistics
            .new_stored_bytes
            .fetch_add(length as u64, Ordering::Relaxed);
        match full_pack {
            Some(pack) => self.upload(pack),
            None => Ok(()),
        }
    }

    /// Adds to `group`'s data pack; returns the fullest pack if the packs
    /// being filled now hold a pack's target size between them.
    fn add_to_data_pack(
        &self,
        group: usize,
        add: impl FnOnce(&mut PackWriter),
    ) -> Option<PackWriter> {
        let mut packs = lock(&self.data_packs);
        if packs.len() <= group {
            packs.resize_with(group + 1, PackWriter::new);
        }
        add(&mut packs[group]);
        take_fullest(&mut packs, self.pack_target_size)
    }

    /// An empty frame, its byte buffer one a frame already compressed
    /// left, or sized at once for the largest a frame can be (it ends at
    /// the first blob that takes it to the target, and each blob is
    /// smaller than the target). Growing every frame from empty copied its
    /// bytes again and again into freshly touched memory (`realloc` was
    /// ~1% of a first backup's CPU, and its page faults about as much).
    fn new_frame(&self) -> FrameBuilder {
        let raw = lock(&self.spare_frames)
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(2 * FRAME_TARGET));
        FrameBuilder {
            members: Vec::new(),
            raw,
        }
    }

    /// Keeps a compressed frame's byte buffer for the next frame.
    fn spare_frame(&self, mut raw: Vec<u8>) {
        let mut spare = lock(&self.spare_frames);
        if spare.len() < SPARE_FRAMES && raw.capacity() >= 2 * FRAME_TARGET {
            raw.clear();
            spare.push(raw);
        }
    }

    /// Compresses a gathered frame and puts it into its group's pack; a
    /// lone blob, or a frame that does not compress, goes in blob by blob.
    fn store_frame(&self, frame: FrameBuilder, group: usize) -> Result<()> {
        let result = self.store_frame_bytes(&frame, group);
        self.spare_frame(frame.raw);
        result
    }

    fn store_frame_bytes(&self, frame: &FrameBuilder, group: usize) -> Result<()> {
        let compressed = match frame.members.as_slice() {
            [] => return Ok(()),
            [_] => None,
            _ => compress_frame(&frame.raw, self.compression_level),
        };
        let Some(compressed) = compressed else {
            let mut at = 0;
            for &(kind, id, raw_length) in &frame.members {
                let raw = &frame.raw[at..at + raw_length as usize];
                at += raw_length as usize;
                self.store_sole(
                    kind,
                    id,
                    raw,
                    group,
                    compress_blob(raw, self.compression_level),
                )?;
            }
            return Ok(());
        };
        let (compression, stored) = compressed;
        let full_pack = self.add_to_data_pack(group, |pack| {
            pack.add_frame(&frame.members, (compression, &stored))
        });
        self.stored(stored.len(), full_pack)
    }

    /// Whether the repository or this session holds `id` in a pack that
    /// exists.
    pub fn is_stored(&self, id: &Id) -> Result<bool> {
        Ok(lock(&self.session).contains(id) || self.in_present_pack(id)?)
    }

    /// Whether every one of `ids` is stored, as [`Self::is_stored`] for
    /// each, but recording the packs relied on once per call rather than
    /// once per blob: a file taken unchanged from the parent snapshot has
    /// thousands of chunks in a handful of packs.
    ///
    /// `ids` must be chunks the parent snapshot (see [`Self::set_parent`])
    /// names: if every pack remembered for that snapshot still exists,
    /// they are all stored, and no chunk is looked up (an unchanged
    /// re-backup spent a third of its time on such lookups).
    pub fn all_stored(&self, ids: &[Id]) -> Result<bool> {
        if self.parent_covered()? {
            return Ok(true);
        }
        let mut packs = HashSet::new();
        for id in ids {
            match self.index.lookup_vouched(id)? {
                Some(location) if self.is_present(&location.pack) => {
                    let Some(bases) = self.base_packs(&location)? else {
                        return Ok(false);
                    };
                    packs.insert(location.pack);
                    packs.extend(bases);
                }
                _ if lock(&self.session).contains(id) => {}
                _ => return Ok(false),
            }
        }
        lock(&self.relied).extend(packs);
        Ok(true)
    }

    /// Names the parent snapshot whose unchanged files this session takes
    /// without reading them.
    pub fn set_parent(&mut self, snapshot: Id) {
        self.parent = Some(snapshot);
    }

    /// Whether the packs remembered for the parent snapshot all exist (and
    /// are not marked for deletion); if so they are relied on, once.
    fn parent_covered(&self) -> Result<bool> {
        if let Some(covered) = self.parent_covered.get() {
            return Ok(*covered);
        }
        let packs = match self.parent {
            Some(parent) => self.index.snapshot_packs(&parent)?,
            None => None,
        };
        let covered = packs.is_some_and(|packs| {
            let covered = packs.iter().all(|pack| self.is_present(pack));
            if covered {
                lock(&self.relied).extend(packs);
            }
            covered
        });
        // Two threads may both decide; they decide alike.
        Ok(*self.parent_covered.get_or_init(|| covered))
    }

    /// Sets how often the session shares and takes in index files (tests
    /// use zero to make it happen at every pack).
    pub fn with_refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    fn is_present(&self, pack: &Id) -> bool {
        self.present
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .contains_key(pack)
    }

    /// Whether a vouched index entry places `id` in a present pack; an
    /// entry only an unverified index file vouches for is no reason to
    /// skip storing a blob.
    fn in_present_pack(&self, id: &Id) -> Result<bool> {
        match self.index.locate(id)? {
            Some(located) if self.is_present(&located.location.pack) => {
                if !located.vouched {
                    self.statistics
                        .unvouched_stored_again
                        .fetch_add(1, Ordering::Relaxed);
                    return Ok(false);
                }
                let Some(bases) = self.base_packs(&located.location)? else {
                    return Ok(false);
                };
                let mut relied = lock(&self.relied);
                relied.insert(located.location.pack);
                relied.extend(bases);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The packs a blob stored at `location` decodes through besides its
    /// own: each base's, down its chain (none for a whole blob). `None`
    /// if a base is not in a present pack under a vouched listing, or the
    /// chain is longer than [`delta::MAX_CHAIN`]: such a delta is not
    /// reused, as a blob only in a marked or missing pack is not (B1); a
    /// reused delta relies on its bases' packs as on its own (B2).
    fn base_packs(&self, location: &BlobLocation) -> Result<Option<Vec<Id>>> {
        let mut packs = Vec::new();
        let mut next = location.entry.base;
        while let Some(base) = next {
            if packs.len() >= delta::MAX_CHAIN {
                return Ok(None);
            }
            match self.index.locate(&base)? {
                Some(located) if located.vouched && self.is_present(&located.location.pack) => {
                    packs.push(located.location.pack);
                    next = located.location.entry.base;
                }
                _ => return Ok(None),
            }
        }
        Ok(Some(packs))
    }

    /// Where each of `chunks` starts in a file made of them, by their
    /// lengths in the index; `None` if it does not list them all.
    pub fn chunk_starts(&self, chunks: &[Id]) -> Option<Vec<u64>> {
        let mut at = 0u64;
        let mut starts = Vec::with_capacity(chunks.len());
        for id in chunks {
            let location = self.index.lookup(id).ok().flatten()?;
            starts.push(at);
            at += u64::from(location.entry.raw_length);
        }
        Some(starts)
    }

    /// Packs this session relies on so far (see the field).
    pub fn relied_packs(&self) -> HashSet<Id> {
        lock(&self.relied).clone()
    }

    /// Indexes packs found in the repository that no index file lists
    /// (left by an interrupted backup), so their blobs are reused. Anyone
    /// may have added such a pack, so each is read whole and every blob in
    /// it checked before this writer vouches for it; one that fails is
    /// left unindexed (verify reports it) and returned with why.
    pub fn adopt(&self, packs: Vec<PackEntry>) -> Result<Vec<(Id, String)>> {
        let mut adopted = Vec::new();
        let mut refused = Vec::new();
        for pack in packs {
            match self.repository.verified_pack_listing(&pack.id, pack.size) {
                Ok(listing) => adopted.push(listing),
                Err(error @ StoreError::Io { .. }) => return Err(error),
                Err(error) => refused.push((pack.id, error.to_string())),
            }
        }
        // Index file first, local cache second: the cache must never know a
        // pack that no index file lists, or a later backup would neither
        // adopt it nor notice that its chunks are unindexed.
        for batch in adopted.chunks(INDEX_FILE_PACKS) {
            self.write_index_file(batch.to_vec())?;
        }
        Ok(refused)
    }

    /// Queues a pack for the uploader, then indexes what it has uploaded
    /// once enough has gathered.
    fn upload(&self, pack: PackWriter) -> Result<()> {
        let sealer = self.repository.pack_sealer()?;
        let (id, bytes, blobs) = pack.finish_sealed(sealer.as_ref());
        let sender = lock(&self.queue).clone();
        let sent =
            sender.is_some_and(|sender| sender.send(FinishedPack { id, bytes, blobs }).is_ok());
        if !sent {
            return Err(self.upload_error());
        }
        self.statistics
            .packs_written
            .fetch_add(1, Ordering::Relaxed);
        let ready = {
            let mut uploaded = lock(&self.uploaded);
            if let Some(error) = uploaded.error.take() {
                return Err(error);
            }
            if uploaded.unindexed.len() >= INDEX_FILE_PACKS {
                std::mem::take(&mut uploaded.unindexed)
            } else {
                Vec::new()
            }
        };
        self.write_index_file(ready)?;
        self.refresh_if_due()
    }

    /// Every `refresh_interval`: index what is uploaded, then take in
    /// index files written by others and forget packs marked since.
    fn refresh_if_due(&self) -> Result<()> {
        // One worker refreshes; the others carry on chunking.
        let Ok(mut last) = self.last_refresh.try_lock() else {
            return Ok(());
        };
        if last.elapsed() < self.refresh_interval {
            return Ok(());
        }
        let ready = std::mem::take(&mut lock(&self.uploaded).unindexed);
        self.write_index_file(ready)?;
        // Marks before the index files and packs they may name.
        let (marks, _unreadable) = read_marks(self.repository, &[])?;
        let marked = marked_packs(&marks);
        let taken = take_in_new_index_files(self.repository, self.index)?;
        let mut present = self
            .present
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        present.extend(taken);
        present.retain(|pack, _| !marked.contains(pack));
        *last = Instant::now();
        Ok(())
    }

    /// The uploader's error, once it has stopped.
    fn upload_error(&self) -> StoreError {
        lock(&self.uploaded)
            .error
            .take()
            .unwrap_or_else(|| StoreError::Invalid("the pack uploader stopped unexpectedly".into()))
    }

    /// Waits until every queued pack is uploaded (or one failed).
    fn drain_uploads(&self) -> Result<()> {
        drop(lock(&self.queue).take());
        let handles = std::mem::take(&mut *lock(&self.uploaders));
        let mut panicked = false;
        for handle in handles {
            panicked |= handle.join().is_err();
        }
        if panicked {
            return Err(self.upload_error());
        }
        match lock(&self.uploaded).error.take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn write_index_file(&self, packs: Vec<PackEntry>) -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        let file = IndexFile::new(packs);
        let id = self.repository.write_index_file(&file, self.signer)?;
        self.statistics
            .index_files_written
            .fetch_add(1, Ordering::Relaxed);
        for pack in &file.packs {
            self.index.insert_pack(pack, self.vouches)?;
        }
        self.index.mark_index_file(&id)
    }

    /// Uploads the partly filled packs and indexes everything uploaded.
    /// After this returns, every blob added is in an index file.
    pub fn finish(&self) -> Result<WriterStatistics> {
        let mut frames: Vec<_> = std::mem::take(&mut *lock(&self.frames))
            .into_iter()
            .map(|((group, _), frame)| (group, frame))
            .collect();
        frames.sort_by_key(|(group, _)| *group);
        for (group, frame) in frames {
            self.store_frame(frame, group)?;
        }
        let data_packs = std::mem::take(&mut *lock(&self.data_packs));
        let tree_pack = std::mem::take(&mut *lock(&self.tree_pack));
        for pack in data_packs.into_iter().chain([tree_pack]) {
            if !pack.is_empty() {
                self.upload(pack)?;
            }
        }
        self.drain_uploads()?;
        let rest = std::mem::take(&mut lock(&self.uploaded).unindexed);
        for packs in rest.chunks(INDEX_FILE_PACKS) {
            self.write_index_file(packs.to_vec())?;
        }
        self.index.flush()?;
        let counters = &self.statistics;
        Ok(WriterStatistics {
            new_blobs: counters.new_blobs.load(Ordering::Relaxed),
            reused_blobs: counters.reused_blobs.load(Ordering::Relaxed),
            new_raw_bytes: counters.new_raw_bytes.load(Ordering::Relaxed),
            new_stored_bytes: counters.new_stored_bytes.load(Ordering::Relaxed),
            packs_written: counters.packs_written.load(Ordering::Relaxed),
            index_files_written: counters.index_files_written.load(Ordering::Relaxed),
            unvouched_stored_again: counters.unvouched_stored_again.load(Ordering::Relaxed),
            delta_blobs: counters.delta_blobs.load(Ordering::Relaxed),
        })
    }
}

/// Which shared frame a small data blob joins, within its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameSharing {
    /// The group's one frame: for the chunks of a large file, which the
    /// cores hash and store side by side, a batch at a time, so that its
    /// frames hold neighbouring parts of the file.
    Group,
    /// The adding thread's own frame in the group: for small files. A
    /// backup walks sibling directories on different threads; one frame
    /// for them all mixed files from distant parts of the tree, and a
    /// restore, which writes files in path order, decompressed most frames
    /// once for each part. (Large files keep the group's frame: each
    /// thread's frame would hold its share of several batches, parts of the
    /// file far apart.)
    Thread,
}

/// Data blobs waiting to be compressed together: their kinds, ids and raw
/// lengths, and their bytes one after another.
#[derive(Default)]
struct FrameBuilder {
    members: Vec<(BlobKind, Id, u32)>,
    raw: Vec<u8>,
}

/// The fullest of the data packs being filled, once they hold a pack's
/// target size between them. With one group this is the classic rule (a
/// pack goes out at the target size); with several, memory stays at one
/// pack's worth and each group's packs stay its own.
fn take_fullest(packs: &mut [PackWriter], target: u64) -> Option<PackWriter> {
    let total: u64 = packs.iter().map(PackWriter::len).sum();
    if total < target {
        return None;
    }
    packs
        .iter_mut()
        .max_by_key(|pack| pack.len())
        .map(std::mem::take)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;
    use crate::index::MemoryIndex;
    use std::sync::Barrier;

    /// A plaintext repository in `directory`, and the key it trusts.
    fn local_repository(directory: &std::path::Path) -> (Repository, SigningKey) {
        crate::repository::plaintext_for_tests(Arc::new(LocalBackend::new(directory)))
    }

    /// Compressible bytes unlike any other call's: a counter spelled out.
    fn text(thread: usize, round: usize) -> Vec<u8> {
        format!("thread {thread} round {round}: ")
            .repeat(200)
            .into_bytes()
    }

    /// A blob only an unvouched listing places in a present pack is stored
    /// again, and counted; one a vouched listing places there is reused.
    #[test]
    fn only_a_vouched_listing_lets_a_blob_be_skipped() {
        let directory = tempfile::tempdir().unwrap();
        let (repository, key) = local_repository(directory.path());
        let claimed = |raw: &[u8]| PackEntry {
            id: Id::of(b"some pack"),
            size: 1 << 20,
            blobs: vec![BlobEntry {
                kind: BlobKind::Data,
                id: Id::of(raw),
                offset: 8,
                length: raw.len() as u32,
                raw_length: raw.len() as u32,
                compression: Compression::None,
                frame_offset: None,
                base: None,
            }],
        };
        let (hinted, vouched) = (text(1, 1), text(2, 2));
        let index = MemoryIndex::new();
        index.insert_pack(&claimed(&hinted), false).unwrap();
        index.insert_pack(&claimed(&vouched), true).unwrap();
        let present = HashMap::from([(Id::of(b"some pack"), 1 << 20)]);
        let writer = BlobWriter::new(&repository, &index, present, Some(&key));
        assert!(
            writer
                .add(BlobKind::Data, Id::of(&hinted), &hinted)
                .unwrap()
        );
        assert!(
            !writer
                .add(BlobKind::Data, Id::of(&vouched), &vouched)
                .unwrap()
        );
        assert!(
            !writer
                .all_stored(&[Id::of(&hinted), Id::of(&text(3, 3))])
                .unwrap()
        );
        let statistics = writer.finish().unwrap();
        assert_eq!(
            (statistics.new_blobs, statistics.unvouched_stored_again),
            (1, 1)
        );
    }

    /// Two threads adding small files' blobs to one group, in lockstep so
    /// that their blobs arrive interleaved, as when a backup walks two
    /// sibling directories side by side: every shared frame holds one
    /// thread's.
    #[test]
    fn a_shared_frame_holds_the_blobs_of_one_thread() {
        let directory = tempfile::tempdir().unwrap();
        let (repository, key) = local_repository(directory.path());
        let index = MemoryIndex::new();
        let writer = BlobWriter::new(&repository, &index, HashMap::new(), Some(&key));
        let barrier = Barrier::new(2);
        let ids: Vec<HashSet<Id>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2)
                .map(|thread| {
                    let (writer, barrier) = (&writer, &barrier);
                    scope.spawn(move || {
                        let mut ids = HashSet::new();
                        for round in 0..8 {
                            let raw = text(thread, round);
                            let id = Id::of(&raw);
                            barrier.wait();
                            assert!(
                                writer
                                    .add_in(BlobKind::Data, id, &raw, 0, FrameSharing::Thread)
                                    .unwrap()
                            );
                            ids.insert(id);
                        }
                        ids
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        writer.finish().unwrap();

        let mut frames: HashMap<(Id, u64), Vec<Id>> = HashMap::new();
        for pack in repository.backend().list(ObjectKind::Pack).unwrap() {
            let pack_id = Id::from_hex(&pack.name).unwrap();
            let header = repository.read_pack_header(&pack_id, pack.size).unwrap();
            for blob in header.blobs {
                assert!(blob.frame_offset.is_some(), "small text goes in a frame");
                frames
                    .entry((pack_id, blob.offset))
                    .or_default()
                    .push(blob.id);
            }
        }
        assert_eq!(frames.len(), 2, "one frame per thread: {frames:?}");
        for members in frames.values() {
            let thread = ids
                .iter()
                .position(|set| set.contains(&members[0]))
                .unwrap();
            assert!(
                members.iter().all(|id| ids[thread].contains(id)),
                "a frame mixes the two threads' blobs"
            );
            assert_eq!(members.len(), 8);
        }
    }

    /// Frames after the first are gathered in the buffer an earlier frame
    /// left: cleared, never grown past its first size, and every blob of
    /// every frame reads back as it was given.
    #[test]
    fn frames_reuse_their_buffers_and_every_blob_reads_back() {
        let directory = tempfile::tempdir().unwrap();
        let (repository, key) = local_repository(directory.path());
        let index = MemoryIndex::new();
        let writer = BlobWriter::new(&repository, &index, HashMap::new(), Some(&key));
        // About 4 KiB each: five frames' worth.
        let blobs: Vec<Vec<u8>> = (0..160).map(|round| text(0, round)).collect();
        for raw in &blobs {
            assert!(
                writer
                    .add_in(BlobKind::Data, Id::of(raw), raw, 0, FrameSharing::Group)
                    .unwrap()
            );
            let frames = lock(&writer.frames);
            let frame = &frames[&(0, None)];
            assert_eq!(frame.raw.capacity(), 2 * FRAME_TARGET, "never grown");
        }
        assert!(!lock(&writer.spare_frames).is_empty(), "a buffer came back");
        assert!(lock(&writer.spare_frames).len() <= SPARE_FRAMES);
        writer.finish().unwrap();
        for raw in &blobs {
            let location = index.lookup(&Id::of(raw)).unwrap().unwrap();
            assert!(location.entry.frame_offset.is_some(), "in a shared frame");
            assert_eq!(&repository.read_blob(&location).unwrap(), raw);
        }
    }
}
