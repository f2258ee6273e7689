//! The multi-producer, single-consumer send queue.
//!
//! INTERIM: a mutex-protected list with the final public API, so the event loop can be built
//! against it while the CAS-based design (issue 3) is written. It is replaced, not kept.

use std::fmt;
use std::sync::{Arc, Mutex};

/// Whether a push took the queue from empty to non-empty, and so whether the loop must be woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The queue was empty before this push: the consumer must be woken.
    Needed,
    /// The queue already held items: a wake-up is already pending.
    NotNeeded,
}

/// The consumer has closed: the item is handed back.
pub struct Closed<T>(pub T);

impl<T> fmt::Debug for Closed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Closed(..)")
    }
}

impl<T> fmt::Display for Closed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("send queue closed")
    }
}

impl<T: fmt::Debug> std::error::Error for Closed<T> {}

struct Inner<T> {
    items: Vec<T>,
    closed: bool,
}

/// The sending half; clone it for each producer thread.
pub struct Producer<T> {
    inner: Arc<Mutex<Inner<T>>>,
}

impl<T> Clone for Producer<T> {
    fn clone(&self) -> Self {
        Producer { inner: Arc::clone(&self.inner) }
    }
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Producer(..)")
    }
}

/// The receiving half, owned by the loop thread.
pub struct Consumer<T> {
    inner: Arc<Mutex<Inner<T>>>,
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Consumer(..)")
    }
}

/// Creates a send queue.
pub fn channel<T>() -> (Producer<T>, Consumer<T>) {
    let inner = Arc::new(Mutex::new(Inner { items: Vec::new(), closed: false }));
    (Producer { inner: Arc::clone(&inner) }, Consumer { inner })
}

impl<T> Producer<T> {
    /// Pushes `item`.
    ///
    /// # Errors
    ///
    /// Hands `item` back as [`Closed`] once the consumer has closed.
    pub fn push(&self, item: T) -> Result<Wake, Closed<T>> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.closed {
            return Err(Closed(item));
        }
        let wake = if inner.items.is_empty() { Wake::Needed } else { Wake::NotNeeded };
        inner.items.push(item);
        Ok(wake)
    }
}

impl<T> Consumer<T> {
    /// Takes every item pushed so far, in push order.
    pub fn drain(&mut self) -> std::vec::IntoIter<T> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut inner.items).into_iter()
    }

    /// Refuses all later pushes and returns the undelivered items.
    pub fn close(&mut self) -> std::vec::IntoIter<T> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.closed = true;
        std::mem::take(&mut inner.items).into_iter()
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        drop(self.close());
    }
}
