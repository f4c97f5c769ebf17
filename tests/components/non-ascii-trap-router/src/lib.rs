//! A broken router for the conformance suite: it must fail `hostile-input` and pass every other
//! check. It traps when the model name is not ASCII (the hostile input `模型🚀`), and is the
//! default waterfall for every other name — empty, 64 KiB long or full of control characters
//! included, which are ASCII. No other check uses a non-ASCII name.

use monoize_plugin::router::{Plan, RouteError, RouteRequest, Router};

struct NonAsciiTrapRouter;

impl Router for NonAsciiTrapRouter {
    fn route(request: RouteRequest) -> Result<Plan, RouteError> {
        if !request.model.is_ascii() {
            // A bare `unreachable` instruction: the trap the host must turn into a failure.
            std::process::abort();
        }
        monoize_waterfall::sdk::route(&request)
    }
}

monoize_plugin::register_router!(NonAsciiTrapRouter);
