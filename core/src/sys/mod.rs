//! The only module that talks to the kernel.
//!
//! Every function here returns [`io::Result`].
//! The `unsafe` stays visible at each call site, with its own `// SAFETY:` comment, in the style
//! of std's `cvt`/`cvt_r` helpers rather than mio's `syscall!` macro: each call gets its own
//! argument for why it is sound.
//! Every new fd is wrapped in an [`OwnedFd`] the moment the kernel returns it, so it is closed
//! exactly once, on every path.
#![allow(unsafe_code)]

use std::ffi::OsStr;
use std::io::{self, IoSlice};
use std::mem::{self, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Instant;

/// Turns the `-1`-plus-errno convention into an [`io::Result`].
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Like [`cvt`], for calls that return `ssize_t`.
fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        // A non-negative `ssize_t` always fits in `usize`.
        Ok(ret as usize)
    }
}

/// Runs `f` until it fails with something other than `EINTR`.
fn cvt_r(mut f: impl FnMut() -> libc::c_int) -> io::Result<libc::c_int> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// epoll
// ---------------------------------------------------------------------------------------------

/// What a registration asks to be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Interest {
    pub(crate) readable: bool,
    pub(crate) writable: bool,
}

/// One readiness report, with its flags decoded so callers never see `libc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Event {
    /// The 64-bit token given at registration.
    pub(crate) token: u64,
    /// `EPOLLIN`: bytes (or a pending connection, or EOF) can be read.
    pub(crate) readable: bool,
    /// `EPOLLOUT`: the send buffer has room.
    pub(crate) writable: bool,
    /// `EPOLLRDHUP`: the peer shut down its write half (sent FIN).
    pub(crate) read_hup: bool,
    /// `EPOLLHUP`: both directions are shut down.
    pub(crate) hup: bool,
    /// `EPOLLERR`: an error is pending; read it with [`take_error`].
    pub(crate) error: bool,
}

