//! The gateway against upstreams that fail (DESIGN §5): fail-forward by fault (statuses,
//! refused connections, timeouts), nothing switching after a stream's first byte, a client
//! that goes away cancelling the upstream, and passive health tripping and recovering.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

mod gateway_harness;

use http_body_util::BodyExt;
use monoize::db::routing::ProviderType;
use monoize_tests::mock_upstream::GZIPPED_BODY;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use gateway_harness::{BEARER, KEY, Setup, WAIT, eventually, refused_base_url, sample, start};

const CHAT: &str = r#"{"model":"m"}"#;
const CHAT_STREAM: &str = r#"{"model":"m","stream":true}"#;

fn paths(gateway: &gateway_harness::Gateway) -> Vec<String> {
    gateway
        .mock
        .seen()
        .into_iter()
        .map(|seen| seen.path)
        .collect()
}

#[tokio::test]
async fn fail_forward_skips_5xx_429_401_403_404_and_timeouts() {
    let gateway = start(
        &[
            (ProviderType::ChatCompletion, &["500"]),
            (ProviderType::ChatCompletion, &["429"]),
            (ProviderType::ChatCompletion, &["401"]),
            (ProviderType::ChatCompletion, &["403", "404"]),
            (ProviderType::ChatCompletion, &["slow"]),
            (ProviderType::ChatCompletion, &["ok"]),
        ],
        |_| {},
    )
    .await;
    let (status, body, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
    assert_eq!(status, 200, "{body}");
    let paths = paths(&gateway);
    assert_eq!(paths.len(), 7, "{paths:?}");
    assert_eq!(paths.last().unwrap(), "/ok/v1/chat/completions");
    let metrics = gateway.metrics().await;
    for (outcome, expected) in [
        ("upstream_status", 2.0),
        ("rate_limited", 1.0),
        ("bad_key", 2.0),
        ("timeout", 1.0),
        ("served", 1.0),
    ] {
        let series = format!(r#"monoize_upstream_attempts_total{{outcome="{outcome}"}}"#);
        assert_eq!(sample(&metrics, &series), expected, "{series}\n{metrics}");
    }
}

#[tokio::test]
async fn a_refused_connection_moves_on_to_the_next_channel() {
    let refused = refused_base_url();
    let gateway = Setup::new()
        .provider(ProviderType::ChatCompletion, &[refused.base_url.as_str()])
        .provider(ProviderType::Messages, &["ok"])
        .provider(ProviderType::ChatCompletion, &["ok"])
        .start()
        .await;
    let (status, body, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(paths(&gateway), vec!["/ok/v1/chat/completions"]);
    let metrics = gateway.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            r#"monoize_upstream_attempts_total{outcome="connection_failed"}"#
        ),
        1.0
    );
    let alone = Setup::new()
        .provider(ProviderType::ChatCompletion, &[refused.base_url.as_str()])
        .start()
        .await;
    let (status, body, _) = alone.json("/v1/chat/completions", &[BEARER], CHAT).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_error");
    assert!(!body.to_string().contains("127.0.0.1"), "{body}");
}

#[tokio::test]
async fn a_stream_silent_past_the_first_byte_timeout_moves_on() {
    let gateway = start(
        &[
            (ProviderType::ChatCompletion, &["slowstream"]),
            (ProviderType::ChatCompletion, &["ok"]),
        ],
        |_| {},
    )
    .await;
    let text = gateway
        .text("/v1/chat/completions", &[BEARER], CHAT_STREAM)
        .await;
    assert!(text.contains("one") && text.contains("[DONE]"), "{text}");
    assert_eq!(
        paths(&gateway),
        vec!["/slowstream/v1/chat/completions", "/ok/v1/chat/completions"]
    );
}

#[tokio::test]
async fn a_stream_cut_after_its_first_byte_does_not_switch_channels() {
    let gateway = start(
        &[
            (ProviderType::ChatCompletion, &["cut"]),
            (ProviderType::ChatCompletion, &["ok"]),
        ],
        |_| {},
    )
    .await;
    let response = gateway
        .send("/v1/chat/completions", &[BEARER], CHAT_STREAM)
        .await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut text = String::new();
    let mut failed = false;
    while let Some(frame) = tokio::time::timeout(WAIT, body.frame()).await.unwrap() {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    text.push_str(std::str::from_utf8(&data).unwrap());
                }
            }
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(text.contains("one"), "the first event arrived: {text}");
    assert!(!text.contains("[DONE]"), "{text}");
    assert!(failed, "the client sees the stream cut, not complete");
    assert_eq!(paths(&gateway), vec!["/cut/v1/chat/completions"]);
}

