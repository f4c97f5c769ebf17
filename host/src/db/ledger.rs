//! The `billing_ledger` table (DBO3.1): append-only history of request charges and admin
//! adjustments. [`append`], [`charge`] and [`adjust`] are the only ways a balance changes: in
//! the caller's transaction each reads the balance, computes the new one with checked integer
//! arithmetic (never SQL arithmetic on TEXT), stores it, and appends the one row that explains
//! it, so for every user the balance equals the sum of the ledger's deltas.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use rusqlite::{Connection, Row, Transaction, params};

use super::stored_responses::{self, StoredResponse};
use super::{
    DbError, api_keys, clamp_limit, clock, collect, first, parse_column, require_json, users,
};
use crate::money::NanoUsd;

/// Why a ledger row exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LedgerKind {
    /// A served request's charge; carries its request id.
    RequestCharge,
    /// A manual credit or debit by an admin.
    AdminAdjustment,
}

impl LedgerKind {
    /// The stored form (`request_charge`, `admin_adjustment`).
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerKind::RequestCharge => "request_charge",
            LedgerKind::AdminAdjustment => "admin_adjustment",
        }
    }
}

impl FromStr for LedgerKind {
    type Err = DbError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "request_charge" => Ok(LedgerKind::RequestCharge),
            "admin_adjustment" => Ok(LedgerKind::AdminAdjustment),
            _ => Err(DbError::Invalid(format!("unknown ledger kind `{text}`"))),
        }
    }
}

impl fmt::Display for LedgerKind {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.write_str(self.as_str())
    }
}

/// One row of `billing_ledger`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    /// Increasing with every append, so it orders rows and pages through them.
    pub id: i64,
    /// Whose balance changed (kept after the user is deleted).
    pub user_id: String,
    /// Why.
    pub kind: LedgerKind,
    /// The change: negative for a charge.
    pub delta_nano_usd: NanoUsd,
    /// The balance right after this change.
    pub balance_after_nano_usd: NanoUsd,
    /// The request charged; `None` for adjustments.
    pub request_id: Option<String>,
    /// Details (usage, prices, `usage_estimated`, …) as JSON text.
    pub meta_json: String,
    /// When it was appended (RFC 3339).
    pub created_at: String,
}

impl LedgerRow {
    fn from_row(row: &Row<'_>) -> Result<LedgerRow, DbError> {
        Ok(LedgerRow {
            id: row.get("id")?,
            user_id: row.get("user_id")?,
            kind: parse_column(row, "kind")?,
            delta_nano_usd: parse_column(row, "delta_nano_usd")?,
            balance_after_nano_usd: parse_column(row, "balance_after_nano_usd")?,
            request_id: row.get("request_id")?,
            meta_json: row.get("meta_json")?,
            created_at: row.get("created_at")?,
        })
    }
}

/// A balance change to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Whose balance changes.
    pub user_id: String,
    /// Why.
    pub kind: LedgerKind,
    /// The change (negative to debit).
    pub delta: NanoUsd,
    /// Required for a request charge: makes a repeated settle of one request a no-op.
    pub request_id: Option<String>,
    /// Details as JSON text.
    pub meta_json: String,
}

/// What [`append`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// The change was applied and this row appended.
    Recorded(LedgerRow),
    /// The request id was charged before; nothing changed and this is the earlier row.
    AlreadyRecorded(LedgerRow),
}

impl Appended {
    /// The row, new or earlier.
    pub fn row(&self) -> &LedgerRow {
        match self {
            Appended::Recorded(row) | Appended::AlreadyRecorded(row) => row,
        }
    }

    /// The row, new or earlier, taken out.
    pub fn into_row(self) -> LedgerRow {
        match self {
            Appended::Recorded(row) | Appended::AlreadyRecorded(row) => row,
        }
    }

    /// Whether this call changed the balance.
    pub fn is_new(&self) -> bool {
        matches!(self, Appended::Recorded(_))
    }
}

const COLUMNS: &str = "id, user_id, kind, delta_nano_usd, balance_after_nano_usd, request_id, \
                       meta_json, created_at";

/// Applies `entry` to the user's balance and appends its row, in the caller's transaction. A
/// request id seen before answers the earlier row instead of charging twice (and is a
/// `Conflict` if it was charged to another user). A balance that would overflow `i64` is
/// `Invalid`; a balance may go negative (a served request is always charged, DESIGN §6).
/// Unlimited users are treated like any other here: [`charge`] is what records their usage
/// with a zero delta.
pub fn append(tx: &Transaction<'_>, entry: &LedgerEntry) -> Result<Appended, DbError> {
    require_json("meta_json", &entry.meta_json)?;
    if entry.kind == LedgerKind::RequestCharge && entry.request_id.is_none() {
        return Err(DbError::Invalid(
            "a request charge needs a request_id".to_owned(),
        ));
    }
    let mut balances = Balances::direct();
    let balance = match balances.read(tx, &entry.user_id) {
        Ok((balance, _)) => balance,
        Err(missing) => {
            return earlier_or(tx, entry.request_id.as_deref(), &entry.user_id, missing);
        }
    };
    record(tx, entry, balance, &mut balances)
}

