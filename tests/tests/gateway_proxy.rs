//! Upstreams through the operator's HTTP proxy (`MONOIZE_UPSTREAM_PROXY`): the gateway opens a
//! `CONNECT` tunnel with the proxy's credentials and carries the upstream's own TLS (and HTTP/2)
//! inside it, tunnels plain-`http` upstreams to their port, reaches the hosts of
//! `MONOIZE_UPSTREAM_NO_PROXY` directly, and treats a proxy that refuses the tunnel as a failed
//! connection, never showing the proxy's password.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

mod gateway_harness;

use hyper::Version;
use monoize::config::UpstreamProxy;
use monoize::db::routing::ProviderType;
use monoize_tests::mock_proxy::MockProxy;
use monoize_tests::mock_upstream::{MockUpstream, TEST_CA_FILE};

use gateway_harness::{BEARER, CHAT, Gateway, Setup};

/// What the proxy asks for: `monoize:p@ss` as Basic credentials (in a URL, `monoize:p%40ss`).
const PROXY_AUTHORIZATION: &str = "Basic bW9ub2l6ZTpwQHNz";

/// A gateway whose one provider has a channel at `base_url`, going through the proxy at
/// `proxy_url` except to `no_proxy`, trusting the test CA.
async fn gateway_via(base_url: &str, proxy_url: &str, no_proxy: &str) -> Gateway {
    let proxy = UpstreamProxy::new(proxy_url, no_proxy).unwrap();
    Setup::new()
        .provider(ProviderType::ChatCompletion, &[base_url])
        .config(move |config| {
            config.upstream_ca_file = Some(TEST_CA_FILE.into());
            config.upstream_proxy = Some(proxy);
        })
        .start()
        .await
}

#[tokio::test]
async fn an_https_upstream_is_reached_through_a_tunnel_opened_with_the_proxys_credentials() {
    let upstream = MockUpstream::start_tls(&[b"h2", b"http/1.1"])
        .await
        .unwrap();
    let proxy = MockProxy::start(Some(PROXY_AUTHORIZATION)).await.unwrap();
    let gateway = gateway_via(
        &upstream.base_url("ok"),
        &proxy.url(Some("monoize:p%40ss")),
        "",
    )
    .await;
    for _ in 0..2 {
        let (status, body, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["model"], "up-m");
    }
    // One tunnel, kept in the pool and reused; TLS and HTTP/2 ran inside it, end to end.
    let asked = proxy.asked();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(
        asked[0].target,
        format!("127.0.0.1:{}", upstream.address.port())
    );
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|request| request.version == Version::HTTP_2)
    );
    // The proxy's credentials go to the proxy, never to the upstream.
    assert!(
        seen.iter()
            .all(|request| !request.headers.contains_key("proxy-authorization"))
    );
}

#[tokio::test]
async fn a_plain_http_upstream_is_tunnelled_to_its_port() {
    let upstream = MockUpstream::start().await.unwrap();
    let proxy = MockProxy::start(None).await.unwrap();
    let gateway = gateway_via(&upstream.base_url("ok"), &proxy.url(None), "").await;
    let (status, body, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
    assert_eq!(status, 200, "{body}");
    let asked = proxy.asked();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(
        asked[0].target,
        format!("127.0.0.1:{}", upstream.address.port())
    );
    assert_eq!(asked[0].authorization, None);
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test]
async fn hosts_in_no_proxy_are_reached_directly() {
    let upstream = MockUpstream::start().await.unwrap();
    let proxy = MockProxy::start(None).await.unwrap();
    let gateway = gateway_via(
        &upstream.base_url("ok"),
        &proxy.url(None),
        "llm.corp.example, 127.0.0.0/8",
    )
    .await;
    let (status, body, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
    assert_eq!(status, 200, "{body}");
    assert!(proxy.asked().is_empty());
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test]
async fn a_proxy_that_refuses_the_tunnel_is_a_failed_connection_that_never_shows_its_password() {
    let upstream = MockUpstream::start().await.unwrap();
    let proxy = MockProxy::start(Some(PROXY_AUTHORIZATION)).await.unwrap();
    let gateway = gateway_via(
        &upstream.base_url("ok"),
        &proxy.url(Some("monoize:wrong-secret")),
        "",
    )
    .await;
    let (status, body, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_error", "{body}");
    assert!(!body.to_string().contains("wrong-secret"), "{body}");
    assert_eq!(proxy.asked().len(), 1);
    assert!(
        upstream.seen().is_empty(),
        "nothing may pass a refused tunnel"
    );
    assert_eq!(gateway.attempts("connection_failed").await, 1.0);
    assert!(!gateway.metrics().await.contains("wrong-secret"));
}
