//! A repository in a temporary directory, for the stages' tests, with room
//! beside it for sources.

use super::options::Destination;
use crate::backend::LocalBackend;
use crate::format::keys::{SigningKey, public_key_of};
use crate::index::{IndexCache, MemoryIndex};
use crate::ops::common::blob_writer::BlobWriter;
use crate::repository::Repository;
use std::sync::Arc;

pub(super) struct TestRepository {
    /// Holds the repository in `repository/`; anything else is free.
    pub(super) directory: tempfile::TempDir,
    pub(super) repository: Repository,
    pub(super) index: MemoryIndex,
    pub(super) key: SigningKey,
}

impl TestRepository {
    pub(super) fn new() -> Self {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path().join("repository");
        std::fs::create_dir(&root).unwrap();
        let (repository, key) =
            crate::repository::plaintext_for_tests(Arc::new(LocalBackend::new(&root)));
        let index = MemoryIndex::new();
        index.set_trusted(&[public_key_of(&key)]).unwrap();
        TestRepository {
            directory,
            repository,
            index,
            key,
        }
    }

    /// A writer that knows the packs present now.
    pub(super) fn writer(&self) -> BlobWriter<'_> {
        let present = self.repository.list_packs().unwrap();
        BlobWriter::new(&self.repository, &self.index, present, Some(&self.key))
    }

    pub(super) fn destination(&self) -> Destination<'_> {
        Destination {
            repository: &self.repository,
            index: &self.index,
            key: &self.key,
            walk_cache: None,
        }
    }
}