/// The balances a run of ledger writes in one transaction reads and changes.
///
/// [`Balances::direct`] reads each from `users` and stores each back at once. [`Balances::held`]
/// reads a user's balance once, keeps the balances it changes in memory, and stores each of them
/// once, in [`Balances::store_held`]: a batch of charges to one user costs one `SELECT` and one
/// `UPDATE` instead of one of each per charge. Held balances are not undone by a `ROLLBACK TO`,
/// so a held book only serves a run of writes that is committed or rolled back whole.
#[derive(Debug, Default)]
pub struct Balances {
    held: Option<HashMap<String, Held>>,
}

#[derive(Debug)]
struct Held {
    balance: NanoUsd,
    unlimited: bool,
    /// When it last changed, if it did: it is to be stored.
    changed_at: Option<String>,
}

impl Balances {
    /// Reads and stores every balance at once.
    pub fn direct() -> Balances {
        Balances { held: None }
    }

    /// Reads each user's balance once and stores the changed ones in [`Balances::store_held`].
    pub fn held() -> Balances {
        Balances {
            held: Some(HashMap::new()),
        }
    }

    /// The balance of `user_id` in this transaction, and whether it is unlimited.
    fn read(&mut self, tx: &Transaction<'_>, user_id: &str) -> Result<(NanoUsd, bool), DbError> {
        let Some(held) = &mut self.held else {
            return users::balance(tx, user_id);
        };
        if let Some(known) = held.get(user_id) {
            return Ok((known.balance, known.unlimited));
        }
        let (balance, unlimited) = users::balance(tx, user_id)?;
        held.insert(
            user_id.to_owned(),
            Held {
                balance,
                unlimited,
                changed_at: None,
            },
        );
        Ok((balance, unlimited))
    }

    /// Sets the balance of `user_id` (read before through this book), changed at `now`.
    fn set(
        &mut self,
        tx: &Transaction<'_>,
        user_id: &str,
        balance: NanoUsd,
        now: &str,
    ) -> Result<(), DbError> {
        match self.held.as_mut().and_then(|held| held.get_mut(user_id)) {
            Some(known) => {
                known.balance = balance;
                known.changed_at = Some(now.to_owned());
                Ok(())
            }
            None => users::set_balance(tx, user_id, balance, now),
        }
    }

    /// Stores every held balance that changed; nothing for a direct book.
    pub fn store_held(self, tx: &Transaction<'_>) -> Result<(), DbError> {
        for (user_id, known) in self.held.into_iter().flatten() {
            if let Some(changed_at) = &known.changed_at {
                users::set_balance(tx, &user_id, known.balance, changed_at)?;
            }
        }
        Ok(())
    }
}

/// The charge of one served request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// Whose balance.
    pub user_id: String,
    /// The request charged: a second charge of it changes nothing.
    pub request_id: String,
    /// What the request cost, ≥ 0.
    pub amount: NanoUsd,
    /// Details as JSON text.
    pub meta_json: String,
    /// The API key that made the request, when its quota is limited: the amount is taken from
    /// that quota too, in the same transaction (see [`api_keys::debit_quota`]).
    pub key_id: Option<String>,
    /// The Responses API response the request served and stored upstream, if any: its owner is
    /// recorded in the same transaction (see [`stored_responses`]).
    pub stored_response: Option<StoredResponse>,
}

/// Charges a served request in the caller's transaction (DESIGN §6): the amount is taken in
/// full even when that takes the balance below zero; an unlimited user's row has delta 0 (the
/// caller puts the amount in its meta). Idempotent by request id: a request charged before
/// answers its earlier row and changes nothing (`Conflict` if that was another user's). The
/// `UNIQUE` index on `request_id` guarantees that no request is ever recorded twice: the row
/// is inserted first, and only when the index lets it in does the balance move; a repeat is
/// then looked up, so the common case (a first charge) costs no lookup. A negative amount is
/// `Invalid`, an unknown user `NotFound`. A limited key's quota is debited with the balance,
/// and the owner of the response it stored, if any, recorded with it.
pub fn charge(tx: &Transaction<'_>, charge: &Charge) -> Result<Appended, DbError> {
    charge_with(tx, charge, &mut Balances::direct())
}

