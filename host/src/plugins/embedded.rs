//! Components built from the guest workspace (`plugins/`) by `host/build.rs`: the default
//! router's, billing plugin's and dashboard plugin's bytes embedded in the binary
//! ([`ROUTING`], [`BILLING`], [`DASHBOARD`] — the `dashboard` world's `handle` for
//! `/api/dashboard/*`), and in [`paths`] the absolute path of every component built (the default
//! plugins and the hostile test components), one constant per crate, for tests that load them
//! from disk.

include!(concat!(env!("OUT_DIR"), "/guest_components.rs"));
