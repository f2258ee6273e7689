//! The framing oracle: checks any [`Framing`] against its contract.
//!
//! [`check_stream`] feeds one byte stream to fresh decoders three ways: whole, one byte at a
//! time, and split at the cut points you give (a fuzzer's or proptest's choice). It acts like
//! the event loop: append what arrived, decode until [`Decoded::NeedMore`] or an error, and at
//! the end of the stream call [`Framing::decode_eof`] on what is left. It asserts:
//!
//! - **No panic** on any input ([`Property::NoPanic`]).
//! - **Each message consumes** at least one byte and at most what is buffered
//!   ([`Property::ConsumesWithinBuffer`]).
//! - **Fragmentation independence**: every fragmentation yields the same messages, the same
//!   error after the same number of messages, and the same end of stream as the whole stream
//!   does ([`Property::FragmentationIndependence`]).
//! - **`NeedMore` is honest**: it never hides a message whose last byte has already arrived
//!   ([`Property::NeedMoreHonest`]). It consumes nothing by construction: it carries no count.
//! - **Bounded buffering**: whenever `decode` returns `NeedMore`, the undecoded bytes fit in
//!   [`Framing::max_buffered`], so a loop's buffer never exceeds that plus one read chunk
//!   ([`Property::BoundedBuffering`]). A framing must state the bound.
//! - **Bounded allocation**: no single allocation inside `decode` exceeds `max_buffered`, so a
//!   peer's declared length cannot make the decoder reserve memory before checking it
//!   ([`Property::BoundedAllocation`]). Needs [`TrackingAlloc`] as the global allocator;
//!   without it the property is skipped and [`Report::allocation_checked`] is `false`.
//! - **Honest hints**: after [`Framing::bytes_needed`] promised `k` more bytes, `decode` returns
//!   nothing but `NeedMore` before they arrive ([`Property::HintHonest`]).
//! - **Linear work**: for a framing that counts [`Framing::bytes_examined`], each run examines
//!   at most [`LINEAR_WORK_FACTOR`] × (bytes fed + decode calls) + [`LINEAR_WORK_SLACK`] bytes,
//!   whatever the fragmentation ([`Property::LinearWork`]). Byte-by-byte feeding is the worst
//!   case for a rescanning decoder, and it is always one of the runs.
//!
//! [`check_round_trip`] adds **round trip** (`decode(encode(m)) == m` under every
//! fragmentation, [`Property::RoundTrip`]) and **atomic encode** (a failed `encode` writes
//! nothing, [`Property::EncodeAtomic`]).
//!
//! Each check has a `try_` form returning the [`Violation`], for tests that expect one, and a
//! `#[track_caller]` form that panics with it, for tests, proptests and fuzz targets.
//!
//! # Examples
//!
//! Checking your own framing takes a factory and a stream:
//!
//! ```
//! use refloop::check::framing::{check_round_trip, check_stream};
//! use refloop::framing::Lines;
//!
//! let report = check_stream(|| Lines::new(16), b"one\r\ntwo\nthree", &[2, 7, 7, 9]);
//! assert_eq!(report.outcome.messages, ["one", "two"]);
//! assert_eq!(report.outcome.end, Ok(Some("three".to_string())));
//!
//! check_round_trip(|| Lines::new(16), &["a".to_string(), String::new()], &[1]);
//! ```
//!
//! # Checking your own framing
//!
//! - **Harness:** call [`check_stream`] and [`check_round_trip`] on named edge cases, as above.
//!   `core/examples/custom_framing.rs` does it for a NUL-terminated framing, and shows the
//!   oracle rejecting a rescanning variant of it.
//! - **Allocation checks:** install [`TrackingAlloc`] as the test binary's global allocator.
//! - **Linear work:** implement [`Framing::bytes_examined`] to count the bytes `decode` looks at.
//! - **Proptest** (see `integration/tests/framing_custom.rs`):
//!
//! ```text
//! proptest! {
//!     #[test]
//!     fn my_framing_passes_the_oracle(
//!         stream in prop::collection::vec(any::<u8>(), 0..256),
//!         cuts in prop::collection::vec(0usize..256, 0..8),
//!     ) {
//!         check_stream(|| MyFraming::new(64), &stream, &cuts);
//!     }
//! }
//! ```
//!
//! - **Fuzz target** (`fuzz/fuzz_targets/my_framing.rs`, plus a `[[bin]]` in `fuzz/Cargo.toml`):
//!
//! ```text
//! #![no_main]
//! #[global_allocator]
//! static ALLOC: refloop::check::framing::TrackingAlloc = refloop::check::framing::TrackingAlloc;
//!
//! libfuzzer_sys::fuzz_target!(|input: (u16, Vec<u8>, Vec<usize>)| {
//!     let (limit, stream, cuts) = input;
//!     refloop::check::framing::check_stream(|| MyFraming::new(limit.into()), &stream, &cuts);
//! });
//! ```
//!
//! A violation names the property, the fragmentation and what went wrong:
//!
//! ```
//! use refloop::check::framing::{known_bad::HeaderOffByOne, try_check_stream, Property};
//!
//! let stream = [0, 0, 0, 2, b'h', b'i', 0, 0, 0, 0];
//! let violation = try_check_stream(|| HeaderOffByOne::new(8), &stream, &[]).unwrap_err();
//! assert_eq!(violation.property, Property::FragmentationIndependence);
//! ```

