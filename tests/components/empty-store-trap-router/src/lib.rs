//! A broken router for the conformance suite: it must fail `empty-store` and pass every other
//! check. When the model has no candidate and the whole store is empty (`providers()` answers
//! nothing), it traps instead of answering a route error; otherwise it is the default waterfall.
//! Every other check runs on a non-empty store, where an unknown model gets the waterfall's
//! route error.

use monoize_plugin::router::{Plan, RouteError, RouteRequest, Router, routing_store};

struct EmptyStoreTrapRouter;

impl Router for EmptyStoreTrapRouter {
    fn route(request: RouteRequest) -> Result<Plan, RouteError> {
        let candidates = routing_store::candidates(&request.model, request.endpoint);
        // `providers()` copies the whole store: ask only when there is no candidate.
        if candidates.is_empty() && routing_store::providers().is_empty() {
            // A bare `unreachable` instruction: the trap the host must turn into a failure.
            std::process::abort();
        }
        monoize_waterfall::sdk::route(&request, &candidates)
    }
}

monoize_plugin::register_router!(EmptyStoreTrapRouter);
