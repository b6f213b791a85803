//! The cairn repository and the operations on it.
//!
//! Layers, lowest first; each only uses those before it:
//! - [`backend`]: immutable objects by kind and name (local directory today,
//!   object storage later), create-if-absent, ranged reads, listing.
//! - [`pack`], [`index`], [`tree`], [`manifest`], [`config`], [`keys`]: one
//!   module per kind of thing the repository holds, each owning its encoding
//!   and validation.
//! - [`repository`]: a backend plus its config; verified object reads.
//! - [`ops`]: backup, restore, verify, listing; one operation per file, each
//!   with an options type and an outcome with statistics.
//!
//! The library never prints: operations return outcomes and notices, and the
//! CLI decides what to show. The on-disk format is specified in
//! `docs/FORMAT.md`.

pub mod backend;
pub mod chunking;
pub mod codec;
pub mod config;
pub mod direct_io;
pub mod error;
pub mod id;
pub mod index;
pub mod keys;
pub mod manifest;
pub mod ops;
pub mod pack;
pub mod progress;
pub mod random;
pub mod records;
pub mod repository;
pub mod sqlite;
pub mod tree;

pub use error::{Result, StoreError};
pub use id::Id;
pub use repository::Repository;
