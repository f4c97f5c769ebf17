//! The forward phase: the upstream HTTP client, and the walk through a plan's attempts that
//! judges each upstream answer by whose fault it is (DESIGN §5). The channel's faults (`401`,
//! `403`, `404`, `408`, `429`, `5xx`, any other non-success, timeouts, refused or reset
//! connections) move on to the next attempt and mark the channel's health; the request's
//! faults (`400`, `413`, `422`) are answered as they came; a success ends the walk. Each
//! attempt is counted by its [`AttemptOutcome`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::log::RequestLog;
use super::upstream_proxy::EgressConnector;
use super::upstream_tls;
pub use super::upstream_tls::UpstreamClientError;
use super::wire::{self, NotAnObject, WholeAnswer};
use crate::billing::Usage;
use crate::config::{Config, UpstreamProxy};
use crate::db::routing::ProviderType;
use crate::metrics::{AttemptOutcome, Metrics};
use crate::routing::snapshot::{Channel, Provider};
use crate::routing::{Attempt, EndpointKind, HealthRegistry, RoutingSnapshot};
use crate::server::body;

/// How long a channel cools down after a `429` without a usable `retry-after`.
pub const DEFAULT_RATE_LIMIT_COOLDOWN: Duration = Duration::from_secs(15);

/// How long an upstream connection may sit unused in the pool before it is closed.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Unanswered TCP keep-alive probes after which the kernel declares a connection dead.
const KEEPALIVE_PROBES: u32 = 3;

/// The longest `retry-after` believed, so one bad header cannot bench a channel for a day.
const MAX_RATE_LIMIT_COOLDOWN: Duration = Duration::from_secs(600);

/// The most bytes of a rejected (`400`/`413`/`422`) upstream body passed through.
const MAX_REJECTION_BODY: usize = 1 << 20;

/// The most bytes of a whole (non-stream) upstream answer read.
pub const MAX_WHOLE_BODY: usize = 64 << 20;

/// The `anthropic-version` sent when the client did not send one.
const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// Request headers never forwarded: the client's credentials and what scopes them, Monoize's
/// own headers, hop-by-hop headers, and those the client sets itself.
const DROPPED_REQUEST_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "cookie",
    "host",
    "content-length",
    // The body sent upstream is the gateway's own JSON (the client's decoded, see
    // `server::encoding`), never in the client's coding.
    "content-encoding",
    "accept-encoding",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "x-max-multiplier",
    "x-request-id",
    // They scope the credential, and the credential is the channel's: a client's organization
    // or project would make the upstream refuse the channel's key (a 401 that trips it).
    "openai-organization",
    "openai-project",
    "x-goog-user-project",
];

/// Response headers never passed back: hop-by-hop, lengths (a stream's body may change),
/// cookies and the upstream's request id (`x-request-id`, Anthropic's `request-id`: the client
/// gets Monoize's, and the log line the upstream's). `content-encoding` is
/// kept: the host asks for `identity`, and an upstream that compresses anyway sends bytes only
/// its header lets the client read.
const DROPPED_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "set-cookie",
    "x-request-id",
    "request-id",
    "alt-svc",
    // They name the channel's account, which is the operator's and no client's business.
    "openai-organization",
    "openai-project",
    "anthropic-organization-id",
    "anthropic-workspace-id",
];

/// Prefixes of response headers never passed back: the channel's rate limits (OpenAI's
/// `x-ratelimit-remaining-tokens`, Anthropic's `anthropic-ratelimit-requests-remaining`, …).
/// They describe the operator's quota with the provider, shared by every client of the
/// channel; a client's limits are Monoize's, and an SDK or agent that paced itself by the
/// channel's would slow down for other clients' load.
const DROPPED_RESPONSE_HEADER_PREFIXES: &[&str] = &["x-ratelimit-", "anthropic-ratelimit-"];

/// The upstream client's timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting (TCP and TLS).
    pub connect: Duration,
    /// From sending the request to the response headers (and a stream's first chunk).
    pub first_byte: Duration,
    /// Between two chunks of a body.
    pub idle: Duration,
    /// How often a connection is probed: TCP keep-alive after this long idle, an HTTP/2 ping
    /// as often, and as long for its answer before the connection is dropped from the pool.
    pub keepalive: Duration,
}

impl Timeouts {
    /// The timeouts `config` sets.
    pub fn from_config(config: &Config) -> Self {
        Timeouts {
            connect: Duration::from_millis(config.upstream_connect_timeout_ms),
            first_byte: Duration::from_millis(config.upstream_first_byte_timeout_ms),
            idle: Duration::from_millis(config.upstream_idle_timeout_ms),
            keepalive: Duration::from_millis(config.upstream_keepalive_ms),
        }
    }
}

type Connector = HttpsConnector<EgressConnector>;
type PooledClient = Client<Connector, Full<Bytes>>;

