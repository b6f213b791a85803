//! Run files: the local index cache's blob locations, sorted on disk.
//!
//! A run is an immutable file of blob locations sorted by blob id. It is
//! memory-mapped and binary-searched, so a lookup touches a few pages and
//! the cache never holds every entry in RAM. Writing one costs a sort and
//! one sequential write, where sled 0.34 spent 5–9 µs on every insert (a
//! first backup of 63,000 chunks ended with half a second of them on one
//! thread).
//!
//! Owns the file layout (docs/FORMAT.md section 14.3), writing a run
//! durably (temporary name, sync, rename), checking a run when it is
//! opened, and merging two runs. Never decides when to write or merge (the
//! cache does), and never reads the repository.

use crate::error::{Result, StoreError};
use crate::format::index::BlobLocation;
use crate::format::pack::{BlobEntry, BlobKind, Compression};
use crate::id::Id;
use memmap2::Mmap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"CAIRNRUN";
/// Version 4 adds the base of a delta blob to every record.
const VERSION: u32 = 4;
/// Magic, version, four reserved zero bytes.
const HEADER_SIZE: usize = 16;
/// Record count (u64 LE) and the BLAKE3 hash of every byte before it.
const FOOTER_SIZE: usize = 8 + 32;
/// Blob id, pack id, offset (u64 LE), length, raw length (u32 LE each),
/// kind, compression (one byte each), frame offset (u32 LE, all ones for
/// a blob with stored bytes of its own), vouched (one byte, 0 or 1), the
/// base id of a delta blob (all zeros for any other blob).
pub const RECORD_SIZE: usize = 32 + 32 + 8 + 4 + 4 + 1 + 1 + 4 + 1 + 32;
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

