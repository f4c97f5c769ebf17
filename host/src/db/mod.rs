//! SQLite storage: opening the database (DB3), its schema and migrations, and one repository
//! module per table group. This module tree is the only place that holds SQL; nothing here
//! knows about HTTP or wasmtime.
//!
//! Repository functions take a `&Connection` (reads) or a `&Transaction` (writes) and typed
//! rows, so a caller composes several of them into one atomic unit inside
//! [`Database::write`].

pub mod api_keys;
mod checkpoint;
pub mod clock;
pub mod housekeeping;
pub mod ledger;
pub mod legacy;
pub mod registry;
pub mod routing;
pub mod schema;
pub mod sessions;
pub mod stored_responses;
pub mod users;

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, Row, Rows, Transaction, TransactionBehavior};

use crate::config::Dsn;

/// How many read-only connections a file database keeps: enough for concurrent dashboard and
/// billing reads beside the writer, few enough that each keeps a warm statement cache.
const READER_CONNECTIONS: usize = 4;

/// How long a statement waits for a lock held by another process before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The most rows a list query answers, so that no request can ask for an unbounded result.
pub const MAX_LIST_LIMIT: u32 = 1000;

/// Why a storage operation failed. Messages name tables, columns and paths, never stored
/// values such as keys, tokens or password hashes.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The row that was asked for does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A unique constraint refused the write (a duplicate username, request id, …).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The input was refused (a CHECK or foreign key constraint, or a rule checked in Rust).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The database file or its directory could not be created (DB3).
    #[error("cannot create database file {}: {source}", path.display())]
    Io {
        /// The database file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The database file exists but SQLite cannot open or configure it.
    #[error("cannot open database file {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The file was written by a newer Monoize whose schema this one does not know.
    #[error("database schema version {found} is newer than this monoize supports ({supported})")]
    TooNew {
        /// The file's `user_version`.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A stored value that cannot be what its column promises (money that is not an integer).
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// Any other SQLite failure.
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    /// The blocking task running a query failed (it panicked or the runtime is shutting down).
    #[error("database task failed: {0}")]
    Internal(String),
}

impl From<rusqlite::Error> for DbError {
    /// Sorts constraint violations into `Conflict` and `Invalid`, so callers can answer 409 or
    /// 400 without parsing messages.
    fn from(error: rusqlite::Error) -> Self {
        match &error {
            rusqlite::Error::QueryReturnedNoRows => DbError::NotFound("row".to_owned()),
            rusqlite::Error::SqliteFailure(failure, message)
                if failure.code == ErrorCode::ConstraintViolation =>
            {
                let text = message.clone().unwrap_or_else(|| failure.to_string());
                match failure.extended_code {
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => DbError::Conflict(text),
                    _ => DbError::Invalid(text),
                }
            }
            _ => DbError::Sqlite(error),
        }
    }
}

/// A handle on the database, cheap to clone and shared by every task.
///
/// Why this shape: SQLite admits one writer at a time, and a second writer only waits on the
/// file lock (or fails with `SQLITE_BUSY`). So all writes go through ONE connection behind a
/// mutex: writers queue in-process, in order, instead of spinning on the busy handler, and each
/// write closure is one `BEGIN IMMEDIATE` transaction. In WAL mode readers never block the
/// writer nor each other, so reads use a small pool of read-only connections and run beside
/// writes. Every call runs on a blocking thread (`spawn_blocking`), never on the async
/// workers.
///
/// A memory DSN has a single connection that serves reads and writes: a private in-memory
/// database lives exactly as long as its connection, and SQLite's shared-cache mode (the only
/// way to share one between connections) reports lock conflicts as `SQLITE_LOCKED`, which the
/// busy timeout does not retry.
#[derive(Clone)]
pub struct Database {
    shared: Arc<Shared>,
}

struct Shared {
    /// The WAL checkpoint thread of a file database (`None` in memory). Declared before the
    /// writer so that its connection closes first, like the readers'.
    checkpointer: Option<checkpoint::Checkpointer>,
    /// Empty for a memory database: reads then use the writer. Declared before the writer
    /// so that it is dropped first: the last connection to close checkpoints the WAL and
    /// removes it, which only a read-write connection can do.
    readers: Vec<Mutex<Connection>>,
    writer: Mutex<Connection>,
    next_reader: AtomicUsize,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        out.debug_struct("Database")
            .field("readers", &self.shared.readers.len())
            .finish()
    }
}

