//! Newline-terminated UTF-8 text.

use std::borrow::Cow;

use super::{Decoded, FrameError, Framing};

/// Newline-terminated UTF-8 text, with `\r\n` accepted; `Message = String`.
///
/// Decodes the same messages as tokio-util's `LinesCodec::new_with_max_length(max_line_len)`:
///
/// - A line is the bytes before a `\n`, minus one trailing `\r` if present.
/// - The limit counts the line's bytes before the `\n`, including a trailing `\r`, exactly as
///   tokio-util counts it: with a limit of 3, `"abc\n"` is a line and `"abc\r\n"` is too long.
/// - A line that is not valid UTF-8 is an error.
/// - At end of stream, an unterminated last line is a message (minus a trailing `\r`), and a
///   lone `\r` is dropped, as in tokio-util.
///
/// # Deliberate differences from tokio-util
///
/// - **An over-long line is fatal.** tokio-util returns `MaxLineLengthExceeded`, then discards
///   up to the next `\n` and carries on. Here [`FrameError::TooLong`] is connection-fatal like
///   every [`FrameError`]: a peer that overruns the limit once has broken the protocol, and
///   resynchronising on the next newline would silently splice two halves of its stream.
///   The error arrives at the same point in the stream as tokio-util's: once `max_line_len + 1`
///   bytes have arrived without a newline. `declared` is always `max_line_len + 1`.
/// - **Invalid UTF-8 is fatal** for the same reason. tokio-util reports an `io::Error` for the
///   line and lets the caller continue.
/// - **`encode` validates.** tokio-util writes any string followed by `\n`. Here `encode`
///   rejects a line containing `\n` or ending in `\r` (the peer would decode something
///   different) and a line over the limit (the peer would reject it), and writes nothing.
///
/// # Notes
///
/// Decoding keeps how far it has scanned for a newline, and resumes there with `memchr`, so a
/// maximal line fed one byte at a time is scanned once: linear, not quadratic. It never scans
/// past `max_line_len + 1` bytes. Each message costs one allocation (none for an empty line).
///
/// # Examples
///
/// ```
/// use refloop::framing::{Decoded, Framing, Lines};
///
/// let mut framing = Lines::new(80);
/// assert_eq!(framing.decode(b"hel").unwrap(), Decoded::NeedMore);
/// assert_eq!(
///     framing.decode(b"hello\r\nworld").unwrap(),
///     Decoded::Message("hello".to_string(), 7),
/// );
/// ```
#[derive(Debug, Clone)]
pub struct Lines {
    /// The longest line accepted, in bytes before the `\n` (a trailing `\r` included).
    max_line_len: usize,
    /// How many bytes at the front of `buf` are known to hold no `\n`.
    scanned: usize,
    /// Input bytes examined so far: bytes scanned for a newline plus bytes validated as UTF-8.
    examined: u64,
}

impl Lines {
    /// A framing that accepts lines of at most `max_line_len` bytes before the `\n`.
    pub fn new(max_line_len: usize) -> Self {
        Self {
            max_line_len,
            scanned: 0,
            examined: 0,
        }
    }

    /// The longest line this framing accepts, in bytes before the `\n`.
    pub fn max_line_len(&self) -> usize {
        self.max_line_len
    }

    /// The error for a line over the limit.
    fn too_long(&self) -> FrameError {
        FrameError::TooLong {
            limit: self.max_line_len,
            declared: (self.max_line_len as u64).saturating_add(1),
        }
    }
}

