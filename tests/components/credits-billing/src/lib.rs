//! A broken billing plugin for the conformance suite: the default policy, except that it
//! credits 1 nano-USD for a request with no usage. It must fail `no-negative-charge` and pass every other check.

billing_fixture_policy::register_broken_billing!(billing_fixture_policy::Fault::CreditsZeroUsage);
