//! Proptest drives the framing oracle over `Resp`: generated command streams (inline and
//! multibulk, empty requests, a malformed request now and then) split at arbitrary points.
//!
//! Every case runs `check_stream` (the whole contract, whole, byte by byte and at the cuts,
//! allocations included) and compares the messages with what the generator says each request
//! must decode to. Case counts come from `PROPTEST_CASES` (default 256).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use refloop::check::framing::known_bad::ReserveDeclaredBulk;
use refloop::check::framing::{try_check_stream, Property, TrackingAlloc};
use refloop::framing::resp::Message;
use refloop::framing::{FrameError, Framing, Resp};
use refloop_integration::resp::gen::{self, Options, Stream};

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

/// Limits small enough that the fuzz-sized streams reach them, large enough for every
/// generated valid request.
const MAX_BULK: usize = 4096;
const MAX_REQUEST: usize = 1 << 16;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn case() -> impl Strategy<Value = (Stream, Vec<usize>)> {
    let options = Options {
        expiry: true,
        max_commands: 12,
    };
    (
        gen::stream(options),
        prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    )
        .prop_map(|(stream, cuts)| {
            let len = stream.bytes().len().max(1);
            let cuts = cuts.iter().map(|i| i.index(len + 1)).collect();
            (stream, cuts)
        })
}

/// The property: the oracle's contract holds, and the messages are the generator's.
fn check<F>(make: impl FnMut() -> F, stream: &Stream, cuts: &[usize]) -> Result<(), String>
where
    F: Framing<Message = Message>,
{
    let bytes = stream.bytes();
    let report = try_check_stream(make, &bytes, cuts).map_err(|v| v.to_string())?;
    if report.outcome.messages != stream.messages() {
        return Err(format!(
            "decoded {:?}, generated {:?}",
            report.outcome.messages,
            stream.messages()
        ));
    }
    let end_ok = if stream.ends_in_error() {
        matches!(report.outcome.end, Err(FrameError::Malformed(_)))
    } else {
        report.outcome.end == Ok(None)
    };
    if !end_ok {
        return Err(format!("stream ended with {:?}", report.outcome.end));
    }
    Ok(())
}

proptest! {
    #![proptest_config(Config { cases: cases(), failure_persistence: None, ..Config::default() })]

    #[test]
    fn generated_command_streams_decode_as_generated_under_any_split(case in case()) {
        let (stream, cuts) = case;
        check(|| Resp::with_limits(MAX_BULK, MAX_REQUEST), &stream, &cuts)
            .map_err(TestCaseError::fail)?;
    }
}

#[test]
fn the_same_property_rejects_a_decoder_that_reserves_by_the_declared_length() {
    // A fixed seed keeps the number of cases it takes reproducible.
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: cases().max(256),
            failure_persistence: None,
            ..Config::default()
        },
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    let result = runner.run(&case(), |(stream, cuts)| {
        check(
            || ReserveDeclaredBulk::with_limits(MAX_BULK, MAX_REQUEST),
            &stream,
            &cuts,
        )
        .map_err(TestCaseError::fail)
    });
    let Err(TestError::Fail(why, (minimal, cuts))) = result else {
        panic!("the property accepted the known-bad decoder: {result:?}");
    };
    assert!(why.to_string().contains("BoundedAllocation"), "{why}");
    println!(
        "@@stat shrunk-bytes reserve_declared_bulk {}",
        minimal.bytes().len()
    );
    // The shrunk stream passes the real decoder.
    check(|| Resp::with_limits(MAX_BULK, MAX_REQUEST), &minimal, &cuts).unwrap();
    let violation = try_check_stream(
        || ReserveDeclaredBulk::with_limits(MAX_BULK, MAX_REQUEST),
        &minimal.bytes(),
        &cuts,
    )
    .unwrap_err();
    assert_eq!(violation.property, Property::BoundedAllocation);
}

/// Every checked-in input of the `resp` fuzz target (seed corpus and any regressions) passes
/// the oracle through the target's own code.
#[test]
fn fuzz_corpus_and_regressions_replay_clean() {
    use refloop_integration::resp::case::RespCase;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for dir in ["corpus/resp", "regressions/resp"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let data = std::fs::read(entry.path()).unwrap();
            if let Err(v) = RespCase::from_fuzz_bytes(&data).try_check(false) {
                panic!("{}: {v}", entry.path().display());
            }
            replayed += 1;
        }
    }
    assert!(replayed >= 6, "only {replayed} inputs replayed");
}
