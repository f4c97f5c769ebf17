//! Group commit: every balance change (charges and adjustments) goes through one writer that
//! commits whatever is queued in ONE transaction.
//!
//! Why: SQLite admits one writer at a time, and every transaction pays a fixed price that has
//! nothing to do with how much it writes — taking the write lock, writing the changed pages
//! (the user's row, the ledger's table and index pages) to the WAL, a hop to a blocking thread
//! and back, and with `synchronous=FULL` an fsync. One transaction per served request makes
//! that fixed price the gateway's ceiling: charges would serialize at one commit each. Here a
//! single writer thread takes every charge queued while the previous commit ran and commits
//! them together, so under load the fixed price is shared by the whole batch and throughput
//! grows with concurrency instead of being capped by commits per second; under light load a
//! batch is just the one charge, committed at once (the writer never lingers to fill a batch).
//!
//! When the writer thread is idle (nothing sent to it is unanswered, no WAL restart is due), no
//! one holds the writer connection, and the caller's thread is quiet (a connection thread with
//! no request in flight but the caller's, so blocking it holds up no other), the caller commits its
//! write itself, as a batch of one. That spares the two thread wake-ups of a hand-off (the
//! writer's and the caller's): the commit's own latency at one connection halves. Under load
//! callers never do it: a connection thread blocked on SQLite would hold up its other
//! connections, and the batches would shrink. It never waits: if the connection is held, the
//! write goes to the thread as usual. Both commit paths hold the writer
//! connection from the transaction until the account cache is updated, so the cache still
//! follows commit order.
//!
//! A batch is first applied as it is, write after write, with nothing between them: almost every
//! batch is all successes, and per-write savepoints would add two statements to each write's
//! four. In that first pass each user's balance is read once and stored once, after the batch's
//! last write ([`Balances::held`]): a burst of one user's charges costs two statements fewer per
//! charge. If any write fails (an unknown user, an overflow), that attempt is rolled back whole and
//! the batch is applied again with each write in its own savepoint, so the failing one is undone
//! alone and answered its own error while its neighbours commit. If the transaction as a whole
//! fails, nothing of it was committed and each write is retried in a transaction of its own, so
//! every caller still gets its own answer.
//!
//! After a commit, and before any caller hears of it, the writer puts each new balance into the
//! account cache ([`super::cache`]), in commit order, so the cache never goes back in time.
//!
//! A caller's future resolves only after the transaction holding its write has committed (in
//! WAL mode the commit is in the operating system's hands then: it survives the process being
//! killed). Once queued, a write is committed even if its caller stops waiting: a charge whose
//! response is being cancelled still lands.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;

use tokio::sync::{mpsc, oneshot};

use super::Account;
use super::cache::ReadCache;
use crate::db::ledger::{self, Adjustment, Appended, Balances, Charge};
use crate::db::{Database, DbError, Writer, savepoint};
use crate::metrics;

/// The accounts the billing store serves from memory; `None` caches an unknown user.
pub type AccountCache = ReadCache<Option<Account>>;

/// The most writes one transaction commits: large enough that a burst shares a few commits,
/// small enough that one transaction (and the latency of the first write in it) stays short.
pub const MAX_BATCH: usize = 512;

/// Writes that may wait for the writer before a caller has to wait to enqueue (backpressure).
const QUEUE_CAPACITY: usize = 16_384;

/// One balance change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerWrite {
    /// A served request's charge (idempotent by request id).
    Charge(Charge),
    /// An administrator's adjustment.
    Adjust {
        /// Whose balance.
        user_id: String,
        /// The change.
        adjustment: Adjustment,
        /// Details for the ledger row, a JSON object.
        meta_json: String,
    },
}

impl LedgerWrite {
    /// Whose balance it changes.
    pub fn user_id(&self) -> &str {
        match self {
            LedgerWrite::Charge(charge) => &charge.user_id,
            LedgerWrite::Adjust { user_id, .. } => user_id,
        }
    }

    /// Applies the write in `tx`, its balance read and changed through `balances`.
    fn apply(
        &self,
        tx: &rusqlite::Transaction<'_>,
        balances: &mut Balances,
    ) -> Result<Appended, DbError> {
        match self {
            LedgerWrite::Charge(charge) => ledger::charge_with(tx, charge, balances),
            LedgerWrite::Adjust {
                user_id,
                adjustment,
                meta_json,
            } => ledger::adjust_with(tx, user_id, *adjustment, meta_json, balances)
                .map(Appended::Recorded),
        }
    }
}

