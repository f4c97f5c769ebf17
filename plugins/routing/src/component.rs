//! The `router` component: the candidates in the store's priority order, planned by the
//! waterfall. No policy lives here.

use monoize_plugin::router::{Plan, RouteError, RouteRequest, Router, routing_store};

/// The default router.
struct Waterfall;

impl Router for Waterfall {
    fn route(request: RouteRequest) -> Result<Plan, RouteError> {
        let candidates = routing_store::candidates(&request.model, request.endpoint);
        monoize_waterfall::sdk::route(&request, &candidates)
    }
}

monoize_plugin::register_router!(Waterfall);
