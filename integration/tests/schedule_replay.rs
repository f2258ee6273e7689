//! Replays every input in `fuzz/regressions/schedule/` through `Schedule::from_fuzz_bytes` (the
//! decoding the fuzz target uses) and the executor, so a fuzz crash becomes a regression of the
//! integration stage.
//!
//! A file named `known_bad-<variant>-<hash>` was found against that known-bad loop variant: it
//! must pass against the correct loop and still fail against the variant.

use std::path::Path;

use refloop_integration::schedule::exec::{self, Options};
use refloop_integration::schedule::Schedule;

/// How many runs a known-bad input gets to fail its variant again.
const REPLAYS: usize = 40;

#[test]
fn fuzz_regressions_replay_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/schedule");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("readable directory entry").path())
        .collect();
    paths.sort();
    let mut against_variants = 0;
    for path in &paths {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let schedule = Schedule::from_fuzz_bytes(&data);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if let Err(e) = exec::run(&schedule, &Options::from_env()) {
            panic!("{name} fails against the correct loop: {e}\n{schedule}");
        }
        if let Some(rest) = name.strip_prefix("known_bad-") {
            let variant = rest.rsplit_once('-').map_or(rest, |(v, _)| v);
            let bad = exec::known_bad_options(variant)
                .unwrap_or_else(|| panic!("{name}: no known-bad variant called {variant}"));
            // Racy variants may pass a single run: the `read_once` input fails about 60% of runs
            // here and once passed 5 in a row in CI. Up to `REPLAYS` tries (stopping at the
            // first failure) tell a racy input from a stale one.
            let caught = (0..REPLAYS).any(|_| exec::run(&schedule, &bad).is_err());
            assert!(
                caught,
                "{name} no longer fails against {variant}:\n{schedule}"
            );
            against_variants += 1;
        }
    }
    println!("@@stat replayed-inputs schedule {}", paths.len());
    println!(
        "replayed {} input(s), {against_variants} also against their variant",
        paths.len()
    );
    assert!(!paths.is_empty(), "{} holds no inputs", dir.display());
}
