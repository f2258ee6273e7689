//! The edge-triggered epoll event loop.
//!
//! A [`Server`] owns one epoll instance, its listening sockets, every connection and one
//! eventfd, and runs on the thread that calls [`Server::run`].
//! Your [`Handler`] sees whole messages, decoded by a [`Framing`] that is cloned for each
//! connection.
//! Any thread can send to a connection through a [`ConnHandle`]: it encodes on its own thread,
//! pushes the bytes onto that connection's send queue ([`crate::queue`]) and writes the eventfd
//! only when the push took the queue from empty to non-empty.
//! Only the loop thread ever writes a socket, so bytes of different messages never interleave.
//!
//! # How the loop treats the kernel
//!
//! Every item of `EPOLL-NOTES.md` that applies to one loop is handled, and each has a named
//! test in `core/tests/loop_epoll_notes.rs` that fails on a known-bad variant:
//!
//! - every fd is registered with `EPOLLET | EPOLLRDHUP`;
//! - accept drains until `EAGAIN`, and `EMFILE`/`ENFILE` are met with the reserve-fd trick
//!   (close a spare fd, accept, close, reopen the spare) and reported to
//!   [`Handler::on_accept_error`];
//! - reads go until `EAGAIN` or the per-turn fairness budget; a connection that used up its
//!   budget is put on a ready list and served again next turn, without waiting for an edge;
//!   within an event that carried no `EPOLLRDHUP`/`EPOLLHUP`/`EPOLLERR`, a short read also ends
//!   the pass, since under `EPOLLET` it proves the receive queue was empty and any later byte
//!   raises a new edge (this saves the empty `read` that would only confirm `EAGAIN`);
//! - writes are gathered (up to 64 slices per call), partial writes resume from the exact byte,
//!   and a write that hits `EAGAIN` resumes on the next `EPOLLOUT` edge;
//! - `EPOLLRDHUP` (peer FIN): the rest is delivered, [`Framing::decode_eof`] is called, pending
//!   output is flushed, then the connection is closed;
//! - an RST or error closes the connection and reports how many bytes were not sent;
//! - `EPOLL_CTL_DEL` runs before `close`; `epoll_event.data` holds an index plus a generation,
//!   never a pointer, and events for an older generation are ignored;
//! - `EINTR` from `epoll_wait` is retried with the timeout recomputed;
//! - the eventfd is read (reset) before the send queues are drained, and a write that finds its
//!   counter full (`EAGAIN`) counts as "already signalled".
//!
//! # Memory bounds
//!
//! A connection buffers at most [`Framing::max_buffered`] (or [`Config::max_frame_len`]) plus
//! one [`Config::read_chunk`] of input, whatever a peer sends.
//! Its unsent output stops the reading of its input above [`Config::high_watermark`] and
//! resumes it below [`Config::low_watermark`]; other threads get their message back as
//! [`SendError::Full`] above the high watermark.

mod event_loop;
mod loops;
mod output;
#[doc(hidden)]
pub mod testing;

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

// The atomics and the routing table's lock that handles share with the loop come through the
// `sync` facade, so a loom model of the real loop over the simulated kernel sees them.
use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use crate::sync::Mutex;
use std::time::Duration;

use crate::framing::{FrameError, Framing};
use crate::os::Os;
use crate::queue::{Producer, Wake};
use crate::sys::ThreadId;

pub use crate::sys::Endpoint;
pub use event_loop::Server;
pub use loops::{Loops, LoopsHandle, Sharing};

use output::Output;

