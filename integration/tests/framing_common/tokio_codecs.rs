//! tokio-util's own codecs through `refloop::check::framing::tokio_codec`, with each divergence
//! the oracle found pinned to exactly the inputs that show it.
//!
//! Shared by `integration/tests/tokio_codec_oracle.rs` and the `framing_tokio_codec` fuzz
//! target (through `#[path]`), so a fuzz input replays as an ordinary test.
//!
//! A fuzz input is one byte choosing the codec, one byte choosing the limit (0 to 63), then
//! [`fuzz_input`]'s layout: a cut count, big-endian cuts, and the raw stream.
//!
//! Divergences, each accepted only where it is documented (VERIFICATION.md, tokio-util codecs):
//!
//! - `LengthDelimitedCodec` loses a frame when the stream ends right after its header
//!   ([`Property::NoSilentLoss`]): it has taken the header out of its buffer, and the default
//!   `decode_eof` sees an empty buffer.
//! - `BytesCodec` yields whatever each read brought, so its frames depend on the fragmentation
//!   of any stream of two bytes or more ([`Property::FragmentationIndependence`]): it is a
//!   pass-through, not a framing.
//!
//! - `LinesCodec` strips one `\r` before the `\n`, so `x\r\r\n` decodes to `x\r`, which its
//!   encoder writes as `x\r\n`, which decodes to `x`: a decoded line ending in `\r` does not
//!   round-trip ([`Property::RoundTrip`]). Found by this target.
//!
//! The other encode-side gaps (`LinesCodec` and `AnyDelimiterCodec` encode messages with a
//! delimiter inside, or over the limit, which they cannot decode back) are pinned by named
//! tests, since a fuzz input only re-encodes decoded frames.

use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use refloop::check::framing::tokio_codec::known_bad::{
    HeaderOffByOneCodec, ReserveBeforeCheckCodec, NAMES,
};
use refloop::check::framing::tokio_codec::{
    fuzz_input, try_check_codec, try_check_codec_round_trip, TokioCodec,
};
use refloop::check::framing::{Property, Violation};
use tokio_util::codec::{AnyDelimiterCodec, BytesCodec, LengthDelimitedCodec, LinesCodec};

/// Which codec a fuzz input runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// `LengthDelimitedCodec` with `max_frame_length(limit)`.
    LengthDelimited,
    /// `LinesCodec::new_with_max_length(limit)`.
    Lines,
    /// `AnyDelimiterCodec::new_with_max_length(b",;\n", b";", limit)`.
    AnyDelimiter,
    /// `BytesCodec`.
    Bytes,
}

impl Codec {
    /// Every codec, in the order the first input byte selects them.
    pub const ALL: [Codec; 4] = [
        Codec::LengthDelimited,
        Codec::Lines,
        Codec::AnyDelimiter,
        Codec::Bytes,
    ];
}

/// What a fuzz input runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// tokio-util's codecs, with their documented divergences accepted.
    Real,
    /// A known-bad codec (every input runs it, and any violation is a failure).
    Bad(&'static str),
}

impl Subject {
    /// `REFLOOP_KNOWN_BAD` names a known-bad codec, or is unset.
    ///
    /// An unknown name exits with status 2 and no panic, so a typo in `fuzz/teeth.txt` fails
    /// the teeth run for the wrong reason (no crash marker) instead of passing as a found bug.
    #[allow(dead_code)] // Only the fuzz target reads the environment.
    pub fn from_env() -> Subject {
        static SUBJECT: OnceLock<Subject> = OnceLock::new();
        *SUBJECT.get_or_init(|| match std::env::var("REFLOOP_KNOWN_BAD") {
            Ok(name) if !name.is_empty() => match NAMES.iter().find(|n| **n == name) {
                Some(known) => Subject::Bad(known),
                None => {
                    eprintln!("unknown REFLOOP_KNOWN_BAD {name:?}, expected one of {NAMES:?}");
                    std::process::exit(2);
                }
            },
            _ => Subject::Real,
        })
    }
}

/// The adapter around `LengthDelimitedCodec` with `limit`.
pub fn length_delimited(limit: usize) -> TokioCodec<LengthDelimitedCodec, Bytes> {
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(limit)
        .new_codec();
    TokioCodec::with_encoder_item(codec, 4 + limit, |frame: &BytesMut| frame.clone().freeze())
}

/// The adapter around `LinesCodec::new_with_max_length(limit)`.
pub fn lines(limit: usize) -> TokioCodec<LinesCodec, String> {
    TokioCodec::new(LinesCodec::new_with_max_length(limit), limit)
}

/// The adapter around `AnyDelimiterCodec::new_with_max_length(b",;\n", b";", limit)`.
///
/// Its encoder takes `AsRef<str>`, so frames are re-encoded as (lossy) UTF-8 text.
pub fn any_delimiter(limit: usize) -> TokioCodec<AnyDelimiterCodec, String> {
    let codec = AnyDelimiterCodec::new_with_max_length(b",;\n".to_vec(), b";".to_vec(), limit);
    TokioCodec::with_encoder_item(codec, limit, |chunk: &Bytes| {
        String::from_utf8_lossy(chunk).into_owned()
    })
}

