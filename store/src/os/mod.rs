//! Operating-system helpers that every layer may use: direct (page-cache
//! bypassing) writes and the system's random numbers. They know nothing of
//! repositories or formats.

pub mod direct_io;
pub mod random;
