//! RESP, the Redis serialization protocol, as a redis 7.0 server reads it.
//!
//! [`Resp`] decodes requests the way redis-server 7.0.15 does in `processInlineBuffer` and
//! `processMultibulkBuffer` (`src/networking.c`), and encodes replies.
//! The rules below are redis's, restated; the code is written from them, not copied.
//!
//! # Requests
//!
//! - A request whose first byte is `*` is **multibulk**; any other first byte starts an
//!   **inline** request.
//! - **Inline:** one line up to `\n`, with one optional `\r` before it, split into arguments as
//!   `sdssplitargs` does (`"..."` with `\n \r \t \b \a \xHH` escapes, `'...'` with `\'`).
//!   An unbalanced quote is [`ProtocolError::UnbalancedQuotes`]; more than 64 KiB without a
//!   newline is [`ProtocolError::TooBigInline`]; a line with no argument is [`Message::Empty`].
//! - **Multibulk:** `*<n>\r` plus any byte, then `n` times `$<len>\r` plus any byte, `len`
//!   bytes and any two bytes. Redis looks for `\r` and skips the byte after it unchecked, and it
//!   skips the two bytes after a bulk unchecked too; so does this decoder.
//!   Numbers follow `string2ll`: an optional `-`, no `+`, no leading zero, no space, at most 20
//!   characters.
//!   A count that does not parse or is over `i32::MAX` is
//!   [`ProtocolError::InvalidMultibulkLength`]; a count of zero or less is [`Message::Empty`];
//!   a header not starting with `$` is [`ProtocolError::ExpectedDollar`]; a length that does
//!   not parse, is negative or is over the `max_bulk` limit is
//!   [`ProtocolError::InvalidBulkLength`]; more than 64 KiB without the `\r` of a count or a
//!   header is [`ProtocolError::TooBigMbulkCount`] or [`ProtocolError::TooBigBulkCount`].
//! - Redis finds line ends with `strchr` on a NUL-terminated buffer, so a NUL byte before the
//!   line end hides it forever: such a request waits until 64 KiB have arrived and then is the
//!   "too big" error. This decoder does the same.
//!
//! # Errors, and how a server should answer them
//!
//! A protocol error is decoded as a message, [`Message::ProtocolError`], so the server can do
//! what redis does: answer the requests before it, then write the error reply
//! ([`ProtocolError::reply`]), then close.
//! A handler answers it with [`Conn::send`](crate::Conn::send) and
//! [`Conn::close`](crate::Conn::close); the loop decodes nothing after a close request.
//! If the handler does not close, the next `decode` returns [`FrameError::Malformed`], and the
//! loop closes the connection with that reason.
//!
//! # Memory
//!
//! A declared bulk costs nothing until its bytes arrive: the decoder never reserves by a
//! declared length. It keeps the offsets of the arguments it has parsed and copies them out
//! once the request is complete, so each byte is scanned once however the stream is split.
//! A request longer than `max_request` (`max_buffered`) is [`FrameError::TooLong`], the analogue
//! of redis's `client-query-buffer-limit`, and redis closes such a client without a reply too.
//!
//! # Deliberate differences from redis
//!
//! - **The 64 KiB inline and header limits count from the request's start,** whatever the
//!   reads: a line is too big when its first 65 537 bytes hold no newline. Redis checks what is
//!   buffered after each 16 KiB read, so it accepts a line whose newline arrives in the same read
//!   that took the buffer past 64 KiB. The two agree when bytes arrive in pieces of at most
//!   16 KiB minus the slack.
//! - **`max_request` bounds the whole request,** where redis's query-buffer limit (1 GiB) bounds
//!   the unparsed rest, since redis moves a big argument out of its buffer as soon as it is
//!   complete.
//!
//! # Examples
//!
//! ```
//! use refloop::framing::resp::{Args, Message, Reply};
//! use refloop::framing::{Decoded, Framing, Resp};
//!
//! let mut resp = Resp::new(512 * 1024 * 1024);
//! let wire = b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\nPING\r\n";
//! let Decoded::Message(Message::Command(args), used) = resp.decode(wire).unwrap() else {
//!     panic!("a whole command")
//! };
//! assert_eq!(args.to_vecs(), [b"ECHO".to_vec(), b"hi".to_vec()]);
//! assert_eq!(
//!     resp.decode(&wire[used..]).unwrap(),
//!     Decoded::Message(Message::Command(Args::from_slices([b"PING"])), 6),
//! );
//!
//! let mut out = Vec::new();
//! resp.encode(&Message::Reply(Reply::Bulk(b"hi".to_vec())), &mut out).unwrap();
//! assert_eq!(out, b"$2\r\nhi\r\n");
//! ```

use std::borrow::Cow;
use std::fmt;

use super::{Decoded, FrameError, Framing};

