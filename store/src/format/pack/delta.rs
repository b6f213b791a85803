//! Delta-encoded blobs: one zstd frame compressed with another blob's
//! content (its *base*) as the prefix, so that a chunk that differs from
//! its base in a few bytes is stored as little more than those bytes
//! (docs/FORMAT.md section 7.1).
//!
//! Owns the encoding of a delta, the bound on chains of deltas and the
//! rule for when a delta saves enough. Never fetches a base (the caller
//! hands it over, checked against its id), never decides which blob is a
//! candidate base, and never trusts a frame's declared size beyond the
//! length the entry records.

use std::cell::RefCell;
use std::io;
use zstd::zstd_safe::{self, CCtx, CParameter, DCtx, get_frame_content_size};

/// The most bases one blob's content may need fetched: a delta's base may
/// itself be a delta, whose base must then be stored whole. Two lets one
/// night's chunk be a patch against the night before, itself a patch
/// against a whole chunk, while a restore never reads more than three
/// stored forms for one chunk. A writer whose natural base would make a
/// longer chain patches against that chain's whole root instead.
pub const MAX_CHAIN: usize = 2;

/// A delta is kept only when it is at most this share (in percent) of
/// what storing the blob whole would take: every delta costs a restore a
/// base fetch and a prefix load, so a small saving is not worth it.
/// Measured on in-place rewritten float vectors and SQL dumps (docs/
/// PERFORMANCE.md, "Delta-encoded chunks: parameters"): changed chunks
/// that resemble their base patch to 2–20% of their compressed size, those
/// that do not to 90% or more, so the cut is not sensitive anywhere near
/// here.
pub const WORTH_PERCENT: usize = 60;

/// A delta of at most this share (in percent) of the blob's raw length is
/// kept without compressing the blob whole to compare: for the delta to
/// lose against [`WORTH_PERCENT`], the blob would have to compress more
/// than [`WORTH_PERCENT`] / this times (6×) on its own. On the
/// real-applications workload's next night, of the changed chunks whose
/// patch is 3–10% of their length (3,550 of 16,870), 88 compress that well
/// alone: keeping their patches instead did not measurably grow the night,
/// while the comparisons skipped were three fifths of those made (docs/
/// PERFORMANCE.md, "Delta-encoded chunks: a next night's CPU"). At 3% the
/// rule had first cut that night's CPU by a fifth ("cost of reading and
/// writing them").
pub const CLEARLY_WORTH_PERCENT: usize = 10;

/// Blobs smaller than this are never delta-encoded: a patch's frame header
/// and the base fetch cost more than they could save.
pub const MIN_DELTA_INPUT: usize = 512;

/// Whether a delta of `delta` bytes is worth keeping over a whole blob
/// stored in `whole` bytes.
pub fn worth_it(delta: usize, whole: usize) -> bool {
    delta * 100 <= whole * WORTH_PERCENT
}

/// Whether a delta of `delta` bytes could be worth keeping at all for a
/// blob of `raw` bytes: a blob is never stored whole in more than its raw
/// length (one that does not compress is stored as it is), so a delta
/// this does not allow loses to any whole form, and the whole compression
/// need not be made to know it.
pub fn could_be_worth_it(delta: usize, raw: usize) -> bool {
    worth_it(delta, raw)
}

/// Whether a delta of `delta` bytes is small enough against the blob's
/// `raw` length to be kept without comparing it to the whole blob's
/// compression ([`CLEARLY_WORTH_PERCENT`]).
pub fn clearly_worth_it(delta: usize, raw: usize) -> bool {
    delta * 100 <= raw * CLEARLY_WORTH_PERCENT
}

fn zstd_error(what: &str, code: usize) -> io::Error {
    io::Error::other(format!("{what}: {}", zstd_safe::get_error_name(code)))
}

thread_local! {
    /// This thread's context for patches, kept from one to the next: a
    /// fresh one per patch (allocating zstd's working memory, and the page
    /// faults of touching it) was nearly a tenth of what a patch cost. It never
    /// holds a base between calls (see [`compress`]).
    static PATCHER: RefCell<Option<CCtx<'static>>> = const { RefCell::new(None) };
}

