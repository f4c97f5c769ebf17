//! Monoize under test: the real server (`monoize::server::serve`) with the embedded router and
//! billing plugins, on a WAL file database in a temporary directory, seeded the way an operator
//! would configure it — one limited user with a balance and a key, one chat-completions
//! provider whose channel is the mock, and prices for the model so every request is charged.
//! Request log lines go to a file, as a deployment's stdout would.
//!
//! It also answers `stats` (how many charges landed, and whether the balance equals the
//! ledger) and `phases` (each phase of the pipeline called on its own, see [`phases`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::HeaderMap;
use hyper::header::HeaderValue;
use monoize::app::AppState;
use monoize::billing::{AuthorizeRequest, SettleRequest, Usage};
use monoize::config::{Config, Dsn};
use monoize::db::ledger::{self, Adjustment, Charge};
use monoize::db::registry::{self, ModelMetadataRow};
use monoize::db::routing::{self, ChannelInput, ModelInput, ProviderInput, ProviderType};
use monoize::db::users::{self, NewUser, Role};
use monoize::db::{self, Database, api_keys};
use monoize::gateway::auth::hash_api_key;
use monoize::money::NanoUsd;
use monoize::routing::{EndpointKind, RouteRequest};
use tokio::net::TcpListener;

use crate::servers::MODEL;

/// The Monoize key the load generator sends.
pub const KEY: &str = "sk-bench-0123456789abcdef0123456789abcdef";

/// The user's starting balance: $1,000,000.
const START: NanoUsd = NanoUsd(1_000_000_000_000_000);

/// What one request costs: 3 prompt tokens × 2,500 + 2 completion tokens × 10,000 nano-USD.
pub const COST: i64 = 3 * 2_500 + 2 * 10_000;

/// A running Monoize and what the control commands need.
pub struct Monoize {
    /// Where it listens.
    pub address: SocketAddr,
    db: Database,
    config: Config,
    billing: monoize::billing::BillingStore,
    user_id: String,
    _dir: tempfile::TempDir,
}

/// Seeds a fresh database and starts the server; `mock` is the upstream.
pub async fn start(mock: SocketAddr) -> anyhow::Result<Monoize> {
    let dir = tempfile::tempdir()?;
    let log = std::fs::File::create(dir.path().join("requests.log"))?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(monoize::server::log_output::LogOutput::to(log))
        .try_init();
    let dsn = Dsn::File(dir.path().join("monoize.db"));
    let db = db::open(&dsn)?;
    let user_id = seed(&db, mock).await?;
    let config = Config {
        dsn,
        ..Config::defaults()
    };
    let state = AppState::start(db.clone(), config.clone()).await?;
    let billing = state.billing.store().clone();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(monoize::server::serve(
        listener,
        state,
        std::future::pending::<()>(),
    ));
    Ok(Monoize {
        address,
        db,
        config,
        billing,
        user_id,
        _dir: dir,
    })
}

async fn seed(db: &Database, mock: SocketAddr) -> anyhow::Result<String> {
    let multiplier = "1".parse()?;
    let user_id = db
        .write(move |tx| {
            let user = users::insert(tx, &NewUser::new("bench", "unused-hash", Role::User))?;
            ledger::adjust(tx, &user.id, Adjustment::Set(START), "{}")?;
            let key = api_keys::NewApiKey::new(
                &user.id,
                "bench",
                api_keys::key_prefix(KEY),
                &hash_api_key(KEY),
            );
            api_keys::insert(tx, &key)?;
            registry::upsert_metadata(
                tx,
                &ModelMetadataRow {
                    model_id: MODEL.to_owned(),
                    input_cost_per_token_nano: Some(2_500),
                    output_cost_per_token_nano: Some(10_000),
                    ..ModelMetadataRow::default()
                },
            )?;
            routing::create_provider(
                tx,
                &ProviderInput {
                    name: "mock".to_owned(),
                    provider_type: ProviderType::ChatCompletion,
                    max_retries: -1,
                    transforms_json: "[]".to_owned(),
                    groups: Vec::new(),
                    enabled: true,
                    priority: Some(0),
                    models: vec![ModelInput {
                        model_name: MODEL.to_owned(),
                        redirect: None,
                        multiplier,
                    }],
                    channels: vec![ChannelInput {
                        id: None,
                        name: "mock-1".to_owned(),
                        base_url: format!("http://{mock}"),
                        api_key: Some("sk-upstream-bench".to_owned()),
                        weight: 1,
                        enabled: true,
                    }],
                },
            )?;
            Ok(user.id)
        })
        .await?;
    Ok(user_id)
}

