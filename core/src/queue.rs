//! The multi-producer, single-consumer send queue: any thread sends, only the loop thread drains.
//!
//! # Algorithm
//!
//! A list of blocks of slots whose positions producers claim with one compare-and-swap, drained
//! by a consumer that takes everything at once and never waits for a producer.
//! It is the "unbounded list" shape of crossbeam-channel (`flavors/list.rs`) and tokio
//! (`sync/mpsc/list.rs`), cut down to one consumer that never pops item by item, the way
//! cordyceps' `TransferStack` (a Treiber push plus a take-all) never pops:
//!
//! - The **tail word** packs the next free position with a `CLOSED` flag.
//!   A producer claims position `p` with one CAS of the tail word from `p` to `p + 1`.
//!   Only producers write it while the queue is open: the consumer never touches it to drain,
//!   and writes it once, to close.
//! - Positions map onto blocks of `BLOCK_CAP` slots; position `p` lives in slot `p % LAP` of its
//!   block, where `LAP = BLOCK_CAP + 1`.
//!   Offset `BLOCK_CAP` of every lap is a sentinel that holds no item: the producer that claims a
//!   block's last slot links the next block and then steps the tail over the sentinel; other
//!   producers wait at the sentinel for that short step.
//! - The producer writes its item into its slot and publishes it by swapping the slot's
//!   **stamp** to "published at `p`" with `Release`; the swap returns the stamp it replaced.
//! - [`Consumer::drain`] reads published slots in position order, which is the order in which
//!   the pushes' CASes were linearised, so no reversal pass is needed.
//!   It goes by the stamps alone: at the first position whose stamp is not "published", claimed
//!   or not yet claimed, it does not wait and does not look at the tail word: it stamps that
//!   slot "waited on at `p`" (one CAS, which fails only if the item was published meanwhile,
//!   and then it reads it) and stops.
//!   The push of position `p`, whenever it comes, finds that stamp in its publishing swap and
//!   returns [`Wake::Needed`]; every other push finds an older stamp and returns
//!   [`Wake::NotNeeded`].
//!   So the consumer never waits for a producer that was preempted mid-push, the stamp of the
//!   slot the next push writes anyway is the queue's "empty" mark, and every batch end is
//!   covered by exactly one wake-up: `Needed` goes to the first item of each batch.
//!   A new queue starts with slot 0 stamped "waited on at 0".
//! - [`Consumer::close`] is `fetch_or(CLOSED)` on the tail word: every later push fails with
//!   [`Closed`].
//!   `close` returns every published item below the closing position; a slot still in flight
//!   is stamped "abandoned", and its producer takes the item back as [`Closed`].
//! - Blocks are reused: the consumer parks each fully read block in a one-block `spare` cache,
//!   and the producer that links the next block takes it from there instead of allocating.
//!
//! There is no per-item pop and no per-item allocation, so there is no ABA problem: positions
//! only grow, stamps name their position, and a block is reused only after every slot in it
//! was read.
//!
//! # Why the empty mark lives in a slot
//!
//! An earlier version kept an `EMPTY` flag in the tail word: every drain loaded the tail word to
//! learn how far to read, and set the flag with a CAS at the end of every batch, and the next
//! push's claim cleared it.
//! With one producer and a consumer that keeps up, the consumer touched the producers' hottest
//! line at nearly every push, and one producer against a spinning consumer ran at 0.43× the
//! speed of crossbeam-channel's `try_iter` (1.62× once the mark moved into the slot; see
//! BENCHMARKS.md, "Send queue: one producer against a spinning consumer").
//! The slot the mark now lives in is the line that the next push must write anyway, and the
//! tail word is the producers' alone until `close`.
//!
//! # Progress
//!
//! A push is lock-free except at a block boundary, where it waits for the one producer that is
//! linking the next block (a few instructions).
//! The consumer is wait-free: it never waits for a producer.
//!
//! # Examples
//!
//! ```
//! use refloop::queue::{channel, Wake};
//!
//! let (tx, mut rx) = channel();
//! assert_eq!(tx.push("hello"), Ok(Wake::Needed));
//! assert_eq!(tx.push("world"), Ok(Wake::NotNeeded));
//! assert_eq!(rx.drain().collect::<Vec<_>>(), ["hello", "world"]);
//! assert_eq!(tx.push("again"), Ok(Wake::Needed));
//! assert_eq!(rx.close().collect::<Vec<_>>(), ["again"]);
//! assert_eq!(tx.push("late").unwrap_err().0, "late");
//! ```
#![allow(unsafe_code)]

use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ptr;

use crate::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use crate::sync::cell::UnsafeCell;
use crate::sync::{self, Arc, LeakTrack};

/// Item slots per block; small under loom, so the models reach block boundaries and reuse.
#[cfg(not(loom))]
const BLOCK_CAP: usize = 31;
#[cfg(loom)]
const BLOCK_CAP: usize = 2;

/// Positions per block: the slots plus the sentinel offset `BLOCK_CAP`.
const LAP: usize = BLOCK_CAP + 1;

