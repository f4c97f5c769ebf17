//! Cheapest first: a Monoize router that sends each request to the cheapest provider it may use.
//!
//! The eligible providers are tried in order of their multiplier for the model, lowest first;
//! providers at the same multiplier keep the store's priority order. Everything else is the
//! default waterfall's (`monoize-waterfall`): disabled providers, providers above the key's
//! multiplier ceiling and providers outside its groups are skipped; each provider's usable
//! channels come in a weighted order drawn from the request's seed; unhealthy channels are
//! skipped, and only when every usable channel is unhealthy are they tried anyway, least recently
//! failed first; each provider gets at most `max_retries + 1` attempts, and the plan at most the
//! request's `max_attempts` (the most the host will try).
//!
//! Unknown models, an empty store and keys that may use nothing get the waterfall's route errors.

use monoize_plugin::router::{Plan, RouteError, RouteRequest, Router, routing_store};

struct CheapestFirst;

impl Router for CheapestFirst {
    fn route(request: RouteRequest) -> Result<Plan, RouteError> {
        // The cheapest may come last in priority order: every candidate is needed.
        let mut candidates = routing_store::all_candidates(&request)
            .map_err(|reason| monoize_waterfall::sdk::refusal(reason, &request))?;
        // The store answers in priority order (ties by id) and the sort is stable, so providers
        // at the same multiplier stay in priority order.
        candidates.sort_by_key(|candidate| candidate.multiplier);
        // The waterfall walks the candidates in this order and plans only what the host accepts.
        monoize_waterfall::sdk::route_over(&request, &candidates)
    }
}

monoize_plugin::register_router!(CheapestFirst);
