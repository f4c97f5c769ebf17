//! The one place stores are built and readied for a call. A store is built with the engine's
//! limits applied: a memory and table cap (through [`CallLimits`], which also remembers that
//! the cap was hit, so an out-of-memory is told apart from other traps), a capped resource
//! table, and a deny-all WASI context (no files, no sockets, no environment, no arguments,
//! empty stdio). Every call then starts with [`begin_call`] (its request, its capabilities, a
//! full log budget and the epoch deadline) and ends with [`end_call`], which lets go of the
//! capabilities and tells whether the store is clean enough to serve another call
//! (`plugins::instances`).
//!
//! The time bound counts the plugin's own time. An async host call (a charge awaiting its
//! group commit) can take longer than a whole call may, through no fault of the plugin; the
//! host records that wait ([`PluginState::credit_host_wait`]) and the deadline is extended by
//! it, so a busy database never times a plugin out after its charge was committed.
//!
//! The bound is checked at every epoch tick the call runs through, and there the call also
//! yields to the executor: a connection thread serves many connections (`server::threads`),
//! and a plugin computing for its whole bound must not hold the others up for that long.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::engine::PluginEngine;
use super::routing_admin::RoutingWrites;
use super::ticker::EPOCH_TICK;
use crate::billing::BillingStore;
use crate::db::Database;
use crate::gateway::auth::Authenticator;
use crate::routing::{HealthRegistry, RoutingSnapshot};

/// The host state a plugin call can reach: only what its world's imports need.
#[derive(Debug, Default, Clone)]
pub struct Capabilities {
    /// The routing snapshot in force when the call started (router world).
    pub routing: Option<Arc<RoutingSnapshot>>,
    /// Channel health (router world).
    pub health: Option<HealthRegistry>,
    /// Balances, prices and the ledger (billing and dashboard worlds).
    pub billing: Option<BillingStore>,
    /// Users, sessions, keys, the registry and the legacy tables (dashboard world).
    pub database: Option<Database>,
    /// The routing snapshot that every routing write replaces (dashboard world).
    pub routing_writes: Option<RoutingWrites>,
    /// The gateway's verified-key cache, emptied after every user or key write (dashboard
    /// world).
    pub authenticator: Option<Authenticator>,
    /// The role of the dashboard request's logged-in caller, if any (dashboard world): the
    /// host itself lets only a `super_admin`, or the very first user, create a `super_admin`.
    pub caller_role: Option<crate::db::users::Role>,
}

/// The data of one plugin call's store.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: CallLimits,
    /// The plugin's name, for logs.
    pub plugin: Arc<str>,
    /// The request in flight, for logs.
    pub request_id: String,
    /// What the call may reach.
    pub capabilities: Capabilities,
    /// Log lines the plugin may still write in this call.
    pub log_budget: u32,
    /// Time spent awaiting async host calls, not yet given back to the time bound.
    host_wait: Duration,
    /// When the call is interrupted, unless host waits move it on; `None` for a bound too far
    /// away for the clock to name.
    call_deadline: Option<Instant>,
}

impl PluginState {
    /// Whether the call hit the memory cap.
    pub fn memory_exhausted(&self) -> bool {
        self.limits.memory_exhausted
    }

    /// Records `waited`, time the plugin spent blocked in an async host call; the call's
    /// deadline is extended by it (see the module documentation).
    pub fn credit_host_wait(&mut self, waited: Duration) {
        self.host_wait = self.host_wait.saturating_add(waited);
    }

    /// Awaits `operation`, a host call's slow part (a database round trip, an argon2 hash),
    /// and credits the time it took to the call's time bound.
    pub async fn host_wait<T>(&mut self, operation: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let outcome = operation.await;
        self.credit_host_wait(started.elapsed());
        outcome
    }

