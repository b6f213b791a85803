//! The format layer: one module per kind of thing the repository holds,
//! each owning its encoding, its decoding and its validation, with the
//! limits a reader checks before it trusts a length. `seal` is the one place
//! where an object's bytes are signed and opened (`request_auth` signs
//! requests to a repository server, never objects).
//!
//! Nothing here does I/O or knows where objects live: the layers above hand
//! bytes in and take bytes out. docs/FORMAT.md specifies every encoding.

pub mod annotation;
pub mod chunking;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod index;
pub mod keyring;
pub mod keys;
pub mod keyslot;
pub mod limits;
pub mod manifest;
pub mod pack;
pub mod records;
pub mod request_auth;
pub mod seal;
pub mod tree;
