//! A global allocator that lets the framing oracle see what a `decode` call allocates.
//!
//! The oracle cannot otherwise tell a decoder that reserves 4 GiB for a header it is about to
//! reject from one that rejects it first: both return the same error. Installing
//! [`TrackingAlloc`] as the global allocator of a test binary or fuzz target makes the
//! difference visible.
//!
//! Tracking is per thread and only active inside [`measure`], so test harness threads and the
//! oracle's own bookkeeping never count. The state lives in `const`-initialised thread-locals
//! of `Cell<usize>`, which have no destructor, so reading them never allocates and never fails
//! while a thread is alive.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// A global allocator that forwards to [`System`] and records, per thread, the largest single
/// request and the number of requests made inside the oracle's measurements.
///
/// While measuring, it refuses (returns null for) any request above the oracle's limit, so a
/// decoder that tries to reserve gigabytes fails its check instead of exhausting the machine.
///
/// # Examples
///
/// Put this in a test binary or fuzz target to enable the oracle's allocation checks:
///
/// ```
/// #[global_allocator]
/// static ALLOC: refloop::check::framing::TrackingAlloc = refloop::check::framing::TrackingAlloc;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackingAlloc;

thread_local! {
    /// Whether this thread is inside [`measure`].
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    /// The largest request seen while measuring, in bytes.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    /// The number of requests seen while measuring.
    static COUNT: Cell<usize> = const { Cell::new(0) };
    /// Requests above this size are refused while measuring.
    static DENY_ABOVE: Cell<usize> = const { Cell::new(usize::MAX) };
    /// Requests of at most this size are counted but never become the largest (see
    /// `with_slack`).
    static SLACK: Cell<usize> = const { Cell::new(0) };
    /// 0: not probed yet; 1: `TrackingAlloc` is not the global allocator; 2: it is.
    static INSTALLED: Cell<u8> = const { Cell::new(0) };
}

/// Records a request of `size` bytes; returns whether to serve it.
fn note(size: usize) -> bool {
    MEASURING
        .try_with(|measuring| {
            // While a panic is reported (the hook may symbolise a backtrace, which allocates
            // freely), the measured code is no longer running: serve and do not count.
            if !measuring.get() || std::thread::panicking() {
                return true;
            }
            if size > SLACK.with(Cell::get) {
                LARGEST.with(|largest| largest.set(largest.get().max(size)));
            }
            COUNT.with(|count| count.set(count.get() + 1));
            DENY_ABOVE.with(|deny| size <= deny.get())
        })
        .unwrap_or(true)
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees are ours; refusing a request by returning null is allowed by the
// `GlobalAlloc` contract, and the bookkeeping in `note` never allocates or unwinds.
unsafe impl GlobalAlloc for TrackingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract for `layout`, which is
        // exactly `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: as for `alloc`, the contracts are identical.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !note(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` came from `System` with `layout`, and the caller upholds `realloc`'s
        // contract for `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// What the calls inside one measurement (see [`measure_allocations`](super::measure_allocations))
/// asked of the allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Measurement {
    /// The largest single request, in bytes (refused ones included).
    pub largest_request: usize,
    /// The number of requests (allocations and reallocations).
    pub requests: usize,
}

/// Runs `f` with tracking on; refuses requests above `deny_above` bytes while it runs.
///
/// Returns `None` for the measurement when [`TrackingAlloc`] is not the global allocator.
pub fn measure<R>(deny_above: usize, f: impl FnOnce() -> R) -> (R, Option<Measurement>) {
    if !is_installed() {
        return (f(), None);
    }
    LARGEST.with(|c| c.set(0));
    COUNT.with(|c| c.set(0));
    DENY_ABOVE.with(|c| c.set(deny_above));
    let guard = Measuring::start();
    let result = f();
    drop(guard);
    let measurement = Measurement {
        largest_request: LARGEST.with(Cell::get),
        requests: COUNT.with(Cell::get),
    };
    (result, Some(measurement))
}

/// Runs `f` with tracking paused, then resumes it if it was on.
///
/// For bookkeeping that stands for the event loop rather than the framing under test: the
/// tokio-util adapter copies newly read bytes into the codec's own buffer inside `decode`, which
/// a loop does in its read path, so that copy must not count against the codec.
#[cfg(feature = "tokio-codec")]
pub(crate) fn unmeasured<R>(f: impl FnOnce() -> R) -> R {
    let was = MEASURING.with(|m| m.replace(false));
    let result = f();
    MEASURING.with(|m| m.set(was));
    result
}

/// Runs `f` inside the enclosing measurement, except that requests of at most `slack` bytes do
/// not become its largest request (they are still counted, and still refused above the limit).
///
/// For the tokio-util adapter: a codec's fixed bookkeeping (a shared `BytesMut` header, a
/// boxed `io::Error`) and regrowing the buffer the adapter's reads gave it are not the
/// peer-driven reservations the allocation bound is about.
#[cfg(feature = "tokio-codec")]
pub(crate) fn with_slack<R>(slack: usize, f: impl FnOnce() -> R) -> R {
    let was = SLACK.with(|s| s.replace(slack));
    let result = f();
    SLACK.with(|s| s.set(was));
    result
}

/// Whether [`TrackingAlloc`] is this program's global allocator.
pub fn is_installed() -> bool {
    match INSTALLED.with(Cell::get) {
        1 => false,
        2 => true,
        _ => {
            COUNT.with(|c| c.set(0));
            DENY_ABOVE.with(|c| c.set(usize::MAX));
            let guard = Measuring::start();
            drop(std::hint::black_box(Box::new(std::hint::black_box(0u64))));
            drop(guard);
            let installed = COUNT.with(Cell::get) > 0;
            INSTALLED.with(|c| c.set(if installed { 2 } else { 1 }));
            installed
        }
    }
}

/// Turns tracking on for this thread until dropped, even if the measured code unwinds.
struct Measuring;

impl Measuring {
    fn start() -> Self {
        MEASURING.with(|m| m.set(true));
        Measuring
    }
}

impl Drop for Measuring {
    fn drop(&mut self) {
        MEASURING.with(|m| m.set(false));
        DENY_ABOVE.with(|c| c.set(usize::MAX));
    }
}
