//! A mock upstream LLM API on 127.0.0.1 that misbehaves on request. Its behaviour is chosen by
//! the first path segment (a channel's `base_url` of `http://127.0.0.1:port/<mode>`):
//!
//! - `ok`: answers in the endpoint's shape, complete enough for the stock OpenAI and Anthropic
//!   SDKs to parse;
//! - `500`, `401`, `403`, `404`, `400` (in the endpoint's error dialect), `429` (with
//!   `retry-after: 1`), and any other status from 400 up (`402`, `431`, …) in the error dialect;
//! - `slow`: answers after 5 s; `slowstream`: sends a stream's headers at once and its first
//!   event after 5 s;
//! - `cut`: a stream whose connection breaks after its first event, or a whole answer whose
//!   connection breaks halfway through its JSON;
//! - `notjson`: `200` with `application/json` over a body that is not JSON;
//! - `huge`: `200` with a JSON body of [`UNTERMINATED_MAX_BYTES`], more than the gateway
//!   holds of a whole answer;
//! - `gzipped`: `200` with `content-encoding: gzip` over [`GZIPPED_BODY`], compressed though
//!   the request asked for `identity`;
//! - `endless`: a stream that sends its first event, then a keep-alive comment every 50 ms
//!   until the reader goes away, which it records (see [`MockUpstream::wait_cancelled`]);
//!   `silent`: the same without the comments, so only a closed connection can tell;
//! - `unfinished`: a stream's opening events and one carrying [`LONG_TEXT`] (no usage, no final
//!   event), then an open body until the reader goes away (recorded);
//! - `lingering`: a whole stream, final event included, whose body then stays open until the
//!   reader goes away (recorded);
//! - `unterminated`: a stream whose second event never ends: `data: ` and then `x`s, 64 KiB at
//!   a time, until the reader goes away (recorded) or [`UNTERMINATED_MAX_BYTES`] were sent;
//! - `flood`: a stream of 64 KiB comment events sent as fast as they are taken, until the
//!   reader goes away (recorded) or [`UNTERMINATED_MAX_BYTES`] were sent;
//! - `nostream`: answers in the endpoint's whole JSON shape even when asked to stream;
//! - `webpage`: `200` with an HTML page, as a website answers any path;
//! - `absurdusage`: a chat completion reporting `u64::MAX` prompt and completion tokens;
//! - `flaky`: answers `500` while [`MockUpstream::set_failing`] says so, like `ok` otherwise.
//!
//! Every answer in a content type carries the headers a provider sends about the account behind
//! the key ([`CHANNEL_ACCOUNT_HEADERS`]). Any other mode answers like `ok`. A request with `"stream": true` is answered as SSE in the
//! endpoint's format, one event every 100 ms. Every request is recorded with its HTTP version,
//! headers and body.
//!
//! [`MockUpstream::freeze_open_connections`] makes the connections open so far stop moving
//! bytes, as a peer that died without closing them; [`MockUpstream::connections`] lists the
//! client address of each connection accepted.
//!
//! [`MockUpstream::start_tls`] serves the same over TLS, with the certificate of
//! `tests/fixtures/tls` (for `127.0.0.1` and `localhost`, signed by the test CA of
//! [`TEST_CA_FILE`]), offering the ALPN protocols it is given: HTTP/2 and HTTP/1.1, or one.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

/// The PEM file of the CA that signed the TLS mock's certificate: what a gateway must trust
/// (`MONOIZE_UPSTREAM_CA_FILE`) to reach it. A test CA whose key was thrown away.
pub const TEST_CA_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tls/ca.pem");

/// The TLS mock's certificate and its key.
const UPSTREAM_CERT_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tls/upstream.pem");
const UPSTREAM_KEY_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tls/upstream.key");

/// One request the mock saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Its HTTP version.
    pub version: hyper::Version,
    /// Its method.
    pub method: hyper::Method,
    /// Its path.
    pub path: String,
    /// Its query, if any.
    pub query: Option<String>,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body as JSON (null when not JSON).
    pub body: Value,
}

/// What the mock's handlers share.
#[derive(Debug, Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    /// The client address of every connection accepted, in order.
    connections: Mutex<Vec<SocketAddr>>,
    /// Connections numbered below this neither read nor write any more.
    frozen_below: AtomicUsize,
    failing: AtomicBool,
    cancelled: AtomicUsize,
    cancelled_changed: Notify,
}

