//! Billing benchmark: charges committed per second under many concurrent charges, with group
//! commit against one transaction per charge, measured in the same run on the same kind of
//! database (a fresh WAL file each), with p50/p99 of the time a caller waits for its commit.
//!
//! Two paths: `billing-store.charge` called directly (the store and its writer alone), and a
//! full `settle` through the sandboxed default billing plugin (instantiate, read the prices,
//! charge), which is what the gateway does after every served request.
//!
//! Two load shapes. Closed loop: 256 callers, each charging again as soon as its last charge
//! committed — the most the writer can commit, but every wait then includes queueing behind
//! the other 255 (a wait is about 256 / throughput, whatever the writer does). Open loop: charges
//! offered at a fixed rate (a burst every millisecond), as served requests arrive at a gateway —
//! the wait a response has for its commit at that rate, which is what the target is about.
//!
//! Run: `cargo bench -p monoize-tests --bench billing`.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark prints its table and stops at the first failure"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use monoize::billing::{Billing, BillingStore, CommitStats, SettleRequest, Usage};
use monoize::config::Dsn;
use monoize::db::ledger::{self, Adjustment, Charge};
use monoize::db::registry::{self, ModelMetadataRow};
use monoize::db::users::{self, NewUser, Role};
use monoize::db::{self, Database};
use monoize::money::{Multiplier, NanoUsd};
use monoize::plugins::{self, BillingPlugin};
use monoize::routing::{Attempt, EndpointKind};

const USERS: usize = 64;
const CONCURRENCY: usize = 256;
const CHARGES: usize = 20_000;
/// The open-loop rates (charges/s) and how long each is offered: long enough for its p99 to
/// rest on hundreds of waits and span a dozen WAL checkpoints, and at the target rate long
/// enough to span several WAL restarts (one per 256 MiB of WAL, ~1.8 s at 20k/s).
const OPEN_LOOP: [(usize, usize); 3] = [(5_000, 3), (10_000, 3), (20_000, 10)];
const MODEL: &str = "gpt-4o";
const START: NanoUsd = NanoUsd(1_000_000_000_000);
/// What each charge costs: (800 × 2,500 + 200 × 1,250 + 250 × 10,000) × 1.25 nano-USD, the
/// settle path's price, charged as is on the store path.
const AMOUNT: NanoUsd = NanoUsd(5_937_500);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Store,
    Settle,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Commit {
    Grouped,
    PerCharge,
}

struct Measurement {
    charges: usize,
    elapsed: Duration,
    waits: Vec<Duration>,
    stats: CommitStats,
    /// The WAL file's length at the end (open loop only): it must stay bounded.
    wal_mib: Option<u64>,
}

impl Measurement {
    fn per_second(&self) -> f64 {
        self.charges as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        let index = ((self.waits.len() as f64 - 1.0) * p).round() as usize;
        self.waits[index]
    }
}