/// The adapter around `BytesCodec`, whose input never waits: nothing is ever left buffered.
pub fn bytes_codec() -> TokioCodec<BytesCodec, BytesMut> {
    TokioCodec::new(BytesCodec::new(), 0)
}

/// Whether `stream`, read as length-prefixed frames, ends with a complete header of a
/// non-empty frame within `limit` and nothing after it (the `LengthDelimitedCodec` loss).
pub fn ends_with_bare_header(stream: &[u8], limit: usize) -> bool {
    let mut at = 0;
    while let Some(head) = stream.get(at..at + 4) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len > limit {
            return false;
        }
        if at + 4 == stream.len() {
            return len > 0;
        }
        at += 4 + len;
    }
    false
}

fn fail(codec: &str, v: Violation) -> String {
    format!("{codec}: {v}")
}

/// Runs one fuzz input: the stream check, then a round trip of the decoded frames.
pub fn check(data: &[u8], subject: Subject) -> Result<(), String> {
    let [which, limit, rest @ ..] = data else {
        return Ok(());
    };
    let limit = usize::from(*limit % 64);
    let (stream, cuts) = fuzz_input(rest);
    match subject {
        Subject::Bad("tokio_header_off_by_one") => {
            let make = || TokioCodec::new(HeaderOffByOneCodec::new(limit), 4 + limit);
            let report = try_check_codec(make, stream, &cuts).map_err(|v| fail("bad", v))?;
            try_check_codec_round_trip(make, &report.outcome.messages, &cuts)
                .map_err(|v| fail("bad", v))?;
            return Ok(());
        }
        Subject::Bad(_) => {
            let make = || TokioCodec::new(ReserveBeforeCheckCodec::new(limit), 4 + limit);
            try_check_codec(make, stream, &cuts).map_err(|v| fail("bad", v))?;
            return Ok(());
        }
        Subject::Real => {}
    }
    match Codec::ALL[usize::from(*which) % Codec::ALL.len()] {
        Codec::LengthDelimited => {
            let make = || length_delimited(limit);
            match try_check_codec(make, stream, &cuts) {
                Ok(report) => {
                    let frames: Vec<BytesMut> = report.outcome.messages;
                    try_check_codec_round_trip(make, &frames, &cuts)
                        .map_err(|v| fail("LengthDelimitedCodec round trip", v))?;
                }
                Err(v)
                    if v.property == Property::NoSilentLoss
                        && ends_with_bare_header(stream, limit) =>
                {
                    // The documented loss: the rest of the stream must still pass.
                    try_check_codec(make, &stream[..stream.len() - 4], &cuts)
                        .map_err(|v| fail("LengthDelimitedCodec before the bare header", v))?;
                }
                Err(v) => return Err(fail("LengthDelimitedCodec", v)),
            }
        }
        Codec::Lines => {
            let make = || lines(limit);
            let report = try_check_codec(make, stream, &cuts).map_err(|v| fail("LinesCodec", v))?;
            let lines = report.outcome.messages;
            let round_trip = try_check_codec_round_trip(make, &lines, &cuts);
            // `x\r\r\n` decodes to `x\r`, which encodes as `x\r\n`, which decodes to `x`.
            match (lines.iter().any(|l| l.ends_with('\r')), round_trip) {
                (false, Ok(_)) => {}
                (true, Err(v)) if v.property == Property::RoundTrip => {}
                (_, Err(v)) => return Err(fail("LinesCodec round trip", v)),
                (true, Ok(_)) => {
                    return Err("LinesCodec: a decoded line ending in \\r round-tripped".into())
                }
            }
        }
        Codec::AnyDelimiter => {
            let make = || any_delimiter(limit);
            let report =
                try_check_codec(make, stream, &cuts).map_err(|v| fail("AnyDelimiterCodec", v))?;
            let frames = report.outcome.messages;
            // Its encoder takes text: only frames that are UTF-8 can be re-encoded exactly.
            if frames.iter().all(|f| std::str::from_utf8(f).is_ok()) {
                try_check_codec_round_trip(make, &frames, &cuts)
                    .map_err(|v| fail("AnyDelimiterCodec round trip", v))?;
            }
        }
        Codec::Bytes => match try_check_codec(bytes_codec, stream, &cuts) {
            Ok(_) if stream.len() < 2 => {}
            Ok(_) => {
                return Err(format!(
                    "BytesCodec: {} bytes passed fragmentation independence, but byte-by-byte \
                     reads must give one frame per byte",
                    stream.len()
                ))
            }
            Err(v) if v.property == Property::FragmentationIndependence && stream.len() >= 2 => {}
            Err(v) => return Err(fail("BytesCodec", v)),
        },
    }
    Ok(())
}
