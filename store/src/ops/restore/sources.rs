//! [`Sources`]: where a restore gets blobs the main repository cannot give
//! intact. Other repositories holding the same chunks (written by the same
//! multi-repository backup, or by `cairn copy`), in order of preference,
//! are asked in turn; whichever serves a blob is counted, and why the main
//! repository could not is kept for the report.
//!
//! Owns the fallback order and its accounting. Never trusts a blob it has
//! not checked against its id (every read goes through the index and
//! `decode_blob`), and never writes to any repository.

use crate::error::{Result, StoreError};
use crate::format::tree::Tree;
use crate::id::Id;
use crate::index::IndexCache;
use crate::ops::read_tree;
use crate::repository::Repository;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// At most this many of the main repository's failures are kept word for
/// word; the rest are only counted.
const KEPT_FAILURES: usize = 20;

/// A repository to fetch from when the main one fails.
#[derive(Clone, Copy)]
pub struct Fallback<'a> {
    pub repository: &'a Repository,
    pub index: &'a dyn IndexCache,
}

/// What one fallback served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FallbackUse {
    /// The repository's location.
    pub repository: String,
    pub blobs: u64,
    pub bytes: u64,
}

#[derive(Default)]
struct Served {
    blobs: AtomicU64,
    bytes: AtomicU64,
}

pub struct Sources<'a> {
    fallbacks: &'a [Fallback<'a>],
    served: Vec<Served>,
    failures: Mutex<(u64, Vec<String>)>,
}

impl<'a> Sources<'a> {
    pub fn new(fallbacks: &'a [Fallback<'a>]) -> Self {
        Sources {
            fallbacks,
            served: fallbacks.iter().map(|_| Served::default()).collect(),
            failures: Mutex::new((0, Vec::new())),
        }
    }

    fn note_failure(&self, why: &StoreError) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        failures.0 += 1;
        if failures.1.len() < KEPT_FAILURES {
            failures.1.push(why.to_string());
        }
    }

    /// Blob `id`, which the main repository failed to give (`why`), from
    /// the first fallback that holds it intact; `why` itself if none does.
    pub fn fetch(&self, id: &Id, why: StoreError) -> Result<Vec<u8>> {
        if self.fallbacks.is_empty() {
            return Err(why);
        }
        self.note_failure(&why);
        for (fallback, served) in self.fallbacks.iter().zip(&self.served) {
            let Ok(Some(location)) = fallback.index.lookup(id) else {
                continue;
            };
            if let Ok(raw) = fallback.repository.read_blob(&location) {
                served.blobs.fetch_add(1, Ordering::Relaxed);
                served.bytes.fetch_add(raw.len() as u64, Ordering::Relaxed);
                return Ok(raw);
            }
        }
        Err(why)
    }

    /// Tree `id` from the main repository, or from a fallback if the main
    /// one cannot give it intact.
    pub fn read_tree(&self, main: &Repository, index: &dyn IndexCache, id: &Id) -> Result<Tree> {
        match read_tree(main, index, id) {
            Ok(tree) => Ok(tree),
            Err(why) => {
                let raw = self.fetch(id, why)?;
                Tree::decode(&raw, &format!("tree {id}"))
            }
        }
    }

    /// Whether some fallback's index lists `id`.
    pub fn lists(&self, id: &Id) -> bool {
        self.fallbacks
            .iter()
            .any(|fallback| matches!(fallback.index.lookup(id), Ok(Some(_))))
    }

    /// What each fallback served, in order of preference.
    pub fn uses(&self) -> Vec<FallbackUse> {
        self.fallbacks
            .iter()
            .zip(&self.served)
            .map(|(fallback, served)| FallbackUse {
                repository: fallback.repository.backend().location(),
                blobs: served.blobs.load(Ordering::Relaxed),
                bytes: served.bytes.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// How many times the main repository failed, and the first few whys.
    pub fn main_failures(&self) -> (u64, Vec<String>) {
        self.failures
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }
}
