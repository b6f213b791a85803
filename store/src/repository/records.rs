//! Reading the signed records of deletion (forget records and deletion
//! marks) from the repository: each object checked against its name, its
//! envelope and body decoded. Whether a record's signer is trusted is the
//! caller's to act on; encodings are `format::records`.

use super::Repository;
use crate::backend::ObjectKind;
use crate::error::{Result, StoreError};
use crate::format::keys::PublicKey;
use crate::format::records::{DELETION_DOMAIN, DeletionMark, SignedRecord, Versioned};
use crate::id::Id;
use serde::de::DeserializeOwned;

/// A deletion mark as read from the repository.
pub struct ReadMark {
    pub id: Id,
    pub mark: DeletionMark,
    /// Whether a trusted key signed it; only trusted marks are ever acted
    /// on by a prune, while every mark is avoided by a backup.
    pub trusted: bool,
}

/// Reads a record object (checked against its name) and decodes its
/// envelope and body; the signature is the caller's to check.
pub fn read_record<T: DeserializeOwned + Versioned>(
    repository: &Repository,
    kind: ObjectKind,
    domain: &'static [u8],
    id: &Id,
) -> Result<(T, SignedRecord)> {
    let object = format!("{} {id}", kind.label());
    let bytes = repository.read_object(kind, id)?;
    let record = SignedRecord::decode(&bytes, domain, &object)?;
    let body = record.body_unverified(&object)?;
    Ok((body, record))
}

/// Reads and decodes one deletion mark; the caller decides what an error
/// means (a backup must treat an unreadable mark as a reason to stop).
pub fn read_mark(repository: &Repository, id: &Id, trusted: &[PublicKey]) -> Result<ReadMark> {
    let (mark, record): (DeletionMark, _) =
        read_record(repository, ObjectKind::Deletion, DELETION_DOMAIN, id)?;
    Ok(ReadMark {
        id: *id,
        trusted: record.verify(repository.id(), trusted).is_ok(),
        mark,
    })
}

/// A mark that could not be read, and why.
pub type UnreadableMark = (Id, String);

/// Every readable deletion mark in the repository, and those that cannot
/// be read (with why). An unreadable mark is acted on by nobody: a prune
/// deletes only what a mark it has read and verified names.
pub fn read_marks(
    repository: &Repository,
    trusted: &[PublicKey],
) -> Result<(Vec<ReadMark>, Vec<UnreadableMark>)> {
    let mut marks = Vec::new();
    let mut unreadable = Vec::new();
    for id in repository.list_ids(ObjectKind::Deletion)? {
        match read_mark(repository, &id, trusted) {
            Ok(mark) => marks.push(mark),
            // Deleted by a prune between listing and reading: it is done.
            Err(StoreError::Missing { .. }) => {}
            Err(error @ StoreError::Io { .. }) => return Err(error),
            Err(error) => unreadable.push((id, error.to_string())),
        }
    }
    Ok((marks, unreadable))
}

/// The packs named by any of `marks`.
pub fn marked_packs(marks: &[ReadMark]) -> std::collections::HashSet<Id> {
    marks
        .iter()
        .flat_map(|read| read.mark.packs.iter().map(|pack| pack.id))
        .collect()
}
