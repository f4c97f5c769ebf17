//! Bindings for `monoize:plugin@0.1.0` (`wit/since_v0.1.0/`). The only `bindgen!` calls in
//! the host live here. Exports are async so a call runs on the request's task, where the time
//! bound (epoch interruption) and the async WASI implementation both work without blocking a
//! runtime thread. Imports are plain functions over in-memory state, except `billing-store`:
//! its calls are async, so a charge awaits its group commit (and a read its database
//! connection) without holding a runtime thread.
//!
//! Each world after the first shares the interfaces it has in common with the router world
//! (`types`, `log`, and for the dashboard `billing-store` and `routing-store`) through
//! bindgen's `with:`, so every WIT type has exactly one Rust type and
//! every interface one host implementation.

/// The package version these bindings implement.
pub const VERSION: &str = "0.1.0";

/// The `monoize:plugin` interfaces a router may import, by interface name.
pub const ROUTER_IMPORTS: &[&str] = &["types", "routing-store", "health", "log"];

/// The `monoize:plugin` interfaces a billing plugin may import, by interface name.
pub const BILLING_IMPORTS: &[&str] = &["types", "billing-store", "log"];

/// The `monoize:plugin` interfaces a dashboard plugin may import, by interface name.
/// `routing-store` is among them because `routing-admin` uses its `provider` record.
pub const DASHBOARD_IMPORTS: &[&str] = &[
    "types",
    "routing-store",
    "dashboard-store",
    "registry-store",
    "routing-admin",
    "legacy-store",
    "billing-store",
    "crypto",
    "log",
];

mod router_world {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.1.0",
        world: "router",
        exports: { default: async },
    });
}

mod billing_world {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.1.0",
        world: "billing",
        imports: { "monoize:plugin/billing-store": async },
        exports: { default: async },
        with: {
            "monoize:plugin/types": crate::plugins::wit::since_v0_1_0::types,
            "monoize:plugin/log": crate::plugins::wit::since_v0_1_0::log,
        },
    });
}

mod dashboard_world {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.1.0",
        world: "dashboard",
        imports: {
            "monoize:plugin/dashboard-store": async,
            "monoize:plugin/registry-store": async,
            "monoize:plugin/routing-admin": async,
            "monoize:plugin/legacy-store": async,
            "monoize:plugin/crypto": async | trappable,
        },
        exports: { default: async },
        with: {
            "monoize:plugin/types": crate::plugins::wit::since_v0_1_0::types,
            "monoize:plugin/log": crate::plugins::wit::since_v0_1_0::log,
            "monoize:plugin/routing-store": crate::plugins::wit::since_v0_1_0::routing_store,
            "monoize:plugin/billing-store": crate::plugins::wit::since_v0_1_0::billing_store,
        },
    });
}

pub use billing_world::monoize::plugin::billing_store;
pub use billing_world::{Billing, BillingPre};
pub use dashboard_world::monoize::plugin::{
    crypto, dashboard_store, legacy_store, registry_store, routing_admin,
};
pub use dashboard_world::{Caller, Dashboard, DashboardPre, HttpRequest, HttpResponse};
pub use router_world::monoize::plugin::{health, log, routing_store, types};
pub use router_world::{Router, RouterPre};
