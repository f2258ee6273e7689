//! The loop itself: connection slots, the turn, reads, writes, closes and timers.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use crate::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::output::Output;
use super::{
    Command, Config, Conn, ConnId, ConnMut, ConnShared, Disconnect, DisconnectReason, Endpoint,
    Handler, KnownBad, LoopHandle, Route, Shared, StatCells, Waker,
};
use crate::framing::{Decoded, FrameError, Framing};
use crate::os::{self, Event, Interest, Linux, Os, Shutdown};
use crate::queue::{self, Consumer, Producer};

/// The eventfd's token. Connection tokens never have bit 63 set (generations use 31 bits).
const WAKER_TOKEN: u64 = u64::MAX;
/// Listener `i` has token `LISTENER_BIT | i`.
const LISTENER_BIT: u64 = 1 << 63;
/// An emptied input buffer keeps at most this much capacity.
const INPUT_KEEP: usize = 64 * 1024;
/// The backlog the loop asks `listen(2)` for (std's value; Linux caps it at `somaxconn`).
const LISTEN_BACKLOG: u32 = 128;
/// How long after a transient accept failure (`ENOBUFS`, `ENOMEM`) the loop tries again.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(10);
/// How long after handing a client of a shared listener to a sibling loop this loop checks
/// the backlog itself, in case the sibling is busy or full (the edge is consumed either way).
const HANDOVER_CHECK: Duration = Duration::from_millis(2);
/// Stale timer entries tolerated beyond twice the live connections before the heap is
/// compacted.
const TIMER_SLACK: usize = 64;

struct Listener<O: Os> {
    fd: O::Fd,
    local: Endpoint,
    /// Shared with the other loops of a group through `EPOLLEXCLUSIVE`.
    exclusive: bool,
    /// A Unix socket path this server created, and the identity of the file it created there:
    /// the file is removed when the listener goes, but only if it is still that file.
    unix_path: Option<(PathBuf, u64)>,
    os: O,
}

impl<O: Os> Drop for Listener<O> {
    fn drop(&mut self) {
        if let Some((path, identity)) = &self.unix_path {
            // A newer server may have replaced the file (after removing ours); its file is not
            // ours to delete.
            if self.os.path_identity(path) == Some(*identity) {
                // Ignored: the path may already be gone, and a leftover file harms nothing.
                let _ = self.os.remove_path(path);
            }
        }
    }
}

/// Undecoded input of one connection: bytes `start..` of `buf`.
///
/// Reads land in the loop's shared scratch buffer; only the unfinished tail of a frame is
/// copied here, so an idle connection holds no input memory.
#[derive(Default)]
struct Input {
    buf: Vec<u8>,
    start: usize,
}

impl Input {
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.clear();
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn clear(&mut self) {
        if self.buf.capacity() > INPUT_KEEP {
            // A big frame passed through: give its memory back rather than keep it per idle
            // connection.
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        self.start = 0;
    }
}

enum Phase {
    /// An outbound connect in progress.
    Connecting { target: Endpoint, since: Instant },
    /// Reading and writing.
    Open,
    /// Closing: writing what is left, reading nothing. Bounded by the shutdown deadline (if
    /// the loop is shutting down) and by the idle timeout, which counts from the last write
    /// progress: a peer that keeps reading, however slowly, gets everything.
    Flushing {
        reason: DisconnectReason,
        deadline: Option<Instant>,
    },
    /// Closing: output flushed and write half shut down; discarding input until the peer's FIN,
    /// for at most `close_linger` (`None`: a linger too long to add to the clock).
    Lingering {
        reason: DisconnectReason,
        deadline: Option<Instant>,
    },
}

struct Core<F, O: Os> {
    id: ConnId,
    fd: O::Fd,
    peer: Endpoint,
    outbound: bool,
    framing: F,
    out: Output,
    queue: Consumer<Vec<u8>>,
    producer: Producer<Vec<u8>>,
    shared: Arc<ConnShared>,
    phase: Phase,
    /// The peer's FIN was read.
    read_eof: bool,
    /// Reading is paused: unsent output is over the high watermark.
    paused: bool,
    on_ready_list: bool,
    /// The last write hit `EAGAIN`; the next `EPOLLOUT` edge resumes writing.
    write_blocked: bool,
    /// Set by [`Conn::close`].
    close_requested: bool,
    /// The connect completed with the peer's greeting and then its reset: the EOF that ends
    /// the greeting is reported as [`DisconnectReason::Reset`].
    reset_seen: bool,
    /// Delivery stopped with the output over the high watermark; `input` may hold whole
    /// frames, delivered before anything more is read.
    stalled: bool,
    /// The send queue is closed and its items moved to `out`.
    queue_closed: bool,
    last_active: Instant,
    /// The earliest timer entry this connection has in the heap.
    timer_at: Option<Instant>,
}

struct Connection<F, O: Os> {
    input: Input,
    core: Core<F, O>,
}

struct Slot<F, O: Os> {
    generation: u32,
    conn: Option<Connection<F, O>>,
}

/// How a read pass ended.
enum ReadEnd {
    /// `EAGAIN`: wait for the next edge.
    Drained,
    /// The fairness budget is used up and the socket may still be readable.
    Budget,
    /// Read returned 0: the peer sent FIN.
    Eof,
    /// The connection must close.
    Close(DisconnectReason, bool),
}

/// An edge-triggered epoll server (and client) that runs on the calling thread.
///
/// # Examples
///
/// An echo server for newline-delimited messages, shut down from another thread:
///
/// ```
/// use refloop::framing::{Decoded, FrameError, Framing};
/// use refloop::{Config, Conn, Handler, Server};
/// use std::io::{BufRead, BufReader, Write};
///
/// // A minimal framing: each message is one byte.
/// #[derive(Clone)]
/// struct Bytes;
/// impl Framing for Bytes {
///     type Message = u8;
///     fn decode(&mut self, buf: &[u8]) -> Result<Decoded<u8>, FrameError> {
///         Ok(match buf.first() { Some(&b) => Decoded::Message(b, 1), None => Decoded::NeedMore })
///     }
///     fn encode(&mut self, msg: &u8, out: &mut Vec<u8>) -> Result<(), FrameError> {
///         out.push(*msg);
///         Ok(())
///     }
/// }
///
/// struct Echo;
/// impl Handler<Bytes> for Echo {
///     fn on_message(&mut self, conn: &Conn<'_, Bytes>, msg: u8) {
///         conn.send(&msg).expect("one byte always encodes");
///     }
/// }
///
/// let server = Server::bind("127.0.0.1:0", Bytes, Config::default())?;
/// let addr = server.local_addr()?;
/// let handle = server.handle();
/// let thread = std::thread::spawn(move || server.run(Echo));
///
/// let mut client = std::net::TcpStream::connect(addr)?;
/// client.write_all(b"hi\n")?;
/// let mut line = String::new();
/// BufReader::new(&client).read_line(&mut line)?;
/// assert_eq!(line, "hi\n");
///
/// handle.shutdown();
/// thread.join().expect("loop thread panicked")?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Server<F: Framing + Clone, O: Os = Linux> {
    os: O,
    config: Config,
    proto: F,
    max_input: usize,
    epoll: O::Fd,
    events: O::Events,
    waker: Arc<Waker<O>>,
    listeners: Vec<Listener<O>>,
    shared: Arc<Shared>,
    commands: Consumer<Command>,
    command_buf: Vec<Command>,
    slots: Vec<Slot<F, O>>,
    free: Vec<u32>,
    live: usize,
    ready: VecDeque<ConnId>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Read buffer shared by all connections.
    scratch: Vec<u8>,
    /// The reserve fd closed to make room for accept-and-close under `EMFILE`.
    spare_fd: Option<O::Fd>,
    /// Accepting stopped (connection limit, or no reserve fd); retried when a connection closes.
    accept_paused: bool,
    accept_retry: bool,
    /// When to retry accepting after a transient failure left clients in the backlog.
    accept_retry_at: Option<Instant>,
    /// This loop's index in its group ([`crate::Loops`]; 0 alone).
    loop_index: u16,
    /// A graceful shutdown is under way.
    shutting_down: bool,
    /// When it gives up flushing (`None`: a timeout too long to add to the clock).
    shutdown_deadline: Option<Instant>,
    signals_installed: bool,
    wake_hook: Option<Box<dyn FnMut() + Send>>,
}