use std::fmt::{self, Debug};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::framing::{Decoded, FrameError, Framing};

#[allow(unsafe_code)]
mod alloc;
#[doc(hidden)]
pub mod known_bad;
#[cfg(feature = "tokio-codec")]
pub mod tokio_codec;

pub use alloc::{Measurement, TrackingAlloc};

/// Runs `f` and reports what it asked of the allocator on this thread.
///
/// The measurement is `None` unless [`TrackingAlloc`] is the global allocator.
pub fn measure_allocations<R>(f: impl FnOnce() -> R) -> (R, Option<Measurement>) {
    alloc::measure(usize::MAX, f)
}

/// Linear-work budget: bytes examined per byte fed or decode call.
pub const LINEAR_WORK_FACTOR: u64 = 8;
/// Linear-work budget: bytes examined allowed on top of the proportional budget.
pub const LINEAR_WORK_SLACK: u64 = 64;

/// A property of the [`Framing`] contract that the oracle checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Property {
    /// `decode`, `decode_eof` or `encode` panicked.
    NoPanic,
    /// A message consumed zero bytes or more bytes than were buffered.
    ConsumesWithinBuffer,
    /// A fragmentation gave other messages, another error or another end than the whole stream.
    FragmentationIndependence,
    /// `NeedMore` was returned although a whole message had arrived.
    NeedMoreHonest,
    /// `NeedMore` left more bytes buffered than `max_buffered`, or no bound was stated.
    BoundedBuffering,
    /// One allocation inside `decode` asked for more than `max_buffered` bytes.
    BoundedAllocation,
    /// `decode` returned a result before the bytes `bytes_needed` promised had arrived.
    HintHonest,
    /// A run examined more input than its linear budget.
    LinearWork,
    /// Decoding the encoding of messages did not give back those messages.
    RoundTrip,
    /// A failed `encode` wrote to its output.
    EncodeAtomic,
    /// Bytes a decoder had already taken out of its buffer vanished at the end of the stream
    /// without a message or an error. A [`Framing`] never takes bytes on `NeedMore`, so only
    /// the tokio-util adapter checks this (`tokio_codec`, feature `tokio-codec`).
    NoSilentLoss,
}

/// A broken property: which one, in which run, and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The property that does not hold.
    pub property: Property,
    /// The run that broke it: `whole`, `byte-by-byte`, or `cuts [..]`.
    pub run: String,
    /// What went wrong, with offsets and values.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} violated ({}): {}",
            self.property, self.run, self.detail
        )
    }
}

