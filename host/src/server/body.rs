//! Reading a client's request body whole, for the gateway and the dashboard alike: never more
//! than a limit of bytes (a declared `content-length` over it is refused before anything is
//! read), and never waiting longer than the body timeout for its next piece, so a client that
//! sends its headers and then trickles or withholds its body cannot hold a connection and its
//! buffer for ever (the header timeout stops at the headers).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::HeaderMap;
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;

/// Why a request body was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// It is (or says it is) longer than the limit.
    #[error("the request body exceeds {limit} bytes")]
    TooLarge {
        /// The limit in force.
        limit: u64,
    },
    /// Its next piece did not arrive within the body timeout.
    #[error("the request body stalled: nothing of it arrived for {timeout_ms} ms")]
    Stalled {
        /// The timeout in force, in ms.
        timeout_ms: u128,
    },
    /// The connection failed while it was read.
    #[error("the request body could not be read: {0}")]
    Unreadable(String),
}

/// Reads `body` (sent with `headers`) to its end: at most `limit` bytes, each piece within
/// `timeout` of the one before. A body that arrives as one piece is answered without a copy.
pub async fn read_whole(
    headers: &HeaderMap,
    mut body: Incoming,
    limit: u64,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(BodyError::TooLarge { limit });
    }
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => {
                return Err(BodyError::Stalled {
                    timeout_ms: timeout.as_millis(),
                });
            }
            Ok(None) => break,
            Ok(Some(Err(error))) => return Err(BodyError::Unreadable(error.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let so_far = first.as_ref().map_or(0, Bytes::len) + joined.len();
        if so_far.saturating_add(data.len()) > cap {
            return Err(BodyError::TooLarge { limit });
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            earlier => {
                if let Some(earlier) = earlier {
                    joined.extend_from_slice(&earlier);
                }
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
}
