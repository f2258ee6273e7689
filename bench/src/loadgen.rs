//! The load generator both echo servers are driven by.
//!
//! `N` TCP connections are spread over a few client threads, each thread running its own
//! level-triggered epoll loop.
//! Every connection keeps `depth` small messages in flight: it pipelines `depth` messages at
//! the start and sends one new message for every echo it receives, so the server always has
//! work queued on every connection.
//! Each message carries its connection-local sequence number, and every echo is checked against
//! the sequence the connection expects next, so a server that drops, reorders or corrupts
//! messages fails the run instead of producing a figure.
//!
//! Latency is measured per message, from the write that sent it to the read that returned its
//! echo (one clock reading per read or write batch, not per message, to keep the client cheap).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::stats::Histogram;
use crate::sys::{self, Epoll, Event};

/// The wire framing both the client and the server speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// A 4-byte big-endian length, then the payload (tokio-util `LengthDelimitedCodec` default).
    Length,
    /// Newline-terminated text.
    Lines,
}

impl Wire {
    /// The `--framing` argument both servers take.
    pub fn arg(self) -> &'static str {
        match self {
            Wire::Length => "length",
            Wire::Lines => "lines",
        }
    }

    /// The bytes on the wire for one message with `payload` payload bytes.
    pub fn wire_len(self, payload: usize) -> usize {
        match self {
            Wire::Length => 4 + payload,
            Wire::Lines => payload + 1,
        }
    }

    /// Appends message number `seq` with a `payload`-byte payload (at least 16 bytes).
    pub fn encode(self, seq: u64, payload: usize, out: &mut Vec<u8>) {
        debug_assert!(payload >= 16);
        match self {
            Wire::Length => out.extend_from_slice(&(payload as u32).to_be_bytes()),
            Wire::Lines => {}
        }
        out.extend_from_slice(format_seq(seq).as_slice());
        out.extend(std::iter::repeat_n(b'x', payload - 16));
        if self == Wire::Lines {
            out.push(b'\n');
        }
    }

    /// Checks that `msg` (exactly one message on the wire) is message number `seq`.
    pub fn check(self, seq: u64, payload: usize, msg: &[u8]) -> bool {
        match self {
            Wire::Length => {
                msg.len() == 4 + payload
                    && msg[..4] == (payload as u32).to_be_bytes()
                    && msg[4..20] == format_seq(seq)
            }
            Wire::Lines => {
                msg.len() == payload + 1 && msg[payload] == b'\n' && msg[..16] == format_seq(seq)
            }
        }
    }
}

