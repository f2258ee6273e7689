//! The framing oracle for tokio-util codecs (feature `tokio-codec`).
//!
//! [`TokioCodec`] wraps any `tokio_util::codec::Decoder + Encoder` in a [`Framing`], so that
//! [`check_codec`], [`check_codec_round_trip`] and the fuzz template [`fuzz_check`] run it
//! through everything [`check_stream`](super::check_stream) checks, without adopting refloop's
//! loop.
//!
//! # How a codec is driven
//!
//! The adapter keeps the codec's own `BytesMut`, exactly as tokio-util's `FramedRead` does.
//! Each `decode` call copies the bytes that arrived since the last call into it and calls
//! `Decoder::decode` once; the oracle calls again until `NeedMore`, as `FramedRead` does after
//! every read. At the end of the stream it calls `Decoder::decode_eof`, and then once more,
//! because `FramedRead` keeps calling it until it returns `None`. The chunks the oracle makes
//! reach the codec unchanged, so a codec whose output depends on how the stream was split fails
//! fragmentation independence.
//!
//! A tokio codec may take bytes out of its buffer without emitting a frame (`LengthDelimitedCodec`
//! takes the header first). The adapter counts them and reports them as consumed by the next
//! frame, so the oracle's offsets stay those of the stream. If the stream ends while such bytes
//! are held and `decode_eof` returns neither a frame nor an error, they were lost silently:
//! [`check_codec`] reports [`Property::NoSilentLoss`].
//!
//! The adapter's copy into the codec's buffer stands for the loop's read and is not counted by
//! [`TrackingAlloc`](super::TrackingAlloc); what the codec allocates is.
//!
//! # Examples
//!
//! ```
//! use refloop::check::framing::tokio_codec::{check_codec, try_check_codec, TokioCodec};
//! use refloop::check::framing::Property;
//! use tokio_util::codec::{LengthDelimitedCodec, LinesCodec};
//!
//! let lines = || TokioCodec::new(LinesCodec::new_with_max_length(16), 16);
//! let report = check_codec(lines, b"one\r\ntwo\nthree", &[2, 7]);
//! assert_eq!(report.outcome.messages, ["one", "two"]);
//! assert_eq!(report.outcome.end, Ok(Some("three".to_string())));
//!
//! // tokio-util's LengthDelimitedCodec forgets a frame whose header arrived just before EOF.
//! let length = || {
//!     let codec = LengthDelimitedCodec::builder().max_frame_length(64).new_codec();
//!     TokioCodec::with_encoder_item(codec, 4 + 64, |frame| frame.clone().freeze())
//! };
//! let violation = try_check_codec(length, &[0, 0, 0, 5], &[]).unwrap_err();
//! assert_eq!(violation.property, Property::NoSilentLoss);
//! ```
//!
//! A fuzz target for your codec (`fuzz/fuzz_targets/my_codec.rs`, plus a `[[bin]]` entry):
//!
//! ```text
//! #![no_main]
//! #[global_allocator]
//! static ALLOC: refloop::check::framing::TrackingAlloc = refloop::check::framing::TrackingAlloc;
//!
//! libfuzzer_sys::fuzz_target!(|data: &[u8]| {
//!     use refloop::check::framing::tokio_codec::{fuzz_check, TokioCodec};
//!     fuzz_check(|| TokioCodec::new(MyCodec::new(1024), 1024), data);
//! });
//! ```

use std::borrow::Cow;
use std::fmt::{self, Debug, Display};

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use super::{
    alloc, decode_stream, try_check_round_trip, try_check_stream, Property, Report, Violation,
};
use crate::framing::{Decoded, FrameError, Framing};

/// Allocations of at most this many bytes (plus twice the codec buffer's capacity) inside a
/// codec call do not count against [`Property::BoundedAllocation`]: `BytesMut`'s shared header
/// is 40 bytes and a boxed `io::Error` with its message a few dozen, which a small limit would
/// otherwise flag.
pub const ALLOCATION_SLACK: usize = 64;

/// A tokio-util codec seen as a [`Framing`], for the oracle.
///
/// `C` is the codec; `E` is the item its `Encoder` takes, which may differ from the `Decoder`'s
/// item (`LengthDelimitedCodec` decodes `BytesMut` and encodes `Bytes`). Messages are the
/// decoder's items.
pub struct TokioCodec<C: Decoder, E> {
    codec: C,
    /// The codec's input buffer, as `FramedRead` keeps it: the bytes copied in that the codec
    /// has not taken out yet.
    buf: BytesMut,
    /// How many bytes at the front of the caller's buffer have been copied into `buf` (and are
    /// either still there or were taken by the codec since the last frame).
    seen: usize,
    /// Of those, how many the codec took out of `buf` since the last frame without emitting
    /// one. They count as consumed by the next frame.
    taken: usize,
    max_buffered: usize,
    to_item: fn(&C::Item) -> E,
    map_error: fn(&C::Error) -> FrameError,
    /// What went wrong at the end of the stream, for [`Property::NoSilentLoss`].
    eof_loss: Option<String>,
}

