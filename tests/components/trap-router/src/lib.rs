//! A hostile router for the host's tests: `route` traps on every call.
//!
//! A model named `abort` traps through `std::process::abort` (a bare `unreachable`); any other
//! panics first, which also traps (`panic = "abort"`), after std tries to print the message.

#![allow(clippy::panic)]

use monoize_plugin::router::{Plan, RouteError, RouteRequest, Router};

struct TrapRouter;

impl Router for TrapRouter {
    fn route(request: RouteRequest) -> Result<Plan, RouteError> {
        if request.model == "abort" {
            std::process::abort();
        }
        panic!("trap-router traps on every request");
    }
}

monoize_plugin::register_router!(TrapRouter);
