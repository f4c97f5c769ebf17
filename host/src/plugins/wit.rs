//! The WIT versions this host speaks. Each version has one module that runs `bindgen!` on its
//! frozen folder under `wit/`; host logic is written once against [`latest`], and an older
//! version (when there is one) forwards to it.

pub mod since_v0_1_0;

pub use since_v0_1_0 as latest;
