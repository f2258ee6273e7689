//! The OS layer the loop runs over: every kernel call it makes, and its clock.
//!
//! [`Server`](crate::Server) is generic over one [`Os`]; the default is [`Linux`], a thin,
//! zero-sized layer over `libc` (in `sys`, the only module that names `libc`).
//! [`crate::sim`] implements the same trait as a deterministic in-memory kernel, so the very
//! same loop code runs over real sockets and over simulated ones.
//!
//! The trait mirrors the system calls one for one, with their errno semantics: a call that
//! Linux may fail with `EINTR` or `EAGAIN` returns exactly that ([`io::ErrorKind::Interrupted`],
//! [`io::ErrorKind::WouldBlock`]), and the loop, not the OS layer, decides to retry.
//! That is what lets a simulated kernel inject every error the man pages allow and see how the
//! loop reacts.
//!
//! # File descriptors
//!
//! [`Os::Fd`] owns one descriptor and closes it when dropped, like [`std::os::fd::OwnedFd`]
//! (which is what [`Linux`] uses).
//! Its number ([`Os::raw`]) is what a trace shows; the loop never names a descriptor by its
//! number, because numbers are reused at once (EPOLL-NOTES 8).

use std::fmt;
use std::io::{self, IoSlice};
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::time::Instant;

use crate::reactor::Endpoint;

/// What an epoll registration asks to be told about.
///
/// Every registration is edge-triggered (`EPOLLET`) and includes `EPOLLRDHUP` and `EPOLLPRI`;
/// `EPOLLHUP` and `EPOLLERR` are always reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interest {
    /// `EPOLLIN`.
    pub readable: bool,
    /// `EPOLLOUT`.
    pub writable: bool,
    /// `EPOLLEXCLUSIVE` (only valid with `EPOLL_CTL_ADD`).
    pub exclusive: bool,
}

impl Interest {
    /// `EPOLLIN` only.
    pub const READABLE: Interest = Interest {
        readable: true,
        writable: false,
        exclusive: false,
    };
    /// `EPOLLIN | EPOLLOUT`.
    pub const BOTH: Interest = Interest {
        readable: true,
        writable: true,
        exclusive: false,
    };
}

/// One readiness report, with its flags decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Event {
    /// The 64-bit token given at registration (`epoll_event.data`).
    pub token: u64,
    /// `EPOLLIN`: bytes (or a pending connection, or EOF) can be read.
    pub readable: bool,
    /// `EPOLLOUT`: the send buffer has room.
    pub writable: bool,
    /// `EPOLLRDHUP`: the peer shut down its write half (sent FIN).
    pub read_hup: bool,
    /// `EPOLLHUP`: both directions are shut down.
    pub hup: bool,
    /// `EPOLLERR`: an error is pending; read it with [`Os::take_error`].
    pub error: bool,
    /// `EPOLLPRI`: urgent (out-of-band) data; a read stops short at its mark, so a short read
    /// no longer proves the receive queue empty.
    pub priority: bool,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}:", self.token)?;
        for (on, name) in [
            (self.readable, "IN"),
            (self.writable, "OUT"),
            (self.read_hup, "RDHUP"),
            (self.hup, "HUP"),
            (self.error, "ERR"),
            (self.priority, "PRI"),
        ] {
            if on {
                write!(f, " {name}")?;
            }
        }
        Ok(())
    }
}

/// Which half of a stream socket `shutdown(2)` closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// `SHUT_RD`.
    Read,
    /// `SHUT_WR`: the peer reads EOF after the bytes already sent.
    Write,
    /// `SHUT_RDWR`.
    Both,
}