/// [`charge`], reading and changing the balance through `balances`.
pub fn charge_with(
    tx: &Transaction<'_>,
    charge: &Charge,
    balances: &mut Balances,
) -> Result<Appended, DbError> {
    if charge.request_id.is_empty() {
        return Err(DbError::Invalid("request_id must not be empty".to_owned()));
    }
    if charge.amount < NanoUsd::ZERO {
        return Err(DbError::Invalid(format!(
            "amount must not be negative (got {})",
            charge.amount
        )));
    }
    require_json("meta_json", &charge.meta_json)?;
    let (balance, unlimited) = match balances.read(tx, &charge.user_id) {
        Ok(found) => found,
        Err(missing) => {
            return earlier_or(tx, Some(&charge.request_id), &charge.user_id, missing);
        }
    };
    let delta = if unlimited {
        NanoUsd::ZERO
    } else {
        // amount ≥ 0, so its negation always fits in an i64.
        NanoUsd::ZERO
            .checked_sub(charge.amount)
            .ok_or_else(|| DbError::Invalid("amount is out of range".to_owned()))?
    };
    let entry = LedgerEntry {
        user_id: charge.user_id.clone(),
        kind: LedgerKind::RequestCharge,
        delta,
        request_id: Some(charge.request_id.clone()),
        meta_json: charge.meta_json.clone(),
    };
    let appended = record(tx, &entry, balance, balances)?;
    // Only a new charge takes from the key: a repeated settle changes nothing.
    if let (Appended::Recorded(_), Some(key_id)) = (&appended, &charge.key_id) {
        api_keys::debit_quota(tx, key_id, charge.amount)?;
    }
    if let Some(stored) = &charge.stored_response {
        stored_responses::record(tx, stored)?;
    }
    Ok(appended)
}

/// An administrator's change of a balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adjustment {
    /// Add this amount (negative to take).
    Add(NanoUsd),
    /// Set the balance to this amount.
    Set(NanoUsd),
}

/// Applies an administrator's adjustment in the caller's transaction and appends its
/// `admin_adjustment` row. A `Set` computes its delta from the balance read in this same
/// transaction, so it cannot race a charge: whatever was charged before is part of the delta.
/// An unknown user is `NotFound`; a balance or delta that would overflow `i64` is `Invalid`.
pub fn adjust(
    tx: &Transaction<'_>,
    user_id: &str,
    adjustment: Adjustment,
    meta_json: &str,
) -> Result<LedgerRow, DbError> {
    adjust_with(tx, user_id, adjustment, meta_json, &mut Balances::direct())
}

/// [`adjust`], reading and changing the balance through `balances`.
pub fn adjust_with(
    tx: &Transaction<'_>,
    user_id: &str,
    adjustment: Adjustment,
    meta_json: &str,
    balances: &mut Balances,
) -> Result<LedgerRow, DbError> {
    require_json("meta_json", meta_json)?;
    let (balance, _) = balances.read(tx, user_id)?;
    let delta = match adjustment {
        Adjustment::Add(delta) => delta,
        Adjustment::Set(target) => target.checked_sub(balance).ok_or_else(|| {
            DbError::Invalid(format!(
                "setting the balance of user {user_id} to {target} needs a delta that overflows"
            ))
        })?,
    };
    let entry = LedgerEntry {
        user_id: user_id.to_owned(),
        kind: LedgerKind::AdminAdjustment,
        delta,
        request_id: None,
        meta_json: meta_json.to_owned(),
    };
    match record(tx, &entry, balance, balances)? {
        Appended::Recorded(row) => Ok(row),
        // An adjustment has no request id, which the UNIQUE index never compares.
        Appended::AlreadyRecorded(row) => Err(DbError::Conflict(format!(
            "an adjustment collided with ledger row {}",
            row.id
        ))),
    }
}

/// The row that already charged `request_id` to `user_id`; `Conflict` if it was charged to
/// another user.
fn earlier_charge(
    tx: &Transaction<'_>,
    request_id: &str,
    user_id: &str,
) -> Result<Option<LedgerRow>, DbError> {
    match by_request_id(tx, request_id)? {
        Some(earlier) if earlier.user_id != user_id => Err(DbError::Conflict(format!(
            "request {request_id} was already charged to another user"
        ))),
        earlier => Ok(earlier),
    }
}

/// The earlier charge of `request_id` to `user_id` when there is one (a user deleted since
/// their charge still gets the answer a repeat deserves), else `failure`.
fn earlier_or(
    tx: &Transaction<'_>,
    request_id: Option<&str>,
    user_id: &str,
    failure: DbError,
) -> Result<Appended, DbError> {
    match request_id {
        Some(request_id) => earlier_charge(tx, request_id, user_id)?
            .map(Appended::AlreadyRecorded)
            .ok_or(failure),
        None => Err(failure),
    }
}

