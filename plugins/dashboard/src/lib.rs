//! The default Monoize dashboard plugin: the management API under `/api/dashboard/` (DESIGN
//! §9) and the rules of who may do what (`super_admin` ⊇ `admin` ⊇ `user`).
//!
//! Where things are:
//! - [`router`]: the route table (method, path, who may call it, handler) and the dispatch;
//! - one module per resource: [`auth`], [`users`], [`tokens`], [`providers`], [`metadata`],
//!   [`models`], [`ledger`], [`legacy`], and [`openapi`] for the document;
//! - [`http`]: the error shape, answers and body fields; [`money`]: exact money and
//!   multipliers; [`clock`]: RFC 3339 time;
//! - [`store`]: the [`store::Store`] trait, everything the handlers reach in the host. [`Host`]
//!   implements it with the host's imports and [`handle`] answers a request over it; the unit
//!   tests implement it with an in-memory fake, natively:
//!   `cargo test --manifest-path plugins/Cargo.toml -p monoize-dashboard`.
//!
//! This crate registers no export: the `dashboard` component is `plugins/dashboard-component`,
//! a few lines over [`handle`], and a broken test dashboard wraps [`handle`] the same way.
//!
//! Status codes: a bad field is 400 naming it, no session 401, a role too low 403, a missing
//! thing 404 (also another user's key), a taken name or a broken invariant 409, creates 201,
//! malformed JSON 400, an unknown route 404, a wrong method 405. Only a storage failure in the
//! host is a 500.

pub mod auth;
pub mod clock;
pub mod http;
pub mod ledger;
pub mod legacy;
pub mod metadata;
pub mod models;
pub mod money;
pub mod openapi;
pub mod providers;
pub mod router;
pub mod store;
pub mod tokens;
pub mod users;

mod host;

pub use host::{Host, handle};

#[cfg(test)]
mod tests;
