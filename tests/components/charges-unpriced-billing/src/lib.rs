//! A broken billing plugin for the conformance suite: the default policy, except that it
//! charges models without pricing 1 nano-USD per token. It must fail `no-charge-without-pricing` and pass every other check.

billing_fixture_policy::register_broken_billing!(billing_fixture_policy::Fault::ChargesUnpriced);
