//! The executor: plays a [`Schedule`] against refloop's real loop and checks its invariants.
//!
//! The loop runs [`Server::run`] on a background thread with a checking echo handler
//! (`Recorder`): it echoes every message back on the same connection and records, per
//! connection, what it decoded, what it queued and how the connection ended.
//! The executor's thread drives the clients step by step; cross-thread sends run on up to
//! [`SENDER_THREADS`] sender threads concurrently with the following steps.
//! After the last step it drains every client, shuts the loop down, joins every thread and
//! checks:
//!
//! 1. **Exact echo, in order, nothing foreign.** A client that stayed open receives exactly the
//!    messages it sent, in order, interleaved only with the cross-thread messages sent to its own
//!    connection (each sender thread's in order); a frame tagged with any other connection, a
//!    corrupt frame or a stray byte fails the run at once.
//! 2. **Malformed frames cost one connection.** A client that sent a malformed or over-long frame
//!    is disconnected with [`DisconnectReason::Framing`] of the matching kind, after the messages
//!    before the bad frame were decoded and their echoes flushed; every other client's checks
//!    are unaffected.
//! 3. **Exactly once.** For every connection, the bytes the client received plus the
//!    [`Disconnect::unsent_bytes`] the loop reported equal the bytes of every echo and every
//!    cross-thread send that was accepted (`Ok`); a refused send returned its own message as
//!    [`SendError::Closed`] or [`SendError::Full`].
//!    Connections the client closed or reset can only be bounded (`<=`): the kernel drops what
//!    was in flight.
//! 4. **Half-close is served.** A half-closed client still receives every echo (unsent bytes
//!    zero) and the loop reports [`DisconnectReason::PeerClosed`].
//! 5. **No leaks.** Every connection the server reported is one a client made, got exactly one
//!    `on_disconnect`, and is counted in [`Stats::accepted`] and [`Stats::closed`]; every handle
//!    refuses sends after the run; the process has exactly the fds it had before the run
//!    (compared as `/proc/self/fd` listings).
//! 6. **Clean shutdown.** The loop thread returns `Ok` from [`Server::run`] without panicking,
//!    within the stall bound after [`LoopHandle::shutdown`].
//!
//! Every wait is bounded by [`Options::stall`]: a run fails when nothing progresses for that
//! long, which is how lost wake-ups and hung tails show.
//! There are no sleeps: waits are `poll(2)` on the client sockets or a condition variable the
//! handler signals.
//!
//! The executor installs a wake hook ([`Server::set_wake_hook`]), which the loop calls in the
//! middle of its eventfd handling (between resetting the eventfd and draining the command queue,
//! or the other way round in the known-bad variant).
//! By default the hook yields the loop thread, widening that race window so that concurrent
//! cross-thread sends land in it; after a [`Step::HoldLoop`] it holds the loop thread there
//! until the hold ends, so connects, sends and closes pile up for one loop turn
//! deterministically.
//! The correct loop is indifferent to both.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use refloop::framing::{FrameError, Framing, LengthPrefixed, Lines};
use refloop::reactor::KnownBad;
use refloop::{
    Config, Conn, ConnHandle, ConnId, Disconnect, DisconnectReason, Endpoint, Handler, LoopHandle,
    SendError, Server, Stats,
};

use super::client::{open_fds, Client, ReadOutcome};
use super::wire::{self, Origin, Parser, Tag, MAX_FRAME};
use super::{Malformation, Schedule, Step, Wire, SENDER_THREADS};

/// How an executor run is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// The longest the executor waits for any progress before it declares the loop stalled.
    pub stall: Duration,
    /// The loop variant to run (a known-bad one for the teeth tests).
    pub known_bad: KnownBad,
    /// Known-bad executor (tests only): leaks one socket fd inside the run, so a test can show
    /// that the fd comparison catches a leak.
    #[doc(hidden)]
    pub leak_socket: bool,
    /// How many loops serve the schedule: 1 (one `Server`) or more (a `refloop::Loops` group
    /// sharing the address through `SO_REUSEPORT`, so the clients spread over the loops).
    pub loops: usize,
}

impl Options {
    /// The correct loop, with the stall bound from `REFLOOP_SCHEDULE_STALL_MS` (default 10 s,
    /// far above any honest wait on a loaded 2-core machine).
    pub fn from_env() -> Options {
        let ms = std::env::var("REFLOOP_SCHEDULE_STALL_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(10_000);
        Options {
            stall: Duration::from_millis(ms),
            known_bad: KnownBad::None,
            leak_socket: false,
            loops: 1,
        }
    }
}

/// The known-bad loop variants the schedules are shown to catch, by the names used in
/// `@@stat` lines, regression file names and `REFLOOP_KNOWN_BAD`.
pub const KNOWN_BAD: [(&str, KnownBad); 9] = [
    ("read_once", KnownBad::ReadOnce),
    ("accept_once", KnownBad::AcceptOnce),
    ("drop_partial_write_rest", KnownBad::DropPartialWriteRest),
    ("no_generation", KnownBad::NoGeneration),
    ("close_on_read_hup", KnownBad::CloseOnReadHup),
    (
        "drain_before_eventfd_reset",
        KnownBad::DrainBeforeEventfdReset,
    ),
    ("ignore_writable", KnownBad::IgnoreWritable),
    ("skip_wake", KnownBad::SkipWake),
    (
        "short_read_ignores_hangup",
        KnownBad::ShortReadIgnoresHangup,
    ),
];

/// Options for running against the known-bad variant called `name` (see [`KNOWN_BAD`]), with
/// a stall bound of 400 ms so that a stalling variant fails fast.
pub fn known_bad_options(name: &str) -> Option<Options> {
    KNOWN_BAD
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, known_bad)| Options {
            stall: Duration::from_millis(400),
            known_bad,
            leak_socket: false,
            loops: 1,
        })
}

/// Which hard paths one run reached, as the loop and the handler observed them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reach {
    /// A gathered write took fewer bytes than offered ([`Stats::partial_writes`] > 0).
    pub partial_write: bool,
    /// A connection ended with [`DisconnectReason::Reset`].
    pub rst: bool,
    /// A half-closed client was served to the end ([`DisconnectReason::PeerClosed`]).
    pub half_close: bool,
    /// A connection ended with [`DisconnectReason::Framing`].
    pub framing_error: bool,
    /// A cross-thread send came back [`SendError::Full`].
    pub full: bool,
    /// A cross-thread send to a dead connection came back [`SendError::Closed`].
    pub stale_send: bool,
    /// A connection used up its fairness budget and went on the ready list.
    pub requeued: bool,
    /// A [`Step::HoldLoop`] held the loop in a wake-up.
    pub held_wakeup: bool,
}

/// What a passing run did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The hard paths reached.
    pub reach: Reach,
    /// The loop's counters at the end.
    pub stats: Stats,
    /// Connections made.
    pub connections: usize,
    /// Cross-thread sends attempted.
    pub cross_sends: usize,
    /// Whether the fd comparison ran (it is skipped while a loop from an earlier failed run is
    /// still stuck, since that loop closes its fds whenever its clients go).
    pub fds_checked: bool,
}

/// Loops from failed runs that never shut down (only known-bad variants produce them); they
/// cannot be joined, so they are parked here and the fd comparison is skipped while any exist.
static STUCK_LOOPS: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// Serialises runs within one process: each run compares the process's fd table before and
/// after, so no two may overlap.
static RUN_LOCK: Mutex<()> = Mutex::new(());