/// Opens the database `dsn` names: creates a file and its directories if missing (DB3), sets
/// the pragmas, and creates or migrates the schema (DBT1–DBT4) in one transaction.
pub fn open(dsn: &Dsn) -> Result<Database, DbError> {
    match dsn {
        Dsn::Memory => open_memory(),
        Dsn::File(path) => open_file(path),
    }
}

impl Database {
    /// Opens `dsn`; see [`open`].
    pub fn open(dsn: &Dsn) -> Result<Database, DbError> {
        open(dsn)
    }

    /// A fresh private in-memory database with the full schema (for tests and conformance).
    pub fn open_in_memory() -> Result<Database, DbError> {
        open_memory()
    }

    /// Runs `f` on a read connection, inside one read transaction so that every statement of
    /// `f` sees the same snapshot, on a blocking thread.
    pub async fn read<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        let database = self.clone();
        join(tokio::task::spawn_blocking(move || database.read_blocking(f)).await)
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction on the writer, on a blocking thread;
    /// commits if `f` answers `Ok`, rolls back otherwise.
    pub async fn write<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&Transaction<'_>) -> Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        let database = self.clone();
        join(tokio::task::spawn_blocking(move || database.write_blocking(f)).await)
    }

    /// [`Database::read`] for a caller already on a blocking thread (a plugin host call).
    /// Never call it from inside another `read`/`write` closure: a memory database has one
    /// connection and would deadlock.
    pub fn read_blocking<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&Connection) -> Result<T, DbError>,
    {
        let connection = self.reader();
        let snapshot = connection.unchecked_transaction()?;
        let value = f(&snapshot)?;
        snapshot.commit()?;
        Ok(value)
    }

    /// [`Database::write`] for a caller already on a blocking thread (a plugin host call).
    /// Never call it from inside another `read`/`write` closure: the writer is not reentrant.
    pub fn write_blocking<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&Transaction<'_>) -> Result<T, DbError>,
    {
        self.writer().transact(f)
    }

    /// The writer connection, waiting for whoever holds it. Holding it, a caller may run
    /// several transactions in a row with no other write between them.
    pub fn writer(&self) -> Writer<'_> {
        self.writer_holding(lock(&self.shared.writer))
    }

    /// The writer connection if no one holds it now: for a caller that must not wait.
    pub fn try_writer(&self) -> Option<Writer<'_>> {
        let connection = match self.shared.writer.try_lock() {
            Ok(connection) => connection,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(self.writer_holding(connection))
    }

    fn writer_holding<'a>(&'a self, connection: MutexGuard<'a, Connection>) -> Writer<'a> {
        Writer {
            connection,
            wal: self
                .shared
                .checkpointer
                .as_ref()
                .map(checkpoint::Checkpointer::restart),
        }
    }

    /// Whether [`Database::checkpoint_if_due`] has work to do.
    pub fn checkpoint_due(&self) -> bool {
        self.shared
            .checkpointer
            .as_ref()
            .is_some_and(|checkpointer| checkpointer.restart().is_due())
    }

    /// Between two write transactions: if the WAL has grown long enough to be started over,
    /// lets it (see [`checkpoint`]). A busy writer calls it after answering each transaction;
    /// it costs an atomic load when nothing is due. Never call it from inside a `read`/`write`
    /// closure.
    pub fn checkpoint_if_due(&self) {
        if let Some(checkpointer) = &self.shared.checkpointer
            && checkpointer.restart().is_due()
        {
            checkpointer
                .restart()
                .writer_pass(&lock(&self.shared.writer));
        }
    }

    /// The schema version recorded in the file (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<i64, DbError> {
        self.read_blocking(schema::version)
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        self.read(
            |connection| Ok(connection.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))?),
        )
        .await
        .is_ok()
    }

    /// A free reader if there is one, else the next in turn (waiting for it).
    fn reader(&self) -> MutexGuard<'_, Connection> {
        let readers = &self.shared.readers;
        if readers.is_empty() {
            return lock(&self.shared.writer);
        }
        let start = self.shared.next_reader.fetch_add(1, Ordering::Relaxed);
        for offset in 0..readers.len() {
            match readers[(start + offset) % readers.len()].try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(poisoned)) => return poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        lock(&readers[start % readers.len()])
    }
}

