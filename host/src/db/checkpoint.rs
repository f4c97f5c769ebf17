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
//!
//! Left alone, that WAL would also grow without end: a passive checkpoint copies the frames it
//! finds, but the writer appends more while it runs, so the WAL is never wholly copied back and
//! SQLite never starts it over (145 MB/s of WAL at 20k charges/s). So once the WAL holds
//! [`WAL_RESTART_BYTES`], this thread runs passes back to back until one finds little to copy
//! (each copies only what was appended during the one before), then raises a flag; the writer,
//! between two group commits, runs one passive checkpoint itself ([`WalRestart::writer_pass`]).
//! Nothing is appended while it runs, so it copies the little that is left, and the next
//! transaction starts the WAL over from its first, already allocated, block. That pass is the
//! one pause this costs the writer, once per 128 MiB of WAL.
//!
//! An idle database is not looked at 20 times a second: after [`QUIET_PASSES`] passes in a
//! row that found the WAL as it was, the thread parks, and the writer's next commit wakes it
//! ([`WalRestart::committed`], an atomic load per transaction while the thread runs). Parked,
//! it still looks once every [`PARKED_CHECK`], so a wake-up lost to a race costs at most that.
//!
//! A checkpoint that reaches the WAL's end fsyncs the database file before the WAL may start
//! over, and the catch-up passes, which never reach it, leave everything they copied unsynced:
//! tens of MiB, a 15–20 ms fsync on the writer's pass, during which no charge commits. So this
//! thread syncs the database file itself before it raises the flag, and the writer's fsync only
//! has the few pages of its own pass to write.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::{BUSY_TIMEOUT, DbError};
use crate::parking::Parker;

/// How often the WAL is checkpointed. Short, so each pass's fsync of the WAL has little to
/// write (~3 MB at 20k charges/s): commits that land during a long fsync wait on the file
/// system. At 250 ms the billing bench's p99 commit wait at 20k/s was 1.1–2.1 ms, at 50 ms
/// 0.8–0.9 ms. An idle database's pass finds nothing to copy and costs microseconds.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(50);

/// The most the WAL's blocks are kept allocated past its end: far more than the WAL grows in
/// one [`CHECKPOINT_INTERVAL`] at the billing bench's highest rate (~3 MiB). The headroom follows
/// the growth: four intervals' worth, at least [`WAL_MIN_HEADROOM_BYTES`], so an idle
/// database does not hold 64 MiB it never writes.
pub const WAL_HEADROOM_BYTES: u64 = 64 << 20;

/// The least headroom kept allocated past the WAL's end.
pub const WAL_MIN_HEADROOM_BYTES: u64 = 1 << 20;

/// The WAL length past which it is made to start over: 128 MiB (of frames, a page each). Each
/// start-over costs the writer one short checkpoint (a few ms, mostly its fsync), so it should
/// be rare: at the billing bench's 20k charges/s the WAL grows ~60 MB/s with 1 KiB pages.
pub const WAL_RESTART_BYTES: u64 = 128 << 20;

/// Passes in a row that find the WAL unchanged (a second of them) before the thread parks.
pub const QUIET_PASSES: u32 = 20;

/// How long a parked thread sleeps when no commit wakes it.
pub const PARKED_CHECK: Duration = Duration::from_secs(1);

/// What the checkpoint thread is tuned by; [`Tuning::default`] but in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// The WAL length past which it is made to start over ([`WAL_RESTART_BYTES`]).
    pub restart_bytes: u64,
    /// How long the parked thread sleeps unless a commit wakes it ([`PARKED_CHECK`]).
    pub parked_check: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            restart_bytes: WAL_RESTART_BYTES,
            parked_check: PARKED_CHECK,
        }
    }
}

/// A catch-up pass that copied this few frames leaves the writer only a short pass.
const SMALL_PASS_FRAMES: i64 = 64;

/// The most catch-up passes of one tick: they shrink geometrically, so a few suffice unless
/// the writer outpaces them.
const MAX_CATCH_UP_PASSES: usize = 6;

/// Between this thread and the writer: a flag raised when the WAL should start over, lowered
/// by the writer's own pass, and a lock that keeps their passes apart (SQLite runs one
/// checkpoint at a time and a second one fails busy). While the flag is up this thread leaves
/// the WAL to the writer. It also carries the writer's word that it committed, which wakes a
/// parked thread. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct WalRestart {
    due: Arc<AtomicBool>,
    passes: Arc<Mutex<()>>,
    parking: Arc<Parking>,
}

/// The checkpoint thread's parking, and the passes it has run.
#[derive(Debug, Default)]
struct Parking {
    parker: Parker,
    /// Passes run so far (each tick's first; for tests).
    passes: AtomicU64,
}

