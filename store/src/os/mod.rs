//! Operating-system helpers that every layer may use: direct (page-cache
//! bypassing) writes, the system's random numbers, directory handles that
//! never follow a swapped-in symlink, private (0700/0600) scratch
//! places, and network threads that a broken connection cannot kill. They
//! know nothing of repositories or formats.

pub(crate) mod dir;
pub mod direct_io;
pub mod private;
pub mod random;
pub mod sigpipe;
