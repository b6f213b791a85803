//! Files that applications rewrite in place, night after night: a
//! vector index's segment of float vectors whose blocks get a few new
//! neighbour ids each night. Deterministic, so a test's deltas are the
//! same on every run.

/// A vector-index-like file: float vectors with, in every 4 KiB block, a
/// few 32-bit neighbour ids; 4 MiB.
pub fn vector_index(seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..1024 * 1024)
        .flat_map(|_| ((next() % 20_000) as f32 / 10_000.0 - 1.0).to_le_bytes())
        .collect()
}

/// One night of an application rewriting its file in place: in about
/// `percent` of its 4 KiB blocks, four neighbour ids change.
pub fn rewrite_in_place(bytes: &mut [u8], night: u64, percent: u64) {
    let mut state = 0x9e37_79b9_7f4a_7c15 ^ night;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for block in bytes.chunks_mut(4096) {
        if next() % 100 >= percent {
            continue;
        }
        for _ in 0..4 {
            let at = (next() % 1024) as usize * 4;
            block[at..at + 4].copy_from_slice(&(next() as u32 % 60_000).to_le_bytes());
        }
    }
}
