//! Router components run for real in the sandbox (DESIGN §3–§4): the wire-format filter,
//! host-side plan validation, the compiled-component cache, and plugins that trap, loop,
//! exhaust memory, import what they may not, or lie. The default router's waterfall semantics
//! (priority order, each filter, groups, redirect, retry budget, weighted channel order, panic
//! fallback) are the reference checks of the conformance suite, run in `conformance.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

use std::time::Duration;

use monoize::db::routing::ProviderType;
use monoize::gateway::route::{RouteFailure, RoutePhase};
use monoize::plugins::embedded::{ROUTING, paths};
use monoize::plugins::instances::MAX_CALLS_PER_INSTANCE;
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

/// An engine whose pool holds two instances, with a time bound a loaded machine cannot hit.
fn two_slot_engine() -> PluginEngine {
    engine_with(PluginLimits {
        concurrent_instances: 2,
        timeout: Duration::from_secs(5),
        ..PluginLimits::default()
    })
}

fn healthy() -> HealthRegistry {
    HealthRegistry::new(HealthPolicy::default())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_pool_queues_for_slots_and_memories_and_every_call_is_served() {
    // Two instance slots, so the pool holds its floor of 16 memories; 64 calls at once.
    let engine = two_slot_engine();
    let router = default_router(&engine);
    // What the pool's size rests on: a Rust component creates one linear memory.
    assert_eq!(router.memories(), 1);
    let store = snapshot(vec![
        ProviderFixture::new("p", 0).model("m", "1").channel("c", 1),
    ]);
    let health = healthy();
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let (router, store, health) = (router.clone(), Arc::clone(&store), health.clone());
            tokio::spawn(async move { plan(&router, &store, &health, &request("m")).await })
        })
        .collect();
    for call in calls {
        let attempts = call.await.unwrap().unwrap();
        assert_eq!(channels(&attempts), ["c"]);
    }
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

#[tokio::test]
async fn the_default_router_reads_further_pages_past_unhealthy_providers() {
    // One channel each: every provider offers one attempt, so filling 32 attempts takes pages of
    // 8, 16 and 32 candidates; the first 20 providers cool down, so the plan starts at p0020.
    let engine = engine();
    let router = default_router(&engine);
    let store = monoize_tests::synthetic_snapshot(100, 1, "m");
    let health = healthy();
    for provider in 0..20 {
        health.trip(&format!("p{provider:04}-c0"), None);
    }
    let attempts = plan(&router, &store, &health, &request("m")).await.unwrap();
    let expected: Vec<String> = (20..52).map(|p| format!("p{p:04}")).collect();
    assert_eq!(providers(&attempts), expected);

    // With nothing healthy at all, every page is read and the panic fallback plans the first
    // 32 channels that failed least recently: here all tripped in order, so p0000 first.
    for provider in 20..100 {
        health.trip(&format!("p{provider:04}-c0"), None);
    }
    let attempts = plan(&router, &store, &health, &request("m")).await.unwrap();
    assert_eq!(attempts.len(), 32);
    assert_eq!(attempts[0].provider_id, "p0000");
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
async fn a_looping_plugin_is_stopped_by_the_time_bound_when_its_call_wakes_an_idle_ticker() {
    let limits = PluginLimits {
        timeout: Duration::from_millis(50),
        ..PluginLimits::default()
    };
    let engine = engine_with(limits);
    // No call for a while: the epoch ticker has parked, and the looping call must wake it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !engine.ticker_parked() {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle ticker never parked"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_fails_then_default_serves(&engine, paths::LOOP_ROUTER, |kind| {
        matches!(kind, PluginErrorKind::Timeout { limit_ms: 50 })
    })
    .await;
}

#[tokio::test]
async fn an_allocating_plugin_is_stopped_by_the_memory_cap() {
    // A generous time bound: touching 16 MiB on a loaded machine must not turn into a timeout.
    let limits = PluginLimits {
        memory_bytes: 16 << 20,
        timeout: Duration::from_secs(5),
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
async fn garbage_bytes_are_a_load_error_in_one_line() {
    let engine = engine();
    for bytes in [
        &b"not wasm, a text file"[..],
        b"\0asm\x0d\0\x01\0 truncated",
    ] {
        let error = RouterPlugin::load(&engine, "garbage", bytes)
            .err()
            .expect("refused");
        assert!(matches!(error.kind, PluginErrorKind::Load(_)), "{error}");
        // The CLI prints it as its one line.
        assert_eq!(error.to_string().lines().count(), 1, "{error}");
    }
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
                // The cache writes a file under a temporary name and renames it: a name
                // listed a moment ago may be gone.
                if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                    found.push((path, modified));
                }
            }
        }
    }
    found.sort();
    found
}

/// Whether `path` is a compiled artifact, not the cache's own bookkeeping (`.stats` files,
/// hidden `.cleanup.wip-*` markers, and files being written under a `wip-*` extension, which
/// its background worker makes at any time).
fn is_artifact(path: &std::path::Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|name| name.to_str())
        .is_none_or(|name| name.starts_with('.'));
    let bookkeeping = path
        .extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| ext == "stats" || ext.starts_with("wip-"));
    !hidden && !bookkeeping
}

