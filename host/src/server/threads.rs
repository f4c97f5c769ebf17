//! Connection threads: the accept loop hands every connection to one of a few threads, each
//! running a single-threaded tokio runtime, and the connection lives its whole life there —
//! its requests, their timers and their upstream calls (each thread has its own upstream pool,
//! see [`crate::gateway::forward::Upstream`]).
//!
//! Why not one work-stealing runtime: there a request's every step (its bytes arriving, the
//! upstream answering, the charge committing) may be picked up by another worker than the one
//! that last ran it, and each hand-over costs a futex wake-up and a context switch on both
//! sides. On a lightly loaded server that is most of what a request costs: the gateway bench
//! measured 167 µs of CPU per request at one connection on a work-stealing runtime and 104 µs
//! on a single-threaded one. A new connection goes to the thread with the fewest open, so load
//! spreads as connections come and go.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper_util::server::graceful::Watcher;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// One accepted connection on its way to its thread.
pub struct Handoff {
    /// The socket, out of the accept loop's runtime (see [`TcpStream::into_std`]).
    pub stream: std::net::TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// Tells the connection when the server shuts down.
    pub watcher: Watcher,
}

/// The connection threads of one server.
pub struct ConnectionThreads {
    threads: Vec<ConnectionThread>,
    /// Where the search for the least loaded thread starts next, so ties take turns.
    next: usize,
    /// Set to `true` when connections still open after the grace period are to be dropped.
    abort: watch::Sender<bool>,
}

struct ConnectionThread {
    queue: mpsc::UnboundedSender<Handoff>,
    /// Connections handed to it and not yet closed.
    open: Arc<AtomicUsize>,
    handle: std::thread::JoinHandle<()>,
}

/// Decrements a thread's open count when its connection ends, however it ends.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnectionThreads {
    /// Starts `count` threads (at least one) that serve each connection handed to them with
    /// `serve`. Fails only if the operating system refuses a thread.
    pub fn start<S, F>(count: usize, serve: S) -> std::io::Result<ConnectionThreads>
    where
        S: Fn(TcpStream, SocketAddr, Watcher) -> F + Clone + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let (abort, aborted) = watch::channel(false);
        let threads = (0..count.max(1))
            .map(|index| {
                let (queue, arrivals) = mpsc::unbounded_channel();
                let open = Arc::new(AtomicUsize::new(0));
                let serve = serve.clone();
                let aborted = aborted.clone();
                let thread_open = Arc::clone(&open);
                let handle = std::thread::Builder::new()
                    .name(format!("monoize-conn-{index}"))
                    .spawn(move || run(arrivals, aborted, &thread_open, serve))?;
                Ok(ConnectionThread {
                    queue,
                    open,
                    handle,
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(ConnectionThreads {
            threads,
            next: 0,
            abort,
        })
    }

    /// Hands `handoff` to the thread with the fewest open connections. A thread that has
    /// stopped (it could not build its runtime) is passed over; with none left the connection
    /// is closed.
    pub fn hand(&mut self, handoff: Handoff) {
        let count = self.threads.len();
        let start = self.next;
        self.next = (start + 1) % count.max(1);
        let mut order: Vec<usize> = (0..count).map(|offset| (start + offset) % count).collect();
        order.sort_by_key(|&index| self.threads[index].open.load(Ordering::Relaxed));
        let mut handoff = handoff;
        for index in order {
            let thread = &self.threads[index];
            // Counted before it arrives, so the next hand-off already sees it.
            thread.open.fetch_add(1, Ordering::Relaxed);
            match thread.queue.send(handoff) {
                Ok(()) => return,
                Err(mpsc::error::SendError(returned)) => {
                    thread.open.fetch_sub(1, Ordering::Relaxed);
                    handoff = returned;
                }
            }
        }
        tracing::error!(peer = %handoff.peer, "no connection thread is running; closing the connection");
    }

    /// Open connections per thread, in thread order.
    pub fn open_counts(&self) -> Vec<usize> {
        self.threads
            .iter()
            .map(|thread| thread.open.load(Ordering::Relaxed))
            .collect()
    }

    /// Stops taking connections; the threads end once their connections have. Call
    /// [`Stopping::abort`] to drop the connections still open.
    pub fn stop(self) -> Stopping {
        let handles = self
            .threads
            .into_iter()
            .map(|thread| {
                drop(thread.queue);
                thread.handle
            })
            .collect();
        Stopping {
            handles,
            abort: self.abort,
        }
    }
}

/// Connection threads that take no new connections.
pub struct Stopping {
    handles: Vec<std::thread::JoinHandle<()>>,
    abort: watch::Sender<bool>,
}

impl Stopping {
    /// Drops every connection still open and waits for the threads to end.
    pub async fn abort(self) {
        // No receiver left means every thread has ended already.
        let _ = self.abort.send(true);
        self.join().await;
    }

    /// Waits for the threads to end (after their connections have).
    pub async fn join(self) {
        let handles = self.handles;
        let joined = tokio::task::spawn_blocking(move || {
            for handle in handles {
                if handle.join().is_err() {
                    tracing::error!("a connection thread panicked");
                }
            }
        })
        .await;
        if joined.is_err() {
            tracing::error!("the connection threads could not be joined");
        }
    }
}

/// A connection thread: serves what arrives until the queue closes and its connections have
/// ended, or until `aborted`.
fn run<S, F>(
    mut arrivals: mpsc::UnboundedReceiver<Handoff>,
    mut aborted: watch::Receiver<bool>,
    open: &Arc<AtomicUsize>,
    serve: S,
) where
    S: Fn(TcpStream, SocketAddr, Watcher) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "a connection thread could not start its runtime");
            return;
        }
    };
    runtime.block_on(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                arrival = arrivals.recv() => {
                    let Some(handoff) = arrival else { break };
                    // The hand-off counted the connection as open; this guard uncounts it.
                    let guard = OpenGuard(Arc::clone(open));
                    match TcpStream::from_std(handoff.stream) {
                        Ok(stream) => {
                            let connection = serve(stream, handoff.peer, handoff.watcher);
                            connections.spawn(async move {
                                connection.await;
                                drop(guard);
                            });
                        }
                        Err(error) => {
                            tracing::debug!(peer = %handoff.peer, %error, "cannot adopt a connection");
                        }
                    }
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                _ = aborted.wait_for(|&abort| abort) => return,
            }
        }
        tokio::select! {
            () = async { while connections.join_next().await.is_some() {} } => {}
            _ = aborted.wait_for(|&abort| abort) => {}
        }
    });
}