/// One pool of a thread's upstream client: over HTTP/2, one connection to each upstream.
/// hyper never opens a second HTTP/2 connection to a host whose connection carries all the
/// streams the host allows (RFC 9113 §9.1 asks clients not to): further requests wait for a
/// stream to end, and LLM streams last minutes, so past that many they would wait out the
/// first-byte timeout. So a thread keeps as many lanes as its requests in flight need, each
/// carrying at most [`Upstream`]'s `streams_per_connection` requests to one upstream host: a
/// request takes the first lane with room for its host, or a new one (its own connections),
/// and holds its place until its response body is dropped. Over HTTP/1.1, where each request
/// has a connection of its own anyway, the first lane serves all but the busiest moments.
struct Lane {
    client: PooledClient,
    /// Requests in flight, by the host (`host:port`) they went to.
    in_flight: HashMap<String, Arc<AtomicUsize>>,
}

impl Lane {
    fn has_room(&self, host: &str, limit: usize) -> bool {
        self.in_flight
            .get(host)
            .is_none_or(|count| count.load(Ordering::Relaxed) < limit)
    }

    fn lease(&mut self, host: &str) -> (PooledClient, LaneLease) {
        let count = match self.in_flight.get(host) {
            Some(count) => Arc::clone(count),
            None => {
                let count = Arc::<AtomicUsize>::default();
                self.in_flight.insert(host.to_owned(), Arc::clone(&count));
                count
            }
        };
        count.fetch_add(1, Ordering::Relaxed);
        (self.client.clone(), LaneLease(count))
    }
}

/// A request's place on its lane, given back when dropped.
#[derive(Debug)]
struct LaneLease(Arc<AtomicUsize>);

impl Drop for LaneLease {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An upstream response body, holding its request's place on its lane (see [`Lane`]) until it
/// is dropped: an HTTP/2 stream is open until its body ends.
#[derive(Debug)]
pub struct UpstreamBody {
    body: Incoming,
    _lease: LaneLease,
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(context)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The pooled upstream client: HTTP/1.1 and HTTP/2 (by ALPN), TLS by rustls with the Mozilla
/// roots and the operator's own (see [`upstream_tls`]).
///
/// Each thread that sends through it gets a pool of its own, made on first use: a
/// connection's task then runs on the thread of the requests it serves, so a request never
/// waits for another thread to be woken to reach its upstream. The server keeps every
/// connection on one thread (see `server::threads`), so its requests share their thread's pool.
#[derive(Clone)]
pub struct Upstream {
    /// Identifies this client among the pools a thread holds; the pools of a dropped client
    /// are pruned when the thread next makes one.
    identity: Arc<Connector>,
    timeouts: Timeouts,
    /// The most requests in flight on one lane (see [`Lane`]).
    streams_per_connection: usize,
}

thread_local! {
    /// This thread's pools, the lanes of each live [`Upstream`].
    static POOLS: RefCell<Vec<(Weak<Connector>, Vec<Lane>)>> = const { RefCell::new(Vec::new()) };
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        out.debug_struct("Upstream")
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// A client with `timeouts` that also trusts the certificates of `ca_file`, goes through
    /// `proxy` when given, and puts at most `streams_per_connection` requests in flight on one
    /// HTTP/2 connection.
    pub fn new(
        timeouts: Timeouts,
        ca_file: Option<&Path>,
        proxy: Option<&UpstreamProxy>,
        streams_per_connection: usize,
    ) -> Result<Upstream, UpstreamClientError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeouts.connect));
        http.set_nodelay(true);
        // A pooled connection whose peer (or a NAT between) silently forgot it would take a
        // request and leave it to the first-byte timeout; probes keep middleboxes' state alive
        // and let the kernel close a dead connection before the pool hands it out.
        // The kernel counts these in whole seconds (and refuses 0).
        let tcp_keepalive = timeouts.keepalive.max(Duration::from_secs(1));
        http.set_keepalive(Some(tcp_keepalive));
        http.set_keepalive_interval(Some(tcp_keepalive));
        http.set_keepalive_retries(Some(KEEPALIVE_PROBES));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(upstream_tls::client_config(ca_file)?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(EgressConnector::new(http, proxy));
        if let Some(proxy) = proxy {
            tracing::info!(
                proxy = %proxy.redacted(),
                no_proxy = proxy.no_proxy(),
                "upstream connections go through a proxy"
            );
        }
        Ok(Upstream {
            identity: Arc::new(connector),
            timeouts,
            streams_per_connection: streams_per_connection.max(1),
        })
    }

    /// Its timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// A place for one request to `host` (its URI's authority) on this thread's pool of this
    /// client: the first lane with room for it, or a new one.
    fn lease(&self, host: &str) -> (PooledClient, LaneLease) {
        POOLS.with_borrow_mut(|pools| {
            let mine = Arc::as_ptr(&self.identity);
            if let Some((_, lanes)) = pools.iter_mut().find(|(owner, _)| owner.as_ptr() == mine) {
                return self.lease_on(lanes, host);
            }
            pools.retain(|(owner, _)| owner.strong_count() > 0);
            let mut lanes = Vec::new();
            let lease = self.lease_on(&mut lanes, host);
            pools.push((Arc::downgrade(&self.identity), lanes));
            lease
        })
    }

    fn lease_on(&self, lanes: &mut Vec<Lane>, host: &str) -> (PooledClient, LaneLease) {
        let limit = self.streams_per_connection;
        if let Some(lane) = lanes.iter_mut().find(|lane| lane.has_room(host, limit)) {
            return lane.lease(host);
        }
        let mut lane = Lane {
            client: self.new_pool(),
            in_flight: HashMap::new(),
        };
        let lease = lane.lease(host);
        lanes.push(lane);
        lease
    }

