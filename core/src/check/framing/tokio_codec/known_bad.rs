//! Deliberately broken tokio-util codecs that the adapter's checks must reject.
//!
//! They prove that [`check_codec`](super::check_codec) and the `framing_tokio_codec` fuzz
//! target have teeth through the adapter: the tests in
//! `integration/tests/tokio_codec_oracle.rs` assert the exact property each one violates, and
//! `fuzz/teeth.txt` states how many fuzzer executions find one.
//!
//! Never use these as codecs.

use std::io;

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The names the `framing_tokio_codec` fuzz target accepts in `REFLOOP_KNOWN_BAD`.
pub const NAMES: &[&str] = &["tokio_header_off_by_one", "tokio_reserve_before_check"];

/// A 4-byte big-endian length prefix, as `LengthDelimitedCodec` writes it.
fn encode_prefixed(max_frame_len: usize, msg: &[u8], dst: &mut BytesMut) -> io::Result<()> {
    let len = u32::try_from(msg.len())
        .ok()
        .filter(|&n| n as usize <= max_frame_len)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too long"))?;
    dst.put_u32(len);
    dst.extend_from_slice(msg);
    Ok(())
}

/// The declared length at the front of `src`, once the whole header has arrived.
fn header(src: &BytesMut) -> Option<usize> {
    let head = src.get(..4)?;
    Some(u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize)
}

/// A length-prefixed codec that takes one byte too few after a header that arrived in pieces,
/// so the frame's last byte is read again as the start of the next header.
///
/// Fed whole, a stream decodes correctly; only fragmentation shows the bug.
/// Violates fragmentation independence.
#[derive(Debug, Clone)]
pub struct HeaderOffByOneCodec {
    max_frame_len: usize,
    saw_partial_header: bool,
}

impl HeaderOffByOneCodec {
    /// A broken codec with `LengthDelimitedCodec`'s wire format and limit.
    pub fn new(max_frame_len: usize) -> Self {
        Self {
            max_frame_len,
            saw_partial_header: false,
        }
    }
}

impl Decoder for HeaderOffByOneCodec {
    type Item = BytesMut;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        let Some(len) = header(src) else {
            self.saw_partial_header |= !src.is_empty();
            return Ok(None);
        };
        if len > self.max_frame_len {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
        }
        if src.len() < 4 + len {
            return Ok(None);
        }
        let frame = BytesMut::from(&src[4..4 + len]);
        // The bug: a header seen in pieces is counted one byte short.
        let used = 4 + len - usize::from(self.saw_partial_header && len > 0);
        self.saw_partial_header = false;
        src.advance(used);
        Ok(Some(frame))
    }
}

impl Encoder<BytesMut> for HeaderOffByOneCodec {
    type Error = io::Error;

    fn encode(&mut self, msg: BytesMut, dst: &mut BytesMut) -> io::Result<()> {
        encode_prefixed(self.max_frame_len, &msg, dst)
    }
}

/// A length-prefixed codec that reserves room for the declared length before checking it
/// against the limit (the limit check is right, the order is wrong).
///
/// Violates bounded allocation: a peer's header can make it reserve up to 4 GiB.
#[derive(Debug, Clone)]
pub struct ReserveBeforeCheckCodec {
    max_frame_len: usize,
}

impl ReserveBeforeCheckCodec {
    /// A broken codec with `LengthDelimitedCodec`'s wire format and limit.
    pub fn new(max_frame_len: usize) -> Self {
        Self { max_frame_len }
    }
}

impl Decoder for ReserveBeforeCheckCodec {
    type Item = BytesMut;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        let Some(len) = header(src) else {
            return Ok(None);
        };
        // The bug: room for the whole frame is reserved before the length is checked.
        if src.capacity() < 4 + len {
            let mut bigger: Vec<u8> = Vec::new();
            if bigger.try_reserve_exact(4 + len).is_err() {
                return Err(io::Error::new(io::ErrorKind::OutOfMemory, "cannot reserve"));
            }
            drop(bigger);
        }
        if len > self.max_frame_len {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
        }
        if src.len() < 4 + len {
            return Ok(None);
        }
        src.advance(4);
        Ok(Some(src.split_to(len)))
    }
}

impl Encoder<BytesMut> for ReserveBeforeCheckCodec {
    type Error = io::Error;

    fn encode(&mut self, msg: BytesMut, dst: &mut BytesMut) -> io::Result<()> {
        encode_prefixed(self.max_frame_len, &msg, dst)
    }
}
