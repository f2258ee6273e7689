//! What the framing oracle reports besides pass or fail: its counts, its bound, the text of a
//! violation, and how it names runs and outcomes (tests added to kill mutation survivors of
//! `core/src/check/framing/mod.rs`; see VERIFICATION.md, mutation testing).

use refloop::check::framing::{
    check_round_trip, decode_stream, try_check_round_trip, try_check_stream, Property,
    TrackingAlloc, Violation,
};
use refloop::framing::{Decoded, FrameError, Framing, Lines};

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

#[test]
fn report_counts_runs_decode_calls_the_largest_pending_buffer_and_the_bound() {
    // Whole: Message, NeedMore ("cd"). Byte by byte: "a" "ab" NeedMore, "ab\n" Message then
    // NeedMore on nothing, "c" "cd" NeedMore. Cut at 1: "a" NeedMore, then Message, NeedMore.
    let report = try_check_stream(|| Lines::new(8), b"ab\ncd", &[1]).unwrap();
    assert_eq!(report.runs, 3);
    assert_eq!(report.decode_calls, 2 + 6 + 3);
    assert_eq!(report.max_pending, 2);
    assert_eq!(report.bound, 8);
    assert!(report.allocation_checked);
    // The largest allocation inside decode is a message's `String`: "ab" or "cd".
    assert_eq!(report.largest_allocation, 2);
    assert_eq!(report.outcome.messages, ["ab"]);
    assert_eq!(report.outcome.end, Ok(Some("cd".to_string())));
}

#[test]
fn a_round_trip_report_is_the_report_of_the_encoded_stream() {
    let report = check_round_trip(|| Lines::new(8), &["x".to_string(), "yz".to_string()], &[]);
    assert_eq!(report.runs, 3);
    assert_eq!(report.outcome.messages, ["x", "yz"]);
    assert_eq!(report.outcome.end, Ok(None));
}

#[test]
fn a_violation_displays_its_property_run_and_detail() {
    let v = Violation {
        property: Property::HintHonest,
        run: "cuts [1, 2]".to_string(),
        detail: "promised 3".to_string(),
    };
    assert_eq!(
        v.to_string(),
        "HintHonest violated (cuts [1, 2]): promised 3"
    );
    let err: &dyn std::error::Error = &v;
    assert!(err.source().is_none());
}

/// Lines, except that the byte-by-byte run (and only it) decodes every message as "?".
struct SplitDependent {
    inner: Lines,
    calls_without_message: usize,
}

impl Framing for SplitDependent {
    type Message = String;

    fn decode(&mut self, buf: &[u8]) -> Result<Decoded<String>, FrameError> {
        match self.inner.decode(buf)? {
            Decoded::Message(m, used) if self.calls_without_message > 2 => {
                self.calls_without_message = 0;
                let _ = m;
                Ok(Decoded::Message("?".to_string(), used))
            }
            Decoded::Message(m, used) => {
                self.calls_without_message = 0;
                Ok(Decoded::Message(m, used))
            }
            Decoded::NeedMore => {
                self.calls_without_message += 1;
                Ok(Decoded::NeedMore)
            }
        }
    }

    fn encode(&mut self, msg: &String, out: &mut Vec<u8>) -> Result<(), FrameError> {
        self.inner.encode(msg, out)
    }

    fn max_buffered(&self) -> Option<usize> {
        self.inner.max_buffered()
    }
}

#[test]
fn a_fragmentation_violation_shows_at_most_eight_messages_of_each_side() {
    let stream: Vec<u8> = (0..10)
        .flat_map(|i| format!("line{i}\n").into_bytes())
        .collect();
    let make = || SplitDependent {
        inner: Lines::new(16),
        calls_without_message: 0,
    };
    let v = try_check_stream(make, &stream, &[]).unwrap_err();
    assert_eq!(v.property, Property::FragmentationIndependence);
    assert_eq!(v.run, "byte-by-byte");
    assert!(
        v.detail.starts_with(
            "whole stream gave 10 messages [\"line0\", \"line1\", \"line2\", \"line3\", \
             \"line4\", \"line5\", \"line6\", \"line7\"] .. then Ok(None), this run gave 10 \
             messages [\"?\""
        ),
        "{}",
        v.detail
    );
}

