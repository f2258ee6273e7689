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

use std::os::fd::AsFd;

use crate::os::{Event, Interest, Linux, Os, Shutdown, MAX_IOV};

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

// ---------------------------------------------------------------------------------------------
// epoll
// ---------------------------------------------------------------------------------------------

/// `epoll_create1(EPOLL_CLOEXEC)`.
///
/// # Notes
///
/// - `epoll(7)`: with `EPOLLET` an event is reported when the file goes from not ready to
///   ready, so callers must drain (read, write or accept until `EAGAIN`) or remember that the
///   file is still ready.
/// - epoll tracks open file descriptions, not fd numbers: `EPOLL_CTL_DEL` must run before the
///   fd is closed, or a duplicate of it keeps producing events.
fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: `epoll_create1` takes no pointers; `EPOLL_CLOEXEC` is a valid flag.
    let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: the kernel just returned `fd` as a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn epoll_ctl(
    epoll: BorrowedFd<'_>,
    op: libc::c_int,
    fd: BorrowedFd<'_>,
    token: u64,
    interest: Interest,
) -> io::Result<()> {
    // `EPOLLEXCLUSIVE` allows only `EPOLLIN`, `EPOLLOUT`, `EPOLLWAKEUP` and `EPOLLET` beside it
    // (`epoll_ctl(2)`: EINVAL otherwise); it is only used for listeners, which need no more.
    let mut flags = if interest.exclusive {
        libc::EPOLLET | libc::EPOLLEXCLUSIVE
    } else {
        libc::EPOLLET | libc::EPOLLRDHUP
    };
    if interest.readable {
        flags |= libc::EPOLLIN;
        if !interest.exclusive {
            flags |= libc::EPOLLPRI;
        }
    }
    if interest.writable {
        flags |= libc::EPOLLOUT;
    }
    // The flag constants are `c_int`s whose bits we keep as they are.
    let mut event = libc::epoll_event {
        events: flags as u32,
        u64: token,
    };
    // SAFETY: `epoll` is a live epoll fd and `fd` is borrowed, so open; `event` is a valid,
    // initialised `epoll_event` that outlives the call, and the kernel copies it before
    // returning.
    cvt(unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd.as_raw_fd(), &mut event) })?;
    Ok(())
}

fn epoll_delete(epoll: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `epoll` is a live epoll fd and `fd` is borrowed, so open; since Linux 2.6.9 the
    // event pointer may be null for `EPOLL_CTL_DEL`.
    cvt(unsafe {
        libc::epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_DEL,
            fd.as_raw_fd(),
            std::ptr::null_mut(),
        )
    })?;
    Ok(())
}

/// One `epoll_wait` into `events`; `EINTR` is returned, not retried.
fn epoll_wait(epoll: BorrowedFd<'_>, events: &mut Events, timeout_ms: i32) -> io::Result<()> {
    events.len = 0;
    let capacity = events.buf.len().min(libc::c_int::MAX as usize) as libc::c_int;
    // SAFETY: `epoll` is a live epoll fd; `events.buf` holds `capacity` writable
    // `epoll_event`s (`MaybeUninit`, so the kernel may write any bytes), and the kernel writes
    // at most `capacity` of them.
    let ret = unsafe {
        libc::epoll_wait(
            epoll.as_raw_fd(),
            events.buf.as_mut_ptr().cast::<libc::epoll_event>(),
            capacity,
            timeout_ms,
        )
    };
    // `n` is between 0 and `capacity`.
    events.len = cvt(ret)? as usize;
    Ok(())
}

/// A reusable buffer of epoll events.
pub struct Events {
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
    fn with_capacity(capacity: usize) -> Events {
        let capacity = capacity.max(1);
        Events {
            buf: (0..capacity).map(|_| MaybeUninit::uninit()).collect(),
            len: 0,
        }
    }