/// Locks a connection. A panic inside a closure rolled its transaction back while unwinding,
/// so a poisoned connection is still consistent and stays usable.
/// The writer connection, held (see [`Database::writer`]).
pub struct Writer<'a> {
    connection: MutexGuard<'a, Connection>,
    /// Told of each commit, so that a parked checkpoint thread wakes (`None` in memory).
    wal: Option<&'a checkpoint::WalRestart>,
}

impl Writer<'_> {
    /// Runs `f` in one `BEGIN IMMEDIATE` transaction; commits if `f` answers `Ok`, rolls back
    /// otherwise.
    pub fn transact<T, F>(&mut self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&Transaction<'_>) -> Result<T, DbError>,
    {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&transaction)?;
        transaction.commit()?;
        if let Some(wal) = self.wal {
            wal.committed();
        }
        Ok(value)
    }
}

fn lock(mutex: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn join<T>(joined: Result<Result<T, DbError>, tokio::task::JoinError>) -> Result<T, DbError> {
    joined.map_err(|error| DbError::Internal(error.to_string()))?
}

fn open_memory() -> Result<Database, DbError> {
    let mut connection = Connection::open_in_memory()?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    schema::migrate(&mut connection)?;
    Ok(Database::from_connections(connection, Vec::new(), None))
}

fn open_file(path: &Path) -> Result<Database, DbError> {
    open_file_tuned(path, checkpoint::Tuning::default())
}

/// [`open_file`] with its checkpoint thread tuned by `tuning`.
fn open_file_tuned(path: &Path, tuning: checkpoint::Tuning) -> Result<Database, DbError> {
    create_database_file(path)?;
    let open_error = |source| DbError::Open {
        path: path.to_owned(),
        source,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut writer = Connection::open_with_flags(path, flags).map_err(open_error)?;
    configure_writer(&writer).map_err(open_error)?;
    schema::migrate(&mut writer)?;
    let readers = (0..READER_CONNECTIONS)
        .map(|_| open_reader(path).map(Mutex::new).map_err(open_error))
        .collect::<Result<Vec<_>, _>>()?;
    let checkpointer = checkpoint::Checkpointer::start(path, tuning)?;
    Ok(Database::from_connections(
        writer,
        readers,
        Some(checkpointer),
    ))
}

impl Database {
    fn from_connections(
        writer: Connection,
        readers: Vec<Mutex<Connection>>,
        checkpointer: Option<checkpoint::Checkpointer>,
    ) -> Database {
        let shared = Shared {
            checkpointer,
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
        };
        Database {
            shared: Arc::new(shared),
        }
    }
}

/// DB3: creates missing parent directories and the file itself before SQLite opens it, so a
/// bad location fails with the path and the operating system's reason.
fn create_database_file(path: &Path) -> Result<(), DbError> {
    let io_error = |source| DbError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        fs::create_dir_all(parent)
            .map_err(|error| io_error(explain_parent_error(parent, error)))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_error)?;
    Ok(())
}

/// `create_dir_all` reports a regular file in the way as "File exists"; say what is wrong.
fn explain_parent_error(parent: &Path, error: std::io::Error) -> std::io::Error {
    if error.kind() == std::io::ErrorKind::AlreadyExists && !parent.is_dir() {
        let message = format!("{} exists and is not a directory", parent.display());
        std::io::Error::new(std::io::ErrorKind::NotADirectory, message)
    } else {
        error
    }
}

fn configure_writer(connection: &Connection) -> rusqlite::Result<()> {
    // 1 KiB pages for a new file (an existing file keeps its own): a charge changes a few
    // rows scattered over the users' table and the ledger's per-user index, and each changed
    // page is a whole frame in the WAL. With 4 KiB pages the ledger writer wrote ~7 KB of WAL
    // per charge, more than the disk absorbed at 20k charges/s without fsync stalls.
    connection.pragma_update(None, "page_size", PAGE_SIZE)?;
    let mode: String =
        connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(journal_mode = %mode, "the database file system does not support WAL");
    }
    connection.pragma_update(None, "foreign_keys", "ON")?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    // The checkpoint thread does it, off the commit path (see `checkpoint`).
    let _pages: i64 =
        connection.pragma_update_and_check(None, "wal_autocheckpoint", 0, |row| row.get(0))?;
    connection.busy_timeout(BUSY_TIMEOUT)
}

/// The page size of a new database file, in bytes.
pub const PAGE_SIZE: i64 = 1024;

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    Ok(connection)
}

/// `bytes` as lowercase hex, two digits a byte: the text form of stored hashes, ids and blobs.
/// One allocation, where formatting each byte made one a byte (it runs on every request, in
/// the API key's hash).
pub fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    hex
}