/// Redis's `PROTO_INLINE_MAX_SIZE`: the most bytes an inline request, a multibulk count line or
/// a bulk header may take before its line end.
pub const INLINE_MAX: usize = 64 * 1024;

/// Redis's default `proto-max-bulk-len`: 512 MiB.
pub const DEFAULT_MAX_BULK: usize = 512 * 1024 * 1024;

/// Redis's default `client-query-buffer-limit`: 1 GiB.
pub const DEFAULT_MAX_REQUEST: usize = 1024 * 1024 * 1024;

/// Redis's `LONG_STR_SIZE`: `string2ll` refuses strings of this many characters or more.
const LONG_STR_SIZE: usize = 21;

/// What [`Resp`] decodes and encodes.
///
/// Decoding yields [`Command`](Message::Command), [`Empty`](Message::Empty) and
/// [`ProtocolError`](Message::ProtocolError).
/// Encoding writes what the peer should receive: a `Command` or `Empty` as a multibulk request
/// (the client side), a [`Reply`](Message::Reply) or a `ProtocolError` as a reply (the server
/// side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request: its arguments, never empty, the command name first.
    Command(Args),
    /// A request redis ignores without a reply: an inline line with no argument, or a multibulk
    /// count of zero or less.
    Empty,
    /// The stream broke the protocol here. Reply with [`ProtocolError::reply`], then close.
    ProtocolError(ProtocolError),
    /// A reply to write (encoding only).
    Reply(Reply),
}