    /// A new pool of this client.
    fn new_pool(&self) -> PooledClient {
        let keepalive = self.timeouts.keepalive;
        Client::builder(TokioExecutor::new())
            // The timer evicts idle connections as they expire, not only when next taken.
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            // HTTP/2 multiplexes a lane's requests to a host on one connection: a dead one is
            // found by its unanswered ping, not by the requests it would swallow.
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(keepalive)
            .http2_keep_alive_timeout(keepalive)
            .http2_keep_alive_while_idle(true)
            .build(Connector::clone(&self.identity))
    }
}

/// The upstream URL of `endpoint` on a channel of a `provider_type` provider. `base_url` is the
/// provider's origin (`https://api.openai.com`), to which the type's API root and the
/// endpoint's resource are appended; a `base_url` that already ends in the root, or in its
/// first segments, does not get them twice: `https://api.openai.com/v1` and, for Gemini,
/// `https://generativelanguage.googleapis.com/v1beta/openai` (or `…/v1beta`) both work.
pub fn upstream_url(
    base_url: &str,
    provider_type: ProviderType,
    endpoint: EndpointKind,
    operation: Operation,
) -> String {
    let base = base_url.trim_end_matches('/');
    let root = api_root(provider_type);
    // The longest leading part of the root (at a segment boundary) that `base` ends in.
    let named = root
        .match_indices('/')
        .map(|(index, _)| index)
        .chain(std::iter::once(root.len()))
        .filter(|&end| base.ends_with(&root[..end]))
        .max()
        .unwrap_or(0);
    let resource = match operation {
        Operation::Generate => endpoint_resource(endpoint),
        Operation::CountTokens => "/messages/count_tokens",
    };
    format!("{base}{}{resource}", &root[named..])
}

/// The client's query string as it goes upstream (`beta=true` from the Anthropic SDKs and Claude
/// Code, an OpenAI-compatible upstream's `api-version`), with the `?`; empty when there is
/// none left. A pair whose value carries the client's Monoize key (`monoize_key`) is dropped:
/// that key never reaches an upstream, whatever the client put it in.
pub fn upstream_query(query: Option<&str>, monoize_key: Option<&str>) -> String {
    let Some(query) = query.filter(|query| !query.is_empty()) else {
        return String::new();
    };
    let carries_key = |pair: &str| {
        monoize_key.is_some_and(|key| {
            !key.is_empty()
                && (pair.contains(key)
                    || percent_encoding::percent_decode_str(&pair.replace('+', " "))
                        .decode_utf8_lossy()
                        .contains(key))
        })
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !carries_key(pair))
        .collect();
    if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    }
}

/// The path under which a provider type serves its API.
fn api_root(provider_type: ProviderType) -> &'static str {
    match provider_type {
        // Google's OpenAI-compatible API.
        ProviderType::Gemini => "/v1beta/openai",
        ProviderType::Responses
        | ProviderType::ChatCompletion
        | ProviderType::Messages
        | ProviderType::Grok => "/v1",
    }
}

/// The path of `endpoint` (without the `/api` alias).
pub fn endpoint_path(endpoint: EndpointKind) -> &'static str {
    match endpoint {
        EndpointKind::ChatCompletions => "/v1/chat/completions",
        EndpointKind::Responses => "/v1/responses",
        EndpointKind::Embeddings => "/v1/embeddings",
        EndpointKind::Messages => "/v1/messages",
    }
}

/// The path of `endpoint` under its provider's API root.
fn endpoint_resource(endpoint: EndpointKind) -> &'static str {
    let path = endpoint_path(endpoint);
    path.strip_prefix("/v1").unwrap_or(path)
}

/// What a forwarding request asks of its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// To answer it (generate, embed): billed on its usage, and counted in the health of the
    /// channels it tries.
    Generate,
    /// To count the input tokens of a Messages request (`/v1/messages/count_tokens`, which
    /// Claude Code calls every turn and dozens of times at start): answered as the upstream
    /// answers, never billed (it is free upstream), and never counted in a channel's health
    /// either way, since an Anthropic-compatible upstream without the endpoint (`404`) may
    /// serve messages well.
    CountTokens,
}

/// What the forward phase needs of the client's request.
pub struct Outbound<'a> {
    /// The endpoint it arrived on.
    pub endpoint: EndpointKind,
    /// What it asks of the upstream.
    pub operation: Operation,
    /// The client's headers (filtered before sending).
    pub headers: &'a HeaderMap,
    /// The client's query string as it goes upstream ([`upstream_query`]): `""` or `?…`.
    pub query: &'a str,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The body for an attempt, given its upstream model.
    pub body_for: &'a (dyn Fn(&str) -> Result<Bytes, String> + Sync),
}

impl std::fmt::Debug for Outbound<'_> {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        out.debug_struct("Outbound")
            .field("endpoint", &self.endpoint)
            .field("operation", &self.operation)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// The first part of a served stream: its first chunk has arrived; the rest follows.
