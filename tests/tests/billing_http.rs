//! Billing seen from outside (DESIGN §6): the real server on 127.0.0.1 in-process over a
//! database seeded through the db repositories, the built-in billing plugin, and mock
//! upstreams. A limited account at or below zero is refused with `402` in its client's
//! dialect; a served request is charged in full even into debt, and the next one is refused;
//! streams are billed from the usage the host asked for, or on an estimate when the upstream
//! is cut; every request has exactly one ledger row; and the last byte of a response leaves
//! only after its charge is committed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

mod billing_support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use billing_support::{
    MODEL, Server, UPSTREAM_MODEL, WAIT, add_provider, add_user, balance, charge_of, ledger_rows,
    ledger_sum, meta, price, read_all, request_id, serve,
};
use http_body_util::BodyExt;
use monoize::app::AppState;
use monoize::billing::{SettleRequest, Usage};
use monoize::config::{Config, Dsn};
use monoize::db::ledger::LedgerKind;
use monoize::db::routing::ProviderType;
use monoize::db::{self, Database};
use monoize::gateway::wire::prompt_size::ATTACHMENT_TOKENS;
use monoize::money::NanoUsd;
use monoize::routing::{Attempt, EndpointKind};
use monoize_tests::mock_upstream::{LONG_TEXT, MockUpstream};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const KEY: &str = "sk-alice-0123456789abcdef";
const CHAT: &str = "/v1/chat/completions";
const MESSAGES: &str = "/v1/messages";
const CHAT_BODY: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
const MESSAGES_BODY: &str = r#"{"model":"m","max_tokens":5,"messages":[]}"#;
/// What the mock upstream reports for every answer: 3 prompt and 2 completion tokens, which
/// at 1 nano-USD per token and multiplier 1 cost 5.
const COST: i64 = 5;

/// A chat and a messages provider on `mock`, [`UPSTREAM_MODEL`] priced at 1 nano-USD per
/// token each way, and alice with `balance` and the key [`KEY`].
async fn seed(db: &Database, mock: &MockUpstream, balance: i64) -> String {
    add_provider(db, ProviderType::ChatCompletion, 0, &mock.base_url("ok")).await;
    add_provider(db, ProviderType::Messages, 1, &mock.base_url("ok")).await;
    price(db, 1, 1).await;
    add_user(db, "alice", balance, false, KEY).await
}

async fn start(balance: i64) -> (MockUpstream, Database, String, Server) {
    let mock = MockUpstream::start().await.unwrap();
    let db = Database::open_in_memory().unwrap();
    let alice = seed(&db, &mock, balance).await;
    let server = serve(db.clone()).await;
    (mock, db, alice, server)
}

#[tokio::test]
async fn a_limited_user_at_or_below_zero_gets_402_in_the_clients_dialect() {
    let (mock, db, _alice, server) = start(0).await;
    let (status, body, _) = server.json(CHAT, KEY, CHAT_BODY).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_balance");
    assert_eq!(body["error"]["type"], "insufficient_balance");
    assert!(body["error"]["message"].is_string());
    let (status, body, _) = server.json(MESSAGES, KEY, MESSAGES_BODY).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "billing_error");
    assert!(body["error"]["message"].is_string());

    let debtor_key = "sk-debtor-0123456789abcdef";
    let debtor = add_user(&db, "debtor", -1, false, debtor_key).await;
    let (status, body, _) = server.json(CHAT, debtor_key, CHAT_BODY).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_balance");
    let rich_key = "sk-unlimit-0123456789abcdef";
    add_user(&db, "unlimited", 0, true, rich_key).await;
    let (status, body, _) = server.json(CHAT, rich_key, CHAT_BODY).await;
    assert_eq!(status, 200, "an unlimited user at zero is served: {body}");

    assert_eq!(mock.seen().len(), 1, "no refused request went upstream");
    assert_eq!(balance(&db, &debtor).await, NanoUsd(-1));
}

