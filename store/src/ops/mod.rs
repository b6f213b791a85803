//! Operations on a repository, one per file (or folder, for backup and
//! restore). Each takes an options value and returns an outcome with
//! statistics; none prints. What several share lives in [`common`] and
//! [`walk`] (the one walker of a snapshot's trees), below them all; an
//! operation may build on another (a drill is a restore and a check), never
//! in a circle (`store/tests/layering.rs`).

pub mod annotate;
pub mod backup;
pub mod browse;
pub mod cat;
pub mod common;
pub mod copy;
pub mod diff;
pub mod drill;
pub mod dump;
pub mod find;
pub mod forget;
pub mod hooks;
pub mod init;
pub mod keys;
pub mod listing;
pub mod lock;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod retention;
pub mod rollback;
pub mod select;
pub mod stats;
pub mod unlock;
pub mod verify;
pub mod walk;

pub use walk::{read_tree, visit_blobs};
