//! Named edge cases for `LengthPrefixed` and `Lines`, each run through the framing oracle.
//!
//! Every `check_stream` call below also checks the stream byte by byte and at the given cuts,
//! and, because `TrackingAlloc` is this binary's allocator, what each `decode` allocates.

use std::borrow::Cow;

use refloop::check::framing::{check_round_trip, check_stream, Outcome, TrackingAlloc};
use refloop::framing::{FrameError, Framing, LengthPrefixed, Lines};

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

fn truncated() -> FrameError {
    FrameError::Malformed(Cow::Borrowed("stream ended inside a frame"))
}

fn not_utf8() -> FrameError {
    FrameError::Malformed(Cow::Borrowed("line is not valid UTF-8"))
}

fn every_cut(len: usize) -> Vec<usize> {
    (0..=len).collect()
}

#[test]
fn allocation_tracking_is_active_in_this_binary() {
    let report = check_stream(|| LengthPrefixed::new(8), &frame(b"abc"), &[]);
    assert!(report.allocation_checked);
    assert_eq!(report.largest_allocation, 3);
}

#[test]
fn length_prefixed_empty_stream_is_no_messages() {
    let report = check_stream(|| LengthPrefixed::new(8), b"", &[0, 0]);
    assert_eq!(
        report.outcome,
        Outcome {
            messages: vec![],
            end: Ok(None)
        }
    );
}

#[test]
fn length_prefixed_header_split_anywhere_decodes_the_same() {
    let mut stream = frame(b"first");
    stream.extend(frame(b""));
    stream.extend(frame(b"third"));
    for cut in 0..=stream.len() {
        let report = check_stream(|| LengthPrefixed::new(8), &stream, &[cut, cut + 2, cut + 5]);
        assert_eq!(
            report.outcome.messages,
            [b"first".to_vec(), vec![], b"third".to_vec()]
        );
        assert_eq!(report.outcome.end, Ok(None));
    }
}

#[test]
fn length_prefixed_frame_of_exactly_the_limit_is_accepted() {
    let report = check_stream(|| LengthPrefixed::new(5), &frame(b"12345"), &[2, 6]);
    assert_eq!(report.outcome.messages, [b"12345".to_vec()]);
    assert_eq!(report.bound, 9);
}

#[test]
fn length_prefixed_over_limit_errors_at_its_index_with_declared_length() {
    let mut stream = frame(b"ok");
    stream.extend(frame(b"123456"));
    let report = check_stream(|| LengthPrefixed::new(5), &stream, &every_cut(stream.len()));
    assert_eq!(report.outcome.messages, [b"ok".to_vec()]);
    assert_eq!(
        report.outcome.end,
        Err(FrameError::TooLong {
            limit: 5,
            declared: 6
        })
    );
}

#[test]
fn length_prefixed_four_gib_header_is_rejected_without_allocating() {
    let report = check_stream(|| LengthPrefixed::new(1024), &[0xff; 4], &[1, 3]);
    assert_eq!(
        report.outcome.end,
        Err(FrameError::TooLong {
            limit: 1024,
            declared: u64::from(u32::MAX)
        })
    );
    assert!(report.allocation_checked);
    assert_eq!(report.largest_allocation, 0);
}

#[test]
fn length_prefixed_truncated_tail_is_an_error_at_eof() {
    let mut stream = frame(b"whole");
    stream.extend_from_slice(&frame(b"half")[..5]);
    let report = check_stream(|| LengthPrefixed::new(8), &stream, &[3, 9, 10]);
    assert_eq!(report.outcome.messages, [b"whole".to_vec()]);
    assert_eq!(report.outcome.end, Err(truncated()));
}

#[test]
fn length_prefixed_zero_limit_accepts_only_empty_frames() {
    let mut stream = frame(b"");
    stream.extend(frame(b"x"));
    let report = check_stream(|| LengthPrefixed::new(0), &stream, &[]);
    assert_eq!(report.outcome.messages, [Vec::<u8>::new()]);
    assert!(matches!(
        report.outcome.end,
        Err(FrameError::TooLong {
            limit: 0,
            declared: 1
        })
    ));
}

#[test]
fn length_prefixed_needmore_never_buffers_past_header_plus_limit() {
    let stream = frame(&[7; 100]);
    let report = check_stream(
        || LengthPrefixed::new(100),
        &stream,
        &every_cut(stream.len()),
    );
    assert_eq!(report.max_pending, 103);
    assert_eq!(report.bound, 104);
}

#[test]
fn length_prefixed_messages_round_trip() {
    let messages = vec![
        b"".to_vec(),
        b"a".to_vec(),
        vec![0xff; 300],
        b"\n\r\0".to_vec(),
    ];
    let report = check_round_trip(|| LengthPrefixed::new(300), &messages, &[1, 2, 3, 200]);
    assert_eq!(report.outcome.messages, messages);
}

#[test]
fn lines_crlf_split_between_cr_and_lf_decodes_the_same() {
    let stream = b"a\r\nb\r\n";
    let report = check_stream(|| Lines::new(4), stream, &[2, 5]);
    assert_eq!(report.outcome.messages, ["a", "b"]);
}

#[test]
fn lines_line_of_exactly_the_limit_is_accepted_and_cr_counts() {
    let report = check_stream(|| Lines::new(3), b"abc\nab\r\n", &[]);
    assert_eq!(report.outcome.messages, ["abc", "ab"]);
    let report = check_stream(|| Lines::new(3), b"ok\nabc\r\n", &[]);
    assert_eq!(report.outcome.messages, ["ok"]);
    assert_eq!(
        report.outcome.end,
        Err(FrameError::TooLong {
            limit: 3,
            declared: 4
        })
    );
}

