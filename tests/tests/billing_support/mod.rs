//! What the billing end-to-end tests share: a database seeded through the db repositories
//! (users with balances and keys, priced providers), the real server on 127.0.0.1 in-process,
//! and a client that reads responses frame by frame.

#![allow(dead_code, reason = "each test binary uses a part of the helpers")]

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
use monoize::billing::Billing;
use monoize::config::Config;
use monoize::db::ledger::{self, Adjustment, LedgerRow};
use monoize::db::registry::{self, ModelMetadataRow};
use monoize::db::routing::{self, ChannelInput, ModelInput, ProviderInput, ProviderType};
use monoize::db::{Database, api_keys, users};
use monoize::gateway::auth::hash_api_key;
use monoize::money::NanoUsd;
use serde_json::Value;
use tokio::net::TcpListener;

/// The longest any single wait of these tests lasts.
pub const WAIT: Duration = Duration::from_secs(20);

/// The logical model every provider serves, and the upstream model it is served as (the one
/// priced).
pub const MODEL: &str = "m";
/// See [`MODEL`].
pub const UPSTREAM_MODEL: &str = "up-m";

/// Creates a user with `balance` (through a ledger adjustment, as an admin would) and an API
/// key `key` for them; answers the user's id.
pub async fn add_user(
    db: &Database,
    name: &str,
    balance: i64,
    unlimited: bool,
    key: &str,
) -> String {
    let mut new = users::NewUser::new(name, "hash", users::Role::User);
    new.balance_unlimited = unlimited;
    let key = key.to_owned();
    db.write(move |tx| {
        let user = users::insert(tx, &new)?;
        if balance != 0 {
            ledger::adjust(tx, &user.id, Adjustment::Set(NanoUsd(balance)), "{}")?;
        }
        let new_key = api_keys::NewApiKey::new(
            &user.id,
            "k",
            api_keys::key_prefix(&key),
            &hash_api_key(&key),
        );
        api_keys::insert(tx, &new_key)?;
        Ok(user.id)
    })
    .await
    .unwrap()
}

/// A provider of `provider_type` at `priority` serving [`MODEL`] as [`UPSTREAM_MODEL`] at
/// multiplier 1 through one channel at `base_url`.
pub async fn add_provider(
    db: &Database,
    provider_type: ProviderType,
    priority: i64,
    base_url: &str,
) {
    let input = ProviderInput {
        name: format!("p{priority}"),
        provider_type,
        max_retries: -1,
        transforms_json: "[]".to_owned(),
        groups: Vec::new(),
        enabled: true,
        priority: Some(priority),
        models: vec![ModelInput {
            model_name: MODEL.to_owned(),
            redirect: Some(UPSTREAM_MODEL.to_owned()),
            multiplier: "1".parse().unwrap(),
        }],
        channels: vec![ChannelInput {
            id: None,
            name: format!("p{priority}-c0"),
            base_url: base_url.to_owned(),
            api_key: Some(format!("sk-upstream-secret-{priority}")),
            weight: 1,
            enabled: true,
        }],
    };
    db.write(move |tx| routing::create_provider(tx, &input))
        .await
        .unwrap();
}

/// Prices [`UPSTREAM_MODEL`] at `input` and `output` nano-USD per token.
pub async fn price(db: &Database, input: u64, output: u64) {
    let row = ModelMetadataRow {
        model_id: UPSTREAM_MODEL.to_owned(),
        input_cost_per_token_nano: Some(input),
        output_cost_per_token_nano: Some(output),
        ..ModelMetadataRow::default()
    };
    db.write(move |tx| registry::upsert_metadata(tx, &row))
        .await
        .unwrap();
}

