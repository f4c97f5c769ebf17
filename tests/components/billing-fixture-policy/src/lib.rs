//! The default billing policy (DESIGN §6) with one deliberate [`Fault`], for the broken billing
//! fixtures of the conformance suite: each fixture registers one fault with
//! [`register_broken_billing!`] and must fail exactly the check that fault breaks.
//!
//! The price arithmetic is the default plugin's own [`price`] module, compiled in from its
//! source file rather than depended on, so every fixture prices exactly as the default plugin
//! does and only its fault differs.

#[path = "../../../../plugins/billing/src/price.rs"]
pub mod price;

#[doc(hidden)]
pub use monoize_plugin;

use monoize_plugin::billing::billing_store::{self, Adjustment, ChargeRequest};
use monoize_plugin::billing::{
    AuthorizeError, AuthorizeRequest, EndpointKind, SettleError, SettleRequest, Settlement,
    StoreError,
};

use crate::price::{Billed, CostError, MULTIPLIER_ONE, Prices, Tokens};

/// The one thing a broken fixture gets wrong, and the check it must fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `authorize` lets a limited account at exactly zero go upstream
    /// (`authorize-at-or-below-zero`).
    ZeroBalanceAllowed,
    /// `authorize` refuses limited balances below 1,000 nano-USD (`authorize-funded`).
    NeedsCushion,
    /// `settle` refuses to charge a limited account at or below zero (`settle-overdraws`).
    RefusesInDebt,
    /// `settle` debits an unlimited account through an adjustment (`unlimited-not-debited`).
    DebitsUnlimited,
    /// `settle` charges a model without pricing 1 nano-USD per token
    /// (`no-charge-without-pricing`).
    ChargesUnpriced,
    /// `settle` credits 1 nano-USD for a request with no usage (`no-negative-charge`).
    CreditsZeroUsage,
    /// `settle` records each charge under a fresh id, so a repeated settle charges again
    /// (`idempotent-settle`).
    ChargesEveryRetry,
    /// `settle` ignores the attempt's multiplier (`reference-exact-charges`).
    IgnoresMultiplier,
}

/// Registers a billing component whose policy is the default one with `$fault`.
#[macro_export]
macro_rules! register_broken_billing {
    ($fault:expr) => {
        struct BrokenBilling;

        impl $crate::monoize_plugin::billing::Billing for BrokenBilling {
            fn authorize(
                request: $crate::monoize_plugin::billing::AuthorizeRequest,
            ) -> Result<(), $crate::monoize_plugin::billing::AuthorizeError> {
                $crate::authorize(&request, $fault)
            }

            fn settle(
                request: $crate::monoize_plugin::billing::SettleRequest,
            ) -> Result<
                $crate::monoize_plugin::billing::Settlement,
                $crate::monoize_plugin::billing::SettleError,
            > {
                $crate::settle(&request, $fault)
            }
        }

        $crate::monoize_plugin::register_billing!(BrokenBilling);
    };
}

/// `authorize` with `fault`.
pub fn authorize(request: &AuthorizeRequest, fault: Fault) -> Result<(), AuthorizeError> {
    let account = billing_store::get_account(&request.user_id)
        .map_err(|error| AuthorizeError::Denied(describe(&error)))?
        .ok_or_else(|| AuthorizeError::Denied(format!("unknown account {}", request.user_id)))?;
    let lowest_refused = match fault {
        Fault::ZeroBalanceAllowed => -1,
        Fault::NeedsCushion => 999,
        _ => 0,
    };
    if account.unlimited || account.balance > lowest_refused {
        Ok(())
    } else {
        Err(AuthorizeError::InsufficientBalance(format!(
            "the balance is {} nano-USD",
            account.balance
        )))
    }
}

/// `settle` with `fault`.
pub fn settle(request: &SettleRequest, fault: Fault) -> Result<Settlement, SettleError> {
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
    let multiplier = match fault {
        Fault::IgnoresMultiplier => MULTIPLIER_ONE,
        _ => request.attempt.multiplier,
    };
    let computed = price_of(request, &tokens, billed, multiplier)?;
    let priced = computed.is_some();
    let cost = match (computed, fault) {
        (Some(cost), _) => cost,
        (None, Fault::ChargesUnpriced) => {
            i64::try_from(tokens.prompt.saturating_add(tokens.completion)).unwrap_or(i64::MAX)
        }
        (None, _) => 0,
    };
    let account = billing_store::get_account(&request.user_id)
        .map_err(|error| SettleError::Storage(describe(&error)))?
        .ok_or_else(|| SettleError::UnknownAccount(request.user_id.clone()))?;
    if fault == Fault::RefusesInDebt && !account.unlimited && account.balance <= 0 {
        return Err(SettleError::Storage(
            "the balance cannot cover this request".to_owned(),
        ));
    }
    let request_id = match fault {
        Fault::ChargesEveryRetry => {
            let rows = billing_store::list_ledger(Some(&request.user_id), 1000, None)
                .map_err(|error| SettleError::Storage(describe(&error)))?;
            format!("{}#{}", request.request_id, rows.len())
        }
        _ => request.request_id.clone(),
    };
    let entry = billing_store::charge(&ChargeRequest {
        request_id,
        user_id: request.user_id.clone(),
        amount: cost,
        meta_json: "{}".to_owned(),
    })
    .map_err(|error| SettleError::Storage(describe(&error)))?;
    let mut charged = 0i64.saturating_sub(entry.delta).max(0);
    let credit = match fault {
        Fault::DebitsUnlimited if account.unlimited => 0i64.saturating_sub(cost),
        Fault::CreditsZeroUsage if tokens.prompt == 0 && tokens.completion == 0 => 1,
        _ => 0,
    };
    if credit != 0 {
        billing_store::adjust(&request.user_id, Adjustment::Add(credit), "{}")
            .map_err(|error| SettleError::Storage(describe(&error)))?;
        charged = charged.saturating_sub(credit).max(0);
    }
    Ok(Settlement {
        cost,
        charged,
        priced,
    })
}

/// The cost at the first usable pricing of the upstream model, then the logical one.
fn price_of(
    request: &SettleRequest,
    tokens: &Tokens,
    billed: Billed,
    multiplier: u64,
) -> Result<Option<i64>, SettleError> {
    for model in price::lookup_order(&request.attempt.upstream_model, &request.model) {
        let pricing = billing_store::get_pricing(model)
            .map_err(|error| SettleError::Storage(describe(&error)))?;
        let Some(pricing) = pricing else { continue };
        let prices = Prices {
            input: pricing.input,
            output: pricing.output,
            cache_read_input: pricing.cache_read_input,
            reasoning_output: pricing.reasoning_output,
        };
        if prices.can_price(billed) {
            return match price::cost(tokens, &prices, billed, multiplier) {
                Ok(cost) => Ok(Some(cost)),
                Err(CostError::Overflow(message)) => Err(SettleError::Overflow(message)),
                Err(CostError::MissingPrice(_)) => Ok(None),
            };
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
