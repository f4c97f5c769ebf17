//! A broken router for the conformance suite: it must fail `deterministic` and pass every other
//! check. It plans with the default waterfall, then shuffles the attempts by hashing their
//! channel ids with `std`'s `RandomState`, whose keys come from the host's `wasi:random` when an
//! instance starts and change with every `RandomState` built after — randomness from outside the request's seed, so the same request and
//! seed give different orders (store F's `gpt-4o` plan has four attempts: two runs agree with
//! probability 1/24 per seed). The attempts themselves are the waterfall's, so every plan stays
//! legal, under the ceiling and within the groups.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use monoize_plugin::router::{Plan, RouteError, RouteRequest, Router};

struct NondeterministicRouter;

impl Router for NondeterministicRouter {
    fn route(request: RouteRequest) -> Result<Plan, RouteError> {
        let mut plan = monoize_waterfall::sdk::route(&request)?;
        let keys = RandomState::new();
        plan.attempts.sort_by_cached_key(|attempt| {
            keys.hash_one((&attempt.provider_id, &attempt.channel_id))
        });
        Ok(plan)
    }
}

monoize_plugin::register_router!(NondeterministicRouter);
