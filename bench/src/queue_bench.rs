//! Send queue throughput: `P` producers each push `per_producer` small messages into one
//! consumer, through refloop's queue, crossbeam-channel (unbounded) and `std::sync::mpsc`.
//!
//! Each message is a `u64` carrying its producer and sequence number.
//! The consumer checks that every producer's messages arrive complete and in order, so an
//! implementation that loses or reorders messages fails instead of scoring.
//! The clock starts when every thread has passed a barrier and stops when the consumer has
//! received the last message; thread start-up is outside the measurement.
//!
//! The consumer runs in one of three [`Pattern`]s, each used the same way by every
//! implementation that offers it:
//!
//! - [`Pattern::Spin`]: the consumer polls with non-blocking batch drains (refloop `drain()`,
//!   crossbeam `try_iter()`), spinning when it finds nothing and yielding the CPU after
//!   [`SPIN_BEFORE_YIELD`] empty polls in a row.
//! - [`Pattern::Eventfd`]: the loop's pattern. The consumer blocks reading an eventfd, then
//!   drains everything. refloop's producers write the eventfd when `push` returns
//!   `Wake::Needed`; crossbeam's, which get no such hint, use the pending flag of libuv's
//!   `uv_async_send` (write only when the flag was clear; the consumer clears it after reading
//!   the eventfd and before draining), the standard way to wake an event loop at most once per
//!   batch from a channel that does not say when it was empty.
//! - [`Pattern::Blocking`]: the comparison kept from before: refloop drains (yielding when
//!   empty), crossbeam and std call their blocking `recv`, one message at a time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use refloop::queue::Wake;

use crate::sys::EventFd;

/// Empty polls in a row after which a spinning consumer yields the CPU, as crossbeam's
/// `Backoff::snooze` does once spinning stops paying off; the same for every implementation.
pub const SPIN_BEFORE_YIELD: u32 = 64;

/// The implementations compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueImpl {
    /// `refloop::queue`.
    Refloop,
    /// `crossbeam_channel::unbounded`.
    Crossbeam,
    /// `std::sync::mpsc::channel`.
    StdMpsc,
}

/// How the consumer waits for and takes messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Non-blocking batch drains in a spin loop.
    Spin,
    /// Woken through an eventfd, then drains everything.
    Eventfd,
    /// refloop drains (yielding when empty); the peers call blocking `recv`.
    Blocking,
}

impl Pattern {
    /// Every pattern, in table order.
    pub const ALL: [Pattern; 3] = [Pattern::Spin, Pattern::Eventfd, Pattern::Blocking];

    /// The name used in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Spin => "spin",
            Pattern::Eventfd => "eventfd",
            Pattern::Blocking => "blocking",
        }
    }

    /// The pattern called `name`.
    pub fn parse(name: &str) -> Option<Pattern> {
        Pattern::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The implementations that take part in this pattern.
    pub fn impls(self) -> &'static [QueueImpl] {
        match self {
            Pattern::Spin | Pattern::Eventfd => &[QueueImpl::Refloop, QueueImpl::Crossbeam],
            Pattern::Blocking => &QueueImpl::ALL,
        }
    }
}

/// What one measurement saw.
#[derive(Debug, Clone, Copy)]
pub struct RunStats {
    /// From the start barrier to the last message received.
    pub elapsed: Duration,
    /// Eventfd writes made by the producers (the eventfd pattern only; 0 otherwise).
    pub wakes: u64,
    /// Times the consumer took messages: drains, `try_iter` sweeps or `recv` calls that
    /// returned something.
    pub batches: u64,
    /// Times the consumer looked for messages, with or without finding any.
    pub polls: u64,
}

impl QueueImpl {
    /// All implementations, refloop first.
    pub const ALL: [QueueImpl; 3] = [QueueImpl::Refloop, QueueImpl::Crossbeam, QueueImpl::StdMpsc];

    /// The name used in tables.
    pub fn name(self) -> &'static str {
        match self {
            QueueImpl::Refloop => "refloop",
            QueueImpl::Crossbeam => "crossbeam",
            QueueImpl::StdMpsc => "std mpsc",
        }
    }

    /// Runs one measurement.
    ///
    /// # Panics
    ///
    /// Panics when a message is lost, duplicated or out of order (the figure would be a lie),
    /// when the eventfd fails, or when `pattern` does not include this implementation.
    pub fn run(self, pattern: Pattern, producers: usize, per_producer: u64) -> RunStats {
        match (self, pattern) {
            (QueueImpl::Refloop, Pattern::Spin) => refloop_spin(producers, per_producer),
            (QueueImpl::Refloop, Pattern::Eventfd) => refloop_eventfd(producers, per_producer),
            (QueueImpl::Refloop, Pattern::Blocking) => refloop_yield(producers, per_producer),
            (QueueImpl::Crossbeam, Pattern::Spin) => crossbeam_spin(producers, per_producer),
            (QueueImpl::Crossbeam, Pattern::Eventfd) => crossbeam_eventfd(producers, per_producer),
            (QueueImpl::Crossbeam, Pattern::Blocking) => crossbeam_recv(producers, per_producer),
            (QueueImpl::StdMpsc, Pattern::Blocking) => std_recv(producers, per_producer),
            (QueueImpl::StdMpsc, _) => panic!("std mpsc runs only in the blocking pattern"),
        }
    }
}

