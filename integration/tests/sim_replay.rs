//! Replays one sim case by its seed, exactly: the one command every sim failure prints.
//!
//! `REFLOOP_SIM_SEED=<seed> [REFLOOP_KNOWN_BAD=<Variant>] cargo +stable test -p
//! refloop-integration --release --test sim_replay -- --nocapture` runs
//! `SimCase::from_seed(seed)` (against the variant, named as in `exec::KNOWN_BAD`), prints
//! the case, the outcome and the trace tail, shrinks a failure, and checks that a rerun gives
//! the same trace. `REFLOOP_SIM_TRACE=<path>` writes the whole trace of a failure there.
//! Without `REFLOOP_SIM_SEED` it replays the fixed seed 0 and seed 1 (so the test always runs).

use refloop_integration::sim_schedule::exec::{self, Options};
use refloop_integration::sim_schedule::{hunt, SimCase};

#[global_allocator]
static ALLOC: refloop::check::framing::TrackingAlloc = refloop::check::framing::TrackingAlloc;

#[test]
fn sim_replay_of_a_seed_is_exact() {
    let seeds: Vec<u64> = match std::env::var("REFLOOP_SIM_SEED") {
        Ok(v) => vec![v.trim().parse().expect("REFLOOP_SIM_SEED is a u64")],
        Err(_) => vec![0, 1],
    };
    let options = match std::env::var("REFLOOP_KNOWN_BAD") {
        Ok(name) => Options::variant(
            exec::known_bad(name.trim()).unwrap_or_else(|| panic!("no variant {name}")),
        ),
        Err(_) => Options::correct(),
    };
    for seed in seeds {
        let case = SimCase::from_seed(seed);
        println!("seed {seed} against {:?}:\n{case}", options.known_bad);
        let first = exec::run(&case, &options);
        let second = exec::run(&case, &options);
        let hash = |r: &Result<exec::Outcome, exec::Failure>| match r {
            Ok(o) => o.trace_hash,
            Err(f) => f.trace_hash,
        };
        assert_eq!(
            hash(&first),
            hash(&second),
            "seed {seed}: two runs gave different traces"
        );
        match first {
            Ok(o) => println!(
                "passed: {} connection(s), {} driver call(s), {:?} virtual, trace {:#x}",
                o.connections, o.driver_calls, o.virtual_time, o.trace_hash
            ),
            Err(f) => {
                let (shrunk, kept) = hunt::shrink(case, &options);
                panic!(
                    "seed {seed} failed: {f}\ntrace tail:\n{}\nshrunk (SimCase::from_seed({seed}).keep(&{kept:?})):\n{shrunk}",
                    f.trace_tail
                );
            }
        }
    }
}

/// The fuzz target's seed corpus is the explorer's first seeds, byte for byte, and replays
/// clean.
#[test]
fn sim_fuzz_corpus_decodes_as_its_seeds_and_replays_clean() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/sim_schedule");
    let mut n = 0;
    for i in 0..8u64 {
        let path = dir.join(format!("seed-{i}"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(bytes, SimCase::seed_bytes(0x51_5eed + i));
        let case = SimCase::from_fuzz_bytes(&bytes);
        if let Err(f) = exec::run(&case, &Options::correct()) {
            panic!("{}: {f}\n{case}", path.display());
        }
        n += 1;
    }
    println!("@@stat replayed-inputs sim_schedule {n}");
}
