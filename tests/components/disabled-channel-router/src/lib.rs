//! A broken router for the conformance suite: it must fail `legal-plans` and pass every other
//! check. It plans with the default waterfall, then appends, for every provider the waterfall
//! chose, that provider's disabled and zero-weight channels (at the provider's own multiplier and
//! upstream model), which it finds through `routing_store::providers` (candidates carry only
//! usable channels). Store F has such channels on a provider the waterfall chooses, so its plans
//! there are illegal; a store without them (the simple store, the large store) gets the plain
//! waterfall. Only providers the waterfall already chose get extra attempts, so the ceiling and
//! the groups still hold, and the result is as deterministic as the waterfall's. The plan stays
//! within the request's `max_attempts`: when the extra attempts would not fit, the waterfall's
//! last attempts make room for them (the host cuts a plan at `max_attempts` before validating
//! it, so extra attempts past it would never be seen).

use monoize_plugin::router::{Attempt, Plan, RouteError, RouteRequest, Router, routing_store};

struct DisabledChannelRouter;

impl Router for DisabledChannelRouter {
    fn route(request: RouteRequest) -> Result<Plan, RouteError> {
        let mut plan = monoize_waterfall::sdk::route(&request)?;
        // The providers chosen, each with one of its attempts as a template, in plan order.
        let mut chosen: Vec<Attempt> = Vec::new();
        for attempt in &plan.attempts {
            if !chosen.iter().any(|c| c.provider_id == attempt.provider_id) {
                chosen.push(attempt.clone());
            }
        }
        let providers = routing_store::providers();
        let mut unusable_attempts: Vec<Attempt> = Vec::new();
        for template in chosen {
            let Some(provider) = providers
                .iter()
                .find(|provider| provider.id == template.provider_id)
            else {
                continue;
            };
            let unusable = provider
                .channels
                .iter()
                .filter(|channel| !channel.enabled || channel.weight == 0);
            unusable_attempts.extend(unusable.map(|channel| Attempt {
                channel_id: channel.id.clone(),
                ..template.clone()
            }));
        }
        let max_attempts = usize::try_from(request.max_attempts)
            .unwrap_or(usize::MAX)
            .max(1);
        unusable_attempts.truncate(max_attempts);
        plan.attempts
            .truncate(max_attempts.saturating_sub(unusable_attempts.len()));
        plan.attempts.append(&mut unusable_attempts);
        Ok(plan)
    }
}

monoize_plugin::register_router!(DisabledChannelRouter);
