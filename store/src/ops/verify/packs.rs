//! Which packs a data check reads, and reading one: its hash against its
//! name, its header against the index, every blob against its id. Never
//! writes anything.

use super::{DataCheck, Finding, FindingKind, Subset, finding};
use crate::backend::ObjectKind;
use crate::error::Result;
use crate::format::index::BlobLocation;
use crate::format::pack::{BlobDecoder, parse_pack};
use crate::id::Id;
use crate::repository::Repository;
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

/// `hinted`: blobs whose listing in this pack comes only from index files
/// not vouched for (FORMAT.md section 9).
pub(super) fn read_pack(
    repository: &Repository,
    pack: &Id,
    blobs: &[BlobLocation],
    hinted: &HashSet<Id>,
) -> PackReading {
    let mut reading = PackReading {
        blobs_read: 0,
        bytes_read: 0,
        pack_findings: Vec::new(),
        bad_blobs: Vec::new(),
        false_hints: Vec::new(),
    };
    let object = format!("pack {pack}");
    let bytes = match repository.backend().read(ObjectKind::Pack, &pack.to_hex()) {
        Ok(bytes) => bytes,
        Err(error) => {
            reading.pack_findings.push(finding(
                FindingKind::CorruptPack,
                object,
                error.to_string(),
            ));
            for location in blobs {
                reading.bad_blobs.push((
                    location.entry.id,
                    finding(
                        FindingKind::CorruptChunk,
                        format!(
                            "{:?} blob {} in pack {pack}",
                            location.entry.kind, location.entry.id
                        )
                        .to_lowercase(),
                        "its pack cannot be read".into(),
                    ),
                ));
            }
            return reading;
        }
    };
    reading.bytes_read = bytes.len() as u64;
    if Id::of(&bytes) != *pack {
        reading.pack_findings.push(finding(
            FindingKind::CorruptPack,
            object.clone(),
            "content does not match its name (BLAKE3 hash)".into(),
        ));
    }
    let mut blobs = blobs.to_vec();
    match parse_pack(&bytes, pack) {
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
    // In pack order, so that each shared frame is decompressed once.
    blobs.sort_by_key(|location| location.entry.offset);
    let mut decoder = BlobDecoder::default();
    for location in &blobs {
        let entry = &location.entry;
        reading.blobs_read += 1;
        let start = entry.offset as usize;
        let stored = bytes.get(start..start.saturating_add(entry.length as usize));
        let result = match stored {
            Some(stored) => decoder
                .decode_sharing(entry, stored, pack, true)
                .map(|_| ()),
            None => Err(crate::StoreError::corrupt(
                format!("blob {}", entry.id),
                "lies past the end of its pack",
            )),
        };
        if let Err(error) = result {
            let kind = match entry.kind {
                crate::format::pack::BlobKind::Data => "chunk",
                crate::format::pack::BlobKind::Tree => "tree",
            };
            reading.bad_blobs.push((
                entry.id,
                finding(
                    if kind == "tree" {
                        FindingKind::CorruptTree
                    } else {
                        FindingKind::CorruptChunk
                    },
                    format!("{kind} {} in pack {pack}", entry.id),
                    error.to_string(),
                ),
            ));
        }
    }
    reading
}