/// One opened run file.
pub struct Run {
    path: PathBuf,
    sequence: u64,
    map: Mmap,
    count: usize,
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

/// Writes records to a temporary file while hashing them, then makes the
/// file durable under its real name.
struct RunWriter {
    directory: PathBuf,
    sequence: u64,
    temporary: PathBuf,
    output: BufWriter<File>,
    hasher: blake3::Hasher,
    count: u64,
    last: Option<Id>,
}

impl RunWriter {
    fn create(directory: &Path, sequence: u64) -> Result<Self> {
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
            count: 0,
            last: None,
        };
        let mut header = [0u8; HEADER_SIZE];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&VERSION.to_le_bytes());
        writer.put(&header)?;
        Ok(writer)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.output
            .write_all(bytes)
            .map_err(|error| io_error(&self.temporary, error))
    }

    /// Appends one record; ids must come strictly ascending.
    fn push(&mut self, record: &[u8]) -> Result<()> {
        let id = Id(record[..32].try_into().map_err(|_| {
            StoreError::Invalid("index cache run record shorter than an id".into())
        })?);
        if self.last.is_some_and(|last| last >= id) {
            return Err(StoreError::Invalid(format!(
                "index cache run {}: records out of order at blob {id}",
                self.temporary.display()
            )));
        }
        self.last = Some(id);
        self.count += 1;
        self.put(record)
    }

    fn finish(mut self) -> Result<Run> {
        let count = self.count.to_le_bytes();
        self.put(&count)?;
        let hash = *self.hasher.finalize().as_bytes();
        self.output
            .write_all(&hash)
            .map_err(|error| io_error(&self.temporary, error))?;
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

impl Run {
    /// Writes `entries` as run `sequence` in `directory`. Where an id is
    /// listed more than once, the entry latest in `entries` wins unless an
    /// earlier one is vouched and it is not ([`Located::supersedes`]).
    pub fn write(directory: &Path, sequence: u64, mut entries: Vec<(Id, Located)>) -> Result<Run> {
        // Stable, so equal ids keep their order and the last one can win.
        entries.sort_by_key(|entry| entry.0);
        let mut writer = RunWriter::create(directory, sequence)?;
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

    /// Opens and checks a run: its magic, version, length and hash. A run
    /// that fails is an error, and the cache is rebuilt.
    pub fn open(path: &Path, sequence: u64) -> Result<Run> {
        let file = File::open(path).map_err(|error| io_error(path, error))?;
        let length = file
            .metadata()
            .map_err(|error| io_error(path, error))?
            .len();
        if length < (HEADER_SIZE + FOOTER_SIZE) as u64 {
            return Err(run_error(path, format!("{length} bytes, too short")));
        }
        // Safety: run files are written once under a temporary name and
        // never modified after the rename; the cache's sled lock keeps
        // other cairn processes out of this directory.
        let map = unsafe { Mmap::map(&file) }.map_err(|error| io_error(path, error))?;
        let bytes: &[u8] = &map;
        let body_end = bytes.len() - 32;
        if &bytes[..8] != MAGIC {
            return Err(run_error(path, "not a run file (bad magic)"));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
        if version != VERSION {
            return Err(run_error(path, format!("unknown run version {version}")));
        }
        // Hashed through reads of the file, not through the mapping: every
        // page hashed through the mapping would stay mapped into this
        // process and count in its resident memory until exit (119 bytes a
        // chunk held: 1.2 GB at 10 M chunks, in every command that opens
        // the cache), where a lookup needs only the few pages it probes.
        let mut hasher = blake3::Hasher::new();
        hasher
            .update_reader((&file).take(body_end as u64))
            .map_err(|error| io_error(path, error))?;
        if hasher.finalize().as_bytes() != &bytes[body_end..] {
            return Err(run_error(path, "content does not match its BLAKE3 hash"));
        }
        let count =
            u64::from_le_bytes(bytes[body_end - 8..body_end].try_into().unwrap_or_default());
        let records = (bytes.len() - HEADER_SIZE - FOOTER_SIZE) as u64;
        if !records.is_multiple_of(RECORD_SIZE as u64) || records / RECORD_SIZE as u64 != count {
            return Err(run_error(
                path,
                format!("{count} records announced in {records} bytes"),
            ));
        }
        Ok(Run {
            path: path.to_path_buf(),
            sequence,
            map,
            count: count as usize,
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

    fn record(&self, position: usize) -> &[u8] {
        let start = HEADER_SIZE + position * RECORD_SIZE;
        &self.map[start..start + RECORD_SIZE]
    }

    /// The location this run lists for `id`.
    ///
    /// Ids are BLAKE3 hashes, spread evenly over their range, so the first
    /// probes guess the place from where the id's leading bytes fall
    /// between the bounds found so far (interpolation), which lands within
    /// a few records in two or three probes where bisecting a run of
    /// 100,000 records takes 17, each on another page. Bisection takes over
    /// after [`GUESSES`] probes, so a run of ids that are not spread evenly
    /// still costs no more than a bisection and a few probes.
    pub fn lookup(&self, id: &Id) -> Result<Option<Located>> {
        let target = leading_key(&id.0);
        // Every record in low..high lies, by its leading key, within
        // low_key..=high_key.
        let (mut low, mut high) = (0, self.count);
        let (mut low_key, mut high_key) = (0u64, u64::MAX);
        let mut probes = 0;
        while low < high {
            let middle = if probes < GUESSES {
                low + guess(target - low_key, high_key - low_key, high - low)
            } else {
                low + (high - low) / 2
            };
            probes += 1;
            let record = self.record(middle);
            match record[..32].cmp(&id.0[..]) {
                std::cmp::Ordering::Less => {
                    low = middle + 1;
                    low_key = leading_key(record);
                }
                std::cmp::Ordering::Greater => {
                    high = middle;
                    high_key = leading_key(record);
                }
                std::cmp::Ordering::Equal => {
                    return decode_record(record).map(Some).ok_or_else(|| {
                        run_error(&self.path, format!("undecodable entry for blob {id}"))
                    });
                }
            }
        }
        Ok(None)
    }
}

/// Interpolation probes a lookup makes before it bisects.
const GUESSES: u32 = 4;

/// The first eight bytes of an id (or of a record, which starts with
/// one), as a number that orders as the id does.
fn leading_key(bytes: &[u8]) -> u64 {
    let mut leading = [0u8; 8];
    leading.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(leading)
}

/// Where among `count` records (at least one) a key `offset` above the
/// range's lowest key should lie, when the range spans `span` keys:
/// always less than `count`.
fn guess(offset: u64, span: u64, count: usize) -> usize {
    let place = u128::from(offset) * count as u128 / (u128::from(span) + 1);
    (place as usize).min(count - 1)
}

/// Merges two runs into run `sequence`; where both list an id, `newer`
/// wins unless only `older`'s is vouched. Streams both, so memory stays
/// flat whatever their size.
pub fn merge(directory: &Path, sequence: u64, older: &Run, newer: &Run) -> Result<Run> {
    let mut writer = RunWriter::create(directory, sequence)?;
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

/// A run's records in order, read through a buffer rather than through
/// its mapping: a merge reads every record once, and pages read through
/// the mapping would stay resident in this process as long as the run is
/// open (at 10 M chunks held, merging the largest runs mapped 1.2 GB).
struct Records {
    path: PathBuf,
    reader: BufReader<std::io::Take<File>>,
    left: usize,
    current: Option<[u8; RECORD_SIZE]>,
}

impl Records {
    fn of(run: &Run) -> Result<Records> {
        // Opened again, for an offset of its own; the file is never
        // modified after it is written (see the mapping in `Run::open`).
        let mut file = File::open(&run.path).map_err(|error| io_error(&run.path, error))?;
        file.seek(SeekFrom::Start(HEADER_SIZE as u64))
            .map_err(|error| io_error(&run.path, error))?;
        let body = (run.count * RECORD_SIZE) as u64;
        let mut records = Records {
            path: run.path.clone(),
            reader: BufReader::with_capacity(1 << 20, file.take(body)),
            left: run.count,
            current: None,
        };
        records.advance()?;
        Ok(records)
    }

    /// Moves to the next record; `current` is `None` after the last.
    fn advance(&mut self) -> Result<()> {
        self.current = if self.left == 0 {
            None
        } else {
            let mut record = [0u8; RECORD_SIZE];
            self.reader
                .read_exact(&mut record)
                .map_err(|error| io_error(&self.path, error))?;
            self.left -= 1;
            Some(record)
        };
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

        let mut flipped = good.clone();
        flipped[HEADER_SIZE + 40] ^= 1;
        fs::write(&path, &flipped).unwrap();
        let error = Run::open(&path, 1).err().unwrap().to_string();
        assert!(
            error.contains("hash") && error.contains(&run_name(1)),
            "{error}"
        );

        fs::write(&path, &good[..good.len() - RECORD_SIZE]).unwrap();
        assert!(Run::open(&path, 1).is_err());
        fs::write(&path, b"short").unwrap();
        assert!(Run::open(&path, 1).is_err());
        fs::write(&path, &good).unwrap();
        assert_eq!(Run::open(&path, 1).unwrap().len(), 100);
    }

    /// Resident bytes of this process's mappings of `path`, from
    /// /proc/self/smaps (Linux).
    #[cfg(target_os = "linux")]
    fn resident_bytes_mapped_from(path: &Path) -> Option<u64> {
        let smaps = fs::read_to_string("/proc/self/smaps").unwrap();
        let wanted = path.to_str().unwrap();
        let mut inside = false;
        let mut resident = None;
        for line in smaps.lines() {
            // A mapping's header line starts with its address range.
            if line.split_whitespace().next().is_some_and(|first| {
                first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
            }) {
                inside = line.ends_with(wanted);
            } else if inside && let Some(kib) = line.strip_prefix("Rss:") {
                let kib: u64 = kib.trim().trim_end_matches("kB").trim().parse().unwrap();
                resident = Some(resident.unwrap_or(0) + kib * 1024);
            }
        }
        resident
    }

    /// Opening checks the whole run's hash, but a lookup touches only a
    /// few pages: the check must not leave every page of a run mapped into
    /// the process (at 10 M chunks held, 1.2 GB of resident memory in
    /// every command that opens the cache).
    #[cfg(target_os = "linux")]
    #[test]
    fn opening_a_run_leaves_its_pages_out_of_the_process() {
        let directory = tempfile::tempdir().unwrap();
        let listed = entries(200_000, b"pack");
        let run = Run::write(directory.path(), 3, listed.clone()).unwrap();
        let path = run.path().to_path_buf();
        drop(run);
        let length = fs::metadata(&path).unwrap().len();
        let run = Run::open(&path, 3).unwrap();
        assert_eq!(run.lookup(&listed[17].0).unwrap(), Some(listed[17].1));
        let resident = resident_bytes_mapped_from(&path).expect("the run is mapped");
        // Its header, footer and probed pages are resident, so the count
        // is real. The file is 24 MB; checked through the mapping, all of
        // it was resident. The kernel maps a window (64 KiB, or a large
        // folio) around each page a lookup probes: under 1 MB here.
        assert!(
            resident > 0 && resident < length / 4,
            "{resident} of the run's {length} bytes resident after opening it"
        );
    }

    /// A run file holding `records` as they are, counted and hashed as a
    /// writer would: what a hostile local user could leave in the cache
    /// (damage the hash misses is the same), to be opened and searched.
    fn run_file_of(records: &[u8]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(records);
        bytes.extend_from_slice(&((records.len() / RECORD_SIZE) as u64).to_le_bytes());
        let hash = blake3::hash(&bytes);
        bytes.extend_from_slice(hash.as_bytes());
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