#[tokio::test]
async fn overdraft_one_nano_left_is_charged_in_full_then_refused() {
    let (mock, db, alice, server) = start(1).await;
    let (status, body, request) = server.json(CHAT, KEY, CHAT_BODY).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], UPSTREAM_MODEL);
    let after = NanoUsd(1 - COST);
    assert_eq!(
        balance(&db, &alice).await,
        after,
        "charged in full, into debt"
    );
    let row = charge_of(&db, &request)
        .await
        .expect("the request's ledger row");
    assert_eq!(row.user_id, alice);
    assert_eq!(row.kind, LedgerKind::RequestCharge);
    assert_eq!(row.delta_nano_usd, NanoUsd(-COST));
    assert_eq!(row.balance_after_nano_usd, after);
    let meta = meta(&row);
    assert_eq!(meta["model"], MODEL);
    assert_eq!(meta["upstream_model"], UPSTREAM_MODEL);
    assert_eq!(meta["prompt_tokens"], 3);
    assert_eq!(meta["completion_tokens"], 2);
    assert_eq!(meta["usage_estimated"], false);
    assert_eq!(meta["request_id"], request.as_str());
    assert_eq!(ledger_sum(&db, &alice).await, after);

    let (status, body, _) = server.json(CHAT, KEY, CHAT_BODY).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_balance");
    assert_eq!(
        mock.seen().len(),
        1,
        "the refused request never went upstream"
    );
    assert_eq!(balance(&db, &alice).await, after);
}

#[tokio::test]
async fn a_stream_whose_client_asked_no_usage_is_billed_from_the_usage_the_host_asked_for() {
    let (mock, db, alice, server) = start(1_000_000).await;
    let response = server
        .send(CHAT, KEY, r#"{"model":"m","stream":true,"messages":[]}"#)
        .await;
    assert_eq!(response.status(), 200);
    let chat_request = request_id(&response);
    let read = read_all(&mut response.into_body(), String::new()).await;
    assert!(read.complete && read.text.contains("[DONE]"), "{read:?}");
    assert!(
        !read.text.contains("usage"),
        "the unasked usage chunk is dropped: {read:?}"
    );
    assert_eq!(mock.seen()[0].body["stream_options"]["include_usage"], true);

    let response = server
        .send(
            MESSAGES,
            KEY,
            r#"{"model":"m","max_tokens":5,"stream":true,"messages":[]}"#,
        )
        .await;
    assert_eq!(response.status(), 200);
    let messages_request = request_id(&response);
    let read = read_all(&mut response.into_body(), String::new()).await;
    assert!(
        read.complete && read.text.contains("message_stop"),
        "{read:?}"
    );

    for request in [chat_request, messages_request] {
        let row = charge_of(&db, &request)
            .await
            .expect("the stream's ledger row");
        assert_eq!(row.delta_nano_usd, NanoUsd(-COST), "{}", row.meta_json);
        let meta = meta(&row);
        assert_eq!(meta["prompt_tokens"], 3);
        assert_eq!(meta["completion_tokens"], 2);
        assert_eq!(meta["usage_estimated"], false);
    }
    assert_eq!(balance(&db, &alice).await, NanoUsd(1_000_000 - 2 * COST));
}

/// Alice with `balance` and the key [`KEY`], and one chat provider on the mock's `mode`
/// ([`UPSTREAM_MODEL`] priced at 1 nano-USD per token each way).
async fn start_on(mode: &str, balance: i64) -> (MockUpstream, Database, String, Server) {
    let mock = MockUpstream::start().await.unwrap();
    let db = Database::open_in_memory().unwrap();
    add_provider(&db, ProviderType::ChatCompletion, 0, &mock.base_url(mode)).await;
    price(&db, 1, 1).await;
    let alice = add_user(&db, "alice", balance, false, KEY).await;
    let server = serve(db.clone()).await;
    (mock, db, alice, server)
}

#[tokio::test]
async fn a_usage_too_large_to_believe_is_charged_on_the_estimate_and_the_answer_delivered() {
    let (_mock, db, alice, server) = start_on("absurdusage", 1_000_000).await;
    let (status, body, request) = server.json(CHAT, KEY, CHAT_BODY).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "hi");
    let row = charge_of(&db, &request)
        .await
        .expect("the request is charged");
    let meta = meta(&row);
    assert_eq!(meta["usage_estimated"], true, "{}", row.meta_json);
    assert!(row.delta_nano_usd < NanoUsd::ZERO, "{row:?}");
    assert_eq!(balance(&db, &alice).await, ledger_sum(&db, &alice).await);
}

#[tokio::test]
async fn an_upstream_that_ignores_stream_is_relayed_and_billed_as_the_json_it_answered() {
    let (_mock, db, alice, server) = start_on("nostream", 1_000).await;
    let streaming = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, body, request) = server.json(CHAT, KEY, streaming).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion", "{body}");
    let row = charge_of(&db, &request)
        .await
        .expect("the request is charged");
    let meta = meta(&row);
    assert_eq!(meta["usage_estimated"], false, "{}", row.meta_json);
    assert_eq!(row.delta_nano_usd, NanoUsd(-COST));
    assert_eq!(balance(&db, &alice).await, NanoUsd(1_000 - COST));
}

