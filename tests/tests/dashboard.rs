//! The dashboard end to end (DESIGN §3, §9, issue #6): the real server on 127.0.0.1 in-process
//! with the real embedded dashboard plugin, driven over HTTP as an operator would, forwarding
//! to a mock upstream. Every response body of a test is kept and scanned for secrets at its
//! end, and every method and path it called is checked against the served OpenAPI document.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::HeaderMap;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use monoize::app::AppState;
use monoize::config::Config;
use monoize::db::Database;
use monoize::gateway::auth::hash_api_key;
use monoize_tests::mock_upstream::MockUpstream;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(30);
const ADMIN_PASSWORD: &str = "admin-pass-123";
const BOB_PASSWORD: &str = "bob-pass-4567";
const CHANNEL_KEYS: [&str; 2] = ["sk-upstream-secret-alpha", "sk-upstream-secret-beta"];

/// One answer: status, headers and body (JSON, or the raw text as a JSON string).
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

struct Server {
    address: SocketAddr,
    mock: MockUpstream,
    client: Client<HttpConnector, Full<Bytes>>,
    /// Every response body seen, as text.
    bodies: Mutex<Vec<String>>,
    /// Every dashboard call made: method and path under `/api/dashboard`.
    calls: Mutex<Vec<(String, String)>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The server over an empty in-memory database, with `configure` applied to the config.
async fn start(configure: impl FnOnce(&mut Config)) -> Server {
    let mock = MockUpstream::start().await.unwrap();
    let mut config = Config::in_memory();
    // Many tests share 2 cores; the production bound (50 ms of wall clock) is proven apart.
    config.plugin_timeout_ms = 10_000;
    config.http_body_max_bytes = 64 * 1024;
    configure(&mut config);
    let state = AppState::start(Database::open_in_memory().unwrap(), config)
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(monoize::server::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    Server {
        address,
        mock,
        client: Client::builder(TokioExecutor::new()).build_http(),
        bodies: Mutex::default(),
        calls: Mutex::default(),
        _stop: stop,
    }
}

impl Server {
    /// Sends `method path` with `headers` and `body` (sent as JSON when not empty).
    async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.address));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body))).unwrap();
        let response = tokio::time::timeout(WAIT, self.client.request(request))
            .await
            .expect("the server answers in time")
            .unwrap();
        let (parts, body) = response.into_parts();
        let bytes = tokio::time::timeout(WAIT, body.collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        self.bodies.lock().unwrap().push(text.clone());
        Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    /// A dashboard call as `token` (or without a session), body as JSON.
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        self.calls.lock().unwrap().push((
            method.to_owned(),
            path.split('?').next().unwrap_or(path).to_owned(),
        ));
        let bearer = token.map(|token| format!("Bearer {token}"));
        let mut headers = vec![];
        if let Some(bearer) = &bearer {
            headers.push(("authorization", bearer.as_str()));
        }
        let bytes = match &body {
            Some(body) => {
                headers.push(("content-type", "application/json"));
                body.to_string().into_bytes()
            }
            None => Vec::new(),
        };
        self.raw(method, &format!("/api/dashboard{path}"), &headers, bytes)
            .await
    }

    /// Registers (or logs in) and answers the session token and the user.
    async fn session(&self, path: &str, username: &str, password: &str) -> (String, Value) {
        let answer = self
            .call(
                "POST",
                path,
                None,
                Some(json!({"username": username, "password": password})),
            )
            .await;
        assert!(
            answer.status == 200 || answer.status == 201,
            "{path}: {} {}",
            answer.status,
            answer.body
        );
        let token = answer.body["token"].as_str().unwrap().to_owned();
        (token, answer.body["user"].clone())
    }

    /// A chat completion for `model` with the API key `key`.
    async fn chat(&self, key: &str, model: &str) -> Answer {
        let bearer = format!("Bearer {key}");
        self.raw(
            "POST",
            "/v1/chat/completions",
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
            ],
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
                .to_string()
                .into_bytes(),
        )
        .await
    }

    /// Every body seen contains none of `secrets`, nor a channel key or a password hash.
    fn assert_no_secret_in_any_body(&self, secrets: &[String]) {
        let bodies = self.bodies.lock().unwrap();
        assert!(!bodies.is_empty());
        for body in bodies.iter() {
            for marker in ["sk-upstream-secret", "$argon2"] {
                assert!(!body.contains(marker), "`{marker}` in a response: {body}");
            }
            for secret in secrets {
                assert!(
                    !body.contains(secret.as_str()),
                    "a stored hash in a response: {body}"
                );
            }
        }
    }

    /// Every dashboard call made is an operation of the served OpenAPI document.
    async fn assert_calls_documented(&self) {
        let document = self.call("GET", "/openapi.json", None, None).await;
        assert_eq!(document.status, 200);
        let paths = document.body["paths"].as_object().unwrap().clone();
        let calls = self.calls.lock().unwrap().clone();
        for (method, path) in calls {
            let documented = paths.iter().any(|(template, operations)| {
                operations.get(method.to_ascii_lowercase()).is_some() && matches(template, &path)
            });
            assert!(documented, "{method} {path} is not in openapi.json");
        }
    }
}

