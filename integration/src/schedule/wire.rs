//! The client side of the wire: self-describing payloads, and an encoder and parser written
//! independently of `refloop::framing`, so the loop's framing is checked against a second
//! implementation rather than against itself.
//!
//! Every payload of [`HEADER_LEN`] bytes or more starts with a header naming who made it:
//!
//! ```text
//! K cc iii t ssssss filler...
//! ```
//!
//! - `K` is `C` for a message the client sent (and the server echoes) or `X` for a cross-thread
//!   send through a `ConnHandle`;
//! - `cc`, `iii`, `t`, `ssssss` are lowercase hex: client slot, incarnation, sender thread and
//!   sequence number;
//! - the filler is a letter pattern derived from the header, so a byte from anywhere else shows.
//!
//! All of it is printable ASCII without `\r` or `\n`, so the same payloads work as lines.

use super::{Malformation, Wire};

/// The length of the self-describing header at the front of every non-empty payload.
pub const HEADER_LEN: usize = 13;

/// The maximum frame length the server is configured with, for both framings.
pub const MAX_FRAME: usize = 64 * 1024;

/// The largest payload a schedule sends (below [`MAX_FRAME`], leaving room for a line ending).
pub const MAX_PAYLOAD: u32 = 60_000;

/// Who made a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Sent by the client itself (and echoed by the server).
    Client,
    /// Sent from a thread through the connection's `ConnHandle`.
    Cross,
}

/// The identity a payload header carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tag {
    /// Who made it.
    pub origin: Origin,
    /// The client slot it belongs to.
    pub client: u8,
    /// The incarnation (connection number) of that slot.
    pub incarnation: u16,
    /// The sender thread (0 for client messages).
    pub thread: u8,
    /// The sequence number within (slot, incarnation, origin, thread).
    pub seq: u32,
}

/// Builds the payload with identity `tag` and length `len`.
///
/// A `len` of zero gives the empty payload (an empty frame); any other `len` is raised to
/// [`HEADER_LEN`] so the payload can carry its header.
pub fn payload(tag: Tag, len: usize) -> Vec<u8> {
    if len == 0 {
        return Vec::new();
    }
    let len = len.max(HEADER_LEN);
    let kind = match tag.origin {
        Origin::Client => 'C',
        Origin::Cross => 'X',
    };
    let mut out = format!(
        "{kind}{:02x}{:03x}{:1x}{:06x}",
        tag.client,
        tag.incarnation & 0xfff,
        tag.thread & 0xf,
        tag.seq & 0xff_ffff
    )
    .into_bytes();
    debug_assert_eq!(out.len(), HEADER_LEN);
    let seed = u32::from(tag.client) * 7 + u32::from(tag.incarnation) * 5 + tag.seq * 13;
    out.extend((0..len - HEADER_LEN).map(|i| b'a' + ((seed + i as u32) % 26) as u8));
    out
}

/// Reads the identity out of a payload, or says why it has none.
///
/// The empty payload has no identity and yields `Ok(None)`.
///
/// # Errors
///
/// Returns a description when the payload is neither empty nor a well-formed header followed by
/// the filler that header implies.
pub fn parse_tag(p: &[u8]) -> Result<Option<Tag>, String> {
    if p.is_empty() {
        return Ok(None);
    }
    if p.len() < HEADER_LEN {
        return Err(format!(
            "a {}-byte payload is shorter than any header",
            p.len()
        ));
    }
    let origin = match p[0] {
        b'C' => Origin::Client,
        b'X' => Origin::Cross,
        other => {
            return Err(format!(
                "payload starts with byte {other:#04x}, not a header"
            ))
        }
    };
    let hex = |range: std::ops::Range<usize>| -> Result<u32, String> {
        let s = std::str::from_utf8(&p[range.clone()])
            .map_err(|_| format!("header field {range:?} is not ASCII"))?;
        u32::from_str_radix(s, 16).map_err(|_| format!("header field {range:?} is not hex: {s:?}"))
    };
    let tag = Tag {
        origin,
        client: hex(1..3)? as u8,
        incarnation: hex(3..6)? as u16,
        thread: hex(6..7)? as u8,
        seq: hex(7..13)?,
    };
    if payload(tag, p.len()) != p {
        return Err(format!("payload of {tag:?} has a corrupt filler"));
    }
    Ok(Some(tag))
}

/// Appends the wire form of `payload` under `wire`, as a client sends it.
///
/// Lines end in `\r\n` every third sequence number and in `\n` otherwise, since the server must
/// accept both.
pub fn encode(wire: Wire, payload: &[u8], seq: u32, out: &mut Vec<u8>) {
    match wire {
        Wire::LengthPrefixed => {
            let len = u32::try_from(payload.len()).expect("payloads stay below MAX_FRAME");
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(payload);
        }
        Wire::Lines => {
            out.extend_from_slice(payload);
            if seq % 3 == 2 {
                out.extend_from_slice(b"\r\n");
            } else {
                out.push(b'\n');
            }
        }
    }
}