impl<F: Framing + Clone, O: Os> fmt::Debug for Server<F, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .field(
                "listeners",
                &self.listeners.iter().map(|l| &l.local).collect::<Vec<_>>(),
            )
            .field("connections", &self.live)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave the routing table half-updated (every update is one
    // assignment), so a poisoned lock is still consistent.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// As [`lock`], for the std lock that holds the loop thread's id (not a model concern: it
/// names an OS thread).
fn std_lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn bump(cell: &AtomicU64) {
    StatCells::add(cell, 1);
}

/// Builds the view callbacks get of a connection.
fn view<'a, F, O: Os>(
    core: &'a mut Core<F, O>,
    proto: &'a F,
    shared: &'a Arc<Shared>,
) -> Conn<'a, F> {
    let Core {
        id,
        fd,
        peer,
        outbound,
        framing,
        out,
        producer,
        shared: conn,
        close_requested,
        ..
    } = core;
    let fd: &'a O::Fd = fd;
    Conn {
        id: *id,
        peer,
        fd: O::borrow_fd(fd),
        outbound: *outbound,
        inner: RefCell::new(ConnMut {
            framing,
            out,
            close_requested,
        }),
        proto,
        queue: producer,
        conn,
        shared,
    }
}

/// Decodes and delivers whole messages from the front of `bytes`; returns the bytes consumed.
///
/// Stops at an incomplete frame, when the handler closes the connection, or when the
/// connection's output buffer is over `high` (the high watermark), so a handler that sends
/// more than it receives is bounded too: by the watermark plus one message's replies.
fn deliver<F: Framing, H: Handler<F>>(
    bytes: &[u8],
    conn: &Conn<'_, F>,
    handler: &mut H,
    high: usize,
) -> Result<usize, FrameError> {
    let mut used = 0;
    while used < bytes.len() {
        {
            let inner = conn.inner.borrow();
            if *inner.close_requested || inner.out.len() > high {
                break;
            }
        }
        let decoded = conn.inner.borrow_mut().framing.decode(&bytes[used..])?;
        match decoded {
            Decoded::Message(msg, n) => {
                if n == 0 || n > bytes.len() - used {
                    return Err(FrameError::Malformed(
                        "framing reported an impossible consumed length".into(),
                    ));
                }
                used += n;
                handler.on_message(conn, msg);
            }
            Decoded::NeedMore => break,
        }
    }
    Ok(used)
}

fn error_reason(e: io::Error) -> DisconnectReason {
    if os::is_reset(&e) {
        DisconnectReason::Reset
    } else {
        DisconnectReason::Error(e)
    }
}

impl<F: Framing + Clone> Server<F> {
    /// A loop over the real kernel with no listeners yet (add some with
    /// [`listen`](Server::listen) and [`listen_unix`](Server::listen_unix), or use it for
    /// outbound connections only).
    ///
    /// # Errors
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] if `config` is invalid (see
    /// [`Config::validate`]), or if the epoll instance or the eventfd cannot be created.
    pub fn new(framing: F, config: Config) -> io::Result<Server<F>> {
        Server::with_os(Linux, framing, config)
    }

    /// A loop listening on TCP `addr` (IPv4 or IPv6; port 0 picks a free port, see
    /// [`local_addr`](Server::local_addr)).
    ///
    /// # Errors
    ///
    /// Fails if the address cannot be resolved or bound, or as [`Server::new`].
    pub fn bind(addr: impl ToSocketAddrs, framing: F, config: Config) -> io::Result<Server<F>> {
        let mut server = Server::new(framing, config)?;
        server.listen(addr)?;
        Ok(server)
    }

    /// A loop listening on a Unix-domain stream socket at `path` (removed again when the
    /// listener closes, unless another socket has replaced it by then).
    ///
    /// # Errors
    ///
    /// Fails if `path` cannot be bound (for example it exists), or as [`Server::new`].
    pub fn bind_unix(path: impl AsRef<Path>, framing: F, config: Config) -> io::Result<Server<F>> {
        let mut server = Server::new(framing, config)?;
        server.listen_unix(path)?;
        Ok(server)
    }
}

impl<F: Framing + Clone, O: Os> Server<F, O> {
    /// A loop over `os`: [`os::Linux`] (what [`Server::new`] uses) or a simulated kernel
    /// ([`crate::sim::Kernel`]).
    ///
    /// # Errors
    ///
    /// As [`Server::new`].
    pub fn with_os(os: O, framing: F, config: Config) -> io::Result<Server<F, O>> {
        Server::build(os, framing, config, 0, super::next_instance())
    }

    /// [`Server::with_os`] for loop `loop_index` of a group ([`super::Loops`]).
    pub(crate) fn build(
        os: O,
        framing: F,
        config: Config,
        loop_index: u16,
        instance: u32,
    ) -> io::Result<Server<F, O>> {
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let epoll = os.epoll_create()?;
        let waker = Arc::new(Waker {
            fd: os.eventfd()?,
            os: os.clone(),
        });
        os.epoll_add(&epoll, &waker.fd, WAKER_TOKEN, Interest::READABLE)?;
        let (commands_tx, commands) = queue::channel();
        let shared = Arc::new(Shared {
            waker: Arc::clone(&waker) as Arc<dyn super::Signal>,
            commands: commands_tx,
            stats: StatCells::default(),
            #[cfg(feature = "known-bad")]
            known_bad: config.known_bad,
            high_watermark: config.high_watermark,
            routes: Mutex::new(Vec::new()),
            loop_thread: std::sync::Mutex::new(None),
            loop_index,
            instance,
            siblings: std::sync::OnceLock::new(),
            live: AtomicUsize::new(0),
        });
        let max_input = framing.max_buffered().unwrap_or(config.max_frame_len);
        Ok(Server {
            events: os.events(config.events_capacity),
            scratch: vec![0; config.read_chunk],
            // Without a spare fd the loop still works; it pauses accepting under EMFILE instead.
            spare_fd: os.open_spare().ok(),
            os,
            config,
            proto: framing,
            max_input,
            epoll,
            waker,
            listeners: Vec::new(),
            shared,
            commands,
            command_buf: Vec::new(),
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            accept_paused: false,
            accept_retry: false,
            accept_retry_at: None,
            loop_index,
            shutting_down: false,
            shutdown_deadline: None,
            signals_installed: false,
            wake_hook: None,
        })
    }

    /// The OS layer this loop runs over.
    pub fn os(&self) -> &O {
        &self.os
    }

    /// Removes the listener added last (rolling back a group's `listen` that failed on a
    /// later loop).
    pub(crate) fn remove_last_listener(&mut self) {
        if let Some(listener) = self.listeners.pop() {
            // Ignored: the listener closes right after anyway.
            let _ = self.os.epoll_delete(&self.epoll, &listener.fd);
        }
    }

