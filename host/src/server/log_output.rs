//! Where log lines go: stdout (or a file), and on a connection thread a batch of lines at a
//! time.
//!
//! Every request writes one log line. Written alone, each line is a `write` system call (and,
//! to a file, a page-cache update) on the thread that served the request: under load that was
//! ~3% of the gateway's CPU. A connection thread instead keeps its lines in a buffer and writes
//! them together when its runtime has nothing left to do (tokio's `on_thread_park`, see
//! [`super::threads`]), when the buffer reaches [`FLUSH_AT_BYTES`], and when the thread ends.
//! An idle server therefore shows each line as soon as its request is done; a busy one writes
//! a few dozen lines per call. Lines are never reordered within a thread, and a line is never
//! split across calls. What a `SIGKILL` can cost is the lines of the thread's current busy spell.
//!
//! Every other thread (start-up, the ledger writer, blocking tasks) writes its lines at once.

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::{Mutex, OnceLock, PoisonError};

use tracing_subscriber::fmt::MakeWriter;

/// A buffer this large is written out at once, busy runtime or not (~200 request lines).
pub const FLUSH_AT_BYTES: usize = 64 * 1024;

thread_local! {
    /// This thread's unwritten lines, when it batches them ([`batch_this_thread`]).
    static PENDING: RefCell<Option<Batch>> = const { RefCell::new(None) };
}

/// Lines waiting to be written; what is left is written when the thread ends.
struct Batch(Vec<u8>);

impl Drop for Batch {
    fn drop(&mut self) {
        write_out(&mut self.0);
    }
}

/// Where this process's log lines go, set by the first [`LogOutput`] made (stdout when none).
static DESTINATION: OnceLock<Mutex<Box<dyn Write + Send>>> = OnceLock::new();

/// Writes `bytes` to the destination and empties it. A log line that cannot be written (stdout
/// closed, disk full) is dropped: there is nowhere left to report it.
fn write_out(bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        return;
    }
    let _ = write_now(bytes);
    bytes.clear();
}

/// Writes `bytes` to the destination at once.
fn write_now(bytes: &[u8]) -> io::Result<()> {
    let destination = DESTINATION.get_or_init(|| Mutex::new(Box::new(io::stdout())));
    // A thread that panicked mid-line leaves at worst a torn line: keep logging.
    let mut destination = destination.lock().unwrap_or_else(PoisonError::into_inner);
    destination.write_all(bytes)?;
    destination.flush()
}

/// From now on, this thread's log lines wait in a buffer until [`flush_this_thread`] (or a
/// full buffer, or the thread's end) writes them.
pub fn batch_this_thread() {
    PENDING.with(|pending| {
        pending
            .borrow_mut()
            .get_or_insert_with(|| Batch(Vec::with_capacity(FLUSH_AT_BYTES)));
    });
}

/// Writes the lines this thread has buffered, if any.
pub fn flush_this_thread() {
    let _ = PENDING.try_with(|pending| {
        if let Ok(mut pending) = pending.try_borrow_mut()
            && let Some(batch) = pending.as_mut()
        {
            write_out(&mut batch.0);
        }
    });
}

/// The log writer: one destination per process, written in batches on threads that asked
/// for it.
#[derive(Debug, Clone, Copy)]
pub struct LogOutput(());

impl LogOutput {
    /// Log lines go to stdout (the `monoize` binary).
    pub fn stdout() -> LogOutput {
        LogOutput::to(io::stdout())
    }

    /// Log lines go to `destination`, a file say. The process has one destination: the
    /// first one given stays.
    pub fn to(destination: impl Write + Send + 'static) -> LogOutput {
        let _ = DESTINATION.set(Mutex::new(Box::new(destination)));
        LogOutput(())
    }
}

/// One log line on its way out (tracing writes each formatted line in one `write_all`).
#[derive(Debug)]
pub struct LineWriter(());

impl<'a> MakeWriter<'a> for LogOutput {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter(())
    }
}

impl Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        // After the thread's buffer is gone (its end), lines go straight out.
        let buffered = PENDING
            .try_with(|pending| {
                // A line logged while this thread is writing its batch (it cannot be borrowed)
                // goes straight out.
                let Ok(mut pending) = pending.try_borrow_mut() else {
                    return false;
                };
                let Some(batch) = pending.as_mut() else {
                    return false;
                };
                batch.0.extend_from_slice(bytes);
                if batch.0.len() >= FLUSH_AT_BYTES {
                    write_out(&mut batch.0);
                }
                true
            })
            .unwrap_or(false);
        if !buffered {
            write_now(bytes)?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A destination the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner))
                .into_owned()
        }
    }

    fn log(output: &LogOutput, line: &str) {
        output.make_writer().write_all(line.as_bytes()).unwrap();
    }

    /// The only test that sets this process's destination (the lib tests share one process).
    #[test]
    fn batched_lines_wait_for_a_flush_a_full_buffer_or_the_threads_end_and_keep_their_order() {
        let seen = Shared::default();
        let output = LogOutput::to(seen.clone());

        // A thread that does not batch writes each line at once.
        std::thread::spawn(move || log(&output, "unbatched\n"))
            .join()
            .unwrap();
        assert_eq!(seen.text(), "unbatched\n");

        let reader = seen.clone();
        std::thread::spawn(move || {
            batch_this_thread();
            log(&output, "one\n");
            log(&output, "two\n");
            assert_eq!(reader.text(), "unbatched\n", "batched lines wait");
            flush_this_thread();
            assert_eq!(reader.text(), "unbatched\none\ntwo\n");

            let long = format!("{}\n", "x".repeat(FLUSH_AT_BYTES));
            log(&output, &long);
            assert!(
                reader.text().ends_with(&long),
                "a full buffer is written at once"
            );

            log(&output, "last\n");
        })
        .join()
        .unwrap();
        assert!(
            seen.text().ends_with("x\nlast\n"),
            "what is left is written when the thread ends"
        );
    }
}
