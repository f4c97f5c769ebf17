//! Streaming: an upstream SSE body relayed to the client event by event, never buffered
//! whole. A task reads the upstream and feeds a channel that is the client's response body:
//! when the client goes away the channel closes, the task stops and drops the upstream body,
//! which cancels the upstream request. Usage is read from the events as they pass (see
//! [`StreamUsage`]); when the upstream ends, the task hands the usage to the settle phase and
//! ends the client's body only after it returns, so the last byte leaves after the charge.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::mpsc;

use super::forward::next_data;
use super::wire::{EventAction, SseEvent, StreamUsage};
use crate::billing::Usage;
use crate::server::BoxError;

/// How many events may wait for a slow client before the relay stops reading upstream.
const RELAY_BUFFER: usize = 32;

/// A response body fed by a channel.
#[derive(Debug)]
pub struct ChannelBody {
    receiver: mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.receiver
            .poll_recv(cx)
            .map(|item| item.map(|result| result.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Splits a byte stream into complete SSE events (each with its terminating blank line).
#[derive(Debug, Default)]
pub struct SseSplitter {
    buffer: BytesMut,
}

impl SseSplitter {
    /// Adds `chunk` and answers the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Bytes> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = event_end(&self.buffer) {
            events.push(self.buffer.split_to(end).freeze());
        }
        events
    }

    /// Whatever is left after the last complete event.
    pub fn rest(&mut self) -> Option<Bytes> {
        (!self.buffer.is_empty()).then(|| self.buffer.split().freeze())
    }
}

/// The end (exclusive) of the first complete event: a line feed followed by an empty line.
fn event_end(buffer: &[u8]) -> Option<usize> {
    buffer.iter().enumerate().find_map(|(index, &byte)| {
        if byte != b'\n' {
            return None;
        }
        match buffer.get(index + 1..) {
            Some([b'\n', ..]) => Some(index + 2),
            Some([b'\r', b'\n', ..]) => Some(index + 3),
            _ => None,
        }
    })
}

/// How a relayed stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The upstream finished it.
    Completed,
    /// The upstream failed or went silent past the idle timeout.
    UpstreamFailed,
    /// The client went away.
    ClientGone,
}

/// What the settle phase learns when a stream is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSummary {
    /// How it ended.
    pub end: StreamEnd,
    /// The usage the upstream reported, if it did.
    pub usage: Option<Usage>,
    /// The bytes passed to the client.
    pub bytes_streamed: u64,
}

/// Relays `body` (whose `first_chunk` was already read) to the client; `finish` runs when it
/// is over, before the client's body ends.
pub fn relay<F, Fut>(
    first_chunk: Bytes,
    body: Incoming,
    idle: Duration,
    usage: StreamUsage,
    finish: F,
) -> ChannelBody
where
    F: FnOnce(StreamSummary) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(RELAY_BUFFER);
    tokio::spawn(run_relay(sender, first_chunk, body, idle, usage, finish));
    ChannelBody { receiver }
}

async fn run_relay<F, Fut>(
    sender: mpsc::Sender<Result<Bytes, BoxError>>,
    first_chunk: Bytes,
    mut body: Incoming,
    idle: Duration,
    mut usage: StreamUsage,
    finish: F,
) where
    F: FnOnce(StreamSummary) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut splitter = SseSplitter::default();
    let mut bytes_streamed: u64 = 0;
    let mut chunk = Some(first_chunk);
    let end = loop {
        if let Some(data) = chunk.take() {
            let mut gone = false;
            for event in splitter.push(&data) {
                let parsed = SseEvent::parse(&String::from_utf8_lossy(&event));
                if usage.observe(&parsed) == EventAction::Drop {
                    continue;
                }
                bytes_streamed = bytes_streamed.saturating_add(event.len() as u64);
                if sender.send(Ok(event)).await.is_err() {
                    gone = true;
                    break;
                }
            }
            if gone {
                break StreamEnd::ClientGone;
            }
        }
        let next = tokio::select! {
            () = sender.closed() => break StreamEnd::ClientGone,
            next = tokio::time::timeout(idle, next_data(&mut body)) => next,
        };
        match next {
            Ok(Ok(Some(data))) => chunk = Some(data),
            Ok(Ok(None)) => break StreamEnd::Completed,
            Ok(Err(error)) => {
                tracing::info!(%error, "the upstream stream failed");
                break StreamEnd::UpstreamFailed;
            }
            Err(_) => {
                tracing::info!("the upstream stream went silent past the idle timeout");
                break StreamEnd::UpstreamFailed;
            }
        }
    };
    // Cancel the upstream request at once when it is no longer read.
    drop(body);
    if end != StreamEnd::ClientGone
        && let Some(rest) = splitter.rest()
    {
        bytes_streamed = bytes_streamed.saturating_add(rest.len() as u64);
        let _ = sender.send(Ok(rest)).await;
    }
    finish(StreamSummary {
        end,
        usage: usage.usage(),
        bytes_streamed,
    })
    .await;
    if end == StreamEnd::UpstreamFailed {
        // The client must see a cut stream as cut, not as a complete one.
        let _ = sender
            .send(Err("the upstream stream ended early".into()))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_on_blank_lines_of_either_ending() {
        let mut splitter = SseSplitter::default();
        assert!(splitter.push(b"data: 1\n").is_empty());
        let events = splitter.push(b"\ndata: 2\r\n\r\ndata: 3");
        assert_eq!(
            events,
            vec![Bytes::from("data: 1\n\n"), Bytes::from("data: 2\r\n\r\n")]
        );
        assert_eq!(splitter.rest(), Some(Bytes::from("data: 3")));
        assert_eq!(splitter.rest(), None);
    }
}
