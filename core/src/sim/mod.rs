//! A deterministic in-memory kernel: stream sockets, edge-triggered epoll, eventfd and a
//! virtual clock, behind the same [`Os`] trait as the real kernel.
//!
//! [`Kernel`] is a cheap handle (`Clone`, `Send`, `Sync`) to one simulated machine.
//! `Server::with_os(kernel.clone(), framing, config)` runs the real loop over it, unchanged;
//! the test plays the other side of every connection through [`Kernel::peer`], from the same
//! thread (with a [`Driver`]) or from another one.
//!
//! # What is modelled
//!
//! - **Stream sockets**, TCP-like (virtual [`SocketAddr`]s; port 0 picks a port from 40000 up,
//!   clients get ports from 50000 up) and Unix (a virtual path namespace, so
//!   [`Os::path_identity`] and [`Os::remove_path`] work on it), each with a bounded send
//!   buffer and a bounded receive buffer ([`KernelConfig::send_buffer`],
//!   [`KernelConfig::recv_buffer`], or `set_send_buffer`/`set_recv_buffer`, taken as exact
//!   byte counts).
//!   A write takes as much as fits in its send buffer plus the peer's free receive space; a
//!   read returns what is there, up to the buffer it is given.
//!   Bytes move into the peer's receive buffer at once, as far as it has room, and the rest
//!   follow as the peer reads (instant acknowledgements).
//! - **FIN, half-close and RST.** `shutdown(Write)` sends a FIN behind the queued bytes; a
//!   close sends a FIN, or an RST with `SO_LINGER` 0 or with unread input (as `tcp_close`
//!   does); data sent to a closed socket is answered with an RST.
//!   A reset socket reports `ECONNRESET` (`EPIPE` if the peer's FIN had arrived), from
//!   `SO_ERROR`, the next read or the next write, then `EPIPE` on writes and EOF on reads.
//!   Closing a Unix stream socket shuts its peer down both ways at once (`EPOLLHUP`, `EPIPE`
//!   on the next write), as `unix_release_sock` does.
//!   `CONFORMANCE.md` (beside this module) lists what the suite checks against Linux and every
//!   difference that remains.
//! - **Connects** to a listener complete at once (TCP still reports `EINPROGRESS`, as a
//!   non-blocking connect on Linux does; Unix completes synchronously); with no listener they
//!   are refused (`ECONNREFUSED` through [`Os::take_error`] and `EPOLLERR`; Unix: at once);
//!   an address marked with [`Kernel::set_unreachable`] never answers.
//! - **The listen backlog** holds `backlog + 1` connections, as Linux's does.
//!   A TCP SYN beyond it leaves the connect pending (Linux drops the SYN and the client
//!   retransmits); it completes as soon as an `accept` makes room.
//!   A Unix connect beyond it fails with `EAGAIN`.
//! - **Descriptors** are handed out lowest-free from [`KernelConfig::first_fd`] (default 3:
//!   0, 1 and 2 count as taken), so a closed number is reused by the next open.
//!   [`KernelConfig::fd_limit`] is `RLIMIT_NOFILE` (`EMFILE`) and
//!   [`KernelConfig::file_limit`] the system-wide table (`ENFILE`).
//!   `accept4` allocates its descriptor first, so it fails with `EMFILE` at the limit even
//!   with an empty backlog, as on Linux.
//!   The [`Peer`] is another process: its descriptors come from a table of their own
//!   (numbered from 2^20, with no limit), so clients neither take the loop's numbers nor count
//!   against its limit.
//!   [`Os::dup`] shares the open file description.
//! - **epoll** tracks open file descriptions, not numbers: an item is keyed by description and
//!   the number it was added under, lives until the description's last descriptor closes, and
//!   a duplicate keeps producing events after the original number is closed without
//!   `EPOLL_CTL_DEL`. See [`Mode`] for the two edge models.
//! - **eventfd** with counter semantics: every write wakes, a write that would pass
//!   `u64::MAX - 1` fails with `EAGAIN`, a read returns the counter and zeroes it, and fails
//!   with `EAGAIN` at zero.
//! - **Virtual time.** [`Os::now`] is a base [`Instant`] taken at construction plus a virtual
//!   offset. An `epoll_wait` with nothing to report and a finite timeout moves the offset to
//!   the timeout at once, so a 5-minute idle timeout costs nothing. With timeout -1 it asks the
//!   [`Driver`], or, without one, blocks on a real condition variable until another thread
//!   changes something (writes an eventfd, a socket).
//! - **Faults**: a plan of [`FaultRule`]s ("the Nth call of kind K fails with errno E", "the
//!   next one", or "each with probability p", drawn from the seeded generator), checked
//!   against the errors the man pages allow for that call ([`Call::allowed_errnos`]); only
//!   calls made through the [`Os`] trait (the loop and its handles) are faulted, never the
//!   [`Peer`]'s.
//!
//! # Determinism
//!
//! Nothing observable depends on hashing, addresses, threads or the real clock: one seed and
//! one sequence of calls give one [`Kernel::trace`], byte for byte.
//! Every call is traced with its arguments, its result or errno, and the virtual time; every
//! `epoll_wait` with the events it returned.
//!
//! # Examples
//!
//! A peer connects to a listener and sends; the listener side sees one edge and the bytes:
//!
//! ```
//! use refloop::os::{Interest, Os};
//! use refloop::sim::{Kernel, KernelConfig};
//! use refloop::Endpoint;
//!
//! let kernel = Kernel::new(KernelConfig::default());
//! let (listener, addr) = kernel.listen(&Endpoint::Tcp("127.0.0.1:0".parse().unwrap()), 16)?;
//! let client = kernel.peer().connect(&addr)?;
//! let (conn, _) = kernel.accept(&listener)?;
//! let epoll = kernel.epoll_create()?;
//! kernel.epoll_add(&epoll, &conn, 7, Interest::READABLE)?;
//! assert_eq!(kernel.peer().write(&client, b"hi")?, 2);
//! let mut events = kernel.events(8);
//! kernel.epoll_wait(&epoll, &mut events, 0)?;
//! assert_eq!(Kernel::event_count(&events), 1);
//! let mut buf = [0; 8];
//! assert_eq!(kernel.read(&conn, &mut buf)?, 2);
//! # Ok::<(), std::io::Error>(())
//! ```

mod state;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::os::{errno, Event, Interest, Os, Shutdown};
use crate::reactor::Endpoint;
use state::State;

/// The kernel's lock and condition variable, behind one alias so a `cfg(loom)` build can swap
/// in loom's primitives.
mod prims {
    pub(super) use crate::sync::{Condvar, Mutex, MutexGuard};
}

