//! tokio-util codecs through `refloop::check::framing::tokio_codec` (feature `tokio-codec`).
//!
//! What the oracle finds in tokio-util's `LengthDelimitedCodec`, `LinesCodec`,
//! `AnyDelimiterCodec` and `BytesCodec` is pinned here, each divergence by a test that asserts
//! the divergent behaviour; the adapter's checks are shown to reject known-bad codecs; and the
//! checked-in inputs of the `framing_tokio_codec` fuzz target replay.

#[path = "framing_common/tokio_codecs.rs"]
mod tokio_codecs;

use std::io;
use std::path::Path;

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;
use proptest::test_runner::Config;
use refloop::check::framing::tokio_codec::known_bad::{
    HeaderOffByOneCodec, ReserveBeforeCheckCodec,
};
use refloop::check::framing::tokio_codec::{
    check_codec, check_codec_round_trip, fuzz_check, fuzz_input, try_check_codec,
    try_check_codec_round_trip, TokioCodec,
};
use refloop::check::framing::{decode_stream, Property, TrackingAlloc};
use refloop::framing::{Decoded, FrameError, Framing};
use tokio_codecs::{any_delimiter, bytes_codec, length_delimited, lines, Subject};
use tokio_util::codec::{Decoder, Encoder, LinesCodec};

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

