//! Dashboard plugins: the `dashboard` world of `monoize:plugin@0.1.0`.
//!
//! A dashboard plugin answers the management API under `/api/dashboard/` and enforces who may
//! do what. The host resolves the session into a [`Caller`] and hands over the request; the
//! plugin reads and writes through the store interfaces, re-exported here as generated.
//!
//! Implement [`Dashboard`] and register it with [`register_dashboard!`](crate::register_dashboard).

use crate::__private::dashboard as bindings;

/// The records a [`routing_admin::ProviderView`] is made of (`Provider`, `ModelEntry`,
/// `Channel`). This world imports none of `routing-store`'s functions, only its types.
pub use bindings::monoize::plugin::routing_store;
pub use bindings::monoize::plugin::types::{
    Decimal, NanoUsd, ProviderType, Role, StoreError, TimestampMs,
};
pub use bindings::monoize::plugin::{
    billing_store, crypto, dashboard_store, legacy_store, registry_store, routing_admin,
};
pub use bindings::{Caller, HttpRequest, HttpResponse};

/// A dashboard implementation.
///
/// Exactly one type per component implements it, registered with
/// [`register_dashboard!`](crate::register_dashboard).
pub trait Dashboard {
    /// Answers one request to `/api/dashboard/*`. Must not panic: bad input is a 4xx answer.
    fn handle(request: HttpRequest) -> HttpResponse;
}

/// Registers `$dashboard` (a type implementing [`Dashboard`](crate::dashboard::Dashboard)) as
/// the component's `handle` export. Call it once, at the top level of a `cdylib` crate that
/// depends on `monoize-plugin` with the `dashboard` feature.
#[macro_export]
macro_rules! register_dashboard {
    ($dashboard:ty) => {
        #[allow(unsafe_code)]
        const _: () = {
            struct MonoizeDashboardExport;

            impl $crate::__private::dashboard::Guest for MonoizeDashboardExport {
                fn handle(
                    request: $crate::dashboard::HttpRequest,
                ) -> $crate::dashboard::HttpResponse {
                    <$dashboard as $crate::dashboard::Dashboard>::handle(request)
                }
            }

            $crate::__private::dashboard::__export_dashboard!(
                MonoizeDashboardExport with_types_in $crate::__private::dashboard
            );
        };
    };
}
