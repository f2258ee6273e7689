//! A 4-byte big-endian length, then the payload.

use super::{Decoded, FrameError, Framing};

/// The size of the length header, in bytes.
const HEADER_LEN: usize = 4;

/// A 4-byte big-endian payload length, then the payload; `Message = Vec<u8>`.
///
/// Wire-compatible with tokio-util's `LengthDelimitedCodec` in its default configuration
/// (`length_field_length(4)`, big-endian, offset 0, adjustment 0, header stripped) with
/// `max_frame_length` set to the same limit:
///
/// - A declared length over `max_frame_len` is rejected with [`FrameError::TooLong`] as soon as
///   the 4 header bytes have arrived, before anything is buffered or reserved for the payload.
///   A peer declaring 4 GiB costs one 4-byte read.
/// - A payload of exactly `max_frame_len` bytes is accepted, as in tokio-util.
/// - [`encode`](Framing::encode) rejects a payload over the limit, as tokio-util's encoder does.
/// - A stream that ends inside a frame is an error (tokio-util: "bytes remaining on stream").
///
/// # Deliberate difference from tokio-util
///
/// A stream that ends right after a complete header, before any payload byte, is an error here
/// ([`decode_eof`](Framing::decode_eof) sees the 4 header bytes, a truncated frame). tokio-util
/// has already consumed the header by then, so its `decode_eof` sees an empty buffer and the
/// stream ends cleanly, silently dropping the announced frame. The differential fuzz target
/// found this; `integration/tests/framing_differential.rs` pins it down.
///
/// # Notes
///
/// Decoding keeps one piece of progress state, the length parsed from a complete header, so
/// each call costs O(1) plus the copy of a finished payload. Decoding a frame fed one byte at a
/// time examines each header byte once and copies the payload once. Each message costs exactly
/// one allocation (none for an empty payload).
///
/// # Examples
///
/// ```
/// use refloop::framing::{Decoded, FrameError, Framing, LengthPrefixed};
///
/// let mut framing = LengthPrefixed::new(16);
/// // A header declaring 4 GiB is rejected at once: nothing is reserved for it.
/// let err = framing.decode(&[0xff, 0xff, 0xff, 0xff]).unwrap_err();
/// assert_eq!(err, FrameError::TooLong { limit: 16, declared: 0xffff_ffff });
/// ```
#[derive(Debug, Clone)]
pub struct LengthPrefixed {
    /// The largest payload accepted, in bytes.
    max_frame_len: usize,
    /// The payload length from the header of the frame at the front of `buf`, once all four
    /// header bytes have been seen and checked against the limit; `None` before that.
    pending: Option<usize>,
    /// Input bytes examined so far: header bytes parsed plus payload bytes copied.
    examined: u64,
}

impl LengthPrefixed {
    /// The default limit, 8 MiB, the same as tokio-util's `LengthDelimitedCodec`.
    pub const DEFAULT_MAX_FRAME_LEN: usize = 8 * 1024 * 1024;

    /// A framing that accepts payloads of at most `max_frame_len` bytes.
    ///
    /// A limit above `u32::MAX` behaves as `u32::MAX`, the largest length the header can hold.
    pub fn new(max_frame_len: usize) -> Self {
        Self {
            max_frame_len,
            pending: None,
            examined: 0,
        }
    }

    /// The largest payload this framing accepts, in bytes.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// The limit as a `u64`, for comparison with a declared length.
    fn limit_u64(&self) -> u64 {
        u64::try_from(self.max_frame_len).unwrap_or(u64::MAX)
    }

    /// Parses the header at the front of `buf`, if it is complete.
    fn header(buf: &[u8]) -> Option<u32> {
        let head: [u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(u32::from_be_bytes(head))
    }

    /// The payload length of the frame at the front of `buf`, if its header is complete and
    /// within the limit.
    fn payload_len(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        if let Some(len) = self.pending {
            return Ok(Some(len));
        }
        let Some(declared) = Self::header(buf) else {
            return Ok(None);
        };
        self.examined += HEADER_LEN as u64;
        if u64::from(declared) > self.limit_u64() {
            return Err(FrameError::TooLong {
                limit: self.max_frame_len,
                declared: u64::from(declared),
            });
        }
        // `declared <= max_frame_len`, which is a `usize`, so the conversion cannot fail.
        let len = usize::try_from(declared).map_err(|_| FrameError::TooLong {
            limit: self.max_frame_len,
            declared: u64::from(declared),
        })?;
        self.pending = Some(len);
        Ok(Some(len))
    }
}

impl Default for LengthPrefixed {
    /// A framing with tokio-util's default limit, [`LengthPrefixed::DEFAULT_MAX_FRAME_LEN`].
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_FRAME_LEN)
    }
}

