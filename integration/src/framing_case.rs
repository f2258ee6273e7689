//! The fuzz and replay input for the framing oracle.
//!
//! The fuzz targets in `fuzz/fuzz_targets/framing*.rs` are thin wrappers around this module, so
//! a crash input found by the fuzzer replays in the ordinary test stage
//! (`integration/tests/framing_regressions.rs`) through the very same code.
//!
//! - [`FramingCase`] (target `framing`): which framing, its limit, the bytes (well-formed
//!   messages or raw bytes) and the cut points, decoded by `arbitrary`.
//! - [`RawCase`] (target `framing_raw`): a few header bytes, then the stream itself, so that
//!   libFuzzer's byte mutations and dictionary act on the wire bytes directly.
//!
//! Both run [`check_stream`](refloop::check::framing::check_stream) (every contract property, whole, byte by byte and at the cuts)
//! and, for well-formed messages, [`check_round_trip`](refloop::check::framing::check_round_trip) plus a naive spec: the messages and the
//! error the stream must produce, computed without any decoder.
//!
//! # Known-bad mode
//!
//! With `REFLOOP_KNOWN_BAD=<name>` in the environment (one of
//! [`known_bad::NAMES`](refloop::check::framing::known_bad::NAMES)), [`Subject::from_env`]
//! swaps in that deliberately broken framing, and every case uses the broken framing's family.
//! The fuzz stage runs this way to prove the targets find each bug (`fuzz/teeth.txt`).

use std::borrow::Cow;
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use refloop::check::framing::known_bad::{HeaderOffByOne, RescanningLines, ReserveBeforeCheck};
use refloop::check::framing::{try_check_round_trip, try_check_stream, Outcome};
use refloop::framing::{FrameError, Framing, LengthPrefixed, Lines};

/// Which shipped framing a case exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum Which {
    /// [`LengthPrefixed`].
    LengthPrefixed,
    /// [`Lines`].
    Lines,
}

/// A deliberately broken framing from
/// [`known_bad`](refloop::check::framing::known_bad).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownBad {
    /// [`HeaderOffByOne`]: a `LengthPrefixed` look-alike.
    HeaderOffByOne,
    /// [`RescanningLines`]: a `Lines` look-alike.
    RescanningLines,
    /// [`ReserveBeforeCheck`]: a `LengthPrefixed` look-alike.
    ReserveBeforeCheck,
}

impl KnownBad {
    /// The variant named `name` (as in `REFLOOP_KNOWN_BAD`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "header_off_by_one" => Some(Self::HeaderOffByOne),
            "rescanning_lines" => Some(Self::RescanningLines),
            "reserve_before_check" => Some(Self::ReserveBeforeCheck),
            _ => None,
        }
    }

    /// The framing family this variant imitates.
    pub fn family(self) -> Which {
        match self {
            Self::HeaderOffByOne | Self::ReserveBeforeCheck => Which::LengthPrefixed,
            Self::RescanningLines => Which::Lines,
        }
    }
}

/// What the checks run against: the real framings or one known-bad variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// [`LengthPrefixed`] and [`Lines`].
    Real,
    /// A known-bad framing, in place of the real one of its family.
    Bad(KnownBad),
}

impl Subject {
    /// Reads `REFLOOP_KNOWN_BAD` once per process: unset or empty means [`Subject::Real`].
    ///
    /// # Panics
    ///
    /// Panics on an unknown name, so a typo in `fuzz/teeth.txt` cannot pass as a found bug
    /// (the panic happens on the first input, and the teeth run would "crash"): the message
    /// lists the valid names, and the fuzz stage's log shows it.
    pub fn from_env() -> Self {
        static SUBJECT: OnceLock<Subject> = OnceLock::new();
        *SUBJECT.get_or_init(|| match std::env::var("REFLOOP_KNOWN_BAD") {
            Ok(name) if !name.is_empty() => match KnownBad::from_name(&name) {
                Some(bad) => Subject::Bad(bad),
                None => panic!(
                    "unknown REFLOOP_KNOWN_BAD {name:?}, expected one of {:?}",
                    refloop::check::framing::known_bad::NAMES
                ),
            },
            _ => Subject::Real,
        })
    }

    /// The framing family a case with `which` uses under this subject.
    pub fn family(self, which: Which) -> Which {
        match self {
            Subject::Real => which,
            Subject::Bad(bad) => bad.family(),
        }
    }
}

/// What a case's bytes are.
#[derive(Debug, Clone, Arbitrary)]
pub enum Payload {
    /// Messages, written in the framing's wire form by hand (not by `encode`), so a message
    /// over the limit or (for lines) not UTF-8 reaches the decoder as a peer would send it.
    Messages(Vec<Vec<u8>>),
    /// Raw bytes.
    Raw(Vec<u8>),
}

/// One input for the `framing` fuzz target and the proptests.
#[derive(Debug, Clone, Arbitrary)]
pub struct FramingCase {
    /// The framing (ignored in known-bad mode, which uses the bad framing's family).
    pub which: Which,
    /// The framing's limit: `max_frame_len` or `max_line_len`. The fuzzer picks it from
    /// `0..=64` half the time (so limits are often hit) and from `0..=8192` otherwise.
    #[arbitrary(with = biased_limit)]
    pub limit: u16,
    /// The bytes.
    pub payload: Payload,
    /// Cut points into the stream (clamped; a repeated point is an empty read).
    pub cuts: Vec<u16>,
}