#[derive(Debug)]
pub struct Served {
    /// The attempt that served it.
    pub attempt: Attempt,
    /// The upstream status.
    pub status: StatusCode,
    /// The upstream headers, filtered.
    pub headers: HeaderMap,
    /// The id the upstream gave the request, if it named one (for the log).
    pub upstream_request_id: Option<String>,
    /// What it answered.
    pub answer: Answer,
}

/// An upstream's refusal of the request as malformed, passed to the client as it came.
#[derive(Debug)]
pub struct Rejection {
    /// The id the upstream gave the request, if it named one (for the log).
    pub upstream_request_id: Option<String>,
    /// The upstream status (`400`, `413`, `422` or another client error).
    pub status: StatusCode,
    /// Its headers, filtered.
    pub headers: HeaderMap,
    /// Its body (at most 1 MiB).
    pub body: Bytes,
}

/// A served answer: a stream under way, or a whole body read to its end (read inside the
/// attempt, so an upstream that breaks off or stalls mid-body is a failed attempt and the next
/// one serves: nothing has reached the client yet).
#[derive(Debug)]
pub enum Answer {
    /// A stream: its first data chunk, and the rest of the body still to come.
    Stream {
        /// The first data chunk.
        first_chunk: Bytes,
        /// The rest.
        rest: UpstreamBody,
    },
    /// A whole JSON body, and the usage it reports (`None` when it reports none, or is
    /// compressed).
    Whole {
        /// The body.
        body: Bytes,
        /// Its usage.
        usage: Option<Usage>,
        /// For the Responses API: the id of the response it stored, when it names one.
        response_id: Option<String>,
    },
}

/// How the walk ended.
#[derive(Debug)]
pub enum ForwardOutcome {
    /// An upstream answered with success.
    Served(Box<Served>),
    /// An upstream refused the request as malformed: its answer goes to the client as is.
    Rejected(Box<Rejection>),
    /// An upstream's whole answer ran past [`MAX_WHOLE_BODY`]: the request asked for more
    /// than the gateway holds. No channel is at fault, and another would answer as much.
    TooLarge {
        /// How many attempts were made.
        attempts: usize,
    },
    /// Every attempt failed.
    Exhausted {
        /// How many attempts were made.
        attempts: usize,
    },
}

/// A channel's fault on one attempt: how it is counted, and what it says of its health.
#[derive(Debug)]
struct Failure {
    outcome: AttemptOutcome,
    /// For a `429`: its `retry-after`, when given.
    retry_after: Option<Duration>,
    reason: String,
}

/// A whole body that broke off, stalled or ran past its cap.
fn body_failed(error: &body::ReadError) -> Failure {
    failure(
        AttemptOutcome::BodyFailed,
        format!("the upstream body {error}"),
    )
}

fn failure(outcome: AttemptOutcome, reason: impl Into<String>) -> Failure {
    Failure {
        outcome,
        retry_after: None,
        reason: reason.into(),
    }
}

impl Failure {
    /// Marks the channel's health: a bad key trips it at once, a `429` for its
    /// `retry-after`, anything else counts towards the threshold.
    fn mark(&self, health: &HealthRegistry, channel_id: &str) {
        match self.outcome {
            AttemptOutcome::BadKey => health.trip(channel_id, None),
            AttemptOutcome::RateLimited => health.trip(
                channel_id,
                Some(self.retry_after.unwrap_or(DEFAULT_RATE_LIMIT_COOLDOWN)),
            ),
            _ => health.record_failure(channel_id),
        }
    }
}

/// Walks `attempts` in order until one serves the request; counts each in `metrics`.
pub async fn forward(
    upstream: &Upstream,
    health: &HealthRegistry,
    metrics: &Metrics,
    snapshot: &RoutingSnapshot,
    attempts: &[Attempt],
    outbound: &Outbound<'_>,
    log: &mut RequestLog,
) -> ForwardOutcome {
    let counts_in_health = outbound.operation == Operation::Generate;
    for (index, attempt) in attempts.iter().enumerate() {
        let tried = index + 1;
        let Some((provider, channel)) = snapshot
            .provider(&attempt.provider_id)
            .and_then(|provider| Some((provider, provider.channel(&attempt.channel_id)?)))
        else {
            tracing::warn!(request_id = %log.request_id, channel = %attempt.channel_id, "the plan names a channel the snapshot lacks");
            continue;
        };
        // Where the request is now, for its log line even if the client goes away meanwhile.
        log.attempts = tried;
        log.provider = Some(provider.name.clone());
        log.channel = Some(channel.name.clone());
        let request_id = log.request_id.as_str();
        let result = try_attempt(upstream, provider, channel, attempt, outbound).await;
        metrics.attempt(match &result {
            Ok(AttemptResult::Served(_)) => AttemptOutcome::Served,
            Ok(AttemptResult::Rejected { .. }) => AttemptOutcome::Rejected,
            Ok(AttemptResult::TooLarge) => AttemptOutcome::TooLarge,
            Err(failure) => failure.outcome,
        });
        match result {
            Ok(AttemptResult::Served(served)) => {
                if counts_in_health {
                    health.record_success(&channel.id);
                }
                return ForwardOutcome::Served(served);
            }
            Ok(AttemptResult::TooLarge) => {
                tracing::info!(request_id, provider = %provider.name, channel = %channel.name, cap = MAX_WHOLE_BODY, "the upstream's answer is larger than the gateway holds");
                return ForwardOutcome::TooLarge { attempts: tried };
            }
            Ok(AttemptResult::Rejected {
                status,
                headers,
                upstream_request_id,
                body,
            }) => {
                return ForwardOutcome::Rejected(Box::new(Rejection {
                    upstream_request_id,
                    status,
                    headers,
                    body,
                }));
            }
            Err(failure) => {
                tracing::info!(
                    request_id,
                    provider = %provider.name,
                    channel = %channel.name,
                    attempt = tried,
                    outcome = failure.outcome.label(),
                    reason = %failure.reason,
                    "upstream attempt failed; trying the next"
                );
                if counts_in_health {
                    failure.mark(health, &channel.id);
                }
            }
        }
    }
    ForwardOutcome::Exhausted {
        attempts: attempts.len(),
    }
}

