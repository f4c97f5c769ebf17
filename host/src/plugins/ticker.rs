//! The epoch ticker: the thread that advances the engine's epoch every [`EPOCH_TICK`], which is
//! what enforces a call's time bound and makes a long call yield (`store::on_tick`).
//!
//! It ticks only while there are calls: after [`IDLE_TICKS`] ticks in which no call began and
//! none ran, it parks until the next call begins ([`EpochTicker::call`] wakes it), so an idle
//! gateway is not woken two hundred times a second. Under load it never parks, and beginning a
//! call costs two atomic additions and a load, no system call. Parked, it still wakes once per
//! [`PARKED_CHECK`] to notice an engine that is gone (and then ends); with no call begun, it
//! parks again at once, without a tick.
//!
//! It cannot miss a call: a call raises `running` before it wakes the ticker, and the ticker
//! looks at `running` once it is marked parked ([`crate::parking`] says why that suffices).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use wasmtime::Engine;

use super::PluginError;
use crate::parking::Parker;

/// How often the epoch advances: the resolution of the time bound, and the longest a call
/// computes before it yields to the other connections of its thread. Under load the ticker
/// never parks, and each tick wakes it on a core that serves requests: at 1 ms the gateway
/// bench's Monoize spent ~5% more CPU per request (74 µs against 71 µs at 32 JSON
/// connections) than at 5 ms. Calls on the request path take microseconds, so no tick
/// happens during almost any of them; only a call that computes for milliseconds meets one.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Ticks without a call after which the ticker parks (100 ms).
pub const IDLE_TICKS: u32 = 20;

/// How often a parked ticker checks that its engine is still there.
pub const PARKED_CHECK: Duration = Duration::from_secs(1);

/// The ticker of one engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EpochTicker {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Calls running now.
    running: AtomicUsize,
    /// Calls begun so far.
    begun: AtomicU64,
    /// The ticker's thread, parked while no call runs.
    parker: Parker,
}

/// Keeps the ticker ticking while it lives: one per call.
#[derive(Debug)]
pub struct Ticking {
    shared: Arc<Shared>,
}

impl Drop for Ticking {
    fn drop(&mut self) {
        self.shared.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EpochTicker {
    /// Starts ticking `engine`'s epoch on a thread that holds only a weak reference to it, so
    /// it ends with the engine.
    pub fn start(engine: &Engine) -> Result<EpochTicker, PluginError> {
        EpochTicker::start_checking_every(engine, PARKED_CHECK)
    }

    /// [`EpochTicker::start`], a parked ticker looking for its engine every `parked_check`.
    fn start_checking_every(
        engine: &Engine,
        parked_check: Duration,
    ) -> Result<EpochTicker, PluginError> {
        let weak = engine.weak();
        let shared = Arc::<Shared>::default();
        let ticker = Arc::clone(&shared);
        thread::Builder::new()
            .name("monoize-epoch".to_owned())
            .spawn(move || {
                ticker.parker.adopt_current_thread();
                let mut quiet_ticks = 0u32;
                let mut begun = ticker.begun.load(Ordering::Relaxed);
                while let Some(engine) = weak.upgrade() {
                    if quiet_ticks >= IDLE_TICKS {
                        // Idle: park until a call begins (or to look for the engine again).
                        drop(engine);
                        ticker.parker.park_unless(parked_check, || {
                            ticker.running.load(Ordering::SeqCst) > 0
                        });
                    } else {
                        engine.increment_epoch();
                        drop(engine);
                        thread::sleep(EPOCH_TICK);
                    }
                    let now_begun = ticker.begun.load(Ordering::Relaxed);
                    if now_begun != begun || ticker.running.load(Ordering::SeqCst) > 0 {
                        begun = now_begun;
                        quiet_ticks = 0;
                    } else {
                        quiet_ticks = quiet_ticks.saturating_add(1);
                    }
                }
            })
            .map_err(|error| {
                PluginError::engine(format!("cannot start the epoch ticker: {error}"))
            })?;
        Ok(EpochTicker { shared })
    }

    /// Marks a call as running until the answer is dropped, waking the ticker if it is parked.
    pub fn call(&self) -> Ticking {
        let shared = &self.shared;
        shared.running.fetch_add(1, Ordering::SeqCst);
        shared.begun.fetch_add(1, Ordering::Relaxed);
        shared.parker.wake();
        Ticking {
            shared: Arc::clone(shared),
        }
    }

    /// Whether the ticker is parked (no call for a while).
    pub fn is_parked(&self) -> bool {
        self.shared.parker.is_parked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn waits_for(mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if done() {
                return true;
            }
            thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn the_ticker_parks_when_idle_and_ticks_while_a_call_runs() {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).unwrap();
        // Parked, it would look again only in an hour: only the call can wake it in time.
        let ticker = EpochTicker::start_checking_every(&engine, Duration::from_secs(3600)).unwrap();
        assert!(waits_for(|| ticker.is_parked()), "idle: parked");
        let call = ticker.call();
        assert!(waits_for(|| !ticker.is_parked()), "a call wakes it");
        // Long past the idle ticks, it runs on while the call does.
        thread::sleep(EPOCH_TICK * IDLE_TICKS * 3);
        assert!(!ticker.is_parked(), "a running call keeps it ticking");
        drop(call);
        assert!(
            waits_for(|| ticker.is_parked()),
            "parked again once the call is over"
        );
        // Looking for its engine every 10 ms, it goes straight back to sleep: no tick between.
        let ticker = EpochTicker::start_checking_every(&engine, Duration::from_millis(10)).unwrap();
        assert!(waits_for(|| ticker.is_parked()), "idle: parked");
        let parked_samples = (0..50)
            .filter(|_| {
                thread::sleep(Duration::from_millis(5));
                ticker.is_parked()
            })
            .count();
        assert!(
            parked_samples >= 40,
            "parked in {parked_samples} of 50 samples"
        );
    }
}
