//! The `router` component: the candidates in the store's priority order, planned by the
//! waterfall, read from the host only as far as the plan needs. No policy lives here.

use monoize_plugin::router::{Plan, RouteError, RouteRequest, Router};

/// The default router.
struct Waterfall;

impl Router for Waterfall {
    fn route(request: RouteRequest) -> Result<Plan, RouteError> {
        monoize_waterfall::sdk::route(&request)
    }
}

monoize_plugin::register_router!(Waterfall);
