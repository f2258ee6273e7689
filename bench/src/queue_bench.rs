//! Send queue throughput: `P` producers each push `per_producer` small messages into one
//! consumer, through refloop's queue, crossbeam-channel (unbounded) and `std::sync::mpsc`.
//!
//! Each message is a `u64` carrying its producer and sequence number.
//! The consumer checks that every producer's messages arrive complete and in order, so an
//! implementation that loses or reorders messages fails instead of scoring.
//! The clock starts when every thread has passed a barrier and stops when the consumer has
//! received the last message; thread start-up is outside the measurement.
//!
//! Each consumer is used the way its users use it:
//! refloop's consumer drains everything queued in one step (the loop does this after its
//! eventfd fires; here it polls, yielding the CPU when the queue is empty), crossbeam and std
//! consumers call the blocking `recv`.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

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

    /// Runs one measurement and returns the time from start to the last message received.
    ///
    /// # Panics
    ///
    /// Panics when a message is lost, duplicated or out of order: the figure would be a lie.
    pub fn run(self, producers: usize, per_producer: u64) -> Duration {
        match self {
            QueueImpl::Refloop => run_refloop(producers, per_producer),
            QueueImpl::Crossbeam => run_crossbeam(producers, per_producer),
            QueueImpl::StdMpsc => run_std(producers, per_producer),
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
}

impl Checker {
    fn new(producers: usize) -> Self {
        Checker {
            next: vec![0; producers],
            received: 0,
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

    fn finish(&self, per_producer: u64) {
        assert!(
            self.next.iter().all(|n| *n == per_producer),
            "messages missing: {:?}",
            self.next
        );
    }
}

fn run_with<P, C>(producers: usize, per_producer: u64, make: impl FnOnce() -> (P, C)) -> Duration
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
    while checker.received < total {
        consume(&mut checker);
    }
    let elapsed = start.elapsed();
    for h in handles {
        h.join().expect("producer thread panicked");
    }
    checker.finish(per_producer);
    elapsed
}

fn run_refloop(producers: usize, per_producer: u64) -> Duration {
    run_with(producers, per_producer, || {
        let (tx, mut rx) = refloop::queue::channel::<u64>();
        let push = move |_p: usize, m: u64| {
            if tx.push(m).is_err() {
                panic!("refloop queue closed while producers were running");
            }
        };
        let consume = move |c: &mut Checker| {
            let before = c.received;
            for m in rx.drain() {
                c.accept(m);
            }
            if c.received == before {
                // Empty: a real loop would block in epoll_wait until the eventfd fires.
                thread::yield_now();
            }
        };
        (push, consume)
    })
}

fn run_crossbeam(producers: usize, per_producer: u64) -> Duration {
    run_with(producers, per_producer, || {
        let (tx, rx) = crossbeam_channel::unbounded::<u64>();
        let push = move |_p: usize, m: u64| tx.send(m).expect("crossbeam receiver alive");
        let consume = move |c: &mut Checker| c.accept(rx.recv().expect("crossbeam senders alive"));
        (push, consume)
    })
}

fn run_std(producers: usize, per_producer: u64) -> Duration {
    run_with(producers, per_producer, || {
        let (tx, rx) = std::sync::mpsc::channel::<u64>();
        let push = move |_p: usize, m: u64| tx.send(m).expect("std receiver alive");
        let consume = move |c: &mut Checker| c.accept(rx.recv().expect("std senders alive"));
        (push, consume)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_queue_delivers_all_messages_in_order_under_the_harness() {
        for imp in QueueImpl::ALL {
            for producers in [1, 3] {
                // The harness panics if anything is lost or reordered.
                imp.run(producers, 2_000);
            }
        }
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
