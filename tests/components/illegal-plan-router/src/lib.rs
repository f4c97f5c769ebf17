//! A hostile router for the host's tests: it plans an attempt the host must refuse.
//!
//! Among the providers that list the model (read through `routing_store::providers`, which
//! shows what `candidates` leaves out) it looks for a channel that is disabled or has weight 0
//! and plans it. When there is none, it plans a made-up channel id (`no-such-channel`) on the
//! first such provider, or on a made-up provider (`no-such-provider`) when there is none.

use monoize_plugin::router::{Attempt, Plan, RouteError, RouteRequest, Router, routing_store};

struct IllegalPlanRouter;

impl Router for IllegalPlanRouter {
    fn route(request: RouteRequest) -> Result<Plan, RouteError> {
        let providers = routing_store::providers();
        let listing: Vec<_> = providers
            .iter()
            .filter_map(|provider| {
                let entry = provider.models.iter().find(|e| e.model == request.model)?;
                Some((provider, entry.multiplier))
            })
            .collect();
        let unusable = listing.iter().find_map(|(provider, multiplier)| {
            provider
                .channels
                .iter()
                .find(|channel| !channel.enabled || channel.weight == 0)
                .map(|channel| (provider.id.clone(), channel.id.clone(), *multiplier))
        });
        let (provider_id, channel_id, multiplier) = match (unusable, listing.first()) {
            (Some(found), _) => found,
            (None, Some((provider, multiplier))) => (
                provider.id.clone(),
                "no-such-channel".to_owned(),
                *multiplier,
            ),
            (None, None) => (
                "no-such-provider".to_owned(),
                "no-such-channel".to_owned(),
                1_000_000_000,
            ),
        };
        Ok(Plan {
            attempts: vec![Attempt {
                provider_id,
                channel_id,
                upstream_model: request.model.clone(),
                multiplier,
            }],
        })
    }
}

monoize_plugin::register_router!(IllegalPlanRouter);
