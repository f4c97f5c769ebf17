//! Streaming: an upstream SSE body relayed to the client event by event, never buffered
//! whole. A task reads the upstream and feeds a channel that is the client's response body:
//! when the client goes away the channel closes, the task stops and drops the upstream body,
//! which cancels the upstream request. Usage is read from the events as they pass (see
//! [`StreamUsage`]); when the upstream ends, the task hands the usage to the settle phase.
//!
//! The last byte leaves only after the charge is committed (DESIGN §6): a stream's final event
//! (`data: [DONE]`, Anthropic's `message_stop`, the Responses API's `response.completed`) and
//! everything after it are held back until `finish` — which settles — has returned, and the
//! client's body ends only then. A client that has the whole stream therefore has a committed
//! charge, even if the process is killed a moment later. When the charge could not be
//! recorded, the held events are not delivered and the stream ends as cut.
//!
//! A shutdown that outlasts its grace cuts the streams still open ([`LiveStreams::cut`]):
//! each is charged for what it relayed, as any cut stream is, before the process stops. A
//! stream dropped with its runtime instead would have reached its client unbilled.
//!
//! The final event ends the stream: the charge and the client's end do not wait for the
//! upstream to close its body, which one holding it open would otherwise delay until the idle
//! timeout cut the stream. What the upstream sends after its final event is not relayed.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{CACHE_CONTROL, HeaderMap, HeaderName, HeaderValue};
use tokio::sync::{mpsc, watch};

use super::forward::{UpstreamBody, next_data};
use super::wire::{EventAction, ReportedUsage, SseEvent, StreamUsage};
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
///
/// Each byte is looked at once: a push resumes the search for the blank line where the last
/// one stopped, so an event arriving in many small chunks (a Responses stream's base64 image,
/// megabytes long) costs its length, not its length times its chunk count. An event that has
/// not ended within [`MAX_EVENT_BYTES`] is refused: the host holds no more of one event than
/// of a whole JSON answer.
#[derive(Debug, Default)]
pub struct SseSplitter {
    buffer: BytesMut,
    /// How far into `buffer` no event end was found.
    searched: usize,
}

/// The most bytes of one SSE event the relay holds while waiting for its end: as many as of a
/// whole JSON answer (a Responses stream's `response.completed` carries the whole answer).
pub const MAX_EVENT_BYTES: usize = super::forward::MAX_WHOLE_BODY;

/// An upstream event longer than [`MAX_EVENT_BYTES`] without its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTooLong;

impl SseSplitter {
    /// Adds `chunk` and answers the events it completed, or [`EventTooLong`] when the event
    /// still open has grown past [`MAX_EVENT_BYTES`] (its bytes are then dropped).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Bytes>, EventTooLong> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = event_end(&self.buffer, self.searched) {
            events.push(self.buffer.split_to(end).freeze());
            self.searched = 0;
        }
        // An end is a line feed and up to two bytes after it: the last two bytes may yet
        // begin one.
        self.searched = self.buffer.len().saturating_sub(2);
        if self.buffer.len() > MAX_EVENT_BYTES {
            self.buffer = BytesMut::new();
            self.searched = 0;
            return Err(EventTooLong);
        }
        Ok(events)
    }

    /// Whatever is left after the last complete event.
    pub fn rest(&mut self) -> Option<Bytes> {
        self.searched = 0;
        (!self.buffer.is_empty()).then(|| self.buffer.split().freeze())
    }
}

/// The end (exclusive) of the first complete event, searching from `from`: a line feed
/// followed by an empty line.
fn event_end(buffer: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(offset) = buffer.get(at..)?.iter().position(|&byte| byte == b'\n') {
        let index = at + offset;
        match buffer.get(index + 1..) {
            Some([b'\n', ..]) => return Some(index + 2),
            Some([b'\r', b'\n', ..]) => return Some(index + 3),
            _ => at = index + 1,
        }
    }
    None
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
    /// The server was shutting down and its grace ran out.
    ShutDown,
}