impl Monoize {
    /// `stats <charges> <ledger-consistent>`: the charges that landed (from the balance), and
    /// whether the balance equals the sum of the user's ledger.
    pub fn stats(&self) -> anyhow::Result<String> {
        let user_id = self.user_id.clone();
        let (balance, sum) = self.db.read_blocking(move |c| {
            let balance = users::get(c, &user_id)?.map(|user| user.balance_nano_usd);
            Ok((balance, ledger::sum_for_user(c, &user_id)?))
        })?;
        let balance = balance.ok_or_else(|| anyhow::anyhow!("the bench user is gone"))?;
        let spent = START.0 - balance.0;
        let charges = if spent % COST == 0 { spent / COST } else { -1 };
        Ok(format!("stats {charges} {}", sum == balance))
    }

    /// `commits <writes> <transactions> <inline>`: the ledger writer's totals so far.
    pub fn commits(&self) -> String {
        let stats = self.billing.commit_stats();
        format!(
            "commits {} {} {}",
            stats.writes, stats.transactions, stats.inline
        )
    }

    /// `phases …`: see [`phases`].
    pub async fn phases(&self, calls: usize) -> anyhow::Result<Vec<String>> {
        phases(self, calls).await
    }
}

/// One phase measured: sequential latency, and CPU per call at 32 concurrent callers.
struct PhaseFigures {
    name: &'static str,
    p50: Duration,
    mean: Duration,
    cpu_per_call: Duration,
    concurrent_per_second: f64,
    /// Calls that failed (a plugin past its time bound on a busy machine, say).
    failures: usize,
}

