//! The billing suite (DESIGN §6, §7). Every check runs the plugin exactly as the gateway does
//! — through [`Billing`], over a [`BillingStore`] with its group-commit writer — against a
//! fresh in-memory database holding the fixture price list and the accounts the check needs,
//! and judges the plugin by what it answered and by what reached the ledger.
//!
//! Contract checks hold for any billing plugin: a limited account at or below zero is refused
//! (`insufficient-balance`), a funded or unlimited one is not; a settle charges a served request
//! in full even into debt and never refuses it; an unlimited account is not debited but its
//! usage is on the ledger; a model without pricing is not charged; no settle ever raises a
//! balance; a repeated settle of one request id charges once. The reference check
//! (`--reference`) holds for the default plugin's formulas: a table of exact charges.

use super::fixtures::ONE;
use super::{CheckOutcome, Report};
use crate::billing::{Billing, BillingFailure, BillingStore, SettleRequest, Settlement, Usage};
use crate::db::Database;
use crate::db::ledger::{self, Adjustment, LedgerRow};
use crate::db::registry::{self, ModelMetadataRow};
use crate::db::users::{self, NewUser, Role};
use crate::money::{Multiplier, NanoUsd};
use crate::plugins::{BillingPlugin, PluginEngine};
use crate::routing::{Attempt, EndpointKind};

/// The contract checks, in the order they run.
pub const CONTRACT_CHECKS: &[&str] = &[
    "loads",
    "authorize-at-or-below-zero",
    "authorize-funded",
    "settle-overdraws",
    "unlimited-not-debited",
    "no-charge-without-pricing",
    "no-negative-charge",
    "idempotent-settle",
];

/// The reference checks `--reference` adds.
pub const REFERENCE_CHECKS: &[&str] = &["reference-exact-charges"];

/// The fixture price list: model, then nano-USD per input, output, cache-read input and
/// reasoning output token.
const PRICE_LIST: &[(&str, [Option<u64>; 4])] = &[
    (
        "priced",
        [Some(2_500), Some(10_000), Some(1_250), Some(20_000)],
    ),
    ("priced-upstream", [Some(3_000), Some(12_000), None, None]),
    ("tiny", [Some(7), Some(3), None, None]),
    ("input-only", [Some(100), None, None, None]),
    ("prices-unknown", [None, None, None, None]),
];

/// A balance no check's charges can exhaust.
const FUNDED: i64 = 1_000_000_000_000_000;

/// Runs the billing suite on the component `bytes` named `name`.
pub async fn check(engine: &PluginEngine, name: &str, bytes: &[u8], reference: bool) -> Report {
    let names: Vec<&'static str> = CONTRACT_CHECKS
        .iter()
        .chain(if reference { REFERENCE_CHECKS } else { &[] })
        .copied()
        .collect();
    let loaded = BillingPlugin::load(engine, name, bytes)
        .map(|plugin| Suite { plugin })
        .map_err(|error| error.to_string());
    super::run_checks("billing", name, &names, loaded).await
}

struct Suite {
    plugin: BillingPlugin,
}

impl super::Suite for Suite {
    async fn run(&self, check: &str) -> CheckOutcome {
        let fixture = Fixture::new(&self.plugin).await?;
        match check {
            "authorize-at-or-below-zero" => fixture.authorize_at_or_below_zero().await,
            "authorize-funded" => fixture.authorize_funded().await,
            "settle-overdraws" => fixture.settle_overdraws().await,
            "unlimited-not-debited" => fixture.unlimited_not_debited().await,
            "no-charge-without-pricing" => fixture.no_charge_without_pricing().await,
            "no-negative-charge" => fixture.no_negative_charge().await,
            "idempotent-settle" => fixture.idempotent_settle().await,
            "reference-exact-charges" => fixture.reference_exact_charges().await,
            other => Err(format!("no such check `{other}`")),
        }
    }
}

