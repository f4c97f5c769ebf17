//! Where a plugin call's instance comes from. Building a store, instantiating the component
//! from its pre-linked `InstancePre` in the pooling allocator, and tearing both down after
//! cost more than most calls themselves (about 12 µs of each router and billing call in the
//! gateway bench). So an instance whose call returned normally waits idle for the next call of
//! the same plugin — up to a number per plugin ([`KEEP_IDLE`] for the plugins on the request
//! path), within the engine's idle budget (half the pool) — and serves at most
//! [`MAX_CALLS_PER_INSTANCE`] calls before a new one replaces it.
//!
//! An instance is never given back when its call trapped, timed out, was cancelled (its future
//! dropped mid-call), hit the memory cap, or left a resource behind: such a call fails (or is
//! gone) alone, and the next call gets a new instance, so a failure never carries over. Nor is
//! it once its memory has grown past a quarter of the cap, so a plugin that leaks never fails a
//! call on the cap a new instance would have stayed under. What a
//! reused instance keeps is the plugin's own memory, its globals and heap; a plan or a charge
//! must not depend on them (the SDK says so, and the conformance suite's determinism check runs
//! the same request twice through the same plugin). Every call starts from the store's
//! [`begin_call`] and ends in [`end_call`], which drops what the call could reach.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use wasmtime::Store;

use super::engine::{IdlePermit, PoolSlot};
use super::load::Loaded;
use super::store::{Capabilities, PluginState, begin_call, end_call, new_store};
use super::ticker::Ticking;
use super::{PluginError, call_failure};

/// Calls one instance serves before it is replaced: a bound on whatever its heap and globals
/// accumulate, at a cost of one instantiation per this many calls.
pub const MAX_CALLS_PER_INSTANCE: u32 = 1_000;

/// Idle instances a plugin on the request path (router, billing) keeps: enough for the calls
/// that overlap on a loaded gateway (a settle holds its instance while its charge commits).
pub const KEEP_IDLE: usize = 32;

/// A world's typed bindings, as instantiated from its typed pre-instance.
pub trait World: Sized + Send + 'static {
    /// The world's typed pre-instance (`RouterPre`, `BillingPre`, …).
    type Pre: Clone + Send + Sync + 'static;

    /// Instantiates `pre` in `store`.
    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<PluginState>,
    ) -> impl Future<Output = wasmtime::Result<Self>> + Send;
}

/// Implements [`World`] for the bindings `$world` of a world whose typed pre-instance is
/// `$pre`: each world's module names its pair once.
macro_rules! world {
    ($world:ty, $pre:ident) => {
        impl $crate::plugins::instances::World for $world {
            type Pre = $pre<$crate::plugins::store::PluginState>;

            fn instantiate(
                pre: &Self::Pre,
                store: &mut wasmtime::Store<$crate::plugins::store::PluginState>,
            ) -> impl std::future::Future<Output = wasmtime::Result<Self>> + Send {
                pre.instantiate_async(store)
            }
        }
    };
}
pub(crate) use world;

/// One live instance: its store, the world's bindings to call, and its place in the pool.
pub struct Instance<W> {
    /// The instance's store, readied for the call in hand.
    pub store: Store<PluginState>,
    /// The world's exports.
    pub bindings: W,
    calls: u32,
    _slot: PoolSlot,
    /// Held only while the instance waits idle.
    idle_permit: Option<IdlePermit>,
    /// Held only while the instance serves a call: the epoch advances meanwhile.
    ticking: Option<Ticking>,
}

/// How many instances a plugin has started, and how many wait idle now (`GET /metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InstanceCounts {
    /// Instances started since the plugin was loaded.
    pub started: u64,
    /// Instances waiting for their next call.
    pub idle: usize,
}

/// A loaded plugin's instances: where each call takes one, and where a clean one goes back.
/// Cheap to clone; clones share the idle instances.
pub struct Instances<W: World> {
    loaded: Loaded<W::Pre>,
    idle: Arc<Mutex<Vec<Instance<W>>>>,
    keep: usize,
    started: Arc<AtomicU64>,
}

impl<W: World> Clone for Instances<W> {
    fn clone(&self) -> Self {
        Instances {
            loaded: self.loaded.clone(),
            idle: Arc::clone(&self.idle),
            keep: self.keep,
            started: Arc::clone(&self.started),
        }
    }
}

impl<W: World> Instances<W> {
    /// The instances of `loaded`, keeping at most `keep` idle (0: a new instance per call).
    pub fn new(loaded: Loaded<W::Pre>, keep: usize) -> Self {
        Instances {
            loaded,
            idle: Arc::new(Mutex::new(Vec::new())),
            keep,
            started: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Instances started so far, and idle now.
    pub fn counts(&self) -> InstanceCounts {
        InstanceCounts {
            started: self.started.load(Ordering::Relaxed),
            idle: self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
        }
    }

    /// The loaded plugin.
    pub fn loaded(&self) -> &Loaded<W::Pre> {
        &self.loaded
    }

    /// An instance readied for one call of `request_id` that may reach `capabilities`: the
    /// most recently idle one, or a new one (waiting for room in the pool). Instantiation
    /// runs under the call's time bound; its failure is the call's.
    pub async fn take(
        &self,
        request_id: String,
        capabilities: Capabilities,
    ) -> Result<Instance<W>, PluginError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let engine = &self.loaded.engine;
        let ticking = engine.call_running();
        let mut instance = match idle {
            Some(mut instance) => {
                instance.idle_permit = None;
                begin_call(&mut instance.store, engine, request_id, capabilities);
                instance.ticking = Some(ticking);
                instance
            }
            None => {
                let slot = engine.slot(self.loaded.memories).await?;
                self.started.fetch_add(1, Ordering::Relaxed);
                let mut store = new_store(engine, Arc::clone(&self.loaded.name));
                begin_call(&mut store, engine, request_id, capabilities);
                let bindings = match W::instantiate(&self.loaded.pre, &mut store).await {
                    Ok(bindings) => bindings,
                    Err(error) => {
                        return Err(call_failure(&self.loaded.name, &store, &error, engine));
                    }
                };
                Instance {
                    store,
                    bindings,
                    calls: 0,
                    _slot: slot,
                    idle_permit: None,
                    ticking: Some(ticking),
                }
            }
        };
        instance.calls = instance.calls.saturating_add(1);
        Ok(instance)
    }

    /// Ends the call `instance` served with `outcome`: a normal return gives the instance back
    /// (when it is clean and there is room) and answers the value; a failure drops it and
    /// answers the plugin's typed error.
    pub fn finish<R>(
        &self,
        instance: Instance<W>,
        outcome: wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        match outcome {
            Ok(value) => {
                self.give_back(instance);
                Ok(value)
            }
            Err(error) => Err(call_failure(
                &self.loaded.name,
                &instance.store,
                &error,
                &self.loaded.engine,
            )),
        }
    }

    fn give_back(&self, mut instance: Instance<W>) {
        instance.ticking = None;
        if !end_call(&mut instance.store) || instance.calls >= MAX_CALLS_PER_INSTANCE {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.keep
            && let Some(permit) = self.loaded.engine.idle_permit()
        {
            instance.idle_permit = Some(permit);
            idle.push(instance);
        }
        // Otherwise the instance is dropped here, after the lock: locals go before parameters.
    }
}
