//! A broken router for the conformance suite: it must fail `groups` and pass every other check.
//! It is the default waterfall planning as if the key had no groups, so a key of groups `[]`,
//! `["b"]` or `["zzz"]` still gets store F's providers of other groups. Every other check routes
//! without groups, where it behaves exactly like the waterfall.

use monoize_plugin::router::{Plan, RouteError, RouteRequest, Router};

struct IgnoresGroupsRouter;

impl Router for IgnoresGroupsRouter {
    fn route(request: RouteRequest) -> Result<Plan, RouteError> {
        // The candidates, too, are asked for without the groups.
        let blind = RouteRequest {
            groups: None,
            ..request
        };
        monoize_waterfall::sdk::route(&blind)
    }
}

monoize_plugin::register_router!(IgnoresGroupsRouter);