/// How epoll raises edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// What the Linux kernel does:
    /// - every arrival raises an edge, even on a socket that is already readable, and every
    ///   eventfd write raises one;
    /// - wake-ups coalesce until `epoll_wait` collects them, and the mask is computed then;
    /// - `EPOLLOUT` rises only after a write found the send buffer full (`EAGAIN` or a short
    ///   write) and room came back (free space at least half of what is still queued);
    /// - `EPOLL_CTL_ADD` and `EPOLL_CTL_MOD` report readiness that already exists;
    /// - `EPOLLHUP` and `EPOLLERR` are always reported.
    #[default]
    Linux,
    /// Only the edges the man pages promise: an edge when a flag rises, none for an arrival on
    /// an already readable socket. On top of that, seeded with [`KernelConfig::seed`],
    /// spurious events ([`KernelConfig::spurious_ppm`]) and events held back so that several
    /// flags arrive in one ([`KernelConfig::defer_ppm`]).
    /// A loop that relies on extra edges Linux happens to send fails here.
    Minimal,
    /// KNOWN-BAD (for the conformance suite's teeth): an arrival on an already readable socket
    /// raises no edge.
    #[doc(hidden)]
    KnownBadNoRearm,
    /// KNOWN-BAD: level-triggered readiness under `EPOLLET`.
    #[doc(hidden)]
    KnownBadLevel,
}

/// How the simulated machine is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelConfig {
    /// The edge model. Default: [`Mode::Linux`].
    pub mode: Mode,
    /// Seeds every random choice (probabilistic faults, spurious and held-back events).
    /// Default: 0.
    pub seed: u64,
    /// A new socket's send buffer, in bytes. Default: 16 KiB (Linux's `tcp_wmem` default).
    pub send_buffer: usize,
    /// A new socket's receive buffer, in bytes. Default: 64 KiB.
    pub recv_buffer: usize,
    /// The lowest descriptor number handed out. Default: 3 (0, 1 and 2 are taken).
    pub first_fd: i32,
    /// `RLIMIT_NOFILE`: descriptor numbers must stay below it (`EMFILE`). Default: 1024.
    pub fd_limit: u64,
    /// The system-wide limit on open file descriptions (`ENFILE`); `None`: no limit.
    /// Default: `None`.
    pub file_limit: Option<u64>,
    /// `net.core.somaxconn`: the largest backlog a listener gets. Default: 4096.
    pub somaxconn: usize,
    /// Record the trace ([`Kernel::trace`], [`Kernel::trace_hash`]); off, neither is kept
    /// (and the kernel runs faster). Default: true.
    pub trace: bool,
    /// [`Mode::Minimal`]: chance per `epoll_wait`, in parts per million, of one spurious event.
    /// Default: 0.
    pub spurious_ppm: u32,
    /// [`Mode::Minimal`]: chance per ready item and wait, in parts per million, that it is held
    /// back to a later wait (gathering more flags). Default: 0.
    pub defer_ppm: u32,
    /// [`Mode::Minimal`]: whether `EPOLL_CTL_ADD`/`MOD` report readiness that already exists
    /// (every Linux version does; the man pages do not say). Default: true.
    pub minimal_ctl_reports_ready: bool,
}

impl Default for KernelConfig {
    fn default() -> KernelConfig {
        KernelConfig {
            mode: Mode::Linux,
            seed: 0,
            send_buffer: 16 * 1024,
            recv_buffer: 64 * 1024,
            first_fd: 3,
            fd_limit: 1024,
            file_limit: None,
            somaxconn: 4096,
            trace: true,
            spurious_ppm: 0,
            defer_ppm: 0,
            minimal_ctl_reports_ready: true,
        }
    }
}

/// A kind of call, for counters and fault rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Call {
    /// `epoll_create1`.
    EpollCreate,
    /// `epoll_ctl` (ADD, MOD, DEL).
    EpollCtl,
    /// `epoll_wait`.
    EpollWait,
    /// `eventfd`.
    Eventfd,
    /// A write to an eventfd.
    EventfdWrite,
    /// A read from an eventfd.
    EventfdRead,
    /// `socket` + `bind` + `listen`.
    Listen,
    /// `accept4`.
    Accept,
    /// `socket` + `connect`.
    Connect,
    /// `read` on a socket.
    Read,
    /// `sendmsg` on a socket.
    Write,
    /// `shutdown`.
    Shutdown,
    /// `close`.
    Close,
    /// `getsockopt(SO_ERROR)`.
    TakeError,
    /// `setsockopt` (buffers, `TCP_NODELAY`, `SO_LINGER`).
    SetOption,
    /// `dup`.
    Dup,
    /// `open("/dev/null")`.
    OpenSpare,
}

impl Call {
    /// The errors the man page allows this call to return (and that a [`FaultRule`] may
    /// inject).
    pub fn allowed_errnos(self) -> &'static [i32] {
        use errno::*;
        match self {
            Call::Accept => &[
                EAGAIN,
                EMFILE,
                ENFILE,
                ENOBUFS,
                ENOMEM,
                ECONNABORTED,
                EPROTO,
                EINTR,
                EPERM,
            ],
            Call::Read => &[EINTR, EAGAIN, ECONNRESET, ENOMEM],
            Call::Write => &[EINTR, EAGAIN, EPIPE, ECONNRESET, ENOBUFS, ENOMEM],
            Call::EpollWait => &[EINTR],
            Call::EventfdWrite | Call::EventfdRead => &[EINTR, EAGAIN],
            Call::Connect => &[
                EINTR,
                EAGAIN,
                ECONNREFUSED,
                ENETUNREACH,
                ETIMEDOUT,
                EMFILE,
                ENFILE,
                ENOBUFS,
                ENOMEM,
            ],
            Call::EpollCtl => &[ENOMEM, ENOSPC],
            Call::EpollCreate | Call::Eventfd | Call::OpenSpare | Call::Dup | Call::Listen => {
                &[EMFILE, ENFILE, ENOMEM]
            }
            Call::Shutdown => &[ENOTCONN],
            Call::TakeError | Call::SetOption => &[ENOMEM, ENOBUFS],
            Call::Close => &[],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Call::EpollCreate => "epoll_create",
            Call::EpollCtl => "epoll_ctl",
            Call::EpollWait => "epoll_wait",
            Call::Eventfd => "eventfd",
            Call::EventfdWrite => "eventfd_write",
            Call::EventfdRead => "eventfd_read",
            Call::Listen => "listen",
            Call::Accept => "accept4",
            Call::Connect => "connect",
            Call::Read => "read",
            Call::Write => "sendmsg",
            Call::Shutdown => "shutdown",
            Call::Close => "close",
            Call::TakeError => "getsockopt(SO_ERROR)",
            Call::SetOption => "setsockopt",
            Call::Dup => "dup",
            Call::OpenSpare => "open_spare",
        }
    }
}