/// Tuning knobs of the loop, each with a documented default.
///
/// Build one with struct-update syntax:
///
/// ```
/// use std::time::Duration;
/// let config = refloop::Config { idle_timeout: Some(Duration::from_secs(5)), ..Default::default() };
/// assert_eq!(config.read_chunk, 64 * 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The longest frame accepted, in bytes, when the framing does not say
    /// ([`Framing::max_buffered`] returns `None`).
    /// A connection holding more undecoded input than this (plus one read chunk) is closed with
    /// [`FrameError::TooLong`].
    /// Default: 1 MiB.
    pub max_frame_len: usize,
    /// Bytes asked for by one `read(2)` (one buffer of this size serves every connection); at
    /// most 64 MiB. Default: 64 KiB.
    pub read_chunk: usize,
    /// Bytes read from one connection per loop turn before the loop moves on to the others.
    /// A connection that is still readable goes on the ready list and is served next turn.
    /// Default: 256 KiB.
    pub fairness_budget: usize,
    /// Unsent output (bytes) above which the loop stops reading the connection, and above which
    /// [`ConnHandle::send`] returns [`SendError::Full`]. Default: 1 MiB.
    pub high_watermark: usize,
    /// Unsent output (bytes) at or below which a paused connection is read again; more than 0
    /// and at most `high_watermark`. Default: 256 KiB.
    pub low_watermark: usize,
    /// A connection with no input and no output progress for this long is closed with
    /// [`DisconnectReason::IdleTimeout`]; an outbound connect that takes this long fails with
    /// [`io::ErrorKind::TimedOut`]; a closing connection whose peer stops reading for this long
    /// is reset, with its unsent bytes counted. `None` disables it, and so does a duration too
    /// long to add to the clock ([`Duration::MAX`]). Default: 5 minutes.
    pub idle_timeout: Option<Duration>,
    /// The most connections (accepted and outbound) open at once. At the limit the loop stops
    /// accepting, and new clients wait in the listen backlog until a connection closes.
    /// Default: 16384.
    pub max_connections: usize,
    /// How long a graceful [`LoopHandle::shutdown`] may spend flushing pending output before
    /// it closes what is left. Default: 5 s.
    pub shutdown_timeout: Duration,
    /// After a local close has flushed its output, the loop shuts down its write half and
    /// reads (and discards) until the peer's FIN for at most this long, so that closing does
    /// not reset the connection and destroy the reply in flight. Default: 2 s.
    pub close_linger: Duration,
    /// `SO_SNDBUF` for every connection; `None` keeps the system default. Default: `None`.
    pub send_buffer_size: Option<usize>,
    /// `SO_RCVBUF` for every connection; `None` keeps the system default. Default: `None`.
    pub recv_buffer_size: Option<usize>,
    /// Sets `TCP_NODELAY` on TCP connections. Default: `true`.
    pub nodelay: bool,
    /// Events fetched per `epoll_wait`; at most 1048576. Default: 1024.
    pub events_capacity: usize,
    /// A known-bad variant to run instead of the correct code (the kit only: it exists with
    /// the hidden `known-bad` cargo feature, which no release build enables).
    #[cfg(feature = "known-bad")]
    #[doc(hidden)]
    pub known_bad: KnownBad,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_frame_len: 1024 * 1024,
            read_chunk: 64 * 1024,
            fairness_budget: 256 * 1024,
            high_watermark: 1024 * 1024,
            low_watermark: 256 * 1024,
            idle_timeout: Some(Duration::from_secs(300)),
            max_connections: 16384,
            shutdown_timeout: Duration::from_secs(5),
            close_linger: Duration::from_secs(2),
            send_buffer_size: None,
            recv_buffer_size: None,
            nodelay: true,
            events_capacity: 1024,
            #[cfg(feature = "known-bad")]
            known_bad: KnownBad::None,
        }
    }
}

impl Config {
    /// Whether this loop runs the known-bad variant `which`; always `false` (and so compiled
    /// out) without the `known-bad` feature.
    #[inline(always)]
    pub(crate) fn bad(&self, which: KnownBad) -> bool {
        #[cfg(feature = "known-bad")]
        return self.known_bad == which;
        #[cfg(not(feature = "known-bad"))]
        {
            let _ = which;
            false
        }
    }

    /// Checks every field against its rule, so a bad value is an error at construction instead
    /// of a hang or a panic later; the error names the field and the rule.
    ///
    /// [`Server::new`] and [`Server::with_os`] call this.
    ///
    /// # Errors
    ///
    /// Returns the first rule `self` breaks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rule = |ok: bool, field: &'static str, rule: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError { field, rule })
            }
        };
        rule(self.max_frame_len > 0, "max_frame_len", "must be > 0")?;
        rule(
            self.read_chunk > 0 && self.read_chunk <= MAX_READ_CHUNK,
            "read_chunk",
            "must be > 0 and <= 64 MiB",
        )?;
        rule(self.fairness_budget > 0, "fairness_budget", "must be > 0")?;
        rule(
            self.low_watermark > 0 && self.low_watermark <= self.high_watermark,
            "low_watermark",
            "must be > 0 and <= high_watermark",
        )?;
        rule(self.max_connections > 0, "max_connections", "must be > 0")?;
        rule(self.events_capacity > 0, "events_capacity", "must be > 0")?;
        rule(
            self.events_capacity <= MAX_EVENTS_CAPACITY,
            "events_capacity",
            "must be <= 1048576",
        )?;
        rule(
            self.send_buffer_size.is_none_or(|n| n > 0),
            "send_buffer_size",
            "must be > 0 when set",
        )?;
        rule(
            self.recv_buffer_size.is_none_or(|n| n > 0),
            "recv_buffer_size",
            "must be > 0 when set",
        )?;
        rule(
            self.idle_timeout.is_none_or(|t| !t.is_zero()),
            "idle_timeout",
            "must be > 0 when set (use None to disable it)",
        )?;
        Ok(())
    }
}