impl std::error::Error for Violation {}

/// What decoding a stream produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<M> {
    /// The messages `decode` returned, in order.
    pub messages: Vec<M>,
    /// How the stream ended: the first error, or what `decode_eof` made of the tail.
    pub end: Result<Option<M>, FrameError>,
}

/// What [`check_stream`] checked.
#[derive(Debug, Clone)]
pub struct Report<M> {
    /// The outcome every run agreed on.
    pub outcome: Outcome<M>,
    /// How many runs (fragmentations) were checked.
    pub runs: usize,
    /// `decode` calls over all runs.
    pub decode_calls: u64,
    /// The most undecoded bytes any `NeedMore` left buffered.
    pub max_pending: usize,
    /// The bound buffering was checked against: [`Framing::max_buffered`].
    pub bound: usize,
    /// Whether allocations were checked (needs [`TrackingAlloc`]).
    pub allocation_checked: bool,
    /// The largest single allocation inside any `decode` call, when checked.
    pub largest_allocation: usize,
    /// The most bytes examined per byte of stream in any run, when the framing counts them.
    pub max_work_per_byte: Option<f64>,
}

/// Checks `F`'s contract on `stream` whole, byte by byte, and split at `cuts`.
///
/// `make` builds a fresh decoder for each run. `cuts` are offsets into `stream`: they are
/// sorted, offsets past the end are clamped to it, and a repeated offset means a read that
/// brought no new bytes (`decode` is called again on the same bytes).
///
/// # Errors
///
/// Returns the first [`Violation`] found.
pub fn try_check_stream<F>(
    mut make: impl FnMut() -> F,
    stream: &[u8],
    cuts: &[usize],
) -> Result<Report<F::Message>, Violation>
where
    F: Framing,
    F::Message: Clone + PartialEq + Debug,
{
    let mut report = Report {
        outcome: Outcome {
            messages: Vec::new(),
            end: Ok(None),
        },
        runs: 0,
        decode_calls: 0,
        max_pending: 0,
        bound: 0,
        allocation_checked: alloc::is_installed(),
        largest_allocation: 0,
        max_work_per_byte: None,
    };
    let whole = Run::new("whole".to_string(), vec![stream.len()]);
    let reference = run_guarded(&mut make(), stream, &whole, None, &mut report)?;
    let byte_by_byte = Run::new("byte-by-byte".to_string(), vec![1; stream.len()]);
    let mut sorted: Vec<usize> = cuts.iter().map(|&c| c.min(stream.len())).collect();
    sorted.sort_unstable();
    let cut = Run::from_cuts(&sorted, stream.len());
    for run in [byte_by_byte, cut] {
        let outcome =
            run_guarded(&mut make(), stream, &run, Some(&reference), &mut report)?.outcome;
        if outcome != reference.outcome {
            return Err(run.violation(
                Property::FragmentationIndependence,
                format!(
                    "whole stream gave {}, this run gave {}",
                    describe(&reference.outcome),
                    describe(&outcome)
                ),
            ));
        }
    }
    report.outcome = reference.outcome;
    Ok(report)
}

/// Checks `F`'s contract on `stream`; panics with the [`Violation`] if one is found.
///
/// See [`try_check_stream`].
#[track_caller]
pub fn check_stream<F>(make: impl FnMut() -> F, stream: &[u8], cuts: &[usize]) -> Report<F::Message>
where
    F: Framing,
    F::Message: Clone + PartialEq + Debug,
{
    match try_check_stream(make, stream, cuts) {
        Ok(report) => report,
        Err(violation) => panic!("framing oracle: {violation}"),
    }
}

