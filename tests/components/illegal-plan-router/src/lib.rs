//! A hostile router for the host's tests: it plans an attempt the host must refuse.
//!
//! Among the candidates it looks for a channel that is disabled or has weight 0 and plans it.
//! When there is none, it plans a made-up channel id (`no-such-channel`) on the first candidate,
//! or on a made-up provider (`no-such-provider`) when there is no candidate at all.

use monoize_plugin::router::{Attempt, Plan, RouteError, RouteRequest, Router, routing_store};

struct IllegalPlanRouter;

impl Router for IllegalPlanRouter {
    fn route(request: RouteRequest) -> Result<Plan, RouteError> {
        let candidates = routing_store::candidates(&request.model, request.endpoint);
        let unusable = candidates.iter().find_map(|candidate| {
            candidate
                .channels
                .iter()
                .find(|channel| !channel.enabled || channel.weight == 0)
                .map(|channel| (candidate, channel.id.clone()))
        });
        let attempt = match (unusable, candidates.first()) {
            (Some((candidate, channel_id)), _) => Attempt {
                provider_id: candidate.provider_id.clone(),
                channel_id,
                upstream_model: request.model.clone(),
                multiplier: candidate.entry.multiplier,
            },
            (None, Some(candidate)) => Attempt {
                provider_id: candidate.provider_id.clone(),
                channel_id: "no-such-channel".to_owned(),
                upstream_model: request.model.clone(),
                multiplier: candidate.entry.multiplier,
            },
            (None, None) => Attempt {
                provider_id: "no-such-provider".to_owned(),
                channel_id: "no-such-channel".to_owned(),
                upstream_model: request.model.clone(),
                multiplier: 1_000_000_000,
            },
        };
        Ok(Plan {
            attempts: vec![attempt],
        })
    }
}

monoize_plugin::register_router!(IllegalPlanRouter);