/// A new random row id (a UUID v4 in its usual text form).
pub fn new_id() -> Result<String, DbError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|error| DbError::Internal(format!("no randomness for a new id: {error}")))?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = lower_hex(&bytes);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// Reads every row of `rows` through `map`.
pub(crate) fn collect<T>(
    mut rows: Rows<'_>,
    map: impl Fn(&Row<'_>) -> Result<T, DbError>,
) -> Result<Vec<T>, DbError> {
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(map(row)?);
    }
    Ok(out)
}

/// Reads the first row of `rows` through `map`, if there is one.
pub(crate) fn first<T>(
    mut rows: Rows<'_>,
    map: impl Fn(&Row<'_>) -> Result<T, DbError>,
) -> Result<Option<T>, DbError> {
    rows.next()?.map(map).transpose()
}

/// Parses a stored TEXT column into its typed value (money, multipliers, enums).
pub(crate) fn parse_column<T: FromStr>(row: &Row<'_>, column: &str) -> Result<T, DbError> {
    let text: String = row.get(column)?;
    parse_stored(column, &text)
}

/// Parses a nullable stored TEXT column into its typed value.
pub(crate) fn parse_optional_column<T: FromStr>(
    row: &Row<'_>,
    column: &str,
) -> Result<Option<T>, DbError> {
    let text: Option<String> = row.get(column)?;
    text.map(|text| parse_stored(column, &text)).transpose()
}

fn parse_stored<T: FromStr>(column: &str, text: &str) -> Result<T, DbError> {
    text.parse()
        .map_err(|_| DbError::Corrupt(format!("{column} holds `{text}`")))
}

/// Reads a TEXT column holding a JSON array of strings.
pub(crate) fn json_strings(row: &Row<'_>, column: &str) -> Result<Vec<String>, DbError> {
    let text: String = row.get(column)?;
    serde_json::from_str(&text)
        .map_err(|_| DbError::Corrupt(format!("{column} is not a JSON array of strings")))
}

/// A list of strings as the JSON array stored in a TEXT column.
pub(crate) fn to_json_strings(values: &[String]) -> String {
    serde_json::Value::from(values.to_vec()).to_string()
}

/// Refuses text that is not valid JSON, naming the field.
pub(crate) fn require_json(field: &str, text: &str) -> Result<(), DbError> {
    // Validated without building the value: this runs inside the ledger writer's transaction.
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(drop)
        .map_err(|_| DbError::Invalid(format!("{field} is not valid JSON")))
}

/// Fails with `NotFound(what)` when a single-row statement touched no row.
pub(crate) fn expect_one(changed: usize, what: impl FnOnce() -> String) -> Result<(), DbError> {
    if changed == 0 {
        Err(DbError::NotFound(what()))
    } else {
        Ok(())
    }
}

/// Runs `f` inside a savepoint of `tx`, so that one transaction can hold many independent
/// units of work (a group commit of charges) of which any may fail alone: a unit that fails is
/// undone and the rest of the transaction goes on. The outer result is the savepoint itself
/// failing, after which the whole transaction must be abandoned; the inner one is `f`'s.
pub fn savepoint<T>(
    tx: &Transaction<'_>,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, DbError>,
) -> Result<Result<T, DbError>, DbError> {
    tx.prepare_cached("SAVEPOINT monoize_unit")?.execute([])?;
    let outcome = f(tx);
    if outcome.is_err() {
        tx.prepare_cached("ROLLBACK TO monoize_unit")?.execute([])?;
    }
    tx.prepare_cached("RELEASE monoize_unit")?.execute([])?;
    Ok(outcome)
}

/// A `LIMIT` within `1..=MAX_LIST_LIMIT`.
pub(crate) fn clamp_limit(limit: u32) -> i64 {
    i64::from(limit.clamp(1, MAX_LIST_LIMIT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dsn;

    fn table_names(connection: &Connection) -> Vec<String> {
        let mut statement = connection
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' ORDER BY name",
            )
            .unwrap();
        statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn db3_creates_missing_parent_directories_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c/monoize.db");
        let database = open(&Dsn::File(path.clone())).unwrap();
        assert!(path.is_file());
        assert_eq!(database.schema_version().unwrap(), schema::LATEST_VERSION);
    }

    #[test]
    fn db3_file_database_uses_wal_foreign_keys_and_normal_sync() {
        let dir = tempfile::tempdir().unwrap();
        let database = open(&Dsn::File(dir.path().join("x.db"))).unwrap();
        let (mode, foreign_keys, synchronous, busy) = database
            .write_blocking(|tx| {
                let mode: String = tx.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
                let fk: i64 = tx.pragma_query_value(None, "foreign_keys", |r| r.get(0))?;
                let sync: i64 = tx.pragma_query_value(None, "synchronous", |r| r.get(0))?;
                let busy: i64 = tx.pragma_query_value(None, "busy_timeout", |r| r.get(0))?;
                Ok((mode, fk, sync, busy))
            })
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(foreign_keys, 1);
        assert_eq!(synchronous, 1, "NORMAL");
        assert_eq!(busy, 5000);
    }

    #[test]
    fn db3_a_new_file_has_small_pages_and_an_old_file_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let page_size = |database: &Database| {
            database
                .read_blocking(|c| {
                    Ok(c.pragma_query_value(None, "page_size", |r| r.get::<_, i64>(0))?)
                })
                .unwrap()
        };
        let new = open(&Dsn::File(dir.path().join("new.db"))).unwrap();
        assert_eq!(page_size(&new), PAGE_SIZE);
        let old_path = dir.path().join("old.db");
        let old = Connection::open(&old_path).unwrap();
        old.execute_batch(
            "PRAGMA page_size = 4096; CREATE TABLE kept (x); INSERT INTO kept VALUES (1);",
        )
        .unwrap();
        drop(old);
        let reopened = open(&Dsn::File(old_path)).unwrap();
        assert_eq!(page_size(&reopened), 4096);
        let kept: i64 = reopened
            .read_blocking(|c| Ok(c.query_row("SELECT x FROM kept", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(kept, 1);
    }

    #[test]
    fn db3_memory_dsn_creates_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let before: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        let database = open(&Dsn::parse("sqlite::memory:").unwrap()).unwrap();
        assert_eq!(database.schema_version().unwrap(), schema::LATEST_VERSION);
        let after: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(before.len(), after.len());
        assert!(!Path::new(":memory:").exists());
    }

    #[test]
    fn db3_unwritable_location_names_the_path_and_the_os_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("plain-file");
        fs::write(&blocker, b"not a directory").unwrap();
        let path = blocker.join("sub/monoize.db");
        let error = open(&Dsn::File(path.clone())).unwrap_err();
        assert!(matches!(error, DbError::Io { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("os error"), "{message}");
        assert!(!message.contains('\n'));
    }

    #[test]
    fn db3_a_regular_file_as_parent_directory_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("plain-file");
        fs::write(&blocker, b"x").unwrap();
        let message = open(&Dsn::File(blocker.join("monoize.db")))
            .unwrap_err()
            .to_string();
        assert!(message.contains("is not a directory"), "{message}");
    }

    #[test]
    fn db3_closing_the_database_checkpoints_and_removes_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let database = open(&Dsn::File(dir.path().join("w.db"))).unwrap();
        database
            .write_blocking(|tx| {
                users::insert(tx, &users::NewUser::new("w", "h", users::Role::User))
            })
            .unwrap();
        assert!(dir.path().join("w.db-wal").exists());
        drop(database);
        assert!(!dir.path().join("w.db-wal").exists());
    }

    #[test]
    fn the_wal_is_checkpointed_into_the_file_off_the_commit_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let database = open(&Dsn::File(path.clone())).unwrap();
        let before = fs::metadata(&path).unwrap().len();
        database
            .write_blocking(|tx| {
                for n in 0..500 {
                    let name = format!("user_{n}");
                    users::insert(tx, &users::NewUser::new(&name, "h", users::Role::User))?;
                }
                Ok(())
            })
            .unwrap();
        // The writer never checkpoints (autocheckpoint is off), so only the checkpoint thread
        // can carry the new pages into the database file.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while fs::metadata(&path).unwrap().len() <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint reached the database file"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let autocheckpoint: i64 = database
            .write_blocking(|tx| {
                Ok(tx.pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))?)
            })
            .unwrap();
        assert_eq!(autocheckpoint, 0);
    }

    #[test]
    fn db3_a_file_that_is_not_a_database_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.db");
        fs::write(&path, vec![7u8; 8192]).unwrap();
        let message = open(&Dsn::File(path.clone())).unwrap_err().to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
    }

    #[test]
    fn dbt_memory_database_has_every_table() {
        let database = Database::open_in_memory().unwrap();
        let names = database.read_blocking(|c| Ok(table_names(c))).unwrap();
        let mut expected: Vec<String> = schema::REQUIRED_TABLES
            .iter()
            .map(|name| (*name).to_owned())
            .collect();
        expected.sort();
        assert_eq!(names, expected);
    }

    #[test]
    fn write_commits_on_ok_and_rolls_back_on_error() {
        let database = Database::open_in_memory().unwrap();
        let insert = |tx: &Transaction<'_>, name: &str| {
            users::insert(tx, &users::NewUser::new(name, "hash", users::Role::User))
        };
        database.write_blocking(|tx| insert(tx, "kept")).unwrap();
        let failed: Result<(), DbError> = database.write_blocking(|tx| {
            insert(tx, "discarded")?;
            Err(DbError::Invalid("stop".to_owned()))
        });
        assert!(failed.is_err());
        let names = database
            .read_blocking(|c| {
                Ok(users::list(c)?
                    .into_iter()
                    .map(|u| u.username)
                    .collect::<Vec<_>>())
            })
            .unwrap();
        assert_eq!(names, ["kept"]);
    }

    #[test]
    fn a_failed_savepoint_unit_is_undone_and_the_transaction_goes_on() {
        let database = Database::open_in_memory().unwrap();
        let insert = |tx: &Transaction<'_>, name: &str| {
            users::insert(tx, &users::NewUser::new(name, "hash", users::Role::User))
        };
        let outcomes = database
            .write_blocking(|tx| {
                let kept = savepoint(tx, |tx| insert(tx, "kept"))?;
                let undone = savepoint(tx, |tx| {
                    insert(tx, "undone")?;
                    Err::<(), _>(DbError::Invalid("stop".to_owned()))
                })?;
                let duplicate = savepoint(tx, |tx| insert(tx, "kept"))?;
                let after = savepoint(tx, |tx| insert(tx, "after"))?;
                Ok((
                    kept.is_ok(),
                    undone.is_ok(),
                    duplicate.is_ok(),
                    after.is_ok(),
                ))
            })
            .unwrap();
        assert_eq!(outcomes, (true, false, false, true));
        let mut names = database
            .read_blocking(|c| {
                Ok(users::list(c)?
                    .into_iter()
                    .map(|u| u.username)
                    .collect::<Vec<_>>())
            })
            .unwrap();
        names.sort();
        assert_eq!(names, ["after", "kept"]);
    }

    #[test]
    fn read_connections_of_a_file_database_are_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let database = open(&Dsn::File(dir.path().join("ro.db"))).unwrap();
        let result = database.read_blocking(|c| {
            Ok(c.execute(
                "INSERT INTO providers (id, name, provider_type, created_at, updated_at) \
                          VALUES ('p', 'n', 't', 'x', 'x')",
                [],
            )?)
        });
        assert!(result.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_and_writes_run_off_the_async_threads_and_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let database = open(&Dsn::File(dir.path().join("async.db"))).unwrap();
        assert!(database.ping().await);
        database
            .write(|tx| users::insert(tx, &users::NewUser::new("alice", "h", users::Role::Admin)))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let database = database.clone();
                tokio::spawn(async move { database.read(users::count).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), 1);
        }
    }

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(lower_hex(&[]), "");
        assert_eq!(lower_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        let every: Vec<u8> = (0..=255).collect();
        let expected: String = every.iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(lower_hex(&every), expected);
    }

    #[test]
    fn new_ids_are_uuid_v4_text_and_distinct() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
        assert!(matches!(a.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
    }

    #[test]
    fn constraint_errors_are_sorted_into_conflict_and_invalid() {
        let database = Database::open_in_memory().unwrap();
        let new = users::NewUser::new("bob", "h", users::Role::User);
        database
            .write_blocking(|tx| users::insert(tx, &new))
            .unwrap();
        let duplicate = database
            .write_blocking(|tx| users::insert(tx, &new))
            .unwrap_err();
        assert!(matches!(duplicate, DbError::Conflict(_)), "{duplicate:?}");
        let bad_role = database
            .write_blocking(|tx| {
                Ok(tx.execute(
                    "INSERT INTO users (id, username, password_hash, role, created_at, updated_at) \
                     VALUES ('x', 'y', 'h', 'root', 'now', 'now')",
                    [],
                )?)
            })
            .unwrap_err();
        assert!(matches!(bad_role, DbError::Invalid(_)), "{bad_role:?}");
    }
}
