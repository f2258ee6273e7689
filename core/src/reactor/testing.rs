//! Helpers for refloop's own tests: process limits and signals, without naming `libc` outside
//! `sys`. Not part of the supported API.

use std::io;

/// Installs a do-nothing `SIGUSR1` handler (no `SA_RESTART`), so
/// [`LoopHandle::interrupt_loop_thread`](super::LoopHandle::interrupt_loop_thread) makes
/// `epoll_wait` fail with `EINTR` instead of killing the process.
pub fn install_noop_sigusr1() -> io::Result<()> {
    crate::sys::install_noop_handler(crate::sys::SIGUSR1)
}

/// The soft and hard `RLIMIT_NOFILE`.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    crate::sys::nofile_limit()
}

/// Sets the soft `RLIMIT_NOFILE`, keeping the hard limit.
pub fn set_nofile_soft_limit(soft: u64) -> io::Result<()> {
    crate::sys::set_nofile_soft_limit(soft)
}

/// How many fds this process has open (entries of `/proc/self/fd`, minus the one used to list
/// them).
pub fn open_fd_count() -> io::Result<usize> {
    let entries = std::fs::read_dir("/proc/self/fd")?.count();
    Ok(entries.saturating_sub(1))
}
