//! The few kernel calls the harness needs that std does not offer: epoll for the load
//! generator, `setrlimit` to open 10,000 connections, `kill` to stop servers gracefully, the
//! clock tick rate for reading `/proc/<pid>/stat`, and an eventfd for the queue benchmark.
//!
//! This is the only module of the bench crate that names `libc` or contains `unsafe`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Turns a `-1` return into the current `errno`.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Readable (`EPOLLIN`).
pub const READABLE: u32 = libc::EPOLLIN as u32;
/// Writable (`EPOLLOUT`).
pub const WRITABLE: u32 = libc::EPOLLOUT as u32;
/// Hang-up or error (`EPOLLHUP | EPOLLERR`).
pub const HUP_OR_ERROR: u32 = (libc::EPOLLHUP | libc::EPOLLERR) as u32;

/// A level-triggered epoll instance.
///
/// # Notes
///
/// The load generator uses level-triggering on purpose: it is a simple, obviously correct
/// client, and its cost is the same whichever server it drives (see epoll(7)).
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
    buf: Vec<libc::epoll_event>,
}

/// One ready event: the token given at registration and the ready flags.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    /// The registration token.
    pub token: u64,
    /// The `EPOLL*` flags that are ready.
    pub flags: u32,
}

impl Epoll {
    /// Creates an epoll instance with `EPOLL_CLOEXEC`.
    ///
    /// # Errors
    ///
    /// Returns the `epoll_create1` error.
    pub fn new(capacity: usize) -> io::Result<Epoll> {
        // SAFETY: `epoll_create1` takes no pointers; a non-negative return is a new fd that
        // nothing else owns, so wrapping it in `OwnedFd` at once is sound.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by `epoll_create1` and is owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let buf = vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)];
        Ok(Epoll { fd, buf })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, flags: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: flags,
            u64: token,
        };
        // SAFETY: `self.fd` is a live epoll fd; `ev` is a valid, initialised `epoll_event` that
        // outlives the call; the kernel copies it and keeps no pointer to it.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) })?;
        Ok(())
    }

    /// Registers `fd` for `flags` with `token`.
    ///
    /// # Errors
    ///
    /// Returns the `epoll_ctl` error.
    pub fn add(&self, fd: &impl AsRawFd, flags: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd.as_raw_fd(), flags, token)
    }

    /// Changes the flags of a registered `fd`.
    ///
    /// # Errors
    ///
    /// Returns the `epoll_ctl` error.
    pub fn modify(&self, fd: &impl AsRawFd, flags: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd.as_raw_fd(), flags, token)
    }

    /// Waits up to `timeout_ms` for at most `capacity` events, filling `out` (cleared first).
    ///
    /// `EINTR` is reported as zero events; the caller loops anyway.
    ///
    /// # Errors
    ///
    /// Returns the `epoll_wait` error other than `EINTR`.
    pub fn wait(&mut self, out: &mut Vec<Event>, timeout_ms: i32) -> io::Result<()> {
        out.clear();
        let max = libc::c_int::try_from(self.buf.len()).unwrap_or(libc::c_int::MAX);
        let (epfd, raw) = (self.fd.as_raw_fd(), self.buf.as_mut_ptr());
        // SAFETY: `self.buf` holds `buf.len()` initialised events and `max <= buf.len()`, so the
        // kernel writes only inside the buffer; `epfd` is the live epoll fd this value owns.
        let n = unsafe { libc::epoll_wait(epfd, raw, max, timeout_ms) };
        if n == -1 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(err);
        }
        for ev in &self.buf[..n as usize] {
            out.push(Event {
                token: ev.u64,
                flags: ev.events,
            });
        }
        Ok(())
    }
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit and returns the new soft limit.
///
/// Child processes (the servers) inherit it.
///
/// # Errors
///
/// Returns the `getrlimit`/`setrlimit` error.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit` for the duration of the call.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid, initialised `rlimit`; raising the soft limit up to the hard
    // limit needs no privilege.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    Ok(lim.rlim_cur)
}

/// Sends `signal` (such as `libc::SIGTERM`) to process `pid`.
///
/// # Errors
///
/// Returns the `kill` error, for example `ESRCH` when the process is gone.
pub fn send_signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `kill` takes no pointers; `pid` is positive, so exactly one process is signalled.
    cvt(unsafe { libc::kill(pid, signal) })?;
    Ok(())
}

/// Sets `SO_LINGER` to zero seconds on `socket`, so that closing it sends an RST and leaves no
/// `TIME_WAIT` entry behind.
///
/// # Notes
///
/// The load generator opens tens of thousands of connections per run; with orderly closes their
/// `TIME_WAIT` entries fill the ephemeral port range and make every later `connect` search for
/// a free port (see tcp(7) and socket(7), `SO_LINGER`).
///
/// # Errors
///
/// Returns the `setsockopt` error.
pub fn set_linger_zero(socket: &impl AsRawFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let len = std::mem::size_of::<libc::linger>() as libc::socklen_t;
    // SAFETY: `linger` is a valid, initialised `struct linger` that outlives the call and `len`
    // is its exact size; the kernel only reads it. `socket` is a live fd borrowed for the call.
    cvt(unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            len,
        )
    })?;
    Ok(())
}

/// `SIGTERM`.
pub const SIGTERM: libc::c_int = libc::SIGTERM;
/// `SIGKILL`.
pub const SIGKILL: libc::c_int = libc::SIGKILL;

/// Clock ticks per second, the unit of `utime` and `stime` in `/proc/<pid>/stat`.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: `sysconf` takes no pointers and has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// Bytes per page, the unit of `/proc/<pid>/statm`.
pub fn page_size() -> u64 {
    // SAFETY: `sysconf` takes no pointers and has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

/// A blocking eventfd (`eventfd(2)` without `EFD_NONBLOCK`): the wake-up the queue benchmark's
/// eventfd pattern uses, as the loop does.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A fresh eventfd with a zero counter.
    ///
    /// # Errors
    ///
    /// Returns the `eventfd` error.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: `eventfd` takes no pointers; the returned fd is wrapped at once.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by `eventfd` and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EventFd { fd })
    }

    /// `write(fd, 1)`: adds one to the counter, waking a blocked reader.
    ///
    /// # Errors
    ///
    /// Returns the `write` error.
    pub fn signal(&self) -> io::Result<()> {
        let one: u64 = 1;
        // SAFETY: `one` is 8 readable bytes that outlive the call; the fd is live.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if n == 8 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `read(fd)`: blocks until the counter is non-zero, then takes and resets it.
    ///
    /// # Errors
    ///
    /// Returns the `read` error (after retrying `EINTR`).
    pub fn wait(&self) -> io::Result<u64> {
        loop {
            let mut count: u64 = 0;
            // SAFETY: `count` is 8 writable bytes that outlive the call; the fd is live.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
            if n == 8 {
                return Ok(count);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}