/// `raw` compressed at `level` with `base` as its prefix. The frame records
/// its content size, which a reader checks before allocating.
pub fn compress(raw: &[u8], base: &[u8], level: i32) -> io::Result<Vec<u8>> {
    PATCHER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let context = match slot.as_mut() {
            Some(context) => context,
            None => slot.insert(
                CCtx::try_create()
                    .ok_or_else(|| io::Error::other("zstd: no memory for a context"))?,
            ),
        };
        // SAFETY: zstd keeps a pointer to the prefix, which the context's
        // type would tie to the context's whole ('static) life. The guard
        // below drops that pointer (a parameter reset removes any prefix,
        // whether or not the frame was made) before this call returns or
        // unwinds, while `base` is still borrowed, so the context never
        // reads the base after this call.
        let base: &'static [u8] = unsafe { std::slice::from_raw_parts(base.as_ptr(), base.len()) };
        let guard = Forget(context);
        patch(&mut *guard.0, raw, base, level)
    })
}

/// Takes the prefix (and every parameter) out of a kept context when
/// dropped, so no pointer into a caller's base outlives the call.
struct Forget<'c>(&'c mut CCtx<'static>);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        // Resetting the session first makes the parameter reset possible
        // after a frame that failed part way; a reset that still failed
        // would leave the prefix, so the context is then replaced.
        if self
            .0
            .reset(zstd_safe::ResetDirective::SessionAndParameters)
            .is_err()
        {
            *self.0 = CCtx::create();
        }
    }
}

/// One patch made with `context`, whose parameters are all at their
/// defaults.
fn patch(
    context: &mut CCtx<'static>,
    raw: &[u8],
    base: &'static [u8],
    level: i32,
) -> io::Result<Vec<u8>> {
    context
        .set_parameter(CParameter::CompressionLevel(level))
        .map_err(|code| zstd_error("zstd level", code))?;
    context
        .set_parameter(CParameter::ContentSizeFlag(true))
        .map_err(|code| zstd_error("zstd content size", code))?;
    // The whole base must stay within the match window, or the patch
    // misses it: a window of at least base plus raw, up to zstd's limit.
    let needed = (base.len() + raw.len()).max(1).next_power_of_two();
    let window_log = needed.trailing_zeros().clamp(10, 27);
    context
        .set_parameter(CParameter::WindowLog(window_log))
        .map_err(|code| zstd_error("zstd window", code))?;
    context
        .ref_prefix(base)
        .map_err(|code| zstd_error("zstd prefix", code))?;
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(raw.len()));
    context
        .compress2(&mut out, raw)
        .map_err(|code| zstd_error("zstd", code))?;
    Ok(out)
}

