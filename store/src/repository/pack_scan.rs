//! Reading a whole pack without holding it whole: from its first byte to
//! its last in ranged reads of at most [`scan_window`] bytes (stretched to
//! the end of a blob that starts inside), hashing every byte on the way and
//! handing each wanted blob's stored bytes to the caller. Verify and a
//! prune's repack read packs this way, so a pack's size (up to the 1 GiB a
//! config allows, or whatever a planted one claims) never decides what is
//! allocated. Never decodes a blob or judges one: the caller does.

use super::Repository;
use crate::backend::ObjectKind;
use crate::error::{Result, StoreError};
use crate::format::pack::BlobEntry;
use crate::id::Id;

/// The most a scan reads in one request from object storage, a blob that
/// runs past it apart: each request there costs a round trip.
pub const SCAN_WINDOW: u64 = 16 << 20;

/// The same from a backend that answers at once (a local disk, one
/// request at a time): a verify reads a pack per core, and two 16 MiB
/// windows were 30 MiB of a full verify's 87 MiB peak on the
/// real-applications repository (heaptrack), where 4 MiB reads cost
/// nothing measurable in time. 2 MiB since verify keeps each thread's
/// window from pack to pack (`scan_pack_with`): two 4 MiB windows always
/// resident raised a plaintext verify's peak by 2 MiB, and 2 MiB reads
/// cost no more CPU than 4 MiB ones (alternating runs, modelled, real
/// applications and tree, docs/PERFORMANCE.md "verify's CPU").
pub const LOCAL_SCAN_WINDOW: u64 = 2 << 20;

/// The window for a backend of `parallelism` (see [`crate::backend::Backend::parallelism`]).
pub fn scan_window(parallelism: usize) -> u64 {
    if parallelism > 1 {
        SCAN_WINDOW
    } else {
        LOCAL_SCAN_WINDOW
    }
}

/// What a scan found about the pack as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackScan {
    pub bytes_read: u64,
    /// Whether the pack's bytes hash to its name.
    pub matches_name: bool,
}

impl Repository {
    /// Reads pack `pack`, `size` bytes as listed, from start to end, and
    /// calls `visit` once for each of `blobs` (in pack order) with its
    /// stored bytes, or with why they cannot be had (they lie past the
    /// pack's end). A failed read ends the scan with its error; blobs not
    /// visited by then are the caller's to account for.
    pub fn scan_pack(
        &self,
        pack: &Id,
        size: u64,
        blobs: &[BlobEntry],
        visit: &mut dyn FnMut(&BlobEntry, Result<&[u8]>),
    ) -> Result<PackScan> {
        self.scan_pack_with(pack, size, blobs, &mut Vec::new(), visit)
    }

