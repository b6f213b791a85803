//! What several operations share, below all of them: the blob writer, the
//! packs a writer must adopt or avoid, SQLite, which chunking a file on
//! disk gets (backup and restore must agree), and small helpers for time,
//! host and user names and component-relative paths.
//!
//! Owns no operation's rules. Must never import an operation (`ops::backup`,
//! `ops::restore`, ...): operations build on this module, not it on them.

pub mod blob_writer;
pub(crate) mod packs;
pub(crate) mod sqlite;

use crate::format::chunking::{FileChunking, HEADER_LENGTH};
use cairn_chunker::Chunking;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Fixed width, so that times compare correctly as strings.
pub fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    format!(
        "{}.{:09}Z",
        now.strftime("%Y-%m-%dT%H:%M:%S"),
        now.subsec_nanosecond()
    )
}

/// `time` as RFC 3339 in UTC, to the second (for messages); the epoch if
/// it cannot be represented.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    jiff::Timestamp::try_from(time)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length; gethostname writes at
    // most that many bytes.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if result != 0 {
        return "unknown".into();
    }
    let end = buffer
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

pub(crate) fn user_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            // SAFETY: getuid has no preconditions and cannot fail.
            format!("uid {}", unsafe { libc::getuid() })
        })
}

/// Joins a component-relative path and a name, `/`-separated.
pub fn join_relative(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// The chunking `chunking` gives `file`, from the file's first
/// [`HEADER_LENGTH`] bytes (the SQLite rule); a file whose header cannot
/// be read gets the base chunking (reading it whole will report the error).
pub fn chunking_of_file(chunking: &FileChunking, file: &File) -> Chunking {
    if chunking.sqlite_pages_per_chunk.is_none() {
        return chunking.base;
    }
    let mut header = [0u8; HEADER_LENGTH];
    let mut filled = 0;
    while filled < header.len() {
        match file.read_at(&mut header[filled..], filled as u64) {
            Ok(0) | Err(_) => break,
            Ok(count) => filled += count,
        }
    }
    chunking.for_header(&header[..filled])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_one_width_so_they_sort_as_strings() {
        let earlier = now_rfc3339();
        let later = now_rfc3339();
        assert_eq!(earlier.len(), "2026-01-02T03:04:05.123456789Z".len());
        assert!(earlier.ends_with('Z'));
        assert!(earlier <= later);
    }

    #[test]
    fn a_relative_path_joins_without_a_leading_slash() {
        assert_eq!(join_relative("", "a"), "a");
        assert_eq!(join_relative("a/b", "c"), "a/b/c");
    }

    #[test]
    fn host_and_user_names_are_never_empty() {
        assert!(!host_name().is_empty());
        assert!(!user_name().is_empty());
    }
}
