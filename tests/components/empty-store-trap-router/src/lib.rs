//! A broken router for the conformance suite: it must fail `empty-store` and pass every other
//! check. When the model has no candidate and the whole store is empty (`providers()` answers
//! nothing), it traps instead of answering a route error; otherwise it is the default waterfall.
//! Every other check runs on a non-empty store, where an unknown model gets the waterfall's
//! route error.

use monoize_plugin::router::{Plan, RouteError, RouteRequest, Router, routing_store};

struct EmptyStoreTrapRouter;

impl Router for EmptyStoreTrapRouter {
    fn route(request: RouteRequest) -> Result<Plan, RouteError> {
        let first = routing_store::candidates(&request, 0, 1);
        // `providers()` copies the whole store: ask only when there is no candidate.
        if first.is_err() && routing_store::providers().is_empty() {
            // A bare `unreachable` instruction: the trap the host must turn into a failure.
            std::process::abort();
        }
        monoize_waterfall::sdk::route(&request)
    }
}

monoize_plugin::register_router!(EmptyStoreTrapRouter);
