//! Keeping a broken connection from killing the process: the CLI restores
//! SIGPIPE's default action (end quietly when `head` closes stdout), and a
//! `writev` on a socket the other end has closed raises SIGPIPE in the
//! writing thread (only `send` can be told not to; hyper writes vectored).
//! [`block_on_this_thread`] blocks the signal in a thread that only talks to
//! the network, where the write then fails with `EPIPE` and the client
//! reports a broken connection.
//!
//! Never touches the process-wide disposition, nor any thread that writes
//! to stdout.

/// Blocks SIGPIPE in the calling thread (for an async runtime's
/// `on_thread_start`). A thread-directed SIGPIPE that is blocked stays
/// pending and does nothing; the write returns `EPIPE`.
pub fn block_on_this_thread() {
    // SAFETY: `set` is initialised by sigemptyset before use, and
    // pthread_sigmask only changes the calling thread's mask; the old mask
    // is not wanted (null).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}
