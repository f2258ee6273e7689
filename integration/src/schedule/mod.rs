//! Randomised schedules of socket operations, and their executor.
//!
//! A [`Schedule`] is a list of [`Step`]s over up to [`MAX_CLIENTS`] loopback clients: connects,
//! sends cut into chunks, slow or stalled readers, half-closes, closes, resets (RST through
//! `SO_LINGER` 0), sends from other threads through a `ConnHandle`, malformed or over-long
//! frames, and shrunk socket buffers.
//!
//! - [`strategy::schedule`] generates them for proptest, with shrinking towards short schedules
//!   over few clients.
//! - The [`arbitrary::Arbitrary`] impl builds them from fuzzer bytes, so `fuzz/fuzz_targets/schedule.rs`
//!   drives the same executor.
//! - [`exec::run`] plays a schedule against refloop's real loop on a background thread and checks
//!   the invariants listed in [`exec`].
//!
//! # Replaying a fuzz crash as a regression
//!
//! Copy the crash file that `cargo fuzz run schedule` wrote (`fuzz/artifacts/schedule/crash-*`)
//! into `fuzz/regressions/schedule/`.
//! The test `fuzz_regressions_replay_clean` in `integration/tests/schedule_replay.rs` decodes every
//! file there with [`Schedule::from_fuzz_bytes`], the same decoding the fuzz target uses, and runs it
//! through [`exec::run`], so the crash replays in the integration stage from then on.
//! Its failure message prints the schedule in the [`Display`](std::fmt::Display) form, which reads
//! as a reproducer.

pub mod client;
pub mod driver;
pub mod exec;

pub mod strategy;
pub mod teeth;
pub mod wire;

pub(crate) mod arbitrary_impl;

use std::fmt;

/// The most clients one schedule drives.
pub const MAX_CLIENTS: u8 = 64;

/// The most sender threads (besides the executor's own thread) that cross-thread sends use.
pub const SENDER_THREADS: u8 = 2;

/// A list of socket operations over a set of loopback clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// The framing the server speaks.
    pub wire: Wire,
    /// The server's buffer settings.
    pub tuning: Tuning,
    /// The operations, in order.
    pub steps: Vec<Step>,
}

/// Server settings a schedule picks, so that small reads and early backpressure get exercised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuning {
    /// `Config::read_chunk`: bytes per `read(2)`; a small chunk makes one edge carry many reads.
    pub read_chunk: u32,
    /// `Config::high_watermark` (the low one is a quarter of it): a small mark makes the loop
    /// stop reading early and refuse cross-thread sends with `Full`.
    pub high_watermark: u32,
    /// `Config::fairness_budget`: bytes read from one connection per turn; a small budget puts
    /// busy connections on the ready list, to be served without a new edge.
    pub fairness_budget: u32,
    /// `Config::send_buffer_size`: `SO_SNDBUF` of the server's sockets. On loopback the kernel
    /// otherwise grows the send buffer to megabytes, and the loop's writes would never be
    /// partial; a small one makes a slow reader force partial writes within a few messages.
    pub server_sndbuf: Option<u32>,
}

impl Default for Tuning {
    /// The loop's own defaults.
    fn default() -> Tuning {
        Tuning {
            read_chunk: 64 * 1024,
            high_watermark: 1024 * 1024,
            fairness_budget: 256 * 1024,
            server_sndbuf: None,
        }
    }
}

/// The framing of a schedule's server and clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wire {
    /// `refloop::framing::LengthPrefixed`: a 4-byte big-endian length, then the payload.
    LengthPrefixed,
    /// `refloop::framing::Lines`: newline-terminated UTF-8 text.
    Lines,
}

/// Which of a client's socket buffers a [`Step::ShrinkBuffer`] shrinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Buffer {
    /// `SO_SNDBUF`: the client's own writes go out in small pieces.
    Send,
    /// `SO_RCVBUF`: the server's writes to this client hit `EAGAIN` and go out partially.
    Recv,
}

/// How a [`Step::Malformed`] breaks the framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Malformation {
    /// A frame longer than the server's limit: a length header over the limit, or a line that
    /// never ends within the limit.
    TooLong,
    /// Bytes that can never form a frame: invalid UTF-8 in a line, or (for length prefixes,
    /// where every header is well-formed) a length header of `u32::MAX`.
    Garbage,
}