/// A limit for a fuzzed case: small half the time, so that over-limit frames and lines (and
/// lines long enough to expose quadratic rescanning) are both common.
fn biased_limit(u: &mut Unstructured<'_>) -> arbitrary::Result<u16> {
    if u.arbitrary::<bool>()? {
        u.int_in_range(0..=64)
    } else {
        u.int_in_range(0..=8192)
    }
}

impl FramingCase {
    /// Decodes a case from fuzzer bytes, as the fuzz target does.
    ///
    /// # Errors
    ///
    /// Returns the `arbitrary` error when the bytes run out in an unusable way.
    pub fn from_fuzz_bytes(data: &[u8]) -> arbitrary::Result<Self> {
        Self::arbitrary_take_rest(Unstructured::new(data))
    }

    /// The limit as the framings take it.
    pub fn limit(&self) -> usize {
        usize::from(self.limit)
    }

    /// The cut points as offsets.
    pub fn cut_offsets(&self) -> Vec<usize> {
        self.cuts.iter().map(|&c| usize::from(c)).collect()
    }

    /// The byte stream this case decodes, for framing family `family`.
    pub fn stream(&self, family: Which) -> Vec<u8> {
        match &self.payload {
            Payload::Raw(bytes) => bytes.clone(),
            Payload::Messages(messages) => {
                let mut out = Vec::new();
                for msg in messages {
                    match family {
                        Which::LengthPrefixed => {
                            out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
                            out.extend_from_slice(msg);
                        }
                        Which::Lines => {
                            out.extend(line_bytes(msg));
                            out.push(b'\n');
                        }
                    }
                }
                out
            }
        }
    }

    /// Runs every check on this case against `subject`; panics with the violation if any.
    ///
    /// Returns the number of messages the stream decoded to.
    #[track_caller]
    pub fn check(&self, subject: Subject) -> usize {
        match self.try_check(subject) {
            Ok(messages) => messages,
            Err(why) => panic!("framing case failed: {why}"),
        }
    }

    /// Runs every check on this case against `subject`.
    ///
    /// # Errors
    ///
    /// Returns a description of the first violation.
    pub fn try_check(&self, subject: Subject) -> Result<usize, String> {
        let family = subject.family(self.which);
        let stream = self.stream(family);
        let cuts = self.cut_offsets();
        let limit = self.limit();
        let messages = match &self.payload {
            Payload::Messages(messages) => Some(messages.as_slice()),
            Payload::Raw(_) => None,
        };
        match family {
            Which::LengthPrefixed => {
                let spec = messages.map(|m| spec_length_prefixed(m, limit));
                let round_trip = messages.map(<[Vec<u8>]>::to_vec);
                match subject {
                    Subject::Bad(KnownBad::HeaderOffByOne) => run(
                        || HeaderOffByOne::new(limit),
                        &stream,
                        &cuts,
                        spec,
                        round_trip,
                    ),
                    Subject::Bad(KnownBad::ReserveBeforeCheck) => run(
                        || ReserveBeforeCheck::new(limit),
                        &stream,
                        &cuts,
                        spec,
                        round_trip,
                    ),
                    _ => run(
                        || LengthPrefixed::new(limit),
                        &stream,
                        &cuts,
                        spec,
                        round_trip,
                    ),
                }
            }
            Which::Lines => {
                let spec = messages.map(|m| spec_lines(m, limit));
                let round_trip: Option<Vec<String>> =
                    messages.map(|m| m.iter().map(|msg| encodable_line(msg)).collect());
                match subject {
                    Subject::Bad(KnownBad::RescanningLines) => run(
                        || RescanningLines::new(limit),
                        &stream,
                        &cuts,
                        spec,
                        round_trip,
                    ),
                    _ => run(|| Lines::new(limit), &stream, &cuts, spec, round_trip),
                }
            }
        }
    }
}

/// The `framing_raw` input: 4 header bytes, then the stream.
///
/// - Byte 0, bit 0: the framing (0 `LengthPrefixed`, 1 `Lines`).
/// - Byte 1: the cut stride: the stream is cut every `stride + 1` bytes, and twice (an empty
///   read) at every second cut.
/// - Bytes 2 and 3: the limit, big-endian.
/// - The rest: the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCase<'a> {
    /// The framing.
    pub which: Which,
    /// The distance between cuts, at least 1.
    pub stride: usize,
    /// The framing's limit.
    pub limit: usize,
    /// The stream.
    pub stream: &'a [u8],
}

impl<'a> RawCase<'a> {
    /// Splits fuzzer bytes into a case; shorter inputs are padded with zero header bytes.
    pub fn from_fuzz_bytes(data: &'a [u8]) -> Self {
        let header = |i: usize| data.get(i).copied().unwrap_or(0);
        Self {
            which: if header(0) & 1 == 0 {
                Which::LengthPrefixed
            } else {
                Which::Lines
            },
            stride: usize::from(header(1)) + 1,
            limit: usize::from(u16::from_be_bytes([header(2), header(3)])),
            stream: data.get(4..).unwrap_or(&[]),
        }
    }