/// Appends the row that explains moving the balance from `balance` (read in this transaction)
/// by `entry.delta`, then sets the new balance in `balances`. When the row's request id is in the ledger
/// already, nothing changes and the answer is the earlier row (`Conflict` if it was another
/// user's).
fn record(
    tx: &Transaction<'_>,
    entry: &LedgerEntry,
    balance: NanoUsd,
    balances: &mut Balances,
) -> Result<Appended, DbError> {
    let Some(balance_after) = balance.checked_add(entry.delta) else {
        let overflow = DbError::Invalid(format!(
            "the balance of user {} would overflow",
            entry.user_id
        ));
        return earlier_or(tx, entry.request_id.as_deref(), &entry.user_id, overflow);
    };
    let now = clock::now();
    let inserted = tx
        .prepare_cached(
            "INSERT INTO billing_ledger (user_id, kind, delta_nano_usd, balance_after_nano_usd, \
             request_id, meta_json, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (request_id) DO NOTHING",
        )?
        .execute(params![
            entry.user_id,
            entry.kind.as_str(),
            entry.delta.to_string(),
            balance_after.to_string(),
            entry.request_id,
            entry.meta_json,
            now
        ])?;
    if inserted == 0 {
        let failure = DbError::Invalid("a ledger row was neither inserted nor found".to_owned());
        return earlier_or(tx, entry.request_id.as_deref(), &entry.user_id, failure);
    }
    let id = tx.last_insert_rowid();
    balances.set(tx, &entry.user_id, balance_after, &now)?;
    Ok(Appended::Recorded(LedgerRow {
        id,
        user_id: entry.user_id.clone(),
        kind: entry.kind,
        delta_nano_usd: entry.delta,
        balance_after_nano_usd: balance_after,
        request_id: entry.request_id.clone(),
        meta_json: entry.meta_json.clone(),
        created_at: now,
    }))
}

/// The row that charged `request_id`, if any.
pub fn by_request_id(conn: &Connection, request_id: &str) -> Result<Option<LedgerRow>, DbError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM billing_ledger WHERE request_id = ?1"
    ))?;
    first(statement.query([request_id])?, LedgerRow::from_row)
}

/// Rows newest first: of one user or of everyone, at most `limit` (clamped to
/// `1..=MAX_LIST_LIMIT`), only those older than the row `before` when given, so a client pages
/// by passing the last id it got.
pub fn list(
    conn: &Connection,
    user_id: Option<&str>,
    limit: u32,
    before: Option<i64>,
) -> Result<Vec<LedgerRow>, DbError> {
    let user_filter = if user_id.is_some() {
        "user_id = ?1"
    } else {
        "?1 IS NULL"
    };
    let before_filter = if before.is_some() {
        "id < ?2"
    } else {
        "?2 IS NULL"
    };
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM billing_ledger WHERE {user_filter} AND {before_filter} \
         ORDER BY id DESC LIMIT ?3"
    ))?;
    collect(
        statement.query(params![user_id, before, clamp_limit(limit)])?,
        LedgerRow::from_row,
    )
}