/// The encoding of the tail word.
///
/// `tail = position << SHIFT | CLOSED`, where
/// - `position` counts every position ever claimed, sentinels included;
/// - `CLOSED` is set once, by the consumer, and makes every later push fail.
struct Tail;

impl Tail {
    const CLOSED: usize = 1;
    const SHIFT: u32 = 1;
    const ONE: usize = 1 << Self::SHIFT;
}

/// Whether a push took the queue from empty to non-empty, and so whether the loop must be woken.
///
/// The queue is empty when every item pushed before has been handed out by
/// [`Consumer::drain`] or [`Consumer::close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The queue was empty before this push: the consumer must be woken.
    Needed,
    /// The queue already held items: a wake-up is already pending for them.
    NotNeeded,
}

/// The consumer has closed: the item is handed back, never dropped.
#[derive(PartialEq, Eq)]
pub struct Closed<T>(pub T);

impl<T: fmt::Debug> fmt::Debug for Closed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Closed").field(&self.0).finish()
    }
}

impl<T> fmt::Display for Closed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("send queue closed")
    }
}

impl<T: fmt::Debug> std::error::Error for Closed<T> {}

impl<T> Closed<T> {
    /// The item that was not sent.
    pub fn into_inner(self) -> T {
        self.0
    }
}

/// Creates a send queue: a [`Producer`] to clone for each sending thread, and its [`Consumer`].
pub fn channel<T>() -> (Producer<T>, Consumer<T>) {
    let (raw_tx, raw_rx) = mutant::channel::<T, { mutant::SOUND }>();
    (Producer { raw: raw_tx }, Consumer { raw: raw_rx })
}

/// The sending half; clone it for each producer thread.
pub struct Producer<T> {
    raw: mutant::Producer<T, { mutant::SOUND }>,
}

impl<T> Producer<T> {
    /// Appends `item` to the queue.
    ///
    /// Returns [`Wake::Needed`] when this push found the queue empty: the caller must then wake
    /// the consumer (for the event loop, write the eventfd).
    /// [`Wake::NotNeeded`] means an earlier push's wake-up is still pending.
    ///
    /// # Errors
    ///
    /// Hands `item` back as [`Closed`] once the consumer has closed or been dropped.
    ///
    /// # Examples
    ///
    /// A sender wakes the loop only on the push that needs it:
    ///
    /// ```
    /// use refloop::queue::{channel, Wake};
    ///
    /// let (tx, rx) = channel();
    /// let mut wake_ups = 0;
    /// for message in ["a", "b", "c"] {
    ///     match tx.push(message) {
    ///         Ok(Wake::Needed) => wake_ups += 1, // The loop would write its eventfd here.
    ///         Ok(Wake::NotNeeded) => {}
    ///         Err(closed) => panic!("{:?} came back", closed.into_inner()),
    ///     }
    /// }
    /// assert_eq!(wake_ups, 1);
    /// drop(rx);
    /// assert!(tx.push("late").is_err());
    /// ```
    #[inline]
    pub fn push(&self, item: T) -> Result<Wake, Closed<T>> {
        self.raw.push(item)
    }

    /// Whether the consumer has closed (or been dropped), so that every push fails.
    pub fn is_closed(&self) -> bool {
        self.raw.is_closed()
    }
}

impl<T> Clone for Producer<T> {
    fn clone(&self) -> Self {
        Producer {
            raw: self.raw.clone(),
        }
    }
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// The receiving half, owned by the loop thread.
///
/// Dropping it closes the queue and drops every undelivered item.
pub struct Consumer<T> {
    raw: mutant::Consumer<T, { mutant::SOUND }>,
}

impl<T> Consumer<T> {
    /// Takes the items pushed so far; the iterator yields them in push order.
    ///
    /// Push order is the order in which the pushes' CASes were linearised, so each producer's
    /// items come out in the order that producer pushed them.
    ///
    /// - The iterator ends at the first position whose item is not written yet: either no push
    ///   has claimed it, or its push has claimed it but its thread was preempted before writing
    ///   the item (the consumer never waits for a producer).
    ///   It then marks that position, so the push that writes it returns [`Wake::Needed`], and
    ///   the next drain yields its item and every one behind it.
    ///   So an item whose push returned before the call is yielded now, unless an earlier push
    ///   is still in flight, in which case the in-flight push's wake-up covers it.
    /// - After [`Consumer::close`], it yields nothing.
    /// - Items it has not yielded when dropped stay queued, and the queue then counts as
    ///   non-empty: a consumer that stops early (to bound its work) must come back without a
    ///   wake-up.
    ///
    /// # Examples
    ///
    /// ```
    /// use refloop::queue::{channel, Wake};
    ///
    /// let (tx, mut rx) = channel();
    /// for i in 0..100 {
    ///     tx.push(i).unwrap();
    /// }
    /// // Take at most 10 now, as a loop with a per-turn budget would.
    /// assert!(rx.drain().take(10).eq(0..10));
    /// // The rest is still queued, so a push rides on no wake-up: come back by yourself.
    /// assert_eq!(tx.push(100), Ok(Wake::NotNeeded));
    /// assert!(rx.drain().eq(10..=100));
    /// assert_eq!(tx.push(101), Ok(Wake::Needed));
    /// ```
    #[inline]
    pub fn drain(&mut self) -> Drain<'_, T> {
        Drain {
            raw: self.raw.drain(),
        }
    }

