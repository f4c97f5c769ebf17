//! The `billing` component: reads accounts and prices through `billing-store`, prices with
//! [`crate::price`], charges with a [`crate::meta::ChargeMeta`]. No arithmetic lives here.

use monoize_plugin::billing::billing_store::{self, ChargeRequest};
use monoize_plugin::billing::{
    AuthorizeError, AuthorizeRequest, Billing, EndpointKind, SettleError, SettleRequest,
    Settlement, StoreError,
};
use monoize_plugin::log;

use crate::meta::ChargeMeta;
use crate::price::{self, Billed, CostError, Prices, Tokens};

/// The default billing policy.
struct Prepaid;

impl Billing for Prepaid {
    fn authorize(request: AuthorizeRequest) -> Result<(), AuthorizeError> {
        match billing_store::get_account(&request.user_id) {
            Ok(Some(account)) if account.unlimited || account.balance > 0 => Ok(()),
            Ok(Some(account)) => Err(AuthorizeError::InsufficientBalance(format!(
                "the balance of user {} is {} nano-USD",
                account.user_id, account.balance
            ))),
            Ok(None) => Err(AuthorizeError::Denied(format!(
                "unknown account {}",
                request.user_id
            ))),
            Err(error) => Err(AuthorizeError::Denied(format!(
                "cannot read the account of user {}: {}",
                request.user_id,
                describe(&error)
            ))),
        }
    }

    fn settle(request: SettleRequest) -> Result<Settlement, SettleError> {
        let billed = match request.endpoint {
            EndpointKind::Embeddings => Billed::PromptOnly,
            _ => Billed::PromptAndCompletion,
        };
        let usage = &request.usage;
        let tokens = Tokens {
            prompt: usage.prompt_tokens,
            completion: usage.completion_tokens,
            cached_prompt: usage.cached_prompt_tokens,
            reasoning: usage.reasoning_tokens,
        };
        let attempt = &request.attempt;
        let priced = match find_pricing(&attempt.upstream_model, &request.model, billed)? {
            Some((model, prices)) => {
                match price::cost(&tokens, &prices, billed, attempt.multiplier) {
                    Ok(cost) => Some((model, cost)),
                    Err(CostError::Overflow(message)) => {
                        return Err(SettleError::Overflow(message));
                    }
                    // `find_pricing` answers only prices that can price the request.
                    Err(CostError::MissingPrice(_)) => None,
                }
            }
            None => None,
        };
        if priced.is_none() {
            log::warn(&format!(
                "no pricing for model {:?} (served as {:?}): request {} is recorded without \
                 charge",
                request.model, attempt.upstream_model, request.request_id
            ));
        }
        let cost = priced.as_ref().map_or(0, |(_, cost)| *cost);
        let meta = ChargeMeta {
            model: &request.model,
            upstream_model: &attempt.upstream_model,
            provider_id: &attempt.provider_id,
            channel_id: &attempt.channel_id,
            multiplier: attempt.multiplier,
            tokens,
            cost_nano_usd: cost,
            usage_estimated: usage.estimated,
            priced: priced.is_some(),
            pricing_model: priced.as_ref().map(|(model, _)| model.as_str()),
        };
        let entry = billing_store::charge(&ChargeRequest {
            request_id: request.request_id.clone(),
            user_id: request.user_id.clone(),
            amount: cost,
            meta_json: meta.to_json(),
        })
        .map_err(|error| match error {
            StoreError::NotFound(_) => {
                SettleError::UnknownAccount(format!("unknown account {}", request.user_id))
            }
            other => SettleError::Storage(describe(&other)),
        })?;
        Ok(Settlement {
            cost,
            // A charge's delta is minus what was taken (0 for an unlimited account).
            charged: 0i64.saturating_sub(entry.delta).max(0),
            priced: priced.is_some(),
        })
    }
}

/// The first model of [`price::lookup_order`] whose prices can price this request, with them.
fn find_pricing(
    upstream_model: &str,
    logical_model: &str,
    billed: Billed,
) -> Result<Option<(String, Prices)>, SettleError> {
    for model in price::lookup_order(upstream_model, logical_model) {
        let pricing = billing_store::get_pricing(model)
            .map_err(|error| SettleError::Storage(describe(&error)))?;
        if let Some(pricing) = pricing {
            let prices = Prices {
                input: pricing.input,
                output: pricing.output,
                cache_read_input: pricing.cache_read_input,
                reasoning_output: pricing.reasoning_output,
            };
            if prices.can_price(billed) {
                return Ok(Some((pricing.model_id, prices)));
            }
        }
    }
    Ok(None)
}

fn describe(error: &StoreError) -> String {
    match error {
        StoreError::NotFound(message) => format!("not found: {message}"),
        StoreError::Conflict(message) => format!("conflict: {message}"),
        StoreError::Invalid(message) => format!("invalid: {message}"),
        StoreError::Storage(message) => format!("storage: {message}"),
    }
}

monoize_plugin::register_billing!(Prepaid);