#[tokio::test]
async fn a_stream_silent_past_the_idle_timeout_is_cut_and_not_switched() {
    let gateway = Setup::new()
        .provider(ProviderType::ChatCompletion, &["silent"])
        .provider(ProviderType::ChatCompletion, &["ok"])
        .config(|config| config.upstream_idle_timeout_ms = 200)
        .start()
        .await;
    let response = gateway
        .send("/v1/chat/completions", &[BEARER], CHAT_STREAM)
        .await;
    assert_eq!(response.status(), 200);
    let ended = tokio::time::timeout(WAIT, response.into_body().collect())
        .await
        .expect("the idle timeout ends the stream");
    assert!(ended.is_err(), "the client sees the stream cut");
    assert!(
        gateway.mock.wait_cancelled(1, WAIT).await,
        "the silent upstream request is dropped"
    );
    assert_eq!(paths(&gateway), vec!["/silent/v1/chat/completions"]);
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_request() {
    for mode in ["endless", "silent"] {
        client_goes_away(mode).await;
    }
}

/// A streamed chat request, as a client writes it on the wire.
fn raw_stream_request() -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{CHAT_STREAM}",
        BEARER.1,
        CHAT_STREAM.len()
    )
}

#[tokio::test]
async fn a_client_that_stops_reading_its_stream_is_let_go_after_the_idle_timeout() {
    let gateway = Setup::new()
        .provider(ProviderType::ChatCompletion, &["flood"])
        .config(|config| config.upstream_idle_timeout_ms = 300)
        .start()
        .await;
    // A client that sends its request and never reads a byte of the answer, though it stays
    // connected: the socket buffers fill, then the relay's, then it waits on the client.
    let mut client = TcpStream::connect(gateway.address).await.unwrap();
    client
        .write_all(raw_stream_request().as_bytes())
        .await
        .unwrap();
    assert!(
        gateway.mock.wait_cancelled(1, WAIT).await,
        "the upstream request of a client that takes nothing is dropped"
    );
    drop(client);
}

