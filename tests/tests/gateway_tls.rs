//! Upstreams over TLS (DESIGN §5, issue 9's "HTTP/1.1 and HTTP/2 with TLS (rustls)"): the
//! gateway reaches an HTTPS upstream whose certificate a private CA signed once the operator
//! trusts that CA (`MONOIZE_UPSTREAM_CA_FILE`), speaks HTTP/2 to it when the upstream offers it
//! by ALPN and HTTP/1.1 when not, streams and bills over either, and treats an upstream whose
//! certificate it cannot verify as a failed connection that moves on to the next channel. A
//! pooled connection that died silently is found by its unanswered HTTP/2 ping and replaced,
//! and every upstream socket carries TCP keep-alive.

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

use gateway_harness::{BEARER, CHAT, Gateway, Setup, WAIT, X_API_KEY, eventually};

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

/// A gateway whose only provider has one channel at the HTTP/2 upstream `base_url`, probing
/// its connections every `keepalive_ms` and giving up on an answer after 3 s.
async fn gateway_probing_every(base_url: &str, keepalive_ms: u64) -> Gateway {
    Setup::new()
        .provider(ProviderType::ChatCompletion, &[base_url])
        .config(move |config| {
            config.upstream_ca_file = Some(TEST_CA_FILE.into());
            config.upstream_keepalive_ms = keepalive_ms;
            config.upstream_first_byte_timeout_ms = 3_000;
        })
        .start()
        .await
}

#[tokio::test]
async fn a_pooled_http2_connection_that_dies_silently_is_found_by_its_ping_and_replaced() {
    let upstream = MockUpstream::start_tls(HTTP2_AND_HTTP1).await.unwrap();
    let gateway = gateway_probing_every(&upstream.base_url("ok"), 100).await;
    let (status, body, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(upstream.connections().len(), 1);

    // The pooled connection goes dead without a FIN or RST: only an unanswered ping tells.
    upstream.freeze_open_connections();
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;

    // Sent on the dead connection, the request would wait out the first-byte timeout and,
    // with no other channel, end in a 502.
    let (status, body, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        upstream.connections().len(),
        2,
        "a new connection served it"
    );
    assert_eq!(gateway.attempts("timeout").await, 0.0);
}

/// The kernel's TCP timer of the loopback connection from `local` to `remote` (`/proc/net/tcp`'s
/// `tr` column: 0 none, 1 retransmit, 2 keep-alive, 4 zero-window probe).
#[cfg(target_os = "linux")]
fn tcp_timer(local: std::net::SocketAddr, remote: std::net::SocketAddr) -> Option<String> {
    let hex = |address: std::net::SocketAddr| match address.ip() {
        std::net::IpAddr::V4(ip) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(ip.octets()),
            address.port()
        ),
        std::net::IpAddr::V6(_) => String::new(),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).find_map(|line| {
        let columns: Vec<&str> = line.split_whitespace().collect();
        (columns.get(1) == Some(&local.as_str()) && columns.get(2) == Some(&remote.as_str())).then(
            || {
                columns
                    .get(5)
                    .and_then(|timer| timer.split(':').next())
                    .unwrap_or("")
                    .to_owned()
            },
        )
    })
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn an_idle_pooled_upstream_connection_carries_tcp_keepalive() {
    let upstream = MockUpstream::start_tls(HTTP2_AND_HTTP1).await.unwrap();
    let gateway = gateway_probing_every(&upstream.base_url("ok"), 60_000).await;
    let (status, body, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
    assert_eq!(status, 200, "{body}");
    let connections = upstream.connections();
    let [gateway_end] = connections.as_slice() else {
        panic!("one connection expected: {connections:?}");
    };
    // Idle in the pool, the gateway's end of the connection waits on its keep-alive timer
    // (once the last bytes it sent are acknowledged: an armed retransmit timer shows first).
    let timer = || tcp_timer(*gateway_end, upstream.address);
    assert!(eventually(|| std::future::ready(timer().as_deref() != Some("01"))).await);
    assert_eq!(
        timer().as_deref(),
        Some("02"),
        "the gateway's socket {gateway_end} to {} has no keep-alive timer",
        upstream.address
    );
}

#[tokio::test]
async fn requests_past_the_streams_an_http2_connection_allows_go_on_another_connection() {
    // The upstream allows two streams on a connection; both are taken by streams that stay
    // open (`endless`), on the gateway's one connection thread.
    let upstream = MockUpstream::start_tls_allowing(HTTP2_AND_HTTP1, Some(2))
        .await
        .unwrap();
    let gateway = Setup::new()
        .provider(
            ProviderType::ChatCompletion,
            &[&upstream.base_url("endless")],
        )
        .config(|config| {
            config.upstream_ca_file = Some(TEST_CA_FILE.into());
            config.upstream_streams_per_connection = 2;
            config.upstream_first_byte_timeout_ms = 3_000;
            config.server_threads = Some(1);
        })
        .start()
        .await;
    let open = vec![gateway.open_stream().await, gateway.open_stream().await];
    assert_eq!(upstream.connections().len(), 1);

    // Queued on that connection, a third request would wait for a stream to end, past its
    // first-byte timeout; it goes on a connection of its own.
    let (status, body, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(upstream.connections().len(), 2);
    assert!(
        upstream
            .seen()
            .iter()
            .all(|request| request.version == Version::HTTP_2)
    );

    // A request gives its place back when its body ends: once the streams are gone, requests
    // share the first connection again instead of opening more.
    drop(open);
    assert!(upstream.wait_cancelled(2, WAIT).await);
    for _ in 0..3 {
        let (status, body, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(upstream.connections().len(), 2);
}