/// Encodes `messages` and checks that every fragmentation decodes them back, plus everything
/// [`try_check_stream`] checks.
///
/// Messages `encode` rejects are left out of the expected output; the rejection must write
/// nothing. The stream is split at `cuts` as in [`try_check_stream`].
///
/// # Errors
///
/// Returns the first [`Violation`] found.
pub fn try_check_round_trip<F>(
    mut make: impl FnMut() -> F,
    messages: &[F::Message],
    cuts: &[usize],
) -> Result<Report<F::Message>, Violation>
where
    F: Framing,
    F::Message: Clone + PartialEq + Debug,
{
    let encode_run = || Run::new("encode".to_string(), Vec::new());
    let mut encoder = make();
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for (index, msg) in messages.iter().enumerate() {
        let before = stream.len();
        let result = catch_unwind(AssertUnwindSafe(|| encoder.encode(msg, &mut stream)));
        match result {
            Err(panic) => {
                return Err(encode_run().violation(
                    Property::NoPanic,
                    format!(
                        "encode of message {index} panicked: {}",
                        panic_text(&*panic)
                    ),
                ))
            }
            Ok(Ok(())) => {
                if stream.len() < before {
                    return Err(encode_run().violation(
                        Property::RoundTrip,
                        format!("encode of message {index} removed bytes it did not write"),
                    ));
                }
                expected.push(msg.clone());
            }
            Ok(Err(error)) => {
                if stream.len() != before {
                    return Err(encode_run().violation(
                        Property::EncodeAtomic,
                        format!(
                            "encode of message {index} failed ({error}) but wrote {} bytes",
                            stream.len() as isize - before as isize
                        ),
                    ));
                }
            }
        }
    }
    let report = try_check_stream(make, &stream, cuts)?;
    let got = &report.outcome;
    if got.messages != expected || got.end != Ok(None) {
        return Err(Run::new("whole".to_string(), Vec::new()).violation(
            Property::RoundTrip,
            format!(
                "encoded {} messages {:?}, decoded {}",
                expected.len(),
                expected,
                describe(got)
            ),
        ));
    }
    Ok(report)
}

/// Checks that `messages` round-trip under `F`; panics with the [`Violation`] if not.
///
/// See [`try_check_round_trip`].
#[track_caller]
pub fn check_round_trip<F>(
    make: impl FnMut() -> F,
    messages: &[F::Message],
    cuts: &[usize],
) -> Report<F::Message>
where
    F: Framing,
    F::Message: Clone + PartialEq + Debug,
{
    match try_check_round_trip(make, messages, cuts) {
        Ok(report) => report,
        Err(violation) => panic!("framing oracle: {violation}"),
    }
}

/// Decodes `stream` split at `cuts` like the event loop would, without checking anything.
///
/// Useful to compare a framing with another implementation (a differential test).
pub fn decode_stream<F: Framing>(
    framing: &mut F,
    stream: &[u8],
    cuts: &[usize],
) -> Outcome<F::Message> {
    let mut sorted: Vec<usize> = cuts.iter().map(|&c| c.min(stream.len())).collect();
    sorted.sort_unstable();
    let mut buf = Vec::new();
    let mut messages = Vec::new();
    let mut start = 0;
    for chunk in Run::from_cuts(&sorted, stream.len()).chunks(stream) {
        buf.extend_from_slice(chunk);
        loop {
            match framing.decode(&buf[start..]) {
                Ok(Decoded::Message(msg, used)) => {
                    messages.push(msg);
                    start += used.clamp(1, buf.len() - start);
                }
                Ok(Decoded::NeedMore) => break,
                Err(error) => {
                    return Outcome {
                        messages,
                        end: Err(error),
                    }
                }
            }
        }
    }
    let end = framing.decode_eof(&buf[start..]);
    Outcome { messages, end }
}

/// One way of splitting a stream into reads.
struct Run {
    name: String,
    /// The length of each read, in order; they sum to the stream's length.
    chunk_lens: Vec<usize>,
}

impl Run {
    fn new(name: String, chunk_lens: Vec<usize>) -> Self {
        Self { name, chunk_lens }
    }