async fn client_goes_away(mode: &str) {
    let gateway = start(&[(ProviderType::ChatCompletion, &[mode])], |_| {}).await;
    let mut client = TcpStream::connect(gateway.address).await.unwrap();
    client
        .write_all(raw_stream_request().as_bytes())
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("one") {
        let read = tokio::time::timeout(WAIT, client.read(&mut buffer))
            .await
            .unwrap()
            .unwrap();
        assert!(read > 0, "the gateway closed first");
        received.extend_from_slice(&buffer[..read]);
    }
    assert!(String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"));
    assert_eq!(
        gateway.mock.cancelled(),
        0,
        "the upstream stream is still read"
    );
    drop(client);
    assert!(
        gateway.mock.wait_cancelled(1, WAIT).await,
        "the {mode} upstream request was not cancelled"
    );
    assert_eq!(gateway.mock.seen().len(), 1);
}

#[tokio::test]
async fn consecutive_failures_trip_a_channel_for_its_cooldown() {
    let gateway = start(
        &[
            (ProviderType::ChatCompletion, &["500"]),
            (ProviderType::ChatCompletion, &["ok"]),
        ],
        |_| {},
    )
    .await;
    for request in 1..=5 {
        let (status, body, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
        assert_eq!(status, 200, "{body}");
        let expected = request.min(3);
        assert_eq!(
            gateway.mock.seen_in("500"),
            expected,
            "request {request}: three failures trip it"
        );
        assert_eq!(gateway.mock.seen_in("ok"), request);
    }
    // Cooling down: `/metrics` shows it, for an operator to alert on.
    let metrics = gateway.metrics().await;
    for (series, expected) in [
        (
            r#"monoize_channel_healthy{provider="p0",channel="p0-c0-500"}"#,
            0.0,
        ),
        (
            r#"monoize_channel_consecutive_failures{provider="p0",channel="p0-c0-500"}"#,
            3.0,
        ),
        (
            r#"monoize_channel_healthy{provider="p1",channel="p1-c0-ok"}"#,
            1.0,
        ),
    ] {
        assert_eq!(sample(&metrics, series), expected, "{series}\n{metrics}");
    }
}

#[tokio::test]
async fn a_client_error_the_request_caused_passes_through_and_never_counts_against_a_channel() {
    for mode in ["431", "415", "409"] {
        let gateway = start(
            &[
                (ProviderType::ChatCompletion, &[mode]),
                (ProviderType::ChatCompletion, &["ok"]),
            ],
            |_| {},
        )
        .await;
        // Past the failure threshold (3): counted against the channel, these would trip it.
        for request in 1..=4 {
            let (status, body, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
            assert_eq!(status.to_string(), mode, "{body}");
            assert_eq!(
                body["error"]["message"], "the mock refuses with this status",
                "the upstream's answer passes through"
            );
            assert_eq!(gateway.mock.seen_in(mode), request, "{mode}: never benched");
        }
        assert_eq!(gateway.mock.seen_in("ok"), 0, "{mode} is not retried");
    }
}

#[tokio::test]
async fn an_upstream_out_of_credit_moves_on_to_the_next_channel() {
    let gateway = start(
        &[
            (ProviderType::ChatCompletion, &["402"]),
            (ProviderType::ChatCompletion, &["ok"]),
        ],
        |_| {},
    )
    .await;
    let (status, body, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        paths(&gateway),
        ["/402/v1/chat/completions", "/ok/v1/chat/completions"]
    );
}

#[tokio::test]
async fn a_whole_answer_that_breaks_off_or_is_not_json_moves_on_to_the_next_channel() {
    for (mode, outcome) in [("cut", "body_failed"), ("notjson", "not_an_api")] {
        let gateway = start(
            &[
                (ProviderType::ChatCompletion, &[mode]),
                (ProviderType::ChatCompletion, &["ok"]),
            ],
            |_| {},
        )
        .await;
        let (status, body, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
        assert_eq!(status, 200, "{mode}: {body}");
        assert_eq!(body["object"], "chat.completion", "{mode}: {body}");
        assert_eq!(
            paths(&gateway),
            vec![
                format!("/{mode}/v1/chat/completions"),
                "/ok/v1/chat/completions".to_owned()
            ]
        );
        let metrics = gateway.metrics().await;
        let series = format!(r#"monoize_upstream_attempts_total{{outcome="{outcome}"}}"#);
        assert_eq!(sample(&metrics, &series), 1.0, "{mode}: {metrics}");
    }
}

#[tokio::test]
async fn a_whole_answer_larger_than_the_gateway_holds_is_a_502_and_no_channels_fault() {
    let gateway = start(
        &[
            (ProviderType::ChatCompletion, &["huge"]),
            (ProviderType::ChatCompletion, &["ok"]),
        ],
        |_| {},
    )
    .await;
    // More than the failure threshold (3): a fault would have benched the channel.
    for _ in 0..4 {
        let (status, body, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["error"]["code"], "answer_too_large", "{body}");
    }
    assert_eq!(gateway.mock.seen_in("huge"), 4, "never benched");
    assert_eq!(
        gateway.mock.seen_in("ok"),
        0,
        "another channel would answer as much"
    );
    let metrics = gateway.metrics().await;
    let series = r#"monoize_upstream_attempts_total{outcome="too_large"}"#;
    assert_eq!(sample(&metrics, series), 4.0, "{metrics}");
}

#[tokio::test]
async fn a_compressed_whole_answer_is_relayed_as_it_came_not_judged_as_json() {
    let gateway = start(
        &[
            (ProviderType::ChatCompletion, &["gzipped"]),
            (ProviderType::ChatCompletion, &["ok"]),
        ],
        |_| {},
    )
    .await;
    let response = gateway.send("/v1/chat/completions", &[BEARER], CHAT).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&bytes[..], GZIPPED_BODY);
    assert_eq!(gateway.mock.seen_in("ok"), 0, "the first channel served");
}

#[tokio::test]
async fn a_web_page_answered_with_200_is_the_channels_fault_and_the_next_one_serves() {
    for (body, path) in [
        (CHAT, "/v1/chat/completions"),
        (CHAT_STREAM, "/v1/chat/completions"),
    ] {
        let gateway = start(
            &[
                (ProviderType::ChatCompletion, &["webpage"]),
                (ProviderType::ChatCompletion, &["ok"]),
            ],
            |_| {},
        )
        .await;
        let response = gateway.send(path, &[BEARER], body).await;
        assert_eq!(response.status(), 200);
        let text = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&text);
        assert!(!text.contains("Welcome"), "{text}");
        assert_eq!(gateway.mock.seen_in("webpage"), 1);
        assert_eq!(gateway.mock.seen_in("ok"), 1);
        let metrics = gateway.metrics().await;
        let series = r#"monoize_upstream_attempts_total{outcome="not_an_api"}"#;
        assert_eq!(sample(&metrics, series), 1.0, "{metrics}");
    }
}

#[tokio::test]
async fn a_clients_organization_and_project_never_reach_the_channel() {
    let gateway = start(&[(ProviderType::ChatCompletion, &["ok"])], |_| {}).await;
    let headers = [
        BEARER,
        ("openai-organization", "org-of-the-client"),
        ("openai-project", "proj-of-the-client"),
        ("x-goog-user-project", "project-of-the-client"),
        ("openai-beta", "assistants=v2"),
    ];
    let (status, body, _) = gateway.json("/v1/chat/completions", &headers, CHAT).await;
    assert_eq!(status, 200, "{body}");
    let seen = gateway.mock.seen();
    let sent = &seen[0].headers;
    for dropped in [
        "openai-organization",
        "openai-project",
        "x-goog-user-project",
    ] {
        assert!(
            !sent.contains_key(dropped),
            "{dropped} reached the upstream"
        );
    }
    assert_eq!(
        sent["openai-beta"], "assistants=v2",
        "other client headers pass"
    );
}

#[tokio::test]
async fn a_bad_key_trips_its_channel_at_once() {
    for mode in ["401", "403"] {
        let gateway = start(
            &[
                (ProviderType::ChatCompletion, &[mode]),
                (ProviderType::ChatCompletion, &["ok"]),
            ],
            |_| {},
        )
        .await;
        for _ in 0..3 {
            let (status, body, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
            assert_eq!(status, 200, "{body}");
        }
        assert_eq!(gateway.mock.seen_in(mode), 1, "{mode} trips at once");
        assert_eq!(gateway.mock.seen_in("ok"), 3);
    }
}

#[tokio::test]
async fn a_tripped_channel_is_tried_again_after_its_cooldown_and_recovers() {
    let gateway = Setup::new()
        .provider(ProviderType::ChatCompletion, &["flaky"])
        .provider(ProviderType::ChatCompletion, &["ok"])
        .config(|config| {
            config.health_failure_threshold = 2;
            config.health_cooldown_ms = 200;
        })
        .start()
        .await;
    let health = |metrics: &str| {
        let series = |name: &str, channel: &str, provider: &str| {
            sample(
                metrics,
                &format!(r#"monoize_{name}{{provider="{provider}",channel="{channel}"}}"#),
            )
        };
        (
            series("channel_healthy", "p0-c0-flaky", "p0"),
            series("channel_consecutive_failures", "p0-c0-flaky", "p0"),
            series("channel_healthy", "p1-c0-ok", "p1"),
        )
    };
    assert_eq!(health(&gateway.metrics().await), (1.0, 0.0, 1.0));
    gateway.mock.set_failing(true);
    for _ in 0..2 {
        let (status, _, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
        assert_eq!(status, 200);
    }
    assert_eq!(gateway.mock.seen_in("flaky"), 2);
    // (Whether it still cools down depends on how long this took: 200 ms.)
    assert_eq!(health(&gateway.metrics().await).1, 2.0);
    gateway.mock.set_failing(false);
    let served_by_flaky = || async {
        let (status, _, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
        assert_eq!(status, 200);
        gateway
            .mock
            .seen()
            .last()
            .is_some_and(|seen| seen.path.starts_with("/flaky/"))
    };
    assert!(
        eventually(served_by_flaky).await,
        "the channel is tried again after its cooldown"
    );
    let ok_before = gateway.mock.seen_in("ok");
    for _ in 0..3 {
        let (status, _, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        gateway.mock.seen_in("ok"),
        ok_before,
        "a success made it healthy again"
    );
    assert_eq!(health(&gateway.metrics().await), (1.0, 0.0, 1.0));
}

/// Reads until the server closes the connection, or `WAIT` runs out (`false`).
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buffer = [0_u8; 4096];
    let until_closed = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(WAIT, until_closed).await.is_ok()
}

#[tokio::test]
async fn a_client_that_trickles_its_headers_or_sits_idle_is_disconnected() {
    let gateway = Setup::new()
        .provider(ProviderType::ChatCompletion, &["ok"])
        .config(|config| config.http_header_timeout_ms = 300)
        .start()
        .await;
    // A slowloris: headers begun and never finished.
    let mut trickling = TcpStream::connect(gateway.address).await.unwrap();
    trickling
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: monoize\r\n")
        .await
        .unwrap();
    // A keep-alive connection that goes quiet after one request.
    let mut idle = TcpStream::connect(gateway.address).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: monoize\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0_u8; 1024];
    let read = idle.read(&mut answer).await.unwrap();
    assert!(answer[..read].starts_with(b"HTTP/1.1 200"));
    assert!(
        closed_by_server(&mut trickling).await,
        "the trickling client was dropped"
    );
    assert!(
        closed_by_server(&mut idle).await,
        "the idle connection was closed"
    );
    // The server itself serves on.
    let (status, body, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
    assert_eq!(status, 200, "{body}");
}

/// Sends `path` a head declaring a 200-byte body and only 20 bytes of it, then waits; answers
/// the status line and the body of what came back.
async fn withhold_body(gateway: &gateway_harness::Gateway, path: &str) -> (String, Value) {
    let mut socket = TcpStream::connect(gateway.address).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: monoize\r\nauthorization: Bearer {KEY}\r\n\
         content-type: application/json\r\ncontent-length: 200\r\n\r\n{{\"model\":\"m\",     "
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_client_that_withholds_its_body_is_answered_408_in_its_dialect() {
    let gateway = Setup::new()
        .provider(ProviderType::ChatCompletion, &["ok"])
        .config(|config| config.http_body_timeout_ms = 300)
        .start()
        .await;
    let (status, body) = withhold_body(&gateway, "/v1/chat/completions").await;
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    let (status, body) = withhold_body(&gateway, "/v1/messages").await;
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "timeout_error", "{body}");
    let (status, body) = withhold_body(&gateway, "/api/dashboard/auth/login").await;
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    assert!(gateway.mock.seen().is_empty(), "nothing went upstream");
    // A body that arrives in pieces, each in time, is read whole.
    let mut socket = TcpStream::connect(gateway.address).await.unwrap();
    let body = br#"{"model":"m","messages":[]}"#;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: monoize\r\nauthorization: Bearer {KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    for piece in body.chunks(8) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        socket.write_all(piece).await.unwrap();
    }
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

/// Reads one request (head and `content-length` body) from `socket`; `false` at its end.
async fn read_one_request(socket: &mut TcpStream) -> bool {
    let mut seen = Vec::new();
    let mut buffer = [0_u8; 4096];
    loop {
        if let Some(end) = seen.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                return true;
            }
        }
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return false,
            Ok(read) => seen.extend_from_slice(&buffer[..read]),
        }
    }
}

/// An upstream that answers the first request on each connection, keeping it alive, and
/// closes it unanswered on the second: the keep-alive race (an upstream closing an idle
/// connection just as a request goes out on it), made certain. Answers its base URL and a
/// count of the connections it accepted.
async fn closes_each_connection_after_one_answer() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let body = r#"{"id":"c","object":"chat.completion","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if read_one_request(&mut socket).await {
                    let _ = socket.write_all(answer.as_bytes()).await;
                    read_one_request(&mut socket).await;
                }
            });
        }
    });
    (format!("http://{address}"), accepted)
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_unanswered_is_sent_again_once() {
    let (base_url, accepted) = closes_each_connection_after_one_answer().await;
    let gateway = Setup::new()
        .provider(ProviderType::ChatCompletion, &[base_url.as_str()])
        .start()
        .await;
    for request in 1..=3 {
        let (status, body, _) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
        assert_eq!(status, 200, "request {request}: {body}");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "requests 2 and 3 found their pooled connection closed and went out again"
    );
    let metrics = gateway.metrics().await;
    let failed = r#"monoize_upstream_attempts_total{outcome="connection_failed"}"#;
    assert_eq!(sample(&metrics, failed), 0.0, "{metrics}");
}
