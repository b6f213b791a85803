//! [`MemoryBackend`]: a repository held in this process's memory, for fast
//! tests of the layers above the backend.
//!
//! It is a second implementation of the [`Backend`] contract, not a mock:
//! it refuses the names the others refuse, creates only if absent, reports
//! the same errors for missing objects and ranges past the end, and passes
//! the same conformance suite (`store/tests/backend_conformance.rs`). Each
//! call takes one lock, so every object appears whole, at once, and two
//! writers racing for a name cannot both win.
//!
//! It must never be used for a repository anyone keeps: nothing survives
//! the process, so the durability promise holds only for as long as the
//! backend lives.

use super::{Backend, Created, ObjectInfo, ObjectKind, check_name, missing, past_end, too_large};
use crate::error::Result;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

struct StoredObject {
    /// Shared so that a read copies its bytes outside the lock.
    bytes: Arc<[u8]>,
    created: SystemTime,
}

type Objects = HashMap<ObjectKind, BTreeMap<String, StoredObject>>;

pub struct MemoryBackend {
    /// Told apart in messages when a test holds several.
    number: u64,
    objects: Mutex<Objects>,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        MemoryBackend {
            number: NEXT.fetch_add(1, Ordering::Relaxed),
            objects: Mutex::new(HashMap::new()),
        }
    }

    /// Every call leaves the map consistent before anything in it can
    /// panic, so a lock poisoned by a panicking caller's thread still
    /// guards whole objects.
    fn objects(&self) -> MutexGuard<'_, Objects> {
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bytes(&self, kind: ObjectKind, name: &str) -> Result<Arc<[u8]>> {
        check_name(kind, name)?;
        self.objects()
            .get(&kind)
            .and_then(|objects| objects.get(name))
            .map(|object| Arc::clone(&object.bytes))
            .ok_or_else(|| missing(kind, name))
    }
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        format!("memory:{}", self.number)
    }

    fn create(&self, kind: ObjectKind, name: &str, bytes: &[u8]) -> Result<Created> {
        check_name(kind, name)?;
        let mut objects = self.objects();
        let of_kind = objects.entry(kind).or_default();
        if of_kind.contains_key(name) {
            return Ok(Created::AlreadyExisted);
        }
        of_kind.insert(
            name.to_string(),
            StoredObject {
                bytes: Arc::from(bytes),
                created: SystemTime::now(),
            },
        );
        Ok(Created::New)
    }

    fn read(&self, kind: ObjectKind, name: &str, limit: u64) -> Result<Vec<u8>> {
        let bytes = self.bytes(kind, name)?;
        if bytes.len() as u64 > limit {
            return Err(too_large(kind, name, bytes.len() as u64, limit));
        }
        Ok(bytes.to_vec())
    }

    fn read_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>> {
        let bytes = self.bytes(kind, name)?;
        let size = bytes.len() as u64;
        match offset.checked_add(length) {
            Some(end) if end <= size => {
                // Both bounds are within a slice in memory, so they fit usize.
                Ok(bytes[offset as usize..end as usize].to_vec())
            }
            _ => Err(past_end(kind, name, offset, length, size)),
        }
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        Ok(self
            .objects()
            .get(&kind)
            .map(|objects| {
                objects
                    .iter()
                    .map(|(name, object)| ObjectInfo {
                        name: name.clone(),
                        size: object.bytes.len() as u64,
                        modified: Some(object.created),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        check_name(kind, name)?;
        if let Some(objects) = self.objects().get_mut(&kind) {
            objects.remove(name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StoreError;

    #[test]
    fn objects_are_kept_per_kind_and_created_only_once() {
        let backend = MemoryBackend::new();
        let name = "ab".repeat(32);
        assert_eq!(
            backend.create(ObjectKind::Pack, &name, b"pack").unwrap(),
            Created::New
        );
        assert_eq!(
            backend.create(ObjectKind::Index, &name, b"index").unwrap(),
            Created::New
        );
        assert_eq!(
            backend.create(ObjectKind::Pack, &name, b"other").unwrap(),
            Created::AlreadyExisted
        );
        assert_eq!(backend.read(ObjectKind::Pack, &name, 4).unwrap(), b"pack");
        assert_eq!(
            backend.read_range(ObjectKind::Index, &name, 1, 3).unwrap(),
            b"nde"
        );
        assert!(backend.list(ObjectKind::Snapshot).unwrap().is_empty());
        backend.delete(ObjectKind::Pack, &name).unwrap();
        assert!(matches!(
            backend.read(ObjectKind::Pack, &name, 4),
            Err(StoreError::Missing { .. })
        ));
        assert_eq!(backend.list(ObjectKind::Index).unwrap()[0].size, 5);
    }

    #[test]
    fn an_overflowing_range_is_past_the_end() {
        let backend = MemoryBackend::new();
        backend.create(ObjectKind::Index, "aa", b"12345").unwrap();
        assert!(matches!(
            backend.read_range(ObjectKind::Index, "aa", u64::MAX, 2),
            Err(StoreError::Corrupt { .. })
        ));
        assert_ne!(MemoryBackend::new().location(), backend.location());
    }
}
