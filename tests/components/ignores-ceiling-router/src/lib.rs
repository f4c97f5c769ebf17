//! A broken router for the conformance suite: it must fail `max-multiplier` and pass every other
//! check. It is the default waterfall planning as if the request had no multiplier ceiling, so
//! under a ceiling of 0.5 or 1 it still plans store F's dearer providers. Every other check
//! routes without a ceiling, where it behaves exactly like the waterfall.

use monoize_plugin::router::{Plan, RouteError, RouteRequest, Router};

struct IgnoresCeilingRouter;

impl Router for IgnoresCeilingRouter {
    fn route(request: RouteRequest) -> Result<Plan, RouteError> {
        // The candidates, too, are asked for without the ceiling.
        let blind = RouteRequest {
            max_multiplier: None,
            ..request
        };
        monoize_waterfall::sdk::route(&blind)
    }
}

monoize_plugin::register_router!(IgnoresCeilingRouter);