enum AttemptResult {
    Served(Box<Served>),
    TooLarge,
    Rejected {
        status: StatusCode,
        headers: HeaderMap,
        upstream_request_id: Option<String>,
        body: Bytes,
    },
}

async fn try_attempt(
    upstream: &Upstream,
    provider: &Provider,
    channel: &Channel,
    attempt: &Attempt,
    outbound: &Outbound<'_>,
) -> Result<AttemptResult, Failure> {
    let body = (outbound.body_for)(&attempt.upstream_model)
        .map_err(|reason| failure(AttemptOutcome::BadChannel, reason))?;
    let started = Instant::now();
    let deadline = upstream.timeouts.first_byte;
    let mut sent_again = false;
    let (response, lease) = loop {
        let request = build_request(provider, channel, outbound, body.clone())
            .map_err(|reason| failure(AttemptOutcome::BadChannel, reason))?;
        let left = deadline.saturating_sub(started.elapsed());
        let host = request
            .uri()
            .authority()
            .map_or("", |authority| authority.as_str());
        let (pool, lease) = upstream.lease(host);
        match tokio::time::timeout(left, pool.request(request)).await {
            Err(_) => {
                return Err(failure(
                    AttemptOutcome::Timeout,
                    "no response headers in time",
                ));
            }
            Ok(Err(error)) if !sent_again && closed_before_answering(&error) => {
                // The keep-alive race: the upstream closed an idle pooled connection just as
                // the request went out on it, so it never read the request. Once, on another
                // connection; the channel did nothing wrong.
                tracing::debug!(channel = %channel.name, %error, "upstream closed a pooled connection unanswered; sending again");
                sent_again = true;
            }
            Ok(Err(error)) => {
                return Err(failure(
                    AttemptOutcome::ConnectionFailed,
                    format!("connection failed: {error}"),
                ));
            }
            Ok(Ok(response)) => break (response, lease),
        }
    };
    let status = response.status();
    let (parts, body) = response.into_parts();
    let mut body = UpstreamBody {
        body,
        _lease: lease,
    };
    let headers = filter_response_headers(&parts.headers);
    if status.is_success() && is_web_page(&parts.headers) {
        return Err(failure(
            AttemptOutcome::NotAnApi,
            format!("upstream status {status} with a web page (text/html), not an API answer"),
        ));
    }
    if status.is_success() {
        // An upstream that ignored `stream` answers one JSON body: it is relayed (and billed)
        // as the whole body it is.
        let answer = if outbound.stream && !is_json(&parts.headers) {
            let left = deadline.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, next_data(&mut body)).await {
                Err(_) => return Err(failure(AttemptOutcome::Timeout, "no first chunk in time")),
                Ok(Err(error)) => {
                    return Err(failure(
                        AttemptOutcome::StreamFailed,
                        format!("stream failed: {error}"),
                    ));
                }
                Ok(Ok(None)) => return Err(failure(AttemptOutcome::StreamFailed, "empty stream")),
                Ok(Ok(Some(first_chunk))) => Answer::Stream {
                    first_chunk,
                    rest: body,
                },
            }
        } else {
            let whole = match body::read_capped(body, MAX_WHOLE_BODY, upstream.timeouts.idle).await
            {
                Ok(whole) => whole,
                Err(body::ReadError::TooLong { .. }) => return Ok(AttemptResult::TooLarge),
                Err(error) => return Err(body_failed(&error)),
            };
            // An upstream that compresses though asked not to is relayed as it came: its bytes
            // are for the client to decode (and its usage is then estimated).
            let encoded = parts
                .headers
                .get(header::CONTENT_ENCODING)
                .is_some_and(|coding| !coding.as_bytes().eq_ignore_ascii_case(b"identity"));
            let read = if encoded {
                WholeAnswer::default()
            } else {
                wire::read_whole_answer(outbound.endpoint, &whole).map_err(|NotAnObject| {
                    failure(
                        AttemptOutcome::NotAnApi,
                        format!("upstream status {status} with a body that is not a JSON object"),
                    )
                })?
            };
            Answer::Whole {
                body: whole,
                usage: read.usage,
                response_id: read.response_id,
            }
        };
        return Ok(AttemptResult::Served(Box::new(Served {
            attempt: attempt.clone(),
            status,
            headers,
            upstream_request_id: upstream_request_id(&parts.headers),
            answer,
        })));
    }
    match status_fault(status) {
        StatusFault::Request => {
            let body = body::read_capped(body, MAX_REJECTION_BODY, upstream.timeouts.idle)
                .await
                .map_err(|error| body_failed(&error))?;
            Ok(AttemptResult::Rejected {
                status,
                headers,
                upstream_request_id: upstream_request_id(&parts.headers),
                body,
            })
        }
        StatusFault::BadKey => Err(failure(
            AttemptOutcome::BadKey,
            format!("upstream status {status}"),
        )),
        StatusFault::RateLimited => Err(Failure {
            retry_after: retry_after(&parts.headers),
            ..failure(
                AttemptOutcome::RateLimited,
                format!("upstream status {status}"),
            )
        }),
        StatusFault::Channel => Err(failure(
            AttemptOutcome::UpstreamStatus,
            format!("upstream status {status}"),
        )),
    }
}

