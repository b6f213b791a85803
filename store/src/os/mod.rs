//! Operating-system helpers that every layer may use: direct (page-cache
//! bypassing) writes, the system's random numbers, directory handles that
//! never follow a swapped-in symlink, private (0700/0600) scratch
//! places, network threads that a broken connection cannot kill, and
//! read-ahead hints to the kernel, Argon2's working memory. They know nothing of repositories or
//! formats.

pub mod argon2_memory;
pub(crate) mod dir;
pub mod direct_io;
pub mod private;
pub mod random;
pub mod sigpipe;
pub mod will_read;