    /// The `i`th event of the last wait.
    fn get(&self, i: usize) -> Event {
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
            priority: has(libc::EPOLLPRI),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// eventfd
// ---------------------------------------------------------------------------------------------

/// A non-blocking, close-on-exec eventfd with counter 0.
///
/// # Notes
///
/// - `eventfd(2)`: a write adds to a 64-bit counter, and a read returns the counter and resets
///   it to zero.
/// - A non-blocking write that would overflow the counter fails with `EAGAIN`; the counter is
///   then non-zero, so the reader is already signalled.
fn eventfd_create() -> io::Result<OwnedFd> {
    // SAFETY: `eventfd` takes no pointers; the flags are valid.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: the kernel just returned `fd` as a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One 8-byte write of `value` to the eventfd `fd`.
///
/// Async-signal-safe: it only calls `write(2)`.
fn eventfd_write_raw(fd: RawFd, value: u64) -> io::Result<()> {
    // SAFETY: `value` is 8 readable bytes, the exact size an eventfd write needs; `fd` is an
    // eventfd the caller keeps open for the duration of the call.
    let ret = unsafe { libc::write(fd, (&value as *const u64).cast(), mem::size_of::<u64>()) };
    cvt_size(ret).map(drop)
}

fn eventfd_read(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut value = 0u64;
    // SAFETY: `fd` is a live eventfd and `value` is 8 writable bytes, the exact size an
    // eventfd read needs.
    let ret = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut value as *mut u64).cast(),
            mem::size_of::<u64>(),
        )
    };
    cvt_size(ret)?;
    Ok(value)
}

/// Writes `1u64` to the eventfd `fd`; `EAGAIN` (counter full) means "already signalled", and
/// `EINTR` is retried. Async-signal-safe.
fn signal_raw(fd: RawFd) -> io::Result<()> {
    loop {
        return match eventfd_write_raw(fd, 1) {
            Ok(()) => Ok(()),
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
/// `EINTR` and `EAGAIN` come back as they are, for the caller to handle.
fn accept(listener: BorrowedFd<'_>) -> io::Result<(OwnedFd, Endpoint)> {
    // SAFETY: `sockaddr_storage` is plain old data, valid when zeroed.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `listener` is an open socket; `storage` has room for `len` bytes and `len` is a
    // valid in/out pointer, both outliving the call.
    let fd = cvt(unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })?;
    // SAFETY: the kernel just returned `fd` as a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok((fd, endpoint_from_storage(&storage, len)))
}

/// `read(2)` into `buf`. `EAGAIN` comes back as [`io::ErrorKind::WouldBlock`].
fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is `buf.len()` writable bytes that outlive the call; `fd` is open.
    cvt_size(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// A gathered write of `bufs`, in order: `writev(2)` semantics, issued as `sendmsg(2)` with
/// `MSG_NOSIGNAL` so that writing to a reset peer fails with `EPIPE` instead of raising
/// `SIGPIPE` in the host process.
///
/// `EAGAIN` comes back as [`io::ErrorKind::WouldBlock`].
/// May write fewer bytes than offered; the caller resumes from where it stopped.
fn writev(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
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

/// `shutdown(2)`.
fn shutdown(fd: BorrowedFd<'_>, how: Shutdown) -> io::Result<()> {
    let how = match how {
        Shutdown::Read => libc::SHUT_RD,
        Shutdown::Write => libc::SHUT_WR,
        Shutdown::Both => libc::SHUT_RDWR,
    };
    // SAFETY: `shutdown` takes no pointers; `fd` is open.
    cvt(unsafe { libc::shutdown(fd.as_raw_fd(), how) })?;
    Ok(())
}

/// `SO_LINGER` on with a zero timeout: `close` then sends an RST.
fn set_linger_zero(fd: BorrowedFd<'_>) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` is a readable `struct linger` for the duration of the call and the
    // length passed is its exact size; `fd` is open.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    })?;
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
fn set_send_buffer(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    setsockopt_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_SNDBUF,
        bytes.min(i32::MAX as usize) as libc::c_int,
    )
}

/// Sets `SO_RCVBUF` (the kernel doubles the value and applies a floor).
fn set_recv_buffer(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    setsockopt_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_RCVBUF,
        bytes.min(i32::MAX as usize) as libc::c_int,
    )
}

/// Sets `TCP_NODELAY` (TCP sockets only).
fn set_nodelay(fd: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

/// Reads and clears `SO_ERROR`: the outcome of a non-blocking connect, or the error behind an
/// `EPOLLERR`.
fn take_error(fd: BorrowedFd<'_>) -> io::Result<Option<io::Error>> {
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
fn connect(target: &Endpoint) -> io::Result<(OwnedFd, bool)> {
    let (storage, family, len) = sockaddr_of(target)?;
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

/// A TCP listener on `addr` with `SO_REUSEADDR` and `SO_REUSEPORT` set before `bind`, so
/// several sockets (one per loop) can listen on one address and the kernel spreads new
/// connections over them.
fn listen_reuse_port(addr: SocketAddr, backlog: u32) -> io::Result<(OwnedFd, Endpoint)> {
    let (storage, family, len) = sockaddr_of(&Endpoint::Tcp(addr))?;
    let fd = stream_socket(family)?;
    setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    // SAFETY: `storage` holds a valid address of `family` in its first `len` bytes and outlives
    // the call; `fd` is an open socket of that family.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len as libc::socklen_t,
        )
    })?;
    let backlog = backlog.min(libc::c_int::MAX as u32) as libc::c_int;
    // SAFETY: `listen` takes no pointers; `fd` is a bound stream socket.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    // SAFETY: `sockaddr_storage` is plain old data, valid when zeroed.
    let mut bound: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut bound_len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `bound` has room for `bound_len` bytes and `bound_len` is a valid in/out pointer,
    // both outliving the call; `fd` is an open socket.
    cvt(unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut bound as *mut libc::sockaddr_storage).cast(),
            &mut bound_len,
        )
    })?;
    Ok((fd, endpoint_from_storage(&bound, bound_len)))
}