#[test]
fn a_run_with_many_cuts_is_named_by_its_first_thirty_two() {
    // Only the cut run reads nothing first (a cut at 0), and this framing panics on that.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let cuts: Vec<usize> = (0..40).collect();
    let v = try_check_stream(|| StrictOnCutRun(Lines::new(64)), &[b'a'; 40], &cuts).unwrap_err();
    let few =
        try_check_stream(|| StrictOnCutRun(Lines::new(64)), &[b'a'; 40], &[0, 5]).unwrap_err();
    std::panic::set_hook(hook);
    let named: Vec<usize> = (0..32).collect();
    assert_eq!(v.property, Property::NoPanic);
    assert_eq!(v.run, format!("cuts {named:?}, .."));
    assert_eq!(few.run, "cuts [0, 5]");
    // The chunks decode_stream makes are those the name lists (a repeated cut is an empty read).
    let outcome = decode_stream(&mut Lines::new(64), b"ab\ncd\n", &[1, 1, 4]);
    assert_eq!(outcome.messages, ["ab", "cd"]);
}

/// Lines, except that it panics on an empty read (`decode` called twice on the same bytes),
/// which only a run with repeated cuts makes.
struct StrictOnCutRun(Lines);

impl Framing for StrictOnCutRun {
    type Message = String;

    fn decode(&mut self, buf: &[u8]) -> Result<Decoded<String>, FrameError> {
        assert!(!buf.is_empty(), "decode called with nothing buffered");
        self.0.decode(buf)
    }

    fn encode(&mut self, msg: &String, out: &mut Vec<u8>) -> Result<(), FrameError> {
        self.0.encode(msg, out)
    }

    fn max_buffered(&self) -> Option<usize> {
        self.0.max_buffered()
    }
}

/// Panics in `decode` with a payload of the given kind.
struct Panics(u8);

impl Framing for Panics {
    type Message = String;

    fn decode(&mut self, _: &[u8]) -> Result<Decoded<String>, FrameError> {
        match self.0 {
            0 => panic!("a str payload"),
            1 => panic!("a {} payload", "String"),
            _ => std::panic::panic_any(7u32),
        }
    }

    fn encode(&mut self, _: &String, _: &mut Vec<u8>) -> Result<(), FrameError> {
        match self.0 {
            0 => panic!("encode str"),
            _ => Ok(()),
        }
    }

    fn max_buffered(&self) -> Option<usize> {
        Some(8)
    }
}

#[test]
fn a_panic_is_reported_with_its_message_whatever_its_payload() {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let detail = |kind| try_check_stream(|| Panics(kind), b"x", &[]).unwrap_err();
    let (a, b, c) = (detail(0), detail(1), detail(2));
    let encode = try_check_round_trip(|| Panics(0), &["m".to_string()], &[]).unwrap_err();
    std::panic::set_hook(hook);
    assert_eq!(a.property, Property::NoPanic);
    assert_eq!(a.detail, "the framing panicked: a str payload");
    assert_eq!(b.detail, "the framing panicked: a String payload");
    assert_eq!(c.detail, "the framing panicked: non-string panic payload");
    assert_eq!(encode.property, Property::NoPanic);
    assert_eq!(encode.run, "encode");
    assert_eq!(encode.detail, "encode of message 0 panicked: encode str");
}

/// `Lines`, except that encoding `"drop"` removes the byte before it and encoding `"none"`
/// writes nothing.
struct OddEncoder(Lines);

impl Framing for OddEncoder {
    type Message = String;

    fn decode(&mut self, buf: &[u8]) -> Result<Decoded<String>, FrameError> {
        self.0.decode(buf)
    }

    fn encode(&mut self, msg: &String, out: &mut Vec<u8>) -> Result<(), FrameError> {
        match msg.as_str() {
            "drop" => {
                out.pop();
                Ok(())
            }
            "none" => Ok(()),
            _ => self.0.encode(msg, out),
        }
    }

    fn max_buffered(&self) -> Option<usize> {
        self.0.max_buffered()
    }
}

#[test]
fn an_encoder_that_removes_bytes_is_told_apart_from_one_that_writes_none() {
    let make = || OddEncoder(Lines::new(8));
    let removed =
        try_check_round_trip(make, &["a".to_string(), "drop".to_string()], &[]).unwrap_err();
    assert_eq!(removed.property, Property::RoundTrip);
    assert_eq!(removed.run, "encode");
    assert_eq!(
        removed.detail,
        "encode of message 1 removed bytes it did not write"
    );
    let none = try_check_round_trip(make, &["a".to_string(), "none".to_string()], &[]).unwrap_err();
    assert_eq!(none.property, Property::RoundTrip);
    assert_eq!(none.run, "whole");
    assert!(
        none.detail.starts_with("encoded 2 messages"),
        "{}",
        none.detail
    );
}