/// The server running on 127.0.0.1; it stops when dropped.
pub struct Server {
    /// Where it listens.
    pub address: SocketAddr,
    /// Its billing phases (the same plugin and store the gateway settles through).
    pub billing: Billing,
    client: Client<HttpConnector, Full<Bytes>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts the server over `db` with the built-in plugins.
pub async fn serve(db: Database) -> Server {
    let mut config = Config::in_memory();
    config.upstream_first_byte_timeout_ms = 5_000;
    config.upstream_idle_timeout_ms = 5_000;
    // The production bound counts no time spent waiting on the database; a shared test
    // machine can still be slow to run the plugin itself.
    config.plugin_timeout_ms = 5_000;
    let state = AppState::start(db, config).await.unwrap();
    state.reload_routing().await.unwrap();
    let billing = state.billing.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(monoize::server::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    Server {
        address,
        billing,
        client: client(),
        _stop: stop,
    }
}

/// A plain HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `body` to `path` of `address` with the API key `key` (as a bearer token, or as
/// `x-api-key` on `/v1/messages`), answering the response head.
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    address: SocketAddr,
    path: &str,
    key: &str,
    body: &str,
) -> Result<Response<Incoming>, String> {
    let mut request = Request::builder()
        .method("POST")
        .uri(format!("http://{address}{path}"))
        .header("content-type", "application/json");
    request = if path.ends_with("/messages") {
        request.header("x-api-key", key)
    } else {
        request.header("authorization", format!("Bearer {key}"))
    };
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    tokio::time::timeout(WAIT, client.request(request))
        .await
        .expect("the gateway answers in time")
        .map_err(|error| format!("{error:?}"))
}

impl Server {
    /// Sends `body` to `path` with `key`; answers the response head.
    pub async fn send(&self, path: &str, key: &str, body: &str) -> Response<Incoming> {
        send(&self.client, self.address, path, key, body)
            .await
            .unwrap()
    }

    /// Sends `body` to `path` with `key` and reads the whole answer: status, JSON body (a
    /// string when not JSON) and the `x-request-id` header.
    pub async fn json(&self, path: &str, key: &str, body: &str) -> (u16, Value, String) {
        let response = self.send(path, key, body).await;
        let status = response.status().as_u16();
        let request_id = request_id(&response);
        let bytes = tokio::time::timeout(WAIT, response.into_body().collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value, request_id)
    }
}

/// The response's `x-request-id`.
pub fn request_id<B>(response: &Response<B>) -> String {
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// How reading a body to its end went.
#[derive(Debug)]
pub struct Read {
    /// The text received.
    pub text: String,
    /// Whether the body ended cleanly (not cut by an error).
    pub complete: bool,
}

/// Reads `body` to its end (or its error), every frame within [`WAIT`].
pub async fn read_all(body: &mut Incoming, mut text: String) -> Read {
    loop {
        match tokio::time::timeout(WAIT, body.frame()).await {
            Err(_) => panic!("the body stalled; so far: {text}"),
            Ok(None) => {
                return Read {
                    text,
                    complete: true,
                };
            }
            Ok(Some(Err(_))) => {
                return Read {
                    text,
                    complete: false,
                };
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    text.push_str(&String::from_utf8_lossy(&data));
                }
            }
        }
    }
}

/// A user's balance.
pub async fn balance(db: &Database, user_id: &str) -> NanoUsd {
    let id = user_id.to_owned();
    db.read(move |c| Ok(users::get(c, &id)?.unwrap().balance_nano_usd))
        .await
        .unwrap()
}

/// The sum of a user's ledger deltas.
pub async fn ledger_sum(db: &Database, user_id: &str) -> NanoUsd {
    let id = user_id.to_owned();
    db.read(move |c| ledger::sum_for_user(c, &id))
        .await
        .unwrap()
}

/// A user's ledger rows, newest first.
pub async fn ledger_rows(db: &Database, user_id: &str) -> Vec<LedgerRow> {
    let id = user_id.to_owned();
    db.read(move |c| ledger::list(c, Some(&id), 1000, None))
        .await
        .unwrap()
}

/// The ledger row of a request, if it was charged.
pub async fn charge_of(db: &Database, request_id: &str) -> Option<LedgerRow> {
    let id = request_id.to_owned();
    db.read(move |c| ledger::by_request_id(c, &id))
        .await
        .unwrap()
}

/// A ledger row's meta as JSON.
pub fn meta(row: &LedgerRow) -> Value {
    serde_json::from_str(&row.meta_json).unwrap()
}
