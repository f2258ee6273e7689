//! The RESP kit: generated request streams, the `kv` example and redis-server as processes,
//! and a client that tells a closed connection from an open one without sleeping.
//!
//! - [`case`]: the `resp` fuzz target's input, replayed by `tests/resp_framing.rs`.
//! - [`gen`]: proptest strategies for request streams, each request with the message
//!   [`Resp`](refloop::framing::Resp) must decode it to.
//! - [`servers`]: starting `kv` and `redis-server` on loopback (installing the redis packages
//!   when they are missing and we are root), and stopping them.
//! - [`wire`]: sending a stream and collecting the replies and whether the server closed.

pub mod case;
pub mod gen;
pub mod servers;
pub mod wire;