    /// Refuses every later push and returns the items not yet delivered, in push order.
    ///
    /// Calling it again returns nothing more.
    pub fn close(&mut self) -> Drain<'_, T> {
        Drain {
            raw: self.raw.close(),
        }
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer").finish_non_exhaustive()
    }
}

/// The items taken by [`Consumer::drain`] or [`Consumer::close`], in push order.
pub struct Drain<'a, T> {
    raw: mutant::Drain<'a, T, { mutant::SOUND }>,
}

impl<T> Iterator for Drain<'_, T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        self.raw.next()
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.raw.size_hint()
    }
}

impl<T> fmt::Debug for Drain<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drain").finish_non_exhaustive()
    }
}

/// The encoding of a slot's stamp.
///
/// `stamp = position << SHIFT | tag`, where the tag says who wrote it last:
/// - `PUBLISHED`: the producer of `position` wrote its item;
/// - `WAITED`: a drain reached `position` before its item was published (claimed or not) and
///   stopped there, which is the queue's "empty" mark; the producer of `position` will see it
///   in its publishing swap and return [`Wake::Needed`];
/// - `ABANDONED`: the consumer closed while `position` was in flight; the producer will take
///   its item back as [`Closed`].
///
/// A fresh slot holds 0 and a reused one holds a previous lap's stamp; neither names the
/// position now being claimed, so no reset pass is needed.
struct Stamp;

impl Stamp {
    const PUBLISHED: usize = 1;
    const WAITED: usize = 2;
    const ABANDONED: usize = 3;
    const SHIFT: u32 = 2;

    #[inline(always)]
    fn of(pos: usize, tag: usize) -> usize {
        (pos << Self::SHIFT) | tag
    }
}

/// One item slot.
struct Slot<T> {
    /// See [`Stamp`].
    stamp: AtomicUsize,
    /// The item: written by the producer of the slot's position before it publishes, read once
    /// by the consumer after it sees the stamp (or by the producer itself when abandoned).
    value: UnsafeCell<MaybeUninit<T>>,
}

/// A block of slots; blocks form a singly linked list from the consumer's block to the tail's.
struct Block<T> {
    /// The next block, linked by the producer that claims this block's last slot.
    next: AtomicPtr<Block<T>>,
    slots: [Slot<T>; BLOCK_CAP],
    /// Under loom, a leak report if the block is never freed.
    _track: LeakTrack,
}

impl<T> Block<T> {
    fn alloc() -> *mut Block<T> {
        Box::into_raw(Box::new(Block {
            next: AtomicPtr::new(ptr::null_mut()),
            slots: std::array::from_fn(|_| Slot {
                stamp: AtomicUsize::new(0),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            }),
            _track: LeakTrack::new(),
        }))
    }

    /// Frees a block without dropping any item in it.
    ///
    /// # Safety
    ///
    /// - `block` came from [`Block::alloc`] and is not freed yet.
    /// - No other thread will access it again.
    unsafe fn free(block: *mut Block<T>) {
        // SAFETY: by the contract, `block` is a live `Box` allocation that nobody else uses; its
        // slots hold `MaybeUninit`, so no item is dropped here.
        drop(unsafe { Box::from_raw(block) });
    }
}

/// Pads and aligns a value to its own cache-line pair, so producers' and the consumer's hot
/// words do not share a line.
#[repr(align(128))]
struct CachePadded<T>(T);

/// The producers' hot words, on one line: both are read by every push.
struct TailWords<T> {
    /// The tail word; see [`Tail`] for the encoding.
    word: AtomicUsize,
    /// The block that holds the tail position (or, at a sentinel, the block being finished).
    block: AtomicPtr<Block<T>>,
}

struct Shared<T> {
    tail: CachePadded<TailWords<T>>,
    /// A fully read block parked by the consumer for the next producer that links a block.
    spare: CachePadded<AtomicPtr<Block<T>>>,
    /// The block list still to free, handed over by the dropped consumer: producers may still
    /// touch abandoned slots in it until they are gone.
    retired: AtomicPtr<Block<T>>,
    /// The queue owns `T`s and hands them between threads: `Send`/`Sync` are decided by hand.
    _items: PhantomData<*mut T>,
}

impl<T> Shared<T> {
    /// Takes the spare block, or allocates one.
    fn take_spare(&self) -> *mut Block<T> {
        // Acquire: pairs with the Release half of the swap in `park_spare`, so the parking
        // thread's reset of `next` (and the consumer's last reads) happen before our use.
        let block = self.spare.0.swap(ptr::null_mut(), Ordering::Acquire);
        if block.is_null() {
            Block::alloc()
        } else {
            block
        }
    }