impl StreamEnd {
    /// Its name in the request's log line.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamEnd::Completed => "completed",
            StreamEnd::UpstreamFailed => "upstream_failed",
            StreamEnd::ClientGone => "client_gone",
            StreamEnd::ShutDown => "shut_down",
        }
    }
}

/// The streams being relayed, so that a shutdown can cut them and wait for their charges.
/// Cheap to clone; every clone is the same set.
#[derive(Debug, Clone)]
pub struct LiveStreams {
    /// `true` once the streams are to be cut; each relay holds a receiver until it is over.
    cut: watch::Sender<bool>,
}

impl Default for LiveStreams {
    fn default() -> LiveStreams {
        LiveStreams {
            cut: watch::Sender::new(false),
        }
    }
}

impl LiveStreams {
    /// How many streams are being relayed (or settling) now.
    pub fn count(&self) -> usize {
        self.cut.receiver_count()
    }

    /// Cuts every stream being relayed and waits until each has settled its charge and ended.
    /// Streams that start afterwards are cut at once.
    pub async fn cut(&self) {
        self.cut.send_replace(true);
        self.cut.closed().await;
    }

    fn join(&self) -> watch::Receiver<bool> {
        self.cut.subscribe()
    }
}

/// What the settle phase learns when a stream is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    /// How it ended.
    pub end: StreamEnd,
    /// What the upstream reported of its usage.
    pub usage: ReportedUsage,
    /// The bytes of generated output (text, reasoning, tool arguments) passed to the client.
    pub text_streamed: u64,
    /// For the Responses API: the id of the response the stream created, if it named one.
    pub response_id: Option<String>,
}

/// Whether `event` ends its stream in its wire format: OpenAI chat's `data: [DONE]`,
/// Anthropic's `message_stop`, the Responses API's terminal `response.*` events.
pub fn is_final_event(event: &SseEvent) -> bool {
    const FINAL_TYPES: &[&str] = &[
        "message_stop",
        "response.completed",
        "response.failed",
        "response.incomplete",
    ];
    /// The same, as they appear in the JSON's own `type` field.
    const FINAL_TYPE_FIELDS: &[&str] = &[
        r#""type":"message_stop""#,
        r#""type":"response.completed""#,
        r#""type":"response.failed""#,
        r#""type":"response.incomplete""#,
    ];
    if event.data.trim() == "[DONE]" {
        return true;
    }
    match &event.event {
        Some(name) => FINAL_TYPES.contains(&name.as_str()),
        // Without an `event:` line, the JSON's own top-level `type` says it (the text search
        // only spares parsing every other event).
        None => {
            FINAL_TYPE_FIELDS
                .iter()
                .any(|field| event.data.contains(field))
                && top_level_type(&event.data)
                    .is_some_and(|kind| FINAL_TYPES.contains(&kind.as_str()))
        }
    }
}

/// The `type` field of the JSON object `data`, if it is one with a string `type`.
fn top_level_type(data: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Typed {
        r#type: Option<String>,
    }
    serde_json::from_str::<Typed>(data).ok()?.r#type
}

/// Marks a streamed response's `headers` so that what stands between Monoize and the client
/// passes each event on as it comes: `x-accel-buffering: no` (nginx, which otherwise buffers a
/// proxied body), and `cache-control: no-cache` unless the upstream said otherwise.
pub fn mark_unbuffered(headers: &mut HeaderMap) {
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache"));
}

/// Relays `body` (whose `first_chunk` was already read) to the client; `finish` runs when it
/// is over, before the stream's final event and the end of the client's body. `finish`
/// answers whether the charge was recorded: when it was not, what was held back is not
/// delivered and the client sees the stream cut.
pub fn relay<F, Fut>(
    live: &LiveStreams,
    first_chunk: Bytes,
    body: UpstreamBody,
    idle: Duration,
    usage: StreamUsage,
    finish: F,
) -> ChannelBody
where
    F: FnOnce(StreamSummary) -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(RELAY_BUFFER);
    let relay = Relay {
        client: sender,
        cut: live.join(),
        idle,
    };
    tokio::spawn(run_relay(relay, first_chunk, body, usage, finish));
    ChannelBody { receiver }
}

