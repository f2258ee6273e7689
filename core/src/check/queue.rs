//! Checks of the send queue's properties, shared by loom models and stress tests.
//!
//! The same bodies run as loom models (in `model/`, compiled with `--cfg loom`, where the
//! [`crate::sync`] facade hands out loom's threads and atomics) and as plain
//! multi-threaded stress tests (in `core/tests/queue_*.rs` and under the sanitizers).
//!
//! - [`run`] plays a [`Scenario`]: producer threads push numbered [`Item`]s while the calling
//!   thread drains and closes; it returns everything that happened as an [`Outcome`].
//! - [`check_outcome`] holds the outcome against the queue's contract: exactly once, per-producer
//!   order (against a `VecDeque` oracle per producer), the wake hint, and no leak or double drop.
//! - [`run_wakeup`] plays the event loop's wake-up handshake against a modelled eventfd, and
//!   [`check_no_lost_wakeup`] checks that no item is ever left queued without a pending signal.
//!
//! Each check panics with a message naming the broken property, which is what makes a loom
//! model fail; the known-bad queues of [`MutantQueue`] show that each check can fail.

use std::collections::VecDeque;
use std::fmt;
// Plain std atomics, not the facade's: the drop log is read only after every thread is joined,
// so it takes no part in the synchronisation under test and loom need not model it.
use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};

use crate::queue::{self, Closed, Wake};
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::{self, Arc, LeakTrack};

/// A queue implementation the checks can drive: refloop's own, or a known-bad variant.
pub trait QueueUnderTest: 'static {
    /// The sending half.
    type Producer: Clone + Send + 'static;
    /// The receiving half.
    type Consumer: Send + 'static;
    /// Creates a queue.
    fn channel() -> (Self::Producer, Self::Consumer);
    /// Pushes one item.
    ///
    /// # Errors
    ///
    /// Hands the item back once the queue is closed.
    fn push(producer: &Self::Producer, item: Item) -> Result<Wake, Closed<Item>>;
    /// Appends every item a `drain` yields to `out`.
    fn drain(consumer: &mut Self::Consumer, out: &mut Vec<Item>);
    /// Closes and appends every item `close` returns to `out`.
    fn close(consumer: &mut Self::Consumer, out: &mut Vec<Item>);
}

/// `refloop::queue`, through its public API.
#[derive(Debug)]
pub struct RefloopQueue;

impl QueueUnderTest for RefloopQueue {
    type Producer = queue::Producer<Item>;
    type Consumer = queue::Consumer<Item>;

    fn channel() -> (Self::Producer, Self::Consumer) {
        queue::channel()
    }

    fn push(producer: &Self::Producer, item: Item) -> Result<Wake, Closed<Item>> {
        producer.push(item)
    }

    fn drain(consumer: &mut Self::Consumer, out: &mut Vec<Item>) {
        out.extend(consumer.drain());
    }

    fn close(consumer: &mut Self::Consumer, out: &mut Vec<Item>) {
        out.extend(consumer.close());
    }
}

/// refloop's queue with the deliberate bugs `V` from `refloop::queue::mutant`.
#[doc(hidden)]
#[derive(Debug)]
pub struct MutantQueue<const V: u8>;

impl<const V: u8> QueueUnderTest for MutantQueue<V> {
    type Producer = queue::mutant::Producer<Item, V>;
    type Consumer = queue::mutant::Consumer<Item, V>;

    fn channel() -> (Self::Producer, Self::Consumer) {
        queue::mutant::channel()
    }

    fn push(producer: &Self::Producer, item: Item) -> Result<Wake, Closed<Item>> {
        producer.push(item)
    }

    fn drain(consumer: &mut Self::Consumer, out: &mut Vec<Item>) {
        out.extend(consumer.drain());
    }

    fn close(consumer: &mut Self::Consumer, out: &mut Vec<Item>) {
        out.extend(consumer.close());
    }
}

/// Counts how often each item was dropped, to catch leaks and double drops.
#[derive(Debug)]
struct DropLog {
    per_producer: usize,
    counts: Vec<StdAtomicUsize>,
}

/// A numbered item: producer `producer`'s `seq`-th push.
pub struct Item {
    /// The pushing producer.
    pub producer: usize,
    /// Its position in that producer's pushes, from 0.
    pub seq: usize,
    log: std::sync::Arc<DropLog>,
    _track: LeakTrack,
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}#{}", self.producer, self.seq)
    }
}

impl Drop for Item {
    fn drop(&mut self) {
        let index = self.producer * self.log.per_producer + self.seq;
        // Relaxed: read only after every thread is joined.
        self.log.counts[index].fetch_add(1, StdOrdering::Relaxed);
    }
}