/// How many runs have executed in this process (for diagnostics).
static RUNS: AtomicUsize = AtomicUsize::new(0);

/// Plays `schedule` against the loop and checks every invariant listed in the module docs.
///
/// # Errors
///
/// Returns a description of the first violated invariant.
pub fn run(schedule: &Schedule, options: &Options) -> Result<Outcome, String> {
    let _serial = RUN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // Relaxed: a diagnostic counter that orders nothing.
    RUNS.fetch_add(1, Ordering::Relaxed);
    let stuck_before = lock(&STUCK_LOOPS).len();
    let fds_before = open_fds().map_err(|e| format!("cannot list /proc/self/fd: {e}"))?;
    let result = match schedule.wire {
        Wire::LengthPrefixed => run_with::<LengthPrefixed>(schedule, options),
        Wire::Lines => run_with::<Lines>(schedule, options),
    };
    if options.leak_socket {
        // KNOWN-BAD: a socket opened inside the run and never closed.
        if let Ok(socket) = std::net::UdpSocket::bind("127.0.0.1:0") {
            std::mem::forget(socket);
        }
    }
    let mut outcome = result?;
    let stuck_now = lock(&STUCK_LOOPS).len();
    if stuck_before == 0 && stuck_now == 0 {
        let fds_after = open_fds().map_err(|e| format!("cannot list /proc/self/fd: {e}"))?;
        if fds_after != fds_before {
            return Err(format!(
                "fd table changed across the run:\n  only before: {:?}\n  only after: {:?}",
                difference(&fds_before, &fds_after),
                difference(&fds_after, &fds_before)
            ));
        }
        outcome.fds_checked = true;
    }
    Ok(outcome)
}

fn difference(a: &[(u32, String)], b: &[(u32, String)]) -> Vec<(u32, String)> {
    a.iter().filter(|x| !b.contains(x)).cloned().collect()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent: each update is a single
    // push or assignment. A poisoned lock is still used, so the original failure gets reported.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The two framings, seen from the executor
// ---------------------------------------------------------------------------------------------

/// A framing the executor can run: how to build it and convert payloads to messages.
pub(crate) trait WireFraming: Framing + Clone + Send + 'static {
    const WIRE: Wire;
    fn build() -> Self {
        Self::with_limit(MAX_FRAME)
    }
    fn with_limit(limit: usize) -> Self;
    fn message(payload: Vec<u8>) -> Self::Message;
    fn bytes(msg: &Self::Message) -> &[u8];
}

impl WireFraming for LengthPrefixed {
    const WIRE: Wire = Wire::LengthPrefixed;
    fn with_limit(limit: usize) -> Self {
        LengthPrefixed::new(limit)
    }
    fn message(payload: Vec<u8>) -> Vec<u8> {
        payload
    }
    fn bytes(msg: &Vec<u8>) -> &[u8] {
        msg
    }
}

impl WireFraming for Lines {
    const WIRE: Wire = Wire::Lines;
    fn with_limit(limit: usize) -> Self {
        Lines::new(limit)
    }
    fn message(payload: Vec<u8>) -> String {
        String::from_utf8(payload).expect("payloads are ASCII by construction")
    }
    fn bytes(msg: &String) -> &[u8] {
        msg.as_bytes()
    }
}

/// The bytes the server's encoder writes for a payload of `len` bytes.
pub(crate) fn encoded_len(wire: Wire, len: usize) -> u64 {
    match wire {
        Wire::LengthPrefixed => 4 + len as u64,
        Wire::Lines => len as u64 + 1,
    }
}

// ---------------------------------------------------------------------------------------------
// The checking echo handler
// ---------------------------------------------------------------------------------------------

/// How a connection ended, reduced to what the checks compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    PeerClosed,
    Reset,
    Error,
    FramingTooLong,
    FramingMalformed,
    IdleTimeout,
    Closed,
    Shutdown,
    Other,
}

pub(crate) fn ending(reason: &DisconnectReason) -> Ending {
    match reason {
        DisconnectReason::PeerClosed => Ending::PeerClosed,
        DisconnectReason::Reset => Ending::Reset,
        DisconnectReason::Error(_) => Ending::Error,
        DisconnectReason::Framing(FrameError::TooLong { .. }) => Ending::FramingTooLong,
        DisconnectReason::Framing(_) => Ending::FramingMalformed,
        DisconnectReason::IdleTimeout => Ending::IdleTimeout,
        DisconnectReason::Closed => Ending::Closed,
        DisconnectReason::Shutdown => Ending::Shutdown,
        _ => Ending::Other,
    }
}

/// One connection as the server saw it.
struct ServerConn<F: Framing> {
    id: ConnId,
    peer: Option<SocketAddr>,
    handle: ConnHandle<F>,
    /// Payloads decoded, in order.
    messages: Vec<Vec<u8>>,
    /// Encoded bytes of the echoes queued with `Conn::send`.
    echoed_bytes: u64,
    ended: Option<(Ending, String, Disconnect)>,
}

/// What the handler saw, shared with the executor.
struct View<F: Framing> {
    conns: Vec<ServerConn<F>>,
    by_id: HashMap<ConnId, usize>,
    violations: Vec<String>,
}

struct Observed<F: Framing> {
    view: Mutex<View<F>>,
    changed: Condvar,
}

/// The checking echo handler: echoes each message and records everything in [`View`].
struct Recorder<F: Framing> {
    observed: Arc<Observed<F>>,
}

impl<F: WireFraming> Handler<F> for Recorder<F> {
    fn on_connect(&mut self, conn: &Conn<'_, F>) {
        let peer = match conn.peer_addr() {
            Endpoint::Tcp(addr) => Some(*addr),
            _ => None,
        };
        let mut view = lock(&self.observed.view);
        if view.by_id.contains_key(&conn.id()) {
            view.violations
                .push(format!("{} connected twice", conn.id()));
        }
        let at = view.conns.len();
        view.by_id.insert(conn.id(), at);
        view.conns.push(ServerConn {
            id: conn.id(),
            peer,
            handle: conn.handle(),
            messages: Vec::new(),
            echoed_bytes: 0,
            ended: None,
        });
        drop(view);
        self.observed.changed.notify_all();
    }

    fn on_message(&mut self, conn: &Conn<'_, F>, msg: F::Message) {
        let echo = conn.send(&msg);
        let payload = F::bytes(&msg).to_vec();
        let mut view = lock(&self.observed.view);
        let Some(&at) = view.by_id.get(&conn.id()) else {
            view.violations
                .push(format!("message on {} before its on_connect", conn.id()));
            return;
        };
        let len = payload.len();
        let c = &mut view.conns[at];
        if c.ended.is_some() {
            let id = c.id;
            view.violations
                .push(format!("message on {id} after its on_disconnect"));
            return;
        }
        c.messages.push(payload);
        match echo {
            Ok(()) => c.echoed_bytes += encoded_len(F::WIRE, len),
            Err(e) => {
                let id = c.id;
                view.violations
                    .push(format!("echo of a decoded message on {id} failed: {e}"));
            }
        }
    }

