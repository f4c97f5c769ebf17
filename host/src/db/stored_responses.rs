//! `stored_responses`: the owner of each Responses API response the gateway served (the user it
//! was served to) and where it is stored (the provider and channel whose upstream account holds
//! it). The gateway keeps recent ones in memory (`gateway::affinity`); this table is what it
//! knows after a restart or once memory has let an entry go, so a continuation of another
//! user's response is refused whenever it was served.
//!
//! A row is written in the transaction of the response's charge (see [`super::ledger::charge`]):
//! a response is owned exactly when it was billed. Rows are keyed by the SHA-256 of the
//! response id, never the id itself, which opens the conversation to whoever holds it.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use sha2::{Digest, Sha256};

use super::{DbError, clock};

/// A served response and who owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The upstream's id of the response (`resp_…`).
    pub response_id: String,
    /// Where it is stored, and for whom.
    pub owner: ResponseOwner,
}

/// Whose a stored response is, and which channel's account holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseOwner {
    /// The user it was served to.
    pub user_id: String,
    /// The provider that served it.
    pub provider_id: String,
    /// The channel that served it: its upstream account stores the response.
    pub channel_id: String,
}

fn response_key(response_id: &str) -> [u8; 32] {
    Sha256::digest(response_id.as_bytes()).into()
}

/// Records `stored` in the caller's transaction; a response already recorded keeps its first
/// owner (a repeated settle of the same request changes nothing).
pub fn record(tx: &Transaction<'_>, stored: &StoredResponse) -> Result<(), DbError> {
    if stored.response_id.is_empty() {
        return Err(DbError::Invalid("response_id must not be empty".to_owned()));
    }
    let owner = &stored.owner;
    tx.prepare_cached(
        "INSERT INTO stored_responses (response_sha256, user_id, provider_id, channel_id, \
         created_at) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (response_sha256) DO NOTHING",
    )?
    .execute(params![
        response_key(&stored.response_id).as_slice(),
        owner.user_id,
        owner.provider_id,
        owner.channel_id,
        clock::now()
    ])?;
    Ok(())
}

/// The owner of the response `response_id`, if the gateway served it.
pub fn owner(conn: &Connection, response_id: &str) -> Result<Option<ResponseOwner>, DbError> {
    let found = conn
        .prepare_cached(
            "SELECT user_id, provider_id, channel_id FROM stored_responses \
             WHERE response_sha256 = ?1",
        )?
        .query_row([response_key(response_id).as_slice()], |row| {
            Ok(ResponseOwner {
                user_id: row.get(0)?,
                provider_id: row.get(1)?,
                channel_id: row.get(2)?,
            })
        })
        .optional()?;
    Ok(found)
}

/// Deletes at most `limit` rows recorded before `served_before` (a stored timestamp), oldest
/// first; answers how many (see [`super::housekeeping`]).
pub fn delete_created_before(
    tx: &Transaction<'_>,
    served_before: &str,
    limit: usize,
) -> Result<usize, DbError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(tx
        .prepare_cached(
            "DELETE FROM stored_responses WHERE response_sha256 IN (SELECT response_sha256 \
             FROM stored_responses WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)",
        )?
        .execute(params![served_before, limit])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Database;

    fn stored(response_id: &str, user_id: &str, channel_id: &str) -> StoredResponse {
        StoredResponse {
            response_id: response_id.to_owned(),
            owner: ResponseOwner {
                user_id: user_id.to_owned(),
                provider_id: "p".to_owned(),
                channel_id: channel_id.to_owned(),
            },
        }
    }

    #[test]
    fn dbt_a_recorded_response_keeps_its_first_owner_and_its_id_is_not_stored() {
        let database = Database::open_in_memory().unwrap();
        database
            .write_blocking(|tx| {
                record(tx, &stored("resp_secret_1", "alice", "c1"))?;
                record(tx, &stored("resp_secret_1", "bob", "c2"))
            })
            .unwrap();
        let found = database
            .read_blocking(|c| owner(c, "resp_secret_1"))
            .unwrap();
        assert_eq!(found, Some(stored("resp_secret_1", "alice", "c1").owner));
        assert_eq!(
            database.read_blocking(|c| owner(c, "resp_other")).unwrap(),
            None
        );
        let texts: Vec<String> = database
            .read_blocking(|c| {
                let mut statement = c.prepare(
                    "SELECT hex(response_sha256) || user_id || provider_id || channel_id \
                     FROM stored_responses",
                )?;
                let rows = statement.query_map([], |row| row.get(0))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .unwrap();
        assert_eq!(texts.len(), 1);
        assert!(!texts[0].contains("resp_secret_1"), "{texts:?}");
        let empty = database.write_blocking(|tx| record(tx, &stored("", "alice", "c1")));
        assert!(matches!(empty, Err(DbError::Invalid(_))), "{empty:?}");
    }
}