/// The largest [`Config::read_chunk`]: the loop allocates one buffer of this size.
const MAX_READ_CHUNK: usize = 64 * 1024 * 1024;
/// The largest [`Config::events_capacity`] (12 bytes of buffer per event).
const MAX_EVENTS_CAPACITY: usize = 1 << 20;

/// A [`Config`] field that breaks its rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field's name.
    pub field: &'static str,
    /// The rule it breaks.
    pub rule: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid config: {} {}", self.field, self.rule)
    }
}

impl std::error::Error for ConfigError {}

/// Deliberately broken variants of the loop, so tests can show that their checks reject them.
///
/// Never use anything but [`KnownBad::None`] outside a test.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KnownBad {
    /// The correct loop.
    #[default]
    None,
    /// One `read` per readiness edge (EPOLL-NOTES 1): the tail of a burst hangs.
    ReadOnce,
    /// One `accept` per listener edge (EPOLL-NOTES 2): queued clients hang.
    AcceptOnce,
    /// Read until `EAGAIN` with no fairness budget (EPOLL-NOTES 3): one busy peer starves others.
    NoFairness,
    /// Forget the rest of a partly written chunk (EPOLL-NOTES 5): the stream is corrupted.
    DropPartialWriteRest,
    /// Close at once on `EPOLLRDHUP`, without delivering the rest or flushing (EPOLL-NOTES 6).
    CloseOnReadHup,
    /// `close` without `EPOLL_CTL_DEL` (EPOLL-NOTES 7): a duplicated fd keeps producing events.
    CloseWithoutDelete,
    /// Ignore the generation in ids and tokens (EPOLL-NOTES 8): stale ids reach new connections.
    NoGeneration,
    /// On `EMFILE`, just stop accepting (EPOLL-NOTES 9): the edge-triggered listener stalls.
    NoReserveFd,
    /// Treat `EINTR` from `epoll_wait` as fatal (EPOLL-NOTES 10).
    EintrFatal,
    /// Drain the send queues, then reset the eventfd (EPOLL-NOTES 12): a wake-up is lost.
    DrainBeforeEventfdReset,
    /// Ignore `EPOLLOUT` edges (EPOLL-NOTES 4): output stuck behind `EAGAIN` never resumes.
    IgnoreWritable,
    /// A push onto an empty send queue does not wake the loop (EPOLL-NOTES 11).
    SkipWake,
    /// Every push writes the eventfd, not just the first on an empty queue (EPOLL-NOTES 13).
    WakeEveryPush,
    /// A close reports no unsent bytes, whatever it threw away (exactly-once accounting).
    UncountedUnsent,
    /// `Conn::send` encodes into a fresh buffer per message (the hot path allocates).
    AllocPerSend,
    /// Stop at a short read even when the event carried `EPOLLRDHUP`: the FIN queued behind the
    /// data is never read, since it raised no new edge (EPOLL-NOTES 1 and 6).
    ShortReadIgnoresHangup,
    /// After a transient `accept4` failure (`ENOBUFS`, `ENOMEM`), wait for the next listener
    /// edge instead of retrying on a timer (EPOLL-NOTES 18): clients already in the backlog
    /// wait until another one connects.
    NoAcceptRetry,
    /// Bound a closing connection's flush by `close_linger` (review bug 2): a reading peer
    /// slower than the linger gets a truncated reply.
    LingerCutsFlush,
    /// Complete an outbound connect without reading what the same event reported (review bug
    /// 1, EPOLL-NOTES 17): a greeting the peer sent first is stranded.
    ConnectSkipsRead,
    /// Leave the timer entries of closed connections in the heap until they fall due (review
    /// bug 7): memory grows with the number of closed connections.
    StaleTimers,
    /// Check the high watermark only between read passes (review bug 8): unsent output grows
    /// far past it within one pass.
    WatermarkBetweenPasses,
    /// Register a listener shared by several loops without `EPOLLEXCLUSIVE` (EPOLL-NOTES 15,
    /// "thunder" mode, and without the hand-over to a less loaded loop): every loop wakes for
    /// every connection, and all but one find nothing.
    Thunder,
    /// Never hand a client of a shared `EPOLLEXCLUSIVE` listener to a less loaded loop: the
    /// kernel's wake-up order then gives one loop most of the connections.
    NoAcceptBalance,
}

/// Names one connection for the lifetime of a loop; never reused.
///
/// It is a slot index plus a generation that grows each time the slot is reused, so an id held
/// after its connection closed can never name the next connection in that slot, even though the
/// kernel hands out the same fd number at once.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    /// The server (or group of loops) this id belongs to, so an id never names a connection
    /// of another one.
    instance: u32,
    loop_index: u16,
    index: u32,
    generation: u32,
}