/// When a [`FaultRule`] fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// The `n`th call of the kind made through [`Os`] (1-based, counted from the kernel's
    /// creation); fires once.
    Nth(u64),
    /// The next call of the kind; fires once.
    Next,
    /// Each call, with this chance in parts per million (from the seeded generator).
    Chance(u32),
}

/// What a [`FaultRule`] does to the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fails with this errno and no effect (a `connect` interrupted by `EINTR` still goes on
    /// in the background, as on Linux, and reports "in progress").
    Errno(i32),
    /// A read or write moves at most this many bytes (at least 1). A short read that leaves
    /// bytes behind is something Linux does not do on a stream socket (see `CONFORMANCE.md`).
    Short(usize),
}

/// One entry of the fault plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultRule {
    /// The kind of call it applies to.
    pub call: Call,
    /// When it fires.
    pub when: When,
    /// What it does.
    pub fault: Fault,
    spent: bool,
}

impl FaultRule {
    /// A rule; see [`Kernel::inject`].
    pub fn new(call: Call, when: When, fault: Fault) -> FaultRule {
        FaultRule {
            call,
            when,
            fault,
            spent: false,
        }
    }
}

/// Who made a call: the [`Os`] trait (the loop and its handles), or the test's [`Peer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// Calls through the [`Os`] trait.
    Os,
    /// Calls through [`Kernel::peer`].
    Peer,
}

impl Side {
    fn prefix(self) -> &'static str {
        match self {
            Side::Os => "",
            Side::Peer => "peer ",
        }
    }
}

/// What the loop is about to wait for, as the [`Driver`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// The wait's timeout (`None`: forever).
    pub timeout: Option<Duration>,
    /// Virtual time since the kernel was created.
    pub now: Duration,
    /// Whether the epoll instance has events queued already (the wait will return at once).
    pub ready: bool,
    /// How many times the driver was asked during this one wait.
    pub asked: u64,
}

/// How many times in a row a [`Driver`] may return [`DriverStep::Again`] (or
/// [`DriverStep::Sleep`] in a wait without timeout) without changing anything before the wait
/// treats it as [`DriverStep::Wait`].
pub const IDLE_AGAINS: u32 = 1000;

/// What the [`Driver`] did, and what the wait should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverStep {
    /// The driver acted (or may have): look at readiness again and ask it again.
    /// After [`IDLE_AGAINS`] of these in a row with nothing changed, it counts
    /// as [`DriverStep::Wait`], so a confused driver ends in a stall, not a spin.
    Again,
    /// The driver has nothing to do before the wait ends: return what is ready; with nothing
    /// ready, let virtual time run to the timeout; with no timeout, the run has stalled
    /// (see [`Stall`]).
    Wait,
    /// Let this much virtual time pass, at most up to the wait's timeout (which then returns
    /// what is ready, maybe nothing); if that leaves time and something is ready, the wait
    /// returns it, else the driver is asked again. Sleeping with nothing ready and no timeout
    /// counts as doing nothing (see [`IDLE_AGAINS`]).
    Sleep(Duration),
    /// The driver has nothing to do now, but other threads (senders through handles) may:
    /// return what is ready; with nothing ready and no timeout, block until another thread
    /// changes something (an eventfd write, a socket), then ask the driver again. Under loom
    /// (the `model/` crate), a block that no thread can end is reported as a deadlock: a lost
    /// wake-up.
    Block,
}

/// The world outside the loop, for a deterministic single-threaded executor: asked from inside
/// every `epoll_wait` the loop makes (without the kernel's lock held), it performs the peers'
/// next steps (connect, write, read, shut down, reset, advance time, inject faults, call
/// handles) and says what the wait should do next.
///
/// A closure `FnMut(&Kernel, &Wait) -> DriverStep + Send` is a driver.
/// A driver must not itself wait with `epoll_wait` on this kernel with a timeout other than
/// 0.
pub trait Driver: Send {
    /// One step; see [`DriverStep`].
    fn step(&mut self, kernel: &Kernel, wait: &Wait) -> DriverStep;
}

impl<F: FnMut(&Kernel, &Wait) -> DriverStep + Send> Driver for F {
    fn step(&mut self, kernel: &Kernel, wait: &Wait) -> DriverStep {
        self(kernel, wait)
    }
}

/// The error a stalled `epoll_wait` returns: the loop waits forever, and the driver has
/// nothing left to do. [`crate::Server::run`] returns it as an [`io::Error`] of kind
/// [`io::ErrorKind::Other`]; [`Stall::is`] recognises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    /// Virtual time when it stalled.
    pub at: Duration,
}

impl Stall {
    /// Whether `err` is a [`Stall`].
    pub fn is(err: &io::Error) -> bool {
        err.get_ref().is_some_and(|e| e.is::<Stall>())
    }
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sim stall at {:?} virtual: epoll_wait would block forever and the driver has nothing more to do",
            self.at
        )
    }
}

impl std::error::Error for Stall {}

struct Shared {
    state: prims::Mutex<State>,
    changed: prims::Condvar,
    driver: prims::Mutex<Option<Box<dyn Driver>>>,
    base: Instant,
}

/// A handle to one simulated machine; see the [module docs](self).
#[derive(Clone)]
pub struct Kernel {
    shared: Arc<Shared>,
}

impl fmt::Debug for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("Kernel")
            .field("mode", &st.cfg.mode)
            .field("now", &st.now)
            .field("open_fds", &st.fds.len())
            .finish_non_exhaustive()
    }
}

/// An open descriptor of a [`Kernel`]; closing it (dropping it) is `close(2)`.
pub struct Fd {
    kernel: Kernel,
    num: i32,
    side: Side,
}

impl Fd {
    /// The descriptor's number.
    pub fn raw(&self) -> i32 {
        self.num
    }
}

impl fmt::Debug for Fd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fd({})", self.num)
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        let side = self.side;
        let num = self.num;
        self.kernel.call(side, Call::Close, |st, _| {
            // Ignored: the number is ours, so it is open.
            let r = st.close(num);
            st.log(
                side,
                format_args!("close({num}) = {}", show(&r, |_| "0".into())),
            );
        });
    }
}

/// Events filled in by one simulated `epoll_wait`.
#[derive(Debug, Clone)]
pub struct Events {
    capacity: usize,
    list: Vec<Event>,
}

impl Events {
    /// The events of the last wait.
    pub fn as_slice(&self) -> &[Event] {
        &self.list
    }
}