#[tokio::test]
async fn a_stream_is_over_at_its_final_event_though_the_upstream_holds_its_body_open() {
    // `serve` cuts a stream silent for 5 s; a charge held back until the upstream closed its
    // body would be cut that way, and its client would see the stream as broken.
    let mock = MockUpstream::start().await.unwrap();
    let db = Database::open_in_memory().unwrap();
    let lingering = mock.base_url("lingering");
    add_provider(&db, ProviderType::ChatCompletion, 0, &lingering).await;
    add_provider(&db, ProviderType::Messages, 1, &lingering).await;
    add_provider(&db, ProviderType::Responses, 2, &lingering).await;
    price(&db, 1, 1).await;
    let alice = add_user(&db, "alice", 1_000_000, false, KEY).await;
    let server = serve(db.clone()).await;
    let cases = [
        (
            CHAT,
            r#"{"model":"m","stream":true,"messages":[]}"#,
            "data: [DONE]",
        ),
        (
            MESSAGES,
            r#"{"model":"m","max_tokens":5,"stream":true,"messages":[]}"#,
            "event: message_stop",
        ),
        (
            "/v1/responses",
            r#"{"model":"m","stream":true,"input":"hi"}"#,
            "event: response.completed",
        ),
    ];
    for (path, body, final_event) in cases {
        let response = server.send(path, KEY, body).await;
        assert_eq!(response.status(), 200, "{path}");
        let request = request_id(&response);
        let read = read_all(&mut response.into_body(), String::new()).await;
        assert!(read.complete, "{path}: the stream ends whole: {read:?}");
        assert!(read.text.contains(final_event), "{path}: {read:?}");
        let row = charge_of(&db, &request)
            .await
            .expect("the stream is charged");
        let meta = meta(&row);
        assert_eq!(meta["usage_estimated"], false, "{path}: {}", row.meta_json);
        assert_eq!(row.delta_nano_usd, NanoUsd(-COST), "{path}");
    }
    assert!(
        mock.wait_cancelled(3, WAIT).await,
        "the host lets go of every body the upstream kept open"
    );
    assert_eq!(balance(&db, &alice).await, NanoUsd(1_000_000 - 3 * COST));
}

#[tokio::test]
async fn an_upstream_event_that_never_ends_is_cut_at_the_limit_and_charged_on_an_estimate() {
    let (mock, db, alice, server) = start_on("unterminated", 1_000_000).await;
    let response = server
        .send(CHAT, KEY, r#"{"model":"m","stream":true,"messages":[]}"#)
        .await;
    assert_eq!(response.status(), 200);
    let request = request_id(&response);
    let read = read_all(&mut response.into_body(), String::new()).await;
    assert!(!read.complete, "the client sees the stream cut");
    assert!(
        read.text.contains("one"),
        "the first event arrived: {read:?}"
    );
    assert!(
        read.text.len() < 4096 && !read.text.contains("xxx"),
        "no part of the endless event is relayed ({} bytes arrived)",
        read.text.len()
    );
    assert!(
        mock.wait_cancelled(1, WAIT).await,
        "the upstream request is dropped"
    );
    let row = charge_of(&db, &request)
        .await
        .expect("the cut stream is charged");
    assert_eq!(meta(&row)["usage_estimated"], true, "{}", row.meta_json);
    assert_eq!(balance(&db, &alice).await, ledger_sum(&db, &alice).await);
}

/// One streamed event, then the connection dropped: an upstream cut before it reported usage.
const CUT_EVENT: &str =
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a partial answer\"}}]}\n\n";

/// An upstream that answers every request with a chunked SSE head and [`CUT_EVENT`], then
/// drops the connection without ending the body.
async fn cut_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                read_request(&mut socket).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                     transfer-encoding: chunked\r\n\r\n{:x}\r\n{CUT_EVENT}\r\n",
                    CUT_EVENT.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.flush().await;
                // Dropped here: the body never ends.
            });
        }
    });
    address
}

/// Reads one HTTP/1.1 request (head and `content-length` body) from `socket`.
async fn read_request(socket: &mut tokio::net::TcpStream) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(read) = socket.read(&mut chunk).await else {
            return;
        };
        if read == 0 {
            return;
        }
        buffer.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&buffer);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buffer.len() >= head_end + 4 + length {
                return;
            }
        }
    }
}