impl Shared {
    /// Counts a stream whose reader went away.
    fn record_cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::SeqCst);
        self.cancelled_changed.notify_waiters();
    }
}

/// A running mock upstream.
#[derive(Debug, Clone)]
pub struct MockUpstream {
    /// Where it listens.
    pub address: SocketAddr,
    /// `http`, or `https` for [`MockUpstream::start_tls`].
    scheme: &'static str,
    shared: Arc<Shared>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// How one event of a mock stream is sent.
enum Feed {
    /// The events, one every 100 ms, then the end.
    Events(Vec<String>),
    /// The first event, then a broken connection.
    Cut(String),
    /// The first event, then keep-alive comments until the reader goes away.
    Endless(String),
    /// The first event, then silence until the reader goes away.
    Silent(String),
    /// The events after a 5 s silence.
    Late(Vec<String>),
    /// The events, then an open body until the reader goes away.
    Lingering(Vec<String>),
    /// The first event, then one that never ends, until the reader goes away.
    Unterminated(String),
    /// The first event, then large events as fast as they are taken, until the reader goes
    /// away.
    Flood(String),
}

/// The generated text of an `unfinished` stream: 400 bytes.
pub const LONG_TEXT: &str = concat!(
    "It was a long answer, and it went on and on about many things, for a good while, ",
    "so that a client who left before its end would have had most of it without paying. ",
    "This sentence is here to make the text longer, and so is this one, which says little ",
    "but fills the space that a real model would fill with something of more use to you. ",
    "And it ends about here, at four hundred bytes exactly, the end!!!!!"
);

/// The events of an `unfinished` stream: a `message_start` (or a chat role chunk) and one event
/// of [`LONG_TEXT`]; nothing that reports output usage or ends the stream.
fn unfinished_events(path: &str, model: &str) -> Vec<String> {
    let opening = first_event(path, model);
    let text = if path.ends_with("/v1/messages") {
        sse(
            Some("content_block_delta"),
            &json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": LONG_TEXT}}),
        )
    } else {
        sse(
            None,
            &json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0,
                "model": model, "choices": [{"index": 0, "delta": {"content": LONG_TEXT},
                "finish_reason": null}]}),
        )
    };
    vec![opening, text]
}

/// The body of a `gzipped` answer: gzip's magic bytes and noise (the host never decodes it).
pub const GZIPPED_BODY: &[u8] = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03not really deflate";

/// The most an `unterminated` stream sends of its endless event before it only waits.
pub const UNTERMINATED_MAX_BYTES: usize = 96 << 20;

impl MockUpstream {
    /// Starts a mock on a free port; it runs until the test's runtime ends.
    pub async fn start() -> std::io::Result<MockUpstream> {
        MockUpstream::serve(None, None).await
    }

    /// Starts a mock that speaks TLS with the test certificate and offers `alpn` (such as
    /// `[b"h2", b"http/1.1"]`); it runs until the test's runtime ends.
    pub async fn start_tls(alpn: &[&[u8]]) -> std::io::Result<MockUpstream> {
        MockUpstream::start_tls_allowing(alpn, None).await
    }

