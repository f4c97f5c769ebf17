//! The default router component and hostile components, run for real in the sandbox
//! (DESIGN §3–§4): the Monoize waterfall against fixtures, host-side plan validation, and
//! plugins that trap, loop, exhaust memory, import what they may not, or lie.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

use std::collections::HashMap;
use std::time::Duration;

use monoize::db::routing::ProviderType;
use monoize::gateway::route::{RouteFailure, RoutePhase};
use monoize::plugins::embedded::{ROUTING, paths};
use monoize::plugins::{EngineSettings, PluginEngine, PluginErrorKind, PluginLimits, RouterPlugin};
use monoize::routing::{
    Attempt, EndpointKind, HealthPolicy, HealthRegistry, RouteRefusal, RouteRequest,
    RoutingSnapshot, SharedSnapshot,
};
use monoize_tests::{ProviderFixture, component, engine, engine_with, request, snapshot};
use std::sync::Arc;

fn default_router(engine: &PluginEngine) -> RouterPlugin {
    RouterPlugin::load(engine, "default-router", ROUTING).expect("the default router loads")
}

async fn plan(
    router: &RouterPlugin,
    snapshot: &Arc<RoutingSnapshot>,
    health: &HealthRegistry,
    request: &RouteRequest,
) -> Result<Vec<Attempt>, RouteRefusal> {
    router
        .route(request, Arc::clone(snapshot), health.clone())
        .await
        .expect("the default router never fails")
}

fn channels(attempts: &[Attempt]) -> Vec<&str> {
    attempts
        .iter()
        .map(|attempt| attempt.channel_id.as_str())
        .collect()
}

fn providers(attempts: &[Attempt]) -> Vec<&str> {
    let mut seen: Vec<&str> = Vec::new();
    for attempt in attempts {
        if seen.last() != Some(&attempt.provider_id.as_str()) {
            seen.push(&attempt.provider_id);
        }
    }
    seen
}

fn healthy() -> HealthRegistry {
    HealthRegistry::new(HealthPolicy::default())
}

#[tokio::test]
async fn providers_are_tried_in_priority_order() {
    let engine = engine();
    let router = default_router(&engine);
    let store = snapshot(vec![
        ProviderFixture::new("late", 20)
            .model("gpt-4o", "1")
            .channel("late-1", 1),
        ProviderFixture::new("first", 0)
            .model("gpt-4o", "1")
            .channel("first-1", 1),
        ProviderFixture::new("middle", 10)
            .model("gpt-4o", "1")
            .channel("middle-1", 1),
        ProviderFixture::new("other-model", -5)
            .model("gpt-4.1", "1")
            .channel("other-1", 1),
    ]);
    let attempts = plan(&router, &store, &healthy(), &request("gpt-4o"))
        .await
        .unwrap();
    assert_eq!(providers(&attempts), ["first", "middle", "late"]);
    assert!(
        attempts
            .iter()
            .all(|attempt| attempt.upstream_model == "gpt-4o")
    );
}

#[tokio::test]
async fn disabled_providers_and_unusable_channels_are_skipped() {
    let engine = engine();
    let router = default_router(&engine);
    let store = snapshot(vec![
        ProviderFixture::new("off", 0)
            .model("m", "1")
            .channel("off-1", 1)
            .disabled(),
        ProviderFixture::new("on", 1)
            .model("m", "1")
            .channel("on-live", 1)
            .channel("on-zero", 0)
            .channel_with("on-disabled", 5, false),
    ]);
    let attempts = plan(&router, &store, &healthy(), &request("m"))
        .await
        .unwrap();
    assert_eq!(channels(&attempts), ["on-live"]);
}

