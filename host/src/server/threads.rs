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

use hyper_util::server::graceful::Watcher;
use prometheus_client::metrics::gauge::Gauge;
use std::future::Future;
use std::net::SocketAddr;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::log_output;

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
    /// Connections handed to it and not yet closed (also `/metrics`' count).
    open: Gauge,
    handle: std::thread::JoinHandle<()>,
}

/// Decrements a thread's open count when its connection ends, however it ends.
struct OpenGuard(Gauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl ConnectionThreads {
    /// Starts `count` threads (at least one) that serve each connection handed to them with
    /// `serve`, thread `index` counting its open connections in `open_gauge(index)`. Fails only
    /// if the operating system refuses a thread.
    pub fn start<S, F>(
        count: usize,
        open_gauge: impl Fn(usize) -> Gauge,
        serve: S,
    ) -> std::io::Result<ConnectionThreads>
    where
        S: Fn(TcpStream, SocketAddr, Watcher) -> F + Clone + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let (abort, aborted) = watch::channel(false);
        let threads = (0..count.max(1))
            .map(|index| {
                let (queue, arrivals) = mpsc::unbounded_channel();
                let open = open_gauge(index);
                let serve = serve.clone();
                let aborted = aborted.clone();
                let thread_open = open.clone();
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
        order.sort_by_key(|&index| self.threads[index].open.get());
        let mut handoff = handoff;
        for index in order {
            let thread = &self.threads[index];
            // Counted before it arrives, so the next hand-off already sees it.
            thread.open.inc();
            match thread.queue.send(handoff) {
                Ok(()) => return,
                Err(mpsc::error::SendError(returned)) => {
                    thread.open.dec();
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
            .map(|thread| usize::try_from(thread.open.get()).unwrap_or(0))
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
    open: &Gauge,
    serve: S,
) where
    S: Fn(TcpStream, SocketAddr, Watcher) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    // This thread's log lines are written together whenever its runtime runs out of work.
    log_output::batch_this_thread();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(log_output::flush_this_thread)
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
                    let guard = OpenGuard(open.clone());
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

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::server::graceful::GracefulShutdown;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Answers each line byte with the name of the thread that read it, until the client
    /// closes: so a client sees every thread its connection ran on.
    async fn echo_thread_name(mut stream: TcpStream, _peer: SocketAddr, _watcher: Watcher) {
        let mut byte = [0u8; 1];
        while matches!(stream.read(&mut byte).await, Ok(1)) {
            let name = std::thread::current().name().unwrap_or("?").to_owned();
            if stream
                .write_all(format!("{name}\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    async fn ask(client: &mut tokio::net::TcpStream) -> String {
        client.write_all(b"?").await.unwrap();
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while client.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
            answer.push(byte[0]);
        }
        String::from_utf8(answer).unwrap()
    }

    /// A client connected to `listener`, whose server side was handed to `threads`.
    async fn connect(
        listener: &TcpListener,
        threads: &mut ConnectionThreads,
        graceful: &GracefulShutdown,
    ) -> tokio::net::TcpStream {
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        threads.hand(Handoff {
            stream: stream.into_std().unwrap(),
            peer,
            watcher: graceful.watcher(),
        });
        client
    }

    #[tokio::test]
    async fn connections_spread_over_the_threads_and_each_stays_on_its_own() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut threads =
            ConnectionThreads::start(2, |_| Gauge::default(), echo_thread_name).unwrap();
        let graceful = GracefulShutdown::new();
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(connect(&listener, &mut threads, &graceful).await);
        }
        assert_eq!(threads.open_counts(), vec![2, 2]);
        let mut seen = Vec::new();
        for client in &mut clients {
            let first = ask(client).await;
            for _ in 0..3 {
                assert_eq!(ask(client).await, first, "a connection changed threads");
            }
            seen.push(first);
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "monoize-conn-0",
                "monoize-conn-0",
                "monoize-conn-1",
                "monoize-conn-1"
            ]
        );
        // A closed connection is no longer counted: the next one goes where there is room.
        drop(clients.remove(0));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while threads.open_counts().iter().sum::<usize>() != 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "{:?}",
                threads.open_counts()
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let emptied = threads
            .open_counts()
            .iter()
            .position(|&open| open == 1)
            .unwrap();
        let mut client = connect(&listener, &mut threads, &graceful).await;
        assert_eq!(ask(&mut client).await, format!("monoize-conn-{emptied}"));
        drop((clients, client));
        threads.stop().join().await;
    }

    #[tokio::test]
    async fn abort_drops_the_connections_still_open_and_ends_the_threads() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut threads =
            ConnectionThreads::start(2, |_| Gauge::default(), echo_thread_name).unwrap();
        let graceful = GracefulShutdown::new();
        let mut client = connect(&listener, &mut threads, &graceful).await;
        assert!(ask(&mut client).await.starts_with("monoize-conn-"));
        // The connection would stay open for ever: only the abort ends it.
        tokio::time::timeout(std::time::Duration::from_secs(5), threads.stop().abort())
            .await
            .expect("the threads ended");
        let mut rest = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.read_to_end(&mut rest),
        )
        .await
        .expect("the server side closed");
        // Closed (end of stream, or reset), with nothing more said.
        drop(read);
        assert!(rest.is_empty());
    }
}
