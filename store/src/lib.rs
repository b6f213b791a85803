//! The cairn repository and the operations on it.
//!
//! Layers, lowest first; each only uses those before it (the layering test
//! in `store/tests/layering.rs` checks the `use` lines):
//! - [`error`], [`id`], [`os`]: typed errors, the one id type, OS helpers.
//! - [`format`]: one module per kind of object the repository holds, each
//!   owning its encoding and validation; [`format::seal`] signs and opens
//!   objects. No I/O.
//! - [`backend`]: immutable objects by kind and name (a local directory, S3,
//!   memory), create-if-absent, ranged reads, listing.
//! - [`keystore`]: secret key files and the trust store on this machine.
//! - [`repository`]: a backend plus its config; verified object reads.
//! - [`index`]: the local cache of the repository's index files.
//! - [`progress`]: how long operations report how far they are.
//! - [`ops`]: backup, restore, verify, prune and the rest; each with an
//!   options type and an outcome with statistics.
//!
//! The library never prints: operations return outcomes and notices, and the
//! CLI decides what to show. The on-disk format is specified in
//! `docs/FORMAT.md`; the layers and their invariants in `docs/DESIGN.md`.

// Guard rails (docs/DESIGN.md): no unwrap or expect outside tests.
#![deny(clippy::unwrap_used, clippy::expect_used)]
// The library never prints: it returns outcomes and reports progress.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod backend;
pub mod error;
pub mod format;
pub mod id;
pub mod index;
pub mod keystore;
pub mod ops;
pub(crate) mod os;
pub mod progress;
pub mod repository;

pub use error::{Result, StoreError};
pub use id::Id;
/// Private (0700/0600) scratch places, for a caller's staging directory.
pub use os::private;
pub use repository::Repository;