fn message(producer: usize, seq: u64) -> u64 {
    ((producer as u64) << 40) | seq
}

/// Checks per-producer order and completeness on the consumer side.
struct Checker {
    next: Vec<u64>,
    received: u64,
    batches: u64,
}

impl Checker {
    fn new(producers: usize) -> Self {
        Checker {
            next: vec![0; producers],
            received: 0,
            batches: 0,
        }
    }

    #[inline]
    fn accept(&mut self, msg: u64) {
        let p = (msg >> 40) as usize;
        let seq = msg & ((1 << 40) - 1);
        assert_eq!(
            seq, self.next[p],
            "producer {p}: message out of order or lost"
        );
        self.next[p] += 1;
        self.received += 1;
    }

    /// Takes every message `batch` yields; returns whether there was one.
    #[inline]
    fn take(&mut self, batch: impl Iterator<Item = u64>) -> bool {
        let before = self.received;
        for m in batch {
            self.accept(m);
        }
        let got = self.received != before;
        self.batches += u64::from(got);
        got
    }

    fn finish(&self, per_producer: u64) {
        assert!(
            self.next.iter().all(|n| *n == per_producer),
            "messages missing: {:?}",
            self.next
        );
    }
}

/// The spinning consumer's wait after an empty poll: a spin hint, and a yield after
/// [`SPIN_BEFORE_YIELD`] of them in a row.
struct Spinner {
    empty: u32,
}

impl Spinner {
    #[inline]
    fn after(&mut self, got: bool) {
        if got {
            self.empty = 0;
        } else if self.empty < SPIN_BEFORE_YIELD {
            self.empty += 1;
            std::hint::spin_loop();
        } else {
            self.empty = 0;
            thread::yield_now();
        }
    }
}

fn run_with<P, C>(producers: usize, per_producer: u64, make: impl FnOnce() -> (P, C)) -> RunStats
where
    P: FnMut(usize, u64) + Clone + Send + 'static,
    C: FnMut(&mut Checker) + Send + 'static,
{
    let (push, mut consume) = make();
    let barrier = Arc::new(Barrier::new(producers + 1));
    let total = per_producer * producers as u64;
    let mut handles = Vec::with_capacity(producers);
    for p in 0..producers {
        let mut push = push.clone();
        let barrier = Arc::clone(&barrier);
        handles.push(thread::spawn(move || {
            barrier.wait();
            for seq in 0..per_producer {
                push(p, message(p, seq));
            }
        }));
    }
    drop(push);
    let mut checker = Checker::new(producers);
    barrier.wait();
    let start = Instant::now();
    let mut polls = 0u64;
    while checker.received < total {
        consume(&mut checker);
        polls += 1;
    }
    let elapsed = start.elapsed();
    for h in handles {
        h.join().expect("producer thread panicked");
    }
    checker.finish(per_producer);
    RunStats {
        elapsed,
        wakes: 0,
        batches: checker.batches,
        polls,
    }
}

/// An eventfd shared by the producers and the consumer, counting its writes.
struct Waker {
    fd: EventFd,
    writes: AtomicU64,
}

impl Waker {
    fn new() -> Arc<Waker> {
        Arc::new(Waker {
            fd: EventFd::new().expect("eventfd"),
            writes: AtomicU64::new(0),
        })
    }

    fn signal(&self) {
        // Relaxed: a statistic, read after every producer is joined.
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.fd.signal().expect("eventfd write");
    }

    fn wait(&self) {
        self.fd.wait().expect("eventfd read");
    }
}

fn refloop_push(tx: &refloop::queue::Producer<u64>, m: u64) -> Wake {
    match tx.push(m) {
        Ok(wake) => wake,
        Err(_) => panic!("refloop queue closed while producers were running"),
    }
}

fn refloop_spin(producers: usize, per_producer: u64) -> RunStats {
    run_with(producers, per_producer, || {
        let (tx, mut rx) = refloop::queue::channel::<u64>();
        let push = move |_p: usize, m: u64| {
            // No one sleeps, so the hint is not needed.
            let _ = refloop_push(&tx, m);
        };
        let mut spinner = Spinner { empty: 0 };
        let consume = move |c: &mut Checker| spinner.after(c.take(rx.drain()));
        (push, consume)
    })
}

fn refloop_eventfd(producers: usize, per_producer: u64) -> RunStats {
    let waker = Waker::new();
    let producer_waker = Arc::clone(&waker);
    let consumer_waker = Arc::clone(&waker);
    let mut stats = run_with(producers, per_producer, move || {
        let (tx, mut rx) = refloop::queue::channel::<u64>();
        let push = move |_p: usize, m: u64| {
            if refloop_push(&tx, m) == Wake::Needed {
                producer_waker.signal();
            }
        };
        let consume = move |c: &mut Checker| {
            // The loop's order: consume the eventfd, then drain.
            consumer_waker.wait();
            c.take(rx.drain());
        };
        (push, consume)
    });
    // Relaxed: every producer is joined.
    stats.wakes = waker.writes.load(Ordering::Relaxed);
    stats
}

