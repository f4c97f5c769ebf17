//! A broken billing plugin for the conformance suite: the default policy, except that it
//! charges a repeated settle of one request again. It must fail `idempotent-settle` and pass every other check.

billing_fixture_policy::register_broken_billing!(billing_fixture_policy::Fault::ChargesEveryRetry);