/// An epoll instance, always used edge-triggered.
///
/// # Notes
///
/// - `epoll(7)`: with `EPOLLET` an event is reported when the file goes from not ready to
///   ready, so callers must drain (read, write or accept until `EAGAIN`) or remember that the
///   file is still ready.
/// - epoll tracks open file descriptions, not fd numbers: [`Epoll::delete`] must run before the
///   fd is closed, or a duplicate of it keeps producing events.
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// Creates an epoll instance with `EPOLL_CLOEXEC`.
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: `epoll_create1` takes no pointers; `EPOLL_CLOEXEC` is a valid flag.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: the kernel just returned `fd` as a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let mut flags = libc::EPOLLET | libc::EPOLLRDHUP;
        if interest.readable {
            flags |= libc::EPOLLIN;
        }
        if interest.writable {
            flags |= libc::EPOLLOUT;
        }
        // The flag constants are small positive `c_int`s, so the cast keeps every bit.
        let mut event = libc::epoll_event {
            events: flags as u32,
            u64: token,
        };
        // SAFETY: `self.fd` is a live epoll fd; `event` is a valid, initialised `epoll_event`
        // that outlives the call, and the kernel copies it before returning.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) })?;
        Ok(())
    }

    /// Registers `fd`, edge-triggered, with `EPOLLRDHUP` and `token` as its event data.
    pub(crate) fn add(&self, fd: BorrowedFd<'_>, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd.as_raw_fd(), token, interest)
    }

    /// Removes `fd` from the interest list. Call it before closing `fd`.
    pub(crate) fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        // SAFETY: `self.fd` is a live epoll fd and `fd` is borrowed, so open; since Linux
        // 2.6.9 the event pointer may be null for `EPOLL_CTL_DEL`.
        cvt(unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd.as_raw_fd(),
                std::ptr::null_mut(),
            )
        })?;
        Ok(())
    }

    /// Waits for events until `deadline` (`None`: forever), filling `events`.
    ///
    /// `EINTR` is retried with the timeout recomputed from `deadline`, so a signal storm can
    /// neither end the wait early with an error nor stretch it.
    /// Each retry bumps `interrupted`.
    /// `retry_eintr: false` is the known-bad variant that hands `EINTR` to the caller.
    pub(crate) fn wait(
        &self,
        events: &mut Events,
        deadline: Option<Instant>,
        retry_eintr: bool,
        interrupted: &mut u64,
    ) -> io::Result<()> {
        events.len = 0;
        loop {
            let timeout_ms: libc::c_int = match deadline {
                None => -1,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    // Round up, so a deadline 0.4 ms away does not busy-poll with timeout 0.
                    let ms = left.as_nanos().div_ceil(1_000_000);
                    ms.min(libc::c_int::MAX as u128) as libc::c_int
                }
            };
            let capacity = events.buf.len().min(libc::c_int::MAX as usize) as libc::c_int;
            // SAFETY: `self.fd` is a live epoll fd; `events.buf` holds `capacity` writable
            // `epoll_event`s (`MaybeUninit`, so the kernel may write any bytes), and the kernel
            // writes at most `capacity` of them.
            let ret = unsafe {
                libc::epoll_wait(
                    self.fd.as_raw_fd(),
                    events.buf.as_mut_ptr().cast::<libc::epoll_event>(),
                    capacity,
                    timeout_ms,
                )
            };
            match cvt(ret) {
                Ok(n) => {
                    // `n` is between 0 and `capacity`.
                    events.len = n as usize;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted && retry_eintr => {
                    *interrupted += 1;
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A reusable buffer of epoll events.
pub(crate) struct Events {
    buf: Box<[MaybeUninit<libc::epoll_event>]>,
    len: usize,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("capacity", &self.buf.len())
            .field("len", &self.len)
            .finish()
    }
}

impl Events {
    /// A buffer for up to `capacity` events per wait (at least one).
    pub(crate) fn with_capacity(capacity: usize) -> Events {
        let capacity = capacity.max(1);
        Events {
            buf: (0..capacity).map(|_| MaybeUninit::uninit()).collect(),
            len: 0,
        }
    }

    /// How many events the last wait returned.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The `i`th event of the last wait.
    pub(crate) fn get(&self, i: usize) -> Event {
        assert!(i < self.len, "event index out of range");
        // SAFETY: the last `epoll_wait` initialised the first `self.len` entries, and `i` is
        // below `self.len` (checked above).
        let raw = unsafe { self.buf[i].assume_init_read() };
        let flags = raw.events;
        let has = |flag: libc::c_int| flags & (flag as u32) != 0;
        Event {
            token: raw.u64,
            readable: has(libc::EPOLLIN),
            writable: has(libc::EPOLLOUT),
            read_hup: has(libc::EPOLLRDHUP),
            hup: has(libc::EPOLLHUP),
            error: has(libc::EPOLLERR),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// eventfd
// ---------------------------------------------------------------------------------------------

/// A non-blocking eventfd: the cross-thread wake-up of the loop.
///
/// # Notes
///
/// - `eventfd(2)`: a write adds to a 64-bit counter, and a read returns the counter and resets
///   it to zero.
/// - The loop must [`reset`](EventFd::reset) it *before* it drains the queues it guards, or a
///   push that lands between the drain and the reset loses its wake-up.
/// - A non-blocking write that would overflow the counter fails with `EAGAIN`; the counter is
///   then non-zero, so the loop is already signalled and [`signal`](EventFd::signal) reports
///   success.
#[derive(Debug)]
pub(crate) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// Creates a non-blocking, close-on-exec eventfd with counter 0.
    pub(crate) fn new() -> io::Result<EventFd> {
        // SAFETY: `eventfd` takes no pointers; the flags are valid.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: the kernel just returned `fd` as a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EventFd { fd })
    }

    /// Adds one to the counter, waking whoever waits on it.
    pub(crate) fn signal(&self) -> io::Result<()> {
        signal_raw(self.fd.as_raw_fd())
    }

    /// Reads and resets the counter; returns the count (0 if it was not signalled).
    pub(crate) fn reset(&self) -> io::Result<u64> {
        let mut value = 0u64;
        loop {
            // SAFETY: `self.fd` is a live eventfd and `value` is 8 writable bytes, the exact
            // size an eventfd read needs.
            let ret = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    (&mut value as *mut u64).cast(),
                    mem::size_of::<u64>(),
                )
            };
            return match cvt_size(ret) {
                Ok(_) => Ok(value),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }
}

/// Writes `1u64` to the eventfd `fd`; `EAGAIN` (counter full) means "already signalled".
///
/// Async-signal-safe: it only calls `write(2)`.
fn signal_raw(fd: RawFd) -> io::Result<()> {
    let one = 1u64;
    loop {
        // SAFETY: `one` is 8 readable bytes, the exact size an eventfd write needs; `fd` is an
        // eventfd the caller keeps open for the duration of the call.
        let ret = unsafe { libc::write(fd, (&one as *const u64).cast(), mem::size_of::<u64>()) };
        return match cvt_size(ret) {
            Ok(_) => Ok(()),
            // The counter is at its maximum, so the reader is already signalled.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

// ---------------------------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------------------------

/// A socket address of either family the loop speaks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A TCP address, IPv4 or IPv6.
    Tcp(SocketAddr),
    /// A Unix-domain stream socket path; `None` for an unnamed (unbound) socket, which is what
    /// connecting clients usually are.
    Unix(Option<PathBuf>),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(addr) => write!(f, "{addr}"),
            Endpoint::Unix(Some(path)) => write!(f, "unix:{}", path.display()),
            Endpoint::Unix(None) => f.write_str("unix:(unnamed)"),
        }
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Endpoint {
        Endpoint::Tcp(addr)
    }
}

impl From<PathBuf> for Endpoint {
    fn from(path: PathBuf) -> Endpoint {
        Endpoint::Unix(Some(path))
    }
}

impl From<&Path> for Endpoint {
    fn from(path: &Path) -> Endpoint {
        Endpoint::Unix(Some(path.to_path_buf()))
    }
}

/// Converts a kernel-filled `sockaddr_storage` of `len` bytes.
fn endpoint_from_storage(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Endpoint {
    let len = len as usize;
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family is `AF_INET` and the kernel wrote at least a whole
            // `sockaddr_in`; `sockaddr_storage` is aligned for every sockaddr type.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Endpoint::Tcp(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family is `AF_INET6` and the kernel wrote at least a whole
            // `sockaddr_in6`; `sockaddr_storage` is aligned for every sockaddr type.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Endpoint::Tcp(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        libc::AF_UNIX => {
            // SAFETY: the family is `AF_UNIX`; `sockaddr_storage` is larger than and aligned
            // for `sockaddr_un`, so the whole struct is readable (bytes past `len` are the
            // zeroes we initialised the storage with).
            let sun =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_un>() };
            let offset = mem::size_of::<libc::sa_family_t>();
            let path_len = len.saturating_sub(offset).min(sun.sun_path.len());
            let bytes: Vec<u8> = sun.sun_path[..path_len].iter().map(|&c| c as u8).collect();
            // The path ends at the first NUL (an abstract address starts with one: reported
            // as unnamed here).
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            let bytes = &bytes[..end];
            if bytes.is_empty() {
                Endpoint::Unix(None)
            } else {
                Endpoint::Unix(Some(PathBuf::from(OsStr::from_bytes(bytes))))
            }
        }
        _ => Endpoint::Unix(None),
    }
}

/// `accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)` on a listening socket.
///
/// `EINTR` is retried; `EAGAIN` comes back as [`io::ErrorKind::WouldBlock`].
pub(crate) fn accept(listener: BorrowedFd<'_>) -> io::Result<(OwnedFd, Endpoint)> {
    // SAFETY: `sockaddr_storage` is plain old data, valid when zeroed.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let fd = cvt_r(|| {
        len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: `listener` is an open socket; `storage` has room for `len` bytes and `len`
        // is a valid in/out pointer, both outliving the call.
        unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                (&mut storage as *mut libc::sockaddr_storage).cast(),
                &mut len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        }
    })?;
    // SAFETY: the kernel just returned `fd` as a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok((fd, endpoint_from_storage(&storage, len)))
}

/// `read(2)` into `buf`. `EAGAIN` comes back as [`io::ErrorKind::WouldBlock`].
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is `buf.len()` writable bytes that outlive the call; `fd` is open.
    cvt_size(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// The most slices one gathered write passes to the kernel (well below `IOV_MAX`, 1024).
pub(crate) const MAX_IOV: usize = 64;

/// A gathered write of `bufs`, in order: `writev(2)` semantics, issued as `sendmsg(2)` with
/// `MSG_NOSIGNAL` so that writing to a reset peer fails with `EPIPE` instead of raising
/// `SIGPIPE` in the host process.
///
/// `EAGAIN` comes back as [`io::ErrorKind::WouldBlock`].
/// May write fewer bytes than offered; the caller resumes from where it stopped.
pub(crate) fn writev(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: `msghdr` is plain old data, valid when zeroed (no name, no control data).
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    // `IoSlice` is documented to be ABI-compatible with `iovec` on Unix; the kernel only reads
    // through the pointer, so casting away `const` is sound.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(MAX_IOV) as _;
    // SAFETY: `msg` points at `msg_iovlen` valid `iovec`s borrowed from `bufs`, which outlive
    // the call; `fd` is an open socket.
    cvt_size(unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) })
}

