//! Framing: turning a TCP byte stream back into messages.
//!
//! A TCP read returns an arbitrary slice of the peer's byte stream: half a message, or three and
//! a half. A [`Framing`] turns that stream back into messages and messages back into bytes.
//!
//! Two framings ship, both wire-compatible with a tokio-util codec:
//!
//! - [`LengthPrefixed`]: a 4-byte big-endian payload length, then the payload
//!   (tokio-util's `LengthDelimitedCodec` in its default configuration).
//! - [`Lines`]: newline-terminated UTF-8 text, `\r\n` accepted
//!   (tokio-util's `LinesCodec::new_with_max_length`).
//!
//! A third, [`Resp`], reads requests as redis-server 7.0 does and writes its replies.
//!
//! [`check::framing`](crate::check::framing) checks any `Framing` against the contract below;
//! run it on your own framing the way refloop runs it on these two.
//!
//! # Examples
//!
//! ```
//! use refloop::framing::{Decoded, Framing, LengthPrefixed};
//!
//! let mut framing = LengthPrefixed::new(1024);
//! let mut wire = Vec::new();
//! framing.encode(&b"hello".to_vec(), &mut wire).unwrap();
//! assert_eq!(wire, b"\0\0\0\x05hello");
//!
//! // Half a frame is not a message yet, and nothing is consumed.
//! assert_eq!(framing.decode(&wire[..6]).unwrap(), Decoded::NeedMore);
//! // The same bytes plus the rest make one message that used all 9 bytes.
//! assert_eq!(framing.decode(&wire).unwrap(), Decoded::Message(b"hello".to_vec(), 9));
//! ```

use std::borrow::Cow;
use std::fmt;

mod length_prefixed;
mod lines;
pub mod resp;

pub use length_prefixed::LengthPrefixed;
pub use lines::Lines;
pub use resp::Resp;

/// Turns a byte stream into messages and messages into bytes.
///
/// One value decodes one connection's stream: it may keep state between calls.
///
/// # Contract
///
/// - Between calls, `buf` starts with the same bytes it held before, minus whatever earlier
///   [`Decoded::Message`] results consumed, plus whatever arrived since.
/// - A decoder may keep progress state (such as how far it has already scanned). It should:
///   decoding one maximal frame fed one byte at a time must cost time linear in the frame's
///   size. Rescanning from the start on every call is the classic O(n²) trap.
/// - [`Decoded::Message`] consumes at least one byte and at most `buf.len()`.
/// - [`Decoded::NeedMore`] consumes nothing and never hides a whole message: if `buf` holds one,
///   `decode` returns it.
/// - The result depends only on the bytes, never on how they were split across calls: every
///   fragmentation of a stream yields the same messages, and the same error after the same
///   number of messages.
/// - `Err` means the stream is corrupt: the loop closes that one connection with the error as
///   the reason. No byte sequence makes `decode` panic.
/// - While `decode` returns `NeedMore`, `buf` never holds more than
///   [`max_buffered`](Framing::max_buffered) bytes: a decoder errors rather than make its caller
///   buffer without bound, and it reserves nothing for a frame it is about to reject.
///
/// [`check::framing`](crate::check::framing) asserts every one of these for a given stream and
/// fragmentation.
pub trait Framing {
    /// The decoded message type.
    type Message;

    /// Takes at most one message off the front of `buf`.
    ///
    /// # Errors
    ///
    /// Returns a [`FrameError`] when the bytes can never form a valid message.
    fn decode(&mut self, buf: &[u8]) -> Result<Decoded<Self::Message>, FrameError>;

    /// Appends the wire form of `msg` to `out`.
    ///
    /// # Errors
    ///
    /// Returns a [`FrameError`] when `msg` cannot be framed (for example it is over the limit).
    fn encode(&mut self, msg: &Self::Message, out: &mut Vec<u8>) -> Result<(), FrameError>;

    /// Called once when the stream has ended, with the bytes no [`decode`](Framing::decode) call
    /// consumed.
    ///
    /// Call it after `decode` returned [`Decoded::NeedMore`] for exactly these bytes, so `buf`
    /// holds no whole message.
    /// The default accepts an empty tail and reports any other tail as a truncated frame.
    /// [`Lines`] overrides it to return an unterminated last line, as tokio-util does.
    ///
    /// # Errors
    ///
    /// Returns a [`FrameError`] when the trailing bytes are not a valid message.
    fn decode_eof(&mut self, buf: &[u8]) -> Result<Option<Self::Message>, FrameError> {
        if buf.is_empty() {
            return Ok(None);
        }
        match self.decode(buf)? {
            Decoded::Message(msg, _) => Ok(Some(msg)),
            Decoded::NeedMore => Err(FrameError::Malformed(Cow::Borrowed(
                "stream ended inside a frame",
            ))),
        }
    }

    /// The most bytes of undecoded input this framing ever asks its caller to hold.
    ///
    /// The loop refuses to buffer more than this (plus one read chunk) for a connection and
    /// closes it with [`FrameError::TooLong`] instead, so memory stays bounded even with a
    /// framing that never errors. `None` (the default) means "use the loop's configured
    /// maximum frame length".
    fn max_buffered(&self) -> Option<usize> {
        None
    }

    /// A hint, after [`Decoded::NeedMore`]: at least how many more bytes must arrive before
    /// `decode` can return anything but `NeedMore` for `buf`.
    ///
    /// `None` (the default) means "unknown, at least one". A loop may use the hint to size its
    /// next read or to skip decode calls that cannot succeed, so it must never overestimate:
    /// [`check::framing`](crate::check::framing) fails a framing that returns a message or an
    /// error before the promised bytes arrived.
    fn bytes_needed(&self, buf: &[u8]) -> Option<usize> {
        let _ = buf;
        None
    }

    /// Diagnostics: the total number of input bytes this value's `decode` calls have examined.
    ///
    /// A decoder that counts its work honestly lets
    /// [`check::framing`](crate::check::framing) prove, deterministically and without timing,
    /// that decoding stays linear however the stream is fragmented. `None` (the default) means
    /// "not counted", and the check skips that property.
    fn bytes_examined(&self) -> Option<u64> {
        None
    }
}

/// The result of one [`Framing::decode`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<M> {
    /// A whole message, and the number of bytes of `buf` it used.
    Message(M, usize),
    /// No whole message yet: call again with the same bytes plus whatever arrives next.
    NeedMore,
}

/// Why a byte stream (or a message) could not be framed.
///
/// Deliberately exactly two kinds, so callers can match on it exhaustively: a length over the
/// limit, and bytes that can never form a frame (with the reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A frame is longer than the configured limit.
    TooLong {
        /// The configured maximum frame length, in bytes.
        limit: usize,
        /// The length the peer declared, or (for delimited framings, which stop looking once a
        /// line is over the limit) `limit + 1`. It depends only on the stream, never on how the
        /// stream was fragmented.
        declared: u64,
    },
    /// The bytes can never form a valid frame.
    Malformed(Cow<'static, str>),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLong { limit, declared } => {
                write!(f, "frame too long: {declared} bytes, limit {limit}")
            }
            FrameError::Malformed(why) => write!(f, "malformed frame: {why}"),
        }
    }
}

impl std::error::Error for FrameError {}