/// One operation of a [`Schedule`].
///
/// Every step names a client slot `client` (below [`MAX_CLIENTS`]).
/// Every step except [`Step::CrossSend`] and [`Step::Sync`] acts on the slot's *usable*
/// connection (open, not closing, no malformed frame sent) and first connects a new one (a new
/// *incarnation* of the slot) if there is none, so shrinking can drop a `Connect` without turning
/// the rest of the schedule into no-ops.
/// `CrossSend` and `Sync` act on the slot's latest incarnation whatever its state, so a
/// `CrossSend` after a close sends through a stale handle or a stale [`refloop::ConnId`].
/// Incarnations that are half-closed or have sent a malformed frame keep reading until the
/// server ends them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Connects the slot (a new incarnation if its connection is dead).
    Connect {
        /// The client slot.
        client: u8,
    },
    /// Sends the slot's next message: `len` payload bytes, written in pieces whose sizes cycle
    /// through `chunks` (one write for the whole frame when empty), yielding the CPU between
    /// pieces when `yields` is set.
    Send {
        /// The client slot.
        client: u8,
        /// The payload length in bytes.
        len: u32,
        /// The sizes of the successive writes, cycled; zeros are read as one.
        chunks: Vec<u16>,
        /// Whether to yield the thread between two pieces.
        yields: bool,
    },
    /// From now on the client reads at most `buf` bytes per step (a slow reader).
    ReadSmall {
        /// The client slot.
        client: u8,
        /// The read buffer size in bytes; zero is read as one.
        buf: u16,
    },
    /// The client stops reading for the next `steps` steps.
    Pause {
        /// The client slot.
        client: u8,
        /// How many steps the pause lasts.
        steps: u8,
    },
    /// Shuts down the client's write half (`shutdown(SHUT_WR)`); it keeps reading.
    HalfClose {
        /// The client slot.
        client: u8,
    },
    /// Closes the client's socket.
    Close {
        /// The client slot.
        client: u8,
    },
    /// Closes the client's socket abortively: `SO_LINGER` 0, so the kernel sends an RST.
    Reset {
        /// The client slot.
        client: u8,
    },
    /// Sends `count` messages of `len` bytes to the slot's connection through its `ConnHandle`,
    /// from sender thread `thread` (0 is the executor's own thread, the others run concurrently
    /// with the following steps).
    CrossSend {
        /// The client slot.
        client: u8,
        /// The sending thread, `0..=SENDER_THREADS`.
        thread: u8,
        /// How many messages.
        count: u8,
        /// The payload length of each.
        len: u32,
        /// Send to the slot's previous incarnation (when it has one) instead of its latest: a
        /// stale handle or id of a connection whose slot and fd the latest one may have taken.
        /// The executor first waits until the server has seen the previous connection go (if
        /// its client closed or reset it) and the latest one arrive, so the reuse has happened.
        stale: bool,
    },
    /// Sends a frame the server's framing must reject; the server must drop this one connection.
    Malformed {
        /// The client slot.
        client: u8,
        /// What is wrong with the frame.
        kind: Malformation,
    },
    /// Shrinks one of the client's socket buffers to `bytes` (the kernel doubles and clamps it).
    ShrinkBuffer {
        /// The client slot.
        client: u8,
        /// Which buffer.
        which: Buffer,
        /// The requested size in bytes.
        bytes: u32,
    },
    /// Waits (bounded) until the server has seen the slot's latest connect, or its latest close
    /// or reset; this pins down orderings such as "the fd is reused before the stale send".
    Sync {
        /// The client slot.
        client: u8,
    },
    /// Holds the loop thread inside an eventfd wake-up (through `Server::set_wake_hook`) for
    /// the next `steps` steps, so that connects, sends and closes pile up for one loop turn.
    ///
    /// The executor first waits until the server has accepted every client connected so far.
    /// The wake-up is the slot's own: one cross-thread message through its `ConnHandle`, sent
    /// once the executor has armed the hook. A step that must wait for the server ends the hold
    /// first, since a held loop cannot answer.
    HoldLoop {
        /// The client slot whose connection carries the waking message.
        client: u8,
        /// How many steps the hold lasts.
        steps: u8,
    },
}