/// What the consumer does while the producers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    /// Producer threads.
    pub producers: usize,
    /// Pushes per producer.
    pub items_per_producer: usize,
    /// Drains the consumer runs while producers may still be pushing.
    pub drains: usize,
    /// Whether the consumer closes after its drains, while producers may still be pushing.
    /// Without it, the consumer drains once more after joining the producers.
    pub close: bool,
    /// Makes every `n`-th weak CAS fail spuriously (see [`sync::spurious`]); 0 for none.
    pub spurious_every: u32,
    /// Shifts which calls fail (see [`sync::spurious::inject`]); run each phase in
    /// `0..spurious_every` to make every CAS fail in some run.
    pub spurious_phase: u32,
}

/// How one push ended.
#[derive(Debug)]
pub enum PushResult {
    /// Accepted, with this wake hint.
    Accepted(Wake),
    /// Refused: the item came back.
    Refused(Item),
}

/// Everything observable that happened in one run of a [`Scenario`].
#[derive(Debug)]
pub struct Outcome {
    /// Each drain's items in yield order, then (if the scenario closes) `close`'s items last.
    pub batches: Vec<Vec<Item>>,
    /// Per producer, each push's result in push order.
    pub pushes: Vec<Vec<(usize, PushResult)>>,
    /// Spurious CAS failures injected.
    pub spurious_injected: u64,
    log: std::sync::Arc<DropLog>,
}

/// Runs `scenario` on queue `Q`: producers on facade threads, the consumer on this thread.
pub fn run<Q: QueueUnderTest>(scenario: &Scenario) -> Outcome {
    let log = std::sync::Arc::new(DropLog {
        per_producer: scenario.items_per_producer,
        counts: (0..scenario.producers * scenario.items_per_producer)
            .map(|_| StdAtomicUsize::new(0))
            .collect(),
    });
    // Under loom every modelled thread shares this OS thread, so this one call sets the
    // injection for the whole execution (and restarts its count, keeping it deterministic).
    sync::spurious::inject(scenario.spurious_every, scenario.spurious_phase);
    let injected_before = sync::spurious::injected();
    let (tx, mut rx) = Q::channel();
    let handles: Vec<_> = (0..scenario.producers)
        .map(|producer| {
            let tx = tx.clone();
            let log = std::sync::Arc::clone(&log);
            let n = scenario.items_per_producer;
            let (every, phase) = (scenario.spurious_every, scenario.spurious_phase);
            sync::thread::spawn(move || {
                #[cfg(not(loom))]
                sync::spurious::inject(every, phase);
                #[cfg(loom)]
                let _ = (every, phase);
                let injected_before = sync::spurious::injected();
                let mut results = Vec::with_capacity(n);
                for seq in 0..n {
                    let item = Item {
                        producer,
                        seq,
                        log: std::sync::Arc::clone(&log),
                        _track: LeakTrack::new(),
                    };
                    let result = match Q::push(&tx, item) {
                        Ok(wake) => PushResult::Accepted(wake),
                        Err(Closed(item)) => PushResult::Refused(item),
                    };
                    results.push((seq, result));
                }
                let injected = sync::spurious::injected() - injected_before;
                sync::spurious::inject_every(0);
                (results, injected)
            })
        })
        .collect();
    drop(tx);
    let mut batches = Vec::new();
    for _ in 0..scenario.drains {
        let mut batch = Vec::new();
        Q::drain(&mut rx, &mut batch);
        batches.push(batch);
        #[cfg(not(loom))]
        sync::thread::yield_now();
    }
    if scenario.close {
        let mut batch = Vec::new();
        Q::close(&mut rx, &mut batch);
        batches.push(batch);
    }
    let mut pushes = Vec::new();
    let mut spurious_injected = 0;
    for handle in handles {
        let (results, injected) = handle.join().expect("producer thread panicked");
        pushes.push(results);
        spurious_injected += injected;
    }
    if !scenario.close {
        let mut batch = Vec::new();
        Q::drain(&mut rx, &mut batch);
        batches.push(batch);
    }
    drop(rx);
    if cfg!(loom) {
        // Every modelled thread ran on this OS thread, so the count covers them all.
        spurious_injected = sync::spurious::injected() - injected_before;
    }
    sync::spurious::inject_every(0);
    Outcome {
        batches,
        pushes,
        spurious_injected,
        log,
    }
}

