//! Named edge cases for `Resp`, each run through the framing oracle.
//!
//! Every `check_stream` call also checks the stream byte by byte and at the given cuts, and,
//! because `TrackingAlloc` is this binary's allocator, what each `decode` allocates.

use refloop::check::framing::known_bad::ReserveDeclaredBulk;
use refloop::check::framing::{
    check_round_trip, check_stream, try_check_stream, Property, TrackingAlloc,
};
use refloop::framing::resp::{Args, Message, ProtocolError, DEFAULT_MAX_BULK, INLINE_MAX};
use refloop::framing::{FrameError, Resp};

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

fn cmd(args: &[&[u8]]) -> Message {
    Message::Command(Args::from_slices(args))
}

fn every_cut(len: usize) -> Vec<usize> {
    (0..=len).collect()
}

fn truncated() -> FrameError {
    FrameError::Malformed("stream ended inside a frame".into())
}

fn after_error() -> FrameError {
    FrameError::Malformed("input after a protocol error".into())
}

fn resp() -> Resp {
    Resp::new(DEFAULT_MAX_BULK)
}

#[test]
fn pipelined_inline_and_multibulk_requests_decode_the_same_under_every_cut() {
    let stream = b"PING\r\n*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\nset k 'v w'\n*0\r\n\r\n";
    let report = check_stream(resp, stream, &every_cut(stream.len()));
    assert_eq!(
        report.outcome.messages,
        [
            cmd(&[b"PING"]),
            cmd(&[b"ECHO", b"hello"]),
            cmd(&[b"set", b"k", b"v w"]),
            Message::Empty,
            Message::Empty,
        ]
    );
    assert_eq!(report.outcome.end, Ok(None));
    assert!(report.allocation_checked);
}

#[test]
fn a_protocol_error_is_one_message_then_the_stream_is_over() {
    let stream = b"PING\r\n*1\r\n+PING\r\nPING\r\n";
    let report = check_stream(resp, stream, &every_cut(stream.len()));
    assert_eq!(
        report.outcome.messages,
        [
            cmd(&[b"PING"]),
            Message::ProtocolError(ProtocolError::ExpectedDollar(b'+'))
        ]
    );
    assert_eq!(report.outcome.end, Err(after_error()));
}

#[test]
fn every_protocol_error_is_found_at_the_same_point_under_every_cut() {
    let cases: &[(&[u8], ProtocolError)] = &[
        (b"*-x\r\n", ProtocolError::InvalidMultibulkLength),
        (b"*+1\r\n", ProtocolError::InvalidMultibulkLength),
        (b"*1\r\n$x\r\n", ProtocolError::InvalidBulkLength),
        (b"*1\r\n$1x\r\n", ProtocolError::InvalidBulkLength),
        (
            b"*2\r\n$1\r\na\r\n:1\r\n",
            ProtocolError::ExpectedDollar(b':'),
        ),
        (b"*1\r\n\x01\r\n", ProtocolError::ExpectedDollar(1)),
        (b"GET 'a\r\n", ProtocolError::UnbalancedQuotes),
        (b"GET \"a\"b\r\n", ProtocolError::UnbalancedQuotes),
    ];
    for (stream, error) in cases {
        let report = check_stream(resp, stream, &every_cut(stream.len()));
        assert_eq!(
            report.outcome.messages.last(),
            Some(&Message::ProtocolError(*error)),
            "{:?}",
            String::from_utf8_lossy(stream)
        );
    }
}