    fn on_disconnect(&mut self, id: ConnId, reason: Disconnect) {
        let mut view = lock(&self.observed.view);
        match view.by_id.get(&id).copied() {
            None => view
                .violations
                .push(format!("on_disconnect for unknown {id}")),
            Some(at) if view.conns[at].ended.is_some() => {
                view.violations.push(format!("{id} disconnected twice"));
            }
            Some(at) => {
                let text = format!(
                    "{} ({} undelivered message(s), {} unsent byte(s))",
                    reason.reason, reason.undelivered_messages, reason.unsent_bytes
                );
                view.conns[at].ended = Some((ending(&reason.reason), text, reason));
            }
        }
        drop(view);
        self.observed.changed.notify_all();
    }

    fn on_accept_error(&mut self, error: &std::io::Error) {
        lock(&self.observed.view)
            .violations
            .push(format!("accept failed: {error}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Holding the loop in its wake-up
// ---------------------------------------------------------------------------------------------

/// How long a [`Step::HoldLoop`] waits for its wake-up to reach the hook.
const HOLD_TAKE_BOUND: Duration = Duration::from_secs(1);

/// Lets the executor hold the loop thread inside the wake hook.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    /// The next wake-up holds.
    armed: bool,
    /// The loop thread is held now.
    held: bool,
    /// The executor asked the held loop thread to go on.
    release: bool,
    /// A hold took effect during this run.
    ever_held: bool,
}

impl Gate {
    /// Runs on the loop thread in every wake-up: holds it if armed (for at most `bound`),
    /// otherwise yields it twice.
    fn pass(&self, bound: Duration) {
        let mut s = lock(&self.state);
        if !s.armed {
            drop(s);
            std::thread::yield_now();
            std::thread::yield_now();
            return;
        }
        s.armed = false;
        s.held = true;
        s.ever_held = true;
        s.release = false;
        self.changed.notify_all();
        let deadline = Instant::now() + bound;
        while !s.release {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        s.held = false;
        s.release = false;
    }

    /// Makes the next wake-up hold (unless one is held already).
    fn arm(&self) {
        let mut s = lock(&self.state);
        if !s.held {
            s.armed = true;
        }
    }

    /// Ends the hold, or cancels one not yet taken.
    fn release(&self) {
        let mut s = lock(&self.state);
        s.armed = false;
        if s.held {
            s.release = true;
            self.changed.notify_all();
        }
    }

    /// Waits until the loop thread is held, for at most `bound`; true if it is.
    fn wait_held(&self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        let mut s = lock(&self.state);
        while !s.held {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    fn ever_held(&self) -> bool {
        lock(&self.state).ever_held
    }
}

// ---------------------------------------------------------------------------------------------
// Cross-thread senders
// ---------------------------------------------------------------------------------------------

/// What a cross-thread send returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendOutcome {
    Accepted,
    Closed,
    Full,
}

struct CrossRecord {
    inc: usize,
    thread: u8,
    payload: Vec<u8>,
    outcome: SendOutcome,
}

/// The ways to reach a connection from another thread.
enum Route<F: Framing> {
    Handle(ConnHandle<F>),
    ById(LoopHandle<F>, ConnId),
}

struct Job<F: Framing> {
    inc: usize,
    thread: u8,
    route: Route<F>,
    payloads: Vec<Vec<u8>>,
}

/// Performs `job`, appending one record per message to `log`; problems go to `violations`.
fn perform<F: WireFraming>(
    job: Job<F>,
    log: &Mutex<Vec<CrossRecord>>,
    violations: &Mutex<Vec<String>>,
) {
    let Job {
        inc,
        thread,
        mut route,
        payloads,
    } = job;
    for payload in payloads {
        let msg = F::message(payload.clone());
        let result = match &mut route {
            Route::Handle(h) => h.send(msg),
            Route::ById(h, id) => h.send_to(*id, msg),
        };
        let outcome = match result {
            Ok(()) => SendOutcome::Accepted,
            Err(e) => {
                let outcome = match &e {
                    SendError::Closed(_) => SendOutcome::Closed,
                    SendError::Full(_) => SendOutcome::Full,
                    SendError::Encode(_, why) => {
                        lock(violations).push(format!("a valid payload failed to encode: {why}"));
                        SendOutcome::Closed
                    }
                };
                if F::bytes(&e.into_inner()) != payload.as_slice() {
                    lock(violations).push("a refused send returned a different message".into());
                }
                outcome
            }
        };
        lock(log).push(CrossRecord {
            inc,
            thread,
            payload,
            outcome,
        });
    }
}

struct Senders<F: Framing> {
    jobs: Vec<mpsc::Sender<Job<F>>>,
    threads: Vec<JoinHandle<()>>,
}

// ---------------------------------------------------------------------------------------------
// Client incarnations
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    HalfClosed,
    Closed,
    Reset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    HalfClose,
    Close,
}

/// One connection a client slot made.
struct Inc {
    slot: u8,
    number: u16,
    local: SocketAddr,
    client: Option<Client>,
    state: State,
    pending: Option<Pending>,
    malformed: Option<Malformation>,
    /// Payloads the client queued, in order (all before any malformed frame).
    sent: Vec<Vec<u8>>,
    parser: Parser,
    /// Frames of `parser` already checked for foreign tags.
    checked: usize,
    paused_until: usize,
    read_buf: usize,
    /// EOF or RST seen by the client.
    ended: Option<ReadOutcome>,
    /// The server connection matched to this incarnation.
    server: Option<usize>,
    cross_seq: [u32; SENDER_THREADS as usize + 1],
}

impl Inc {
    fn name(&self) -> String {
        format!("c{}#{}", self.slot, self.number)
    }

    /// Open for new steps: connected, not closing, no malformed frame sent.
    fn usable(&self) -> bool {
        self.client.is_some()
            && self.state == State::Open
            && self.pending.is_none()
            && self.malformed.is_none()
    }
}

// ---------------------------------------------------------------------------------------------
// One run
// ---------------------------------------------------------------------------------------------

struct Run<'s, F: WireFraming> {
    schedule: &'s Schedule,
    options: &'s Options,
    addr: SocketAddr,
    handle: LoopHandle<F>,
    /// Every loop's handle, when a group serves the schedule.
    group: Option<refloop::LoopsHandle<F>>,
    observed: Arc<Observed<F>>,
    incs: Vec<Inc>,
    /// The latest incarnation of each slot.
    latest: Vec<Option<usize>>,
    claimed: HashSet<usize>,
    log: Arc<Mutex<Vec<CrossRecord>>>,
    violations: Arc<Mutex<Vec<String>>>,
    senders: Option<Senders<F>>,
    gate: Arc<Gate>,
    /// The last step of the current hold.
    hold_until: Option<usize>,
    step: usize,
    scratch: Vec<u8>,
}

fn run_with<F>(schedule: &Schedule, options: &Options) -> Result<Outcome, String>
where
    F: WireFraming,
    F::Message: Send,
{
    let config = Config {
        max_frame_len: MAX_FRAME,
        read_chunk: schedule.tuning.read_chunk as usize,
        high_watermark: schedule.tuning.high_watermark as usize,
        low_watermark: (schedule.tuning.high_watermark as usize / 4).max(1),
        fairness_budget: schedule.tuning.fairness_budget as usize,
        idle_timeout: None,
        // Generous bounds: a passing run never reaches them (clients read everything and close
        // at EOF), so any unsent byte is a real failure to flush.
        shutdown_timeout: Duration::from_secs(60),
        close_linger: Duration::from_secs(60),
        send_buffer_size: schedule.tuning.server_sndbuf.map(|b| b as usize),
        known_bad: options.known_bad,
        ..Config::default()
    };
    let observed = Arc::new(Observed {
        view: Mutex::new(View {
            conns: Vec::new(),
            by_id: HashMap::new(),
            violations: Vec::new(),
        }),
        changed: Condvar::new(),
    });
    let recorder = Recorder {
        observed: Arc::clone(&observed),
    };
    let gate = Arc::new(Gate::default());
    let hook_gate = Arc::clone(&gate);
    // A safety net only: the executor releases every hold long before this.
    let hold_bound = options.stall * 4;
    // The server is built on its own thread (it need not be `Send`), which reports back its
    // address and handle.
    let (ready_tx, ready_rx) = mpsc::channel::<Result<Ready<F>, String>>();
    let loops = options.loops;
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let loop_thread = std::thread::Builder::new()
        .name("refloop-schedule-loop".into())
        .spawn(move || {
            if loops > 1 {
                return run_group(
                    loops, config, recorder, hook_gate, hold_bound, ready_tx, done_tx,
                );
            }
            let built = Server::bind("127.0.0.1:0", F::build(), config)
                .map_err(|e| format!("cannot bind the server: {e}"))
                .and_then(|server| {
                    let addr = server
                        .local_addr()
                        .map_err(|e| format!("no local address: {e}"))?;
                    Ok((server, addr))
                });
            let (mut server, addr) = match built {
                Ok(built) => built,
                Err(e) => {
                    // Ignored: the executor waits on this channel; if it is gone there is no
                    // one left to tell.
                    let _ = ready_tx.send(Err(e));
                    return Ok(());
                }
            };
            server.set_wake_hook(move || hook_gate.pass(hold_bound));
            // Ignored as above.
            let _ = ready_tx.send(Ok((addr, server.handle(), None)));
            let result = server.run(recorder);
            // Ignored: the executor may have given up waiting; the result is still joined.
            let _ = done_tx.send(());
            result.map(drop)
        })
        .map_err(|e| format!("cannot spawn the loop thread: {e}"))?;
    let (addr, handle, group) = match ready_rx.recv() {
        Ok(Ok(ready)) => ready,
        Ok(Err(e)) => {
            // Ignored: the thread returned right after reporting the error.
            let _ = loop_thread.join();
            return Err(e);
        }
        Err(_) => {
            return Err(match loop_thread.join() {
                Err(_) => "the loop thread panicked while binding".to_string(),
                Ok(_) => "the loop thread exited without binding".to_string(),
            })
        }
    };

    let log = Arc::new(Mutex::new(Vec::new()));
    let violations = Arc::new(Mutex::new(Vec::new()));
    let senders = spawn_senders::<F>(&log, &violations)?;
    let mut run = Run {
        schedule,
        options,
        addr,
        handle,
        group,
        observed,
        incs: Vec::new(),
        latest: vec![None; usize::from(super::MAX_CLIENTS)],
        claimed: HashSet::new(),
        log,
        violations,
        senders: Some(senders),
        gate,
        hold_until: None,
        step: 0,
        scratch: vec![0; 64 * 1024],
    };
    let played = run.play();
    // Whatever happened, stop the senders, the loop and the clients before judging.
    run.join_senders();
    let finished = match played {
        Ok(()) => run.finish(),
        Err(e) => Err(e),
    };
    let stopped = run.stop_loop(loop_thread, &done_rx);
    for inc in &mut run.incs {
        inc.client = None;
    }
    finished?;
    let stats = stopped?;
    run.check(stats)
}

/// What the loop thread reports once it is listening: the address, the loop handle and, for a
/// group, every loop's handle.
type Ready<F> = (SocketAddr, LoopHandle<F>, Option<refloop::LoopsHandle<F>>);

/// The loop thread's body for `loops > 1`: a `Loops` group on `SO_REUSEPORT`, every loop with
/// the hold gate as its wake hook (whichever loop wakes first is the one held).
fn run_group<F>(
    loops: usize,
    config: Config,
    recorder: Recorder<F>,
    gate: Arc<Gate>,
    hold_bound: Duration,
    ready_tx: mpsc::Sender<Result<Ready<F>, String>>,
    done_tx: mpsc::Sender<()>,
) -> std::io::Result<()>
where
    F: WireFraming,
    F::Message: Send,
{
    let built = refloop::Loops::bind(
        "127.0.0.1:0",
        loops,
        refloop::Sharing::ReusePort,
        F::build(),
        config,
    )
    .map_err(|e| format!("cannot bind the loops: {e}"))
    .and_then(|group| {
        let addr = group
            .local_addr()
            .map_err(|e| format!("no local address: {e}"))?;
        Ok((group, addr))
    });
    let (mut group, addr) = match built {
        Ok(built) => built,
        Err(e) => {
            // Ignored: the executor waits on this channel; if it is gone there is no one left
            // to tell.
            let _ = ready_tx.send(Err(e));
            return Ok(());
        }
    };
    for i in 0..loops {
        let gate = Arc::clone(&gate);
        group.set_wake_hook(i, move || gate.pass(hold_bound));
    }
    let handles = group.handle();
    let first = handles
        .loop_handle(0)
        .expect("a group has a loop 0")
        .clone();
    // Ignored as in the single-loop body.
    let _ = ready_tx.send(Ok((addr, first, Some(handles))));
    let result = group.run(|_| Recorder {
        observed: Arc::clone(&recorder.observed),
    });
    // Ignored: the executor may have given up waiting; the result is still joined.
    let _ = done_tx.send(());
    result.map(drop)
}

/// The counters of several loops, added up.
fn sum_stats(all: &[Stats]) -> Stats {
    let mut sum = Stats::default();
    for s in all {
        sum.accepted += s.accepted;
        sum.connected += s.connected;
        sum.closed += s.closed;
        sum.accept_errors += s.accept_errors;
        sum.stale_events += s.stale_events;
        sum.wakeups += s.wakeups;
        sum.eintr_retries += s.eintr_retries;
        sum.requeued += s.requeued;
        sum.partial_writes += s.partial_writes;
        sum.write_calls += s.write_calls;
        sum.read_calls += s.read_calls;
        sum.turns += s.turns;
        sum.signals += s.signals;
        sum.timer_entries += s.timer_entries;
        sum.empty_accepts += s.empty_accepts;
    }
    sum
}

fn spawn_senders<F>(
    log: &Arc<Mutex<Vec<CrossRecord>>>,
    violations: &Arc<Mutex<Vec<String>>>,
) -> Result<Senders<F>, String>
where
    F: WireFraming,
    F::Message: Send,
{
    let mut jobs = Vec::new();
    let mut threads = Vec::new();
    for t in 1..=SENDER_THREADS {
        let (tx, rx) = mpsc::channel::<Job<F>>();
        let log = Arc::clone(log);
        let violations = Arc::clone(violations);
        let thread = std::thread::Builder::new()
            .name(format!("refloop-schedule-sender-{t}"))
            .spawn(move || {
                for job in rx {
                    perform(job, &log, &violations);
                }
            })
            .map_err(|e| format!("cannot spawn a sender thread: {e}"))?;
        jobs.push(tx);
        threads.push(thread);
    }
    Ok(Senders { jobs, threads })
}

impl<F> Run<'_, F>
where
    F: WireFraming,
    F::Message: Send,
{
    fn play(&mut self) -> Result<(), String> {
        let steps = &self.schedule.steps;
        for (i, step) in steps.iter().enumerate() {
            self.step = i;
            self.apply(step)
                .map_err(|e| format!("step {i} ({step}): {e}"))?;
            self.pump()
                .map_err(|e| format!("after step {i} ({step}): {e}"))?;
        }
        self.step = steps.len();
        Ok(())
    }

    fn release_hold(&mut self) {
        self.hold_until = None;
        self.gate.release();
    }

    /// Connects a new incarnation of `slot`.
    fn connect(&mut self, slot: u8) -> Result<usize, String> {
        let client = Client::connect(self.addr, self.options.stall)
            .map_err(|e| format!("c{slot} cannot connect: {e}"))?;
        let local = client
            .local_addr()
            .map_err(|e| format!("getsockname failed: {e}"))?;
        let number = self.incs.iter().filter(|i| i.slot == slot).count() as u16;
        self.incs.push(Inc {
            slot,
            number,
            local,
            client: Some(client),
            state: State::Open,
            pending: None,
            malformed: None,
            sent: Vec::new(),
            parser: Parser::new(F::WIRE),
            checked: 0,
            paused_until: 0,
            read_buf: self.scratch.len(),
            ended: None,
            server: None,
            cross_seq: [0; SENDER_THREADS as usize + 1],
        });
        let at = self.incs.len() - 1;
        self.latest[usize::from(slot)] = Some(at);
        Ok(at)
    }

    /// The slot's usable incarnation, connecting a new one if there is none.
    fn usable(&mut self, slot: u8) -> Result<usize, String> {
        match self.latest[usize::from(slot)] {
            Some(at) if self.incs[at].usable() => Ok(at),
            _ => self.connect(slot),
        }
    }

    /// The slot's latest incarnation, whatever its state, connecting one if there is none.
    fn latest(&mut self, slot: u8) -> Result<usize, String> {
        match self.latest[usize::from(slot)] {
            Some(at) => Ok(at),
            None => self.connect(slot),
        }
    }

    fn apply(&mut self, step: &Step) -> Result<(), String> {
        match *step {
            Step::Connect { client } => {
                self.usable(client)?;
            }
            Step::Send {
                client,
                len,
                ref chunks,
                yields,
            } => {
                let at = self.usable(client)?;
                let inc = &mut self.incs[at];
                let seq = inc.sent.len() as u32;
                let tag = Tag {
                    origin: Origin::Client,
                    client,
                    incarnation: inc.number,
                    thread: 0,
                    seq,
                };
                let payload = wire::payload(tag, len as usize);
                let mut bytes = Vec::new();
                wire::encode(F::WIRE, &payload, seq, &mut bytes);
                inc.sent.push(payload);
                let pieces = cut(bytes, chunks);
                let client = inc
                    .client
                    .as_mut()
                    .expect("a usable incarnation has a socket");
                client.send_pieces(pieces, yields);
            }
            Step::ReadSmall { client, buf } => {
                let at = self.usable(client)?;
                self.incs[at].read_buf = usize::from(buf.max(1));
            }
            Step::Pause { client, steps } => {
                let at = self.usable(client)?;
                self.incs[at].paused_until = self.step + 1 + usize::from(steps);
            }
            Step::HalfClose { client } => {
                let at = self.usable(client)?;
                self.incs[at].pending = Some(Pending::HalfClose);
            }
            Step::Close { client } => {
                let at = self.usable(client)?;
                self.incs[at].pending = Some(Pending::Close);
            }
            Step::Reset { client } => {
                let at = self.usable(client)?;
                let inc = &mut self.incs[at];
                let c = inc
                    .client
                    .take()
                    .expect("a usable incarnation has a socket");
                c.set_linger_zero()
                    .map_err(|e| format!("SO_LINGER failed: {e}"))?;
                drop(c);
                inc.state = State::Reset;
            }
            Step::CrossSend {
                client,
                thread,
                count,
                len,
                stale,
            } => {
                let latest = self.latest(client)?;
                let previous = self.incs[..latest].iter().rposition(|i| i.slot == client);
                let at = match previous {
                    Some(previous) if stale => {
                        // Pin down the fd-reuse ordering: the server has seen the old
                        // connection go (when its client closed it) and the new one arrive.
                        let sid = self.match_server(previous)?;
                        if matches!(self.incs[previous].state, State::Closed | State::Reset) {
                            let name = self.incs[previous].name();
                            self.wait_view(&format!("the server to see {name} go"), |view| {
                                view.conns[sid].ended.is_some().then_some(())
                            })?;
                        }
                        self.match_server(latest)?;
                        previous
                    }
                    _ => latest,
                };
                let sid = self.match_server(at)?;
                let inc = &mut self.incs[at];
                let t = usize::from(thread.min(SENDER_THREADS));
                let payloads = (0..count)
                    .map(|_| {
                        let seq = inc.cross_seq[t];
                        inc.cross_seq[t] += 1;
                        let tag = Tag {
                            origin: Origin::Cross,
                            client,
                            incarnation: inc.number,
                            thread: t as u8,
                            seq,
                        };
                        wire::payload(tag, len.max(1) as usize)
                    })
                    .collect();
                let view = lock(&self.observed.view);
                let server = &view.conns[sid];
                // Odd counts go through the loop handle by id, even ones through the handle.
                let route = if count % 2 == 1 {
                    Route::ById(self.handle.clone(), server.id)
                } else {
                    Route::Handle(server.handle.clone())
                };
                drop(view);
                let job = Job {
                    inc: at,
                    thread: t as u8,
                    route,
                    payloads,
                };
                if t == 0 {
                    perform(job, &self.log, &self.violations);
                } else {
                    let senders = self.senders.as_ref().expect("senders run until the end");
                    senders.jobs[t - 1]
                        .send(job)
                        .map_err(|_| "a sender thread died".to_string())?;
                }
            }
            Step::Malformed { client, kind } => {
                let at = self.usable(client)?;
                let inc = &mut self.incs[at];
                inc.malformed = Some(kind);
                let bytes = wire::malformed(F::WIRE, kind);
                let client = inc
                    .client
                    .as_mut()
                    .expect("a usable incarnation has a socket");
                client.send_pieces(vec![bytes], false);
            }
            Step::ShrinkBuffer {
                client,
                which,
                bytes,
            } => {
                let at = self.usable(client)?;
                let c = self.incs[at]
                    .client
                    .as_ref()
                    .expect("a usable incarnation has a socket");
                c.shrink_buffer(which, bytes)
                    .map_err(|e| format!("setsockopt failed: {e}"))?;
            }
            Step::HoldLoop { client, steps } => {
                if self.hold_until.is_some() {
                    return Ok(());
                }
                let at = self.usable(client)?;
                // Start from a loop that has accepted every client so far: a held loop cannot
                // accept, and a later step needing a match would end the hold at once.
                for other in 0..self.incs.len() {
                    self.match_server(other)?;
                }
                let sid = self.incs[at].server.expect("matched just above");
                self.gate.arm();
                let handle = lock(&self.observed.view).conns[sid].handle.clone();
                let inc = &mut self.incs[at];
                let seq = inc.cross_seq[0];
                inc.cross_seq[0] += 1;
                let tag = Tag {
                    origin: Origin::Cross,
                    client,
                    incarnation: inc.number,
                    thread: 0,
                    seq,
                };
                let job = Job {
                    inc: at,
                    thread: 0,
                    route: Route::Handle(handle),
                    payloads: vec![wire::payload(tag, 64)],
                };
                perform(job, &self.log, &self.violations);
                let accepted = lock(&self.log)
                    .last()
                    .is_some_and(|r| r.outcome == SendOutcome::Accepted);
                // An accepted send wakes the loop, which then holds in the hook. If a wake-up
                // was already under way and drained this message with it, no new one comes:
                // after a short bound the steps go on unheld (not a failure).
                if accepted && self.gate.wait_held(HOLD_TAKE_BOUND) {
                    self.hold_until = Some(self.step + usize::from(steps));
                } else {
                    self.gate.release();
                }
            }
            Step::Sync { client } => {
                let at = self.latest(client)?;
                let sid = self.match_server(at)?;
                let inc = &self.incs[at];
                if matches!(inc.state, State::Closed | State::Reset) {
                    let name = inc.name();
                    self.wait_view(&format!("the server to see {name} go"), |view| {
                        view.conns[sid].ended.is_some().then_some(())
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Waits until `ready` returns a value, for at most the stall bound (ending any hold
    /// first: a held loop cannot make progress).
    fn wait_view<T>(
        &mut self,
        what: &str,
        mut ready: impl FnMut(&View<F>) -> Option<T>,
    ) -> Result<T, String> {
        self.release_hold();
        let deadline = Instant::now() + self.options.stall;
        let mut view = lock(&self.observed.view);
        loop {
            if let Some(v) = ready(&view) {
                return Ok(v);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "stalled: waited {:?} for {what}",
                    self.options.stall
                ));
            }
            view = self
                .observed
                .changed
                .wait_timeout(view, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The index of the server connection of incarnation `at`, waiting for its `on_connect`.
    fn match_server(&mut self, at: usize) -> Result<usize, String> {
        if let Some(sid) = self.incs[at].server {
            return Ok(sid);
        }
        let local = self.incs[at].local;
        // An earlier client that had the same local port (the kernel may hand out a reset
        // client's port again) was accepted first: match it first, so each takes its own.
        if let Some(earlier) = self.incs[..at]
            .iter()
            .position(|i| i.local == local && i.server.is_none())
        {
            self.match_server(earlier)?;
        }
        let name = self.incs[at].name();
        let claimed = self.claimed.clone();
        let sid = self.wait_view(&format!("the server to accept {name} ({local})"), |view| {
            view.conns
                .iter()
                .enumerate()
                .find(|(i, c)| c.peer == Some(local) && !claimed.contains(i))
                .map(|(i, _)| i)
        })?;
        self.claimed.insert(sid);
        self.incs[at].server = Some(sid);
        Ok(sid)
    }

    /// After each step: flush outboxes, carry out deferred closes, read what unpaused clients
    /// may read, and check every new frame's tag.
    fn pump(&mut self) -> Result<(), String> {
        for at in 0..self.incs.len() {
            self.service(at, false)?;
        }
        Ok(())
    }

    /// Services one incarnation once; with `drain`, reads until `EAGAIN` with a full buffer.
    /// Returns whether anything moved.
    fn service(&mut self, at: usize, drain: bool) -> Result<bool, String> {
        let step = self.step;
        let inc = &mut self.incs[at];
        let Some(client) = inc.client.as_mut() else {
            return Ok(false);
        };
        let mut moved = false;
        let had_unsent = client.has_unsent();
        let flushed = client.flush();
        moved |= had_unsent && (flushed || client.write_failed());
        if flushed {
            match inc.pending.take() {
                Some(Pending::HalfClose) => {
                    // An error means the server already dropped the connection; the checks
                    // then see that from the server's side.
                    let _ = client.half_close();
                    inc.state = State::HalfClosed;
                    moved = true;
                }
                Some(Pending::Close) => {
                    inc.client = None;
                    inc.state = State::Closed;
                    return Ok(true);
                }
                None => {}
            }
        }
        let Some(client) = inc.client.as_mut() else {
            return Ok(moved);
        };
        if inc.ended.is_some() || (!drain && step < inc.paused_until) {
            return Ok(moved);
        }
        let limit = if drain {
            self.scratch.len()
        } else {
            inc.read_buf.min(self.scratch.len())
        };
        loop {
            match client.read_once(&mut self.scratch[..limit]) {
                ReadOutcome::Data(n) => {
                    moved = true;
                    if let Err(e) = inc.parser.push(&self.scratch[..n]) {
                        return Err(format!("{} received a broken stream: {e}", inc.name()));
                    }
                    check_new_frames(&inc.parser, &mut inc.checked, inc.slot, inc.number)?;
                    if !drain {
                        break;
                    }
                }
                ReadOutcome::WouldBlock => break,
                end @ (ReadOutcome::Eof | ReadOutcome::Reset) => {
                    inc.ended = Some(end);
                    moved = true;
                    break;
                }
            }
        }
        Ok(moved)
    }

    fn join_senders(&mut self) {
        if let Some(senders) = self.senders.take() {
            drop(senders.jobs);
            for t in senders.threads {
                if t.join().is_err() {
                    lock(&self.violations).push("a sender thread panicked".into());
                }
            }
        }
    }

    /// Cross-thread messages accepted for incarnation `at`, by thread.
    fn accepted_cross(&self, at: usize) -> Vec<Vec<Vec<u8>>> {
        let mut by_thread = vec![Vec::new(); usize::from(SENDER_THREADS) + 1];
        for r in lock(&self.log).iter() {
            if r.inc == at && r.outcome == SendOutcome::Accepted {
                by_thread[usize::from(r.thread)].push(r.payload.clone());
            }
        }
        by_thread
    }

    /// Whether the final drain is done with incarnation `at`.
    fn settled(&self, at: usize, cross_counts: &[usize]) -> bool {
        let inc = &self.incs[at];
        match inc.state {
            State::Closed | State::Reset => {
                let view = lock(&self.observed.view);
                inc.server
                    .is_some_and(|sid| view.conns[sid].ended.is_some())
            }
            State::HalfClosed => inc.ended.is_some(),
            State::Open if inc.malformed.is_some() => inc.ended.is_some(),
            State::Open => {
                inc.pending.is_none()
                    && inc.parser.partial() == 0
                    && inc.parser.frames().len() >= inc.sent.len() + cross_counts[at]
            }
        }
    }

    /// Plays out everything the schedule started: flushes, deferred closes, reads every echo,
    /// and waits for the server to see every close.
    fn finish(&mut self) -> Result<(), String> {
        self.release_hold();
        let cross_counts: Vec<usize> = (0..self.incs.len())
            .map(|at| self.accepted_cross(at).iter().map(Vec::len).sum())
            .collect();
        for at in 0..self.incs.len() {
            if matches!(self.incs[at].state, State::Closed | State::Reset) {
                self.match_server(at)?;
            }
        }
        let mut last_progress = Instant::now();
        loop {
            let mut moved = false;
            let mut waiting = Vec::new();
            for at in 0..self.incs.len() {
                moved |= self.service(at, true)?;
                let inc = &mut self.incs[at];
                // A client whose server end closed has nothing more to read: closing it lets a
                // lingering server connection finish.
                if inc.ended.is_some() && (inc.state != State::Open || inc.malformed.is_some()) {
                    inc.client = None;
                }
                if inc.state == State::Closed && inc.client.is_none() && inc.server.is_none() {
                    self.match_server(at)?;
                }
                if !self.settled(at, &cross_counts) {
                    waiting.push(at);
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if moved {
                last_progress = Instant::now();
            } else if last_progress.elapsed() >= self.options.stall {
                let mut why = String::new();
                for &at in &waiting {
                    let inc = &self.incs[at];
                    let _ = write!(
                        why,
                        "\n  {} ({:?}{}): sent {} message(s), {} cross accepted, received {} frame(s) + {} partial byte(s), client end {:?}",
                        inc.name(),
                        inc.state,
                        if inc.malformed.is_some() { ", malformed" } else { "" },
                        inc.sent.len(),
                        cross_counts[at],
                        inc.parser.frames().len(),
                        inc.parser.partial(),
                        inc.ended,
                    );
                }
                return Err(format!(
                    "stalled: no progress for {:?} while draining{why}",
                    self.options.stall
                ));
            }
            self.wait_clients(&waiting);
        }
    }

    /// Waits (up to 10 ms) until a waiting client can read or write.
    fn wait_clients(&self, waiting: &[usize]) {
        let clients: Vec<(&Client, bool)> = waiting
            .iter()
            .filter_map(|&at| self.incs[at].client.as_ref().map(|c| (c, c.has_unsent())))
            .collect();
        match clients.is_empty() {
            false => {
                Client::wait_any(&clients, Duration::from_millis(10));
            }
            true => {
                // Only server-side events are awaited: wait on the handler's signal.
                let view = lock(&self.observed.view);
                let _ = self
                    .observed
                    .changed
                    .wait_timeout(view, Duration::from_millis(10))
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    /// Shuts the loop down, reads every client to EOF and closes it, and joins the loop thread.
    fn stop_loop(
        &mut self,
        loop_thread: JoinHandle<std::io::Result<()>>,
        done: &mpsc::Receiver<()>,
    ) -> Result<Stats, String> {
        self.release_hold();
        self.handle.shutdown();
        let mut last_progress = Instant::now();
        let mut exited = false;
        while !exited {
            let mut moved = false;
            for at in 0..self.incs.len() {
                match self.service(at, true) {
                    Ok(m) => moved |= m,
                    Err(e) => {
                        // Reported by `check`; the loop is still shut down and joined first.
                        lock(&self.violations).push(e);
                        self.incs[at].client = None;
                        moved = true;
                    }
                }
                let inc = &mut self.incs[at];
                if inc.ended.is_some() && inc.client.is_some() {
                    inc.client = None;
                    moved = true;
                }
            }
            match done.recv_timeout(Duration::from_millis(if moved { 0 } else { 5 })) {
                Ok(()) => exited = true,
                Err(mpsc::RecvTimeoutError::Disconnected) => exited = true,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if moved {
                last_progress = Instant::now();
            } else if !exited && last_progress.elapsed() >= self.options.stall {
                // The loop is stuck (a lost wake-up also loses the shutdown command): park it.
                for inc in &mut self.incs {
                    inc.client = None;
                }
                let parked = std::thread::spawn(move || {
                    // Ignored: this loop failed its run already; it is joined only if it ever
                    // finishes.
                    let _ = loop_thread.join();
                });
                lock(&STUCK_LOOPS).push(parked);
                return Err(format!(
                    "the loop did not shut down within {:?} of LoopHandle::shutdown",
                    self.options.stall
                ));
            }
        }
        for inc in &mut self.incs {
            inc.client = None;
        }
        let stats = match &self.group {
            // Every loop's counters, summed: the invariants and reach figures are per run.
            Some(group) => sum_stats(&group.stats()),
            None => self.handle.stats(),
        };
        match loop_thread.join() {
            Ok(Ok(())) => Ok(stats),
            Ok(Err(e)) => Err(format!("Server::run failed: {e}")),
            Err(_) => Err("the loop thread panicked".to_string()),
        }
    }

    /// Checks every invariant on the finished run.
    fn check(&mut self, stats: Stats) -> Result<Outcome, String> {
        let violations = std::mem::take(&mut *lock(&self.violations));
        if let Some(v) = violations.first() {
            return Err(v.clone());
        }
        let view = lock(&self.observed.view);
        if let Some(v) = view.violations.first() {
            return Err(format!("handler saw: {v}"));
        }
        // Every server connection belongs to exactly one incarnation: those matched during the
        // run keep their match, the rest take the first free connection from their address
        // (accept order is connect order).
        let mut owner: HashMap<usize, usize> = HashMap::new();
        for (at, inc) in self.incs.iter().enumerate() {
            if let Some(sid) = inc.server {
                if owner.insert(sid, at).is_some() {
                    return Err(format!(
                        "two clients matched server connection {}",
                        view.conns[sid].id
                    ));
                }
            }
        }
        for (at, inc) in self.incs.iter_mut().enumerate() {
            if inc.server.is_some() {
                continue;
            }
            let sid = view
                .conns
                .iter()
                .enumerate()
                .find(|(i, c)| c.peer == Some(inc.local) && !owner.contains_key(i))
                .map(|(i, _)| i)
                .ok_or_else(|| {
                    format!("the server never reported {} ({})", inc.name(), inc.local)
                })?;
            inc.server = Some(sid);
            owner.insert(sid, at);
        }
        if let Some(stray) = view
            .conns
            .iter()
            .enumerate()
            .find(|(i, _)| !owner.contains_key(i))
        {
            return Err(format!(
                "the server reported {} from {:?}, which no client made",
                stray.1.id, stray.1.peer
            ));
        }
        let n = self.incs.len() as u64;
        if stats.accepted != n || stats.closed != n {
            return Err(format!(
                "{n} connection(s) made, but the loop counted {} accepted and {} closed",
                stats.accepted, stats.closed
            ));
        }
        let log = lock(&self.log);
        let mut reach = Reach {
            partial_write: stats.partial_writes > 0,
            requeued: stats.requeued > 0,
            held_wakeup: self.gate.ever_held(),
            ..Reach::default()
        };
        for r in log.iter() {
            match r.outcome {
                SendOutcome::Full => reach.full = true,
                SendOutcome::Closed => reach.stale_send = true,
                SendOutcome::Accepted => {}
            }
        }
        for (at, inc) in self.incs.iter().enumerate() {
            let server = &view.conns[inc.server.expect("matched above")];
            let mut cross: Vec<Vec<&[u8]>> = vec![Vec::new(); usize::from(SENDER_THREADS) + 1];
            let mut cross_bytes = 0;
            for r in log
                .iter()
                .filter(|r| r.inc == at && r.outcome == SendOutcome::Accepted)
            {
                cross[usize::from(r.thread)].push(&r.payload);
                cross_bytes += encoded_len(F::WIRE, r.payload.len());
            }
            let ctx = || format!("{} ({:?}, server {})", inc.name(), inc.state, server.id);
            check_incarnation(inc, server, &cross, cross_bytes, &mut reach)
                .map_err(|e| format!("{}: {e}", ctx()))?;
        }
        // After the run every handle refuses sends: no connection state outlives the loop.
        for c in view.conns.iter() {
            let mut h = c.handle.clone();
            match h.send(F::message(b"after the end".to_vec())) {
                Err(SendError::Closed(_)) => {}
                other => {
                    return Err(format!(
                        "a handle to {} still accepts sends after the loop ended: {:?}",
                        c.id,
                        other.map_err(|e| e.to_string())
                    ))
                }
            }
            let mut lh = self.handle.clone();
            match lh.send_to(c.id, F::message(b"after the end".to_vec())) {
                Err(SendError::Closed(_)) => {}
                other => {
                    return Err(format!(
                        "send_to({}) after the loop ended gave {:?}, not Closed",
                        c.id,
                        other.map_err(|e| e.to_string())
                    ))
                }
            }
        }
        Ok(Outcome {
            reach,
            stats,
            connections: self.incs.len(),
            cross_sends: log.len(),
            fds_checked: false,
        })
    }
}

/// Fails at the first frame that names another connection (or is corrupt).
pub(crate) fn check_new_frames(
    parser: &Parser,
    checked: &mut usize,
    slot: u8,
    number: u16,
) -> Result<(), String> {
    let name = format!("c{slot}#{number}");
    let frames = parser.frames();
    for frame in &frames[*checked..] {
        match wire::parse_tag(frame) {
            Ok(None) => {}
            Ok(Some(tag)) => {
                if tag.client != slot || tag.incarnation != number {
                    return Err(format!(
                        "{name} received a frame of c{}#{} ({:?} seq {}): bytes from another connection",
                        tag.client,
                        tag.incarnation,
                        tag.origin,
                        tag.seq
                    ));
                }
            }
            Err(e) => return Err(format!("{name} received a corrupt frame: {e}")),
        }
    }
    *checked = frames.len();
    Ok(())
}

/// The per-connection invariants (1 to 4 of the module docs).
fn check_incarnation<F: WireFraming>(
    inc: &Inc,
    server: &ServerConn<F>,
    cross: &[Vec<&[u8]>],
    cross_bytes: u64,
    reach: &mut Reach,
) -> Result<(), String> {
    let Some((end, text, disconnect)) = &server.ended else {
        return Err("the server never reported its disconnect".to_string());
    };
    let end = *end;
    match end {
        Ending::Reset => reach.rst = true,
        Ending::FramingTooLong | Ending::FramingMalformed => reach.framing_error = true,
        _ => {}
    }
    // What the server decoded is what the client sent, in order.
    let complete = matches!(inc.state, State::Open | State::HalfClosed);
    if complete {
        if server.messages != inc.sent {
            return Err(format!(
                "the server decoded {} message(s) ({}), the client sent {} ({})",
                server.messages.len(),
                describe(&server.messages),
                inc.sent.len(),
                describe(&inc.sent)
            ));
        }
    } else if !inc.sent.starts_with(&server.messages) {
        // Closes wait for the outbox, so even a closed or reset client's server end decodes
        // only whole messages it sent.
        return Err(format!(
            "the server decoded messages ({}) that are not a prefix of what the client sent ({})",
            describe(&server.messages),
            describe(&inc.sent)
        ));
    }
    // The reason matches what the client did.
    let allowed: &[Ending] = match (inc.state, inc.malformed) {
        (State::Open, Some(Malformation::TooLong)) => &[Ending::FramingTooLong],
        (State::Open, Some(Malformation::Garbage)) => match F::WIRE {
            Wire::LengthPrefixed => &[Ending::FramingTooLong],
            Wire::Lines => &[Ending::FramingMalformed],
        },
        (State::Open, None) => &[Ending::Shutdown],
        (State::HalfClosed, _) => &[Ending::PeerClosed],
        (State::Closed, _) => &[Ending::PeerClosed, Ending::Reset],
        (State::Reset, _) => &[Ending::Reset],
    };
    if !allowed.contains(&end) {
        return Err(format!(
            "disconnected with {text}, expected one of {allowed:?}"
        ));
    }
    // Exactly once: received + unsent = accepted, for clients that read to the end.
    let accepted = server.echoed_bytes + cross_bytes;
    let received = inc.parser.bytes();
    let unsent = disconnect.unsent_bytes as u64;
    if complete {
        if received + unsent != accepted {
            return Err(format!(
                "received {received} B + unsent {unsent} B != accepted {accepted} B \
                 (echoes {} B, cross-thread {cross_bytes} B): {text}",
                server.echoed_bytes
            ));
        }
        if unsent != 0 {
            return Err(format!(
                "{unsent} byte(s) were never flushed to a client that read everything: {text}"
            ));
        }
    } else if received + unsent > accepted {
        return Err(format!(
            "received {received} B + unsent {unsent} B > accepted {accepted} B: {text}"
        ));
    }
    // Order: echoes are the decoded messages, cross-thread messages keep each thread's order.
    let mut echoes = Vec::new();
    let mut by_thread: Vec<Vec<&[u8]>> = vec![Vec::new(); cross.len()];
    for frame in inc.parser.frames() {
        match wire::parse_tag(frame) {
            Ok(Some(tag)) if tag.origin == Origin::Cross => {
                by_thread[usize::from(tag.thread).min(cross.len() - 1)].push(frame)
            }
            _ => echoes.push(frame.as_slice()),
        }
    }
    let decoded: Vec<&[u8]> = server.messages.iter().map(Vec::as_slice).collect();
    if !decoded.starts_with(&echoes) || complete && echoes.len() != decoded.len() {
        return Err(format!(
            "echoes arrived as {} but the server decoded {}",
            describe(&echoes),
            describe(&decoded)
        ));
    }
    for (t, got) in by_thread.iter().enumerate() {
        if !cross[t].starts_with(got) || complete && got.len() != cross[t].len() {
            return Err(format!(
                "cross-thread messages of thread {t} arrived as {} but {} were accepted",
                describe(got),
                describe(&cross[t])
            ));
        }
    }
    if inc.state == State::HalfClosed && inc.malformed.is_none() {
        reach.half_close = true;
    }
    Ok(())
}

/// A short description of a list of payloads: count and the tags of the first few.
pub(crate) fn describe<T: AsRef<[u8]>>(payloads: &[T]) -> String {
    let mut out = format!("{} [", payloads.len());
    for (i, p) in payloads.iter().take(4).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let p = p.as_ref();
        match wire::parse_tag(p) {
            Ok(Some(t)) => {
                let _ = write!(
                    out,
                    "{:?} c{}#{} t{} s{} {}B",
                    t.origin,
                    t.client,
                    t.incarnation,
                    t.thread,
                    t.seq,
                    p.len()
                );
            }
            Ok(None) => out.push_str("empty"),
            Err(_) => {
                let _ = write!(out, "{} raw B", p.len());
            }
        }
    }
    if payloads.len() > 4 {
        out.push_str(", ..");
    }
    out.push(']');
    out
}

/// Cuts `bytes` into pieces whose sizes cycle through `chunks` (zeros read as one); one piece
/// when `chunks` is empty.
pub(crate) fn cut(bytes: Vec<u8>, chunks: &[u16]) -> Vec<Vec<u8>> {
    if chunks.is_empty() || bytes.is_empty() {
        return vec![bytes];
    }
    let mut pieces = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < bytes.len() {
        let size = usize::from(chunks[i % chunks.len()].max(1));
        let end = (at + size).min(bytes.len());
        pieces.push(bytes[at..end].to_vec());
        at = end;
        i += 1;
    }
    pieces
}
