//! `monoize:plugin/billing-store`: balances, prices and the ledger over the call's
//! [`BillingStore`]. Every balance change is one host transaction with exactly one ledger row
//! (group-committed, see `billing::commit`); every refusal is a `store-error`, never a trap.
//! Time spent awaiting the store is given back to the call's time bound.

use std::future::Future;
use std::time::Instant;

use crate::billing::{Account, BillingStore, Pricing};
use crate::db::DbError;
use crate::db::ledger::{self as db_ledger, Adjustment as DbAdjustment, LedgerKind, LedgerRow};
use crate::money::NanoUsd;

use super::store::PluginState;
use super::wit::latest::billing_store::{self as wit, Host};
use super::wit::latest::types::StoreError;

impl Host for PluginState {
    async fn get_account(&mut self, user_id: String) -> Result<Option<wit::Account>, StoreError> {
        let store = self.billing_store()?;
        let account = self.waiting(store.account(&user_id)).await?;
        Ok(account.map(account_to_wit))
    }

    async fn get_pricing(&mut self, model_id: String) -> Result<Option<wit::Pricing>, StoreError> {
        let store = self.billing_store()?;
        let pricing = self.waiting(store.pricing(&model_id)).await?;
        Ok(pricing.map(pricing_to_wit))
    }

    async fn charge(
        &mut self,
        request: wit::ChargeRequest,
    ) -> Result<wit::LedgerEntry, StoreError> {
        let store = self.billing_store()?;
        let charge = db_ledger::Charge {
            user_id: request.user_id,
            request_id: request.request_id,
            amount: NanoUsd(request.amount),
            meta_json: request.meta_json,
            key_id: None,
            stored_response: None,
        };
        let appended = self.waiting(store.charge(charge)).await?;
        Ok(entry_to_wit(appended.into_row()))
    }

    async fn adjust(
        &mut self,
        user_id: String,
        adjustment: wit::Adjustment,
        meta_json: String,
    ) -> Result<wit::LedgerEntry, StoreError> {
        let store = self.billing_store()?;
        let adjustment = match adjustment {
            wit::Adjustment::Add(delta) => DbAdjustment::Add(NanoUsd(delta)),
            wit::Adjustment::Set(balance) => DbAdjustment::Set(NanoUsd(balance)),
        };
        let row = self
            .waiting(store.adjust(&user_id, adjustment, &meta_json))
            .await?;
        Ok(entry_to_wit(row))
    }

    async fn list_ledger(
        &mut self,
        user_id: Option<String>,
        limit: u32,
        before: Option<String>,
    ) -> Result<Vec<wit::LedgerEntry>, StoreError> {
        let store = self.billing_store()?;
        let before = before
            .map(|id| {
                id.parse::<i64>().map_err(|_| {
                    StoreError::Invalid(format!("before `{id}` is not a ledger row id"))
                })
            })
            .transpose()?;
        let rows = self
            .waiting(store.ledger(user_id.as_deref(), limit, before))
            .await?;
        Ok(rows.into_iter().map(entry_to_wit).collect())
    }
}

impl PluginState {
    /// The call's billing store; a world without one answers `storage`, never a trap.
    fn billing_store(&self) -> Result<BillingStore, StoreError> {
        self.capabilities.billing.clone().ok_or_else(|| {
            StoreError::Storage("no billing store is available to this call".to_owned())
        })
    }

    /// Awaits `operation`, credits the wait to the call's time bound, and turns a database
    /// error into the WIT one.
    async fn waiting<T>(
        &mut self,
        operation: impl Future<Output = Result<T, DbError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let outcome = operation.await;
        self.credit_host_wait(started.elapsed());
        outcome.map_err(store_error)
    }
}

/// The WIT error for a database error. Storage messages are for logs and name tables and
/// columns, never stored values.
pub(super) fn store_error(error: DbError) -> StoreError {
    match error {
        DbError::NotFound(message) => StoreError::NotFound(message),
        DbError::Conflict(message) => StoreError::Conflict(message),
        DbError::Invalid(message) => StoreError::Invalid(message),
        other => StoreError::Storage(other.to_string()),
    }
}

fn account_to_wit(account: Account) -> wit::Account {
    wit::Account {
        user_id: account.user_id,
        balance: account.balance.0,
        unlimited: account.unlimited,
    }
}

fn pricing_to_wit(pricing: Pricing) -> wit::Pricing {
    wit::Pricing {
        model_id: pricing.model_id,
        input: pricing.input,
        output: pricing.output,
        cache_read_input: pricing.cache_read_input,
        reasoning_output: pricing.reasoning_output,
    }
}

fn entry_to_wit(row: LedgerRow) -> wit::LedgerEntry {
    wit::LedgerEntry {
        id: row.id.to_string(),
        user_id: row.user_id,
        kind: match row.kind {
            LedgerKind::RequestCharge => wit::LedgerKind::RequestCharge,
            LedgerKind::AdminAdjustment => wit::LedgerKind::AdminAdjustment,
        },
        delta: row.delta_nano_usd.0,
        balance_after: row.balance_after_nano_usd.0,
        request_id: row.request_id,
        meta_json: row.meta_json,
        created_at: row.created_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_errors_map_to_their_wit_variants() {
        let cases = [
            (DbError::NotFound("user x".to_owned()), "not-found"),
            (DbError::Conflict("request r".to_owned()), "conflict"),
            (DbError::Invalid("amount".to_owned()), "invalid"),
            (DbError::Corrupt("balance".to_owned()), "storage"),
            (DbError::Internal("gone".to_owned()), "storage"),
        ];
        for (error, expected) in cases {
            let kind = match store_error(error) {
                StoreError::NotFound(_) => "not-found",
                StoreError::Conflict(_) => "conflict",
                StoreError::Invalid(_) => "invalid",
                StoreError::Storage(_) => "storage",
            };
            assert_eq!(kind, expected);
        }
    }
}
