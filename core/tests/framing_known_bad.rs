//! The oracle has teeth: it rejects each known-bad framing, naming the property it breaks,
//! while the real framings pass the very same streams.

use refloop::check::framing::known_bad::{HeaderOffByOne, RescanningLines, ReserveBeforeCheck};
use refloop::check::framing::{try_check_stream, Property, TrackingAlloc};
use refloop::framing::{LengthPrefixed, Lines};

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

fn frames(payloads: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for payload in payloads {
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
    }
    out
}

#[test]
fn oracle_rejects_header_off_by_one_when_header_is_split() {
    let stream = frames(&[b"hi", b"there"]);
    // Whole and unsplit-header runs cannot see the bug; the byte-by-byte run always can.
    let violation = try_check_stream(|| HeaderOffByOne::new(16), &stream, &[]).unwrap_err();
    assert_eq!(violation.property, Property::FragmentationIndependence);
    assert_eq!(violation.run, "byte-by-byte");
    assert!(try_check_stream(|| LengthPrefixed::new(16), &stream, &[]).is_ok());
}

#[test]
fn oracle_rejects_rescanning_lines_for_quadratic_work() {
    let stream = format!("{}\n", "x".repeat(200));
    let violation =
        try_check_stream(|| RescanningLines::new(256), stream.as_bytes(), &[]).unwrap_err();
    assert_eq!(violation.property, Property::LinearWork);
    assert_eq!(violation.run, "byte-by-byte");
    assert!(try_check_stream(|| Lines::new(256), stream.as_bytes(), &[]).is_ok());
}

#[test]
fn oracle_rejects_reserving_a_declared_length_before_checking_it() {
    // A peer declares 4 GiB against a 1 KiB limit: both framings return the same error, only
    // the allocation differs.
    let stream = [0xff, 0xff, 0xff, 0xff];
    let violation = try_check_stream(|| ReserveBeforeCheck::new(1024), &stream, &[]).unwrap_err();
    assert_eq!(violation.property, Property::BoundedAllocation);
    assert!(violation.detail.contains("4294967295"), "{violation}");
    let good = try_check_stream(|| LengthPrefixed::new(1024), &stream, &[]).unwrap();
    assert!(good.allocation_checked);
}

#[test]
fn oracle_rejects_reserving_even_a_small_over_limit_length() {
    let stream = frames(&[&[0; 40]]);
    let violation = try_check_stream(|| ReserveBeforeCheck::new(32), &stream, &[]).unwrap_err();
    assert_eq!(violation.property, Property::BoundedAllocation);
}

#[test]
fn known_bad_framings_decode_correctly_when_fed_whole() {
    // Their bugs hide from a test that only feeds whole streams: that is why the oracle
    // fragments.
    use refloop::check::framing::decode_stream;
    let stream = frames(&[b"hi", b"there"]);
    let outcome = decode_stream(&mut HeaderOffByOne::new(16), &stream, &[]);
    assert_eq!(outcome.messages, [b"hi".to_vec(), b"there".to_vec()]);
    let outcome = decode_stream(&mut RescanningLines::new(16), b"a\nb\n", &[]);
    assert_eq!(outcome.messages, ["a", "b"]);
}
