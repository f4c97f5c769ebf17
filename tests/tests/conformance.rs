//! The router conformance suite (DESIGN §7) run on real components: the default router passes
//! every contract and reference check, and each broken fixture fails exactly its own check.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

use monoize::conformance::router::{self, CONTRACT_CHECKS, REFERENCE_CHECKS};
use monoize::conformance::{Outcome, Report};
use monoize::plugins::PluginLimits;
use monoize::plugins::embedded::{ROUTING, paths};
use monoize_tests::{component, engine_with};

async fn check(bytes: &[u8], reference: bool) -> Report {
    // The production limits: the suite must load components exactly as the gateway would.
    router::check(
        &engine_with(PluginLimits::default()),
        "under-test",
        bytes,
        reference,
    )
    .await
}

#[tokio::test]
async fn the_default_router_passes_every_contract_and_reference_check() {
    let report = check(ROUTING, true).await;
    assert!(report.all_passed(), "{}", report.to_text());
    assert_eq!(
        report.checks.len(),
        CONTRACT_CHECKS.len() + REFERENCE_CHECKS.len()
    );
    assert!(
        report
            .to_text()
            .ends_with(&format!("{} passed, 0 failed\n", report.checks.len()))
    );
}

#[tokio::test]
async fn a_component_with_a_forbidden_import_fails_loads_and_skips_the_rest() {
    let report = check(&component(paths::LEGACY_IMPORT_ROUTER), false).await;
    assert_eq!(report.failures(), ["loads"]);
    assert_eq!(report.skipped(), CONTRACT_CHECKS.len() - 1);
    assert!(
        report
            .to_text()
            .contains("monoize:plugin/legacy-store@0.1.0")
    );
    assert!(!report.all_passed());
}

#[tokio::test]
async fn a_plugin_that_lies_about_channels_fails_legal_plans() {
    let report = check(&component(paths::ILLEGAL_PLAN_ROUTER), false).await;
    assert!(
        report.failures().contains(&"legal-plans"),
        "{}",
        report.to_text()
    );
}

#[tokio::test]
async fn the_json_report_lists_every_check() {
    let report = check(&component(paths::TRAP_ROUTER), false).await;
    let json = report.to_json();
    assert_eq!(json["world"], "router");
    assert_eq!(
        json["checks"].as_array().map(Vec::len),
        Some(CONTRACT_CHECKS.len())
    );
    assert_eq!(
        json["passed"], 1,
        "only `loads` passes for a router that always traps"
    );
    assert!(
        matches!(&report.checks[1].outcome, Outcome::Failed(reason) if reason.contains("trapped"))
    );
}

/// Each broken fixture and the one check it is built to fail.
const BROKEN_FIXTURES: &[(&str, &str)] = &[
    (paths::REFUSE_ALL_ROUTER, "serves-a-simple-store"),
    (paths::DISABLED_CHANNEL_ROUTER, "legal-plans"),
    (paths::IGNORES_CEILING_ROUTER, "max-multiplier"),
    (paths::IGNORES_GROUPS_ROUTER, "groups"),
    (paths::UNKNOWN_MODEL_OK_ROUTER, "unknown-model"),
    (paths::EMPTY_STORE_TRAP_ROUTER, "empty-store"),
    (paths::NONDETERMINISTIC_ROUTER, "deterministic"),
    // State kept between calls: an instance serves many calls in turn.
    (paths::STATEFUL_ROUTER, "deterministic"),
    (paths::SLOW_ROUTER, "large-store"),
    (paths::NON_ASCII_TRAP_ROUTER, "hostile-input"),
];

#[tokio::test]
async fn each_broken_fixture_fails_exactly_its_check() {
    let mut covered: Vec<&str> = vec!["loads"];
    for &(path, check_name) in BROKEN_FIXTURES {
        let report = check(&component(path), false).await;
        assert_eq!(
            report.failures(),
            [check_name],
            "{path}:\n{}",
            report.to_text()
        );
        covered.push(check_name);
    }
    covered.sort_unstable();
    covered.dedup();
    let mut all = CONTRACT_CHECKS.to_vec();
    all.sort_unstable();
    assert_eq!(
        covered, all,
        "every contract check has a fixture that fails it"
    );
}

#[tokio::test]
async fn every_example_router_passes_the_contract_checks() {
    for path in [
        paths::CHEAPEST_FIRST_ROUTER,
        paths::SPREAD_ROUTER,
        paths::GROUP_PINNED_ROUTER,
    ] {
        let report = check(&component(path), false).await;
        assert!(report.all_passed(), "{path}:\n{}", report.to_text());
    }
}

// The dashboard suite: the role and secret-hiding rules of the dashboard API.

mod dashboard {
    use monoize::conformance::Report;
    use monoize::conformance::dashboard::{self, CHECKS};
    use monoize::plugins::PluginLimits;
    use monoize::plugins::embedded::{DASHBOARD, paths};
    use monoize_tests::{component, engine_with};

    async fn check(bytes: &[u8]) -> Report {
        // The production limits, as the server loads a dashboard plugin.
        dashboard::check(&engine_with(PluginLimits::default()), "under-test", bytes).await
    }

    #[tokio::test]
    async fn the_default_dashboard_passes_every_check() {
        let report = check(DASHBOARD).await;
        assert!(report.all_passed(), "{}", report.to_text());
        assert_eq!(report.checks.len(), CHECKS.len());
        assert!(
            report
                .to_text()
                .ends_with(&format!("{} passed, 0 failed\n", CHECKS.len()))
        );
        assert_eq!(report.to_json()["world"], "dashboard");
    }

    #[tokio::test]
    async fn a_router_is_not_a_dashboard_and_fails_loads() {
        let report = check(monoize::plugins::embedded::ROUTING).await;
        assert_eq!(report.failures(), ["loads"], "{}", report.to_text());
        assert_eq!(report.skipped(), CHECKS.len() - 1);
    }

    /// Each broken dashboard fixture and the one check it is built to fail.
    const BROKEN_FIXTURES: &[(&str, &str)] = &[
        (paths::USER_LISTS_USERS_DASHBOARD, "user-forbidden"),
        (paths::FOREIGN_KEY_DASHBOARD, "other-users-keys"),
        (paths::ODD_INPUT_TRAP_DASHBOARD, "bad-input"),
        (paths::LEAKS_HASH_DASHBOARD, "secrets-hidden"),
    ];

    #[tokio::test]
    async fn each_broken_dashboard_fails_exactly_its_check() {
        for &(path, check_name) in BROKEN_FIXTURES {
            let report = check(&component(path)).await;
            assert_eq!(
                report.failures(),
                [check_name],
                "{path}:\n{}",
                report.to_text()
            );
        }
    }

    #[tokio::test]
    async fn a_trap_is_reported_as_one() {
        let report = check(&component(paths::ODD_INPUT_TRAP_DASHBOARD)).await;
        let text = report.to_text();
        assert!(text.contains("FAIL bad-input: "), "{text}");
        assert!(text.contains("trap"), "{text}");
    }
}