impl ConnId {
    /// Generations live in 31 bits, so a connection token never has bit 63 set (the loop's
    /// own tokens do).
    const GENERATION_MASK: u32 = (1 << 31) - 1;

    /// The loop this connection lives on (0 for a single [`Server`]; see [`crate::Loops`]).
    pub fn loop_index(self) -> usize {
        usize::from(self.loop_index)
    }

    /// The slot index (reused after a close).
    pub fn index(self) -> u32 {
        self.index
    }

    /// The slot's generation (never the same for two connections in one slot, up to 2^31
    /// reuses).
    pub fn generation(self) -> u32 {
        self.generation
    }

    /// The epoll token: the generation in the high half, the index in the low half.
    pub(crate) fn token(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    pub(crate) fn from_token(token: u64, loop_index: u16, instance: u32) -> ConnId {
        ConnId {
            instance,
            loop_index,
            index: token as u32,
            generation: (token >> 32) as u32,
        }
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.loop_index == 0 {
            write!(f, "ConnId({}g{})", self.index, self.generation)
        } else {
            write!(
                f,
                "ConnId(l{}.{}g{})",
                self.loop_index, self.index, self.generation
            )
        }
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.loop_index == 0 {
            write!(f, "conn {}g{}", self.index, self.generation)
        } else {
            write!(
                f,
                "conn l{}.{}g{}",
                self.loop_index, self.index, self.generation
            )
        }
    }
}

/// A fresh instance number for a server or a group of loops. (A plain std atomic: a process-wide
/// counter that orders nothing, outside any model.)
pub(crate) fn next_instance() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    // Relaxed: only uniqueness matters; it wraps after 2^32 servers.
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Why a connection ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The peer shut down its write half (FIN); the rest of its input was delivered and pending
    /// output was flushed before the close.
    PeerClosed,
    /// The peer reset the connection (RST), or a write found it reset (`EPIPE`).
    Reset,
    /// Another socket error.
    Error(io::Error),
    /// The peer's bytes are not valid for the framing.
    Framing(FrameError),
    /// No progress for [`Config::idle_timeout`].
    IdleTimeout,
    /// The handler called [`Conn::close`].
    Closed,
    /// The loop shut down.
    Shutdown,
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::PeerClosed => f.write_str("peer closed the connection"),
            DisconnectReason::Reset => f.write_str("connection reset by peer"),
            DisconnectReason::Error(e) => write!(f, "socket error: {e}"),
            DisconnectReason::Framing(e) => write!(f, "framing error: {e}"),
            DisconnectReason::IdleTimeout => f.write_str("idle timeout"),
            DisconnectReason::Closed => f.write_str("closed locally"),
            DisconnectReason::Shutdown => f.write_str("loop shut down"),
        }
    }
}

/// How a connection ended, and what it could not deliver.
///
/// Every message a [`ConnHandle::send`] accepted (`Ok`) was either written to the socket or is
/// counted here.
#[derive(Debug)]
pub struct Disconnect {
    /// Why it ended.
    pub reason: DisconnectReason,
    /// Messages still in the send queue (pushed by other threads, never moved to the output
    /// buffer).
    pub undelivered_messages: usize,
    /// Bytes never written to the socket: the rest of the output buffer plus the undelivered
    /// messages' bytes.
    pub unsent_bytes: usize,
}

/// Why a [`ConnHandle::send`] gave its message back.
#[derive(Debug)]
pub enum SendError<M> {
    /// The connection is closed (or closing); it will never send this message.
    Closed(M),
    /// The connection's unsent output is over [`Config::high_watermark`]; try later.
    Full(M),
    /// The message cannot be encoded.
    Encode(M, FrameError),
}

impl<M> SendError<M> {
    /// The message that was not sent.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Closed(m) | SendError::Full(m) | SendError::Encode(m, _) => m,
        }
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed(_) => f.write_str("connection closed"),
            SendError::Full(_) => f.write_str("connection output over the high watermark"),
            SendError::Encode(_, e) => write!(f, "cannot encode message: {e}"),
        }
    }
}

impl<M: fmt::Debug> std::error::Error for SendError<M> {}

/// Callbacks the loop makes, all on the loop thread.
pub trait Handler<F: Framing> {
    /// A connection opened (accepted, or an outbound connect completed).
    fn on_connect(&mut self, conn: &Conn<'_, F>) {
        let _ = conn;
    }

