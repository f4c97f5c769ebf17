//! Reading a body whole, the one way the host does it: a client's request body (the gateway's
//! and the dashboard's) and an upstream's whole answer alike. Never more than a cap of bytes,
//! and never waiting longer than a timeout for the next piece, so neither a client that sends
//! its headers and then trickles or withholds its body nor an upstream that stalls mid-answer
//! holds a request and its buffer for ever (the header timeout stops at the headers).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use hyper::http::request::Parts;
use hyper::{Request, Version};

/// Whether a client's request body has been read to its end, for a request that declares one
/// (in its extensions). An HTTP/1 connection whose request body was left unread cannot carry
/// another request, so the server closes it after the answer; [`BodyRead::needs_close`] tells
/// the answer to say so (`connection: close`), or a keep-alive client would send its next
/// request on a connection about to close and see it fail unanswered.
#[derive(Debug, Clone, Default)]
pub struct BodyRead(Arc<AtomicBool>);

impl BodyRead {
    /// A flag for `request` when it is HTTP/1 and declares a body (a `content-length` above 0
    /// or a `transfer-encoding`), also put in its extensions for [`read_request`] to mark.
    pub fn track<B>(request: &mut Request<B>) -> Option<BodyRead> {
        let headers = request.headers();
        let declares_body = headers.contains_key(TRANSFER_ENCODING)
            || headers
                .get(CONTENT_LENGTH)
                .and_then(|value| value.to_str().ok())
                .is_some_and(|text| text.trim() != "0");
        if !declares_body || request.version() > Version::HTTP_11 {
            return None;
        }
        let flag = BodyRead::default();
        request.extensions_mut().insert(flag.clone());
        Some(flag)
    }

    /// Whether the answer must close the connection: the body was not read to its end.
    pub fn needs_close(&self) -> bool {
        !self.0.load(Ordering::Acquire)
    }

    fn mark(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Why a body was not read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// It is longer than the cap.
    #[error("exceeds {cap} bytes")]
    TooLong {
        /// The cap in force.
        cap: usize,
    },
    /// Its next piece did not arrive in time.
    #[error("stalled: nothing of it arrived for {} ms", timeout.as_millis())]
    Stalled {
        /// The timeout in force.
        timeout: Duration,
    },
    /// The connection failed while it was read.
    #[error("failed: {0}")]
    Failed(#[from] hyper::Error),
}

/// Reads `body` to its end: at most `cap` bytes, each piece within `timeout` of the one before.
/// A body that arrives as one piece (the usual case) is answered as that piece, without a copy.
pub async fn read_capped<B>(mut body: B, cap: usize, timeout: Duration) -> Result<Bytes, ReadError>
where
    B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => return Err(ReadError::Stalled { timeout }),
            Ok(None) => break,
            Ok(Some(frame)) => frame?,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let so_far = first.as_ref().map_or(0, Bytes::len) + joined.len();
        if so_far.saturating_add(data.len()) > cap {
            return Err(ReadError::TooLong { cap });
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

/// Why a client's request body was not read.
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
    /// It was sent in a content coding the host does not read (see [`super::encoding`]).
    #[error("{0} is not supported: send the body as identity, gzip, deflate or zstd")]
    UnsupportedEncoding(String),
    /// It does not decode in the content coding it names.
    #[error("{0}")]
    Undecodable(String),
}

/// Reads a client's request `body` (its head is `parts`) to its end: at most `limit` bytes (a
/// declared `content-length` over it is refused before anything is read), each piece within
/// `timeout` of the one before; a body read whole is marked read ([`BodyRead`]).
pub async fn read_request(
    parts: &Parts,
    body: Incoming,
    limit: u64,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(BodyError::TooLarge { limit });
    }
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    let read = read_capped(body, cap, timeout).await;
    if read.is_ok()
        && let Some(flag) = parts.extensions.get::<BodyRead>()
    {
        flag.mark();
    }
    read.map_err(|error| match error {
        ReadError::TooLong { .. } => BodyError::TooLarge { limit },
        ReadError::Stalled { timeout } => BodyError::Stalled {
            timeout_ms: timeout.as_millis(),
        },
        ReadError::Failed(error) => BodyError::Unreadable(error.to_string()),
    })
}
