//! Argon2's working memory (32 MiB with the default cost, FORMAT.md 17.5)
//! as a fresh anonymous mapping.
//!
//! The argon2 crate's own allocation zeroes all of it with `memset` on the
//! calling thread before the lanes start (the allocator's zeroed path for
//! 64-byte-aligned blocks): for 64 MiB, 16,384 page faults and 64 MiB written, serial,
//! in front of every passphrase unlock. A mapping is zero-filled by the
//! kernel page by page at first touch, so the faults happen in the lanes'
//! threads, in parallel, as they write their blocks. The mapping also asks
//! for transparent huge pages (`MADV_HUGEPAGE`, only a hint): 32 faults
//! instead of 16,384, and far fewer TLB misses for Argon2's random block
//! references. On this project's 2-core VM (docs/PERFORMANCE.md, "The
//! passphrase unlock") the derivation's CPU went from 146 to 114 ms and its
//! serial part on the calling thread from 26.5 to 0.7 ms. The memory is
//! unmapped when dropped (given back to the kernel, not kept in this
//! process's heap). Never used for anything but a KDF's blocks.

use std::io;
use std::ptr::NonNull;

/// `blocks` zero-filled Argon2 blocks in their own mapping.
pub struct Argon2Memory {
    start: NonNull<argon2::Block>,
    blocks: usize,
    bytes: usize,
}

impl Argon2Memory {
    pub fn new(blocks: usize) -> io::Result<Self> {
        let bytes = blocks
            .checked_mul(argon2::Block::SIZE)
            .filter(|bytes| *bytes > 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no Argon2 blocks"))?;
        // SAFETY: a new private anonymous mapping; no existing memory is
        // touched, and the result is checked before use.
        let start = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if start == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: advice on the mapping just made, its exact range; a
        // kernel without huge pages refuses it, which changes nothing.
        unsafe {
            libc::madvise(start, bytes, libc::MADV_HUGEPAGE);
        }
        let start = NonNull::new(start.cast::<argon2::Block>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(Argon2Memory {
            start,
            blocks,
            bytes,
        })
    }

    pub fn blocks(&mut self) -> &mut [argon2::Block] {
        // SAFETY: the mapping is `bytes` = `blocks` * Block::SIZE long,
        // page-aligned (more than a Block's 64 bytes), readable and
        // writable, zero-filled by the kernel (all zeros is a valid Block:
        // 128 u64s), lives as long as `self`, and `&mut self` makes this
        // borrow the only one.
        unsafe { std::slice::from_raw_parts_mut(self.start.as_ptr(), self.blocks) }
    }
}

impl Drop for Argon2Memory {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `new`, unmapped once; no
        // borrow of it outlives `self`.
        unsafe {
            libc::munmap(self.start.as_ptr().cast(), self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_gives_the_same_key_in_a_mapping_as_in_its_own_memory() {
        let params = argon2::Params::new(8 * 1024, 1, 2, Some(32)).unwrap();
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let (mut own, mut mapped) = ([0u8; 32], [0u8; 32]);
        argon
            .hash_password_into(b"passphrase", b"sixteen byte slt", &mut own)
            .unwrap();
        let mut memory = Argon2Memory::new(argon.params().block_count()).unwrap();
        argon
            .hash_password_into_with_memory(
                b"passphrase",
                b"sixteen byte slt",
                &mut mapped,
                memory.blocks(),
            )
            .unwrap();
        assert_eq!(own, mapped);
    }

    #[test]
    fn no_blocks_is_refused() {
        assert!(Argon2Memory::new(0).is_err());
    }
}
