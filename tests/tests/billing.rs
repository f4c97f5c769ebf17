//! The default billing plugin, run for real in the sandbox over a real database (DESIGN §6):
//! exact prices on a table of cases, authorize at and around zero, idempotent and overdrawing
//! settles, and balances that equal their ledgers under heavy concurrency with group commit.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::time::Duration;

use monoize::billing::{
    AuthorizeRequest, Billing, BillingFailure, BillingStore, SettleFault, SettleRequest,
    Settlement, Usage,
};
use monoize::config::Dsn;
use monoize::db::ledger::{self, Adjustment, LedgerKind, LedgerRow};
use monoize::db::registry::{self, ModelMetadataRow};
use monoize::db::users::{self, NewUser, Role};
use monoize::db::{self, Database};
use monoize::money::{Multiplier, NanoUsd};
use monoize::plugins::embedded::{BILLING, ROUTING};
use monoize::plugins::{
    self, BillingPlugin, PluginEngine, PluginErrorKind, PluginLimits, RouterPlugin,
};
use monoize::routing::{Attempt, EndpointKind};
use monoize_tests::{engine, engine_with};

const START: i64 = 1_000_000_000_000_000;

fn billing_over(engine: &PluginEngine, database: &Database) -> Billing {
    let plugin = plugins::load_billing(engine, None).expect("the default billing plugin loads");
    Billing::new(plugin, BillingStore::new(database.clone()).unwrap())
}

fn user(database: &Database, name: &str, balance: i64, unlimited: bool) -> String {
    let mut new = NewUser::new(name, "hash", Role::User);
    new.balance_unlimited = unlimited;
    database
        .write_blocking(move |tx| {
            let user = users::insert(tx, &new)?;
            ledger::adjust(tx, &user.id, Adjustment::Set(NanoUsd(balance)), "{}")?;
            Ok(user.id)
        })
        .unwrap()
}

fn price(database: &Database, model: &str, prices: [Option<u64>; 4]) {
    let row = ModelMetadataRow {
        model_id: model.to_owned(),
        input_cost_per_token_nano: prices[0],
        output_cost_per_token_nano: prices[1],
        cache_read_input_cost_per_token_nano: prices[2],
        output_cost_per_reasoning_token_nano: prices[3],
        ..ModelMetadataRow::default()
    };
    database
        .write_blocking(move |tx| registry::upsert_metadata(tx, &row))
        .unwrap();
}

fn balance(database: &Database, user_id: &str) -> NanoUsd {
    let id = user_id.to_owned();
    database
        .read_blocking(move |c| Ok(users::get(c, &id)?.unwrap().balance_nano_usd))
        .unwrap()
}

fn rows(database: &Database, user_id: &str) -> Vec<LedgerRow> {
    let id = user_id.to_owned();
    database
        .read_blocking(move |c| ledger::list(c, Some(&id), 1000, None))
        .unwrap()
}

fn ledger_sum(database: &Database, user_id: &str) -> NanoUsd {
    let id = user_id.to_owned();
    database
        .read_blocking(move |c| ledger::sum_for_user(c, &id))
        .unwrap()
}

fn usage(prompt: u64, completion: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        ..Usage::default()
    }
}

fn settle_request(
    request_id: &str,
    user_id: &str,
    model: &str,
    upstream: &str,
    multiplier: &str,
    usage: Usage,
) -> SettleRequest {
    SettleRequest {
        request_id: request_id.to_owned(),
        user_id: user_id.to_owned(),
        model: model.to_owned(),
        endpoint: EndpointKind::ChatCompletions,
        attempt: Attempt {
            provider_id: "p1".to_owned(),
            channel_id: "c1".to_owned(),
            upstream_model: upstream.to_owned(),
            multiplier: multiplier.parse::<Multiplier>().unwrap(),
        },
        usage,
    }
}

fn authorize_request(user_id: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        request_id: "req-authorize".to_owned(),
        user_id: user_id.to_owned(),
        model: "gpt-4o".to_owned(),
        endpoint: EndpointKind::ChatCompletions,
    }
}

const MAX: u64 = i64::MAX as u64;

