//! A broken billing plugin for the conformance suite: the default policy, except that it
//! lets a limited account at exactly zero go upstream. It must fail `authorize-at-or-below-zero` and pass every other check.

billing_fixture_policy::register_broken_billing!(billing_fixture_policy::Fault::ZeroBalanceAllowed);
