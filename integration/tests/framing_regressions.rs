//! Replays every checked-in fuzz input for the framing targets in the ordinary test stage.
//!
//! `fuzz/corpus/<target>/*` (the seeds) and `fuzz/regressions/<target>/*` (crash inputs the
//! fuzzer once found) go through the same `framing_case` code the fuzz targets run, so a crash
//! fixed once stays fixed without a fuzzer.
//!
//! A regression file whose name starts with `known_bad-<name>-` was found by the teeth runs
//! against that known-bad framing: it must pass the real framings and still fail the bad one.

#[path = "framing_common/tokio_peer.rs"]
mod tokio_peer;

use std::path::{Path, PathBuf};

use refloop::check::framing::TrackingAlloc;
use refloop_integration::framing_case::{FramingCase, KnownBad, RawCase, Subject};

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every file under `fuzz/<kind>/<target>/`, sorted.
fn inputs(kind: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// The known-bad framing a regression file name says it was found against.
fn found_against(name: &str) -> Option<KnownBad> {
    let rest = name.strip_prefix("known_bad-")?;
    let (bad, _) = rest.split_once('-')?;
    Some(KnownBad::from_name(bad).unwrap_or_else(|| panic!("unknown known-bad in {name}")))
}

/// Replays one target's corpus and regressions with `check`; returns how many inputs ran.
fn replay(target: &str, check: impl Fn(&[u8], Subject) -> Result<(), String>) -> usize {
    let mut count = 0;
    for kind in ["corpus", "regressions"] {
        for (name, bytes) in inputs(kind, target) {
            if let Err(why) = check(&bytes, Subject::Real) {
                panic!("fuzz/{kind}/{target}/{name} fails: {why}");
            }
            if let Some(bad) = found_against(&name) {
                assert!(
                    check(&bytes, Subject::Bad(bad)).is_err(),
                    "fuzz/{kind}/{target}/{name} no longer catches {bad:?}"
                );
            }
            count += 1;
        }
    }
    println!("@@stat replayed-inputs {target} {count}");
    count
}

fn framing_case(bytes: &[u8], subject: Subject) -> Result<(), String> {
    match FramingCase::from_fuzz_bytes(bytes) {
        Ok(case) => case.try_check(subject).map(drop),
        // libFuzzer skips such inputs too (the target returns early).
        Err(_) => Ok(()),
    }
}

#[test]
fn framing_corpus_and_regressions_pass_the_oracle() {
    assert!(
        replay("framing", framing_case) > 0,
        "no seed corpus for framing"
    );
}

#[test]
fn framing_raw_corpus_and_regressions_pass_the_oracle() {
    let count = replay("framing_raw", |bytes, subject| {
        RawCase::from_fuzz_bytes(bytes).try_check(subject).map(drop)
    });
    assert!(count > 0, "no seed corpus for framing_raw");
}

#[test]
fn framing_tokio_corpus_and_regressions_agree_with_tokio() {
    let count = replay("framing_tokio", |bytes, subject| {
        let Ok(case) = FramingCase::from_fuzz_bytes(bytes) else {
            return Ok(());
        };
        let family = subject.family(case.which);
        let stream = case.stream(family);
        tokio_peer::try_agree_with_tokio(
            subject,
            case.which,
            case.limit(),
            &stream,
            &case.cut_offsets(),
        )
        .map(drop)
    });
    assert!(count > 0, "no seed corpus for framing_tokio");
}

#[test]
fn bare_header_regression_still_reaches_the_documented_difference() {
    // The input the differential fuzzer found must keep exercising the case it was kept for:
    // a stream ending right after a complete header, where tokio-util and refloop differ.
    let found: Vec<_> = inputs("regressions", "framing_tokio")
        .into_iter()
        .filter(|(name, _)| name.starts_with("lp-eof-after-bare-header-"))
        .collect();
    assert!(
        !found.is_empty(),
        "the bare-header regression input is missing"
    );
    for (name, bytes) in found {
        let case = FramingCase::from_fuzz_bytes(&bytes).unwrap();
        let stream = case.stream(case.which);
        let cuts = case.cut_offsets();
        let ours =
            tokio_peer::refloop_decode(Subject::Real, case.which, case.limit(), &stream, &cuts);
        let theirs = tokio_peer::tokio_decode(case.which, case.limit(), &stream, &cuts);
        assert!(
            tokio_peer::eof_after_bare_header(&ours, &theirs, &stream),
            "{name} no longer ends right after a bare header: refloop {ours:?}, tokio {theirs:?}"
        );
    }
}
