//! The request log (issue 9, item 8): one structured line per request, as the binary writes it
//! with `MONOIZE_LOG_FORMAT=json`, with the request id the client was given, the model, the
//! provider and channel that served it, the upstream's own id for the request, the status,
//! the attempts and the duration; also for a request whose client went away before the answer.
//! Its own test binary: the log is caught by a global subscriber, which the server's connection
//! threads, each on a runtime of its own, all reach.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

mod gateway_harness;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use monoize::db::routing::ProviderType;
use monoize_tests::mock_upstream::UPSTREAM_REQUEST_ID;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use gateway_harness::{BEARER, CHAT, Setup, eventually};

/// Where the log goes: every line written so far.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// What this test binary's global subscriber writes, as JSON lines (set up by the first
    /// caller).
    fn global() -> Captured {
        static CAPTURED: OnceLock<Captured> = OnceLock::new();
        CAPTURED
            .get_or_init(|| {
                let captured = Captured::default();
                let writer = captured.clone();
                tracing_subscriber::fmt()
                    .json()
                    .with_writer(move || writer.clone())
                    .try_init()
                    .expect("the only subscriber of this test binary");
                captured
            })
            .clone()
    }

    /// The one request line of `request_id`, once it is logged.
    async fn line_of(&self, request_id: &str) -> Value {
        self.only_line(|line| line["fields"]["request_id"] == request_id)
            .await
    }

    /// The one request line that is `ours`, once it is logged.
    async fn only_line(&self, ours: impl Fn(&Value) -> bool) -> Value {
        let ours = &ours;
        assert!(
            eventually(|| {
                let found = self.request_lines().iter().any(ours);
                async move { found }
            })
            .await,
            "no such request line in {:?}",
            self.request_lines()
        );
        let mut lines: Vec<Value> = self.request_lines().into_iter().filter(ours).collect();
        assert_eq!(lines.len(), 1, "one line per request: {lines:?}");
        lines.remove(0)
    }

    /// The request lines (JSON) logged so far.
    fn request_lines(&self) -> Vec<Value> {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["target"] == "monoize::gateway::request")
            .collect()
    }
}

#[tokio::test]
async fn each_request_logs_one_line_with_its_ids_where_it_went_and_how_it_ended() {
    let captured = Captured::global();
    let gateway = Setup::new()
        .provider(ProviderType::ChatCompletion, &["500"])
        .provider(ProviderType::ChatCompletion, &["ok"])
        .start()
        .await;
    let (status, body, response) = gateway.json("/v1/chat/completions", &[BEARER], CHAT).await;
    assert_eq!(status, 200, "{body}");
    let request_id = response.headers()["x-request-id"].to_str().unwrap();
    let line = captured.line_of(request_id).await;
    let fields = &line["fields"];
    assert_eq!(fields["endpoint"], "chat_completions", "{fields}");
    // Who made it: the key's id and its owner, never the key itself.
    assert_eq!(fields["key_id"], gateway.key_id, "{fields}");
    assert_eq!(fields["user_id"], gateway.user_id, "{fields}");
    assert_eq!(fields["model"], "m", "{fields}");
    assert_eq!(fields["provider"], "p1", "{fields}");
    assert_eq!(fields["channel"], "p1-c0-ok", "{fields}");
    assert_eq!(
        fields["upstream_request_id"], UPSTREAM_REQUEST_ID,
        "{fields}"
    );
    assert_eq!(fields["status"], 200, "{fields}");
    assert_eq!(
        fields["attempts"], 2,
        "the 500 first, then the one that served: {fields}"
    );
    assert!(fields["duration_ms"].is_u64(), "{fields}");
    assert_eq!(fields["stream_end"], "-", "{fields}");
    // The client's id is Monoize's; the upstream's stays in the log.
    assert_ne!(request_id, UPSTREAM_REQUEST_ID);

    // A request the upstream refused (its 400 passed through) is logged with the channel that
    // refused it and the upstream's id, which the operator needs to ask the provider why.
    let refusing = Setup::new()
        .provider(ProviderType::ChatCompletion, &["400"])
        .start()
        .await;
    let (status, _, response) = refusing.json("/v1/chat/completions", &[BEARER], CHAT).await;
    assert_eq!(status, 400);
    let request_id = response.headers()["x-request-id"].to_str().unwrap();
    let line = captured.line_of(request_id).await;
    let fields = &line["fields"];
    assert_eq!(fields["status"], 400, "{fields}");
    assert_eq!(fields["provider"], "p0", "{fields}");
    assert_eq!(fields["channel"], "p0-c0-400", "{fields}");
    assert_eq!(
        fields["upstream_request_id"], UPSTREAM_REQUEST_ID,
        "{fields}"
    );
    assert_eq!(fields["attempts"], 1, "{fields}");
}

#[tokio::test]
async fn a_request_whose_client_goes_away_before_the_answer_is_logged_and_counted_as_499() {
    let captured = Captured::global();
    let gateway = Setup::new()
        .provider(ProviderType::ChatCompletion, &["slow"])
        .start()
        .await;
    // The upstream takes 5 s (under the 1 s first-byte timeout's reach only after the client
    // has long gone): the client gives up after 300 ms, as a client's own timeout would.
    let mut client = tokio::net::TcpStream::connect(gateway.address)
        .await
        .unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: monoize\r\n{}: {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{CHAT}",
        BEARER.0,
        BEARER.1,
        CHAT.len()
    );
    client.write_all(request.as_bytes()).await.unwrap();
    assert!(
        eventually(|| {
            let asked = !gateway.mock.seen().is_empty();
            async move { asked }
        })
        .await,
        "the request reached the upstream"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(client);

    let key_id = gateway.key_id.clone();
    let line = captured
        .only_line(|line| line["fields"]["key_id"] == key_id.as_str())
        .await;
    let fields = &line["fields"];
    assert_eq!(fields["status"], 499, "{fields}");
    assert_eq!(fields["endpoint"], "chat_completions", "{fields}");
    assert_eq!(fields["model"], "m", "{fields}");
    // Where it was waiting when the client went away: what the operator needs to see.
    assert_eq!(fields["provider"], "p0", "{fields}");
    assert_eq!(fields["channel"], "p0-c0-slow", "{fields}");
    assert_eq!(fields["attempts"], 1, "{fields}");
    assert_eq!(fields["upstream_request_id"], "-", "{fields}");
    assert!(
        gateway
            .metrics()
            .await
            .contains("monoize_requests_total{endpoint=\"chat_completions\",status=\"499\"} 1"),
        "counted"
    );
}
