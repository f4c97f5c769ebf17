//! The WebAssembly plugin runtime. One [`PluginEngine`] runs every plugin; each world has a
//! loader that links exactly that world's imports plus a deny-all WASI; each imported interface
//! has one module here that implements it over host state; every call runs in a fresh store
//! under the engine's limits.

pub mod embedded;
pub mod engine;
pub mod error;
mod health;
mod load;
mod log;
pub mod router;
mod routing_store;
pub mod store;
pub mod wit;

pub use engine::{EngineSettings, PluginEngine, PluginLimits};
pub use error::{PluginError, PluginErrorKind};
pub use router::RouterPlugin;

use wasmtime::Store;
use wasmtime::Trap;

use store::PluginState;

/// Turns a failed call into the plugin's typed error: out-of-memory when the store's limiter
/// refused a growth, timeout when the epoch deadline interrupted it, a trap otherwise.
fn call_failure(name: &str, store: &Store<PluginState>, error: &wasmtime::Error, engine: &PluginEngine) -> PluginError {
    let limits = engine.limits();
    let kind = if store.data().memory_exhausted() {
        PluginErrorKind::OutOfMemory { limit_bytes: limits.memory_bytes }
    } else if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        PluginErrorKind::Timeout { limit_ms: limits.timeout.as_millis() }
    } else {
        PluginErrorKind::Trap(format!("{error:#}"))
    };
    PluginError::new(name, kind)
}
