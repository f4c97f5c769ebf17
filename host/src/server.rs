//! The HTTP server: hyper 1 on tokio, HTTP/1.1 and HTTP/2 on one port, graceful shutdown.
//! Every request goes through [`dispatch`], the one place that maps a method and path to a
//! handler. The accept loop hands each connection to one of the [`threads`], where it stays.

pub mod body;
pub mod cors;
pub mod encoding;
pub mod log_output;
pub mod threads;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONNECTION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

use self::threads::{ConnectionThreads, Handoff};
use crate::db::housekeeping::{Housekeeper, Retention};
use crate::db::schema;
use crate::gateway::error::{Dialect, GatewayError, REQUEST_ID_HEADER, set_request_id};
use crate::gateway::forward::Operation;
use crate::gateway::request_id::new_request_id;
use crate::routing::EndpointKind;
use crate::{dashboard, gateway};

/// How long the streams cut at the end of a shutdown's grace may take to settle their charges
/// before the server stops anyway (a settle is a plugin call and a commit: milliseconds).
const SETTLE_GRACE: Duration = Duration::from_secs(5);

/// How often an idle HTTP/2 connection is pinged; a peer that does not answer within
/// [`HTTP2_KEEP_ALIVE_TIMEOUT`] is gone, and its connection is closed.
const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// How long an HTTP/2 ping may wait for its answer.
const HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A pause after a failed `accept` (too many open files), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Any error a response body may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response: buffered JSON today, upstream streams later.
pub type ResponseBody = BoxBody<Bytes, BoxError>;

pub use crate::app::AppState;

/// Serves HTTP on `listener` until `shutdown` completes, then stops accepting, lets in-flight
/// requests finish for up to `MONOIZE_SHUTDOWN_GRACE_MS`, cuts the streams still open (each
/// charged for what it relayed, within [`SETTLE_GRACE`]) and returns. The accept loop runs on the
/// caller's runtime; each connection is served on one of the connection threads
/// (`MONOIZE_SERVER_THREADS`, one per core by default; see [`threads`]).
pub async fn serve(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()>) {
    let count = state.config.server_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    // Stops with this function, as the connection threads do.
    let _housekeeper = Housekeeper::start(
        state.db.clone(),
        Retention {
            stored_response_days: state.config.stored_response_retention_days,
        },
        Duration::from_millis(state.config.housekeeping_interval_ms),
    );
    let state = Arc::new(state);
    let metrics = state.metrics.clone();
    let streams = state.gateway.streams.clone();
    let grace = Duration::from_millis(state.config.shutdown_grace_ms);
    let builder = connection_builder(Duration::from_millis(state.config.http_header_timeout_ms));
    let serve_one = move |stream, peer, watcher: Watcher| {
        serve_connection(Arc::clone(&state), builder.clone(), stream, peer, watcher)
    };
    let open_gauge = |thread| metrics.connections_open(thread);
    let mut threads = match ConnectionThreads::start(count, open_gauge, serve_one) {
        Ok(threads) => threads,
        Err(error) => {
            tracing::error!(%error, "cannot start the connection threads");
            return;
        }
    };
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = shutdown.as_mut() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match stream.into_std() {
                    Ok(stream) => threads.hand(Handoff { stream, peer, watcher: graceful.watcher() }),
                    Err(error) => tracing::debug!(%peer, %error, "cannot hand a connection over"),
                },
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    tracing::info!("shutting down");
    let stopping = threads.stop();
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            streams = streams.count(),
            "in-flight requests did not finish in time; cutting the open streams, each charged for what it relayed"
        );
        if tokio::time::timeout(SETTLE_GRACE, streams.cut())
            .await
            .is_err()
        {
            tracing::error!(
                streams = streams.count(),
                "cut streams did not settle in time; stopping anyway"
            );
        }
    }
    stopping.abort().await;
}

/// How every client connection is served: HTTP/1 connections must send a request's headers
/// within `header_timeout` (idle keep-alive included), and idle HTTP/2 connections are pinged,
/// so neither a slow client nor a vanished one holds a connection open.
fn connection_builder(header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT);
    builder
}

/// Serves one connection on the current (connection) thread until it closes.
async fn serve_connection(
    state: Arc<AppState>,
    builder: auto::Builder<TokioExecutor>,
    stream: TcpStream,
    peer: SocketAddr,
    watcher: Watcher,
) {
    // A stream is written event by event: with Nagle's algorithm on, each small write after
    // the first waits for the client's delayed ACK (~40 ms).
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
    }
    let service = service_fn(move |request| respond(Arc::clone(&state), request, peer));
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    finish_connection(watcher.watch(connection.into_owned()), peer).await;
}