    /// Parks an unused block in the spare cache, freeing whatever was there.
    ///
    /// # Safety
    ///
    /// - `block` came from [`Block::alloc`], is exclusively owned by the caller and holds no
    ///   item; no other thread will touch it until it is taken from the cache.
    unsafe fn park_spare(&self, block: *mut Block<T>) {
        // SAFETY: exclusively owned by the contract.
        // Relaxed: published by the Release swap below.
        unsafe { (*block).next.store(ptr::null_mut(), Ordering::Relaxed) };
        // AcqRel: the Release half pairs with `take_spare`'s Acquire, publishing the reset; the
        // Acquire half pairs with the Release half of the swap that parked the block we get
        // back, so that we own it before freeing it.
        let old = self.spare.0.swap(block, Ordering::AcqRel);
        if !old.is_null() {
            // SAFETY: the swap removed `old` from the cache, so we are its only owner.
            unsafe { Block::free(old) };
        }
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // `&mut self`: every producer and the consumer are gone, so every block is ours.
        // Relaxed: the last `Arc` drop synchronises with every earlier one.
        let mut block = self.retired.load(Ordering::Relaxed);
        while !block.is_null() {
            // SAFETY: `block` is in the retired list, live until freed here.
            // Relaxed: as above.
            let next = unsafe { (*block).next.load(Ordering::Relaxed) };
            // SAFETY: nobody else is left to touch it; the consumer dropped every item in it.
            unsafe { Block::free(block) };
            block = next;
        }
        // Relaxed: as above.
        let spare = self.spare.0.swap(ptr::null_mut(), Ordering::Relaxed);
        if !spare.is_null() {
            // SAFETY: nobody is left to touch the cache.
            unsafe { Block::free(spare) };
        }
    }
}

/// One step of waiting for another producer's short critical step: spin a little, then yield,
/// so that a waiter does not burn the core the other thread needs (the machine may be
/// oversubscribed).
#[inline]
fn backoff(spins: &mut u32) {
    if *spins < 32 {
        *spins += 1;
        sync::spin_loop();
    } else {
        sync::thread::yield_now();
    }
}

/// One step of exponential backoff after losing the tail-word CAS to another producer: spin
/// 1, 2, 4, ... up to 64 hints. Under loom it does nothing: the wait has no memory effect, and
/// loom explores every interleaving without it.
#[inline]
fn contention_backoff(step: &mut u32) {
    #[cfg(not(loom))]
    {
        for _ in 0..1u32 << (*step).min(6) {
            sync::spin_loop();
        }
        *step += 1;
    }
    #[cfg(loom)]
    let _ = step;
}

/// The queue's implementation, generic over a set of deliberate bugs.
///
/// The public types use [`SOUND`](mutant::SOUND), under which every bug check is a constant
/// `false` that the compiler removes.
/// The other flags exist so the model checks in `model/` and the sanitizer runs can show that
/// they reject a wrong queue; they are not part of the supported API.
#[doc(hidden)]
pub mod mutant {
    use super::*;

    /// No bugs: the shipped queue.
    pub const SOUND: u8 = 0;
    /// Publishes an item with `Relaxed` instead of `Release`: a data race on the item.
    pub const RELAXED_PUBLISH: u8 = 1 << 0;
    /// Yields each batch newest first, as a Treiber take-all that forgets to reverse would.
    pub const LIFO_DRAIN: u8 = 1 << 1;
    /// Closes with a load and a store instead of one `fetch_or`: a racing push is lost.
    pub const CLOSE_LOSES_RACING_PUSH: u8 = 1 << 2;
    /// Marks a slot waited-on with a load and a separate store instead of one CAS: a publish
    /// between them is not ordered against the mark, so its push may miss the mark (and skip
    /// its wake-up) or the mark may overwrite its item.
    pub const SPLIT_EMPTY_MARK: u8 = 1 << 3;
    /// Treats a weak CAS that failed with the tail unchanged as a close in progress, handing
    /// the item back: only a spurious failure triggers it.
    pub const SPURIOUS_FAILURE_MEANS_CLOSED: u8 = 1 << 4;
    /// Publishes with a load of the stamp and a separate store instead of one swap: a drain's
    /// mark between them is not ordered against the publish, so the push may miss the mark (and
    /// skip its wake-up) or the mark may overwrite its item.
    pub const SPLIT_PUBLISH_CHECK: u8 = 1 << 5;

    /// [`super::channel`] with the bugs in `V`.
    pub fn channel<T, const V: u8>() -> (Producer<T, V>, Consumer<T, V>) {
        let first = Block::<T>::alloc();
        // The queue starts empty: marked as a drain that stopped at position 0 would mark it.
        // SAFETY: `first` was just allocated and nobody else has it yet.
        // Relaxed: the `Arc` that hands the block to other threads publishes it.
        unsafe {
            (*first).slots[0]
                .stamp
                .store(Stamp::of(0, Stamp::WAITED), Ordering::Relaxed)
        };
        let shared = Arc::new(Shared {
            tail: CachePadded(TailWords {
                word: AtomicUsize::new(0),
                block: AtomicPtr::new(first),
            }),
            spare: CachePadded(AtomicPtr::new(ptr::null_mut())),
            retired: AtomicPtr::new(ptr::null_mut()),
            _items: PhantomData,
        });
        (
            Producer {
                shared: Arc::clone(&shared),
            },
            Consumer {
                shared,
                head: 0,
                block: first,
                closed_from: ptr::null_mut(),
            },
        )
    }

