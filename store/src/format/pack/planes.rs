//! Byte planes: a blob's bytes regrouped by their position modulo four,
//! for data made of 32-bit numbers (float vectors above all).
//!
//! In an array of float32, the byte holding the sign and most of the
//! exponent repeats a few values, while the three mantissa bytes look
//! random. zstd over the bytes as they are must Huffman-code every byte
//! to save a little on one in four; over the planes (every fourth byte
//! from the first, then from the second, ...) compressed one by one, the
//! exponent plane shrinks to a third and the others pass as raw blocks.
//! Measured on the benchmark's vector tarball in 128 KiB frames at level
//! 1: 220.1 MB as they are, 203.3 MB as planes, and decompression from
//! 793 MB/s to 1,258 MB/s.
//!
//! Owns the regrouping both ways and the cheap test of whether a sample
//! looks like such data. Never compresses (see `zstd_contexts`) and never
//! decides alone how a blob is stored (see `writer`).

/// How many bytes each of the four planes of `length` bytes holds: plane
/// `k` holds the bytes at positions `k`, `k + 4`, `k + 8`, ...
pub fn plane_lengths(length: usize) -> [usize; 4] {
    [0, 1, 2, 3].map(|k| (length + 3 - k) / 4)
}

/// `raw` regrouped: its four planes one after another.
pub fn split(raw: &[u8]) -> Vec<u8> {
    let mut planes = vec![0u8; raw.len()];
    let [first, second, third, _] = plane_lengths(raw.len());
    let (p0, rest) = planes.split_at_mut(first);
    let (p1, rest) = rest.split_at_mut(second);
    let (p2, p3) = rest.split_at_mut(third);
    let words = raw.chunks_exact(4);
    let tail = words.remainder();
    for ((((word, a), b), c), d) in words
        .zip(p0.iter_mut())
        .zip(p1.iter_mut())
        .zip(p2.iter_mut())
        .zip(p3.iter_mut())
    {
        (*a, *b, *c, *d) = (word[0], word[1], word[2], word[3]);
    }
    let whole = raw.len() / 4;
    for (plane, &byte) in [p0, p1, p2].into_iter().zip(tail) {
        plane[whole] = byte;
    }
    planes
}

/// The bytes whose planes, one after another, are `planes`: the inverse
/// of [`split`]. Built a 32-bit word at a time from equal-length slices,
/// which the compiler turns into vector instructions: zipping the four
/// planes byte by byte ran at a third of the speed (1.9 against 6 GB/s).
/// The words go through a small block on the stack into the output's
/// spare capacity: an output zeroed first and then overwritten was
/// written twice (the zeroing was 1–2% of a verify's CPU).
pub fn merge(planes: &[u8]) -> Vec<u8> {
    const BLOCK_WORDS: usize = 1024;
    let mut raw = Vec::with_capacity(planes.len());
    let [first, second, third, _] = plane_lengths(planes.len());
    let whole = planes.len() / 4;
    let (p0, rest) = planes.split_at(first);
    let (p1, rest) = rest.split_at(second);
    let (p2, p3) = rest.split_at(third);
    let mut block = [0u8; BLOCK_WORDS * 4];
    let mut start = 0;
    while start < whole {
        let end = whole.min(start + BLOCK_WORDS);
        let (a, b, c, d) = (
            &p0[start..end],
            &p1[start..end],
            &p2[start..end],
            &p3[start..end],
        );
        let words = &mut block[..(end - start) * 4];
        for (i, word) in words.chunks_exact_mut(4).enumerate() {
            let value = u32::from(a[i])
                | (u32::from(b[i]) << 8)
                | (u32::from(c[i]) << 16)
                | (u32::from(d[i]) << 24);
            word.copy_from_slice(&value.to_le_bytes());
        }
        raw.extend_from_slice(words);
        start = end;
    }
    for plane in [p0, p1, p2].into_iter().take(planes.len() - whole * 4) {
        raw.push(plane[whole]);
    }
    raw
}

/// Bytes of a blob's start judged by [`looks_like_words`].
pub const SAMPLE_SIZE: usize = 16 * 1024;

