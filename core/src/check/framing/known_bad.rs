//! Deliberately broken framings that the oracle must reject.
//!
//! Each one is a classic framing bug. They exist only to prove that
//! [`check_stream`](super::check_stream) and the fuzz targets built on it have teeth: the tests
//! in `core/tests/framing_known_bad.rs` assert the exact property each one violates, and
//! `fuzz/teeth.txt` states how many fuzzer executions find each one.
//!
//! Never use these as framings.

use std::borrow::Cow;

use crate::framing::{Decoded, FrameError, Framing};

/// The names the fuzz targets accept in `REFLOOP_KNOWN_BAD`.
pub const NAMES: &[&str] = &[
    "header_off_by_one",
    "rescanning_lines",
    "reserve_before_check",
];

/// Length-prefixed framing with an off-by-one when the header is split across reads.
///
/// When an earlier call saw only part of the header, it reports the frame as one byte shorter
/// than it is, so the last payload byte is decoded again as the start of the next header.
/// Fed whole, the stream decodes correctly; only fragmentation reveals the bug.
/// Violates fragmentation independence.
#[derive(Debug, Clone)]
pub struct HeaderOffByOne {
    max_frame_len: usize,
    /// Whether a call has seen the current header incomplete.
    saw_partial_header: bool,
}

impl HeaderOffByOne {
    /// A broken framing with the same limit semantics as `LengthPrefixed::new`.
    pub fn new(max_frame_len: usize) -> Self {
        Self {
            max_frame_len,
            saw_partial_header: false,
        }
    }
}

impl Framing for HeaderOffByOne {
    type Message = Vec<u8>;

    fn decode(&mut self, buf: &[u8]) -> Result<Decoded<Vec<u8>>, FrameError> {
        let Some(head) = buf.get(..4) else {
            self.saw_partial_header |= !buf.is_empty();
            return Ok(Decoded::NeedMore);
        };
        let declared = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if u64::from(declared) > self.max_frame_len as u64 {
            return Err(FrameError::TooLong {
                limit: self.max_frame_len,
                declared: u64::from(declared),
            });
        }
        let end = 4 + declared as usize;
        let Some(payload) = buf.get(4..end) else {
            return Ok(Decoded::NeedMore);
        };
        // The bug: the header bytes seen in an earlier call are counted as already consumed.
        let used = if self.saw_partial_header {
            end - 1
        } else {
            end
        };
        self.saw_partial_header = false;
        Ok(Decoded::Message(payload.to_vec(), used))
    }

    fn encode(&mut self, msg: &Vec<u8>, out: &mut Vec<u8>) -> Result<(), FrameError> {
        crate::framing::LengthPrefixed::new(self.max_frame_len).encode(msg, out)
    }

    fn max_buffered(&self) -> Option<usize> {
        Some(4 + self.max_frame_len)
    }
}

/// Line framing that rescans the whole buffer for `\n` on every call.
///
/// Correct output, quadratic work: a line of `n` bytes fed one byte at a time costs `n²/2`
/// byte comparisons. It counts them honestly in
/// [`bytes_examined`](Framing::bytes_examined). Violates linear work.
#[derive(Debug, Clone)]
pub struct RescanningLines {
    inner: crate::framing::Lines,
    examined: u64,
}

impl RescanningLines {
    /// A broken framing with the same limit semantics as `Lines::new`.
    pub fn new(max_line_len: usize) -> Self {
        Self {
            inner: crate::framing::Lines::new(max_line_len),
            examined: 0,
        }
    }
}

impl Framing for RescanningLines {
    type Message = String;

    fn decode(&mut self, buf: &[u8]) -> Result<Decoded<String>, FrameError> {
        let read_to = self.inner.max_line_len().saturating_add(1).min(buf.len());
        // The bug: no memory of how far the previous call scanned.
        match buf[..read_to].iter().position(|&b| b == b'\n') {
            Some(at) => self.examined += at as u64 + 1,
            None => self.examined += read_to as u64,
        }
        // A fresh correct decoder for the answer, so only the work differs.
        crate::framing::Lines::new(self.inner.max_line_len()).decode(buf)
    }

    fn encode(&mut self, msg: &String, out: &mut Vec<u8>) -> Result<(), FrameError> {
        self.inner.encode(msg, out)
    }

    fn decode_eof(&mut self, buf: &[u8]) -> Result<Option<String>, FrameError> {
        self.inner.decode_eof(buf)
    }

    fn max_buffered(&self) -> Option<usize> {
        self.inner.max_buffered()
    }

    fn bytes_examined(&self) -> Option<u64> {
        Some(self.examined)
    }
}

/// Length-prefixed framing that reserves room for the declared payload before checking the
/// declared length against the limit.
///
/// Its output is correct, errors included; only its allocations are wrong. A peer declaring
/// 4 GiB makes it ask for 4 GiB. Violates bounded allocation (needs
/// [`TrackingAlloc`](super::TrackingAlloc) installed to be seen).
#[derive(Debug, Clone)]
pub struct ReserveBeforeCheck {
    max_frame_len: usize,
    /// Where the payload is assembled.
    body: Vec<u8>,
}