/// Sixteen lowercase hex digits: valid in both framings, and valid UTF-8 for `Lines`.
fn format_seq(seq: u64) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((seq >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The server to drive.
    pub addr: SocketAddr,
    /// The framing the server speaks.
    pub wire: Wire,
    /// How many connections.
    pub conns: usize,
    /// How many messages each connection keeps in flight.
    pub depth: usize,
    /// Payload bytes per message (at least 16).
    pub payload: usize,
    /// Client threads.
    pub threads: usize,
    /// Time to run before measuring.
    pub warmup: Duration,
    /// Time to measure.
    pub measure: Duration,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Echoes received during the measured window.
    pub measured_msgs: u64,
    /// Echoes received over the whole run, warm-up included.
    pub total_msgs: u64,
    /// The measured window's length.
    pub elapsed: Duration,
    /// Round-trip latency of the echoes received during the window, in nanoseconds.
    pub latency_ns: Histogram,
    /// What the caller's window hook returned at the start and end of the window.
    pub window: (f64, f64),
}

impl LoadResult {
    /// Echoes per second during the measured window.
    pub fn msgs_per_sec(&self) -> f64 {
        self.measured_msgs as f64 / self.elapsed.as_secs_f64()
    }
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

struct Conn {
    stream: TcpStream,
    /// Bytes queued for writing; `out[out_pos..]` is unsent.
    out: Vec<u8>,
    out_pos: usize,
    /// Received bytes not yet forming a whole message.
    inbuf: Vec<u8>,
    next_send: u64,
    next_recv: u64,
    /// Send time of every message in flight, oldest first, as nanoseconds since the run began.
    sent_at: VecDeque<u64>,
    want_write: bool,
}

struct ThreadOut {
    measured: u64,
    total: u64,
    hist: Histogram,
}

/// Runs the load against a server.
///
/// `window` is called on the calling thread at the start and at the end of the measured window
/// (for example to read the server's CPU time); its two results are returned in
/// [`LoadResult::window`].
///
/// # Errors
///
/// Fails when a connection cannot be made, the server closes a connection, or an echo is wrong.
pub fn run(cfg: &LoadConfig, mut window: impl FnMut() -> f64) -> io::Result<LoadResult> {
    let threads = cfg.threads.clamp(1, cfg.conns.max(1));
    let mut per_thread: Vec<Vec<TcpStream>> = (0..threads).map(|_| Vec::new()).collect();
    for i in 0..cfg.conns {
        let s = connect(cfg.addr)?;
        per_thread[i % threads].push(s);
    }
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let origin = Instant::now();
    let handles: Vec<_> = per_thread
        .into_iter()
        .map(|streams| {
            let phase = Arc::clone(&phase);
            let cfg = cfg.clone();
            thread::spawn(move || client_thread(&cfg, streams, &phase, origin))
        })
        .collect();
    thread::sleep(cfg.warmup);
    let w0 = window();
    let start = Instant::now();
    // Release pairs with the client threads' Acquire loads of `phase`: nothing else is
    // published through it, the ordering only keeps the window edges tight.
    phase.store(MEASURE, Ordering::Release);
    thread::sleep(cfg.measure);
    phase.store(STOP, Ordering::Release);
    let elapsed = start.elapsed();
    let w1 = window();
    let mut result = LoadResult {
        measured_msgs: 0,
        total_msgs: 0,
        elapsed,
        latency_ns: Histogram::new(),
        window: (w0, w1),
    };
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(out)) => {
                result.measured_msgs += out.measured;
                result.total_msgs += out.total;
                result.latency_ns.merge(&out.hist);
            }
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(io::Error::other("client thread panicked"));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(result),
    }
}

/// Opens one client connection, retrying briefly while the server's accept backlog is full.
///
/// The connection has `TCP_NODELAY` set and closes with an RST (`SO_LINGER` 0), so that runs
/// with thousands of connections do not leave the ephemeral port range full of `TIME_WAIT`.
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let mut tries = 0;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(s) => {
                s.set_nodelay(true)?;
                // Closing with an RST keeps TIME_WAIT entries from exhausting the port range.
                sys::set_linger_zero(&s)?;
                return Ok(s);
            }
            Err(e) if tries < 5 && e.kind() != io::ErrorKind::ConnectionRefused => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

