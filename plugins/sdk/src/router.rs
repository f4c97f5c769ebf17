//! Routers: the `router` world of `monoize:plugin@0.1.0`.
//!
//! A router gets a [`RouteRequest`] — the logical model, the endpoint it arrived on, the key's
//! multiplier ceiling and groups, a seed, and the most attempts the host will make — and answers
//! a [`Plan`]: the attempts (provider, channel, upstream model, multiplier) the host should try
//! in order, at most `request.max_attempts` of them (the host cuts a longer plan). It reads the routing
//! configuration through [`routing_store`] and channel health through [`health`], and sees
//! nothing else: no network, no files, no keys.
//!
//! The host checks every attempt against its own view before acting, so a router can reorder
//! and choose but never widen access: an attempt on a disabled or zero-weight channel, a
//! provider that does not serve the model, a multiplier above the ceiling or a provider outside
//! the key's groups refuses the whole plan.
//!
//! Implement [`Router`] and register it with [`register_router!`](crate::register_router).

use crate::__private::router as bindings;

pub use bindings::monoize::plugin::health::ChannelHealth;
pub use bindings::monoize::plugin::routing_store::{Candidate, Channel, ModelEntry, Provider};
pub use bindings::monoize::plugin::types::{
    Attempt, Decimal, EndpointKind, Plan, ProviderType, RouteError, RouteRequest, TimestampMs,
};

/// `1` as a [`Decimal`]: decimals are carried as the value × 10^9.
pub const DECIMAL_ONE: Decimal = 1_000_000_000;

/// A routing policy.
///
/// Exactly one type per component implements it, registered with
/// [`register_router!`](crate::register_router).
pub trait Router {
    /// Plans the attempts for one request.
    ///
    /// Must not panic: a panic traps the component and fails the request with
    /// `plugin_failed`. Every refusal is a [`RouteError`]. Any randomness must come from
    /// `request.seed`, so that the same request, seed and store give the same plan. Plan at most
    /// `request.max_attempts` attempts: the host cuts a longer plan, so more is wasted work.
    fn route(request: RouteRequest) -> Result<Plan, RouteError>;
}

/// The read-only routing configuration (`monoize:plugin/routing-store`), answered by the host
/// from an in-memory snapshot: a call costs no SQL. Channels come without their API key or URL.
pub mod routing_store {
    use super::bindings::monoize::plugin::routing_store as imp;
    use super::{Candidate, EndpointKind, Provider};

    /// Every provider that lists `model` and speaks a wire format `endpoint` accepts, in
    /// priority order (ties by id), disabled ones included, each with its entry for the model and
    /// all its channels. The one call a router needs.
    pub fn candidates(model: &str, endpoint: EndpointKind) -> Vec<Candidate> {
        imp::candidates(model, endpoint)
    }

    /// Every provider with all of its models and channels, in priority order (ties by id).
    /// Larger than [`candidates`]; for routers that look across models.
    pub fn providers() -> Vec<Provider> {
        imp::providers()
    }
}

/// Channel health as the host's passive health checks see it (`monoize:plugin/health`).
pub mod health {
    use super::ChannelHealth;
    use super::bindings::monoize::plugin::health as imp;

    /// The health of `channel_ids` when serving `model`, one answer per id in the same order;
    /// an id the host has no record of reads as healthy.
    ///
    /// Ask once per route for every channel you may use, not once per channel: each call
    /// crosses the component boundary.
    pub fn channels(model: &str, channel_ids: &[&str]) -> Vec<ChannelHealth> {
        imp::channels(model, channel_ids)
    }
}

/// Registers `$router` (a type implementing [`Router`](crate::router::Router)) as the
/// component's `route` export.
///
/// Call it once, at the top level of a `cdylib` crate that depends on `monoize-plugin` with the
/// `router` feature:
///
/// ```ignore
/// struct MyRouter;
/// impl monoize_plugin::router::Router for MyRouter { /* ... */ }
/// monoize_plugin::register_router!(MyRouter);
/// ```
#[macro_export]
macro_rules! register_router {
    ($router:ty) => {
        #[allow(unsafe_code)]
        const _: () = {
            struct MonoizeRouterExport;

            impl $crate::__private::router::Guest for MonoizeRouterExport {
                fn route(
                    request: $crate::router::RouteRequest,
                ) -> ::core::result::Result<$crate::router::Plan, $crate::router::RouteError>
                {
                    <$router as $crate::router::Router>::route(request)
                }
            }

            $crate::__private::router::__export_router!(
                MonoizeRouterExport with_types_in $crate::__private::router
            );
        };
    };
}
