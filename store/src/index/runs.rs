//! Run files: the local index cache's blob locations, sorted on disk.
//!
//! A run is an immutable file of blob locations sorted by blob id, in
//! pages of [`PAGE_RECORDS`] records. Opening one reads only its small
//! directory (a Bloom filter of its ids and each page's first id and
//! checksum, about 2.7 bytes a record against 119 for the record itself);
//! a lookup of an id the filter rules out reads nothing more, and any
//! other reads the one page that can hold it, with one `pread`, checked
//! against its checksum before a byte of it is trusted. So the cost of a
//! small backup does not grow with the number of blobs the cache holds: at
//! 10 M chunks, checking whole runs at every open read 1.2 GB, and lookups
//! through a mapping of them left up to 1 GB of it resident. Writing a run
//! costs a sort and one sequential write, where sled 0.34 spent 5–9 µs on
//! every insert.
//!
//! Owns the file layout (docs/FORMAT.md section 14.3), writing a run
//! durably (temporary name, sync, rename), checking a run's directory when
//! it is opened and each page when it is read, and merging two runs. Never
//! decides when to write or merge (the cache does), never reads the
//! repository, and never answers from a page or filter it has not checked.

use crate::error::{Result, StoreError};
use crate::format::index::BlobLocation;
use crate::format::pack::{BlobEntry, BlobKind, Compression};
use crate::id::Id;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const MAGIC: &[u8; 8] = b"CAIRNRUN";
/// Version 5 pages the records and adds the filter and page table; 4 added
/// the base of a delta blob to every record.
const VERSION: u32 = 5;
/// Magic, version, four reserved zero bytes.
const HEADER_SIZE: usize = 16;
/// Record count (u64 LE), records a page (u32 LE), filter hashes (u32 LE),
/// filter words (u64 LE), and the BLAKE3 hash of the header, filter, page
/// table and these fields.
const FOOTER_SIZE: usize = 8 + 4 + 4 + 8 + 32;
/// Blob id, pack id, offset (u64 LE), length, raw length (u32 LE each),
/// kind, compression (one byte each), frame offset (u32 LE, all ones for
/// a blob with stored bytes of its own), vouched (one byte, 0 or 1), the
/// base id of a delta blob (all zeros for any other blob).
pub const RECORD_SIZE: usize = 32 + 32 + 8 + 4 + 4 + 1 + 1 + 4 + 1 + 32;
/// Records a page: 34 × 119 = 4,046 bytes, one or two 4 KiB pages of the
/// disk for a lookup that reads one.
pub const PAGE_RECORDS: usize = 34;
/// The most records a page a reader accepts, so a page is read into a
/// buffer of bounded size whatever a run file says.
const MAX_PAGE_RECORDS: usize = 1024;
/// A page's entry in the page table: its first blob id, then the first 16
/// bytes of the BLAKE3 hash of its records.
const PAGE_ENTRY_SIZE: usize = 32 + 16;
/// Filter bits written for each record: with [`FILTER_HASHES`] bits set a
/// record, under 1 % of absent ids pass the filter.
const FILTER_BITS_PER_RECORD: u64 = 10;
const FILTER_HASHES: u32 = 7;
/// The most filter hashes a reader accepts (each costs a probe).
const MAX_FILTER_HASHES: u32 = 32;
/// The frame offset of a blob that shares no frame; no real frame offset
/// comes near it (a frame holds at most 256 MiB).
const SOLE: u32 = u32::MAX;
const SUFFIX: &str = ".run";

/// A blob's location as the cache keeps it, and whether a vouched index
/// file lists it there (`crate::format::index::Vouching`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Located {
    pub location: BlobLocation,
    pub vouched: bool,
}

impl Located {
    /// Whether `self` should be kept rather than `earlier`, a location of
    /// the same blob taken in before it: a vouched location is never
    /// replaced by one that is not; otherwise the later one wins (a blob
    /// stored again after its pack was lost is found in its new pack).
    pub fn supersedes(&self, earlier: &Located) -> bool {
        self.vouched || !earlier.vouched
    }
}

/// One opened run file: its checked directory in memory, its pages read
/// on demand.
pub struct Run {
    path: PathBuf,
    sequence: u64,
    file: File,
    count: usize,
    page_records: usize,
    filter: Filter,
    /// [`PAGE_ENTRY_SIZE`] bytes a page, checked when the run was opened.
    pages: Vec<u8>,
    /// One bit a page: set once a lookup has read the page and found it
    /// matching its checksum (see [`Run::lookup`]).
    pages_checked: Vec<AtomicU64>,
    /// Pages read by lookups, for the tests that hold lookups to one page.
    #[cfg(test)]
    pages_read: std::sync::atomic::AtomicUsize,
    /// Pages hashed by lookups, for the test that holds it to once a page.
    #[cfg(test)]
    pages_hashed: std::sync::atomic::AtomicUsize,
}

/// A run's file name: its sequence number, so a directory listing sorts
/// runs oldest first.
pub fn run_name(sequence: u64) -> String {
    format!("{sequence:016x}{SUFFIX}")
}

/// The sequence number of a run file's name, if it is one.
pub fn parse_run_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

fn run_error(path: &Path, problem: impl Into<String>) -> StoreError {
    StoreError::corrupt(format!("index cache run {}", path.display()), problem)
}

fn io_error(path: &Path, error: std::io::Error) -> StoreError {
    StoreError::io(format!("index cache run {}", path.display()), error)
}