impl Framing for LengthPrefixed {
    type Message = Vec<u8>;

    fn decode(&mut self, buf: &[u8]) -> Result<Decoded<Vec<u8>>, FrameError> {
        let Some(len) = self.payload_len(buf)? else {
            return Ok(Decoded::NeedMore);
        };
        // `len <= u32::MAX`; on a 32-bit target the sum can overflow, and such a frame cannot be
        // buffered anyway.
        let end = HEADER_LEN.checked_add(len).ok_or(FrameError::TooLong {
            limit: self.max_frame_len,
            declared: len as u64,
        })?;
        let Some(payload) = buf.get(HEADER_LEN..end) else {
            return Ok(Decoded::NeedMore);
        };
        self.pending = None;
        self.examined += len as u64;
        Ok(Decoded::Message(payload.to_vec(), end))
    }

    fn encode(&mut self, msg: &Vec<u8>, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let too_long = FrameError::TooLong {
            limit: self.max_frame_len,
            declared: msg.len() as u64,
        };
        if msg.len() > self.max_frame_len {
            return Err(too_long);
        }
        let len = u32::try_from(msg.len()).map_err(|_| too_long)?;
        out.reserve(HEADER_LEN + msg.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(msg);
        Ok(())
    }

    /// The header plus the largest payload: `4 + min(max_frame_len, u32::MAX)`.
    fn max_buffered(&self) -> Option<usize> {
        let largest = self.max_frame_len.min(u32::MAX as usize);
        Some(HEADER_LEN.saturating_add(largest))
    }

    /// Exact: the rest of the header, or the rest of the frame once the header is known.
    fn bytes_needed(&self, buf: &[u8]) -> Option<usize> {
        let len = match self.pending {
            Some(len) => len,
            None => match Self::header(buf) {
                None => return Some(HEADER_LEN - buf.len()),
                // A header over the limit is decided now: no more bytes are needed.
                Some(declared) if u64::from(declared) > self.limit_u64() => return Some(0),
                Some(declared) => declared as usize,
            },
        };
        Some(HEADER_LEN.saturating_add(len).saturating_sub(buf.len()))
    }

    fn bytes_examined(&self) -> Option<u64> {
        Some(self.examined)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_over_limit_is_rejected_before_payload_arrives() {
        let mut f = LengthPrefixed::new(3);
        assert_eq!(f.decode(&[0, 0, 0]), Ok(Decoded::NeedMore));
        assert_eq!(
            f.decode(&[0, 0, 0, 4]),
            Err(FrameError::TooLong {
                limit: 3,
                declared: 4
            })
        );
    }

    #[test]
    fn payload_of_exactly_the_limit_is_accepted() {
        let mut f = LengthPrefixed::new(3);
        assert_eq!(
            f.decode(&[0, 0, 0, 3, 7, 8, 9, 0xaa]),
            Ok(Decoded::Message(vec![7, 8, 9], 7))
        );
    }

    #[test]
    fn empty_payload_is_a_message() {
        let mut f = LengthPrefixed::new(0);
        assert_eq!(f.decode(&[0, 0, 0, 0]), Ok(Decoded::Message(vec![], 4)));
    }

    #[test]
    fn encode_rejects_payload_over_limit_and_writes_nothing() {
        let mut f = LengthPrefixed::new(2);
        let mut out = vec![1];
        assert_eq!(
            f.encode(&vec![0; 3], &mut out),
            Err(FrameError::TooLong {
                limit: 2,
                declared: 3
            })
        );
        assert_eq!(out, [1]);
    }

    #[test]
    fn bytes_needed_is_exact_for_header_and_payload() {
        let mut f = LengthPrefixed::new(10);
        assert_eq!(f.bytes_needed(&[]), Some(4));
        assert_eq!(f.bytes_needed(&[0, 0]), Some(2));
        assert_eq!(f.decode(&[0, 0, 0, 5, 1]), Ok(Decoded::NeedMore));
        assert_eq!(f.bytes_needed(&[0, 0, 0, 5, 1]), Some(4));
    }
}
