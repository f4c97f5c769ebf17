//! The stock OpenAI and Anthropic Python SDKs as real clients of the gateway, changing only the
//! base URL and the key: chat, streaming chat, embeddings, model listing, responses, messages
//! with and without streaming, and each SDK's typed exceptions on `401`, `402` and `404`.
//! The scripts are in `tests/sdk/`. Python 3 with the `openai` and `anthropic` packages must
//! be installed (the README's test command installs them): without them this test fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test"
)]

mod gateway_harness;

use std::time::Duration;

use monoize::db::routing::ProviderType;
use tokio::process::Command;

use gateway_harness::{Gateway, KEY, Setup};

/// The longest one script may run (it starts Python and imports an SDK).
const SCRIPT_LIMIT: Duration = Duration::from_secs(120);

/// A gateway serving `m` on every wire format.
async fn serving(setup: Setup) -> Gateway {
    setup
        .provider(ProviderType::ChatCompletion, &["ok"])
        .provider(ProviderType::Responses, &["ok"])
        .provider(ProviderType::Messages, &["ok"])
        .start()
        .await
}

/// Runs `tests/sdk/<script>` with `env`; answers its `ok <check>` lines, failing the test
/// with the script's output when it exits non-zero.
async fn run_script(script: &str, env: &[(&str, String)]) -> Vec<String> {
    let path = format!("{}/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new("python3");
    command.arg(&path).kill_on_drop(true);
    // Loopback only, whatever proxy the machine is configured with.
    for variable in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "OPENAI_ORG_ID",
        "OPENAI_PROJECT_ID",
        "ANTHROPIC_AUTH_TOKEN",
    ] {
        command.env_remove(variable);
    }
    command.env("NO_PROXY", "127.0.0.1,localhost");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = match tokio::time::timeout(SCRIPT_LIMIT, command.output()).await {
        Err(_) => panic!("{script} did not finish within {SCRIPT_LIMIT:?}"),
        Ok(Err(error)) => panic!("python3 could not be started for {script}: {error}"),
        Ok(Ok(output)) => output,
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed ({}); is `python3 -m pip install openai==3.57.0 anthropic==2.14.0` done?\n\
         stdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("ok "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_works_with_only_the_base_url_and_key_changed() {
    let gateway = serving(Setup::new()).await;
    let broke = serving(Setup::new().limited_balance()).await;
    let checks = run_script(
        "openai_sdk.py",
        &[
            ("OPENAI_BASE_URL", format!("{}/v1", gateway.url())),
            ("OPENAI_API_KEY", KEY.to_owned()),
            ("MONOIZE_BROKE_BASE_URL", format!("{}/v1", broke.url())),
        ],
    )
    .await;
    assert_eq!(
        checks,
        [
            "chat",
            "streaming_chat",
            "embeddings",
            "models",
            "responses",
            "errors"
        ]
    );
    let seen = gateway.mock.seen();
    assert!(seen.iter().all(|seen| {
        seen.headers["authorization"]
            .to_str()
            .unwrap()
            .starts_with("Bearer sk-upstream-secret-")
    }));
    assert!(broke.mock.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_sdk_works_with_only_the_base_url_and_key_changed() {
    let gateway = serving(Setup::new()).await;
    let broke = serving(Setup::new().limited_balance()).await;
    let checks = run_script(
        "anthropic_sdk.py",
        &[
            ("ANTHROPIC_BASE_URL", gateway.url()),
            ("ANTHROPIC_API_KEY", KEY.to_owned()),
            ("MONOIZE_BROKE_BASE_URL", broke.url()),
        ],
    )
    .await;
    assert_eq!(
        checks,
        [
            "messages",
            "streaming_messages",
            "count_tokens",
            "models",
            "errors"
        ]
    );
    let seen = gateway.mock.seen();
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|seen| seen.headers["x-api-key"] == "sk-upstream-secret-2-0")
    );
    assert!(broke.mock.seen().is_empty());
}
