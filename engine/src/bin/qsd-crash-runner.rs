//! Crash-test runner (built only with the `failpoints` feature). Placeholder until the
//! crash tests land.
fn main() {}