/// Calls each phase of the pipeline on its own, through the same public entry points the
/// gateway uses, on a second `AppState` over the same database (the served one is owned by the
/// server): `calls` times in a row for its latency, then `calls` more by 32 concurrent callers
/// for its CPU time per call (this process's CPU clock) and throughput.
async fn phases(monoize: &Monoize, calls: usize) -> anyhow::Result<Vec<String>> {
    let state = Arc::new(AppState::start(monoize.db.clone(), monoize.config.clone()).await?);
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {KEY}"))?,
    );
    let key = state.gateway.auth.authenticate(&state.db, &headers).await?;
    let route_request = |id: &str| RouteRequest {
        request_id: id.to_owned(),
        model: MODEL.to_owned(),
        endpoint: EndpointKind::ChatCompletions,
        max_multiplier: None,
        groups: None,
        seed: 0,
    };
    let plan = state.routing.plan(&route_request("req_plan")).await?;
    let attempt = plan
        .attempts
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("empty plan"))?;
    let user_id = key.user_id.clone();
    // Distinct request ids: a settle is idempotent by its id.
    let unique = Arc::new(AtomicUsize::new(0));
    let next_id = {
        let unique = Arc::clone(&unique);
        move || format!("req_phase_{}", unique.fetch_add(1, Ordering::Relaxed))
    };

    let mut figures = Vec::new();
    figures.push(
        measure("auth (cached key)", calls, {
            let (state, headers) = (Arc::clone(&state), headers.clone());
            move || {
                let (state, headers) = (Arc::clone(&state), headers.clone());
                async move {
                    state
                        .gateway
                        .auth
                        .authenticate(&state.db, &headers)
                        .await
                        .is_ok()
                }
            }
        })
        .await,
    );
    figures.push(
        measure("authorize (billing plugin)", calls, {
            let (state, user_id, next_id) = (Arc::clone(&state), user_id.clone(), next_id.clone());
            move || {
                let state = Arc::clone(&state);
                let request = AuthorizeRequest {
                    request_id: next_id(),
                    user_id: user_id.clone(),
                    model: MODEL.to_owned(),
                    endpoint: EndpointKind::ChatCompletions,
                };
                async move { state.billing.authorize(&request).await.is_ok() }
            }
        })
        .await,
    );
    figures.push(
        measure("route (router plugin + validate)", calls, {
            let (state, next_id) = (Arc::clone(&state), next_id.clone());
            move || {
                let state = Arc::clone(&state);
                let request = route_request(&next_id());
                async move { state.routing.plan(&request).await.is_ok() }
            }
        })
        .await,
    );
    // What the embedded billing plugin writes for this request, so that the row committed
    // here is as large as settle's and the difference of the two rows is the plugin's share.
    let plugin_meta = serde_json::json!({
        "model": MODEL,
        "upstream_model": attempt.upstream_model,
        "provider_id": attempt.provider_id,
        "channel_id": attempt.channel_id,
        "multiplier": "1",
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "cached_prompt_tokens": null,
        "reasoning_tokens": null,
        "cost_nano_usd": COST.to_string(),
        "usage_estimated": false,
        "priced": true,
        "pricing_model": MODEL,
    })
    .to_string();
    figures.push(
        measure("settle (billing plugin + commit wait)", calls, {
            let (state, user_id, next_id) = (Arc::clone(&state), user_id.clone(), next_id.clone());
            move || {
                let state = Arc::clone(&state);
                let request = SettleRequest {
                    request_id: next_id(),
                    user_id: user_id.clone(),
                    model: MODEL.to_owned(),
                    endpoint: EndpointKind::ChatCompletions,
                    attempt: attempt.clone(),
                    usage: Usage {
                        prompt_tokens: 3,
                        completion_tokens: 2,
                        ..Usage::default()
                    },
                };
                async move {
                    state
                        .billing
                        .settle(request)
                        .await
                        .is_ok_and(|settlement| settlement.charged.0 == COST)
                }
            }
        })
        .await,
    );
    figures.push(
        measure("  of which: commit alone (store.charge)", calls, {
            let (state, user_id, next_id) = (Arc::clone(&state), user_id.clone(), next_id.clone());
            move || {
                let state = Arc::clone(&state);
                let charge = Charge {
                    user_id: user_id.clone(),
                    request_id: next_id(),
                    amount: NanoUsd(COST),
                    meta_json: plugin_meta.clone(),
                    key_id: None,
                    stored_response: None,
                };
                async move { state.billing.store().charge(charge).await.is_ok() }
            }
        })
        .await,
    );
    let mut lines = vec![format!(
        "phase {:<40} {:>9} {:>9} {:>12} {:>12} {:>8}",
        "(each alone; mock not involved)",
        "p50 µs",
        "mean µs",
        "CPU µs/call",
        "calls/s @32",
        "failed"
    )];
    for figure in &figures {
        lines.push(format!(
            "phase {:<40} {:>9.1} {:>9.1} {:>12.1} {:>12.0} {:>8}",
            figure.name,
            micros(figure.p50),
            micros(figure.mean),
            micros(figure.cpu_per_call),
            figure.concurrent_per_second,
            figure.failures,
        ));
    }
    Ok(lines)
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// Runs `call` `calls` times in a row (after a warm-up), then `calls` times by 32 callers;
/// failed calls are counted, not measured.
async fn measure<F, Fut>(name: &'static str, calls: usize, call: F) -> PhaseFigures
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let failures = Arc::new(AtomicUsize::new(0));
    for _ in 0..calls / 10 {
        call().await;
    }
    let mut latencies = Vec::with_capacity(calls);
    for _ in 0..calls {
        let began = Instant::now();
        if call().await {
            latencies.push(began.elapsed());
        } else {
            failures.fetch_add(1, Ordering::Relaxed);
        }
    }
    latencies.sort_unstable();
    let total: Duration = latencies.iter().sum();
    let left = Arc::new(AtomicUsize::new(calls));
    let cpu_before = crate::process_cpu();
    let began = Instant::now();
    let callers: Vec<_> = (0..32)
        .map(|_| {
            let (call, left, failures) = (call.clone(), Arc::clone(&left), Arc::clone(&failures));
            tokio::spawn(async move {
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    if !call().await {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for caller in callers {
        caller
            .await
            .unwrap_or_else(|error| panic!("{name}: {error}"));
    }
    let elapsed = began.elapsed();
    let cpu = crate::process_cpu().saturating_sub(cpu_before);
    let count = u32::try_from(calls.max(1)).unwrap_or(u32::MAX);
    let measured = u32::try_from(latencies.len().max(1)).unwrap_or(u32::MAX);
    PhaseFigures {
        name,
        p50: latencies
            .get(latencies.len() / 2)
            .copied()
            .unwrap_or_default(),
        mean: total / measured,
        cpu_per_call: cpu / count,
        concurrent_per_second: calls as f64 / elapsed.as_secs_f64().max(1e-9),
        failures: failures.load(Ordering::Relaxed),
    }
}
