//! tokio-util as an independent peer implementation: the differential check.
//!
//! Shared by `integration/tests/framing_differential.rs`, `framing_regressions.rs` and the
//! `framing_tokio` fuzz target (through `#[path]`), because tokio-util is only a dev and fuzz
//! dependency and so cannot be named from `refloop-integration`'s library.
//!
//! Both sides decode the same stream split at the same cuts, then handle end of stream the way
//! each library's stream adapter does. They must produce the same messages, and an error of
//! the same kind after the same number of messages. After the first error nothing is compared:
//! there tokio-util's `LinesCodec` discards the over-long line and carries on, while refloop
//! closes the connection (a documented, deliberate difference).
//!
//! One more documented difference, found by the `framing_tokio` fuzz target: a length-prefixed
//! stream that ends right after a complete header, before any payload byte. tokio-util's
//! `LengthDelimitedCodec` has already consumed the header, so `decode_eof` sees an empty buffer
//! and the stream ends cleanly; refloop reports the truncated frame. The comparison accepts
//! exactly that case ([`eof_after_bare_header`]).

use bytes::BytesMut;
use refloop::check::framing::decode_stream;
use refloop::check::framing::known_bad::{HeaderOffByOne, RescanningLines, ReserveBeforeCheck};
use refloop::framing::{FrameError, Framing, LengthPrefixed, Lines};
use refloop_integration::framing_case::{KnownBad, Subject, Which};
use tokio_util::codec::{Decoder, LengthDelimitedCodec, LinesCodec, LinesCodecError};

/// The kinds of error both libraries distinguish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Over the limit: `FrameError::TooLong`, tokio's "frame size too big" or
    /// `MaxLineLengthExceeded`.
    TooLong,
    /// Anything else: invalid UTF-8, or a stream that ended inside a frame.
    Malformed,
}

/// A decoded stream in terms both libraries share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Every message, the one end of stream produced included.
    pub messages: Vec<Vec<u8>>,
    /// The first error, if any.
    pub error: Option<ErrorKind>,
}

/// The stream split at `cuts` (sorted and clamped, as `check::framing` does).
fn chunks<'a>(stream: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut sorted: Vec<usize> = cuts.iter().map(|&c| c.min(stream.len())).collect();
    sorted.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0;
    for cut in sorted {
        out.push(&stream[at..cut]);
        at = cut;
    }
    out.push(&stream[at..]);
    out
}

/// Decodes with a tokio-util codec the way `FramedRead` does: decode after every read until it
/// returns `None`, then `decode_eof` until it returns `None`.
fn tokio_run<C, M>(
    mut codec: C,
    stream: &[u8],
    cuts: &[usize],
    bytes: impl Fn(M) -> Vec<u8>,
    kind: impl Fn(&C::Error) -> ErrorKind,
) -> Decoded
where
    C: Decoder<Item = M>,
{
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    for chunk in chunks(stream, cuts) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(msg)) => messages.push(bytes(msg)),
                Ok(None) => break,
                Err(e) => {
                    let error = Some(kind(&e));
                    return Decoded { messages, error };
                }
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(msg)) => messages.push(bytes(msg)),
            Ok(None) => {
                return Decoded {
                    messages,
                    error: None,
                }
            }
            Err(e) => {
                let error = Some(kind(&e));
                return Decoded { messages, error };
            }
        }
    }
}

/// Decodes `stream` with tokio-util's codec for `which`, configured like refloop's.
pub fn tokio_decode(which: Which, limit: usize, stream: &[u8], cuts: &[usize]) -> Decoded {
    match which {
        Which::LengthPrefixed => {
            let codec = LengthDelimitedCodec::builder()
                .max_frame_length(limit)
                .new_codec();
            tokio_run(
                codec,
                stream,
                cuts,
                |m: BytesMut| m.to_vec(),
                |e| {
                    // The only `InvalidData` error in the default configuration is the limit.
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        ErrorKind::TooLong
                    } else {
                        ErrorKind::Malformed
                    }
                },
            )
        }
        Which::Lines => {
            let codec = LinesCodec::new_with_max_length(limit);
            tokio_run(codec, stream, cuts, String::into_bytes, |e| match e {
                LinesCodecError::MaxLineLengthExceeded => ErrorKind::TooLong,
                LinesCodecError::Io(_) => ErrorKind::Malformed,
            })
        }
    }
}