    /// At each epoch tick the call runs through: past its deadline (moved on by exactly the
    /// host waits since the last tick) the call traps (`Trap::Interrupt`); before it, the call
    /// yields to the executor and runs on, so a long call never holds up the other connections
    /// of its thread for more than a tick.
    fn on_tick(&mut self) -> UpdateDeadline {
        let waited = std::mem::take(&mut self.host_wait);
        self.call_deadline = self
            .call_deadline
            .and_then(|deadline| deadline.checked_add(waited));
        if self
            .call_deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
        }
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Log lines one call may write; more are dropped, so a plugin cannot flood the log.
pub const LOG_LINES_PER_CALL: u32 = 64;

/// wasmtime's store limits, plus a record of whether a memory growth was refused and of the
/// largest linear memory the store grew.
pub struct CallLimits {
    inner: StoreLimits,
    memory_exhausted: bool,
    /// Bytes of the largest linear memory, as last allowed to grow (a memory never shrinks).
    largest_memory: usize,
    /// The memory cap per linear memory.
    memory_cap: usize,
}

impl ResourceLimiter for CallLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum)?;
        if allowed {
            self.largest_memory = self.largest_memory.max(desired);
        } else {
            self.memory_exhausted = true;
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_exhausted = true;
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// A new store for `plugin`, with every limit in place, to be readied by [`begin_call`].
pub fn new_store(engine: &PluginEngine, plugin: Arc<str>) -> Store<PluginState> {
    let limits = engine.limits();
    let store_limits = StoreLimitsBuilder::new()
        .memory_size(limits.memory_bytes)
        .table_elements(limits.table_elements)
        .instances(64)
        .tables(64)
        .memories(64)
        .build();
    let mut table = ResourceTable::new();
    table.set_max_capacity(limits.resources);
    let state = PluginState {
        wasi: WasiCtx::builder().build(),
        table,
        limits: CallLimits {
            inner: store_limits,
            memory_exhausted: false,
            largest_memory: 0,
            memory_cap: limits.memory_bytes,
        },
        plugin,
        request_id: String::new(),
        capabilities: Capabilities::default(),
        log_budget: LOG_LINES_PER_CALL,
        host_wait: Duration::ZERO,
        call_deadline: None,
    };
    let mut store = Store::new(engine.engine(), state);
    store.limiter(|state| &mut state.limits);
    // At every tick: trap past the deadline, else yield and run on (`on_tick`).
    store.epoch_deadline_callback(|mut context| Ok(context.data_mut().on_tick()));
    store
}

/// Readies `store` for one call of `request_id` that may reach `capabilities`: a full log
/// budget, no host wait carried over, and the time bound counted from now.
pub fn begin_call(
    store: &mut Store<PluginState>,
    engine: &PluginEngine,
    request_id: String,
    capabilities: Capabilities,
) {
    let state = store.data_mut();
    state.request_id = request_id;
    state.capabilities = capabilities;
    state.log_budget = LOG_LINES_PER_CALL;
    state.host_wait = Duration::ZERO;
    // One tick more than the bound covers the tick in flight when the call starts.
    state.call_deadline =
        Instant::now().checked_add(engine.limits().timeout.saturating_add(EPOCH_TICK));
    store.set_epoch_deadline(1);
}

/// Ends a call that returned normally: drops what it could reach (so an idle store pins no
/// routing snapshot and no database handle) and answers whether the store may serve another
/// call — not if a memory growth was refused (the plugin may have carried on in a state it did
/// not plan for), a resource outlived the call, or a linear memory has grown past a quarter of
/// the cap. Memory never shrinks, so the last rule keeps a plugin that leaks from failing a
/// later call on the cap a new instance would not have reached.
pub fn end_call(store: &mut Store<PluginState>) -> bool {
    let state = store.data_mut();
    state.capabilities = Capabilities::default();
    state.request_id.clear();
    let limits = &state.limits;
    !limits.memory_exhausted
        && limits.largest_memory <= limits.memory_cap / REUSED_MEMORY_SHARE
        && state.table.is_empty()
}

/// A store whose largest memory is past 1/this of the cap is not reused (see [`end_call`]).
pub const REUSED_MEMORY_SHARE: usize = 4;

/// `monoize:plugin/types` declares only types; its host side is empty.
impl super::wit::latest::types::Host for PluginState {}