impl ReserveBeforeCheck {
    /// A broken framing with the same limit semantics as `LengthPrefixed::new`.
    pub fn new(max_frame_len: usize) -> Self {
        Self {
            max_frame_len,
            body: Vec::new(),
        }
    }
}

impl Framing for ReserveBeforeCheck {
    type Message = Vec<u8>;

    fn decode(&mut self, buf: &[u8]) -> Result<Decoded<Vec<u8>>, FrameError> {
        let Some(head) = buf.get(..4) else {
            return Ok(Decoded::NeedMore);
        };
        let declared = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        // The bug: room for the payload is reserved before the limit check. The result is
        // ignored because the check below rejects the frame anyway.
        if self.body.capacity() < declared {
            let _ = self.body.try_reserve_exact(declared);
        }
        if declared > self.max_frame_len {
            return Err(FrameError::TooLong {
                limit: self.max_frame_len,
                declared: declared as u64,
            });
        }
        let Some(payload) = buf.get(4..4 + declared) else {
            return Ok(Decoded::NeedMore);
        };
        self.body.clear();
        self.body.extend_from_slice(payload);
        Ok(Decoded::Message(self.body.clone(), 4 + declared))
    }

    fn encode(&mut self, msg: &Vec<u8>, out: &mut Vec<u8>) -> Result<(), FrameError> {
        crate::framing::LengthPrefixed::new(self.max_frame_len).encode(msg, out)
    }

    fn decode_eof(&mut self, buf: &[u8]) -> Result<Option<Vec<u8>>, FrameError> {
        if buf.is_empty() {
            Ok(None)
        } else {
            Err(FrameError::Malformed(Cow::Borrowed(
                "stream ended inside a frame",
            )))
        }
    }

    fn max_buffered(&self) -> Option<usize> {
        Some(4 + self.max_frame_len)
    }
}

/// [`Resp`](crate::framing::Resp) with redis 7.0's habit of sizing its buffer by a declared
/// bulk length before the bulk arrives.
///
/// Redis does this for bulks of 32 KiB and more (`sdsMakeRoomForNonGreedy` in
/// `processMultibulkBuffer`), so a 26-byte request declaring 400 MB costs 400 MB at once.
/// Its output is that of `Resp`; only its allocations are wrong.
/// Violates bounded allocation (needs [`TrackingAlloc`](super::TrackingAlloc) installed).
/// The fuzz target `resp` runs it with `REFLOOP_KNOWN_BAD=reserve_declared_bulk`.
#[derive(Debug, Clone)]
pub struct ReserveDeclaredBulk {
    inner: crate::framing::Resp,
    /// Where the bulk would be assembled.
    room: Vec<u8>,
}

impl ReserveDeclaredBulk {
    /// A broken framing with the limits of `Resp::with_limits`.
    pub fn with_limits(max_bulk: usize, max_request: usize) -> Self {
        Self {
            inner: crate::framing::Resp::with_limits(max_bulk, max_request),
            room: Vec::new(),
        }
    }
}

impl Framing for ReserveDeclaredBulk {
    type Message = crate::framing::resp::Message;

    fn decode(&mut self, buf: &[u8]) -> Result<Decoded<Self::Message>, FrameError> {
        use crate::framing::resp::{string2ll, Message, ProtocolError};
        let decoded = self.inner.decode(buf)?;
        let declared = match &decoded {
            Decoded::NeedMore => self.inner.pending_bulk_len(),
            // A length over the limit: the header is the line ending two bytes before `used`.
            Decoded::Message(Message::ProtocolError(ProtocolError::InvalidBulkLength), used) => buf
                .get(..used.saturating_sub(2))
                .and_then(|head| {
                    let dollar = head.iter().rposition(|&b| b == b'$')?;
                    string2ll(&head[dollar + 1..])
                })
                .and_then(|n| usize::try_from(n).ok()),
            Decoded::Message(..) => None,
        };
        if let Some(declared) = declared {
            // The bug: room for the whole declared bulk before a byte of it arrived, and before
            // the length was checked against the limit. The result is ignored: the oracle
            // refuses absurd requests, and the asking is the bug.
            if self.room.capacity() < declared {
                let _ = self.room.try_reserve_exact(declared);
            }
        }
        Ok(decoded)
    }

    fn encode(&mut self, msg: &Self::Message, out: &mut Vec<u8>) -> Result<(), FrameError> {
        self.inner.encode(msg, out)
    }

    fn max_buffered(&self) -> Option<usize> {
        self.inner.max_buffered()
    }

    fn bytes_needed(&self, buf: &[u8]) -> Option<usize> {
        self.inner.bytes_needed(buf)
    }

    fn bytes_examined(&self) -> Option<u64> {
        self.inner.bytes_examined()
    }
}