async fn finish_connection<E: std::fmt::Display>(
    connection: impl Future<Output = Result<(), E>>,
    peer: SocketAddr,
) {
    if let Err(error) = connection.await {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// Resolves when the process receives SIGINT or SIGTERM. The handlers are installed when this
/// is called (inside a runtime), not when the future is first polled, so a signal that arrives
/// while the server starts is not lost.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = terminate.recv() => tracing::info!("received SIGTERM"),
                _ = interrupt.recv() => tracing::info!("received SIGINT"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

async fn respond(
    state: Arc<AppState>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<ResponseBody>, Infallible> {
    Ok(dispatch(state, request, peer).await)
}

/// Maps a request to its handler: the one routing table of the server. Handlers get the
/// shared state by `Arc`, so one that streams can keep it beyond the call; `peer` is the
/// connection's remote address. The forwarding endpoints answer under `/v1/…` and
/// `/api/v1/…` alike, and they and the model endpoints answer browsers of any origin
/// ([`cors`]).
pub async fn dispatch(
    state: Arc<AppState>,
    mut request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ResponseBody> {
    let body_read = body::BodyRead::track(&mut request);
    let path = request.uri().path();
    let api_path = path.strip_prefix("/api").unwrap_or(path);
    let endpoint = match api_path {
        "/v1/chat/completions" => Some((EndpointKind::ChatCompletions, Operation::Generate)),
        "/v1/responses" => Some((EndpointKind::Responses, Operation::Generate)),
        "/v1/embeddings" => Some((EndpointKind::Embeddings, Operation::Generate)),
        "/v1/messages" => Some((EndpointKind::Messages, Operation::Generate)),
        "/v1/messages/count_tokens" => Some((EndpointKind::Messages, Operation::CountTokens)),
        _ => None,
    };
    let stored_response = api_path
        .strip_prefix("/v1/responses/")
        .filter(|rest| !rest.is_empty() && endpoint.is_none())
        .map(str::to_owned);
    let api = endpoint.is_some()
        || stored_response.is_some()
        || api_path == "/v1/models"
        || api_path.starts_with("/v1/models/");
    if api && request.method() == Method::OPTIONS {
        return with_request_id(cors::preflight(request.headers()));
    }
    let mut response = match (request.method(), path, api_path, endpoint) {
        (&Method::GET | &Method::HEAD, "/healthz", _, _) => healthz(&state).await,
        (_, "/healthz", _, _) => method_not_allowed(request.method(), "GET, HEAD"),
        (&Method::GET, "/metrics", _, _) => metrics_response(&state, &request),
        (_, "/metrics", _, _) => method_not_allowed(request.method(), "GET"),
        (&Method::POST, _, _, Some((endpoint, operation))) => {
            gateway::handle(state, request, peer, endpoint, operation).await
        }
        (method, _, _, Some((endpoint, _))) => with_allow(
            GatewayError::MethodNotAllowed(method.to_string())
                .into_response(gateway::dialect_of(endpoint), &new_request_id()),
            "POST, OPTIONS",
        ),
        (&Method::GET | &Method::DELETE, _, _, None) if stored_response.is_some() => {
            let rest = stored_response.unwrap_or_default();
            gateway::stored::handle(state, request, peer, &rest).await
        }
        (_, _, _, None) if stored_response.is_some() => {
            method_not_allowed(request.method(), "GET, DELETE, OPTIONS")
        }
        (&Method::GET, _, "/v1/models", _) => gateway::models(state, request, peer, None).await,
        (_, _, "/v1/models", _) => method_not_allowed(request.method(), "GET, OPTIONS"),
        (&Method::GET, _, models_path, _) if models_path.starts_with("/v1/models/") => {
            // The rest of the path, decoded: a model's name may hold `/` (`openai/gpt-4o`).
            let id = percent_encoding::percent_decode_str(&models_path["/v1/models/".len()..])
                .decode_utf8_lossy()
                .into_owned();
            gateway::models(state, request, peer, Some(id)).await
        }
        (_, _, models_path, _) if models_path.starts_with("/v1/models/") => {
            method_not_allowed(request.method(), "GET, OPTIONS")
        }
        (_, path, _, _) if dashboard::serves(path) => dashboard::handle(state, request, peer).await,
        (_, path, _, _) => not_found(path),
    };
    if api {
        cors::allow(&mut response);
    }
    let mut response = with_request_id(response);
    if body_read.is_some_and(|flag| flag.needs_close()) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// `response` with an `x-request-id`: what the gateway answers carries its request's id
/// already, the rest get one here.
fn with_request_id(mut response: Response<ResponseBody>) -> Response<ResponseBody> {
    if !response.headers().contains_key(REQUEST_ID_HEADER) {
        set_request_id(&mut response, &new_request_id(), Dialect::OpenAi);
    }
    response
}

/// `GET /healthz`: 200 with the schema version when the database answers, 503 otherwise.
async fn healthz(state: &AppState) -> Response<ResponseBody> {
    match state.db.read(schema::version).await {
        Ok(version) => json_response(
            StatusCode::OK,
            &json!({"status": "ok", "schema_version": version, "database": "ok"}),
        ),
        Err(error) => {
            tracing::warn!(%error, "health check: the database does not answer");
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "unavailable", "schema_version": null, "database": "unavailable"}),
            )
        }
    }
}

/// `GET /metrics`: the Prometheus exposition; with `MONOIZE_METRICS_TOKEN` set, only for a
/// request that carries it as `Authorization: Bearer …` (a scrape job's `authorization`).
fn metrics_response(state: &AppState, request: &Request<Incoming>) -> Response<ResponseBody> {
    if let Some(token) = &state.config.metrics_token {
        let presented = gateway::auth::bearer_token(request.headers());
        if !presented.is_some_and(|presented| token.admits(presented)) {
            let mut response = error_response(
                StatusCode::UNAUTHORIZED,
                "/metrics needs the metrics token as `Authorization: Bearer <token>`",
                "authentication_error",
                "unauthorized",
            );
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    let body = Full::new(Bytes::from(state.metrics.render()))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    response
}

fn not_found(path: &str) -> Response<ResponseBody> {
    error_response(
        StatusCode::NOT_FOUND,
        &format!("no route for {path}"),
        "not_found_error",
        "not_found",
    )
}

/// A `405` for `method` in the OpenAI dialect, naming the methods `allowed` on its path.
fn method_not_allowed(method: &Method, allowed: &'static str) -> Response<ResponseBody> {
    with_allow(
        error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("method {method} is not allowed here"),
            "invalid_request_error",
            "method_not_allowed",
        ),
        allowed,
    )
}

/// A `405` with the `Allow` header it must carry (RFC 9110, 15.5.6): the methods its path
/// answers (every API path also answers a CORS preflight).
fn with_allow(
    mut response: Response<ResponseBody>,
    allowed: &'static str,
) -> Response<ResponseBody> {
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allowed));
    response
}

/// An OpenAI-shaped error: `{"error": {"message", "type", "param": null, "code"}}`.
pub fn error_response(
    status: StatusCode,
    message: &str,
    error_type: &str,
    code: &str,
) -> Response<ResponseBody> {
    json_response(
        status,
        &json!({"error": {"message": message, "type": error_type, "param": null, "code": code}}),
    )
}

/// An empty body.
pub fn empty_body() -> ResponseBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A JSON response with `status`.
pub fn json_response(status: StatusCode, value: &Value) -> Response<ResponseBody> {
    let body = Full::new(Bytes::from(value.to_string()))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::db::Database;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;

    async fn start() -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = AppState::start(Database::open_in_memory().unwrap(), Config::in_memory())
            .await
            .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, state, async move {
            let _ = stopped.await;
        }));
        (address, stop, server)
    }

    async fn get(address: SocketAddr, request: &str) -> (u16, Value) {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8(raw).unwrap();
        let status = text[9..12].parse().unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        (status, serde_json::from_str(body).unwrap())
    }

    #[tokio::test]
    async fn healthz_reports_ok_and_the_schema_version() {
        let (address, stop, server) = start().await;
        let (status, body) = get(
            address,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({"status": "ok", "schema_version": schema::LATEST_VERSION, "database": "ok"})
        );
        stop.send(()).unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn unknown_paths_are_openai_shaped_404s() {
        let (address, stop, server) = start().await;
        let (status, body) = get(
            address,
            "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, 404);
        assert_eq!(body["error"]["type"], "not_found_error");
        assert_eq!(body["error"]["code"], "not_found");
        assert_eq!(body["error"]["param"], Value::Null);
        assert!(body["error"]["message"].as_str().unwrap().contains("/nope"));
        let (status, _) = get(
            address,
            "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, 405);
        stop.send(()).unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_stops_accepting() {
        let (address, stop, server) = start().await;
        stop.send(()).unwrap();
        server.await.unwrap();
        assert!(TcpStream::connect(address).await.is_err());
    }
}
