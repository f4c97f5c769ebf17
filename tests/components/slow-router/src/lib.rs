//! A broken router for the conformance suite: it must fail `large-store` and pass every other
//! check. Before planning with the default waterfall it busy-waits 150 µs of wall time per
//! candidate (measured with `std::time::Instant`, the host's monotonic clock): store F's few
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
        let candidates = routing_store::candidates(&request.model, request.endpoint);
        for _ in &candidates {
            let start = Instant::now();
            while start.elapsed() < PER_CANDIDATE {
                black_box(());
            }
        }
        monoize_waterfall::sdk::route(&request, &candidates)
    }
}

monoize_plugin::register_router!(SlowRouter);