/// One settle to make: the endpoint, the logical and the upstream model, the multiplier (in
/// nanos) and the usage.
#[derive(Debug, Clone, Copy)]
struct Served {
    endpoint: EndpointKind,
    model: &'static str,
    upstream_model: &'static str,
    multiplier: u64,
    usage: Usage,
}

/// A chat request for `model`, served as itself at multiplier 1.
fn chat(model: &'static str, prompt: u64, completion: u64) -> Served {
    Served {
        endpoint: EndpointKind::ChatCompletions,
        model,
        upstream_model: model,
        multiplier: ONE,
        usage: Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            ..Usage::default()
        },
    }
}

impl Served {
    fn at(mut self, multiplier: u64) -> Served {
        self.multiplier = multiplier;
        self
    }

    fn served_as(mut self, upstream_model: &'static str) -> Served {
        self.upstream_model = upstream_model;
        self
    }

    fn on(mut self, endpoint: EndpointKind) -> Served {
        self.endpoint = endpoint;
        self
    }

    fn cached(mut self, cached: u64) -> Served {
        self.usage.cached_prompt_tokens = Some(cached);
        self
    }

    fn reasoning(mut self, reasoning: u64) -> Served {
        self.usage.reasoning_tokens = Some(reasoning);
        self
    }

    fn describe(&self) -> String {
        let usage = &self.usage;
        let of = |count: Option<u64>, what: &str| {
            count.map_or(String::new(), |count| format!(", {count} {what}"))
        };
        format!(
            "{:?} {} (served as {}) at {} with {} prompt{} and {} completion{} tokens",
            self.endpoint,
            self.model,
            self.upstream_model,
            Multiplier::from_nanos(self.multiplier),
            usage.prompt_tokens,
            of(usage.cached_prompt_tokens, "cached"),
            usage.completion_tokens,
            of(usage.reasoning_tokens, "reasoning"),
        )
    }
}

/// A fresh in-memory database with the price list, and the plugin over it.
struct Fixture {
    database: Database,
    billing: Billing,
}

impl Fixture {
    async fn new(plugin: &BillingPlugin) -> Result<Fixture, String> {
        let fail = |error: crate::db::DbError| format!("fixture database: {error}");
        let database = Database::open_in_memory().map_err(fail)?;
        database
            .write(|tx| {
                for &(model, prices) in PRICE_LIST {
                    let row = ModelMetadataRow {
                        model_id: model.to_owned(),
                        input_cost_per_token_nano: prices[0],
                        output_cost_per_token_nano: prices[1],
                        cache_read_input_cost_per_token_nano: prices[2],
                        output_cost_per_reasoning_token_nano: prices[3],
                        ..ModelMetadataRow::default()
                    };
                    registry::upsert_metadata(tx, &row)?;
                }
                Ok(())
            })
            .await
            .map_err(fail)?;
        let store = BillingStore::new(database.clone()).map_err(fail)?;
        Ok(Fixture {
            database,
            billing: Billing::new(plugin.clone(), store),
        })
    }

    /// A new account `name` with `balance`, limited or not; answers its id.
    async fn account(&self, name: &str, balance: i64, unlimited: bool) -> Result<String, String> {
        let mut new = NewUser::new(name, "fixture", Role::User);
        new.balance_unlimited = unlimited;
        self.database
            .write(move |tx| {
                let user = users::insert(tx, &new)?;
                if balance != 0 {
                    ledger::adjust(tx, &user.id, Adjustment::Set(NanoUsd(balance)), "{}")?;
                }
                Ok(user.id)
            })
            .await
            .map_err(|error| format!("fixture account: {error}"))
    }

    async fn balance(&self, user_id: &str) -> Result<i64, String> {
        let id = user_id.to_owned();
        self.database
            .read(move |connection| users::balance(connection, &id))
            .await
            .map(|(balance, _)| balance.0)
            .map_err(|error| format!("fixture balance: {error}"))
    }

    async fn rows(&self, user_id: &str) -> Result<Vec<LedgerRow>, String> {
        let id = user_id.to_owned();
        self.database
            .read(move |connection| ledger::list(connection, Some(&id), 1000, None))
            .await
            .map_err(|error| format!("fixture ledger: {error}"))
    }

