//! Teeth: the general sim explorer finds every known-bad loop variant from a fresh fixed seed
//! within a stated budget of cases, shrinks the failing case by greedy step deletion, and the
//! reproducer fails 10 times out of 10 with the same trace (and passes on the correct loop).
//!
//! No case here is written for a variant: each hunt runs `SimCase::from_seed` from its own
//! base seed. `TrackingAlloc` is the global allocator, so the executor's allocation bound is
//! live (that is how `AllocPerSend` shows).
//!
//! Each hunt prints `@@stat sim-hunt <variant> cases=<n> shrunk_steps=<k> replays=<r>/10` and
//! the reproducer; `REFLOOP_SIM_SEED=<seed> REFLOOP_KNOWN_BAD=<variant> cargo +stable test -p
//! refloop-integration --release --test sim_replay -- --nocapture` replays a hunt's seed.

use refloop_integration::sim_schedule::exec;
use refloop_integration::sim_schedule::hunt::{self, REPLAYS};

#[global_allocator]
static ALLOC: refloop::check::framing::TrackingAlloc = refloop::check::framing::TrackingAlloc;

/// Cases each hunt may run before the variant counts as missed.
const BUDGET: u64 = 3000;

fn hunt(name: &str, base: u64) {
    let variant = exec::known_bad(name).unwrap_or_else(|| panic!("no variant {name}"));
    let found = hunt::hunt(variant, base, BUDGET).unwrap_or_else(|e| panic!("{name}: {e}"));
    println!(
        "{name}: seed {} failed after {} case(s); shrunk from {} to {} step(s) (keep {:?}): {}\n{}",
        found.seed,
        found.cases,
        found.steps,
        found.shrunk.steps.len(),
        found.kept,
        found.reason.lines().next().unwrap_or(""),
        found.shrunk
    );
    println!(
        "@@stat sim-hunt {name} cases={} shrunk_steps={} replays={}/{REPLAYS}",
        found.cases,
        found.shrunk.steps.len(),
        found.replays_failed
    );
    assert_eq!(
        found.replays_failed, REPLAYS,
        "{name}: the reproducer failed only {}/{REPLAYS} replays",
        found.replays_failed
    );
}

macro_rules! hunts {
    ($($test:ident: $name:literal, $base:literal;)*) => {
        $(
            #[test]
            fn $test() {
                hunt($name, $base);
            }
        )*
    };
}

hunts! {
    sim_hunt_finds_read_once: "ReadOnce", 0x1000_0000;
    sim_hunt_finds_accept_once: "AcceptOnce", 0x2000_0000;
    sim_hunt_finds_no_fairness: "NoFairness", 0x3000_0000;
    sim_hunt_finds_drop_partial_write_rest: "DropPartialWriteRest", 0x4000_0000;
    sim_hunt_finds_close_on_read_hup: "CloseOnReadHup", 0x5000_0000;
    sim_hunt_finds_close_without_delete: "CloseWithoutDelete", 0x6000_0000;
    sim_hunt_finds_no_generation: "NoGeneration", 0x7000_0000;
    sim_hunt_finds_no_reserve_fd: "NoReserveFd", 0x8000_0000;
    sim_hunt_finds_eintr_fatal: "EintrFatal", 0x9000_0000;
    sim_hunt_finds_drain_before_eventfd_reset: "DrainBeforeEventfdReset", 0xa000_0000;
    sim_hunt_finds_ignore_writable: "IgnoreWritable", 0xb000_0000;
    sim_hunt_finds_skip_wake: "SkipWake", 0xc000_0000;
    sim_hunt_finds_wake_every_push: "WakeEveryPush", 0xd000_0000;
    // `UncountedUnsent` is not hunted here: a close that abandons output now resets a TCP
    // connection, and the executor exempts a reset peer from the delivery accounting, so the
    // variant (which zeroes the count) is invisible to it; the real-socket teeth test
    // `teeth_a_close_that_forgets_its_unsent_bytes_breaks_the_accounting` rejects it.
    sim_hunt_finds_alloc_per_send: "AllocPerSend", 0xf000_0000;
    sim_hunt_finds_short_read_ignores_hangup: "ShortReadIgnoresHangup", 0x1_1000_0000;
    sim_hunt_finds_no_accept_retry: "NoAcceptRetry", 0x1_2000_0000;
    // `LingerCutsFlush` is not hunted here: every case of the explorer that caught it so far
    // also failed the correct loop (the open finding `sim_finding_seed_5100275363_stalls_on_
    // the_correct_loop`), so it cannot tell the variant apart; the sim test
    // `teeth_a_flush_cut_at_the_linger_truncates_the_reply_bug_2` and the real-socket
    // `teeth_a_flush_bounded_by_close_linger_truncates_a_slow_reader` reject it.
    sim_hunt_finds_connect_skips_read: "ConnectSkipsRead", 0x1_4000_0000;
    sim_hunt_finds_stale_timers: "StaleTimers", 0x1_5000_0000;
    sim_hunt_finds_watermark_between_passes: "WatermarkBetweenPasses", 0x1_6000_0000;
}
