//! Roll-back detection: this machine remembers, per repository, the newest
//! snapshot it has seen of each host and component group, in a small file
//! under the local cache (FORMAT.md, "Roll-back memory"). A remembered
//! snapshot that has disappeared from the repository without a trusted
//! forget record naming it means someone deleted manifests (or put back an
//! older copy of the repository): it is reported, by id, until a newer
//! snapshot of its group is seen.
//!
//! Only trusted snapshots of this repository are remembered, and none dated
//! ahead of this machine's clock, so nothing planted can become the memory.
//! Never deletes anything and never decides an exit code; the caller
//! reports what is found.

use crate::backend::ObjectKind;
use crate::error::{Result, StoreError};
use crate::format::keys::PublicKey;
use crate::format::manifest::{SAFETY_TAG, SnapshotBody};
use crate::id::Id;
use crate::ops::forget::read_forget_records;
use crate::repository::{FUTURE_TOLERANCE_SECONDS, Repository};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;

/// The memory file's name under a repository's cache directory.
pub const MEMORY_FILE: &str = "newest-seen.json";
const MEMORY_FORMAT: &str = "cairn-newest-seen-v1";
/// A memory file larger than this is not a memory file.
const MAX_MEMORY_BYTES: u64 = 16 << 20;

/// One remembered snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seen {
    pub id: Id,
    /// Its signed time (RFC 3339).
    pub time: String,
    pub host: String,
    pub components: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Memory {
    format: String,
    repository: Id,
    /// Keyed by [`group_of`].
    groups: BTreeMap<String, Seen>,
}

/// A snapshot this machine saw as the newest of its group that has gone
/// without a trusted forget record naming it.
pub type RolledBack = Seen;

/// The group a snapshot belongs to: its host and component names.
fn group_of(host: &str, components: &[String]) -> String {
    format!("{host}\n{}", components.join(","))
}

fn seen_of(id: Id, body: &SnapshotBody) -> Seen {
    Seen {
        id,
        time: body.time.clone(),
        host: body.host.clone(),
        components: body.component_names(),
    }
}

/// Whether `body` may be remembered: not a restore's safety snapshot, and
/// dated no further ahead of this machine's clock than `latest` allows.
fn rememberable(body: &SnapshotBody, now: jiff::Timestamp) -> Option<jiff::Timestamp> {
    if body.tags.iter().any(|tag| tag == SAFETY_TAG) {
        return None;
    }
    let time: jiff::Timestamp = body.time.parse().ok()?;
    (time.as_second() <= now.as_second().saturating_add(FUTURE_TOLERANCE_SECONDS)).then_some(time)
}

/// Whether `candidate` is newer than `remembered` (by signed time, then id).
fn newer(candidate: &Seen, remembered: &Seen) -> bool {
    let time = |seen: &Seen| seen.time.parse::<jiff::Timestamp>().ok();
    (time(candidate), candidate.id) > (time(remembered), remembered.id)
}

fn load(path: &Path, repository: &Id) -> Result<Memory> {
    let fresh = || Memory {
        format: MEMORY_FORMAT.into(),
        repository: *repository,
        groups: BTreeMap::new(),
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(fresh()),
        Err(error) => return Err(StoreError::io(format!("reading {}", path.display()), error)),
    };
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, MAX_MEMORY_BYTES + 1),
        &mut bytes,
    )
    .map_err(|error| StoreError::io(format!("reading {}", path.display()), error))?;
    let object = path.display().to_string();
    if bytes.len() as u64 > MAX_MEMORY_BYTES {
        return Err(StoreError::corrupt(
            object,
            "larger than any roll-back memory",
        ));
    }
    let memory: Memory = serde_json::from_slice(&bytes).map_err(|error| {
        StoreError::corrupt(&object, format!("not a roll-back memory: {error}"))
    })?;
    if memory.format != MEMORY_FORMAT || memory.repository != *repository {
        return Err(StoreError::corrupt(
            object,
            "not this repository's roll-back memory",
        ));
    }
    Ok(memory)
}