/// The relay's side of the client's body, and its membership of the [`LiveStreams`] (held
/// until the relay is over, settle included).
struct Relay {
    client: mpsc::Sender<Result<Bytes, BoxError>>,
    cut: watch::Receiver<bool>,
    /// How long the upstream may stay silent, and how long the client may take nothing while
    /// events wait for it before it counts as gone (a client that stops reading would
    /// otherwise hold the upstream request for ever).
    idle: Duration,
}

impl Relay {
    /// Hands `bytes` to the client, waiting for room unless the client goes away, takes
    /// nothing for the idle time, or the streams are cut (answered as how the stream ends).
    async fn deliver(&mut self, bytes: Bytes) -> Result<(), StreamEnd> {
        tokio::select! {
            sent = tokio::time::timeout(self.idle, self.client.send(Ok(bytes))) => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(StreamEnd::ClientGone),
                Err(_) => {
                    tracing::info!("the client took nothing of its stream past the idle timeout");
                    Err(StreamEnd::ClientGone)
                }
            },
            _ = self.cut.wait_for(|&cut| cut) => Err(StreamEnd::ShutDown),
        }
    }

    /// The upstream's next data (`None` at the body's end), or how the stream ends instead:
    /// the upstream failed or stayed silent past the idle time, the client went away, or the
    /// streams were cut.
    async fn next_from(&mut self, body: &mut UpstreamBody) -> Result<Option<Bytes>, StreamEnd> {
        let next = tokio::select! {
            () = self.client.closed() => return Err(StreamEnd::ClientGone),
            _ = self.cut.wait_for(|&cut| cut) => return Err(StreamEnd::ShutDown),
            next = tokio::time::timeout(self.idle, next_data(body)) => next,
        };
        match next {
            Ok(Ok(data)) => Ok(data),
            Ok(Err(error)) => Err(upstream_failed(&error)),
            Err(_) => {
                tracing::info!("the upstream stream went silent past the idle timeout");
                Err(StreamEnd::UpstreamFailed)
            }
        }
    }
}

/// The most bytes of events gathered into one frame for the client.
const MAX_FRAME_BYTES: usize = 64 << 10;

/// What the upstream body has ready right now.
enum Arrived {
    /// A data chunk.
    Data(Bytes),
    /// Nothing yet.
    Nothing,
    /// The body is over.
    End(StreamEnd),
}

/// The upstream's next chunk if it has already arrived, without waiting for one. Polling the
/// body once is cancel-safe: a frame is taken only when it is ready.
async fn arrived(body: &mut UpstreamBody) -> Arrived {
    std::future::poll_fn(|context| {
        let next = std::pin::pin!(next_data(body));
        Poll::Ready(match next.poll(context) {
            Poll::Pending => Arrived::Nothing,
            Poll::Ready(Ok(Some(data))) => Arrived::Data(data),
            Poll::Ready(Ok(None)) => Arrived::End(StreamEnd::Completed),
            Poll::Ready(Err(error)) => Arrived::End(upstream_failed(&error)),
        })
    })
    .await
}

fn upstream_failed(error: &hyper::Error) -> StreamEnd {
    tracing::info!(%error, "the upstream stream failed");
    StreamEnd::UpstreamFailed
}

/// `parts` as one buffer (without a copy when there is only one).
fn concat(mut parts: Vec<Bytes>) -> Bytes {
    if parts.len() == 1 {
        return parts.pop().unwrap_or_default();
    }
    let mut joined = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
    for part in &parts {
        joined.extend_from_slice(part);
    }
    joined.freeze()
}

/// How long, after a stream's final event, the upstream may take to end its body, and how many
/// more bytes it may send meanwhile, before the host lets go of it (its connection then closes
/// instead of going back to the pool). The client does not wait for it.
const DRAIN_AFTER_FINAL: Duration = Duration::from_secs(1);
/// See [`DRAIN_AFTER_FINAL`].
const DRAIN_MAX_BYTES: usize = 64 << 10;

