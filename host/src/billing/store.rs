//! The billing store: what `monoize:plugin/billing-store` offers a plugin, over the database.
//! Accounts and prices are served from memory ([`super::cache`]) and read from the read
//! connections when not there; every balance change goes through the group-commit writer
//! ([`super::commit`]) as one transaction with exactly one ledger row.

use std::sync::Arc;

use crate::db::ledger::{self, Adjustment, Appended, Charge, LedgerRow};
use crate::db::stored_responses::StoredResponse;
use crate::db::{Database, DbError, MAX_LIST_LIMIT, registry, users};
use crate::money::NanoUsd;

use super::cache::ReadCache;
use super::commit::{AccountCache, CommitStats, LedgerWrite, LedgerWriter};
use super::{Account, Pricing};

/// The fields of a charge's meta that the host sets, whatever the plugin wrote.
const HOST_FIELDS: &[&str] = &["request_id", "amount_nano_usd", "key_id"];

/// The longest `meta_json` a ledger row takes; a ledger row is an audit record, not storage.
pub const MAX_META_BYTES: usize = 16 * 1024;

/// Balances, prices and the ledger, as a plugin reaches them; cheap to clone.
#[derive(Clone, Debug)]
pub struct BillingStore {
    database: Database,
    writer: LedgerWriter,
    accounts: Arc<AccountCache>,
    prices: Arc<ReadCache<Option<Pricing>>>,
    /// For the settle of one request: what the host knows of it.
    request: Option<Arc<SettledRequest>>,
}

/// What the host adds to the charge of the one request a settle's store is for.
#[derive(Debug)]
struct SettledRequest {
    request_id: String,
    key: RequestKey,
    stored_response: Option<StoredResponse>,
}

/// The API key a request was made with, as its settle's store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    /// `api_keys.id`: recorded as the charge's `key_id`.
    pub key_id: String,
    /// Whether the key's quota is limited: then the charge is taken from it too.
    pub quota_limited: bool,
}

impl BillingStore {
    /// A store over `database` whose balance changes are group-committed by a writer thread
    /// of its own (see [`super::commit`]).
    pub fn new(database: Database) -> Result<BillingStore, DbError> {
        let accounts = Arc::<AccountCache>::default();
        let writer = LedgerWriter::grouped(database.clone(), Arc::clone(&accounts))?;
        Ok(BillingStore::with_writer(database, writer, accounts))
    }

    /// A store that commits every balance change in its own transaction: the baseline group
    /// commit is measured against, not for production.
    pub fn with_commit_per_write(database: Database) -> BillingStore {
        let accounts = Arc::<AccountCache>::default();
        let writer = LedgerWriter::per_write(database.clone(), Arc::clone(&accounts));
        BillingStore::with_writer(database, writer, accounts)
    }

    fn with_writer(
        database: Database,
        writer: LedgerWriter,
        accounts: Arc<AccountCache>,
    ) -> BillingStore {
        BillingStore {
            database,
            writer,
            accounts,
            prices: Arc::default(),
            request: None,
        }
    }

    /// This store, for the settle of `request_id` made with `key`: the charge of that request
    /// (and of no other) records the key's id in its meta and, when the key's quota is limited,
    /// is taken from that quota too, in its ledger transaction; and the owner of the response
    /// it stored upstream, when it did. The plugin never names the key or the response: the
    /// host knows them.
    pub fn for_request(
        &self,
        request_id: &str,
        key: RequestKey,
        stored_response: Option<StoredResponse>,
    ) -> BillingStore {
        let request = SettledRequest {
            request_id: request_id.to_owned(),
            key,
            stored_response,
        };
        BillingStore {
            request: Some(Arc::new(request)),
            ..self.clone()
        }
    }

    /// Forgets every account served from memory: call it after any write to `users` that
    /// does not go through this store (a user's `balance_unlimited` changed, a user deleted).
    pub fn forget_accounts(&self) {
        self.accounts.clear();
    }

    /// Forgets every price served from memory: call it after any write to
    /// `model_metadata_records`.
    pub fn forget_prices(&self) {
        self.prices.clear();
    }

    /// The database underneath.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// How many transactions committed how many balance changes so far.
    pub fn commit_stats(&self) -> CommitStats {
        self.writer.stats()
    }

    /// The billing state of `user_id`; `None` for an unknown user.
    pub async fn account(&self, user_id: &str) -> Result<Option<Account>, DbError> {
        let read = |connection: &rusqlite::Connection, id: &str| {
            Ok(users::get(connection, id)?.map(|user| Account {
                user_id: user.id,
                balance: user.balance_nano_usd,
                unlimited: user.balance_unlimited,
            }))
        };
        self.read_through(&self.accounts, user_id, read).await
    }

