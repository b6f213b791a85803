//! A repository with one snapshot in a temporary directory, for the
//! restore's unit tests: real files, a real repository, a real backup.

use crate::backend::LocalBackend;
use crate::format::keys::{PublicKey, SigningKey, public_key_of};
use crate::format::manifest::SnapshotBody;
use crate::id::Id;
use crate::index::{IndexCache, open_index};
use crate::ops::backup::{BackupOptions, ComponentSource, backup};
use crate::repository::Repository;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct Scene {
    pub directory: tempfile::TempDir,
    pub repository: Repository,
    pub index: std::sync::Arc<dyn IndexCache>,
    pub key: SigningKey,
    pub public: PublicKey,
    pub snapshot: Id,
    pub body: SnapshotBody,
}

impl Scene {
    /// Backs up `components` (name, source path), after `make` has written
    /// the sources under the scene's directory.
    pub fn new(make: impl FnOnce(&Path) -> Vec<(&'static str, PathBuf, bool)>) -> Self {
        let directory = tempfile::tempdir().expect("temporary directory");
        let components = make(directory.path());
        let (repository, key) = crate::repository::plaintext_for_tests(Arc::new(
            LocalBackend::new(directory.path().join("repo")),
        ));
        let public = public_key_of(&key);
        let index = open_index(&repository, None, &[public])
            .expect("index")
            .index;
        let options = BackupOptions {
            components: components
                .into_iter()
                .map(|(name, path, sqlite)| {
                    let mut source = ComponentSource::new(name, path);
                    if sqlite {
                        source.kind = crate::ops::backup::SourceKind::Sqlite;
                    }
                    source
                })
                .collect(),
            ..BackupOptions::default()
        };
        let saved = backup(&repository, index.as_ref(), &key, &options).expect("backup");
        Scene {
            directory,
            repository,
            index,
            key,
            public,
            snapshot: saved.snapshot,
            body: saved.body,
        }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.directory.path().join(relative)
    }
}
