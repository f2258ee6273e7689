//! Framing decode throughput: refloop's `LengthPrefixed` and `Lines` against tokio-util's
//! `LengthDelimitedCodec` and `LinesCodec`, over the same bytes fed in the same chunks.
//!
//! Both sides are fed the way their event loops feed them:
//! refloop's decoder sees a growing buffer whose decoded prefix is cut off lazily (the loop
//! keeps a start offset and compacts only when the dead prefix is at least half the buffer),
//! tokio-util's decoder sees a `BytesMut` that each chunk is appended to and each frame is split
//! off, as `FramedRead` does.
//! Every decoded message is counted and its length summed, and both totals are checked against
//! the stream's known contents, so a decoder that skips work cannot score.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use refloop::framing::{Decoded, Framing, LengthPrefixed, Lines};
use tokio_util::codec::{Decoder, LengthDelimitedCodec, LinesCodec};

/// Which framing a case uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 4-byte big-endian length prefix.
    Length,
    /// Newline-terminated lines.
    Lines,
}

/// One stream to decode.
#[derive(Debug, Clone)]
pub struct Stream {
    /// The framing it is written in.
    pub kind: Kind,
    /// Payload bytes per message (for lines: bytes before the `\n`).
    pub payload: usize,
    /// The encoded bytes.
    pub bytes: Vec<u8>,
    /// How many messages it holds.
    pub messages: u64,
}

impl Stream {
    /// A stream of about `target_bytes` bytes of `payload`-byte messages.
    ///
    /// Payloads are printable ASCII that varies from message to message, so neither side can
    /// benefit from repeated content.
    pub fn build(kind: Kind, payload: usize, target_bytes: usize) -> Stream {
        let wire = match kind {
            Kind::Length => payload + 4,
            Kind::Lines => payload + 1,
        };
        let messages = (target_bytes / wire).max(1) as u64;
        let mut bytes = Vec::with_capacity(wire * messages as usize);
        for i in 0..messages {
            if kind == Kind::Length {
                bytes.extend_from_slice(&(payload as u32).to_be_bytes());
            }
            let start = bytes.len();
            bytes.extend((0..payload).map(|j| b'a' + ((i as usize + j) % 26) as u8));
            debug_assert!(!bytes[start..].contains(&b'\n'));
            if kind == Kind::Lines {
                bytes.push(b'\n');
            }
        }
        Stream {
            kind,
            payload,
            bytes,
            messages,
        }
    }

    /// A short label such as `length 32 B`.
    pub fn label(&self) -> String {
        let k = match self.kind {
            Kind::Length => "LengthPrefixed",
            Kind::Lines => "Lines",
        };
        if self.payload >= 1024 {
            format!("{k} {} KiB", self.payload / 1024)
        } else {
            format!("{k} {} B", self.payload)
        }
    }
}

/// The decoders compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeImpl {
    /// refloop's framing of the stream's kind.
    Refloop,
    /// tokio-util's codec of the stream's kind.
    TokioUtil,
    /// A raw `memchr` count of `\n` over the whole stream (lines only): the physical limit of a
    /// line scanner.
    Memchr,
}