/// The price list every case runs against (nano-USD per token: input, output, cache read,
/// reasoning).
fn price_list(database: &Database) {
    price(
        database,
        "gpt-4o",
        [Some(2_500), Some(10_000), Some(1_250), None],
    );
    price(
        database,
        "gpt-4o-2024-08-06",
        [Some(3_000), Some(12_000), None, None],
    );
    price(
        database,
        "o3",
        [Some(2_000), Some(8_000), Some(500), Some(16_000)],
    );
    price(database, "embed-3", [Some(20), None, None, None]);
    price(database, "input-only", [Some(5), None, None, None]);
    price(database, "no-prices", [None, None, None, None]);
    price(database, "tiny", [Some(1), Some(1), None, None]);
    price(
        database,
        "huge",
        [Some(u64::MAX), Some(u64::MAX), None, None],
    );
    price(database, "alias", [Some(7), Some(9), None, None]);
}

/// What a case must give: a settlement, or a fault of the named kind.
#[derive(Debug)]
enum Expected {
    Settled {
        cost: i64,
        charged: i64,
        priced: bool,
    },
    Fault(&'static str),
}

struct Case {
    name: &'static str,
    model: &'static str,
    upstream: &'static str,
    endpoint: EndpointKind,
    multiplier: &'static str,
    usage: Usage,
    unlimited: bool,
    expected: Expected,
}

fn case(
    name: &'static str,
    model: &'static str,
    multiplier: &'static str,
    usage: Usage,
    expected: Expected,
) -> Case {
    Case {
        name,
        model,
        upstream: model,
        endpoint: EndpointKind::ChatCompletions,
        multiplier,
        usage,
        unlimited: false,
        expected,
    }
}

fn charged(cost: i64) -> Expected {
    Expected::Settled {
        cost,
        charged: cost,
        priced: true,
    }
}

fn unpriced() -> Expected {
    Expected::Settled {
        cost: 0,
        charged: 0,
        priced: false,
    }
}

fn cached(prompt: u64, cached: u64, completion: u64) -> Usage {
    Usage {
        cached_prompt_tokens: Some(cached),
        ..usage(prompt, completion)
    }
}

fn reasoning(prompt: u64, completion: u64, reasoning: u64) -> Usage {
    Usage {
        reasoning_tokens: Some(reasoning),
        ..usage(prompt, completion)
    }
}

fn cases() -> Vec<Case> {
    vec![
        case(
            "plain chat at 1",
            "gpt-4o",
            "1",
            usage(1_000, 500),
            charged(1_000 * 2_500 + 500 * 10_000),
        ),
        case(
            "cached tokens at the cache price",
            "gpt-4o",
            "1",
            cached(1_000, 400, 0),
            charged(600 * 2_500 + 400 * 1_250),
        ),
        case(
            "cached tokens without a cache price cost the input price",
            "gpt-4o-2024-08-06",
            "1",
            cached(1_000, 400, 0),
            charged(1_000 * 3_000),
        ),
        case(
            "more cached than prompt tokens is capped at the prompt",
            "gpt-4o",
            "1",
            cached(10, 50, 0),
            charged(10 * 1_250),
        ),
        case(
            "reasoning tokens at the reasoning price",
            "o3",
            "1",
            reasoning(0, 1_000, 300),
            charged(700 * 8_000 + 300 * 16_000),
        ),
        case(
            "reasoning tokens without a reasoning price cost the output price",
            "gpt-4o",
            "1",
            reasoning(0, 1_000, 300),
            charged(1_000 * 10_000),
        ),
        case(
            "cache and reasoning together",
            "o3",
            "1",
            Usage {
                cached_prompt_tokens: Some(200),
                reasoning_tokens: Some(100),
                ..usage(1_000, 500)
            },
            charged(800 * 2_000 + 200 * 500 + 400 * 8_000 + 100 * 16_000),
        ),
        case(
            "multiplier 0.3",
            "gpt-4o",
            "0.3",
            usage(1_000, 500),
            charged(2_250_000),
        ),
        case(
            "multiplier 1.25",
            "gpt-4o",
            "1.25",
            usage(1_000, 500),
            charged(9_375_000),
        ),
        case(
            "multiplier 2",
            "gpt-4o",
            "2",
            usage(1_000, 500),
            charged(15_000_000),
        ),
        case(
            "0.3 truncates toward zero",
            "tiny",
            "0.3",
            usage(7, 0),
            charged(2),
        ),
        case(
            "1.25 truncates toward zero",
            "tiny",
            "1.25",
            usage(3, 0),
            charged(3),
        ),
        case(
            "multiplier 0 is free",
            "gpt-4o",
            "0",
            usage(1_000, 500),
            charged(0),
        ),
        case("zero usage", "gpt-4o", "2", usage(0, 0), charged(0)),
        case(
            "a model without a metadata row is not charged",
            "unknown-model",
            "1",
            usage(1_000, 500),
            unpriced(),
        ),
        case(
            "a metadata row without prices is not charged",
            "no-prices",
            "1",
            usage(1_000, 500),
            unpriced(),
        ),
        case(
            "chat on a model without an output price is not charged",
            "input-only",
            "1",
            usage(1_000, 500),
            unpriced(),
        ),
        Case {
            endpoint: EndpointKind::Embeddings,
            ..case(
                "embeddings bill prompt tokens only",
                "embed-3",
                "1",
                usage(1_000, 50),
                charged(20_000),
            )
        },
        Case {
            endpoint: EndpointKind::Embeddings,
            ..case(
                "embeddings on a chat model ignore completion tokens",
                "gpt-4o",
                "1.25",
                usage(100, 999),
                charged(312_500),
            )
        },
        Case {
            unlimited: true,
            ..case(
                "an unlimited user is costed but not debited",
                "gpt-4o",
                "1",
                usage(1_000, 500),
                Expected::Settled {
                    cost: 7_500_000,
                    charged: 0,
                    priced: true,
                },
            )
        },
        Case {
            upstream: "gpt-4o-2024-08-06",
            ..case(
                "a redirect is priced by the upstream model",
                "gpt-4o",
                "1",
                usage(1_000, 500),
                charged(1_000 * 3_000 + 500 * 12_000),
            )
        },
        Case {
            upstream: "alias-upstream",
            ..case(
                "an unpriced upstream falls back to the logical model",
                "alias",
                "2",
                usage(10, 10),
                charged(2 * (10 * 7 + 10 * 9)),
            )
        },
        Case {
            usage: Usage {
                estimated: true,
                ..usage(100, 100)
            },
            ..case(
                "estimated usage is charged like reported usage",
                "gpt-4o",
                "1",
                usage(0, 0),
                charged(100 * 2_500 + 100 * 10_000),
            )
        },
        case(
            "the largest cost that fits is exact",
            "tiny",
            "1",
            usage(MAX, 0),
            charged(i64::MAX),
        ),
        case(
            "one nano-USD more overflows",
            "tiny",
            "1",
            usage(MAX, 1),
            Expected::Fault("overflow"),
        ),
        case(
            "huge prices overflow",
            "huge",
            "1",
            usage(u64::MAX, u64::MAX),
            Expected::Fault("overflow"),
        ),
        case(
            "a multiplier can overflow a cost that fit",
            "tiny",
            "2",
            usage(MAX / 2 + 1, 0),
            Expected::Fault("overflow"),
        ),
        case(
            "huge token counts at a tiny multiplier stay exact",
            "huge",
            "0.000000001",
            usage(1_000_000, 0),
            charged(i64::try_from(u128::from(u64::MAX) * 1_000_000 / 1_000_000_000).unwrap()),
        ),
    ]
}

#[tokio::test]
async fn settle_prices_a_table_of_exact_cases() {
    let engine = engine();
    let database = Database::open_in_memory().unwrap();
    price_list(&database);
    let billing = billing_over(&engine, &database);
    let cases = cases();
    assert!(cases.len() >= 20);
    for (index, case) in cases.into_iter().enumerate() {
        let name = case.name;
        // Each case starts from a fresh account, deep enough that no case can overflow it.
        let start = if case.unlimited { 0 } else { START };
        let user_id = user(&database, &format!("case{index}"), start, case.unlimited);
        let mut request = settle_request(
            &format!("req-{index}"),
            &user_id,
            case.model,
            case.upstream,
            case.multiplier,
            case.usage,
        );
        request.endpoint = case.endpoint;
        let outcome = billing
            .plugin()
            .settle(&request, billing.store())
            .await
            .unwrap_or_else(|error| panic!("{name}: the plugin failed: {error}"));
        let charges: Vec<LedgerRow> = rows(&database, &user_id)
            .into_iter()
            .filter(|row| row.kind == LedgerKind::RequestCharge)
            .collect();
        match (case.expected, outcome) {
            (
                Expected::Settled {
                    cost,
                    charged,
                    priced,
                },
                Ok(settlement),
            ) => {
                assert_eq!(
                    settlement,
                    Settlement {
                        cost: NanoUsd(cost),
                        charged: NanoUsd(charged),
                        priced
                    },
                    "{name}"
                );
                assert_eq!(
                    balance(&database, &user_id),
                    NanoUsd(start - charged),
                    "{name}"
                );
                assert_eq!(charges.len(), 1, "{name}: one ledger row");
                let row = &charges[0];
                assert_eq!(row.delta_nano_usd, NanoUsd(-charged), "{name}");
                assert_eq!(row.request_id.as_deref(), Some(request.request_id.as_str()));
                let meta: serde_json::Value = serde_json::from_str(&row.meta_json).unwrap();
                assert_eq!(meta["cost_nano_usd"], cost.to_string(), "{name}");
                assert_eq!(meta["amount_nano_usd"], cost.to_string(), "{name}");
                assert_eq!(meta["priced"], priced, "{name}");
                assert_eq!(meta["request_id"], request.request_id.as_str(), "{name}");
                assert_eq!(meta["model"], case.model, "{name}");
                assert_eq!(meta["upstream_model"], case.upstream, "{name}");
                assert_eq!(meta["provider_id"], "p1", "{name}");
                assert_eq!(meta["channel_id"], "c1", "{name}");
                assert_eq!(
                    meta["multiplier"],
                    request.attempt.multiplier.to_string(),
                    "{name}"
                );
                assert_eq!(meta["prompt_tokens"], case.usage.prompt_tokens, "{name}");
                assert_eq!(
                    meta["completion_tokens"], case.usage.completion_tokens,
                    "{name}"
                );
                assert_eq!(meta["usage_estimated"], case.usage.estimated, "{name}");
            }
            (Expected::Fault(kind), Err(fault)) => {
                assert!(
                    matches!(
                        (kind, &fault),
                        ("overflow", SettleFault::Overflow(message)) if message.contains("overflows")
                    ),
                    "{name}: {fault:?}"
                );
                assert_eq!(balance(&database, &user_id), NanoUsd(start), "{name}");
                assert!(charges.is_empty(), "{name}: nothing recorded");
            }
            (expected, outcome) => panic!("{name}: expected {expected:?}, got {outcome:?}"),
        }
        assert_eq!(
            ledger_sum(&database, &user_id),
            balance(&database, &user_id),
            "{name}"
        );
    }
}

#[tokio::test]
async fn authorize_refuses_limited_accounts_at_or_below_zero() {
    let engine = engine();
    let database = Database::open_in_memory().unwrap();
    let billing = billing_over(&engine, &database);
    for (index, (balance, unlimited, allowed)) in [
        (0, false, false),
        (-1, false, false),
        (i64::MIN, false, false),
        (1, false, true),
        (START, false, true),
        (0, true, true),
        (-5, true, true),
    ]
    .into_iter()
    .enumerate()
    {
        let user_id = user(&database, &format!("account{index}"), balance, unlimited);
        let outcome = billing.authorize(&authorize_request(&user_id)).await;
        if allowed {
            assert_eq!(outcome, Ok(()), "{balance} unlimited={unlimited}");
        } else {
            assert!(
                matches!(&outcome, Err(BillingFailure::InsufficientBalance(message)) if message.contains(&balance.to_string())),
                "{balance}: {outcome:?}"
            );
        }
    }
    let unknown = billing.authorize(&authorize_request("ghost")).await;
    assert!(
        matches!(&unknown, Err(BillingFailure::Denied(message)) if message.contains("ghost")),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn a_repeated_settle_charges_once() {
    let engine = engine();
    let database = Database::open_in_memory().unwrap();
    price_list(&database);
    let billing = billing_over(&engine, &database);
    let user_id = user(&database, "alice", START, false);
    let request = settle_request(
        "req-1",
        &user_id,
        "gpt-4o",
        "gpt-4o",
        "1",
        usage(1_000, 500),
    );
    let first = billing.settle(request.clone()).await.unwrap();
    assert_eq!(first.charged, NanoUsd(7_500_000));
    // A price change in between must not turn the repeat into a second charge.
    price(&database, "gpt-4o", [Some(1), Some(1), None, None]);
    let again = billing.settle(request.clone()).await.unwrap();
    assert_eq!(again.charged, first.charged, "the first row's charge");
    assert_eq!(balance(&database, &user_id), NanoUsd(START - 7_500_000));
    let charges = rows(&database, &user_id)
        .into_iter()
        .filter(|row| row.kind == LedgerKind::RequestCharge)
        .count();
    assert_eq!(charges, 1);
    // The same request id for another user is a fault, not a second charge.
    let bob = user(&database, "bob", START, false);
    let stolen = billing
        .settle(SettleRequest {
            user_id: bob.clone(),
            ..request
        })
        .await;
    assert!(
        matches!(stolen, Err(BillingFailure::Fault(_))),
        "{stolen:?}"
    );
    assert_eq!(balance(&database, &bob), NanoUsd(START));
}

#[tokio::test]
async fn a_served_request_overdraws_and_the_next_is_refused() {
    let engine = engine();
    let database = Database::open_in_memory().unwrap();
    price_list(&database);
    let billing = billing_over(&engine, &database);
    let user_id = user(&database, "last-nano", 1, false);
    assert_eq!(
        billing.authorize(&authorize_request(&user_id)).await,
        Ok(())
    );
    let settlement = billing
        .settle(settle_request(
            "req-over",
            &user_id,
            "gpt-4o",
            "gpt-4o",
            "1",
            usage(1_000, 500),
        ))
        .await
        .unwrap();
    assert_eq!(settlement.charged, NanoUsd(7_500_000), "charged in full");
    assert_eq!(balance(&database, &user_id), NanoUsd(1 - 7_500_000));
    assert_eq!(ledger_sum(&database, &user_id), NanoUsd(1 - 7_500_000));
    let refused = billing.authorize(&authorize_request(&user_id)).await;
    assert!(
        matches!(refused, Err(BillingFailure::InsufficientBalance(_))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_settle_for_an_unknown_account_is_a_fault() {
    let engine = engine();
    let database = Database::open_in_memory().unwrap();
    price_list(&database);
    let billing = billing_over(&engine, &database);
    let request = settle_request("req-x", "ghost", "gpt-4o", "gpt-4o", "1", usage(1, 1));
    let fault = billing
        .plugin()
        .settle(&request, billing.store())
        .await
        .unwrap();
    assert!(
        matches!(&fault, Err(SettleFault::UnknownAccount(message)) if message.contains("ghost")),
        "{fault:?}"
    );
}

#[tokio::test]
async fn billing_and_router_components_are_refused_in_each_others_world() {
    let engine = engine();
    let router_as_billing = BillingPlugin::load(&engine, "router", ROUTING)
        .err()
        .unwrap();
    assert_eq!(
        router_as_billing.kind,
        PluginErrorKind::ForbiddenImport("monoize:plugin/routing-store@0.1.0".to_owned())
    );
    let billing_as_router = RouterPlugin::load(&engine, "billing", BILLING)
        .err()
        .unwrap();
    assert_eq!(
        billing_as_router.kind,
        PluginErrorKind::ForbiddenImport("monoize:plugin/billing-store@0.1.0".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_on_the_database_does_not_count_against_the_time_bound() {
    let engine = engine_with(PluginLimits {
        timeout: Duration::from_millis(100),
        ..PluginLimits::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let database = db::open(&Dsn::File(dir.path().join("slow.db"))).unwrap();
    price_list(&database);
    let billing = billing_over(&engine, &database);
    let user_id = user(&database, "patient", START, false);
    let (locked, is_locked) = mpsc::channel();
    let holder = database.clone();
    let hold = std::thread::spawn(move || {
        holder
            .write_blocking(move |_| {
                locked.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(600));
                Ok(())
            })
            .unwrap();
    });
    is_locked.recv().unwrap();
    let settlement = billing
        .settle(settle_request(
            "req-slow",
            &user_id,
            "gpt-4o",
            "gpt-4o",
            "1",
            usage(1, 1),
        ))
        .await;
    hold.join().unwrap();
    assert_eq!(settlement.unwrap().charged, NanoUsd(12_500));
}

/// 8 users × 200 concurrent settles (every tenth one a retry of an earlier request id) and 10
/// concurrent adjustments each, on a WAL file database through the group-commit writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn balances_equal_their_ledgers_under_concurrent_settles_and_adjustments() {
    const USERS: usize = 8;
    const SETTLES: usize = 200;
    const ADJUSTMENTS: usize = 10;
    let engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let database = db::open(&Dsn::File(dir.path().join("concurrent.db"))).unwrap();
    price_list(&database);
    let billing = billing_over(&engine, &database);
    let users: Vec<String> = (0..USERS)
        .map(|index| user(&database, &format!("user{index}"), 1_000_000, false))
        .collect();

    let mut tasks = Vec::new();
    for (u, user_id) in users.iter().enumerate() {
        for s in 0..SETTLES {
            // Every tenth settle repeats the request id of the one before it.
            let id = if s % 10 == 9 { s - 1 } else { s };
            let request = settle_request(
                &format!("req-{u}-{id}"),
                user_id,
                "gpt-4o",
                "gpt-4o",
                ["1", "0.3", "1.25", "2"][s % 4],
                usage(10 + s as u64, 5),
            );
            let billing = billing.clone();
            tasks.push(tokio::spawn(async move {
                let request_id = request.request_id.clone();
                let outcome = billing.settle(request).await;
                (
                    Some(request_id),
                    outcome.map(drop).map_err(|e| e.to_string()),
                )
            }));
        }
        for a in 0..ADJUSTMENTS {
            let store = billing.store().clone();
            let user_id = user_id.clone();
            tasks.push(tokio::spawn(async move {
                let adjustment = if a % 3 == 0 {
                    Adjustment::Set(NanoUsd(500_000))
                } else {
                    Adjustment::Add(NanoUsd(1_000 * a as i64))
                };
                let outcome = store
                    .adjust(&user_id, adjustment, r#"{"reason":"test"}"#)
                    .await;
                (None, outcome.map(drop).map_err(|e| e.to_string()))
            }));
        }
    }
    let mut charged_requests: HashMap<String, usize> = HashMap::new();
    let mut adjustments = 0;
    for task in tasks {
        match task.await.unwrap() {
            (Some(request_id), Ok(_)) => *charged_requests.entry(request_id).or_default() += 1,
            (None, Ok(_)) => adjustments += 1,
            (request_id, Err(error)) => panic!("{request_id:?} failed: {error}"),
        }
    }
    assert_eq!(adjustments, USERS * ADJUSTMENTS);
    let distinct_per_user = SETTLES - SETTLES / 10;
    assert_eq!(charged_requests.len(), USERS * distinct_per_user);

    for (u, user_id) in users.iter().enumerate() {
        let rows = rows(&database, user_id);
        let balance = balance(&database, user_id);
        assert_eq!(ledger_sum(&database, user_id), balance, "user {u}");
        let charges: Vec<&LedgerRow> = rows
            .iter()
            .filter(|row| row.kind == LedgerKind::RequestCharge)
            .collect();
        let adjustments = rows.len() - charges.len();
        assert_eq!(
            charges.len(),
            distinct_per_user,
            "user {u}: one row per request"
        );
        assert_eq!(
            adjustments,
            ADJUSTMENTS + 1,
            "user {u}: + the opening balance"
        );
        let ids: HashSet<&str> = charges
            .iter()
            .map(|row| row.request_id.as_deref().unwrap())
            .collect();
        assert_eq!(
            ids.len(),
            charges.len(),
            "user {u}: no request charged twice"
        );
        // Every row's balance_after follows from the one before it.
        let mut running = NanoUsd::ZERO;
        for row in rows.iter().rev() {
            running = running.checked_add(row.delta_nano_usd).unwrap();
            assert_eq!(
                row.balance_after_nano_usd, running,
                "user {u} row {}",
                row.id
            );
        }
    }
    let stats = billing.store().commit_stats();
    let writes = USERS * (SETTLES + ADJUSTMENTS);
    assert_eq!(stats.writes, writes as u64);
    assert!(
        stats.transactions < stats.writes / 2,
        "group commit must share transactions: {stats:?}"
    );
}