/// Whether the upstream closed (or reset) an established connection before answering the
/// request sent on it: what a pooled keep-alive connection does when the upstream closed it as
/// idle just as the request went out. A failure to connect is not this.
fn closed_before_answering(error: &hyper_util::client::legacy::Error) -> bool {
    if error.is_connect() {
        return false;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(hyper_error) = cause.downcast_ref::<hyper::Error>()
            && hyper_error.is_incomplete_message()
        {
            return true;
        }
        if let Some(io_error) = cause.downcast_ref::<std::io::Error>()
            && matches!(
                io_error.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            )
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Whether a response is an HTML page: what a website answers (a single-page app answers
/// `200` and its page on every path), never an LLM API. Served as the answer, it would be
/// charged and then fail in the client's SDK; as the channel's fault, the next channel serves.
fn is_web_page(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|media_type| {
        media_type.eq_ignore_ascii_case("text/html")
            || media_type.eq_ignore_ascii_case("application/xhtml+xml")
    })
}

/// Whether a response is one JSON document (`application/json`, `…+json`).
fn is_json(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|media_type| {
        let suffix = media_type
            .len()
            .checked_sub(5)
            .and_then(|at| media_type.get(at..));
        media_type.eq_ignore_ascii_case("application/json")
            || suffix.is_some_and(|suffix| suffix.eq_ignore_ascii_case("+json"))
    })
}

/// A response's media type: its `content-type` without parameters.
fn media_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(str::trim)
}

/// Whose fault an upstream's unsuccessful status is (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusFault {
    /// The request's: any upstream would refuse it the same way, so it is passed through
    /// with its status and body, and the channel's health is left alone.
    Request,
    /// The channel's key (`401`, `403`): the channel trips at once.
    BadKey,
    /// The channel's rate limit (`429`), with its `retry-after`.
    RateLimited,
    /// The channel's or its provider's trouble: move on, counting it against the channel.
    Channel,
}

/// Sorts a status by fault. DESIGN §5 names `400`, `413` and `422` as the request's and `401`,
/// `403`, `404`, `408`, `429` and `5xx` as the channel's; the rest of the `4xx` is sorted the
/// same way. Whatever a client can cause by what it sends (`405`, `409`, `411`, `414`, `415`,
/// `431`, …) is the request's: counted against channels, one client's odd request could bench
/// every channel for everyone. Only the statuses that speak of the channel are its fault: `402`
/// (its account is out of credit), `404` and `410` (this provider lacks or retired the model),
/// `407` (a proxy before it wants credentials), `408`, `421` and `425` (this connection could
/// not take the request; another may). A `1xx` or `3xx` is no answer at all (a redirect means a
/// wrong `base_url`): the channel's too.
fn status_fault(status: StatusCode) -> StatusFault {
    match status.as_u16() {
        401 | 403 => StatusFault::BadKey,
        429 => StatusFault::RateLimited,
        402 | 404 | 407 | 408 | 410 | 421 | 425 => StatusFault::Channel,
        400..=499 => StatusFault::Request,
        _ => StatusFault::Channel,
    }
}

fn build_request(
    provider: &Provider,
    channel: &Channel,
    outbound: &Outbound<'_>,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let mut url = upstream_url(
        &channel.base_url,
        provider.provider_type,
        outbound.endpoint,
        outbound.operation,
    );
    url.push_str(outbound.query);
    let mut request = channel_request(
        provider,
        channel,
        Method::POST,
        &url,
        outbound.headers,
        body,
    )?;
    request.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(request)
}

/// A request to `url` on `channel`: the client's headers but those never forwarded, and the
/// channel's key in its provider's auth header.
fn channel_request(
    provider: &Provider,
    channel: &Channel,
    method: Method,
    url: &str,
    client_headers: &HeaderMap,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let mut request = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(body))
        .map_err(|error| format!("bad upstream URL `{url}`: {error}"))?;
    let headers = request.headers_mut();
    copy_request_headers(client_headers, headers);
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    let key = channel.api_key.expose();
    let secret = |text: String| {
        let mut value = HeaderValue::from_str(&text)
            .map_err(|_| "the channel key is not a valid header".to_owned())?;
        value.set_sensitive(true);
        Ok::<_, String>(value)
    };
    match provider.provider_type {
        ProviderType::Messages => {
            headers.insert("x-api-key", secret(key.to_owned())?);
            if !headers.contains_key("anthropic-version") {
                headers.insert(
                    "anthropic-version",
                    HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
                );
            }
        }
        ProviderType::Gemini => {
            headers.insert("x-goog-api-key", secret(key.to_owned())?);
        }
        ProviderType::Responses | ProviderType::ChatCompletion | ProviderType::Grok => {
            headers.insert(header::AUTHORIZATION, secret(format!("Bearer {key}"))?);
        }
    }
    Ok(request)
}

