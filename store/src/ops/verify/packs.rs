//! Which packs a data check reads, and reading one: its hash against its
//! name, its header against the index, every blob against its id, in
//! bounded windows. Never writes anything.

use super::{DataCheck, Finding, FindingKind, Subset, finding};
use crate::error::Result;
use crate::format::index::BlobLocation;
use crate::format::pack::{BlobEntry, BlobKind};
use crate::id::Id;
use crate::repository::{AHEAD_BYTES, Repository};
use std::collections::{HashMap, HashSet};

/// A stable, per-run random order: BLAKE3 of a fresh seed and the pack id.
fn shuffled(packs: &[Id]) -> Result<Vec<Id>> {
    let seed: [u8; 32] = crate::os::random::random_bytes()?;
    let mut keyed: Vec<(Id, Id)> = packs
        .iter()
        .map(|pack| (Id(*blake3::keyed_hash(&seed, &pack.0).as_bytes()), *pack))
        .collect();
    keyed.sort();
    Ok(keyed.into_iter().map(|(_, pack)| pack).collect())
}

pub(super) fn choose_packs(
    packs: &[Id],
    sizes: &HashMap<Id, u64>,
    check: DataCheck,
) -> Result<Vec<Id>> {
    Ok(match check {
        DataCheck::None => Vec::new(),
        DataCheck::All => packs.to_vec(),
        DataCheck::Subset(Subset::Slice { n, t }) => packs
            .iter()
            .filter(|pack| {
                let mut low = [0u8; 8];
                low.copy_from_slice(&pack.0[..8]);
                u64::from_le_bytes(low) % t == n - 1
            })
            .copied()
            .collect(),
        DataCheck::Subset(Subset::Percent(percent)) => {
            let count = ((packs.len() as f64) * percent / 100.0).ceil() as usize;
            shuffled(packs)?
                .into_iter()
                .take(count.min(packs.len()))
                .collect()
        }
        DataCheck::Subset(Subset::Bytes(budget)) => {
            let mut chosen = Vec::new();
            let mut total = 0u64;
            for pack in shuffled(packs)? {
                let size = sizes.get(&pack).copied().unwrap_or(0);
                if !chosen.is_empty() && total + size > budget {
                    continue;
                }
                total += size;
                chosen.push(pack);
            }
            chosen
        }
    })
}

pub(super) struct PackReading {
    pub(super) blobs_read: u64,
    pub(super) bytes_read: u64,
    pub(super) pack_findings: Vec<Finding>,
    pub(super) bad_blobs: Vec<(Id, Finding)>,
    /// Blobs of `hinted` the pack's header does not hold: an unvouched
    /// index file's false claim, not damage to the pack.
    pub(super) false_hints: Vec<Id>,
}

/// The finding for a blob whose stored bytes failed their check.
fn bad_blob(pack: &Id, entry: &BlobEntry, why: String) -> (Id, Finding) {
    let (kind, label) = match entry.kind {
        BlobKind::Data => (FindingKind::CorruptChunk, "chunk"),
        BlobKind::Tree => (FindingKind::CorruptTree, "tree"),
    };
    (
        entry.id,
        finding(kind, format!("{label} {} in pack {pack}", entry.id), why),
    )
}

/// Where a pack's blobs (`in_order`, as a scan visits them) are cut into
/// groups whose deltas' bases are read ahead together, each group's deltas
/// a quarter of [`AHEAD_BYTES`] in raw size (which stands for their
/// bases', two levels deep): two packs read at once, each with its scan
/// window and its bases' spans in flight, held a verify over S3 to 129-130
/// MiB where groups of half peaked at 156-159 (reading base by base: 110,
/// and 59 s instead of 4-5.5).
fn base_groups(in_order: &[BlobEntry]) -> Vec<(usize, usize)> {
    let mut groups = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (at, entry) in in_order.iter().enumerate() {
        if entry.base.is_some() {
            bytes += u64::from(entry.raw_length);
        }
        if bytes >= AHEAD_BYTES / 4 {
            groups.push((start, at + 1));
            (start, bytes) = (at + 1, 0);
        }
    }
    if start < in_order.len() {
        groups.push((start, in_order.len()));
    }
    groups
}