impl<C> TokioCodec<C, C::Item>
where
    C: Decoder + Encoder<C::Item>,
    C::Item: Clone,
    <C as Decoder>::Error: Display,
{
    /// Wraps `codec`, whose encoder takes the items its decoder yields (`LinesCodec`,
    /// `BytesCodec`).
    ///
    /// `max_buffered` is the most undecoded bytes the codec may ask its caller to hold (for
    /// `LinesCodec::new_with_max_length(n)`, `n`); the oracle checks it like
    /// [`Framing::max_buffered`]. Decode errors become [`FrameError::Malformed`] with the
    /// error's text; see [`map_decode_error`](Self::map_decode_error).
    pub fn new(codec: C, max_buffered: usize) -> Self {
        Self::with_encoder_item(codec, max_buffered, C::Item::clone)
    }
}

impl<C, E> TokioCodec<C, E>
where
    C: Decoder,
    C::Error: Display,
{
    /// Wraps `codec`, whose encoder takes `E`; `to_item` turns a decoded item into one.
    ///
    /// For `LengthDelimitedCodec`, `|frame| frame.clone().freeze()`. Make `to_item` lossless on
    /// decoded frames, or round trips fail for the conversion rather than for the codec.
    pub fn with_encoder_item(codec: C, max_buffered: usize, to_item: fn(&C::Item) -> E) -> Self {
        Self {
            codec,
            buf: BytesMut::new(),
            seen: 0,
            taken: 0,
            max_buffered,
            to_item,
            map_error: |e| FrameError::Malformed(Cow::Owned(e.to_string())),
            eof_loss: None,
        }
    }
}

impl<C: Decoder, E> TokioCodec<C, E> {
    /// Replaces how decode errors become [`FrameError`]s, for instance to report a codec's
    /// length error as [`FrameError::TooLong`].
    #[must_use]
    pub fn map_decode_error(mut self, map: fn(&C::Error) -> FrameError) -> Self {
        self.map_error = map;
        self
    }

    /// The wrapped codec.
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// What the end of the stream lost silently, if anything: bytes the codec had taken out of
    /// its buffer when `decode_eof` returned `None`, or a second result from `decode_eof`
    /// after a frame (`FramedRead` would deliver it; a [`Framing`] cannot).
    pub fn eof_loss(&self) -> Option<&str> {
        self.eof_loss.as_deref()
    }

    /// Copies the bytes of `input` the codec has not seen into its buffer.
    fn feed(&mut self, input: &[u8]) -> Result<(), FrameError> {
        let Some(fresh) = input.get(self.seen..) else {
            return Err(alloc::unmeasured(|| {
                FrameError::Malformed(Cow::Owned(format!(
                    "adapter: the caller's buffer holds {} bytes, fewer than the {} not yet \
                     consumed",
                    input.len(),
                    self.seen
                )))
            }));
        };
        let buf = &mut self.buf;
        alloc::unmeasured(|| buf.extend_from_slice(fresh));
        self.seen = input.len();
        Ok(())
    }

    /// Runs one codec call on the buffer and counts what it took out.
    ///
    /// Allocations up to [`ALLOCATION_SLACK`] plus twice the buffer's capacity are the reader's
    /// cost, not the codec's reservation for a declared length, and do not count against the
    /// allocation bound.
    fn call<R>(&mut self, f: impl FnOnce(&mut C, &mut BytesMut) -> R) -> Result<R, FrameError> {
        let before = self.buf.len();
        let slack = ALLOCATION_SLACK + 2 * self.buf.capacity().max(before);
        let (codec, buf) = (&mut self.codec, &mut self.buf);
        let result = alloc::with_slack(slack, || f(codec, buf));
        let after = self.buf.len();
        if after > before {
            return Err(alloc::unmeasured(|| {
                FrameError::Malformed(Cow::Owned(format!(
                    "adapter: the codec added {} bytes to its input buffer",
                    after - before
                )))
            }));
        }
        self.taken += before - after;
        Ok(result)
    }

