//! The crash test (issue #10, DESIGN §6): the server is killed with `SIGKILL` while clients
//! stream billed requests at it; after a restart on the same database file, every response a
//! client received in full is charged, and every balance equals the sum of its ledger.
//!
//! The server runs in a child process: this test binary re-executes itself with the ignored
//! test [`crash_child_server`] selected and the database path in [`CHILD_DB_ENV`]; the child
//! serves on a free loopback port and prints it. The mock upstream runs in the parent, so the
//! kill takes only the gateway down.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

mod billing_support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use billing_support::{
    WAIT, add_provider, add_user, balance, charge_of, client, ledger_sum, price, read_all,
    request_id, send, serve,
};
use monoize::config::Dsn;
use monoize::db::routing::ProviderType;
use monoize::db::{self, users};
use monoize_tests::mock_upstream::MockUpstream;

/// Where the child finds the database file; without it the child test does nothing.
const CHILD_DB_ENV: &str = "MONOIZE_CRASH_TEST_DB";

/// The line prefix the child announces its address with.
const LISTENING: &str = "monoize-crash-child listening on ";

/// Responses received in full before the kill.
const COMPLETED_BEFORE_KILL: usize = 40;

/// Clients sending at once.
const CLIENTS: usize = 8;

/// The server half, run only as the crash test's child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the server half of the crash test, started by it as a child process"]
async fn crash_child_server() {
    let Ok(path) = std::env::var(CHILD_DB_ENV) else {
        return;
    };
    let db = db::open(&Dsn::File(path.into())).unwrap();
    let server = serve(db).await;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{LISTENING}{}", server.address).unwrap();
    stdout.flush().unwrap();
    drop(stdout);
    // The parent kills this process long before.
    tokio::time::sleep(Duration::from_secs(120)).await;
}

/// The server child; killed with `SIGKILL` when dropped.
struct ChildServer {
    child: Child,
    address: SocketAddr,
}

impl ChildServer {
    fn start(database: &Path) -> ChildServer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "crash_child_server",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_DB_ENV, database)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (found, address) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Reads to the end so the child never blocks on a full pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                // libtest may have written `test crash_child_server ... ` on the same line.
                if let Some((_, text)) = line.split_once(LISTENING) {
                    let _ = found.send(text.trim().parse::<SocketAddr>().unwrap());
                }
            }
        });
        let address = address
            .recv_timeout(WAIT)
            .expect("the child server announces its address");
        ChildServer { child, address }
    }

    /// `SIGKILL`, and waits for the process to be gone.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends requests with `key` until `stop`, alternating JSON and streamed ones; records the
/// request id of each response received in full (a 200 whose body ended cleanly — for a
/// stream, with its final event) and stops at the first failure.
async fn client_loop(
    address: SocketAddr,
    key: String,
    stop: Arc<AtomicBool>,
    completed: Arc<Mutex<Vec<String>>>,
) {
    let client = client();
    let mut turn = 0u32;
    while !stop.load(Ordering::Relaxed) {
        turn += 1;
        let stream = turn.is_multiple_of(2);
        let body = format!(r#"{{"model":"m","stream":{stream},"messages":[]}}"#);
        let Ok(response) = send(&client, address, "/v1/chat/completions", &key, &body).await else {
            return;
        };
        if response.status() != 200 {
            return;
        }
        let request = request_id(&response);
        let read = read_all(&mut response.into_body(), String::new()).await;
        let in_full = read.complete
            && if stream {
                read.text.ends_with("data: [DONE]\n\n")
            } else {
                serde_json::from_str::<serde_json::Value>(&read.text)
                    .is_ok_and(|value| value["model"] == "up-m")
            };
        if !in_full {
            return;
        }
        completed.lock().unwrap().push(request);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_mid_traffic_restarts_with_every_delivered_response_charged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("monoize.db");
    let mock = MockUpstream::start().await.unwrap();
    let mut keys = Vec::new();
    let mut user_ids = Vec::new();
    {
        let db = db::open(&Dsn::File(path.clone())).unwrap();
        add_provider(&db, ProviderType::ChatCompletion, 0, &mock.base_url("ok")).await;
        price(&db, 1, 1).await;
        for index in 0..4 {
            let key = format!("sk-crash{index}-0123456789abcdef");
            let unlimited = index == 3;
            user_ids
                .push(add_user(&db, &format!("u{index}"), 1_000_000_000, unlimited, &key).await);
            keys.push(key);
        }
    }

    let server = ChildServer::start(&path);
    let stop = Arc::new(AtomicBool::new(false));
    let completed: Arc<Mutex<Vec<String>>> = Arc::default();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|index| {
            tokio::spawn(client_loop(
                server.address,
                keys[index % keys.len()].clone(),
                Arc::clone(&stop),
                Arc::clone(&completed),
            ))
        })
        .collect();
    tokio::time::timeout(WAIT * 3, async {
        while completed.lock().unwrap().len() < COMPLETED_BEFORE_KILL {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the clients complete requests");
    // Mid-traffic: the clients are still sending.
    server.kill();
    stop.store(true, Ordering::Relaxed);
    for task in clients {
        tokio::time::timeout(WAIT * 2, task)
            .await
            .expect("every client notices the kill")
            .unwrap();
    }
    let delivered = completed.lock().unwrap().clone();
    assert!(delivered.len() >= COMPLETED_BEFORE_KILL);

    // The restart: the same file, served again.
    let server = ChildServer::start(&path);
    let client = client();
    let response = send(
        &client,
        server.address,
        "/v1/chat/completions",
        &keys[0],
        r#"{"model":"m"}"#,
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200, "the restarted server serves");
    let after_restart = request_id(&response);
    assert!(
        read_all(&mut response.into_body(), String::new())
            .await
            .complete
    );
    server.kill();

    let db = db::open(&Dsn::File(path.clone())).unwrap();
    for request in delivered.iter().chain([&after_restart]) {
        let row = charge_of(&db, request).await;
        assert!(
            row.is_some(),
            "request {request} was delivered in full but not charged"
        );
    }
    let all_users = db.read(users::list).await.unwrap();
    assert_eq!(all_users.len(), user_ids.len());
    for user in all_users {
        assert_eq!(
            balance(&db, &user.id).await,
            ledger_sum(&db, &user.id).await,
            "the balance of {} equals its ledger",
            user.username
        );
    }
}
