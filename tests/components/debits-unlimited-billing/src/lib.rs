//! A broken billing plugin for the conformance suite: the default policy, except that it
//! debits unlimited accounts. It must fail `unlimited-not-debited` and pass every other check.

billing_fixture_policy::register_broken_billing!(billing_fixture_policy::Fault::DebitsUnlimited);
