//! The explorer: cases from consecutive seeds, greedy shrinking, replays.
//!
//! [`explore`] runs [`SimCase::from_seed`] for seeds `base, base + 1, ..` until one fails;
//! [`shrink`] deletes steps one at a time while the case keeps failing (a run is
//! deterministic, so one run decides); [`hunt`] does both against a known-bad variant, checks
//! that the reproducer passes against the correct loop, and replays it [`REPLAYS`] times,
//! comparing trace hashes.

use refloop::reactor::KnownBad;

use super::exec::{self, Failure, Options};
use super::SimCase;

/// Replays of a reproducer.
pub const REPLAYS: usize = 10;

/// The most runs [`shrink`] makes.
pub const SHRINK_RUNS: usize = 600;

/// The first failing seed from `base` within `budget` cases: its seed, how many cases ran,
/// the case and its failure.
pub fn explore(options: &Options, base: u64, budget: u64) -> Option<(u64, u64, SimCase, Failure)> {
    (0..budget).find_map(|i| {
        let seed = base.wrapping_add(i);
        let case = SimCase::from_seed(seed);
        exec::run(&case, options)
            .err()
            .map(|f| (seed, i + 1, case, f))
    })
}

/// [`explore`] for a case that fails under `options` and passes on the correct loop; a case
/// that fails both is a finding about the correct loop, printed (`@@stat sim-correct-loop-
/// failure <seed>`) and skipped, since it cannot tell the variant apart.
pub fn explore_distinguishing(
    options: &Options,
    base: u64,
    budget: u64,
) -> Option<(u64, u64, SimCase, Failure)> {
    let correct = Options::correct();
    (0..budget).find_map(|i| {
        let seed = base.wrapping_add(i);
        let case = SimCase::from_seed(seed);
        let failure = exec::run(&case, options).err()?;
        if let Err(f) = exec::run(&case, &correct) {
            println!(
                "@@stat sim-correct-loop-failure {seed} {}",
                f.message.lines().next().unwrap_or("")
            );
            return None;
        }
        Some((seed, i + 1, case, failure))
    })
}

/// Deletes steps while the case keeps failing under `options`; returns the shrunk case and
/// the indices (into `case.steps`) of the steps it kept, so `case.keep(&indices)` rebuilds it.
pub fn shrink(case: SimCase, options: &Options) -> (SimCase, Vec<usize>) {
    shrink_distinguishing(case, options, None)
}

/// [`shrink`], keeping a deletion only if the case still fails under `options` and, given
/// `passing`, still passes under it: so a variant's reproducer keeps telling the variant from
/// the correct loop, rather than drifting to a case that fails both (for example one whose
/// deleted steps leave a client that never reads again).
pub fn shrink_distinguishing(
    case: SimCase,
    options: &Options,
    passing: Option<&Options>,
) -> (SimCase, Vec<usize>) {
    let mut kept: Vec<usize> = (0..case.steps.len()).collect();
    let mut runs = 0;
    let mut progress = true;
    while progress && runs < SHRINK_RUNS {
        progress = false;
        let mut i = 0;
        while i < kept.len() && runs < SHRINK_RUNS {
            let mut candidate = kept.clone();
            candidate.remove(i);
            runs += 1;
            let candidate_case = case.keep(&candidate);
            if exec::run(&candidate_case, options).is_err()
                && passing.is_none_or(|good| exec::run(&candidate_case, good).is_ok())
            {
                kept = candidate;
                progress = true;
            } else {
                i += 1;
            }
        }
    }
    (case.keep(&kept), kept)
}

/// What a hunt found.
#[derive(Debug, Clone)]
pub struct Found {
    /// The failing seed.
    pub seed: u64,
    /// Cases run until it failed.
    pub cases: u64,
    /// Steps of the failing case.
    pub steps: usize,
    /// The shrunk reproducer.
    pub shrunk: SimCase,
    /// The indices of the failing case's steps it kept (`SimCase::from_seed(seed).keep(..)`).
    pub kept: Vec<usize>,
    /// Why the reproducer fails.
    pub reason: String,
    /// Replays (of [`REPLAYS`]) that failed with the same trace hash.
    pub replays_failed: usize,
}

/// Hunts `variant` from `base` within `budget` cases, shrinks, and replays.
///
/// # Errors
///
/// When no case fails within the budget, when the reproducer also fails the correct loop, or
/// when a replay's trace differs from the first run's.
pub fn hunt(variant: KnownBad, base: u64, budget: u64) -> Result<Found, String> {
    let bad = Options::variant(variant);
    let Some((seed, cases, case, _)) = explore_distinguishing(&bad, base, budget) else {
        return Err(format!(
            "no case of {budget} from seed {base} failed against {variant:?}: no teeth"
        ));
    };
    let steps = case.steps.len();
    let correct = Options::correct();
    let (shrunk, kept) = shrink_distinguishing(case, &bad, Some(&correct));
    if let Err(f) = exec::run(&shrunk, &Options::correct()) {
        return Err(format!(
            "the reproducer for {variant:?} (seed {seed}) also fails the correct loop: {}\n{shrunk}",
            f.message
        ));
    }
    let first = exec::run(&shrunk, &bad)
        .err()
        .ok_or_else(|| format!("the shrunk case for {variant:?} passed on its first replay"))?;
    let mut replays_failed = 0;
    for _ in 0..REPLAYS {
        match exec::run(&shrunk, &bad) {
            Err(f) if f.trace_hash == first.trace_hash => replays_failed += 1,
            Err(f) => {
                return Err(format!(
                    "nondeterminism: a replay's trace hash {:#x} differs from {:#x}",
                    f.trace_hash, first.trace_hash
                ))
            }
            Ok(_) => {}
        }
    }
    Ok(Found {
        seed,
        cases,
        steps,
        shrunk,
        kept,
        reason: first.message,
        replays_failed,
    })
}
