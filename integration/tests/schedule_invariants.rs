//! Random socket schedules against the correct loop: every invariant of
//! `refloop_integration::schedule::exec` holds on every schedule.
//!
//! The case count comes from `PROPTEST_CASES` (default 256, the CI budget); failures are saved
//! to `integration/proptest-regressions/schedule_invariants.txt`, which is checked in and
//! replayed first on every run.

use refloop_integration::schedule::driver::{cases, schedules_keep_every_invariant};
use refloop_integration::schedule::exec;

#[test]
fn random_schedules_keep_every_loop_invariant() {
    schedules_keep_every_invariant("schedule_invariants", cases(), exec::Options::from_env());
}
