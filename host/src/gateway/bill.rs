//! The two billing phases of the pipeline, one call each: [`authorize`] before routing and
//! [`settle`] after an upstream served the request, with the usage already extracted.

use std::time::Instant;

use crate::app::AppState;
use crate::billing::{AuthorizeRequest, BillingFailure, RequestKey, SettleRequest, Usage};
use crate::db::stored_responses::{ResponseOwner, StoredResponse};
use crate::metrics::PluginCall;
use crate::routing::{Attempt, EndpointKind};

use super::error::GatewayError;
use super::wire::ReportedUsage;
use super::wire::prompt_size::BYTES_PER_TOKEN;

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
    /// The API key that made the request (its charge records it, and is taken from its quota
    /// when that is limited).
    pub key: RequestKey,
    /// The input tokens estimated from the request (see [`super::wire::prompt_size`]), billed
    /// when no upstream reported them.
    pub estimated_prompt_tokens: u64,
}

/// The authorize phase: may this request go upstream?
pub async fn authorize(state: &AppState, context: &BillingContext) -> Result<(), GatewayError> {
    let request = AuthorizeRequest {
        request_id: context.request_id.clone(),
        user_id: context.user_id.clone(),
        model: context.model.clone(),
        endpoint: context.endpoint,
    };
    let started = Instant::now();
    let answer = state.billing.authorize(&request).await;
    let failed = matches!(
        answer,
        Err(BillingFailure::Plugin(_) | BillingFailure::Fault(_))
    );
    let plugin = state.billing.plugin().name();
    state
        .metrics
        .plugin_call(plugin, PluginCall::Authorize, started.elapsed(), failed);
    match answer {
        Ok(()) => Ok(()),
        Err(BillingFailure::InsufficientBalance(message)) => {
            Err(GatewayError::InsufficientBalance(message))
        }
        Err(BillingFailure::Denied(message)) => Err(GatewayError::BillingDenied(message)),
        Err(BillingFailure::Plugin(error)) => Err(GatewayError::Internal(error.to_string())),
        Err(BillingFailure::Fault(message)) => Err(GatewayError::Internal(message)),
    }
}

/// The usage to bill: the reported one, else an estimate (marked `estimated`): the request's
/// `estimated_prompt_tokens` in, a token per [`BYTES_PER_TOKEN`] of the answer out.
pub fn usage_or_estimate(
    reported: Option<Usage>,
    estimated_prompt_tokens: u64,
    response_bytes: u64,
) -> Usage {
    reported.unwrap_or_else(|| estimated(estimated_prompt_tokens, response_bytes / BYTES_PER_TOKEN))
}

/// An estimated usage of `prompt_tokens` and `completion_tokens`.
fn estimated(prompt_tokens: u64, completion_tokens: u64) -> Usage {
    Usage {
        prompt_tokens,
        completion_tokens,
        cached_prompt_tokens: None,
        reasoning_tokens: None,
        estimated: true,
    }
}

/// The usage to bill for a stream: the reported one; else an estimate, whose output is the
/// generated text streamed (`text_streamed` bytes, a token per [`BYTES_PER_TOKEN`] begun) and
/// whose input is the counted one when the stream counted its input only (an Anthropic stream
/// that ended before its `message_delta`: billing its `message_start`'s token or so of output
/// would hand out the rest of a cut stream for free), else the request's
/// `estimated_prompt_tokens`.
pub fn stream_usage_or_estimate(
    reported: ReportedUsage,
    estimated_prompt_tokens: u64,
    text_streamed: u64,
) -> Usage {
    let output = text_streamed.div_ceil(BYTES_PER_TOKEN);
    match reported {
        ReportedUsage::Whole(usage) => usage,
        ReportedUsage::InputOnly(usage) => Usage {
            completion_tokens: usage.completion_tokens.max(output),
            reasoning_tokens: None,
            estimated: true,
            ..usage
        },
        ReportedUsage::Nothing => estimated(estimated_prompt_tokens, output),
    }
}

