//! Schedules over the simulated kernel: the real loop, one thread, virtual time, injected
//! faults, and config values at their edges.
//!
//! A [`SimCase`] is a [`Schedule`]'s steps ([`SimStep::Base`], the very [`Step`]s the real
//! executor plays) plus steps only a simulated kernel allows, the loop's [`Knobs`] and the
//! kernel's [`KernelKnobs`].
//! The real executor never sees a [`SimStep`]: the sim-only steps live in this wrapper, so the
//! real executor's matches and its proptest strategy are untouched, and every [`Schedule`]
//! runs here too ([`SimCase::from_schedule`]).
//!
//! - [`exec::run`] plays a case deterministically: [`Server::with_os`](refloop::Server::with_os)
//!   over a [`refloop::sim::Kernel`], and a driver, called from inside the loop's
//!   `epoll_wait`, that plays the clients, the handles and the clock. It checks the invariants
//!   listed in [`exec`].
//! - [`SimCase::from_seed`] builds a case from a `u64` (the [`arbitrary::Arbitrary`] impl over
//!   seeded bytes), so a seed names a case completely: `REFLOOP_SIM_SEED=<seed> cargo +stable
//!   test -p refloop-integration --release --test sim_replay -- --nocapture` replays it.
//! - [`strategy::case`] generates cases for proptest; the `sim_schedule` fuzz target decodes
//!   them from fuzzer bytes with [`SimCase::from_fuzz_bytes`].
//! - [`hunt`] is the explorer: seeds in order from a base seed, greedy shrinking, replays.

pub mod exec;
pub mod hunt;
pub mod strategy;

mod arbitrary_impl;

use std::fmt;
use std::time::Duration;

use crate::schedule::{Schedule, Step, Tuning, Wire};

/// The loop's config knobs a case sets; [`exec`] checks each one's documented promise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Knobs {
    /// `Config::read_chunk`.
    pub read_chunk: u32,
    /// `Config::fairness_budget`.
    pub fairness_budget: u32,
    /// `Config::high_watermark`.
    pub high_watermark: u32,
    /// `Config::low_watermark` (0 is invalid: the case then checks that the server refuses
    /// the config, naming the field).
    pub low_watermark: u32,
    /// `Config::idle_timeout` (`Duration::MAX` means never).
    pub idle_timeout: Option<Duration>,
    /// `Config::close_linger`.
    pub close_linger: Duration,
    /// `Config::shutdown_timeout`.
    pub shutdown_timeout: Duration,
    /// `Config::max_connections`.
    pub max_connections: u32,
    /// `Config::send_buffer_size` of the server's sockets (exact in the sim).
    pub server_sndbuf: Option<u32>,
}

impl Knobs {
    /// The knobs the real executor uses for a [`Tuning`] (idle timeout off, generous bounds).
    pub fn from_tuning(t: &Tuning) -> Knobs {
        Knobs {
            read_chunk: t.read_chunk,
            fairness_budget: t.fairness_budget,
            high_watermark: t.high_watermark,
            low_watermark: (t.high_watermark / 4).max(1),
            idle_timeout: None,
            close_linger: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(60),
            max_connections: 16384,
            server_sndbuf: t.server_sndbuf,
        }
    }
}

/// The simulated machine's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelKnobs {
    /// `Mode::Minimal` (only the promised edges, plus spurious and held-back events) instead
    /// of `Mode::Linux`.
    pub minimal: bool,
    /// Seeds the kernel's random choices (spurious and held-back events).
    pub seed: u64,
    /// Minimal mode: chance per wait of a spurious event, in parts per million.
    pub spurious_ppm: u32,
    /// Minimal mode: chance per ready item and wait that it is held back, in ppm.
    pub defer_ppm: u32,
    /// A new socket's send buffer, in bytes.
    pub send_buffer: u32,
    /// A new socket's receive buffer, in bytes.
    pub recv_buffer: u32,
}

