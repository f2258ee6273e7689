//! The input of the `resp` fuzz target, shared with the replay test so a crash found by the
//! fuzzer replays as an ordinary test through the very same code.
//!
//! A case is one header byte, then the wire bytes themselves, so libFuzzer's byte mutations
//! and the dictionary act on the stream directly. The header byte `h` gives:
//!
//! - the cut stride, `(h & 15) + 1` (the stream is also split at every `stride`th offset);
//! - `max_bulk`, `16 << ((h >> 4) & 7)` (16 B to 2 KiB);
//! - `max_request`, `max_bulk + 64`, or 64 times that when `h >= 128` (up to 133 KiB, so the
//!   64 KiB errors are within reach of longer inputs).

use refloop::check::framing::known_bad::ReserveDeclaredBulk;
use refloop::check::framing::{try_check_round_trip, try_check_stream, Violation};
use refloop::framing::resp::Message;
use refloop::framing::{Framing, Resp};

/// One fuzz case.
#[derive(Debug, Clone)]
pub struct RespCase {
    /// The limit on one bulk.
    pub max_bulk: usize,
    /// The limit on one request.
    pub max_request: usize,
    /// The wire bytes.
    pub stream: Vec<u8>,
    /// Where the stream is split (besides whole and byte by byte).
    pub cuts: Vec<usize>,
}

impl RespCase {
    /// Reads a case from fuzzer bytes (any bytes make a case).
    pub fn from_fuzz_bytes(data: &[u8]) -> RespCase {
        let h = data.first().copied().unwrap_or(0);
        let stride = usize::from(h & 15) + 1;
        let max_bulk = 16usize << ((h >> 4) & 7);
        let max_request = (max_bulk + 64) << (6 * usize::from(h >> 7));
        let stream = data.get(1..).unwrap_or_default().to_vec();
        let cuts = (stride..stream.len()).step_by(stride).collect();
        RespCase {
            max_bulk,
            max_request,
            stream,
            cuts,
        }
    }

    /// Runs the oracle: the framing contract on the stream, and the round trip of every
    /// command it decoded. With `known_bad`, against [`ReserveDeclaredBulk`] instead.
    ///
    /// # Errors
    ///
    /// The first [`Violation`].
    pub fn try_check(&self, known_bad: bool) -> Result<(), Violation> {
        if known_bad {
            let (bulk, request) = (self.max_bulk, self.max_request);
            return self.check_with(|| ReserveDeclaredBulk::with_limits(bulk, request));
        }
        let (bulk, request) = (self.max_bulk, self.max_request);
        self.check_with(|| Resp::with_limits(bulk, request))
    }

    fn check_with<F>(&self, mut make: impl FnMut() -> F) -> Result<(), Violation>
    where
        F: Framing<Message = Message>,
    {
        let report = try_check_stream(&mut make, &self.stream, &self.cuts)?;
        let commands: Vec<Message> = report
            .outcome
            .messages
            .into_iter()
            .filter(|m| matches!(m, Message::Command(_) | Message::Empty))
            .collect();
        try_check_round_trip(make, &commands, &self.cuts)?;
        Ok(())
    }

    /// [`try_check`](Self::try_check), reading `REFLOOP_KNOWN_BAD=reserve_declared_bulk`;
    /// panics with the violation.
    #[track_caller]
    pub fn check_from_env(&self) {
        let known_bad = match std::env::var("REFLOOP_KNOWN_BAD") {
            Ok(name) if name == "reserve_declared_bulk" => true,
            Ok(name) if !name.is_empty() => {
                panic!(
                    "unknown REFLOOP_KNOWN_BAD {name:?} for resp, expected reserve_declared_bulk"
                )
            }
            _ => false,
        };
        if let Err(violation) = self.try_check(known_bad) {
            panic!("framing oracle: {violation}");
        }
    }
}