/// The kernel calls the loop makes, and its clock.
///
/// Implementations: [`Linux`] (the default) and [`crate::sim::Kernel`].
/// An `Os` value is a cheap handle (`Clone`); [`Linux`] is zero-sized.
pub trait Os: Clone + Send + Sync + fmt::Debug + 'static {
    /// An owned file descriptor; dropping it closes the descriptor.
    type Fd: Send + Sync + fmt::Debug;
    /// A reusable buffer that one `epoll_wait` fills.
    type Events: Send;

    /// The descriptor's number, for traces and messages only.
    fn raw(fd: &Self::Fd) -> i32;
    /// The descriptor as a real kernel fd, for callers that set socket options themselves;
    /// `None` when it is simulated.
    fn borrow_fd(fd: &Self::Fd) -> Option<BorrowedFd<'_>>;

    /// `epoll_create1(EPOLL_CLOEXEC)`.
    fn epoll_create(&self) -> io::Result<Self::Fd>;
    /// `EPOLL_CTL_ADD`, edge-triggered, with `EPOLLRDHUP` and `token` as the event data.
    fn epoll_add(
        &self,
        epoll: &Self::Fd,
        fd: &Self::Fd,
        token: u64,
        interest: Interest,
    ) -> io::Result<()>;
    /// `EPOLL_CTL_MOD`, same flags as [`Os::epoll_add`].
    fn epoll_modify(
        &self,
        epoll: &Self::Fd,
        fd: &Self::Fd,
        token: u64,
        interest: Interest,
    ) -> io::Result<()>;
    /// `EPOLL_CTL_DEL`. Call it before closing `fd`.
    fn epoll_delete(&self, epoll: &Self::Fd, fd: &Self::Fd) -> io::Result<()>;
    /// A buffer for up to `capacity` events per wait (at least one).
    fn events(&self, capacity: usize) -> Self::Events;
    /// The events the last [`Os::epoll_wait`] into `events` returned.
    fn event_count(events: &Self::Events) -> usize;
    /// The `i`th of them.
    fn event(events: &Self::Events, i: usize) -> Event;
    /// One `epoll_wait`, `timeout_ms` as the syscall takes it (`-1`: forever).
    /// `EINTR` comes back as [`io::ErrorKind::Interrupted`].
    fn epoll_wait(
        &self,
        epoll: &Self::Fd,
        events: &mut Self::Events,
        timeout_ms: i32,
    ) -> io::Result<()>;

    /// `eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)`.
    fn eventfd(&self) -> io::Result<Self::Fd>;
    /// One 8-byte `write(2)` of `value`; `EAGAIN` when the counter would overflow.
    fn eventfd_write(&self, fd: &Self::Fd, value: u64) -> io::Result<()>;
    /// One 8-byte `read(2)`: the counter, reset to zero; `EAGAIN` when it is zero.
    fn eventfd_read(&self, fd: &Self::Fd) -> io::Result<u64>;

    /// A non-blocking listening stream socket bound to `at` (TCP: `SO_REUSEADDR`; port 0
    /// picks a free port), and the address it is bound to.
    fn listen(&self, at: &Endpoint, backlog: u32) -> io::Result<(Self::Fd, Endpoint)>;
    /// A TCP listener like [`Os::listen`], with `SO_REUSEPORT` set before `bind`, so one
    /// listener per loop can share the address (the kernel spreads connections over them).
    /// The default refuses with [`io::ErrorKind::Unsupported`].
    fn listen_reuse_port(&self, at: &Endpoint, backlog: u32) -> io::Result<(Self::Fd, Endpoint)> {
        let _ = (at, backlog);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this OS layer has no SO_REUSEPORT",
        ))
    }
    /// One `accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)`, and the peer's address.
    fn accept(&self, listener: &Self::Fd) -> io::Result<(Self::Fd, Endpoint)>;
    /// A non-blocking stream socket and one `connect(2)` to `target`.
    /// Returns the socket and whether the connect is still in progress (`EINPROGRESS`, or
    /// `EINTR`, after which the attempt also continues in the background).
    fn connect(&self, target: &Endpoint) -> io::Result<(Self::Fd, bool)>;
    /// One `read(2)`.
    fn read(&self, fd: &Self::Fd, buf: &mut [u8]) -> io::Result<usize>;
    /// One gathered write (`sendmsg(2)` with `MSG_NOSIGNAL`, so a reset peer gives `EPIPE`
    /// and never `SIGPIPE`); at most [`MAX_IOV`] slices are passed.
    fn writev(&self, fd: &Self::Fd, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// `shutdown(2)`.
    fn shutdown(&self, fd: &Self::Fd, how: Shutdown) -> io::Result<()>;
    /// Reads and clears `SO_ERROR`.
    fn take_error(&self, fd: &Self::Fd) -> io::Result<Option<io::Error>>;
    /// `SO_SNDBUF`.
    fn set_send_buffer(&self, fd: &Self::Fd, bytes: usize) -> io::Result<()>;
    /// `SO_RCVBUF`.
    fn set_recv_buffer(&self, fd: &Self::Fd, bytes: usize) -> io::Result<()>;
    /// `TCP_NODELAY` (TCP sockets only).
    fn set_nodelay(&self, fd: &Self::Fd) -> io::Result<()>;
    /// `SO_LINGER` with a zero timeout: the next close resets the connection (RST).
    fn set_linger_zero(&self, fd: &Self::Fd) -> io::Result<()>;
    /// Bytes written to the socket that the peer has not acknowledged yet (`SIOCOUTQ`): what
    /// an abortive close destroys. The default reports 0.
    fn unsent_in_kernel(&self, fd: &Self::Fd) -> io::Result<usize> {
        let _ = fd;
        Ok(0)
    }
    /// Whether a stream socket is connected (`getpeername` succeeds; `ENOTCONN`: not yet), to
    /// confirm that a connect completed. The default reports `true`.
    fn is_connected(&self, fd: &Self::Fd) -> io::Result<bool> {
        let _ = fd;
        Ok(true)
    }
    /// `dup(2)` (close-on-exec).
    fn dup(&self, fd: &Self::Fd) -> io::Result<Self::Fd>;
    /// A spare descriptor the loop keeps in reserve for the accept-and-close trick under
    /// `EMFILE` (Linux: `/dev/null`).
    fn open_spare(&self) -> io::Result<Self::Fd>;

    /// An identity of whatever file now sits at `path` (`None`: nothing there), so a listener
    /// removes its Unix socket file only if it is still the one it bound.
    fn path_identity(&self, path: &Path) -> Option<u64>;
    /// Removes the file at `path`.
    fn remove_path(&self, path: &Path) -> io::Result<()>;

    /// Makes `SIGINT`/`SIGTERM` request termination and signal the eventfd `wake`.
    /// Returns `Unsupported` where there are no signals (the simulation).
    fn install_termination_handler(&self, wake: &Self::Fd) -> io::Result<()>;
    /// Whether a termination signal arrived since [`Os::install_termination_handler`].
    fn termination_requested(&self) -> bool;

    /// The loop's clock.
    fn now(&self) -> Instant;
}