    /// One whole decoded message arrived on `conn`.
    fn on_message(&mut self, conn: &Conn<'_, F>, msg: F::Message);

    /// A connection ended; `id` is never used again.
    fn on_disconnect(&mut self, id: ConnId, reason: Disconnect) {
        let _ = (id, reason);
    }

    /// An outbound connect to `target` failed (refused, unreachable, timed out, or the loop shut
    /// down first).
    fn on_connect_failed(&mut self, target: &Endpoint, error: io::Error) {
        let _ = (target, error);
    }

    /// `accept` failed. For `EMFILE`/`ENFILE` the loop has already accepted and closed the
    /// waiting client with its reserve fd, so the listener neither spins nor stalls.
    fn on_accept_error(&mut self, error: &io::Error) {
        let _ = error;
    }
}

/// What the loop tells its handles: wake-ups and commands.
#[derive(Debug)]
pub(crate) enum Command {
    /// This connection's send queue went from empty to non-empty.
    Ready(ConnId),
    /// Begin a graceful shutdown.
    Shutdown,
    /// Start an outbound connect.
    Connect(Endpoint),
    /// Accept from shared listener `i`: a busier loop of the group was woken for it and
    /// handed the client over (balancing under `EPOLLEXCLUSIVE`).
    Accept(usize),
}

/// Counters the loop keeps, readable from any thread through [`LoopHandle::stats`].
#[derive(Debug, Default)]
pub(crate) struct StatCells {
    pub(crate) accepted: AtomicU64,
    pub(crate) connected: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) stale_events: AtomicU64,
    pub(crate) wakeups: AtomicU64,
    pub(crate) eintr_retries: AtomicU64,
    pub(crate) requeued: AtomicU64,
    pub(crate) partial_writes: AtomicU64,
    pub(crate) write_calls: AtomicU64,
    pub(crate) read_calls: AtomicU64,
    pub(crate) turns: AtomicU64,
    pub(crate) signals: AtomicU64,
    pub(crate) timer_entries: AtomicU64,
    pub(crate) empty_accepts: AtomicU64,
}

impl StatCells {
    pub(crate) fn add(cell: &AtomicU64, n: u64) {
        // Relaxed: counters are read for reporting only and order nothing.
        cell.fetch_add(n, Ordering::Relaxed);
    }
}

/// A snapshot of the loop's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: u64,
    /// Outbound connects that completed.
    pub connected: u64,
    /// Connections closed (for any reason).
    pub closed: u64,
    /// `accept` failures, `EMFILE` included.
    pub accept_errors: u64,
    /// Events whose token named a connection generation that no longer exists.
    pub stale_events: u64,
    /// Times the loop found its eventfd signalled.
    pub wakeups: u64,
    /// `epoll_wait` calls retried after `EINTR`.
    pub eintr_retries: u64,
    /// Times a still-readable connection was put on the ready list (fairness budget used up).
    pub requeued: u64,
    /// Gathered writes that took fewer bytes than offered.
    pub partial_writes: u64,
    /// Gathered-write calls.
    pub write_calls: u64,
    /// `read` calls on connections.
    pub read_calls: u64,
    /// Loop turns (`epoll_wait` returns).
    pub turns: u64,
    /// Eventfd writes made by handles (one per empty-to-non-empty transition).
    pub signals: u64,
    /// Entries in the loop's timer heap when it last waited (a gauge: it stays within a
    /// constant factor of the open connections, however many have closed).
    pub timer_entries: u64,
    /// Listener wake-ups whose first `accept` found nobody waiting (another loop of the group
    /// took the client: the thundering herd that `EPOLLEXCLUSIVE` and `SO_REUSEPORT` avoid).
    pub empty_accepts: u64,
}

/// The routing entry of one live connection, for [`LoopHandle::send_to`].
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) id: ConnId,
    pub(crate) queue: Producer<Vec<u8>>,
    pub(crate) conn: Arc<ConnShared>,
}

/// State shared by the loop and every handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) waker: Arc<dyn Signal>,
    pub(crate) commands: Producer<Command>,
    pub(crate) stats: StatCells,
    #[cfg(feature = "known-bad")]
    pub(crate) known_bad: KnownBad,
    pub(crate) high_watermark: usize,
    /// Live connections by slot index.
    pub(crate) routes: Mutex<Vec<Option<Route>>>,
    /// The loop thread while `run` executes.
    pub(crate) loop_thread: std::sync::Mutex<Option<ThreadId>>,
    /// This loop's index among the loops of a [`crate::Loops`] (0 for a single [`Server`]).
    pub(crate) loop_index: u16,
    /// The server's (or group's) instance number, carried by every [`ConnId`] it hands out.
    pub(crate) instance: u32,
    /// Every loop of the group, this one included, by index (set once, when the group is
    /// built; empty for a single loop), so a handle on any loop can reach a connection on
    /// any other.
    pub(crate) siblings: std::sync::OnceLock<Vec<std::sync::Weak<Shared>>>,
    /// Open connections on this loop (a gauge the group reads to balance accepting).
    pub(crate) live: AtomicUsize,
}

