//! The load generator: `connections` HTTP/1.1 keep-alive connections, each sending one request
//! after another (a closed loop) for a fixed time, capped at a fixed number of requests. Each
//! request's latency is measured from sending it to the last byte of its response body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The longest one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What to send, where, how hard, for how long.
#[derive(Debug, Clone)]
pub struct Load {
    /// The server under test.
    pub target: SocketAddr,
    /// The request path.
    pub path: &'static str,
    /// The request body.
    pub body: Bytes,
    /// The `Authorization` header value.
    pub authorization: &'static str,
    /// Whether the answer is a stream (it must end with `data: [DONE]`).
    pub stream: bool,
    /// Concurrent connections, each with one request in flight.
    pub connections: usize,
    /// How long to keep sending.
    pub duration: Duration,
    /// The most requests sent in all.
    pub max_requests: usize,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Latencies of the successful requests, sorted.
    pub latencies: Vec<Duration>,
    /// Requests that failed (status other than 200, a broken body, a timeout, a reset).
    pub errors: usize,
    /// From the first request sent to the last response finished.
    pub elapsed: Duration,
}

impl Outcome {
    /// Successful requests per second.
    pub fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`-quantile latency (nearest rank), zero when nothing succeeded.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index.min(self.latencies.len() - 1)]
    }
}

/// Runs `load` and answers what it measured.
pub async fn run(load: &Load) -> Outcome {
    let started = Instant::now();
    let deadline = started + load.duration;
    let sent = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..load.connections)
        .map(|_| {
            let (load, sent) = (load.clone(), Arc::clone(&sent));
            tokio::spawn(async move { worker(&load, deadline, &sent).await })
        })
        .collect();
    let mut outcome = Outcome::default();
    for worker in workers {
        let (latencies, errors) = worker.await.unwrap_or_default();
        outcome.latencies.extend(latencies);
        outcome.errors += errors;
    }
    outcome.elapsed = started.elapsed();
    outcome.latencies.sort_unstable();
    outcome
}

async fn connect(target: SocketAddr) -> Option<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(target).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    Some(sender)
}

async fn worker(load: &Load, deadline: Instant, sent: &AtomicUsize) -> (Vec<Duration>, usize) {
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut sender = None;
    while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < load.max_requests {
        if sender.is_none() {
            sender = connect(load.target).await;
        }
        let Some(connection) = sender.as_mut() else {
            errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let began = Instant::now();
        match tokio::time::timeout(REQUEST_TIMEOUT, one(connection, load)).await {
            Ok(true) => latencies.push(began.elapsed()),
            _ => {
                errors += 1;
                // The connection may be unusable now: start a fresh one.
                sender = None;
            }
        }
    }
    (latencies, errors)
}

/// Sends one request on `connection` and reads its whole answer; true if it was a success.
async fn one(connection: &mut SendRequest<Full<Bytes>>, load: &Load) -> bool {
    if connection.ready().await.is_err() {
        return false;
    }
    let Ok(request) = Request::post(load.path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .header("authorization", load.authorization)
        .body(Full::new(load.body.clone()))
    else {
        return false;
    };
    let Ok(response) = connection.send_request(request).await else {
        return false;
    };
    let ok = response.status().is_success();
    let Ok(body) = response.into_body().collect().await else {
        return false;
    };
    let body = body.to_bytes();
    ok && !body.is_empty() && (!load.stream || body.ends_with(b"data: [DONE]\n\n"))
}