    /// A decode error as a [`FrameError`], made outside the allocation measurement.
    fn error(&self, e: &C::Error) -> FrameError {
        alloc::unmeasured(|| (self.map_error)(e))
    }

    /// A frame was emitted: everything taken since the last one belongs to it.
    fn frame_used(&mut self) -> usize {
        let used = self.taken;
        self.taken = 0;
        self.seen -= used;
        used
    }
}

impl<C, E> Framing for TokioCodec<C, E>
where
    C: Decoder + Encoder<E>,
    <C as Encoder<E>>::Error: Display,
{
    type Message = C::Item;

    fn decode(&mut self, buf: &[u8]) -> Result<Decoded<C::Item>, FrameError> {
        self.feed(buf)?;
        match self.call(|codec, buf| codec.decode(buf))? {
            Ok(Some(item)) => Ok(Decoded::Message(item, self.frame_used())),
            Ok(None) => Ok(Decoded::NeedMore),
            Err(e) => Err(self.error(&e)),
        }
    }

    fn decode_eof(&mut self, buf: &[u8]) -> Result<Option<C::Item>, FrameError> {
        self.feed(buf)?;
        match self.call(|codec, buf| codec.decode_eof(buf))? {
            Ok(Some(item)) => {
                self.frame_used();
                // `FramedRead` calls `decode_eof` until it returns `None`.
                let again = self.call(|codec, buf| codec.decode_eof(buf))?;
                let map_error = self.map_error;
                self.eof_loss = alloc::unmeasured(|| match again {
                    Ok(None) => None,
                    Ok(Some(_)) => {
                        Some("decode_eof returned a second frame after the last one".to_string())
                    }
                    Err(e) => Some(format!(
                        "decode_eof returned a frame, then the error `{}`",
                        map_error(&e)
                    )),
                });
                Ok(Some(item))
            }
            Ok(None) => {
                if self.taken > 0 {
                    let taken = self.taken;
                    self.eof_loss = alloc::unmeasured(|| {
                        Some(format!(
                            "the stream ended with {taken} bytes taken by the codec but no frame \
                             and no error from decode_eof"
                        ))
                    });
                }
                Ok(None)
            }
            Err(e) => Err(self.error(&e)),
        }
    }

    fn encode(&mut self, msg: &C::Item, out: &mut Vec<u8>) -> Result<(), FrameError> {
        // Whatever the codec writes is kept, even on error, as in `FramedWrite`'s buffer: the
        // oracle then sees a partial write as a broken `EncodeAtomic`.
        let mut dst = BytesMut::new();
        let result = self.codec.encode((self.to_item)(msg), &mut dst);
        out.extend_from_slice(&dst);
        result.map_err(|e| FrameError::Malformed(Cow::Owned(e.to_string())))
    }

    fn max_buffered(&self) -> Option<usize> {
        Some(self.max_buffered)
    }
}

impl<C: Decoder, E> Debug for TokioCodec<C, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokioCodec")
            .field("codec", &std::any::type_name::<C>())
            .field("buffered", &self.buf.len())
            .field("seen", &self.seen)
            .field("taken", &self.taken)
            .field("max_buffered", &self.max_buffered)
            .field("eof_loss", &self.eof_loss)
            .finish()
    }
}

/// The oracle's three fragmentations, as [`decode_stream`] cuts and the oracle's run names.
fn runs(stream: &[u8], cuts: &[usize]) -> [(String, Vec<usize>); 3] {
    let mut sorted: Vec<usize> = cuts.iter().map(|&c| c.min(stream.len())).collect();
    sorted.sort_unstable();
    let shown: Vec<usize> = sorted.iter().take(32).copied().collect();
    let more = if sorted.len() > 32 { ", .." } else { "" };
    [
        ("whole".to_string(), Vec::new()),
        ("byte-by-byte".to_string(), (1..stream.len()).collect()),
        (format!("cuts {shown:?}{more}"), sorted),
    ]
}

/// Checks a tokio-util codec on `stream` whole, byte by byte and split at `cuts`.
///
/// Everything [`try_check_stream`](super::try_check_stream) checks, plus
/// [`Property::NoSilentLoss`] in each of the three runs. `make` builds a fresh adapter for each
/// run.
///
/// # Errors
///
/// Returns the first [`Violation`] found.
pub fn try_check_codec<C, E>(
    mut make: impl FnMut() -> TokioCodec<C, E>,
    stream: &[u8],
    cuts: &[usize],
) -> Result<Report<C::Item>, Violation>
where
    C: Decoder + Encoder<E>,
    C::Item: Clone + PartialEq + Debug,
    <C as Encoder<E>>::Error: Display,
{
    let report = try_check_stream(&mut make, stream, cuts)?;
    for (run, run_cuts) in runs(stream, cuts) {
        let mut framing = make();
        decode_stream(&mut framing, stream, &run_cuts);
        if let Some(detail) = framing.eof_loss {
            return Err(Violation {
                property: Property::NoSilentLoss,
                run,
                detail,
            });
        }
    }
    Ok(report)
}