fn errno_name(code: i32) -> String {
    use errno::*;
    let name = match code {
        EPERM => "EPERM",
        EINTR => "EINTR",
        EBADF => "EBADF",
        EAGAIN => "EAGAIN",
        ENOMEM => "ENOMEM",
        EEXIST => "EEXIST",
        ENOENT => "ENOENT",
        EINVAL => "EINVAL",
        ENFILE => "ENFILE",
        EMFILE => "EMFILE",
        EPIPE => "EPIPE",
        ENOTSOCK => "ENOTSOCK",
        EPROTO => "EPROTO",
        EOPNOTSUPP => "EOPNOTSUPP",
        EADDRINUSE => "EADDRINUSE",
        ENOBUFS => "ENOBUFS",
        ECONNABORTED => "ECONNABORTED",
        ECONNRESET => "ECONNRESET",
        ENOTCONN => "ENOTCONN",
        ETIMEDOUT => "ETIMEDOUT",
        ECONNREFUSED => "ECONNREFUSED",
        ENETUNREACH => "ENETUNREACH",
        ENOSPC => "ENOSPC",
        _ => return format!("errno {code}"),
    };
    name.to_string()
}

/// How a result shows in the trace.
fn show<T>(r: &io::Result<T>, ok: impl FnOnce(&T) -> String) -> String {
    match r {
        Ok(v) => ok(v),
        Err(e) => match e.raw_os_error() {
            Some(code) => errno_name(code),
            None => format!("error {e}"),
        },
    }
}

fn show_events(list: &[Event]) -> String {
    let parts: Vec<String> = list.iter().map(|e| format!("{e}")).collect();
    format!("[{}]", parts.join(", "))
}

