//! Billing plugins: the `billing` world of `monoize:plugin@0.1.0`.
//!
//! A billing plugin decides whether a request may go upstream ([`Billing::authorize`], called
//! before routing) and computes and records the charge of a served one ([`Billing::settle`]).
//! It reaches balances, prices and the ledger through [`billing_store`], whose functions are the
//! generated bindings as they are: every call is one host transaction.
//!
//! Implement [`Billing`] and register it with [`register_billing!`](crate::register_billing).

use crate::__private::billing as bindings;

/// Balances, prices and the append-only ledger (`monoize:plugin/billing-store`), as generated.
pub use bindings::monoize::plugin::billing_store;
pub use bindings::monoize::plugin::types::{
    Attempt, AuthorizeError, AuthorizeRequest, Decimal, EndpointKind, NanoUsd, SettleError,
    SettleRequest, Settlement, StoreError, Usage,
};

/// A billing policy.
///
/// Exactly one type per component implements it, registered with
/// [`register_billing!`](crate::register_billing).
pub trait Billing {
    /// Whether this request may go upstream; called before routing. Must not panic.
    fn authorize(request: AuthorizeRequest) -> Result<(), AuthorizeError>;

    /// Computes and records the charge of a served request. A served request is always charged
    /// in full; an error is a fault, never a refusal. Must not panic.
    fn settle(request: SettleRequest) -> Result<Settlement, SettleError>;
}

/// Registers `$billing` (a type implementing [`Billing`](crate::billing::Billing)) as the
/// component's `authorize` and `settle` exports. Call it once, at the top level of a `cdylib`
/// crate that depends on `monoize-plugin` with the `billing` feature.
#[macro_export]
macro_rules! register_billing {
    ($billing:ty) => {
        #[allow(unsafe_code)]
        const _: () = {
            struct MonoizeBillingExport;

            impl $crate::__private::billing::Guest for MonoizeBillingExport {
                fn authorize(
                    request: $crate::billing::AuthorizeRequest,
                ) -> ::core::result::Result<(), $crate::billing::AuthorizeError> {
                    <$billing as $crate::billing::Billing>::authorize(request)
                }

                fn settle(
                    request: $crate::billing::SettleRequest,
                ) -> ::core::result::Result<$crate::billing::Settlement, $crate::billing::SettleError>
                {
                    <$billing as $crate::billing::Billing>::settle(request)
                }
            }

            $crate::__private::billing::__export_billing!(
                MonoizeBillingExport with_types_in $crate::__private::billing
            );
        };
    };
}