/// Reads pack `pack` (`size` bytes, as listed and indexed) from start to
/// end in bounded windows (`Repository::scan_pack`): its hash against its
/// name, its header against the index, every blob of `blobs` against its
/// id. The pack is never held whole. `hinted`: blobs whose listing in
/// this pack comes only from index files not vouched for (FORMAT.md
/// section 9). `window`: the buffer the scan reads into, reused from pack
/// to pack.
pub(super) fn read_pack(
    repository: &Repository,
    pack: &Id,
    size: u64,
    blobs: &[&BlobLocation],
    hinted: &HashSet<Id>,
    window: &mut Vec<u8>,
) -> PackReading {
    let mut reading = PackReading {
        blobs_read: 0,
        bytes_read: 0,
        pack_findings: Vec::new(),
        bad_blobs: Vec::new(),
        false_hints: Vec::new(),
    };
    let object = format!("pack {pack}");
    let mut blobs: Vec<BlobLocation> = blobs.iter().map(|location| **location).collect();
    match repository.read_pack_header(pack, size) {
        Ok(header) => {
            let listed: HashSet<_> = header.blobs.iter().collect();
            let (false_hints, kept): (Vec<_>, Vec<_>) = blobs.into_iter().partition(|location| {
                hinted.contains(&location.entry.id) && !listed.contains(&location.entry)
            });
            reading.false_hints = false_hints
                .iter()
                .map(|location| location.entry.id)
                .collect();
            blobs = kept;
            if blobs
                .iter()
                .any(|location| !listed.contains(&location.entry))
            {
                reading.pack_findings.push(finding(
                    FindingKind::CorruptPack,
                    object.clone(),
                    "its header disagrees with the index".into(),
                ));
            }
        }
        Err(error) => reading.pack_findings.push(finding(
            FindingKind::CorruptPack,
            object.clone(),
            error.to_string(),
        )),
    }
    let entries: Vec<BlobEntry> = blobs.iter().map(|location| location.entry).collect();
    let mut decoder = repository.blob_decoder();
    let mut visited = 0u64;
    let mut bad_blobs = Vec::new();
    // From object storage, the bases of the pack's deltas are read ahead a
    // group of deltas at a time (`Repository::read_bases_ahead`), in the
    // order the scan visits them: fetched base by base, each was a round
    // trip (59 s to verify the real applications' repository over S3).
    // Only where a read is a round trip, and the pack holds deltas.
    let reads_ahead =
        repository.backend().parallelism() > 1 && entries.iter().any(|entry| entry.base.is_some());
    let mut in_order = Vec::new();
    if reads_ahead {
        in_order.clone_from(&entries);
        in_order.sort_by_key(|entry| (entry.offset, entry.frame_offset));
    }
    let groups = base_groups(&in_order);
    let mut group = 0;
    let scan = repository.scan_pack_with(pack, size, &entries, window, &mut |entry, stored| {
        if let Some(&(start, end)) = groups.get(group)
            && visited as usize == start
        {
            group += 1;
            decoder = match repository.read_bases_ahead(&in_order[start..end]) {
                Some(ahead) => repository.blob_decoder_holding(0, ahead.held()),
                None => repository.blob_decoder(),
            };
        }
        visited += 1;
        let result = stored.and_then(|stored| {
            decoder
                .decode_sharing(entry, stored, pack, true)
                .map(|_| ())
        });
        if let Err(error) = result {
            bad_blobs.push(bad_blob(pack, entry, error.to_string()));
        }
    });
    reading.blobs_read = visited;
    reading.bad_blobs = bad_blobs;
    match scan {
        Ok(scan) => {
            reading.bytes_read = scan.bytes_read;
            if !scan.matches_name {
                reading.pack_findings.push(finding(
                    FindingKind::CorruptPack,
                    object,
                    "content does not match its name (BLAKE3 hash)".into(),
                ));
            }
        }
        Err(error) => {
            reading.pack_findings.push(finding(
                FindingKind::CorruptPack,
                object,
                error.to_string(),
            ));
            // Blobs the scan did not reach: in pack order, the last ones.
            let mut unread = entries;
            unread.sort_by_key(|entry| (entry.offset, entry.frame_offset));
            for entry in unread.iter().skip(visited as usize) {
                reading
                    .bad_blobs
                    .push(bad_blob(pack, entry, "its pack cannot be read".into()));
            }
        }
    }
    reading
}
