//! The schedule proptest has teeth: run against each of the loop's known-bad variants, it finds
//! a failing schedule and shrinks it to a short reproducer, which passes against the correct
//! loop.
//!
//! Prints `@@stat shrunk-steps <variant> <steps>` (proptest's shrink) and
//! `@@stat reduced-steps <variant> <steps>` (after greedy deletion) for the xtask summary.
//! The lost wake-up variant lives in `schedule_teeth_wakeup.rs`: it leaves loops stuck, which
//! must not share a process with fd-counting runs.

use refloop::reactor::KnownBad;
use refloop_integration::schedule::teeth::hunt;

#[test]
fn read_once_under_edge_triggering_is_found_and_shrunk() {
    hunt(KnownBad::ReadOnce, "read_once", 1, 6);
}

#[test]
fn accept_once_is_found_and_shrunk() {
    hunt(KnownBad::AcceptOnce, "accept_once", 2, 6);
}

#[test]
fn dropping_the_rest_of_a_partial_write_is_found_and_shrunk() {
    hunt(
        KnownBad::DropPartialWriteRest,
        "drop_partial_write_rest",
        3,
        6,
    );
}

#[test]
fn ids_without_generation_are_found_and_shrunk() {
    hunt(KnownBad::NoGeneration, "no_generation", 4, 12);
}

#[test]
fn closing_on_read_hangup_without_flushing_is_found_and_shrunk() {
    hunt(KnownBad::CloseOnReadHup, "close_on_read_hup", 5, 6);
}

#[test]
fn ignoring_writable_edges_is_found_and_shrunk() {
    hunt(KnownBad::IgnoreWritable, "ignore_writable", 7, 6);
}

#[test]
fn a_short_read_that_ignores_the_fin_is_found_and_shrunk() {
    hunt(
        KnownBad::ShortReadIgnoresHangup,
        "short_read_ignores_hangup",
        8,
        6,
    );
}
