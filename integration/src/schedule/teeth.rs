//! Teeth: proof that the schedule proptest finds each of the loop's known-bad variants and
//! shrinks it to a short reproducer.
//!
//! [`find_and_shrink`] drives a [`TestRunner`] directly (not the `proptest!` macro) so that the
//! failure can be caught and its minimal schedule inspected.
//! proptest shrinks in one pass (each step is tried for deletion once, then each step is
//! simplified), which a racy failure can stall: a deletion that happens to pass is undone for
//! good.
//! So the shrunk schedule then goes through a greedy reduction: delete any one step whose
//! deletion keeps the schedule failing, and repeat until none does.
//! Both sizes are reported.
//! Finally the reduced schedule is replayed against the correct loop, where it must pass: the
//! failure belongs to the variant, not to the schedule or the machine.

use std::time::{Duration, Instant};

use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use refloop::reactor::KnownBad;

use super::exec::{self, Options};
use super::{strategy, Schedule};

/// How many times a schedule is tried against a variant before it counts as passing.
pub const ATTEMPTS: usize = 3;

/// How many times the minimal schedule is replayed against the variant to measure how reliably
/// it reproduces.
pub const REPLAYS: usize = 10;

/// What the hunt for one variant found.
#[derive(Debug, Clone)]
pub struct Found {
    /// The failing schedule as proptest shrank it.
    pub shrunk: Schedule,
    /// The shrunk schedule after greedy single-step deletion.
    pub minimal: Schedule,
    /// Why the minimal schedule failed against the variant.
    pub reason: String,
    /// How many of [`REPLAYS`] replays of the minimal schedule against the variant failed.
    pub replay_failures: usize,
    /// How long finding and shrinking took.
    pub elapsed: Duration,
}

/// Runs random schedules against `variant` until one fails (at most `cases`), shrinks it, and
/// checks the minimal schedule passes against the correct loop.
///
/// The search is seeded with `seed`, so it is reproducible up to the timing of the machine.
/// Failing runs cost up to `stall` each (a stall is how hung tails and lost wake-ups show).
///
/// # Errors
///
/// Returns a description when no schedule fails within `cases`, when proptest aborts, or when
/// the minimal schedule also fails against the correct loop.
pub fn find_and_shrink(
    variant: KnownBad,
    cases: u32,
    seed: u64,
    stall: Duration,
) -> Result<Found, String> {
    let started = Instant::now();
    let mut config = Config::with_cases(cases);
    // Failures are expected here; they must not land in the regression files of the real test.
    config.failure_persistence = None;
    config.max_shrink_iters = 2048;
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let bad = Options {
        stall,
        known_bad: variant,
        leak_socket: false,
        loops: 1,
    };
    let result = runner.run(
        &strategy::schedule(strategy::DEFAULT_MAX_STEPS),
        |schedule| {
            exec::run(&schedule, &bad)
                .map(drop)
                .map_err(TestCaseError::fail)
        },
    );
    let (reason, shrunk) = match result {
        Err(TestError::Fail(reason, shrunk)) => (reason.to_string(), shrunk),
        Err(TestError::Abort(why)) => return Err(format!("proptest aborted: {why}")),
        Ok(()) => {
            return Err(format!(
                "no schedule out of {cases} failed against {variant:?}: the check has no teeth"
            ))
        }
    };
    let minimal = reduce(shrunk.clone(), &bad);
    let elapsed = started.elapsed();
    if let Err(e) = exec::run(&minimal, &Options::from_env()) {
        return Err(format!(
            "the minimal schedule for {variant:?} also fails against the correct loop: {e}\n{minimal}"
        ));
    }
    let replay_failures = (0..REPLAYS)
        .filter(|_| exec::run(&minimal, &bad).is_err())
        .count();
    Ok(Found {
        shrunk,
        minimal,
        reason,
        replay_failures,
        elapsed,
    })
}

/// Whether `schedule` fails against `bad` within [`ATTEMPTS`] runs.
fn fails(schedule: &Schedule, bad: &Options) -> bool {
    (0..ATTEMPTS).any(|_| exec::run(schedule, bad).is_err())
}

/// Deletes single steps while the schedule keeps failing, until no deletion does.
fn reduce(mut schedule: Schedule, bad: &Options) -> Schedule {
    let mut i = 0;
    while i < schedule.steps.len() {
        let mut candidate = schedule.clone();
        candidate.steps.remove(i);
        if fails(&candidate, bad) {
            schedule = candidate;
        } else {
            i += 1;
        }
    }
    schedule
}

/// Cases searched per variant before it counts as missed.
pub const HUNT_CASES: u32 = 256;

/// The stall bound of runs against a variant: a failing run of a stalling variant costs this
/// much, while honest waits on loopback take milliseconds.
pub const HUNT_STALL: Duration = Duration::from_millis(400);

/// Hunts `variant` with [`find_and_shrink`], prints `@@stat shrunk-steps <name> <n>` (proptest's
/// shrink), `@@stat reduced-steps <name> <n>` (after greedy deletion) and
/// `@@stat repro-rate <name> <fraction>` with the reproducer, and asserts that the reproducer has
/// at most `max_steps` steps and fails again on replay.
///
/// A racy variant can first be found through a racy schedule whose reduced form is long or
/// reproduces only now and then; up to three hunts (with different seeds) are made to find one
/// within `max_steps` that reproduces at least half the time, and the best is kept.
///
/// # Panics
///
/// Panics (failing the calling test) when any of that does not hold.
pub fn hunt(variant: KnownBad, name: &str, seed: u64, max_steps: usize) {
    let mut best: Option<Found> = None;
    for round in 0..3u64 {
        let found = find_and_shrink(variant, HUNT_CASES, seed + 1000 * round, HUNT_STALL)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        println!(
            "{name}: hunt {round} found a failure in {:.1?}; proptest shrank it to {} step(s), \
             greedy deletion to {}; {}/{REPLAYS} replays fail\n  first failure: {}",
            found.elapsed,
            found.shrunk.steps.len(),
            found.minimal.steps.len(),
            found.replay_failures,
            found.reason.lines().next().unwrap_or("")
        );
        // A racy bug can shrink to a long schedule in one hunt and a short one in the next:
        // prefer a reproducer within the bound, then one that replays, then the shorter.
        let key = |f: &Found| {
            (
                f.minimal.steps.len() <= max_steps,
                f.replay_failures > 0,
                std::cmp::Reverse(f.minimal.steps.len()),
                f.replay_failures,
            )
        };
        if best.as_ref().is_none_or(|b| key(&found) > key(b)) {
            best = Some(found);
        }
        // Stop early only with a short reproducer that fails at least half its replays.
        if best
            .as_ref()
            .is_some_and(|b| b.minimal.steps.len() <= max_steps && 2 * b.replay_failures >= REPLAYS)
        {
            break;
        }
    }
    let found = best.expect("at least one hunt ran");
    let steps = found.minimal.steps.len();
    println!("@@stat shrunk-steps {name} {}", found.shrunk.steps.len());
    println!("@@stat reduced-steps {name} {steps}");
    println!(
        "@@stat repro-rate {name} {:.1}",
        found.replay_failures as f64 / REPLAYS as f64
    );
    println!("{name}: reproducer\n{}", found.minimal);
    assert!(
        steps <= max_steps,
        "{name} reduced only to {steps} steps (bound {max_steps}):\n{}",
        found.minimal
    );
    assert!(
        found.replay_failures > 0,
        "{name}: the reduced schedule did not fail again in {REPLAYS} replays"
    );
}
