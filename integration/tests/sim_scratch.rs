use refloop_integration::sim_schedule::exec::{self, Options};
use refloop_integration::sim_schedule::SimCase;

#[test]
fn sim_scratch() {
    let n: u64 = std::env::var("N").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let first: u64 = std::env::var("FIRST").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let start = std::time::Instant::now();
    let mut fails = 0;
    let mut slow = Vec::new();
    for seed in first..first + n {
        let case = SimCase::from_seed(seed);
        let t = std::time::Instant::now();
        let r = exec::run(&case, &Options::correct());
        slow.push((t.elapsed(), seed));
        if let Err(f) = r {
            fails += 1;
            if fails <= 3 {
                println!("seed {seed}: {}\n{case}\n{}\n", f.message, f.trace_tail);
            } else {
                println!("seed {seed}: {}", f.message.lines().next().unwrap_or(""));
            }
        }
    }
    slow.sort();
    println!("slowest: {:?}", &slow[slow.len().saturating_sub(5)..]);
    println!("{fails} of {n} failed in {:?}", start.elapsed());
}

#[test]
fn sim_show() {
    if let Some(seed) = std::env::var("SHOW").ok().and_then(|v| v.parse().ok()) {
        println!("{}", SimCase::from_seed(seed));
    }
}

#[test]
fn sim_base_speed() {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;
    use refloop_integration::schedule::strategy;
    let n: usize = std::env::var("NB").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut runner = TestRunner::deterministic();
    let strat = strategy::schedule(strategy::DEFAULT_MAX_STEPS);
    let cases: Vec<_> = (0..n)
        .map(|_| SimCase::from_schedule(&strat.new_tree(&mut runner).unwrap().current()))
        .collect();
    let start = std::time::Instant::now();
    let mut fails = 0;
    let mut times = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let t = std::time::Instant::now();
        let r = exec::run(case, &Options::correct());
        times.push((t.elapsed(), i, r.as_ref().map(|o| o.driver_calls).unwrap_or(0)));
        if let Err(f) = r {
            fails += 1;
            if fails < 3 {
                println!("case {i}: {}\n{case}\n{}", f.message, f.trace_tail);
            }
        }
    }
    let real = if std::env::var_os("REAL").is_some() {
        let t = std::time::Instant::now();
        let mut runner = TestRunner::deterministic();
        for _ in 0..n {
            let s = strat.new_tree(&mut runner).unwrap().current();
            refloop_integration::schedule::exec::run(&s, &refloop_integration::schedule::exec::Options::from_env()).unwrap();
        }
        Some(t.elapsed())
    } else {
        None
    };
    times.sort();
    println!("slowest {:?}", &times[times.len().saturating_sub(6)..]);
    if let Some(&(_, i, _)) = times.last() { println!("{}", cases[i]); }
    println!("{n} base schedules on the sim: {fails} failed, {:?}; real: {real:?}", start.elapsed());
}