/// How many transactions the writer committed and how many writes they held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitStats {
    /// Transactions committed.
    pub transactions: u64,
    /// Writes applied in them (failed ones included).
    pub writes: u64,
    /// Of the transactions, those a caller committed itself (see the module doc).
    pub inline: u64,
}

#[derive(Default)]
struct Counters {
    transactions: AtomicU64,
    writes: AtomicU64,
    inline: AtomicU64,
}

impl Counters {
    fn count(&self, writes: usize) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.writes
            .fetch_add(u64::try_from(writes).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

struct Job {
    write: LedgerWrite,
    reply: oneshot::Sender<Result<Appended, DbError>>,
}

/// The way balance changes reach the database; cheap to clone.
#[derive(Clone)]
pub struct LedgerWriter {
    mode: Mode,
    counters: Arc<Counters>,
    accounts: Arc<AccountCache>,
}

#[derive(Clone)]
enum Mode {
    /// Through the group-commit thread, or inline when it is idle.
    Grouped {
        queue: mpsc::Sender<Job>,
        /// Writes sent to the thread and not yet answered.
        pending: Arc<AtomicUsize>,
        database: Database,
    },
    /// One transaction per write, on a blocking thread: the baseline group commit is
    /// measured against.
    PerWrite(Database),
}

impl std::fmt::Debug for LedgerWriter {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            Mode::Grouped { .. } => "grouped",
            Mode::PerWrite(_) => "per-write",
        };
        out.debug_struct("LedgerWriter")
            .field("mode", &mode)
            .finish_non_exhaustive()
    }
}

impl LedgerWriter {
    /// Starts the group-commit writer thread over `database`, keeping the balances in
    /// `accounts` current. The thread ends when the last clone of the writer is dropped, after
    /// committing what was queued.
    pub fn grouped(
        database: Database,
        accounts: Arc<AccountCache>,
    ) -> Result<LedgerWriter, DbError> {
        let (sender, queue) = mpsc::channel(QUEUE_CAPACITY);
        let counters = Arc::new(Counters::default());
        let pending = Arc::new(AtomicUsize::new(0));
        let thread_counters = Arc::clone(&counters);
        let thread_accounts = Arc::clone(&accounts);
        let thread_pending = Arc::clone(&pending);
        let thread_database = database.clone();
        thread::Builder::new()
            .name("monoize-ledger".to_owned())
            .spawn(move || {
                run(
                    &thread_database,
                    queue,
                    &thread_pending,
                    &thread_counters,
                    &thread_accounts,
                );
            })
            .map_err(|error| {
                DbError::Internal(format!("cannot start the ledger writer thread: {error}"))
            })?;
        Ok(LedgerWriter {
            mode: Mode::Grouped {
                queue: sender,
                pending,
                database,
            },
            counters,
            accounts,
        })
    }

    /// A writer that commits every write in its own transaction: the baseline that group
    /// commit is measured against, not for production. Writes commit in any order here, so a
    /// written user's cached account is forgotten rather than updated.
    pub fn per_write(database: Database, accounts: Arc<AccountCache>) -> LedgerWriter {
        LedgerWriter {
            mode: Mode::PerWrite(database),
            counters: Arc::default(),
            accounts,
        }
    }

    /// Applies `write` and answers once the transaction holding it has committed.
    pub async fn write(&self, write: LedgerWrite) -> Result<Appended, DbError> {
        match &self.mode {
            Mode::Grouped {
                queue,
                pending,
                database,
            } => {
                let stopped = || DbError::Internal("the ledger writer has stopped".to_owned());
                let (reply, mut answer) = oneshot::channel();
                let job = Job { write, reply };
                // Idle: commit right here, sparing two thread wake-ups (see the module doc).
                let idle = pending.load(Ordering::Acquire) == 0
                    && !database.checkpoint_due()
                    && caller_thread_is_quiet();
                if let Some(mut writer) = idle.then(|| database.try_writer()).flatten() {
                    let mut batch = vec![job];
                    commit(&mut writer, &mut batch, &self.counters, &self.accounts);
                    drop(writer);
                    self.counters.inline.fetch_add(1, Ordering::Relaxed);
                    return answer.try_recv().map_err(|_| stopped())?;
                }
                pending.fetch_add(1, Ordering::AcqRel);
                if queue.send(job).await.is_err() {
                    pending.fetch_sub(1, Ordering::AcqRel);
                    return Err(stopped());
                }
                answer.await.map_err(|_| stopped())?
            }
            Mode::PerWrite(database) => {
                let counters = Arc::clone(&self.counters);
                let user_id = write.user_id().to_owned();
                let outcome = database
                    .write(move |tx| {
                        let outcome = write.apply(tx, &mut Balances::direct());
                        counters.count(1);
                        outcome
                    })
                    .await;
                self.accounts.forget(&user_id);
                outcome
            }
        }
    }