impl WalRestart {
    /// The writer has committed a transaction: wakes the checkpoint thread if it is parked.
    /// An atomic load when it is not.
    pub fn committed(&self) {
        self.parking.parker.wake();
    }

    /// Whether the checkpoint thread is parked now.
    #[cfg(test)]
    fn is_parked(&self) -> bool {
        self.parking.parker.is_parked()
    }

    /// How many ticks the checkpoint thread has run.
    #[cfg(test)]
    fn passes(&self) -> u64 {
        self.parking.passes.load(Ordering::Relaxed)
    }

    /// Whether the writer should run its pass.
    pub fn is_due(&self) -> bool {
        self.due.load(Ordering::Acquire)
    }

    /// The writer's pass, on its connection between two transactions, once
    /// [`WalRestart::is_due`]: checkpoints what is left of the WAL, so that the next write
    /// transaction starts it over. If this thread is in a pass, the flag stays up for the
    /// writer's next turn.
    pub fn writer_pass(&self, writer: &Connection) {
        let Ok(_pass) = self.passes.try_lock() else {
            return;
        };
        self.due.store(false, Ordering::Release);
        if let Err(error) = checkpoint(writer) {
            tracing::warn!(%error, "the writer's WAL checkpoint failed");
        }
    }
}

/// The checkpoint thread of one file database. Dropping it stops the thread and closes its
/// connection before returning, so the database's last connection to close is still the
/// writer (which then checkpoints the rest and removes the WAL, DB3).
#[derive(Debug)]
pub struct Checkpointer {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    restart: WalRestart,
}

impl Checkpointer {
    /// Opens a connection to `path` and starts checkpointing it every [`CHECKPOINT_INTERVAL`]
    /// while it is written, making the WAL start over past `tuning.restart_bytes`.
    pub fn start(path: &Path, tuning: Tuning) -> Result<Checkpointer, DbError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection =
            Connection::open_with_flags(path, flags).map_err(|source| DbError::Open {
                path: path.to_owned(),
                source,
            })?;
        connection
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(DbError::from)?;
        // A file keeps the page size it was created with (4 KiB before schema version 3).
        let page_size: i64 = connection
            .pragma_query_value(None, "page_size", |row| row.get(0))
            .map_err(DbError::from)?;
        let restart_frames =
            i64::try_from(tuning.restart_bytes).unwrap_or(i64::MAX) / page_size.max(512);
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let database_file = path.to_owned();
        let restart = WalRestart::default();
        let raise = restart.clone();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("monoize-checkpoint".to_owned())
            .spawn(move || {
                raise.parking.parker.adopt_current_thread();
                let mut preallocation = Preallocation::default();
                preallocation.extend(&wal);
                let mut quiet = Quiet::default();
                let mut wait = CHECKPOINT_INTERVAL;
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
                    wait = CHECKPOINT_INTERVAL;
                    let frames = match tick(&connection, &raise, restart_frames, &database_file) {
                        Ok(frames) => frames,
                        Err(error) => {
                            tracing::warn!(%error, "WAL checkpoint failed");
                            None
                        }
                    };
                    preallocation.extend(&wal);
                    if quiet.after(frames) {
                        // A commit that came after the last pass wakes it, or the pass after
                        // `parked_check` sees it.
                        raise
                            .parking
                            .parker
                            .park_unless(tuning.parked_check, || false);
                        if !matches!(stopped.try_recv(), Err(TryRecvError::Empty)) {
                            break;
                        }
                        // Awake: the pass at once, for the commit that woke it, if one did.
                        wait = Duration::ZERO;
                    }
                }
            })
            .map_err(|error| {
                DbError::Internal(format!("cannot start the checkpoint thread: {error}"))
            })?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
            restart,
        })
    }

    /// The flag the writer checks between transactions.
    pub fn restart(&self) -> &WalRestart {
        &self.restart
    }
}

/// Counts the passes in a row that found the WAL as the one before did.
#[derive(Debug, Default)]
struct Quiet {
    /// The WAL's frames at the last pass.
    frames: Option<i64>,
    passes: u32,
}

impl Quiet {
    /// Records a pass that found `frames` (`None`: it did not look, or failed) and answers
    /// whether the thread should park now: after [`QUIET_PASSES`] quiet passes in a row, and
    /// once parked, after the first quiet pass it wakes to (woken by the timeout alone).
    fn after(&mut self, frames: Option<i64>) -> bool {
        if frames.is_some() && frames == self.frames {
            self.passes = self.passes.saturating_add(1);
        } else {
            self.passes = 0;
        }
        self.frames = frames;
        if self.passes >= QUIET_PASSES {
            self.passes = QUIET_PASSES - 1;
            return true;
        }
        false
    }
}

/// Copies what it can of the WAL back into the database file without waiting for anyone.
fn checkpoint(connection: &Connection) -> rusqlite::Result<Pass> {
    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok(Pass {
            frames: row.get(1)?,
            copied: row.get(2)?,
        })
    })
}