impl Shared {
    /// The loop with index `loop_index` of this loop's group (this loop itself for its own
    /// index); `None` if there is no such loop, or it has been dropped.
    pub(crate) fn sibling(self: &Arc<Shared>, id: ConnId) -> Option<Arc<Shared>> {
        if id.instance != self.instance {
            // An id of another server or group: no connection here is that one.
            return None;
        }
        let loop_index = id.loop_index;
        if loop_index == self.loop_index {
            return Some(Arc::clone(self));
        }
        self.siblings.get()?.get(usize::from(loop_index))?.upgrade()
    }

    /// As [`Config::bad`], for the handles.
    #[inline(always)]
    pub(crate) fn bad(&self, which: KnownBad) -> bool {
        #[cfg(feature = "known-bad")]
        return self.known_bad == which;
        #[cfg(not(feature = "known-bad"))]
        {
            let _ = which;
            false
        }
    }

    /// Writes the eventfd, counting it.
    pub(crate) fn signal(&self) -> io::Result<()> {
        StatCells::add(&self.stats.signals, 1);
        self.waker.signal()
    }

    /// Queues `command` and writes the eventfd if the command queue was empty.
    pub(crate) fn command(&self, command: Command) -> io::Result<()> {
        match self.commands.push(command) {
            Ok(Wake::Needed) => self.signal(),
            // A wake-up is already pending for the earlier command.
            Ok(Wake::NotNeeded) => Ok(()),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "event loop has exited",
            )),
        }
    }
}

/// The cross-thread half of the loop's eventfd.
pub(crate) trait Signal: Send + Sync + fmt::Debug {
    /// Adds one to the eventfd's counter.
    fn signal(&self) -> io::Result<()>;
}

/// The loop's eventfd, over whichever OS the loop runs on.
#[derive(Debug)]
pub(crate) struct Waker<O: Os> {
    pub(crate) os: O,
    pub(crate) fd: O::Fd,
}