#[tokio::test]
async fn a_stream_cut_before_usage_is_charged_on_an_estimate() {
    let upstream = cut_upstream().await;
    let db = Database::open_in_memory().unwrap();
    add_provider(
        &db,
        ProviderType::ChatCompletion,
        0,
        &format!("http://{upstream}"),
    )
    .await;
    price(&db, 1, 1).await;
    let alice = add_user(&db, "alice", 1_000_000, false, KEY).await;
    let server = serve(db.clone()).await;

    let text = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"tell me a long story"}]}"#;
    // A screenshot inline: 1 MiB of base64 that a provider bills as an image, not as text.
    let screenshot = format!(
        r#"{{"model":"m","stream":true,"messages":[{{"role":"user","content":[{{"type":"text","text":"what is this"}},{{"type":"image_url","image_url":{{"url":"data:image/png;base64,{}"}}}}]}}]}}"#,
        "A".repeat(1 << 20)
    );
    // The host's estimate: a token per 4 bytes begun of the text the request gives the model
    // (its roles and contents, not the JSON around them), an image as ATTACHMENT_TOKENS.
    let tokens = |bytes: usize| u64::try_from(bytes.div_ceil(4)).unwrap();
    let cases = [
        (text, tokens("user".len() + "tell me a long story".len())),
        (
            screenshot.as_str(),
            tokens("user".len() + "what is this".len()) + ATTACHMENT_TOKENS,
        ),
    ];
    let mut charged = 0;
    for (body, prompt) in cases {
        let response = server.send(CHAT, KEY, body).await;
        assert_eq!(response.status(), 200);
        let request = request_id(&response);
        let read = read_all(&mut response.into_body(), String::new()).await;
        assert!(read.text.contains("a partial answer"), "{read:?}");
        assert!(!read.complete, "the client sees a cut stream as cut");

        let row = charge_of(&db, &request)
            .await
            .expect("the cut stream is charged");
        let meta = meta(&row);
        assert_eq!(meta["usage_estimated"], true, "{}", row.meta_json);
        // The output from the text it carried ("a partial answer"), not the event's framing.
        let completion = tokens("a partial answer".len());
        assert_eq!(meta["prompt_tokens"], json!(prompt));
        assert_eq!(meta["completion_tokens"], json!(completion));
        let cost = i64::try_from(prompt + completion).unwrap();
        assert_eq!(row.delta_nano_usd, NanoUsd(-cost));
        charged += cost;
    }
    assert_eq!(balance(&db, &alice).await, NanoUsd(1_000_000 - charged));
    assert_eq!(ledger_sum(&db, &alice).await, NanoUsd(1_000_000 - charged));
}

#[tokio::test]
async fn every_request_has_exactly_one_ledger_row_and_a_repeated_settle_changes_nothing() {
    let (_mock, db, alice, server) = start(1_000_000).await;
    let mut requests = Vec::new();
    for index in 0..6 {
        let stream = index % 2 == 1;
        let body = json!({"model": MODEL, "stream": stream, "messages": []}).to_string();
        let response = server.send(CHAT, KEY, &body).await;
        assert_eq!(response.status(), 200);
        requests.push(request_id(&response));
        let read = read_all(&mut response.into_body(), String::new()).await;
        assert!(read.complete, "{read:?}");
    }
    let unique: HashSet<&String> = requests.iter().collect();
    assert_eq!(unique.len(), requests.len(), "every request has its own id");
    let charged: Vec<String> = ledger_rows(&db, &alice)
        .await
        .into_iter()
        .filter(|row| row.kind == LedgerKind::RequestCharge)
        .filter_map(|row| row.request_id)
        .collect();
    assert_eq!(charged.len(), requests.len(), "one row per request");
    assert_eq!(charged.iter().collect::<HashSet<_>>(), unique);
    let after = NanoUsd(1_000_000 - 6 * COST);
    assert_eq!(balance(&db, &alice).await, after);

    // Settling a served request again (a retry after a lost answer) charges nothing more.
    let again = SettleRequest {
        request_id: requests[0].clone(),
        user_id: alice.clone(),
        model: MODEL.to_owned(),
        endpoint: EndpointKind::ChatCompletions,
        attempt: Attempt {
            provider_id: "p0".to_owned(),
            channel_id: "c0".to_owned(),
            upstream_model: UPSTREAM_MODEL.to_owned(),
            multiplier: "1".parse().unwrap(),
        },
        usage: Usage {
            prompt_tokens: 1_000,
            completion_tokens: 1_000,
            ..Usage::default()
        },
    };
    server.billing.settle(again).await.unwrap();
    assert_eq!(balance(&db, &alice).await, after);
    assert_eq!(ledger_rows(&db, &alice).await.len(), requests.len() + 1);
    assert_eq!(ledger_sum(&db, &alice).await, after);
}

