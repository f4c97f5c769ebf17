//! A broken router for the conformance suite: it must fail `unknown-model` and pass every other
//! check. When no provider lists the requested model at all (no candidate, and no provider of a
//! non-empty store has it on any endpoint), it answers `Ok` with an empty plan instead of a route
//! error; otherwise it is the default waterfall. An empty plan is legal attempt by attempt (it has
//! none), so the checks that only validate plans pass; a model that some provider lists on
//! another endpoint still gets the waterfall's route error, and an empty store gets one too.

use monoize_plugin::router::{NoCandidate, Plan, RouteError, RouteRequest, Router, routing_store};

struct UnknownModelOkRouter;

impl Router for UnknownModelOkRouter {
    fn route(request: RouteRequest) -> Result<Plan, RouteError> {
        if let Err(NoCandidate::UnknownModel) = routing_store::candidates(&request, 0, 1) {
            let providers = routing_store::providers();
            let listed_anywhere = providers.iter().any(|provider| {
                provider
                    .models
                    .iter()
                    .any(|entry| entry.model == request.model)
            });
            if !providers.is_empty() && !listed_anywhere {
                return Ok(Plan {
                    attempts: Vec::new(),
                });
            }
        }
        monoize_waterfall::sdk::route(&request)
    }
}

monoize_plugin::register_router!(UnknownModelOkRouter);
