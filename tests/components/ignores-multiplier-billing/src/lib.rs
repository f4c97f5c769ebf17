//! A broken billing plugin for the conformance suite: the default policy, except that it
//! ignores the attempt's multiplier. It must fail `reference-exact-charges` and pass every other check.

billing_fixture_policy::register_broken_billing!(billing_fixture_policy::Fault::IgnoresMultiplier);