/// Checks `outcome` against the queue's contract; panics naming the first broken property.
///
/// - **Exactly once:** every item was drained once, or handed back to its producer as
///   [`Closed`], or returned by `close`; none is lost or duplicated.
/// - **Order:** each producer's items come out in push order (a `VecDeque` oracle per
///   producer), and once a producer is refused, every later push of its is refused too.
/// - **Wake hint:** a push returned [`Wake::Needed`] exactly when it found the queue empty
///   (or found the consumer stopped at its slot), which shows as: it is the first item of its
///   batch.
///   The one exception is `close`'s batch, whose first push may have been in flight and
///   handed back.
/// - **No leak, no double drop:** after the outcome is dropped, each item was dropped once.
#[track_caller]
pub fn check_outcome(scenario: &Scenario, outcome: Outcome) {
    let Outcome {
        batches,
        pushes,
        log,
        ..
    } = outcome;
    let n = scenario.items_per_producer;
    assert_eq!(pushes.len(), scenario.producers, "every producer reported");

    // Exactly once: delivered + refused covers every (producer, seq) once.
    let mut seen = vec![0u32; scenario.producers * n];
    let mut refused_from = vec![n; scenario.producers];
    for (producer, results) in pushes.iter().enumerate() {
        for (seq, result) in results {
            if let PushResult::Refused(item) = result {
                assert_eq!(
                    (item.producer, item.seq),
                    (producer, *seq),
                    "exactly once: a refused push handed back another item"
                );
                seen[producer * n + seq] += 1;
                refused_from[producer] = refused_from[producer].min(*seq);
            }
        }
    }
    for item in batches.iter().flatten() {
        seen[item.producer * n + item.seq] += 1;
    }
    for (index, count) in seen.iter().enumerate() {
        assert!(
            *count == 1,
            "exactly once: item p{}#{} was delivered or handed back {count} times",
            index / n,
            index % n
        );
    }
    if !scenario.close {
        assert!(
            refused_from.iter().all(|r| *r == n),
            "exactly once: a push was refused although the consumer never closed"
        );
    }

    // Order, against a VecDeque oracle per producer: delivered items are each producer's pushes
    // in order, and the refused ones are the tail after them.
    let mut oracle: Vec<VecDeque<usize>> = refused_from.iter().map(|r| (0..*r).collect()).collect();
    for item in batches.iter().flatten() {
        let expected = oracle[item.producer].pop_front();
        assert_eq!(
            expected,
            Some(item.seq),
            "order: producer {}'s items came out of push order ({:?} where #{:?} was due)",
            item.producer,
            item,
            expected
        );
    }
    for (producer, results) in pushes.iter().enumerate() {
        for (seq, result) in results {
            if *seq >= refused_from[producer] {
                assert!(
                    matches!(result, PushResult::Refused(_)),
                    "order: producer {producer}'s push #{seq} was accepted after an earlier \
                     one was refused"
                );
            }
        }
    }

    // Wake hint: Needed exactly for the first item of each batch.
    let mut wake = vec![None; scenario.producers * n];
    for (producer, results) in pushes.iter().enumerate() {
        for (seq, result) in results {
            if let PushResult::Accepted(w) = result {
                wake[producer * n + seq] = Some(*w);
            }
        }
    }
    let any_refused = refused_from.iter().any(|r| *r < n);
    let close_batch = if scenario.close {
        batches.len().checked_sub(1)
    } else {
        None
    };
    for (b, batch) in batches.iter().enumerate() {
        for (i, item) in batch.iter().enumerate() {
            let got = wake[item.producer * n + item.seq];
            let expected = if i == 0 {
                Wake::Needed
            } else {
                Wake::NotNeeded
            };
            // `close` abandons pushes still in flight, and their producers get the items back:
            // if the abandoned push was the batch's first, the first returned item is not.
            let excused =
                i == 0 && Some(b) == close_batch && any_refused && got == Some(Wake::NotNeeded);
            assert!(
                got == Some(expected) || excused,
                "wake hint: {item:?} is item {i} of its batch {batch:?} but its push returned \
                 {got:?}"
            );
        }
    }

    // No leak, no double drop.
    drop(batches);
    drop(pushes);
    for (index, count) in log.counts.iter().enumerate() {
        // Relaxed: every thread is joined.
        let count = count.load(StdOrdering::Relaxed);
        assert!(
            count == 1,
            "drops: item p{}#{} was dropped {count} times",
            index / n,
            index % n
        );
    }
}

/// Runs `scenario` on `Q` and checks the outcome: [`run`] then [`check_outcome`].
///
/// Returns the number of spurious CAS failures injected.
#[track_caller]
pub fn check<Q: QueueUnderTest>(scenario: &Scenario) -> u64 {
    let outcome = run::<Q>(scenario);
    let injected = outcome.spurious_injected;
    check_outcome(scenario, outcome);
    injected
}

