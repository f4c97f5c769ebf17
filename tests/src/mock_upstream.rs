//! A mock upstream LLM API on 127.0.0.1 that misbehaves on request. Its behaviour is chosen by
//! the first path segment (a channel's `base_url` of `http://127.0.0.1:port/<mode>`): `ok`,
//! `500`, `429` (with `retry-after: 1`), `401`, `400`, `slow` (answers after 5 s). A request
//! with `"stream": true` is answered as SSE in the endpoint's format, one event every 100 ms.
//! Every request is recorded with its headers and body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::header::HeaderMap;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// One request the mock saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Its path.
    pub path: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body as JSON (null when not JSON).
    pub body: Value,
}

/// A running mock upstream.
#[derive(Debug, Clone)]
pub struct MockUpstream {
    /// Where it listens.
    pub address: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

type Body = BoxBody<Bytes, Infallible>;

impl MockUpstream {
    /// Starts a mock on a free port; it runs until the test's runtime ends.
    pub async fn start() -> std::io::Result<MockUpstream> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let recorder = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorder = Arc::clone(&recorder);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        answer(Arc::clone(&recorder), request)
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(MockUpstream { address, seen })
    }

    /// The base URL of a channel in `mode`.
    pub fn base_url(&self, mode: &str) -> String {
        format!("http://{}/{mode}", self.address)
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

fn json_body(status: u16, value: &Value) -> Response<Body> {
    let mut response =
        Response::new(http_body_util::Full::new(Bytes::from(value.to_string())).boxed());
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn answer(
    seen: Arc<Mutex<Vec<Seen>>>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_owned();
    let headers = request.headers().clone();
    let bytes = request
        .into_body()
        .collect()
        .await
        .map(|body| body.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    seen.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(Seen {
            path: path.clone(),
            headers,
            body: body.clone(),
        });
    let mode = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("ok");
    let model = body["model"].as_str().unwrap_or("?").to_owned();
    Ok(match mode {
        "500" => json_body(500, &json!({"error": "boom"})),
        "401" => json_body(
            401,
            &json!({"error": {"message": "bad key sk-upstream-secret"}}),
        ),
        "400" => json_body(
            400,
            &json!({"error": {"message": "your request is bad", "type": "invalid_request_error"}}),
        ),
        "429" => {
            let mut response = json_body(429, &json!({"error": "slow down"}));
            response
                .headers_mut()
                .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
            response
        }
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            json_body(200, &json!({"late": true}))
        }
        _ if body["stream"] == Value::Bool(true) => stream(&path, &model),
        _ if path.ends_with("/v1/messages") => json_body(
            200,
            &json!({
            "type": "message", "model": model, "content": [{"type": "text", "text": "hi"}],
            "usage": {"input_tokens": 3, "output_tokens": 2}}),
        ),
        _ if path.ends_with("/v1/embeddings") => json_body(
            200,
            &json!({
            "object": "list", "model": model, "data": [{"embedding": [0.5]}],
            "usage": {"prompt_tokens": 2, "total_tokens": 2}}),
        ),
        _ if path.ends_with("/v1/responses") => json_body(
            200,
            &json!({
            "object": "response", "model": model,
            "usage": {"input_tokens": 3, "output_tokens": 2}}),
        ),
        _ => json_body(
            200,
            &json!({
            "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
        ),
    })
}

fn stream(path: &str, model: &str) -> Response<Body> {
    let events: Vec<String> = if path.ends_with("/v1/messages") {
        vec![
            format!(
                "event: message_start\ndata: {}\n\n",
                json!({"type": "message_start", "message": {"model": model, "usage": {"input_tokens": 3, "output_tokens": 1}}})
            ),
            format!(
                "event: content_block_delta\ndata: {}\n\n",
                json!({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "hi"}})
            ),
            format!(
                "event: message_delta\ndata: {}\n\n",
                json!({"type": "message_delta", "usage": {"output_tokens": 2}})
            ),
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_owned(),
        ]
    } else {
        vec![
            format!(
                "data: {}\n\n",
                json!({"model": model, "choices": [{"index": 0, "delta": {"content": "one"}}]})
            ),
            format!(
                "data: {}\n\n",
                json!({"model": model, "choices": [{"index": 0, "delta": {"content": "two"}}]})
            ),
            format!(
                "data: {}\n\n",
                json!({"model": model, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
            ),
            "data: [DONE]\n\n".to_owned(),
        ]
    };
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        for event in events {
            if sender.send(Bytes::from(event)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut response = Response::new(BodyExt::boxed(Events(receiver)));
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    response
}

/// A body fed by a channel.
struct Events(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|item| item.map(|bytes| Ok(Frame::data(bytes))))
    }
}