/// `target` as a `sockaddr_storage`, with its family and the length to pass.
fn sockaddr_of(target: &Endpoint) -> io::Result<(libc::sockaddr_storage, libc::c_int, usize)> {
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
    Ok((storage, family, len))
}

// ---------------------------------------------------------------------------------------------
// Signals, threads and limits
// ---------------------------------------------------------------------------------------------

/// The eventfd the termination-signal handler writes to (-1: none).
static SIGNAL_WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// Set by the termination-signal handler before it writes [`SIGNAL_WAKE_FD`].
static TERMINATION_REQUESTED: AtomicBool = AtomicBool::new(false);

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
fn install_termination_handler(wake: &OwnedFd) -> io::Result<()> {
    let dup = wake.try_clone()?;
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

/// errno values, so that no module but this one names `libc`.
pub(crate) mod errno {
    #![allow(missing_docs)]
    pub const EPERM: i32 = libc::EPERM;
    pub const EINTR: i32 = libc::EINTR;
    pub const EBADF: i32 = libc::EBADF;
    pub const EAGAIN: i32 = libc::EAGAIN;
    pub const ENOMEM: i32 = libc::ENOMEM;
    pub const EEXIST: i32 = libc::EEXIST;
    pub const ENOENT: i32 = libc::ENOENT;
    pub const EINVAL: i32 = libc::EINVAL;
    pub const ENFILE: i32 = libc::ENFILE;
    pub const EMFILE: i32 = libc::EMFILE;
    pub const EPIPE: i32 = libc::EPIPE;
    pub const ENOTSOCK: i32 = libc::ENOTSOCK;
    pub const EPROTO: i32 = libc::EPROTO;
    pub const EOPNOTSUPP: i32 = libc::EOPNOTSUPP;
    pub const EADDRINUSE: i32 = libc::EADDRINUSE;
    pub const ENOBUFS: i32 = libc::ENOBUFS;
    pub const ECONNABORTED: i32 = libc::ECONNABORTED;
    pub const ECONNRESET: i32 = libc::ECONNRESET;
    pub const EISCONN: i32 = libc::EISCONN;
    pub const ENOTCONN: i32 = libc::ENOTCONN;
    pub const ETIMEDOUT: i32 = libc::ETIMEDOUT;
    pub const ECONNREFUSED: i32 = libc::ECONNREFUSED;
    pub const EALREADY: i32 = libc::EALREADY;
    pub const EINPROGRESS: i32 = libc::EINPROGRESS;
    pub const ENETUNREACH: i32 = libc::ENETUNREACH;
    pub const ENOSPC: i32 = libc::ENOSPC;
}

/// Whether `err` is a passing shortage of kernel memory.
pub(crate) fn is_memory_shortage(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOBUFS) | Some(libc::ENOMEM))
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

// ---------------------------------------------------------------------------------------------
// The `Os` implementation
// ---------------------------------------------------------------------------------------------

impl Os for Linux {
    type Fd = OwnedFd;
    type Events = Events;

    fn raw(fd: &OwnedFd) -> i32 {
        fd.as_raw_fd()
    }