fn refloop_yield(producers: usize, per_producer: u64) -> RunStats {
    run_with(producers, per_producer, || {
        let (tx, mut rx) = refloop::queue::channel::<u64>();
        let push = move |_p: usize, m: u64| {
            let _ = refloop_push(&tx, m);
        };
        let consume = move |c: &mut Checker| {
            if !c.take(rx.drain()) {
                // Empty: a real loop would block in epoll_wait until the eventfd fires.
                thread::yield_now();
            }
        };
        (push, consume)
    })
}

fn crossbeam_spin(producers: usize, per_producer: u64) -> RunStats {
    run_with(producers, per_producer, || {
        let (tx, rx) = crossbeam_channel::unbounded::<u64>();
        let push = move |_p: usize, m: u64| tx.send(m).expect("crossbeam receiver alive");
        let mut spinner = Spinner { empty: 0 };
        let consume = move |c: &mut Checker| spinner.after(c.take(rx.try_iter()));
        (push, consume)
    })
}

fn crossbeam_eventfd(producers: usize, per_producer: u64) -> RunStats {
    let waker = Waker::new();
    let producer_waker = Arc::clone(&waker);
    let consumer_waker = Arc::clone(&waker);
    // libuv's `uv_async_send`: set while a wake-up is pending and not yet taken.
    let pending = Arc::new(AtomicBool::new(false));
    let producer_pending = Arc::clone(&pending);
    let mut stats = run_with(producers, per_producer, move || {
        let (tx, rx) = crossbeam_channel::unbounded::<u64>();
        let push = move |_p: usize, m: u64| {
            tx.send(m).expect("crossbeam receiver alive");
            // SeqCst (load and swap): the send, then the flag, must be ordered against the
            // consumer's SeqCst clear, then its drain (a store-load handshake: with anything
            // weaker, a send could be missed by the drain while its producer sees the flag
            // still set and skips the wake-up).
            if !producer_pending.load(Ordering::SeqCst)
                && !producer_pending.swap(true, Ordering::SeqCst)
            {
                producer_waker.signal();
            }
        };
        let consume = move |c: &mut Checker| {
            consumer_waker.wait();
            // SeqCst: pairs with the producers' SeqCst load and swap, see above.
            pending.store(false, Ordering::SeqCst);
            c.take(rx.try_iter());
        };
        (push, consume)
    });
    // Relaxed: every producer is joined.
    stats.wakes = waker.writes.load(Ordering::Relaxed);
    stats
}

fn crossbeam_recv(producers: usize, per_producer: u64) -> RunStats {
    run_with(producers, per_producer, || {
        let (tx, rx) = crossbeam_channel::unbounded::<u64>();
        let push = move |_p: usize, m: u64| tx.send(m).expect("crossbeam receiver alive");
        let consume = move |c: &mut Checker| {
            c.take(std::iter::once(rx.recv().expect("crossbeam senders alive")));
        };
        (push, consume)
    })
}

fn std_recv(producers: usize, per_producer: u64) -> RunStats {
    run_with(producers, per_producer, || {
        let (tx, rx) = std::sync::mpsc::channel::<u64>();
        let push = move |_p: usize, m: u64| tx.send(m).expect("std receiver alive");
        let consume = move |c: &mut Checker| {
            c.take(std::iter::once(rx.recv().expect("std senders alive")));
        };
        (push, consume)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_queue_delivers_all_messages_in_order_under_every_pattern() {
        for pattern in Pattern::ALL {
            for &imp in pattern.impls() {
                for producers in [1, 3] {
                    // The harness panics if anything is lost or reordered, and a lost wake-up
                    // in the eventfd pattern hangs the test.
                    imp.run(pattern, producers, 2_000);
                }
            }
        }
    }

    #[test]
    fn refloop_writes_the_eventfd_once_per_batch() {
        let stats = QueueImpl::Refloop.run(Pattern::Eventfd, 2, 5_000);
        // Every batch is started by exactly one wake-up, and the drain after the last one may
        // find nothing left only if no wake-up is due: wakes and non-empty batches match.
        assert_eq!(stats.wakes, stats.batches);
    }

    #[test]
    fn checker_rejects_a_reordered_stream() {
        let caught = std::panic::catch_unwind(|| {
            let mut c = Checker::new(1);
            c.accept(message(0, 0));
            c.accept(message(0, 2));
        });
        assert!(caught.is_err());
    }

    #[test]
    fn checker_rejects_a_short_stream() {
        let caught = std::panic::catch_unwind(|| {
            let mut c = Checker::new(2);
            c.accept(message(0, 0));
            c.accept(message(1, 0));
            c.finish(2);
        });
        assert!(caught.is_err());
    }
}
