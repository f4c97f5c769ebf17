//! A hostile router for the host's tests: `route` never returns, so only the host's time bound
//! (epoch interruption or fuel) can stop it.

use std::hint::black_box;

use monoize_plugin::router::{Plan, RouteError, RouteRequest, Router};

struct LoopRouter;

impl Router for LoopRouter {
    fn route(request: RouteRequest) -> Result<Plan, RouteError> {
        // Busy work the optimiser cannot prove pointless or remove.
        let mut state = request.seed;
        loop {
            state = black_box(
                state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1),
            );
        }
    }
}

monoize_plugin::register_router!(LoopRouter);
