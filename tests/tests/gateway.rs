//! The gateway end to end (DESIGN §5): the real server on 127.0.0.1 in-process, seeded through
//! the db repositories, forwarding to mock upstreams that misbehave on request. Endpoints,
//! both auth headers, every 401, key policy, error dialects, `/metrics` and `last_used_at`;
//! faults and health are in `gateway_faults.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

mod gateway_harness;

use http_body_util::BodyExt;
use monoize::config::MetricsToken;
use monoize::db::routing::ProviderType;
use monoize::db::{api_keys, clock, users};
use monoize::gateway::auth::hash_api_key;
use monoize::plugins::{DEFAULT_BILLING, DEFAULT_ROUTER};
use monoize_tests::mock_upstream::{CHANNEL_ACCOUNT_HEADERS, UPSTREAM_REQUEST_ID};
use serde_json::{Value, json};

use gateway_harness::{BEARER, Gateway, KEY, Setup, WAIT, X_API_KEY, eventually, sample, start};

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
    // What the upstream tells of the channel's account (its organization, its rate limits)
    // stays with the gateway; the rest of its headers reach the client.
    for (name, _) in CHANNEL_ACCOUNT_HEADERS {
        assert!(
            !response.headers().contains_key(*name),
            "{name} reached the client"
        );
    }
    assert_eq!(response.headers()["openai-processing-ms"], "7");
}

#[tokio::test]
async fn each_sdk_finds_monoizes_request_id_in_its_own_header() {
    let gateway = Setup::new()
        .provider(ProviderType::ChatCompletion, &["ok"])
        .provider(ProviderType::Messages, &["ok"])
        .start()
        .await;
    let ids = |response: &hyper::Response<()>| {
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|value: &hyper::header::HeaderValue| value.to_str().unwrap().to_owned())
        };
        (header("x-request-id"), header("request-id"))
    };
    // OpenAI's SDKs read `x-request-id`; the upstream's own id does not reach the client.
    let (status, _, response) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
    assert_eq!(status, 200);
    let (openai, anthropic) = ids(&response);
    let openai = openai.expect("x-request-id");
    assert_ne!(openai, UPSTREAM_REQUEST_ID);
    assert_eq!(anthropic, None);
    // Anthropic's read `request-id`: the same id as `x-request-id`, on answers and on errors.
    let message = r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, _, response) = gateway.json("/v1/messages", &[X_API_KEY], message).await;
    assert_eq!(status, 200);
    let (monoize, anthropic) = ids(&response);
    assert_eq!(anthropic, monoize);
    assert_ne!(anthropic.as_deref(), Some(UPSTREAM_REQUEST_ID));
    let (status, _, response) = gateway
        .json("/v1/messages", &[("x-api-key", "sk-wrong")], message)
        .await;
    assert_eq!(status, 401);
    let (monoize, anthropic) = ids(&response);
    assert!(monoize.is_some());
    assert_eq!(anthropic, monoize);
}

