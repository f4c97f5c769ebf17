//! The WebAssembly plugin runtime. One [`PluginEngine`] runs every plugin; each world has a
//! loader that links exactly that world's imports plus a deny-all WASI; each imported interface
//! has one module here that implements it over host state; every call runs under the engine's
//! limits, in an instance from [`instances`] (a new one, or one a clean call gave back).

pub mod billing;
mod billing_store;
pub mod crypto;
pub mod dashboard;
mod dashboard_store;
pub mod embedded;
pub mod engine;
pub mod error;
mod health;
pub mod instances;
mod legacy_store;
mod load;
mod log;
mod registry_store;
pub mod router;
pub mod routing_admin;
mod routing_store;
pub mod store;
pub mod ticker;
pub mod wit;

pub use billing::BillingPlugin;
pub use dashboard::DashboardPlugin;
pub use engine::{EngineSettings, PluginEngine, PluginLimits, PoolSlot};
pub use error::{PluginError, PluginErrorKind};
pub use router::RouterPlugin;

use wasmtime::Store;
use wasmtime::Trap;

use store::PluginState;

/// Turns a failed call into the plugin's typed error: out-of-memory when the store's limiter
/// refused a growth, timeout when the epoch deadline interrupted it, a trap otherwise.
fn call_failure(
    name: &str,
    store: &Store<PluginState>,
    error: &wasmtime::Error,
    engine: &PluginEngine,
) -> PluginError {
    let limits = engine.limits();
    let kind = if store.data().memory_exhausted() {
        PluginErrorKind::OutOfMemory {
            limit_bytes: limits.memory_bytes,
        }
    } else if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        PluginErrorKind::Timeout {
            limit_ms: limits.timeout.as_millis(),
        }
    } else {
        PluginErrorKind::Trap(format!("{error:#}"))
    };
    PluginError::new(name, kind)
}

/// The name the embedded default router is known by in logs and errors.
pub const DEFAULT_ROUTER: &str = "default-router";

/// Loads the router the operator chose: the component file at `path` (named after the file),
/// or the embedded default router when `path` is `None`.
pub fn load_router(
    engine: &PluginEngine,
    path: Option<&std::path::Path>,
) -> Result<RouterPlugin, PluginError> {
    let Some(path) = path else {
        return RouterPlugin::load(engine, DEFAULT_ROUTER, embedded::ROUTING);
    };
    let name = path.display().to_string();
    let bytes = read_component(&name, path)?;
    RouterPlugin::load(engine, &name, &bytes)
}

/// The name the embedded default billing plugin is known by in logs and errors.
pub const DEFAULT_BILLING: &str = "default-billing";

/// Loads the billing plugin the operator chose: the component file at `path` (named after the
/// file), or the embedded default billing plugin when `path` is `None`.
pub fn load_billing(
    engine: &PluginEngine,
    path: Option<&std::path::Path>,
) -> Result<BillingPlugin, PluginError> {
    let Some(path) = path else {
        return BillingPlugin::load(engine, DEFAULT_BILLING, embedded::BILLING);
    };
    let name = path.display().to_string();
    let bytes = read_component(&name, path)?;
    BillingPlugin::load(engine, &name, &bytes)
}

/// The name the embedded default dashboard plugin is known by in logs and errors.
pub const DEFAULT_DASHBOARD: &str = "default-dashboard";

/// Loads the dashboard plugin the operator chose: the component file at `path` (named after
/// the file), or the embedded default dashboard plugin when `path` is `None`.
pub fn load_dashboard(
    engine: &PluginEngine,
    path: Option<&std::path::Path>,
) -> Result<DashboardPlugin, PluginError> {
    let Some(path) = path else {
        return DashboardPlugin::load(engine, DEFAULT_DASHBOARD, embedded::DASHBOARD);
    };
    let name = path.display().to_string();
    let bytes = read_component(&name, path)?;
    DashboardPlugin::load(engine, &name, &bytes)
}

/// The bytes of the component file at `path`, for plugin `name`.
fn read_component(name: &str, path: &std::path::Path) -> Result<Vec<u8>, PluginError> {
    std::fs::read(path).map_err(|error| {
        PluginError::new(
            name,
            PluginErrorKind::Load(format!("cannot read the file: {error}")),
        )
    })
}
