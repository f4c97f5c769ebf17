//! The billing conformance suite (DESIGN §7) run on real components: the default billing plugin
//! passes every contract and reference check, a router is refused at `loads`, and each broken
//! billing fixture fails exactly its own check. (A test binary of its own, beside the router
//! suite's `conformance.rs`: both suites run under the production 50 ms time bound, and running
//! them side by side in one binary only makes them compete for the same cores.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

use monoize::conformance::{Report, billing};
use monoize::plugins::PluginLimits;
use monoize::plugins::embedded::{BILLING, ROUTING, paths};
use monoize_tests::{component, engine_with};

async fn check_billing(bytes: &[u8], reference: bool) -> Report {
    // The production limits: the suite must load components exactly as the gateway would.
    billing::check(
        &engine_with(PluginLimits::default()),
        "under-test",
        bytes,
        reference,
    )
    .await
}

#[tokio::test]
async fn the_default_billing_plugin_passes_every_contract_and_reference_check() {
    let report = check_billing(BILLING, true).await;
    assert!(report.all_passed(), "{}", report.to_text());
    assert_eq!(
        report.checks.len(),
        billing::CONTRACT_CHECKS.len() + billing::REFERENCE_CHECKS.len()
    );
    assert!(
        report
            .to_text()
            .ends_with(&format!("{} passed, 0 failed\n", report.checks.len()))
    );
    assert_eq!(report.to_json()["world"], "billing");
}

#[tokio::test]
async fn a_router_checked_as_billing_fails_loads_and_skips_the_rest() {
    let report = check_billing(ROUTING, false).await;
    assert_eq!(report.failures(), ["loads"], "{}", report.to_text());
    assert_eq!(report.skipped(), billing::CONTRACT_CHECKS.len() - 1);
}

/// Each broken billing fixture and the one check it is built to fail.
const BROKEN_BILLING_FIXTURES: &[(&str, &str)] = &[
    (paths::ZERO_BALANCE_OK_BILLING, "authorize-at-or-below-zero"),
    (paths::NEEDS_CUSHION_BILLING, "authorize-funded"),
    (paths::REFUSES_IN_DEBT_BILLING, "settle-overdraws"),
    (paths::DEBITS_UNLIMITED_BILLING, "unlimited-not-debited"),
    (paths::CHARGES_UNPRICED_BILLING, "no-charge-without-pricing"),
    (paths::CREDITS_BILLING, "no-negative-charge"),
    (paths::DOUBLE_CHARGE_BILLING, "idempotent-settle"),
];

#[tokio::test]
async fn each_broken_billing_fixture_fails_exactly_its_check() {
    let mut covered: Vec<&str> = vec!["loads"];
    for &(path, check_name) in BROKEN_BILLING_FIXTURES {
        let report = check_billing(&component(path), false).await;
        assert_eq!(
            report.failures(),
            [check_name],
            "{path}:\n{}",
            report.to_text()
        );
        assert!(report.to_text().contains(&format!("FAIL {check_name}: ")));
        covered.push(check_name);
    }
    covered.sort_unstable();
    let mut all = billing::CONTRACT_CHECKS.to_vec();
    all.sort_unstable();
    assert_eq!(
        covered, all,
        "every contract check has a fixture that fails it"
    );
}

#[tokio::test]
async fn a_billing_plugin_that_ignores_the_multiplier_fails_only_the_exact_charges() {
    let path = paths::IGNORES_MULTIPLIER_BILLING;
    let contract = check_billing(&component(path), false).await;
    assert!(contract.all_passed(), "{}", contract.to_text());
    let reference = check_billing(&component(path), true).await;
    assert_eq!(
        reference.failures(),
        ["reference-exact-charges"],
        "{}",
        reference.to_text()
    );
}
