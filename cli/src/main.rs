//! The `cairn` binary: parses the command line, runs one command, and turns
//! its outcome into output and an exit code. All repository work happens in
//! `cairn-store`; this crate owns wording, formatting and exit codes.

// Guard rails (docs/DESIGN.md): no unwrap or expect outside tests.
#![deny(clippy::unwrap_used, clippy::expect_used)]

mod args;
mod commands;
mod context;
mod credentials;
mod interrupt;
mod metrics;
mod output;
mod plan;
mod plan_shape;
mod progress;
mod retention;
mod serve;

use clap::Parser;
use std::process::ExitCode;

/// Exit codes, as documented in `--help` and the README.
pub mod exit {
    pub const SUCCESS: u8 = 0;
    pub const ERROR: u8 = 1;
    /// A backup completed, but some files could not be read or changed.
    pub const INCOMPLETE: u8 = 3;
    /// Verify found damage, or some files could not be restored.
    pub const DAMAGE: u8 = 4;
    /// A restore was refused by a preflight check.
    pub const REFUSED: u8 = 5;
    /// A concurrent prune removed data this run needed; running it again
    /// resolves it.
    pub const CONFLICT: u8 = 6;
    /// A component marked critical failed; the others were stored.
    pub const CRITICAL: u8 = 7;
    /// A backup into several repositories failed in some; the others hold
    /// their snapshot.
    pub const SOME_REPOSITORIES_FAILED: u8 = 8;
    /// A restore's check failed and the target was rolled back to what it
    /// was before the restore.
    pub const ROLLED_BACK: u8 = 10;
    /// A restore failed because the target could not be written (no
    /// space, quota, read-only): not damage in the repository.
    pub const TARGET_UNWRITABLE: u8 = 9;
    /// How cairn was called is wrong (clap uses the same code).
    pub const USAGE: u8 = 2;
    /// An encrypted repository could not be opened: no key slot opens with
    /// the passphrase given, or no passphrase was given; or the key given
    /// is write-only and the command needs the read key.
    pub const LOCKED: u8 = 11;
}

/// One malloc arena per core, at most [`MAX_MALLOC_ARENAS`]. glibc gives
/// each thread its own (up to 8 per core), and buffers of several MiB freed
/// in one were kept there rather than reused by another: on the full-scale
/// benchmark a restore peaked at 256 MiB RSS with the default and 109 MiB
/// with one arena, a first backup at 141 and 107 MiB. (mimalloc, tried
/// instead, peaked at 212 and 214 MiB.) But with one arena every thread
/// queued on its lock: a restore of the real applications' deltas, which
/// allocate a base and a decoded chunk per delta from both cores at once,
/// spent 5–7% of its samples waking and waiting on it. Two arenas (2 cores)
/// took that restore from 0.87–1.02 s to 0.77–0.83 s, with the same peak
/// RSS there, on the modelled workload and on the toolchain tree
/// (docs/PERFORMANCE.md, "Malloc arenas").
///
/// And a fixed mmap threshold of [`MMAP_THRESHOLD`]: glibc's own starts
/// at 128 KiB but rises to the size of every mmapped block freed (up to
/// 32 MiB), so after the first 16 MiB pack or the Argon2 unlock's 64 MiB
/// had gone, packs, read-ahead blocks and chunk batches came from the
/// heap, and the heap kept their pages after they were freed. A fixed
/// threshold gives such buffers back the moment they are freed: the first
/// backup of the modelled workload peaked at 157–172 MiB without it and
/// 114–116 MiB with it (CPU 0.1–0.2 s more of system time: fresh pages
/// are faulted in and zeroed).
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let arenas = cores.clamp(1, MAX_MALLOC_ARENAS) as libc::c_int;
        // SAFETY: called before any other thread exists; mallopt only
        // tunes the allocator.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        }
    }
}

/// Arenas beyond this many would keep more freed memory apart than a
/// larger machine's extra cores gain from them ([`limit_malloc_arenas`]).
#[cfg(target_env = "gnu")]
const MAX_MALLOC_ARENAS: usize = 8;

/// Allocations from this size up are mapped on their own and unmapped when
/// freed ([`limit_malloc_arenas`]). Above the 128 KiB shared frames and
/// most chunks, which come and go by the thousand; below the read-ahead
/// blocks, chunk batches and packs, which are few and large.
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD: libc::c_int = 1024 * 1024;

fn main() -> ExitCode {
    // Like other command-line tools, end quietly when a reader such as
    // `head` closes the pipe, instead of panicking on the failed write.
    // SAFETY: restoring the default disposition of SIGPIPE before any
    // thread starts has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    limit_malloc_arenas();
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return output::clap_error(error),
    };
    progress::force(cli.global.progress);
    if let Some(cipher) = cli.global.pack_cipher {
        use cairn_store::format::crypto::PackCipher;
        PackCipher::choose(match cipher {
            args::PackCipherArg::Aes256Gcm => PackCipher::Aes256Gcm,
            args::PackCipherArg::Xchacha20poly1305 => PackCipher::XChaCha20Poly1305,
        });
    }
    if let Err(error) = interrupt::install(cli.global.json) {
        eprintln!("cairn: warning: {error:#}; Ctrl-C may leave staging files behind");
    }
    let json = cli.global.json;
    let context = context::Context { global: cli.global };
    match commands::run(&context, cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            let failure = output::Failure::of(&error);
            failure.print(&error, json);
            ExitCode::from(failure.exit_code)
        }
    }
}