fn encode_record(id: &Id, located: &Located) -> [u8; RECORD_SIZE] {
    let location = &located.location;
    let mut bytes = [0u8; RECORD_SIZE];
    let entry = &location.entry;
    bytes[..32].copy_from_slice(&id.0);
    bytes[32..64].copy_from_slice(&location.pack.0);
    bytes[64..72].copy_from_slice(&entry.offset.to_le_bytes());
    bytes[72..76].copy_from_slice(&entry.length.to_le_bytes());
    bytes[76..80].copy_from_slice(&entry.raw_length.to_le_bytes());
    bytes[80] = match entry.kind {
        BlobKind::Data => 0,
        BlobKind::Tree => 1,
    };
    bytes[81] = match entry.compression {
        Compression::None => 0,
        Compression::Zstd => 1,
        Compression::ZstdPlanes => 2,
        Compression::ZstdDelta => 3,
    };
    bytes[82..86].copy_from_slice(&entry.frame_offset.unwrap_or(SOLE).to_le_bytes());
    bytes[86] = u8::from(located.vouched);
    if let Some(base) = &entry.base {
        bytes[87..119].copy_from_slice(&base.0);
    }
    bytes
}

fn decode_record(bytes: &[u8]) -> Option<Located> {
    let id = Id(bytes.get(..32)?.try_into().ok()?);
    let pack = Id(bytes.get(32..64)?.try_into().ok()?);
    let offset = u64::from_le_bytes(bytes.get(64..72)?.try_into().ok()?);
    let length = u32::from_le_bytes(bytes.get(72..76)?.try_into().ok()?);
    let raw_length = u32::from_le_bytes(bytes.get(76..80)?.try_into().ok()?);
    let kind = match bytes.get(80)? {
        0 => BlobKind::Data,
        1 => BlobKind::Tree,
        _ => return None,
    };
    let compression = match bytes.get(81)? {
        0 => Compression::None,
        1 => Compression::Zstd,
        2 => Compression::ZstdPlanes,
        3 => Compression::ZstdDelta,
        _ => return None,
    };
    let frame_offset = match u32::from_le_bytes(bytes.get(82..86)?.try_into().ok()?) {
        SOLE => None,
        start => Some(start),
    };
    let vouched = match bytes.get(86)? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let base = match compression {
        Compression::ZstdDelta => Some(Id(bytes.get(87..119)?.try_into().ok()?)),
        _ => None,
    };
    let location = BlobLocation {
        pack,
        entry: BlobEntry {
            kind,
            id,
            offset,
            length,
            raw_length,
            compression,
            frame_offset,
            base,
        },
    };
    Some(Located { location, vouched })
}

/// Whether record `newer` should be kept rather than `older`, records of
/// the same blob (see [`Located::supersedes`]).
fn record_supersedes(newer: &[u8], older: &[u8]) -> bool {
    newer.get(86) == Some(&1) || older.get(86) != Some(&1)
}

/// A Bloom filter of a run's ids, checked with the rest of the run's
/// directory when it is opened. Ids are BLAKE3 hashes, so their bytes
/// serve as the filter's hashes (FORMAT.md 14.3 gives the positions); ids
/// bunched on purpose only make more ids pass, which costs a page read,
/// never a wrong answer.
struct Filter {
    words: Vec<u64>,
    hashes: u32,
}

impl Filter {
    fn with_capacity(records: usize) -> Filter {
        let bits = (records as u64)
            .saturating_mul(FILTER_BITS_PER_RECORD)
            .max(64);
        Filter {
            words: vec![0; bits.div_ceil(64) as usize],
            hashes: FILTER_HASHES,
        }
    }