fn frames(items: &[&[u8]]) -> Vec<BytesMut> {
    items.iter().map(|i| BytesMut::from(*i)).collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn adapter_counts_header_bytes_the_codec_took_early_as_part_of_the_frame() {
    let mut framing = length_delimited(16);
    // The codec takes the header out of its buffer and waits for the payload.
    assert_eq!(framing.decode(&[0, 0, 0, 2]).unwrap(), Decoded::NeedMore);
    assert_eq!(
        framing.decode(&[0, 0, 0, 2, b'h']).unwrap(),
        Decoded::NeedMore
    );
    // The frame is reported as using all six bytes of the stream, header included.
    assert_eq!(
        framing.decode(&[0, 0, 0, 2, b'h', b'i', 0]).unwrap(),
        Decoded::Message(BytesMut::from(&b"hi"[..]), 6)
    );
    // The caller dropped the six bytes; the seventh is still the codec's.
    assert_eq!(framing.decode(&[0]).unwrap(), Decoded::NeedMore);
    assert_eq!(
        framing.decode(&[0, 0, 0, 0]).unwrap(),
        Decoded::Message(BytesMut::new(), 4)
    );
}

#[test]
fn length_delimited_codec_passes_the_oracle_on_split_headers_and_payloads() {
    let stream = [
        &[0, 0, 0, 3][..],
        b"abc",
        &[0, 0, 0, 0],
        &[0, 0, 0, 1],
        b"z",
    ]
    .concat();
    for cuts in [vec![], vec![1], vec![2, 5, 5, 9], vec![4, 7, 8, 11]] {
        let report = check_codec(|| length_delimited(8), &stream, &cuts);
        assert_eq!(report.outcome.messages, frames(&[b"abc", b"", b"z"]));
        assert_eq!(report.outcome.end, Ok(None));
        assert!(report.allocation_checked);
    }
    check_codec_round_trip(
        || length_delimited(8),
        &frames(&[b"", b"x", b"eight by", b"nine bytes"]),
        &[3, 4, 9],
    );
}

#[test]
fn length_delimited_codec_rejects_an_over_limit_header_before_allocating() {
    let report = check_codec(
        || length_delimited(8),
        &[0xff, 0xff, 0xff, 0xff, 1, 2],
        &[2],
    );
    assert!(matches!(report.outcome.end, Err(FrameError::Malformed(_))));
    assert!(
        report.largest_allocation <= 4 + 8,
        "{}",
        report.largest_allocation
    );
}

#[test]
fn length_delimited_codec_loses_a_frame_cut_off_right_after_its_header() {
    // tokio-util's documented-nowhere behaviour, which refloop's LengthPrefixed reports as a
    // truncated frame: the header is already out of the buffer, so decode_eof sees nothing.
    for stream in [&[0, 0, 0, 5][..], &[0, 0, 0, 1, b'a', 0, 0, 0, 9]] {
        let violation = try_check_codec(|| length_delimited(16), stream, &[]).unwrap_err();
        assert_eq!(violation.property, Property::NoSilentLoss, "{violation}");
        assert_eq!(violation.run, "whole");
        assert!(violation.detail.contains("4 bytes taken"), "{violation}");
        assert!(tokio_codecs::ends_with_bare_header(stream, 16));
    }
    // One payload byte more and the default decode_eof reports the bytes left over.
    let report = check_codec(|| length_delimited(16), &[0, 0, 0, 5, b'a'], &[]);
    assert!(report.outcome.end.is_err());
}

#[test]
fn lines_codec_passes_the_oracle_on_crlf_split_chars_and_long_lines() {
    let stream = "one\r\ntwo\n\nthré\r\nlast".as_bytes();
    for cuts in [vec![], vec![4], vec![13, 14], vec![1, 2, 3, 4, 5]] {
        let report = check_codec(|| lines(8), stream, &cuts);
        assert_eq!(
            report.outcome.messages,
            strings(&["one", "two", "", "thré"])
        );
        assert_eq!(report.outcome.end, Ok(Some("last".to_string())));
    }
    let report = check_codec(|| lines(3), b"abc\nabcd\n", &[2]);
    assert_eq!(report.outcome.messages, strings(&["abc"]));
    assert!(matches!(&report.outcome.end, Err(FrameError::Malformed(why)) if why.contains("max")));
    check_codec_round_trip(|| lines(8), &strings(&["a", "", "é", "12345678"]), &[1, 6]);
}

#[test]
fn lines_codec_encodes_lines_it_cannot_decode_back() {
    // LinesCodec's encoder checks neither the limit nor a newline inside the line, so a
    // FramedWrite can send what the peer's FramedRead refuses or splits. refloop's Lines
    // rejects both at encode time, writing nothing.
    let split = try_check_codec_round_trip(|| lines(8), &strings(&["a\nb"]), &[]).unwrap_err();
    assert_eq!(split.property, Property::RoundTrip, "{split}");
    let long = try_check_codec_round_trip(|| lines(3), &strings(&["four"]), &[]).unwrap_err();
    assert_eq!(long.property, Property::RoundTrip, "{long}");
}

#[test]
fn lines_codec_decodes_a_line_ending_in_cr_that_it_cannot_encode_back() {
    // Found by the framing_tokio_codec fuzz target: one `\r` is stripped before the `\n`, so
    // `x\r\r\n` decodes to `x\r`; the encoder writes that as `x\r\n`, which decodes to `x`.
    let report = check_codec(|| lines(8), b"x\r\r\n", &[]);
    assert_eq!(report.outcome.messages, strings(&["x\r"]));
    let violation =
        try_check_codec_round_trip(|| lines(8), &report.outcome.messages, &[]).unwrap_err();
    assert_eq!(violation.property, Property::RoundTrip, "{violation}");
    assert!(
        violation.detail.contains(r#"decoded 1 messages ["x"]"#),
        "{violation}"
    );
}

#[test]
fn any_delimiter_codec_passes_the_oracle_and_encodes_chunks_it_cannot_decode_back() {
    let report = check_codec(|| any_delimiter(6), b"a,b;;c\nrest", &[1, 2, 8]);
    let expected: Vec<&[u8]> = vec![b"a", b"b", b"", b"c"];
    let got: Vec<&[u8]> = report.outcome.messages.iter().map(|m| &m[..]).collect();
    assert_eq!(got, expected);
    assert_eq!(
        report.outcome.end.as_ref().unwrap().as_deref(),
        Some(&b"rest"[..])
    );
    // Like LinesCodec, its encoder writes a delimiter inside a chunk as it is.
    let split = try_check_codec_round_trip(|| any_delimiter(6), &[bytes::Bytes::from("x,y")], &[])
        .unwrap_err();
    assert_eq!(split.property, Property::RoundTrip, "{split}");
}

#[test]
fn bytes_codec_frames_depend_on_how_the_stream_was_split() {
    // BytesCodec hands over each read as it came: a pass-through, not a framing.
    let violation = try_check_codec(bytes_codec, b"ab", &[]).unwrap_err();
    assert_eq!(violation.property, Property::FragmentationIndependence);
    assert_eq!(violation.run, "byte-by-byte");
    let report = check_codec(bytes_codec, b"a", &[0, 1]);
    assert_eq!(report.outcome.messages, frames(&[b"a"]));
}

#[test]
fn adapter_rejects_a_tokio_codec_off_by_one_after_a_split_header() {
    let stream = [&[0, 0, 0, 2][..], b"hi", &[0, 0, 0, 0]].concat();
    let make = || TokioCodec::new(HeaderOffByOneCodec::new(8), 12);
    // Fed whole, it looks right.
    let whole = decode_stream(&mut make(), &stream, &[]);
    assert_eq!(whole.messages, frames(&[b"hi", b""]));
    let violation = try_check_codec(make, &stream, &[]).unwrap_err();
    assert_eq!(violation.property, Property::FragmentationIndependence);
    assert_eq!(violation.run, "byte-by-byte");
}

#[test]
fn adapter_rejects_a_tokio_codec_that_reserves_a_declared_length_before_checking_it() {
    let make = || TokioCodec::new(ReserveBeforeCheckCodec::new(8), 12);
    let violation = try_check_codec(make, &[0x7f, 0xff, 0xff, 0xff], &[]).unwrap_err();
    assert_eq!(
        violation.property,
        Property::BoundedAllocation,
        "{violation}"
    );
    // The same header through tokio-util's own codec costs nothing.
    check_codec(|| length_delimited(8), &[0x7f, 0xff, 0xff, 0xff], &[]);
}

/// An encoder that writes the line, then fails for lines over four bytes: a partial write.
#[derive(Debug, Default)]
struct PartialWriteLines(LinesCodec);

impl Decoder for PartialWriteLines {
    type Item = String;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<String>> {
        self.0.decode(src).map_err(io::Error::other)
    }
}

impl Encoder<String> for PartialWriteLines {
    type Error = io::Error;

    fn encode(&mut self, line: String, dst: &mut BytesMut) -> io::Result<()> {
        dst.put(line.as_bytes());
        if line.len() > 4 {
            return Err(io::Error::other("line too long"));
        }
        dst.put_u8(b'\n');
        Ok(())
    }
}

#[test]
fn adapter_keeps_what_a_failing_encode_wrote_so_a_partial_write_is_caught() {
    let make = || TokioCodec::new(PartialWriteLines::default(), 64);
    check_codec_round_trip(make, &strings(&["ok", "fine"]), &[]);
    let violation =
        try_check_codec_round_trip(make, &strings(&["ok", "too long"]), &[]).unwrap_err();
    assert_eq!(violation.property, Property::EncodeAtomic, "{violation}");
}

/// A decoder that returns a frame without taking any byte.
#[derive(Debug, Default)]
struct TakesNothing;

impl Decoder for TakesNothing {
    type Item = BytesMut;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        Ok((!src.is_empty()).then(BytesMut::new))
    }
}

impl Encoder<BytesMut> for TakesNothing {
    type Error = io::Error;

    fn encode(&mut self, _: BytesMut, _: &mut BytesMut) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn adapter_reports_a_frame_that_took_no_bytes() {
    let violation = try_check_codec(|| TokioCodec::new(TakesNothing, 8), b"x", &[]).unwrap_err();
    assert_eq!(
        violation.property,
        Property::ConsumesWithinBuffer,
        "{violation}"
    );
}

#[test]
fn adapter_reports_a_buffer_held_past_its_stated_bound() {
    // LinesCodec with a limit of 8 holds up to 8 bytes; the adapter told a bound of 4.
    let violation = try_check_codec(
        || TokioCodec::new(LinesCodec::new_with_max_length(8), 4),
        b"abcdef",
        &[],
    )
    .unwrap_err();
    assert_eq!(
        violation.property,
        Property::BoundedBuffering,
        "{violation}"
    );
}

#[test]
fn fuzz_input_takes_a_cut_count_then_big_endian_cuts_then_the_stream() {
    assert_eq!(fuzz_input(&[]), (&[][..], vec![]));
    assert_eq!(
        fuzz_input(&[2, 0, 1, 1, 0, b'x']),
        (&b"x"[..], vec![1, 256])
    );
    // Counts wrap at nine, and an input too short for its cuts has fewer.
    assert_eq!(fuzz_input(&[9, 0, 1, b'y']), (&[0, 1, b'y'][..], vec![]));
    assert_eq!(fuzz_input(&[3, 0, 1, 7]), (&[7][..], vec![1]));
}

#[test]
fn fuzz_template_checks_the_stream_and_the_round_trip_of_what_it_decoded() {
    fuzz_check(|| lines(8), &[1, 0, 3, b'a', b'b', b'\n', b'c']);
    let caught = std::panic::catch_unwind(|| {
        fuzz_check(
            || TokioCodec::new(HeaderOffByOneCodec::new(8), 12),
            &[0, 0, 0, 0, 2, b'h', b'i', 0, 0, 0, 0],
        )
    });
    let message = *caught.unwrap_err().downcast::<String>().unwrap();
    assert!(message.contains("FragmentationIndependence"), "{message}");
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => any::<u8>(),
        2 => Just(0u8),
        2 => Just(b'a'),
        2 => Just(b'\n'),
        1 => Just(b'\r'),
        1 => Just(b','),
        1 => Just(b';'),
        1 => Just(0xc3u8),
        1 => Just(0xa9u8),
    ]
}

proptest! {
    #![proptest_config(Config { cases: cases(), failure_persistence: None, ..Config::default() })]

    #[test]
    fn tokio_codecs_keep_the_contract_except_where_documented(
        which in 0u8..4,
        limit in 0u8..64,
        cuts in prop::collection::vec(any::<u16>().prop_map(|c| c % 96), 0..8),
        stream in prop::collection::vec(interesting_byte(), 0..96),
    ) {
        let mut data = vec![which, limit, cuts.len() as u8];
        for cut in &cuts {
            data.extend_from_slice(&cut.to_be_bytes());
        }
        data.extend_from_slice(&stream);
        prop_assert_eq!(tokio_codecs::check(&data, Subject::Real), Ok(()));
    }
}

/// Every checked-in input of `framing_tokio_codec`: corpus and regressions must pass, and a
/// `known_bad-<name>-*` regression must still fail that known-bad codec.
#[test]
fn fuzz_corpus_and_regressions_of_the_codec_target_replay() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for kind in ["corpus", "regressions"] {
        let dir = fuzz.join(kind).join("framing_tokio_codec");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for path in files {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let data = std::fs::read(&path).unwrap();
            if let Err(why) = tokio_codecs::check(&data, Subject::Real) {
                panic!("fuzz/{kind}/framing_tokio_codec/{name}: {why}");
            }
            if let Some(rest) = name.strip_prefix("known_bad-") {
                let bad = refloop::check::framing::tokio_codec::known_bad::NAMES
                    .iter()
                    .find(|n| rest.starts_with(&format!("{n}-")))
                    .unwrap_or_else(|| panic!("{name} names no known-bad codec"));
                assert!(
                    tokio_codecs::check(&data, Subject::Bad(bad)).is_err(),
                    "{name} no longer catches {bad}"
                );
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no checked-in inputs for framing_tokio_codec");
    println!("@@stat replayed-inputs framing_tokio_codec {replayed}");
}