    /// [`MockUpstream::start_tls`] allowing at most `max_streams` concurrent HTTP/2 streams on
    /// a connection (`SETTINGS_MAX_CONCURRENT_STREAMS`) when given.
    pub async fn start_tls_allowing(
        alpn: &[&[u8]],
        max_streams: Option<u32>,
    ) -> std::io::Result<MockUpstream> {
        use pki_types::pem::PemObject;
        use tokio_rustls::rustls::{self, pki_types};
        let invalid = |error: &dyn std::fmt::Display| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string())
        };
        let chain = pki_types::CertificateDer::pem_file_iter(UPSTREAM_CERT_FILE)
            .map_err(|error| invalid(&error))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| invalid(&error))?;
        let key = pki_types::PrivateKeyDer::from_pem_file(UPSTREAM_KEY_FILE)
            .map_err(|error| invalid(&error))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| invalid(&error))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|error| invalid(&error))?;
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        MockUpstream::serve(Some(tls), max_streams).await
    }

    /// Serves connections on a free port, through `tls` when given, with at most `max_streams`
    /// concurrent HTTP/2 streams on each when given.
    async fn serve(
        tls: Option<tokio_rustls::TlsAcceptor>,
        max_streams: Option<u32>,
    ) -> std::io::Result<MockUpstream> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let shared: Arc<Shared> = Arc::default();
        let for_server = Arc::clone(&shared);
        let scheme = if tls.is_some() { "https" } else { "http" };
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let shared = Arc::clone(&for_server);
                let tls = tls.clone();
                let stream = Freezable {
                    number: shared.accepted(peer),
                    shared: Arc::clone(&shared),
                    stream,
                };
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        answer(Arc::clone(&shared), request)
                    });
                    let mut server = auto::Builder::new(TokioExecutor::new());
                    if let Some(max) = max_streams {
                        server.http2().max_concurrent_streams(max);
                    }
                    let _ = match tls {
                        None => server.serve_connection(TokioIo::new(stream), service).await,
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => {
                                server.serve_connection(TokioIo::new(stream), service).await
                            }
                            // A client that does not trust the certificate hangs up here.
                            Err(_) => return,
                        },
                    };
                });
            }
        });
        Ok(MockUpstream {
            address,
            scheme,
            shared,
        })
    }

    /// The base URL of a channel in `mode`.
    pub fn base_url(&self, mode: &str) -> String {
        format!("{}://{}/{mode}", self.scheme, self.address)
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.shared.seen).clone()
    }

    /// How many requests in `mode` were seen so far.
    pub fn seen_in(&self, mode: &str) -> usize {
        let prefix = format!("/{mode}/");
        self.seen()
            .iter()
            .filter(|seen| seen.path.starts_with(&prefix))
            .count()
    }

    /// The client address of every connection accepted so far, in order.
    pub fn connections(&self) -> Vec<SocketAddr> {
        lock(&self.shared.connections).clone()
    }

    /// From now on the connections open so far neither read nor write, as a peer that died
    /// (or a network that dropped it) without closing them; later connections are served.
    pub fn freeze_open_connections(&self) {
        let open = lock(&self.shared.connections).len();
        self.shared.frozen_below.store(open, Ordering::SeqCst);
    }

    /// Makes `flaky` channels fail (`true`) or succeed (`false`, the start).
    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }

    /// How many `endless` and `silent` streams lost their reader so far.
    pub fn cancelled(&self) -> usize {
        self.shared.cancelled.load(Ordering::SeqCst)
    }

    /// Waits up to `limit` until at least `count` `endless` or `silent` streams lost their reader;
    /// answers whether they did.
    pub async fn wait_cancelled(&self, count: usize, limit: Duration) -> bool {
        let waiting = async {
            loop {
                let changed = self.shared.cancelled_changed.notified();
                if self.cancelled() >= count {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(limit, waiting).await.is_ok()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Records a connection from `peer`: its number.
    fn accepted(&self, peer: SocketAddr) -> usize {
        let mut connections = lock(&self.connections);
        connections.push(peer);
        connections.len() - 1
    }

    fn frozen(&self, connection: usize) -> bool {
        connection < self.frozen_below.load(Ordering::SeqCst)
    }
}

/// An accepted connection that stops moving bytes, never to wake again, once frozen (see
/// [`MockUpstream::freeze_open_connections`]).
struct Freezable {
    number: usize,
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
}

impl tokio::io::AsyncRead for Freezable {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.shared.frozen(self.number) {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.stream).poll_read(context, buffer)
    }
}

impl tokio::io::AsyncWrite for Freezable {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.shared.frozen(self.number) {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.stream).poll_write(context, bytes)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.shared.frozen(self.number) {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.shared.frozen(self.number) {
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.stream).poll_shutdown(context)
    }
}

/// A `200` of `body` as `content_type`.
fn typed(content_type: &'static str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(content_type));
    for (name, value) in CHANNEL_ACCOUNT_HEADERS {
        headers.insert(*name, HeaderValue::from_static(value));
    }
    headers.insert("openai-processing-ms", HeaderValue::from_static("7"));
    headers.insert(
        "x-request-id",
        HeaderValue::from_static(UPSTREAM_REQUEST_ID),
    );
    headers.insert("request-id", HeaderValue::from_static(UPSTREAM_REQUEST_ID));
    response
}

/// The id the mock gives every request it answers, in OpenAI's `x-request-id` and Anthropic's
/// `request-id`.
pub const UPSTREAM_REQUEST_ID: &str = "req_upstream_0123456789";

/// What OpenAI and Anthropic tell of the account behind a key on every answer: its
/// organization and its rate limits. The mock sends them all, as a provider would.
pub const CHANNEL_ACCOUNT_HEADERS: &[(&str, &str)] = &[
    ("openai-organization", "org-channel-owner"),
    ("openai-project", "proj_channel_owner"),
    ("anthropic-organization-id", "c0ffee00-channel-owner"),
    ("anthropic-workspace-id", "wrkspc_channel_owner"),
    ("x-ratelimit-remaining-tokens", "149984"),
    ("anthropic-ratelimit-requests-remaining", "49"),
];

/// A body of `bytes`.
fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body of what `sender` (the returned half) sends.
fn fed() -> (mpsc::Sender<Result<Bytes, BoxError>>, Body) {
    let (sender, receiver) = mpsc::channel::<Result<Bytes, BoxError>>(4);
    (sender, BodyExt::boxed(Events(receiver)))
}

/// Sends `first`, then `piece` again and again, until [`UNTERMINATED_MAX_BYTES`] are sent or
/// the reader goes away; answers whether the reader is still there.
async fn send_repeated(
    sender: &mpsc::Sender<Result<Bytes, BoxError>>,
    first: Bytes,
    piece: Bytes,
) -> bool {
    let mut next = first;
    let mut sent = 0;
    while sent < UNTERMINATED_MAX_BYTES {
        if sender.send(Ok(next)).await.is_err() {
            return false;
        }
        sent += piece.len();
        next = piece.clone();
    }
    true
}

fn json_body(status: u16, value: &Value) -> Response<Body> {
    let mut response = typed("application/json", full(value.to_string()));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    response
}

/// An error in the dialect of the endpoint at `path`.
fn error_body(path: &str, status: u16, kind: &str, message: &str) -> Response<Body> {
    if path.ends_with("/v1/messages") {
        json_body(
            status,
            &json!({"type": "error", "error": {"type": kind, "message": message}}),
        )
    } else {
        json_body(
            status,
            &json!({"error": {"message": message, "type": kind, "param": null, "code": null}}),
        )
    }
}

async fn answer(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let method = request.method().clone();
    let version = request.version();
    let headers = request.headers().clone();
    let bytes = request
        .into_body()
        .collect()
        .await
        .map(|body| body.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    lock(&shared.seen).push(Seen {
        version,
        method,
        path: path.clone(),
        query,
        headers,
        body: body.clone(),
    });
    let mode = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("ok");
    let model = body["model"].as_str().unwrap_or("?").to_owned();
    let streaming = body["stream"] == Value::Bool(true);
    Ok(match mode {
        "500" => json_body(500, &json!({"error": "boom"})),
        "flaky" if shared.failing.load(Ordering::SeqCst) => {
            json_body(500, &json!({"error": "flaky"}))
        }
        "401" => error_body(
            &path,
            401,
            "authentication_error",
            "bad key sk-upstream-secret",
        ),
        "403" => error_body(&path, 403, "permission_error", "forbidden"),
        "404" => error_body(&path, 404, "not_found_error", "no such model"),
        "400" => error_body(&path, 400, "invalid_request_error", "your request is bad"),
        code if code.len() == 3 && code.parse::<u16>().is_ok_and(|code| code >= 400) => {
            let code = code.parse().unwrap_or(500);
            error_body(
                &path,
                code,
                "api_error",
                "the mock refuses with this status",
            )
        }
        "429" => {
            let mut response = error_body(&path, 429, "rate_limit_error", "slow down");
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
            response
        }
        "webpage" => {
            let page = "<!doctype html><html><body>Welcome to our site</body></html>";
            typed("text/html; charset=utf-8", full(page))
        }
        "cut" if !streaming => {
            let text = whole(&path, &model, &body).to_string();
            let half = Bytes::from(text[..text.len() / 2].to_owned());
            let (sender, body) = fed();
            tokio::spawn(async move {
                if sender.send(Ok(half)).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = sender.send(Err("the mock cuts the answer".into())).await;
                }
            });
            typed("application/json", body)
        }
        "gzipped" => {
            let mut response = typed("application/json", full(GZIPPED_BODY));
            response
                .headers_mut()
                .insert("content-encoding", HeaderValue::from_static("gzip"));
            response
        }
        "huge" => {
            let (sender, body) = fed();
            tokio::spawn(async move {
                let piece = Bytes::from(vec![b'a'; 1 << 20]);
                let opening = Bytes::from_static(b"{\"data\":\"");
                if send_repeated(&sender, opening, piece).await {
                    let _ = sender.send(Ok(Bytes::from_static(b"\"}"))).await;
                }
            });
            typed("application/json", body)
        }
        "notjson" => typed("application/json", full("upstream says: ok")),
        "absurdusage" => json_body(
            200,
            &json!({
                "id": "chatcmpl-mock", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "hi"}}],
                "usage": {"prompt_tokens": u64::MAX, "completion_tokens": u64::MAX}
            }),
        ),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            json_body(200, &json!({"late": true}))
        }
        "slowstream" if streaming => stream(&shared, Feed::Late(events(&path, &model))),
        "cut" if streaming => stream(&shared, Feed::Cut(first_event(&path, &model))),
        "endless" if streaming => stream(&shared, Feed::Endless(first_event(&path, &model))),
        "silent" if streaming => stream(&shared, Feed::Silent(first_event(&path, &model))),
        "flood" if streaming => stream(&shared, Feed::Flood(first_event(&path, &model))),
        "unfinished" if streaming => {
            stream(&shared, Feed::Lingering(unfinished_events(&path, &model)))
        }
        "lingering" if streaming => stream(&shared, Feed::Lingering(events(&path, &model))),
        "unterminated" if streaming => {
            stream(&shared, Feed::Unterminated(first_event(&path, &model)))
        }
        "nostream" => json_body(200, &whole(&path, &model, &body)),
        _ if streaming => stream(&shared, Feed::Events(events(&path, &model))),
        _ => json_body(200, &whole(&path, &model, &body)),
    })
}

