//! The Monoize host: configuration, SQLite storage, the WebAssembly plugin runtime and the
//! HTTP server. Data flows one way: `config` → `db` → `routing` → `plugins` → `gateway` and
//! `dashboard` → `server`;
//! the `monoize` binary (`main.rs`) only parses the command line and calls in here.

pub mod app;
pub mod billing;
pub mod cidr;
pub mod cli;
pub mod config;
pub mod conformance;
pub mod dashboard;
pub mod db;
pub mod gateway;
pub mod metrics;
pub mod money;
pub mod parking;
pub mod plugins;
pub mod routing;
pub mod secret;
pub mod server;
