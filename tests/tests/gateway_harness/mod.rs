//! The gateway under test: the real server on 127.0.0.1 in-process, over an in-memory
//! database seeded through the db repositories, forwarding to a [`MockUpstream`].

#![allow(
    dead_code,
    reason = "each test binary that includes the harness uses part of it"
)]

use std::net::SocketAddr;
use std::sync::Arc;
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
use monoize::gateway::last_used::FlushStats;
use monoize::routing::HealthRegistry;
use monoize_tests::mock_upstream::MockUpstream;
use serde_json::Value;
use tokio::net::TcpListener;

/// The key every harness seeds.
pub const KEY: &str = "sk-test-0123456789abcdef";
/// The longest any single step of a test waits.
pub const WAIT: Duration = Duration::from_secs(10);
/// `Authorization: Bearer` with [`KEY`].
pub const BEARER: (&str, &str) = ("authorization", "Bearer sk-test-0123456789abcdef");
/// `x-api-key` with [`KEY`].
pub const X_API_KEY: (&str, &str) = ("x-api-key", KEY);
/// The least chat completion request for the model every harness serves.
pub const CHAT: &str = r#"{"model":"m","messages":[]}"#;

/// What to start: providers in priority order, each serving `m` as `up-m` through channels
/// named by mock mode (or by a full `http://` or `https://` base URL), the key's policy and the
/// config.
pub struct Setup {
    providers: Vec<(ProviderType, Vec<String>)>,
    key: Box<dyn FnOnce(&mut api_keys::NewApiKey)>,
    config: Box<dyn FnOnce(&mut Config)>,
    balance_unlimited: bool,
}

impl Setup {
    /// Nothing yet: no provider, an unlimited user, the harness config.
    pub fn new() -> Setup {
        Setup {
            providers: Vec::new(),
            key: Box::new(|_| {}),
            config: Box::new(|_| {}),
            balance_unlimited: true,
        }
    }

    /// Adds a provider of `provider_type` whose channels are in `modes`.
    pub fn provider(mut self, provider_type: ProviderType, modes: &[&str]) -> Setup {
        let modes = modes.iter().map(|mode| (*mode).to_owned()).collect();
        self.providers.push((provider_type, modes));
        self
    }

    /// Sets the seeded key's policy.
    pub fn key(mut self, configure: impl FnOnce(&mut api_keys::NewApiKey) + 'static) -> Setup {
        self.key = Box::new(configure);
        self
    }

    /// Changes the config (after the harness's own settings).
    pub fn config(mut self, configure: impl FnOnce(&mut Config) + 'static) -> Setup {
        self.config = Box::new(configure);
        self
    }

    /// Gives the user a limited balance of zero (so billing answers `402`).
    pub fn limited_balance(mut self) -> Setup {
        self.balance_unlimited = false;
        self
    }

