//! The std/loom facade: every atomic, `UnsafeCell`, `Arc` and thread in refloop comes from here.
//!
//! Under `cfg(loom)` these are loom's model-checked types; otherwise they are std's.
//! Code written against this module runs unchanged as a plain multi-threaded program and as a
//! loom model, which is how the same check bodies in [`check::queue`](crate::check::queue)
//! serve both the stress tests and the loom models in `model/`.
//!
//! # What the facade adds
//!
//! - [`cell::UnsafeCell`] has loom's closure API (`with`, `with_mut`) in both builds, so that loom
//!   sees every access to item storage and can report a data race when an ordering is too weak.
//! - [`spin_loop`] is a CPU spin hint under std and a yield to loom's scheduler under loom, so a
//!   model never spins forever on a value only another thread can change.
//! - [`compare_exchange_weak`] covers loom's blind spot: loom never makes a weak CAS fail
//!   spuriously, yet real hardware (LL/SC machines such as ARM) does.
//!   Under `cfg(loom)` and in debug builds the facade can inject spurious failures on a
//!   schedule chosen with [`spurious::inject`]; in release builds it is the plain std call.
//! - [`LeakTrack`] is `loom::alloc::Track<()>` under loom, so a model fails when an allocation
//!   that carries one is never freed, and a zero-sized type otherwise.

/// Atomic types and `Ordering`, from loom under `cfg(loom)` and from std otherwise.
pub mod atomic {
    #[cfg(loom)]
    pub use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
    #[cfg(not(loom))]
    pub use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
}

/// Reference counting: loom's `Arc` (which checks for leaks) under `cfg(loom)`, std's otherwise.
#[cfg(loom)]
pub use loom::sync::Arc;
#[cfg(not(loom))]
pub use std::sync::Arc;

/// Locks and condition variables: loom's under `cfg(loom)` (so a model sees every lock, and a
/// wait nobody can end is reported as a deadlock), std's otherwise.
#[cfg(loom)]
pub use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub use std::sync::{Condvar, Mutex, MutexGuard};

/// Threads: loom's modelled threads under `cfg(loom)`, std's otherwise.
pub mod thread {
    #[cfg(loom)]
    pub use loom::thread::{spawn, yield_now, JoinHandle};
    #[cfg(not(loom))]
    pub use std::thread::{spawn, yield_now, JoinHandle};
}

/// An `UnsafeCell` with loom's closure API.
pub mod cell {
    #[cfg(loom)]
    pub use loom::cell::UnsafeCell;

    /// `std::cell::UnsafeCell` behind loom's `with`/`with_mut` API.
    ///
    /// The closures receive raw pointers; dereferencing them is the caller's `unsafe`, argued at
    /// the call site.
    #[cfg(not(loom))]
    #[derive(Debug, Default)]
    #[repr(transparent)]
    pub struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    #[cfg(not(loom))]
    impl<T> UnsafeCell<T> {
        /// Wraps `value`.
        #[inline(always)]
        pub const fn new(value: T) -> Self {
            UnsafeCell(std::cell::UnsafeCell::new(value))
        }

        /// Calls `f` with a shared raw pointer to the contents.
        #[inline(always)]
        pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        /// Calls `f` with a mutable raw pointer to the contents.
        #[inline(always)]
        pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

/// Waits politely inside a spin loop.
///
/// Under std this is [`std::hint::spin_loop`]; under loom it yields to the scheduler, which loom
/// needs in order to run the thread that will end the wait.
#[inline(always)]
pub fn spin_loop() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// A leak detector for one allocation: `loom::alloc::Track<()>` under loom, zero-sized otherwise.
///
/// Put one in a heap object; if the object is never dropped, loom fails the execution with a
/// leak report.
#[derive(Debug)]
pub struct LeakTrack {
    #[cfg(loom)]
    _track: loom::alloc::Track<()>,
}

impl LeakTrack {
    /// Starts tracking.
    #[inline(always)]
    // `Default` would hide the side effect under loom: creating one registers an allocation.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        LeakTrack {
            #[cfg(loom)]
            _track: loom::alloc::Track::new(()),
        }
    }
}

/// `AtomicUsize::compare_exchange_weak`, with spurious failures injected on request.
///
/// In release builds without `cfg(loom)` this is exactly the std call.
/// Under `cfg(loom)` and in debug builds, when the calling thread has asked for it with
/// [`spurious::inject_every`], every `n`-th call fails without trying, returning the current
/// value as a real spurious failure does.
///
/// # Errors
///
/// Returns the value found, as `compare_exchange_weak` does, when the exchange did not happen.
#[inline(always)]
pub fn compare_exchange_weak(
    atomic: &atomic::AtomicUsize,
    current: usize,
    new: usize,
    success: atomic::Ordering,
    failure: atomic::Ordering,
) -> Result<usize, usize> {
    #[cfg(any(loom, debug_assertions))]
    if spurious::should_fail() {
        return Err(atomic.load(failure));
    }
    atomic.compare_exchange_weak(current, new, success, failure)
}

/// Control of spurious weak-CAS failures (active under `cfg(loom)` and in debug builds).
///
/// The schedule is per OS thread.
/// loom runs every modelled thread of one model on the test's OS thread, so under loom one call
/// at the start of each execution covers the whole model; the count restarts with each call,
/// which keeps every execution deterministic, as loom requires.
/// A stress test calls it on each producer thread.
pub mod spurious {
    #[cfg(any(loom, debug_assertions))]
    use std::cell::Cell;

    #[cfg(any(loom, debug_assertions))]
    std::thread_local! {
        static PERIOD: Cell<u32> = const { Cell::new(0) };
        static CALLS: Cell<u32> = const { Cell::new(0) };
        static INJECTED: Cell<u64> = const { Cell::new(0) };
    }

    /// Makes every `period`-th weak CAS on this OS thread fail spuriously; `0` turns it off.
    ///
    /// Returns `false` when injection is compiled out (release builds without `cfg(loom)`), so a
    /// test can report honestly that nothing was injected.
    pub fn inject_every(period: u32) -> bool {
        inject(period, 0)
    }

    /// Like [`inject_every`], shifted by `phase`: the calls that fail are those numbered
    /// `period - phase`, `2 * period - phase`, and so on (counting from 1).
    ///
    /// Running a model once for each phase in `0..period` makes every weak CAS of every
    /// execution fail in one of the runs, which turns the injection into a branch loom
    /// explores.
    pub fn inject(period: u32, phase: u32) -> bool {
        #[cfg(any(loom, debug_assertions))]
        {
            PERIOD.with(|p| p.set(period));
            CALLS.with(|c| c.set(if period == 0 { 0 } else { phase % period }));
            true
        }
        #[cfg(not(any(loom, debug_assertions)))]
        {
            let _ = (period, phase);
            false
        }
    }

    /// How many spurious failures were injected on this OS thread so far.
    pub fn injected() -> u64 {
        #[cfg(any(loom, debug_assertions))]
        {
            INJECTED.with(Cell::get)
        }
        #[cfg(not(any(loom, debug_assertions)))]
        {
            0
        }
    }

    #[cfg(any(loom, debug_assertions))]
    #[inline]
    pub(super) fn should_fail() -> bool {
        let period = PERIOD.with(Cell::get);
        if period == 0 {
            return false;
        }
        let n = CALLS.with(|c| {
            let n = c.get().wrapping_add(1);
            c.set(n);
            n
        });
        let fail = n.is_multiple_of(period);
        if fail {
            INJECTED.with(|i| i.set(i.get() + 1));
        }
        fail
    }
}