    /// The run that splits a stream of `len` bytes at the sorted offsets `cuts`.
    fn from_cuts(cuts: &[usize], len: usize) -> Self {
        let mut chunk_lens = Vec::with_capacity(cuts.len() + 1);
        let mut at = 0;
        for &cut in cuts {
            chunk_lens.push(cut - at);
            at = cut;
        }
        chunk_lens.push(len - at);
        let shown: Vec<usize> = cuts.iter().take(32).copied().collect();
        let more = if cuts.len() > 32 { ", .." } else { "" };
        Self::new(format!("cuts {shown:?}{more}"), chunk_lens)
    }

    fn chunks<'a>(&'a self, stream: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut at = 0;
        self.chunk_lens.iter().map(move |&len| {
            let chunk = &stream[at..at + len];
            at += len;
            chunk
        })
    }

    fn violation(&self, property: Property, detail: String) -> Violation {
        Violation {
            property,
            run: self.name.clone(),
            detail,
        }
    }
}

/// The reference run's outcome and where each of its messages ended in the stream.
struct Reference<M> {
    outcome: Outcome<M>,
    ends: Vec<usize>,
}

/// [`run_one`], with a panic turned into a [`Property::NoPanic`] violation.
fn run_guarded<F>(
    framing: &mut F,
    stream: &[u8],
    run: &Run,
    reference: Option<&Reference<F::Message>>,
    report: &mut Report<F::Message>,
) -> Result<Reference<F::Message>, Violation>
where
    F: Framing,
    F::Message: Clone + PartialEq + Debug,
{
    match catch_unwind(AssertUnwindSafe(|| {
        run_one(framing, stream, run, reference, report)
    })) {
        Ok(result) => result,
        Err(panic) => Err(run.violation(
            Property::NoPanic,
            format!("the framing panicked: {}", panic_text(&*panic)),
        )),
    }
}

