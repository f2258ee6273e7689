//! The queue's API contract, one deterministic property per test.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use refloop::queue::{channel, Closed, Wake};

/// Counts its drops, to show that nothing is leaked or dropped twice.
#[derive(Debug)]
struct Counted(u32, Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.1.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn only_the_push_that_finds_the_queue_empty_asks_for_a_wakeup() {
    let (tx, mut rx) = channel();
    assert_eq!(tx.push(1), Ok(Wake::Needed));
    assert_eq!(tx.push(2), Ok(Wake::NotNeeded));
    assert_eq!(tx.push(3), Ok(Wake::NotNeeded));
    assert_eq!(rx.drain().collect::<Vec<_>>(), [1, 2, 3]);
    // Drains of an empty queue change nothing.
    assert_eq!(rx.drain().count(), 0);
    assert_eq!(rx.drain().count(), 0);
    assert_eq!(tx.push(4), Ok(Wake::Needed));
    assert_eq!(tx.push(5), Ok(Wake::NotNeeded));
    assert_eq!(rx.drain().collect::<Vec<_>>(), [4, 5]);
    assert_eq!(tx.push(6), Ok(Wake::Needed));
}

#[test]
fn drain_yields_push_order_across_many_blocks() {
    let (tx, mut rx) = channel();
    for round in 0..5u32 {
        let n = 1 + round * 97;
        for i in 0..n {
            tx.push(i).expect("open");
        }
        assert!(rx.drain().eq(0..n), "round {round}");
    }
}

#[test]
fn items_left_in_a_dropped_drain_come_back_without_a_wakeup() {
    let (tx, mut rx) = channel();
    for i in 0..10 {
        tx.push(i).expect("open");
    }
    let first: Vec<_> = rx.drain().take(4).collect();
    assert_eq!(first, [0, 1, 2, 3]);
    // Items are left, so the queue is not empty: this push rides on no wake-up, and the
    // consumer that stopped early must come back by itself.
    assert_eq!(tx.push(10), Ok(Wake::NotNeeded));
    assert_eq!(rx.drain().collect::<Vec<_>>(), (4..=10).collect::<Vec<_>>());
    assert_eq!(tx.push(11), Ok(Wake::Needed));
}

#[test]
fn a_drain_dropped_after_its_last_item_still_marks_the_queue_empty() {
    let (tx, mut rx) = channel();
    tx.push(1).expect("open");
    let mut drain = rx.drain();
    assert_eq!(drain.next(), Some(1));
    drop(drain);
    assert_eq!(
        tx.push(2),
        Ok(Wake::Needed),
        "the next push must wake the consumer"
    );
}

#[test]
fn close_returns_undelivered_items_and_refuses_later_pushes() {
    let (tx, mut rx) = channel();
    tx.push("a").expect("open");
    tx.push("b").expect("open");
    assert!(!tx.is_closed());
    assert_eq!(rx.close().collect::<Vec<_>>(), ["a", "b"]);
    assert!(tx.is_closed());
    let err = tx.push("c").unwrap_err();
    assert_eq!(err, Closed("c"));
    assert_eq!(format!("{err:?}"), "Closed(\"c\")");
    assert_eq!(err.to_string(), "send queue closed");
    assert_eq!(rx.close().count(), 0, "a second close returns nothing more");
    assert_eq!(rx.drain().count(), 0);
}

#[test]
fn dropping_the_consumer_drops_every_queued_item_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = channel();
    for i in 0..1_000 {
        tx.push(Counted(i, Arc::clone(&drops))).expect("open");
    }
    drop(rx);
    assert_eq!(drops.load(Ordering::Relaxed), 1_000);
    let Closed(back) = tx.push(Counted(7, Arc::clone(&drops))).unwrap_err();
    assert_eq!(back.0, 7, "the refused item comes back intact");
    drop(back);
    drop(tx);
    assert_eq!(drops.load(Ordering::Relaxed), 1_001);
}

#[test]
fn producer_is_clone_send_sync_and_consumer_is_send() {
    fn clone_send_sync<T: Clone + Send + Sync>() {}
    fn send<T: Send>() {}
    // `Cell` is `Send` but not `Sync`: a producer of it must still be `Sync`.
    clone_send_sync::<refloop::queue::Producer<std::cell::Cell<u8>>>();
    send::<refloop::queue::Consumer<std::cell::Cell<u8>>>();
}

#[test]
fn producers_outliving_the_consumer_get_every_item_back() {
    let (tx, rx) = channel::<u64>();
    drop(rx);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..1_000 {
                    assert_eq!(tx.push(t * 1_000 + i), Err(Closed(t * 1_000 + i)));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("producer panicked");
    }
}
