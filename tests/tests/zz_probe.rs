#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "probe"
)]
mod gateway_harness;
use gateway_harness::{BEARER, Setup};
use monoize::db::routing::ProviderType;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe() {
    let gateway = Setup::new()
        .provider(ProviderType::Messages, &["ok"])
        .start()
        .await;
    for body in ["", "x"] {
        let r = gateway
            .send_as(
                "GET",
                "/v1/messages",
                &[BEARER, ("content-type", "application/json")],
                body,
            )
            .await;
        eprintln!("GET body {body:?}: {}", r.status());
    }
    let r = gateway
        .send_as("GET", "/v1/chat/completions", &[BEARER], "")
        .await;
    eprintln!("GET chat: {}", r.status());
    let r = gateway.send_as("GET", "/v1/messages", &[BEARER], "").await;
    eprintln!("GET messages: {}", r.status());
}