/// The SQLite write lock of the database file at `path`, held by another connection (as
/// another process would) until released or for at most 4 s — under the server's 5 s busy
/// timeout, so its commit waits rather than fails.
struct WriteLock {
    release: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl WriteLock {
    fn hold(path: &Path) -> WriteLock {
        let other = db::open(&Dsn::File(path.to_owned())).unwrap();
        let (held, is_held) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            other
                .write_blocking(move |_tx| {
                    held.send(()).unwrap();
                    let _ = released.recv_timeout(Duration::from_secs(4));
                    Ok(())
                })
                .unwrap();
        });
        is_held.recv_timeout(WAIT).unwrap();
        WriteLock { release, thread }
    }

    fn release(self) {
        let _ = self.release.send(());
        self.thread.join().unwrap();
    }
}

/// How long the tests watch for something that must not happen while the lock is held. If the
/// gateway were wrong, the byte would arrive within a few milliseconds.
const NOT_BEFORE_COMMIT: Duration = Duration::from_millis(700);

async fn file_server(dir: &Path) -> (MockUpstream, Database, String, Server) {
    let mock = MockUpstream::start().await.unwrap();
    let db = db::open(&Dsn::File(dir.join("monoize.db"))).unwrap();
    let alice = seed(&db, &mock, 1_000_000).await;
    let server = serve(db.clone()).await;
    (mock, db, alice, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streams_final_event_leaves_only_after_its_charge_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (_mock, db, alice, server) = file_server(dir.path()).await;
    let lock = WriteLock::hold(&dir.path().join("monoize.db"));

    let body =
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    let response = server.send(CHAT, KEY, body).await;
    assert_eq!(response.status(), 200, "the head leaves before the charge");
    let request = request_id(&response);
    let mut body = response.into_body();
    // The usage event is the upstream's last before `[DONE]`: once it is here, the relay has
    // everything and is settling.
    let mut text = String::new();
    while !text.contains("\"usage\"") {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("early events arrive")
            .expect("the body goes on")
            .expect("no error");
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(text.contains("one") && text.contains("two"), "{text}");
    let early = tokio::time::timeout(NOT_BEFORE_COMMIT, body.frame()).await;
    assert!(
        early.is_err(),
        "a frame arrived before the commit: {early:?}"
    );
    assert!(!text.contains("[DONE]"));
    assert!(
        charge_of(&db, &request).await.is_none(),
        "not committed yet"
    );

    lock.release();
    let read = read_all(&mut body, text).await;
    assert!(
        read.complete && read.text.ends_with("data: [DONE]\n\n"),
        "{read:?}"
    );
    let row = charge_of(&db, &request)
        .await
        .expect("committed before the end");
    assert_eq!(row.delta_nano_usd, NanoUsd(-COST));
    assert_eq!(ledger_sum(&db, &alice).await, balance(&db, &alice).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_json_body_leaves_only_after_its_charge_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (mock, db, alice, server) = file_server(dir.path()).await;
    let lock = WriteLock::hold(&dir.path().join("monoize.db"));

    let address = server.address;
    let answer = tokio::spawn(async move {
        let client = billing_support::client();
        let response = billing_support::send(&client, address, CHAT, KEY, CHAT_BODY)
            .await
            .unwrap();
        let request = request_id(&response);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (request, bytes)
    });
    // Wait until the upstream has answered: the gateway holds the whole response now.
    tokio::time::timeout(WAIT, async {
        while mock.seen().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the request reaches the upstream");
    tokio::time::sleep(NOT_BEFORE_COMMIT).await;
    assert!(
        !answer.is_finished(),
        "the body left before its charge was committed"
    );
    assert_eq!(
        ledger_rows(&db, &alice).await.len(),
        1,
        "only the opening balance"
    );

    lock.release();
    let (request, bytes) = tokio::time::timeout(WAIT, answer).await.unwrap().unwrap();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["model"], UPSTREAM_MODEL);
    let row = charge_of(&db, &request)
        .await
        .expect("committed before the body left");
    assert_eq!(row.delta_nano_usd, NanoUsd(-COST));
}

#[tokio::test]
async fn a_stream_still_open_when_the_shutdown_grace_ends_is_cut_and_charged_before_exit() {
    let mock = MockUpstream::start().await.unwrap();
    let db = Database::open_in_memory().unwrap();
    // A stream that never ends: its first event, then a keep-alive comment every 50 ms.
    add_provider(
        &db,
        ProviderType::ChatCompletion,
        0,
        &mock.base_url("endless"),
    )
    .await;
    price(&db, 1, 1).await;
    let alice = add_user(&db, "alice", 1_000_000, false, KEY).await;
    let mut config = Config::in_memory();
    config.shutdown_grace_ms = 200;
    let state = AppState::start(db.clone(), config).await.unwrap();
    state.reload_routing().await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(monoize::server::serve(listener, state, async move {
        let _ = stopped.await;
    }));

    let body = r#"{"model":"m","stream":true,"messages":[]}"#;
    let response = billing_support::send(&billing_support::client(), address, CHAT, KEY, body)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request = request_id(&response);
    let mut body = response.into_body();
    let first = tokio::time::timeout(WAIT, body.frame())
        .await
        .expect("the first event arrives")
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(first.data_ref().unwrap()).into_owned();
    assert!(first.contains("one"), "{first}");

    stop.send(()).unwrap();
    let read = read_all(&mut body, first).await;
    assert!(!read.complete, "the client sees the stream cut: {read:?}");
    tokio::time::timeout(WAIT, serving)
        .await
        .expect("the server stops after its grace")
        .unwrap();
    let row = charge_of(&db, &request)
        .await
        .expect("the cut stream was charged before the server stopped");
    let meta = meta(&row);
    assert_eq!(meta["usage_estimated"], true, "{}", row.meta_json);
    assert!(row.delta_nano_usd < NanoUsd::ZERO, "{row:?}");
    assert_eq!(balance(&db, &alice).await, ledger_sum(&db, &alice).await);
}

#[tokio::test]
async fn a_stream_left_before_its_usage_is_billed_the_generated_text_it_delivered() {
    // `unfinished`: an opening event (Anthropic's `message_start` counts 3 input tokens and 1
    // output token), then 400 bytes of generated text in one event, then nothing.
    let mock = MockUpstream::start().await.unwrap();
    let db = Database::open_in_memory().unwrap();
    add_provider(
        &db,
        ProviderType::ChatCompletion,
        0,
        &mock.base_url("unfinished"),
    )
    .await;
    add_provider(&db, ProviderType::Messages, 1, &mock.base_url("unfinished")).await;
    price(&db, 1, 1).await;
    let alice = add_user(&db, "alice", 1_000_000, false, KEY).await;
    let server = serve(db.clone()).await;
    let chat = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"go on"}]}"#;
    let messages = r#"{"model":"m","max_tokens":5,"stream":true,"messages":[]}"#;
    // The output is the text delivered, a token per 4 bytes begun, not the events' framing
    // around it (the chat stream's role chunk also says "one"); the input is what
    // message_start counted, or else the text the request gives the model.
    let tokens = |text: usize| u64::try_from(text.div_ceil(4)).unwrap();
    let cases = [
        (
            CHAT,
            chat,
            tokens("user".len() + "go on".len()),
            tokens("one".len() + LONG_TEXT.len()),
        ),
        (MESSAGES, messages, 3, tokens(LONG_TEXT.len())),
    ];
    for (path, body, input, output) in cases {
        let response = server.send(path, KEY, body).await;
        assert_eq!(response.status(), 200);
        let request = request_id(&response);
        let mut body = response.into_body();
        let mut received = String::new();
        while !received.contains("the end") {
            let frame = tokio::time::timeout(WAIT, body.frame())
                .await
                .expect("the text arrives")
                .unwrap()
                .unwrap();
            received.push_str(&String::from_utf8_lossy(frame.data_ref().unwrap()));
        }
        drop(body);
        let row = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(row) = charge_of(&db, &request).await {
                    return row;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the left stream is charged");
        let meta = meta(&row);
        assert_eq!(meta["usage_estimated"], true, "{path}: {}", row.meta_json);
        assert_eq!(meta["prompt_tokens"], input, "{path}: {}", row.meta_json);
        assert_eq!(
            meta["completion_tokens"], output,
            "{path}: {}",
            row.meta_json
        );
    }
    assert_eq!(balance(&db, &alice).await, ledger_sum(&db, &alice).await);
}
