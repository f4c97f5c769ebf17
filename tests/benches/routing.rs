//! Routing benchmark: instantiate + route + validate through the sandboxed default router, for
//! stores of 10, 100 and 1,000 providers with 5 channels each, against the same waterfall
//! called natively on the same snapshot in the same run (DESIGN §8).
//!
//! Run: `cargo bench -p monoize-tests --bench routing`.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    reason = "a benchmark prints its table"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use monoize::gateway::route::{MAX_ATTEMPTS_PER_REQUEST, RoutePhase};
use monoize::money::Multiplier;
use monoize::plugins::RouterPlugin;
use monoize::plugins::embedded::ROUTING;
use monoize::routing::{
    Attempt, CandidateQuery, HealthPolicy, HealthRegistry, RouteRequest, RoutingSnapshot,
    SharedSnapshot, candidate_page, validate_plan,
};
use monoize_waterfall as waterfall;

const CHANNELS_PER_PROVIDER: usize = 5;
const MODEL: &str = "gpt-4o";

/// The waterfall called natively, reading what the component reads: pages of the same
/// candidate query (8 candidates first, then twice as many each time, until the pages offer
/// `max_attempts` healthy attempts), each usable channel with its health, then the same
/// conversion back and the same validation.
fn route_natively(
    snapshot: &RoutingSnapshot,
    health: &HealthRegistry,
    request: &RouteRequest,
) -> Vec<Attempt> {
    let native_request = waterfall::Request {
        model: &request.model,
        max_multiplier: request.max_multiplier.map(Multiplier::nanos),
        groups: request.groups.as_deref(),
        seed: request.seed,
        max_attempts: MAX_ATTEMPTS_PER_REQUEST,
    };
    let query = CandidateQuery {
        model: &request.model,
        endpoint: request.endpoint,
        max_multiplier: request.max_multiplier,
        groups: request.groups.as_deref(),
    };
    let mut candidates: Vec<waterfall::Candidate<'_>> = Vec::new();
    let (mut cursor, mut limit, mut offered) = (0, 8, 0);
    loop {
        let page = candidate_page(snapshot, &query, cursor, limit).unwrap();
        let reader = health.reader();
        for listed in &page.candidates {
            let candidate = waterfall::Candidate {
                provider_id: &listed.provider.id,
                enabled: true,
                max_retries: listed.provider.max_retries,
                groups: &listed.provider.groups,
                redirect: listed.entry.redirect.as_deref(),
                multiplier: listed.entry.multiplier.nanos(),
                channels: listed
                    .provider
                    .channels
                    .iter()
                    .filter(|c| c.usable())
                    .map(|c| {
                        let status = reader.get(&c.id);
                        waterfall::Channel {
                            id: &c.id,
                            weight: c.weight,
                            enabled: true,
                            health: waterfall::Health {
                                healthy: status.healthy,
                                last_failure: status.last_failure_ms,
                            },
                        }
                    })
                    .collect(),
            };
            offered += waterfall::healthy_attempts(&native_request, &candidate);
            candidates.push(candidate);
        }
        match page.next {
            Some(next) if offered < MAX_ATTEMPTS_PER_REQUEST => {
                cursor = next;
                limit *= 2;
            }
            _ => break,
        }
    }
    let plan = waterfall::plan(&native_request, &candidates).unwrap();
    let attempts: Vec<Attempt> = plan
        .attempts
        .iter()
        .map(|a| Attempt {
            provider_id: a.provider_id.to_owned(),
            channel_id: a.channel_id.to_owned(),
            upstream_model: a.upstream_model.to_owned(),
            multiplier: Multiplier::from_nanos(a.multiplier),
        })
        .collect();
    validate_plan(snapshot, request, &attempts).unwrap();
    attempts
}

fn per_call(total: Duration, iterations: u32) -> f64 {
    total.as_secs_f64() * 1e6 / f64::from(iterations)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = monoize_tests::engine_with(monoize::plugins::PluginLimits::default());
    let router = RouterPlugin::load(&engine, "default-router", ROUTING).unwrap();
    let health = HealthRegistry::new(HealthPolicy::default());
    let request = |seed: u64| RouteRequest {
        request_id: "bench".to_owned(),
        model: MODEL.to_owned(),
        endpoint: monoize::routing::EndpointKind::ChatCompletions,
        max_multiplier: None,
        groups: None,
        seed,
    };

    println!(
        "routing bench: default router, {CHANNELS_PER_PROVIDER} channels per provider, mean per route"
    );
    println!(
        "{:>9} {:>8} {:>22} {:>18} {:>14}",
        "providers", "attempts", "sandbox (inst+route+val)", "native (route+val)", "sandbox/native"
    );
    for providers in [10usize, 100, 1000] {
        let snapshot = monoize_tests::synthetic_snapshot(providers, CHANNELS_PER_PROVIDER, MODEL);
        let shared = SharedSnapshot::new(RoutingSnapshot::new(snapshot.providers().to_vec()));
        let phase = RoutePhase::new(router.clone(), shared, health.clone());
        let iterations: u32 = if providers >= 1000 { 300 } else { 3000 };

        let attempts = runtime
            .block_on(phase.plan(&request(0)))
            .unwrap()
            .attempts
            .len();
        let native_attempts = route_natively(&snapshot, &health, &request(0)).len();
        assert_eq!(
            attempts, native_attempts,
            "both paths plan the same attempts"
        );

        let started = Instant::now();
        runtime.block_on(async {
            for seed in 0..u64::from(iterations) {
                black_box(phase.plan(&request(seed)).await.unwrap());
            }
        });
        let sandbox = per_call(started.elapsed(), iterations);

        let started = Instant::now();
        for seed in 0..u64::from(iterations) {
            black_box(route_natively(&snapshot, &health, &request(seed)));
        }
        let native = per_call(started.elapsed(), iterations);

        println!(
            "{providers:>9} {attempts:>8} {:>19.1} µs {:>15.1} µs {:>13.1}x",
            sandbox,
            native,
            sandbox / native
        );
    }

    // The fixed cost of the sandbox: instantiate a fresh instance and make one trivial call.
    let empty = SharedSnapshot::new(RoutingSnapshot::new(Vec::new()));
    let phase = RoutePhase::new(router, empty, health);
    let iterations = 3000u32;
    let started = Instant::now();
    runtime.block_on(async {
        for seed in 0..u64::from(iterations) {
            black_box(phase.plan(&request(seed)).await.unwrap_err());
        }
    });
    println!(
        "sandbox floor (instantiate + a call that finds no provider): {:.1} µs",
        per_call(started.elapsed(), iterations)
    );
}