/// A RESP2 reply, as [`Resp::encode`](Framing::encode) writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+<text>\r\n`. The text must not contain `\r` or `\n`.
    Simple(Cow<'static, str>),
    /// `-<text>\r\n`, the text starting with its code (`ERR ...`, `WRONGTYPE ...`).
    /// It must not contain `\r` or `\n`; it may hold any other byte, as redis's errors do when
    /// they quote a client's argument.
    Error(Cow<'static, [u8]>),
    /// `:<n>\r\n`.
    Integer(i64),
    /// `$<len>\r\n<bytes>\r\n`.
    Bulk(Vec<u8>),
    /// The null bulk string, `$-1\r\n`.
    Null,
    /// The null array, `*-1\r\n`.
    NullArray,
    /// `*<n>\r\n` and each element.
    Array(Vec<Reply>),
    /// Bytes that already are RESP, written as they are.
    ///
    /// A server that builds its replies in a reused buffer sends them this way without
    /// allocating per reply.
    Raw(Vec<u8>),
}

impl Reply {
    /// A `+<text>` reply from a static string.
    pub const fn simple(text: &'static str) -> Reply {
        Reply::Simple(Cow::Borrowed(text))
    }

    /// A `-<text>` reply from a static string.
    pub const fn error(text: &'static str) -> Reply {
        Reply::Error(Cow::Borrowed(text.as_bytes()))
    }

    /// Appends the wire form to `out`.
    ///
    /// # Errors
    ///
    /// Fails, having written nothing, if a simple string or an error holds `\r` or `\n`.
    pub fn write_to(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        self.check()?;
        self.write_unchecked(out);
        Ok(())
    }

    fn check(&self) -> Result<(), FrameError> {
        match self {
            Reply::Simple(text) => line_safe(text.as_bytes()),
            Reply::Error(text) => line_safe(text),
            Reply::Array(items) => items.iter().try_for_each(Reply::check),
            _ => Ok(()),
        }
    }

    fn write_unchecked(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(text) => {
                out.push(b'+');
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Error(text) => {
                out.push(b'-');
                out.extend_from_slice(text);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Integer(n) => write_header(out, b':', *n),
            Reply::Bulk(bytes) => write_bulk(out, bytes),
            Reply::Null => out.extend_from_slice(b"$-1\r\n"),
            Reply::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(items) => {
                write_header(out, b'*', items.len() as i64);
                for item in items {
                    item.write_unchecked(out);
                }
            }
            Reply::Raw(bytes) => out.extend_from_slice(bytes),
        }
    }
}

fn line_safe(text: &[u8]) -> Result<(), FrameError> {
    if memchr::memchr2(b'\r', b'\n', text).is_some() {
        Err(FrameError::Malformed(Cow::Borrowed(
            "a simple string or error reply contains a line end",
        )))
    } else {
        Ok(())
    }
}

/// Appends `<kind><n>\r\n`, such as `:42\r\n` or `*3\r\n`.
pub fn write_header(out: &mut Vec<u8>, kind: u8, n: i64) {
    out.push(kind);
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// Appends a bulk string, `$<len>\r\n<bytes>\r\n`.
pub fn write_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    write_header(out, b'$', bytes.len() as i64);
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// The protocol errors redis 7.0 answers before it closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolError {
    /// An inline request of more than 64 KiB without a newline.
    TooBigInline,
    /// An inline request with an unterminated quote, or a closing quote not followed by a space.
    UnbalancedQuotes,
    /// A multibulk count that does not parse or is over `i32::MAX`.
    InvalidMultibulkLength,
    /// A multibulk count line of more than 64 KiB without its `\r`.
    TooBigMbulkCount,
    /// A bulk header that does not start with `$`; the byte it starts with.
    ExpectedDollar(u8),
    /// A bulk length that does not parse, is negative or is over the limit.
    InvalidBulkLength,
    /// A bulk header of more than 64 KiB without its `\r`.
    TooBigBulkCount,
}

impl ProtocolError {
    /// The reply redis writes, byte for byte: `-ERR Protocol error: ...\r\n`.
    ///
    /// For [`ExpectedDollar`](ProtocolError::ExpectedDollar), redis maps a `\r` or `\n` byte to
    /// a space (so the reply stays one line) and keeps any other byte, NUL included.
    pub fn reply(&self) -> Vec<u8> {
        let mut out = b"-ERR ".to_vec();
        match self {
            ProtocolError::ExpectedDollar(byte) => {
                out.extend_from_slice(b"Protocol error: expected '$', got '");
                out.push(if matches!(byte, b'\r' | b'\n') {
                    b' '
                } else {
                    *byte
                });
                out.push(b'\'');
            }
            other => out.extend_from_slice(other.static_text().as_bytes()),
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    fn static_text(&self) -> &'static str {
        match self {
            ProtocolError::TooBigInline => "Protocol error: too big inline request",
            ProtocolError::UnbalancedQuotes => "Protocol error: unbalanced quotes in request",
            ProtocolError::InvalidMultibulkLength => "Protocol error: invalid multibulk length",
            ProtocolError::TooBigMbulkCount => "Protocol error: too big mbulk count string",
            ProtocolError::ExpectedDollar(_) => "Protocol error: expected '$'",
            ProtocolError::InvalidBulkLength => "Protocol error: invalid bulk length",
            ProtocolError::TooBigBulkCount => "Protocol error: too big bulk count string",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ExpectedDollar(byte) => write!(
                f,
                "Protocol error: expected '$', got {:?}",
                char::from(*byte)
            ),
            other => f.write_str(other.static_text()),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// The RESP request framing of a redis 7.0 server; `Message = `[`Message`].
///
/// See the [module documentation](self) for the rules it follows.
/// One value decodes one connection's stream: it keeps how far it has parsed the current
/// request, so a request fed one byte at a time is scanned once.
///
/// # Notes
///
/// `max_buffered` is `max_request`: the loop buffers at most one request (plus one read), and
/// this decoder errors with [`FrameError::TooLong`] before it asks for more.
/// The largest allocation `decode` makes is the copy of one argument, at most `max_bulk`.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Redis's `proto-max-bulk-len`: the longest bulk accepted.
    max_bulk: usize,
    /// The longest request accepted, in bytes on the wire.
    max_request: usize,
    /// How far the current request has been parsed.
    progress: Progress,
    /// Set once a [`Message::ProtocolError`] was returned: every later call is an error.
    poisoned: bool,
    /// Input bytes examined so far (scanned for line ends, split, or copied out).
    examined: u64,
}

/// How far the current request has been parsed; offsets are into the `buf` that `decode` gets,
/// which starts at the request.
#[derive(Debug, Clone, Default)]
enum Progress {
    /// Nothing parsed.
    #[default]
    Start,
    /// An inline request: the state of the search for its `\n`.
    Inline(Scan),
    /// A multibulk request.
    Multibulk(Multibulk),
}

/// The search for a line end from some offset.
#[derive(Debug, Clone, Copy, Default)]
struct Scan {
    /// Bytes after the offset known to hold neither the line end nor a NUL.
    scanned: usize,
    /// A NUL came first: redis's `strchr` never finds this line end.
    blocked: bool,
}

#[derive(Debug, Clone, Default)]
struct Multibulk {
    /// Arguments still to read; `None` until the count line is parsed.
    remaining: Option<u64>,
    /// The offset of the next unparsed byte: the count line, a bulk header, or (with `bulk`
    /// set) a bulk's first byte.
    pos: usize,
    /// The search for the line end of the count line or of the header at `pos`.
    scan: Scan,
    /// The length of the bulk at `pos`, once its header is parsed.
    bulk: Option<usize>,
    /// Where the first bulk header starts.
    first_header: usize,
    /// Arguments complete so far.
    complete: usize,
    /// The packed size of the complete arguments (see [`Args`]).
    packed_len: usize,
}

/// What parsing the buffered bytes came to.
enum Step {
    Done(Message, usize),
    NeedMore,
    Error(ProtocolError, usize),
}

impl Resp {
    /// A framing that accepts bulks of at most `max_bulk` bytes (redis's `proto-max-bulk-len`)
    /// and requests of at most 1 GiB or `max_bulk` plus 256 KiB, whichever is more.
    pub fn new(max_bulk: usize) -> Resp {
        let max_request = DEFAULT_MAX_REQUEST.max(max_bulk.saturating_add(256 * 1024));
        Resp::with_limits(max_bulk, max_request)
    }

    /// A framing with both limits given.
    ///
    /// `max_request` bounds one whole request on the wire. Keep it above [`INLINE_MAX`] plus a
    /// few bytes to answer redis's "too big" errors as redis does; below that, a long line is
    /// [`FrameError::TooLong`] first.
    pub fn with_limits(max_bulk: usize, max_request: usize) -> Resp {
        Resp {
            max_bulk,
            max_request,
            progress: Progress::Start,
            poisoned: false,
            examined: 0,
        }
    }

    /// The longest bulk accepted.
    pub fn max_bulk(&self) -> usize {
        self.max_bulk
    }

    /// The longest request accepted.
    pub fn max_request(&self) -> usize {
        self.max_request
    }

    /// The declared length of the bulk being read, if a header was parsed and its bytes have
    /// not all arrived (for the known-bad variant in `check::framing::known_bad`).
    #[doc(hidden)]
    pub fn pending_bulk_len(&self) -> Option<usize> {
        match &self.progress {
            Progress::Multibulk(m) => m.bulk,
            _ => None,
        }
    }

    /// Searches `view[from..]` for `end`, resuming where the last call stopped, within the
    /// first `INLINE_MAX + 1` bytes. Returns the line end's offset in `view`.
    fn find_line_end(
        &mut self,
        view: &[u8],
        from: usize,
        end: u8,
        scan: &mut Scan,
    ) -> Option<usize> {
        if scan.blocked {
            return None;
        }
        let limit = view.len().min(from + INLINE_MAX + 1);
        let start = from + scan.scanned;
        if start >= limit {
            return None;
        }
        let window = &view[start..limit];
        match memchr::memchr2(end, 0, window) {
            Some(at) => {
                self.examined += at as u64 + 1;
                if window[at] == 0 {
                    scan.blocked = true;
                    None
                } else {
                    scan.scanned = start + at - from;
                    Some(start + at)
                }
            }
            None => {
                self.examined += window.len() as u64;
                scan.scanned = limit - from;
                None
            }
        }
    }

    fn step_inline(&mut self, view: &[u8], mut scan: Scan) -> Step {
        let Some(newline) = self.find_line_end(view, 0, b'\n', &mut scan) else {
            self.progress = Progress::Inline(scan);
            return if view.len() > INLINE_MAX {
                Step::Error(ProtocolError::TooBigInline, view.len())
            } else {
                Step::NeedMore
            };
        };
        let line = &view[..newline];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.examined += line.len() as u64;
        match split_args(line) {
            None => Step::Error(ProtocolError::UnbalancedQuotes, newline + 1),
            Some(args) if args.is_empty() => Step::Done(Message::Empty, newline + 1),
            Some(args) => Step::Done(Message::Command(args), newline + 1),
        }
    }

    fn step_multibulk(&mut self, view: &[u8], mut m: Multibulk) -> Step {
        let remaining = match m.remaining {
            Some(remaining) => remaining,
            None => {
                let Some(cr) = self.find_line_end(view, 0, b'\r', &mut m.scan) else {
                    return self.wait_for_line(view, 0, m, ProtocolError::TooBigMbulkCount);
                };
                if cr + 2 > view.len() {
                    return self.park(m);
                }
                match string2ll(&view[1..cr]) {
                    Some(n) if n <= i64::from(i32::MAX) => {
                        if n <= 0 {
                            return Step::Done(Message::Empty, cr + 2);
                        }
                        m.pos = cr + 2;
                        m.first_header = m.pos;
                        m.scan = Scan::default();
                        // Nothing is reserved by the count: it is only the peer's claim.
                        m.remaining = Some(n as u64);
                        n as u64
                    }
                    _ => return Step::Error(ProtocolError::InvalidMultibulkLength, cr + 2),
                }
            }
        };
        let mut remaining = remaining;
        while remaining > 0 {
            let len = match m.bulk {
                Some(len) => len,
                None => {
                    let Some(cr) = self.find_line_end(view, m.pos, b'\r', &mut m.scan) else {
                        let pos = m.pos;
                        return self.wait_for_line(view, pos, m, ProtocolError::TooBigBulkCount);
                    };
                    if cr + 2 > view.len() {
                        return self.park(m);
                    }
                    if view[m.pos] != b'$' {
                        return Step::Error(ProtocolError::ExpectedDollar(view[m.pos]), cr + 2);
                    }
                    let len = match string2ll(&view[m.pos + 1..cr]) {
                        Some(n) if n >= 0 && n as u64 <= self.max_bulk as u64 => n as usize,
                        _ => return Step::Error(ProtocolError::InvalidBulkLength, cr + 2),
                    };
                    m.pos = cr + 2;
                    m.scan = Scan::default();
                    m.bulk = Some(len);
                    len
                }
            };
            // The bulk and the two bytes after it (redis skips them unchecked).
            if view.len() - m.pos < len.saturating_add(2) {
                return self.park(m);
            }
            m.complete += 1;
            m.packed_len += varint_len(len) + len;
            m.pos += len + 2;
            m.bulk = None;
            remaining -= 1;
            m.remaining = Some(remaining);
        }
        self.examined += (m.pos - m.first_header) as u64;
        match pack_bulks(&view[m.first_header..m.pos], m.complete, m.packed_len) {
            Some(args) => Step::Done(Message::Command(args), m.pos),
            // Unreachable: the same bytes parsed a moment ago.
            None => Step::Error(ProtocolError::InvalidBulkLength, m.pos),
        }
    }

    /// No line end at `from` yet: the "too big" error past 64 KiB, else wait.
    fn wait_for_line(
        &mut self,
        view: &[u8],
        from: usize,
        m: Multibulk,
        error: ProtocolError,
    ) -> Step {
        if view.len() - from > INLINE_MAX {
            return Step::Error(error, view.len());
        }
        self.park(m)
    }

    fn park(&mut self, m: Multibulk) -> Step {
        self.progress = Progress::Multibulk(m);
        Step::NeedMore
    }

    /// How many bytes of the current request must still arrive, if a bulk's length is known.
    fn bulk_bytes_needed(&self, buffered: usize) -> Option<usize> {
        let Progress::Multibulk(m) = &self.progress else {
            return None;
        };
        let end = m.pos.saturating_add(m.bulk?).saturating_add(2);
        // Past `max_request` the answer is `TooLong`, which comes one byte after the limit.
        let decided_at = end.min(self.max_request.saturating_add(1));
        decided_at.checked_sub(buffered).filter(|&n| n > 0)
    }
}

impl Framing for Resp {
    type Message = Message;

    fn decode(&mut self, buf: &[u8]) -> Result<Decoded<Message>, FrameError> {
        if self.poisoned {
            return Err(FrameError::Malformed(Cow::Borrowed(
                "input after a protocol error",
            )));
        }
        if buf.is_empty() {
            return Ok(Decoded::NeedMore);
        }
        if self.max_request == 0 {
            return Err(FrameError::TooLong {
                limit: 0,
                declared: 1,
            });
        }
        // Decide within the first `max_request` bytes; a request that needs more is too long.
        let view = &buf[..buf.len().min(self.max_request)];
        let step = match std::mem::take(&mut self.progress) {
            Progress::Start if view[0] == b'*' => self.step_multibulk(view, Multibulk::default()),
            Progress::Start => self.step_inline(view, Scan::default()),
            Progress::Inline(scan) => self.step_inline(view, scan),
            Progress::Multibulk(m) => self.step_multibulk(view, m),
        };
        match step {
            Step::Done(msg, used) => {
                self.progress = Progress::Start;
                Ok(Decoded::Message(msg, used))
            }
            Step::Error(error, used) => {
                self.progress = Progress::Start;
                self.poisoned = true;
                Ok(Decoded::Message(
                    Message::ProtocolError(error),
                    used.clamp(1, buf.len()),
                ))
            }
            Step::NeedMore if buf.len() > self.max_request => {
                self.progress = Progress::Start;
                Err(FrameError::TooLong {
                    limit: self.max_request,
                    declared: (self.max_request as u64).saturating_add(1),
                })
            }
            Step::NeedMore => Ok(Decoded::NeedMore),
        }
    }

    fn encode(&mut self, msg: &Message, out: &mut Vec<u8>) -> Result<(), FrameError> {
        match msg {
            Message::Command(args) => {
                if args.is_empty() {
                    return Err(FrameError::Malformed(Cow::Borrowed(
                        "a command needs at least one argument",
                    )));
                }
                if let Some(arg) = args.iter().find(|a| a.len() > self.max_bulk) {
                    return Err(FrameError::TooLong {
                        limit: self.max_bulk,
                        declared: arg.len() as u64,
                    });
                }
                let before = out.len();
                write_header(out, b'*', args.len() as i64);
                for arg in args {
                    write_bulk(out, arg);
                }
                if out.len() - before > self.max_request {
                    let declared = (out.len() - before) as u64;
                    out.truncate(before);
                    return Err(FrameError::TooLong {
                        limit: self.max_request,
                        declared,
                    });
                }
                Ok(())
            }
            Message::Empty => {
                out.extend_from_slice(b"*0\r\n");
                Ok(())
            }
            Message::ProtocolError(error) => {
                out.extend_from_slice(&error.reply());
                Ok(())
            }
            Message::Reply(reply) => reply.write_to(out),
        }
    }

    /// `max_request`: a request longer than that is [`FrameError::TooLong`].
    fn max_buffered(&self) -> Option<usize> {
        Some(self.max_request)
    }

    fn bytes_needed(&self, buf: &[u8]) -> Option<usize> {
        self.bulk_bytes_needed(buf.len())
    }

    fn bytes_examined(&self) -> Option<u64> {
        Some(self.examined)
    }
}

/// Redis's `string2ll`: a decimal `i64` with an optional `-`, no `+`, no leading zero (`0`
/// itself excepted), no spaces, fewer than 21 characters.
pub fn string2ll(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() >= LONG_STR_SIZE {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        if v > i64::MAX as u64 + 1 {
            return None;
        }
        Some((v as i64).wrapping_neg())
    } else {
        i64::try_from(v).ok()
    }
}

/// C's `isspace` in the C locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Redis's `sdssplitargs` on a line that holds no NUL: the arguments, or `None` for unbalanced
/// quotes (or a closing quote followed by something other than a space).
///
/// Outside quotes, only space, `\t`, `\n` and `\r` end an argument, while every `isspace` byte
/// (also `\v` and `\f`) is skipped between arguments; a quote may open in the middle of an
/// argument (`a"b c"` is one argument, `ab c`).
///
/// # Notes
///
/// It splits twice, first to size the result exactly and then to fill it, so that no
/// allocation is bigger than the line plus one byte.
pub fn split_args(line: &[u8]) -> Option<Args> {
    let mut scratch = Vec::with_capacity(line.len());
    let (mut count, mut packed_len) = (0, 0);
    split_with(line, &mut scratch, |arg| {
        count += 1;
        packed_len += varint_len(arg.len()) + arg.len();
    })?;
    let mut args = Args {
        packed: Vec::with_capacity(packed_len),
        count: 0,
    };
    split_with(line, &mut scratch, |arg| args.push(arg))?;
    debug_assert_eq!(args.count, count);
    Some(args)
}

/// The splitting loop of [`split_args`]: calls `emit` with each argument; `None` for
/// unbalanced quotes.
fn split_with(line: &[u8], current: &mut Vec<u8>, mut emit: impl FnMut(&[u8])) -> Option<()> {
    // C strings end in NUL; reading one past the end stands for it.
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut p = 0;
    loop {
        while p < line.len() && is_space(line[p]) {
            p += 1;
        }
        if p >= line.len() {
            return Some(());
        }
        current.clear();
        let (mut in_double, mut in_single) = (false, false);
        loop {
            let c = at(p);
            if in_double {
                if c == b'\\' && at(p + 1) == b'x' {
                    if let (Some(hi), Some(lo)) = (hex_value(at(p + 2)), hex_value(at(p + 3))) {
                        current.push(hi * 16 + lo);
                        p += 4;
                        continue;
                    }
                }
                if c == b'\\' && at(p + 1) != 0 {
                    current.push(match at(p + 1) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                    p += 2;
                } else if c == b'"' {
                    // The closing quote must be followed by a space or the end.
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return None;
                    }
                    p += 1;
                    break;
                } else if c == 0 {
                    return None;
                } else {
                    current.push(c);
                    p += 1;
                }
            } else if in_single {
                if c == b'\\' && at(p + 1) == b'\'' {
                    current.push(b'\'');
                    p += 2;
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return None;
                    }
                    p += 1;
                    break;
                } else if c == 0 {
                    return None;
                } else {
                    current.push(c);
                    p += 1;
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => {
                        if c != 0 {
                            p += 1;
                        }
                        break;
                    }
                    b'"' => in_double = true,
                    b'\'' => in_single = true,
                    other => current.push(other),
                }
                p += 1;
            }
        }
        emit(current);
    }
}

/// Packs the `count` complete bulks of `bulks` (the request from its first header on) into
/// `packed_len` bytes.
fn pack_bulks(bulks: &[u8], count: usize, packed_len: usize) -> Option<Args> {
    let mut args = Args {
        packed: Vec::with_capacity(packed_len),
        count: 0,
    };
    let mut at = 0;
    for _ in 0..count {
        let cr = at + memchr::memchr(b'\r', bulks.get(at..)?)?;
        let len = usize::try_from(string2ll(bulks.get(at + 1..cr)?)?).ok()?;
        let data = cr + 2;
        args.push(bulks.get(data..data + len)?);
        at = data + len + 2;
    }
    debug_assert_eq!(args.packed.len(), packed_len);
    Some(args)
}

/// Bytes of the LEB128 encoding of `n`.
fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// A command's arguments, in one allocation.
///
/// Each argument is stored as its length (LEB128) then its bytes, so the arguments of a
/// request never take more room than the request did on the wire (plus one byte): a peer's
/// argument count cannot make the decoder allocate more than it sent.
///
/// # Examples
///
/// ```
/// use refloop::framing::resp::Args;
///
/// let args = Args::from_slices([&b"SET"[..], b"k", b"v"]);
/// assert_eq!(args.len(), 3);
/// assert_eq!(args.get(1), Some(&b"k"[..]));
/// assert_eq!(args.iter().collect::<Vec<_>>(), [&b"SET"[..], b"k", b"v"]);
/// ```
#[derive(Clone, PartialEq, Eq, Default, Hash)]
pub struct Args {
    /// `count` times: the argument's length as LEB128, then its bytes.
    packed: Vec<u8>,
    /// How many arguments `packed` holds.
    count: usize,
}

impl Args {
    /// The arguments of `slices`, in order.
    pub fn from_slices<I>(slices: I) -> Args
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut args = Args::default();
        for slice in slices {
            args.push(slice.as_ref());
        }
        args
    }

    fn push(&mut self, arg: &[u8]) {
        let mut n = arg.len();
        while n >= 0x80 {
            self.packed.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        self.packed.push(n as u8);
        self.packed.extend_from_slice(arg);
        self.count += 1;
    }

    /// How many arguments there are.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none (a decoded command always has at least one).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The `index`th argument (walks the ones before it).
    pub fn get(&self, index: usize) -> Option<&[u8]> {
        self.iter().nth(index)
    }

    /// The arguments in order.
    pub fn iter(&self) -> ArgsIter<'_> {
        ArgsIter {
            rest: &self.packed,
            left: self.count,
        }
    }

    /// The arguments as separate vectors.
    pub fn to_vecs(&self) -> Vec<Vec<u8>> {
        self.iter().map(<[u8]>::to_vec).collect()
    }
}

impl fmt::Debug for Args {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|a| String::from_utf8_lossy(a)))
            .finish()
    }
}

