//! WAL checkpoints off the commit path. SQLite's automatic checkpoint runs inside the
//! connection that commits, after its commit: every thousandth page or so, one charge's commit
//! waits for the WAL to be copied back into the database file and for that file's fsync. With
//! one writer shared by every charge (group commit), that wait lands on whole batches and is
//! the tail of the commit latency. So the writer's automatic checkpoint is off and this thread,
//! on its own connection, runs a `PASSIVE` checkpoint at a short interval: it never blocks the
//! writer nor the readers, and the WAL stays small.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::{BUSY_TIMEOUT, DbError};

/// How often the WAL is checkpointed.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// The checkpoint thread of one file database. Dropping it stops the thread and closes its
/// connection before returning, so the database's last connection to close is still the
/// writer (which then checkpoints the rest and removes the WAL, DB3).
#[derive(Debug)]
pub struct Checkpointer {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens a connection to `path` and starts checkpointing it every [`CHECKPOINT_INTERVAL`].
    pub fn start(path: &Path) -> Result<Checkpointer, DbError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection =
            Connection::open_with_flags(path, flags).map_err(|source| DbError::Open {
                path: path.to_owned(),
                source,
            })?;
        connection
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(DbError::from)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("monoize-checkpoint".to_owned())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_INTERVAL)
                {
                    if let Err(error) = checkpoint(&connection) {
                        tracing::warn!(%error, "WAL checkpoint failed");
                    }
                }
            })
            .map_err(|error| {
                DbError::Internal(format!("cannot start the checkpoint thread: {error}"))
            })?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// Copies what it can of the WAL back into the database file without waiting for anyone.
fn checkpoint(connection: &Connection) -> rusqlite::Result<()> {
    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the checkpoint thread panicked");
        }
    }
}
