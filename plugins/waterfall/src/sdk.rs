//! The waterfall over the plugin SDK's router types (feature `sdk`).
//!
//! [`route`] takes the request and the candidates as `routing_store::candidates` answers them,
//! converts them to the plain types of this crate, asks the host for health once, runs
//! [`plan`](crate::plan) and converts the answer back: a [`Plan`] or a [`RouteError`] carrying a
//! message for the operator's log. It is exactly what the default router does, so a custom
//! router can change what the waterfall sees — reorder the candidates, drop some, adjust the
//! request — and leave the rest to it:
//!
//! ```ignore
//! use monoize_plugin::router::{routing_store, Plan, RouteError, RouteRequest, Router};
//!
//! struct Cheapest;
//!
//! impl Router for Cheapest {
//!     fn route(request: RouteRequest) -> Result<Plan, RouteError> {
//!         let mut candidates = routing_store::candidates(&request.model, request.endpoint);
//!         candidates.sort_by_key(|candidate| candidate.entry.multiplier); // stable
//!         monoize_waterfall::sdk::route(&request, &candidates)
//!     }
//! }
//!
//! monoize_plugin::register_router!(Cheapest);
//! ```
//!
//! The waterfall walks the candidates in the order given; whatever that order, it plans only
//! attempts the host accepts (enabled provider within the ceiling and the groups, enabled channel
//! of weight > 0, the entry's multiplier and upstream model).

use monoize_plugin::log;
use monoize_plugin::router::{
    self, Candidate, EndpointKind, Plan, RouteError, RouteRequest, health,
};

use crate::{Error, Health};

/// How much of a model name goes into a message: a 64 KiB name must not become a 64 KiB line.
const MODEL_EXCERPT_CHARS: usize = 80;

/// Plans `request` over `candidates` (in the order the waterfall should walk them) with the
/// waterfall, asking the host for the health of every usable channel once.
///
/// When every usable channel is unhealthy the plan is the panic fallback, and a warning goes to
/// the host's log. Never panics.
pub fn route(request: &RouteRequest, candidates: &[Candidate]) -> Result<Plan, RouteError> {
    let plain: Vec<crate::Candidate<'_>> = candidates.iter().map(candidate).collect();
    let wanted = crate::Request {
        model: &request.model,
        max_multiplier: request.max_multiplier,
        groups: request.groups.as_deref(),
        seed: request.seed,
        max_attempts: usize::try_from(request.max_attempts).unwrap_or(usize::MAX),
    };
    let model = request.model.as_str();
    let planned = crate::plan(&wanted, &plain, |ids| {
        health::channels(model, ids)
            .into_iter()
            .map(|answer| Health {
                healthy: answer.healthy,
                last_failure: answer.last_failure,
            })
            .collect()
    });
    match planned {
        Ok(plan) => {
            if plan.fallback {
                log::warn(&format!(
                    "every usable channel for model {} is unhealthy; trying them anyway, \
                     least recently failed first",
                    excerpt(model)
                ));
            }
            Ok(Plan {
                attempts: plan.attempts.iter().map(attempt).collect(),
            })
        }
        Err(error) => Err(route_error(error, model, request.endpoint)),
    }
}

fn candidate(found: &Candidate) -> crate::Candidate<'_> {
    crate::Candidate {
        provider_id: &found.provider_id,
        enabled: found.enabled,
        max_retries: found.max_retries,
        groups: &found.groups,
        redirect: found.entry.redirect.as_deref(),
        multiplier: found.entry.multiplier,
        channels: found
            .channels
            .iter()
            .map(|channel| crate::Channel {
                id: &channel.id,
                weight: channel.weight,
                enabled: channel.enabled,
            })
            .collect(),
    }
}

fn attempt(planned: &crate::Attempt<'_>) -> router::Attempt {
    router::Attempt {
        provider_id: planned.provider_id.to_owned(),
        channel_id: planned.channel_id.to_owned(),
        upstream_model: planned.upstream_model.to_owned(),
        multiplier: planned.multiplier,
    }
}

fn route_error(error: Error, model: &str, endpoint: EndpointKind) -> RouteError {
    let message = format!(
        "{error} (model {}, endpoint {})",
        excerpt(model),
        endpoint_name(endpoint)
    );
    match error {
        Error::UnknownModel => RouteError::UnknownModel(message),
        Error::NotPermitted => RouteError::NotPermitted(message),
        Error::NoAvailableChannel => RouteError::NoAvailableChannel(message),
    }
}

/// The model name quoted and escaped (control characters included), cut to a readable length.
pub fn excerpt(model: &str) -> String {
    match model.char_indices().nth(MODEL_EXCERPT_CHARS) {
        Some((end, _)) => format!(
            "{:?}… ({} bytes)",
            model.get(..end).unwrap_or_default(),
            model.len()
        ),
        None => format!("{model:?}"),
    }
}

/// The endpoint's name as the WIT spells it.
pub fn endpoint_name(endpoint: EndpointKind) -> &'static str {
    match endpoint {
        EndpointKind::ChatCompletions => "chat-completions",
        EndpointKind::Responses => "responses",
        EndpointKind::Embeddings => "embeddings",
        EndpointKind::Messages => "messages",
    }
}
