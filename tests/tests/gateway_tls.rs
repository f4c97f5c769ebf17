//! Upstreams over TLS (DESIGN §5, issue 9's "HTTP/1.1 and HTTP/2 with TLS (rustls)"): the
//! gateway reaches an HTTPS upstream whose certificate a private CA signed once the operator
//! trusts that CA (`MONOIZE_UPSTREAM_CA_FILE`), speaks HTTP/2 to it when the upstream offers it
//! by ALPN and HTTP/1.1 when not, streams and bills over either, and treats an upstream whose
//! certificate it cannot verify as a failed connection that moves on to the next channel.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

mod gateway_harness;

use http_body_util::BodyExt;
use hyper::Version;
use monoize::db::ledger;
use monoize::db::routing::ProviderType;
use monoize_tests::mock_upstream::{MockUpstream, TEST_CA_FILE};
use serde_json::Value;

use gateway_harness::{BEARER, CHAT, Gateway, Setup, WAIT, X_API_KEY};

const HTTP2_AND_HTTP1: &[&[u8]] = &[b"h2", b"http/1.1"];
const HTTP1_ONLY: &[&[u8]] = &[b"http/1.1"];

/// A gateway whose only provider (of `provider_type`) has one channel at `base_url`, trusting
/// the test CA when `trust_test_ca`.
async fn gateway_to(
    provider_type: ProviderType,
    base_urls: &[&str],
    trust_test_ca: bool,
) -> Gateway {
    Setup::new()
        .provider(provider_type, base_urls)
        .config(move |config| {
            if trust_test_ca {
                config.upstream_ca_file = Some(TEST_CA_FILE.into());
            }
        })
        .start()
        .await
}

/// Reads a streamed response to its end: its text.
async fn read_stream(
    gateway: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> String {
    let response = gateway.send(path, headers, body).await;
    assert_eq!(response.status(), 200);
    let bytes = tokio::time::timeout(WAIT, response.into_body().collect())
        .await
        .expect("the stream ends in time")
        .unwrap()
        .to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The newest ledger row's meta.
async fn last_charge_meta(gateway: &Gateway) -> Value {
    let user_id = gateway.user_id.clone();
    let rows = gateway
        .db
        .read(move |c| ledger::list(c, Some(&user_id), 1, None))
        .await
        .unwrap();
    serde_json::from_str(&rows.first().expect("a ledger row").meta_json).unwrap()
}

#[tokio::test]
async fn an_upstream_offering_http2_over_tls_is_reached_by_http2_whole_and_streamed() {
    let upstream = MockUpstream::start_tls(HTTP2_AND_HTTP1).await.unwrap();
    let base_url = upstream.base_url("ok");
    assert!(base_url.starts_with("https://127.0.0.1:"), "{base_url}");
    let gateway = gateway_to(ProviderType::ChatCompletion, &[&base_url], true).await;

    let (status, body, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "up-m");

    let text = read_stream(
        &gateway,
        "/v1/chat/completions",
        &[BEARER],
        r#"{"model":"m","stream":true}"#,
    )
    .await;
    assert!(text.contains("one") && text.contains("[DONE]"), "{text}");
    // The stream was billed on the usage the upstream reported over HTTP/2.
    let meta = last_charge_meta(&gateway).await;
    assert_eq!(meta["usage_estimated"], false, "{meta}");
    assert!(meta["completion_tokens"].as_u64().unwrap() > 0, "{meta}");

    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.version, Version::HTTP_2, "{}", request.path);
        assert_eq!(
            request.headers["authorization"],
            "Bearer sk-upstream-secret-0-0"
        );
    }
}

#[tokio::test]
async fn an_upstream_offering_only_http1_over_tls_is_reached_by_http1() {
    let upstream = MockUpstream::start_tls(HTTP1_ONLY).await.unwrap();
    let gateway = gateway_to(ProviderType::Messages, &[&upstream.base_url("ok")], true).await;
    let (status, body, _) = gateway
        .json(
            "/v1/messages",
            &[X_API_KEY],
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let text = read_stream(
        &gateway,
        "/v1/messages",
        &[X_API_KEY],
        r#"{"model":"m","max_tokens":5,"stream":true,"messages":[]}"#,
    )
    .await;
    assert!(text.contains("message_stop"), "{text}");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.version, Version::HTTP_11, "{}", request.path);
        assert_eq!(request.headers["x-api-key"], "sk-upstream-secret-0-0");
    }
}

#[tokio::test]
async fn an_upstream_whose_certificate_is_not_trusted_is_a_failed_connection_and_the_next_channel_serves()
 {
    let untrusted = MockUpstream::start_tls(HTTP2_AND_HTTP1).await.unwrap();
    let plain = MockUpstream::start().await.unwrap();
    // Without the test CA, the Mozilla roots alone cannot verify the upstream's certificate.
    // The untrusted upstream's provider comes first, the plain one's second.
    let gateway = Setup::new()
        .provider(ProviderType::ChatCompletion, &[&untrusted.base_url("ok")])
        .provider(ProviderType::ChatCompletion, &[&plain.base_url("ok")])
        .start()
        .await;
    let (status, body, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        untrusted.seen().is_empty(),
        "no request may cross an unverified connection"
    );
    assert_eq!(plain.seen().len(), 1);
    assert_eq!(gateway.attempts("connection_failed").await, 1.0);

    // With only the untrusted channel left, the client gets the gateway's 502, which names
    // no certificate detail of the upstream.
    let alone = gateway_to(
        ProviderType::ChatCompletion,
        &[&untrusted.base_url("ok")],
        false,
    )
    .await;
    let (status, body, _) = alone.json("/v1/chat/completions", &[BEARER], CHAT).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_error", "{body}");
    assert!(untrusted.seen().is_empty());
}
