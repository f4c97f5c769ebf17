//! The author crate for Monoize plugins.
//!
//! A Monoize plugin is a WebAssembly component (`wasm32-wasip2`) that implements one world of the
//! WIT package `monoize:plugin@0.1.0`. This crate hides the generated bindings: it re-exports a
//! curated set of types, wraps the host's imports in plain functions, and turns one trait impl
//! plus one macro call into the component's exports.
//!
//! Each world is behind its own feature; a plugin enables the one it implements:
//!
//! | feature     | module        | trait         | macro                   |
//! |-------------|---------------|---------------|-------------------------|
//! | `router`    | `router`      | `Router`      | `register_router!`      |
//! | `billing`   | `billing`     | `Billing`     | `register_billing!`     |
//! | `dashboard` | `dashboard`   | `Dashboard`   | `register_dashboard!`   |
//!
//! `log` is available with any of them.
//!
//! One instance of a router or billing component serves many calls in turn (up to a thousand,
//! one at a time), so its globals and heap outlive a call; a call that traps, times out or hits
//! the memory cap ends its instance, and the next call gets a new one. Keep no state a plan or
//! a charge depends on: the same request must get the same answer from a new instance as from
//! a used one. Dashboard calls get a new instance each.
//!
//! When one cargo build unifies several of these features (a workspace holding a router and a
//! billing plugin), each component still imports only the interfaces it calls — the component
//! linker drops unused imports — and exports only what its registration macro registers: the
//! bindings of a world carry its exports only in the macro's expansion.
//!
//! A router in full:
//!
//! ```ignore
//! use monoize_plugin::router::{self, Plan, RouteError, RouteRequest, Router};
//!
//! struct FirstChannel;
//!
//! impl Router for FirstChannel {
//!     fn route(request: RouteRequest) -> Result<Plan, RouteError> {
//!         let page = router::routing_store::candidates(&request, 0, 8);
//!         // ... choose attempts ...
//!         # let _ = page;
//!         Ok(Plan { attempts: Vec::new() })
//!     }
//! }
//!
//! monoize_plugin::register_router!(FirstChannel);
//! ```

#[cfg(any(feature = "router", feature = "billing", feature = "dashboard"))]
pub mod log;

#[cfg(feature = "router")]
pub mod router;

#[cfg(feature = "billing")]
pub mod billing;

#[cfg(feature = "dashboard")]
pub mod dashboard;

/// The generated bindings, one module per world. Not part of the API: the registration macros
/// reach them through `$crate::__private`, and nothing else should.
#[doc(hidden)]
pub mod __private {
    /// Bindings of the `router` world. Imports take borrowed arguments (`&[&str]` for channel
    /// ids), so asking for health does not copy every id first.
    #[cfg(feature = "router")]
    #[allow(
        unsafe_code,
        missing_docs,
        unused_imports,
        unused_macros,
        dead_code,
        clippy::all
    )]
    pub mod router {
        wit_bindgen::generate!({
            path: "../../wit/since_v0.1.0",
            world: "monoize:plugin/router",
            ownership: Borrowing { duplicate_if_necessary: false },
            pub_export_macro: true,
            export_macro_name: "__export_router",
            default_bindings_module: "monoize_plugin::__private::router",
        });
    }

    /// Bindings of the `billing` world.
    #[cfg(feature = "billing")]
    #[allow(
        unsafe_code,
        missing_docs,
        unused_imports,
        unused_macros,
        dead_code,
        clippy::all
    )]
    pub mod billing {
        wit_bindgen::generate!({
            path: "../../wit/since_v0.1.0",
            world: "monoize:plugin/billing",
            pub_export_macro: true,
            export_macro_name: "__export_billing",
            default_bindings_module: "monoize_plugin::__private::billing",
        });
    }

    /// Bindings of the `dashboard` world.
    #[cfg(feature = "dashboard")]
    #[allow(
        unsafe_code,
        missing_docs,
        unused_imports,
        unused_macros,
        dead_code,
        clippy::all
    )]
    pub mod dashboard {
        wit_bindgen::generate!({
            path: "../../wit/since_v0.1.0",
            world: "monoize:plugin/dashboard",
            pub_export_macro: true,
            export_macro_name: "__export_dashboard",
            default_bindings_module: "monoize_plugin::__private::dashboard",
        });
    }
}
