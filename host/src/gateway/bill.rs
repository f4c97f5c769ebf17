//! The two billing phases of the pipeline, one call each: [`authorize`] before routing and
//! [`settle`] after an upstream served the request, with the usage already extracted.
//!
//! Not wired to `billing::Billing` yet: `authorize` admits every request and `settle` only
//! logs the usage it would bill. Wiring is one call in each function.

use crate::app::AppState;
use crate::billing::Usage;
use crate::routing::{Attempt, EndpointKind};

use super::error::GatewayError;

/// Bytes per token of the crude estimate used when an upstream never reported usage.
const BYTES_PER_TOKEN: u64 = 4;

/// What both phases know about the request.
#[derive(Debug, Clone)]
pub struct BillingContext {
    /// The request's id (a settle is idempotent by it).
    pub request_id: String,
    /// The key's owner.
    pub user_id: String,
    /// The logical model asked for.
    pub model: String,
    /// The endpoint it arrived on.
    pub endpoint: EndpointKind,
    /// The size of the client's request body, for an estimate.
    pub request_bytes: u64,
}

/// The authorize phase: may this request go upstream?
pub async fn authorize(_state: &AppState, context: &BillingContext) -> Result<(), GatewayError> {
    tracing::trace!(request_id = %context.request_id, "authorize: billing not wired yet");
    Ok(())
}

/// The usage to bill: the reported one, else an estimate from the bytes that went each way
/// (marked `estimated`).
pub fn usage_or_estimate(
    reported: Option<Usage>,
    request_bytes: u64,
    response_bytes: u64,
) -> Usage {
    reported.unwrap_or(Usage {
        prompt_tokens: request_bytes / BYTES_PER_TOKEN,
        completion_tokens: response_bytes / BYTES_PER_TOKEN,
        cached_prompt_tokens: None,
        reasoning_tokens: None,
        estimated: true,
    })
}

/// The settle phase: charge `usage` for the request `attempt` served. Never refuses: a
/// served request is billed (DESIGN §6); a failure is logged.
pub async fn settle(_state: &AppState, context: &BillingContext, attempt: &Attempt, usage: Usage) {
    tracing::debug!(
        request_id = %context.request_id,
        user_id = %context.user_id,
        model = %context.model,
        upstream_model = %attempt.upstream_model,
        multiplier = %attempt.multiplier,
        prompt_tokens = usage.prompt_tokens,
        completion_tokens = usage.completion_tokens,
        estimated = usage.estimated,
        "settle: billing not wired yet"
    );
}