    /// The cut points: every `stride` bytes, each second one repeated.
    pub fn cut_offsets(&self) -> Vec<usize> {
        let mut cuts = Vec::new();
        for (i, at) in (self.stride..self.stream.len())
            .step_by(self.stride)
            .enumerate()
        {
            cuts.push(at);
            if i % 2 == 1 {
                cuts.push(at);
            }
        }
        cuts
    }

    /// Runs every check on this case against `subject`; panics with the violation if any.
    ///
    /// Returns the number of messages the stream decoded to.
    #[track_caller]
    pub fn check(&self, subject: Subject) -> usize {
        match self.try_check(subject) {
            Ok(messages) => messages,
            Err(why) => panic!("framing case failed: {why}"),
        }
    }

    /// Runs every check on this case against `subject`.
    ///
    /// # Errors
    ///
    /// Returns a description of the first violation.
    pub fn try_check(&self, subject: Subject) -> Result<usize, String> {
        let family = subject.family(self.which);
        let cuts = self.cut_offsets();
        let limit = self.limit;
        let stream = self.stream;
        match (family, subject) {
            (Which::LengthPrefixed, Subject::Bad(KnownBad::HeaderOffByOne)) => {
                run(|| HeaderOffByOne::new(limit), stream, &cuts, None, None)
            }
            (Which::LengthPrefixed, Subject::Bad(KnownBad::ReserveBeforeCheck)) => {
                run(|| ReserveBeforeCheck::new(limit), stream, &cuts, None, None)
            }
            (Which::LengthPrefixed, _) => {
                run(|| LengthPrefixed::new(limit), stream, &cuts, None, None)
            }
            (Which::Lines, Subject::Bad(KnownBad::RescanningLines)) => {
                run(|| RescanningLines::new(limit), stream, &cuts, None, None)
            }
            (Which::Lines, _) => run(|| Lines::new(limit), stream, &cuts, None, None),
        }
    }
}

/// A message's bytes as a line on the wire: every `\n` in it becomes a space.
pub fn line_bytes(msg: &[u8]) -> Vec<u8> {
    msg.iter()
        .map(|&b| if b == b'\n' { b' ' } else { b })
        .collect()
}

/// A message made into a string for `encode`: lossy UTF-8, as is (so `encode` may reject it).
pub fn encodable_line(msg: &[u8]) -> String {
    String::from_utf8_lossy(msg).into_owned()
}

/// What a stream of hand-written length-prefixed `messages` must decode to, by the spec alone:
/// every message up to the first one over `limit`, which is the error.
pub fn spec_length_prefixed(messages: &[Vec<u8>], limit: usize) -> Outcome<Vec<u8>> {
    let mut out = Vec::new();
    for msg in messages {
        if msg.len() > limit {
            return Outcome {
                messages: out,
                end: Err(FrameError::TooLong {
                    limit,
                    declared: msg.len() as u64,
                }),
            };
        }
        out.push(msg.clone());
    }
    Outcome {
        messages: out,
        end: Ok(None),
    }
}

/// What a stream of hand-written `messages` as lines must decode to, by the spec alone: each
/// line minus one trailing `\r`, up to the first line over `limit` (counted with its `\r`) or
/// not UTF-8, which is the error.
pub fn spec_lines(messages: &[Vec<u8>], limit: usize) -> Outcome<String> {
    let mut out = Vec::new();
    for msg in messages {
        let line = line_bytes(msg);
        let end = if line.len() > limit {
            Err(FrameError::TooLong {
                limit,
                declared: limit as u64 + 1,
            })
        } else {
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            match String::from_utf8(line.to_vec()) {
                Ok(line) => {
                    out.push(line);
                    continue;
                }
                Err(_) => Err(FrameError::Malformed(Cow::Borrowed(
                    "line is not valid UTF-8",
                ))),
            }
        };
        return Outcome { messages: out, end };
    }
    Outcome {
        messages: out,
        end: Ok(None),
    }
}

/// Checks one framing on one stream: the oracle, then the spec, then the round trip.
fn run<F>(
    mut make: impl FnMut() -> F,
    stream: &[u8],
    cuts: &[usize],
    spec: Option<Outcome<F::Message>>,
    round_trip: Option<Vec<F::Message>>,
) -> Result<usize, String>
where
    F: Framing,
    F::Message: Clone + PartialEq + std::fmt::Debug,
{
    let report = try_check_stream(&mut make, stream, cuts).map_err(|v| v.to_string())?;
    if let Some(spec) = spec {
        if report.outcome != spec {
            return Err(format!(
                "the stream decoded to {:?}, the spec says {spec:?}",
                report.outcome
            ));
        }
    }
    if let Some(messages) = round_trip {
        try_check_round_trip(&mut make, &messages, cuts).map_err(|v| v.to_string())?;
    }
    Ok(report.outcome.messages.len())
}
