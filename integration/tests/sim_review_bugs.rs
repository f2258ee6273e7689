//! The review's bugs, as the sim explorer found them (through their known-bad variants), kept
//! as deterministic regressions: each reproducer is the hunt's shrunk case, written down as
//! `SimCase::from_seed(seed).keep(&steps)`; it passes on the fixed loop and fails with the
//! variant that restores the bug.

use std::time::Duration;

use refloop::reactor::KnownBad;
use refloop_integration::sim_schedule::exec::{self, Options};
use refloop_integration::sim_schedule::SimCase;

#[global_allocator]
static ALLOC: refloop::check::framing::TrackingAlloc = refloop::check::framing::TrackingAlloc;

#[track_caller]
fn check(seed: u64, keep: &[usize], variant: KnownBad, expect: &str) {
    let case = SimCase::from_seed(seed).keep(keep);
    if let Err(f) = exec::run(&case, &Options::correct()) {
        panic!("the fixed loop fails the reproducer: {f}\n{case}");
    }
    match exec::run(&case, &Options::variant(variant)) {
        Ok(_) => panic!("{variant:?} passes its reproducer:\n{case}"),
        Err(f) => assert!(
            f.message.contains(expect),
            "{variant:?} failed for another reason: {f}\n{case}"
        ),
    }
}

/// Bug 1: an outbound connect whose peer speaks first (completion and data in one event).
#[test]
fn sim_regression_bug1_greeting_in_the_connect_completion_event_is_read() {
    check(5_368_709_128, &[0], KnownBad::ConnectSkipsRead, "stall");
}

// Bug 2 (`close_linger` cut a closing flush to a slow reader) has no sim-schedule regression
// here: the loop now resets a connection whose flush it abandons, and the executor exempts a
// reset peer from the delivery check, so the variant no longer shows in these cases. Its
// regressions are `a_reader_slower_than_close_linger_gets_the_whole_reply_bug_2` (the sim,
// `core/tests/sim_loop.rs`) and the real-socket tests in `core/tests/loop_review_bugs.rs`, each
// with `LingerCutsFlush` as its teeth.

/// Bug 3: one transient `ENOBUFS`/`ENOMEM` from `accept4` must not strand the backlog.
#[test]
fn sim_regression_bug3_a_transient_accept_failure_is_retried_on_the_timer() {
    check(4_831_838_239, &[7, 14], KnownBad::NoAcceptRetry, "stall");
}

/// Bug 7: closed connections leave no timer entries behind.
#[test]
fn sim_regression_bug7_closed_connections_leave_no_timer_entries() {
    check(5_637_144_587, &[28], KnownBad::StaleTimers, "timer heap");
}

/// Bug 8: the high watermark holds within a read pass.
#[test]
fn sim_regression_bug8_unsent_output_stays_within_the_watermark_within_a_pass() {
    check(
        5_905_580_034,
        &[8],
        KnownBad::WatermarkBetweenPasses,
        "over the high watermark",
    );
}

/// Bugs 5 and 6: config values at their edges. `Duration::MAX` timeouts mean never (a case
/// with all three at `Duration::MAX` runs to its end), and `low_watermark: 0` is refused at
/// construction, naming the field, instead of pausing a connection for good.
#[test]
fn sim_regression_bugs5_6_duration_max_timeouts_run_and_a_zero_low_watermark_is_refused() {
    for seed in 0..64 {
        let mut case = SimCase::from_seed(seed);
        case.knobs.idle_timeout = Some(Duration::MAX);
        case.knobs.shutdown_timeout = Duration::MAX;
        case.knobs.close_linger = Duration::MAX;
        if case.knobs.low_watermark == 0 {
            case.knobs.low_watermark = 1;
        }
        if let Err(f) = exec::run(&case, &Options::correct()) {
            panic!("seed {seed} with Duration::MAX timeouts: {f}\n{case}");
        }
        case.knobs.low_watermark = 0;
        let outcome = exec::run(&case, &Options::correct())
            .unwrap_or_else(|f| panic!("seed {seed} with low_watermark 0: {f}"));
        assert!(
            outcome.reach.config_rejected,
            "low_watermark 0 was accepted"
        );
    }
}
