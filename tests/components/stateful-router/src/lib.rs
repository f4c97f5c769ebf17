//! A broken router for the conformance suite: it must fail `deterministic` and pass every other
//! check. It plans with the default waterfall, then rotates the attempts by the number of calls
//! its instance served before, counted in a global. The host reuses an instance for the next
//! call of the same plugin, so state kept between calls changes the plan for the same request
//! and seed (store F's `gpt-4o` plan has four attempts, so two calls in a row differ). The
//! attempts themselves are the waterfall's, so every plan stays legal, under the ceiling and
//! within the groups.

use std::sync::atomic::{AtomicUsize, Ordering};

use monoize_plugin::router::{Plan, RouteError, RouteRequest, Router};

/// Calls this instance served before the current one.
static EARLIER_CALLS: AtomicUsize = AtomicUsize::new(0);

struct StatefulRouter;

impl Router for StatefulRouter {
    fn route(request: RouteRequest) -> Result<Plan, RouteError> {
        let earlier = EARLIER_CALLS.fetch_add(1, Ordering::Relaxed);
        let mut plan = monoize_waterfall::sdk::route(&request)?;
        if !plan.attempts.is_empty() {
            let turn = earlier % plan.attempts.len();
            plan.attempts.rotate_left(turn);
        }
        Ok(plan)
    }
}

monoize_plugin::register_router!(StatefulRouter);
