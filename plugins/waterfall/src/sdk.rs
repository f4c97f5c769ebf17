//! The waterfall over the plugin SDK's router types (feature `sdk`).
//!
//! [`route`] is the default router: it reads the request's candidates from the host page by
//! page — stopping as soon as the pages read offer `max_attempts` healthy attempts, since the
//! providers after them could change nothing — converts them to the plain types of this crate,
//! runs [`plan`](crate::plan) and converts the answer back: a [`Plan`] or a [`RouteError`]
//! carrying a message for the operator's log. A custom router that changes the order reads every
//! candidate (`routing_store::all_candidates`), reorders or drops some, and hands them to
//! [`route_over`]:
//!
//! ```ignore
//! use monoize_plugin::router::{routing_store, Plan, RouteError, RouteRequest, Router};
//!
//! struct Cheapest;
//!
//! impl Router for Cheapest {
//!     fn route(request: RouteRequest) -> Result<Plan, RouteError> {
//!         let mut candidates = routing_store::all_candidates(&request)
//!             .map_err(|reason| monoize_waterfall::sdk::refusal(reason, &request))?;
//!         candidates.sort_by_key(|candidate| candidate.multiplier); // stable
//!         monoize_waterfall::sdk::route_over(&request, &candidates)
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
    self, Candidate, EndpointKind, NoCandidate, Plan, RouteError, RouteRequest, routing_store,
};

use crate::{Error, Health};

/// How much of a model name goes into a message: a 64 KiB name must not become a 64 KiB line.
const MODEL_EXCERPT_CHARS: usize = 80;

/// The size of the first page [`route`] reads; each further page is twice the one before, so a
/// large store costs a few calls.
const FIRST_PAGE: u32 = 8;

/// The largest page [`route`] reads.
const MAX_PAGE: u32 = 512;

/// Plans `request` with the waterfall over its candidates in the store's priority order,
/// reading only the pages the plan needs.
///
/// When every usable channel is unhealthy the plan is the panic fallback, and a warning goes to
/// the host's log. Never panics.
pub fn route(request: &RouteRequest) -> Result<Plan, RouteError> {
    let max_attempts = max_attempts(request);
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut offered = 0usize;
    let mut cursor = 0;
    let mut limit = FIRST_PAGE;
    loop {
        let page = routing_store::candidates(request, cursor, limit)
            .map_err(|reason| refusal(reason, request))?;
        offered = page
            .candidates
            .iter()
            .map(healthy_attempts)
            .fold(offered, usize::saturating_add);
        candidates.extend(page.candidates);
        match page.next {
            Some(next) if next > cursor && offered < max_attempts => {
                cursor = next;
                limit = limit.saturating_mul(2).min(MAX_PAGE);
            }
            _ => break,
        }
    }
    route_over(request, &candidates)
}

/// Plans `request` with the waterfall over `candidates`, in the order given (as
/// `routing_store::candidates` answers them, or reordered). An empty list is
/// [`RouteError::UnknownModel`]; a router that got its candidates from the host turns the host's
/// reason for an empty answer into an error with [`refusal`] instead.
pub fn route_over(request: &RouteRequest, candidates: &[Candidate]) -> Result<Plan, RouteError> {
    let plain: Vec<crate::Candidate<'_>> = candidates.iter().map(candidate).collect();
    let wanted = crate::Request {
        model: &request.model,
        max_multiplier: request.max_multiplier,
        groups: request.groups.as_deref(),
        seed: request.seed,
        max_attempts: max_attempts(request),
    };
    let model = request.model.as_str();
    match crate::plan(&wanted, &plain) {
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

/// The route error for the host's reason that no candidate passes `request`'s filters.
pub fn refusal(reason: NoCandidate, request: &RouteRequest) -> RouteError {
    let error = match reason {
        NoCandidate::UnknownModel => Error::UnknownModel,
        NoCandidate::NotPermitted => Error::NotPermitted,
        NoCandidate::NoUsableChannel => Error::NoAvailableChannel,
    };
    route_error(error, &request.model, request.endpoint)
}

/// `request.max_attempts` as a count, at least 1.
fn max_attempts(request: &RouteRequest) -> usize {
    usize::try_from(request.max_attempts)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// [`crate::healthy_attempts`] of a candidate as the host answers it: enabled and permitted,
/// with usable channels only.
fn healthy_attempts(found: &Candidate) -> usize {
    let healthy = found
        .channels
        .iter()
        .filter(|channel| channel.healthy && channel.weight > 0)
        .count();
    healthy.min(crate::retry_budget(found.max_retries))
}

fn candidate(found: &Candidate) -> crate::Candidate<'_> {
    crate::Candidate {
        provider_id: &found.provider_id,
        // The host answers only enabled providers, and only their usable channels.
        enabled: true,
        max_retries: found.max_retries,
        groups: &found.groups,
        redirect: found.redirect.as_deref(),
        multiplier: found.multiplier,
        channels: found
            .channels
            .iter()
            .map(|channel| crate::Channel {
                id: &channel.id,
                weight: channel.weight,
                enabled: true,
                health: Health {
                    healthy: channel.healthy,
                    last_failure: channel.last_failure,
                },
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