impl<'a> IntoIterator for &'a Args {
    type Item = &'a [u8];
    type IntoIter = ArgsIter<'a>;

    fn into_iter(self) -> ArgsIter<'a> {
        self.iter()
    }
}

/// The iterator of [`Args::iter`].
#[derive(Debug, Clone)]
pub struct ArgsIter<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for ArgsIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let (&byte, rest) = self.rest.split_first()?;
            self.rest = rest;
            len |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte < 0x80 {
                break;
            }
        }
        let (arg, rest) = self.rest.split_at_checked(len)?;
        self.rest = rest;
        self.left -= 1;
        Some(arg)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for ArgsIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(stream: &[u8]) -> Vec<Message> {
        let mut resp = Resp::new(DEFAULT_MAX_BULK);
        let mut out = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            match resp.decode(&stream[at..]) {
                Ok(Decoded::Message(msg, used)) => {
                    at += used;
                    let stop = matches!(msg, Message::ProtocolError(_));
                    out.push(msg);
                    if stop {
                        break;
                    }
                }
                Ok(Decoded::NeedMore) | Err(_) => break,
            }
        }
        out
    }

    fn cmd(args: &[&[u8]]) -> Message {
        Message::Command(Args::from_slices(args))
    }

    #[test]
    fn string2ll_accepts_exactly_what_redis_accepts() {
        assert_eq!(string2ll(b"0"), Some(0));
        assert_eq!(string2ll(b"-1"), Some(-1));
        assert_eq!(string2ll(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(string2ll(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b"01",
            b"-0",
            b" 1",
            b"1 ",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"1x",
        ] {
            assert_eq!(string2ll(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn split_args_follows_sdssplitargs_quoting() {
        let split = |s: &[u8]| split_args(s).map(|a| a.to_vecs());
        assert_eq!(
            split(b"  a  b\tc "),
            Some(vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()])
        );
        assert_eq!(
            split(b"\"a\\x41\\n\" 'it\\'s'"),
            Some(vec![b"aA\n".to_vec(), b"it's".to_vec()])
        );
        assert_eq!(split(b"a\"b c\""), Some(vec![b"ab c".to_vec()]));
        assert_eq!(split(b"a\x0bb"), Some(vec![b"a\x0bb".to_vec()]));
        assert_eq!(split(b"\"x\"y"), None);
        assert_eq!(split(b"\"unterminated"), None);
        assert_eq!(split(b"'x"), None);
        assert_eq!(split(b"\x0b\x0c"), Some(vec![]));
        assert_eq!(split(b"\"\\xZZ\""), Some(vec![b"xZZ".to_vec()]));
    }

    #[test]
    fn inline_and_multibulk_requests_decode_to_the_same_command() {
        assert_eq!(
            decode_all(b"SET k v\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"),
            [cmd(&[b"SET", b"k", b"v"]), cmd(&[b"SET", b"k", b"v"])]
        );
    }

    #[test]
    fn bytes_after_a_line_end_are_skipped_unchecked_like_redis() {
        assert_eq!(decode_all(b"*1\rX$1\rYaZZ"), [cmd(&[b"a"])]);
    }

    #[test]
    fn empty_lines_and_non_positive_counts_are_empty_requests() {
        assert_eq!(
            decode_all(b"\r\n\n  \r\n*0\r\n*-5\r\nPING\n"),
            [
                Message::Empty,
                Message::Empty,
                Message::Empty,
                Message::Empty,
                Message::Empty,
                cmd(&[b"PING"])
            ]
        );
    }

    #[test]
    fn protocol_errors_carry_redis_texts_and_end_the_stream() {
        let cases: &[(&[u8], &[u8])] = &[
            (
                b"*x\r\n",
                b"-ERR Protocol error: invalid multibulk length\r\n",
            ),
            (
                b"*2147483648\r\n",
                b"-ERR Protocol error: invalid multibulk length\r\n",
            ),
            (
                b"*1\r\nfoo\r\n",
                b"-ERR Protocol error: expected '$', got 'f'\r\n",
            ),
            (
                b"*1\r\n\r\n",
                b"-ERR Protocol error: expected '$', got ' '\r\n",
            ),
            (
                b"*1\r\n$-1\r\n",
                b"-ERR Protocol error: invalid bulk length\r\n",
            ),
            (
                b"*1\r\n$01\r\n",
                b"-ERR Protocol error: invalid bulk length\r\n",
            ),
            (
                b"GET \"a\r\n",
                b"-ERR Protocol error: unbalanced quotes in request\r\n",
            ),
        ];
        for (stream, reply) in cases {
            let got = decode_all(stream);
            let Some(Message::ProtocolError(e)) = got.last() else {
                panic!(
                    "no protocol error for {:?}: {got:?}",
                    String::from_utf8_lossy(stream)
                );
            };
            assert_eq!(e.reply(), *reply);
        }
    }

    #[test]
    fn a_bulk_over_max_bulk_is_an_invalid_length() {
        let mut resp = Resp::new(3);
        assert_eq!(
            resp.decode(b"*1\r\n$4\r\n"),
            Ok(Decoded::Message(
                Message::ProtocolError(ProtocolError::InvalidBulkLength),
                8
            ))
        );
        assert!(resp.decode(b"x").is_err());
    }

    #[test]
    fn an_inline_line_is_too_big_once_64_kib_and_one_byte_hold_no_newline() {
        let mut resp = Resp::new(DEFAULT_MAX_BULK);
        let mut line = vec![b'a'; INLINE_MAX];
        assert_eq!(resp.decode(&line), Ok(Decoded::NeedMore));
        line.push(b'\n');
        assert!(matches!(
            resp.decode(&line),
            Ok(Decoded::Message(Message::Command(_), _))
        ));
        line.pop();
        line.push(b'a');
        assert_eq!(
            Resp::new(DEFAULT_MAX_BULK).decode(&line),
            Ok(Decoded::Message(
                Message::ProtocolError(ProtocolError::TooBigInline),
                line.len()
            ))
        );
    }

    #[test]
    fn a_nul_before_the_line_end_hides_it_like_strchr() {
        let mut resp = Resp::new(DEFAULT_MAX_BULK);
        assert_eq!(resp.decode(b"GET a\0b\r\nPING\r\n"), Ok(Decoded::NeedMore));
        assert_eq!(resp.decode(b"*1\0\r\n"), Ok(Decoded::NeedMore));
    }

    #[test]
    fn a_declared_bulk_reserves_nothing_and_hints_its_remaining_bytes() {
        let mut resp = Resp::new(DEFAULT_MAX_BULK);
        let head = b"*1\r\n$400000000\r\n";
        assert_eq!(resp.decode(head), Ok(Decoded::NeedMore));
        assert_eq!(resp.pending_bulk_len(), Some(400_000_000));
        assert_eq!(resp.bytes_needed(head), Some(400_000_002));
    }

    #[test]
    fn replies_encode_as_redis_writes_them() {
        let mut resp = Resp::new(16);
        let mut out = Vec::new();
        let reply = Reply::Array(vec![
            Reply::simple("OK"),
            Reply::error("ERR x"),
            Reply::Integer(-12),
            Reply::Null,
            Reply::NullArray,
            Reply::Bulk(b"".to_vec()),
        ]);
        resp.encode(&Message::Reply(reply), &mut out).unwrap();
        assert_eq!(
            out,
            b"*6\r\n+OK\r\n-ERR x\r\n:-12\r\n$-1\r\n*-1\r\n$0\r\n\r\n"
        );
        let bad = Message::Reply(Reply::Array(vec![Reply::simple("a"), Reply::simple("b\r")]));
        assert!(resp.encode(&bad, &mut out).is_err());
        assert_eq!(out.len(), 39);
    }
}
