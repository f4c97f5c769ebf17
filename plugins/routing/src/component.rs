//! The `router` component: reads candidates and health through the SDK, converts them to the
//! plain types of [`waterfall`], and converts the plan back. No policy lives here.

use monoize_plugin::log;
use monoize_plugin::router::{
    self, Candidate, EndpointKind, Plan, RouteError, RouteRequest, Router, health, routing_store,
};

use crate::waterfall::{self, Error, Health};

/// How much of a model name goes into a message: a 64 KiB name must not become a 64 KiB line.
const MODEL_EXCERPT_CHARS: usize = 80;

/// The default router.
struct Waterfall;

impl Router for Waterfall {
    fn route(request: RouteRequest) -> Result<Plan, RouteError> {
        let found = routing_store::candidates(&request.model, request.endpoint);
        let candidates: Vec<waterfall::Candidate<'_>> = found.iter().map(candidate).collect();
        let wanted = waterfall::Request {
            model: &request.model,
            max_multiplier: request.max_multiplier,
            groups: request.groups.as_deref(),
            seed: request.seed,
        };
        let model = request.model.as_str();
        let planned = waterfall::plan(&wanted, &candidates, |ids| {
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
}

monoize_plugin::register_router!(Waterfall);

fn candidate(found: &Candidate) -> waterfall::Candidate<'_> {
    waterfall::Candidate {
        provider_id: &found.provider_id,
        enabled: found.enabled,
        max_retries: found.max_retries,
        groups: &found.groups,
        redirect: found.entry.redirect.as_deref(),
        multiplier: found.entry.multiplier,
        channels: found
            .channels
            .iter()
            .map(|channel| waterfall::Channel {
                id: &channel.id,
                weight: channel.weight,
                enabled: channel.enabled,
            })
            .collect(),
    }
}

fn attempt(planned: &waterfall::Attempt<'_>) -> router::Attempt {
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
fn excerpt(model: &str) -> String {
    match model.char_indices().nth(MODEL_EXCERPT_CHARS) {
        Some((end, _)) => format!(
            "{:?}… ({} bytes)",
            model.get(..end).unwrap_or_default(),
            model.len()
        ),
        None => format!("{model:?}"),
    }
}

fn endpoint_name(endpoint: EndpointKind) -> &'static str {
    match endpoint {
        EndpointKind::ChatCompletions => "chat-completions",
        EndpointKind::Responses => "responses",
        EndpointKind::Embeddings => "embeddings",
        EndpointKind::Messages => "messages",
    }
}