fn save(path: &Path, memory: &Memory) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|error| StoreError::io(format!("creating {}", parent.display()), error))?;
    }
    let temporary = path.with_extension("json.tmp");
    let bytes = crate::format::codec::to_json(memory);
    std::fs::File::create(&temporary)
        .and_then(|mut file| {
            file.write_all(&bytes)?;
            file.sync_all()
        })
        .and_then(|_| std::fs::rename(&temporary, path))
        .map_err(|error| StoreError::io(format!("writing {}", path.display()), error))
}

/// Remembers a snapshot this machine has just written (a backup), if it
/// is the newest of its group.
pub fn remember(path: &Path, repository: &Id, id: Id, body: &SnapshotBody) -> Result<()> {
    if rememberable(body, jiff::Timestamp::now()).is_none() {
        return Ok(());
    }
    let mut memory = load(path, repository)?;
    let seen = seen_of(id, body);
    let group = group_of(&seen.host, &seen.components);
    if memory
        .groups
        .get(&group)
        .is_none_or(|old| newer(&seen, old))
    {
        memory.groups.insert(group, seen);
        save(path, &memory)?;
    }
    Ok(())
}

/// Compares the repository with the memory at `path`, returns the
/// remembered snapshots that have gone without a trusted forget record,
/// and remembers the newest trusted snapshot of each group seen now.
/// A rolled-back snapshot stays remembered (and reported) until a newer
/// one of its group is seen.
pub fn check_and_remember(
    repository: &Repository,
    trusted: &[PublicKey],
    path: &Path,
) -> Result<Vec<RolledBack>> {
    let mut memory = load(path, repository.id())?;
    let now = jiff::Timestamp::now();
    let listed = repository.list_ids(ObjectKind::Snapshot)?;
    let present: HashSet<Id> = listed.iter().copied().collect();
    let mut newest: BTreeMap<String, Seen> = BTreeMap::new();
    for id in listed {
        let Ok(body) = repository.read_manifest(&id).and_then(|manifest| {
            manifest.verified_body(repository.id(), trusted, &format!("snapshot {id}"))
        }) else {
            continue;
        };
        if rememberable(&body, now).is_none() {
            continue;
        }
        let seen = seen_of(id, &body);
        let group = group_of(&seen.host, &seen.components);
        if newest.get(&group).is_none_or(|best| newer(&seen, best)) {
            newest.insert(group, seen);
        }
    }
    let forgotten: HashSet<Id> = read_forget_records(repository, trusted)?
        .into_iter()
        .flat_map(|(_, record, _)| record.snapshots.into_iter().map(|snapshot| snapshot.id))
        .collect();
    let mut rolled_back = Vec::new();
    let mut groups = BTreeMap::new();
    let remembered = std::mem::take(&mut memory.groups);
    for (group, seen) in remembered {
        let now_newest = newest.remove(&group);
        let gone = !present.contains(&seen.id);
        let kept = match now_newest {
            // A newer snapshot of the group moves the memory on.
            Some(candidate) if newer(&candidate, &seen) => Some(candidate),
            // Forgotten by a trusted record: the group's newest is now
            // whatever is left of it, if anything.
            other if gone && forgotten.contains(&seen.id) => other,
            _ if gone => {
                rolled_back.push(seen.clone());
                Some(seen)
            }
            _ => Some(seen),
        };
        if let Some(kept) = kept {
            groups.insert(group, kept);
        }
    }
    groups.extend(newest);
    memory.groups = groups;
    save(path, &memory)?;
    Ok(rolled_back)
}

/// The sentence that reports a rolled-back snapshot.
pub fn describe(rolled_back: &RolledBack) -> String {
    format!(
        "snapshot {} (host {}, components {}, taken {}), the newest of its group this machine has seen, is gone without a trusted forget record naming it: the repository may have been rolled back",
        rolled_back.id,
        rolled_back.host,
        rolled_back.components.join(","),
        rolled_back.time
    )
}