#[test]
fn the_64_kib_limits_are_counted_from_the_request_start_whatever_the_cuts() {
    let cuts = [
        1,
        100,
        INLINE_MAX - 1,
        INLINE_MAX,
        INLINE_MAX + 1,
        INLINE_MAX + 2,
    ];
    let cases: Vec<(Vec<u8>, ProtocolError)> = vec![
        (vec![b'a'; INLINE_MAX + 1], ProtocolError::TooBigInline),
        (
            [b"*".to_vec(), vec![b'1'; INLINE_MAX]].concat(),
            ProtocolError::TooBigMbulkCount,
        ),
        (
            [b"*1\r\n$".to_vec(), vec![b'1'; INLINE_MAX]].concat(),
            ProtocolError::TooBigBulkCount,
        ),
        // A NUL hides the line end for good, as redis's strchr does.
        (
            [b"GET a\0\r\n".to_vec(), vec![b'b'; INLINE_MAX]].concat(),
            ProtocolError::TooBigInline,
        ),
    ];
    for (stream, error) in cases {
        let report = check_stream(resp, &stream, &cuts);
        assert_eq!(report.outcome.messages, [Message::ProtocolError(error)]);
    }
    let mut longest = vec![b'a'; INLINE_MAX];
    longest.push(b'\n');
    let report = check_stream(resp, &longest, &cuts);
    assert_eq!(report.outcome.messages.len(), 1);
}

#[test]
fn a_400_mb_declared_bulk_costs_nothing_before_its_bytes_arrive() {
    let stream = b"*1\r\n$400000000\r\nabc";
    let report = check_stream(resp, stream, &every_cut(stream.len()));
    assert_eq!(report.outcome.messages, []);
    assert_eq!(report.outcome.end, Err(truncated()));
    assert!(
        report.largest_allocation < 64,
        "largest allocation {} bytes",
        report.largest_allocation
    );
}

#[test]
fn the_oracle_rejects_a_decoder_that_reserves_by_the_declared_length() {
    let stream = b"*1\r\n$99999999\r\n";
    let violation =
        try_check_stream(|| ReserveDeclaredBulk::with_limits(1024, 4096), stream, &[]).unwrap_err();
    assert_eq!(violation.property, Property::BoundedAllocation);
    // The real decoder answers the same stream with the error and allocates nothing big.
    let report = check_stream(|| Resp::with_limits(1024, 4096), stream, &[]);
    assert_eq!(
        report.outcome.messages,
        [Message::ProtocolError(ProtocolError::InvalidBulkLength)]
    );
}

#[test]
fn a_request_over_max_request_is_too_long_after_the_same_bytes_under_every_cut() {
    let stream = b"*2\r\n$3\r\nSET\r\n$10\r\n0123456789\r\n";
    let report = check_stream(
        || Resp::with_limits(64, 20),
        stream,
        &every_cut(stream.len()),
    );
    assert_eq!(
        report.outcome.end,
        Err(FrameError::TooLong {
            limit: 20,
            declared: 21
        })
    );
    assert!(report.max_pending <= 20);
}

#[test]
fn a_big_bulk_fed_byte_by_byte_is_decoded_in_linear_work() {
    let mut stream = b"*2\r\n$3\r\nSET\r\n$20000\r\n".to_vec();
    stream.extend(std::iter::repeat_n(b'x', 20_000));
    stream.extend_from_slice(b"\r\n");
    let report = check_stream(resp, &stream, &[5, 17, 1000]);
    assert_eq!(report.outcome.messages.len(), 1);
    assert!(report.max_work_per_byte.unwrap() < 3.0);
}

#[test]
fn commands_round_trip_through_encode_and_decode() {
    let messages = [
        cmd(&[b"SET", b"key", b"va\r\nlue"]),
        Message::Empty,
        cmd(&[b""]),
        cmd(&[&[0u8, 255, b'\n'][..], &vec![b'z'; 300]]),
    ];
    let report = check_round_trip(resp, &messages, &[3, 9, 40]);
    assert_eq!(report.outcome.messages.len(), 4);
}

#[test]
fn end_of_stream_inside_a_request_is_a_truncated_frame() {
    for stream in [&b"PIN"[..], b"*1\r\n$4\r\nPI", b"*1", b"*1\r\n"] {
        let report = check_stream(resp, stream, &every_cut(stream.len()));
        assert_eq!(report.outcome.end, Err(truncated()));
    }
}