/// A new Responses API response id, unique in the process (`resp_mock_<n>`), so a test can
/// continue one response and not another.
fn next_response_id() -> String {
    static SERIAL: AtomicUsize = AtomicUsize::new(0);
    format!("resp_mock_{}", SERIAL.fetch_add(1, Ordering::Relaxed))
}

/// The whole (non-stream) success answer of the endpoint at `path`.
fn whole(path: &str, model: &str, request: &Value) -> Value {
    if let Some(stored) = path.split("/v1/responses/").nth(1) {
        return match stored.split_once('/') {
            Some((_, "input_items")) => json!({"object": "list", "data": [],
                "first_id": null, "last_id": null, "has_more": false}),
            _ => json!({
                "id": stored, "object": "response", "created_at": 0, "status": "completed",
                "model": model, "output": [],
                "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
            }),
        };
    }
    if path.ends_with("/v1/messages/count_tokens") {
        json!({"input_tokens": 42})
    } else if path.ends_with("/v1/messages") {
        json!({
            "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "hi"}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 3, "output_tokens": 2}
        })
    } else if path.ends_with("/embeddings") {
        let inputs = request["input"].as_array().map_or(1, Vec::len);
        let data: Vec<Value> = (0..inputs)
            .map(|index| json!({"object": "embedding", "index": index, "embedding": [0.5, -0.25]}))
            .collect();
        json!({
            "object": "list", "model": model, "data": data,
            "usage": {"prompt_tokens": 2, "total_tokens": 2}
        })
    } else if path.ends_with("/v1/responses") {
        json!({
            "id": next_response_id(), "object": "response", "created_at": 0, "status": "completed",
            "model": model,
            "output": [{"type": "message", "id": "msg_mock", "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "hi", "annotations": []}]}],
            "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
        })
    } else {
        json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "hi"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        })
    }
}