thread_local! {
    /// The context deltas are decompressed with on this thread; it keeps
    /// only zstd's working memory from one delta to the next.
    static DELTA_CONTEXT: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

/// Whether zstd reads `base`, given as a dictionary, as raw content (the
/// prefix the writer compressed against): unless it starts with zstd's
/// dictionary magic, which makes zstd parse it as a dictionary with
/// entropy tables. Such a base (a chunk of a zstd dictionary file) is
/// given as a prefix instead, which is always raw content.
fn base_reads_as_raw_content(base: &[u8]) -> bool {
    base.len() < 8 || !base.starts_with(&zstd_safe::MAGIC_DICTIONARY.to_le_bytes())
}

/// The content of a delta frame decompressed against `base`, which must
/// declare exactly `raw_length` bytes (checked before anything is
/// allocated for it).
pub fn decompress(stored: &[u8], base: &[u8], raw_length: usize) -> io::Result<Vec<u8>> {
    match get_frame_content_size(stored) {
        Ok(Some(declared)) if declared == raw_length as u64 => {}
        Ok(Some(declared)) => {
            return Err(io::Error::other(format!(
                "the delta declares {declared} bytes, the blob is recorded as {raw_length}"
            )));
        }
        _ => return Err(io::Error::other("the delta does not declare its size")),
    }
    let mut out = Vec::with_capacity(raw_length);
    if base_reads_as_raw_content(base) {
        // The base given as a raw-content dictionary for this one call: the
        // same history as a prefix, on this thread's context, kept from
        // delta to delta (a context made for each one, with its prefix's
        // dictionary, was 3% of a restore of deltas, in `ZSTD_createDCtx`).
        // One-shot decompression writes into `out` directly, bounded by its
        // capacity, so no window size is enforced or allocated.
        DELTA_CONTEXT.with(|cell| {
            let mut slot = cell.borrow_mut();
            let context = slot.get_or_insert_with(DCtx::create);
            context
                .decompress_using_dict(&mut out, stored, base)
                .map_err(|code| zstd_error("zstd", code))
        })?;
    } else {
        let mut context = DCtx::create();
        // Up to zstd's 2 GiB window: the writer sized it by base and blob,
        // both bounded by the blob limit, and the output is bounded above.
        context
            .set_parameter(zstd_safe::DParameter::WindowLogMax(31))
            .map_err(|code| zstd_error("zstd window", code))?;
        context
            .ref_prefix(base)
            .map_err(|code| zstd_error("zstd prefix", code))?;
        context
            .decompress(&mut out, stored)
            .map_err(|code| zstd_error("zstd", code))?;
    }
    if out.len() != raw_length {
        return Err(io::Error::other(format!(
            "the delta decompressed to {} bytes, expected {raw_length}",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors(seed: u64, length: usize) -> Vec<u8> {
        let mut state = seed | 1;
        (0..length / 4)
            .flat_map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state % 2000) as f32 / 1000.0 - 1.0).to_le_bytes()
            })
            .collect()
    }

    #[test]
    fn a_small_change_patches_small_and_decodes_back() {
        let base = vectors(7, 16 * 1024);
        let mut changed = base.clone();
        for at in [100, 5000, 9000, 15000] {
            changed[at] ^= 0x5a;
        }
        let delta = compress(&changed, &base, 3).unwrap();
        let whole = zstd::bulk::compress(&changed, 3).unwrap();
        assert!(
            delta.len() * 10 < whole.len(),
            "{} vs {}",
            delta.len(),
            whole.len()
        );
        assert!(worth_it(delta.len(), whole.len()));
        // Four changed bytes in 16 KiB: kept without the whole compression.
        assert!(clearly_worth_it(delta.len(), changed.len()));
        assert!(!clearly_worth_it(whole.len(), changed.len()));
        assert_eq!(decompress(&delta, &base, changed.len()).unwrap(), changed);
    }

    /// The thread's kept context leaves nothing behind: a patch made after
    /// others (with a larger window, at another level) is the same frame a fresh
    /// thread makes, and decodes against its own base only.
    #[test]
    fn a_kept_context_patches_as_a_fresh_one() {
        let base = vectors(7, 16 * 1024);
        let mut changed = base.clone();
        changed[300] ^= 0x11;
        let fresh = std::thread::spawn({
            let (changed, base) = (changed.clone(), base.clone());
            move || compress(&changed, &base, 3).unwrap()
        })
        .join()
        .unwrap();
        // Before it on this thread: a larger window, another level.
        let large = vectors(9, 256 * 1024);
        compress(&large[1..], &large, 9).unwrap();
        let kept = compress(&changed, &base, 3).unwrap();
        assert_eq!(kept, fresh);
        // Without a prefix given, the last call's base is not used.
        let alone = compress(&changed, &[], 3).unwrap();
        assert!(alone.len() > kept.len() * 10);
        assert_eq!(decompress(&alone, &[], changed.len()).unwrap(), changed);
    }

    #[test]
    fn deltas_decode_one_after_another_on_one_context_and_against_a_dictionary_like_base() {
        // Several bases in turn on this thread's reused context: each
        // delta decodes against its own base only.
        for seed in 1..5 {
            let base = vectors(seed, 4096 * seed as usize);
            let mut changed = base.clone();
            changed[seed as usize * 7] ^= 0x11;
            let delta = compress(&changed, &base, 3).unwrap();
            assert_eq!(decompress(&delta, &base, changed.len()).unwrap(), changed);
        }
        // A base that starts with zstd's dictionary magic (a chunk of a
        // zstd dictionary file) is read as raw content too.
        let mut base = vectors(9, 8 * 1024);
        base[..4].copy_from_slice(&zstd_safe::MAGIC_DICTIONARY.to_le_bytes());
        assert!(!base_reads_as_raw_content(&base));
        let mut changed = base.clone();
        changed[5000] ^= 0x22;
        let delta = compress(&changed, &base, 3).unwrap();
        assert_eq!(decompress(&delta, &base, changed.len()).unwrap(), changed);
        // Given to zstd as a dictionary, it would not decode to the blob.
        let mut out = Vec::with_capacity(changed.len());
        let as_dictionary = DCtx::create().decompress_using_dict(&mut out, &delta, &base);
        assert!(as_dictionary.is_err() || out != changed);
    }

    #[test]
    fn a_wrong_base_or_length_never_yields_the_content() {
        let base = vectors(7, 8 * 1024);
        let mut changed = base.clone();
        changed[10] ^= 1;
        let delta = compress(&changed, &base, 3).unwrap();
        let other = vectors(8, 8 * 1024);
        // Against another base the frame decodes to other bytes or fails;
        // the caller's id check is what catches the former.
        if let Ok(decoded) = decompress(&delta, &other, changed.len()) {
            assert_ne!(decoded, changed);
        }
        assert!(decompress(&delta, &base, changed.len() + 1).is_err());
    }
}
