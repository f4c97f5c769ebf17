//! The one wasmtime engine every plugin runs on: compiled with epoch interruption (the time
//! bound), the pooling instance allocator with copy-on-write memory images (cheap
//! instantiation), and wasmtime's on-disk cache of compiled components (a restart does
//! not recompile). A ticker thread advances the epoch while calls run ([`super::ticker`]); it
//! holds only a weak engine reference, so it stops with the engine.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::Component;
use wasmtime::{
    Cache, CacheConfig, Config, Enabled, Engine, InstanceAllocationStrategy,
    PoolingAllocationConfig,
};

use super::PluginError;
use super::ticker::{EpochTicker, Ticking};

/// The limits every plugin call runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLimits {
    /// Wall-clock bound of one call, instantiation included.
    pub timeout: Duration,
    /// Linear memory a plugin instance may use, in bytes.
    pub memory_bytes: usize,
    /// Elements a plugin's tables may hold.
    pub table_elements: usize,
    /// Plugin instances alive at once (the pool's size); further calls wait for a slot.
    pub concurrent_instances: u32,
    /// Entries in a call's resource table.
    pub resources: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            timeout: Duration::from_millis(50),
            memory_bytes: 64 << 20,
            table_elements: 20_000,
            concurrent_instances: 128,
            resources: 1_000,
        }
    }
}

/// What the engine is built from.
#[derive(Debug, Clone, Default)]
pub struct EngineSettings {
    /// The per-call limits.
    pub limits: PluginLimits,
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
}

/// The shared engine, its limits and the pool's admission control.
#[derive(Clone)]
pub struct PluginEngine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    engine: Engine,
    limits: PluginLimits,
    /// One permit per component instance the pool holds.
    slots: Arc<Semaphore>,
    /// One permit per linear memory the pool holds (see [`MEMORIES_PER_INSTANCE`]).
    memories: Arc<Semaphore>,
    /// One permit per instance that may wait idle for its next call (see [`idle_instances`]).
    idle: Arc<Semaphore>,
    /// Calls waiting in [`PluginEngine::slot`] right now.
    waiting: AtomicUsize,
    /// Advances the epoch while calls run.
    ticker: EpochTicker,
}

/// Counts a call as waiting for a slot while it lives, cancelled or not.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn start(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An instance's place in the pool: its instance slot and the memories its component needs,
/// held for as long as the instance lives. Dropping it gives both back.
pub struct PoolSlot {
    _instance: OwnedSemaphorePermit,
    _memories: OwnedSemaphorePermit,
}

/// Leave for one instance to wait idle between calls ([`PluginEngine::idle_permit`]).
pub struct IdlePermit {
    _permit: OwnedSemaphorePermit,
}

/// Instances of the pool that may wait idle for their next call: half of it, so that idle
/// instances (which keep their slots) never take the slots busy calls need. The other half is
/// always either free or held by calls that finish within the time bound.
fn idle_instances(limits: &PluginLimits) -> u32 {
    limits.concurrent_instances / 2
}

/// Core instances and memories one component may create: a Rust `wasm32-wasip2` component
/// has a handful of core instances (its module plus canonical-ABI shims).
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;

/// Linear memories the pool holds per instance slot. Each pooled memory reserves 4 GiB of
/// address space (so compiled code needs no bounds checks), and a component's shims have no
/// memory of their own: a Rust `wasm32-wasip2` component has one, an adapted `wasip1` one two.
/// A pool of one memory slot per core instance reserved ~8.7 TB of address space; two per
/// instance reserve ~1.1 TB. A component with more memories takes more of them
/// ([`PluginEngine::slot`] admits calls by the memories they need), so none is refused.
const MEMORIES_PER_INSTANCE: u32 = 2;

/// Linear memories the pool holds for `limits`: enough for the largest component it loads.
fn pool_memories(limits: &PluginLimits) -> u32 {
    limits
        .concurrent_instances
        .max(1)
        .saturating_mul(MEMORIES_PER_INSTANCE)
        .max(CORE_INSTANCES_PER_COMPONENT)
}

/// The linear memories one instance of `component` creates (the most a component may have
/// when wasmtime cannot tell). [`PluginEngine::slot`] bounds what it takes.
pub fn memories_of(component: &Component) -> u32 {
    component
        .resources_required()
        .map_or(CORE_INSTANCES_PER_COMPONENT, |required| {
            required.num_memories
        })
}