    /// How many transactions committed how many writes so far.
    pub fn stats(&self) -> CommitStats {
        CommitStats {
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
            inline: self.counters.inline.load(Ordering::Relaxed),
        }
    }
}

/// Whether the calling thread runs a single-threaded runtime with no request in flight but the
/// caller's (a connection thread serving one request): only there may a commit block the
/// thread without holding up another request.
fn caller_thread_is_quiet() -> bool {
    let single_threaded = tokio::runtime::Handle::try_current()
        .is_ok_and(|runtime| runtime.metrics().num_workers() == 1);
    single_threaded && metrics::in_flight_on_this_thread() <= 1
}

/// The writer thread: waits for a write, takes every other one already queued (up to
/// [`MAX_BATCH`]), commits them together, answers each caller, and starts over.
fn run(
    database: &Database,
    mut queue: mpsc::Receiver<Job>,
    pending: &AtomicUsize,
    counters: &Counters,
    accounts: &AccountCache,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(job) = queue.blocking_recv() {
        batch.push(job);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let taken = batch.len();
        commit(&mut database.writer(), &mut batch, counters, accounts);
        // Its callers have their answers: the WAL may start over before the next batch.
        database.checkpoint_if_due();
        // Only now may a caller commit inline again: not while the writer's pass runs.
        pending.fetch_sub(taken, Ordering::AcqRel);
    }
}

/// Commits `batch` in one transaction and answers (and empties) it: as it is when every write
/// succeeds, else with each write in its own savepoint; if the transaction itself fails, retries
/// each write alone.
fn commit(
    writer: &mut Writer<'_>,
    batch: &mut Vec<Job>,
    counters: &Counters,
    accounts: &AccountCache,
) {
    let mut a_write_failed = false;
    let straight = writer.transact(|tx| {
        // All or nothing, so each user's balance is read once and stored once.
        let mut balances = Balances::held();
        let mut outcomes = Vec::with_capacity(batch.len());
        for job in batch.iter() {
            match job.write.apply(tx, &mut balances) {
                Ok(appended) => outcomes.push(Ok(appended)),
                Err(error) => {
                    // Rolls this attempt back whole: the failed write may be half applied.
                    a_write_failed = true;
                    return Err(error);
                }
            }
        }
        balances.store_held(tx)?;
        Ok(outcomes)
    });
    let grouped = match straight {
        // A savepoint's rollback undoes what its write stored: each stores at once.
        Err(_) if a_write_failed => writer.transact(|tx| {
            batch
                .iter()
                .map(|job| savepoint(tx, |tx| job.write.apply(tx, &mut Balances::direct())))
                .collect::<Result<Vec<_>, _>>()
        }),
        other => other,
    };
    match grouped {
        Ok(outcomes) => {
            counters.count(batch.len());
            remember_balances(accounts, &outcomes);
            for (job, outcome) in batch.drain(..).zip(outcomes) {
                // A caller that stopped waiting has nothing to be told.
                let _ = job.reply.send(outcome);
            }
        }
        Err(error) => {
            tracing::warn!(%error, writes = batch.len(), "a group commit failed; retrying its writes one by one");
            for job in batch.drain(..) {
                let outcome = writer.transact(|tx| job.write.apply(tx, &mut Balances::direct()));
                counters.count(1);
                remember_balances(accounts, std::slice::from_ref(&outcome));
                let _ = job.reply.send(outcome);
            }
        }
    }
}

