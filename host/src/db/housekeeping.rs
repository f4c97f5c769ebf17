//! Housekeeping: rows that have outlived their use are deleted in the background, so no table
//! grows without end. It deletes:
//!
//! - `stored_responses` rows older than the retention (`MONOIZE_STORED_RESPONSE_RETENTION_DAYS`,
//!   30 days unless set, which is how long OpenAI keeps a stored response). Past it the
//!   upstream no longer holds the response, so its owner has nothing left to guard; an
//!   operator whose upstreams keep responses longer sets the retention to match.
//! - `sessions` past their `expires_at`: they sign no one in any more.
//!
//! Nothing else. The ledger is append-only (DBO3.1) and kept whole.
//!
//! Each transaction deletes at most [`ROWS_PER_TRANSACTION`] rows: the ledger writer shares
//! the one write connection, and a charge must never wait long behind a sweep. Both deletes
//! walk an index by age (`stored_responses_created_at`, `sessions_expires_at`), so a sweep
//! costs what it deletes, not the size of the table.

use std::time::Duration;

use rusqlite::Transaction;

use super::{Database, DbError, clock, sessions, stored_responses};

/// The most rows one housekeeping transaction deletes.
pub const ROWS_PER_TRANSACTION: usize = 1_000;

/// How long rows are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Days the owner of a stored response is kept after the response was served.
    pub stored_response_days: u64,
}

/// What one sweep deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Swept {
    /// `stored_responses` rows past the retention.
    pub stored_responses: usize,
    /// Expired `sessions`.
    pub sessions: usize,
}

/// Deletes every row past `retention` (see the module documentation).
pub async fn sweep(database: &Database, retention: Retention) -> Result<Swept, DbError> {
    sweep_in_batches(database, retention, ROWS_PER_TRANSACTION).await
}

async fn sweep_in_batches(
    database: &Database,
    retention: Retention,
    rows_per_transaction: usize,
) -> Result<Swept, DbError> {
    let kept_days = i64::try_from(retention.stored_response_days).unwrap_or(i64::MAX);
    let served_before = clock::days_from_now(kept_days.saturating_neg());
    let now = clock::now();
    let stored_responses = delete_in_batches(database, rows_per_transaction, move |tx, limit| {
        stored_responses::delete_created_before(tx, &served_before, limit)
    })
    .await?;
    let sessions = delete_in_batches(database, rows_per_transaction, move |tx, limit| {
        sessions::delete_expired(tx, &now, limit)
    })
    .await?;
    Ok(Swept {
        stored_responses,
        sessions,
    })
}

/// Runs `delete` (deleting at most its limit, answering how many it deleted) in one
/// transaction after another until one deletes fewer than `rows_per_transaction`.
async fn delete_in_batches<F>(
    database: &Database,
    rows_per_transaction: usize,
    delete: F,
) -> Result<usize, DbError>
where
    F: Fn(&Transaction<'_>, usize) -> Result<usize, DbError> + Clone + Send + 'static,
{
    let mut total = 0usize;
    loop {
        let delete = delete.clone();
        let deleted = database
            .write(move |tx| delete(tx, rows_per_transaction))
            .await?;
        total = total.saturating_add(deleted);
        if deleted < rows_per_transaction {
            return Ok(total);
        }
    }
}

/// The background task that sweeps once at start and then every interval; it stops when
/// dropped.
#[derive(Debug)]
pub struct Housekeeper {
    task: tokio::task::JoinHandle<()>,
}

impl Housekeeper {
    /// Starts sweeping `database` by `retention` every `interval` (at least a millisecond), on
    /// the current runtime.
    pub fn start(database: Database, retention: Retention, interval: Duration) -> Housekeeper {
        let interval = interval.max(Duration::from_millis(1));
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match sweep(&database, retention).await {
                    Ok(swept) if swept != Swept::default() => tracing::info!(
                        stored_responses = swept.stored_responses,
                        sessions = swept.sessions,
                        "housekeeping deleted rows past their retention"
                    ),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(
                        %error,
                        "housekeeping failed; it runs again at its next interval"
                    ),
                }
            }
        });
        Housekeeper { task }
    }
}