/// The settle phase: charge `usage` for the request `attempt` served (recording, when the
/// answer was a Responses API response stored upstream, `stored_response_id` as the user's on
/// that channel), and answer once the charge is committed whether it was recorded. Never refuses: a served request is billed
/// (DESIGN §6). A failure (a plugin fault, the database) is logged and answered `false`, and
/// the caller then keeps the response's last byte back: nothing delivered goes unbilled.
pub async fn settle(
    state: &AppState,
    context: &BillingContext,
    attempt: &Attempt,
    usage: Usage,
    stored_response_id: Option<&str>,
) -> bool {
    if let Some(response_id) = stored_response_id {
        // Known in memory at once; in the database with the charge.
        state
            .gateway
            .affinity
            .remember(response_id, &context.user_id, attempt);
    }
    let stored_response = stored_response_id.map(|response_id| StoredResponse {
        response_id: response_id.to_owned(),
        owner: ResponseOwner {
            user_id: context.user_id.clone(),
            provider_id: attempt.provider_id.clone(),
            channel_id: attempt.channel_id.clone(),
        },
    });
    let request = SettleRequest {
        request_id: context.request_id.clone(),
        user_id: context.user_id.clone(),
        model: context.model.clone(),
        endpoint: context.endpoint,
        attempt: attempt.clone(),
        usage,
    };
    let started = Instant::now();
    let settled = state
        .billing
        .settle_for_request(request, context.key.clone(), stored_response)
        .await;
    let took = started.elapsed();
    let plugin = state.billing.plugin().name();
    state
        .metrics
        .plugin_call(plugin, PluginCall::Settle, took, settled.is_err());
    if settled.is_ok() {
        state.metrics.charge_committed(took);
    }
    match settled {
        Ok(settlement) => {
            tracing::debug!(
                request_id = %context.request_id,
                cost = %settlement.cost.0,
                charged = %settlement.charged.0,
                priced = settlement.priced,
                estimated = usage.estimated,
                "settled"
            );
            if context.key.quota_limited {
                state
                    .gateway
                    .auth
                    .note_charge(&context.key.key_id, settlement.cost);
            }
            true
        }
        Err(error) => {
            tracing::error!(
                request_id = %context.request_id,
                user_id = %context.user_id,
                %error,
                "a served request could not be settled; its end is withheld"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(prompt: u64, completion: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_prompt_tokens: Some(2),
            reasoning_tokens: None,
            estimated: false,
        }
    }

    #[test]
    fn a_stream_that_counted_its_input_only_is_billed_that_input_and_an_estimated_output() {
        let whole = counted(5, 9);
        assert_eq!(
            stream_usage_or_estimate(ReportedUsage::Whole(whole), 400, 4_000),
            whole
        );
        let billed = stream_usage_or_estimate(ReportedUsage::InputOnly(counted(5, 1)), 400, 4_000);
        assert_eq!(
            (billed.prompt_tokens, billed.cached_prompt_tokens),
            (5, Some(2)),
            "the input as counted"
        );
        assert_eq!(
            billed.completion_tokens, 1_000,
            "the output from the bytes streamed"
        );
        assert!(billed.estimated);
        // Never below what was counted.
        let billed = stream_usage_or_estimate(ReportedUsage::InputOnly(counted(5, 30)), 400, 8);
        assert_eq!(billed.completion_tokens, 30);
        // Nothing counted: the request's own estimate in.
        let nothing = stream_usage_or_estimate(ReportedUsage::Nothing, 100, 4_000);
        assert_eq!(
            (nothing.prompt_tokens, nothing.completion_tokens),
            (100, 1_000)
        );
        assert!(nothing.estimated);
        let one_char = stream_usage_or_estimate(ReportedUsage::Nothing, 400, 1);
        assert_eq!(one_char.completion_tokens, 1, "a token begun is a token");
    }
}
