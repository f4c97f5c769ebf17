//! The default Monoize billing plugin (DESIGN §6).
//!
//! - `authorize`: an unknown account is denied; a limited account whose balance is at or below
//!   zero is refused with `insufficient-balance`; everything else may go upstream.
//! - `settle`: prices are looked up by the upstream model that served the request, falling back
//!   to the logical model; the cost is computed exactly in integers ([`price`]) and charged
//!   through `billing-store.charge` with a ledger meta that explains it ([`meta`]). A served
//!   request is charged in full even when that takes the balance below zero (the host does
//!   that part); an unlimited account gets a row with delta 0.
//!
//! A model without usable pricing is not charged: `settle` logs a warning, answers
//! `priced: false`, and still writes a ledger row with amount 0 whose meta records the usage
//! and `"priced": false`. That row keeps every served request on the ledger (an operator can
//! find and bill unpriced traffic later), keeps a repeated settle of the request idempotent,
//! and leaves balance = sum of deltas untouched.
//!
//! [`price`] and [`meta`] are plain Rust, tested natively; the component glue is behind the
//! default feature `component`.

pub mod meta;
pub mod price;

#[cfg(feature = "component")]
mod component;
