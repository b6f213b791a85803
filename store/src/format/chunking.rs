//! Which chunking each file gets: the component's own, except that a file
//! that announces itself as a SQLite database is cut into its own pages
//! when the component says so (docs/FORMAT.md §6.1).
//!
//! Owns the SQLite header rule, which backup and restore must apply alike;
//! reads no file (the caller hands it the header) and never chunks anything.

use cairn_chunker::Chunking;

/// How many of a file's first bytes the rule looks at (the SQLite header
/// up to its page size).
pub const HEADER_LENGTH: usize = 18;

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// How the files of one component are cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileChunking {
    /// For every file, unless the rule below applies.
    pub base: Chunking,
    /// Files that start with the SQLite header are cut into fixed chunks of
    /// this many of their pages.
    pub sqlite_pages_per_chunk: Option<u32>,
}

impl FileChunking {
    /// The chunking of a file whose first bytes are `header` (fewer than
    /// 18 bytes, or none, if the file is that short).
    pub fn for_header(&self, header: &[u8]) -> Chunking {
        match (self.sqlite_pages_per_chunk, sqlite_page_size(header)) {
            (Some(pages), Some(page_size)) => {
                let chunking = Chunking::Fixed(page_size.saturating_mul(pages));
                if chunking.validate().is_ok() {
                    chunking
                } else {
                    self.base
                }
            }
            _ => self.base,
        }
    }
}

/// `fastcdc 4096/16384/65536`, `fixed 4096`, and for SQLite pages
/// `…, SQLite files in 1-page chunks`.
impl std::fmt::Display for FileChunking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.base)?;
        match self.sqlite_pages_per_chunk {
            Some(pages) => write!(f, ", SQLite files in {pages}-page chunks"),
            None => Ok(()),
        }
    }
}

/// The page size a SQLite header announces: bytes 16–17, big-endian, a
/// power of two from 512 to 32768, or 1 meaning 65536. `None` if `header`
/// is not a SQLite header or the size is not one SQLite can write.
pub fn sqlite_page_size(header: &[u8]) -> Option<u32> {
    if header.len() < 18 || &header[..16] != SQLITE_MAGIC {
        return None;
    }
    let size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536,
        size => u32::from(size),
    };
    (size.is_power_of_two() && (512..=65536).contains(&size)).then_some(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_chunker::ChunkerParams;

    fn header(size: u16) -> Vec<u8> {
        let mut bytes = SQLITE_MAGIC.to_vec();
        bytes.extend_from_slice(&size.to_be_bytes());
        bytes
    }

    #[test]
    fn page_sizes_come_from_the_header() {
        assert_eq!(sqlite_page_size(&header(4096)), Some(4096));
        assert_eq!(sqlite_page_size(&header(1)), Some(65536));
        assert_eq!(sqlite_page_size(&header(1000)), None);
        assert_eq!(sqlite_page_size(&header(256)), None);
        assert_eq!(sqlite_page_size(b"SQLite format 3"), None);
        let mut other = header(4096);
        other[0] = b's';
        assert_eq!(sqlite_page_size(&other), None);
    }

    #[test]
    fn only_databases_get_pages_and_only_when_asked() {
        let base = Chunking::ContentDefined(ChunkerParams::DEFAULT);
        let pages = FileChunking {
            base,
            sqlite_pages_per_chunk: Some(2),
        };
        assert_eq!(pages.for_header(&header(8192)), Chunking::Fixed(16384));
        assert_eq!(pages.for_header(b"{\"json\": true}"), base);
        let without = FileChunking {
            base,
            sqlite_pages_per_chunk: None,
        };
        assert_eq!(without.for_header(&header(8192)), base);
    }
}