/// The order in which the loop handles its wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopOrder {
    /// Consume the eventfd signal, then drain: the correct order (EPOLL-NOTES item 12).
    ConsumeThenDrain,
    /// Drain, then consume the signal: a push in between loses its wake-up.
    DrainThenConsume,
}

/// A model of a non-blocking eventfd: a counter that `write` adds to and `read` resets.
#[derive(Debug)]
pub struct EventFd {
    counter: AtomicUsize,
}

impl EventFd {
    /// A fresh eventfd with no pending signal.
    pub fn new() -> Self {
        EventFd {
            counter: AtomicUsize::new(0),
        }
    }

    /// `write(fd, 1)`.
    pub fn signal(&self) {
        // Release: pairs with the Acquire `swap` in `consume`, so the push before the signal
        // is visible to the drain after the consumption.
        self.counter.fetch_add(1, Ordering::Release);
    }

    /// Whether a signal is pending (`epoll_wait` reporting the eventfd readable).
    pub fn pending(&self) -> bool {
        // Acquire: as for `consume`.
        self.counter.load(Ordering::Acquire) != 0
    }

    /// `read(fd)`: takes and resets the counter.
    pub fn consume(&self) -> usize {
        // Acquire: pairs with the Release `fetch_add` in `signal`.
        self.counter.swap(0, Ordering::Acquire)
    }
}

impl Default for EventFd {
    fn default() -> Self {
        Self::new()
    }
}

/// The wake-up handshake: producers push and signal on [`Wake::Needed`]; the loop runs `rounds`
/// turns of "if the eventfd is readable, handle it" in `order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeupScenario {
    /// Producer threads.
    pub producers: usize,
    /// Pushes per producer.
    pub items_per_producer: usize,
    /// Loop turns while the producers run.
    pub rounds: usize,
    /// The loop's order.
    pub order: LoopOrder,
}

/// What the wake-up handshake left behind once the producers finished.
#[derive(Debug)]
pub struct WakeupOutcome {
    /// Items the loop drained during its turns.
    pub delivered: Vec<Item>,
    /// Whether a signal was pending after the producers finished and the loop stopped.
    pub signal_pending: bool,
    /// The items still queued at that point.
    pub left: Vec<Item>,
}

/// Runs the wake-up handshake on `Q`.
pub fn run_wakeup<Q: QueueUnderTest>(scenario: &WakeupScenario) -> WakeupOutcome {
    let log = std::sync::Arc::new(DropLog {
        per_producer: scenario.items_per_producer,
        counts: (0..scenario.producers * scenario.items_per_producer)
            .map(|_| StdAtomicUsize::new(0))
            .collect(),
    });
    let eventfd = Arc::new(EventFd::new());
    let (tx, mut rx) = Q::channel();
    let handles: Vec<_> = (0..scenario.producers)
        .map(|producer| {
            let tx = tx.clone();
            let eventfd = Arc::clone(&eventfd);
            let log = std::sync::Arc::clone(&log);
            let n = scenario.items_per_producer;
            sync::thread::spawn(move || {
                for seq in 0..n {
                    let item = Item {
                        producer,
                        seq,
                        log: std::sync::Arc::clone(&log),
                        _track: LeakTrack::new(),
                    };
                    match Q::push(&tx, item) {
                        Ok(Wake::Needed) => eventfd.signal(),
                        Ok(Wake::NotNeeded) => {}
                        Err(Closed(item)) => {
                            panic!("the loop never closes, yet {item:?} came back")
                        }
                    }
                }
            })
        })
        .collect();
    drop(tx);
    let mut delivered = Vec::new();
    for _ in 0..scenario.rounds {
        if eventfd.pending() {
            match scenario.order {
                LoopOrder::ConsumeThenDrain => {
                    eventfd.consume();
                    Q::drain(&mut rx, &mut delivered);
                }
                LoopOrder::DrainThenConsume => {
                    Q::drain(&mut rx, &mut delivered);
                    eventfd.consume();
                }
            }
        } else {
            sync::thread::yield_now();
        }
    }
    for handle in handles {
        handle.join().expect("producer thread panicked");
    }
    // The producers are finished: what does a loop that now blocks in epoll_wait face?
    let signal_pending = eventfd.pending();
    let mut left = Vec::new();
    Q::drain(&mut rx, &mut left);
    WakeupOutcome {
        delivered,
        signal_pending,
        left,
    }
}

/// Checks that once the producers finished, no item was left queued without a pending signal.
#[track_caller]
pub fn check_no_lost_wakeup(outcome: &WakeupOutcome) {
    assert!(
        outcome.left.is_empty() || outcome.signal_pending,
        "lost wake-up: {:?} left queued with no signal pending (delivered {:?})",
        outcome.left,
        outcome.delivered
    );
}