#[test]
fn lines_over_long_line_without_newline_errors_at_its_index() {
    let stream = b"x\nyyyyyyyyyyyyyyyyyyyy";
    let report = check_stream(|| Lines::new(8), stream, &every_cut(stream.len()));
    assert_eq!(report.outcome.messages, ["x"]);
    assert_eq!(
        report.outcome.end,
        Err(FrameError::TooLong {
            limit: 8,
            declared: 9
        })
    );
    assert!(report.max_pending <= 8);
}

#[test]
fn lines_invalid_utf8_is_an_error_at_its_index() {
    let report = check_stream(|| Lines::new(8), b"good\nb\xffd\nnever\n", &[6]);
    assert_eq!(report.outcome.messages, ["good"]);
    assert_eq!(report.outcome.end, Err(not_utf8()));
}

#[test]
fn lines_multibyte_char_split_across_reads_decodes_the_same() {
    let stream = "h\u{e9}llo \u{1f980}\n".as_bytes();
    let report = check_stream(|| Lines::new(32), stream, &every_cut(stream.len()));
    assert_eq!(report.outcome.messages, ["h\u{e9}llo \u{1f980}"]);
}

#[test]
fn lines_unterminated_last_line_and_lone_cr_at_eof() {
    let report = check_stream(|| Lines::new(8), b"a\nlast\r", &[3]);
    assert_eq!(report.outcome.messages, ["a"]);
    assert_eq!(report.outcome.end, Ok(Some("last".to_string())));
    let report = check_stream(|| Lines::new(8), b"a\n\r", &[]);
    assert_eq!(report.outcome.end, Ok(None));
}

#[test]
fn lines_only_one_trailing_cr_is_stripped() {
    let report = check_stream(|| Lines::new(8), b"\r\r\n\n", &[1, 2]);
    assert_eq!(report.outcome.messages, ["\r", ""]);
}

#[test]
fn lines_zero_limit_accepts_only_empty_lines() {
    let report = check_stream(|| Lines::new(0), b"\n\nx\n", &[]);
    assert_eq!(report.outcome.messages, ["", ""]);
    assert!(matches!(
        report.outcome.end,
        Err(FrameError::TooLong { .. })
    ));
}

#[test]
fn lines_messages_round_trip_and_unencodable_lines_write_nothing() {
    let messages: Vec<String> = ["", "plain", "tab\tand\rcr", "\u{1f980}", "bad\n", "bad\r"]
        .map(String::from)
        .to_vec();
    let report = check_round_trip(|| Lines::new(16), &messages, &[1, 7, 7, 12]);
    assert_eq!(report.outcome.messages, messages[..4]);
}

#[test]
fn framing_errors_display_without_trailing_period() {
    let errors = [
        FrameError::TooLong {
            limit: 1,
            declared: 2,
        },
        not_utf8(),
        truncated(),
    ];
    for error in errors {
        let text = error.to_string();
        assert!(!text.ends_with('.'), "{text}");
    }
    assert_eq!(
        FrameError::TooLong {
            limit: 1,
            declared: 2
        }
        .to_string(),
        "frame too long: 2 bytes, limit 1"
    );
}

#[test]
fn each_decoded_message_costs_at_most_one_allocation() {
    let mut stream = Vec::new();
    let mut lp = LengthPrefixed::new(64);
    for len in [0, 1, 63, 64] {
        lp.encode(&vec![1; len], &mut stream).unwrap();
    }
    let report = check_stream(|| LengthPrefixed::new(64), &stream, &[]);
    assert_eq!(report.outcome.messages.len(), 4);
    let counted = count_allocations_per_message(LengthPrefixed::new(64), &stream);
    assert!(counted <= 1, "{counted} allocations for one message");
    let counted = count_allocations_per_message(Lines::new(64), b"\nline\r\n\xc3\xa9\n");
    assert!(counted <= 1, "{counted} allocations for one message");
}

#[test]
fn allocation_count_sees_a_decoder_that_copies_twice() {
    // The check above has teeth: a decoder that copies the payload twice is counted as two.
    #[derive(Debug)]
    struct CopiesTwice(LengthPrefixed);
    impl Framing for CopiesTwice {
        type Message = Vec<u8>;
        fn decode(&mut self, buf: &[u8]) -> Result<refloop::framing::Decoded<Vec<u8>>, FrameError> {
            Ok(match self.0.decode(buf)? {
                refloop::framing::Decoded::Message(m, used) => {
                    let staged = m.clone();
                    drop(m);
                    refloop::framing::Decoded::Message(staged, used)
                }
                other => other,
            })
        }
        fn encode(&mut self, msg: &Vec<u8>, out: &mut Vec<u8>) -> Result<(), FrameError> {
            self.0.encode(msg, out)
        }
    }
    let stream = frame(b"payload");
    let counted = count_allocations_per_message(CopiesTwice(LengthPrefixed::new(64)), &stream);
    assert_eq!(counted, 2);
}

/// The most allocations one successful `decode` call made, over a whole-stream decode.
fn count_allocations_per_message<F: Framing>(mut framing: F, stream: &[u8]) -> usize {
    use refloop::check::framing::measure_allocations;
    let mut start = 0;
    let mut most = 0;
    loop {
        let (result, measured) = measure_allocations(|| framing.decode(&stream[start..]));
        let measured = measured.expect("TrackingAlloc is installed");
        match result {
            Ok(refloop::framing::Decoded::Message(_, used)) => {
                most = most.max(measured.requests);
                start += used;
            }
            _ => return most,
        }
    }
}
