//! The default Monoize router: the priority waterfall with weighted channel order.
//!
//! The policy lives in [`waterfall`], pure Rust over its own plain types, so the host can run the
//! very same logic natively (in benchmarks, or to compare against the component). With the
//! default feature `component`, the crate also builds the `router` component: a thin glue layer
//! that reads candidates and health through `monoize-plugin` and converts to and from the plain
//! types. With `default-features = false` it depends on `fastrand` alone.
//!
//! Build the component with `cargo build --release --target wasm32-wasip2` from the guest
//! workspace (`plugins/`); it lands in `target/wasm32-wasip2/release/monoize_routing.wasm`.

pub mod waterfall;

#[cfg(feature = "component")]
mod component;
