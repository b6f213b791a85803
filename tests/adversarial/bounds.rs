//! Findings of the integrity review answered here: see main.rs.

#[allow(unused_imports)]
use crate::common::*;