    /// [`Self::scan_pack`], reading every window into `window`: a caller
    /// scanning pack after pack hands the same buffer to each scan, so
    /// that its pages are faulted in once, not once per window (a fresh
    /// 4 MiB buffer per window was 8% of a verify's CPU in the kernel:
    /// mapping, zeroing, unmapping). What `window` holds afterwards is the
    /// last window read; its capacity is the largest window read (a
    /// window stretched to hold a large blob whole included).
    pub fn scan_pack_with(
        &self,
        pack: &Id,
        size: u64,
        blobs: &[BlobEntry],
        window: &mut Vec<u8>,
        visit: &mut dyn FnMut(&BlobEntry, Result<&[u8]>),
    ) -> Result<PackScan> {
        let name = pack.to_hex();
        let mut order: Vec<&BlobEntry> = blobs.iter().collect();
        order.sort_by_key(|entry| (entry.offset, entry.frame_offset));
        let end_of = |entry: &BlobEntry| {
            entry
                .offset
                .checked_add(u64::from(entry.length))
                .filter(|end| *end <= size)
        };
        let past_end = |entry: &BlobEntry| {
            StoreError::corrupt(
                format!("blob {} in pack {pack}", entry.id),
                format!(
                    "lies at {}+{}, past the end of its pack ({size} bytes)",
                    entry.offset, entry.length
                ),
            )
        };
        let window_size = scan_window(self.backend().parallelism());
        let mut hasher = blake3::Hasher::new();
        let mut extra_reads = 0u64;
        let mut next = 0;
        let mut position = 0u64;
        while position < size {
            let window_end = size.min(position.saturating_add(window_size));
            // Stretched to hold whole the blob that crosses the window's
            // end, as blobs lie back to back.
            let end = order[next..]
                .iter()
                .take_while(|entry| entry.offset < window_end)
                .filter_map(|entry| end_of(entry))
                .fold(window_end, u64::max);
            self.backend().read_range_into(
                ObjectKind::Pack,
                &name,
                position,
                end - position,
                window,
            )?;
            let bytes = &window[..];
            hasher.update(bytes);
            while let Some(entry) = order.get(next).filter(|entry| entry.offset < end) {
                next += 1;
                match end_of(entry) {
                    None => visit(entry, Err(past_end(entry))),
                    Some(blob_end) if entry.offset >= position && blob_end <= end => {
                        let from = (entry.offset - position) as usize;
                        visit(entry, Ok(&bytes[from..(blob_end - position) as usize]));
                    }
                    // Overlapping another blob (an index that lies): read
                    // on its own, bounded by its checked length.
                    Some(_) => {
                        let own = self.backend().read_range(
                            ObjectKind::Pack,
                            &name,
                            entry.offset,
                            u64::from(entry.length),
                        )?;
                        extra_reads += own.len() as u64;
                        visit(entry, Ok(&own));
                    }
                }
            }
            position = end;
        }
        for entry in &order[next..] {
            visit(entry, Err(past_end(entry)));
        }
        Ok(PackScan {
            bytes_read: position + extra_reads,
            matches_name: Id(*hasher.finalize().as_bytes()) == *pack,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, MemoryBackend};
    use crate::format::pack::{BlobKind, Compression, PackWriter, decode_blob};
    use std::sync::Arc;

    #[test]
    fn a_pack_is_scanned_in_windows_with_every_blob_whole_and_its_hash_checked() {
        let backend = Arc::new(MemoryBackend::new());
        let (repository, _) = super::super::plaintext_for_tests(backend.clone());
        // Three 7 MiB blobs: every window (4 MiB here, 16 MiB over object
        // storage) ends inside one, and is stretched to its end.
        let contents: Vec<Vec<u8>> = (0..3u8).map(|n| vec![n; 7 << 20]).collect();
        let mut writer = PackWriter::new();
        for content in &contents {
            writer.add(
                BlobKind::Data,
                Id::of(content),
                content.len() as u32,
                Compression::None,
                content,
            );
        }
        let (id, bytes, entries) = writer.finish();
        backend
            .create(ObjectKind::Pack, &id.to_hex(), &bytes)
            .unwrap();
        let size = bytes.len() as u64;
        let mut lying = entries[0];
        lying.offset = size - 4;
        let wanted = [entries[2], entries[0], entries[1], lying];
        let mut seen = Vec::new();
        let scan = repository
            .scan_pack(&id, size, &wanted, &mut |entry, stored| {
                seen.push((
                    entry.offset,
                    stored.and_then(|s| decode_blob(entry, s, &id)).is_ok(),
                ));
            })
            .unwrap();
        assert_eq!(
            scan,
            PackScan {
                bytes_read: size,
                matches_name: true
            }
        );
        assert_eq!(
            seen,
            vec![
                (entries[0].offset, true),
                (entries[1].offset, true),
                (entries[2].offset, true),
                (size - 4, false)
            ]
        );
        // The same window buffer, handed from this scan to the scan of a
        // smaller pack, holds that pack's bytes alone: its blobs and its
        // hash are its own.
        let mut window = Vec::new();
        let mut scan_with = |id: &Id, size: u64, entries: &[BlobEntry]| {
            let mut decoded = Vec::new();
            let scan = repository
                .scan_pack_with(id, size, entries, &mut window, &mut |entry, stored| {
                    decoded.push(stored.and_then(|s| decode_blob(entry, s, id)).unwrap());
                })
                .unwrap();
            (scan, decoded)
        };
        let (scan, decoded) = scan_with(&id, size, &entries);
        assert!(scan.matches_name);
        assert_eq!(decoded, contents);
        let small = b"a blob far smaller than the window before".to_vec();
        let mut writer = PackWriter::new();
        writer.add(
            BlobKind::Data,
            Id::of(&small),
            small.len() as u32,
            Compression::None,
            &small,
        );
        let (small_id, small_bytes, small_entries) = writer.finish();
        backend
            .create(ObjectKind::Pack, &small_id.to_hex(), &small_bytes)
            .unwrap();
        let (scan, decoded) = scan_with(&small_id, small_bytes.len() as u64, &small_entries);
        assert_eq!(
            scan,
            PackScan {
                bytes_read: small_bytes.len() as u64,
                matches_name: true
            }
        );
        assert_eq!(decoded, vec![small]);
        // A listed size that is not the pack's: the hash no longer matches
        // (or the read fails), never a silent pass.
        let short = repository.scan_pack(&id, size - 1, &[], &mut |_, _| {});
        assert!(short.is_ok_and(|scan| !scan.matches_name));
    }
}