impl<O: Os> Signal for Waker<O> {
    fn signal(&self) -> io::Result<()> {
        loop {
            return match self.os.eventfd_write(&self.fd, 1) {
                Ok(()) => Ok(()),
                // The counter is at its maximum, so the loop is already signalled
                // (EPOLL-NOTES 14).
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }
}

/// Per-connection state shared with its handles.
#[derive(Debug, Default)]
pub(crate) struct ConnShared {
    /// Bytes accepted for this connection (queued, or in its output buffer) and not yet
    /// written to the socket. Only a budget: it orders nothing, so it is accessed `Relaxed`.
    pub(crate) pending: AtomicUsize,
}

/// Pushes already-encoded bytes onto a connection's queue, with the budget check.
fn push_encoded<M>(
    shared: &Shared,
    id: ConnId,
    queue: &Producer<Vec<u8>>,
    conn: &ConnShared,
    bytes: Vec<u8>,
    msg: M,
) -> Result<(), SendError<M>> {
    let len = bytes.len();
    // Relaxed: the budget is advisory; the queue push below is what publishes the bytes.
    let before = conn.pending.fetch_add(len, Ordering::Relaxed);
    // An idle connection takes any one message, so a message larger than the watermark can
    // still be sent.
    if before > 0 && before + len > shared.high_watermark {
        conn.pending.fetch_sub(len, Ordering::Relaxed);
        // A closed connection keeps the budget it died with; it must still answer `Closed`, so
        // the sender knows retrying is pointless.
        if queue.is_closed() {
            return Err(SendError::Closed(msg));
        }
        return Err(SendError::Full(msg));
    }
    match queue.push(bytes) {
        Ok(Wake::Needed) if shared.bad(KnownBad::SkipWake) => {
            // KNOWN-BAD: the loop never hears about this queue.
            Ok(())
        }
        Ok(Wake::Needed) => {
            // The queue was empty: tell the loop which connection to drain. If the loop has
            // exited, it closed this queue first and counted the bytes as undelivered, so the
            // error needs no handling here.
            let _ = shared.command(Command::Ready(id));
            Ok(())
        }
        Ok(Wake::NotNeeded) if shared.bad(KnownBad::WakeEveryPush) => {
            // KNOWN-BAD (wasteful, not wrong): a syscall for a wake-up already pending.
            let _ = shared.signal();
            Ok(())
        }
        // An earlier push on this queue has a wake-up pending that covers this one.
        Ok(Wake::NotNeeded) => Ok(()),
        Err(_closed) => {
            conn.pending.fetch_sub(len, Ordering::Relaxed);
            Err(SendError::Closed(msg))
        }
    }
}

/// A handle to one connection, for any thread: `Clone + Send` (given a `Send` framing).
///
/// [`send`](ConnHandle::send) encodes on the calling thread with the handle's own clone of the
/// framing, so each thread should use its own clone of the handle.
/// Once the connection is closed every send fails with [`SendError::Closed`], even after a new
/// connection got the same fd number: the handle owns a reference to this connection's own send
/// queue, which the loop closed.
pub struct ConnHandle<F> {
    id: ConnId,
    framing: F,
    queue: Producer<Vec<u8>>,
    conn: Arc<ConnShared>,
    shared: Arc<Shared>,
}

impl<F: Clone> Clone for ConnHandle<F> {
    fn clone(&self) -> Self {
        ConnHandle {
            id: self.id,
            framing: self.framing.clone(),
            queue: self.queue.clone(),
            conn: Arc::clone(&self.conn),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<F> fmt::Debug for ConnHandle<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnHandle")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<F: Framing> ConnHandle<F> {
    /// The connection this handle sends to.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Encodes `msg` on this thread and queues it for the loop to write.
    ///
    /// `Ok` means the loop owns the bytes: they are written to the socket, or counted in
    /// [`Disconnect::unsent_bytes`] if the connection ends first.
    ///
    /// # Errors
    ///
    /// Gives `msg` back as [`SendError::Closed`] if the connection is closed or closing,
    /// [`SendError::Full`] if its unsent output is over [`Config::high_watermark`], or
    /// [`SendError::Encode`] if the framing refuses it.
    pub fn send(&mut self, msg: F::Message) -> Result<(), SendError<F::Message>> {
        let mut bytes = Vec::new();
        if let Err(e) = self.framing.encode(&msg, &mut bytes) {
            return Err(SendError::Encode(msg, e));
        }
        push_encoded(&self.shared, self.id, &self.queue, &self.conn, bytes, msg)
    }
}

/// A handle to the loop, for any thread: shutdown, outbound connects, sends by [`ConnId`], and
/// counters.
pub struct LoopHandle<F> {
    framing: F,
    shared: Arc<Shared>,
}

impl<F: Clone> Clone for LoopHandle<F> {
    fn clone(&self) -> Self {
        LoopHandle {
            framing: self.framing.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<F> fmt::Debug for LoopHandle<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopHandle").finish_non_exhaustive()
    }
}

impl<F: Framing> LoopHandle<F> {
    /// Asks the loop to shut down gracefully: stop accepting, flush pending output (for at most
    /// [`Config::shutdown_timeout`]), close every connection, and return from [`Server::run`].
    ///
    /// Asking again, or after the loop has exited, does nothing.
    pub fn shutdown(&self) {
        // Ignored: an error means the loop has already exited, which is what was asked for.
        let _ = self.shared.command(Command::Shutdown);
    }

    /// Starts an outbound connect on the loop; the outcome arrives as
    /// [`Handler::on_connect`] (with [`Conn::is_outbound`] true) or
    /// [`Handler::on_connect_failed`].
    ///
    /// # Errors
    ///
    /// Fails with [`io::ErrorKind::NotConnected`] if the loop has exited.
    pub fn connect(&self, target: impl Into<Endpoint>) -> io::Result<()> {
        self.shared.command(Command::Connect(target.into()))
    }

    /// Encodes `msg` on this thread and queues it for connection `id`.
    ///
    /// # Errors
    ///
    /// As [`ConnHandle::send`]; an `id` whose connection has closed gets
    /// [`SendError::Closed`], even when a new connection occupies the same slot and fd number.
    pub fn send_to(&mut self, id: ConnId, msg: F::Message) -> Result<(), SendError<F::Message>> {
        // A connection on another loop of the group is reached through that loop's table.
        let owner = match self.shared.sibling(id) {
            Some(owner) => owner,
            None => return Err(SendError::Closed(msg)),
        };
        let (queue, conn, route_id) = {
            let routes = owner.routes.lock().unwrap_or_else(|e| e.into_inner());
            let route = routes.get(id.index as usize).and_then(Option::as_ref);
            let matches = |route: &&Route| route.id == id || owner.bad(KnownBad::NoGeneration);
            match route.filter(matches) {
                Some(route) => (route.queue.clone(), Arc::clone(&route.conn), route.id),
                None => return Err(SendError::Closed(msg)),
            }
        };
        let mut bytes = Vec::new();
        if let Err(e) = self.framing.encode(&msg, &mut bytes) {
            return Err(SendError::Encode(msg, e));
        }
        push_encoded(&owner, route_id, &queue, &conn, bytes, msg)
    }

    /// A snapshot of the loop's counters.
    pub fn stats(&self) -> Stats {
        let s = &self.shared.stats;
        let get = |cell: &AtomicU64| cell.load(Ordering::Relaxed);
        Stats {
            accepted: get(&s.accepted),
            connected: get(&s.connected),
            closed: get(&s.closed),
            accept_errors: get(&s.accept_errors),
            stale_events: get(&s.stale_events),
            wakeups: get(&s.wakeups),
            eintr_retries: get(&s.eintr_retries),
            requeued: get(&s.requeued),
            partial_writes: get(&s.partial_writes),
            write_calls: get(&s.write_calls),
            read_calls: get(&s.read_calls),
            turns: get(&s.turns),
            signals: get(&s.signals),
            timer_entries: get(&s.timer_entries),
            empty_accepts: get(&s.empty_accepts),
        }
    }

    /// Writes the loop's eventfd whatever the command queue's state (tests only: it unsticks a
    /// known-bad variant that lost its wake-up, so the test can shut it down and join it).
    #[doc(hidden)]
    pub fn wake_unconditionally(&self) -> io::Result<()> {
        self.shared.waker.signal()
    }

    /// Sends `SIGUSR1` to the loop thread while [`Server::run`] executes, so `epoll_wait` fails
    /// with `EINTR` (tests only; install a handler first with
    /// [`testing::install_noop_sigusr1`]). Returns whether the loop was running.
    #[doc(hidden)]
    pub fn interrupt_loop_thread(&self) -> io::Result<bool> {
        let thread = self
            .shared
            .loop_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match *thread {
            Some(thread) => {
                crate::sys::interrupt_thread(thread, crate::sys::SIGUSR1).map(|()| true)
            }
            None => Ok(false),
        }
    }
}

/// The mutable part of a connection a callback may touch.
struct ConnMut<'a, F> {
    framing: &'a mut F,
    out: &'a mut Output,
    close_requested: &'a mut bool,
}

/// One connection, as callbacks see it.
///
/// Sends made here encode straight into the connection's output buffer (no queue, no
/// allocation once buffers have grown) and are written when the callback returns.
pub struct Conn<'a, F> {
    id: ConnId,
    peer: &'a Endpoint,
    fd: Option<BorrowedFd<'a>>,
    outbound: bool,
    inner: RefCell<ConnMut<'a, F>>,
    proto: &'a F,
    queue: &'a Producer<Vec<u8>>,
    conn: &'a Arc<ConnShared>,
    shared: &'a Arc<Shared>,
}

impl<F> fmt::Debug for Conn<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl<F: Framing + Clone> Conn<'_, F> {
    /// This connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> &Endpoint {
        self.peer
    }

    /// Whether the loop opened this connection with an outbound connect.
    pub fn is_outbound(&self) -> bool {
        self.outbound
    }

    /// Encodes `msg` onto the output buffer; it is written when the callback returns.
    ///
    /// # Errors
    ///
    /// Returns the framing's error if `msg` cannot be encoded; nothing is queued then.
    pub fn send(&self, msg: &F::Message) -> Result<(), FrameError> {
        let mut inner = self.inner.borrow_mut();
        let ConnMut { framing, out, .. } = &mut *inner;
        let added = if self.shared.bad(KnownBad::AllocPerSend) {
            // KNOWN-BAD: a buffer per message.
            let mut bytes = Vec::new();
            framing.encode(msg, &mut bytes)?;
            let added = bytes.len();
            out.push_chunk(bytes);
            added
        } else {
            out.append_with(|buf| framing.encode(msg, buf))?
        };
        // Relaxed: the budget is advisory and this thread is the only writer of the buffer.
        self.conn.pending.fetch_add(added, Ordering::Relaxed);
        Ok(())
    }

    /// Closes the connection gracefully once the callback returns: no more input is delivered,
    /// output already sent or queued is flushed, then the socket is closed and
    /// [`Handler::on_disconnect`] reports [`DisconnectReason::Closed`].
    pub fn close(&self) {
        *self.inner.borrow_mut().close_requested = true;
    }

    /// A handle for sending to this connection from any thread.
    pub fn handle(&self) -> ConnHandle<F> {
        ConnHandle {
            id: self.id,
            framing: self.proto.clone(),
            queue: self.queue.clone(),
            conn: Arc::clone(self.conn),
            shared: Arc::clone(self.shared),
        }
    }

    /// A handle to the loop this connection runs on.
    pub fn loop_handle(&self) -> LoopHandle<F> {
        LoopHandle {
            framing: self.proto.clone(),
            shared: Arc::clone(self.shared),
        }
    }

    /// Bytes accepted for this connection and not yet written to its socket.
    pub fn pending_output(&self) -> usize {
        self.conn.pending.load(Ordering::Relaxed)
    }
}

impl<F> Conn<'_, F> {
    /// The connection's socket, for socket options; `None` when the loop runs over a
    /// simulated kernel. Do not read, write or close it.
    pub fn socket(&self) -> Option<BorrowedFd<'_>> {
        self.fd
    }
}
