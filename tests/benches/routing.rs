//! Routing benchmark: route + validate through the sandboxed default router (on the instance the
//! previous call gave back, as on the gateway: `plugins::instances`), for
//! stores of 10, 100 and 1,000 providers with 5 channels each, against the same waterfall
//! called natively on the same snapshot in the same run (DESIGN §8).
//!
//! Run: `cargo bench -p monoize-tests --bench routing`. Each figure is the best of five rounds
//! (the round least disturbed by other work on a shared machine); see [`settings`] for running
//! one size under a profiler.

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

/// The best of `ROUNDS` rounds of `iterations` calls, in µs per call: on a shared machine the
/// best round is the one least disturbed by other work. `round` makes the calls for the seeds
/// from its argument on and answers how long they took.
fn best_round(iterations: u32, mut round: impl FnMut(std::ops::Range<u64>) -> Duration) -> f64 {
    (0..ROUNDS)
        .map(|index| {
            let first = u64::from(index) * u64::from(iterations);
            per_call(round(first..first + u64::from(iterations)), iterations)
        })
        .fold(f64::INFINITY, f64::min)
}

/// Rounds per measurement.
const ROUNDS: u32 = 5;

/// `MONOIZE_BENCH_SIZES` (comma-separated provider counts, default `10,100,1000`) and
/// `MONOIZE_BENCH_SCALE` (a factor on the iteration counts, default 1): for profiling one size
/// under a slow tool such as callgrind.
fn settings() -> (Vec<usize>, f64) {
    let sizes = std::env::var("MONOIZE_BENCH_SIZES")
        .ok()
        .map(|sizes| {
            sizes
                .split(',')
                .filter_map(|size| size.trim().parse().ok())
                .collect()
        })
        .unwrap_or_else(|| vec![10, 100, 1000]);
    let scale = std::env::var("MONOIZE_BENCH_SCALE")
        .ok()
        .and_then(|scale| scale.parse().ok())
        .unwrap_or(1.0);
    (sizes, scale)
}

fn main() {
    let (sizes, scale) = settings();
    let scaled = |iterations: f64| ((iterations * scale) as u32).max(1);
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
        "routing bench: default router, {CHANNELS_PER_PROVIDER} channels per provider, \
         µs per route, best of {ROUNDS} rounds"
    );
    println!(
        "{:>9} {:>8} {:>22} {:>18} {:>14}",
        "providers", "attempts", "sandbox (route+val)", "native (route+val)", "sandbox/native"
    );
    for providers in sizes {
        let snapshot = monoize_tests::synthetic_snapshot(providers, CHANNELS_PER_PROVIDER, MODEL);
        let shared = SharedSnapshot::new(RoutingSnapshot::new(snapshot.providers().to_vec()));
        let phase = RoutePhase::new(router.clone(), shared, health.clone());
        let iterations = scaled(if providers >= 1000 { 600.0 } else { 2000.0 });

        for seed in 0..16 {
            let sandboxed = runtime.block_on(phase.plan(&request(seed))).unwrap();
            let native = route_natively(&snapshot, &health, &request(seed));
            assert_eq!(
                sandboxed.attempts, native,
                "both paths plan the same, seed {seed}"
            );
        }
        let attempts = route_natively(&snapshot, &health, &request(0)).len();

        let sandbox = best_round(iterations, |seeds| {
            runtime.block_on(async {
                let started = Instant::now();
                for seed in seeds {
                    black_box(phase.plan(&request(seed)).await.unwrap());
                }
                started.elapsed()
            })
        });
        let native = best_round(iterations, |seeds| {
            let started = Instant::now();
            for seed in seeds {
                black_box(route_natively(&snapshot, &health, &request(seed)));
            }
            started.elapsed()
        });
        println!(
            "{providers:>9} {attempts:>8} {:>19.1} µs {:>15.1} µs {:>13.1}x",
            sandbox,
            native,
            sandbox / native
        );
    }

    // The fixed cost of the sandbox: one trivial call, on the instance the last call gave back.
    let empty = SharedSnapshot::new(RoutingSnapshot::new(Vec::new()));
    let phase = RoutePhase::new(router, empty, health);
    let floor = best_round(scaled(2000.0), |seeds| {
        runtime.block_on(async {
            let started = Instant::now();
            for seed in seeds {
                black_box(phase.plan(&request(seed)).await.unwrap_err());
            }
            started.elapsed()
        })
    });
    println!("sandbox floor (a call that finds no provider): {floor:.1} µs");
}