/// What the channel holding a stored response answered about it.
#[derive(Debug)]
pub struct StoredAnswer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers, filtered as every answer's are.
    pub headers: HeaderMap,
    /// Its whole body.
    pub body: Bytes,
}

/// Sends `method` for a stored response's `resource` (`/{id}`, `/{id}/input_items`, with its
/// query) under the Responses API root of `channel`, which holds the response, and reads the
/// answer whole (at most [`MAX_WHOLE_BODY`]). One attempt: no other channel can answer for the
/// response. `Err` says why the upstream did not answer, for the log only.
pub async fn fetch_stored(
    upstream: &Upstream,
    provider: &Provider,
    channel: &Channel,
    method: Method,
    resource: &str,
    client_headers: &HeaderMap,
) -> Result<StoredAnswer, String> {
    let url = format!(
        "{}{resource}",
        upstream_url(
            &channel.base_url,
            provider.provider_type,
            EndpointKind::Responses,
            Operation::Generate,
        )
    );
    let request = channel_request(
        provider,
        channel,
        method,
        &url,
        client_headers,
        Bytes::new(),
    )?;
    let host = request
        .uri()
        .authority()
        .map_or("", |authority| authority.as_str())
        .to_owned();
    let (pool, lease) = upstream.lease(&host);
    let response = tokio::time::timeout(upstream.timeouts.first_byte, pool.request(request))
        .await
        .map_err(|_| "no response headers in time".to_owned())?
        .map_err(|error| format!("connection failed: {error}"))?;
    let (parts, body) = response.into_parts();
    let body = UpstreamBody {
        body,
        _lease: lease,
    };
    let body = body::read_capped(body, MAX_WHOLE_BODY, upstream.timeouts.idle)
        .await
        .map_err(|error| format!("the upstream body {error}"))?;
    Ok(StoredAnswer {
        status: parts.status,
        headers: filter_response_headers(&parts.headers),
        body,
    })
}

