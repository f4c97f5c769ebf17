//! Routers: the `router` world of `monoize:plugin@0.1.0`.
//!
//! A router gets a [`RouteRequest`] — the logical model, the endpoint it arrived on, the key's
//! multiplier ceiling and groups, a seed, and the most attempts the host will make — and answers
//! a [`Plan`]: the attempts (provider, channel, upstream model, multiplier) the host should try
//! in order, at most `request.max_attempts` of them (the host cuts a longer plan). It reads the
//! providers it may use, with their channels' health, through [`routing_store`] (page by page, so
//! a router that plans a few attempts reads only the first providers), and sees nothing else: no
//! network, no files, no keys.
//!
//! The host checks every attempt against its own view before acting, so a router can reorder
//! and choose but never widen access: an attempt on a disabled or zero-weight channel, a
//! provider that does not serve the model, a multiplier above the ceiling or a provider outside
//! the key's groups refuses the whole plan.
//!
//! Implement [`Router`] and register it with [`register_router!`](crate::register_router).

use crate::__private::router as bindings;

pub use bindings::monoize::plugin::health::ChannelHealth;
pub use bindings::monoize::plugin::routing_store::{
    Candidate, CandidateChannel, CandidatePage, Channel, ModelEntry, NoCandidate, Provider,
};
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
    /// `request.seed`, so that the same request, seed and store give the same plan, and no
    /// state may carry over from an earlier call (an instance serves many). Plan at most
    /// `request.max_attempts` attempts: the host cuts a longer plan, so more is wasted work.
    fn route(request: RouteRequest) -> Result<Plan, RouteError>;
}

/// The read-only routing configuration (`monoize:plugin/routing-store`), answered by the host
/// from an in-memory snapshot: a call costs no SQL. Channels come without their API key or URL.
pub mod routing_store {
    use super::bindings::monoize::plugin::routing_store as imp;
    use super::{Candidate, CandidatePage, NoCandidate, Provider, RouteRequest};

    /// The page size [`all_candidates`] reads with.
    const ALL_PAGE: u32 = 256;

    /// One page of the providers `request` may use: enabled, listing `request.model` for a wire
    /// format `request.endpoint` accepts, within its `max_multiplier` and `groups`, each with
    /// its multiplier and redirect for the model and its usable channels (enabled, weight > 0)
    /// with their health. In priority order (ties by id), at most `limit` of them (0 reads as
    /// 1), starting at `cursor`: 0 for the first page, then the page's `next`.
    ///
    /// Every candidate answered is copied into the component, so ask for what the plan needs:
    /// a router planning `request.max_attempts` attempts from the first providers never reads
    /// the rest. `Err` says why nothing at all passes (first page only).
    ///
    /// To look with other filters (another model, no ceiling), pass a changed request.
    pub fn candidates(
        request: &RouteRequest,
        cursor: u32,
        limit: u32,
    ) -> Result<CandidatePage, NoCandidate> {
        let groups: Option<Vec<&str>> = request
            .groups
            .as_ref()
            .map(|groups| groups.iter().map(String::as_str).collect());
        imp::candidates(imp::CandidateQuery {
            model: &request.model,
            endpoint: request.endpoint,
            max_multiplier: request.max_multiplier,
            groups: groups.as_deref(),
            cursor,
            limit,
        })
    }

    /// Every page of [`candidates`] for `request`, concatenated: for routers that must see all
    /// of them before they order them (a sort by multiplier, a spread over every channel). This
    /// copies every candidate into the component; a router that plans from the first providers
    /// should read page by page instead.
    pub fn all_candidates(request: &RouteRequest) -> Result<Vec<Candidate>, NoCandidate> {
        let mut all = Vec::new();
        let mut cursor = 0;
        loop {
            let page = candidates(request, cursor, ALL_PAGE)?;
            all.extend(page.candidates);
            match page.next {
                Some(next) if next > cursor => cursor = next,
                _ => return Ok(all),
            }
        }
    }

    /// Every provider with all of its models and channels, disabled ones included, in priority
    /// order (ties by id). Much larger than [`candidates`]; for routers that look across models
    /// or at what `candidates` leaves out.
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
    /// Candidates already carry their channels' health; this is for channels found through
    /// [`routing_store::providers`](super::routing_store::providers). Ask once per route for
    /// every channel you may use, not once per channel: each call crosses the component
    /// boundary.
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
