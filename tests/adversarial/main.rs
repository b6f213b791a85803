//! The adversarial suite: one end-to-end test per finding of the integrity
//! review (docs/FORMAT.md, "Threat model"). Each test sets up an attack
//! against the real `cairn` binary, runs the owner's routine commands
//! afterwards, and asserts that nothing is lost and that the planted or
//! damaged object is reported by name. Tests are named `finding_N_…` after
//! the numbered finding they answer; each area keeps its own module.

#[path = "../common/mod.rs"]
mod common;

mod binding;
mod bounds;
mod restore_ground;
mod vouching;
