//! The loom models have teeth: each known-bad variant of the queue, or of the loop's wake-up
//! order, is run through the same check body as the shipped code, and loom must reject it.
//!
//! "Rejects" means `loom::model` fails: [`rejects`] catches the panic and asserts that its
//! message names the broken property; a variant that passes every execution fails the test.
//! The variants are the `refloop::queue::mutant` flags: the shipped queue is the same code with
//! every flag off.
#![cfg(loom)]

use refloop::check::queue::{
    check, check_no_lost_wakeup, run_wakeup, LoopOrder, MutantQueue, QueueUnderTest, RefloopQueue,
    Scenario, WakeupScenario,
};
use refloop::queue::mutant::{
    CLOSE_LOSES_RACING_PUSH, LIFO_DRAIN, RELAXED_PUBLISH, SPLIT_EMPTY_MARK, SPLIT_PUBLISH_CHECK,
    SPURIOUS_FAILURE_MEANS_CLOSED,
};
use refloop_model::{explore, rejects};

fn race_drain_and_close() -> Scenario {
    Scenario {
        producers: 2,
        items_per_producer: 1,
        drains: 1,
        close: true,
        spurious_every: 0,
        spurious_phase: 0,
    }
}

fn race_drain() -> Scenario {
    Scenario {
        close: false,
        ..race_drain_and_close()
    }
}

fn wakeup<Q: QueueUnderTest>(order: LoopOrder) {
    let outcome = run_wakeup::<Q>(&WakeupScenario {
        producers: 2,
        items_per_producer: 1,
        rounds: 2,
        order,
    });
    check_no_lost_wakeup(&outcome);
}

#[test]
fn push_publishing_with_relaxed_instead_of_release_is_a_data_race() {
    rejects("relaxed_publish", "Causality violation", || {
        check::<MutantQueue<RELAXED_PUBLISH>>(&race_drain_and_close());
    });
}

#[test]
fn drain_that_forgets_to_reverse_breaks_order() {
    rejects("lifo_drain", "order:", || {
        check::<MutantQueue<LIFO_DRAIN>>(&Scenario {
            producers: 1,
            items_per_producer: 2,
            drains: 0,
            close: false,
            spurious_every: 0,
            spurious_phase: 0,
        });
    });
}

#[test]
fn close_by_load_and_store_loses_an_item_racing_a_push() {
    rejects("close_loses_racing_push", "exactly once:", || {
        check::<MutantQueue<CLOSE_LOSES_RACING_PUSH>>(&Scenario {
            producers: 2,
            items_per_producer: 1,
            drains: 0,
            close: true,
            spurious_every: 0,
            spurious_phase: 0,
        });
    });
}

// The two split variants below race one slot's stamp between a drain that marks it and the push
// that publishes it. Each side's single read-modify-write is what orders the two; with either
// split into a load and a store, loom finds executions where the push misses the mark or the
// mark overwrites the item, and the first one it meets is checked for by name.

#[test]
fn empty_mark_split_from_its_check_breaks_the_wake_hint() {
    rejects("split_empty_mark_hint", "wake hint:", || {
        check::<MutantQueue<SPLIT_EMPTY_MARK>>(&race_drain());
    });
}

#[test]
fn empty_mark_split_from_its_check_loses_a_wakeup() {
    rejects("split_empty_mark_wakeup", "lost wake-up:", || {
        wakeup::<MutantQueue<SPLIT_EMPTY_MARK>>(LoopOrder::ConsumeThenDrain);
    });
}

#[test]
fn publish_split_from_its_mark_check_loses_an_item() {
    rejects("split_publish_check", "exactly once:", || {
        check::<MutantQueue<SPLIT_PUBLISH_CHECK>>(&race_drain());
    });
}

#[test]
fn loop_that_drains_before_consuming_the_signal_loses_a_wakeup() {
    rejects("drain_then_consume", "lost wake-up:", || {
        wakeup::<RefloopQueue>(LoopOrder::DrainThenConsume);
    });
}

#[test]
fn spurious_cas_failure_mistaken_for_close_is_caught_only_with_injection() {
    let scenario = Scenario {
        producers: 2,
        items_per_producer: 1,
        drains: 1,
        close: false,
        spurious_every: 0,
        spurious_phase: 0,
    };
    // Loom's blind spot: without injected failures, every execution accepts this variant.
    explore("spurious_means_closed_uninjected", move || {
        check::<MutantQueue<SPURIOUS_FAILURE_MEANS_CLOSED>>(&scenario);
    });
    // With the facade injecting spurious failures, the same check rejects it.
    rejects(
        "spurious_means_closed_injected",
        "exactly once:",
        move || {
            check::<MutantQueue<SPURIOUS_FAILURE_MEANS_CLOSED>>(&Scenario {
                spurious_every: 2,
                spurious_phase: 0,
                ..scenario
            });
        },
    );
}
