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

/// Private known-bad wrappers around `LengthPrefixed`, one per remaining property.
mod wrappers {
    use refloop::framing::{Decoded, FrameError, Framing, LengthPrefixed};

    /// What each wrapper breaks.
    #[derive(Debug, Clone, Copy)]
    pub enum Bug {
        /// `bytes_needed` promises one byte more than the frame needs.
        HintOverestimates,
        /// `max_buffered` states no bound.
        NoBound,
        /// A message that reports consuming zero bytes.
        ConsumesNothing,
        /// `NeedMore` when the buffer ends exactly at a message's end (a look-ahead bug).
        HidesMessageAtBufferEnd,
        /// `encode` writes the header, then fails on an over-limit payload.
        EncodeWritesOnError,
        /// `decode` panics on a header declaring more than 255 bytes.
        PanicsOnLongHeader,
    }

    #[derive(Debug, Clone)]
    pub struct Buggy {
        pub inner: LengthPrefixed,
        pub bug: Bug,
    }

    impl Framing for Buggy {
        type Message = Vec<u8>;

        fn decode(&mut self, buf: &[u8]) -> Result<Decoded<Vec<u8>>, FrameError> {
            if let (Bug::PanicsOnLongHeader, Some(&[0, 0, hi, _])) = (self.bug, buf.get(..4)) {
                assert!(hi == 0, "header too long for this decoder");
            }
            match (self.bug, self.inner.decode(buf)?) {
                (Bug::ConsumesNothing, Decoded::Message(m, _)) => Ok(Decoded::Message(m, 0)),
                (Bug::HidesMessageAtBufferEnd, Decoded::Message(m, used)) if used == buf.len() => {
                    // Put the inner decoder back the way it was: the header stays parsed.
                    let _ = m;
                    self.inner = LengthPrefixed::new(self.inner.max_frame_len());
                    Ok(Decoded::NeedMore)
                }
                (_, decoded) => Ok(decoded),
            }
        }

        fn encode(&mut self, msg: &Vec<u8>, out: &mut Vec<u8>) -> Result<(), FrameError> {
            if let Bug::EncodeWritesOnError = self.bug {
                out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            }
            self.inner.encode(msg, out)
        }

        fn max_buffered(&self) -> Option<usize> {
            match self.bug {
                Bug::NoBound => None,
                _ => self.inner.max_buffered(),
            }
        }

        fn bytes_needed(&self, buf: &[u8]) -> Option<usize> {
            let needed = self.inner.bytes_needed(buf)?;
            match self.bug {
                Bug::HintOverestimates => Some(needed + 1),
                // Its `NeedMore` is not about missing bytes, so it has no honest hint.
                Bug::HidesMessageAtBufferEnd => None,
                _ => Some(needed),
            }
        }
    }
}

fn buggy(bug: wrappers::Bug) -> impl FnMut() -> wrappers::Buggy {
    move || wrappers::Buggy {
        inner: LengthPrefixed::new(300),
        bug,
    }
}

#[test]
fn oracle_rejects_a_hint_that_overestimates() {
    let stream = frames(&[b"abc"]);
    let violation =
        try_check_stream(buggy(wrappers::Bug::HintOverestimates), &stream, &[]).unwrap_err();
    assert_eq!(violation.property, Property::HintHonest);
}

#[test]
fn oracle_rejects_a_framing_that_states_no_bound() {
    let violation = try_check_stream(buggy(wrappers::Bug::NoBound), b"", &[]).unwrap_err();
    assert_eq!(violation.property, Property::BoundedBuffering);
}

#[test]
fn oracle_rejects_a_message_that_consumes_nothing() {
    let violation =
        try_check_stream(buggy(wrappers::Bug::ConsumesNothing), &frames(&[b"x"]), &[]).unwrap_err();
    assert_eq!(violation.property, Property::ConsumesWithinBuffer);
}

#[test]
fn oracle_rejects_needmore_that_hides_an_arrived_message() {
    let stream = frames(&[b"first", b"second"]);
    let violation =
        try_check_stream(buggy(wrappers::Bug::HidesMessageAtBufferEnd), &stream, &[]).unwrap_err();
    assert_eq!(violation.property, Property::NeedMoreHonest);
    assert_eq!(violation.run, "byte-by-byte");
}

#[test]
fn oracle_rejects_encode_that_writes_before_failing() {
    use refloop::check::framing::try_check_round_trip;
    let messages = vec![b"ok".to_vec(), vec![0; 301]];
    let violation = try_check_round_trip(buggy(wrappers::Bug::EncodeWritesOnError), &messages, &[])
        .unwrap_err();
    assert_eq!(violation.property, Property::EncodeAtomic);
}

#[test]
fn oracle_reports_a_panicking_decoder_as_a_violation() {
    let stream = frames(&[&[7; 256]]);
    let violation =
        try_check_stream(buggy(wrappers::Bug::PanicsOnLongHeader), &stream, &[]).unwrap_err();
    assert_eq!(violation.property, Property::NoPanic);
    assert!(violation.detail.contains("header too long"), "{violation}");
}
