//! The sim executor's invariants over random cases: the seed explorer, the proptest
//! strategy, the real executor's own schedules, and determinism.
//!
//! Budgets: `REFLOOP_SIM_CASES` (else `PROPTEST_CASES` x 6, else 1536) explorer cases from
//! `REFLOOP_SIM_BASE` (default 0x51_5eed); `PROPTEST_CASES` (default 256) proptest cases.
//! A failing seed replays with
//! `REFLOOP_SIM_SEED=<seed> cargo +stable test -p refloop-integration --release --test sim_replay -- --nocapture`.

use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use refloop_integration::schedule::{strategy as base, Schedule};
use refloop_integration::sim_schedule::exec::{self, Options, Reach};
use refloop_integration::sim_schedule::{hunt, strategy, SimCase};

#[global_allocator]
static ALLOC: refloop::check::framing::TrackingAlloc = refloop::check::framing::TrackingAlloc;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| {
        let v = v.trim();
        match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => v.parse().ok(),
        }
    })
}

fn proptest_cases() -> u32 {
    env_u64("PROPTEST_CASES").map_or(256, |n| n as u32)
}

#[derive(Default)]
struct Tally {
    cases: u64,
    reach: [u64; 14],
}

impl Tally {
    fn add(&mut self, r: &Reach) {
        self.cases += 1;
        let flags = [
            r.partial_write,
            r.rst,
            r.half_close,
            r.framing_error,
            r.full,
            r.stale_send,
            r.requeued,
            r.held_wakeup,
            r.fault,
            r.idle_timeout,
            r.outbound,
            r.shed,
            r.unsent,
            r.config_rejected,
        ];
        for (n, f) in self.reach.iter_mut().zip(flags) {
            *n += u64::from(f);
        }
    }

    fn print(&self) {
        let names = [
            "partial-write",
            "rst",
            "half-close",
            "framing-error",
            "full",
            "stale-send",
            "requeued",
            "held-wakeup",
            "fault",
            "idle-timeout",
            "outbound",
            "shed",
            "unsent",
            "config-rejected",
        ];
        for (name, n) in names.iter().zip(self.reach) {
            println!(
                "@@stat sim-reach-{name} {:.0}%",
                100.0 * n as f64 / self.cases.max(1) as f64
            );
        }
    }
}

#[test]
fn sim_explorer_cases_keep_every_invariant_and_replay_identically() {
    let cases = env_u64("REFLOOP_SIM_CASES")
        .or_else(|| env_u64("PROPTEST_CASES").map(|n| n * 6))
        .unwrap_or(1536);
    let base = env_u64("REFLOOP_SIM_BASE").unwrap_or(0x51_5eed);
    let started = Instant::now();
    let mut tally = Tally::default();
    for i in 0..cases {
        let seed = base.wrapping_add(i);
        let case = SimCase::from_seed(seed);
        match exec::run(&case, &Options::correct()) {
            Ok(outcome) => {
                tally.add(&outcome.reach);
                // Determinism: every 8th case runs again and must give the same trace.
                if i % 8 == 0 {
                    let again = exec::run(&case, &Options::correct())
                        .unwrap_or_else(|f| panic!("seed {seed}: passed, then failed: {f}"));
                    assert_eq!(
                        again.trace_hash, outcome.trace_hash,
                        "seed {seed}: a rerun gave a different trace (nondeterminism)"
                    );
                }
            }
            Err(f) => {
                let (shrunk, kept) = hunt::shrink(case.clone(), &Options::correct());
                panic!(
                    "seed {seed} fails the correct loop: {f}\n\
                     replay: REFLOOP_SIM_SEED={seed} cargo +stable test -p refloop-integration --release --test sim_replay -- --nocapture\n\
                     shrunk (SimCase::from_seed({seed}).keep(&{kept:?})):\n{shrunk}\ntrace tail:\n{}",
                    f.trace_tail
                );
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "@@stat sim-explorer-cases {cases} in {secs:.1} s ({:.0} cases/s)",
        cases as f64 / secs
    );
    tally.print();
}

#[test]
fn sim_proptest_cases_keep_every_invariant() {
    let mut runner = TestRunner::new(Config {
        cases: proptest_cases(),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..Config::default()
    });
    let result = runner.run(&strategy::case(40), |case| {
        exec::run(&case, &Options::correct())
            .map(drop)
            .map_err(|f| TestCaseError::fail(format!("{f}\n{case}\n{}", f.trace_tail)))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

proptest! {
    #![proptest_config(Config { cases: proptest_cases(), ..Config::default() })]

    /// The real executor's schedules (its strategy and its fuzz decoding) run on the sim.
    #[test]
    fn sim_runs_the_real_executors_schedules(
        schedule in base::schedule(base::DEFAULT_MAX_STEPS),
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        for s in [schedule, Schedule::from_fuzz_bytes(&bytes)] {
            let case = SimCase::from_schedule(&s);
            if let Err(f) = exec::run(&case, &Options::correct()) {
                return Err(TestCaseError::fail(format!("{f}\n{s}\n{}", f.trace_tail)));
            }
        }
    }
}