/// What one passive checkpoint reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pass {
    /// Frames in the WAL (SQLite's `mxFrame`).
    frames: i64,
    /// Of them, copied back into the database file so far (`nBackfill`).
    copied: i64,
}

/// One tick of the checkpoint thread: a pass, and, when the WAL is long, more passes until
/// one finds little left (each copies only what was appended during the one before, a fraction
/// of it), then the flag for the writer, whose own pass has only that little left to copy.
/// Answers the frames the first pass found in the WAL (`None` when it left the WAL to the
/// writer's pass).
fn tick(
    connection: &Connection,
    restart: &WalRestart,
    restart_frames: i64,
    database_file: &Path,
) -> rusqlite::Result<Option<i64>> {
    if restart.is_due() {
        return Ok(None);
    }
    let _passes = restart
        .passes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    restart.parking.passes.fetch_add(1, Ordering::Relaxed);
    let mut pass = checkpoint(connection)?;
    let found = Some(pass.frames);
    if pass.frames < restart_frames {
        return Ok(found);
    }
    for _ in 0..MAX_CATCH_UP_PASSES {
        let next = checkpoint(connection)?;
        let copied_now = next.copied.saturating_sub(pass.copied);
        pass = next;
        if copied_now <= SMALL_PASS_FRAMES {
            break;
        }
    }
    // Only latency rides on this sync: the writer's pass syncs the file itself before the WAL
    // starts over, so a failure here must not keep the WAL from restarting.
    if let Err(error) = sync_data(database_file) {
        tracing::warn!(%error, "cannot sync the database file ahead of the WAL restart");
    }
    restart.due.store(true, Ordering::Release);
    Ok(found)
}

/// Writes the database file's data to disk: what the catch-up passes copied into it, so that
/// the writer's pass, whose checkpoint fsyncs the file, waits only for its own few pages.
fn sync_data(database_file: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(database_file)?
        .sync_data()
}

/// Keeps the WAL's blocks allocated past its end, by four times its growth since the last
/// tick (within [`WAL_MIN_HEADROOM_BYTES`]..=[`WAL_HEADROOM_BYTES`]). Best effort: a file
/// system without `fallocate` only loses the latency it buys, and says so once.
#[derive(Debug, Default)]
struct Preallocation {
    /// The WAL's length at the last tick.
    last_length: u64,
    /// The allocation failed once; it is not tried again.
    unsupported: bool,
}

impl Preallocation {
    fn extend(&mut self, wal: &Path) {
        if self.unsupported {
            return;
        }
        match allocate_ahead(wal, self.last_length) {
            Ok(length) => self.last_length = length,
            Err(error) => {
                tracing::info!(%error, "cannot preallocate the WAL; commits may wait on its growth");
                self.unsupported = true;
            }
        }
    }
}

/// Allocates the WAL's blocks ahead of its end, from its growth since it was `last_length`
/// long; answers its length now.
#[cfg(target_os = "linux")]
fn allocate_ahead(wal: &Path, last_length: u64) -> std::io::Result<u64> {
    use rustix::fs::{FallocateFlags, fallocate};
    // Opened for each call: SQLite removes and recreates the file when it closes the database.
    let file = match std::fs::OpenOptions::new().write(true).open(wal) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error),
    };
    let length = file.metadata()?.len();
    let headroom = length
        .saturating_sub(last_length)
        .saturating_mul(4)
        .clamp(WAL_MIN_HEADROOM_BYTES, WAL_HEADROOM_BYTES);
    fallocate(
        &file,
        FallocateFlags::KEEP_SIZE,
        0,
        length.saturating_add(headroom),
    )?;
    Ok(length)
}