fn sse(event: Option<&str>, data: &Value) -> String {
    match event {
        Some(name) => format!("event: {name}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

fn first_event(path: &str, model: &str) -> String {
    events(path, model).into_iter().next().unwrap_or_default()
}

/// The events of a stream on the endpoint at `path`.
fn events(path: &str, model: &str) -> Vec<String> {
    if path.ends_with("/v1/messages") {
        vec![
            sse(
                Some("message_start"),
                &json!({"type": "message_start", "message": {
                    "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 3, "output_tokens": 1}}}),
            ),
            sse(
                Some("content_block_start"),
                &json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
            ),
            sse(
                Some("content_block_delta"),
                &json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": "hi"}}),
            ),
            sse(
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": 0}),
            ),
            sse(
                Some("message_delta"),
                &json!({"type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                    "usage": {"output_tokens": 2}}),
            ),
            sse(Some("message_stop"), &json!({"type": "message_stop"})),
        ]
    } else if path.ends_with("/v1/responses") {
        let id = next_response_id();
        let response = |status: &str, usage: Value| {
            json!({"id": id, "object": "response", "created_at": 0,
                "status": status, "model": model, "output": [], "usage": usage})
        };
        vec![
            sse(
                Some("response.created"),
                &json!({"type": "response.created", "sequence_number": 0,
                    "response": response("in_progress", Value::Null)}),
            ),
            sse(
                Some("response.output_text.delta"),
                &json!({"type": "response.output_text.delta", "sequence_number": 1,
                    "item_id": "msg_mock", "output_index": 0, "content_index": 0,
                    "delta": "one"}),
            ),
            sse(
                Some("response.completed"),
                &json!({"type": "response.completed", "sequence_number": 2,
                    "response": response("completed",
                        json!({"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}))}),
            ),
        ]
    } else {
        let chunk = |choices: Value, usage: Option<Value>| {
            let mut chunk = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk",
                "created": 0, "model": model, "choices": choices});
            if let Some(usage) = usage {
                chunk["usage"] = usage;
            }
            sse(None, &chunk)
        };
        vec![
            chunk(
                json!([{"index": 0, "delta": {"role": "assistant", "content": "one"}, "finish_reason": null}]),
                None,
            ),
            chunk(
                json!([{"index": 0, "delta": {"content": "two"}, "finish_reason": "stop"}]),
                None,
            ),
            chunk(
                json!([]),
                Some(json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})),
            ),
            "data: [DONE]\n\n".to_owned(),
        ]
    }
}

/// An SSE response fed by a task that follows `feed`.
fn stream(shared: &Arc<Shared>, feed: Feed) -> Response<Body> {
    let (sender, body) = fed();
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        match feed {
            Feed::Events(events) => send_paced(&sender, events).await,
            Feed::Late(events) => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                send_paced(&sender, events).await;
            }
            Feed::Cut(first) => {
                if sender.send(Ok(Bytes::from(first))).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = sender.send(Err("the mock cuts the stream".into())).await;
                }
            }
            Feed::Endless(first) => {
                let mut next = Bytes::from(first);
                while sender.send(Ok(next)).await.is_ok() {
                    next = Bytes::from_static(b": keep-alive\n\n");
                    tokio::select! {
                        () = sender.closed() => break,
                        () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
                shared.record_cancelled();
            }
            Feed::Silent(first) => {
                if sender.send(Ok(Bytes::from(first))).await.is_ok() {
                    sender.closed().await;
                }
                shared.record_cancelled();
            }
            Feed::Lingering(events) => {
                send_paced(&sender, events).await;
                sender.closed().await;
                shared.record_cancelled();
            }
            Feed::Flood(first) => {
                let mut comment = vec![b'x'; 64 << 10];
                comment[0] = b':';
                comment.extend_from_slice(b"\n\n");
                if send_repeated(&sender, Bytes::from(first), Bytes::from(comment)).await {
                    sender.closed().await;
                }
                shared.record_cancelled();
            }
            Feed::Unterminated(first) => {
                let piece = Bytes::from(vec![b'x'; 64 << 10]);
                if send_repeated(&sender, Bytes::from(first + "data: "), piece).await {
                    sender.closed().await;
                }
                shared.record_cancelled();
            }
        }
    });
    typed("text/event-stream", body)
}

async fn send_paced(sender: &mpsc::Sender<Result<Bytes, BoxError>>, events: Vec<String>) {
    for event in events {
        if sender.send(Ok(Bytes::from(event))).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A body fed by a channel.
struct Events(mpsc::Receiver<Result<Bytes, BoxError>>);

impl hyper::body::Body for Events {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0
            .poll_recv(cx)
            .map(|item| item.map(|result| result.map(Frame::data)))
    }
}
