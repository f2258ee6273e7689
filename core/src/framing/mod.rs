//! Framing: turning a TCP byte stream back into messages.

use std::borrow::Cow;
use std::fmt;

/// Turns a byte stream into messages and messages into bytes.
///
/// # Contract
///
/// - Between calls, `buf` starts with the same bytes it held before, minus whatever earlier
///   [`Decoded::Message`] results consumed, plus whatever arrived since.
/// - A decoder may keep progress state (such as how far it has already scanned), so that decoding
///   one maximal frame fed one byte at a time costs time linear in the frame's size.
/// - `Err` means the stream is corrupt: the loop closes that one connection with the error as the
///   reason.
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
    /// The default accepts an empty tail and reports any other tail as a truncated frame.
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
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame is longer than the configured limit.
    TooLong {
        /// The configured maximum frame length, in bytes.
        limit: usize,
        /// The length the peer declared (or, for delimited framings, the bytes seen so far).
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
