//! The monoize binary.
fn main() {}
