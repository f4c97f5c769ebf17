//! A background thread that parks while it has nothing to do, and the callers that wake it:
//! the plugin engine's epoch ticker and the WAL checkpoint thread, so an idle gateway is not
//! woken many times a second.
//!
//! Why a wake-up is never lost: the thread raises `parked` and then looks for work (the
//! `busy` check of [`Parker::park_unless`]); a caller makes work and then looks at `parked`
//! ([`Parker::wake`]). All four are sequentially consistent, so at least one sees the other's
//! write: either the thread sees the work and does not park, or the caller sees the thread
//! parked and unparks it (an unpark that comes before the park makes the park return at once).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, Thread};
use std::time::Duration;

/// One parking thread's flag and handle; shared between it and its wakers.
#[derive(Debug, Default)]
pub struct Parker {
    parked: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Parker {
    /// Makes the calling thread the one this parker parks and wakes. The thread calls it
    /// before it can first park, so every waker that finds it parked can wake it.
    pub fn adopt_current_thread(&self) {
        let _ = self.thread.set(thread::current());
    }

    /// Parks the calling thread for at most `timeout`, unless `busy` answers true once the
    /// flag is up; a [`Parker::wake`] ends the park early.
    pub fn park_unless(&self, timeout: Duration, busy: impl FnOnce() -> bool) {
        self.parked.store(true, Ordering::SeqCst);
        if !busy() {
            thread::park_timeout(timeout);
        }
        self.parked.store(false, Ordering::SeqCst);
    }

    /// Wakes the thread if it is parked; an atomic load when it is not.
    pub fn wake(&self) {
        if self.parked.load(Ordering::SeqCst)
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
    }

    /// Whether the thread is parked now (or about to park).
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }
}
