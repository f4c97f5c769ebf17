//! A broken billing plugin for the conformance suite: the default policy, except that it
//! refuses to charge a served request to a limited account at or below zero. It must fail `settle-overdraws` and pass every other check.

billing_fixture_policy::register_broken_billing!(billing_fixture_policy::Fault::RefusesInDebt);
