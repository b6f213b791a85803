//! Keeping a repository under S3 Object Lock locked (`cairn lock extend`):
//! raises the retention of every object a kept snapshot may still need —
//! config, keys, key slots, keyring, snapshots, forget records, index files
//! and every pack no trusted deletion mark names — to at least now plus the
//! repository's lock days. Never shortens a retention, never deletes, and
//! leaves alone what prune is letting go (marked packs, the marks).

use crate::backend::{Extended, LockMode, ObjectKind, S3Backend};
use crate::error::{Result, StoreError};
use crate::format::keys::PublicKey;
use crate::repository::{Repository, read_marks};
use std::collections::HashSet;

/// Everything but deletion marks: a mark's packs are on their way out, and
/// a lost mark only makes a later prune mark again.
const LIVE_KINDS: [ObjectKind; 8] = [
    ObjectKind::Config,
    ObjectKind::Key,
    ObjectKind::KeySlot,
    ObjectKind::Keyring,
    ObjectKind::Snapshot,
    ObjectKind::Forget,
    ObjectKind::Index,
    ObjectKind::Pack,
];

pub struct LockExtended {
    pub mode: LockMode,
    pub days: u32,
    /// The date every live object is now retained until, at least.
    pub until: jiff::Timestamp,
    pub objects: Extended,
    /// Packs left alone because a trusted deletion mark names them.
    pub marked_packs: u64,
}

/// Extends the locks of `repository`'s live objects, through `s3` (the
/// same bucket and prefix), by `days` (the config's when `None`).
pub fn extend(
    repository: &Repository,
    s3: &S3Backend,
    trusted: &[PublicKey],
    days: Option<u32>,
) -> Result<LockExtended> {
    let Some(lock) = &repository.config().object_lock else {
        return Err(StoreError::Invalid(format!(
            "{}: the repository was not made with `init --object-lock`; there are no locks to \
             extend",
            repository.backend().location()
        )));
    };
    let mode = LockMode::parse(&lock.mode).ok_or_else(|| {
        StoreError::corrupt("repository config", format!("lock mode {:?}", lock.mode))
    })?;
    let days = days.unwrap_or(lock.days);
    let until = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(i64::from(days) * 24))
        .map_err(|error| StoreError::Invalid(format!("{days} days from now: {error}")))?;
    let (marks, _unreadable) = read_marks(repository, trusted)?;
    let marked: HashSet<String> = marks
        .iter()
        .filter(|read| read.trusted)
        .flat_map(|read| read.mark.packs.iter().map(|pack| pack.id.to_hex()))
        .collect();
    let objects = s3.extend_retention(&LIVE_KINDS, &marked, mode, until)?;
    Ok(LockExtended {
        mode,
        days,
        until,
        objects,
        marked_packs: marked.len() as u64,
    })
}
