//! The request pipeline: authenticate → authorize → route → forward → settle → log, one
//! module per phase. Each phase is found by its name.

pub mod route;
