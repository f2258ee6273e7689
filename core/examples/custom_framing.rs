//! Checking your own `Framing` with refloop's oracle.
//!
//! Run it with `cargo run -p refloop --example custom_framing`.
//!
//! The framing here is NUL-terminated byte strings. The checks take a few lines each:
//!
//! 1. `check_stream(make, stream, cuts)` on named edge cases: it also feeds the stream byte by
//!    byte and whole, and checks the whole contract.
//! 2. `check_round_trip(make, messages, cuts)`.
//! 3. The same calls from a proptest or a fuzz target: see
//!    `integration/tests/framing_custom.rs` for the proptest, and the end of this file for a
//!    fuzz target.
//!
//! The buggy variant (`remember_scan = false`) rescans from the start on every call, and the
//! oracle rejects it for quadratic work.

use std::borrow::Cow;

use refloop::check::framing::{check_round_trip, check_stream, try_check_stream, Property};
use refloop::framing::{Decoded, FrameError, Framing};

/// NUL-terminated byte strings of at most `max_len` bytes.
#[derive(Debug, Clone)]
struct NulTerminated {
    max_len: usize,
    /// Bytes at the front of `buf` known to hold no NUL.
    scanned: usize,
    /// Whether to resume scanning where the last call stopped (the correct way).
    remember_scan: bool,
    /// Work done, for the oracle's linear-work check.
    examined: u64,
}

impl NulTerminated {
    fn new(max_len: usize) -> Self {
        Self {
            max_len,
            scanned: 0,
            remember_scan: true,
            examined: 0,
        }
    }
}

impl Framing for NulTerminated {
    type Message = Vec<u8>;

    fn decode(&mut self, buf: &[u8]) -> Result<Decoded<Vec<u8>>, FrameError> {
        let read_to = buf.len().min(self.max_len + 1);
        let start = if self.remember_scan {
            self.scanned.min(read_to)
        } else {
            0
        };
        match buf[start..read_to].iter().position(|&b| b == 0) {
            Some(at) => {
                self.examined += at as u64 + 1;
                self.scanned = 0;
                let end = start + at;
                Ok(Decoded::Message(buf[..end].to_vec(), end + 1))
            }
            None if buf.len() > self.max_len => Err(FrameError::TooLong {
                limit: self.max_len,
                declared: self.max_len as u64 + 1,
            }),
            None => {
                self.examined += (read_to - start) as u64;
                self.scanned = read_to;
                Ok(Decoded::NeedMore)
            }
        }
    }

    fn encode(&mut self, msg: &Vec<u8>, out: &mut Vec<u8>) -> Result<(), FrameError> {
        if msg.contains(&0) {
            return Err(FrameError::Malformed(Cow::Borrowed("message contains NUL")));
        }
        if msg.len() > self.max_len {
            return Err(FrameError::TooLong {
                limit: self.max_len,
                declared: msg.len() as u64,
            });
        }
        out.extend_from_slice(msg);
        out.push(0);
        Ok(())
    }

    fn max_buffered(&self) -> Option<usize> {
        Some(self.max_len)
    }

    fn bytes_examined(&self) -> Option<u64> {
        Some(self.examined)
    }
}

fn main() {
    // 1. Named edge cases, each checked whole, byte by byte and at the given cuts.
    let report = check_stream(|| NulTerminated::new(8), b"one\0\0two\0tail", &[1, 4, 4, 7]);
    assert_eq!(
        report.outcome.messages,
        [b"one".to_vec(), vec![], b"two".to_vec()]
    );
    println!("edge case: {:?}", report.outcome);
    let report = check_stream(|| NulTerminated::new(3), b"ok\0toolong\0", &[5]);
    println!("over the limit: {:?}", report.outcome.end);

    // 2. Round trip; the message with a NUL is rejected by encode and must write nothing.
    let messages = vec![b"a".to_vec(), vec![], b"x\0y".to_vec(), b"last".to_vec()];
    let report = check_round_trip(|| NulTerminated::new(8), &messages, &[2, 3]);
    println!(
        "round trip: {} messages back",
        report.outcome.messages.len()
    );

    // The rescanning variant gives the same messages but does quadratic work: rejected.
    let long = [vec![b'z'; 200], vec![0]].concat();
    let bad = || NulTerminated {
        remember_scan: false,
        ..NulTerminated::new(256)
    };
    let violation = try_check_stream(bad, &long, &[]).unwrap_err();
    assert_eq!(violation.property, Property::LinearWork);
    println!("rescanning variant rejected: {violation}");
}

// 3. A fuzz target for this framing is as short (in `fuzz/fuzz_targets/nul.rs`, with a
//    `[[bin]]` entry in `fuzz/Cargo.toml`):
//
//    #![no_main]
//    #[global_allocator]
//    static ALLOC: refloop::check::framing::TrackingAlloc = refloop::check::framing::TrackingAlloc;
//
//    libfuzzer_sys::fuzz_target!(|input: (u8, Vec<u8>, Vec<usize>)| {
//        let (limit, stream, cuts) = input;
//        refloop::check::framing::check_stream(|| NulTerminated::new(limit.into()), &stream, &cuts);
//    });