fn database(dir: &tempfile::TempDir, name: &str) -> (Database, Vec<String>) {
    let database = db::open(&Dsn::File(dir.path().join(name))).unwrap();
    let users = database
        .write_blocking(|tx| {
            let metadata = ModelMetadataRow {
                model_id: MODEL.to_owned(),
                input_cost_per_token_nano: Some(2_500),
                output_cost_per_token_nano: Some(10_000),
                cache_read_input_cost_per_token_nano: Some(1_250),
                ..ModelMetadataRow::default()
            };
            registry::upsert_metadata(tx, &metadata)?;
            (0..USERS)
                .map(|index| {
                    let user = users::insert(
                        tx,
                        &NewUser::new(&format!("user{index}"), "hash", Role::User),
                    )?;
                    ledger::adjust(tx, &user.id, Adjustment::Set(START), "{}")?;
                    Ok(user.id)
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap();
    (database, users)
}

fn settle_request(index: usize, user_id: &str) -> SettleRequest {
    SettleRequest {
        request_id: format!("req-{index}"),
        user_id: user_id.to_owned(),
        model: MODEL.to_owned(),
        endpoint: EndpointKind::ChatCompletions,
        attempt: Attempt {
            provider_id: "p1".to_owned(),
            channel_id: "c1".to_owned(),
            upstream_model: MODEL.to_owned(),
            multiplier: "1.25".parse::<Multiplier>().unwrap(),
        },
        usage: Usage {
            prompt_tokens: 1_000,
            completion_tokens: 250,
            cached_prompt_tokens: Some(200),
            reasoning_tokens: None,
            estimated: false,
        },
    }
}

async fn run(path: Path, commit: Commit, plugin: &BillingPlugin) -> Measurement {
    let dir = tempfile::tempdir().unwrap();
    let (database, users) = database(&dir, "bench.db");
    let store = match commit {
        Commit::Grouped => BillingStore::new(database).unwrap(),
        Commit::PerCharge => BillingStore::with_commit_per_write(database),
    };
    let billing = Billing::new(plugin.clone(), store.clone());
    let users = Arc::new(users);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (billing, users, next) = (billing.clone(), Arc::clone(&users), Arc::clone(&next));
            tokio::spawn(async move {
                let mut waits = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= CHARGES {
                        return waits;
                    }
                    let user_id = &users[index % users.len()];
                    let began = Instant::now();
                    match path {
                        Path::Store => {
                            let charge = Charge {
                                user_id: user_id.clone(),
                                request_id: format!("req-{index}"),
                                amount: AMOUNT,
                                meta_json: r#"{"model":"gpt-4o"}"#.to_owned(),
                                key_id: None,
                                stored_response: None,
                            };
                            let appended = billing.store().charge(charge).await.unwrap();
                            assert!(appended.is_new());
                        }
                        Path::Settle => {
                            let settlement = billing
                                .settle(settle_request(index, user_id))
                                .await
                                .unwrap();
                            assert_eq!(settlement.charged, AMOUNT);
                        }
                    }
                    waits.push(began.elapsed());
                }
            })
        })
        .collect();
    let mut waits = Vec::with_capacity(CHARGES);
    for worker in workers {
        waits.extend(worker.await.unwrap());
    }
    let elapsed = started.elapsed();
    waits.sort();
    let stats = store.commit_stats();
    assert_eq!(stats.writes, CHARGES as u64);
    // Every charge landed, once, and every balance equals its ledger.
    let debited = store
        .database()
        .read_blocking(move |c| {
            let mut debited = 0i64;
            for user_id in users.iter() {
                let balance = users::get(c, user_id)?.unwrap().balance_nano_usd;
                assert_eq!(ledger::sum_for_user(c, user_id)?, balance);
                debited += START.0 - balance.0;
            }
            Ok(debited)
        })
        .unwrap();
    assert_eq!(debited, AMOUNT.0 * CHARGES as i64);
    Measurement {
        charges: CHARGES,
        elapsed,
        waits,
        stats,
        wal_mib: None,
    }
}

/// Offers store charges at `rate` per second for `seconds`, in one burst per
/// millisecond, each on a task of its own, through group commit; the wait of each is from its
/// offer to its commit.
async fn run_at_rate(rate: usize, seconds: usize) -> Measurement {
    let charges = rate * seconds;
    let dir = tempfile::tempdir().unwrap();
    let (database, users) = database(&dir, "rate.db");
    let store = BillingStore::new(database).unwrap();
    let per_tick = (rate / 1_000).max(1);
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(charges);
    while tasks.len() < charges {
        ticks.tick().await;
        for _ in 0..per_tick.min(charges - tasks.len()) {
            let index = tasks.len();
            let store = store.clone();
            let charge = Charge {
                user_id: users[index % users.len()].clone(),
                request_id: format!("req-{index}"),
                amount: AMOUNT,
                meta_json: r#"{"model":"gpt-4o"}"#.to_owned(),
                key_id: None,
                stored_response: None,
            };
            tasks.push(tokio::spawn(async move {
                let began = Instant::now();
                assert!(store.charge(charge).await.unwrap().is_new());
                began.elapsed()
            }));
        }
    }
    let mut waits = Vec::with_capacity(charges);
    for task in tasks {
        waits.push(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    let wal_mib = std::fs::metadata(dir.path().join("rate.db-wal")).map_or(0, |m| m.len() >> 20);
    waits.sort();
    let stats = store.commit_stats();
    assert_eq!(stats.writes, charges as u64);
    Measurement {
        charges,
        elapsed,
        waits,
        stats,
        wal_mib: Some(wal_mib),
    }
}

fn print_row(path: &str, commit: &str, m: &Measurement) {
    println!(
        "{path:<8} {commit:<22} {:>10.0} {:>9.2} {:>9.2} {:>10.2} {:>8} {:>10.1} {:>8}",
        m.per_second(),
        m.percentile(0.50).as_secs_f64() * 1e3,
        m.percentile(0.99).as_secs_f64() * 1e3,
        m.percentile(0.999).as_secs_f64() * 1e3,
        m.stats.transactions,
        m.stats.writes as f64 / m.stats.transactions.max(1) as f64,
        m.wal_mib
            .map_or_else(|| "-".to_owned(), |mib| mib.to_string()),
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let engine = monoize_tests::engine();
        let plugin = plugins::load_billing(&engine, None).unwrap();
        println!(
            "billing: {CHARGES} charges by {CONCURRENCY} concurrent callers over {USERS} users, \
             WAL file database (synchronous=NORMAL), {} worker threads",
            std::thread::available_parallelism().map_or(0, usize::from)
        );
        println!(
            "{:<8} {:<22} {:>10} {:>9} {:>9} {:>10} {:>8} {:>10} {:>8}",
            "path",
            "commit",
            "charges/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "commits",
            "charges/tx",
            "WAL MiB"
        );
        for (path, name) in [(Path::Store, "store"), (Path::Settle, "settle")] {
            // Warm-up: caches, the pool, the page cache.
            run(path, Commit::Grouped, &plugin).await;
            let grouped = run(path, Commit::Grouped, &plugin).await;
            let per_charge = run(path, Commit::PerCharge, &plugin).await;
            print_row(name, "group commit", &grouped);
            print_row(name, "1 transaction/charge", &per_charge);
            println!(
                "{name:<8} ratio group/per-charge: {:.1}x charges/s, p99 wait {:.2}x",
                grouped.per_second() / per_charge.per_second(),
                grouped.percentile(0.99).as_secs_f64() / per_charge.percentile(0.99).as_secs_f64(),
            );
        }
        println!("open loop (store path, group commit): charges offered at a fixed rate");
        for (rate, seconds) in OPEN_LOOP {
            let measured = run_at_rate(rate, seconds).await;
            let label = format!("offered {}k/s, {seconds} s", rate / 1_000);
            print_row("store", &label, &measured);
        }
    });
}