impl Kernel {
    /// A fresh machine: nothing open, virtual time 0.
    pub fn new(config: KernelConfig) -> Kernel {
        Kernel {
            shared: Arc::new(Shared {
                state: prims::Mutex::new(State::new(config)),
                changed: prims::Condvar::new(),
                driver: prims::Mutex::new(None),
                base: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> prims::MutexGuard<'_, State> {
        // A panic under the lock (a failed assertion in a test) leaves no half-made change that
        // later calls could trip over in a way that matters more than the panic itself.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one call under the lock: counts it, looks up its fault, wakes blocked waiters if
    /// it changed anything.
    fn call<R>(&self, side: Side, kind: Call, f: impl FnOnce(&mut State, Option<Fault>) -> R) -> R {
        let mut st = self.lock();
        let before = st.generation;
        let fault = st.enter(side, kind);
        let r = f(&mut st, fault);
        st.settle();
        let wake = st.generation != before && st.waiters > 0;
        drop(st);
        if wake {
            self.shared.changed.notify_all();
        }
        r
    }

    fn fd(&self, num: i32, side: Side) -> Fd {
        Fd {
            kernel: self.clone(),
            num,
            side,
        }
    }

    /// The test's side of every connection: calls that are traced as the peer's and never
    /// faulted.
    pub fn peer(&self) -> Peer {
        Peer {
            kernel: self.clone(),
        }
    }

    /// Installs the [`Driver`] that every `epoll_wait` asks (replacing any earlier one).
    ///
    /// A driver that owns [`Fd`]s keeps this kernel alive through them (each holds a handle):
    /// call [`Kernel::clear_driver`] when done, or let the driver drop its descriptors, so the
    /// machine is freed.
    pub fn set_driver(&self, driver: impl Driver + 'static) {
        *self.shared.driver.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(driver));
    }

    /// Removes the driver; waits with timeout -1 then block on the condition variable.
    pub fn clear_driver(&self) {
        *self.shared.driver.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Adds a rule to the fault plan.
    ///
    /// # Panics
    ///
    /// If the rule injects an errno the man page does not allow for that call.
    pub fn inject(&self, rule: FaultRule) {
        if let Fault::Errno(code) = rule.fault {
            assert!(
                rule.call.allowed_errnos().contains(&code),
                "{} cannot fail with {}",
                rule.call.name(),
                errno_name(code)
            );
        }
        let mut st = self.lock();
        st.log(
            Side::Peer,
            format_args!("inject {:?} {:?} {:?}", rule.call, rule.when, rule.fault),
        );
        st.rules.push(rule);
    }

    /// The `n`th call of kind `call` through [`Os`] fails with `code`.
    pub fn fail_nth(&self, call: Call, n: u64, code: i32) {
        self.inject(FaultRule::new(call, When::Nth(n), Fault::Errno(code)));
    }

    /// The next call of kind `call` through [`Os`] fails with `code`.
    pub fn fail_next(&self, call: Call, code: i32) {
        self.inject(FaultRule::new(call, When::Next, Fault::Errno(code)));
    }

    /// Every call of kind `call` fails with `code` with chance `ppm` per million.
    pub fn fail_randomly(&self, call: Call, ppm: u32, code: i32) {
        self.inject(FaultRule::new(call, When::Chance(ppm), Fault::Errno(code)));
    }

    /// Empties the fault plan.
    pub fn clear_faults(&self) {
        self.lock().rules.clear();
    }

    /// Connects to `addr` never complete (the SYN is lost).
    pub fn set_unreachable(&self, addr: SocketAddr) {
        self.lock().unreachable.insert(addr);
    }

    /// Changes `RLIMIT_NOFILE`.
    pub fn set_fd_limit(&self, limit: u64) {
        self.lock().cfg.fd_limit = limit;
    }

    /// Changes [`KernelConfig::spurious_ppm`] from now on ([`Mode::Minimal`]).
    pub fn set_spurious_ppm(&self, ppm: u32) {
        self.lock().cfg.spurious_ppm = ppm;
    }

    /// Changes [`KernelConfig::defer_ppm`] from now on ([`Mode::Minimal`]).
    pub fn set_defer_ppm(&self, ppm: u32) {
        self.lock().cfg.defer_ppm = ppm;
    }

    /// Virtual time since creation.
    pub fn elapsed(&self) -> Duration {
        self.lock().now
    }

    /// Moves virtual time forward.
    pub fn advance(&self, by: Duration) {
        {
            let mut st = self.lock();
            st.advance(by);
            st.log(Side::Peer, format_args!("advance {by:?}"));
        }
        self.shared.changed.notify_all();
    }

    /// Calls of kind `call` made through [`Os`] (the loop and its handles): for example
    /// `calls(Call::EventfdWrite)` counts wake-ups.
    pub fn calls(&self, call: Call) -> u64 {
        self.lock()
            .counters
            .calls
            .get(&(Side::Os, call))
            .copied()
            .unwrap_or(0)
    }

    /// Calls of kind `call` made by the [`Peer`].
    pub fn peer_calls(&self, call: Call) -> u64 {
        self.lock()
            .counters
            .calls
            .get(&(Side::Peer, call))
            .copied()
            .unwrap_or(0)
    }

    /// Faults injected so far.
    pub fn faults_injected(&self) -> u64 {
        self.lock().counters.faults
    }

    /// Bytes the socket behind `fd` holds: (in its receive buffer, in its send buffer).
    pub fn buffered(&self, fd: &Fd) -> Option<(usize, usize)> {
        self.lock().buffered(fd.num)
    }

    /// Bytes held by every socket's buffers, closed sockets still flushing included.
    pub fn buffered_total(&self) -> usize {
        self.lock().buffered_total()
    }

    /// Open descriptors, both sides.
    pub fn open_fds(&self) -> usize {
        self.lock().fds.len()
    }

    /// Open descriptors of one side (the loop's are [`Side::Os`]), for leak checks.
    pub fn open_fds_of(&self, side: Side) -> usize {
        let st = self.lock();
        let peer = st.fds.range(state::PEER_FD_BASE..).count();
        match side {
            Side::Os => st.fds.len() - peer,
            Side::Peer => peer,
        }
    }

    /// Every socket the [`Os`] side has open: (descriptor, bytes in its receive buffer, bytes in
    /// its send buffer), by descriptor number; for memory-bound checks.
    pub fn os_sockets(&self) -> Vec<(i32, usize, usize)> {
        let st = self.lock();
        st.fds
            .range(..state::PEER_FD_BASE)
            .filter_map(|(&fd, _)| st.buffered(fd).map(|(r, w)| (fd, r, w)))
            .collect()
    }

    /// The trace so far: one line per call.
    pub fn trace(&self) -> String {
        self.lock().trace.clone()
    }

    /// A hash (FNV-1a) of the whole trace text; constant with [`KernelConfig::trace`] off.
    pub fn trace_hash(&self) -> u64 {
        self.lock().trace_hash
    }

    /// Lines traced so far.
    pub fn trace_lines(&self) -> u64 {
        self.lock().trace_lines
    }

    /// Why the run stalled, if it did (see [`Stall`]).
    pub fn stall(&self) -> Option<String> {
        self.lock().stalled.clone()
    }

    /// Adds a line of the caller's to the trace (a schedule step, say).
    pub fn note(&self, text: &str) {
        self.lock().log(Side::Peer, format_args!("note {text}"));
    }

    // -----------------------------------------------------------------------------------------
    // The calls, shared by the `Os` side and the peer side
    // -----------------------------------------------------------------------------------------

    fn do_connect(&self, side: Side, target: &Endpoint) -> io::Result<(Fd, bool)> {
        let r = self.call(side, Call::Connect, |st, fault| {
            let r = match fault {
                Some(Fault::Errno(e)) if e == errno::EINTR => {
                    st.connect(target, true).map(|(fd, _)| (fd, true))
                }
                Some(Fault::Errno(e)) => Err(state::os_err(e)),
                _ => st.connect(target, false),
            };
            st.log(
                side,
                format_args!(
                    "connect({target}) = {}",
                    show(&r, |(fd, p)| format!(
                        "{fd}{}",
                        if *p { " EINPROGRESS" } else { "" }
                    ))
                ),
            );
            r
        });
        r.map(|(num, p)| (self.fd(num, side), p))
    }

    fn do_read(&self, side: Side, fd: &Fd, buf: &mut [u8]) -> io::Result<usize> {
        self.call(side, Call::Read, |st, fault| {
            let r = match fault {
                Some(Fault::Errno(e)) => Err(state::os_err(e)),
                Some(Fault::Short(n)) => st.read(fd.num, buf, Some(n.max(1))),
                None => st.read(fd.num, buf, None),
            };
            st.log(
                side,
                format_args!(
                    "read({}, {}) = {}",
                    fd.num,
                    buf.len(),
                    show(&r, |n| n.to_string())
                ),
            );
            r
        })
    }

    fn do_write(&self, side: Side, fd: &Fd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let offered: usize = bufs.iter().take(crate::os::MAX_IOV).map(|b| b.len()).sum();
        self.call(side, Call::Write, |st, fault| {
            // Only what the write can take (plus one byte, so a short write still shows as
            // one) is copied: copying all of a large backlog on every call was quadratic.
            let limit = st.write_limit(fd.num).saturating_add(1);
            let bytes: Vec<u8> = bufs
                .iter()
                .take(crate::os::MAX_IOV)
                .flat_map(|b| b.iter().copied())
                .take(limit)
                .collect();
            let r = match fault {
                Some(Fault::Errno(e)) => Err(state::os_err(e)),
                Some(Fault::Short(n)) => st.write(fd.num, &bytes, Some(n.max(1))),
                None => st.write(fd.num, &bytes, None),
            };
            st.log(
                side,
                format_args!(
                    "sendmsg({}, {}) = {}",
                    fd.num,
                    offered,
                    show(&r, |n| n.to_string())
                ),
            );
            r
        })
    }

    fn do_shutdown(&self, side: Side, fd: &Fd, how: Shutdown) -> io::Result<()> {
        self.call(side, Call::Shutdown, |st, fault| {
            let r = match fault {
                Some(Fault::Errno(e)) => Err(state::os_err(e)),
                _ => st.shutdown(fd.num, how),
            };
            st.log(
                side,
                format_args!(
                    "shutdown({}, {how:?}) = {}",
                    fd.num,
                    show(&r, |_| "0".into())
                ),
            );
            r
        })
    }

    fn do_accept(&self, side: Side, listener: &Fd) -> io::Result<(Fd, Endpoint)> {
        let r = self.call(side, Call::Accept, |st, fault| {
            let r = match fault {
                Some(Fault::Errno(e)) => Err(state::os_err(e)),
                _ => st.accept(listener.num),
            };
            st.log(
                side,
                format_args!(
                    "accept4({}) = {}",
                    listener.num,
                    show(&r, |(fd, peer)| format!("{fd} from {peer}"))
                ),
            );
            r
        });
        r.map(|(num, peer)| (self.fd(num, side), peer))
    }

    fn do_listen(&self, side: Side, at: &Endpoint, backlog: u32) -> io::Result<(Fd, Endpoint)> {
        let r = self.call(side, Call::Listen, |st, fault| {
            let r = match fault {
                Some(Fault::Errno(e)) => Err(state::os_err(e)),
                _ => st.listen(at, backlog),
            };
            st.log(
                side,
                format_args!(
                    "listen({at}, {backlog}) = {}",
                    show(&r, |(fd, local)| format!("{fd} on {local}"))
                ),
            );
            r
        });
        r.map(|(num, local)| (self.fd(num, side), local))
    }

    fn do_set_linger_zero(&self, side: Side, fd: &Fd) -> io::Result<()> {
        self.call(side, Call::SetOption, |st, fault| {
            let r = match fault {
                Some(Fault::Errno(e)) => Err(state::os_err(e)),
                _ => st.set_linger_zero(fd.num),
            };
            st.log(
                side,
                format_args!(
                    "setsockopt({}, SO_LINGER 0) = {}",
                    fd.num,
                    show(&r, |_| "0".into())
                ),
            );
            r
        })
    }

    fn do_take_error(&self, side: Side, fd: &Fd) -> io::Result<Option<io::Error>> {
        self.call(side, Call::TakeError, |st, fault| {
            let r = match fault {
                Some(Fault::Errno(e)) => Err(state::os_err(e)),
                _ => st.take_error(fd.num),
            };
            st.log(
                side,
                format_args!(
                    "getsockopt({}, SO_ERROR) = {}",
                    fd.num,
                    show(&r, |e| e.map_or("0".into(), errno_name))
                ),
            );
            r.map(|e| e.map(state::os_err))
        })
    }

    fn do_set_buffer(&self, side: Side, fd: &Fd, bytes: usize, send: bool) -> io::Result<()> {
        self.call(side, Call::SetOption, |st, fault| {
            let r = match fault {
                Some(Fault::Errno(e)) => Err(state::os_err(e)),
                _ => st.set_buffer(fd.num, bytes, send),
            };
            let name = if send { "SO_SNDBUF" } else { "SO_RCVBUF" };
            st.log(
                side,
                format_args!(
                    "setsockopt({}, {name} {bytes}) = {}",
                    fd.num,
                    show(&r, |_| "0".into())
                ),
            );
            r
        })
    }

    /// The stall path of `epoll_wait`: records it and returns the error.
    fn stalled(&self, st: &mut State) -> io::Error {
        let stall = Stall { at: st.now };
        st.stalled = Some(stall.to_string());
        st.log(Side::Os, format_args!("stall"));
        io::Error::other(stall)
    }

    fn take_driver(&self) -> Option<Box<dyn Driver>> {
        self.shared
            .driver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    fn put_driver(&self, driver: Box<dyn Driver>) {
        let mut slot = self.shared.driver.lock().unwrap_or_else(|e| e.into_inner());
        // A driver that installed a replacement while it ran keeps the replacement.
        if slot.is_none() {
            *slot = Some(driver);
        }
    }
}

/// The test's side of the simulated machine: clients that connect to the loop, and servers
/// the loop connects to.
///
/// Its calls go to the same kernel as the loop's but are traced as `peer` and never faulted.
/// Descriptors it returns are [`Fd`]s; dropping one closes it.
#[derive(Debug, Clone)]
pub struct Peer {
    kernel: Kernel,
}

/// How [`Peer::read_available`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    /// `EAGAIN`: nothing more for now.
    WouldBlock,
    /// EOF: the other side's FIN arrived.
    Eof,
    /// An error (a reset): its errno.
    Error(i32),
}

impl Peer {
    /// `socket` + `connect(2)` to `target`; the connect may still be in progress (see the
    /// module docs).
    ///
    /// # Errors
    ///
    /// As `connect(2)` (for Unix sockets: `ENOENT`, `ECONNREFUSED`, `EAGAIN`).
    pub fn connect(&self, target: &Endpoint) -> io::Result<Fd> {
        self.kernel.do_connect(Side::Peer, target).map(|(fd, _)| fd)
    }

    /// One `write(2)`: how much of `bytes` the buffers took.
    ///
    /// # Errors
    ///
    /// `EAGAIN` when full, `EPIPE` or `ECONNRESET` after a reset or shutdown.
    pub fn write(&self, fd: &Fd, bytes: &[u8]) -> io::Result<usize> {
        self.kernel.do_write(Side::Peer, fd, &[IoSlice::new(bytes)])
    }

    /// Writes as much of `bytes` as the buffers take now; returns how much that was (maybe 0).
    ///
    /// # Errors
    ///
    /// Any error but `EAGAIN`.
    pub fn write_some(&self, fd: &Fd, bytes: &[u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < bytes.len() {
            match self.write(fd, &bytes[done..]) {
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// One `read(2)`.
    ///
    /// # Errors
    ///
    /// `EAGAIN` when empty, `ECONNRESET` after a reset.
    pub fn read(&self, fd: &Fd, buf: &mut [u8]) -> io::Result<usize> {
        self.kernel.do_read(Side::Peer, fd, buf)
    }

    /// Reads until `EAGAIN`, EOF or an error; returns the bytes and how it stopped.
    pub fn read_available(&self, fd: &Fd) -> (Vec<u8>, ReadEnd) {
        let mut out = Vec::new();
        let mut buf = [0u8; 4 * 1024];
        loop {
            match self.read(fd, &mut buf) {
                Ok(0) => return (out, ReadEnd::Eof),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return (out, ReadEnd::WouldBlock)
                }
                Err(e) => return (out, ReadEnd::Error(e.raw_os_error().unwrap_or(0))),
            }
        }
    }

    /// `shutdown(2)`.
    ///
    /// # Errors
    ///
    /// `ENOTCONN` if not connected.
    pub fn shutdown(&self, fd: &Fd, how: Shutdown) -> io::Result<()> {
        self.kernel.do_shutdown(Side::Peer, fd, how)
    }

    /// `SO_LINGER` 0 and close: the other side gets an RST.
    pub fn reset(&self, fd: Fd) {
        // Setting an option on an open socket cannot fail here.
        let _ = self.kernel.do_set_linger_zero(Side::Peer, &fd);
        drop(fd);
    }

    /// `SO_ERROR`.
    ///
    /// # Errors
    ///
    /// `ENOTSOCK` for something that is not a socket.
    pub fn take_error(&self, fd: &Fd) -> io::Result<Option<io::Error>> {
        self.kernel.do_take_error(Side::Peer, fd)
    }

    /// `SO_RCVBUF`, exact.
    ///
    /// # Errors
    ///
    /// `ENOTSOCK` for something that is not a socket.
    pub fn set_recv_buffer(&self, fd: &Fd, bytes: usize) -> io::Result<()> {
        self.kernel.do_set_buffer(Side::Peer, fd, bytes, false)
    }

    /// `SO_SNDBUF`, exact.
    ///
    /// # Errors
    ///
    /// `ENOTSOCK` for something that is not a socket.
    pub fn set_send_buffer(&self, fd: &Fd, bytes: usize) -> io::Result<()> {
        self.kernel.do_set_buffer(Side::Peer, fd, bytes, true)
    }

    /// A listening socket, for a server the loop connects to.
    ///
    /// # Errors
    ///
    /// `EADDRINUSE` if taken.
    pub fn listen(&self, at: &Endpoint, backlog: u32) -> io::Result<(Fd, Endpoint)> {
        self.kernel.do_listen(Side::Peer, at, backlog)
    }

    /// `accept4`.
    ///
    /// # Errors
    ///
    /// `EAGAIN` with an empty backlog.
    pub fn accept(&self, listener: &Fd) -> io::Result<(Fd, Endpoint)> {
        self.kernel.do_accept(Side::Peer, listener)
    }
}

impl Os for Kernel {
    type Fd = Fd;
    type Events = Events;

    fn raw(fd: &Fd) -> i32 {
        fd.num
    }

    fn borrow_fd(_fd: &Fd) -> Option<BorrowedFd<'_>> {
        None
    }

    fn epoll_create(&self) -> io::Result<Fd> {
        let r = self.call(Side::Os, Call::EpollCreate, |st, fault| {
            let r = match fault {
                Some(Fault::Errno(e)) => Err(state::os_err(e)),
                _ => st.epoll_create(),
            };
            st.log(
                Side::Os,
                format_args!("epoll_create() = {}", show(&r, |fd| fd.to_string())),
            );
            r
        });
        r.map(|num| self.fd(num, Side::Os))
    }

    fn epoll_add(&self, epoll: &Fd, fd: &Fd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(epoll, fd, token, interest, true)
    }

    fn epoll_modify(&self, epoll: &Fd, fd: &Fd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(epoll, fd, token, interest, false)
    }

    fn epoll_delete(&self, epoll: &Fd, fd: &Fd) -> io::Result<()> {
        self.call(Side::Os, Call::EpollCtl, |st, fault| {
            let r = match fault {
                Some(Fault::Errno(e)) => Err(state::os_err(e)),
                _ => st.epoll_delete(epoll.num, fd.num),
            };
            st.log(
                Side::Os,
                format_args!(
                    "epoll_ctl({}, DEL, {}) = {}",
                    epoll.num,
                    fd.num,
                    show(&r, |_| "0".into())
                ),
            );
            r
        })
    }

    fn events(&self, capacity: usize) -> Events {
        Events {
            capacity: capacity.max(1),
            list: Vec::new(),
        }
    }

    fn event_count(events: &Events) -> usize {
        events.list.len()
    }

    fn event(events: &Events, i: usize) -> Event {
        events.list[i]
    }

    fn epoll_wait(&self, epoll: &Fd, events: &mut Events, timeout_ms: i32) -> io::Result<()> {
        events.list.clear();
        let (deadline, fault) = {
            let mut st = self.lock();
            let fault = st.enter(Side::Os, Call::EpollWait);
            let deadline = u64::try_from(timeout_ms)
                .ok()
                .map(|ms| st.now.saturating_add(Duration::from_millis(ms)));
            (deadline, fault)
        };
        if let Some(Fault::Errno(e)) = fault {
            let mut st = self.lock();
            st.log(
                Side::Os,
                format_args!(
                    "epoll_wait({}, {timeout_ms}) = {}",
                    epoll.num,
                    errno_name(e)
                ),
            );
            return Err(state::os_err(e));
        }
        let mut asked = 0;
        let mut idle_steps = 0u32;
        loop {
            let mut driven = false;
            let mut resume = false;
            if let Some(mut driver) = self.take_driver() {
                driven = true;
                let (wait, before) = {
                    let st = self.lock();
                    let wait = Wait {
                        timeout: deadline.map(|d| d.saturating_sub(st.now)),
                        now: st.now,
                        ready: st.has_ready(epoll.num),
                        asked,
                    };
                    (wait, (st.generation,))
                };
                asked += 1;
                let mut step = driver.step(self, &wait);
                self.put_driver(driver);
                if step != DriverStep::Wait && step != DriverStep::Block {
                    let st = self.lock();
                    if st.generation == before.0 {
                        idle_steps += 1;
                    } else {
                        idle_steps = 0;
                    }
                    if idle_steps >= IDLE_AGAINS
                        && (step == DriverStep::Again || deadline.is_none())
                    {
                        // A driver that keeps asking to be asked again without changing
                        // anything would spin here forever: it is taken at its word that
                        // nothing is left.
                        step = DriverStep::Wait;
                    }
                }
                match step {
                    DriverStep::Again => continue,
                    DriverStep::Sleep(d) => {
                        let mut st = self.lock();
                        let target = st.now.saturating_add(d);
                        match deadline {
                            Some(at) if at <= target => {
                                let by = at.saturating_sub(st.now);
                                st.advance(by);
                                // The timeout ran out; collect what is there (maybe nothing).
                            }
                            _ => {
                                st.advance(d);
                                let ready = st.has_ready(epoll.num);
                                drop(st);
                                self.shared.changed.notify_all();
                                if !ready {
                                    continue;
                                }
                                // Something is ready: the wait returns it (or, if it polls as
                                // not ready after all, asks the driver again).
                                resume = true;
                            }
                        }
                    }
                    DriverStep::Wait => {}
                    // As without a driver: a wait with nothing ready blocks for real.
                    DriverStep::Block => driven = false,
                }
            }
            let mut st = self.lock();
            let list = st.collect(epoll.num, events.capacity)?;
            st.settle();
            if resume && list.is_empty() && timeout_ms != 0 {
                continue;
            }
            if !list.is_empty() || timeout_ms == 0 {
                st.log(
                    Side::Os,
                    format_args!(
                        "epoll_wait({}, {timeout_ms}) = {}",
                        epoll.num,
                        show_events(&list)
                    ),
                );
                events.list = list;
                return Ok(());
            }
            match deadline {
                Some(at) => {
                    if at > st.now {
                        let by = at - st.now;
                        st.advance(by);
                    }
                    st.log(
                        Side::Os,
                        format_args!("epoll_wait({}, {timeout_ms}) = []", epoll.num),
                    );
                    return Ok(());
                }
                None if driven => return Err(self.stalled(&mut st)),
                None => {
                    // Block for real until another thread changes something.
                    let seen = st.generation;
                    st.waiters += 1;
                    while st.generation == seen {
                        st = self
                            .shared
                            .changed
                            .wait(st)
                            .unwrap_or_else(|e| e.into_inner());
                    }
                    st.waiters -= 1;
                }
            }
        }
    }

    fn eventfd(&self) -> io::Result<Fd> {
        let r = self.call(Side::Os, Call::Eventfd, |st, fault| {
            let r = match fault {
                Some(Fault::Errno(e)) => Err(state::os_err(e)),
                _ => st.eventfd(),
            };
            st.log(
                Side::Os,
                format_args!("eventfd() = {}", show(&r, |fd| fd.to_string())),
            );
            r
        });
        r.map(|num| self.fd(num, Side::Os))
    }

    fn eventfd_write(&self, fd: &Fd, value: u64) -> io::Result<()> {
        self.call(Side::Os, Call::EventfdWrite, |st, fault| {
            let r = match fault {
                Some(Fault::Errno(e)) => Err(state::os_err(e)),
                _ => st.eventfd_write(fd.num, value),
            };
            st.log(
                Side::Os,
                format_args!(
                    "eventfd_write({}, {value}) = {}",
                    fd.num,
                    show(&r, |_| "0".into())
                ),
            );
            r
        })
    }

    fn eventfd_read(&self, fd: &Fd) -> io::Result<u64> {
        self.call(Side::Os, Call::EventfdRead, |st, fault| {
            let r = match fault {
                Some(Fault::Errno(e)) => Err(state::os_err(e)),
                _ => st.eventfd_read(fd.num),
            };
            st.log(
                Side::Os,
                format_args!("eventfd_read({}) = {}", fd.num, show(&r, |v| v.to_string())),
            );
            r
        })
    }

    fn listen(&self, at: &Endpoint, backlog: u32) -> io::Result<(Fd, Endpoint)> {
        self.do_listen(Side::Os, at, backlog)
    }

    fn accept(&self, listener: &Fd) -> io::Result<(Fd, Endpoint)> {
        self.do_accept(Side::Os, listener)
    }

    fn connect(&self, target: &Endpoint) -> io::Result<(Fd, bool)> {
        self.do_connect(Side::Os, target)
    }

    fn read(&self, fd: &Fd, buf: &mut [u8]) -> io::Result<usize> {
        self.do_read(Side::Os, fd, buf)
    }

    fn writev(&self, fd: &Fd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.do_write(Side::Os, fd, bufs)
    }

    fn shutdown(&self, fd: &Fd, how: Shutdown) -> io::Result<()> {
        self.do_shutdown(Side::Os, fd, how)
    }

    fn take_error(&self, fd: &Fd) -> io::Result<Option<io::Error>> {
        self.do_take_error(Side::Os, fd)
    }

    fn is_connected(&self, fd: &Fd) -> io::Result<bool> {
        // Traced (it is a syscall) but not faulted: getpeername's only errors are about the
        // socket itself.
        let mut st = self.lock();
        let r = st.is_connected(fd.num);
        st.log(
            Side::Os,
            format_args!(
                "getpeername({}) = {}",
                fd.num,
                show(&r, |c| if *c { "0".into() } else { "ENOTCONN".into() })
            ),
        );
        r
    }

    fn set_send_buffer(&self, fd: &Fd, bytes: usize) -> io::Result<()> {
        self.do_set_buffer(Side::Os, fd, bytes, true)
    }

    fn set_recv_buffer(&self, fd: &Fd, bytes: usize) -> io::Result<()> {
        self.do_set_buffer(Side::Os, fd, bytes, false)
    }

    fn set_nodelay(&self, fd: &Fd) -> io::Result<()> {
        self.call(Side::Os, Call::SetOption, |st, fault| {
            let r = match fault {
                Some(Fault::Errno(e)) => Err(state::os_err(e)),
                _ => st.set_nodelay(fd.num),
            };
            st.log(
                Side::Os,
                format_args!(
                    "setsockopt({}, TCP_NODELAY) = {}",
                    fd.num,
                    show(&r, |_| "0".into())
                ),
            );
            r
        })
    }

    fn set_linger_zero(&self, fd: &Fd) -> io::Result<()> {
        self.do_set_linger_zero(Side::Os, fd)
    }

    fn dup(&self, fd: &Fd) -> io::Result<Fd> {
        let r = self.call(Side::Os, Call::Dup, |st, fault| {
            let r = match fault {
                Some(Fault::Errno(e)) => Err(state::os_err(e)),
                _ => st.dup(fd.num),
            };
            st.log(
                Side::Os,
                format_args!("dup({}) = {}", fd.num, show(&r, |n| n.to_string())),
            );
            r
        });
        r.map(|num| self.fd(num, fd.side))
    }

    fn open_spare(&self) -> io::Result<Fd> {
        let r = self.call(Side::Os, Call::OpenSpare, |st, fault| {
            let r = match fault {
                Some(Fault::Errno(e)) => Err(state::os_err(e)),
                _ => st.open_spare(),
            };
            st.log(
                Side::Os,
                format_args!("open(/dev/null) = {}", show(&r, |n| n.to_string())),
            );
            r
        });
        r.map(|num| self.fd(num, Side::Os))
    }

    fn path_identity(&self, path: &Path) -> Option<u64> {
        self.lock().paths.get(path).map(|e| e.inode)
    }

    fn remove_path(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let r = st
            .paths
            .remove(path)
            .map(drop)
            .ok_or_else(|| state::os_err(errno::ENOENT));
        st.log(
            Side::Os,
            format_args!("unlink({}) = {}", path.display(), show(&r, |_| "0".into())),
        );
        r
    }

    fn install_termination_handler(&self, _wake: &Fd) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the simulated kernel has no signals",
        ))
    }

    fn termination_requested(&self) -> bool {
        false
    }

    fn now(&self) -> Instant {
        let now = self.lock().now;
        self.shared.base + now
    }
}

impl Kernel {
    fn ctl(
        &self,
        epoll: &Fd,
        fd: &Fd,
        token: u64,
        interest: Interest,
        add: bool,
    ) -> io::Result<()> {
        self.call(Side::Os, Call::EpollCtl, |st, fault| {
            let r = match fault {
                Some(Fault::Errno(e)) => Err(state::os_err(e)),
                _ => st.epoll_ctl(epoll.num, fd.num, token, interest, add),
            };
            let op = if add { "ADD" } else { "MOD" };
            let mut flags = String::new();
            if interest.readable {
                flags.push_str("IN|");
            }
            if interest.writable {
                flags.push_str("OUT|");
            }
            if interest.exclusive {
                flags.push_str("EXCLUSIVE|");
            }
            flags.push_str("RDHUP|ET");
            st.log(
                Side::Os,
                format_args!(
                    "epoll_ctl({}, {op}, {}, {token:#x}, {flags}) = {}",
                    epoll.num,
                    fd.num,
                    show(&r, |_| "0".into())
                ),
            );
            r
        })
    }
}