/// The sum of every delta of `user_id`, computed with checked arithmetic in Rust; equals the
/// balance of a user whose every change went through [`append`].
pub fn sum_for_user(conn: &Connection, user_id: &str) -> Result<NanoUsd, DbError> {
    let mut statement =
        conn.prepare_cached("SELECT delta_nano_usd FROM billing_ledger WHERE user_id = ?1")?;
    let deltas = collect(statement.query([user_id])?, |row| {
        parse_column(row, "delta_nano_usd")
    })?;
    deltas
        .into_iter()
        .try_fold(NanoUsd::ZERO, |sum, delta: NanoUsd| {
            sum.checked_add(delta)
                .ok_or_else(|| DbError::Corrupt(format!("the ledger of user {user_id} overflows")))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Database;
    use crate::db::users::{NewUser, Role};

    fn with_user(db: &Database, name: &str) -> String {
        let new = NewUser::new(name, "h", Role::User);
        db.write_blocking(move |tx| users::insert(tx, &new))
            .unwrap()
            .id
    }

    fn charge(user_id: &str, request_id: &str, delta: i64) -> LedgerEntry {
        LedgerEntry {
            user_id: user_id.to_owned(),
            kind: LedgerKind::RequestCharge,
            delta: NanoUsd(delta),
            request_id: Some(request_id.to_owned()),
            meta_json: r#"{"model":"m"}"#.to_owned(),
        }
    }

    fn adjustment(user_id: &str, delta: i64) -> LedgerEntry {
        LedgerEntry {
            user_id: user_id.to_owned(),
            kind: LedgerKind::AdminAdjustment,
            delta: NanoUsd(delta),
            request_id: None,
            meta_json: "{}".to_owned(),
        }
    }

    fn append_one(db: &Database, entry: LedgerEntry) -> Result<Appended, DbError> {
        db.write_blocking(move |tx| append(tx, &entry))
    }

    fn balance_of(db: &Database, user_id: &str) -> NanoUsd {
        let id = user_id.to_owned();
        db.read_blocking(move |c| users::balance(c, &id)).unwrap().0
    }

    #[test]
    fn dbo3_1_append_moves_the_balance_and_records_it() {
        let db = Database::open_in_memory().unwrap();
        let user = with_user(&db, "u");
        let credit = append_one(&db, adjustment(&user, 10_000)).unwrap();
        assert!(credit.is_new());
        assert_eq!(credit.row().balance_after_nano_usd, NanoUsd(10_000));
        let debit = append_one(&db, charge(&user, "req-1", -2_500)).unwrap();
        assert_eq!(debit.row().balance_after_nano_usd, NanoUsd(7_500));
        assert!(debit.row().id > credit.row().id);
        assert_eq!(balance_of(&db, &user), NanoUsd(7_500));
        let uid = user.clone();
        assert_eq!(
            db.read_blocking(move |c| sum_for_user(c, &uid)).unwrap(),
            NanoUsd(7_500)
        );
    }

    #[test]
    fn dbo3_1_a_held_book_reads_and_stores_each_balance_once_and_chains_every_row() {
        let db = Database::open_in_memory().unwrap();
        let (alice, bob) = (with_user(&db, "alice"), with_user(&db, "bob"));
        let (a, b) = (alice.clone(), bob.clone());
        let rows = db
            .write_blocking(move |tx| {
                let mut balances = Balances::held();
                let request = |user: &str, id: &str, amount: i64| Charge {
                    user_id: user.to_owned(),
                    request_id: id.to_owned(),
                    amount: NanoUsd(amount),
                    meta_json: "{}".to_owned(),
                    key_id: None,
                    stored_response: None,
                };
                let mut rows = vec![
                    charge_with(tx, &request(&a, "r1", 10), &mut balances)?,
                    charge_with(tx, &request(&b, "r2", 7), &mut balances)?,
                    Appended::Recorded(adjust_with(
                        tx,
                        &a,
                        Adjustment::Set(NanoUsd(1_000)),
                        "{}",
                        &mut balances,
                    )?),
                    charge_with(tx, &request(&a, "r3", 25), &mut balances)?,
                    // A repeat within the batch changes nothing.
                    charge_with(tx, &request(&a, "r1", 10), &mut balances)?,
                    charge_with(tx, &request(&b, "r4", 3), &mut balances)?,
                ];
                // Nothing is stored before the book is.
                assert_eq!(users::balance(tx, &a)?.0, NanoUsd::ZERO);
                balances.store_held(tx)?;
                rows.retain(Appended::is_new);
                Ok(rows)
            })
            .unwrap();
        let after: Vec<i64> = rows
            .iter()
            .map(|row| row.row().balance_after_nano_usd.0)
            .collect();
        assert_eq!(after, [-10, -7, 1_000, 975, -10]);
        for user in [&alice, &bob] {
            let id = user.clone();
            let sum = db.read_blocking(move |c| sum_for_user(c, &id)).unwrap();
            assert_eq!(balance_of(&db, user), sum);
        }
        assert_eq!(balance_of(&db, &alice), NanoUsd(975));
        assert_eq!(balance_of(&db, &bob), NanoUsd(-10));
    }

    #[test]
    fn dbo3_1_a_repeated_request_id_is_charged_once() {
        let db = Database::open_in_memory().unwrap();
        let user = with_user(&db, "u");
        let first_charge = append_one(&db, charge(&user, "req-1", -100)).unwrap();
        let again = append_one(&db, charge(&user, "req-1", -100)).unwrap();
        assert_eq!(again, Appended::AlreadyRecorded(first_charge.row().clone()));
        assert_eq!(balance_of(&db, &user), NanoUsd(-100));
        let other = with_user(&db, "v");
        let stolen = append_one(&db, charge(&other, "req-1", -100)).unwrap_err();
        assert!(matches!(stolen, DbError::Conflict(_)));
    }

    #[test]
    fn dbo3_1_served_requests_may_take_a_balance_below_zero() {
        let db = Database::open_in_memory().unwrap();
        let user = with_user(&db, "u");
        append_one(&db, adjustment(&user, 5)).unwrap();
        let row = append_one(&db, charge(&user, "r", -50)).unwrap();
        assert_eq!(row.row().balance_after_nano_usd, NanoUsd(-45));
    }

    #[test]
    fn dbo3_1_overflow_is_refused_and_changes_nothing() {
        let db = Database::open_in_memory().unwrap();
        let user = with_user(&db, "u");
        append_one(&db, adjustment(&user, i64::MAX)).unwrap();
        let error = append_one(&db, adjustment(&user, 1)).unwrap_err();
        assert!(matches!(error, DbError::Invalid(_)), "{error:?}");
        assert_eq!(balance_of(&db, &user), NanoUsd(i64::MAX));
        let uid = user.clone();
        assert_eq!(
            db.read_blocking(move |c| list(c, Some(&uid), 10, None))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn dbo3_1_append_refuses_bad_entries() {
        let db = Database::open_in_memory().unwrap();
        let user = with_user(&db, "u");
        let mut no_request = charge(&user, "x", -1);
        no_request.request_id = None;
        assert!(matches!(
            append_one(&db, no_request),
            Err(DbError::Invalid(_))
        ));
        let mut bad_meta = adjustment(&user, 1);
        bad_meta.meta_json = "nope".to_owned();
        assert!(matches!(
            append_one(&db, bad_meta),
            Err(DbError::Invalid(_))
        ));
        assert!(matches!(
            append_one(&db, adjustment("ghost", 1)),
            Err(DbError::NotFound(_))
        ));
    }

    #[test]
    fn dbo3_1_deleting_a_user_keeps_their_ledger_rows() {
        let db = Database::open_in_memory().unwrap();
        let user = with_user(&db, "u");
        append_one(&db, adjustment(&user, 7)).unwrap();
        append_one(&db, charge(&user, "r1", -3)).unwrap();
        let uid = user.clone();
        db.write_blocking(move |tx| users::delete(tx, &uid))
            .unwrap();
        let uid = user.clone();
        let rows = db
            .read_blocking(move |c| list(c, Some(&uid), 100, None))
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            db.read_blocking(move |c| sum_for_user(c, &user)).unwrap(),
            NanoUsd(4)
        );
    }

    #[test]
    fn dbo3_1_list_pages_newest_first() {
        let db = Database::open_in_memory().unwrap();
        let alice = with_user(&db, "alice");
        let bob = with_user(&db, "bob");
        for index in 0..5 {
            append_one(&db, adjustment(&alice, index)).unwrap();
            append_one(&db, adjustment(&bob, index)).unwrap();
        }
        let everyone = db.read_blocking(|c| list(c, None, 100, None)).unwrap();
        assert_eq!(everyone.len(), 10);
        assert!(everyone.windows(2).all(|pair| pair[0].id > pair[1].id));
        let a = alice.clone();
        let page = db
            .read_blocking(move |c| list(c, Some(&a), 2, None))
            .unwrap();
        assert_eq!(
            page.iter().map(|r| r.delta_nano_usd.0).collect::<Vec<_>>(),
            [4, 3]
        );
        let before = page[1].id;
        let a = alice.clone();
        let next = db
            .read_blocking(move |c| list(c, Some(&a), 2, Some(before)))
            .unwrap();
        assert_eq!(
            next.iter().map(|r| r.delta_nano_usd.0).collect::<Vec<_>>(),
            [2, 1]
        );
        assert!(next.iter().all(|row| row.user_id == alice));
        let clamped = db.read_blocking(|c| list(c, None, 0, None)).unwrap();
        assert_eq!(clamped.len(), 1);
    }

    #[test]
    fn dbo3_1_concurrent_charges_serialize_on_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(&crate::config::Dsn::File(dir.path().join("l.db"))).unwrap();
        let user = with_user(&db, "u");
        let threads: Vec<_> = (0..8)
            .map(|thread| {
                let (db, user) = (db.clone(), user.clone());
                std::thread::spawn(move || {
                    for index in 0..25 {
                        append_one(&db, charge(&user, &format!("r-{thread}-{index}"), -3)).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(balance_of(&db, &user), NanoUsd(-600));
        let uid = user.clone();
        assert_eq!(
            db.read_blocking(move |c| sum_for_user(c, &uid)).unwrap(),
            NanoUsd(-600)
        );
    }

    fn served(user_id: &str, request_id: &str, amount: i64) -> Charge {
        Charge {
            user_id: user_id.to_owned(),
            request_id: request_id.to_owned(),
            amount: NanoUsd(amount),
            meta_json: r#"{"model":"m"}"#.to_owned(),
            key_id: None,
            stored_response: None,
        }
    }

    fn charge_one(db: &Database, entry: Charge) -> Result<Appended, DbError> {
        db.write_blocking(move |tx| super::charge(tx, &entry))
    }

    #[test]
    fn dbo3_1_charge_debits_in_full_even_below_zero_and_once_per_request() {
        let db = Database::open_in_memory().unwrap();
        let user = with_user(&db, "u");
        append_one(&db, adjustment(&user, 1)).unwrap();
        let first_charge = charge_one(&db, served(&user, "r1", 10)).unwrap();
        assert!(first_charge.is_new());
        assert_eq!(first_charge.row().delta_nano_usd, NanoUsd(-10));
        assert_eq!(first_charge.row().balance_after_nano_usd, NanoUsd(-9));
        let again = charge_one(&db, served(&user, "r1", 999)).unwrap();
        assert_eq!(again, Appended::AlreadyRecorded(first_charge.row().clone()));
        assert_eq!(balance_of(&db, &user), NanoUsd(-9));
        let other = with_user(&db, "v");
        assert!(matches!(
            charge_one(&db, served(&other, "r1", 1)),
            Err(DbError::Conflict(_))
        ));
        assert_eq!(balance_of(&db, &other), NanoUsd(0));
    }

    #[test]
    fn dbo3_1_a_repeated_charge_of_a_deleted_user_answers_the_earlier_row() {
        let db = Database::open_in_memory().unwrap();
        let user = with_user(&db, "u");
        let first_charge = charge_one(&db, served(&user, "r1", 10)).unwrap();
        let uid = user.clone();
        db.write_blocking(move |tx| users::delete(tx, &uid))
            .unwrap();
        let again = charge_one(&db, served(&user, "r1", 10)).unwrap();
        assert_eq!(again, Appended::AlreadyRecorded(first_charge.row().clone()));
        assert!(matches!(
            charge_one(&db, served(&user, "r2", 10)),
            Err(DbError::NotFound(_))
        ));
    }

    #[test]
    fn dbo3_1_a_charge_takes_from_its_limited_keys_quota_once_and_in_full() {
        let db = Database::open_in_memory().unwrap();
        let user = with_user(&db, "u");
        let key = |quota_unlimited: bool| {
            let hash = format!("hash-{quota_unlimited}");
            let mut new = api_keys::NewApiKey::new(&user, "k", "sk-012345678", &hash);
            new.quota_remaining = Some(NanoUsd(15));
            new.quota_unlimited = quota_unlimited;
            db.write_blocking(move |tx| api_keys::insert(tx, &new))
                .unwrap()
                .id
        };
        let (limited, unlimited) = (key(false), key(true));
        let quota = |id: &str| {
            let id = id.to_owned();
            db.read_blocking(move |c| api_keys::get(c, &id))
                .unwrap()
                .unwrap()
                .quota_remaining
        };
        let with_key = |request_id: &str, key_id: &str| Charge {
            key_id: Some(key_id.to_owned()),
            ..served(&user, request_id, 10)
        };
        charge_one(&db, with_key("r1", &limited)).unwrap();
        assert_eq!(quota(&limited), Some(NanoUsd(5)));
        // Into debt, as a balance; a repeated charge takes nothing more.
        charge_one(&db, with_key("r2", &limited)).unwrap();
        charge_one(&db, with_key("r2", &limited)).unwrap();
        assert_eq!(quota(&limited), Some(NanoUsd(-5)));
        assert_eq!(balance_of(&db, &user), NanoUsd(-20));
        // An unlimited key keeps its quota; a key deleted meanwhile leaves the charge alone.
        charge_one(&db, with_key("r3", &unlimited)).unwrap();
        assert_eq!(quota(&unlimited), Some(NanoUsd(15)));
        charge_one(&db, with_key("r4", "gone")).unwrap();
        assert_eq!(balance_of(&db, &user), NanoUsd(-40));
    }

    #[test]
    fn dbo3_1_a_charge_records_the_owner_of_the_response_it_stored() {
        let db = Database::open_in_memory().unwrap();
        let user = with_user(&db, "u");
        let owner = stored_responses::ResponseOwner {
            user_id: user.clone(),
            provider_id: "p".to_owned(),
            channel_id: "c".to_owned(),
        };
        let charge = Charge {
            stored_response: Some(StoredResponse {
                response_id: "resp_9".to_owned(),
                owner: owner.clone(),
            }),
            ..served(&user, "r", 3)
        };
        charge_one(&db, charge).unwrap();
        let found = db
            .read_blocking(|c| stored_responses::owner(c, "resp_9"))
            .unwrap();
        assert_eq!(found, Some(owner));
        // A charge that fails records no owner either.
        let failing = Charge {
            stored_response: Some(StoredResponse {
                response_id: "resp_10".to_owned(),
                owner: stored_responses::ResponseOwner {
                    user_id: "ghost".to_owned(),
                    provider_id: "p".to_owned(),
                    channel_id: "c".to_owned(),
                },
            }),
            ..served("ghost", "r2", 3)
        };
        assert!(charge_one(&db, failing).is_err());
        let none = db
            .read_blocking(|c| stored_responses::owner(c, "resp_10"))
            .unwrap();
        assert_eq!(none, None);
    }

    #[test]
    fn dbo3_1_charge_of_an_unlimited_user_records_a_zero_delta() {
        let db = Database::open_in_memory().unwrap();
        let mut new = NewUser::new("rich", "h", Role::User);
        new.balance_unlimited = true;
        let user = db
            .write_blocking(move |tx| users::insert(tx, &new))
            .unwrap()
            .id;
        let row = charge_one(&db, served(&user, "r", 500)).unwrap();
        assert_eq!(row.row().delta_nano_usd, NanoUsd::ZERO);
        assert_eq!(row.row().balance_after_nano_usd, NanoUsd::ZERO);
        assert_eq!(row.row().kind, LedgerKind::RequestCharge);
    }

    #[test]
    fn dbo3_1_charge_refuses_bad_input_and_changes_nothing() {
        let db = Database::open_in_memory().unwrap();
        let user = with_user(&db, "u");
        for (entry, what) in [
            (served(&user, "r", -1), "negative amount"),
            (served(&user, "", 1), "empty request id"),
            (
                Charge {
                    meta_json: "not json".to_owned(),
                    ..served(&user, "r", 1)
                },
                "bad meta",
            ),
        ] {
            let error = charge_one(&db, entry).unwrap_err();
            assert!(matches!(error, DbError::Invalid(_)), "{what}: {error:?}");
        }
        assert!(matches!(
            charge_one(&db, served("ghost", "r", 1)),
            Err(DbError::NotFound(_))
        ));
        append_one(&db, adjustment(&user, i64::MIN + 5)).unwrap();
        assert!(matches!(
            charge_one(&db, served(&user, "deep", 6)),
            Err(DbError::Invalid(_))
        ));
        assert_eq!(balance_of(&db, &user), NanoUsd(i64::MIN + 5));
    }

    #[test]
    fn dbo3_1_adjust_adds_or_sets_with_the_delta_computed_in_the_transaction() {
        let db = Database::open_in_memory().unwrap();
        let user = with_user(&db, "u");
        let uid = user.clone();
        let added = db
            .write_blocking(move |tx| adjust(tx, &uid, Adjustment::Add(NanoUsd(100)), "{}"))
            .unwrap();
        assert_eq!(
            (added.delta_nano_usd, added.balance_after_nano_usd),
            (NanoUsd(100), NanoUsd(100))
        );
        charge_one(&db, served(&user, "r", 30)).unwrap();
        let uid = user.clone();
        let set = db
            .write_blocking(move |tx| {
                adjust(tx, &uid, Adjustment::Set(NanoUsd(5)), r#"{"reason":"x"}"#)
            })
            .unwrap();
        assert_eq!(
            (set.delta_nano_usd, set.balance_after_nano_usd),
            (NanoUsd(-65), NanoUsd(5))
        );
        assert_eq!(set.kind, LedgerKind::AdminAdjustment);
        assert_eq!(set.request_id, None);
        let uid = user.clone();
        assert_eq!(
            db.read_blocking(move |c| sum_for_user(c, &uid)).unwrap(),
            NanoUsd(5)
        );
        let uid = user.clone();
        db.write_blocking(move |tx| adjust(tx, &uid, Adjustment::Set(NanoUsd(i64::MIN + 5)), "{}"))
            .unwrap();
        let uid = user.clone();
        let overflow = db
            .write_blocking(move |tx| adjust(tx, &uid, Adjustment::Set(NanoUsd(i64::MAX)), "{}"))
            .unwrap_err();
        assert!(matches!(overflow, DbError::Invalid(_)), "{overflow:?}");
        assert!(matches!(
            db.write_blocking(|tx| adjust(tx, "ghost", Adjustment::Add(NanoUsd(1)), "{}")),
            Err(DbError::NotFound(_))
        ));
    }

    #[test]
    fn ledger_kinds_round_trip_through_text() {
        for kind in [LedgerKind::RequestCharge, LedgerKind::AdminAdjustment] {
            assert_eq!(kind.as_str().parse::<LedgerKind>().unwrap(), kind);
        }
    }
}
