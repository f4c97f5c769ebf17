//! A broken billing plugin for the conformance suite: the default policy, except that it
//! refuses limited balances below 1,000 nano-USD. It must fail `authorize-funded` and pass every other check.

billing_fixture_policy::register_broken_billing!(billing_fixture_policy::Fault::NeedsCushion);