    fn borrow_fd(fd: &OwnedFd) -> Option<BorrowedFd<'_>> {
        Some(fd.as_fd())
    }

    fn epoll_create(&self) -> io::Result<OwnedFd> {
        epoll_create()
    }

    fn epoll_add(
        &self,
        epoll: &OwnedFd,
        fd: &OwnedFd,
        token: u64,
        interest: Interest,
    ) -> io::Result<()> {
        epoll_ctl(
            epoll.as_fd(),
            libc::EPOLL_CTL_ADD,
            fd.as_fd(),
            token,
            interest,
        )
    }

    fn epoll_modify(
        &self,
        epoll: &OwnedFd,
        fd: &OwnedFd,
        token: u64,
        interest: Interest,
    ) -> io::Result<()> {
        epoll_ctl(
            epoll.as_fd(),
            libc::EPOLL_CTL_MOD,
            fd.as_fd(),
            token,
            interest,
        )
    }

    fn epoll_delete(&self, epoll: &OwnedFd, fd: &OwnedFd) -> io::Result<()> {
        epoll_delete(epoll.as_fd(), fd.as_fd())
    }

    fn events(&self, capacity: usize) -> Events {
        Events::with_capacity(capacity)
    }

    fn event_count(events: &Events) -> usize {
        events.len
    }

    fn event(events: &Events, i: usize) -> Event {
        events.get(i)
    }

    fn epoll_wait(&self, epoll: &OwnedFd, events: &mut Events, timeout_ms: i32) -> io::Result<()> {
        epoll_wait(epoll.as_fd(), events, timeout_ms)
    }

    fn eventfd(&self) -> io::Result<OwnedFd> {
        eventfd_create()
    }

    fn eventfd_write(&self, fd: &OwnedFd, value: u64) -> io::Result<()> {
        eventfd_write_raw(fd.as_raw_fd(), value)
    }

    fn eventfd_read(&self, fd: &OwnedFd) -> io::Result<u64> {
        eventfd_read(fd.as_fd())
    }

    fn listen(&self, at: &Endpoint, _backlog: u32) -> io::Result<(OwnedFd, Endpoint)> {
        // std's listeners set `SO_REUSEADDR` (TCP) and use a backlog of 128; the loop asks for
        // nothing else.
        match at {
            Endpoint::Tcp(addr) => {
                let listener = std::net::TcpListener::bind(addr)?;
                listener.set_nonblocking(true)?;
                let local = listener.local_addr()?;
                Ok((OwnedFd::from(listener), Endpoint::Tcp(local)))
            }
            Endpoint::Unix(Some(path)) => {
                let listener = std::os::unix::net::UnixListener::bind(path)?;
                listener.set_nonblocking(true)?;
                Ok((OwnedFd::from(listener), Endpoint::Unix(Some(path.clone()))))
            }
            Endpoint::Unix(None) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot listen on an unnamed unix socket",
            )),
        }
    }

    fn listen_reuse_port(&self, at: &Endpoint, backlog: u32) -> io::Result<(OwnedFd, Endpoint)> {
        match at {
            Endpoint::Tcp(addr) => listen_reuse_port(*addr, backlog),
            Endpoint::Unix(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "SO_REUSEPORT applies to TCP listeners only",
            )),
        }
    }

    fn accept(&self, listener: &OwnedFd) -> io::Result<(OwnedFd, Endpoint)> {
        accept(listener.as_fd())
    }

    fn connect(&self, target: &Endpoint) -> io::Result<(OwnedFd, bool)> {
        connect(target)
    }

    fn read(&self, fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
        read(fd.as_fd(), buf)
    }

    fn writev(&self, fd: &OwnedFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        writev(fd.as_fd(), bufs)
    }

    fn shutdown(&self, fd: &OwnedFd, how: Shutdown) -> io::Result<()> {
        shutdown(fd.as_fd(), how)
    }

    fn take_error(&self, fd: &OwnedFd) -> io::Result<Option<io::Error>> {
        take_error(fd.as_fd())
    }

    fn set_send_buffer(&self, fd: &OwnedFd, bytes: usize) -> io::Result<()> {
        set_send_buffer(fd.as_fd(), bytes)
    }

    fn set_recv_buffer(&self, fd: &OwnedFd, bytes: usize) -> io::Result<()> {
        set_recv_buffer(fd.as_fd(), bytes)
    }

    fn set_nodelay(&self, fd: &OwnedFd) -> io::Result<()> {
        set_nodelay(fd.as_fd())
    }

    fn set_linger_zero(&self, fd: &OwnedFd) -> io::Result<()> {
        set_linger_zero(fd.as_fd())
    }

    fn unsent_in_kernel(&self, fd: &OwnedFd) -> io::Result<usize> {
        let mut queued: libc::c_int = 0;
        // SAFETY: `TIOCOUTQ` (`SIOCOUTQ` for sockets) writes one `c_int` through the pointer,
        // which points at a live `c_int`; `fd` is open.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut queued) })?;
        Ok(usize::try_from(queued).unwrap_or(0))
    }

    fn is_connected(&self, fd: &OwnedFd) -> io::Result<bool> {
        // SAFETY: `sockaddr_storage` is plain old data, valid when zeroed.
        let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: `storage` has room for `len` bytes and `len` is a valid in/out pointer, both
        // outliving the call; `fd` is open.
        let ret = unsafe {
            libc::getpeername(
                fd.as_raw_fd(),
                (&mut storage as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        };
        match cvt(ret) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn dup(&self, fd: &OwnedFd) -> io::Result<OwnedFd> {
        // `try_clone` is `fcntl(F_DUPFD_CLOEXEC)`.
        fd.try_clone()
    }

    fn open_spare(&self) -> io::Result<OwnedFd> {
        Ok(OwnedFd::from(std::fs::File::open("/dev/null")?))
    }

    fn path_identity(&self, path: &Path) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path).ok()?;
        // Device and inode name the file; the inode changes when a newer server rebinds.
        Some(meta.dev().rotate_left(32) ^ meta.ino())
    }

    fn remove_path(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn install_termination_handler(&self, wake: &OwnedFd) -> io::Result<()> {
        install_termination_handler(wake)
    }

    fn termination_requested(&self) -> bool {
        // Acquire pairs with the handler's Release store, made before it wrote the eventfd.
        TERMINATION_REQUESTED.load(Ordering::Acquire)
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_eventfd_write_that_would_overflow_fails_with_eagain_and_signal_treats_it_as_signalled() {
        let os = Linux;
        let fd = os.eventfd().unwrap();
        // The counter's maximum is u64::MAX - 1.
        os.eventfd_write(&fd, u64::MAX - 1).unwrap();
        // The situation is real: a plain write of 1 now fails with EAGAIN...
        let raw = os.eventfd_write(&fd, 1).unwrap_err();
        assert_eq!(raw.kind(), io::ErrorKind::WouldBlock);
        // ...and `signal_raw` treats it as "already signalled" instead of an error.
        signal_raw(fd.as_raw_fd()).unwrap();
        assert_eq!(
            os.eventfd_read(&fd).unwrap(),
            u64::MAX - 1,
            "the wake-up is still pending"
        );
        let empty = os.eventfd_read(&fd).unwrap_err();
        assert_eq!(
            empty.kind(),
            io::ErrorKind::WouldBlock,
            "and the read consumed it"
        );
    }

    #[test]
    fn an_eventfd_read_returns_the_count_and_zeroes_it() {
        let os = Linux;
        let fd = os.eventfd().unwrap();
        assert_eq!(
            os.eventfd_read(&fd).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "an unsignalled eventfd does not block"
        );
        signal_raw(fd.as_raw_fd()).unwrap();
        signal_raw(fd.as_raw_fd()).unwrap();
        assert_eq!(os.eventfd_read(&fd).unwrap(), 2);
    }

    #[test]
    fn epoll_reports_an_eventfd_edge_once_per_signal() {
        let os = Linux;
        let epoll = os.epoll_create().unwrap();
        let fd = os.eventfd().unwrap();
        os.epoll_add(&epoll, &fd, 7, Interest::READABLE).unwrap();
        let mut events = os.events(4);
        os.epoll_wait(&epoll, &mut events, 0).unwrap();
        assert_eq!(Linux::event_count(&events), 0);
        signal_raw(fd.as_raw_fd()).unwrap();
        os.epoll_wait(&epoll, &mut events, 0).unwrap();
        assert_eq!(Linux::event_count(&events), 1);
        assert_eq!(Linux::event(&events, 0).token, 7);
        assert!(Linux::event(&events, 0).readable);
        // Edge-triggered: no new edge until the next signal, even though it was not reset.
        os.epoll_wait(&epoll, &mut events, 0).unwrap();
        assert_eq!(Linux::event_count(&events), 0);
    }

    #[test]
    fn accepted_peer_addresses_are_decoded() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // A blocking listener: accept4 waits for the client, which is already connected.
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_fd, peer) = accept(listener.as_fd()).unwrap();
        assert_eq!(peer, Endpoint::Tcp(client.local_addr().unwrap()));
    }
}