/// The upstream model of the counting router's one attempt: `call-<n>`, where `n` counts the
/// calls its instance has served.
async fn counted_call(router: &RouterPlugin, store: &Arc<RoutingSnapshot>, model: &str) -> String {
    let attempts = plan(router, store, &healthy(), &request(model))
        .await
        .unwrap();
    attempts[0].upstream_model.clone()
}

/// The counting router on an engine whose memory cap is `memory_bytes`.
fn counting_router(memory_bytes: usize) -> (PluginEngine, RouterPlugin) {
    let engine = engine_with(PluginLimits {
        memory_bytes,
        timeout: Duration::from_secs(5),
        ..PluginLimits::default()
    });
    let router =
        RouterPlugin::load(&engine, "counting", &component(paths::COUNTING_ROUTER)).unwrap();
    (engine, router)
}

fn counting_store() -> Arc<RoutingSnapshot> {
    snapshot(vec![
        ProviderFixture::new("p", 0)
            .model("m", "1")
            .model("grow", "1")
            .model("leak", "1")
            .channel("c", 1),
    ])
}

#[tokio::test]
async fn a_clean_call_gives_its_instance_back_and_a_failed_one_never_does() {
    let (_engine, router) = counting_router(16 << 20);
    let store = counting_store();
    assert_eq!(counted_call(&router, &store, "m").await, "call-1");
    assert_eq!(counted_call(&router, &store, "m").await, "call-2");
    // A refusal is a normal return: the instance goes back.
    let refused = router
        .route(&request("unlisted"), Arc::clone(&store), healthy())
        .await
        .unwrap();
    assert!(refused.is_err());
    assert_eq!(counted_call(&router, &store, "m").await, "call-4");

    // A trap fails its call, and the next call meets a new instance.
    let error = router
        .route(&request("trap"), Arc::clone(&store), healthy())
        .await
        .unwrap_err();
    assert!(matches!(error.kind, PluginErrorKind::Trap(_)), "{error}");
    assert_eq!(counted_call(&router, &store, "m").await, "call-1");

    // A refused memory growth the plugin carried on from answers its call, and the instance is
    // not used again.
    assert_eq!(counted_call(&router, &store, "grow").await, "call-2");
    assert_eq!(counted_call(&router, &store, "m").await, "call-1");

    // An idle instance keeps nothing the call could reach: the snapshot is the test's alone.
    assert_eq!(Arc::strong_count(&store), 1);
}

#[tokio::test]
async fn an_instance_whose_memory_grew_past_a_quarter_of_the_cap_is_replaced() {
    // A 32 MiB cap: an instance is reused up to 8 MiB of memory. Each `leak` keeps 4 MiB.
    let (_engine, router) = counting_router(32 << 20);
    let store = counting_store();
    assert_eq!(counted_call(&router, &store, "leak").await, "call-1");
    // The memory grew to past 4 MiB: still within a quarter of 32 MiB...
    assert_eq!(counted_call(&router, &store, "leak").await, "call-2");
    // ... and now past 8 MiB, so the next call meets a new instance, and so on without end: a
    // leak never reaches the cap.
    assert_eq!(counted_call(&router, &store, "m").await, "call-1");
    for _ in 0..20 {
        let call = counted_call(&router, &store, "leak").await;
        assert!(
            call == "call-1" || call == "call-2" || call == "call-3",
            "{call}"
        );
    }
}

#[tokio::test]
async fn an_instance_is_replaced_after_its_call_budget() {
    let engine = engine();
    let router =
        RouterPlugin::load(&engine, "counting", &component(paths::COUNTING_ROUTER)).unwrap();
    let store = counting_store();
    for call in 1..=MAX_CALLS_PER_INSTANCE {
        assert_eq!(
            counted_call(&router, &store, "m").await,
            format!("call-{call}")
        );
    }
    assert_eq!(counted_call(&router, &store, "m").await, "call-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_never_hold_the_slots_busy_calls_need() {
    // Two slots, so one instance at most waits idle; two plugins contend for the other.
    let engine = two_slot_engine();
    let first = RouterPlugin::load(&engine, "first", &component(paths::COUNTING_ROUTER)).unwrap();
    let second = default_router(&engine);
    let store = counting_store();
    assert_eq!(counted_call(&first, &store, "m").await, "call-1");
    assert_eq!(counted_call(&first, &store, "m").await, "call-2");
    let calls: Vec<_> = (0..64)
        .map(|call| {
            let router = if call % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let store = Arc::clone(&store);
            tokio::spawn(async move { plan(&router, &store, &healthy(), &request("m")).await })
        })
        .collect();
    let all = async {
        for call in calls {
            assert_eq!(channels(&call.await.unwrap().unwrap()), ["c"]);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("every call is served");
}