fn client_thread(
    cfg: &LoadConfig,
    streams: Vec<TcpStream>,
    phase: &AtomicU8,
    origin: Instant,
) -> io::Result<ThreadOut> {
    let wire_len = cfg.wire.wire_len(cfg.payload);
    let mut ep = Epoll::new(1024)?;
    let mut conns = Vec::with_capacity(streams.len());
    for (i, stream) in streams.into_iter().enumerate() {
        stream.set_nonblocking(true)?;
        ep.add(&stream, sys::READABLE, i as u64)?;
        conns.push(Conn {
            stream,
            out: Vec::with_capacity(wire_len * cfg.depth),
            out_pos: 0,
            inbuf: Vec::with_capacity(wire_len * cfg.depth),
            next_send: 0,
            next_recv: 0,
            sent_at: VecDeque::with_capacity(cfg.depth),
            want_write: false,
        });
    }
    let mut out = ThreadOut {
        measured: 0,
        total: 0,
        hist: Histogram::new(),
    };
    let now = origin.elapsed().as_nanos() as u64;
    for (i, c) in conns.iter_mut().enumerate() {
        for _ in 0..cfg.depth {
            cfg.wire.encode(c.next_send, cfg.payload, &mut c.out);
            c.next_send += 1;
            c.sent_at.push_back(now);
        }
        flush(c, &ep, i)?;
    }
    let mut events: Vec<Event> = Vec::new();
    let mut rbuf = vec![0u8; 64 * 1024];
    loop {
        // Acquire pairs with the Release stores in `run`.
        let ph = phase.load(Ordering::Acquire);
        if ph == STOP {
            return Ok(out);
        }
        ep.wait(&mut events, 50)?;
        for ev in &events {
            let i = ev.token as usize;
            let c = &mut conns[i];
            if ev.flags & sys::WRITABLE != 0 {
                flush(c, &ep, i)?;
            }
            if ev.flags & (sys::READABLE | sys::HUP_OR_ERROR) == 0 {
                continue;
            }
            let mut got = 0usize;
            loop {
                match c.stream.read(&mut rbuf) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("server closed connection {i}"),
                        ))
                    }
                    Ok(n) => {
                        c.inbuf.extend_from_slice(&rbuf[..n]);
                        got += n;
                        if n < rbuf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if got == 0 {
                continue;
            }
            let now = origin.elapsed().as_nanos() as u64;
            let whole = c.inbuf.len() / wire_len;
            for k in 0..whole {
                let msg = &c.inbuf[k * wire_len..(k + 1) * wire_len];
                if !cfg.wire.check(c.next_recv, cfg.payload, msg) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("connection {i}: echo {} is wrong: {:?}", c.next_recv, msg),
                    ));
                }
                c.next_recv += 1;
                let sent = c.sent_at.pop_front().unwrap_or(now);
                if ph == MEASURE {
                    out.hist.record(now.saturating_sub(sent));
                }
            }
            c.inbuf.drain(..whole * wire_len);
            out.total += whole as u64;
            if ph == MEASURE {
                out.measured += whole as u64;
            }
            let now = origin.elapsed().as_nanos() as u64;
            for _ in 0..whole {
                cfg.wire.encode(c.next_send, cfg.payload, &mut c.out);
                c.next_send += 1;
                c.sent_at.push_back(now);
            }
            flush(c, &ep, i)?;
        }
    }
}

/// Writes as much queued output as the socket takes, and asks for `EPOLLOUT` only while some
/// is left (level-triggered epoll would spin otherwise).
fn flush(c: &mut Conn, ep: &Epoll, i: usize) -> io::Result<()> {
    while c.out_pos < c.out.len() {
        match c.stream.write(&c.out[c.out_pos..]) {
            Ok(n) => c.out_pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if c.out_pos == c.out.len() {
        c.out.clear();
        c.out_pos = 0;
    }
    let pending = !c.out.is_empty();
    if pending != c.want_write {
        let flags = if pending {
            sys::READABLE | sys::WRITABLE
        } else {
            sys::READABLE
        };
        ep.modify(&c.stream, flags, i as u64)?;
        c.want_write = pending;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_messages_pass_their_own_check_and_fail_with_another_sequence() {
        for wire in [Wire::Length, Wire::Lines] {
            let mut buf = Vec::new();
            wire.encode(0x0123_4567_89ab_cdef, 32, &mut buf);
            assert_eq!(buf.len(), wire.wire_len(32));
            assert!(wire.check(0x0123_4567_89ab_cdef, 32, &buf));
            assert!(!wire.check(0x0123_4567_89ab_cdee, 32, &buf));
            assert!(!wire.check(0x0123_4567_89ab_cdef, 33, &buf));
        }
    }

    #[test]
    fn lines_messages_are_utf8_without_inner_newlines() {
        let mut buf = Vec::new();
        Wire::Lines.encode(u64::MAX, 20, &mut buf);
        let text = std::str::from_utf8(&buf).unwrap();
        assert_eq!(text.find('\n'), Some(20));
    }
}
