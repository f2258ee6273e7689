//! The `Framing` trait's defaults and the oracle's reports about them, and the shipped
//! framings' limits read back as configured (tests added to kill mutation survivors; see
//! `mutants/survivors.toml` and VERIFICATION.md, mutation testing).

use refloop::check::framing::{measure_allocations, try_check_stream, Property, TrackingAlloc};
use refloop::framing::{Decoded, FrameError, Framing, LengthPrefixed, Lines};

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

/// A framing that overrides nothing optional: bytes up to a NUL, no bound, no hint, no count.
struct Minimal;

impl Framing for Minimal {
    type Message = Vec<u8>;

    fn decode(&mut self, buf: &[u8]) -> Result<Decoded<Vec<u8>>, FrameError> {
        Ok(match buf.iter().position(|&b| b == 0) {
            Some(at) => Decoded::Message(buf[..at].to_vec(), at + 1),
            None => Decoded::NeedMore,
        })
    }

    fn encode(&mut self, msg: &Vec<u8>, out: &mut Vec<u8>) -> Result<(), FrameError> {
        out.extend_from_slice(msg);
        out.push(0);
        Ok(())
    }
}

/// `Minimal` with a stated bound, so the oracle's other checks run.
struct Bounded;

impl Framing for Bounded {
    type Message = Vec<u8>;

    fn decode(&mut self, buf: &[u8]) -> Result<Decoded<Vec<u8>>, FrameError> {
        Minimal.decode(buf)
    }

    fn encode(&mut self, msg: &Vec<u8>, out: &mut Vec<u8>) -> Result<(), FrameError> {
        Minimal.encode(msg, out)
    }

    fn max_buffered(&self) -> Option<usize> {
        Some(64)
    }
}

#[test]
fn a_framing_states_no_bound_hint_or_work_count_unless_it_overrides_them() {
    assert_eq!(Minimal.max_buffered(), None);
    assert_eq!(Minimal.bytes_needed(b"abc"), None);
    assert_eq!(Minimal.bytes_examined(), None);
}

#[test]
fn a_framing_that_states_no_bound_fails_bounded_buffering_even_on_an_empty_stream() {
    for stream in [&b""[..], b"\0", b"ab\0"] {
        let violation = try_check_stream(|| Minimal, stream, &[]).unwrap_err();
        assert_eq!(violation.property, Property::BoundedBuffering);
        assert!(violation.detail.contains("states no bound"), "{violation}");
    }
}

#[test]
fn linear_work_is_reported_unchecked_for_a_framing_that_does_not_count() {
    let report = try_check_stream(|| Bounded, b"abc\0de\0", &[2, 5]).unwrap();
    assert_eq!(report.max_work_per_byte, None);
    // A counting framing gets a figure.
    let report = try_check_stream(|| Lines::new(8), b"abc\nde\n", &[2, 5]).unwrap();
    assert!(report.max_work_per_byte.is_some_and(|w| w > 0.0));
}

#[test]
fn limits_read_back_as_configured() {
    for n in [0, 1, 7, 4096, usize::MAX] {
        assert_eq!(LengthPrefixed::new(n).max_frame_len(), n);
        assert_eq!(Lines::new(n).max_line_len(), n);
    }
    assert_eq!(
        LengthPrefixed::default().max_frame_len(),
        LengthPrefixed::DEFAULT_MAX_FRAME_LEN
    );
}

#[test]
fn encoding_a_frame_into_an_empty_buffer_asks_once_for_exactly_its_size() {
    for len in [20, 100, 1000] {
        let msg = vec![7u8; len];
        let mut out = Vec::new();
        let (result, measured) =
            measure_allocations(|| LengthPrefixed::new(4096).encode(&msg, &mut out));
        result.unwrap();
        let measured = measured.expect("TrackingAlloc is installed");
        assert_eq!(measured.requests, 1, "{len}-byte frame");
        assert_eq!(measured.largest_request, 4 + len, "{len}-byte frame");
    }
}

/// Asserts that, on a fresh framing, `decode` says `NeedMore` for each of the next `needed`
/// lengths of `stream` after `prefix` bytes, and, once a whole header is in (`prefix >= 4`, so
/// the hint claims to be exact), something else when `needed` more arrived.
fn hint_is_exact_from_a_cold_start<F: Framing>(make: impl Fn() -> F, stream: &[u8], prefix: usize) {
    let Some(needed) = make().bytes_needed(&stream[..prefix]) else {
        return;
    };
    if let Some(buf) = stream.get(..prefix + needed).filter(|_| prefix >= 4) {
        assert!(
            !matches!(make().decode(buf), Ok(Decoded::NeedMore)),
            "bytes_needed({prefix} bytes) = {needed}, but that many more still need more"
        );
    }
    for extra in 0..needed {
        let Some(buf) = stream.get(..prefix + extra) else {
            break;
        };
        assert!(
            matches!(make().decode(buf), Ok(Decoded::NeedMore)),
            "bytes_needed({prefix} bytes) = {needed}, but {extra} more already decide"
        );
    }
}

#[test]
fn length_prefixed_bytes_needed_is_exact_from_a_cold_start() {
    let streams: [&[u8]; 5] = [
        &[0, 0, 0, 3, 1, 2, 3],
        &[0, 0, 0, 4, 1, 2, 3, 4],
        &[0, 0, 0, 9, 1, 2],
        &[0xff, 0xff, 0xff, 0xff, 1],
        &[0, 0, 0, 0],
    ];
    for stream in streams {
        for prefix in 0..=stream.len() {
            hint_is_exact_from_a_cold_start(|| LengthPrefixed::new(4), stream, prefix);
        }
    }
    // A header over the limit is decided at once: nothing more is needed.
    assert_eq!(LengthPrefixed::new(4).bytes_needed(&[0, 0, 0, 9]), Some(0));
}

#[test]
fn lines_encode_accepts_a_line_of_exactly_the_limit_as_decode_does() {
    let mut out = Vec::new();
    Lines::new(3).encode(&"abc".to_string(), &mut out).unwrap();
    assert_eq!(out, b"abc\n");
    let mut framing = Lines::new(3);
    assert_eq!(
        framing.decode(&out),
        Ok(Decoded::Message("abc".to_string(), 4))
    );
    assert!(Lines::new(3).encode(&"abcd".to_string(), &mut out).is_err());
}

#[test]
fn encoding_a_line_into_an_empty_buffer_asks_once_for_exactly_its_size() {
    for len in [20, 100, 1000] {
        let line = "z".repeat(len);
        let mut out = Vec::new();
        let (result, measured) = measure_allocations(|| Lines::new(4096).encode(&line, &mut out));
        result.unwrap();
        let measured = measured.expect("TrackingAlloc is installed");
        assert_eq!(measured.requests, 1, "{len}-byte line");
        assert_eq!(measured.largest_request, len + 1, "{len}-byte line");
    }
}

#[test]
fn lines_counts_the_unterminated_last_line_as_examined_at_end_of_stream() {
    let mut framing = Lines::new(8);
    assert_eq!(framing.decode(b"abc"), Ok(Decoded::NeedMore));
    assert_eq!(framing.bytes_examined(), Some(3));
    // decode_eof scans nothing new and validates the three bytes of the last line.
    assert_eq!(framing.decode_eof(b"abc"), Ok(Some("abc".to_string())));
    assert_eq!(framing.bytes_examined(), Some(6));
}