impl Default for KernelKnobs {
    /// Linux mode with the kernel's default buffers.
    fn default() -> KernelKnobs {
        KernelKnobs {
            minimal: false,
            seed: 0,
            spurious_ppm: 0,
            defer_ppm: 0,
            send_buffer: 16 * 1024,
            recv_buffer: 64 * 1024,
        }
    }
}

/// A call a [`SimStep::Fault`] fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultCall {
    /// `accept4`: `EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`, `ECONNABORTED`, `EPROTO`, `EINTR`.
    Accept,
    /// `read` on a socket: `EINTR`.
    Read,
    /// `sendmsg`: `EINTR`.
    Write,
    /// `epoll_wait`: `EINTR`.
    EpollWait,
    /// The eventfd read that resets the loop's wake-up: `EINTR`.
    EventfdRead,
}

/// How far a [`SimStep::Advance`] moves virtual time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Jump {
    /// This many milliseconds.
    Millis(u16),
    /// Just past the idle timeout (1 s when there is none).
    PastIdle,
    /// Just past the close linger.
    PastLinger,
    /// Just past the shutdown timeout.
    PastShutdown,
}

/// What each client of a [`SimStep::Crowd`] does once its echo is back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CrowdEnd {
    /// Closes.
    Close,
    /// Resets (RST).
    Reset,
    /// Half-closes and reads to the end.
    HalfClose,
    /// Stays open.
    Stay,
}

/// The first client slot a [`SimStep::Crowd`] uses (base steps use slots below it).
pub const CROWD_SLOTS: u8 = 64;

/// One step of a [`SimCase`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimStep {
    /// A step of the real executor's [`Schedule`], played over the sim.
    ///
    /// [`Step::HoldLoop`] is faithful here: the waking message is sent, and the next `steps`
    /// steps are played from inside the loop's wake-up (the wake hook, between its eventfd
    /// reset and its queue drain), as far as they need no answer from the server.
    Base(Step),
    /// The `after + 1`-th next call of `call` fails with `errno`.
    Fault {
        /// The call.
        call: FaultCall,
        /// The errno (one the man page allows for the call).
        errno: i32,
        /// How many calls of that kind go through first.
        after: u8,
    },
    /// The next `steps` steps are played before the loop runs again, so their events coalesce
    /// (one event carries several flags, several clients queue on one listener edge).
    Burst {
        /// How many steps.
        steps: u8,
    },
    /// Virtual time moves on (the clients keep reading meanwhile).
    Advance(Jump),
    /// The loop connects out (`LoopHandle::connect`) to a listener the driver owns; the
    /// driver accepts, and the new connection becomes the slot's latest incarnation.
    /// With `greet > 0` the accepted peer speaks first: a message of `greet` bytes, written
    /// before the loop sees the connect complete, so both arrive in one event.
    ConnectOut {
        /// The client slot.
        client: u8,
        /// The greeting's payload length (0: none).
        greet: u32,
    },
    /// The client sends `count` messages of `len` bytes in one write (pipelining).
    Pipeline {
        /// The client slot.
        client: u8,
        /// How many messages.
        count: u8,
        /// Each payload's length.
        len: u32,
    },
    /// `count` new clients connect in one burst, each sends one short message and, once its
    /// echo is back, does `then`.
    Crowd {
        /// How many clients.
        count: u8,
        /// What each does afterwards.
        then: CrowdEnd,
    },
    /// `LoopHandle::shutdown` now, whatever is still pending; later steps still play.
    Shutdown,
}

/// A schedule over the simulated kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimCase {
    /// The framing.
    pub wire: Wire,
    /// The loop's config.
    pub knobs: Knobs,
    /// The kernel's settings.
    pub kernel: KernelKnobs,
    /// The steps, in order.
    pub steps: Vec<SimStep>,
}