impl DecodeImpl {
    /// The name used in tables.
    pub fn name(self) -> &'static str {
        match self {
            DecodeImpl::Refloop => "refloop",
            DecodeImpl::TokioUtil => "tokio-util",
            DecodeImpl::Memchr => "memchr scan",
        }
    }

    /// Decodes the whole stream in `chunk`-byte pieces and returns the elapsed time.
    ///
    /// # Panics
    ///
    /// Panics when the decoder reports an error or the message count or payload total differs
    /// from what the stream holds.
    pub fn run(self, stream: &Stream, chunk: usize) -> Duration {
        let max = 8 * 1024 * 1024;
        let start = Instant::now();
        let (messages, payload_bytes) = match (self, stream.kind) {
            (DecodeImpl::Refloop, Kind::Length) => {
                refloop_decode(LengthPrefixed::new(max), &stream.bytes, chunk, |m| m.len())
            }
            (DecodeImpl::Refloop, Kind::Lines) => {
                refloop_decode(Lines::new(max), &stream.bytes, chunk, |m| m.len())
            }
            (DecodeImpl::TokioUtil, Kind::Length) => {
                let codec = LengthDelimitedCodec::builder()
                    .max_frame_length(max)
                    .new_codec();
                tokio_decode(codec, &stream.bytes, chunk, |m| m.len())
            }
            (DecodeImpl::TokioUtil, Kind::Lines) => tokio_decode(
                LinesCodec::new_with_max_length(max),
                &stream.bytes,
                chunk,
                |m| m.len(),
            ),
            (DecodeImpl::Memchr, _) => {
                let n = memchr::memchr_iter(b'\n', black_box(&stream.bytes)).count() as u64;
                (n, n * stream.payload as u64)
            }
        };
        let elapsed = start.elapsed();
        assert_eq!(
            messages,
            stream.messages,
            "{} decoded the wrong number of messages",
            self.name()
        );
        assert_eq!(
            payload_bytes,
            stream.messages * stream.payload as u64,
            "{} decoded the wrong payload bytes",
            self.name()
        );
        elapsed
    }
}

/// Feeds `bytes` to a refloop framing in `chunk`-byte pieces, the way the loop's read buffer
/// does, and returns (messages, payload bytes).
pub fn refloop_decode<F: Framing>(
    mut framing: F,
    bytes: &[u8],
    chunk: usize,
    len: impl Fn(&F::Message) -> usize,
) -> (u64, u64) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut start = 0usize;
    let (mut messages, mut payload) = (0u64, 0u64);
    for piece in bytes.chunks(chunk) {
        if start == buf.len() {
            buf.clear();
            start = 0;
        } else if start >= 4096 && start * 2 >= buf.len() {
            buf.drain(..start);
            start = 0;
        }
        buf.extend_from_slice(piece);
        loop {
            match framing.decode(&buf[start..]) {
                Ok(Decoded::Message(m, used)) => {
                    start += used;
                    messages += 1;
                    payload += len(&m) as u64;
                    black_box(m);
                }
                Ok(Decoded::NeedMore) => break,
                Err(e) => panic!("refloop decode failed: {e}"),
            }
        }
    }
    assert_eq!(start, buf.len(), "refloop left undecoded bytes");
    (messages, payload)
}

/// Feeds `bytes` to a tokio-util decoder in `chunk`-byte pieces, the way `FramedRead` does,
/// and returns (messages, payload bytes).
pub fn tokio_decode<D: Decoder>(
    mut codec: D,
    bytes: &[u8],
    chunk: usize,
    len: impl Fn(&D::Item) -> usize,
) -> (u64, u64)
where
    D::Error: std::fmt::Debug,
{
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let (mut messages, mut payload) = (0u64, 0u64);
    for piece in bytes.chunks(chunk) {
        buf.extend_from_slice(piece);
        while let Some(m) = codec.decode(&mut buf).expect("tokio-util decode failed") {
            messages += 1;
            payload += len(&m) as u64;
            black_box(m);
        }
    }
    assert!(buf.is_empty(), "tokio-util left undecoded bytes");
    (messages, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_decoder_agrees_on_every_stream_and_chunking() {
        for (kind, payload) in [(Kind::Length, 32), (Kind::Lines, 40), (Kind::Lines, 4096)] {
            let s = Stream::build(kind, payload, 40_000);
            for chunk in [1, 7, 16 * 1024] {
                for d in [DecodeImpl::Refloop, DecodeImpl::TokioUtil] {
                    // `run` asserts the message count and payload total.
                    d.run(&s, chunk);
                }
            }
            if kind == Kind::Lines {
                DecodeImpl::Memchr.run(&s, 16 * 1024);
            }
        }
    }

    #[test]
    fn the_count_check_rejects_a_stream_with_a_message_missing() {
        let mut s = Stream::build(Kind::Length, 32, 4_000);
        s.bytes.truncate(s.bytes.len() - 36);
        let caught = std::panic::catch_unwind(|| DecodeImpl::TokioUtil.run(&s, 16 * 1024));
        assert!(caught.is_err());
    }
}