#[cfg(not(target_os = "linux"))]
fn allocate_ahead(_wal: &Path, _last_length: u64) -> std::io::Result<u64> {
    Ok(0)
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // A parked thread sees the stop only once awake.
            thread.thread().unpark();
            if thread.join().is_err() {
                tracing::warn!("the checkpoint thread panicked");
            }
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
        let deadline = Instant::now() + 100 * CHECKPOINT_INTERVAL;
        let allocated = loop {
            let metadata = std::fs::metadata(&wal).unwrap();
            let allocated = metadata.blocks() * 512;
            if allocated >= metadata.len() + WAL_MIN_HEADROOM_BYTES || Instant::now() > deadline {
                break (allocated, metadata.len());
            }
            std::thread::sleep(CHECKPOINT_INTERVAL / 5);
        };
        assert!(
            allocated.0 >= allocated.1 + WAL_MIN_HEADROOM_BYTES,
            "{allocated:?}"
        );
        // An idle database keeps the least headroom, not the most.
        assert!(
            allocated.0 <= allocated.1 + 4 * WAL_MIN_HEADROOM_BYTES,
            "{allocated:?}"
        );
        assert!(
            allocated.1 < WAL_MIN_HEADROOM_BYTES,
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

    #[test]
    fn db3_a_wal_written_without_pause_still_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let restart_bytes = 4 << 20;
        let tuning = Tuning {
            restart_bytes,
            ..Tuning::default()
        };
        let database = crate::db::open_file_tuned(&path, tuning).unwrap();
        database
            .write_blocking(|tx| Ok(tx.execute_batch("CREATE TABLE t (x BLOB);")?))
            .unwrap();
        let wal = dir.path().join("r.db-wal");
        // The writer never waits for the checkpoints, as under steady load: without its own
        // pass at the flag, the WAL would never start over and would grow by every write. A
        // write (about 4 KiB of WAL) every 100 µs or so, until twelve restart lengths are
        // written over at least 16 checkpoint intervals; a minute at most on a very slow
        // machine. How far the WAL overshoots its restart length before the writer's pass
        // depends on how fast the machine syncs, so what is proved is that it starts over,
        // again and again, as SQLite counts it in the WAL's header.
        let started = Instant::now();
        let enough = |written: u64| {
            written * 4096 > 12 * restart_bytes && started.elapsed() > 16 * CHECKPOINT_INTERVAL
        };
        let mut written = 0u64;
        while !enough(written) && started.elapsed() < Duration::from_secs(60) {
            database
                .write_blocking(|tx| Ok(tx.execute("INSERT INTO t VALUES (zeroblob(3000))", [])?))
                .unwrap();
            written += 1;
            database.checkpoint_if_due();
            std::thread::sleep(Duration::from_micros(100));
        }
        assert!(
            written * 4096 > 8 * restart_bytes,
            "too few writes to tell: {written}"
        );
        let restarts = wal_restarts(&wal).unwrap();
        let length = std::fs::metadata(&wal).unwrap().len();
        assert!(
            restarts >= 2,
            "the WAL started over {restarts} times in {written} writes; it is {length} bytes long"
        );
        assert!(
            length < written * 4096,
            "the WAL grew by every write: {length} bytes after {written} writes"
        );
        let rows: u64 = database
            .read_blocking(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |row| row.get(0))?))
            .unwrap();
        assert_eq!(rows, written);
    }

    #[test]
    fn db3_an_idle_database_parks_its_checkpoint_thread_and_a_commit_wakes_it() {
        let dir = tempfile::tempdir().unwrap();
        // Parked, the thread would sleep an hour: whatever wakes it here is the commit.
        let tuning = Tuning {
            parked_check: Duration::from_secs(3600),
            ..Tuning::default()
        };
        let database = crate::db::open_file_tuned(&dir.path().join("i.db"), tuning).unwrap();
        let insert = |database: &crate::db::Database| {
            database
                .write_blocking(|tx| Ok(tx.execute_batch("INSERT INTO t VALUES (1);")?))
                .unwrap();
        };
        database
            .write_blocking(|tx| Ok(tx.execute_batch("CREATE TABLE t (x);")?))
            .unwrap();
        let restart = database
            .shared
            .checkpointer
            .as_ref()
            .unwrap()
            .restart()
            .clone();
        let wait_for = |what: &str, done: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !done() {
                assert!(Instant::now() < deadline, "{what} did not happen in 30 s");
                std::thread::sleep(CHECKPOINT_INTERVAL / 5);
            }
        };
        wait_for("parking after quiet passes", &|| restart.is_parked());
        let parked_at = restart.passes();
        assert!(
            parked_at >= u64::from(QUIET_PASSES),
            "it parked after {parked_at} passes"
        );
        std::thread::sleep(10 * CHECKPOINT_INTERVAL);
        assert_eq!(
            restart.passes(),
            parked_at,
            "a parked thread runs no passes"
        );

        insert(&database);
        wait_for("the pass after the commit", &|| {
            restart.passes() > parked_at
        });
        // Awake, it checkpoints on its interval again, and parks once the WAL is quiet.
        wait_for("parking again", &|| restart.is_parked());
        assert!(restart.passes() > parked_at + u64::from(QUIET_PASSES) / 2);

        // Dropping the database stops a parked thread at once, not after its hour.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(database);
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(30))
            .expect("the parked checkpoint thread stops when the database closes");
    }

    /// How many times the WAL has started over: the checkpoint sequence number of its header
    /// (big-endian, at byte 12), which SQLite raises at every restart.
    fn wal_restarts(wal: &Path) -> std::io::Result<u32> {
        use std::io::Read;
        let mut header = [0u8; 16];
        std::fs::File::open(wal)?.read_exact(&mut header)?;
        Ok(u32::from_be_bytes([
            header[12], header[13], header[14], header[15],
        ]))
    }
}
