//! [`FanOut`]: one backup's stream of blobs, written into several
//! repositories at once. The source is read, chunked and hashed once; each
//! blob goes to every repository that lacks it.
//!
//! Owns the rule that one repository failing does not stop the others: a
//! writer that fails is set aside with its error and the rest go on. Never
//! decides what a backup stores or signs anything.

use crate::error::{Result, StoreError};
use crate::format::pack::BlobKind;
use crate::id::Id;
use crate::ops::common::blob_writer::{BlobWriter, FrameSharing, WriterStatistics};
use std::sync::Mutex;

/// One repository's writer, or why it stopped.
struct Lane<'a> {
    writer: BlobWriter<'a>,
    failure: Mutex<Option<StoreError>>,
}

pub struct FanOut<'a> {
    lanes: Vec<Lane<'a>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A failure is stored whole or not at all.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl<'a> FanOut<'a> {
    pub fn new(writers: Vec<BlobWriter<'a>>) -> Self {
        FanOut {
            lanes: writers
                .into_iter()
                .map(|writer| Lane {
                    writer,
                    failure: Mutex::new(None),
                })
                .collect(),
        }
    }

    fn is_live(lane: &Lane) -> bool {
        lock(&lane.failure).is_none()
    }

    /// Sets a lane aside; the first error is the one kept.
    fn fail(lane: &Lane, error: StoreError) {
        lock(&lane.failure).get_or_insert(error);
    }

    /// An error for callers once no repository is left; each lane keeps
    /// its own error for [`FanOut::into_results`].
    fn all_failed(&self) -> StoreError {
        StoreError::Invalid("every repository of this backup failed".into())
    }

    /// Stores a blob in every live repository that lacks it; true if any
    /// stored it as new. Fails only when no repository is left.
    pub fn add(&self, kind: BlobKind, id: Id, raw: &[u8]) -> Result<bool> {
        self.add_in(kind, id, raw, 0, FrameSharing::Group)
    }

    /// [`BlobWriter::add_in`] in every live repository.
    pub fn add_in(
        &self,
        kind: BlobKind,
        id: Id,
        raw: &[u8],
        group: usize,
        sharing: FrameSharing,
    ) -> Result<bool> {
        self.in_every_live_lane(|writer| writer.add_in(kind, id, raw, group, sharing))
    }

    /// [`BlobWriter::add_near`] in every live repository: each stores the
    /// blob as a delta against its own copy of `near` when that pays.
    pub fn add_near(
        &self,
        id: Id,
        raw: &[u8],
        group: usize,
        sharing: FrameSharing,
        near: Option<Id>,
    ) -> Result<bool> {
        self.in_every_live_lane(|writer| {
            writer.add_near(BlobKind::Data, id, raw, group, sharing, near)
        })
    }

    /// Runs `add` with each live repository's writer: a repository whose
    /// write fails is marked failed and left out from then on. Whether any
    /// stored the blob as new; an error only when none is live.
    fn in_every_live_lane(&self, add: impl Fn(&BlobWriter<'a>) -> Result<bool>) -> Result<bool> {
        let mut new = false;
        let mut live = 0;
        for lane in self.lanes.iter().filter(|lane| Self::is_live(lane)) {
            match add(&lane.writer) {
                Ok(added) => {
                    new |= added;
                    live += 1;
                }
                Err(error) => Self::fail(lane, error),
            }
        }
        if live == 0 {
            return Err(self.all_failed());
        }
        Ok(new)
    }

    /// Where each of `chunks` (a file's chunks in the parent snapshot)
    /// starts in that file, by the first live repository's index; `None`
    /// if it does not list them all.
    pub fn chunk_starts(&self, chunks: &[Id]) -> Option<Vec<u64>> {
        let lane = self.lanes.iter().find(|lane| Self::is_live(lane))?;
        lane.writer.chunk_starts(chunks)
    }

    /// Whether every live repository holds every one of `ids`: a file may
    /// be taken from the parent snapshot unread only if no repository would
    /// miss a chunk.
    pub fn all_stored(&self, ids: &[Id]) -> Result<bool> {
        let mut live = 0;
        for lane in self.lanes.iter().filter(|lane| Self::is_live(lane)) {
            match lane.writer.all_stored(ids) {
                Ok(true) => live += 1,
                Ok(false) => return Ok(false),
                Err(error) => Self::fail(lane, error),
            }
        }
        if live == 0 {
            return Err(self.all_failed());
        }
        Ok(true)
    }

    /// Sets every live lane aside: for an error that is not any one
    /// repository's (the walk itself failed). The first live lane keeps the
    /// error itself, so a single-repository backup reports it unchanged;
    /// the others get its message.
    pub fn fail_all(&self, error: StoreError) {
        let mut error = Some(error);
        let message = error.as_ref().map(ToString::to_string).unwrap_or_default();
        for lane in self.lanes.iter().filter(|lane| Self::is_live(lane)) {
            let this = error
                .take()
                .unwrap_or_else(|| StoreError::Invalid(message.clone()));
            Self::fail(lane, this);
        }
    }

    /// Each repository's writer, finished (every blob uploaded and indexed),
    /// or its error; in the order given to [`FanOut::new`].
    pub fn finish(self) -> Vec<Result<(BlobWriter<'a>, WriterStatistics)>> {
        self.lanes
            .into_iter()
            .map(|lane| {
                if let Some(error) = lane.failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
                    return Err(error);
                }
                let statistics = lane.writer.finish()?;
                Ok((lane.writer, statistics))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::TestRepository;
    use super::*;
    use std::fs;

    /// Makes every later write into `repository` fail: its temporary
    /// directory, where every object is written first, becomes a file.
    fn break_writes(repository: &TestRepository) {
        let tmp = repository.directory.path().join("repository/tmp");
        let _ = fs::remove_dir_all(&tmp);
        fs::write(&tmp, b"not a directory").unwrap();
    }

    #[test]
    fn a_blob_goes_to_each_repository_that_lacks_it() {
        let (first, second) = (TestRepository::new(), TestRepository::new());
        let (first_writer, second_writer) = (first.writer(), second.writer());
        let raw = b"only the first repository has this".to_vec();
        let id = Id::of(&raw);
        assert!(first_writer.add(BlobKind::Data, id, &raw).unwrap());
        let fan_out = FanOut::new(vec![first_writer, second_writer]);
        assert!(!fan_out.all_stored(&[id]).unwrap(), "the second lacks it");
        assert!(fan_out.add(BlobKind::Data, id, &raw).unwrap(), "new to one");
        assert!(fan_out.all_stored(&[id]).unwrap());
        assert!(
            !fan_out.add(BlobKind::Data, id, &raw).unwrap(),
            "new to none"
        );
        let finished = fan_out.finish();
        let statistics: Vec<WriterStatistics> = finished
            .into_iter()
            .map(|result| result.unwrap().1)
            .collect();
        assert_eq!(statistics[0].new_blobs, 1);
        assert_eq!(statistics[1].new_blobs, 1);
        assert_eq!(statistics[1].reused_blobs, 1);
    }

    #[test]
    fn a_repository_that_fails_is_set_aside_and_the_others_finish() {
        let (healthy, broken) = (TestRepository::new(), TestRepository::new());
        let fan_out = FanOut::new(vec![healthy.writer(), broken.writer()]);
        break_writes(&broken);
        let raw = b"stored where it can be".to_vec();
        fan_out.add(BlobKind::Data, Id::of(&raw), &raw).unwrap();
        let mut finished = fan_out.finish().into_iter();
        let (_, statistics) = finished.next().unwrap().expect("the healthy one finishes");
        assert_eq!(statistics.packs_written, 1);
        assert!(finished.next().unwrap().is_err(), "the broken one fails");
        assert_eq!(healthy.repository.list_packs().unwrap().len(), 1);
    }

    #[test]
    fn a_walk_failing_sets_every_repository_aside_and_the_first_keeps_the_error() {
        let (first, second) = (TestRepository::new(), TestRepository::new());
        let fan_out = FanOut::new(vec![first.writer(), second.writer()]);
        fan_out.fail_all(StoreError::Conflict("a prune got in the way".into()));
        let raw = b"too late".to_vec();
        let refused = fan_out.add(BlobKind::Data, Id::of(&raw), &raw).unwrap_err();
        assert!(
            refused.to_string().contains("every repository"),
            "{refused}"
        );
        let finished = fan_out.finish();
        assert!(matches!(&finished[0], Err(StoreError::Conflict(_))));
        match &finished[1] {
            Err(StoreError::Invalid(message)) => assert_eq!(message, "a prune got in the way"),
            _ => panic!("the second repository keeps the message"),
        }
    }
}
