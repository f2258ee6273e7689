//! Checking your own tokio-util codec with refloop's framing oracle.
//!
//! Run it with `cargo run -p refloop --features tokio-codec --example tokio_codec_oracle`.
//!
//! The codec here is a user-written `Decoder + Encoder`: a 2-byte big-endian length, then the
//! payload. Like tokio-util's `LengthDelimitedCodec`, it takes the header out of the buffer as
//! soon as it has arrived and remembers the length. The checks take a line each:
//!
//! 1. `check_codec(make, stream, cuts)` on named edge cases: the stream is also fed whole and
//!    byte by byte, and the whole framing contract is checked.
//! 2. `check_codec_round_trip(make, messages, cuts)`.
//! 3. The same calls from a proptest, or `fuzz_check(make, data)` from a fuzz target (see the
//!    end of this file).
//!
//! The buggy variant (`error_at_eof = false`) relies on `Decoder::decode_eof`'s default: when
//! the stream ends after a header, the header is already gone from the buffer, so the default
//! sees an empty buffer and the frame vanishes. The oracle rejects it for silent loss.

use std::io;

use bytes::{Buf, BufMut, BytesMut};
use refloop::check::framing::tokio_codec::{
    check_codec, check_codec_round_trip, try_check_codec, TokioCodec,
};
use refloop::check::framing::Property;
use tokio_util::codec::{Decoder, Encoder};

/// Frames of at most `max_len` bytes behind a 2-byte big-endian length.
#[derive(Debug)]
struct ShortFrames {
    max_len: usize,
    /// The length of the frame whose header was taken, while its payload is awaited.
    pending: Option<usize>,
    /// Whether a stream that ends inside a frame is an error (the correct way).
    error_at_eof: bool,
}

impl ShortFrames {
    fn new(max_len: usize) -> Self {
        Self {
            max_len,
            pending: None,
            error_at_eof: true,
        }
    }
}

impl Decoder for ShortFrames {
    type Item = BytesMut;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        let len = match self.pending {
            Some(len) => len,
            None => {
                if src.len() < 2 {
                    return Ok(None);
                }
                let len = usize::from(src.get_u16());
                if len > self.max_len {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
                }
                self.pending = Some(len);
                len
            }
        };
        if src.len() < len {
            return Ok(None);
        }
        self.pending = None;
        Ok(Some(src.split_to(len)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if !self.error_at_eof || (src.is_empty() && self.pending.is_none()) => Ok(None),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream ended inside a frame",
            )),
        }
    }
}

impl Encoder<BytesMut> for ShortFrames {
    type Error = io::Error;

    fn encode(&mut self, msg: BytesMut, dst: &mut BytesMut) -> io::Result<()> {
        let len = u16::try_from(msg.len())
            .ok()
            .filter(|&n| usize::from(n) <= self.max_len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too long"))?;
        dst.put_u16(len);
        dst.extend_from_slice(&msg);
        Ok(())
    }
}

fn main() {
    // The adapter needs the most bytes the codec may leave undecoded: header plus payload.
    let make = || TokioCodec::new(ShortFrames::new(8), 2 + 8);

    // 1. Named edge cases, each checked whole, byte by byte and at the given cuts.
    let report = check_codec(make, b"\x00\x02hi\x00\x00\x00\x03abc", &[1, 3, 3, 6]);
    let frames: Vec<&[u8]> = report.outcome.messages.iter().map(|m| &m[..]).collect();
    assert_eq!(frames, [&b"hi"[..], b"", b"abc"]);
    println!("edge case: {frames:?}");
    let report = check_codec(make, b"\x00\x01x\x00\x09", &[]);
    println!("over the limit: {:?}", report.outcome.end);
    let report = check_codec(make, b"\x00\x05ab", &[1]);
    println!("cut off at the end: {:?}", report.outcome.end);

    // 2. Round trip; the over-long message is rejected by encode and must write nothing.
    let messages: Vec<BytesMut> = [&b"a"[..], b"", b"nine byte", b"last"]
        .iter()
        .map(|m| BytesMut::from(*m))
        .collect();
    let report = check_codec_round_trip(make, &messages, &[2, 3]);
    println!(
        "round trip: {} of {} messages back (one is over the limit)",
        report.outcome.messages.len(),
        messages.len()
    );

    // The variant that relies on decode_eof's default loses a frame cut off after its header.
    let bad = || {
        TokioCodec::new(
            ShortFrames {
                error_at_eof: false,
                ..ShortFrames::new(8)
            },
            2 + 8,
        )
    };
    let violation = try_check_codec(bad, b"\x00\x01x\x00\x04", &[]).unwrap_err();
    assert_eq!(violation.property, Property::NoSilentLoss);
    println!("variant relying on the default decode_eof rejected: {violation}");
}

// 3. A fuzz target for this codec is as short (in `fuzz/fuzz_targets/short_frames.rs`, with a
//    `[[bin]]` entry in `fuzz/Cargo.toml` and `features = ["tokio-codec"]` on refloop):
//
//    #![no_main]
//    #[global_allocator]
//    static ALLOC: refloop::check::framing::TrackingAlloc = refloop::check::framing::TrackingAlloc;
//
//    libfuzzer_sys::fuzz_target!(|data: &[u8]| {
//        use refloop::check::framing::tokio_codec::{fuzz_check, TokioCodec};
//        fuzz_check(|| TokioCodec::new(ShortFrames::new(64), 2 + 64), data);
//    });
