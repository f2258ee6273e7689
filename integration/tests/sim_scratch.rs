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
