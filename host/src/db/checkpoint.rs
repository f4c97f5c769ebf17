//! WAL checkpoints off the commit path. SQLite's automatic checkpoint runs inside the
//! connection that commits, after its commit: every thousandth page or so, one charge's commit
//! waits for the WAL to be copied back into the database file and for that file's fsync. With
//! one writer shared by every charge (group commit), that wait lands on whole batches and is
//! the tail of the commit latency. So the writer's automatic checkpoint is off and this thread,
//! on its own connection, runs a `PASSIVE` checkpoint at a short interval: it never blocks the
//! writer nor the readers.
//!
//! The same thread keeps the WAL's next blocks allocated ahead of the writer (Linux). Under
//! steady load a passive checkpoint never finds the WAL idle, so the WAL is not restarted from
//! its beginning and every commit appends to new blocks of the file. On ext4 an appending write
//! reserves its blocks under the inode's allocation lock, which the checkpoint's fsync of that
//! same file holds while it writes the WAL back: a commit then waits milliseconds for a
//! checkpoint it has nothing to do with. Blocks allocated in advance (`fallocate` with
//! `KEEP_SIZE`, so the file's length, which is all SQLite reads of it, does not change) take
//! that lock off the commit path. The billing bench's p99 commit wait at 20k charges/s went from
//! ~11 ms to ~1–3 ms with it.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::{BUSY_TIMEOUT, DbError};

/// How often the WAL is checkpointed.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// How far past the WAL's end its blocks are kept allocated: more than the WAL grows in one
/// [`CHECKPOINT_INTERVAL`] at the billing bench's highest rate (a few MiB).
pub const WAL_HEADROOM_BYTES: u64 = 64 << 20;

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
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("monoize-checkpoint".to_owned())
            .spawn(move || {
                let mut preallocation = Preallocation::default();
                preallocation.extend(&wal);
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_INTERVAL)
                {
                    if let Err(error) = checkpoint(&connection) {
                        tracing::warn!(%error, "WAL checkpoint failed");
                    }
                    preallocation.extend(&wal);
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

/// Keeps the WAL's blocks allocated [`WAL_HEADROOM_BYTES`] past its end. Best effort: a file
/// system without `fallocate` only loses the latency it buys, and says so once.
#[derive(Debug, Default)]
struct Preallocation {
    /// The allocation failed once; it is not tried again.
    unsupported: bool,
}

impl Preallocation {
    fn extend(&mut self, wal: &Path) {
        if self.unsupported {
            return;
        }
        if let Err(error) = allocate_ahead(wal) {
            tracing::info!(%error, "cannot preallocate the WAL; commits may wait on its growth");
            self.unsupported = true;
        }
    }
}

#[cfg(target_os = "linux")]
fn allocate_ahead(wal: &Path) -> std::io::Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    // Opened for each call: SQLite removes and recreates the file when it closes the database.
    let file = match std::fs::OpenOptions::new().write(true).open(wal) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    let length = file.metadata()?.len();
    let end = length.saturating_add(WAL_HEADROOM_BYTES);
    fallocate(&file, FallocateFlags::KEEP_SIZE, 0, end)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn allocate_ahead(_wal: &Path) -> std::io::Result<()> {
    Ok(())
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::time::Instant;

    use super::*;
    use crate::config::Dsn;

    #[test]
    fn db3_the_wal_is_allocated_ahead_without_growing() {
        let dir = tempfile::tempdir().unwrap();
        let probe = std::fs::File::create(dir.path().join("probe")).unwrap();
        if let Err(error) =
            rustix::fs::fallocate(&probe, rustix::fs::FallocateFlags::KEEP_SIZE, 0, 4096)
        {
            // Nothing to prove where the file system cannot allocate ahead.
            eprintln!("skipped: this file system has no fallocate ({error})");
            return;
        }
        let path = dir.path().join("p.db");
        let database = crate::db::open(&Dsn::File(path.clone())).unwrap();
        database
            .write_blocking(|tx| {
                Ok(tx.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")?)
            })
            .unwrap();
        let wal = dir.path().join("p.db-wal");
        let deadline = Instant::now() + 20 * CHECKPOINT_INTERVAL;
        let allocated = loop {
            let metadata = std::fs::metadata(&wal).unwrap();
            let allocated = metadata.blocks() * 512;
            if allocated >= WAL_HEADROOM_BYTES || Instant::now() > deadline {
                break (allocated, metadata.len());
            }
            std::thread::sleep(CHECKPOINT_INTERVAL / 5);
        };
        assert!(allocated.0 >= WAL_HEADROOM_BYTES, "{allocated:?}");
        assert!(
            allocated.1 < WAL_HEADROOM_BYTES,
            "the WAL's length is SQLite's: {allocated:?}"
        );
        // The database reads back what it wrote, and its files go away on close as before.
        let count: i64 = database
            .read_blocking(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |row| row.get(0))?))
            .unwrap();
        assert_eq!(count, 1);
        drop(database);
        assert!(!wal.exists());
    }
}
