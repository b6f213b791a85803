//! Restore: put a snapshot's components back on disk, into an empty or an
//! existing target, verified, atomically per file, and reversibly.
//!
//! 1. [`check_snapshot`] and [`prepare_restore`] ([`prepare`]): judge the
//!    snapshot's signature and age ([`preflight`]), select components and
//!    paths ([`select`]), compare the snapshot with the target ([`plan`])
//!    and count what must be fetched; the [`PreflightPolicy`] says which
//!    verdicts refuse the restore. Preparing writes nothing; `--dry-run`
//!    stops here and prints the plan.
//! 2. [`execute()`] ([`execute`](mod@execute)):
//!    - if the plan overwrites or deletes anything that exists, take a
//!      safety snapshot of exactly those paths, plus a journal of what will
//!      be created ([`safety`]); if it cannot be taken, stop;
//!    - remove leftover temporaries, then what is replaced or extra;
//!    - everything below a component's root is reached through directory
//!      handles ([`ground`]): no symlink is followed, and a directory
//!      swapped for something else fails by name;
//!    - create directories, write files in batches: each batch's chunks
//!      are read from the repository pack by pack ([`prefetch`], [`fetch`];
//!      the next batch's while this one is written), then its files are
//!      written in parallel ([`pipeline`]), each to a temporary name,
//!      verified ([`write`](mod@write), [`output`]), made
//!      durable with one sync, then renamed (the sync and renames run while
//!      the next batch is written); then create symlinks, and set
//!      directory metadata deepest first. A directory component whose
//!      destination does not exist is built in a staging directory beside
//!      it instead ([`ComponentPlan::staging`]): files go under their final
//!      names there, with no rename each, and the whole directory is
//!      renamed into place at the end. Components are written side by
//!      side, three at a time at most (the rest wait, in order, for a
//!      slot); a component frees its slot once its last batch is written,
//!      and that batch's sync and renames, and the symlinks and directory
//!      metadata after them, run meanwhile;
//!    - if anything failed and a safety snapshot was taken, undo: remove
//!      what was created, restore the saved paths, and say so;
//!    - otherwise run SQLite's integrity check on each restored database
//!      component, and report it in the outcome.
//!
//! [`run_restore`] ([`runbook`]) wraps the two in a runbook's steps: the
//! before-hooks, the restore, the checks (a failed one rolls the target
//! back from the safety snapshot) and the after-hooks, which always run.
//!
//! [`undo_restore`] ([`undo`]) puts a target back from a finished
//! restore's safety snapshot.
//!
//! The files form a line; each imports only files named before it here:
//! [`select`], [`fetch`], [`ground`] and [`output`] import none;
//! [`place`] imports [`ground`]; [`plan`] imports [`select`], [`fetch`]
//! and [`place`]; [`preflight`], [`safety`] and [`prefetch`] import
//! [`plan`] and files before it; [`write`](mod@write) imports [`plan`],
//! [`fetch`], [`ground`], [`place`] and [`output`]; then come
//! [`prepare`], [`pipeline`],
//! [`execute`](mod@execute), [`undo`] and [`runbook`], in that order. Planning fetches
//! trees and writing fetches chunks, but fetching knows neither. This
//! module only names the files.
//!
//! Without a safety snapshot (a target whose existing contents the restore
//! does not touch, or `--no-safety-snapshot`), a file that fails is
//! reported and the others stay restored; running the same restore again
//! finishes the job and skips what is already right.

pub(crate) mod execute;
pub(crate) mod fetch;
pub(crate) mod ground;
#[cfg(test)]
mod hostile_journal;
pub(crate) mod output;
pub(crate) mod pipeline;
pub(crate) mod place;
pub(crate) mod plan;
pub(crate) mod prefetch;
pub(crate) mod preflight;
pub(crate) mod prepare;
pub(crate) mod runbook;
pub(crate) mod safety;
pub(crate) mod select;
#[cfg(test)]
pub(crate) mod testing;
pub(crate) mod undo;
pub(crate) mod write;

pub use crate::progress::{NoProgress, Progress};
pub use execute::{DatabaseCheck, RestoreFailure, RestoreOutcome, execute, execute_restore};
pub use fetch::{Fallback, FallbackUse, Sources};
pub use place::MetadataPolicy;
pub use plan::{Action, ComponentPlan, PlanCounts};
pub use preflight::{PreflightPolicy, Status, Verdict, parse_duration, parse_point_in_time};
pub use prepare::{
    AtRisk, CheckedSnapshot, Decision, PreparedRestore, RestoreOptions, RestorePlan,
    RestoreRequest, check_snapshot, plan_restore, prepare_restore,
};
pub use runbook::{HookRun, HookSet, RestoreHooks, RunbookOutcome, RunbookResult, run_restore};
pub use select::{Selection, select_components};
pub use undo::undo_restore;