/// The bytes of a frame the server's framing must reject.
pub fn malformed(wire: Wire, kind: Malformation) -> Vec<u8> {
    match (wire, kind) {
        (Wire::LengthPrefixed, Malformation::TooLong) => {
            let mut out = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
            out.extend_from_slice(b"the limit was exceeded");
            out
        }
        (Wire::LengthPrefixed, Malformation::Garbage) => {
            let mut out = u32::MAX.to_be_bytes().to_vec();
            out.extend_from_slice(&[0xff; 12]);
            out
        }
        (Wire::Lines, Malformation::TooLong) => {
            let mut out = vec![b'z'; MAX_FRAME + 2];
            out.push(b'\n');
            out
        }
        (Wire::Lines, Malformation::Garbage) => b"C\xff\xfe not UTF-8\n".to_vec(),
    }
}

/// An incremental parser of the server's byte stream to one client.
///
/// It accepts exactly what refloop's framings emit: length-prefixed frames, or lines ending in a
/// bare `\n` (the server's encoder never writes `\r`).
#[derive(Debug)]
pub struct Parser {
    wire: Wire,
    buf: Vec<u8>,
    frames: Vec<Vec<u8>>,
    bytes: u64,
}

impl Parser {
    /// A parser for `wire` with nothing received yet.
    pub fn new(wire: Wire) -> Parser {
        Parser {
            wire,
            buf: Vec::new(),
            frames: Vec::new(),
            bytes: 0,
        }
    }

    /// Feeds received bytes, splitting off every whole frame.
    ///
    /// # Errors
    ///
    /// Returns a description when the stream cannot be what the server's framing emits.
    pub fn push(&mut self, data: &[u8]) -> Result<(), String> {
        self.bytes += data.len() as u64;
        self.buf.extend_from_slice(data);
        let mut at = 0;
        loop {
            let rest = &self.buf[at..];
            match self.wire {
                Wire::LengthPrefixed => {
                    let Some(header) = rest.get(..4) else { break };
                    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
                    let len = len as usize;
                    if len > MAX_FRAME {
                        return Err(format!("server sent a frame header of {len} bytes"));
                    }
                    let Some(body) = rest.get(4..4 + len) else {
                        break;
                    };
                    self.frames.push(body.to_vec());
                    at += 4 + len;
                }
                Wire::Lines => {
                    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                        if rest.len() > MAX_FRAME {
                            return Err(format!(
                                "server sent {} bytes without a newline",
                                rest.len()
                            ));
                        }
                        break;
                    };
                    if rest[..nl].contains(&b'\r') {
                        return Err("server sent a line containing \\r".to_string());
                    }
                    self.frames.push(rest[..nl].to_vec());
                    at += nl + 1;
                }
            }
        }
        self.buf.drain(..at);
        Ok(())
    }

    /// The whole frames received so far.
    pub fn frames(&self) -> &[Vec<u8>] {
        &self.frames
    }

    /// The bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The bytes of an incomplete frame at the end of the stream so far.
    pub fn partial(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(seq: u32) -> Tag {
        Tag {
            origin: Origin::Cross,
            client: 63,
            incarnation: 7,
            thread: 2,
            seq,
        }
    }

    #[test]
    fn payloads_carry_their_tag_and_nothing_else_parses_as_them() {
        for len in [0, 1, 12, 13, 14, 100, 4096] {
            let p = payload(tag(len as u32), len);
            let parsed = parse_tag(&p).unwrap();
            if len == 0 {
                assert_eq!(parsed, None);
            } else {
                assert_eq!(parsed, Some(tag(len as u32)));
                assert_eq!(p.len(), len.max(HEADER_LEN));
                for at in 0..p.len() {
                    let mut bad = p.clone();
                    bad[at] ^= 1;
                    let parsed = parse_tag(&bad);
                    assert!(
                        parsed.clone().map_or(true, |t| t != Some(tag(len as u32))),
                        "flipping byte {at} of {len} went unnoticed: {parsed:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn parser_reassembles_frames_from_any_split() {
        for wire in [Wire::LengthPrefixed, Wire::Lines] {
            let mut stream = Vec::new();
            let payloads: Vec<Vec<u8>> = (0..5).map(|i| payload(tag(i), i as usize * 7)).collect();
            for p in &payloads {
                match wire {
                    Wire::LengthPrefixed => encode(wire, p, 0, &mut stream),
                    Wire::Lines => {
                        stream.extend_from_slice(p);
                        stream.push(b'\n');
                    }
                }
            }
            for cut in 0..stream.len() {
                let mut parser = Parser::new(wire);
                parser.push(&stream[..cut]).unwrap();
                parser.push(&stream[cut..]).unwrap();
                assert_eq!(parser.frames(), &payloads[..], "{wire:?} cut at {cut}");
                assert_eq!(parser.partial(), 0);
            }
        }
    }

    #[test]
    fn parser_rejects_an_oversized_header() {
        let mut parser = Parser::new(Wire::LengthPrefixed);
        assert!(parser.push(&u32::MAX.to_be_bytes()).is_err());
    }
}