/// Whether `sample` looks like an array of 32-bit numbers that compresses
/// better as planes: its bytes are close to random as a whole (order-0
/// entropy of at least 6.5 bits a byte, where text, database pages and
/// dumps measure 4 to 5 and gain from zstd's matches, which planes would
/// break), and the planes' entropies together promise at least 8% less.
/// The benchmark's vector tarball measures 7.25 bits as a whole and 6.5 as
/// planes.
pub fn looks_like_words(sample: &[u8]) -> bool {
    if sample.len() < 4096 {
        return false;
    }
    // One pass counts each plane; the whole sample's counts are their
    // sums. (Five passes, one per histogram, were 2% of a first backup's
    // CPU; four histograms side by side also keep one byte's count from
    // waiting on the last's.)
    let mut plane_counts = [[0u32; 256]; 4];
    let words = sample.chunks_exact(4);
    for (k, &byte) in words.remainder().iter().enumerate() {
        plane_counts[k][usize::from(byte)] += 1;
    }
    for word in words {
        for (counts, &byte) in plane_counts.iter_mut().zip(word) {
            counts[usize::from(byte)] += 1;
        }
    }
    let mut counts = [0u32; 256];
    for plane in &plane_counts {
        for (total, count) in counts.iter_mut().zip(plane) {
            *total += count;
        }
    }
    let whole = entropy_of_counts(&counts);
    if whole < 6.5 * sample.len() as f64 {
        return false;
    }
    let planes: f64 = plane_counts.iter().map(entropy_of_counts).sum();
    planes < 0.92 * whole
}

/// The order-0 entropy of `bytes`, in bits for all of them.
///
/// Counted into four histograms side by side, then summed (the same
/// counts, so the same result): with one, a run of equal bytes (zeros,
/// the skewed samples this is asked about) makes each increment wait on
/// the one before, and the count was 2.4% of a first backup's CPU.
pub fn entropy_bits(bytes: &[u8]) -> f64 {
    let mut lanes = [[0u32; 256]; 4];
    let words = bytes.chunks_exact(4);
    for &byte in words.remainder() {
        lanes[0][usize::from(byte)] += 1;
    }
    for word in words {
        for (counts, &byte) in lanes.iter_mut().zip(word) {
            counts[usize::from(byte)] += 1;
        }
    }
    let mut counts = lanes[0];
    for lane in &lanes[1..] {
        for (total, count) in counts.iter_mut().zip(lane) {
            *total += count;
        }
    }
    entropy_of_counts(&counts)
}

/// The order-0 entropy, in bits for all of them, of bytes counted by value.
fn entropy_of_counts(counts: &[u32; 256]) -> f64 {
    let total = f64::from(counts.iter().sum::<u32>());
    counts
        .iter()
        .filter(|&&count| count > 0)
        .map(|&count| {
            let count = f64::from(count);
            count * (total / count).log2()
        })
        .sum()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Float32 values of a slowly varying signal, as a vector index holds.
    pub(crate) fn floats(count: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        (0..count)
            .flat_map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
                (unit * 2.0 - 1.0).to_le_bytes()
            })
            .collect()
    }

    #[test]
    fn planes_hold_every_fourth_byte_and_merge_back_for_every_length() {
        let raw: Vec<u8> = (0u8..=40).collect();
        for length in 0..raw.len() {
            let bytes = &raw[..length];
            let planes = split(bytes);
            let lengths = plane_lengths(length);
            assert_eq!(lengths.iter().sum::<usize>(), length);
            let mut at = 0;
            for (k, plane_length) in lengths.into_iter().enumerate() {
                let expected: Vec<u8> = bytes.iter().skip(k).step_by(4).copied().collect();
                assert_eq!(&planes[at..at + plane_length], expected.as_slice());
                at += plane_length;
            }
            assert_eq!(merge(&planes), bytes);
        }
    }

    #[test]
    fn floats_look_like_words_and_text_and_noise_do_not() {
        assert!(looks_like_words(&floats(SAMPLE_SIZE / 4)));
        let text: Vec<u8> = b"{\"id\": 17, \"note\": \"restore the vectors first\"}\n"
            .iter()
            .copied()
            .cycle()
            .take(SAMPLE_SIZE)
            .collect();
        assert!(!looks_like_words(&text));
        let noise: Vec<u8> = floats(SAMPLE_SIZE)
            .chunks(4)
            .map(|word| word[0] ^ word[1] ^ word[3])
            .collect();
        assert!(!looks_like_words(&noise));
        assert!(!looks_like_words(&floats(512)), "too short to judge");
    }
}
