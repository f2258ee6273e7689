//! Differential test: refloop's framings against tokio-util's codecs on the same streams.
//!
//! See `framing_common/tokio_peer.rs` for what must agree, and where the documented
//! behaviours differ (after the first error). Case counts come from `PROPTEST_CASES`.

#[path = "framing_common/tokio_peer.rs"]
mod tokio_peer;

use proptest::prelude::*;
use proptest::test_runner::Config;
use refloop_integration::framing_case::{Subject, Which};
use tokio_peer::{
    assert_agrees_with_tokio, refloop_decode, tokio_decode, try_agree_with_tokio, ErrorKind,
};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => any::<u8>(),
        2 => Just(b'a'),
        2 => Just(b'\n'),
        1 => Just(b'\r'),
        2 => Just(0u8),
        1 => Just(0xc3u8),
        1 => Just(0xa9u8),
    ]
}

proptest! {
    #![proptest_config(Config { cases: cases(), failure_persistence: None, ..Config::default() })]

    #[test]
    fn refloop_and_tokio_util_decode_the_same_messages_and_errors(
        lines in any::<bool>(),
        limit in prop_oneof![0usize..=8, 0usize..=300],
        stream in prop::collection::vec(interesting_byte(), 0..300),
        cuts in prop::collection::vec(0usize..300, 0..10),
    ) {
        let which = if lines { Which::Lines } else { Which::LengthPrefixed };
        let ours = refloop_decode(Subject::Real, which, limit, &stream, &cuts);
        let theirs = tokio_decode(which, limit, &stream, &cuts);
        prop_assert_eq!(ours, theirs);
    }
}

#[test]
fn differential_case_budget_is_reported() {
    println!(
        "@@stat proptest-cases refloop_and_tokio_util_decode_the_same_messages_and_errors {}",
        cases()
    );
}

#[test]
fn length_prefixed_agrees_with_tokio_on_limit_edges() {
    let stream = [0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 4, 1, 2, 3, 4];
    let decoded = tokio_decode(Which::LengthPrefixed, 3, &stream, &[]);
    assert_eq!(decoded.messages, [vec![1, 2, 3]]);
    assert_eq!(decoded.error, Some(ErrorKind::TooLong));
    assert_agrees_with_tokio(Subject::Real, Which::LengthPrefixed, 3, &stream, &[5, 9]);
    // A truncated last frame is an error on both sides.
    assert_agrees_with_tokio(Subject::Real, Which::LengthPrefixed, 3, &stream[..9], &[]);
}

#[test]
fn lines_agree_with_tokio_on_crlf_limit_and_eof() {
    for (limit, stream) in [
        (3, &b"abc\nabc\r\n"[..]),
        (4, b"abc\r\nlast\r"),
        (8, b"a\n\r"),
        (8, b"\xc3\xa9\n\xff\n"),
        (0, b"\n\n"),
    ] {
        assert_agrees_with_tokio(Subject::Real, Which::Lines, limit, stream, &[1, 4]);
    }
}

#[test]
fn tokio_discards_an_over_long_line_where_refloop_stops() {
    // The documented difference: the first error matches, what follows does not.
    let stream = b"toolong\nok\n";
    let ours = refloop_decode(Subject::Real, Which::Lines, 3, stream, &[]);
    assert_eq!(ours.error, Some(ErrorKind::TooLong));
    assert!(ours.messages.is_empty());
    let mut codec = tokio_util::codec::LinesCodec::new_with_max_length(3);
    let mut buf = bytes::BytesMut::from(&stream[..]);
    use tokio_util::codec::Decoder;
    assert!(codec.decode(&mut buf).is_err());
    assert_eq!(codec.decode(&mut buf).unwrap(), Some("ok".to_string()));
}

#[test]
fn tokio_drops_a_frame_cut_off_after_its_header_where_refloop_reports_it() {
    // The documented difference the `framing_tokio` fuzz target found: a complete header
    // (declaring 2815 bytes), then end of stream.
    let stream = [0, 0, 10, 255];
    let ours = refloop_decode(Subject::Real, Which::LengthPrefixed, 4096, &stream, &[]);
    let theirs = tokio_decode(Which::LengthPrefixed, 4096, &stream, &[]);
    assert_eq!(ours.error, Some(ErrorKind::Malformed));
    assert_eq!(theirs.error, None);
    assert!(theirs.messages.is_empty());
    assert!(tokio_peer::eof_after_bare_header(&ours, &theirs, &stream));
    // One payload byte more and both report the truncation.
    let stream = [0, 0, 10, 255, 1];
    assert_agrees_with_tokio(Subject::Real, Which::LengthPrefixed, 4096, &stream, &[]);
    // A header declaring zero bytes is a whole (empty) message on both sides.
    assert_agrees_with_tokio(Subject::Real, Which::LengthPrefixed, 4096, &[0; 4], &[]);
}

#[test]
fn differential_catches_header_off_by_one() {
    // Teeth: the known-bad framing disagrees with tokio-util once the header is split.
    let stream = [0, 0, 0, 2, b'h', b'i', 0, 0, 0, 0];
    let bad = Subject::Bad(refloop_integration::framing_case::KnownBad::HeaderOffByOne);
    let caught = try_agree_with_tokio(bad, Which::LengthPrefixed, 8, &stream, &[2]);
    assert!(
        caught.is_err(),
        "the differential check accepted HeaderOffByOne"
    );
    assert_agrees_with_tokio(Subject::Real, Which::LengthPrefixed, 8, &stream, &[2]);
}
