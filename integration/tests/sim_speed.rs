//! Cases per second of the sim executor against the real executor, on the very same
//! schedules (the real executor's proptest strategy, one deterministic stream), side by side.
//!
//! `REFLOOP_SIM_SPEED_CASES` (default 24) schedules run through both; prints
//! `@@stat sim-speed real <cases/s x 100>`, `@@stat sim-speed sim <cases/s x 100>` and
//! `@@stat sim-speed ratio <x 100>` (integers, for `cargo xtask bench --only kit`).

use std::time::Instant;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use refloop_integration::schedule::exec as real;
use refloop_integration::schedule::strategy;
use refloop_integration::sim_schedule::exec::{self, Options};
use refloop_integration::sim_schedule::SimCase;

#[test]
fn sim_speed_against_the_real_executor_on_the_same_schedules() {
    let n: usize = std::env::var("REFLOOP_SIM_SPEED_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(24);
    let mut runner = TestRunner::deterministic();
    let strat = strategy::schedule(strategy::DEFAULT_MAX_STEPS);
    let schedules: Vec<_> = (0..n)
        .map(|_| strat.new_tree(&mut runner).expect("a schedule").current())
        .collect();
    let cases: Vec<SimCase> = schedules.iter().map(SimCase::from_schedule).collect();
    let t = Instant::now();
    for (s, case) in schedules.iter().zip(&cases) {
        if let Err(f) = exec::run(case, &Options::correct()) {
            panic!("sim: {f}\n{s}");
        }
    }
    let sim = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for s in &schedules {
        if let Err(e) = real::run(s, &real::Options::from_env()) {
            panic!("real: {e}\n{s}");
        }
    }
    let real = t.elapsed().as_secs_f64();
    let (sim_cps, real_cps) = (n as f64 / sim, n as f64 / real);
    println!(
        "{n} schedules: sim {sim:.2} s ({sim_cps:.0} cases/s), real {real:.2} s ({real_cps:.1} cases/s), ratio {:.0}x",
        sim_cps / real_cps
    );
    println!("@@stat sim-speed real {}", (real_cps * 100.0) as u64);
    println!("@@stat sim-speed sim {}", (sim_cps * 100.0) as u64);
    println!(
        "@@stat sim-speed ratio {}",
        (100.0 * sim_cps / real_cps) as u64
    );
}