    /// The state this loop shares with its handles.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Adds a TCP listener; returns its bound address.
    ///
    /// # Errors
    ///
    /// Fails if the address cannot be resolved or bound.
    pub fn listen(&mut self, addr: impl ToSocketAddrs) -> io::Result<SocketAddr> {
        // Like `TcpListener::bind`: the first resolved address that binds wins.
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to bind");
        for addr in addr.to_socket_addrs()? {
            match self.os.listen(&Endpoint::Tcp(addr), LISTEN_BACKLOG) {
                Ok((fd, local)) => {
                    let Endpoint::Tcp(bound) = local else {
                        return Err(io::Error::other("a TCP listener reported a unix address"));
                    };
                    self.add_listener(fd, local, None, false)?;
                    return Ok(bound);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Adds a Unix-domain stream listener at `path`.
    ///
    /// # Errors
    ///
    /// Fails if `path` cannot be bound.
    pub fn listen_unix(&mut self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = path.as_ref();
        let (fd, local) = self
            .os
            .listen(&Endpoint::Unix(Some(path.to_path_buf())), LISTEN_BACKLOG)?;
        // The file bind just created; if it is already gone or replaced, nothing is removed.
        let unix_path = self
            .os
            .path_identity(path)
            .map(|identity| (path.to_path_buf(), identity));
        self.add_listener(fd, local, unix_path, false)
    }

    /// Registers a listening socket; `exclusive`: with `EPOLLEXCLUSIVE`, for a listener that
    /// several loops' epoll instances share.
    pub(crate) fn add_listener(
        &mut self,
        fd: O::Fd,
        local: Endpoint,
        unix_path: Option<(PathBuf, u64)>,
        exclusive: bool,
    ) -> io::Result<()> {
        let token = LISTENER_BIT | self.listeners.len() as u64;
        let listener = Listener {
            fd,
            local,
            exclusive,
            unix_path,
            os: self.os.clone(),
        };
        let interest = Interest {
            exclusive: exclusive && !self.config.bad(KnownBad::Thunder),
            ..Interest::READABLE
        };
        self.os
            .epoll_add(&self.epoll, &listener.fd, token, interest)?;
        self.listeners.push(listener);
        Ok(())
    }

    /// The address of the first TCP listener.
    ///
    /// # Errors
    ///
    /// Fails with [`io::ErrorKind::NotFound`] if there is no TCP listener.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listeners
            .iter()
            .find_map(|l| match l.local {
                Endpoint::Tcp(addr) => Some(addr),
                Endpoint::Unix(_) => None,
            })
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no TCP listener"))
    }

    /// Every listener's address, in the order they were added.
    pub fn local_endpoints(&self) -> Vec<Endpoint> {
        self.listeners.iter().map(|l| l.local.clone()).collect()
    }

    /// A handle to this loop for any thread.
    pub fn handle(&self) -> LoopHandle<F> {
        LoopHandle {
            framing: self.proto.clone(),
            shared: Arc::clone(&self.shared),
        }
    }

    /// Queues an outbound connect, started when [`run`](Server::run) begins; see
    /// [`LoopHandle::connect`].
    ///
    /// # Errors
    ///
    /// Does not fail before `run`; the connect's own outcome goes to the handler.
    pub fn connect(&mut self, target: impl Into<Endpoint>) -> io::Result<()> {
        self.shared.command(Command::Connect(target.into()))
    }

    /// Makes `SIGINT` and `SIGTERM` start a graceful shutdown of this loop.
    ///
    /// The signal handler only sets a flag and writes this loop's eventfd, both
    /// async-signal-safe. One loop per process can own these signals; the last call wins.
    /// Each call keeps one duplicate of the eventfd open for the life of the process, so that a
    /// late signal never writes to a reused fd number.
    ///
    /// # Errors
    ///
    /// Fails if the eventfd cannot be duplicated or `sigaction` fails.
    pub fn shutdown_on_termination_signals(&mut self) -> io::Result<()> {
        self.os.install_termination_handler(&self.waker.fd)?;
        self.signals_installed = true;
        Ok(())
    }

    /// Runs `hook` on the loop thread between its two wake-up steps (eventfd reset and queue
    /// drain, in whichever order the variant uses), so a test can land a push exactly there.
    #[doc(hidden)]
    pub fn set_wake_hook(&mut self, hook: impl FnMut() + Send + 'static) {
        self.wake_hook = Some(Box::new(hook));
    }

    /// Runs the loop on this thread until a shutdown completes, then returns the handler.
    ///
    /// # Errors
    ///
    /// Fails only if epoll itself fails; every connection is closed (reported with
    /// [`DisconnectReason::Shutdown`]) before the error is returned.
    pub fn run<H: Handler<F>>(mut self, mut handler: H) -> io::Result<H> {
        // The guard forgets the thread id on every way out of `run`, a panic included: once the
        // thread may have exited, its id may name another thread.
        let running = LoopThread::enter(&self.shared);
        let result = self.run_turns(&mut handler);
        drop(running);
        // Whatever ended the loop, nothing is left open: close the rest, refuse new commands.
        for id in self.live_ids() {
            self.abandon(id, &mut handler);
        }
        for command in self.commands.close() {
            if let Command::Connect(target) = command {
                handler.on_connect_failed(&target, shutting_down_error());
            }
        }
        result.map(|()| handler)
    }

    fn live_ids(&self) -> Vec<ConnId> {
        self.slots
            .iter()
            .filter_map(|slot| slot.conn.as_ref().map(|c| c.core.id))
            .collect()
    }

    fn run_turns<H: Handler<F>>(&mut self, handler: &mut H) -> io::Result<()> {
        loop {
            let now = self.os.now();
            if self.shutting_down {
                if self.live == 0 {
                    return Ok(());
                }
                if self
                    .shutdown_deadline
                    .is_some_and(|deadline| now >= deadline)
                {
                    // The flush bound is over: close what is left, counting what it did not send.
                    for id in self.live_ids() {
                        self.abandon(id, handler);
                    }
                    return Ok(());
                }
            }
            let deadline = if !self.ready.is_empty() || self.accept_retry {
                Some(now)
            } else {
                let timer = self.timers.peek().map(|Reverse((at, _))| *at);
                match self.accept_retry_at {
                    None => earliest(timer, self.shutdown_deadline),
                    retry => earliest(earliest(timer, self.shutdown_deadline), retry),
                }
            };
            // Relaxed: a gauge for reporting; it orders nothing.
            (self.shared.stats.timer_entries).store(self.timers.len() as u64, Ordering::Relaxed);
            self.wait(deadline)?;
            bump(&self.shared.stats.turns);

            for i in 0..O::event_count(&self.events) {
                let event = O::event(&self.events, i);
                if event.token == WAKER_TOKEN {
                    self.on_wake(handler);
                } else if event.token & LISTENER_BIT != 0 {
                    let index = (event.token & !LISTENER_BIT) as usize;
                    match self.less_loaded_sibling(index) {
                        // Woken for a client another loop should take: hand it over (its
                        // accept drains the shared backlog; no new edge is needed).
                        Some(sibling) => {
                            if sibling.command(Command::Accept(index)).is_err() {
                                self.accept_all(index, true, handler);
                            } else {
                                // The sibling may be busy in a callback, or fill up first:
                                // the edge is consumed, so check the backlog ourselves soon.
                                self.schedule_accept_retry_in(HANDOVER_CHECK);
                            }
                        }
                        None => self.accept_all(index, true, handler),
                    }
                } else {
                    self.on_conn_event(event, handler);
                }
            }

            // Connections that used up their budget last turn: served again without an edge.
            let again = self.ready.len();
            for _ in 0..again {
                let Some(id) = self.ready.pop_front() else {
                    break;
                };
                if let Some(conn) = self.conn_mut(id) {
                    conn.core.on_ready_list = false;
                    // No event here, so no proof from a short read: read until `EAGAIN`.
                    self.service(id, true, false, handler);
                }
            }

            let now = self.os.now();
            if self.accept_retry_at.is_some_and(|at| at <= now) {
                // A transient accept failure (ENOBUFS, ENOMEM) left clients in the backlog, and
                // under EPOLLET no new edge comes for them (EPOLL-NOTES 18).
                self.accept_retry_at = None;
                self.accept_retry = true;
            }
            if std::mem::take(&mut self.accept_retry) {
                self.accept_paused = false;
                for index in 0..self.listeners.len() {
                    self.accept_all(index, false, handler);
                }
            }
            self.expire_timers(self.os.now(), handler);
            if self.signals_installed && self.os.termination_requested() {
                self.begin_shutdown(handler);
            }
        }
    }

    /// One `epoll_wait` until `deadline` (`None`: forever), retrying `EINTR` with the timeout
    /// recomputed, so a signal storm can neither end the wait with an error nor stretch it.
    fn wait(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        loop {
            let timeout_ms = match deadline {
                None => -1,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(self.os.now());
                    // Round up, so a deadline 0.4 ms away does not busy-poll with timeout 0.
                    let ms = left.as_nanos().div_ceil(1_000_000);
                    ms.min(i32::MAX as u128) as i32
                }
            };
            match self
                .os
                .epoll_wait(&self.epoll, &mut self.events, timeout_ms)
            {
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        && !self.config.bad(KnownBad::EintrFatal) =>
                {
                    bump(&self.shared.stats.eintr_retries);
                }
                other => return other,
            }
        }
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Connection<F, O>> {
        let ignore_generation = self.config.bad(KnownBad::NoGeneration);
        let slot = self.slots.get_mut(id.index as usize)?;
        let conn = slot.conn.as_mut()?;
        (ignore_generation || conn.core.id == id).then_some(conn)
    }

    // -----------------------------------------------------------------------------------------
    // Wake-ups and commands
    // -----------------------------------------------------------------------------------------

    fn on_wake<H: Handler<F>>(&mut self, handler: &mut H) {
        if self.config.bad(KnownBad::DrainBeforeEventfdReset) {
            // KNOWN-BAD: a push landing between this drain and the reset loses its wake-up.
            self.run_commands(handler);
            self.run_wake_hook();
            self.reset_waker();
        } else {
            // Reset first: any push after this point writes the eventfd again, so the drain
            // below either sees it or leaves a wake-up pending for the next turn.
            self.reset_waker();
            self.run_wake_hook();
            self.run_commands(handler);
        }
    }

    fn run_wake_hook(&mut self) {
        if let Some(hook) = self.wake_hook.as_mut() {
            hook();
        }
    }

    /// Drains the command queue and, through `Ready` commands, the connections' send queues.
    fn run_commands<H: Handler<F>>(&mut self, handler: &mut H) {
        let mut commands = std::mem::take(&mut self.command_buf);
        commands.extend(self.commands.drain());
        for command in commands.drain(..) {
            match command {
                Command::Ready(id) => self.drain_send_queue(id, handler),
                Command::Shutdown => self.begin_shutdown(handler),
                Command::Connect(target) => self.start_connect(target, handler),
                Command::Accept(index) => self.accept_all(index, false, handler),
            }
        }
        self.command_buf = commands;
    }

    fn reset_waker(&mut self) {
        loop {
            match self.os.eventfd_read(&self.waker.fd) {
                Ok(_) => bump(&self.shared.stats.wakeups),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // EAGAIN: not signalled. Reading an eventfd we own cannot fail otherwise; if it
                // somehow does, the commands are still drained after this, so nothing is lost.
                Err(_) => {}
            }
            return;
        }
    }

    fn drain_send_queue<H: Handler<F>>(&mut self, id: ConnId, handler: &mut H) {
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        let core = &mut conn.core;
        if core.queue_closed || matches!(core.phase, Phase::Connecting { .. }) {
            return;
        }
        for bytes in core.queue.drain() {
            core.out.push_chunk(bytes);
        }
        let id = core.id;
        self.after_io(id, handler);
    }

    // -----------------------------------------------------------------------------------------
    // Accepting and connecting
    // -----------------------------------------------------------------------------------------

    /// Accepts until `EAGAIN`; `woken`: called for a listener event (rather than to retry),
    /// so an empty first accept is a wasted wake-up.
    fn accept_all<H: Handler<F>>(&mut self, index: usize, woken: bool, handler: &mut H) {
        if self.shutting_down || index >= self.listeners.len() {
            return;
        }
        let mut first = woken;
        loop {
            if self.live >= self.config.max_connections {
                // Clients wait in the backlog; a close sets `accept_retry`.
                self.accept_paused = true;
                return;
            }
            let accepted = self.os.accept(&self.listeners[index].fd);
            if std::mem::take(&mut first)
                && matches!(&accepted, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            {
                // Woken for a listener with nobody waiting: another loop took the client (the
                // thundering herd, EPOLL-NOTES 15).
                bump(&self.shared.stats.empty_accepts);
            }
            match accepted {
                Ok((fd, peer)) => {
                    bump(&self.shared.stats.accepted);
                    match self.register(fd, peer, false, Phase::Open) {
                        Ok(id) => self.opened(id, handler),
                        Err(e) => handler.on_accept_error(&e),
                    }
                    if self.config.bad(KnownBad::AcceptOnce) {
                        // KNOWN-BAD: the rest of the backlog waits for an edge that never comes.
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The connection died in the backlog; the next one may be fine.
                Err(e) if os::is_transient_accept_error(&e) => continue,
                Err(e) if os::is_memory_shortage(&e) => {
                    // The backlog is intact but an immediate retry would likely fail again:
                    // retry shortly, on the loop's own timer, since no new edge will come for
                    // the clients already waiting (EPOLL-NOTES 18).
                    bump(&self.shared.stats.accept_errors);
                    handler.on_accept_error(&e);
                    if !self.config.bad(KnownBad::NoAcceptRetry) {
                        self.schedule_accept_retry();
                    }
                    return;
                }
                Err(e) if os::is_fd_exhaustion(&e) => {
                    bump(&self.shared.stats.accept_errors);
                    handler.on_accept_error(&e);
                    if self.config.bad(KnownBad::NoReserveFd) {
                        // KNOWN-BAD: stop; the edge-triggered listener never fires again for
                        // the clients already queued.
                        return;
                    }
                    match self.spare_fd.take() {
                        Some(spare) => {
                            // Free one fd, take the waiting client with it and close it at
                            // once, so the client sees a close instead of hanging.
                            drop(spare);
                            let taken = self.os.accept(&self.listeners[index].fd);
                            // Close the client before reopening the spare, which needs its fd.
                            let taken = taken.map(drop);
                            self.spare_fd = self.os.open_spare().ok();
                            match taken {
                                Ok(()) => {}
                                // At the fd limit accept reports EMFILE even with an empty
                                // backlog (the fd is allocated first); EAGAIN here is the real
                                // answer: nobody is waiting.
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                                // The freed fd went elsewhere: retry when a connection closes,
                                // or on the timer (with no connection open, none will close:
                                // found by the sim explorer), rather than spin.
                                Err(e) if os::is_fd_exhaustion(&e) => {
                                    self.accept_paused = true;
                                    self.schedule_accept_retry();
                                    return;
                                }
                                // A connection that died in the backlog, or a signal: try the
                                // next one.
                                Err(e)
                                    if os::is_transient_accept_error(&e)
                                        || e.kind() == io::ErrorKind::Interrupted => {}
                                // Anything else (ENOBUFS, ENOMEM, ...) would fail again at
                                // once: retry on the timer rather than spin here.
                                Err(e) => {
                                    bump(&self.shared.stats.accept_errors);
                                    handler.on_accept_error(&e);
                                    self.schedule_accept_retry();
                                    return;
                                }
                            }
                        }
                        None => {
                            self.spare_fd = self.os.open_spare().ok();
                            if self.spare_fd.is_none() {
                                // No fd at all: retry when a connection closes, or on the
                                // timer.
                                self.accept_paused = true;
                                self.schedule_accept_retry();
                                return;
                            }
                        }
                    }
                }
                Err(e) => {
                    bump(&self.shared.stats.accept_errors);
                    handler.on_accept_error(&e);
                    return;
                }
            }
        }
    }

    /// For a shared `EPOLLEXCLUSIVE` listener: the least loaded other loop of the group, if
    /// this one holds clearly more connections (by an eighth, and at least two). The kernel
    /// wakes exclusive waiters in registration order, which otherwise gives the first loop
    /// most of the clients.
    fn less_loaded_sibling(&self, index: usize) -> Option<Arc<Shared>> {
        if !self.listeners.get(index)?.exclusive
            || self.config.bad(KnownBad::NoAcceptBalance)
            || self.config.bad(KnownBad::Thunder)
        {
            return None;
        }
        let siblings = self.shared.siblings.get()?;
        // At our limit any sibling with room takes the client; below it only a clearly less
        // loaded one.
        let full = self.live >= self.config.max_connections;
        let slack = (self.live / 8).max(2);
        siblings
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .filter(|s| !Arc::ptr_eq(s, &self.shared))
            // Relaxed: a gauge; a stale value only makes the balance a little less even.
            .map(|s| (s.live.load(Ordering::Relaxed), s))
            .filter(|(live, _)| {
                *live < self.config.max_connections && (full || live + slack < self.live)
            })
            .min_by_key(|(live, _)| *live)
            .map(|(_, s)| s)
    }

    /// Accepting fails for a passing reason: try again in [`ACCEPT_RETRY_DELAY`], on the
    /// loop's own timer, since no new edge comes for clients already in the backlog.
    fn schedule_accept_retry(&mut self) {
        self.schedule_accept_retry_in(ACCEPT_RETRY_DELAY);
    }

    /// Accept again (every listener) in `delay`, on the loop's own timer.
    fn schedule_accept_retry_in(&mut self, delay: Duration) {
        let at = self.os.now() + delay;
        self.accept_retry_at = Some(self.accept_retry_at.map_or(at, |t| t.min(at)));
    }

    fn start_connect<H: Handler<F>>(&mut self, target: Endpoint, handler: &mut H) {
        if self.shutting_down {
            handler.on_connect_failed(&target, shutting_down_error());
            return;
        }
        if self.live >= self.config.max_connections {
            let e = io::Error::other("connection limit reached");
            handler.on_connect_failed(&target, e);
            return;
        }
        let (fd, in_progress) = match self.os.connect(&target) {
            Ok(started) => started,
            Err(e) => return handler.on_connect_failed(&target, e),
        };
        let phase = Phase::Connecting {
            target: target.clone(),
            since: self.os.now(),
        };
        match self.register(fd, target.clone(), true, phase) {
            Ok(id) if in_progress => self.arm_timer(id),
            Ok(id) => self.complete_connect(id, false, handler),
            Err(e) => handler.on_connect_failed(&target, e),
        }
    }

    /// Finishes an outbound connect; `carried_data`: the event that reported it also reported
    /// input.
    fn complete_connect<H: Handler<F>>(&mut self, id: ConnId, carried_data: bool, handler: &mut H) {
        let os = self.os.clone();
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        let outcome = match os.take_error(&conn.core.fd) {
            // No error is not proof of a connection: a socket still in SYN_SENT has none
            // either, and the epoll contract allows spurious events. `getpeername` tells.
            Ok(None) => match os.is_connected(&conn.core.fd) {
                Ok(true) => Ok(()),
                // Still connecting: the real completion raises its own edge.
                Ok(false) => return,
                Err(e) => Err(e),
            },
            // It did connect: the peer spoke, then reset. Open it, so the handler gets what
            // was said; the read then finds the end.
            Ok(Some(e)) if carried_data && os::is_reset(&e) => {
                // Reading `SO_ERROR` cleared the reset; remember it for the end.
                conn.core.reset_seen = true;
                Ok(())
            }
            Ok(Some(e)) | Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                conn.core.phase = Phase::Open;
                conn.core.last_active = os.now();
                bump(&self.shared.stats.connected);
                self.opened(id, handler);
            }
            Err(e) => self.fail_connect(id, e, handler),
        }
    }

    fn fail_connect<H: Handler<F>>(&mut self, id: ConnId, error: io::Error, handler: &mut H) {
        if let Some(conn) = self.release(id) {
            if let Phase::Connecting { target, .. } = &conn.core.phase {
                handler.on_connect_failed(target, error);
            }
        }
    }

    /// Puts a new socket in a slot and registers it with epoll.
    fn register(
        &mut self,
        fd: O::Fd,
        peer: Endpoint,
        outbound: bool,
        phase: Phase,
    ) -> io::Result<ConnId> {
        if let Endpoint::Tcp(_) = peer {
            if self.config.nodelay {
                self.os.set_nodelay(&fd)?;
            }
        }
        if let Some(bytes) = self.config.send_buffer_size {
            self.os.set_send_buffer(&fd, bytes)?;
        }
        if let Some(bytes) = self.config.recv_buffer_size {
            self.os.set_recv_buffer(&fd, bytes)?;
        }
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = u32::try_from(self.slots.len())
                    .map_err(|_| io::Error::other("too many connection slots"))?;
                self.slots.push(Slot {
                    generation: 1,
                    conn: None,
                });
                index
            }
        };
        let id = ConnId {
            instance: self.shared.instance,
            loop_index: self.loop_index,
            index,
            generation: self.slots[index as usize].generation,
        };
        if let Err(e) = self
            .os
            .epoll_add(&self.epoll, &fd, id.token(), Interest::BOTH)
        {
            self.free.push(index);
            return Err(e);
        }
        let (producer, queue) = queue::channel();
        let shared = Arc::new(ConnShared::default());
        {
            let mut routes = lock(&self.shared.routes);
            if routes.len() <= index as usize {
                routes.resize_with(index as usize + 1, || None);
            }
            routes[index as usize] = Some(Route {
                id,
                queue: producer.clone(),
                conn: Arc::clone(&shared),
            });
        }
        self.slots[index as usize].conn = Some(Connection {
            input: Input::default(),
            core: Core {
                id,
                fd,
                peer,
                outbound,
                framing: self.proto.clone(),
                out: Output::default(),
                queue,
                producer,
                shared,
                phase,
                read_eof: false,
                paused: false,
                on_ready_list: false,
                write_blocked: false,
                close_requested: false,
                stalled: false,
                reset_seen: false,
                queue_closed: false,
                last_active: self.os.now(),
                timer_at: None,
            },
        });
        self.live += 1;
        // Relaxed: a gauge other loops read to balance accepting; it orders nothing.
        self.shared.live.store(self.live, Ordering::Relaxed);
        Ok(id)
    }

    /// Tells the handler a connection is open, then acts on what it did.
    fn opened<H: Handler<F>>(&mut self, id: ConnId, handler: &mut H) {
        let Server {
            slots,
            proto,
            shared,
            ..
        } = self;
        let Some(conn) = slots
            .get_mut(id.index as usize)
            .and_then(|s| s.conn.as_mut())
        else {
            return;
        };
        handler.on_connect(&view(&mut conn.core, proto, shared));
        self.arm_timer(id);
        self.after_io(id, handler);
    }

    // -----------------------------------------------------------------------------------------
    // Connection events
    // -----------------------------------------------------------------------------------------

    fn on_conn_event<H: Handler<F>>(&mut self, event: Event, handler: &mut H) {
        let id = ConnId::from_token(event.token, self.loop_index, self.shared.instance);
        let os = self.os.clone();
        let ignore_writable = self.config.bad(KnownBad::IgnoreWritable);
        let Some(conn) = self.conn_mut(id) else {
            bump(&self.shared.stats.stale_events);
            return;
        };
        let id = conn.core.id;
        if let Phase::Connecting { .. } = conn.core.phase {
            if !(event.writable || event.error || event.hup) {
                return;
            }
            self.complete_connect(id, event.readable, handler);
            if self.config.bad(KnownBad::ConnectSkipsRead) {
                // KNOWN-BAD: bytes reported by this same event wait for an edge that never comes.
                return;
            }
            // One event can carry the completion and data (or a FIN) already queued behind it;
            // under EPOLLET no new edge comes for those bytes, so act on the rest of the event
            // now (EPOLL-NOTES 17).
            if !self
                .conn_mut(id)
                .is_some_and(|c| matches!(c.core.phase, Phase::Open))
            {
                return;
            }
        }
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        // An error with data queued ahead of it (an RST after the peer's last words): read
        // first; the read reaches the error after the data (EPOLL-NOTES 17).
        if event.error && !event.readable {
            match os.take_error(&conn.core.fd) {
                Ok(Some(e)) => return self.finish(id, Some(error_reason(e)), handler),
                // No pending error after all: the read and write below find out what happened.
                Ok(None) => {}
                Err(e) => return self.finish(id, Some(DisconnectReason::Error(e)), handler),
            }
        }
        if event.writable && !ignore_writable {
            // The EPOLLOUT edge: the send buffer has room again.
            conn.core.write_blocked = false;
        }
        let readable = event.readable || event.read_hup || event.hup;
        // Without a FIN or error in this event, a short read proves the receive queue empty.
        // Nor with urgent data: a read stops short at the urgent mark (review finding R4).
        let short_read_drains = !(event.read_hup || event.hup || event.error || event.priority)
            || self.config.bad(KnownBad::ShortReadIgnoresHangup);
        self.service(id, readable, short_read_drains, handler);
    }

    /// Reads (if `readable`), then writes and applies state changes.
    ///
    /// `short_read_drains`: a read that returns less than asked ends the pass without the
    /// confirming read that would return `EAGAIN` (see [`Server::read_input`]).
    fn service<H: Handler<F>>(
        &mut self,
        id: ConnId,
        readable: bool,
        short_read_drains: bool,
        handler: &mut H,
    ) {
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        match conn.core.phase {
            Phase::Connecting { .. } => return,
            Phase::Lingering { .. } => {
                if readable {
                    self.discard_input(id, handler);
                }
                return;
            }
            Phase::Flushing { .. } => {
                // Input that arrives while the rest is written is read and dropped: closing a
                // socket with unread input makes the kernel send an RST, which would destroy
                // the reply still in flight to the peer.
                if readable && !conn.core.read_eof {
                    self.discard_input(id, handler);
                }
            }
            Phase::Open => {}
        }
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        let open = matches!(conn.core.phase, Phase::Open);
        if open && readable && !conn.core.read_eof && !conn.core.paused {
            match self.read_input(id, short_read_drains, handler) {
                ReadEnd::Drained => {}
                ReadEnd::Budget => self.requeue(id),
                ReadEnd::Eof => {
                    if self.config.bad(KnownBad::CloseOnReadHup) {
                        // KNOWN-BAD: drop pending output on the floor.
                        return self.finish(id, Some(DisconnectReason::PeerClosed), handler);
                    }
                    return self.begin_close(id, DisconnectReason::PeerClosed, handler);
                }
                ReadEnd::Close(reason, true) => return self.begin_close(id, reason, handler),
                ReadEnd::Close(reason, false) => return self.finish(id, Some(reason), handler),
            }
        }
        self.after_io(id, handler);
    }

    fn requeue(&mut self, id: ConnId) {
        if let Some(conn) = self.conn_mut(id) {
            if !conn.core.on_ready_list {
                conn.core.on_ready_list = true;
                self.ready.push_back(id);
                bump(&self.shared.stats.requeued);
            }
        }
    }

    /// Reads until `EAGAIN`, EOF or the fairness budget, delivering whole messages.
    ///
    /// With `short_read_drains` a read that returns fewer bytes than asked also ends the pass:
    /// under `EPOLLET` it proves the receive queue was empty at that moment, and any byte that
    /// arrives later raises a new edge (epoll re-queues the item on every arrival). It is only
    /// passed for an event that carried no `EPOLLRDHUP`, `EPOLLHUP` or `EPOLLERR`, so a FIN
    /// queued behind the data is always read to EOF; a FIN that arrives later raises its own
    /// edge. This saves the one empty `read` per pass that strict read-until-`EAGAIN` costs.
    fn read_input<H: Handler<F>>(
        &mut self,
        id: ConnId,
        short_read_drains: bool,
        handler: &mut H,
    ) -> ReadEnd {
        let Server {
            os,
            slots,
            proto,
            shared,
            scratch,
            config,
            max_input,
            ..
        } = self;
        let Some(conn) = slots
            .get_mut(id.index as usize)
            .and_then(|s| s.conn.as_mut())
        else {
            return ReadEnd::Drained;
        };
        let Connection { input, core } = conn;
        let mut budget_used = 0;
        let high = if config.bad(KnownBad::WatermarkBetweenPasses) {
            // KNOWN-BAD: the watermark is only looked at after the whole pass.
            usize::MAX
        } else {
            config.high_watermark
        };
        loop {
            if core.close_requested {
                return ReadEnd::Close(DisconnectReason::Closed, true);
            }
            if core.paused {
                return ReadEnd::Drained;
            }
            // Bytes read earlier but not delivered while the output was over the watermark.
            if core.stalled {
                core.stalled = false;
                let conn_view = view(core, proto, shared);
                let used = deliver(input.pending(), &conn_view, handler, high);
                match used {
                    Ok(used) => input.consume(used),
                    Err(e) => return ReadEnd::Close(DisconnectReason::Framing(e), true),
                }
                if core.close_requested {
                    return ReadEnd::Close(DisconnectReason::Closed, true);
                }
                if core.out.len() > high {
                    core.stalled = true;
                    // after_io flushes and pauses; served again without an edge if not paused.
                    return ReadEnd::Budget;
                }
            }
            bump(&shared.stats.read_calls);
            let n = match os.read(&core.fd, scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadEnd::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return ReadEnd::Close(error_reason(e), false),
            };
            if n == 0 {
                core.read_eof = true;
                let conn_view = view(core, proto, shared);
                let tail = conn_view
                    .inner
                    .borrow_mut()
                    .framing
                    .decode_eof(input.pending());
                input.clear();
                match tail {
                    Ok(Some(msg)) => handler.on_message(&conn_view, msg),
                    Ok(None) => {}
                    Err(e) => return ReadEnd::Close(DisconnectReason::Framing(e), true),
                }
                if core.reset_seen {
                    return ReadEnd::Close(DisconnectReason::Reset, false);
                }
                return ReadEnd::Eof;
            }
            core.last_active = os.now();
            budget_used += n;
            let conn_view = view(core, proto, shared);
            let delivered = if input.len() == 0 {
                // The common case: decode straight from the scratch buffer, keep only a tail.
                deliver(&scratch[..n], &conn_view, handler, high).map(|used| {
                    input.append(&scratch[used..n]);
                })
            } else {
                input.append(&scratch[..n]);
                deliver(input.pending(), &conn_view, handler, high).map(|used| input.consume(used))
            };
            if let Err(e) = delivered {
                return ReadEnd::Close(DisconnectReason::Framing(e), true);
            }
            if core.close_requested {
                return ReadEnd::Close(DisconnectReason::Closed, true);
            }
            if core.out.len() > high {
                // Over the watermark within the pass: stop reading now (after_io flushes and
                // pauses). What was read and not delivered waits in `input`, whole frames
                // included, so the frame-length bound below does not apply to it.
                core.stalled = true;
                return ReadEnd::Budget;
            }
            if input.len() > *max_input {
                let e = FrameError::TooLong {
                    limit: *max_input,
                    declared: input.len() as u64,
                };
                return ReadEnd::Close(DisconnectReason::Framing(e), true);
            }
            if config.bad(KnownBad::ReadOnce) {
                // KNOWN-BAD: wait for another edge that may never come.
                return ReadEnd::Drained;
            }
            if budget_used >= config.fairness_budget && !config.bad(KnownBad::NoFairness) {
                return ReadEnd::Budget;
            }
            if short_read_drains && n < scratch.len() {
                return ReadEnd::Drained;
            }
        }
    }

    /// Reads and drops input while flushing or lingering; at EOF a lingering connection closes
    /// (a flushing one notes the FIN); at an error it closes.
    fn discard_input<H: Handler<F>>(&mut self, id: ConnId, handler: &mut H) {
        let mut budget_used = 0;
        loop {
            let Server {
                os,
                slots,
                scratch,
                shared,
                ..
            } = &mut *self;
            let Some(conn) = slots
                .get_mut(id.index as usize)
                .and_then(|s| s.conn.as_mut())
            else {
                return;
            };
            bump(&shared.stats.read_calls);
            match os.read(&conn.core.fd, scratch) {
                // Flushing: the peer's FIN; the close follows once the output is written.
                Ok(0) if matches!(conn.core.phase, Phase::Flushing { .. }) => {
                    conn.core.read_eof = true;
                    return;
                }
                Ok(0) => return self.finish(id, None, handler),
                Ok(n) => {
                    budget_used += n;
                    if budget_used >= self.config.fairness_budget {
                        return self.requeue(id);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The peer is gone; it got what we sent before it reset.
                Err(_) => return self.finish(id, None, handler),
            }
        }
    }

    /// After callbacks or queue drains: honour a close request, write, apply backpressure.
    fn after_io<H: Handler<F>>(&mut self, id: ConnId, handler: &mut H) {
        let (high, low) = (self.config.high_watermark, self.config.low_watermark);
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        if conn.core.close_requested && matches!(conn.core.phase, Phase::Open) {
            return self.begin_close(id, DisconnectReason::Closed, handler);
        }
        if let Err(e) = self.flush(id) {
            return self.finish(id, Some(error_reason(e)), handler);
        }
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        let core = &mut conn.core;
        match core.phase {
            Phase::Flushing { .. } if core.out.is_empty() => self.after_flushed(id, handler),
            Phase::Open => {
                let len = core.out.len();
                if !core.paused && len > high {
                    core.paused = true;
                } else if core.paused && len <= low {
                    core.paused = false;
                    // Input may have arrived while paused, with no edge left to report it.
                    self.requeue(id);
                }
            }
            _ => {}
        }
    }

    /// Writes pending output until done or `EAGAIN`.
    fn flush(&mut self, id: ConnId) -> io::Result<()> {
        let drop_rest = self.config.bad(KnownBad::DropPartialWriteRest);
        let os = self.os.clone();
        let Some(conn) = self.conn_mut(id) else {
            return Ok(());
        };
        let core = &mut conn.core;
        if core.out.is_empty() || core.write_blocked {
            return Ok(());
        }
        let (fd, pending) = (&core.fd, &core.shared.pending);
        let report = core.out.write_to(
            |bufs| {
                let written = os.writev(fd, bufs)?;
                if !drop_rest {
                    // Credit the budget per call, not when the whole flush returns: a peer can
                    // read these bytes, and its sender try again, before the flush is over.
                    // Relaxed: the budget is advisory.
                    pending.fetch_sub(written, Ordering::Relaxed);
                }
                Ok(written)
            },
            drop_rest,
        );
        let report = report?;
        if report.written > 0 {
            core.last_active = os.now();
        }
        if drop_rest {
            // The bad variant also forgets the dropped bytes in the budget.
            core.shared.pending.store(core.out.len(), Ordering::Relaxed);
        }
        core.write_blocked = report.blocked;
        let stats = &self.shared.stats;
        StatCells::add(&stats.write_calls, report.calls);
        StatCells::add(&stats.partial_writes, report.partial);
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Closing
    // -----------------------------------------------------------------------------------------

    /// Starts a graceful close: stop reading, flush everything accepted so far, then close.
    fn begin_close<H: Handler<F>>(
        &mut self,
        id: ConnId,
        reason: DisconnectReason,
        handler: &mut H,
    ) {
        let linger_cuts_flush = self.config.bad(KnownBad::LingerCutsFlush);
        let linger_deadline = self.os.now().checked_add(self.config.close_linger);
        let shutdown_deadline = self.shutdown_deadline;
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        let core = &mut conn.core;
        if !matches!(core.phase, Phase::Open) {
            return;
        }
        // The flush is bounded by write progress (the idle timeout), not by `close_linger`: a
        // reading peer slower than the linger must still get everything.
        let mut deadline = shutdown_deadline;
        if linger_cuts_flush {
            // KNOWN-BAD: a slow reader's reply is cut short after `close_linger`.
            deadline = earliest(deadline, linger_deadline);
        }
        core.phase = Phase::Flushing { reason, deadline };
        // No more sends: whatever was queued before this point is still delivered.
        for bytes in core.queue.close() {
            core.out.push_chunk(bytes);
        }
        core.queue_closed = true;
        conn.input.clear();
        self.arm_timer(id);
        // Input whose edge came earlier (while reading was paused, say) raises no new one:
        // drop it now, so the close does not find it unread and reset the connection.
        if !self.conn_mut(id).is_some_and(|c| c.core.read_eof) {
            self.discard_input(id, handler);
        }
        self.after_io(id, handler);
    }

    /// Output is flushed: close now if the peer already sent FIN, else shut down our write half
    /// and wait (bounded) for its FIN.
    fn after_flushed<H: Handler<F>>(&mut self, id: ConnId, handler: &mut H) {
        let os = self.os.clone();
        let linger_deadline = os.now().checked_add(self.config.close_linger);
        let shutdown_deadline = self.shutdown_deadline;
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        let core = &mut conn.core;
        let Phase::Flushing { reason, .. } = std::mem::replace(&mut core.phase, Phase::Open) else {
            return;
        };
        let deadline = earliest(linger_deadline, shutdown_deadline);
        if core.read_eof {
            core.phase = Phase::Flushing { reason, deadline };
            return self.finish(id, None, handler);
        }
        if let Err(e) = os.shutdown(&core.fd, Shutdown::Write) {
            core.phase = Phase::Flushing { reason, deadline };
            // The peer is already gone; the close below is all that is left to do.
            let _ = e;
            return self.finish(id, None, handler);
        }
        core.phase = Phase::Lingering { reason, deadline };
        // The linger bound is usually earlier than the flush's own timer.
        self.arm_timer(id);
        // Input that arrived earlier produced its edge already: read it now.
        self.discard_input(id, handler);
    }

    /// Closes a connection now and reports it. `reason: None` keeps the reason of the close
    /// already under way (or [`DisconnectReason::Shutdown`]).
    fn finish<H: Handler<F>>(
        &mut self,
        id: ConnId,
        reason: Option<DisconnectReason>,
        handler: &mut H,
    ) {
        let Some(mut conn) = self.release(id) else {
            return;
        };
        let phase = std::mem::replace(&mut conn.core.phase, Phase::Open);
        let reason = match (reason, phase) {
            (Some(reason), _) => reason,
            (None, Phase::Flushing { reason, .. } | Phase::Lingering { reason, .. }) => reason,
            (None, Phase::Open | Phase::Connecting { .. }) => DisconnectReason::Shutdown,
        };
        let mut undelivered_messages = 0;
        let mut unsent_bytes = conn.core.out.discard();
        if !conn.core.queue_closed {
            for bytes in conn.core.queue.close() {
                undelivered_messages += 1;
                unsent_bytes += bytes.len();
            }
        }
        let peer_gone = matches!(reason, DisconnectReason::Reset | DisconnectReason::Error(_));
        // Over a Unix socket the bytes written are already in the peer's receive queue, and a
        // close never destroys them (`SO_LINGER` does nothing there): only TCP needs this.
        let tcp = matches!(conn.core.peer, Endpoint::Tcp(_));
        if unsent_bytes > 0 && !peer_gone && tcp {
            // The loop gives up on output it accepted: reset the connection, so the peer can
            // tell its reply was cut (a FIN would read as a complete reply), and count what
            // the kernel still held unacknowledged, which the reset destroys with the rest.
            // Ignored on failure: the count then misses bytes the kernel may still deliver.
            unsent_bytes += self.os.unsent_in_kernel(&conn.core.fd).unwrap_or(0);
            // Ignored on failure: the close below still ends the connection, with a FIN.
            let _ = self.os.set_linger_zero(&conn.core.fd);
        }
        if self.config.bad(KnownBad::UncountedUnsent) {
            // KNOWN-BAD: the bytes vanish from the accounting.
            unsent_bytes = 0;
        }
        drop(conn);
        bump(&self.shared.stats.closed);
        handler.on_disconnect(
            id,
            Disconnect {
                reason,
                undelivered_messages,
                unsent_bytes,
            },
        );
    }

    /// Closes a connection at once whatever its phase: a connect in progress is reported as
    /// failed, anything else as a disconnect that counts what it did not send.
    fn abandon<H: Handler<F>>(&mut self, id: ConnId, handler: &mut H) {
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        if let Phase::Connecting { .. } = conn.core.phase {
            self.fail_connect(id, shutting_down_error(), handler);
        } else {
            self.finish(id, None, handler);
        }
    }

    /// Removes a connection from epoll, the routes and its slot; the fd closes when the
    /// returned connection drops.
    fn release(&mut self, id: ConnId) -> Option<Connection<F, O>> {
        let index = id.index as usize;
        let slot = self.slots.get_mut(index)?;
        let matches = slot.conn.as_ref().is_some_and(|c| c.core.id == id);
        if !matches {
            return None;
        }
        let conn = slot.conn.take()?;
        if !self.config.bad(KnownBad::CloseWithoutDelete) {
            // EPOLL_CTL_DEL before close: epoll tracks the file description, which a duplicate
            // fd would keep alive. Ignored on failure: the fd is closed right after anyway.
            let _ = self.os.epoll_delete(&self.epoll, &conn.core.fd);
        }
        slot.generation = match (slot.generation + 1) & ConnId::GENERATION_MASK {
            0 => 1,
            g => g,
        };
        self.free.push(id.index);
        self.live -= 1;
        // Relaxed: as above.
        self.shared.live.store(self.live, Ordering::Relaxed);
        {
            let mut routes = lock(&self.shared.routes);
            if let Some(route) = routes.get_mut(index) {
                *route = None;
            }
        }
        if self.accept_paused {
            self.accept_retry = true;
        }
        self.compact_timers();
        Some(conn)
    }

    fn begin_shutdown<H: Handler<F>>(&mut self, handler: &mut H) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        // The loops of a group live and die together: the first to shut down tells the rest
        // (each one returns early here the second time).
        if let Some(siblings) = self.shared.siblings.get() {
            for sibling in siblings.iter().filter_map(std::sync::Weak::upgrade) {
                if !Arc::ptr_eq(&sibling, &self.shared) {
                    // Ignored: a sibling that has exited is already shut down.
                    let _ = sibling.command(Command::Shutdown);
                }
            }
        }
        let deadline = self.os.now().checked_add(self.config.shutdown_timeout);
        self.shutdown_deadline = deadline;
        for listener in self.listeners.drain(..) {
            // Ignored: the listener closes right after anyway.
            let _ = self.os.epoll_delete(&self.epoll, &listener.fd);
        }
        for id in self.live_ids() {
            let Some(conn) = self.conn_mut(id) else {
                continue;
            };
            match &mut conn.core.phase {
                Phase::Connecting { .. } => self.fail_connect(id, shutting_down_error(), handler),
                Phase::Open => self.begin_close(id, DisconnectReason::Shutdown, handler),
                Phase::Flushing { deadline: at, .. } | Phase::Lingering { deadline: at, .. } => {
                    *at = earliest(*at, deadline);
                    self.arm_timer(id);
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Timers
    // -----------------------------------------------------------------------------------------

    /// When `core` next needs attention from the timer.
    fn due(&self, core: &Core<F, O>) -> Option<Instant> {
        // `checked_add`: a timeout too long to add to the clock (`Duration::MAX`) never fires.
        let idle = |from: Instant| self.config.idle_timeout.and_then(|t| from.checked_add(t));
        match &core.phase {
            Phase::Connecting { since, .. } => idle(*since),
            Phase::Open => idle(core.last_active),
            // Bounded by write progress: the idle timeout, or `close_linger` without one, counted
            // from the last write that made progress (so a slow reader still gets everything).
            Phase::Flushing { deadline, .. } => {
                let stuck = self.config.idle_timeout.unwrap_or(self.config.close_linger);
                earliest(*deadline, core.last_active.checked_add(stuck))
            }
            Phase::Lingering { deadline, .. } => *deadline,
        }
    }

    fn arm_timer(&mut self, id: ConnId) {
        let Some(conn) = self
            .slots
            .get(id.index as usize)
            .and_then(|s| s.conn.as_ref())
        else {
            return;
        };
        let Some(due) = self.due(&conn.core) else {
            return;
        };
        let conn = self.slots[id.index as usize]
            .conn
            .as_mut()
            .expect("checked above");
        if conn.core.timer_at.is_none_or(|at| due < at) {
            conn.core.timer_at = Some(due);
            self.timers.push(Reverse((due, id.token())));
            // A re-arm (flush, linger, shutdown deadline) supersedes the entry before it:
            // compact here too, not only on close, so the heap stays within its bound while
            // many live connections re-arm at once (found by the sim explorer).
            self.compact_timers();
        }
    }

    /// Drops stale timer entries once they outnumber the live ones, so the heap stays within
    /// a constant factor of the connections open (amortised O(1) per close).
    fn compact_timers(&mut self) {
        if self.config.bad(KnownBad::StaleTimers)
            || self.timers.len() <= 2 * self.live + TIMER_SLACK
        {
            return;
        }
        let (slots, loop_index, instance) = (&self.slots, self.loop_index, self.shared.instance);
        self.timers.retain(|&Reverse((at, token))| {
            let id = ConnId::from_token(token, loop_index, instance);
            slots
                .get(id.index as usize)
                .and_then(|s| s.conn.as_ref())
                .is_some_and(|c| c.core.id == id && c.core.timer_at == Some(at))
        });
    }

    fn expire_timers<H: Handler<F>>(&mut self, now: Instant, handler: &mut H) {
        let (loop_index, instance) = (self.loop_index, self.shared.instance);
        while let Some(&Reverse((at, token))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let id = ConnId::from_token(token, loop_index, instance);
            let Some(conn) = self
                .slots
                .get_mut(id.index as usize)
                .and_then(|s| s.conn.as_mut())
            else {
                continue;
            };
            if conn.core.id != id || conn.core.timer_at != Some(at) {
                // A stale entry: the connection is gone, or an earlier entry replaced this one.
                continue;
            }
            conn.core.timer_at = None;
            let due = self.due(
                &self.slots[id.index as usize]
                    .conn
                    .as_ref()
                    .expect("live")
                    .core,
            );
            match due {
                Some(due) if due <= now => self.on_timeout(id, handler),
                Some(_) => self.arm_timer(id),
                None => {}
            }
        }
    }

    fn on_timeout<H: Handler<F>>(&mut self, id: ConnId, handler: &mut H) {
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        match conn.core.phase {
            Phase::Connecting { .. } => {
                let e = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                self.fail_connect(id, e, handler);
            }
            Phase::Open => self.begin_close(id, DisconnectReason::IdleTimeout, handler),
            // The flush or linger bound is over: close, counting what was not sent.
            Phase::Flushing { .. } | Phase::Lingering { .. } => self.finish(id, None, handler),
        }
    }
}

/// Records the loop thread while [`Server::run`] executes, and forgets it when dropped (on
/// return and on unwind alike).
struct LoopThread {
    shared: Arc<Shared>,
}

impl LoopThread {
    fn enter(shared: &Arc<Shared>) -> LoopThread {
        *std_lock(&shared.loop_thread) = Some(crate::sys::current_thread());
        LoopThread {
            shared: Arc::clone(shared),
        }
    }
}

impl Drop for LoopThread {
    fn drop(&mut self) {
        *std_lock(&self.shared.loop_thread) = None;
    }
}

/// The earlier of two optional deadlines (`None`: never).
#[inline]
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn shutting_down_error() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "event loop is shutting down")
}