    /// How authorize answered for `user_id`: `Ok(None)` allowed, `Ok(Some(refusal))` refused;
    /// `Err` the plugin failed.
    async fn authorize(&self, user_id: &str) -> Result<Option<BillingFailure>, String> {
        let request = crate::billing::AuthorizeRequest {
            request_id: format!("authorize-{user_id}"),
            user_id: user_id.to_owned(),
            model: "priced".to_owned(),
            endpoint: EndpointKind::ChatCompletions,
        };
        match self.billing.authorize(&request).await {
            Ok(()) => Ok(None),
            Err(BillingFailure::Plugin(error)) => Err(format!("authorize failed: {error}")),
            Err(refusal) => Ok(Some(refusal)),
        }
    }

    /// Settles `served` for `user_id` as request `request_id`.
    async fn settle(
        &self,
        request_id: &str,
        user_id: &str,
        served: &Served,
    ) -> Result<Settlement, BillingFailure> {
        self.billing
            .settle(SettleRequest {
                request_id: request_id.to_owned(),
                user_id: user_id.to_owned(),
                model: served.model.to_owned(),
                endpoint: served.endpoint,
                attempt: Attempt {
                    provider_id: "fixture-provider".to_owned(),
                    channel_id: "fixture-channel".to_owned(),
                    upstream_model: served.upstream_model.to_owned(),
                    multiplier: Multiplier::from_nanos(served.multiplier),
                },
                usage: served.usage,
            })
            .await
    }

    /// Settles `served` and insists that it succeeded.
    async fn settled(
        &self,
        request_id: &str,
        user_id: &str,
        served: &Served,
    ) -> Result<Settlement, String> {
        self.settle(request_id, user_id, served)
            .await
            .map_err(|failure| format!("settle of {} failed: {failure}", served.describe()))
    }

    async fn authorize_at_or_below_zero(&self) -> CheckOutcome {
        for balance in [0, -1, -1_000_000_000, i64::MIN] {
            let user = self
                .account(&format!("owes-{balance}"), balance, false)
                .await?;
            match self.authorize(&user).await? {
                Some(BillingFailure::InsufficientBalance(_)) => {}
                Some(other) => {
                    return Err(format!(
                        "a limited account at {balance} was refused, but not as \
                         insufficient-balance: {other}"
                    ));
                }
                None => {
                    return Err(format!(
                        "a limited account at {balance} nano-USD may go upstream"
                    ));
                }
            }
        }
        Ok(())
    }

    async fn authorize_funded(&self) -> CheckOutcome {
        let accounts = [
            (1, false),
            (1_000_000_000_000, false),
            (i64::MAX, false),
            (0, true),
            (-5, true),
            (FUNDED, true),
        ];
        for (balance, unlimited) in accounts {
            let kind = if unlimited {
                "an unlimited"
            } else {
                "a limited"
            };
            let user = self
                .account(&format!("funded-{balance}-{unlimited}"), balance, unlimited)
                .await?;
            if let Some(refusal) = self.authorize(&user).await? {
                return Err(format!(
                    "{kind} account at {balance} nano-USD was refused: {refusal}"
                ));
            }
        }
        Ok(())
    }

    async fn settle_overdraws(&self) -> CheckOutcome {
        let served = chat("priced", 1_000, 500);
        for balance in [1, 0, -100] {
            let user = self
                .account(&format!("short-{balance}"), balance, false)
                .await?;
            let settlement = self
                .settled(&format!("overdraw-{balance}"), &user, &served)
                .await
                .map_err(|reason| format!("at a balance of {balance}: {reason}"))?;
            if settlement.cost.0 <= 0 || !settlement.priced {
                return Err(format!(
                    "a priced request was not charged at a balance of {balance} ({settlement:?})"
                ));
            }
            let after = self.balance(&user).await?;
            let expected = balance.checked_sub(settlement.cost.0);
            if settlement.charged != settlement.cost || Some(after) != expected {
                return Err(format!(
                    "a served request costing {} at a balance of {balance} took {} (the balance \
                     is {after}): a served request is charged in full, even into debt",
                    settlement.cost, settlement.charged
                ));
            }
        }
        Ok(())
    }