/// The most slices one gathered write passes to the kernel (well below `IOV_MAX`, 1024).
pub const MAX_IOV: usize = 64;

/// The errno values the loop and the simulated kernel speak, as Linux numbers them.
pub mod errno {
    pub use crate::sys::errno::*;
}

/// Whether `err` means the process or system ran out of file descriptors (`EMFILE`,
/// `ENFILE`).
pub fn is_fd_exhaustion(err: &io::Error) -> bool {
    crate::sys::is_fd_exhaustion(err)
}

/// Whether `err` is a connection reset (`ECONNRESET`), or a write after one (`EPIPE`).
pub fn is_reset(err: &io::Error) -> bool {
    crate::sys::is_reset(err)
}

/// The errors `accept4` may return while the listener itself is fine and clients may still
/// wait in the backlog: a connection that died there (`ECONNABORTED`, `EPROTO`, and the
/// network errors `accept(2)` lists for TCP); retrying at once is right
/// (`ENOBUFS`, `ENOMEM` are not among them: see [`is_memory_shortage`]).
pub fn is_transient_accept_error(err: &io::Error) -> bool {
    crate::sys::is_transient_accept_error(err)
}

/// Whether `err` is a shortage of kernel memory (`ENOBUFS`, `ENOMEM`): the backlog is intact
/// and a retry later may succeed, but an immediate retry would likely fail again.
pub fn is_memory_shortage(err: &io::Error) -> bool {
    crate::sys::is_memory_shortage(err)
}

/// The real kernel, through `libc`. Zero-sized: every call compiles to the syscall wrapper.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Linux;