    /// The prices of `model_id` (`model_metadata_records`); `None` without a metadata row.
    pub async fn pricing(&self, model_id: &str) -> Result<Option<Pricing>, DbError> {
        let read = |connection: &rusqlite::Connection, id: &str| {
            Ok(registry::get_metadata(connection, id)?.map(|row| Pricing {
                model_id: row.model_id,
                input: row.input_cost_per_token_nano,
                output: row.output_cost_per_token_nano,
                cache_read_input: row.cache_read_input_cost_per_token_nano,
                reasoning_output: row.output_cost_per_reasoning_token_nano,
            }))
        };
        self.read_through(&self.prices, model_id, read).await
    }

    /// The value of `key` from `cache`, else `read` from a read connection and kept there.
    async fn read_through<V, R>(
        &self,
        cache: &ReadCache<V>,
        key: &str,
        read: R,
    ) -> Result<V, DbError>
    where
        V: Clone + Send + 'static,
        R: FnOnce(&rusqlite::Connection, &str) -> Result<V, DbError> + Send + 'static,
    {
        if let Some(value) = cache.get(key) {
            return Ok(value);
        }
        let ticket = cache.ticket();
        let id = key.to_owned();
        let value = self
            .database
            .read(move |connection| read(connection, &id))
            .await?;
        cache.insert(key, value.clone(), ticket);
        Ok(value)
    }

    /// Charges a served request (see [`ledger::charge`]) and answers once it is committed.
    /// The plugin's `meta_json` (a JSON object) is kept; the host sets `request_id` and
    /// `amount_nano_usd` in it, so an unlimited user's row (delta 0) still shows the cost, and
    /// `key_id` when this store knows the request's key (see [`BillingStore::for_request`]).
    pub async fn charge(&self, mut charge: Charge) -> Result<Appended, DbError> {
        let request = self
            .request
            .as_deref()
            .filter(|request| request.request_id == charge.request_id);
        let key = request.map(|request| &request.key);
        charge.meta_json = with_charge_fields(
            &charge.meta_json,
            &charge.request_id,
            charge.amount,
            key.map(|key| key.key_id.as_str()),
        )?;
        charge.key_id = key
            .filter(|key| key.quota_limited)
            .map(|key| key.key_id.clone());
        charge.stored_response = request.and_then(|request| request.stored_response.clone());
        self.writer.write(LedgerWrite::Charge(charge)).await
    }

    /// Applies an administrator's adjustment (see [`ledger::adjust`]) and answers its row once
    /// committed. `meta_json` must be a JSON object (empty reads as `{}`).
    pub async fn adjust(
        &self,
        user_id: &str,
        adjustment: Adjustment,
        meta_json: &str,
    ) -> Result<LedgerRow, DbError> {
        let meta = serde_json::Value::Object(meta_object(meta_json)?).to_string();
        let write = LedgerWrite::Adjust {
            user_id: user_id.to_owned(),
            adjustment,
            meta_json: meta,
        };
        self.writer
            .write(write)
            .await
            .map(|appended| match appended {
                Appended::Recorded(row) | Appended::AlreadyRecorded(row) => row,
            })
    }

    /// Ledger rows newest first, of one user or of everyone: at most `limit` (1 to
    /// [`MAX_LIST_LIMIT`], else `Invalid`), older than the row `before` when given.
    pub async fn ledger(
        &self,
        user_id: Option<&str>,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<LedgerRow>, DbError> {
        if !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(DbError::Invalid(format!(
                "limit must be 1 to {MAX_LIST_LIMIT} (got {limit})"
            )));
        }
        let user_id = user_id.map(str::to_owned);
        self.database
            .read(move |connection| ledger::list(connection, user_id.as_deref(), limit, before))
            .await
    }
}