/// The body a client sends to `path`, and the upstream path it must reach.
fn endpoint_case(path: &str) -> (&'static str, &'static str) {
    match path.trim_start_matches("/api") {
        "/v1/chat/completions" => (
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            "/ok/v1/chat/completions",
        ),
        "/v1/responses" => (r#"{"model":"m","input":"hi"}"#, "/ok/v1/responses"),
        "/v1/embeddings" => (r#"{"model":"m","input":"hi"}"#, "/ok/v1/embeddings"),
        "/v1/messages" => (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
            "/ok/v1/messages",
        ),
        other => panic!("no case for {other}"),
    }
}

#[tokio::test]
async fn every_endpoint_answers_under_both_prefixes_with_either_auth_header() {
    let gateway = start(
        &[
            (ProviderType::ChatCompletion, &["ok"]),
            (ProviderType::Responses, &["ok"]),
            (ProviderType::Messages, &["ok"]),
        ],
        |_| {},
    )
    .await;
    let mut expected_requests = 0;
    for endpoint in [
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/embeddings",
        "/v1/messages",
    ] {
        for prefix in ["", "/api"] {
            for auth in [BEARER, X_API_KEY] {
                let path = format!("{prefix}{endpoint}");
                let (body, upstream_path) = endpoint_case(&path);
                let (status, answer, response) = gateway.json(&path, &[auth], body).await;
                assert_eq!(status, 200, "{path} with {}: {answer}", auth.0);
                assert!(response.headers().contains_key("x-request-id"));
                expected_requests += 1;
                let seen = gateway.mock.seen();
                assert_eq!(seen.len(), expected_requests);
                let last = seen.last().unwrap();
                assert_eq!(last.path, upstream_path, "{path}");
                assert_eq!(last.body["model"], "up-m");
                assert!(!format!("{:?}", last.headers).contains(KEY));
            }
        }
    }
    let messages = gateway
        .mock
        .seen()
        .into_iter()
        .find(|seen| seen.path.ends_with("/v1/messages"))
        .unwrap();
    assert_eq!(messages.headers["x-api-key"], "sk-upstream-secret-2-0");
    assert_eq!(messages.headers["anthropic-version"], "2023-06-01");
    let responses = gateway
        .mock
        .seen()
        .into_iter()
        .find(|seen| seen.path.ends_with("/v1/responses"))
        .unwrap();
    assert_eq!(
        responses.headers["authorization"],
        "Bearer sk-upstream-secret-1-0"
    );
    for path in ["/v1/models", "/api/v1/models"] {
        for auth in [BEARER, X_API_KEY] {
            let (status, body, _) = gateway.json(path, &[auth], "").await;
            assert_eq!(status, 200, "{path}");
            assert_eq!(body["object"], "list");
            assert_eq!(body["data"][0]["id"], "m");
        }
    }
}

#[tokio::test]
async fn gemini_channels_reach_the_openai_compatible_root_with_the_google_key_header() {
    // A channel's base URL as the origin, as the API version, or as the whole root.
    for mode in ["ok", "ok/v1beta", "ok/v1beta/openai/"] {
        let gateway = start(&[(ProviderType::Gemini, &[mode])], |_| {}).await;
        for (endpoint, resource) in [
            ("/v1/chat/completions", "/chat/completions"),
            ("/v1/embeddings", "/embeddings"),
        ] {
            let (body, _) = endpoint_case(endpoint);
            let (status, answer, _) = gateway.json(endpoint, &[BEARER], body).await;
            assert_eq!(status, 200, "{mode} {endpoint}: {answer}");
            let seen = gateway.mock.seen();
            let last = seen.last().unwrap();
            assert_eq!(last.path, format!("/ok/v1beta/openai{resource}"), "{mode}");
            assert_eq!(last.headers["x-goog-api-key"], "sk-upstream-secret-0-0");
            assert!(last.headers.get("authorization").is_none());
            assert!(!format!("{:?}", last.headers).contains(KEY));
        }
        assert_eq!(gateway.mock.seen().len(), 2);
    }
}

/// Seeds a key with `text` for a new user (enabled or not), shaped by `configure`.
async fn seed_key(
    gateway: &Gateway,
    text: &str,
    user_enabled: bool,
    configure: impl FnOnce(&mut api_keys::NewApiKey) + Send + 'static,
) {
    let text = text.to_owned();
    let owner = gateway.user_id.clone();
    gateway
        .db
        .write(move |tx| {
            let user_id = if user_enabled {
                owner
            } else {
                let mut user = users::NewUser::new(&format!("u-{text}"), "h", users::Role::User);
                user.enabled = false;
                user.balance_unlimited = true;
                users::insert(tx, &user)?.id
            };
            let mut key = api_keys::NewApiKey::new(
                &user_id,
                "k",
                api_keys::key_prefix(&text),
                &hash_api_key(&text),
            );
            configure(&mut key);
            api_keys::insert(tx, &key)
        })
        .await
        .unwrap();
}

/// Seeds another user, `name`, with an unlimited balance and the key `text`.
async fn seed_other_user(gateway: &Gateway, name: &str, text: &str) {
    let (name, text) = (name.to_owned(), text.to_owned());
    gateway
        .db
        .write(move |tx| {
            let mut user = users::NewUser::new(&name, "h", users::Role::User);
            user.balance_unlimited = true;
            let user = users::insert(tx, &user)?;
            let key = api_keys::NewApiKey::new(
                &user.id,
                "k",
                api_keys::key_prefix(&text),
                &hash_api_key(&text),
            );
            api_keys::insert(tx, &key)
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn every_401_case_answers_the_same_body() {
    let gateway = start(&[(ProviderType::ChatCompletion, &["ok"])], |_| {}).await;
    seed_key(&gateway, "sk-disabled-0123456789", true, |key| {
        key.enabled = false;
    })
    .await;
    seed_key(&gateway, "sk-expired-00123456789", true, |key| {
        key.expires_at = Some("2001-01-01T00:00:00Z".to_owned());
    })
    .await;
    seed_key(&gateway, "sk-nouser-000123456789", false, |_| {}).await;
    let (status, _, _) = gateway
        .json(
            "/v1/chat/completions",
            &[("authorization", "Bearer sk-nouser-000123456789")],
            r#"{"model":"m"}"#,
        )
        .await;
    assert_eq!(status, 401, "a disabled user's key");
    let cases: [(&str, Vec<(&str, &str)>); 8] = [
        ("missing", vec![]),
        ("empty bearer", vec![("authorization", "Bearer ")]),
        ("another scheme", vec![("authorization", "Basic abc")]),
        (
            "wrong key, known prefix",
            vec![("authorization", "Bearer sk-test-0123456789abcdeX")],
        ),
        ("unknown", vec![("x-api-key", "sk-nope")]),
        (
            "disabled key",
            vec![("authorization", "Bearer sk-disabled-0123456789")],
        ),
        ("expired key", vec![("x-api-key", "sk-expired-00123456789")]),
        (
            "disabled user",
            vec![("authorization", "Bearer sk-nouser-000123456789")],
        ),
    ];
    for (path, dialect_type) in [
        ("/v1/chat/completions", None),
        ("/v1/messages", Some("error")),
    ] {
        let mut bodies: Vec<(String, Value)> = Vec::new();
        for (case, headers) in &cases {
            let (status, body, response) = gateway.json(path, headers, r#"{"model":"m"}"#).await;
            assert_eq!(status, 401, "{case} on {path}");
            assert!(response.headers().contains_key("x-request-id"));
            match dialect_type {
                None => assert_eq!(body["error"]["type"], "authentication_error", "{case}"),
                Some(kind) => {
                    assert_eq!(body["type"], kind, "{case}");
                    assert_eq!(body["error"]["type"], "authentication_error", "{case}");
                }
            }
            bodies.push(((*case).to_owned(), body));
        }
        let (first_case, first) = &bodies[0];
        for (case, body) in &bodies {
            assert_eq!(body, first, "{case} differs from {first_case} on {path}");
        }
    }
    let (status, _, _) = gateway
        .json("/v1/models", &[("x-api-key", "sk-expired-00123456789")], "")
        .await;
    assert_eq!(status, 401);
    assert!(gateway.mock.seen().is_empty());
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
    assert_eq!(rejecting.mock.seen().len(), 1, "a 400 is not retried");
}

/// Asserts `body` is Anthropic's error envelope of `kind`, without OpenAI's fields.
fn assert_anthropic_error(body: &Value, kind: &str) {
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"].get("code").is_none(), "{body}");
}

#[tokio::test]
async fn messages_errors_use_the_anthropic_envelope() {
    const MESSAGE: &str = r#"{"model":"m","max_tokens":5,"messages":[]}"#;
    let broke = Setup::new()
        .provider(ProviderType::Messages, &["ok"])
        .limited_balance()
        .start()
        .await;
    let (status, body, _) = broke.json("/v1/messages", &[X_API_KEY], MESSAGE).await;
    assert_eq!(status, 402);
    assert_anthropic_error(&body, "billing_error");
    assert!(broke.mock.seen().is_empty());
    let (status, body, _) = broke
        .json("/v1/chat/completions", &[BEARER], r#"{"model":"m"}"#)
        .await;
    assert_eq!(status, 402);
    assert_eq!(body["error"]["code"], "insufficient_balance");

    let rejecting = start(&[(ProviderType::Messages, &["400"])], |key| {
        key.model_limits_enabled = true;
        key.model_limits = vec!["m".to_owned(), "nope".to_owned()];
    })
    .await;
    let (status, body, _) = rejecting
        .json(
            "/v1/messages",
            &[X_API_KEY],
            r#"{"model":"nope","max_tokens":5,"messages":[]}"#,
        )
        .await;
    assert_eq!(status, 404);
    assert_anthropic_error(&body, "not_found_error");
    let (status, body, _) = rejecting
        .json(
            "/v1/messages",
            &[X_API_KEY],
            r#"{"model":"other","max_tokens":5,"messages":[]}"#,
        )
        .await;
    assert_eq!(status, 403);
    assert_anthropic_error(&body, "permission_error");
    let (status, body, _) = rejecting.json("/v1/messages", &[X_API_KEY], "[]").await;
    assert_eq!(status, 400);
    assert_anthropic_error(&body, "invalid_request_error");
    let (status, body, _) = rejecting.json("/v1/messages", &[X_API_KEY], MESSAGE).await;
    assert_eq!(status, 400, "the upstream's 400 passes through");
    assert_anthropic_error(&body, "invalid_request_error");
    assert_eq!(body["error"]["message"], "your request is bad");

    let failing = start(&[(ProviderType::Messages, &["500", "429"])], |_| {}).await;
    let (status, body, _) = failing.json("/v1/messages", &[X_API_KEY], MESSAGE).await;
    assert_eq!(status, 502);
    assert_anthropic_error(&body, "api_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`m`") && message.contains('2'),
        "{message}"
    );
    assert!(!message.contains("slow down") && !message.contains("boom"));
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
    // A reverse proxy in front (nginx) must pass the events on as they come, and nothing may
    // cache them.
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    assert_eq!(response.headers()["cache-control"], "no-cache");
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
    let gateway = start(&[(ProviderType::ChatCompletion, &["ok"])], |_| {}).await;
    let (status, body, _) = gateway.json("/v1/models", &[BEARER], "").await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["id"], "m");
    // Anthropic's page fields too, for its SDK and Claude Code.
    assert_eq!(body["data"][0]["type"], "model");
    assert_eq!(
        (&body["has_more"], &body["first_id"]),
        (&json!(false), &json!("m"))
    );
    for path in ["/v1/models/m", "/api/v1/models/m"] {
        let (status, body, _) = gateway.json(path, &[X_API_KEY], "").await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(
            (&body["id"], &body["object"]),
            (&json!("m"), &json!("model"))
        );
    }
    let (status, body, response) = gateway
        .json("/v1/models/openai%2Fnope", &[BEARER], "")
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "model_not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("openai/nope")
    );
    assert!(response.headers().contains_key("x-request-id"));
    // An Anthropic client (it always sends `anthropic-version`) gets Anthropic's envelope.
    let anthropic_client = [X_API_KEY, ("anthropic-version", "2023-06-01")];
    let (status, body, response) = gateway.json("/v1/models/nope", &anthropic_client, "").await;
    assert_eq!(status, 404, "{body}");
    assert_anthropic_error(&body, "not_found_error");
    assert_eq!(
        response.headers()["request-id"],
        response.headers()["x-request-id"]
    );
    let (status, _, _) = gateway.json("/v1/models/m", &[], "").await;
    assert_eq!(status, 401);

    let capped = start(&[(ProviderType::ChatCompletion, &["ok"])], |key| {
        key.max_multiplier = Some("0.5".parse().unwrap());
    })
    .await;
    let (status, _, _) = capped
        .json("/v1/chat/completions", &[BEARER], r#"{"model":"m"}"#)
        .await;
    assert_ne!(status, 200, "the ceiling excludes the only provider");
    assert!(capped.mock.seen().is_empty());
    let (status, body, _) = capped.json("/v1/models", &[BEARER], "").await;
    assert_eq!(status, 200);
    assert_eq!(body["data"], json!([]), "nothing it could use is listed");
    let grouped = start(&[(ProviderType::ChatCompletion, &["ok"])], |key| {
        key.token_group = Some("elsewhere".to_owned());
    })
    .await;
    let (_, body, _) = grouped.json("/v1/models", &[BEARER], "").await;
    assert_eq!(
        body["data"],
        json!([]),
        "a group no provider is open to lists nothing"
    );
    let (status, _, _) = grouped.json("/v1/models/m", &[BEARER], "").await;
    assert_eq!(status, 404);

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
    let (status, body, _) = limited.json("/v1/models/m", &[BEARER], "").await;
    assert_eq!(
        status, 404,
        "a model outside the key's limits is not found: {body}"
    );

    let fenced = start(&[(ProviderType::ChatCompletion, &["ok"])], |key| {
        key.ip_whitelist = vec!["10.0.0.0/8".to_owned()];
    })
    .await;
    let (status, _, _) = fenced
        .json("/v1/chat/completions", &[BEARER], r#"{"model":"m"}"#)
        .await;
    assert_eq!(status, 403);
    for path in ["/v1/models", "/v1/models/m"] {
        let (status, body, _) = fenced.json(path, &[BEARER], "").await;
        assert_eq!(status, 403, "{path}");
        assert_eq!(body["error"]["code"], "ip_not_allowed");
    }
    let (status, _, _) = fenced
        .json(
            "/v1/chat/completions",
            &[BEARER],
            &format!(r#"{{"model":"m","pad":"{}"}}"#, "x".repeat(5000)),
        )
        .await;
    assert_eq!(status, 413);
}

const CHAT: &str = r#"{"model":"m"}"#;

#[tokio::test]
async fn the_ip_whitelist_checks_the_socket_peer() {
    let loopback = start(&[(ProviderType::ChatCompletion, &["ok"])], |key| {
        key.ip_whitelist = vec!["192.0.2.1".to_owned(), "127.0.0.0/8".to_owned()];
    })
    .await;
    let (status, body, _) = loopback.json("/v1/chat/completions", &[BEARER], CHAT).await;
    assert_eq!(status, 200, "{body}");
    let elsewhere = start(&[(ProviderType::ChatCompletion, &["ok"])], |key| {
        key.ip_whitelist = vec!["192.0.2.0/24".to_owned()];
    })
    .await;
    let (status, body, _) = elsewhere
        .json(
            "/v1/chat/completions",
            &[BEARER, ("x-forwarded-for", "192.0.2.7")],
            CHAT,
        )
        .await;
    assert_eq!(
        status, 403,
        "an untrusted peer's X-Forwarded-For is ignored"
    );
    assert_eq!(body["error"]["code"], "ip_not_allowed");
    let (status, _, _) = elsewhere
        .json("/v1/chat/completions", &[BEARER], CHAT)
        .await;
    assert_eq!(status, 403);
    assert!(elsewhere.mock.seen().is_empty());
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let behind_proxy = Setup::new()
        .provider(ProviderType::ChatCompletion, &["ok"])
        .key(|key| key.ip_whitelist = vec!["192.0.2.0/24".to_owned()])
        .config(|config| config.trusted_proxy_cidrs = vec!["127.0.0.1/32".parse().unwrap()])
        .start()
        .await;
    for (forwarded, expected) in [
        (Some("192.0.2.7"), 200),
        (Some("198.51.100.1, 192.0.2.8"), 200),
        (Some("192.0.2.7, 198.51.100.1"), 403),
        (Some("198.51.100.1"), 403),
        (None, 403),
    ] {
        let mut headers = vec![BEARER];
        if let Some(forwarded) = forwarded {
            headers.push(("x-forwarded-for", forwarded));
        }
        let (status, body, _) = behind_proxy
            .json("/v1/chat/completions", &headers, CHAT)
            .await;
        assert_eq!(status, expected, "X-Forwarded-For {forwarded:?}: {body}");
    }
    let seen = behind_proxy.mock.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen[0].headers.get("x-forwarded-for").is_none());

    let other_proxy = Setup::new()
        .provider(ProviderType::ChatCompletion, &["ok"])
        .key(|key| key.ip_whitelist = vec!["192.0.2.0/24".to_owned()])
        .config(|config| config.trusted_proxy_cidrs = vec!["10.0.0.0/8".parse().unwrap()])
        .start()
        .await;
    let (status, _, _) = other_proxy
        .json(
            "/v1/chat/completions",
            &[BEARER, ("x-forwarded-for", "192.0.2.7")],
            CHAT,
        )
        .await;
    assert_eq!(status, 403, "the peer is not the trusted proxy");
}

#[tokio::test]
async fn metrics_with_a_token_answer_only_its_bearer() {
    const TOKEN: &str = "metrics-token-0123456789";
    let gateway = Setup::new()
        .provider(ProviderType::ChatCompletion, &["ok"])
        .config(|config| config.metrics_token = Some(MetricsToken::new(TOKEN)))
        .start()
        .await;
    let bearer = format!("Bearer {TOKEN}");
    let wrong = format!("Bearer {TOKEN}x");
    for headers in [
        vec![],
        vec![("authorization", wrong.as_str())],
        vec![("authorization", TOKEN)],
        vec![("x-api-key", TOKEN)],
        // A Monoize API key is not the metrics token.
        vec![BEARER],
    ] {
        let (status, body, response) = gateway.json("/metrics", &headers, "").await;
        assert_eq!(status, 401, "{headers:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(body["error"]["code"], "unauthorized");
        assert!(!body.to_string().contains("monoize_requests_total"));
    }
    // The scheme in any case, as RFC 9110 has it.
    let lowercase = format!("bearer {TOKEN}");
    let (status, _, _) = gateway
        .json("/metrics", &[("authorization", lowercase.as_str())], "")
        .await;
    assert_eq!(status, 200);
    let text = gateway
        .metrics_with(&[("authorization", bearer.as_str())])
        .await;
    assert!(text.contains("monoize_requests_in_flight"));
    // The gateway's own endpoints are not affected.
    let (status, _, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn metrics_move_with_requests() {
    let gateway = start(
        &[
            (ProviderType::ChatCompletion, &["500"]),
            (ProviderType::ChatCompletion, &["ok"]),
        ],
        |_| {},
    )
    .await;
    let before = gateway.metrics().await;
    assert_eq!(sample(&before, "monoize_requests_in_flight"), 0.0);
    let (status, _, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
    assert_eq!(status, 200);
    let (status, _, _) = gateway.json("/v1/chat/completions", &[], CHAT).await;
    assert_eq!(status, 401);
    let (status, _, _) = gateway.json("/api/v1/models", &[BEARER], "").await;
    assert_eq!(status, 200);
    let text = gateway.metrics().await;
    assert!(
        text.contains("# TYPE monoize_requests_total counter"),
        "{text}"
    );
    let count = |series: &str| sample(&text, series);
    assert_eq!(
        count(r#"monoize_requests_total{endpoint="chat_completions",status="200"}"#),
        1.0
    );
    assert_eq!(
        count(r#"monoize_requests_total{endpoint="chat_completions",status="401"}"#),
        1.0
    );
    assert_eq!(
        count(r#"monoize_requests_total{endpoint="models",status="200"}"#),
        1.0
    );
    assert_eq!(
        count(r#"monoize_upstream_attempts_total{outcome="upstream_status"}"#),
        1.0
    );
    assert_eq!(
        count(r#"monoize_upstream_attempts_total{outcome="served"}"#),
        1.0
    );
    for (plugin, call) in [
        (DEFAULT_ROUTER, "route"),
        (DEFAULT_BILLING, "authorize"),
        (DEFAULT_BILLING, "settle"),
    ] {
        let series = format!(
            r#"monoize_plugin_call_duration_seconds_count{{plugin="{plugin}",call="{call}"}}"#
        );
        assert_eq!(count(&series), 1.0, "{series}\n{text}");
        let failures =
            format!(r#"monoize_plugin_call_failures_total{{plugin="{plugin}",call="{call}"}}"#);
        assert_eq!(count(&failures), 0.0, "{failures}");
    }
    // One request went through the plugins: one router instance, and one billing instance that
    // served the request's authorize and then its settle; both wait for the next call.
    for plugin in [DEFAULT_ROUTER, DEFAULT_BILLING] {
        let started = format!(r#"monoize_plugin_instances_started_total{{plugin="{plugin}"}}"#);
        assert_eq!(count(&started), 1.0, "{started}\n{text}");
        let idle = format!(r#"monoize_plugin_instances_idle{{plugin="{plugin}"}}"#);
        assert_eq!(count(&idle), 1.0, "{idle}");
    }
    assert_eq!(count("monoize_charge_commit_duration_seconds_count"), 1.0);
    assert!(count("monoize_charge_commit_duration_seconds_sum") > 0.0);
    assert_eq!(count("monoize_requests_in_flight"), 0.0);
    // The scrape's own keep-alive connection is open on one of the connection threads, and
    // no more connections than the requests made.
    let open: Vec<f64> = text
        .lines()
        .filter(|line| line.starts_with("monoize_server_connections_open{thread=\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    let total: f64 = open.iter().sum();
    assert!(!open.is_empty() && (1.0..=4.0).contains(&total), "{text}");

    // A stream is in flight until its last byte.
    let endless = start(&[(ProviderType::ChatCompletion, &["endless"])], |_| {}).await;
    let body = endless.open_stream().await;
    assert_eq!(
        sample(&endless.metrics().await, "monoize_requests_in_flight"),
        1.0
    );
    drop(body);
    assert!(endless.mock.wait_cancelled(1, WAIT).await);
    assert!(
        eventually(|| async {
            sample(&endless.metrics().await, "monoize_requests_in_flight") == 0.0
        })
        .await
    );
}

/// The stored `last_used_at` of the harness key.
async fn last_used_at(gateway: &Gateway) -> Option<String> {
    let id = gateway.key_id.clone();
    gateway
        .db
        .read(move |conn| Ok(api_keys::get(conn, &id)?.and_then(|key| key.last_used_at)))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_request_eventually_sets_last_used_at() {
    let gateway = Setup::new()
        .provider(ProviderType::ChatCompletion, &["ok"])
        .config(|config| config.last_used_flush_ms = 20)
        .start()
        .await;
    assert_eq!(last_used_at(&gateway).await, None);
    let before = clock::now();
    let (status, _, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
    assert_eq!(status, 200);
    assert!(eventually(|| async { last_used_at(&gateway).await.is_some() }).await);
    let used = last_used_at(&gateway).await.unwrap();
    assert!(used >= before, "{used} is not after {before}");
    // The flush is counted once its transaction is done, a moment after the row is visible.
    assert!(eventually(|| async { gateway.last_used.flushes() >= 1 }).await);
}

#[tokio::test]
async fn a_burst_of_requests_is_one_write_and_shutdown_flushes_it() {
    let mut gateway = Setup::new()
        .provider(ProviderType::ChatCompletion, &["ok"])
        .config(|config| config.last_used_flush_ms = 3_600_000)
        .start()
        .await;
    for _ in 0..20 {
        let (status, _, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
        assert_eq!(status, 200);
        let (status, _, _) = gateway.json("/v1/models", &[X_API_KEY], "").await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        last_used_at(&gateway).await,
        None,
        "the hot path never writes"
    );
    assert_eq!(gateway.last_used.flushes(), 0);
    gateway.stop().await;
    assert!(eventually(|| async { last_used_at(&gateway).await.is_some() }).await);
    assert!(eventually(|| async { gateway.last_used.flushes() >= 1 }).await);
    assert_eq!(gateway.last_used.flushes(), 1, "one batch for 40 uses");
    assert_eq!(gateway.last_used.rows_written(), 1, "one row for one key");
}

#[tokio::test]
async fn plugin_failures_are_counted_apart_from_refusals() {
    use monoize::plugins::embedded::paths;
    for (router, code, failures) in [
        (paths::TRAP_ROUTER, "plugin_failed", 1.0),
        (paths::ILLEGAL_PLAN_ROUTER, "plugin_failed", 1.0),
        (paths::REFUSE_ALL_ROUTER, "routing_failed", 0.0),
    ] {
        let gateway = Setup::new()
            .provider(ProviderType::ChatCompletion, &["ok"])
            .config(move |config| config.routing_plugin = Some(router.into()))
            .start()
            .await;
        let (status, body, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
        assert_eq!(status, 500, "{router}: {body}");
        assert_eq!(body["error"]["code"], code, "{router}: {body}");
        let text = gateway.metrics().await;
        let labels = format!(r#"{{plugin="{router}",call="route"}}"#);
        assert_eq!(
            sample(
                &text,
                &format!("monoize_plugin_call_duration_seconds_count{labels}")
            ),
            1.0,
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                &format!("monoize_plugin_call_failures_total{labels}")
            ),
            failures,
            "{router}\n{text}"
        );
        assert!(gateway.mock.seen().is_empty());
    }
}

#[tokio::test]
async fn a_plugin_computing_for_its_whole_bound_does_not_hold_up_its_threads_other_connections() {
    use monoize::plugins::embedded::paths;
    // One connection thread, so both connections below are served by the same thread.
    let gateway = Setup::new()
        .provider(ProviderType::ChatCompletion, &["ok"])
        .config(|config| {
            config.routing_plugin = Some(paths::LOOP_ROUTER.into());
            config.plugin_timeout_ms = 2_000;
            config.server_threads = Some(1);
        })
        .start()
        .await;
    let mut looping = std::pin::pin!(gateway.json("/v1/chat/completions", &[BEARER], CHAT));
    // Let the looping call start first, then ask on a second connection for something no
    // plugin takes part in: it is answered while the router still loops.
    tokio::select! {
        biased;
        (status, body, _) = &mut looping => panic!("the looping call ended first: {status} {body}"),
        () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
    }
    tokio::select! {
        biased;
        (status, body, _) = gateway.json("/v1/models", &[BEARER], "") => {
            assert_eq!(status, 200, "{body}");
        }
        (status, body, _) = &mut looping => {
            panic!("the other connection waited for the looping call: {status} {body}")
        }
    }
    let (status, body, _) = looping.await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "plugin_failed", "{body}");
}

#[tokio::test]
async fn browsers_may_call_the_api_from_any_origin_but_not_the_dashboard() {
    let gateway = start(&[(ProviderType::ChatCompletion, &["ok"])], |_| {}).await;
    let origin = ("origin", "https://chat.example");
    for path in [
        "/v1/chat/completions",
        "/api/v1/messages",
        "/v1/models",
        "/v1/models/m",
    ] {
        let asked = (
            "access-control-request-headers",
            "authorization, content-type, x-custom",
        );
        let method = ("access-control-request-method", "POST");
        let preflight = gateway
            .send_as("OPTIONS", path, &[origin, asked, method], "")
            .await;
        assert_eq!(preflight.status(), 204, "{path}");
        let headers = preflight.headers();
        assert_eq!(headers["access-control-allow-origin"], "*");
        assert_eq!(
            headers["access-control-allow-headers"],
            "authorization, content-type, x-custom"
        );
        assert!(
            headers["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("POST")
        );
    }
    assert!(gateway.mock.seen().is_empty(), "a preflight goes nowhere");
    // The answers themselves, errors included, are readable from the page.
    for (headers, expected) in [(vec![BEARER, origin], 200), (vec![origin], 401)] {
        let response = gateway.send("/v1/chat/completions", &headers, CHAT).await;
        assert_eq!(response.status(), expected);
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        let exposed = response.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap();
        assert!(exposed.contains("x-request-id"), "{exposed}");
    }
    // The dashboard has a session cookie: same-origin only.
    let dashboard = gateway
        .send_as("OPTIONS", "/api/dashboard/auth/login", &[origin], "")
        .await;
    assert!(
        !dashboard
            .headers()
            .contains_key("access-control-allow-origin")
    );
    let login = gateway
        .send(
            "/api/dashboard/auth/login",
            &[origin],
            r#"{"username":"x","password":"y"}"#,
        )
        .await;
    assert!(!login.headers().contains_key("access-control-allow-origin"));
}

/// Streams a Responses API request to its end; answers the id of the response its events name.
async fn streamed_response_id(gateway: &Gateway, body: &str) -> String {
    let text = gateway.text("/v1/responses", &[BEARER], body).await;
    assert!(text.contains("response.completed"), "{text}");
    let created = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .find_map(|data| serde_json::from_str::<Value>(data).ok())
        .unwrap();
    created["response"]["id"].as_str().unwrap().to_owned()
}

fn last_path(gateway: &Gateway) -> String {
    gateway.mock.seen().last().unwrap().path.clone()
}

#[tokio::test]
async fn a_responses_continuation_reaches_the_channel_that_stored_its_response_and_no_other_user() {
    // The router prefers the first provider; while it fails, the second serves.
    let gateway = Setup::new()
        .provider(ProviderType::Responses, &["flaky"])
        .provider(ProviderType::Responses, &["ok"])
        .start()
        .await;
    let continuing = |id: &str, stream: bool| {
        json!({"model": "m", "input": "and then?", "previous_response_id": id, "stream": stream})
            .to_string()
    };
    gateway.mock.set_failing(true);
    let (status, first, _) = gateway
        .json("/v1/responses", &[BEARER], r#"{"model":"m","input":"hi"}"#)
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(last_path(&gateway), "/ok/v1/responses");
    let first_id = first["id"].as_str().unwrap().to_owned();
    gateway.mock.set_failing(false);
    // The first provider is well again: a new conversation goes to it, a continuation of a
    // response the second stored goes to the second (which alone can read it).
    let (status, body, _) = gateway
        .json("/v1/responses", &[BEARER], r#"{"model":"m","input":"hi"}"#)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(last_path(&gateway), "/flaky/v1/responses");
    let (status, body, _) = gateway
        .json("/v1/responses", &[BEARER], &continuing(&first_id, false))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(last_path(&gateway), "/ok/v1/responses");
    assert_eq!(
        gateway.mock.seen().last().unwrap().body["previous_response_id"],
        first_id.as_str()
    );
    // The same when the response was streamed: its id is read from the stream's events.
    gateway.mock.set_failing(true);
    let streamed =
        streamed_response_id(&gateway, r#"{"model":"m","input":"hi","stream":true}"#).await;
    assert_eq!(last_path(&gateway), "/ok/v1/responses");
    gateway.mock.set_failing(false);
    streamed_response_id(&gateway, &continuing(&streamed, true)).await;
    assert_eq!(last_path(&gateway), "/ok/v1/responses");
    // A response not stored upstream (`store: false`), or one the gateway never served (the
    // channel's account may hold responses made outside Monoize), is not continued: answered
    // as OpenAI answers an unknown id, and nothing goes upstream.
    let (status, unstored, _) = gateway
        .json(
            "/v1/responses",
            &[BEARER],
            r#"{"model":"m","input":"hi","store":false}"#,
        )
        .await;
    assert_eq!(status, 200, "{unstored}");
    let requests_before = gateway.mock.seen().len();
    for id in [unstored["id"].as_str().unwrap(), "resp_never_served"] {
        let (status, body, _) = gateway
            .json("/v1/responses", &[BEARER], &continuing(id, false))
            .await;
        assert_eq!(status, 400, "{id}: {body}");
        assert_eq!(body["error"]["code"], "previous_response_not_found");
    }
    assert_eq!(gateway.mock.seen().len(), requests_before);
    // Another user of the same channels may not continue it: answered as OpenAI answers an id
    // it does not know, and nothing goes upstream.
    let other_key = "sk-other-user-0123456789abcdef";
    seed_other_user(&gateway, "bob", other_key).await;
    let requests_before = gateway.mock.seen().len();
    let bearer = format!("Bearer {other_key}");
    for id in [&first_id, &streamed] {
        let (status, body, response) = gateway
            .json(
                "/v1/responses",
                &[("authorization", bearer.as_str())],
                &continuing(id, false),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["code"], "previous_response_not_found");
        assert_eq!(body["error"]["param"], "previous_response_id");
        assert_eq!(
            body["error"]["message"],
            format!("Previous response with id '{id}' not found.")
        );
        assert!(response.headers().contains_key("x-request-id"));
    }
    assert_eq!(gateway.mock.seen().len(), requests_before);
    // Its own conversations it may have.
    let (status, body, _) = gateway
        .json(
            "/v1/responses",
            &[("authorization", bearer.as_str())],
            r#"{"model":"m","input":"hi"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // A background response would be fetched later, outside the request billed for it.
    let requests_before = gateway.mock.seen().len();
    for stream in [false, true] {
        let background = json!({"model": "m", "input": "hi", "background": true, "stream": stream});
        let (status, body, _) = gateway
            .json("/v1/responses", &[BEARER], &background.to_string())
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "unsupported_parameter");
        assert_eq!(body["error"]["param"], "background");
    }
    assert_eq!(gateway.mock.seen().len(), requests_before);
    let (status, body, _) = gateway
        .json(
            "/v1/responses",
            &[BEARER],
            r#"{"model":"m","input":"hi","background":false}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn housekeeping_forgets_the_owner_of_a_response_past_its_retention_and_keeps_the_rest() {
    // Memory holds one response's owner, so the database is what knows the older one.
    let gateway = Setup::new()
        .provider(ProviderType::Responses, &["ok"])
        .config(|config| {
            config.response_affinity_capacity = 1;
            config.stored_response_retention_days = 30;
            config.housekeeping_interval_ms = 50;
        })
        .start()
        .await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, body, _) = gateway
            .json("/v1/responses", &[BEARER], r#"{"model":"m","input":"hi"}"#)
            .await;
        assert_eq!(status, 200, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let stored = || async {
        gateway
            .db
            .read(|c| {
                Ok(
                    c.query_row("SELECT count(*) FROM stored_responses", [], |row| {
                        row.get::<_, i64>(0)
                    })?,
                )
            })
            .await
            .unwrap()
    };
    assert_eq!(stored().await, 2);
    // The first was served 31 days ago.
    let long_ago = clock::days_from_now(-31);
    gateway
        .db
        .write(move |tx| {
            Ok(tx.execute(
                "UPDATE stored_responses SET created_at = ?1 WHERE created_at = \
                 (SELECT min(created_at) FROM stored_responses)",
                [long_ago],
            )?)
        })
        .await
        .unwrap();
    assert!(eventually(|| async { stored().await == 1 }).await);
    // Its user may continue the recent one; the forgotten one is now a response the gateway
    // does not know.
    let continuing = |id: &str| {
        json!({"model": "m", "input": "and then?", "previous_response_id": id}).to_string()
    };
    let answers = [(&ids[0], 400), (&ids[1], 200)];
    for (id, expected) in answers {
        let (status, body, _) = gateway
            .json("/v1/responses", &[BEARER], &continuing(id))
            .await;
        assert_eq!(status, expected, "{id}: {body}");
    }
}

#[tokio::test]
async fn a_clients_query_string_reaches_the_upstream_without_the_monoize_key_in_it() {
    let gateway = Setup::new()
        .provider(ProviderType::Messages, &["ok"])
        .provider(ProviderType::ChatCompletion, &["ok"])
        .start()
        .await;
    // The Anthropic SDKs' beta calls and Claude Code send `?beta=true`; a pair that carries the
    // client's own key, plainly or percent-encoded, is dropped on the way.
    let encoded_key = KEY.replace('-', "%2D");
    let message = r#"{"model":"m","messages":[],"max_tokens":5}"#;
    let cases = [
        (
            format!("/v1/messages?beta=true&leak={KEY}"),
            message,
            Some("beta=true"),
        ),
        (
            format!("/api/v1/messages?key={encoded_key}&beta=true&x=a%20b"),
            message,
            Some("beta=true&x=a%20b"),
        ),
        (format!("/v1/messages?key={KEY}"), message, None),
        ("/v1/messages?".to_owned(), message, None),
        (
            "/v1/chat/completions?api-version=2024-10-21".to_owned(),
            r#"{"model":"m","messages":[]}"#,
            Some("api-version=2024-10-21"),
        ),
    ];
    for (path, body, expected) in cases {
        let (status, answer, _) = gateway.json(&path, &[X_API_KEY], body).await;
        assert_eq!(status, 200, "{path}: {answer}");
        let seen = gateway.mock.seen();
        let forwarded = seen.last().unwrap();
        assert_eq!(forwarded.query.as_deref(), expected, "{path}");
        assert!(!forwarded.path.contains('?'), "{path}");
        assert!(!format!("{forwarded:?}").contains(KEY), "{path}");
    }
}

#[tokio::test]
async fn claude_codes_token_counts_are_forwarded_never_billed_and_never_held_against_a_channel() {
    // The first channel is an Anthropic-compatible upstream without the endpoint.
    let gateway = Setup::new()
        .provider(ProviderType::Messages, &["404"])
        .provider(ProviderType::Messages, &["ok"])
        .start()
        .await;
    let count = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    for (round, path) in [
        "/v1/messages/count_tokens?beta=true",
        "/api/v1/messages/count_tokens",
        "/v1/messages/count_tokens",
        "/v1/messages/count_tokens",
    ]
    .into_iter()
    .enumerate()
    {
        let (status, body, response) = gateway.json(path, &[X_API_KEY], count).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"input_tokens": 42}));
        assert!(response.headers().contains_key("request-id"));
        // Each time both channels are asked: a 404 here is not held against the first one
        // (it would be tripped by the third).
        assert_eq!(gateway.mock.seen_in("404"), round + 1);
        assert_eq!(gateway.mock.seen_in("ok"), round + 1);
    }
    let seen = gateway.mock.seen();
    assert_eq!(seen[1].query.as_deref(), Some("beta=true"));
    let counted = seen.last().unwrap();
    assert_eq!(counted.path, "/ok/v1/messages/count_tokens");
    assert_eq!(counted.headers["x-api-key"], "sk-upstream-secret-1-0");
    assert_eq!(counted.headers["anthropic-version"], "2023-06-01");
    assert_eq!(counted.body["model"], "up-m");
    assert!(!format!("{:?}", counted.headers).contains(KEY));
    // Counting is free upstream: no ledger row, where a message writes one.
    let user_id = gateway.user_id.clone();
    let rows = |gateway: &Gateway| {
        let user_id = user_id.clone();
        let db = gateway.db.clone();
        async move {
            db.read(move |c| monoize::db::ledger::list(c, Some(&user_id), 10, None))
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(rows(&gateway).await, 0);
    let (status, body, _) = gateway
        .json(
            "/v1/messages",
            &[X_API_KEY],
            r#"{"model":"m","messages":[],"max_tokens":5}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(rows(&gateway).await, 1);
    // The same key policy and the Anthropic dialect as messages.
    let (status, body, _) = gateway
        .json(
            "/v1/messages/count_tokens",
            &[("x-api-key", "sk-wrong-0123456789abcdef")],
            count,
        )
        .await;
    assert_eq!(status, 401);
    assert_anthropic_error(&body, "authentication_error");
    let (status, body, _) = gateway
        .json(
            "/v1/messages/count_tokens",
            &[X_API_KEY],
            r#"{"model":"nope"}"#,
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_anthropic_error(&body, "not_found_error");
    let metrics = gateway.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"monoize_requests_total{endpoint="messages_count_tokens",status="200"}"#
        ),
        4.0,
        "{metrics}"
    );
}

/// Sends `body` with `Content-Encoding: coding` to `path`: `(status, JSON)`.
async fn send_encoded(gateway: &Gateway, path: &str, coding: &str, body: Vec<u8>) -> (u16, Value) {
    let request = hyper::Request::post(format!("{}{path}", gateway.url()))
        .header("authorization", BEARER.1)
        .header("content-type", "application/json")
        .header("content-encoding", coding)
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let response = tokio::time::timeout(WAIT, client.request(request))
        .await
        .unwrap()
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn a_body_sent_compressed_as_codex_sends_it_is_read_and_forwarded_plain() {
    use std::io::Write;
    let gateway = start(&[(ProviderType::Responses, &["ok"])], |_| {}).await;
    let json = br#"{"model":"m","input":"hi","extra":{"kept":true}}"#;
    let gzip = {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(json).unwrap();
        encoder.finish().unwrap()
    };
    for (coding, body) in [
        ("zstd", zstd::encode_all(&json[..], 3).unwrap()),
        ("gzip", gzip),
    ] {
        let (status, answer) = send_encoded(&gateway, "/v1/responses", coding, body).await;
        assert_eq!(status, 200, "{coding}: {answer}");
        let seen = gateway.mock.seen();
        let forwarded = seen.last().unwrap();
        assert_eq!(forwarded.body["extra"], json!({"kept": true}), "{coding}");
        assert_eq!(forwarded.body["model"], "up-m");
        assert!(
            !forwarded.headers.contains_key("content-encoding"),
            "{coding}: the upstream gets the plain JSON, so no coding is named"
        );
    }
    let forwarded = gateway.mock.seen().len();
    // The harness caps bodies at 4096 bytes: decoded ones too, however small they came.
    let expanding = format!(r#"{{"model":"m","input":"{}"}}"#, " ".repeat(1 << 20));
    let bomb = zstd::encode_all(expanding.as_bytes(), 19).unwrap();
    assert!(bomb.len() < 4096);
    let (status, answer) = send_encoded(&gateway, "/v1/responses", "zstd", bomb).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "request_too_large");
    let (status, answer) = send_encoded(&gateway, "/v1/responses", "zstd", json.to_vec()).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["type"], "invalid_request_error");
    let (status, answer) = send_encoded(&gateway, "/v1/responses", "br", json.to_vec()).await;
    assert_eq!(status, 415, "{answer}");
    assert_eq!(answer["error"]["code"], "unsupported_content_encoding");
    let (status, answer) = send_encoded(&gateway, "/v1/messages", "br", json.to_vec()).await;
    assert_eq!(status, 415, "{answer}");
    assert_anthropic_error(&answer, "invalid_request_error");
    assert_eq!(
        gateway.mock.seen().len(),
        forwarded,
        "nothing refused went upstream"
    );
}

#[tokio::test]
async fn a_stored_response_is_retrieved_listed_and_deleted_on_its_channel_by_its_user_alone() {
    let gateway = Setup::new()
        .provider(ProviderType::Responses, &["flaky"])
        .provider(ProviderType::Responses, &["ok"])
        .start()
        .await;
    gateway.mock.set_failing(true);
    let (status, created, _) = gateway
        .json("/v1/responses", &[BEARER], r#"{"model":"m","input":"hi"}"#)
        .await;
    assert_eq!(status, 200, "{created}");
    gateway.mock.set_failing(false);
    let id = created["id"].as_str().unwrap().to_owned();
    for (method, path, upstream_path, query) in [
        (
            "GET",
            format!("/v1/responses/{id}"),
            format!("/ok/v1/responses/{id}"),
            None,
        ),
        (
            "GET",
            format!("/api/v1/responses/{id}/input_items?limit=2&order=asc"),
            format!("/ok/v1/responses/{id}/input_items"),
            Some("limit=2&order=asc"),
        ),
        (
            "DELETE",
            format!("/v1/responses/{id}"),
            format!("/ok/v1/responses/{id}"),
            None,
        ),
    ] {
        let response = gateway.send_as(method, &path, &[BEARER], "").await;
        assert_eq!(response.status(), 200, "{method} {path}");
        assert!(response.headers().contains_key("x-request-id"));
        let seen = gateway.mock.seen();
        let forwarded = seen.last().unwrap();
        assert_eq!(forwarded.method.as_str(), method);
        assert_eq!(forwarded.path, upstream_path);
        assert_eq!(forwarded.query.as_deref(), query);
        assert_eq!(
            forwarded.headers["authorization"],
            "Bearer sk-upstream-secret-1-0"
        );
    }
    let forwarded = gateway.mock.seen().len();
    // Another user, an id never served, and what is not a stored response's resource.
    let other_key = "sk-stranger-0123456789abcdef";
    seed_other_user(&gateway, "carol", other_key).await;
    let stranger = format!("Bearer {other_key}");
    for (headers, path, status, code) in [
        (
            [("authorization", stranger.as_str())],
            format!("/v1/responses/{id}"),
            404,
            "response_not_found",
        ),
        (
            [BEARER],
            "/v1/responses/resp_never_served".to_owned(),
            404,
            "response_not_found",
        ),
        (
            [BEARER],
            format!("/v1/responses/{id}/elsewhere"),
            404,
            "unknown_url",
        ),
    ] {
        let (got, body, _) = gateway.json(&path, &headers, "").await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}");
    }
    let (status, body, _) = gateway.json(&format!("/v1/responses/{id}"), &[], "").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        gateway.mock.seen().len(),
        forwarded,
        "nothing went upstream"
    );
}
