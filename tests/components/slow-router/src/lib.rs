//! A broken router for the conformance suite: it must fail `large-store` and pass every other
//! check. It reads every candidate, and before planning over them with the default waterfall it
//! busy-waits 150 µs of wall time per candidate (measured with `std::time::Instant`, the host's monotonic clock): store F's few
//! candidates cost well under a millisecond, but the large store's 1,000 cost 150 ms, three times
//! the production time bound of 50 ms, so the host interrupts the call.

use std::hint::black_box;
use std::time::{Duration, Instant};

use monoize_plugin::router::{Plan, RouteError, RouteRequest, Router, routing_store};

/// The wall time wasted per candidate.
const PER_CANDIDATE: Duration = Duration::from_micros(150);

struct SlowRouter;

impl Router for SlowRouter {
    fn route(request: RouteRequest) -> Result<Plan, RouteError> {
        let candidates = routing_store::all_candidates(&request)
            .map_err(|reason| monoize_waterfall::sdk::refusal(reason, &request))?;
        for _ in &candidates {
            let start = Instant::now();
            while start.elapsed() < PER_CANDIDATE {
                black_box(());
            }
        }
        monoize_waterfall::sdk::route_over(&request, &candidates)
    }
}

monoize_plugin::register_router!(SlowRouter);
