//! [`NoDeleteBackend`]: any backend with deletes refused, as a backup host
//! whose credentials lack `s3:DeleteObject` sees its storage (docs/S3.md).
//! `--no-delete` puts it in front of a repository, so a host proves before
//! the bucket policy does that it never needs to delete.
//!
//! Owns nothing but the refusal; never changes what reads and writes do.

use super::{Backend, Created, ObjectInfo, ObjectKind, Purged};
use crate::error::{Result, StoreError};
use std::sync::Arc;
use std::time::SystemTime;

pub struct NoDeleteBackend {
    inner: Arc<dyn Backend>,
}

impl NoDeleteBackend {
    pub fn new(inner: Arc<dyn Backend>) -> NoDeleteBackend {
        NoDeleteBackend { inner }
    }

    fn refuse(&self, kind: ObjectKind, name: &str) -> StoreError {
        StoreError::io(
            format!("{}: deleting {} {name}", self.location(), kind.label()),
            std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "refused: deletes are off (--no-delete)",
            ),
        )
    }
}

impl Backend for NoDeleteBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn parallelism(&self) -> usize {
        self.inner.parallelism()
    }

    fn prefetch(&self, kind: ObjectKind, name: &str) {
        self.inner.prefetch(kind, name)
    }

    fn prefetches(&self) -> bool {
        self.inner.prefetches()
    }

    /// Removing stale temporaries deletes; a host without deletes leaves
    /// them for the maintenance role.
    fn remove_stale_temporaries(&self) -> Result<usize> {
        Ok(0)
    }

    fn create(&self, kind: ObjectKind, name: &str, bytes: &[u8]) -> Result<Created> {
        self.inner.create(kind, name, bytes)
    }

    fn read(&self, kind: ObjectKind, name: &str, limit: u64) -> Result<Vec<u8>> {
        self.inner.read(kind, name, limit)
    }

    fn read_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>> {
        self.inner.read_range(kind, name, offset, length)
    }

    fn read_range_into(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        length: u64,
        buffer: &mut Vec<u8>,
    ) -> Result<()> {
        self.inner
            .read_range_into(kind, name, offset, length, buffer)
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        self.inner.list(kind)
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        Err(self.refuse(kind, name))
    }

    fn retained_until(&self, kind: ObjectKind, name: &str) -> Result<Option<SystemTime>> {
        self.inner.retained_until(kind, name)
    }

    fn purge(&self, kind: ObjectKind, name: &str) -> Result<Purged> {
        Err(self.refuse(kind, name))
    }
}