    /// Seeds the database and serves.
    pub async fn start(self) -> Gateway {
        let mock = MockUpstream::start().await.unwrap();
        let db = Database::open_in_memory().unwrap();
        let mut new_user = users::NewUser::new("alice", "h", users::Role::User);
        new_user.balance_unlimited = self.balance_unlimited;
        let user = db
            .write(move |tx| users::insert(tx, &new_user))
            .await
            .unwrap();
        let mut key =
            api_keys::NewApiKey::new(&user.id, "k", api_keys::key_prefix(KEY), &hash_api_key(KEY));
        (self.key)(&mut key);
        let key = db
            .write(move |tx| api_keys::insert(tx, &key))
            .await
            .unwrap();
        for (index, (provider_type, modes)) in self.providers.iter().enumerate() {
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
                        base_url: if mode.starts_with("http://") || mode.starts_with("https://") {
                            mode.clone()
                        } else {
                            mock.base_url(mode)
                        },
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
        (self.config)(&mut config);
        let state = AppState::start(db.clone(), config).await.unwrap();
        state.reload_routing().await.unwrap();
        let health = state.health.clone();
        let last_used = state.gateway.auth.last_used().stats();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(monoize::server::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Gateway {
            address,
            mock,
            db,
            user_id: user.id,
            key_id: key.id,
            health,
            last_used,
            client: Client::builder(TokioExecutor::new()).build_http(),
            stop: Some(stop),
            server: Some(server),
        }
    }
}

/// A base URL on 127.0.0.1 that refuses connections: its port is held bound, never listened
/// on, for as long as this lives, so no other test's server can take it meanwhile (a port
/// merely freed can be, and a request to it then reaches that server).
pub struct Refused {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    _held: tokio::net::TcpSocket,
}

/// A fresh [`Refused`] address.
pub fn refused_base_url() -> Refused {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let address = socket.local_addr().unwrap();
    Refused {
        base_url: format!("http://{address}"),
        _held: socket,
    }
}

/// Providers as `(type, modes of its channels)`, each serving `m`, with the key's policy.
pub async fn start(
    providers: &[(ProviderType, &[&str])],
    configure: impl FnOnce(&mut api_keys::NewApiKey) + 'static,
) -> Gateway {
    providers
        .iter()
        .fold(Setup::new(), |setup, (provider_type, modes)| {
            setup.provider(*provider_type, modes)
        })
        .key(configure)
        .start()
        .await
}

/// A running gateway and what the test needs to watch it.
pub struct Gateway {
    /// Where it listens.
    pub address: SocketAddr,
    /// The upstream behind it.
    pub mock: MockUpstream,
    /// Its database.
    pub db: Database,
    /// The seeded user.
    pub user_id: String,
    /// The seeded key's id.
    pub key_id: String,
    /// Its channel health.
    pub health: HealthRegistry,
    /// What its `last_used_at` batcher has written.
    pub last_used: Arc<FlushStats>,
    client: Client<HttpConnector, Full<Bytes>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// The base URL clients are given.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Starts a chat stream (with the bearer key) and waits for its first event: the body, the
    /// rest still to come.
    pub async fn open_stream(&self) -> Incoming {
        let response = self
            .send(
                "/v1/chat/completions",
                &[BEARER],
                r#"{"model":"m","stream":true}"#,
            )
            .await;
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let first = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("the stream's first event arrives");
        assert!(matches!(first, Some(Ok(_))), "{first:?}");
        body
    }

    /// Sends a request (GET when `body` is empty, else POST) and answers its head.
    pub async fn send(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response<Incoming> {
        let method = if body.is_empty() { "GET" } else { "POST" };
        self.send_as(method, path, headers, body).await
    }

    /// Sends a `method` request with `headers` and `body`.
    pub async fn send_as(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response<Incoming> {
        let mut request = Request::builder()
            .method(method)
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

    /// Sends a request that must be answered `200` and reads its whole body as text (a stream
    /// to its end).
    pub async fn text(&self, path: &str, headers: &[(&str, &str)], body: &str) -> String {
        let response = self.send(path, headers, body).await;
        assert_eq!(response.status(), 200, "{path}");
        let bytes = tokio::time::timeout(WAIT, response.into_body().collect())
            .await
            .expect("the body ends in time")
            .unwrap()
            .to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// Sends a request and reads its whole body: `(status, JSON or text, head)`.
    pub async fn json(
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

    /// How many upstream attempts ended with `outcome` (`connection_failed`, …), from
    /// `/metrics`.
    pub async fn attempts(&self, outcome: &str) -> f64 {
        let metrics = self.metrics().await;
        sample(
            &metrics,
            &format!("monoize_upstream_attempts_total{{outcome=\"{outcome}\"}}"),
        )
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        self.metrics_with(&[]).await
    }

    /// `GET /metrics` with `headers` (a token), as text; it must answer 200.
    pub async fn metrics_with(&self, headers: &[(&str, &str)]) -> String {
        let (status, body, response) = self.json("/metrics", headers, "").await;
        assert_eq!(status, 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        body.as_str().unwrap().to_owned()
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(WAIT, server)
                .await
                .expect("the server stops in time")
                .unwrap();
        }
    }
}

/// The value of the sample `name` (with its labels, as exposed) in `text`; 0 when absent.
pub fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            (series == name).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

/// Waits up to [`WAIT`] until `done` answers true; answers whether it did.
pub async fn eventually<F, Fut>(mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if done().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