impl PluginEngine {
    /// Builds the engine and starts its epoch ticker.
    pub fn new(settings: &EngineSettings) -> Result<Self, PluginError> {
        let limits = settings.limits.clone();
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool_config(&limits)));
        if let Some(dir) = &settings.cache_dir {
            config.cache(Some(open_cache(dir)?));
        }
        let engine = Engine::new(&config)
            .map_err(|error| PluginError::engine(format!("cannot start wasmtime: {error:#}")))?;
        let ticker = EpochTicker::start(&engine)?;
        let slots = Arc::new(Semaphore::new(limits.concurrent_instances as usize));
        let memories = Arc::new(Semaphore::new(pool_memories(&limits) as usize));
        let idle = Arc::new(Semaphore::new(idle_instances(&limits) as usize));
        Ok(PluginEngine {
            inner: Arc::new(EngineInner {
                engine,
                limits,
                slots,
                memories,
                idle,
                waiting: AtomicUsize::new(0),
                ticker,
            }),
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The per-call limits.
    pub fn limits(&self) -> &PluginLimits {
        &self.inner.limits
    }

    /// Keeps the epoch advancing, so the call's time bound holds, until the answer is dropped:
    /// every call holds one from before it instantiates to its end.
    pub fn call_running(&self) -> Ticking {
        self.inner.ticker.call()
    }

    /// Whether the epoch ticker is parked: no call has run for a while.
    pub fn ticker_parked(&self) -> bool {
        self.inner.ticker.is_parked()
    }

    /// Waits for a free instance slot and for the `memories` linear memories of the
    /// component to instantiate ([`memories_of`]; at least one, at most what a component may
    /// have): a burst queues here instead of failing in the pool. Every call takes the
    /// instance first, so two calls never hold each other up.
    pub async fn slot(&self, memories: u32) -> Result<PoolSlot, PluginError> {
        let shutting_down =
            |_| PluginError::engine("the plugin engine is shutting down".to_owned());
        let slots = Arc::clone(&self.inner.slots);
        let instance = match Arc::clone(&slots).try_acquire_owned() {
            Ok(instance) => instance,
            // Counted as waiting only while it really waits, so a call that finds a free slot
            // does not keep finished instances from waiting idle.
            Err(_) => {
                let _waiting = Waiting::start(&self.inner.waiting);
                slots.acquire_owned().await.map_err(shutting_down)?
            }
        };
        let memories = Arc::clone(&self.inner.memories)
            .acquire_many_owned(memories.clamp(1, CORE_INSTANCES_PER_COMPONENT))
            .await
            .map_err(shutting_down)?;
        Ok(PoolSlot {
            _instance: instance,
            _memories: memories,
        })
    }

    /// Leave for one more instance to wait idle for its next call, if the pool has room for
    /// it ([`idle_instances`]) and no call is waiting for a slot; `None` otherwise, and the
    /// instance is to be dropped. So when the pool is full, a finished call's slot goes to the
    /// longest waiting call (the slots are handed out in order), not to whichever call of the
    /// same plugin comes next.
    pub fn idle_permit(&self) -> Option<IdlePermit> {
        if self.inner.waiting.load(Ordering::Relaxed) > 0 {
            return None;
        }
        Arc::clone(&self.inner.idle)
            .try_acquire_owned()
            .ok()
            .map(|permit| IdlePermit { _permit: permit })
    }
}

fn pool_config(limits: &PluginLimits) -> PoolingAllocationConfig {
    let instances = limits.concurrent_instances.max(1);
    let core_instances = instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(instances)
        .total_core_instances(core_instances)
        .total_memories(pool_memories(limits))
        .total_tables(core_instances)
        .total_stacks(instances)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_tables_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memory_size(limits.memory_bytes)
        .table_elements(limits.table_elements)
        // A slot's memory is reset after each call by rewriting only the pages the call dirtied
        // (found through the kernel's page map) rather than unmapping them, so the next call on
        // the slot starts without page faults. A router's stack, data and heap fit in this.
        .linear_memory_keep_resident(MEMORY_KEPT_RESIDENT)
        .table_keep_resident(TABLE_KEPT_RESIDENT)
        // Without the page map (`PAGEMAP_SCAN`, Linux 6.7+) the whole kept region would be
        // rewritten after every call; where the kernel lacks it, that is what happens.
        .pagemap_scan(Enabled::Auto);
    pool
}

/// Bytes at the start of each linear memory kept mapped between calls (see `pool_config`):
/// a Rust component's 1 MiB shadow stack, its data and the heap of a typical call.
const MEMORY_KEPT_RESIDENT: usize = 2 << 20;

/// Bytes of each table kept mapped between calls.
const TABLE_KEPT_RESIDENT: usize = 64 << 10;

fn open_cache(dir: &std::path::Path) -> Result<Cache, PluginError> {
    let failed = |what: &str, error: &dyn std::fmt::Display| {
        PluginError::engine(format!(
            "cannot {what} plugin cache {}: {error}",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(|error| failed("create", &error))?;
    // wasmtime's cache wants an absolute directory; a relative one is taken from the cwd.
    let absolute = std::path::absolute(dir).map_err(|error| failed("resolve", &error))?;
    let mut cache_config = CacheConfig::new();
    cache_config.with_directory(absolute);
    Cache::new(cache_config).map_err(|error| failed("open", &format!("{error:#}")))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{EngineSettings, PluginEngine, PluginLimits};

    #[tokio::test]
    async fn no_instance_may_wait_idle_while_a_call_waits_for_a_slot() {
        let engine = PluginEngine::new(&EngineSettings {
            limits: PluginLimits {
                concurrent_instances: 2,
                ..PluginLimits::default()
            },
            cache_dir: None,
        })
        .unwrap();
        let first = engine.slot(1).await.unwrap();
        let second = engine.slot(1).await.unwrap();
        let queued = engine.clone();
        let waiter = tokio::spawn(async move { queued.slot(1).await.map(drop) });
        // Until the waiter is queued, the one idle place (half of two slots) is free.
        tokio::time::timeout(Duration::from_secs(10), async {
            while engine.idle_permit().is_some() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        assert!(engine.idle_permit().is_none());
        drop(first);
        waiter.await.unwrap().unwrap();
        let idle = engine.idle_permit();
        assert!(idle.is_some());
        // Half the pool at most: a second idle place is refused.
        assert!(engine.idle_permit().is_none());
        drop(second);
    }
}
