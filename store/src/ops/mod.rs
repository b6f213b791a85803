//! Operations on a repository, one per file. Each takes an options value and
//! returns an outcome with statistics; none prints.

pub mod backup;
pub mod cat;
pub mod copy;
pub mod fan_out;
pub mod forget;
pub mod listing;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod retention;
pub mod verify;
pub mod walk;

pub use walk::{read_tree, visit_blobs};

/// Joins a component-relative path and a name, `/`-separated.
pub fn join_relative(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}
