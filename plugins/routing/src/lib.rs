//! The default Monoize router: the priority waterfall with weighted channel order.
//!
//! The policy lives in the crate `monoize-waterfall`, re-exported here as [`waterfall`]: pure
//! Rust over its own plain types, so the host can run the very same logic natively (in
//! benchmarks, or to compare against the component). With the default feature `component`, this
//! crate also builds the `router` component: it hands each request to
//! `monoize_waterfall::sdk::route`, which reads the candidates through `monoize-plugin`, in the
//! store's priority order and only as many pages as the plan needs. With
//! `default-features = false` it depends on `fastrand` alone (through the waterfall).
//!
//! Build the component with `cargo build --release --target wasm32-wasip2` from the guest
//! workspace (`plugins/`); it lands in `target/wasm32-wasip2/release/monoize_routing.wasm`.

pub use monoize_waterfall as waterfall;

#[cfg(feature = "component")]
mod component;
