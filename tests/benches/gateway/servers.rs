//! The servers under test, each run in a child process of its own (see the bench's module
//! documentation): the mock upstream, the minimal pass-through proxy, and Monoize.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The logical model the bench asks for; priced, so every request is charged.
pub const MODEL: &str = "gpt-bench";

/// Usage the mock reports on every answer: 3 prompt and 2 completion tokens.
const JSON_ANSWER: &str = concat!(
    r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"#,
    r#""model":"gpt-bench","choices":[{"index":0,"message":{"role":"assistant","#,
    r#""content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"#,
    r#""usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#
);

/// Content chunks of a streamed answer, before its usage chunk and `[DONE]`.
const STREAM_CHUNKS: usize = 8;

fn stream_events() -> VecDeque<Bytes> {
    let mut events: VecDeque<Bytes> = (0..STREAM_CHUNKS)
        .map(|index| {
            Bytes::from(format!(
                "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\
                 \"model\":\"gpt-bench\",\"choices\":[{{\"index\":0,\"delta\":\
                 {{\"content\":\"token{index} \"}},\"finish_reason\":null}}]}}\n\n"
            ))
        })
        .collect();
    events.push_back(Bytes::from_static(
        b"data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\
          \"model\":\"gpt-bench\",\"choices\":[],\
          \"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
    ));
    events.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

/// A body of ready frames, one per SSE event: each is its own chunk on the wire unless the
/// server coalesces them.
struct Events(VecDeque<Bytes>);

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|event| Ok(Frame::data(event))))
    }
}

type MockBody = BoxBody<Bytes, Infallible>;

async fn mock_answer(request: Request<Incoming>) -> Result<Response<MockBody>, Infallible> {
    let body = request
        .into_body()
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let stream = body
        .windows(b"\"stream\":true".len())
        .any(|window| window == b"\"stream\":true");
    let (content_type, body) = if stream {
        ("text/event-stream", Events(stream_events()).boxed())
    } else {
        (
            "application/json",
            Full::new(Bytes::from_static(JSON_ANSWER.as_bytes())).boxed(),
        )
    };
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

/// Serves the mock upstream on `listener`: an OpenAI chat-completions answer at once, JSON or
/// (for `"stream":true`) SSE with a usage chunk, HTTP/1.1 keep-alive.
pub async fn mock(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(mock_answer))
                .await;
        });
    }
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

async fn proxy_answer(
    client: Client<HttpConnector, Incoming>,
    upstream: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |path| path.as_str());
    let Ok(uri) = format!("http://{upstream}{path}").parse::<Uri>() else {
        return Ok(bad_gateway());
    };
    parts.uri = uri;
    parts.headers.remove(HOST);
    match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => Ok(response.map(BodyExt::boxed)),
        Err(_) => Ok(bad_gateway()),
    }
}

fn bad_gateway() -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from_static(b"bad gateway"))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

/// Serves the baseline on `listener`: a minimal reverse proxy to `upstream`, HTTP/1.1 on both
/// sides, a pooled keep-alive upstream client, bodies streamed through both ways untouched.
pub async fn proxy(listener: TcpListener, upstream: SocketAddr) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector);
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let service =
                service_fn(move |request| proxy_answer(client.clone(), upstream, request));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
