//! zstd contexts kept per thread and reused from blob to blob.
//!
//! Owns the reuse of zstd's compression and decompression state. A blob is
//! small (a 4 KiB database page, a 16 KiB chunk), and setting up a fresh
//! context for each one (allocating and clearing its tables) cost more than
//! compressing it. Never decides whether a blob is compressed, and never
//! keeps data a later call reads: only zstd's working memory survives, and
//! a buffer for planes that every call overwrites before it reads it.

use super::{FRAME_TARGET, planes};
use std::cell::RefCell;
use std::io;
use zstd::bulk::{Compressor, Decompressor};

thread_local! {
    /// One compressor per level used on this thread (the sample check's
    /// and the repository's), each keeping its tables.
    static COMPRESSORS: RefCell<Vec<(i32, Compressor<'static>)>> = const { RefCell::new(Vec::new()) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
    /// The planes of the blob being decompressed, before they are merged:
    /// kept for the next blob, so that its pages are not zeroed anew each
    /// time (up to [`KEPT_PLANES`]; a larger buffer is freed).
    static JOINED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The largest planes buffer a thread keeps: a shared frame holds a little
/// under twice [`FRAME_TARGET`], and a chunk of the default profile at most
/// 64 KiB; anything larger is rare enough to pay for its own buffer.
const KEPT_PLANES: usize = 2 * FRAME_TARGET;

/// `data` compressed at `level`, as `zstd::bulk::compress` would.
pub fn compress(data: &[u8], level: i32) -> io::Result<Vec<u8>> {
    COMPRESSORS.with(|cell| {
        let mut compressors = cell.borrow_mut();
        let position = match compressors.iter().position(|(used, _)| *used == level) {
            Some(position) => position,
            None => {
                compressors.push((level, Compressor::new(level)?));
                compressors.len() - 1
            }
        };
        compressors[position].1.compress(data)
    })
}

/// `data` decompressed, refusing more than `capacity` bytes of output, as
/// `zstd::bulk::decompress` would.
pub fn decompress(data: &[u8], capacity: usize) -> io::Result<Vec<u8>> {
    with_decompressor(|decompressor| decompressor.decompress(data, capacity))
}

/// Runs `work` with this thread's decompressor, made on first use.
fn with_decompressor<T>(
    work: impl FnOnce(&mut Decompressor<'static>) -> io::Result<T>,
) -> io::Result<T> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        match slot.as_mut() {
            Some(decompressor) => work(decompressor),
            None => work(slot.insert(Decompressor::new()?)),
        }
    })
}

/// How many bytes a frame (or a blob's four planes) must decompress to:
/// exactly a blob's recorded `raw_length`, or at most a shared frame's
/// limit (an index entry cannot know the frame's total).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    Exactly(usize),
    AtMost(usize),
}

impl Expected {
    /// Refuses a declared content size that does not fit, before anything
    /// is allocated for it.
    fn check_declared(self, declared: u64) -> io::Result<()> {
        match self {
            Expected::Exactly(length) if declared != length as u64 => Err(invalid(format!(
                "the frame declares {declared} bytes, the blob is recorded as {length}"
            ))),
            Expected::AtMost(limit) if declared > limit as u64 => Err(invalid(format!(
                "the frame declares {declared} bytes, more than {limit}"
            ))),
            _ => Ok(()),
        }
    }