impl Step {
    /// The client slot this step acts on.
    pub fn client(&self) -> u8 {
        match *self {
            Step::Connect { client }
            | Step::Send { client, .. }
            | Step::ReadSmall { client, .. }
            | Step::Pause { client, .. }
            | Step::HalfClose { client }
            | Step::Close { client }
            | Step::Reset { client }
            | Step::CrossSend { client, .. }
            | Step::Malformed { client, .. }
            | Step::ShrinkBuffer { client, .. }
            | Step::Sync { client }
            | Step::HoldLoop { client, .. } => client,
        }
    }
}

impl Schedule {
    /// The number of client slots the schedule uses (one more than the highest slot named).
    pub fn clients(&self) -> usize {
        self.steps
            .iter()
            .map(|s| usize::from(s.client()) + 1)
            .max()
            .unwrap_or(0)
    }

    /// Builds a schedule from fuzzer bytes, exactly as `fuzz/fuzz_targets/schedule.rs` does.
    ///
    /// Any byte string decodes to some valid schedule (running out of bytes ends it early).
    pub fn from_fuzz_bytes(data: &[u8]) -> Schedule {
        let u = arbitrary::Unstructured::new(data);
        match <Schedule as arbitrary::Arbitrary>::arbitrary_take_rest(u) {
            Ok(s) => s,
            // Reason: `arbitrary_take_rest` of this type only fails on exhausted input, and an
            // empty schedule is the natural reading of that.
            Err(_) => Schedule {
                wire: Wire::LengthPrefixed,
                tuning: Tuning::default(),
                steps: Vec::new(),
            },
        }
    }
}

impl fmt::Display for Schedule {
    /// One step per line, short enough to read a shrunk reproducer at a glance.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "schedule over {:?} (read_chunk {}, high_watermark {}, fairness_budget {}, \
             server SO_SNDBUF {:?}), {} step(s):",
            self.wire,
            self.tuning.read_chunk,
            self.tuning.high_watermark,
            self.tuning.fairness_budget,
            self.tuning.server_sndbuf,
            self.steps.len()
        )?;
        for (i, step) in self.steps.iter().enumerate() {
            writeln!(f, "  {i:>3}: {step}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Connect { client } => write!(f, "c{client} connect"),
            Step::Send {
                client,
                len,
                chunks,
                yields,
            } => {
                write!(f, "c{client} send {len} B")?;
                if !chunks.is_empty() {
                    write!(f, " in pieces {chunks:?}")?;
                }
                if *yields {
                    write!(f, " with yields")?;
                }
                Ok(())
            }
            Step::ReadSmall { client, buf } => write!(f, "c{client} read {buf} B per step"),
            Step::Pause { client, steps } => write!(f, "c{client} stop reading for {steps} steps"),
            Step::HalfClose { client } => write!(f, "c{client} shutdown(SHUT_WR)"),
            Step::Close { client } => write!(f, "c{client} close"),
            Step::Reset { client } => write!(f, "c{client} reset (SO_LINGER 0)"),
            Step::CrossSend {
                client,
                thread,
                count,
                len,
                stale,
            } => {
                let route = if count % 2 == 1 {
                    "LoopHandle::send_to(id)"
                } else {
                    "ConnHandle"
                };
                let whom = if *stale {
                    "previous connection"
                } else {
                    "latest connection"
                };
                write!(
                    f,
                    "c{client} {count} x {len} B to its {whom} through {route} from thread {thread}"
                )
            }
            Step::Malformed { client, kind } => write!(f, "c{client} malformed frame {kind:?}"),
            Step::ShrinkBuffer {
                client,
                which,
                bytes,
            } => {
                write!(f, "c{client} shrink {which:?} buffer to {bytes} B")
            }
            Step::Sync { client } => write!(f, "c{client} wait for the server"),
            Step::HoldLoop { client, steps } => {
                write!(f, "c{client} wakes the loop and holds it for {steps} steps")
            }
        }
    }
}