    /// The bit positions of `id`: `h1 + i·h2` modulo the filter's bits for
    /// `i` below the number of hashes (double hashing).
    fn positions(&self, id: &[u8; 32]) -> impl Iterator<Item = u64> + use<> {
        let word = |range: std::ops::Range<usize>| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&id[range]);
            u64::from_le_bytes(bytes)
        };
        let (h1, h2) = (word(16..24), word(24..32) | 1);
        let bits = self.words.len() as u64 * 64;
        (0..u64::from(self.hashes)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % bits)
    }

    fn insert(&mut self, id: &[u8; 32]) {
        for bit in self.positions(id) {
            self.words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    /// False only for an id the run does not list.
    fn may_contain(&self, id: &[u8; 32]) -> bool {
        self.positions(id)
            .all(|bit| self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    fn to_bytes(&self) -> Vec<u8> {
        self.words
            .iter()
            .flat_map(|word| word.to_le_bytes())
            .collect()
    }
}

/// The first 16 bytes of the BLAKE3 hash of a page's records, as the page
/// table holds it.
fn page_checksum(records: &[u8]) -> [u8; 16] {
    let mut checksum = [0u8; 16];
    checksum.copy_from_slice(&blake3::hash(records).as_bytes()[..16]);
    checksum
}

/// Writes records to a temporary file, building the filter and the page
/// table as they pass, then makes the file durable under its real name.
struct RunWriter {
    directory: PathBuf,
    sequence: u64,
    temporary: PathBuf,
    output: BufWriter<File>,
    /// Hashes the header, then (at the end) the filter, page table and
    /// footer fields: everything but the records, which the page table's
    /// checksums cover.
    hasher: blake3::Hasher,
    page: blake3::Hasher,
    in_page: usize,
    pages: Vec<u8>,
    filter: Filter,
    count: u64,
    last: Option<Id>,
}

impl RunWriter {
    /// A writer of at most `capacity` records (the filter is sized for
    /// them; more still work, with more ids passing it).
    fn create(directory: &Path, sequence: u64, capacity: usize) -> Result<Self> {
        let temporary = directory.join(format!("{}.tmp", run_name(sequence)));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)
            .map_err(|error| io_error(&temporary, error))?;
        let mut writer = RunWriter {
            directory: directory.to_path_buf(),
            sequence,
            temporary,
            output: BufWriter::with_capacity(1 << 20, file),
            hasher: blake3::Hasher::new(),
            page: blake3::Hasher::new(),
            in_page: 0,
            pages: Vec::new(),
            filter: Filter::with_capacity(capacity),
            count: 0,
            last: None,
        };
        let mut header = [0u8; HEADER_SIZE];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&VERSION.to_le_bytes());
        writer.hasher.update(&header);
        writer.put(&header)?;
        Ok(writer)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.output
            .write_all(bytes)
            .map_err(|error| io_error(&self.temporary, error))
    }

    /// Appends one record; ids must come strictly ascending.
    fn push(&mut self, record: &[u8; RECORD_SIZE]) -> Result<()> {
        let mut id = [0u8; 32];
        id.copy_from_slice(&record[..32]);
        let id = Id(id);
        if self.last.is_some_and(|last| last >= id) {
            return Err(StoreError::Invalid(format!(
                "index cache run {}: records out of order at blob {id}",
                self.temporary.display()
            )));
        }
        self.last = Some(id);
        self.count += 1;
        self.filter.insert(&id.0);
        if self.in_page == 0 {
            self.pages.extend_from_slice(&id.0);
        }
        self.page.update(record);
        self.in_page += 1;
        if self.in_page == PAGE_RECORDS {
            self.close_page();
        }
        self.put(record)
    }

    fn close_page(&mut self) {
        self.pages
            .extend_from_slice(&self.page.finalize().as_bytes()[..16]);
        self.page.reset();
        self.in_page = 0;
    }

    fn finish(mut self) -> Result<Run> {
        if self.in_page > 0 {
            self.close_page();
        }
        let filter = self.filter.to_bytes();
        let pages = std::mem::take(&mut self.pages);
        let mut fields = Vec::with_capacity(FOOTER_SIZE - 32);
        fields.extend_from_slice(&self.count.to_le_bytes());
        fields.extend_from_slice(&(PAGE_RECORDS as u32).to_le_bytes());
        fields.extend_from_slice(&self.filter.hashes.to_le_bytes());
        fields.extend_from_slice(&(self.filter.words.len() as u64).to_le_bytes());
        for part in [&filter, &pages, &fields] {
            self.hasher.update(part);
            self.put(part)?;
        }
        let hash = *self.hasher.finalize().as_bytes();
        self.put(&hash)?;
        let file = self.output.into_inner().map_err(|error| {
            let temporary = self.temporary.clone();
            io_error(&temporary, error.into_error())
        })?;
        // Durable before the cache records, in sled, the index files whose
        // blobs it holds: a crash must never leave those marked without it.
        file.sync_all()
            .map_err(|error| io_error(&self.temporary, error))?;
        drop(file);
        let path = self.directory.join(run_name(self.sequence));
        fs::rename(&self.temporary, &path).map_err(|error| io_error(&path, error))?;
        File::open(&self.directory)
            .and_then(|directory| directory.sync_all())
            .map_err(|error| io_error(&self.directory, error))?;
        Run::open(&path, self.sequence)
    }
}

thread_local! {
    /// The page a lookup reads, kept per thread so a lookup allocates
    /// nothing (a restore or backup makes one per chunk).
    static PAGE_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reads `length` bytes at `offset`, after the caller has bounded
/// `length` by the file's size.
fn read_at(file: &File, path: &Path, offset: u64, length: usize) -> Result<Vec<u8>> {
    let mut bytes = vec![0u8; length];
    file.read_exact_at(&mut bytes, offset)
        .map_err(|error| io_error(path, error))?;
    Ok(bytes)
}

impl Run {
    /// Writes `entries` as run `sequence` in `directory`. Where an id is
    /// listed more than once, the entry latest in `entries` wins unless an
    /// earlier one is vouched and it is not ([`Located::supersedes`]).
    pub fn write(directory: &Path, sequence: u64, mut entries: Vec<(Id, Located)>) -> Result<Run> {
        // Stable, so equal ids keep their order and the last one can win.
        entries.sort_by_key(|entry| entry.0);
        let mut writer = RunWriter::create(directory, sequence, entries.len())?;
        let mut kept: Option<(Id, Located)> = None;
        for (id, located) in entries {
            match &kept {
                Some((held, earlier)) if *held == id => {
                    if located.supersedes(earlier) {
                        kept = Some((id, located));
                    }
                }
                _ => {
                    if let Some((held, earlier)) = kept.replace((id, located)) {
                        writer.push(&encode_record(&held, &earlier))?;
                    }
                }
            }
        }
        if let Some((held, earlier)) = kept {
            writer.push(&encode_record(&held, &earlier))?;
        }
        writer.finish()
    }

    /// Opens a run and checks its directory: magic, version, the length
    /// its footer implies, and the hash over header, filter, page table
    /// and footer. The records are checked a page at a time, when read. A
    /// run that fails is an error, and the cache is rebuilt.
    pub fn open(path: &Path, sequence: u64) -> Result<Run> {
        let file = File::open(path).map_err(|error| io_error(path, error))?;
        let length = file
            .metadata()
            .map_err(|error| io_error(path, error))?
            .len();
        if length < (HEADER_SIZE + FOOTER_SIZE) as u64 {
            return Err(run_error(path, format!("{length} bytes, too short")));
        }
        let header = read_at(&file, path, 0, HEADER_SIZE)?;
        if &header[..8] != MAGIC {
            return Err(run_error(path, "not a run file (bad magic)"));
        }
        let version = u32::from_le_bytes(header[8..12].try_into().unwrap_or_default());
        if version == 4 {
            drop(file);
            return upgrade_version_4(path, sequence);
        }
        if version != VERSION {
            return Err(run_error(path, format!("unknown run version {version}")));
        }
        let footer = read_at(&file, path, length - FOOTER_SIZE as u64, FOOTER_SIZE)?;
        let field = |range: std::ops::Range<usize>| {
            let mut bytes = [0u8; 8];
            bytes[..range.len()].copy_from_slice(&footer[range]);
            u64::from_le_bytes(bytes)
        };
        let (count, page_records) = (field(0..8), field(8..12));
        let (hashes, words) = (field(12..16), field(16..24));
        if !(1..=MAX_PAGE_RECORDS as u64).contains(&page_records)
            || !(1..=u64::from(MAX_FILTER_HASHES)).contains(&hashes)
            || words == 0
        {
            return Err(run_error(
                path,
                format!(
                    "{page_records} records a page, {hashes} filter hashes, {words} filter words"
                ),
            ));
        }
        // Every size is checked against the file's length before anything
        // is allocated for it.
        let pages = count.div_ceil(page_records);
        let records_end = count
            .checked_mul(RECORD_SIZE as u64)
            .and_then(|bytes| bytes.checked_add(HEADER_SIZE as u64));
        let filter_bytes = words.checked_mul(8);
        let table_bytes = pages.checked_mul(PAGE_ENTRY_SIZE as u64);
        let expected = records_end
            .zip(filter_bytes)
            .and_then(|(end, filter)| end.checked_add(filter))
            .zip(table_bytes)
            .and_then(|(end, table)| end.checked_add(table))
            .and_then(|end| end.checked_add(FOOTER_SIZE as u64));
        let (Some(records_end), Some(filter_bytes), Some(table_bytes)) =
            (records_end, filter_bytes, table_bytes)
        else {
            return Err(run_error(path, format!("{count} records announced")));
        };
        if expected != Some(length) {
            return Err(run_error(
                path,
                format!("{count} records announced in {length} bytes"),
            ));
        }
        let filter = read_at(&file, path, records_end, filter_bytes as usize)?;
        let table = read_at(
            &file,
            path,
            records_end + filter_bytes,
            table_bytes as usize,
        )?;
        let mut hasher = blake3::Hasher::new();
        for part in [&header[..], &filter, &table, &footer[..FOOTER_SIZE - 32]] {
            hasher.update(part);
        }
        if hasher.finalize().as_bytes()[..] != footer[FOOTER_SIZE - 32..] {
            return Err(run_error(
                path,
                "filter, page table or footer does not match its BLAKE3 hash",
            ));
        }
        let filter = Filter {
            words: filter
                .chunks_exact(8)
                .map(|word| u64::from_le_bytes(word.try_into().unwrap_or_default()))
                .collect(),
            hashes: hashes as u32,
        };
        Ok(Run {
            path: path.to_path_buf(),
            sequence,
            file,
            count: count as usize,
            page_records: page_records as usize,
            filter,
            pages_checked: (0..table.len().div_ceil(PAGE_ENTRY_SIZE).div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            pages: table,
            #[cfg(test)]
            pages_read: std::sync::atomic::AtomicUsize::new(0),
            #[cfg(test)]
            pages_hashed: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    pub fn len(&self) -> usize {
        self.count
    }

    fn page_count(&self) -> usize {
        self.pages.len() / PAGE_ENTRY_SIZE
    }

    fn page_entry(&self, page: usize) -> &[u8] {
        &self.pages[page * PAGE_ENTRY_SIZE..(page + 1) * PAGE_ENTRY_SIZE]
    }

    /// Where page `page`'s records start in the file, and how many bytes.
    fn page_span(&self, page: usize) -> (u64, usize) {
        let first = page * self.page_records;
        let records = self.page_records.min(self.count - first);
        (
            (HEADER_SIZE + first * RECORD_SIZE) as u64,
            records * RECORD_SIZE,
        )
    }

    /// `bytes`, read as page `page`, if they match the page table's
    /// checksum; damage is an error naming the run and the page.
    fn checked_page(&self, page: usize, bytes: Vec<u8>) -> Result<Vec<u8>> {
        if page_checksum(&bytes)[..] != self.page_entry(page)[32..] {
            return Err(run_error(
                &self.path,
                format!("page {page} does not match its checksum"),
            ));
        }
        Ok(bytes)
    }

    /// The location this run lists for `id`. An id the filter rules out
    /// costs no read; any other, one read of the only page that can hold
    /// it (the last whose first id is not above it), checked before it is
    /// searched.
    pub fn lookup(&self, id: &Id) -> Result<Option<Located>> {
        if !self.filter.may_contain(&id.0) {
            return Ok(None);
        }
        let (mut low, mut high) = (0, self.page_count());
        while low < high {
            let middle = low + (high - low) / 2;
            if self.page_entry(middle)[..32] <= id.0[..] {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        let Some(page) = low.checked_sub(1) else {
            return Ok(None);
        };
        #[cfg(test)]
        self.pages_read
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (offset, length) = self.page_span(page);
        PAGE_BUFFER.with_borrow_mut(|bytes| {
            bytes.resize(length, 0);
            self.file
                .read_exact_at(bytes, offset)
                .map_err(|error| io_error(&self.path, error))?;
            self.check_page_once(page, bytes)?;
            // Searched in place: collecting the records' slices first cost
            // an allocation at every lookup, and a backup makes one or two
            // for each chunk. `low` ends at the first record not below `id`.
            let count = bytes.len() / RECORD_SIZE;
            let key = |at: usize| &bytes[at * RECORD_SIZE..at * RECORD_SIZE + 32];
            let (mut low, mut high) = (0, count);
            while low < high {
                let middle = low + (high - low) / 2;
                if key(middle) < &id.0[..] {
                    low = middle + 1;
                } else {
                    high = middle;
                }
            }
            if low == count || key(low) != &id.0[..] {
                return Ok(None);
            }
            decode_record(&bytes[low * RECORD_SIZE..(low + 1) * RECORD_SIZE])
                .map(Some)
                .ok_or_else(|| run_error(&self.path, format!("undecodable entry for blob {id}")))
        })
    }

    /// Checks `bytes`, just read as page `page`, against the page table,
    /// unless a lookup of this process already found that page intact.
    /// A restore or a backup looks up every chunk, and a small or middling
    /// repository's runs have few pages, each read many times: hashing the
    /// page at every read cost a modelled restore ~0.9 s of CPU (3,300
    /// pages, 112,000 lookups). A page read again comes from the kernel's
    /// page cache, unchanged unless something rewrote this user's own cache
    /// file while the command ran, so the first check stands for the
    /// process; damage on the disk is still caught at the first read of
    /// each page by each command. Merges check every page they read.
    fn check_page_once(&self, page: usize, bytes: &[u8]) -> Result<()> {
        let (word, bit) = (page / 64, 1u64 << (page % 64));
        let checked = self.pages_checked.get(word);
        if checked.is_some_and(|word| word.load(Ordering::Relaxed) & bit != 0) {
            return Ok(());
        }
        #[cfg(test)]
        self.pages_hashed.fetch_add(1, Ordering::Relaxed);
        if page_checksum(bytes)[..] != self.page_entry(page)[32..] {
            return Err(run_error(
                &self.path,
                format!("page {page} does not match its checksum"),
            ));
        }
        if let Some(word) = checked {
            word.fetch_or(bit, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Rewrites a version-4 run (the same records, unpaged, then the count
/// and a BLAKE3 hash of everything before it) as a current one under the
/// same name, once: cheaper than rebuilding the cache from the repository
/// (at 10 M chunks, two sequential reads of 1.2 GB and one write, against
/// reading every index file). The old file is checked whole first, and
/// replaced only by the rename at the end, so a crash leaves it as it was.
fn upgrade_version_4(path: &Path, sequence: u64) -> Result<Run> {
    const OLD_FOOTER: u64 = 8 + 32;
    let file = File::open(path).map_err(|error| io_error(path, error))?;
    let length = file
        .metadata()
        .map_err(|error| io_error(path, error))?
        .len();
    let body = length.saturating_sub(HEADER_SIZE as u64 + OLD_FOOTER);
    if length < HEADER_SIZE as u64 + OLD_FOOTER || !body.is_multiple_of(RECORD_SIZE as u64) {
        return Err(run_error(path, format!("version 4, {length} bytes")));
    }
    let count = body / RECORD_SIZE as u64;
    let footer = read_at(&file, path, length - OLD_FOOTER, OLD_FOOTER as usize)?;
    let mut announced = [0u8; 8];
    announced.copy_from_slice(&footer[..8]);
    if u64::from_le_bytes(announced) != count {
        return Err(run_error(
            path,
            format!("version 4, {count} records in {length} bytes"),
        ));
    }
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader((&file).take(length - 32))
        .map_err(|error| io_error(path, error))?;
    if hasher.finalize().as_bytes()[..] != footer[8..] {
        return Err(run_error(
            path,
            "version 4, content does not match its BLAKE3 hash",
        ));
    }
    let directory = path.parent().unwrap_or(Path::new("."));
    let mut writer = RunWriter::create(directory, sequence, count as usize)?;
    let mut reader = BufReader::with_capacity(1 << 20, &file);
    reader
        .seek(SeekFrom::Start(HEADER_SIZE as u64))
        .map_err(|error| io_error(path, error))?;
    let mut record = [0u8; RECORD_SIZE];
    for _ in 0..count {
        reader
            .read_exact(&mut record)
            .map_err(|error| io_error(path, error))?;
        writer.push(&record)?;
    }
    // The rename replaces the old file; a file named like a run is always
    // one whole run, of either version.
    writer.finish()
}

/// Merges two runs into run `sequence`; where both list an id, `newer`
/// wins unless only `older`'s is vouched. Streams both, so memory stays
/// flat whatever their size.
pub fn merge(directory: &Path, sequence: u64, older: &Run, newer: &Run) -> Result<Run> {
    let mut writer = RunWriter::create(directory, sequence, older.len() + newer.len())?;
    let (mut left, mut right) = (Records::of(older)?, Records::of(newer)?);
    loop {
        let (a, b) = (left.current, right.current);
        let (take, from) = match (a, b) {
            (None, None) => break,
            (Some(a), None) => (a, &mut left),
            (None, Some(b)) => (b, &mut right),
            (Some(a), Some(b)) => {
                if a[..32] == b[..32] {
                    // One listing of the id survives; the other is skipped
                    // and the survivor compared again with what follows.
                    if record_supersedes(&b, &a) {
                        left.advance()?;
                    } else {
                        right.advance()?;
                    }
                    continue;
                }
                if b[..32] < a[..32] {
                    (b, &mut right)
                } else {
                    (a, &mut left)
                }
            }
        };
        writer.push(&take)?;
        from.advance()?;
    }
    writer.finish()
}

/// A run's records in order, read through a buffer a page at a time, each
/// page checked against the page table before its records are used.
struct Records<'a> {
    run: &'a Run,
    reader: BufReader<std::io::Take<File>>,
    /// The next page to read.
    page: usize,
    /// The page being walked, and where in it the next record starts.
    records: Vec<u8>,
    at: usize,
    current: Option<[u8; RECORD_SIZE]>,
}

impl<'a> Records<'a> {
    fn of(run: &'a Run) -> Result<Records<'a>> {
        // Opened again, for an offset of its own; the file is never
        // modified after it is written.
        let mut file = File::open(&run.path).map_err(|error| io_error(&run.path, error))?;
        file.seek(SeekFrom::Start(HEADER_SIZE as u64))
            .map_err(|error| io_error(&run.path, error))?;
        let body = (run.count * RECORD_SIZE) as u64;
        let mut records = Records {
            run,
            reader: BufReader::with_capacity(1 << 20, file.take(body)),
            page: 0,
            records: Vec::new(),
            at: 0,
            current: None,
        };
        records.advance()?;
        Ok(records)
    }

    /// Moves to the next record; `current` is `None` after the last.
    fn advance(&mut self) -> Result<()> {
        if self.at == self.records.len() {
            if self.page == self.run.page_count() {
                self.current = None;
                return Ok(());
            }
            let (_, length) = self.run.page_span(self.page);
            let mut bytes = vec![0u8; length];
            self.reader
                .read_exact(&mut bytes)
                .map_err(|error| io_error(&self.run.path, error))?;
            self.records = self.run.checked_page(self.page, bytes)?;
            self.page += 1;
            self.at = 0;
        }
        let mut record = [0u8; RECORD_SIZE];
        record.copy_from_slice(&self.records[self.at..self.at + RECORD_SIZE]);
        self.at += RECORD_SIZE;
        self.current = Some(record);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(pack: &[u8], id: Id, offset: u64) -> Located {
        let location = BlobLocation {
            pack: Id::of(pack),
            entry: BlobEntry {
                kind: BlobKind::Data,
                id,
                offset,
                length: 100,
                raw_length: 200,
                compression: Compression::Zstd,
                frame_offset: None,
                base: None,
            },
        };
        Located {
            location,
            vouched: true,
        }
    }

    fn entries(count: u64, pack: &[u8]) -> Vec<(Id, Located)> {
        (0..count)
            .map(|number| {
                let id = Id::of(&number.to_le_bytes());
                (id, location(pack, id, number * 100))
            })
            .collect()
    }

    #[test]
    fn ids_that_are_not_spread_evenly_are_found_all_the_same() {
        // Leading bytes bunched at both ends, and many ids sharing their
        // first eight bytes, mislead every interpolation guess.
        let mut listed = Vec::new();
        let mut absent = Vec::new();
        for number in 0u64..600 {
            let mut id = Id::of(&number.to_le_bytes());
            id.0[..8].copy_from_slice(&match number % 3 {
                0 => [0u8; 8],
                1 => [0xff; 8],
                _ => (number * 3).to_be_bytes(),
            });
            let mut neighbour = id;
            neighbour.0[31] ^= 1;
            listed.push((id, location(b"pack", id, number)));
            absent.push(neighbour);
        }
        absent.push(Id([0u8; 32]));
        absent.push(Id([0xff; 32]));
        let directory = tempfile::tempdir().unwrap();
        let run = Run::write(directory.path(), 1, listed.clone()).unwrap();
        for (id, expected) in &listed {
            assert_eq!(run.lookup(id).unwrap(), Some(*expected));
        }
        for id in absent
            .iter()
            .filter(|id| listed.iter().all(|(l, _)| l != *id))
        {
            assert_eq!(run.lookup(id).unwrap(), None, "{id}");
        }
    }

    #[test]
    fn a_run_finds_every_id_it_lists_and_none_other() {
        let directory = tempfile::tempdir().unwrap();
        let listed = entries(1000, b"pack");
        let run = Run::write(directory.path(), 7, listed.clone()).unwrap();
        assert_eq!(run.len(), 1000);
        for (id, expected) in &listed {
            assert_eq!(run.lookup(id).unwrap(), Some(*expected));
        }
        assert_eq!(run.lookup(&Id::of(b"absent")).unwrap(), None);
        // Reopened from disk, it answers alike.
        let reopened = Run::open(&directory.path().join(run_name(7)), 7).unwrap();
        assert_eq!(reopened.lookup(&listed[5].0).unwrap(), Some(listed[5].1));
        let empty = Run::write(directory.path(), 8, Vec::new()).unwrap();
        assert_eq!(empty.lookup(&listed[5].0).unwrap(), None);
    }

    #[test]
    fn a_vouched_location_is_never_superseded_by_one_that_is_not() {
        let directory = tempfile::tempdir().unwrap();
        let id = Id::of(b"claimed twice");
        let vouched = location(b"true pack", id, 1);
        let planted = Located {
            vouched: false,
            ..location(b"planted pack", id, 2)
        };
        let mut listed = entries(30, b"pack");
        listed.push((id, vouched));
        listed.push((id, planted));
        let run = Run::write(directory.path(), 1, listed).unwrap();
        assert_eq!(run.lookup(&id).unwrap(), Some(vouched));
        // Across a merge, whichever run is newer.
        let only_planted = Run::write(directory.path(), 2, vec![(id, planted)]).unwrap();
        let merged = merge(directory.path(), 3, &run, &only_planted).unwrap();
        assert_eq!(merged.lookup(&id).unwrap(), Some(vouched));
        assert_eq!(merged.len(), 31);
        let merged = merge(directory.path(), 4, &only_planted, &run).unwrap();
        assert_eq!(merged.lookup(&id).unwrap(), Some(vouched));
        // Among hints, the newer wins, as among vouched locations.
        let newer_hint = Located {
            vouched: false,
            ..location(b"newer pack", id, 3)
        };
        let hints = Run::write(directory.path(), 5, vec![(id, planted), (id, newer_hint)]).unwrap();
        assert_eq!(hints.lookup(&id).unwrap(), Some(newer_hint));
    }

    #[test]
    fn the_last_listing_of_an_id_wins_within_a_run_and_across_a_merge() {
        let directory = tempfile::tempdir().unwrap();
        let id = Id::of(b"stored twice");
        let (first, second) = (location(b"lost pack", id, 1), location(b"new pack", id, 2));
        let mut listed = entries(50, b"pack");
        listed.push((id, first));
        listed.push((id, second));
        let run = Run::write(directory.path(), 1, listed).unwrap();
        assert_eq!(run.len(), 51);
        assert_eq!(run.lookup(&id).unwrap(), Some(second));

        let mut older = entries(300, b"older");
        older.push((id, first));
        let mut newer = entries(20, b"newer");
        newer.extend(entries(400, b"only newer").into_iter().skip(350));
        newer.push((id, second));
        let older = Run::write(directory.path(), 2, older).unwrap();
        let newer = Run::write(directory.path(), 3, newer).unwrap();
        let merged = merge(directory.path(), 4, &older, &newer).unwrap();
        // 300 ids in common with or below the newer's 20, plus 50 new, plus one.
        assert_eq!(merged.len(), 300 + 50 + 1);
        assert_eq!(merged.lookup(&id).unwrap(), Some(second));
        for (id, expected) in entries(20, b"newer") {
            assert_eq!(merged.lookup(&id).unwrap(), Some(expected));
        }
        for (id, expected) in entries(300, b"older").into_iter().skip(20) {
            assert_eq!(merged.lookup(&id).unwrap(), Some(expected));
        }
        for (id, expected) in entries(400, b"only newer").into_iter().skip(350) {
            assert_eq!(merged.lookup(&id).unwrap(), Some(expected));
        }
    }

    #[test]
    fn a_damaged_or_truncated_run_is_refused_when_opened() {
        let directory = tempfile::tempdir().unwrap();
        let run = Run::write(directory.path(), 1, entries(100, b"pack")).unwrap();
        let path = run.path().to_path_buf();
        drop(run);
        let good = fs::read(&path).unwrap();
        let records_end = HEADER_SIZE + 100 * RECORD_SIZE;
        // A byte of the filter, of a page's first id and of a page's
        // checksum in the page table, of the footer, of the header.
        let pages = 100usize.div_ceil(PAGE_RECORDS);
        let table = good.len() - FOOTER_SIZE - pages * PAGE_ENTRY_SIZE;
        for at in [records_end + 3, table + 5, table + PAGE_ENTRY_SIZE + 40] {
            let mut flipped = good.clone();
            flipped[at] ^= 1;
            fs::write(&path, &flipped).unwrap();
            let error = Run::open(&path, 1).err().unwrap().to_string();
            assert!(
                error.contains("hash") && error.contains(&run_name(1)),
                "byte {at}: {error}"
            );
        }
        for at in [good.len() - FOOTER_SIZE, good.len() - 1, 13] {
            let mut flipped = good.clone();
            flipped[at] ^= 1;
            fs::write(&path, &flipped).unwrap();
            assert!(Run::open(&path, 1).is_err(), "byte {at}");
        }

        fs::write(&path, &good[..good.len() - RECORD_SIZE]).unwrap();
        assert!(Run::open(&path, 1).is_err());
        fs::write(&path, b"short").unwrap();
        assert!(Run::open(&path, 1).is_err());
        fs::write(&path, &good).unwrap();
        assert_eq!(Run::open(&path, 1).unwrap().len(), 100);
    }

    /// Opening checks only a run's directory; a flipped byte in a page's
    /// records is caught when that page is read, by a lookup or a merge,
    /// and never answered from. The flip that matters most: a record
    /// whose id is changed to one the run does not list would be a wrong
    /// "present" (a chunk never stored, skipped as stored).
    #[test]
    fn a_flipped_byte_in_a_page_is_caught_when_the_page_is_read() {
        let directory = tempfile::tempdir().unwrap();
        let listed = {
            let mut listed = entries(200, b"pack");
            listed.sort_by_key(|entry| entry.0);
            listed
        };
        let run = Run::write(directory.path(), 1, listed.clone()).unwrap();
        let path = run.path().to_path_buf();
        drop(run);
        let good = fs::read(&path).unwrap();
        // The third record of page 2: its id's last byte, then its offset.
        let record = 2 * PAGE_RECORDS + 3;
        let start = HEADER_SIZE + record * RECORD_SIZE;
        for at in [start + 31, start + 64] {
            let mut flipped = good.clone();
            flipped[at] ^= 1;
            fs::write(&path, &flipped).unwrap();
            let run = Run::open(&path, 1).unwrap();
            let mut forged = listed[record].0;
            forged.0[31] ^= 1;
            for id in [listed[record].0, listed[record + 1].0, forged] {
                // The forged id, listed nowhere, may be ruled out by the
                // filter (no answer at all is right); if it reaches the
                // page, the page is refused.
                match run.lookup(&id) {
                    Ok(None) if id == forged => {}
                    Ok(answer) => panic!("byte {at}: {id} answered {answer:?} from a damaged page"),
                    Err(error) => {
                        let error = error.to_string();
                        assert!(
                            error.contains("page 2 does not match its checksum")
                                && error.contains(&run_name(1)),
                            "{error}"
                        );
                    }
                }
            }
            // Other pages still answer.
            assert_eq!(run.lookup(&listed[0].0).unwrap(), Some(listed[0].1));
            assert_eq!(run.lookup(&listed[199].0).unwrap(), Some(listed[199].1));
            let other = Run::write(directory.path(), 2, entries(10, b"other")).unwrap();
            let error = merge(directory.path(), 3, &run, &other)
                .err()
                .expect("a merge reads every page")
                .to_string();
            assert!(error.contains("page 2"), "{error}");
        }
    }

    /// A lookup reads one page for an id the run lists and, for nearly
    /// every id it does not list, none: the filter answers.
    #[test]
    fn a_lookup_reads_one_page_or_none() {
        let directory = tempfile::tempdir().unwrap();
        let listed = entries(20_000, b"pack");
        let run = Run::write(directory.path(), 3, listed.clone()).unwrap();
        let reads = || run.pages_read.load(std::sync::atomic::Ordering::Relaxed);
        for (id, expected) in listed.iter().step_by(7) {
            let before = reads();
            assert_eq!(run.lookup(id).unwrap(), Some(*expected));
            assert_eq!(reads(), before + 1);
        }
        let before = reads();
        let absent = 20_000;
        for number in 0..absent {
            assert_eq!(
                run.lookup(&Id::of(format!("absent {number}").as_bytes()))
                    .unwrap(),
                None
            );
        }
        // 10 bits and 7 hashes a record: 0.8 % expected.
        let passed = reads() - before;
        assert!(
            passed < absent / 50,
            "{passed} of {absent} absent ids read a page"
        );
        // Each page read was hashed once, however often it was read.
        let hashed = run.pages_hashed.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            hashed <= run.page_count() && hashed < reads(),
            "{hashed} hashes, {} reads",
            reads()
        );
        for (id, expected) in listed.iter().step_by(7) {
            assert_eq!(run.lookup(id).unwrap(), Some(*expected));
        }
        assert_eq!(
            run.pages_hashed.load(std::sync::atomic::Ordering::Relaxed),
            hashed
        );
    }

    /// A run written by an earlier cairn (version 4: records unpaged, the
    /// count and a hash of all) is rewritten once as a current one when
    /// opened, and answers as before; damaged, it is refused.
    #[test]
    fn a_version_4_run_is_checked_and_rewritten_when_opened() {
        let directory = tempfile::tempdir().unwrap();
        let listed = entries(100, b"pack");
        let mut sorted = listed.clone();
        sorted.sort_by_key(|entry| entry.0);
        let mut old = MAGIC.to_vec();
        old.extend_from_slice(&4u32.to_le_bytes());
        old.extend_from_slice(&[0; 4]);
        for (id, located) in &sorted {
            old.extend_from_slice(&encode_record(id, located));
        }
        old.extend_from_slice(&100u64.to_le_bytes());
        let hash = blake3::hash(&old);
        old.extend_from_slice(hash.as_bytes());
        let path = directory.path().join(run_name(4));

        let mut flipped = old.clone();
        flipped[HEADER_SIZE + 70] ^= 1;
        fs::write(&path, &flipped).unwrap();
        let error = Run::open(&path, 4).err().unwrap().to_string();
        assert!(error.contains("hash"), "{error}");

        fs::write(&path, &old).unwrap();
        let run = Run::open(&path, 4).unwrap();
        assert_eq!(run.len(), 100);
        for (id, expected) in &listed {
            assert_eq!(run.lookup(id).unwrap(), Some(*expected));
        }
        let rewritten = fs::read(&path).unwrap();
        assert_eq!(&rewritten[8..12], &VERSION.to_le_bytes());
        assert_eq!(Run::open(&path, 4).unwrap().len(), 100);
        assert_eq!(fs::read_dir(directory.path()).unwrap().count(), 1);
    }

    /// A run file of version 5 holding `records` as they are, with its
    /// page table, a filter every id passes and a footer computed as a
    /// writer would: what a hostile local user could leave in the cache
    /// (damage the checks miss is the same), to be opened and searched.
    fn run_file_of(records: &[u8]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        let mut directory = bytes.clone();
        bytes.extend_from_slice(records);
        let mut tail = vec![0xff; 8];
        for page in records.chunks(PAGE_RECORDS * RECORD_SIZE) {
            tail.extend_from_slice(&page[..32]);
            tail.extend_from_slice(&page_checksum(page));
        }
        tail.extend_from_slice(&((records.len() / RECORD_SIZE) as u64).to_le_bytes());
        tail.extend_from_slice(&(PAGE_RECORDS as u32).to_le_bytes());
        tail.extend_from_slice(&FILTER_HASHES.to_le_bytes());
        tail.extend_from_slice(&1u64.to_le_bytes());
        directory.extend_from_slice(&tail);
        bytes.extend_from_slice(&tail);
        bytes.extend_from_slice(blake3::hash(&directory).as_bytes());
        bytes
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 200,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Records in any order with any bytes (kinds and compressions out
        /// of range, ids unsorted) are refused or searched, never a panic
        /// or a lookup that does not end; so is a merge of two such runs.
        #[test]
        fn hostile_runs_never_panic_a_lookup_or_a_merge(
            records in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..RECORD_SIZE * 24),
            probe in proptest::prelude::any::<[u8; 32]>(),
            cut in proptest::prelude::any::<usize>(),
        ) {
            let directory = tempfile::tempdir().unwrap();
            let whole = records.len() / RECORD_SIZE * RECORD_SIZE;
            let path = directory.path().join(run_name(1));
            fs::write(&path, run_file_of(&records[..whole])).unwrap();
            let run = Run::open(&path, 1).unwrap();
            let _ = run.lookup(&Id(probe));
            for record in records[..whole].chunks(RECORD_SIZE) {
                let mut id = [0u8; 32];
                id.copy_from_slice(&record[..32]);
                let _ = run.lookup(&Id(id));
            }
            let other = directory.path().join(run_name(2));
            fs::write(&other, run_file_of(&records[whole / 2 / RECORD_SIZE * RECORD_SIZE..whole])).unwrap();
            let other = Run::open(&other, 2).unwrap();
            if let Ok(merged) = merge(directory.path(), 3, &run, &other) {
                let _ = merged.lookup(&Id(probe));
            }
            // Cut anywhere, the file is refused (or, cut to nothing short
            // of a record, still whole).
            let mut cut_file = run_file_of(&records[..whole]);
            cut_file.truncate(cut % (cut_file.len() + 1));
            fs::write(&path, &cut_file).unwrap();
            let _ = Run::open(&path, 1).map(|run| run.lookup(&Id(probe)));
        }
    }

    #[test]
    fn run_names_sort_by_sequence_and_parse_back() {
        assert_eq!(parse_run_name(&run_name(0x1f)), Some(0x1f));
        assert!(run_name(2) < run_name(10));
        assert_eq!(parse_run_name("0000000000000001.run.tmp"), None);
        assert_eq!(parse_run_name("conf"), None);
    }
}
