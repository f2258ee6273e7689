//! Side-by-side benchmarks of refloop and the peers users would pick instead.
//!
//! The `bench` binary (`cargo xtask bench [--quick]`) runs everything, prints the tables and
//! writes `BENCHMARKS.md`; the `tokio_echo` binary is the tokio peer of refloop's echo example.
//!
//! - [`stats`]: medians, spreads, paired ratios, the noisy flag and a latency histogram.
//! - [`queue_bench`]: refloop's send queue vs crossbeam-channel vs `std::sync::mpsc`.
//! - [`framing_bench`]: refloop's framings vs tokio-util's codecs vs a raw `memchr` scan.
//! - [`loadgen`] and [`server`]: the echo load generator and the server processes it drives.
//! - [`kit`]: loom and fuzz costs.
//! - [`resp_bench`]: the `kv` example against redis-server (memory bounds and throughput).
//! - [`report`]: Markdown tables and the generated sections of `BENCHMARKS.md`.
//!
//! [`sys`] is the one module that names `libc` (epoll for the load generator, `setrlimit`,
//! `kill`, `sysconf`); it is the only `unsafe` code outside `core`, kept to what std lacks.
#![deny(unsafe_code)]

pub mod framing_bench;
pub mod kit;
pub mod loadgen;
pub mod queue_bench;
pub mod report;
pub mod resp_bench;
pub mod server;
pub mod stats;
pub mod sys;
