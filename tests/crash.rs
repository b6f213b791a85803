//! Placeholder: filled in by the test author.

mod common;