    async fn unlimited_not_debited(&self) -> CheckOutcome {
        let served = chat("priced", 1_000, 500);
        for balance in [0, 1_000] {
            let user = self
                .account(&format!("unlimited-{balance}"), balance, true)
                .await?;
            let before = self.rows(&user).await?.len();
            let settlement = self
                .settled(&format!("unlimited-{balance}"), &user, &served)
                .await?;
            let after = self.balance(&user).await?;
            if after != balance || settlement.charged.0 != 0 {
                return Err(format!(
                    "an unlimited account at {balance} was debited: charged {}, balance now \
                     {after}",
                    settlement.charged
                ));
            }
            let rows = self.rows(&user).await?;
            let new_rows: Vec<&LedgerRow> = rows
                .iter()
                .take(rows.len().saturating_sub(before))
                .collect();
            match new_rows.as_slice() {
                [row] if row.delta_nano_usd == NanoUsd::ZERO => {}
                _ => {
                    return Err(format!(
                        "an unlimited account's usage must be one ledger row with delta 0; the \
                         settle wrote {} row(s)",
                        new_rows.len()
                    ));
                }
            }
        }
        Ok(())
    }

    async fn no_charge_without_pricing(&self) -> CheckOutcome {
        let user = self.account("unpriced", FUNDED, false).await?;
        let cases = [
            chat("unpriced", 1_000, 500),
            chat("unpriced", 1_000, 500).served_as("unpriced-upstream"),
            chat("prices-unknown", 1_000, 500),
            chat("unpriced", 1_000, 0).on(EndpointKind::Embeddings),
        ];
        for (index, served) in cases.iter().enumerate() {
            let before = self.balance(&user).await?;
            let settlement = self
                .settled(&format!("unpriced-{index}"), &user, served)
                .await?;
            let after = self.balance(&user).await?;
            if after != before || settlement.charged.0 != 0 || settlement.priced {
                return Err(format!(
                    "{} has no pricing, yet it took {} nano-USD ({settlement:?})",
                    served.describe(),
                    before.saturating_sub(after)
                ));
            }
        }
        Ok(())
    }

    async fn no_negative_charge(&self) -> CheckOutcome {
        let user = self.account("credits", FUNDED, false).await?;
        let cases = [
            chat("priced", 0, 0),
            chat("tiny", 0, 0).at(ONE * 2),
            chat("priced", 10, 0).cached(1_000),
            chat("priced", 0, 10).reasoning(1_000),
            chat("priced", 10, 10).cached(1_000).reasoning(1_000),
            chat("priced", 1_000, 500).at(0),
            chat("tiny", 1, 1).at(1),
            chat("input-only", 10, 10).on(EndpointKind::Embeddings),
        ];
        for (index, served) in cases.iter().enumerate() {
            let before = self.balance(&user).await?;
            let outcome = self.settle(&format!("credit-{index}"), &user, served).await;
            let after = self.balance(&user).await?;
            if after > before {
                return Err(format!(
                    "settling {} raised the balance by {}",
                    served.describe(),
                    after.saturating_sub(before)
                ));
            }
            match outcome {
                Ok(settlement) if before.checked_sub(after) != Some(settlement.charged.0) => {
                    return Err(format!(
                        "settling {} reported {} charged but took {}",
                        served.describe(),
                        settlement.charged,
                        before.saturating_sub(after)
                    ));
                }
                // A negative amount is refused by the host as a broken contract.
                Err(BillingFailure::Plugin(error)) => {
                    return Err(format!("settling {}: {error}", served.describe()));
                }
                Ok(_) | Err(_) => {}
            }
        }
        Ok(())
    }

