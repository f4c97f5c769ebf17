//! The gateway end to end (DESIGN §5): the real server on 127.0.0.1 in-process, seeded through
//! the db repositories, forwarding to mock upstreams that misbehave on request.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use monoize::app::AppState;
use monoize::config::Config;
use monoize::db::routing::{self, ChannelInput, ModelInput, ProviderInput, ProviderType};
use monoize::db::{Database, api_keys, users};
use monoize::gateway::auth::hash_api_key;
use monoize_tests::mock_upstream::MockUpstream;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const KEY: &str = "sk-test-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(10);

struct Gateway {
    address: SocketAddr,
    mock: MockUpstream,
    client: Client<HttpConnector, Full<Bytes>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Providers as `(type, modes of its channels)`, in priority order, each serving `m` as `up-m`.
async fn start(
    providers: &[(ProviderType, &[&str])],
    configure: impl FnOnce(&mut api_keys::NewApiKey),
) -> Gateway {
    let mock = MockUpstream::start().await.unwrap();
    let db = Database::open_in_memory().unwrap();
    let mut new_user = users::NewUser::new("alice", "h", users::Role::User);
    new_user.balance_unlimited = true;
    let user = db
        .write(move |tx| users::insert(tx, &new_user))
        .await
        .unwrap();
    let mut key =
        api_keys::NewApiKey::new(&user.id, "k", api_keys::key_prefix(KEY), &hash_api_key(KEY));
    configure(&mut key);
    db.write(move |tx| api_keys::insert(tx, &key))
        .await
        .unwrap();
    for (index, (provider_type, modes)) in providers.iter().enumerate() {
        let input = ProviderInput {
            name: format!("p{index}"),
            provider_type: *provider_type,
            max_retries: -1,
            transforms_json: "[]".to_owned(),
            groups: Vec::new(),
            enabled: true,
            priority: Some(i64::try_from(index).unwrap()),
            models: vec![ModelInput {
                model_name: "m".to_owned(),
                redirect: Some("up-m".to_owned()),
                multiplier: "1".parse().unwrap(),
            }],
            channels: modes
                .iter()
                .enumerate()
                .map(|(c, mode)| ChannelInput {
                    id: None,
                    name: format!("p{index}-c{c}-{mode}"),
                    base_url: mock.base_url(mode),
                    api_key: Some(format!("sk-upstream-secret-{index}-{c}")),
                    weight: 1,
                    enabled: true,
                })
                .collect(),
        };
        db.write(move |tx| routing::create_provider(tx, &input))
            .await
            .unwrap();
    }
    let mut config = Config::in_memory();
    config.upstream_first_byte_timeout_ms = 1_000;
    config.http_body_max_bytes = 4096;
    let state = AppState::start(db, config).await.unwrap();
    state.reload_routing().await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(monoize::server::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    Gateway {
        address,
        mock,
        client: Client::builder(TokioExecutor::new()).build_http(),
        _stop: stop,
    }
}

impl Gateway {
    async fn send(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Response<Incoming> {
        let mut request = Request::builder()
            .method(if body.is_empty() { "GET" } else { "POST" })
            .uri(format!("http://{}{path}", self.address));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        tokio::time::timeout(WAIT, self.client.request(request))
            .await
            .expect("the gateway answers in time")
            .unwrap()
    }

    async fn json(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, Value, Response<()>) {
        let response = self.send(path, headers, body).await;
        let (parts, body) = response.into_parts();
        let bytes = tokio::time::timeout(WAIT, body.collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (
            parts.status.as_u16(),
            value,
            Response::from_parts(parts, ()),
        )
    }
}

const BEARER: (&str, &str) = ("authorization", "Bearer sk-test-0123456789abcdef");

#[tokio::test]
async fn chat_completion_reaches_upstream_with_the_channel_key_only() {
    let gateway = start(&[(ProviderType::ChatCompletion, &["ok"])], |_| {}).await;
    let (status, body, response) = gateway
        .json(
            "/v1/chat/completions",
            &[BEARER],
            r#"{"model":"m","messages":[],"extra":{"x":1},"max_multiplier":"5"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "up-m");
    assert!(response.headers().contains_key("x-request-id"));
    let seen = gateway.mock.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/ok/v1/chat/completions");
    assert_eq!(
        seen[0].headers["authorization"],
        "Bearer sk-upstream-secret-0-0"
    );
    assert_eq!(seen[0].body["extra"], json!({"x": 1}));
    assert!(seen[0].body.get("max_multiplier").is_none());
    let all_headers = format!("{:?}", seen[0].headers);
    assert!(!all_headers.contains(KEY));
}

#[tokio::test]
async fn other_endpoints_and_the_api_prefix_are_served() {
    let gateway = start(
        &[
            (ProviderType::Responses, &["ok"]),
            (ProviderType::Messages, &["ok"]),
        ],
        |_| {},
    )
    .await;
    let (status, _, _) = gateway
        .json(
            "/api/v1/embeddings",
            &[BEARER],
            r#"{"model":"m","input":"x"}"#,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _, _) = gateway
        .json("/v1/responses", &[BEARER], r#"{"model":"m","input":"x"}"#)
        .await;
    assert_eq!(status, 200);
    let (status, body, _) = gateway
        .json(
            "/v1/messages",
            &[("x-api-key", KEY)],
            r#"{"model":"m","max_tokens":5,"messages":[]}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let messages = gateway
        .mock
        .seen()
        .into_iter()
        .find(|seen| seen.path.ends_with("/v1/messages"))
        .unwrap();
    assert_eq!(messages.headers["x-api-key"], "sk-upstream-secret-1-0");
    assert_eq!(messages.headers["anthropic-version"], "2023-06-01");
}

#[tokio::test]
async fn bad_keys_are_one_uniform_401_in_the_clients_dialect() {
    let gateway = start(&[(ProviderType::ChatCompletion, &["ok"])], |_| {}).await;
    for headers in [
        vec![],
        vec![("authorization", "Bearer sk-test-0123456789abcdeX")],
        vec![("x-api-key", "sk-nope")],
    ] {
        let (status, body, response) = gateway
            .json("/v1/chat/completions", &headers, r#"{"model":"m"}"#)
            .await;
        assert_eq!(status, 401);
        assert_eq!(body["error"]["type"], "authentication_error");
        assert!(response.headers().contains_key("x-request-id"));
    }
    let (status, body, _) = gateway.json("/v1/messages", &[], r#"{"model":"m"}"#).await;
    assert_eq!(status, 401);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert!(gateway.mock.seen().is_empty());
}

#[tokio::test]
async fn fail_forward_skips_5xx_429_401_and_timeouts() {
    let gateway = start(
        &[
            (ProviderType::ChatCompletion, &["500"]),
            (ProviderType::ChatCompletion, &["429"]),
            (ProviderType::ChatCompletion, &["401"]),
            (ProviderType::ChatCompletion, &["slow"]),
            (ProviderType::ChatCompletion, &["ok"]),
        ],
        |_| {},
    )
    .await;
    let (status, body, _) = gateway
        .json("/v1/chat/completions", &[BEARER], r#"{"model":"m"}"#)
        .await;
    assert_eq!(status, 200, "{body}");
    let paths: Vec<String> = gateway
        .mock
        .seen()
        .into_iter()
        .map(|seen| seen.path)
        .collect();
    assert_eq!(paths.len(), 5, "{paths:?}");
    assert_eq!(paths.last().unwrap(), "/ok/v1/chat/completions");
}

#[tokio::test]
async fn nothing_left_is_a_502_without_upstream_text_and_400_passes_through() {
    let gateway = start(&[(ProviderType::ChatCompletion, &["401", "500"])], |_| {}).await;
    let (status, body, _) = gateway
        .json("/v1/chat/completions", &[BEARER], r#"{"model":"m"}"#)
        .await;
    assert_eq!(status, 502);
    assert_eq!(body["error"]["code"], "upstream_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`m`") && message.contains('2'),
        "{message}"
    );
    assert!(!body.to_string().contains("secret"));
    let rejecting = start(
        &[
            (ProviderType::ChatCompletion, &["400"]),
            (ProviderType::ChatCompletion, &["ok"]),
        ],
        |_| {},
    )
    .await;
    let (status, body, _) = rejecting
        .json("/v1/chat/completions", &[BEARER], r#"{"model":"m"}"#)
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["message"], "your request is bad");
}

#[tokio::test]
async fn streams_arrive_incrementally_without_the_unasked_usage_chunk() {
    let gateway = start(&[(ProviderType::ChatCompletion, &["ok"])], |_| {}).await;
    let response = gateway
        .send(
            "/v1/chat/completions",
            &[BEARER],
            r#"{"model":"m","stream":true}"#,
        )
        .await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = tokio::time::timeout(WAIT, body.frame()).await.unwrap() {
        if let Ok(data) = frame.unwrap().into_data() {
            frames.push(String::from_utf8(data.to_vec()).unwrap());
        }
    }
    assert!(frames.len() >= 3, "one frame per event: {frames:?}");
    let text = frames.concat();
    assert!(text.contains("one") && text.contains("[DONE]"));
    assert!(!text.contains("usage"), "{text}");
    let seen = gateway.mock.seen();
    assert_eq!(seen[0].body["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn models_list_and_key_policy() {
    let gateway = start(&[(ProviderType::ChatCompletion, &["ok"])], |key| {
        key.max_multiplier = Some("0.5".parse().unwrap());
    })
    .await;
    let (status, body, _) = gateway.json("/v1/models", &[BEARER], "").await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["id"], "m");
    let (status, _, _) = gateway
        .json("/v1/chat/completions", &[BEARER], r#"{"model":"m"}"#)
        .await;
    assert_ne!(status, 200, "the ceiling excludes the only provider");
    assert!(gateway.mock.seen().is_empty());

    let limited = start(&[(ProviderType::ChatCompletion, &["ok"])], |key| {
        key.model_limits_enabled = true;
        key.model_limits = vec!["other".to_owned()];
    })
    .await;
    let (status, body, _) = limited
        .json("/v1/chat/completions", &[BEARER], r#"{"model":"m"}"#)
        .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "model_not_allowed");

    let fenced = start(&[(ProviderType::ChatCompletion, &["ok"])], |key| {
        key.ip_whitelist = vec!["10.0.0.0/8".to_owned()];
    })
    .await;
    let (status, _, _) = fenced
        .json("/v1/chat/completions", &[BEARER], r#"{"model":"m"}"#)
        .await;
    assert_eq!(status, 403);
    let (status, _, _) = fenced
        .json(
            "/v1/chat/completions",
            &[BEARER],
            &format!(r#"{{"model":"m","pad":"{}"}}"#, "x".repeat(5000)),
        )
        .await;
    assert_eq!(status, 413);
}