    fn limit(self) -> usize {
        match self {
            Expected::Exactly(length) | Expected::AtMost(length) => length,
        }
    }
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// A whole zstd frame decompressed as `expected` says. The frame's
/// declared content size (cairn always writes it) must fit before the
/// output is allocated, so a frame that claims more than the blob's
/// recorded length costs nothing; a frame without one is decoded as a
/// stream, stopped one byte past the limit, so the output grows only with
/// what the frame really holds.
pub fn decompress_frame(data: &[u8], expected: Expected) -> io::Result<Vec<u8>> {
    let declared = zstd::zstd_safe::get_frame_content_size(data)
        .map_err(|_| invalid("not a zstd frame".into()))?;
    let limit = expected.limit();
    match declared {
        Some(size) => {
            expected.check_declared(size)?;
            decompress(data, size as usize)
        }
        None => {
            let mut content = Vec::new();
            let decoder = zstd::stream::read::Decoder::with_buffer(data)?;
            io::Read::read_to_end(&mut io::Read::take(decoder, limit as u64 + 1), &mut content)?;
            if content.len() > limit {
                return Err(invalid(format!("the frame holds more than {limit} bytes")));
            }
            Ok(content)
        }
    }
}

/// `raw` as its four byte planes (see [`planes`]), each compressed at
/// `level` into a frame of its own, the frames one after another.
pub fn compress_planes(raw: &[u8], level: i32) -> io::Result<Vec<u8>> {
    let planes = planes::split(raw);
    // Room for the four frames at their worst, so the output never grows
    // (and is copied) frame by frame.
    let mut stored = Vec::with_capacity(zstd::zstd_safe::compress_bound(raw.len()) + 4 * 32);
    let mut at = 0;
    for length in planes::plane_lengths(raw.len()) {
        stored.extend_from_slice(&compress(&planes[at..at + length], level)?);
        at += length;
    }
    Ok(stored)
}

/// The bytes `stored` holds as four zstd frames of their planes, as
/// [`compress_planes`] writes them, their total as `expected` says. Each
/// frame must declare its content size, and the four sizes must be the
/// plane lengths of their sum; all is checked before the output is
/// allocated.
pub fn decompress_planes(stored: &[u8], expected: Expected) -> io::Result<Vec<u8>> {
    let mut frames = Vec::with_capacity(4);
    let mut rest = stored;
    for plane in 0..4 {
        let size = zstd::zstd_safe::find_frame_compressed_size(rest)
            .map_err(|_| invalid(format!("plane {plane} is not a whole zstd frame")))?;
        let (frame, after) = rest.split_at(size);
        match zstd::zstd_safe::get_frame_content_size(frame) {
            Ok(Some(declared)) => frames.push((frame, declared)),
            _ => return Err(invalid(format!("plane {plane}'s frame declares no size"))),
        }
        rest = after;
    }
    if !rest.is_empty() {
        return Err(invalid(format!(
            "{} bytes follow the fourth plane",
            rest.len()
        )));
    }
    let total = frames
        .iter()
        .try_fold(0u64, |sum, (_, declared)| sum.checked_add(*declared))
        .ok_or_else(|| invalid("the planes declare more bytes than can be counted".into()))?;
    expected
        .check_declared(total)
        .map_err(|error| invalid(format!("planes: {error}")))?;
    let lengths = planes::plane_lengths(total as usize);
    if frames
        .iter()
        .zip(lengths)
        .any(|((_, declared), length)| *declared != length as u64)
    {
        return Err(invalid(format!(
            "planes of {:?} bytes are not the planes of {total} bytes",
            frames
                .iter()
                .map(|(_, declared)| declared)
                .collect::<Vec<_>>()
        )));
    }
    JOINED.with(|cell| {
        // Another call on this thread (there is none today) gets a buffer
        // of its own rather than a panic.
        let mut kept = cell.try_borrow_mut().ok();
        let mut own = Vec::new();
        let joined = kept.as_deref_mut().unwrap_or(&mut own);
        // Zeroed only where it grows: every byte of the first `total` is
        // written by the planes' frames (each must fill its plane) before
        // it is merged.
        let total = total as usize;
        if joined.len() < total {
            joined.resize(total, 0);
        }
        let planes_bytes = &mut joined[..total];
        let merged = decompress_planes_into(&frames, lengths, planes_bytes)
            .map(|()| planes::merge(planes_bytes));
        if joined.capacity() > KEPT_PLANES {
            *joined = Vec::new();
        }
        merged
    })
}

/// Decompresses each plane's frame into its place in `joined`.
fn decompress_planes_into(
    frames: &[(&[u8], u64)],
    lengths: [usize; 4],
    joined: &mut [u8],
) -> io::Result<()> {
    with_decompressor(|decompressor| {
        let mut at = 0;
        for ((frame, _), length) in frames.iter().zip(lengths) {
            let written = decompressor.decompress_to_buffer(frame, &mut joined[at..at + length])?;
            if written != length {
                return Err(invalid(format!(
                    "a plane decompressed to {written} bytes, expected {length}"
                )));
            }
            at += length;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_contexts_give_what_fresh_ones_give() {
        let text: Vec<u8> = b"pages of a database, rows of a dump; "
            .iter()
            .copied()
            .cycle()
            .take(20_000)
            .collect();
        for level in [1, 3, 1, 19, 3] {
            let reused = compress(&text, level).unwrap();
            assert_eq!(reused, zstd::bulk::compress(&text, level).unwrap());
            assert_eq!(decompress(&reused, text.len()).unwrap(), text);
        }
        let compressed = compress(&text, 3).unwrap();
        assert!(decompress(&compressed, text.len() - 1).is_err());
        assert!(decompress(b"not zstd at all", 1024).is_err());
        // A context that saw an error still works.
        assert_eq!(decompress(&compressed, text.len()).unwrap(), text);
    }

    #[test]
    /// The planes buffer a thread keeps holds the last blob's planes: a
    /// smaller blob after a larger one, or after one refused, must come
    /// back as itself, never with bytes left over.
    fn the_kept_planes_buffer_never_shows_an_earlier_blob() {
        let large = planes::tests::floats(20_000);
        let small: Vec<u8> = planes::tests::floats(700)
            .iter()
            .map(|b| b ^ 0x5a)
            .collect();
        let small_stored = compress_planes(&small, 1).unwrap();
        let large_stored = compress_planes(&large, 1).unwrap();
        let decoded = |stored: &[u8], length: usize| {
            decompress_planes(stored, Expected::Exactly(length)).unwrap()
        };
        assert_eq!(decoded(&large_stored, large.len()), large);
        assert_eq!(decoded(&small_stored, small.len()), small);
        // The fourth plane's frame cut short: refused.
        let mut cut = large_stored.clone();
        cut.truncate(cut.len() - 8);
        assert!(decompress_planes(&cut, Expected::Exactly(large.len())).is_err());
        assert_eq!(decoded(&small_stored, small.len()), small);
        assert_eq!(decoded(&large_stored, large.len()), large);
    }

    #[test]
    fn planes_round_trip_and_refuse_what_does_not_add_up() {
        let raw = planes::tests::floats(5000);
        let odd = &raw[..raw.len() - 3];
        for bytes in [&raw[..], odd, &[][..]] {
            let stored = compress_planes(bytes, 1).unwrap();
            assert_eq!(
                decompress_planes(&stored, Expected::AtMost(bytes.len())).unwrap(),
                bytes
            );
        }
        let stored = compress_planes(&raw, 1).unwrap();
        assert!(
            stored.len() < raw.len() * 95 / 100,
            "{} of {}",
            stored.len(),
            raw.len()
        );
        assert!(decompress_planes(&stored, Expected::AtMost(raw.len() - 1)).is_err());
        // Three frames, or five, or trailing bytes, are refused.
        let first = zstd::zstd_safe::find_frame_compressed_size(&stored).unwrap();
        assert!(decompress_planes(&stored[first..], Expected::AtMost(raw.len())).is_err());
        let mut five = stored.clone();
        five.extend_from_slice(&stored[..first]);
        assert!(decompress_planes(&five, Expected::AtMost(raw.len() * 2)).is_err());
        let mut trailing = stored.clone();
        trailing.push(0);
        assert!(decompress_planes(&trailing, Expected::AtMost(raw.len())).is_err());
        // Frames whose sizes are not the planes of their sum are refused:
        // of 19,997 bytes, the planes hold 5,000, 4,999, 4,999 and 4,999.
        let stored = compress_planes(odd, 1).unwrap();
        let mut frames = Vec::new();
        let mut rest = &stored[..];
        while !rest.is_empty() {
            let size = zstd::zstd_safe::find_frame_compressed_size(rest).unwrap();
            frames.push(&rest[..size]);
            rest = &rest[size..];
        }
        let misplaced = [frames[0], frames[1], frames[2], frames[0]].concat();
        assert!(decompress_planes(&misplaced, Expected::AtMost(raw.len())).is_err());
    }

    #[test]
    fn frames_decode_whole_within_their_limit_with_or_without_a_declared_size() {
        let text = b"frame of several blobs, ".repeat(500);
        let declared = compress(&text, 1).unwrap();
        assert_eq!(
            decompress_frame(&declared, Expected::AtMost(text.len())).unwrap(),
            text
        );
        assert!(decompress_frame(&declared, Expected::AtMost(text.len() - 1)).is_err());
        // A streamed frame does not declare its size.
        let streamed = zstd::stream::encode_all(&text[..], 1).unwrap();
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(&streamed),
            Ok(None)
        ));
        assert_eq!(
            decompress_frame(&streamed, Expected::AtMost(text.len())).unwrap(),
            text
        );
        assert!(decompress_frame(&streamed, Expected::AtMost(text.len() - 1)).is_err());
        assert!(decompress_frame(b"not zstd at all", Expected::AtMost(1024)).is_err());
    }

    /// `frame` with its header rewritten to declare `size` bytes of
    /// content (an 8-byte content size field), its blocks unchanged: what
    /// a zstd bomb's header looks like, without the bomb.
    pub(crate) fn declaring(frame: &[u8], size: u64) -> Vec<u8> {
        let descriptor = frame[4];
        let single_segment = descriptor & 0x20 != 0;
        let dictionary_bytes = [0, 1, 2, 4][usize::from(descriptor & 3)];
        let size_bytes = match descriptor >> 6 {
            0 => usize::from(single_segment),
            1 => 2,
            2 => 4,
            _ => 8,
        };
        let window_bytes = usize::from(!single_segment);
        let kept = 5 + window_bytes + dictionary_bytes;
        let mut rewritten = frame[..kept].to_vec();
        rewritten[4] = descriptor | 0xC0;
        rewritten.extend_from_slice(&size.to_le_bytes());
        rewritten.extend_from_slice(&frame[kept + size_bytes..]);
        rewritten
    }

    #[test]
    fn a_frame_must_declare_exactly_the_recorded_length_before_anything_is_allocated() {
        let text = b"twelve bytes".to_vec();
        let frame = compress(&text, 3).unwrap();
        assert_eq!(
            decompress_frame(&frame, Expected::Exactly(text.len())).unwrap(),
            text
        );
        // A frame that claims 1 GiB is refused by its header alone: the
        // error is the declared-size check's, made before decompressing.
        let bomb = declaring(&frame, 1 << 30);
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&bomb).unwrap(),
            Some(1 << 30)
        );
        let error = decompress_frame(&bomb, Expected::Exactly(text.len()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("declares 1073741824 bytes"), "{error}");
        // An index entry claiming 256 MiB for a 12-byte frame is refused
        // the same way, instead of sizing the output by the claim.
        let error = decompress_frame(&frame, Expected::Exactly(256 << 20))
            .unwrap_err()
            .to_string();
        assert!(error.contains("declares 12 bytes"), "{error}");
        // Planes: their declared total must be the recorded length.
        let raw = planes::tests::floats(5000);
        let stored = compress_planes(&raw, 1).unwrap();
        assert_eq!(
            decompress_planes(&stored, Expected::Exactly(raw.len())).unwrap(),
            raw
        );
        let error = decompress_planes(&stored, Expected::Exactly(raw.len() + 4))
            .unwrap_err()
            .to_string();
        assert!(error.contains("declares"), "{error}");
    }
}