    async fn idempotent_settle(&self) -> CheckOutcome {
        let user = self.account("retries", FUNDED, false).await?;
        let served = chat("priced", 1_000, 500);
        let first = self.settled("repeated", &user, &served).await?;
        if first.charged.0 <= 0 {
            return Err(format!("a priced request was not charged ({first:?})"));
        }
        let rows_after_first = self.rows(&user).await?.len();
        // A retry of the same request, even one reporting other usage, charges nothing more.
        for usage in [served, chat("priced", 5_000, 5_000)] {
            let _ = self.settle("repeated", &user, &usage).await;
        }
        let rows = self.rows(&user).await?;
        let after = self.balance(&user).await?;
        let charged = FUNDED.saturating_sub(after);
        if rows.len() != rows_after_first || charged != first.charged.0 {
            return Err(format!(
                "settling request `repeated` three times took {charged} nano-USD in {} ledger \
                 row(s); once is {} in one row",
                rows.len().saturating_sub(1),
                first.charged
            ));
        }
        match rows.first() {
            Some(row) if row.request_id.as_deref() == Some("repeated") => Ok(()),
            Some(row) => Err(format!(
                "the charge is recorded under request id {:?}, not `repeated`: the ledger cannot \
                 refuse a second charge of the request",
                row.request_id
            )),
            None => Err("the charge left no ledger row".to_owned()),
        }
    }

    async fn reference_exact_charges(&self) -> CheckOutcome {
        let user = self.account("exact", FUNDED, false).await?;
        for (index, (served, expected)) in exact_cases().iter().enumerate() {
            let before = self.balance(&user).await?;
            let settlement = self
                .settled(&format!("exact-{index}"), &user, served)
                .await?;
            let taken = before.saturating_sub(self.balance(&user).await?);
            if settlement.cost.0 != *expected || taken != *expected {
                return Err(format!(
                    "{} must cost {expected} nano-USD; the plugin computed {} and took {taken}",
                    served.describe(),
                    settlement.cost
                ));
            }
        }
        Ok(())
    }
}

/// The default formulas on exact cases (DESIGN §6), with the expected charge in nano-USD.
fn exact_cases() -> Vec<(Served, i64)> {
    let plain = chat("priced", 1_000, 500);
    vec![
        // 1000 × 2500 + 500 × 10000
        (plain, 7_500_000),
        (plain.at(ONE * 3 / 10), 2_250_000),
        (plain.at(ONE * 5 / 4), 9_375_000),
        (plain.at(ONE * 2), 15_000_000),
        // 600 × 2500 + 400 × 1250 + 500 × 10000
        (plain.cached(400), 7_000_000),
        // 1000 × 2500 + 300 × 10000 + 200 × 20000
        (plain.reasoning(200), 9_500_000),
        // (2_000_000 + 7_000_000) × 1.25
        (plain.cached(400).reasoning(200).at(ONE * 5 / 4), 11_250_000),
        // 7 × 0.3 = 2.1, truncated
        (chat("tiny", 1, 0).at(ONE * 3 / 10), 2),
        // (7 + 3) × 1.25 = 12.5, truncated
        (chat("tiny", 1, 1).at(ONE * 5 / 4), 12),
        // no cache price: cached tokens at the input price
        (chat("tiny", 10, 0).cached(5), 70),
        // embeddings bill prompt tokens only
        (plain.on(EndpointKind::Embeddings), 2_500_000),
        (
            chat("input-only", 10, 0).on(EndpointKind::Embeddings),
            1_000,
        ),
        // priced by the upstream model served: 10 × 3000 + 10 × 12000
        (chat("priced", 10, 10).served_as("priced-upstream"), 150_000),
        // an unpriced upstream model falls back to the logical one
        (
            chat("priced", 10, 10).served_as("unpriced-upstream"),
            125_000,
        ),
        (chat("priced", 0, 0), 0),
        (
            chat("priced", 1_000_000_000, 0).at(ONE * 2),
            5_000_000_000_000,
        ),
    ]
}
