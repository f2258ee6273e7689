//! loom models of the send queue: exactly once, order, wake hint, no lost wake-up.
//!
//! Each model runs one of the shared check bodies of `refloop::check::queue` under loom, which
//! explores every interleaving within the preemption bound (`LOOM_MAX_PREEMPTIONS`, default 3).
//! Under loom a block holds 2 items, so these few items already cross block boundaries and
//! reuse parked blocks.
#![cfg(loom)]

use refloop::check::queue::{
    check, check_no_lost_wakeup, run_wakeup, LoopOrder, RefloopQueue, Scenario, WakeupScenario,
};
use refloop_model::explore;

#[test]
fn each_item_delivered_once_in_order_while_two_producers_race_a_drain_and_close() {
    explore("race_drain_and_close_2x1", || {
        check::<RefloopQueue>(&Scenario {
            producers: 2,
            items_per_producer: 1,
            drains: 1,
            close: true,
            spurious_every: 0,
            spurious_phase: 0,
        });
    });
}

#[test]
fn no_item_lost_when_three_producers_race_close() {
    explore("race_close_3x1", || {
        check::<RefloopQueue>(&Scenario {
            producers: 3,
            items_per_producer: 1,
            drains: 0,
            close: true,
            spurious_every: 0,
            spurious_phase: 0,
        });
    });
}

#[test]
fn items_cross_block_boundaries_in_order_while_drained_concurrently() {
    // Four pushes fill two blocks of two and link a third, while a drain parks a finished block
    // for reuse.
    explore("blocks_1x4_drain", || {
        check::<RefloopQueue>(&Scenario {
            producers: 1,
            items_per_producer: 4,
            drains: 1,
            close: false,
            spurious_every: 0,
            spurious_phase: 0,
        });
    });
}

#[test]
fn drains_mark_slots_of_linked_and_reused_blocks_without_loss() {
    // A drain ends by marking the first slot not yet published, claimed or not: with two drains
    // racing four pushes, the marked slot is at times the first of a block just linked, or of a
    // parked block the producer took back for reuse, whose stamps are a previous lap's.
    explore("marks_1x4_two_drains", || {
        check::<RefloopQueue>(&Scenario {
            producers: 1,
            items_per_producer: 4,
            drains: 2,
            close: false,
            spurious_every: 0,
            spurious_phase: 0,
        });
    });
}

#[test]
fn two_producers_filling_a_block_link_the_next_one_once() {
    // The second block is linked by whichever producer claims the first block's last slot,
    // while the other waits at the sentinel.
    explore("link_race_2x2", || {
        check::<RefloopQueue>(&Scenario {
            producers: 2,
            items_per_producer: 2,
            drains: 0,
            close: false,
            spurious_every: 0,
            spurious_phase: 0,
        });
    });
}

#[test]
fn spurious_weak_cas_failures_are_retried_without_loss() {
    // Every second weak CAS fails spuriously, loom's blind spot. The two phases between them
    // fail every CAS of every execution once, so failing or not is explored at each one.
    for phase in 0..2 {
        let injected = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let total = std::sync::Arc::clone(&injected);
        let name = format!("spurious_cas_2x2_phase{phase}");
        explore(&name, move || {
            let n = check::<RefloopQueue>(&Scenario {
                producers: 2,
                items_per_producer: 2,
                drains: 0,
                close: false,
                spurious_every: 2,
                spurious_phase: phase,
            });
            // Relaxed: a statistic, read after the model.
            total.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        });
        // Relaxed: the model has finished.
        let injected = injected.load(std::sync::atomic::Ordering::Relaxed);
        println!("@@stat spurious-cas-failures {name} {injected}");
        assert!(
            injected > 0,
            "no spurious failure was injected in any execution"
        );
    }
}

#[test]
fn no_lost_wakeup_when_the_loop_consumes_the_signal_before_draining() {
    explore("wakeup_2x1", || {
        let outcome = run_wakeup::<RefloopQueue>(&WakeupScenario {
            producers: 2,
            items_per_producer: 1,
            rounds: 2,
            order: LoopOrder::ConsumeThenDrain,
        });
        check_no_lost_wakeup(&outcome);
    });
}

#[test]
fn no_lost_wakeup_when_one_producer_pushes_twice_across_drains() {
    explore("wakeup_1x3", || {
        let outcome = run_wakeup::<RefloopQueue>(&WakeupScenario {
            producers: 1,
            items_per_producer: 3,
            rounds: 2,
            order: LoopOrder::ConsumeThenDrain,
        });
        check_no_lost_wakeup(&outcome);
    });
}

#[test]
fn each_item_delivered_once_when_close_races_pushes_across_a_block_boundary() {
    // Two producers fill the first block and link the second while the consumer closes: items
    // in flight at the close are abandoned and handed back, on either side of the boundary.
    explore("race_close_2x2", || {
        check::<RefloopQueue>(&Scenario {
            producers: 2,
            items_per_producer: 2,
            drains: 0,
            close: true,
            spurious_every: 0,
            spurious_phase: 0,
        });
    });
}

#[test]
fn spurious_weak_cas_failures_racing_close_lose_nothing() {
    for phase in 0..2 {
        explore(&format!("spurious_cas_close_2x1_phase{phase}"), move || {
            check::<RefloopQueue>(&Scenario {
                producers: 2,
                items_per_producer: 1,
                drains: 1,
                close: true,
                spurious_every: 2,
                spurious_phase: phase,
            });
        });
    }
}
