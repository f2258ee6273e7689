//! The schedules against two loops sharing the address (`SO_REUSEPORT`): the clients of one
//! schedule spread over both loops, and cross-thread sends reach connections on either.
//! (A binary of its own: the executor compares the process's fd table.)

use refloop_integration::schedule::driver::{cases, schedules_keep_every_invariant};
use refloop_integration::schedule::exec;

#[test]
fn random_schedules_keep_every_loop_invariant_on_two_loops() {
    let options = exec::Options {
        loops: 2,
        ..exec::Options::from_env()
    };
    // A quarter of the cases: the single-loop test covers the schedule space; this one the
    // routing across loops.
    schedules_keep_every_invariant(
        "schedule_invariants_two_loops",
        cases().div_ceil(4),
        options,
    );
}