/// Puts the balance after each recorded write into `accounts`, as one cache write.
fn remember_balances(accounts: &AccountCache, outcomes: &[Result<Appended, DbError>]) {
    accounts.modify(outcomes.iter().filter_map(|outcome| match outcome {
        Ok(Appended::Recorded(row)) => Some((
            row.user_id.as_str(),
            move |account: &mut Option<Account>| {
                if let Some(account) = account {
                    account.balance = row.balance_after_nano_usd;
                }
            },
        )),
        _ => None,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::users::{self, NewUser, Role};
    use crate::money::NanoUsd;

    fn user(database: &Database, name: &str) -> String {
        let new = NewUser::new(name, "h", Role::User);
        database
            .write_blocking(move |tx| users::insert(tx, &new))
            .unwrap()
            .id
    }

    fn charge(user_id: &str, request_id: &str, amount: i64) -> LedgerWrite {
        LedgerWrite::Charge(Charge {
            user_id: user_id.to_owned(),
            request_id: request_id.to_owned(),
            amount: NanoUsd(amount),
            meta_json: "{}".to_owned(),
            key_id: None,
            stored_response: None,
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_share_transactions_and_each_gets_its_own_answer() {
        let dir = tempfile::tempdir().unwrap();
        let database = crate::db::open(&crate::config::Dsn::File(dir.path().join("g.db"))).unwrap();
        let alice = user(&database, "alice");
        let writer = LedgerWriter::grouped(database.clone(), Arc::default()).unwrap();
        let tasks: Vec<_> = (0..400)
            .map(|index| {
                let writer = writer.clone();
                let write = if index % 50 == 7 {
                    charge("ghost", &format!("g-{index}"), 1)
                } else {
                    charge(&alice, &format!("r-{index}"), 2)
                };
                tokio::spawn(async move { writer.write(write).await })
            })
            .collect();
        let mut failed = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(appended) => assert!(appended.is_new()),
                Err(DbError::NotFound(_)) => failed += 1,
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(failed, 8);
        let stats = writer.stats();
        assert_eq!(stats.writes, 400);
        assert!(stats.transactions < 400, "{stats:?}");
        let id = alice.clone();
        let (balance, _) = database
            .read_blocking(move |c| users::balance(c, &id))
            .unwrap();
        assert_eq!(balance, NanoUsd(-2 * 392));
        let sum = database
            .read_blocking(move |c| ledger::sum_for_user(c, &alice))
            .unwrap();
        assert_eq!(sum, balance);
    }

    #[tokio::test]
    async fn a_repeated_request_in_one_batch_is_charged_once() {
        let database = Database::open_in_memory().unwrap();
        let alice = user(&database, "alice");
        let writer = LedgerWriter::grouped(database.clone(), Arc::default()).unwrap();
        let (first, second) = tokio::join!(
            writer.write(charge(&alice, "same", 5)),
            writer.write(charge(&alice, "same", 5))
        );
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!(first.row(), second.row());
        assert!(first.is_new() != second.is_new());
        let (balance, _) = database
            .read_blocking(move |c| users::balance(c, &alice))
            .unwrap();
        assert_eq!(balance, NanoUsd(-5));
    }

    #[tokio::test]
    async fn the_per_write_baseline_commits_each_write_alone() {
        let database = Database::open_in_memory().unwrap();
        let alice = user(&database, "alice");
        let writer = LedgerWriter::per_write(database, Arc::default());
        for index in 0..3 {
            writer
                .write(charge(&alice, &format!("r{index}"), 1))
                .await
                .unwrap();
        }
        let adjusted = writer
            .write(LedgerWrite::Adjust {
                user_id: alice,
                adjustment: Adjustment::Set(NanoUsd(10)),
                meta_json: "{}".to_owned(),
            })
            .await
            .unwrap();
        assert_eq!(adjusted.row().delta_nano_usd, NanoUsd(13));
        assert_eq!(
            writer.stats(),
            CommitStats {
                transactions: 4,
                writes: 4,
                inline: 0
            }
        );
    }

    #[tokio::test]
    async fn a_quiet_single_threaded_caller_commits_itself_and_a_busy_one_hands_over() {
        let dir = tempfile::tempdir().unwrap();
        let database = crate::db::open(&crate::config::Dsn::File(dir.path().join("q.db"))).unwrap();
        let alice = user(&database, "alice");
        let writer = LedgerWriter::grouped(database.clone(), Arc::default()).unwrap();
        writer.write(charge(&alice, "quiet", 1)).await.unwrap();
        assert_eq!((writer.stats().transactions, writer.stats().inline), (1, 1));
        // One request in flight on this thread is the caller's own: still quiet.
        let metrics = crate::metrics::Metrics::new();
        let own = metrics.in_flight();
        writer.write(charge(&alice, "own", 1)).await.unwrap();
        assert_eq!((writer.stats().transactions, writer.stats().inline), (2, 2));
        // Another request in flight on the thread: handed to the writer thread.
        let other = metrics.in_flight();
        writer.write(charge(&alice, "busy", 1)).await.unwrap();
        assert_eq!((writer.stats().transactions, writer.stats().inline), (3, 2));
        drop((own, other));
        let (balance, _) = database
            .read_blocking(move |c| users::balance(c, &alice))
            .unwrap();
        assert_eq!(balance, NanoUsd(-3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_on_a_work_stealing_runtime_always_hands_over() {
        let database = Database::open_in_memory().unwrap();
        let alice = user(&database, "alice");
        let writer = LedgerWriter::grouped(database, Arc::default()).unwrap();
        for index in 0..3 {
            writer
                .write(charge(&alice, &format!("r{index}"), 1))
                .await
                .unwrap();
        }
        assert_eq!((writer.stats().transactions, writer.stats().inline), (3, 0));
    }
}
