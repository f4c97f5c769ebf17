//! A `CONNECT` proxy on 127.0.0.1 for the gateway's egress tests. It records every tunnel asked
//! of it (the target and the `Proxy-Authorization` sent), answers `407` when it requires
//! credentials and was not given them, refuses (`403`) any target off loopback so that no test
//! reaches beyond the machine, and otherwise relays the bytes both ways until either side
//! closes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The most bytes of a `CONNECT` request's head read.
const MAX_HEAD: usize = 16 << 10;

/// One tunnel a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelAsked {
    /// The request line's target (`host:port`).
    pub target: String,
    /// Its `Proxy-Authorization` header, if any.
    pub authorization: Option<String>,
}

/// A running mock proxy.
#[derive(Debug, Clone)]
pub struct MockProxy {
    /// Where it listens.
    pub address: SocketAddr,
    asked: Arc<Mutex<Vec<TunnelAsked>>>,
}

impl MockProxy {
    /// Starts a proxy on a free port that requires `Proxy-Authorization: <required>` when
    /// given; it runs until the test's runtime ends.
    pub async fn start(required: Option<&str>) -> std::io::Result<MockProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let asked: Arc<Mutex<Vec<TunnelAsked>>> = Arc::default();
        let recorded = Arc::clone(&asked);
        let required = required.map(str::to_owned);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let recorded = Arc::clone(&recorded);
                let required = required.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(30),
                        tunnel(client, &recorded, required.as_deref()),
                    )
                    .await;
                });
            }
        });
        Ok(MockProxy { address, asked })
    }

    /// Its URL, with `credentials` (`user:password`, percent-encoded) when given.
    pub fn url(&self, credentials: Option<&str>) -> String {
        match credentials {
            Some(credentials) => format!("http://{credentials}@{}", self.address),
            None => format!("http://{}", self.address),
        }
    }

    /// Every tunnel asked for so far.
    pub fn asked(&self) -> Vec<TunnelAsked> {
        self.asked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Serves one client connection: reads its `CONNECT`, records it, and relays or refuses.
async fn tunnel(
    mut client: TcpStream,
    recorded: &Mutex<Vec<TunnelAsked>>,
    required: Option<&str>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = client.read(&mut buffer).await?;
        if read == 0 || head.len() + read > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut words = request_line.split(' ');
    let (method, target) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default().to_owned(),
    );
    let authorization = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, value)| value.trim().to_owned());
    recorded
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(TunnelAsked {
            target: target.clone(),
            authorization: authorization.clone(),
        });
    let refusal = if method != "CONNECT" {
        Some("405 Method Not Allowed")
    } else if required.is_some() && authorization.as_deref() != required {
        Some("407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"")
    } else if !(target.starts_with("127.0.0.1:") || target.starts_with("localhost:")) {
        Some("403 Forbidden")
    } else {
        None
    };
    if let Some(status) = refusal {
        let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
        return client.write_all(answer.as_bytes()).await;
    }
    let Ok(mut upstream) = TcpStream::connect(&target).await else {
        return client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            .await;
    };
    client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}
