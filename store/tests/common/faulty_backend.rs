//! [`FaultyBackend`]: wraps any backend and fails the Nth write or read the
//! way a real store or network fails: before the request reaches the store,
//! or after the store did the work but its reply was lost. Everything else
//! passes through, so checks over the wrapper check the backend beneath.
#![allow(dead_code)]

use cairn_store::backend::{Backend, Created, ObjectInfo, ObjectKind};
use cairn_store::{Result, StoreError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where an injected failure strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strike {
    /// The request never reached the store.
    BeforeRequest,
    /// The store carried the request out; the reply was lost.
    AfterRequest,
}

/// One injected failure: the `number`th (from 0) operation of its sort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Write { number: u64, strike: Strike },
    Read { number: u64, strike: Strike },
}

pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    fault: Fault,
    writes: AtomicU64,
    reads: AtomicU64,
}

fn injected(what: &str) -> StoreError {
    StoreError::io(
        format!("injected {what} failure"),
        std::io::Error::other("injected"),
    )
}

impl FaultyBackend {
    pub fn new(inner: Arc<dyn Backend>, fault: Fault) -> Self {
        FaultyBackend {
            inner,
            fault,
            writes: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        }
    }

    /// Runs `operation` through the fault, if this is the one it strikes.
    fn guard<T>(
        &self,
        counter: &AtomicU64,
        is_write: bool,
        operation: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let number = counter.fetch_add(1, Ordering::SeqCst);
        let strike = match self.fault {
            Fault::Write { number: at, strike } if is_write && at == number => Some(strike),
            Fault::Read { number: at, strike } if !is_write && at == number => Some(strike),
            _ => None,
        };
        let what = if is_write { "write" } else { "read" };
        match strike {
            None => operation(),
            Some(Strike::BeforeRequest) => Err(injected(what)),
            Some(Strike::AfterRequest) => operation().and_then(|_| Err(injected(what))),
        }
    }
}

impl Backend for FaultyBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn create(&self, kind: ObjectKind, name: &str, bytes: &[u8]) -> Result<Created> {
        self.guard(&self.writes, true, || self.inner.create(kind, name, bytes))
    }

    fn read(&self, kind: ObjectKind, name: &str, limit: u64) -> Result<Vec<u8>> {
        self.guard(&self.reads, false, || self.inner.read(kind, name, limit))
    }

    fn read_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>> {
        self.guard(&self.reads, false, || {
            self.inner.read_range(kind, name, offset, length)
        })
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        self.inner.list(kind)
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        self.inner.delete(kind, name)
    }
}