impl Drop for Housekeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::stored_responses::{ResponseOwner, StoredResponse};
    use crate::db::users::{self, NewUser, Role};

    fn days_ago(days: i64) -> String {
        clock::days_from_now(-days)
    }

    fn count(database: &Database, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {table}");
        database
            .read_blocking(move |c| Ok(c.query_row(&sql, [], |row| row.get(0))?))
            .unwrap()
    }

    #[tokio::test]
    async fn dbt_housekeeping_deletes_old_stored_responses_and_expired_sessions_and_nothing_else() {
        let database = Database::open_in_memory().unwrap();
        let user = database
            .write_blocking(|tx| users::insert(tx, &NewUser::new("alice", "h", Role::User)))
            .unwrap()
            .id;
        let owner = |id: &str| StoredResponse {
            response_id: id.to_owned(),
            owner: ResponseOwner {
                user_id: user.clone(),
                provider_id: "p".to_owned(),
                channel_id: "c".to_owned(),
            },
        };
        // 25 responses served 40 days ago, 3 served 10 days ago, one today; 7 expired sessions
        // and 2 live ones; one ledger row.
        let old: Vec<StoredResponse> = (0..25).map(|n| owner(&format!("resp_old_{n}"))).collect();
        let recent: Vec<StoredResponse> = (0..3).map(|n| owner(&format!("resp_new_{n}"))).collect();
        let today = owner("resp_today");
        let (forty_days_ago, ten_days_ago) = (days_ago(40), days_ago(10));
        let seeding_user = user.clone();
        database
            .write_blocking(move |tx| {
                for (rows, served) in [(&old, &forty_days_ago), (&recent, &ten_days_ago)] {
                    for row in rows {
                        stored_responses::record(tx, row)?;
                        tx.execute(
                            "UPDATE stored_responses SET created_at = ?1 \
                             WHERE created_at > ?1",
                            [served],
                        )?;
                    }
                }
                stored_responses::record(tx, &today)?;
                for n in 0..9 {
                    let expires = if n < 7 { days_ago(1) } else { days_ago(-1) };
                    tx.execute(
                        "INSERT INTO sessions (id, user_id, token_hash, created_at, expires_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        rusqlite::params![
                            format!("s{n}"),
                            seeding_user,
                            format!("hash{n}"),
                            days_ago(2),
                            expires
                        ],
                    )?;
                }
                crate::db::ledger::adjust(
                    tx,
                    &seeding_user,
                    crate::db::ledger::Adjustment::Add(crate::money::NanoUsd(5)),
                    "{}",
                )
                .map(drop)
            })
            .unwrap();
        let retention = Retention {
            stored_response_days: 30,
        };
        // Four rows a transaction: the old responses take seven, the sessions two.
        let swept = sweep_in_batches(&database, retention, 4).await.unwrap();
        assert_eq!(
            swept,
            Swept {
                stored_responses: 25,
                sessions: 7
            }
        );
        assert_eq!(count(&database, "stored_responses"), 4);
        for id in ["resp_new_0", "resp_new_2", "resp_today"] {
            let kept = database
                .read_blocking(move |c| stored_responses::owner(c, id))
                .unwrap();
            assert!(kept.is_some(), "{id} is within the retention");
        }
        let gone = database
            .read_blocking(|c| stored_responses::owner(c, "resp_old_3"))
            .unwrap();
        assert_eq!(gone, None);
        assert_eq!(count(&database, "sessions"), 2);
        assert_eq!(count(&database, "billing_ledger"), 1);
        // A second sweep finds nothing.
        assert_eq!(sweep(&database, retention).await.unwrap(), Swept::default());
    }
}