/// Copies the client's headers minus credentials, hop-by-hop headers (those named in
/// `Connection` too) and Monoize's own.
fn copy_request_headers(from: &HeaderMap, to: &mut HeaderMap) {
    let named_by_connection: Vec<String> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in from {
        let lower = name.as_str();
        if DROPPED_REQUEST_HEADERS.contains(&lower)
            || named_by_connection.iter().any(|named| named == lower)
        {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

fn filter_response_headers(from: &HeaderMap) -> HeaderMap {
    let mut to = HeaderMap::new();
    for (name, value) in from {
        let name_text = name.as_str();
        if !DROPPED_RESPONSE_HEADERS.contains(&name_text)
            && !DROPPED_RESPONSE_HEADER_PREFIXES
                .iter()
                .any(|prefix| name_text.starts_with(prefix))
        {
            to.append(HeaderName::clone(name), value.clone());
        }
    }
    to
}

/// The id an upstream gave a request: OpenAI's `x-request-id`, Anthropic's `request-id`.
fn upstream_request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .or_else(|| headers.get("request-id"))
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// A `retry-after` in seconds (the HTTP-date form is not believed), capped.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map(|seconds| Duration::from_secs(seconds).min(MAX_RATE_LIMIT_COOLDOWN))
}

/// The next data frame of `body`; trailers are skipped. `None` at the end.
pub async fn next_data(body: &mut UpstreamBody) -> Result<Option<Bytes>, hyper::Error> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(error)) => return Err(error),
            Some(Ok(frame)) => {
                if let Ok(data) = Frame::into_data(frame)
                    && !data.is_empty()
                {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// Builds a response from upstream parts.
pub fn response_with<B>(status: StatusCode, headers: HeaderMap, body: B) -> Response<B> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lane_carries_at_most_its_limit_of_requests_to_each_host_until_they_end() {
        let upstream =
            Upstream::new(Timeouts::from_config(&Config::in_memory()), None, None, 2).unwrap();
        let mut lanes = Vec::new();
        let first = upstream.lease_on(&mut lanes, "a.example:443");
        let second = upstream.lease_on(&mut lanes, "a.example:443");
        // Another host has room on the same lane, whatever the first host's load.
        let other = upstream.lease_on(&mut lanes, "b.example:443");
        assert_eq!(lanes.len(), 1);
        // A third request to a full host needs a lane of its own.
        let third = upstream.lease_on(&mut lanes, "a.example:443");
        assert_eq!(lanes.len(), 2);
        // Places are given back when dropped: the first lane has room again.
        drop((first, second, other, third));
        let _again = upstream.lease_on(&mut lanes, "a.example:443");
        let _and_again = upstream.lease_on(&mut lanes, "a.example:443");
        assert_eq!(lanes.len(), 2);
        assert!(!lanes.iter().all(|lane| lane.has_room("a.example:443", 2)));
        assert!(
            lanes
                .get(1)
                .is_some_and(|lane| lane.has_room("a.example:443", 2))
        );
    }

    #[test]
    fn response_headers_lose_hop_by_hop_lengths_cookies_and_the_channels_account() {
        let mut upstream = HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
            ("content-length", "10"),
            ("transfer-encoding", "chunked"),
            ("set-cookie", "session=1"),
            ("x-request-id", "upstream-id"),
            ("openai-processing-ms", "12"),
            ("openai-organization", "org-operator"),
            ("openai-project", "proj_operator"),
            ("anthropic-organization-id", "0c1d2e3f"),
            ("x-ratelimit-remaining-tokens", "149984"),
            ("x-ratelimit-reset-requests", "6ms"),
            ("anthropic-ratelimit-requests-remaining", "49"),
            ("retry-after", "3"),
        ] {
            upstream.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let kept = filter_response_headers(&upstream);
        let mut names: Vec<&str> = kept.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "content-encoding",
                "content-type",
                "openai-processing-ms",
                "retry-after"
            ]
        );
    }

    #[test]
    fn every_status_has_the_fault_design_gives_it_and_client_errors_stay_the_requests() {
        let fault = |code: u16| status_fault(StatusCode::from_u16(code).unwrap());
        for code in [
            400, 405, 409, 411, 413, 414, 415, 416, 417, 422, 431, 451, 499,
        ] {
            assert_eq!(fault(code), StatusFault::Request, "{code}");
        }
        for code in [401, 403] {
            assert_eq!(fault(code), StatusFault::BadKey, "{code}");
        }
        assert_eq!(fault(429), StatusFault::RateLimited);
        for code in [
            100, 301, 302, 307, 308, 402, 404, 407, 408, 410, 421, 425, 500, 502, 503, 504, 529,
            599,
        ] {
            assert_eq!(fault(code), StatusFault::Channel, "{code}");
        }
    }

    #[test]
    fn urls_append_the_endpoint_path_once() {
        use EndpointKind::{ChatCompletions, Embeddings, Messages};
        use ProviderType::{ChatCompletion, Gemini, Grok};
        let cases = [
            (
                "https://api.openai.com",
                ChatCompletion,
                ChatCompletions,
                "https://api.openai.com/v1/chat/completions",
            ),
            (
                "https://api.openai.com/v1/",
                ChatCompletion,
                Embeddings,
                "https://api.openai.com/v1/embeddings",
            ),
            (
                "https://api.anthropic.com/v1",
                ProviderType::Messages,
                Messages,
                "https://api.anthropic.com/v1/messages",
            ),
            (
                "https://api.x.ai/",
                Grok,
                ChatCompletions,
                "https://api.x.ai/v1/chat/completions",
            ),
            (
                "http://127.0.0.1:9/mode/500",
                ProviderType::Messages,
                Messages,
                "http://127.0.0.1:9/mode/500/v1/messages",
            ),
            // `/v1x` is not `/v1`: only whole segments count.
            (
                "http://127.0.0.1:9/v1x",
                ChatCompletion,
                ChatCompletions,
                "http://127.0.0.1:9/v1x/v1/chat/completions",
            ),
            (
                "https://generativelanguage.googleapis.com",
                Gemini,
                ChatCompletions,
                "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions",
            ),
            (
                "https://generativelanguage.googleapis.com/v1beta",
                Gemini,
                Embeddings,
                "https://generativelanguage.googleapis.com/v1beta/openai/embeddings",
            ),
            (
                "https://generativelanguage.googleapis.com/v1beta/openai/",
                Gemini,
                ChatCompletions,
                "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions",
            ),
        ];
        for (base, provider_type, endpoint, expected) in cases {
            assert_eq!(
                upstream_url(base, provider_type, endpoint, Operation::Generate),
                expected,
                "{base}"
            );
        }
        for base in ["https://api.anthropic.com", "https://api.anthropic.com/v1/"] {
            assert_eq!(
                upstream_url(
                    base,
                    ProviderType::Messages,
                    Messages,
                    Operation::CountTokens
                ),
                "https://api.anthropic.com/v1/messages/count_tokens"
            );
        }
    }

    #[test]
    fn client_credentials_and_hop_by_hop_headers_stay_behind() {
        let mut from = HeaderMap::new();
        from.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-client"),
        );
        from.insert("x-api-key", HeaderValue::from_static("sk-client"));
        from.insert(header::CONNECTION, HeaderValue::from_static("x-secret-hop"));
        from.insert("x-secret-hop", HeaderValue::from_static("1"));
        from.insert("anthropic-beta", HeaderValue::from_static("tools"));
        let mut to = HeaderMap::new();
        copy_request_headers(&from, &mut to);
        assert_eq!(to.len(), 1);
        assert_eq!(to["anthropic-beta"], "tools");
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_capped() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("99999"));
        assert_eq!(retry_after(&headers), Some(MAX_RATE_LIMIT_COOLDOWN));
    }
}