    /// The sending half with the bugs in `V`.
    pub struct Producer<T, const V: u8> {
        shared: Arc<Shared<T>>,
    }

    // SAFETY: a producer only moves `T`s into the queue (and back out of its own abandoned
    // slot), never giving out a reference to one, so sending or sharing it between threads
    // needs `T: Send` and nothing more; all shared state is atomics, or slots handed over by
    // the stamp protocol.
    unsafe impl<T: Send, const V: u8> Send for Producer<T, V> {}
    // SAFETY: as for `Send`: `push` takes `&self`, and concurrent pushes are what the queue is
    // built for.
    unsafe impl<T: Send, const V: u8> Sync for Producer<T, V> {}

    impl<T, const V: u8> Clone for Producer<T, V> {
        fn clone(&self) -> Self {
            Producer {
                shared: Arc::clone(&self.shared),
            }
        }
    }

    impl<T, const V: u8> fmt::Debug for Producer<T, V> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Producer")
                .field("bugs", &V)
                .finish_non_exhaustive()
        }
    }

    impl<T, const V: u8> Producer<T, V> {
        /// [`super::Producer::push`].
        ///
        /// # Errors
        ///
        /// Hands `item` back as [`Closed`] once the consumer has closed or been dropped.
        #[inline]
        pub fn push(&self, item: T) -> Result<Wake, Closed<T>> {
            let shared = &*self.shared;
            // A block for linking, taken only when this push may claim a block's last slot.
            let mut spare: *mut Block<T> = ptr::null_mut();
            let mut spins = 0u32;
            let mut contended = 0u32;
            // Acquire: pairs with the Release `fetch_add` of a linking producer, so the tail
            // block it stored is visible to the load below.
            let mut tail = shared.tail.0.word.load(Ordering::Acquire);
            let claimed = loop {
                // Step 1: a closed queue hands the item back.
                if tail & Tail::CLOSED != 0 {
                    break None;
                }
                let pos = tail >> Tail::SHIFT;
                let offset = pos % LAP;
                // Step 2: at the sentinel, another push is linking the next block: wait.
                if offset == BLOCK_CAP {
                    backoff(&mut spins);
                    // Acquire: as for the first load.
                    tail = shared.tail.0.word.load(Ordering::Acquire);
                    continue;
                }
                // Step 3: about to claim a block's last slot: have the next block ready first,
                // so the others wait at the sentinel as briefly as possible.
                if offset + 1 == BLOCK_CAP && spare.is_null() {
                    spare = shared.take_spare();
                }
                // Acquire: pairs with the Release store of the linking producer, so the block's
                // initialisation (or its recycling) is visible.
                let block = shared.tail.0.block.load(Ordering::Acquire);
                // Step 4: claim `pos`.
                let new = tail + Tail::ONE;
                // Acquire on success and failure: the value read may be a linking producer's
                // `fetch_add` (Release), after which `block` must be the new tail block.
                match sync::compare_exchange_weak(
                    &shared.tail.0.word,
                    tail,
                    new,
                    Ordering::Acquire,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break Some((pos, offset, block)),
                    Err(actual) => {
                        if V & SPURIOUS_FAILURE_MEANS_CLOSED != 0 && actual == tail {
                            break None;
                        }
                        if actual != tail {
                            // Another push won the tail word: wait a moment before retrying,
                            // so the contended cache line is not pulled straight back.
                            contention_backoff(&mut contended);
                        }
                        tail = actual;
                    }
                }
            };
            let Some((pos, offset, block)) = claimed else {
                if !spare.is_null() {
                    // SAFETY: `spare` was taken by us and never linked: ours alone, no item.
                    unsafe { shared.park_spare(spare) };
                }
                return Err(Closed(item));
            };
            if offset + 1 == BLOCK_CAP {
                // Step 5: we own the block's last slot: link the next block, then step the tail
                // over the sentinel.
                let next = std::mem::replace(&mut spare, ptr::null_mut());
                // Release: pairs with the Acquire load of the tail block by later pushes.
                shared.tail.0.block.store(next, Ordering::Release);
                // SAFETY: `block` holds `pos`, which we claimed and have not published, so the
                // consumer cannot have finished with the block: it is live.
                // Release: pairs with the consumer's Acquire load of `next`, which follows its
                // Acquire read of our stamp, published after this.
                unsafe { (*block).next.store(next, Ordering::Release) };
                // Release: pairs with the Acquire tail loads of pushes, which then see the new
                // tail block.
                shared.tail.0.word.fetch_add(Tail::ONE, Ordering::Release);
            } else if !spare.is_null() {
                // SAFETY: `spare` was taken by us and never linked: ours alone, no item.
                unsafe { shared.park_spare(spare) };
            }
            // Step 6: write the item, then publish it through the stamp.
            // SAFETY: `block` holds `pos`: the CAS succeeded on the tail value read before
            // `block` was loaded, positions never repeat, and the tail block changes only when
            // the tail steps over a sentinel.
            let slot = unsafe { &(*block).slots[offset] };
            // SAFETY: until we publish, only we touch the value of the slot for `pos`: the
            // consumer reads it only after seeing our stamp.
            slot.value
                .with_mut(|p| unsafe { p.write(MaybeUninit::new(item)) });
            let publish = if V & RELAXED_PUBLISH != 0 {
                Ordering::Relaxed
            } else {
                // Release: pairs with the consumer's Acquire load (or failed CAS) of the stamp,
                // so the item's bytes are visible before it reads them.
                Ordering::Release
            };
            let before = if V & SPLIT_PUBLISH_CHECK != 0 {
                // Known-bad: a drain can mark the slot between this load and the store.
                // Relaxed: the load pairs with nothing; the store publishes as the swap does.
                let before = slot.stamp.load(Ordering::Relaxed);
                slot.stamp.store(Stamp::of(pos, Stamp::PUBLISHED), publish);
                before
            } else {
                slot.stamp.swap(Stamp::of(pos, Stamp::PUBLISHED), publish)
            };
            if before == Stamp::of(pos, Stamp::WAITED) {
                // The consumer stopped at this slot (a drain ended here, claimed or not): we are
                // the first item of its next batch.
                Ok(Wake::Needed)
            } else if before == Stamp::of(pos, Stamp::ABANDONED) {
                // The consumer closed without our item: take it back. The consumer never
                // touches an abandoned slot's value, and the block lives until we are gone.
                // SAFETY: we wrote the value above and nobody else reads it.
                let item = slot.value.with(|p| unsafe { p.read().assume_init() });
                Err(Closed(item))
            } else {
                // An older lap's stamp, or the fresh block's 0: no drain has stopped here.
                Ok(Wake::NotNeeded)
            }
        }

        /// [`super::Producer::is_closed`].
        pub fn is_closed(&self) -> bool {
            // Relaxed: a snapshot; `push` rechecks under its own CAS.
            self.shared.tail.0.word.load(Ordering::Relaxed) & Tail::CLOSED != 0
        }
    }

    /// The receiving half with the bugs in `V`.
    pub struct Consumer<T, const V: u8> {
        shared: Arc<Shared<T>>,
        /// The next position to read; never a sentinel.
        head: usize,
        /// The block that holds `head`.
        block: *mut Block<T>,
        /// Once closed, the first block not parked, where the list to free starts.
        closed_from: *mut Block<T>,
    }

    // SAFETY: the consumer moves `T`s out of the queue on whichever thread owns it, so it needs
    // `T: Send`; the block pointers are the consumer's alone.
    unsafe impl<T: Send, const V: u8> Send for Consumer<T, V> {}

    impl<T, const V: u8> fmt::Debug for Consumer<T, V> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Consumer")
                .field("bugs", &V)
                .field("head", &self.head)
                .finish_non_exhaustive()
        }
    }

    /// How a [`Drain`] goes on.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Mode {
        /// Reads published slots until the first one that is not, and marks that one.
        Drain,
        /// Reads up to `limit`, the closing position, abandoning slots in flight.
        Close,
        /// The batch is over.
        Done,
    }

    impl<T, const V: u8> Consumer<T, V> {
        /// [`super::Consumer::drain`].
        #[inline]
        pub fn drain(&mut self) -> Drain<'_, T, V> {
            if !self.closed_from.is_null() {
                // Closed: `close` handed out everything, and nothing is pushed any more.
                return self.batch(Mode::Done, self.head);
            }
            // No limit: a drain goes by the stamps alone, never reading the tail word.
            self.batch(Mode::Drain, usize::MAX)
        }

        /// [`super::Consumer::close`].
        pub fn close(&mut self) -> Drain<'_, T, V> {
            let word = &self.shared.tail.0.word;
            let tail = if V & CLOSE_LOSES_RACING_PUSH != 0 {
                let tail = word.load(Ordering::Relaxed);
                word.store(tail | Tail::CLOSED, Ordering::Relaxed);
                tail
            } else {
                // Acquire: pairs with the Release `fetch_add` of a linking producer, so that if
                // the end lies past a sentinel, the `next` link before it is visible even when
                // the last slot before the sentinel is abandoned rather than read.
                word.fetch_or(Tail::CLOSED, Ordering::Acquire)
            };
            if self.closed_from.is_null() {
                self.closed_from = self.block;
            }
            self.batch(Mode::Close, tail >> Tail::SHIFT)
        }

        fn batch(&mut self, mode: Mode, limit: usize) -> Drain<'_, T, V> {
            let mut drain = Drain {
                consumer: self,
                mode,
                limit,
                lifo: Vec::new(),
            };
            if V & LIFO_DRAIN != 0 {
                // Collected in push order and popped from the back: newest first.
                let mut all = Vec::new();
                while let Some(item) = drain.read_next() {
                    all.push(item);
                }
                drain.lifo = all;
            }
            drain
        }

        /// Marks the slot at `head`, whose stamp was `stamp` (not "published"), waited-on: the
        /// push of `head` will return [`Wake::Needed`].
        ///
        /// Returns `true` when marked (or already marked by an earlier drain), `false` when the
        /// item was published meanwhile: it can then be read.
        fn mark_empty(&self, slot: &Slot<T>, stamp: usize) -> bool {
            let waited = Stamp::of(self.head, Stamp::WAITED);
            if stamp == waited {
                // An earlier drain stopped here and nothing came since: a poll of an empty
                // queue writes nothing.
                return true;
            }
            if V & SPLIT_EMPTY_MARK != 0 {
                // Known-bad: a publish can land between the load that gave `stamp` and this
                // store. Relaxed: as the real CAS's success ordering below, it pairs with nothing.
                slot.stamp.store(waited, Ordering::Relaxed);
                return true;
            }
            // Relaxed on success: the mark hands no data to the producer, whose swap just sees
            // it; Acquire on failure: the producer published meanwhile (pairs with its Release
            // swap), and we go on to read its item.
            match slot
                .stamp
                .compare_exchange(stamp, waited, Ordering::Relaxed, Ordering::Acquire)
            {
                Ok(_) => true,
                Err(now) => {
                    debug_assert_eq!(
                        now,
                        Stamp::of(self.head, Stamp::PUBLISHED),
                        "send queue: stamp of another lap"
                    );
                    false
                }
            }
        }

        /// The slot that holds `head`.
        ///
        /// # Safety
        ///
        /// - `head` is not at a sentinel offset.
        /// - The reference is not used after the consumer parks or retires the block.
        #[inline]
        unsafe fn head_slot<'b>(&self) -> &'b Slot<T> {
            let offset = self.head % LAP;
            debug_assert!(offset < BLOCK_CAP, "send queue: head at a sentinel");
            // SAFETY: the consumer's block is live (it is parked or retired only after the
            // consumer leaves it) and holds `head`; `offset < BLOCK_CAP` by the contract.
            unsafe { &*(*self.block).slots.as_ptr().add(offset) }
        }

        /// Takes the item at `head` out of `slot` and moves past it (and past the sentinel after
        /// a block's last slot, parking the block unless the queue is closing).
        ///
        /// # Safety
        ///
        /// - `slot` is [`Consumer::head_slot`]'s slot for the current `head`.
        /// - Its stamp was seen "published at `head`" by an Acquire load or a failed Acquire CAS.
        #[inline]
        unsafe fn take_head(&mut self, slot: &Slot<T>) -> T {
            // SAFETY: by the contract the item for `head` is written and visible; `head` is
            // read exactly once, as we advance it at once, so we take ownership of the item.
            let item = slot.value.with(|p| unsafe { p.read().assume_init() });
            let offset = self.head % LAP;
            self.head += 1;
            if offset + 1 == BLOCK_CAP {
                let park = self.closed_from.is_null();
                self.step_past_sentinel(park);
            }
            item
        }

        /// Moves from the sentinel at `head` into the next block.
        ///
        /// Called when `next` is known to be linked: right after reading a block's last slot,
        /// or when a close's end lies past the sentinel. Parks the finished block unless the
        /// queue is closing.
        fn step_past_sentinel(&mut self, park: bool) {
            let old = self.block;
            // SAFETY: `old` is the consumer's block, live until parked or retired.
            // Acquire: pairs with the Release store of `next` by the linking producer, which
            // stored it before publishing the last slot (whose stamp we read) and before
            // stepping the tail (whose value `close` read).
            let next = unsafe { (*old).next.load(Ordering::Acquire) };
            assert!(
                !next.is_null(),
                "send queue: block not linked past its last slot"
            );
            self.block = next;
            self.head += 1;
            if park {
                // SAFETY: every slot of `old` was read, so no producer touches it again: later
                // pushes claim positions in `next` or beyond.
                unsafe { self.shared.park_spare(old) };
            }
        }
    }

    impl<T, const V: u8> Drop for Consumer<T, V> {
        fn drop(&mut self) {
            // A loom model that failed is unwinding: touching loom's objects again would panic
            // inside the unwind and abort the test binary, hiding the failure. Leak instead.
            #[cfg(loom)]
            if std::thread::panicking() {
                return;
            }
            // Close, and drop every undelivered item; producers of abandoned slots take theirs
            // back.
            for item in self.close() {
                drop(item);
            }
            // Producers may still touch abandoned slots, so the blocks from where closing began
            // are freed with the shared state, when the last producer is gone.
            // Relaxed: the `Arc` drops order this before `Shared::drop`.
            self.shared
                .retired
                .store(self.closed_from, Ordering::Relaxed);
        }
    }

    /// The batch taken by one `drain` or `close`.
    pub struct Drain<'a, T, const V: u8> {
        consumer: &'a mut Consumer<T, V>,
        mode: Mode,
        /// For a close, the closing position: every position below it is claimed. Unused by a
        /// drain, which goes by the stamps.
        limit: usize,
        /// Under [`LIFO_DRAIN`], the whole batch, newest last, popped from the back.
        lifo: Vec<T>,
    }

    impl<T, const V: u8> fmt::Debug for Drain<'_, T, V> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Drain")
                .field("mode", &self.mode)
                .field("head", &self.consumer.head)
                .field("limit", &self.limit)
                .finish_non_exhaustive()
        }
    }

    impl<T, const V: u8> Drain<'_, T, V> {
        /// Reads the next item of the batch, in position order.
        #[inline]
        fn read_next(&mut self) -> Option<T> {
            match self.mode {
                Mode::Done => None,
                Mode::Drain => self.drain_next(),
                Mode::Close => self.close_next(),
            }
        }

        /// The next item of a drain, or the end of the batch, marked.
        #[inline]
        fn drain_next(&mut self) -> Option<T> {
            let rx = &mut *self.consumer;
            // SAFETY: the queue is open (`drain` returns a finished batch once closed), so
            // `head` is not at a sentinel: the consumer steps past one as soon as it has read
            // the slot before it. The slot is used only before the block is parked below.
            let slot = unsafe { rx.head_slot() };
            // Acquire: pairs with the producer's Release swap of the stamp, so the item's bytes
            // are visible before we read them.
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp != Stamp::of(rx.head, Stamp::PUBLISHED) && rx.mark_empty(slot, stamp) {
                // The push of `head` will see the mark and wake us: the batch ends here.
                self.mode = Mode::Done;
                return None;
            }
            // SAFETY: the stamp says the item for `head` is published, and the Acquire load
            // (or the failed CAS in `mark_empty`) made it visible.
            Some(unsafe { rx.take_head(slot) })
        }

        /// The next item below the closing position; slots in flight are abandoned.
        fn close_next(&mut self) -> Option<T> {
            loop {
                let rx = &mut *self.consumer;
                if rx.head >= self.limit {
                    self.mode = Mode::Done;
                    return None;
                }
                if rx.head % LAP == BLOCK_CAP {
                    // An abandoned last slot left `head` at the sentinel, and the tail has since
                    // been stepped over it (the end is past it), so `next` is linked.
                    let park = rx.closed_from.is_null();
                    rx.step_past_sentinel(park);
                    continue;
                }
                // SAFETY: `head` is not at a sentinel (just above); the slot is used only before
                // the block is retired, which happens when the consumer is dropped.
                let slot = unsafe { rx.head_slot() };
                let published = Stamp::of(rx.head, Stamp::PUBLISHED);
                // Acquire: pairs with the producer's Release swap of the stamp, so the item's
                // bytes are visible before we read them.
                let stamp = slot.stamp.load(Ordering::Acquire);
                if stamp != published {
                    // `head` is claimed (it is below the closing tail) but still in flight.
                    // Relaxed on success: the mark hands no data to the producer, which takes
                    // its own item back; Acquire on failure: the producer published meanwhile
                    // (pairs with its Release swap).
                    match slot.stamp.compare_exchange(
                        stamp,
                        Stamp::of(rx.head, Stamp::ABANDONED),
                        Ordering::Relaxed,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => {
                            // Abandoned: its producer takes the item back. Go on; if this was a
                            // block's last slot, `head` rests on the sentinel until the top of
                            // the loop finds the end past it (its producer may not have linked
                            // the next block yet).
                            rx.head += 1;
                            continue;
                        }
                        Err(now) => {
                            debug_assert_eq!(now, published, "send queue: stamp of another lap");
                        }
                    }
                }
                // SAFETY: the stamp says the item for `head` is published, and the Acquire load
                // (or the failed CAS) made it visible.
                return Some(unsafe { rx.take_head(slot) });
            }
        }
    }

    impl<T, const V: u8> Iterator for Drain<'_, T, V> {
        type Item = T;

        #[inline]
        fn next(&mut self) -> Option<T> {
            if V & LIFO_DRAIN != 0 {
                return self.lifo.pop();
            }
            self.read_next()
        }

        fn size_hint(&self) -> (usize, Option<usize>) {
            if V & LIFO_DRAIN != 0 {
                return (self.lifo.len(), Some(self.lifo.len()));
            }
            match self.mode {
                Mode::Done => (0, Some(0)),
                // A drain goes on while items are published; a close stops at its limit. Slots
                // in flight hold no item for us, so there is no useful lower bound.
                Mode::Drain => (0, None),
                Mode::Close => (0, Some(self.limit.saturating_sub(self.consumer.head))),
            }
        }
    }

    impl<T, const V: u8> Drop for Drain<'_, T, V> {
        fn drop(&mut self) {
            if self.mode != Mode::Drain {
                // Done: the end is covered by the empty mark or a waited-on slot. Close: no
                // wake-up is due any more.
                return;
            }
            let rx = &mut *self.consumer;
            // Stopped early. If the next item is not published, mark its slot now, or its push
            // would find no mark and skip its wake-up; otherwise items are left, and the
            // consumer that stopped early comes back by itself.
            // SAFETY: a drain runs only while the queue is open, so `head` is not at a
            // sentinel (see `drain_next`).
            let slot = unsafe { rx.head_slot() };
            // Acquire: as in `drain_next`.
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp != Stamp::of(rx.head, Stamp::PUBLISHED) {
                // Published meanwhile (`false`): items are left, as above.
                let _ = rx.mark_empty(slot, stamp);
            }
            // Under LIFO_DRAIN, unyielded items are dropped here: the mutant loses them.
        }
    }
}
