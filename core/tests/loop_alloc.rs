//! The loop's hot path makes no per-message allocation when the framing makes none: reading,
//! decoding, `Conn::send` (encoding into the output buffer) and the gathered write reuse their
//! buffers.
//!
//! A counting global allocator (this test binary's own) counts allocations on the loop thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::sync::mpsc;

use refloop::framing::{Decoded, FrameError, Framing};
use refloop::reactor::KnownBad;
use refloop::{Config, Conn, Handler, Server};

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees are ours; the counter is a thread-local `Cell` (no allocation, no lock), accessed
// with `try_with` so it is safe during thread teardown.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller upholds `alloc`'s contract (non-zero size), which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes through
        // `alloc` or `realloc` above).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller upholds `realloc`'s contract, which we pass on to `System`, the
        // allocator of `ptr`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Big-endian `u64`s, 8 bytes each: a framing that never allocates.
#[derive(Clone)]
struct Words;

impl Framing for Words {
    type Message = u64;

    fn decode(&mut self, buf: &[u8]) -> Result<Decoded<u64>, FrameError> {
        Ok(match buf.first_chunk::<8>() {
            Some(word) => Decoded::Message(u64::from_be_bytes(*word), 8),
            None => Decoded::NeedMore,
        })
    }

    fn encode(&mut self, msg: &u64, out: &mut Vec<u8>) -> Result<(), FrameError> {
        out.extend_from_slice(&msg.to_be_bytes());
        Ok(())
    }
}

const MESSAGES: u64 = 20_000;
const WARM_UP: u64 = 2_000;

/// Echoes, and reports the loop thread's allocations between message `WARM_UP` and the last.
struct Echo {
    at_warm_up: u64,
    report: mpsc::Sender<u64>,
}

impl Handler<Words> for Echo {
    fn on_message(&mut self, conn: &Conn<'_, Words>, msg: u64) {
        if msg == WARM_UP {
            self.at_warm_up = allocations();
        }
        conn.send(&msg).expect("a word always encodes");
        if msg == MESSAGES - 1 {
            let _ = self.report.send(allocations() - self.at_warm_up);
        }
    }
}

/// Echoes `MESSAGES` words; returns the loop thread's allocations after the warm-up.
fn steady_state_allocations(known_bad: KnownBad) -> u64 {
    let cfg = Config {
        read_chunk: 4096,
        known_bad,
        ..Config::default()
    };
    let server = Server::bind("127.0.0.1:0", Words, cfg).unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.handle();
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        server.run(Echo {
            at_warm_up: 0,
            report: tx,
        })
    });

    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let wire: Vec<u8> = (0..MESSAGES).flat_map(u64::to_be_bytes).collect();
    // Write in pieces and read back as we go, so many read/decode/write cycles happen.
    let mut echoed = Vec::with_capacity(wire.len());
    let mut buf = vec![0u8; 64 * 1024];
    for piece in wire.chunks(8 * 500) {
        stream.write_all(piece).unwrap();
        let want = echoed.len() + piece.len();
        while echoed.len() < want {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "the loop closed the connection");
            echoed.extend_from_slice(&buf[..n]);
        }
    }
    assert_eq!(echoed, wire, "every word echoed in order");
    let steady = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    drop(stream);
    handle.shutdown();
    thread.join().unwrap().unwrap();
    steady
}

#[test]
fn echo_hot_path_makes_no_per_message_allocation() {
    let steady = steady_state_allocations(KnownBad::None);
    println!("@@stat loop-allocations-per-18000-echoes hot_path {steady}");
    // Buffers may still grow a few times; one allocation per message would be 18 000.
    assert!(
        steady < (MESSAGES - WARM_UP) / 100,
        "{steady} allocations on the loop thread for {} echoed messages",
        MESSAGES - WARM_UP
    );
}

#[test]
fn teeth_a_buffer_per_send_is_caught_by_the_allocation_count() {
    let steady = steady_state_allocations(KnownBad::AllocPerSend);
    assert!(
        steady >= MESSAGES - WARM_UP,
        "the count must see one allocation per message: {steady}"
    );
}