/// Shuts down the write half: the peer reads EOF after the bytes already sent.
pub(crate) fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `shutdown` takes no pointers; `fd` is open.
    cvt(unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) })?;
    Ok(())
}

fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a readable `c_int` for the duration of the call and the length passed
    // is its exact size; `fd` is open.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

fn getsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` is a writable `c_int` and `len` its exact size, both outliving the call;
    // `fd` is open.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(value)
}

/// Sets `SO_SNDBUF` (the kernel doubles the value and applies a floor).
pub(crate) fn set_send_buffer(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    setsockopt_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_SNDBUF,
        bytes.min(i32::MAX as usize) as libc::c_int,
    )
}

/// Sets `SO_RCVBUF` (the kernel doubles the value and applies a floor).
pub(crate) fn set_recv_buffer(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    setsockopt_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_RCVBUF,
        bytes.min(i32::MAX as usize) as libc::c_int,
    )
}

/// Sets `TCP_NODELAY` (TCP sockets only).
pub(crate) fn set_nodelay(fd: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

/// Reads and clears `SO_ERROR`: the outcome of a non-blocking connect, or the error behind an
/// `EPOLLERR`.
pub(crate) fn take_error(fd: BorrowedFd<'_>) -> io::Result<Option<io::Error>> {
    let code = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)?;
    Ok((code != 0).then(|| io::Error::from_raw_os_error(code)))
}

/// Creates a non-blocking, close-on-exec stream socket of `family`.
fn stream_socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: `socket` takes no pointers; the arguments are valid constants.
    let fd = cvt(unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: the kernel just returned `fd` as a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Starts a non-blocking connect to `target`.
///
/// Returns the socket and whether the connect is still in progress (`EINPROGRESS`); an
/// in-progress connect completes when the socket turns writable, and [`take_error`] then tells
/// whether it worked.
pub(crate) fn connect(target: &Endpoint) -> io::Result<(OwnedFd, bool)> {
    // SAFETY: `sockaddr_storage` is plain old data, valid when zeroed.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let (family, len) = match target {
        Endpoint::Tcp(SocketAddr::V4(v4)) => {
            // SAFETY: `sockaddr_storage` is larger than and aligned for `sockaddr_in`.
            let sin = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            };
            (libc::AF_INET, mem::size_of::<libc::sockaddr_in>())
        }
        Endpoint::Tcp(SocketAddr::V6(v6)) => {
            // SAFETY: `sockaddr_storage` is larger than and aligned for `sockaddr_in6`.
            let sin6 = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: v6.ip().octets(),
            };
            sin6.sin6_flowinfo = v6.flowinfo();
            sin6.sin6_scope_id = v6.scope_id();
            (libc::AF_INET6, mem::size_of::<libc::sockaddr_in6>())
        }
        Endpoint::Unix(Some(path)) => {
            // SAFETY: `sockaddr_storage` is larger than and aligned for `sockaddr_un`.
            let sun = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_un>()
            };
            sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
            let bytes = path.as_os_str().as_bytes();
            // Leave room for the terminating NUL the zeroed storage provides.
            if bytes.len() >= sun.sun_path.len() || bytes.contains(&0) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "unix socket path too long or contains NUL",
                ));
            }
            for (dst, &src) in sun.sun_path.iter_mut().zip(bytes) {
                *dst = src as libc::c_char;
            }
            (
                libc::AF_UNIX,
                mem::size_of::<libc::sa_family_t>() + bytes.len() + 1,
            )
        }
        Endpoint::Unix(None) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot connect to an unnamed unix socket",
            ));
        }
    };
    let fd = stream_socket(family)?;
    // SAFETY: `storage` holds a valid address of `family` in its first `len` bytes and outlives
    // the call; `fd` is an open socket of that family.
    let ret = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len as libc::socklen_t,
        )
    };
    match cvt(ret) {
        Ok(_) => Ok((fd, false)),
        // `EINTR` on a non-blocking connect also means the attempt continues in the background.
        Err(e)
            if e.raw_os_error() == Some(libc::EINPROGRESS)
                || e.kind() == io::ErrorKind::Interrupted =>
        {
            Ok((fd, true))
        }
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------------
// Signals, threads and limits
// ---------------------------------------------------------------------------------------------

/// The eventfd the termination-signal handler writes to (-1: none).
static SIGNAL_WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// Set by the termination-signal handler before it writes [`SIGNAL_WAKE_FD`].
pub(crate) static TERMINATION_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_termination_signal(_signal: libc::c_int) {
    // Only async-signal-safe work here: two atomics and one `write(2)`.
    // Release pairs with the loop's Acquire load of `TERMINATION_REQUESTED` after it wakes.
    TERMINATION_REQUESTED.store(true, Ordering::Release);
    let fd = SIGNAL_WAKE_FD.load(Ordering::Acquire);
    if fd >= 0 {
        // Ignored: there is nothing a signal handler can do about a failed wake-up.
        let _ = signal_raw(fd);
    }
}

extern "C" fn on_noop_signal(_signal: libc::c_int) {}

fn install_handler(signal: libc::c_int, handler: extern "C" fn(libc::c_int)) -> io::Result<()> {
    // SAFETY: `sigaction` is plain old data, valid when zeroed.
    let mut action: libc::sigaction = unsafe { mem::zeroed() };
    action.sa_sigaction = handler as usize;
    // No `SA_RESTART`: blocking calls see `EINTR`, which is what callers test for.
    action.sa_flags = 0;
    // SAFETY: `action.sa_mask` is a valid `sigset_t` to initialise.
    cvt(unsafe { libc::sigemptyset(&mut action.sa_mask) })?;
    // SAFETY: `action` is fully initialised, `handler` is an `extern "C"` function that only does
    // async-signal-safe work, and a null old-action pointer is allowed.
    cvt(unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) })?;
    Ok(())
}

/// Makes `SIGINT` and `SIGTERM` set [`TERMINATION_REQUESTED`] and signal the eventfd `wake`.
///
/// The handler writes to a duplicate of `wake` that is never closed (one fd per call, for the
/// life of the process): a signal can arrive at any moment, even while the loop that owns
/// `wake` is being dropped, and a closed fd number could by then name an unrelated file.
/// A duplicate left over from an earlier call stays open for the same reason.
pub(crate) fn install_termination_handler(wake: &EventFd) -> io::Result<()> {
    let dup = wake.fd.try_clone()?;
    // A fresh loop starts without a pending request from an earlier loop's signal.
    TERMINATION_REQUESTED.store(false, Ordering::Release);
    // Intentionally leaked: see above.
    let raw = std::os::fd::IntoRawFd::into_raw_fd(dup);
    SIGNAL_WAKE_FD.store(raw, Ordering::Release);
    install_handler(libc::SIGINT, on_termination_signal)?;
    install_handler(libc::SIGTERM, on_termination_signal)
}

/// Installs a handler for `signal` that does nothing, so the signal interrupts blocking calls
/// with `EINTR` instead of killing the process.
pub(crate) fn install_noop_handler(signal: libc::c_int) -> io::Result<()> {
    install_handler(signal, on_noop_signal)
}

/// An opaque id of an OS thread, for [`interrupt_thread`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ThreadId(libc::pthread_t);

/// The calling thread's id.
pub(crate) fn current_thread() -> ThreadId {
    // SAFETY: `pthread_self` has no preconditions.
    ThreadId(unsafe { libc::pthread_self() })
}

/// Sends `signal` to `thread`, which must still be running.
pub(crate) fn interrupt_thread(thread: ThreadId, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: the caller guarantees `thread` has not exited (the reactor only interrupts its
    // loop thread while `run` is executing, under a lock `run` takes before returning).
    let ret = unsafe { libc::pthread_kill(thread.0, signal) };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(ret))
    }
}

/// `SIGUSR1`, re-exported so no other module names `libc`.
pub(crate) const SIGUSR1: i32 = libc::SIGUSR1;

/// Returns the soft and hard `RLIMIT_NOFILE`.
pub(crate) fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a writable `rlimit` that outlives the call.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    // `rlim_t` is `u64` on Linux.
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Sets the soft `RLIMIT_NOFILE`, keeping the hard limit.
pub(crate) fn set_nofile_soft_limit(soft: u64) -> io::Result<()> {
    let (_, hard) = nofile_limit()?;
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `limit` is a readable `rlimit` that outlives the call.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) })?;
    Ok(())
}

/// Whether `err` means the process or system ran out of file descriptors.
pub(crate) fn is_fd_exhaustion(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// Whether `err` is a connection reset (or a write after one).
pub(crate) fn is_reset(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ECONNRESET) | Some(libc::EPIPE)
    )
}

/// Errors `accept` may return for a connection that died in the backlog; the listener is fine.
pub(crate) fn is_transient_accept_error(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ECONNABORTED)
            | Some(libc::EPROTO)
            | Some(libc::EPERM)
            | Some(libc::ENETDOWN)
            | Some(libc::ENOPROTOOPT)
            | Some(libc::EHOSTDOWN)
            | Some(libc::ENONET)
            | Some(libc::EHOSTUNREACH)
            | Some(libc::EOPNOTSUPP)
            | Some(libc::ENETUNREACH)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adds `value` to the eventfd's counter with one raw write.
    fn add(fd: &EventFd, value: u64) -> io::Result<usize> {
        // SAFETY: `value` is 8 readable bytes, the size an eventfd write needs; `fd` is open.
        cvt_size(unsafe {
            libc::write(
                fd.fd.as_raw_fd(),
                (&value as *const u64).cast(),
                mem::size_of::<u64>(),
            )
        })
    }

    #[test]
    fn signal_on_a_full_eventfd_counter_counts_as_already_signalled() {
        let fd = EventFd::new().unwrap();
        // The counter's maximum is u64::MAX - 1.
        add(&fd, u64::MAX - 1).unwrap();
        // The situation is real: a plain write of 1 now fails with EAGAIN...
        let raw = add(&fd, 1).unwrap_err();
        assert_eq!(raw.kind(), io::ErrorKind::WouldBlock);
        // ...and `signal` treats it as "already signalled" instead of an error.
        fd.signal().unwrap();
        assert_eq!(
            fd.reset().unwrap(),
            u64::MAX - 1,
            "the wake-up is still pending"
        );
        assert_eq!(fd.reset().unwrap(), 0, "and reset consumed it");
    }

    #[test]
    fn reset_returns_the_count_and_zeroes_it() {
        let fd = EventFd::new().unwrap();
        assert_eq!(
            fd.reset().unwrap(),
            0,
            "an unsignalled eventfd reads as 0 without blocking"
        );
        fd.signal().unwrap();
        fd.signal().unwrap();
        assert_eq!(fd.reset().unwrap(), 2);
        assert_eq!(fd.reset().unwrap(), 0);
    }

    #[test]
    fn epoll_reports_an_eventfd_edge_once_per_signal() {
        let epoll = Epoll::new().unwrap();
        let fd = EventFd::new().unwrap();
        epoll
            .add(
                fd.as_fd(),
                7,
                Interest {
                    readable: true,
                    writable: false,
                },
            )
            .unwrap();
        let mut events = Events::with_capacity(4);
        let mut interrupted = 0;
        let now = Some(Instant::now());
        epoll
            .wait(&mut events, now, true, &mut interrupted)
            .unwrap();
        assert_eq!(events.len(), 0);
        fd.signal().unwrap();
        epoll
            .wait(&mut events, now, true, &mut interrupted)
            .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events.get(0).token, 7);
        assert!(events.get(0).readable);
        // Edge-triggered: no new edge until the next signal, even though it was not reset.
        epoll
            .wait(&mut events, now, true, &mut interrupted)
            .unwrap();
        assert_eq!(events.len(), 0);
    }

    #[test]
    fn accepted_peer_addresses_are_decoded() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // A blocking listener: accept4 waits for the client, which is already connected.
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        use std::os::fd::AsFd;
        let (_fd, peer) = accept(listener.as_fd()).unwrap();
        assert_eq!(peer, Endpoint::Tcp(client.local_addr().unwrap()));
    }
}
