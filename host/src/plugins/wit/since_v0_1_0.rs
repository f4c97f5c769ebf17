//! Bindings for `monoize:plugin@0.1.0` (`wit/since_v0.1.0/`). The only `bindgen!` calls in
//! the host live here. Exports are async so a call runs on the request's task, where the time
//! bound (epoch interruption) and the async WASI implementation both work without blocking a
//! runtime thread; imports are plain functions over in-memory state.

/// The package version these bindings implement.
pub const VERSION: &str = "0.1.0";

/// The `monoize:plugin` interfaces a router may import, by interface name.
pub const ROUTER_IMPORTS: &[&str] = &["types", "routing-store", "health", "log"];

mod router_world {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.1.0",
        world: "router",
        exports: { default: async },
    });
}

pub use router_world::monoize::plugin::{health, log, routing_store, types};
pub use router_world::{Router, RouterPre};
