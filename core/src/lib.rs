//! refloop: a verified reference event loop.
//!
//! - [`queue`]: a CAS-based multi-producer, single-consumer send queue.
//! - [`framing`]: the [`Framing`](framing::Framing) trait that turns a byte stream into messages,
//!   with two wire-compatible framings.
//! - [`check`]: the reusable correctness harnesses (framing oracle, queue checks) that our own
//!   tests, proptests and fuzz targets call, and that users can point at their own code.
//! - The event loop: an edge-triggered epoll server and client over `libc`.
//! - [`sim`]: a deterministic in-memory kernel the same loop runs over, for tests.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod check;
pub mod framing;
pub mod os;
pub mod queue;
pub mod sync;

pub mod reactor;
pub mod sim;
mod sys;

pub use reactor::{
    Config, ConfigError, Conn, ConnHandle, ConnId, Disconnect, DisconnectReason, Endpoint, Handler,
    LoopHandle, Loops, LoopsHandle, SendError, Server, Sharing, Stats,
};

/// The README's Rust examples, compiled and run as doc tests so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