impl SimCase {
    /// The real executor's schedule, played over the sim with the same settings (Linux mode,
    /// the kernel's default buffers).
    pub fn from_schedule(schedule: &Schedule) -> SimCase {
        SimCase {
            wire: schedule.wire,
            knobs: Knobs::from_tuning(&schedule.tuning),
            kernel: KernelKnobs::default(),
            steps: schedule.steps.iter().cloned().map(SimStep::Base).collect(),
        }
    }

    /// The same case with only the steps at `indices` (in their order): how a shrunk
    /// reproducer is written down (`SimCase::from_seed(seed).keep(&[..])`).
    pub fn keep(&self, indices: &[usize]) -> SimCase {
        SimCase {
            steps: indices
                .iter()
                .filter_map(|&i| self.steps.get(i).cloned())
                .collect(),
            ..self.clone()
        }
    }

    /// Builds a case from fuzzer bytes, exactly as `fuzz/fuzz_targets/sim_schedule.rs` does.
    /// Any byte string decodes to a valid case.
    pub fn from_fuzz_bytes(data: &[u8]) -> SimCase {
        arbitrary_impl::decode(data)
    }

    /// The case a seed names: [`SimCase::from_fuzz_bytes`] over 4 KiB of bytes from a
    /// xorshift generator seeded with `seed`.
    pub fn from_seed(seed: u64) -> SimCase {
        SimCase::from_fuzz_bytes(&SimCase::seed_bytes(seed))
    }

    /// The bytes [`SimCase::from_seed`] decodes (also the fuzz target's seed corpus).
    pub fn seed_bytes(seed: u64) -> Vec<u8> {
        let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            // splitmix64: any seed, 0 included, gives a full-period stream.
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        (0..512).flat_map(|_| next().to_le_bytes()).collect()
    }
}

impl fmt::Display for Knobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "read_chunk {}, fairness_budget {}, watermarks {}/{}, idle {:?}, linger {:?}, \
             shutdown {:?}, max_connections {}, server SO_SNDBUF {:?}",
            self.read_chunk,
            self.fairness_budget,
            self.low_watermark,
            self.high_watermark,
            self.idle_timeout,
            self.close_linger,
            self.shutdown_timeout,
            self.max_connections,
            self.server_sndbuf
        )
    }
}

impl fmt::Display for SimCase {
    /// One step per line, short enough to read a shrunk reproducer at a glance.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.kernel;
        writeln!(
            f,
            "sim case over {:?} ({}); kernel {} (seed {}, spurious {} ppm, deferred {} ppm), \
             buffers {}/{} B; {} step(s):",
            self.wire,
            self.knobs,
            if k.minimal { "minimal" } else { "linux" },
            k.seed,
            k.spurious_ppm,
            k.defer_ppm,
            k.send_buffer,
            k.recv_buffer,
            self.steps.len()
        )?;
        for (i, step) in self.steps.iter().enumerate() {
            writeln!(f, "  {i:>3}: {step}")?;
        }
        Ok(())
    }
}

impl fmt::Display for SimStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimStep::Base(step) => write!(f, "{step}"),
            SimStep::Fault { call, errno, after } => {
                write!(
                    f,
                    "fault: call {} of {call:?} fails with errno {errno}",
                    after + 1
                )
            }
            SimStep::Burst { steps } => {
                write!(f, "burst: the next {steps} steps before the loop runs")
            }
            SimStep::Advance(jump) => write!(f, "advance virtual time {jump:?}"),
            SimStep::ConnectOut { client, greet } => {
                write!(f, "c{client} the loop connects out")?;
                if *greet > 0 {
                    write!(f, "; the peer greets first with {greet} B")?;
                }
                Ok(())
            }
            SimStep::Pipeline { client, count, len } => {
                write!(f, "c{client} pipelines {count} x {len} B in one write")
            }
            SimStep::Crowd { count, then } => {
                write!(
                    f,
                    "crowd: {count} clients connect at once, echo, then {then:?}"
                )
            }
            SimStep::Shutdown => write!(f, "LoopHandle::shutdown"),
        }
    }
}
