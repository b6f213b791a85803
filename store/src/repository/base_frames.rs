//! The shared frames decoded last for delta bases: a few decompressed
//! frames, shared by every clone of a repository, so that the bases of a
//! run of deltas (a changed file's pages, whose bases are the previous
//! version's pages, side by side in one frame) cost one read, one opening
//! and one decompression per frame rather than one per base.
//!
//! It owns only frame contents that were opened and decompressed by a
//! [`crate::format::pack::BlobDecoder`], keyed by pack and the frame's
//! offset. It never vouches for a blob: a base taken from a held frame is
//! still checked against its id by the decoder. It is bounded in bytes.

use crate::id::Id;
use std::collections::VecDeque;
use std::sync::Arc;

/// At most this many bytes of decompressed frames are held: 32 frames of
/// the writer's 128 KiB target, enough for both cores working two bases
/// deep, and small beside a restore's batch caches.
pub const BASE_FRAMES_BYTES: usize = 4 * 1024 * 1024;

/// One held frame: its pack, the offset of its stored piece, its content.
type Held = (Id, u64, Arc<Vec<u8>>);

/// Frames, the one used last first.
#[derive(Default)]
pub struct BaseFrames {
    held: VecDeque<Held>,
    bytes: usize,
}

impl BaseFrames {
    /// The frame stored at `offset` in `pack`, if held (it becomes the
    /// one used last).
    pub fn get(&mut self, pack: &Id, offset: u64) -> Option<Arc<Vec<u8>>> {
        let at = self
            .held
            .iter()
            .position(|(in_pack, at, _)| in_pack == pack && *at == offset)?;
        let entry = self.held.remove(at)?;
        let content = Arc::clone(&entry.2);
        self.held.push_front(entry);
        Some(content)
    }

    /// Holds `content` as the frame at `offset` in `pack`, letting go of
    /// the frames used longest ago beyond [`BASE_FRAMES_BYTES`]. A frame
    /// larger than the whole bound is not held.
    pub fn insert(&mut self, pack: Id, offset: u64, content: Arc<Vec<u8>>) {
        if content.len() > BASE_FRAMES_BYTES {
            return;
        }
        if self.get(&pack, offset).is_some() {
            return;
        }
        self.bytes += content.len();
        self.held.push_front((pack, offset, content));
        while self.bytes > BASE_FRAMES_BYTES {
            match self.held.pop_back() {
                Some((_, _, dropped)) => self.bytes -= dropped.len(),
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: usize) -> Arc<Vec<u8>> {
        Arc::new(vec![7; bytes])
    }

    #[test]
    fn frames_used_longest_ago_go_first_and_the_bytes_stay_bounded() {
        let pack = Id([1; 32]);
        let mut frames = BaseFrames::default();
        let quarter = BASE_FRAMES_BYTES / 4;
        for offset in 0..4 {
            frames.insert(pack, offset, frame(quarter));
        }
        // Using frame 0 keeps it when a fifth frame pushes one out.
        assert!(frames.get(&pack, 0).is_some());
        frames.insert(pack, 4, frame(quarter));
        assert!(frames.get(&pack, 1).is_none(), "the frame used longest ago");
        for offset in [0, 2, 3, 4] {
            assert!(frames.get(&pack, offset).is_some(), "frame {offset}");
        }
        assert_eq!(frames.bytes, BASE_FRAMES_BYTES);
        assert!(frames.get(&Id([2; 32]), 0).is_none(), "another pack");
    }

    #[test]
    fn a_frame_over_the_bound_is_not_held() {
        let mut frames = BaseFrames::default();
        frames.insert(Id([1; 32]), 0, frame(BASE_FRAMES_BYTES + 1));
        assert!(frames.get(&Id([1; 32]), 0).is_none());
        assert_eq!(frames.bytes, 0);
    }
}