/// Checks a tokio-util codec on `stream`; panics with the [`Violation`] if one is found.
///
/// See [`try_check_codec`].
#[track_caller]
pub fn check_codec<C, E>(
    make: impl FnMut() -> TokioCodec<C, E>,
    stream: &[u8],
    cuts: &[usize],
) -> Report<C::Item>
where
    C: Decoder + Encoder<E>,
    C::Item: Clone + PartialEq + Debug,
    <C as Encoder<E>>::Error: Display,
{
    match try_check_codec(make, stream, cuts) {
        Ok(report) => report,
        Err(violation) => panic!("framing oracle (tokio codec): {violation}"),
    }
}

/// Encodes `messages` with the codec and checks that every fragmentation decodes them back.
///
/// [`try_check_round_trip`](super::try_check_round_trip) for a codec: a rejected message must
/// write nothing, and the encoded stream must pass everything
/// [`try_check_stream`](super::try_check_stream) checks (a frame lost at the end shows as a
/// broken round trip).
///
/// # Errors
///
/// Returns the first [`Violation`] found.
pub fn try_check_codec_round_trip<C, E>(
    mut make: impl FnMut() -> TokioCodec<C, E>,
    messages: &[C::Item],
    cuts: &[usize],
) -> Result<Report<C::Item>, Violation>
where
    C: Decoder + Encoder<E>,
    C::Item: Clone + PartialEq + Debug,
    <C as Encoder<E>>::Error: Display,
{
    try_check_round_trip(&mut make, messages, cuts)
}

/// Checks that `messages` round-trip through the codec; panics with the [`Violation`] if not.
///
/// See [`try_check_codec_round_trip`].
#[track_caller]
pub fn check_codec_round_trip<C, E>(
    make: impl FnMut() -> TokioCodec<C, E>,
    messages: &[C::Item],
    cuts: &[usize],
) -> Report<C::Item>
where
    C: Decoder + Encoder<E>,
    C::Item: Clone + PartialEq + Debug,
    <C as Encoder<E>>::Error: Display,
{
    match try_check_codec_round_trip(make, messages, cuts) {
        Ok(report) => report,
        Err(violation) => panic!("framing oracle (tokio codec): {violation}"),
    }
}

/// Most cut points a fuzz input carries.
pub const FUZZ_MAX_CUTS: usize = 8;

/// Splits a fuzz input into a stream and cut points.
///
/// The first byte gives the number of cuts (modulo `FUZZ_MAX_CUTS + 1`), each cut is the next
/// two bytes (big-endian), and the rest is the stream. The stream comes last and raw, so the
/// fuzzer's byte mutations and dictionary act on it directly. An input too short for its cuts
/// has fewer cuts.
pub fn fuzz_input(data: &[u8]) -> (&[u8], Vec<usize>) {
    let Some((&count, rest)) = data.split_first() else {
        return (data, Vec::new());
    };
    let count = usize::from(count) % (FUZZ_MAX_CUTS + 1);
    let count = count.min(rest.len() / 2);
    let (head, stream) = rest.split_at(count * 2);
    let cuts = head
        .chunks_exact(2)
        .map(|pair| usize::from(u16::from_be_bytes([pair[0], pair[1]])))
        .collect();
    (stream, cuts)
}

/// The fuzz-target template: checks the codec on the stream a fuzz input carries, then checks
/// that the messages it decoded round-trip through the codec.
///
/// See [`fuzz_input`] for the input's layout. Panics with the [`Violation`] (a crash for the
/// fuzzer) if one is found.
#[track_caller]
pub fn fuzz_check<C, E>(mut make: impl FnMut() -> TokioCodec<C, E>, data: &[u8])
where
    C: Decoder + Encoder<E>,
    C::Item: Clone + PartialEq + Debug,
    <C as Encoder<E>>::Error: Display,
{
    let (stream, cuts) = fuzz_input(data);
    let report = check_codec(&mut make, stream, &cuts);
    check_codec_round_trip(&mut make, &report.outcome.messages, &cuts);
}

#[doc(hidden)]
pub mod known_bad;