/// Whether `path` is an instance of the OpenAPI `template` (`{x}` takes one segment, or the
/// rest of the path when it is the last).
fn matches(template: &str, path: &str) -> bool {
    let template: Vec<&str> = template.trim_matches('/').split('/').collect();
    let path: Vec<&str> = path.trim_matches('/').split('/').collect();
    let last_is_param = template.last().is_some_and(|last| last.starts_with('{'));
    if path.len() != template.len() && !(last_is_param && path.len() > template.len()) {
        return false;
    }
    template.iter().zip(&path).all(|(expected, segment)| {
        (expected.starts_with('{') && !segment.is_empty()) || expected == segment
    })
}

/// The story's fixtures: the super_admin, the user `bob` with a balance, a provider whose
/// two channels reach the mock, a priced model, and a key of bob's.
struct Story {
    admin: String,
    admin_key_id: String,
    bob: String,
    bob_id: String,
    bob_key: String,
    bob_key_id: String,
    provider_id: String,
}

async fn operator_story(server: &Server) -> Story {
    // The first registration of an empty database is the super_admin.
    let (admin, admin_user) = server
        .session("/auth/register", "root_admin", ADMIN_PASSWORD)
        .await;
    assert_eq!(admin_user["role"], "super_admin");
    // A second self-registration is refused.
    let second = server
        .call(
            "POST",
            "/auth/register",
            None,
            Some(json!({"username": "intruder", "password": "intruder-pass"})),
        )
        .await;
    assert_eq!(second.status, 403, "{}", second.body);

    // The admin creates bob and tops his balance up: one admin_adjustment row.
    let created = server
        .call(
            "POST",
            "/users",
            Some(&admin),
            Some(json!({"username": "bob", "password": BOB_PASSWORD, "role": "user"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let bob_id = created.body["id"].as_str().unwrap().to_owned();
    let topped = server
        .call(
            "PUT",
            &format!("/users/{bob_id}"),
            Some(&admin),
            Some(json!({"balance_usd": "2.5"})),
        )
        .await;
    assert_eq!(topped.status, 200, "{}", topped.body);
    assert_eq!(topped.body["balance_nano_usd"], "2500000000");
    let ledger = server
        .call(
            "GET",
            &format!("/ledger?user_id={bob_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(ledger.status, 200, "{}", ledger.body);
    let rows = ledger.body.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{}", ledger.body);
    assert_eq!(rows[0]["kind"], "admin_adjustment");

    // A provider with two channels on the mock and two models, in one request.
    let provider = server
        .call(
            "POST",
            "/providers",
            Some(&admin),
            Some(json!({
                "name": "mock-openai",
                "provider_type": "chat_completion",
                "models": {"gpt-story": {"multiplier": "1.5"}, "gpt-other": {"redirect": "up-other", "multiplier": 1}},
                "channels": [
                    {"name": "alpha", "base_url": server.mock.base_url("ok"), "api_key": CHANNEL_KEYS[0]},
                    {"name": "beta", "base_url": server.mock.base_url("ok"), "api_key": CHANNEL_KEYS[1], "weight": 2},
                ],
            })),
        )
        .await;
    assert_eq!(provider.status, 201, "{}", provider.body);
    let provider_id = provider.body["id"].as_str().unwrap().to_owned();
    assert_eq!(provider.body["channels"].as_array().unwrap().len(), 2);
    let listed = server.call("GET", "/providers", Some(&admin), None).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
    // Prices: 1000 nano-USD per input token, 2000 per output token.
    let priced = server
        .call(
            "PUT",
            "/model-metadata/gpt-story",
            Some(&admin),
            Some(json!({"input_cost_per_token_nano": "1000", "output_cost_per_token_nano": 2000})),
        )
        .await;
    assert!(
        priced.status == 200 || priced.status == 201,
        "{}",
        priced.body
    );

    // The admin's own key, for the wrong-side checks.
    let admin_key = server
        .call(
            "POST",
            "/tokens",
            Some(&admin),
            Some(json!({"name": "admin-key"})),
        )
        .await;
    assert_eq!(admin_key.status, 201, "{}", admin_key.body);
    let admin_key_id = admin_key.body["id"].as_str().unwrap().to_owned();

    // Bob logs in and makes a key; its full text is answered once.
    let (bob, bob_user) = server.session("/auth/login", "bob", BOB_PASSWORD).await;
    assert_eq!(bob_user["role"], "user");
    let key = server
        .call(
            "POST",
            "/tokens",
            Some(&bob),
            Some(json!({"name": "laptop"})),
        )
        .await;
    assert_eq!(key.status, 201, "{}", key.body);
    let bob_key = key.body["key"].as_str().unwrap().to_owned();
    assert!(bob_key.starts_with("sk-"));
    let bob_key_id = key.body["id"].as_str().unwrap().to_owned();
    let read_back = server
        .call("GET", &format!("/tokens/{bob_key_id}"), Some(&bob), None)
        .await;
    assert_eq!(read_back.status, 200);
    assert!(read_back.body.get("key").is_none(), "{}", read_back.body);
    Story {
        admin,
        admin_key_id,
        bob,
        bob_id,
        bob_key,
        bob_key_id,
        provider_id,
    }
}

#[tokio::test]
async fn the_operator_story_ends_in_a_charge_on_the_users_ledger() {
    let server = start(|_| {}).await;
    let story = operator_story(&server).await;

    // The provider is routable at once: the dashboard's write replaced the snapshot.
    let served = server.chat(&story.bob_key, "gpt-story").await;
    assert_eq!(served.status, 200, "{}", served.body);
    let seen = server.mock.seen();
    assert_eq!(seen.len(), 1);
    let upstream_key = seen[0].headers["authorization"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        CHANNEL_KEYS
            .iter()
            .any(|key| upstream_key == format!("Bearer {key}")),
        "{upstream_key}"
    );

    // The mock reports 3 prompt and 2 completion tokens: (3×1000 + 2×2000) × 1.5 = 10500.
    let ledger = server.call("GET", "/ledger", Some(&story.bob), None).await;
    assert_eq!(ledger.status, 200, "{}", ledger.body);
    let rows = ledger.body.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{}", ledger.body);
    assert_eq!(rows[0]["kind"], "request_charge");
    assert_eq!(rows[0]["delta_nano_usd"], "-10500");
    assert_eq!(rows[0]["balance_after_nano_usd"], "2499989500");
    // The charge names the key that made the request.
    assert_eq!(
        rows[0]["meta"]["key_id"], story.bob_key_id,
        "{}",
        ledger.body
    );
    assert_eq!(rows[1]["kind"], "admin_adjustment");
    let me = server.call("GET", "/auth/me", Some(&story.bob), None).await;
    assert_eq!(me.body["balance_nano_usd"], "2499989500");

    // The session cookie works as well as the bearer token.
    let cookie = format!("monoize_session={}", story.bob);
    let by_cookie = server
        .raw(
            "GET",
            "/api/dashboard/auth/me",
            &[("cookie", &cookie)],
            Vec::new(),
        )
        .await;
    assert_eq!(by_cookie.status, 200, "{}", by_cookie.body);
    assert_eq!(by_cookie.body["username"], "bob");

    let hashes = [
        hash_api_key(&story.bob_key),
        hash_api_key(&story.bob),
        hash_api_key(&story.admin),
    ];
    server.assert_no_secret_in_any_body(&hashes);
    server.assert_calls_documented().await;
}

#[tokio::test]
async fn a_user_is_refused_every_admin_power_and_every_other_users_key() {
    let server = start(|_| {}).await;
    let story = operator_story(&server).await;
    let bob = Some(story.bob.as_str());
    let provider = format!("/providers/{}", story.provider_id);
    let bob_user = format!("/users/{}", story.bob_id);
    let refusals: Vec<(&str, &str, Option<Value>, u16)> = vec![
        ("GET", "/users", None, 403),
        (
            "POST",
            "/users",
            Some(json!({"username": "eve_2", "password": "eve-pass-123"})),
            403,
        ),
        ("GET", &bob_user, None, 403),
        ("PUT", &bob_user, Some(json!({"balance_usd": "1000"})), 403),
        ("PUT", &bob_user, Some(json!({"role": "admin"})), 403),
        ("GET", "/providers", None, 403),
        ("GET", &provider, None, 403),
        (
            "POST",
            "/providers",
            Some(json!({"name": "x", "provider_type": "grok", "models": {}, "channels": []})),
            403,
        ),
        ("PUT", &provider, Some(json!({"enabled": false})), 403),
        ("DELETE", &provider, None, 403),
        (
            "POST",
            "/providers/reorder",
            Some(json!({"provider_ids": [story.provider_id]})),
            403,
        ),
        (
            "PUT",
            "/model-metadata/gpt-story",
            Some(json!({"input_cost_per_token_nano": "0"})),
            403,
        ),
        ("GET", "/models", None, 403),
        ("GET", "/legacy/providers", None, 403),
    ];
    for (method, path, body, expected) in refusals {
        let answer = server.call(method, path, bob, body).await;
        assert_eq!(answer.status, expected, "{method} {path}: {}", answer.body);
    }
    let others_ledger = server
        .call("GET", "/ledger?user_id=nobody-else", bob, None)
        .await;
    assert_eq!(others_ledger.status, 403, "{}", others_ledger.body);

    // Another user's key is not there for bob: not readable, not changeable, not deletable.
    let admin_key = format!("/tokens/{}", story.admin_key_id);
    for (method, body) in [
        ("GET", None),
        ("PUT", Some(json!({"name": "mine"}))),
        ("DELETE", None),
    ] {
        let answer = server.call(method, &admin_key, bob, body).await;
        assert_eq!(answer.status, 404, "{method} {admin_key}: {}", answer.body);
    }
    let batch = server
        .call(
            "POST",
            "/tokens/batch-delete",
            bob,
            Some(json!({"ids": [story.admin_key_id]})),
        )
        .await;
    assert_eq!(batch.body["deleted"], 0, "{}", batch.body);
    let listed = server.call("GET", "/tokens", bob, None).await;
    let ids: Vec<&str> = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [story.bob_key_id.as_str()]);
    // The admin's key still exists and the provider is untouched.
    let still = server
        .call("GET", &admin_key, Some(&story.admin), None)
        .await;
    assert_eq!(still.status, 200);
    let provider_now = server
        .call("GET", &provider, Some(&story.admin), None)
        .await;
    assert_eq!(provider_now.body["enabled"], true, "{}", provider_now.body);
    let balance = server
        .call("GET", &bob_user, Some(&story.admin), None)
        .await;
    assert_eq!(balance.body["balance_nano_usd"], "2500000000");

    // Without a session, everything but register, login and the document is a 401.
    for (method, path) in [("GET", "/auth/me"), ("GET", "/users"), ("GET", "/tokens")] {
        let answer = server.call(method, path, None, None).await;
        assert_eq!(answer.status, 401, "{method} {path}");
        let answer = server.call(method, path, Some("not-a-session"), None).await;
        assert_eq!(answer.status, 401, "{method} {path} with a made-up token");
    }

    server.assert_no_secret_in_any_body(&[hash_api_key(&story.bob_key)]);
    server.assert_calls_documented().await;
}

#[tokio::test]
async fn logout_kills_the_session_and_writes_take_effect_at_the_gateway_at_once() {
    let server = start(|_| {}).await;
    let story = operator_story(&server).await;
    assert_eq!(server.chat(&story.bob_key, "gpt-story").await.status, 200);

    // Disabling the key refuses it on the very next request (the key cache was emptied).
    let disabled = server
        .call(
            "PUT",
            &format!("/tokens/{}", story.bob_key_id),
            Some(&story.bob),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(disabled.status, 200, "{}", disabled.body);
    assert_eq!(server.chat(&story.bob_key, "gpt-story").await.status, 401);
    let enabled = server
        .call(
            "PUT",
            &format!("/tokens/{}", story.bob_key_id),
            Some(&story.bob),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(enabled.status, 200);
    assert_eq!(server.chat(&story.bob_key, "gpt-story").await.status, 200);

    // Removing the model from the provider unroutes it at once (the snapshot was replaced).
    let updated = server
        .call(
            "PUT",
            &format!("/providers/{}", story.provider_id),
            Some(&story.admin),
            Some(json!({"models": {"gpt-other": {"multiplier": "1"}}})),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_ne!(server.chat(&story.bob_key, "gpt-story").await.status, 200);
    assert_eq!(server.chat(&story.bob_key, "gpt-other").await.status, 200);
    // The channels kept their stored keys through a PUT that never sent them.
    let seen = server.mock.seen();
    let last = seen.last().unwrap();
    assert!(
        last.headers["authorization"]
            .to_str()
            .unwrap()
            .contains("sk-upstream-secret")
    );

    // A logged-out session is dead.
    let out = server
        .call("POST", "/auth/logout", Some(&story.bob), None)
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    for path in ["/auth/me", "/tokens", "/ledger"] {
        let answer = server.call("GET", path, Some(&story.bob), None).await;
        assert_eq!(answer.status, 401, "{path} after logout: {}", answer.body);
    }
    // Disabling a user ends their sessions and refuses their keys at once.
    let (bob_again, _) = server.session("/auth/login", "bob", BOB_PASSWORD).await;
    let off = server
        .call(
            "PUT",
            &format!("/users/{}", story.bob_id),
            Some(&story.admin),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(off.status, 200, "{}", off.body);
    assert_eq!(
        server
            .call("GET", "/auth/me", Some(&bob_again), None)
            .await
            .status,
        401
    );
    assert_eq!(server.chat(&story.bob_key, "gpt-other").await.status, 401);
    let login = server
        .call(
            "POST",
            "/auth/login",
            None,
            Some(json!({"username": "bob", "password": BOB_PASSWORD})),
        )
        .await;
    assert_eq!(login.status, 401);

    server.assert_no_secret_in_any_body(&[
        hash_api_key(&story.bob_key),
        hash_api_key(&story.bob),
        hash_api_key(&bob_again),
    ]);
    server.assert_calls_documented().await;
}

/// One chat of the story costs (3×1000 + 2×2000) × 1.5 nano-USD.
const STORY_CHAT_COST: i64 = 10_500;

#[tokio::test]
async fn a_keys_quota_is_taken_by_each_charge_and_refuses_the_key_once_used_up() {
    let server = start(|_| {}).await;
    let story = operator_story(&server).await;
    let key_path = format!("/tokens/{}", story.bob_key_id);
    let set_quota = |quota: i64| {
        let (server, key_path, bob) = (&server, key_path.clone(), story.bob.clone());
        async move {
            let answer = server
                .call(
                    "PUT",
                    &key_path,
                    Some(&bob),
                    Some(json!({"quota_unlimited": false, "quota_remaining": quota})),
                )
                .await;
            assert_eq!(answer.status, 200, "{}", answer.body);
        }
    };
    let quota_left = || async {
        let key = server.call("GET", &key_path, Some(&story.bob), None).await;
        assert_eq!(key.status, 200, "{}", key.body);
        key.body["quota_remaining"].clone()
    };

    // Bob limits his key to one request and a bit: the second is served in full, into debt.
    set_quota(STORY_CHAT_COST + 1).await;
    assert_eq!(server.chat(&story.bob_key, "gpt-story").await.status, 200);
    assert_eq!(quota_left().await, json!(1));
    assert_eq!(server.chat(&story.bob_key, "gpt-story").await.status, 200);
    assert_eq!(quota_left().await, json!(1 - STORY_CHAT_COST));
    let upstream_calls = server.mock.seen().len();

    // Used up: refused in each client's dialect, before anything goes upstream.
    let refused = server.chat(&story.bob_key, "gpt-story").await;
    assert_eq!(refused.status, 402, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "key_quota_exhausted");
    assert_eq!(refused.body["error"]["type"], "insufficient_quota");
    let messages = server
        .raw(
            "POST",
            "/v1/messages",
            &[
                ("x-api-key", &story.bob_key),
                ("content-type", "application/json"),
            ],
            json!({"model": "gpt-story", "max_tokens": 5, "messages": []})
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(messages.status, 402, "{}", messages.body);
    assert_eq!(messages.body["error"]["type"], "billing_error");
    assert_eq!(server.mock.seen().len(), upstream_calls);
    // Bob's balance paid for both requests: the quota limits the key, not the account.
    let bob = server.call("GET", "/auth/me", Some(&story.bob), None).await;
    assert_eq!(
        bob.body["balance_nano_usd"],
        (2_500_000_000 - 2 * STORY_CHAT_COST).to_string(),
        "{}",
        bob.body
    );

    // A new quota applies at once; an unlimited key is never refused for it.
    set_quota(STORY_CHAT_COST).await;
    assert_eq!(server.chat(&story.bob_key, "gpt-story").await.status, 200);
    assert_eq!(quota_left().await, json!(0));
    assert_eq!(server.chat(&story.bob_key, "gpt-story").await.status, 402);
    let unlimited = server
        .call(
            "PUT",
            &key_path,
            Some(&story.bob),
            Some(json!({"quota_unlimited": true})),
        )
        .await;
    assert_eq!(unlimited.status, 200, "{}", unlimited.body);
    assert_eq!(server.chat(&story.bob_key, "gpt-story").await.status, 200);
    assert_eq!(
        quota_left().await,
        json!(0),
        "an unlimited key's quota is kept"
    );
    server.assert_calls_documented().await;
}

#[tokio::test]
async fn the_host_bounds_bodies_requires_json_and_serves_the_openapi_document() {
    let server = start(|config| config.http_body_max_bytes = 1024).await;
    let document = server.call("GET", "/openapi.json", None, None).await;
    assert_eq!(document.status, 200);
    assert_eq!(document.headers["content-type"], "application/json");
    let version = document.body["openapi"].as_str().unwrap();
    assert!(version.starts_with("3."), "{version}");
    assert!(document.body["paths"].as_object().unwrap().len() > 10);

    let form = server
        .raw(
            "POST",
            "/api/dashboard/auth/register",
            &[("content-type", "application/x-www-form-urlencoded")],
            b"username=root&password=12345678".to_vec(),
        )
        .await;
    assert_eq!(form.status, 415, "{}", form.body);
    assert_eq!(form.body["error"]["code"], "unsupported_media_type");
    let large = server
        .raw(
            "POST",
            "/api/dashboard/auth/register",
            &[("content-type", "application/json")],
            format!(r#"{{"username":"root","password":"{}"}}"#, "x".repeat(2048)).into_bytes(),
        )
        .await;
    assert_eq!(large.status, 413, "{}", large.body);
    assert_eq!(large.body["error"]["code"], "body_too_large");
    let broken = server
        .raw(
            "POST",
            "/api/dashboard/auth/register",
            &[("content-type", "application/json")],
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!(broken.status, 400, "{}", broken.body);
    // Nothing above created a user: the first registration still becomes super_admin.
    let (_, user) = server
        .session("/auth/register", "root_admin", ADMIN_PASSWORD)
        .await;
    assert_eq!(user["role"], "super_admin");
    let outside = server.raw("GET", "/api/dashboardx", &[], Vec::new()).await;
    assert_eq!(outside.status, 404);
}

#[tokio::test]
async fn a_failing_dashboard_plugin_is_a_500_naming_it_and_the_host_keeps_serving() {
    // A 2 MiB memory cap holds the plugin, but not a body of almost 1 MiB copied into it and
    // parsed there: that call runs out of memory.
    let server = start(|config| {
        config.plugin_memory_mb = 2;
        config.http_body_max_bytes = 4 << 20;
    })
    .await;
    let huge = json!({"username": "x".repeat(1_000_000), "password": "whatever-pass"});
    let answer = server.call("POST", "/auth/login", None, Some(huge)).await;
    assert_eq!(answer.status, 500, "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], "plugin_failed");
    assert_eq!(answer.body["error"]["plugin"], "default-dashboard");
    assert_eq!(answer.body["error"]["reason"], "out_of_memory");
    let health = server.raw("GET", "/healthz", &[], Vec::new()).await;
    assert_eq!(health.status, 200);
    let (_, user) = server
        .session("/auth/register", "root_admin", ADMIN_PASSWORD)
        .await;
    assert_eq!(user["role"], "super_admin");
}

#[tokio::test]
async fn a_login_fits_the_production_time_bound_because_host_waits_are_credited() {
    // The default bound (50 ms of wall clock per call) with argon2id inside the call: hashing
    // and verifying run on blocking threads and their wait is given back to the plugin.
    let server =
        start(|config| config.plugin_timeout_ms = Config::defaults().plugin_timeout_ms).await;
    let (admin, _) = server
        .session("/auth/register", "root_admin", ADMIN_PASSWORD)
        .await;
    let (again, _) = server
        .session("/auth/login", "root_admin", ADMIN_PASSWORD)
        .await;
    assert_ne!(admin, again);
    let wrong = server
        .call(
            "POST",
            "/auth/login",
            None,
            Some(json!({"username": "root_admin", "password": "wrong-password"})),
        )
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
}

#[tokio::test]
async fn of_simultaneous_first_registrations_only_one_becomes_super_admin() {
    // Each registration counts the users, hashes the password (milliseconds), then creates
    // the user: all four see an empty table. The host's check inside the insert's own
    // transaction lets only the first through as `super_admin`.
    let server = start(|_| {}).await;
    let register = |name: &'static str| {
        server.call(
            "POST",
            "/auth/register",
            None,
            Some(json!({"username": name, "password": ADMIN_PASSWORD})),
        )
    };
    let (a, b, c, d) = tokio::join!(
        register("first_a"),
        register("first_b"),
        register("first_c"),
        register("first_d")
    );
    let mut super_admins = 0;
    for answer in [&a, &b, &c, &d] {
        match answer.status {
            201 if answer.body["user"]["role"] == "super_admin" => super_admins += 1,
            201 => assert_eq!(answer.body["user"]["role"], "user", "{}", answer.body),
            409 => assert_eq!(answer.body["error"]["code"], "conflict", "{}", answer.body),
            other => panic!("{other}: {}", answer.body),
        }
    }
    assert_eq!(super_admins, 1);
}

#[tokio::test]
async fn the_session_cookie_is_secure_when_configured() {
    let body = json!({"username": "root_admin", "password": ADMIN_PASSWORD});
    for secure in [false, true] {
        let server = start(|config| config.session_cookie_secure = secure).await;
        let answer = server
            .call("POST", "/auth/register", None, Some(body.clone()))
            .await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        let cookie = answer.headers["set-cookie"].to_str().unwrap();
        assert!(cookie.starts_with("monoize_session="), "{cookie}");
        assert_eq!(cookie.ends_with("; Secure"), secure, "{cookie}");
    }
}

#[tokio::test]
async fn an_address_with_ten_failed_logins_is_refused_429_even_with_the_right_password() {
    let server = start(|config| {
        // The test's clients all come from 127.0.0.1: a trusted proxy says whose they are.
        config.trusted_proxy_cidrs = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    server
        .session("/auth/register", "root_admin", ADMIN_PASSWORD)
        .await;
    let login = |from: &'static str, password: &'static str| {
        let body = json!({"username": "root_admin", "password": password}).to_string();
        let headers = [
            ("content-type", "application/json"),
            ("x-forwarded-for", from),
        ];
        let server = &server;
        async move {
            server
                .raw(
                    "POST",
                    "/api/dashboard/auth/login",
                    &headers,
                    body.into_bytes(),
                )
                .await
        }
    };
    let guesser = "203.0.113.7";
    for guess in 0..10 {
        let answer = login(guesser, "wrong-guess").await;
        assert_eq!(answer.status, 401, "guess {guess}: {}", answer.body);
    }
    let refused = login(guesser, ADMIN_PASSWORD).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "too_many_login_attempts");
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=15 * 60).contains(&retry_after), "{retry_after}");
    // The plugin routes a method in any case; so does the throttle.
    let body = json!({"username": "root_admin", "password": ADMIN_PASSWORD}).to_string();
    let headers = [
        ("content-type", "application/json"),
        ("x-forwarded-for", guesser),
    ];
    let lowercase = server
        .raw(
            "post",
            "/api/dashboard/auth/login",
            &headers,
            body.into_bytes(),
        )
        .await;
    assert_eq!(lowercase.status, 429, "{}", lowercase.body);
    // Another address logs in; a success there frees no one else.
    let owner = login("198.51.100.4", ADMIN_PASSWORD).await;
    assert_eq!(owner.status, 200, "{}", owner.body);
    assert_eq!(login(guesser, ADMIN_PASSWORD).await.status, 429);
    // Fewer failures than the limit, then a success, start the count again.
    let forgetful = "198.51.100.5";
    for _ in 0..9 {
        assert_eq!(login(forgetful, "typo").await.status, 401);
    }
    assert_eq!(login(forgetful, ADMIN_PASSWORD).await.status, 200);
    for _ in 0..9 {
        assert_eq!(login(forgetful, "typo").await.status, 401);
    }
    assert_eq!(login(forgetful, ADMIN_PASSWORD).await.status, 200);
}

/// Values of every JSON type and some odd ones, put in place of each field of a valid body.
fn odd_values() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!(-1),
        json!(1e308),
        json!(u64::MAX),
        json!(""),
        json!("\u{0}"),
        json!("-0.000000000001"),
        json!("99999999999999999999999"),
        json!("x".repeat(10_000)),
        json!([]),
        json!([[[[[[]]]]]]),
        json!({}),
        json!({"nested": {"deeper": [1, "two", null]}}),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_dashboard_bodies_get_a_client_error_never_a_crash() {
    let server = start(|_| {}).await;
    let story = operator_story(&server).await;
    let provider = format!("/providers/{}", story.provider_id);
    let bob = format!("/users/{}", story.bob_id);
    let key = format!("/tokens/{}", story.bob_key_id);
    let writes: Vec<(&str, &str, Value)> = vec![
        (
            "POST",
            "/users",
            json!({"username": "carol", "password": "carol-pass-1", "role": "user"}),
        ),
        (
            "PUT",
            &bob,
            json!({"balance_usd": "1", "role": "user", "enabled": true, "balance_unlimited": false}),
        ),
        (
            "POST",
            "/tokens",
            json!({"name": "k", "expires_in_days": 3, "model_limits_enabled": true,
                   "model_limits": ["gpt-story"], "ip_whitelist": ["10.0.0.0/8"],
                   "max_multiplier": "2"}),
        ),
        (
            "PUT",
            &key,
            json!({"name": "k2", "quota_unlimited": false, "quota_remaining": "5"}),
        ),
        ("POST", "/tokens/batch-delete", json!({"ids": ["nope"]})),
        (
            "PUT",
            &provider,
            json!({"name": "p", "provider_type": "chat_completion", "priority": 3,
                   "max_retries": 2, "groups": ["g"],
                   "models": {"gpt-story": {"multiplier": "1.5"}}}),
        ),
        (
            "POST",
            "/providers/reorder",
            json!({"provider_ids": [story.provider_id]}),
        ),
        (
            "PUT",
            "/model-metadata/gpt-story",
            json!({"input_cost_per_token_nano": "1000", "output_cost_per_token_nano": "2000"}),
        ),
        (
            "POST",
            "/auth/login",
            json!({"username": "bob", "password": "wrong-pass-1"}),
        ),
    ];
    let mut sent = 0;
    for (method, path, valid) in &writes {
        let Value::Object(fields) = valid else {
            unreachable!("every valid body is an object")
        };
        let mut bodies: Vec<Vec<u8>> =
            ["", "null", "[]", "7", "{", r#"{"a":1,"a":2}"#, "\u{feff}{}"]
                .iter()
                .map(|text| text.as_bytes().to_vec())
                .collect();
        bodies.push(format!("{}{}", "[".repeat(5_000), "]".repeat(5_000)).into_bytes());
        for field in fields.keys() {
            for value in odd_values() {
                let mut body = fields.clone();
                body.insert(field.clone(), value);
                bodies.push(Value::Object(body).to_string().into_bytes());
            }
        }
        for body in bodies {
            let headers = [
                ("authorization", format!("Bearer {}", story.admin)),
                ("content-type", "application/json".to_owned()),
            ];
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(name, value)| (*name, value.as_str()))
                .collect();
            let shown = String::from_utf8_lossy(&body)
                .chars()
                .take(100)
                .collect::<String>();
            let answer = server
                .raw(method, &format!("/api/dashboard{path}"), &headers, body)
                .await;
            sent += 1;
            assert!(
                answer.status < 500,
                "{method} {path} {shown:?}: {} {}",
                answer.status,
                answer.body
            );
            if answer.status >= 400 {
                assert!(
                    answer.body["error"].is_object() || answer.body["error"].is_string(),
                    "{method} {path} {shown:?}: {} {}",
                    answer.status,
                    answer.body
                );
            }
        }
    }
    assert!(sent > 300, "only {sent} hostile requests were sent");
    // Still serving, with the fixtures' money intact: bob's key still charges.
    let answer = server.chat(&story.bob_key, "gpt-story").await;
    assert!(
        answer.status == 200 || answer.status == 402,
        "{}",
        answer.body
    );
}
