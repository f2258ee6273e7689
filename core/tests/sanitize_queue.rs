//! The queue's stress bodies as one plain binary (`harness = false`), for the sanitizers.
//!
//! Run it under nightly ThreadSanitizer or AddressSanitizer (see VERIFICATION.md, section
//! "Send queue", for the exact commands). It runs the shared check bodies of
//! `refloop::check::queue` on real threads: exactly once, order, wake hint, no leak, no lost
//! wake-up, with and without injected spurious CAS failures.
//!
//! With `REFLOOP_KNOWN_BAD=racy` it runs the same bodies on the known-bad queue that publishes
//! items with `Relaxed` instead of `Release`. On x86 that variant happens to work (the hardware
//! orders the stores), so only a race detector can fail it: ThreadSanitizer must report
//! "WARNING: ThreadSanitizer: data race", which proves the sanitizer run has teeth.

use std::process::ExitCode;

use refloop::check::queue::{
    check, check_no_lost_wakeup, run_wakeup, LoopOrder, MutantQueue, QueueUnderTest, RefloopQueue,
    Scenario, WakeupScenario,
};
use refloop::queue::mutant::RELAXED_PUBLISH;

fn run_all<Q: QueueUnderTest>(rounds: usize) {
    for round in 0..rounds {
        check::<Q>(&Scenario {
            producers: 4,
            items_per_producer: 2_000,
            drains: 200,
            close: false,
            spurious_every: 0,
            spurious_phase: 0,
        });
        check::<Q>(&Scenario {
            producers: 6,
            items_per_producer: 500,
            drains: round * 3,
            close: true,
            spurious_every: 0,
            spurious_phase: 0,
        });
        check::<Q>(&Scenario {
            producers: 4,
            items_per_producer: 1_000,
            drains: 100,
            close: round % 2 == 0,
            spurious_every: 3,
            spurious_phase: 0,
        });
        let outcome = run_wakeup::<Q>(&WakeupScenario {
            producers: 4,
            items_per_producer: 1_000,
            rounds: 200,
            order: LoopOrder::ConsumeThenDrain,
        });
        check_no_lost_wakeup(&outcome);
    }
}

fn main() -> ExitCode {
    let rounds = std::env::var("REFLOOP_SANITIZE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    match std::env::var("REFLOOP_KNOWN_BAD").as_deref() {
        Ok("racy") => {
            println!("sanitize_queue: running the known-racy queue (Relaxed publish)");
            run_all::<MutantQueue<RELAXED_PUBLISH>>(rounds);
            // Reaching here without a sanitizer report is the failure this mode exists to
            // show: say so, and fail, so an uninstrumented run cannot pass for a TSan run.
            eprintln!("sanitize_queue: the known-racy queue ran without a race report");
            ExitCode::FAILURE
        }
        Ok(other) => {
            eprintln!("sanitize_queue: unknown REFLOOP_KNOWN_BAD value `{other}`");
            ExitCode::FAILURE
        }
        Err(_) => {
            run_all::<RefloopQueue>(rounds);
            println!("@@stat sanitize-rounds sanitize_queue {rounds}");
            println!("sanitize_queue: {rounds} rounds passed");
            ExitCode::SUCCESS
        }
    }
}