#[tokio::test]
async fn the_multiplier_ceiling_filters_providers() {
    let engine = engine();
    let router = default_router(&engine);
    let store = snapshot(vec![
        ProviderFixture::new("pricey", 0)
            .model("m", "2")
            .channel("pricey-1", 1),
        ProviderFixture::new("exact", 1)
            .model("m", "1.25")
            .channel("exact-1", 1),
        ProviderFixture::new("cheap", 2)
            .model("m", "0.3")
            .channel("cheap-1", 1),
    ]);
    let mut capped = request("m");
    capped.max_multiplier = Some("1.25".parse().unwrap());
    let attempts = plan(&router, &store, &healthy(), &capped).await.unwrap();
    assert_eq!(providers(&attempts), ["exact", "cheap"]);
    assert_eq!(attempts[0].multiplier, "1.25".parse().unwrap());

    capped.max_multiplier = Some("0.1".parse().unwrap());
    let refused = plan(&router, &store, &healthy(), &capped).await;
    assert!(
        matches!(refused, Err(RouteRefusal::NotPermitted(_))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn key_groups_decide_which_providers_are_eligible() {
    let engine = engine();
    let router = default_router(&engine);
    let store = snapshot(vec![
        ProviderFixture::new("open", 0)
            .model("m", "1")
            .channel("open-1", 1),
        ProviderFixture::new("team-a", 1)
            .model("m", "1")
            .channel("a-1", 1)
            .groups(&["a"]),
        ProviderFixture::new("team-ab", 2)
            .model("m", "1")
            .channel("ab-1", 1)
            .groups(&["a", "b"]),
    ]);
    let with_groups = |groups: Option<&[&str]>| {
        let mut req = request("m");
        req.groups = groups.map(|g| g.iter().map(|s| s.to_string()).collect());
        req
    };
    let any = plan(&router, &store, &healthy(), &with_groups(None))
        .await
        .unwrap();
    assert_eq!(providers(&any), ["open", "team-a", "team-ab"]);
    let ungrouped_only = plan(&router, &store, &healthy(), &with_groups(Some(&[])))
        .await
        .unwrap();
    assert_eq!(providers(&ungrouped_only), ["open"]);
    let team_b = plan(&router, &store, &healthy(), &with_groups(Some(&["b"])))
        .await
        .unwrap();
    assert_eq!(providers(&team_b), ["team-ab"]);
    let team_c = plan(&router, &store, &healthy(), &with_groups(Some(&["c"]))).await;
    assert!(
        matches!(team_c, Err(RouteRefusal::NotPermitted(_))),
        "{team_c:?}"
    );
}

#[tokio::test]
async fn a_redirect_names_the_upstream_model() {
    let engine = engine();
    let router = default_router(&engine);
    let store = snapshot(vec![
        ProviderFixture::new("azure", 0)
            .redirect("gpt-4o", Some("gpt-4o-2024-08-06"), "1")
            .channel("az-1", 1),
        ProviderFixture::new("blank", 1)
            .redirect("gpt-4o", Some(""), "1")
            .channel("bl-1", 1),
    ]);
    let attempts = plan(&router, &store, &healthy(), &request("gpt-4o"))
        .await
        .unwrap();
    assert_eq!(attempts[0].upstream_model, "gpt-4o-2024-08-06");
    assert_eq!(
        attempts[1].upstream_model, "gpt-4o",
        "an empty redirect is no redirect"
    );
}

#[tokio::test]
async fn the_retry_budget_bounds_attempts_per_provider() {
    let engine = engine();
    let router = default_router(&engine);
    let four = |id: &str, priority: i64, retries: i32| {
        (0..4)
            .fold(
                ProviderFixture::new(id, priority).model("m", "1"),
                |p, c| p.channel(&format!("{id}-{c}"), 1),
            )
            .max_retries(retries)
    };
    let store = snapshot(vec![
        four("none", 0, 0),
        four("one", 1, 1),
        four("all", 2, -1),
        four("ten", 3, 10),
    ]);
    let attempts = plan(&router, &store, &healthy(), &request("m"))
        .await
        .unwrap();
    let count = |provider: &str| {
        attempts
            .iter()
            .filter(|a| a.provider_id == provider)
            .count()
    };
    assert_eq!(count("none"), 1);
    assert_eq!(count("one"), 2);
    assert_eq!(count("all"), 4);
    assert_eq!(count("ten"), 4, "never more attempts than candidates");
}

#[tokio::test]
async fn unhealthy_channels_are_skipped_until_none_is_left() {
    let engine = engine();
    let router = default_router(&engine);
    let store = snapshot(vec![
        ProviderFixture::new("p", 0)
            .model("m", "1")
            .channel("sick", 1)
            .channel("well", 1),
        ProviderFixture::new("q", 1)
            .model("m", "1")
            .channel("also-sick", 1),
    ]);
    let health = healthy();
    health.trip("sick", None);
    let attempts = plan(&router, &store, &health, &request("m")).await.unwrap();
    assert_eq!(channels(&attempts), ["well", "also-sick"]);

    // Distinct failure times, so "least recently failed first" has one answer.
    std::thread::sleep(Duration::from_millis(5));
    health.trip("well", None);
    std::thread::sleep(Duration::from_millis(5));
    health.trip("also-sick", None);
    let fallback = plan(&router, &store, &health, &request("m")).await.unwrap();
    assert_eq!(
        channels(&fallback),
        ["sick", "well", "also-sick"],
        "with nothing healthy left, all are tried, least recently failed first"
    );
}

#[tokio::test]
async fn the_same_seed_gives_the_same_plan() {
    let engine = engine();
    let router = default_router(&engine);
    let store = monoize_tests::synthetic_snapshot(5, 5, "m");
    let mut req = request("m");
    req.seed = 42;
    let first = plan(&router, &store, &healthy(), &req).await.unwrap();
    let again = plan(&router, &store, &healthy(), &req).await.unwrap();
    assert_eq!(first, again);
    let differs = futures_differ(&router, &store, &req).await;
    assert!(differs, "other seeds give other channel orders");
}

async fn futures_differ(
    router: &RouterPlugin,
    store: &Arc<RoutingSnapshot>,
    base: &RouteRequest,
) -> bool {
    let first = plan(router, store, &healthy(), base).await.unwrap();
    for seed in 0..50 {
        let mut req = base.clone();
        req.seed = seed;
        if plan(router, store, &healthy(), &req).await.unwrap() != first {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn channel_order_follows_the_weights() {
    let engine = engine();
    let router = default_router(&engine);
    let store = snapshot(vec![
        ProviderFixture::new("p", 0)
            .model("m", "1")
            .channel("light", 1)
            .channel("heavy", 3),
    ]);
    let trials = 2_000u64;
    let mut first: HashMap<String, u64> = HashMap::new();
    for seed in 0..trials {
        let mut req = request("m");
        req.seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let attempts = plan(&router, &store, &healthy(), &req).await.unwrap();
        assert_eq!(attempts.len(), 2);
        *first.entry(attempts[0].channel_id.clone()).or_default() += 1;
    }
    let heavy_share = first.get("heavy").copied().unwrap_or(0) as f64 / trials as f64;
    // Expected 0.75; the binomial standard deviation at n = 2000 is ~0.0097, so ±0.05 is
    // more than five deviations: a correct router never fails this, a uniform one always does.
    assert!(
        (0.70..=0.80).contains(&heavy_share),
        "heavy first in {heavy_share}"
    );
}

#[tokio::test]
async fn unknown_models_and_empty_stores_are_route_errors() {
    let engine = engine();
    let router = default_router(&engine);
    let empty = snapshot(Vec::new());
    let refused = plan(&router, &empty, &healthy(), &request("gpt-4o")).await;
    assert!(
        matches!(refused, Err(RouteRefusal::UnknownModel(_))),
        "{refused:?}"
    );
    let store = snapshot(vec![
        ProviderFixture::new("p", 0).model("m", "1").channel("c", 1),
    ]);
    for odd in ["", "M", "m\u{0}", "模型", &"x".repeat(64 * 1024)] {
        let refused = plan(&router, &store, &healthy(), &request(odd)).await;
        assert!(
            matches!(refused, Err(RouteRefusal::UnknownModel(_))),
            "{refused:?}"
        );
    }
}

#[tokio::test]
async fn endpoints_only_reach_providers_of_their_wire_format() {
    let engine = engine();
    let router = default_router(&engine);
    let store = snapshot(vec![
        ProviderFixture::new("openai", 0)
            .model("claude", "1")
            .channel("o-1", 1),
        ProviderFixture::new("anthropic", 1)
            .model("claude", "1")
            .channel("a-1", 1)
            .provider_type(ProviderType::Messages),
    ]);
    let mut messages = request("claude");
    messages.endpoint = EndpointKind::Messages;
    let attempts = plan(&router, &store, &healthy(), &messages).await.unwrap();
    assert_eq!(providers(&attempts), ["anthropic"]);
}

#[tokio::test]
async fn the_route_phase_refuses_an_illegal_plan_and_keeps_serving() {
    let engine = engine();
    let store = SharedSnapshot::new(RoutingSnapshot::new(vec![
        ProviderFixture::new("p", 0)
            .model("m", "1")
            .channel_with("off", 1, false)
            .channel("on", 1)
            .build(),
    ]));
    let liar = RouterPlugin::load(
        &engine,
        "illegal-plan",
        &component(paths::ILLEGAL_PLAN_ROUTER),
    )
    .unwrap();
    let phase = RoutePhase::new(liar, store.clone(), healthy());
    let failure = phase.plan(&request("m")).await.unwrap_err();
    let RouteFailure::Plugin(error) = failure else {
        panic!("expected a plugin failure: {failure:?}")
    };
    assert_eq!(error.plugin, "illegal-plan");
    assert!(
        matches!(error.kind, PluginErrorKind::ContractViolation(_)),
        "{error}"
    );
    assert!(
        error.to_string().contains("off"),
        "names the illegal channel: {error}"
    );

    let honest = RoutePhase::new(default_router(&engine), store, healthy());
    let plan = honest.plan(&request("m")).await.unwrap();
    assert_eq!(channels(&plan.attempts), ["on"]);
}

async fn assert_fails_then_default_serves(
    engine: &PluginEngine,
    path: &str,
    expect: fn(&PluginErrorKind) -> bool,
) {
    let hostile = RouterPlugin::load(engine, "hostile", &component(path)).unwrap();
    let store = snapshot(vec![
        ProviderFixture::new("p", 0).model("m", "1").channel("c", 1),
    ]);
    let error = hostile
        .route(&request("m"), Arc::clone(&store), healthy())
        .await
        .unwrap_err();
    assert_eq!(error.plugin, "hostile");
    assert!(expect(&error.kind), "unexpected failure: {error}");
    // The same engine answers the next call normally.
    let attempts = plan(&default_router(engine), &store, &healthy(), &request("m"))
        .await
        .unwrap();
    assert_eq!(channels(&attempts), ["c"]);
}

#[tokio::test]
async fn a_trapping_plugin_fails_only_its_call() {
    assert_fails_then_default_serves(&engine(), paths::TRAP_ROUTER, |kind| {
        matches!(kind, PluginErrorKind::Trap(_))
    })
    .await;
}

#[tokio::test]
async fn a_looping_plugin_is_stopped_by_the_time_bound() {
    let limits = PluginLimits {
        timeout: Duration::from_millis(50),
        ..PluginLimits::default()
    };
    assert_fails_then_default_serves(&engine_with(limits), paths::LOOP_ROUTER, |kind| {
        matches!(kind, PluginErrorKind::Timeout { limit_ms: 50 })
    })
    .await;
}

#[tokio::test]
async fn an_allocating_plugin_is_stopped_by_the_memory_cap() {
    let limits = PluginLimits {
        memory_bytes: 16 << 20,
        ..PluginLimits::default()
    };
    assert_fails_then_default_serves(&engine_with(limits), paths::OOM_ROUTER, |kind| {
        matches!(kind, PluginErrorKind::OutOfMemory { limit_bytes } if *limit_bytes == 16 << 20)
    })
    .await;
}

#[tokio::test]
async fn a_plugin_importing_a_legacy_table_is_refused_at_load() {
    let engine = engine();
    let refused = RouterPlugin::load(&engine, "legacy", &component(paths::LEGACY_IMPORT_ROUTER));
    let error = refused.err().expect("refused");
    assert_eq!(
        error.kind,
        PluginErrorKind::ForbiddenImport("monoize:plugin/legacy-store@0.1.0".to_owned())
    );
    assert!(
        error
            .to_string()
            .contains("monoize:plugin/legacy-store@0.1.0")
    );
    default_router(&engine);
}

#[tokio::test]
async fn garbage_bytes_are_a_load_error() {
    let error = RouterPlugin::load(&engine(), "garbage", b"not wasm")
        .err()
        .expect("refused");
    assert!(matches!(error.kind, PluginErrorKind::Load(_)), "{error}");
}

#[tokio::test]
async fn compiled_components_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let settings = EngineSettings {
        limits: PluginLimits::default(),
        cache_dir: Some(cache.clone()),
    };
    default_router(&PluginEngine::new(&settings).unwrap());
    let compiled = artifacts(&cache);
    assert!(!compiled.is_empty(), "the compiled router is in the cache");

    // A restart finds the artifact and writes nothing new: a miss would write a new file.
    default_router(&PluginEngine::new(&settings).unwrap());
    assert_eq!(
        artifacts(&cache),
        compiled,
        "a restart reuses the cached artifact"
    );
}

/// The cache's artifact files with their modification times.
fn artifacts(dir: &std::path::Path) -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if is_artifact(&path) {
                found.push((path, entry.metadata().unwrap().modified().unwrap()));
            }
        }
    }
    found.sort();
    found
}

/// Whether `path` is a compiled artifact, not the cache's own bookkeeping (`.stats` files and
/// hidden `.cleanup.wip-*` markers, which its background worker writes at any time).
fn is_artifact(path: &std::path::Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|name| name.to_str())
        .is_none_or(|name| name.starts_with('.'));
    !hidden && path.extension().is_none_or(|ext| ext != "stats")
}