fn refloop_run<F: Framing>(
    mut framing: F,
    stream: &[u8],
    cuts: &[usize],
    bytes: impl Fn(F::Message) -> Vec<u8>,
) -> Decoded {
    let outcome = decode_stream(&mut framing, stream, cuts);
    let mut messages: Vec<Vec<u8>> = outcome.messages.into_iter().map(&bytes).collect();
    let error = match outcome.end {
        Ok(Some(last)) => {
            messages.push(bytes(last));
            None
        }
        Ok(None) => None,
        Err(FrameError::TooLong { .. }) => Some(ErrorKind::TooLong),
        Err(_) => Some(ErrorKind::Malformed),
    };
    Decoded { messages, error }
}

/// Decodes `stream` with refloop's framing for `which` (or `subject`'s known-bad one).
pub fn refloop_decode(
    subject: Subject,
    which: Which,
    limit: usize,
    stream: &[u8],
    cuts: &[usize],
) -> Decoded {
    match (subject.family(which), subject) {
        (Which::LengthPrefixed, Subject::Bad(KnownBad::HeaderOffByOne)) => {
            refloop_run(HeaderOffByOne::new(limit), stream, cuts, |m| m)
        }
        (Which::LengthPrefixed, Subject::Bad(KnownBad::ReserveBeforeCheck)) => {
            refloop_run(ReserveBeforeCheck::new(limit), stream, cuts, |m| m)
        }
        (Which::LengthPrefixed, _) => refloop_run(LengthPrefixed::new(limit), stream, cuts, |m| m),
        (Which::Lines, Subject::Bad(KnownBad::RescanningLines)) => refloop_run(
            RescanningLines::new(limit),
            stream,
            cuts,
            String::into_bytes,
        ),
        (Which::Lines, _) => refloop_run(Lines::new(limit), stream, cuts, String::into_bytes),
    }
}

/// Whether `ours` and `theirs` differ only by the documented bare-header difference: the same
/// messages, then the stream's last 4 bytes are a complete header with a non-zero length and
/// no payload, which refloop reports as truncated and tokio-util drops silently.
pub fn eof_after_bare_header(ours: &Decoded, theirs: &Decoded, stream: &[u8]) -> bool {
    let used: usize = ours.messages.iter().map(|m| 4 + m.len()).sum();
    ours.messages == theirs.messages
        && ours.error == Some(ErrorKind::Malformed)
        && theirs.error.is_none()
        && stream.len() == used + 4
        && stream[used..] != [0, 0, 0, 0]
}

/// Decodes with both libraries and describes the difference, if they disagree.
///
/// # Errors
///
/// Returns both decodings when they differ.
pub fn try_agree_with_tokio(
    subject: Subject,
    which: Which,
    limit: usize,
    stream: &[u8],
    cuts: &[usize],
) -> Result<usize, String> {
    let family = subject.family(which);
    let ours = refloop_decode(subject, which, limit, stream, cuts);
    let theirs = tokio_decode(family, limit, stream, cuts);
    if family == Which::LengthPrefixed && eof_after_bare_header(&ours, &theirs, stream) {
        return Ok(ours.messages.len());
    }
    if ours != theirs {
        return Err(format!(
            "refloop and tokio-util disagree on {family:?} with limit {limit}: \
             refloop {ours:?}, tokio-util {theirs:?}"
        ));
    }
    Ok(ours.messages.len())
}

/// Decodes with both libraries and panics, showing both, if they disagree.
///
/// Returns the number of messages both decoded.
#[track_caller]
#[allow(dead_code, reason = "each including crate uses one of the two forms")]
pub fn assert_agrees_with_tokio(
    subject: Subject,
    which: Which,
    limit: usize,
    stream: &[u8],
    cuts: &[usize],
) -> usize {
    match try_agree_with_tokio(subject, which, limit, stream, cuts) {
        Ok(messages) => messages,
        Err(why) => panic!("{why}"),
    }
}