/// Feeds `stream` to `framing` in `run`'s chunks, checking every per-call property.
fn run_one<F>(
    framing: &mut F,
    stream: &[u8],
    run: &Run,
    reference: Option<&Reference<F::Message>>,
    report: &mut Report<F::Message>,
) -> Result<Reference<F::Message>, Violation>
where
    F: Framing,
    F::Message: Clone + PartialEq + Debug,
{
    let Some(bound) = framing.max_buffered() else {
        return Err(run.violation(
            Property::BoundedBuffering,
            "max_buffered() is None: the framing states no bound on buffering".to_string(),
        ));
    };
    report.bound = bound;
    report.runs += 1;
    // Refuse absurd requests so a decoder that reserves a peer's 4 GiB fails its check instead
    // of the machine; anything between the bound and this still counts as a violation.
    let deny_above = bound.saturating_mul(2).max(1 << 20);
    let examined_before = framing.bytes_examined();
    let mut buf: Vec<u8> = Vec::new();
    // `buf[start..]` is what the framing has not consumed yet.
    let mut start = 0;
    let mut fed = 0;
    let mut calls: u64 = 0;
    // The stream offset before which `decode` promised (via `bytes_needed`) to say `NeedMore`.
    let mut promised_until = 0;
    let mut messages = Vec::new();
    let mut ends = Vec::new();
    let mut error = None;
    'feed: for chunk in run.chunks(stream) {
        // Drop consumed bytes once they are most of the buffer, so feeding stays linear.
        if start > 0 && start >= buf.len() / 2 {
            buf.drain(..start);
            start = 0;
        }
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        loop {
            calls += 1;
            let pending = &buf[start..];
            let (result, measured) = alloc::measure(deny_above, || framing.decode(pending));
            if let Some(measured) = measured {
                report.largest_allocation = report.largest_allocation.max(measured.largest_request);
                if measured.largest_request > bound {
                    return Err(run.violation(
                        Property::BoundedAllocation,
                        format!(
                            "decode with {} bytes buffered (stream offset {fed}) asked for \
                             {} bytes at once, over max_buffered {bound}",
                            pending.len(),
                            measured.largest_request
                        ),
                    ));
                }
            }
            let consumed_before = fed - pending.len();
            if !matches!(result, Ok(Decoded::NeedMore)) && fed < promised_until {
                return Err(run.violation(
                    Property::HintHonest,
                    format!(
                        "bytes_needed promised NeedMore until stream offset {promised_until}, \
                         but decode returned {} at offset {fed}",
                        describe_result(&result)
                    ),
                ));
            }
            match result {
                Ok(Decoded::Message(msg, used)) => {
                    if used == 0 || used > pending.len() {
                        return Err(run.violation(
                            Property::ConsumesWithinBuffer,
                            format!(
                                "message {} claims {used} bytes with {} buffered",
                                messages.len(),
                                pending.len()
                            ),
                        ));
                    }
                    start += used;
                    messages.push(msg);
                    ends.push(consumed_before + used);
                    promised_until = 0;
                }
                Ok(Decoded::NeedMore) => {
                    report.max_pending = report.max_pending.max(pending.len());
                    if pending.len() > bound {
                        return Err(run.violation(
                            Property::BoundedBuffering,
                            format!(
                                "NeedMore with {} bytes buffered, over max_buffered {bound}",
                                pending.len()
                            ),
                        ));
                    }
                    if let Some(reference) = reference {
                        if let Some(&end) = reference.ends.get(messages.len()) {
                            if end <= fed {
                                return Err(run.violation(
                                    Property::NeedMoreHonest,
                                    format!(
                                        "NeedMore at stream offset {fed}, but message {} \
                                         (ending at offset {end}) has arrived",
                                        messages.len()
                                    ),
                                ));
                            }
                        }
                    }
                    if let Some(needed) = framing.bytes_needed(pending) {
                        if needed == 0 {
                            return Err(run.violation(
                                Property::HintHonest,
                                format!("bytes_needed is 0 after NeedMore at offset {fed}"),
                            ));
                        }
                        promised_until = fed.saturating_add(needed);
                    }
                    break;
                }
                Err(e) => {
                    error = Some(e);
                    break 'feed;
                }
            }
        }
    }
    report.decode_calls += calls;
    let end = match error {
        Some(e) => Err(e),
        None => {
            let pending = &buf[start..];
            let (result, measured) = alloc::measure(deny_above, || framing.decode_eof(pending));
            if let Some(measured) = measured {
                if measured.largest_request > bound {
                    return Err(run.violation(
                        Property::BoundedAllocation,
                        format!(
                            "decode_eof asked for {} bytes at once, over max_buffered {bound}",
                            measured.largest_request
                        ),
                    ));
                }
            }
            result
        }
    };
    if let (Some(before), Some(after)) = (examined_before, framing.bytes_examined()) {
        let examined = after.saturating_sub(before);
        let budget = LINEAR_WORK_FACTOR * (fed as u64 + calls) + LINEAR_WORK_SLACK;
        if examined > budget {
            return Err(run.violation(
                Property::LinearWork,
                format!(
                    "examined {examined} bytes for {fed} bytes fed in {calls} decode calls, \
                     over the linear budget {budget}"
                ),
            ));
        }
        let per_byte = examined as f64 / (fed.max(1) as f64);
        report.max_work_per_byte = Some(report.max_work_per_byte.unwrap_or(0.0).max(per_byte));
    }
    Ok(Reference {
        outcome: Outcome { messages, end },
        ends,
    })
}

fn describe<M: Debug>(outcome: &Outcome<M>) -> String {
    const SHOWN: usize = 8;
    let shown: Vec<&M> = outcome.messages.iter().take(SHOWN).collect();
    let more = if outcome.messages.len() > SHOWN {
        " .."
    } else {
        ""
    };
    format!(
        "{} messages {shown:?}{more} then {:?}",
        outcome.messages.len(),
        outcome.end
    )
}

fn describe_result<M>(result: &Result<Decoded<M>, FrameError>) -> String {
    match result {
        Ok(Decoded::Message(_, used)) => format!("a message of {used} bytes"),
        Ok(Decoded::NeedMore) => "NeedMore".to_string(),
        Err(e) => format!("error {e}"),
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
