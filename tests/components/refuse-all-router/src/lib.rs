//! A broken router for the conformance suite: it must fail `serves-a-simple-store` and pass every
//! other check. It answers every request with the route error `failed`, so a store that plainly
//! serves the model gets no plan — while every check that accepts a route error (legal plans,
//! the ceiling, groups, unknown models, the empty store, determinism, the large store, hostile
//! names) has nothing to object to: a router that never plans never plans anything illegal.

use monoize_plugin::router::{Plan, RouteError, RouteRequest, Router};

struct RefuseAllRouter;

impl Router for RefuseAllRouter {
    fn route(_request: RouteRequest) -> Result<Plan, RouteError> {
        Err(RouteError::Failed(
            "refuse-all-router refuses every request".to_owned(),
        ))
    }
}

monoize_plugin::register_router!(RefuseAllRouter);