/// `meta_json` with the host's fields set (replacing any the plugin wrote): `request_id`,
/// `amount_nano_usd` and, when known, the `key_id` of the API key that made the request.
/// `Invalid` when it is too long or not a JSON object; empty reads as `{}`. When the plugin
/// wrote none of them, as the default plugin does, they are appended to its text after one
/// validating pass, without building the object.
fn with_charge_fields(
    meta_json: &str,
    request_id: &str,
    amount: NanoUsd,
    key_id: Option<&str>,
) -> Result<String, DbError> {
    let fields = || {
        let request_id = serde_json::Value::from(request_id).to_string();
        let mut fields = format!(r#""request_id":{request_id},"amount_nano_usd":"{amount}""#);
        if let Some(key_id) = key_id {
            fields.push_str(&format!(r#","key_id":{}"#, serde_json::Value::from(key_id)));
        }
        fields
    };
    let text = meta_json.trim();
    if text.len() <= MAX_META_BYTES && !text.is_empty() {
        let keys = serde_json::from_str::<ObjectKeys>(text);
        if let (Ok(keys), Some(open)) = (keys, text.strip_suffix('}'))
            && !keys.reserved
        {
            let separator = if keys.count == 0 { "" } else { "," };
            return Ok(format!("{}{separator}{}}}", open.trim_end(), fields()));
        }
    }
    let mut meta = meta_object(meta_json)?;
    meta.insert("request_id".to_owned(), serde_json::Value::from(request_id));
    meta.insert(
        "amount_nano_usd".to_owned(),
        serde_json::Value::from(amount.to_string()),
    );
    meta.remove("key_id");
    if let Some(key_id) = key_id {
        meta.insert("key_id".to_owned(), serde_json::Value::from(key_id));
    }
    Ok(serde_json::Value::Object(meta).to_string())
}

/// What one pass over a JSON object found: how many fields, and whether one is a field the host
/// sets. Deserializing anything but an object fails.
struct ObjectKeys {
    count: usize,
    reserved: bool,
}

impl<'de> serde::Deserialize<'de> for ObjectKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ObjectKeys;
            fn expecting(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                out.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ObjectKeys, A::Error> {
                let mut keys = ObjectKeys {
                    count: 0,
                    reserved: false,
                };
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    keys.count += 1;
                    keys.reserved |= HOST_FIELDS.contains(&key.as_ref());
                }
                Ok(keys)
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// `meta_json` as a JSON object: `Invalid` when it is too long or not an object; empty reads as
/// `{}`.
fn meta_object(meta_json: &str) -> Result<serde_json::Map<String, serde_json::Value>, DbError> {
    if meta_json.len() > MAX_META_BYTES {
        return Err(DbError::Invalid(format!(
            "meta_json is longer than {MAX_META_BYTES} bytes"
        )));
    }
    if meta_json.trim().is_empty() {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_str(meta_json) {
        Ok(serde_json::Value::Object(meta)) => Ok(meta),
        _ => Err(DbError::Invalid(
            "meta_json must be a JSON object".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::users::{NewUser, Role};

    fn store_with_user(unlimited: bool) -> (BillingStore, String) {
        let database = Database::open_in_memory().unwrap();
        let mut new = NewUser::new("u", "h", Role::User);
        new.balance_unlimited = unlimited;
        let id = database
            .write_blocking(move |tx| users::insert(tx, &new))
            .unwrap()
            .id;
        (BillingStore::new(database).unwrap(), id)
    }

    fn charge(user_id: &str, request_id: &str, amount: i64, meta: &str) -> Charge {
        Charge {
            user_id: user_id.to_owned(),
            request_id: request_id.to_owned(),
            amount: NanoUsd(amount),
            meta_json: meta.to_owned(),
            key_id: None,
            stored_response: None,
        }
    }

    #[tokio::test]
    async fn the_host_sets_request_id_and_amount_in_the_meta() {
        let (store, user) = store_with_user(true);
        let row = store
            .charge(charge(
                &user,
                "req-1",
                42,
                r#"{"model":"m","usage_estimated":true,"request_id":"forged"}"#,
            ))
            .await
            .unwrap();
        let row = row.row();
        assert_eq!(row.delta_nano_usd, NanoUsd::ZERO);
        let meta: serde_json::Value = serde_json::from_str(&row.meta_json).unwrap();
        assert_eq!(meta["request_id"], "req-1");
        assert_eq!(meta["amount_nano_usd"], "42");
        assert_eq!(meta["usage_estimated"], true);
        assert_eq!(meta["model"], "m");
    }

    #[tokio::test]
    async fn bad_input_is_refused_as_invalid() {
        let (store, user) = store_with_user(false);
        for meta in ["[1]", "nope", "\"text\""] {
            let error = store.charge(charge(&user, "r", 1, meta)).await.unwrap_err();
            assert!(matches!(error, DbError::Invalid(_)), "{meta}: {error:?}");
        }
        let long = format!(r#"{{"x":"{}"}}"#, "a".repeat(MAX_META_BYTES));
        assert!(matches!(
            store.charge(charge(&user, "r", 1, &long)).await,
            Err(DbError::Invalid(_))
        ));
        for limit in [0, MAX_LIST_LIMIT + 1] {
            assert!(matches!(
                store.ledger(None, limit, None).await,
                Err(DbError::Invalid(_))
            ));
        }
        assert!(
            store
                .adjust(&user, Adjustment::Add(NanoUsd(1)), "[]")
                .await
                .is_err()
        );
        let row = store
            .adjust(&user, Adjustment::Add(NanoUsd(1)), "")
            .await
            .unwrap();
        assert_eq!(row.meta_json, "{}");
    }

    #[tokio::test]
    async fn dbo3_1_a_cached_account_follows_every_committed_balance_change() {
        let (store, user) = store_with_user(false);
        assert_eq!(
            store.account(&user).await.unwrap().unwrap().balance,
            NanoUsd::ZERO
        );
        store
            .adjust(&user, Adjustment::Add(NanoUsd(100)), "")
            .await
            .unwrap();
        store.charge(charge(&user, "r1", 30, "{}")).await.unwrap();
        store.charge(charge(&user, "r1", 30, "{}")).await.unwrap();
        let cached = store.account(&user).await.unwrap().unwrap();
        assert_eq!(cached.balance, NanoUsd(70));
        let id = user.clone();
        let stored = store
            .database()
            .read_blocking(move |c| users::balance(c, &id))
            .unwrap()
            .0;
        assert_eq!(cached.balance, stored);
        // A write outside the store is seen once the store is told.
        let id = user.clone();
        store
            .database()
            .write_blocking(move |tx| {
                let mut row = users::get(tx, &id)?.unwrap();
                row.balance_unlimited = true;
                users::update(tx, &row)
            })
            .unwrap();
        store.forget_accounts();
        assert!(store.account(&user).await.unwrap().unwrap().unlimited);
    }

    #[tokio::test]
    async fn account_and_pricing_read_what_is_stored() {
        let (store, user) = store_with_user(false);
        let account = store.account(&user).await.unwrap().unwrap();
        assert_eq!(
            account,
            Account {
                user_id: user.clone(),
                balance: NanoUsd::ZERO,
                unlimited: false
            }
        );
        assert_eq!(store.account("ghost").await.unwrap(), None);
        assert_eq!(store.pricing("m").await.unwrap(), None);
        store
            .database()
            .write_blocking(|tx| {
                registry::upsert_metadata(
                    tx,
                    &registry::ModelMetadataRow {
                        model_id: "m".to_owned(),
                        input_cost_per_token_nano: Some(3),
                        output_cost_per_reasoning_token_nano: Some(7),
                        ..registry::ModelMetadataRow::default()
                    },
                )
            })
            .unwrap();
        // Written behind the store's back: served from memory until it is told.
        assert_eq!(store.pricing("m").await.unwrap(), None);
        store.forget_prices();
        assert_eq!(
            store.pricing("m").await.unwrap(),
            Some(Pricing {
                model_id: "m".to_owned(),
                input: Some(3),
                output: None,
                cache_read_input: None,
                reasoning_output: Some(7),
            })
        );
    }

    #[test]
    fn a_charge_meta_gets_the_host_fields_whatever_the_plugin_wrote() {
        let amount = NanoUsd(27_500);
        let meta = |text: &str| {
            let json = with_charge_fields(text, "req_\"1", amount, None).unwrap();
            serde_json::from_str::<serde_json::Value>(&json).unwrap()
        };
        let expected = |extra: serde_json::Value| {
            let mut object =
                serde_json::json!({"request_id": "req_\"1", "amount_nano_usd": "27500"});
            if let (Some(object), serde_json::Value::Object(extra)) =
                (object.as_object_mut(), extra)
            {
                object.extend(extra);
            }
            object
        };
        assert_eq!(meta(""), expected(serde_json::json!({})));
        assert_eq!(meta(" { } "), expected(serde_json::json!({})));
        assert_eq!(
            meta(r#"{"model":"m","tokens":{"prompt":3},"priced":true}"#),
            expected(serde_json::json!({"model": "m", "tokens": {"prompt": 3}, "priced": true}))
        );
        // A plugin's own values of the host's fields are replaced, never doubled.
        let replaced = with_charge_fields(
            r#"{"request_id":"forged","amount_nano_usd":"1","key_id":"forged","model":"m"}"#,
            "req_\"1",
            amount,
            None,
        )
        .unwrap();
        assert_eq!(replaced.matches("request_id").count(), 1, "{replaced}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&replaced).unwrap(),
            expected(serde_json::json!({"model": "m"}))
        );
        // The key that made the request, when the host knows it; a plugin cannot name another.
        for plugin_wrote in [r#"{"model":"m"}"#, r#"{"key_id":"forged","model":"m"}"#] {
            let with_key = with_charge_fields(plugin_wrote, "req_\"1", amount, Some("key-1"));
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&with_key.unwrap()).unwrap(),
                expected(serde_json::json!({"model": "m", "key_id": "key-1"})),
                "{plugin_wrote}"
            );
        }
        for bad in ["[1]", "\"text\"", "{\"a\":1} x", "{\"a\":", "{\"a\":1}}"] {
            assert!(
                matches!(
                    with_charge_fields(bad, "r", amount, None),
                    Err(DbError::Invalid(_))
                ),
                "{bad}"
            );
        }
        let long = format!(r#"{{"pad":"{}"}}"#, "x".repeat(MAX_META_BYTES));
        assert!(matches!(
            with_charge_fields(&long, "r", amount, None),
            Err(DbError::Invalid(_))
        ));
    }
}
