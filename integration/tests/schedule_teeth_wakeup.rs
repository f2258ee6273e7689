//! The lost wake-up variants are caught: draining the send queues before resetting the eventfd
//! by a schedule that holds the loop inside its wake-up while another connection is sent to,
//! and both it and a push that never wakes the loop are found and shrunk from random schedules.
//!
//! A lost wake-up also loses the shutdown command, so the loop of a failing run never exits:
//! the executor parks it and skips the fd comparison from then on. This file is its own test
//! binary so that no fd-counting run shares a process with those stuck loops.

use std::time::Duration;

use refloop::reactor::KnownBad;
use refloop_integration::schedule::exec;
use refloop_integration::schedule::teeth::hunt;
use refloop_integration::schedule::{Schedule, Step, Tuning, Wire};

fn schedule() -> Schedule {
    Schedule {
        wire: Wire::LengthPrefixed,
        tuning: Tuning::default(),
        steps: vec![
            Step::Connect { client: 1 },
            Step::Sync { client: 1 },
            Step::HoldLoop {
                client: 0,
                steps: 1,
            },
            Step::CrossSend {
                client: 1,
                thread: 0,
                count: 2,
                len: 50,
                stale: false,
            },
        ],
    }
}

#[test]
fn a_send_landing_inside_the_wake_up_is_delivered_and_the_lost_wake_up_variant_is_caught() {
    let good = exec::run(&schedule(), &exec::Options::from_env()).unwrap_or_else(|e| panic!("{e}"));
    assert!(good.reach.held_wakeup, "the hold must take effect");
    let bad = exec::Options {
        known_bad: KnownBad::DrainBeforeEventfdReset,
        stall: Duration::from_millis(500),
        leak_socket: false,
        loops: 1,
    };
    let err = exec::run(&schedule(), &bad).expect_err("the lost wake-up must be caught");
    assert!(err.contains("stalled"), "{err}");
}

#[test]
fn draining_before_the_eventfd_reset_is_found_and_shrunk() {
    hunt(
        KnownBad::DrainBeforeEventfdReset,
        "drain_before_eventfd_reset",
        6,
        10,
    );
}

#[test]
fn a_push_that_does_not_wake_the_loop_is_found_and_shrunk() {
    hunt(KnownBad::SkipWake, "skip_wake", 9, 6);
}