/// `line` minus one trailing `\r`, if it has one.
fn without_carriage_return(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The error for a line that is not UTF-8.
fn not_utf8() -> FrameError {
    FrameError::Malformed(Cow::Borrowed("line is not valid UTF-8"))
}

impl Framing for Lines {
    type Message = String;

    fn decode(&mut self, buf: &[u8]) -> Result<Decoded<String>, FrameError> {
        // A line with its `\n` fits in `max_line_len + 1` bytes, so never look further.
        let read_to = self.max_line_len.saturating_add(1).min(buf.len());
        // The contract says `buf` only grows between `NeedMore` results; clamp anyway so a
        // caller that breaks it gets a rescan, not a panic.
        let start = self.scanned.min(read_to);
        let window = &buf[start..read_to];
        match memchr::memchr(b'\n', window) {
            Some(offset) => {
                let newline = start + offset;
                self.scanned = 0;
                let line = without_carriage_return(&buf[..newline]);
                self.examined += (offset + 1 + line.len()) as u64;
                let line = std::str::from_utf8(line).map_err(|_| not_utf8())?;
                Ok(Decoded::Message(line.to_owned(), newline + 1))
            }
            None => {
                self.examined += window.len() as u64;
                if buf.len() > self.max_line_len {
                    self.scanned = 0;
                    return Err(self.too_long());
                }
                self.scanned = read_to;
                Ok(Decoded::NeedMore)
            }
        }
    }

    fn encode(&mut self, msg: &String, out: &mut Vec<u8>) -> Result<(), FrameError> {
        if msg.contains('\n') {
            return Err(FrameError::Malformed(Cow::Borrowed(
                "line contains a newline",
            )));
        }
        if msg.ends_with('\r') {
            return Err(FrameError::Malformed(Cow::Borrowed(
                "line ends with a carriage return",
            )));
        }
        if msg.len() > self.max_line_len {
            return Err(FrameError::TooLong {
                limit: self.max_line_len,
                declared: msg.len() as u64,
            });
        }
        out.reserve(msg.len() + 1);
        out.extend_from_slice(msg.as_bytes());
        out.push(b'\n');
        Ok(())
    }

    /// Returns the unterminated last line, if any, as tokio-util's `LinesCodec` does.
    fn decode_eof(&mut self, buf: &[u8]) -> Result<Option<String>, FrameError> {
        if let Decoded::Message(line, _) = self.decode(buf)? {
            return Ok(Some(line));
        }
        self.scanned = 0;
        if buf.is_empty() || buf == b"\r" {
            return Ok(None);
        }
        let line = without_carriage_return(buf);
        self.examined += line.len() as u64;
        let line = std::str::from_utf8(line).map_err(|_| not_utf8())?;
        Ok(Some(line.to_owned()))
    }

    /// `max_line_len`: `decode` errors rather than return `NeedMore` for more bytes than that.
    fn max_buffered(&self) -> Option<usize> {
        Some(self.max_line_len)
    }

    fn bytes_examined(&self) -> Option<u64> {
        Some(self.examined)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_and_lf_both_end_a_line() {
        let mut f = Lines::new(10);
        assert_eq!(f.decode(b"a\r\nb\n"), Ok(Decoded::Message("a".into(), 3)));
        assert_eq!(f.decode(b"b\n"), Ok(Decoded::Message("b".into(), 2)));
    }

    #[test]
    fn limit_counts_the_carriage_return_like_tokio() {
        let mut f = Lines::new(3);
        assert_eq!(f.decode(b"abc\n"), Ok(Decoded::Message("abc".into(), 4)));
        assert_eq!(
            f.decode(b"abc\r\n"),
            Err(FrameError::TooLong {
                limit: 3,
                declared: 4
            })
        );
    }

    #[test]
    fn over_long_line_errors_once_limit_plus_one_bytes_arrive() {
        let mut f = Lines::new(3);
        assert_eq!(f.decode(b"abc"), Ok(Decoded::NeedMore));
        assert!(matches!(f.decode(b"abcd"), Err(FrameError::TooLong { .. })));
    }

    #[test]
    fn invalid_utf8_line_is_malformed() {
        let mut f = Lines::new(10);
        assert_eq!(f.decode(b"\xff\n"), Err(not_utf8()));
    }

    #[test]
    fn unterminated_last_line_is_returned_at_eof() {
        let mut f = Lines::new(10);
        assert_eq!(f.decode(b"tail\r"), Ok(Decoded::NeedMore));
        assert_eq!(f.decode_eof(b"tail\r"), Ok(Some("tail".into())));
        assert_eq!(f.decode_eof(b"\r"), Ok(None));
        assert_eq!(f.decode_eof(b""), Ok(None));
    }

    #[test]
    fn encode_rejects_lines_that_would_decode_differently() {
        let mut f = Lines::new(10);
        let mut out = Vec::new();
        assert!(f.encode(&"a\nb".into(), &mut out).is_err());
        assert!(f.encode(&"a\r".into(), &mut out).is_err());
        assert!(f.encode(&"01234567890".into(), &mut out).is_err());
        assert!(out.is_empty());
        f.encode(&"a\rb".into(), &mut out).unwrap();
        assert_eq!(out, b"a\rb\n");
    }
}