/// Reads and discards what an upstream sends after its stream's final event, within
/// [`DRAIN_AFTER_FINAL`] and [`DRAIN_MAX_BYTES`], so that a body ending a moment late still
/// leaves its connection reusable.
async fn drain(mut body: UpstreamBody) {
    let mut left = DRAIN_MAX_BYTES;
    let _ = tokio::time::timeout(DRAIN_AFTER_FINAL, async {
        while let Ok(Some(data)) = next_data(&mut body).await {
            left = left.saturating_sub(data.len());
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

async fn run_relay<F, Fut>(
    mut relay: Relay,
    first_chunk: Bytes,
    mut body: UpstreamBody,
    mut usage: StreamUsage,
    finish: F,
) where
    F: FnOnce(StreamSummary) -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let mut splitter = SseSplitter::default();
    let mut text_streamed: u64 = 0;
    let mut chunk = Some(first_chunk);
    // The final event and all after it, delivered only once the charge is committed.
    let mut held: Vec<Bytes> = Vec::new();
    // Whether the upstream's body has ended (its connection can then go back to the pool).
    let mut body_over = false;
    let end = loop {
        // What has already arrived leaves as one frame: nothing waits for more data, but a
        // burst of events costs the client's connection one wake-up and one write, not one
        // per event.
        let mut out: Vec<Bytes> = Vec::new();
        let mut out_bytes = 0usize;
        let mut ended = None;
        while let Some(data) = chunk.take() {
            let Ok(events) = splitter.push(&data) else {
                tracing::info!(
                    limit = MAX_EVENT_BYTES,
                    "an upstream event ran past the limit without its end"
                );
                ended = Some(StreamEnd::UpstreamFailed);
                break;
            };
            for event in events {
                let parsed = SseEvent::parse(&String::from_utf8_lossy(&event));
                if usage.observe(&parsed) == EventAction::Drop {
                    continue;
                }
                text_streamed = text_streamed.saturating_add(usage.generated_bytes(&parsed));
                if !held.is_empty() || is_final_event(&parsed) {
                    held.push(event);
                    continue;
                }
                out_bytes = out_bytes.saturating_add(event.len());
                out.push(event);
            }
            if !held.is_empty() {
                // The stream is over at its final event. Whatever the upstream sends after it
                // is not relayed: it is only asked whether its body has ended as well.
                body_over = matches!(arrived(&mut body).await, Arrived::End(_));
                ended = Some(StreamEnd::Completed);
                break;
            }
            if out_bytes >= MAX_FRAME_BYTES {
                break;
            }
            match arrived(&mut body).await {
                Arrived::Data(data) => chunk = Some(data),
                Arrived::Nothing => {}
                Arrived::End(end) => {
                    body_over = true;
                    ended = Some(end);
                }
            }
        }
        if !out.is_empty()
            && let Err(end) = relay.deliver(concat(out)).await
        {
            break end;
        }
        if let Some(end) = ended {
            break end;
        }
        match relay.next_from(&mut body).await {
            Ok(Some(data)) => chunk = Some(data),
            Ok(None) => {
                body_over = true;
                break StreamEnd::Completed;
            }
            Err(end) => break end,
        }
    };
    if end == StreamEnd::Completed && !body_over {
        // Complete at its final event while the upstream still holds its body open.
        tokio::spawn(drain(body));
    } else {
        // Cancel the upstream request at once when it is no longer read.
        drop(body);
    }
    if end != StreamEnd::ClientGone
        && let Some(rest) = splitter.rest()
    {
        let parsed = SseEvent::parse(&String::from_utf8_lossy(&rest));
        text_streamed = text_streamed.saturating_add(usage.generated_bytes(&parsed));
        held.push(rest);
    }
    let charged = finish(StreamSummary {
        end,
        usage: usage.reported(),
        text_streamed,
        response_id: usage.response_id().map(str::to_owned),
    })
    .await;
    // Settled: a shutdown no longer waits for this stream.
    let Relay { client, cut, .. } = relay;
    drop(cut);
    let failure = match end {
        StreamEnd::ClientGone => return,
        // Nothing delivered goes unbilled: without a recorded charge the end stays behind.
        _ if !charged => "the charge of this stream could not be recorded",
        StreamEnd::ShutDown => "the server is shutting down",
        StreamEnd::Completed | StreamEnd::UpstreamFailed => {
            if !held.is_empty() && client.send(Ok(concat(held))).await.is_err() {
                return;
            }
            if end == StreamEnd::Completed {
                return;
            }
            // The client must see a cut stream as cut, not as a complete one.
            "the upstream stream ended early"
        }
    };
    let _ = client.send(Err(failure.into())).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_on_blank_lines_of_either_ending() {
        let mut splitter = SseSplitter::default();
        assert_eq!(splitter.push(b"data: 1\n"), Ok(vec![]));
        let events = splitter.push(b"\ndata: 2\r\n\r\ndata: 3");
        assert_eq!(
            events,
            Ok(vec![
                Bytes::from("data: 1\n\n"),
                Bytes::from("data: 2\r\n\r\n")
            ])
        );
        assert_eq!(splitter.rest(), Some(Bytes::from("data: 3")));
        assert_eq!(splitter.rest(), None);
    }

    #[test]
    fn an_event_end_split_across_chunks_anywhere_is_found_once() {
        let text = b"data: a\n\ndata: bb\r\n\r\n: c\n\ndata: d\n\r\n";
        let expected = vec![
            Bytes::from("data: a\n\n"),
            Bytes::from("data: bb\r\n\r\n"),
            Bytes::from(": c\n\n"),
            Bytes::from("data: d\n\r\n"),
        ];
        // Every way of cutting the text in three.
        for first in 0..=text.len() {
            for second in first..=text.len() {
                let mut splitter = SseSplitter::default();
                let mut events = Vec::new();
                for part in [&text[..first], &text[first..second], &text[second..]] {
                    events.extend(splitter.push(part).unwrap());
                }
                assert_eq!(events, expected, "cut at {first} and {second}");
                assert_eq!(splitter.rest(), None);
            }
        }
    }

    #[test]
    fn an_event_longer_than_the_limit_without_its_end_is_refused() {
        let mut splitter = SseSplitter::default();
        let piece = vec![b'x'; 1 << 20];
        assert_eq!(
            splitter.push(b"data: ok\n\ndata: "),
            Ok(vec![Bytes::from("data: ok\n\n")])
        );
        let mut refused = false;
        for _ in 0..=MAX_EVENT_BYTES / piece.len() {
            match splitter.push(&piece) {
                Ok(events) => assert!(events.is_empty()),
                Err(EventTooLong) => {
                    refused = true;
                    break;
                }
            }
        }
        assert!(refused, "the open event passed the limit");
        assert_eq!(splitter.rest(), None, "its bytes are dropped");
        // An event exactly at the limit, end included, still passes.
        let mut event = b"data: ".to_vec();
        event.resize(MAX_EVENT_BYTES - 2, b'y');
        event.extend_from_slice(b"\n\n");
        assert_eq!(splitter.push(&event).map(|events| events.len()), Ok(1));
    }

    #[test]
    fn final_events_of_each_wire_format_are_recognised() {
        let finals = [
            "data: [DONE]\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            "data: {\"type\":\"message_stop\"}\n\n",
            "event: response.completed\ndata: {}\n\n",
            "data: {\"type\":\"response.incomplete\",\"response\":{}}\n\n",
        ];
        for text in finals {
            assert!(is_final_event(&SseEvent::parse(text)), "{text}");
        }
        let others = [
            "data: {\"choices\":[{\"delta\":{\"content\":\"[DONE]\"}}]}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\"}\n\n",
            "data: {\"text\":\"say \\\"type\\\":\\\"message_stop\\\"\"}\n\n",
            // The final type inside a nested object is not the event's own.
            "data: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"message_stop\"}}\n\n",
            "data: {\"item\":{\"type\":\"response.completed\"},\"type\":\"response.created\"}\n\n",
            "event: response.output_text.delta\ndata: {}\n\n",
        ];
        for text in others {
            assert!(!is_final_event(&SseEvent::parse(text)), "{text}");
        }
    }
}
