//! The wire formats the gateway speaks, one file each: [`openai`] (chat completions,
//! responses, embeddings) and [`anthropic`] (messages). Bodies are forwarded as the client
//! wrote them: every top-level field keeps its original bytes and order, and only `model` (to
//! the upstream name), `max_multiplier` (removed: it is Monoize's, not the upstream's) and,
//! for OpenAI chat streams, `stream_options.include_usage` are rewritten.

pub mod anthropic;
pub mod openai;
pub mod prompt_size;

use std::fmt;

use bytes::Bytes;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use self::prompt_size::PromptSize;
use super::error::GatewayError;
use crate::billing::Usage;
use crate::money::Multiplier;
use crate::routing::EndpointKind;

/// A JSON object whose values are kept as their original text, in their original order.
#[derive(Debug, Default)]
struct RawObject(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = RawObject;
            fn expecting(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
                out.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject, A::Error> {
                let mut fields = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, Box<RawValue>>()? {
                    fields.push((name, value));
                }
                Ok(RawObject(fields))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

impl RawObject {
    fn get(&self, name: &str) -> Option<&RawValue> {
        self.0
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_ref())
    }
}

/// A client's fields as they go upstream, written without copying them first: the first
/// `model` replaced, every `max_multiplier` left out, the first `stream_options` replaced
/// when there is a new one; a replaced field that was missing comes last.
struct UpstreamFields<'a> {
    fields: &'a [(String, Box<RawValue>)],
    model: &'a str,
    stream_options: Option<&'a RawValue>,
}

impl Serialize for UpstreamFields<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        let (mut model_written, mut options_written) = (false, false);
        for (name, value) in self.fields {
            match (name.as_str(), self.stream_options) {
                ("max_multiplier", _) => {}
                ("model", _) if !model_written => {
                    model_written = true;
                    map.serialize_entry(name, self.model)?;
                }
                ("stream_options", Some(options)) if !options_written => {
                    options_written = true;
                    map.serialize_entry(name, options)?;
                }
                _ => map.serialize_entry(name, value)?,
            }
        }
        if !model_written {
            map.serialize_entry("model", self.model)?;
        }
        if let Some(options) = self.stream_options
            && !options_written
        {
            map.serialize_entry("stream_options", options)?;
        }
        map.end()
    }
}

/// A client's request body, parsed only as far as the gateway needs.
#[derive(Debug)]
pub struct ClientRequest {
    fields: RawObject,
    /// The logical model asked for.
    pub model: String,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// For an OpenAI chat stream: whether the client asked for the usage chunk itself.
    pub client_wants_usage: bool,
    /// The body's `max_multiplier`, if any (removed before forwarding).
    pub max_multiplier: Option<Multiplier>,
    /// What it gives the model to read, for an estimate of its input tokens.
    pub prompt: PromptSize,
    /// For the Responses API: the stored response it continues (`previous_response_id`).
    pub previous_response_id: Option<String>,
    /// For the Responses API: whether the upstream stores the response (`store`, true unless
    /// `false`), so that a later request can continue it.
    pub stores_response: bool,
}

fn bad(message: impl Into<String>) -> GatewayError {
    GatewayError::BadRequest(message.into())
}

fn raw(text: String) -> Result<Box<RawValue>, GatewayError> {
    RawValue::from_string(text).map_err(|error| GatewayError::Internal(error.to_string()))
}

impl ClientRequest {
    /// Parses `body` as a JSON object with a string `model`.
    pub fn parse(endpoint: EndpointKind, body: &[u8]) -> Result<ClientRequest, GatewayError> {
        let fields: RawObject = serde_json::from_slice(body)
            .map_err(|error| bad(format!("the request body is not a JSON object: {error}")))?;
        let model = fields
            .get("model")
            .and_then(|value| serde_json::from_str::<String>(value.get()).ok())
            .filter(|model| !model.is_empty())
            .ok_or_else(|| bad("the request body has no `model` string"))?;
        // Not a boolean (`"yes"`, `1`) is refused as every upstream API refuses it: passed on, a
        // lenient upstream could stream what the host relays and bills as a whole body.
        let stream = match fields.get("stream").map(|value| value.get().trim()) {
            None | Some("null" | "false") => false,
            Some("true") => true,
            Some(_) => return Err(bad("`stream` must be true or false")),
        };
        let client_wants_usage = endpoint == EndpointKind::ChatCompletions
            && fields
                .get("stream_options")
                .and_then(|value| serde_json::from_str::<serde_json::Value>(value.get()).ok())
                .is_some_and(|options| options["include_usage"] == serde_json::Value::Bool(true));
        let max_multiplier = fields
            .get("max_multiplier")
            .map(|value| {
                let text = match serde_json::from_str::<String>(value.get()) {
                    Ok(text) => text,
                    Err(_) => value.get().to_owned(),
                };
                text.trim().parse::<Multiplier>().map_err(|_| {
                    bad("`max_multiplier` must be a non-negative decimal (string or number)")
                })
            })
            .transpose()?;
        let responses = endpoint == EndpointKind::Responses;
        if responses
            && fields
                .get("background")
                .is_some_and(|value| value.get().trim() == "true")
        {
            return Err(GatewayError::UnsupportedParameter {
                param: "background",
                message: "background responses are not supported by this gateway: their \
                          result is fetched later, outside the request that is billed for it; \
                          send the request without `background` (streamed, for a long one)"
                    .to_owned(),
            });
        }
        // Anything but a string is left for the upstream to refuse.
        let previous_response_id = fields
            .get("previous_response_id")
            .filter(|_| responses)
            .and_then(|value| serde_json::from_str::<String>(value.get()).ok());
        let stores_response = responses
            && fields
                .get("store")
                .is_none_or(|value| value.get().trim() != "false");
        Ok(ClientRequest {
            fields,
            model,
            stream,
            client_wants_usage,
            max_multiplier,
            prompt: PromptSize::of(body),
            previous_response_id,
            stores_response,
        })
    }

    /// The body to send upstream: `model` renamed to `upstream_model`, `max_multiplier`
    /// removed, and for an OpenAI chat stream, usage asked for.
    pub fn upstream_body(
        &self,
        endpoint: EndpointKind,
        upstream_model: &str,
    ) -> Result<Bytes, GatewayError> {
        let stream_options = if endpoint == EndpointKind::ChatCompletions && self.stream {
            let mut options = self
                .fields
                .get("stream_options")
                .and_then(|value| serde_json::from_str::<serde_json::Value>(value.get()).ok())
                .filter(serde_json::Value::is_object)
                .unwrap_or_else(|| serde_json::json!({}));
            options["include_usage"] = serde_json::Value::Bool(true);
            Some(raw(options.to_string())?)
        } else {
            None
        };
        let upstream = UpstreamFields {
            fields: &self.fields.0,
            model: upstream_model,
            stream_options: stream_options.as_deref(),
        };
        serde_json::to_vec(&upstream)
            .map(Bytes::from)
            .map_err(|error| GatewayError::Internal(error.to_string()))
    }
}

/// A whole upstream answer that is not one JSON object, as every forwarding endpoint's is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAnObject;

/// What the gateway reads of a whole (non-stream) upstream answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WholeAnswer {
    /// The usage it reports, if any (and if it can be believed).
    pub usage: Option<Usage>,
    /// For the Responses API: the stored response's `id`, if the answer names one.
    pub response_id: Option<String>,
}

/// Reads a whole upstream response body: its usage, and on the Responses API its `id`;
/// [`NotAnObject`] when the body is not one JSON object. One parse answers all three.
pub fn read_whole_answer(endpoint: EndpointKind, body: &[u8]) -> Result<WholeAnswer, NotAnObject> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let fields = TopLevelFields {
        want_id: endpoint == EndpointKind::Responses,
    }
    .deserialize(&mut deserializer)
    .and_then(|fields| deserializer.end().map(|()| fields))
    .map_err(|_| NotAnObject)?;
    let usage = fields.usage.unwrap_or(serde_json::Value::Null);
    let usage = match endpoint {
        EndpointKind::Messages => anthropic::usage(&usage),
        _ => openai::usage(&usage),
    };
    let response_id = fields
        .id
        .and_then(|id| id.as_str().map(str::to_owned))
        .filter(|id| !id.is_empty());
    Ok(WholeAnswer { usage, response_id })
}

/// Reads the top-level `usage` of a JSON object (the last one, as a full parse would keep),
/// and its `id` when wanted; every other field is skipped without being built: a response's
/// content is not the gateway's business.
struct TopLevelFields {
    want_id: bool,
}

/// What [`TopLevelFields`] read.
struct Found {
    usage: Option<serde_json::Value>,
    id: Option<serde_json::Value>,
}

impl<'de> DeserializeSeed<'de> for TopLevelFields {
    type Value = Found;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Found, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopLevelFields {
    type Value = Found;

    fn expecting(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        let mut found = Found {
            usage: None,
            id: None,
        };
        while let Some(key) = map.next_key::<TopLevelKey>()? {
            match key {
                TopLevelKey::Usage => found.usage = Some(map.next_value()?),
                TopLevelKey::Id if self.want_id => found.id = Some(map.next_value()?),
                TopLevelKey::Id | TopLevelKey::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// An object key of [`TopLevelFields`], read without allocating.
enum TopLevelKey {
    Usage,
    Id,
    Other,
}

impl<'de> Deserialize<'de> for TopLevelKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = TopLevelKey;
            fn expecting(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
                out.write_str("an object key")
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<TopLevelKey, E> {
                Ok(match key {
                    "usage" => TopLevelKey::Usage,
                    "id" => TopLevelKey::Id,
                    _ => TopLevelKey::Other,
                })
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// One server-sent event, as far as the gateway reads it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined by newlines.
    pub data: String,
}

impl SseEvent {
    /// Parses one complete event's text.
    pub fn parse(text: &str) -> SseEvent {
        let mut event = SseEvent::default();
        let mut data: Vec<&str> = Vec::new();
        for line in text.lines() {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event.event = Some(value.to_owned()),
                "data" => data.push(value),
                _ => {}
            }
        }
        event.data = data.join("\n");
        event
    }
}

/// The fields of a stream's events whose string values are generated output, by wire format:
/// chat's `content`, `reasoning_content`, `refusal` and tool-call `arguments`; Anthropic's
/// `text`, `thinking` and `partial_json`; the Responses API's `delta` (only: its `*.done`
/// events repeat the whole text).
fn generated_fields(endpoint: EndpointKind) -> &'static [&'static [u8]] {
    match endpoint {
        EndpointKind::ChatCompletions | EndpointKind::Embeddings => {
            &[b"content", b"reasoning_content", b"refusal", b"arguments"]
        }
        EndpointKind::Messages => &[b"text", b"thinking", b"partial_json"],
        EndpointKind::Responses => &[b"delta"],
    }
}

/// How many bytes of generated output an `endpoint` stream event's JSON `data` carries: the
/// lengths of the string values of its format's generated fields, as written (escapes
/// included). A cut stream's output is estimated from these, not from the events' whole size:
/// a chat chunk spends ~170 bytes of framing on a token of text, so counting it all billed a
/// cut stream ~40 times its output.
pub fn generated_text_bytes(endpoint: EndpointKind, data: &str) -> u64 {
    let fields = generated_fields(endpoint);
    let bytes = data.as_bytes();
    let mut total: u64 = 0;
    let mut resume = 0;
    // Each `":"` ends a key and opens its string value.
    for colon in memchr::memmem::find_iter(bytes, b"\":\"") {
        if colon < resume {
            continue; // inside the value just measured
        }
        let key = bytes[..colon]
            .iter()
            .rposition(|&byte| byte == b'"')
            .map_or(&[][..], |open| &bytes[open + 1..colon]);
        let start = colon + 3;
        let length = string_length(&bytes[start..]);
        resume = start + length;
        if fields.contains(&key) {
            total = total.saturating_add(length as u64);
        }
    }
    total
}

/// The length of a JSON string's contents up to its closing quote (escapes skipped over), or
/// to the end of `text` when it never closes.
fn string_length(text: &[u8]) -> usize {
    let mut at = 0;
    while let Some(offset) = memchr::memchr2(b'"', b'\\', &text[at..]) {
        let found = at + offset;
        if text[found] == b'"' {
            return found;
        }
        at = found + 2;
        if at >= text.len() {
            return text.len();
        }
    }
    text.len()
}

/// What the gateway does with one event of an upstream stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventAction {
    /// Pass it on.
    Forward,
    /// Leave it out (the usage chunk the client did not ask for).
    Drop,
}

/// What a stream reported of its usage by its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportedUsage {
    /// All of it.
    Whole(Usage),
    /// Its input, but not its output: an Anthropic stream that ended before its
    /// `message_delta` (cut, or its client gone), whose `message_start` counted the prompt and
    /// only a token or so of output. Its output is to be estimated.
    InputOnly(Usage),
    /// Nothing that can be believed.
    Nothing,
}

/// Follows the usage an upstream stream reports, event by event.
#[derive(Debug)]
pub struct StreamUsage {
    endpoint: EndpointKind,
    drop_usage_chunk: bool,
    usage: Option<Usage>,
    /// Whether `usage` counts the output: OpenAI's usage chunk and `response.completed` count
    /// everything at once; Anthropic counts the output only in `message_delta`.
    output_counted: bool,
    /// An event reported a count that cannot be believed: the stream's usage is unreadable
    /// for good, and the stream is billed on the estimate.
    unbelievable: bool,
    /// For the Responses API: the id of the response the stream creates.
    response_id: Option<String>,
}

impl StreamUsage {
    /// A tracker for a stream of `endpoint`; `drop_usage_chunk` leaves out an OpenAI chat
    /// stream's usage-only chunk (the client did not ask for it).
    pub fn new(endpoint: EndpointKind, drop_usage_chunk: bool) -> Self {
        StreamUsage {
            endpoint,
            drop_usage_chunk,
            usage: None,
            output_counted: false,
            unbelievable: false,
            response_id: None,
        }
    }

    /// Reads `event`'s usage, and says whether to forward it.
    pub fn observe(&mut self, event: &SseEvent) -> EventAction {
        match self.endpoint {
            EndpointKind::Messages => {
                match anthropic::observe_stream_event(event, &mut self.usage) {
                    Ok(counted_output) => self.output_counted |= counted_output,
                    Err(Unbelievable) => self.unbelievable = true,
                }
                EventAction::Forward
            }
            EndpointKind::Responses => {
                if self.response_id.is_none() {
                    self.response_id = openai::responses_stream_id(event);
                }
                if let Some(found) = openai::responses_stream_usage(event) {
                    self.record(found);
                }
                EventAction::Forward
            }
            EndpointKind::ChatCompletions | EndpointKind::Embeddings => {
                match openai::chat_stream_usage(event) {
                    Some((found, usage_only)) => {
                        self.record(found);
                        if usage_only && self.drop_usage_chunk {
                            EventAction::Drop
                        } else {
                            EventAction::Forward
                        }
                    }
                    None => EventAction::Forward,
                }
            }
        }
    }

    /// Keeps a reported usage, or remembers that one could not be believed.
    fn record(&mut self, found: Result<Usage, Unbelievable>) {
        match found {
            Ok(usage) => {
                self.usage = Some(usage);
                self.output_counted = true;
            }
            Err(Unbelievable) => self.unbelievable = true,
        }
    }

    /// The usage reported so far; `None` once a count could not be believed.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.filter(|_| !self.unbelievable)
    }

    /// The bytes of generated output `event` carries (see [`generated_text_bytes`]).
    pub fn generated_bytes(&self, event: &SseEvent) -> u64 {
        generated_text_bytes(self.endpoint, &event.data)
    }

    /// For the Responses API: the id of the response the stream creates, once an event named
    /// it.
    pub fn response_id(&self) -> Option<&str> {
        self.response_id.as_deref()
    }

    /// What the stream reported of its usage, for the settle phase.
    pub fn reported(&self) -> ReportedUsage {
        match self.usage() {
            None => ReportedUsage::Nothing,
            Some(usage) if self.output_counted => ReportedUsage::Whole(usage),
            Some(usage) => ReportedUsage::InputOnly(usage),
        }
    }
}

/// Whether JSON text `data` may hold the string `word` (a key or a value): it holds it
/// literally, or it has a `\u` escape, which could spell it. Checked before parsing a stream
/// event, so the events that cannot matter (most of them) are not parsed at all.
fn may_mention(data: &str, word: &str) -> bool {
    data.contains(word) || data.contains("\\u")
}

/// The most tokens one request is believed to have used: far past any model's context, and
/// small enough that no realistic price times it overflows a charge.
pub const MAX_BELIEVABLE_TOKENS: u64 = 1 << 32;

/// A token count that is there but cannot be believed: not a whole number (`-3`, `3.5`,
/// `"3"`) or above [`MAX_BELIEVABLE_TOKENS`]. It makes the whole `usage` unreadable, so the
/// request is billed on the estimate: a misread count would bill it as zero, and an absurd one
/// could not be charged at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unbelievable;

/// Reads a token count field: `Ok(None)` when it is absent or null.
fn count(value: &serde_json::Value, field: &str) -> Result<Option<u64>, Unbelievable> {
    match value.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(found) => found
            .as_u64()
            .filter(|tokens| *tokens <= MAX_BELIEVABLE_TOKENS)
            .map(Some)
            .ok_or(Unbelievable),
    }
}

/// Reads a token count field of an optional details object (`prompt_tokens_details`, …).
fn detail_count(
    details: Option<&serde_json::Value>,
    field: &str,
) -> Result<Option<u64>, Unbelievable> {
    details.map_or(Ok(None), |details| count(details, field))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_survive_and_model_is_rewritten() {
        let body = br#"{"model":"logical","zeta":{"keep":[1,2.50,"x"]},"max_multiplier":"1.5","alpha":1e3}"#;
        let request = ClientRequest::parse(EndpointKind::Embeddings, body).unwrap();
        assert_eq!(request.model, "logical");
        assert_eq!(request.max_multiplier, Some("1.5".parse().unwrap()));
        let upstream = request
            .upstream_body(EndpointKind::Embeddings, "real")
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&upstream).unwrap(),
            r#"{"model":"real","zeta":{"keep":[1,2.50,"x"]},"alpha":1e3}"#
        );
    }

    #[test]
    fn chat_streams_ask_for_usage() {
        let body = br#"{"model":"m","stream":true,"stream_options":{"other":1}}"#;
        let request = ClientRequest::parse(EndpointKind::ChatCompletions, body).unwrap();
        assert!(request.stream && !request.client_wants_usage);
        let upstream = request
            .upstream_body(EndpointKind::ChatCompletions, "m")
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&upstream).unwrap();
        assert_eq!(value["stream_options"]["include_usage"], true);
        assert_eq!(value["stream_options"]["other"], 1);
        let asked = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
        assert!(
            ClientRequest::parse(EndpointKind::ChatCompletions, asked)
                .unwrap()
                .client_wants_usage
        );
    }

    #[test]
    fn malformed_bodies_are_bad_requests() {
        for body in [&b"[1]"[..], b"not json", br#"{"model":1}"#, br#"{"x":1}"#] {
            assert!(matches!(
                ClientRequest::parse(EndpointKind::ChatCompletions, body),
                Err(GatewayError::BadRequest(_))
            ));
        }
        for body in [
            &br#"{"model":"m","stream":"yes"}"#[..],
            br#"{"model":"m","stream":1}"#,
        ] {
            assert!(matches!(
                ClientRequest::parse(EndpointKind::ChatCompletions, body),
                Err(GatewayError::BadRequest(message)) if message.contains("`stream`")
            ));
        }
        for (body, stream) in [
            (&br#"{"model":"m","stream":null}"#[..], false),
            (br#"{"model":"m","stream": true }"#, true),
            (br#"{"model":"m"}"#, false),
        ] {
            let request = ClientRequest::parse(EndpointKind::ChatCompletions, body).unwrap();
            assert_eq!(request.stream, stream);
        }
        let bad_ceiling = br#"{"model":"m","max_multiplier":"-1"}"#;
        assert!(ClientRequest::parse(EndpointKind::ChatCompletions, bad_ceiling).is_err());
        let numeric = br#"{"model":"m","max_multiplier":0.5}"#;
        assert_eq!(
            ClientRequest::parse(EndpointKind::ChatCompletions, numeric)
                .unwrap()
                .max_multiplier,
            Some("0.5".parse().unwrap())
        );
    }

    #[test]
    fn streamed_chat_bodies_keep_order_and_gain_stream_options_last() {
        let body = br#"{"model":"a","max_multiplier":1,"stream":true,"model":"dup","n":1}"#;
        let request = ClientRequest::parse(EndpointKind::ChatCompletions, body).unwrap();
        let upstream = request
            .upstream_body(EndpointKind::ChatCompletions, "real\"x")
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&upstream).unwrap(),
            r#"{"model":"real\"x","stream":true,"model":"dup","n":1,"stream_options":{"include_usage":true}}"#
        );
    }

    #[test]
    fn a_usage_with_a_count_that_cannot_be_believed_is_no_usage_so_the_estimate_bills() {
        let most = MAX_BELIEVABLE_TOKENS;
        let unbelievable = [
            r#"{"usage":{"prompt_tokens":-3,"completion_tokens":2}}"#.to_owned(),
            r#"{"usage":{"prompt_tokens":3.5,"completion_tokens":2}}"#.to_owned(),
            r#"{"usage":{"prompt_tokens":"3","completion_tokens":2}}"#.to_owned(),
            r#"{"usage":{"prompt_tokens":3,"completion_tokens":18446744073709551615}}"#.to_owned(),
            r#"{"usage":{"prompt_tokens":3,"completion_tokens":1e30}}"#.to_owned(),
            format!(
                r#"{{"usage":{{"input_tokens":{},"output_tokens":2}}}}"#,
                most + 1
            ),
            r#"{"usage":{"prompt_tokens":3,"prompt_tokens_details":{"cached_tokens":-1}}}"#
                .to_owned(),
        ];
        for body in &unbelievable {
            assert_eq!(
                read_whole_answer(EndpointKind::ChatCompletions, body.as_bytes())
                    .map(|answer| answer.usage),
                Ok(None),
                "{body}"
            );
        }
        let anthropic = r#"{"usage":{"input_tokens":3,"cache_read_input_tokens":"9"}}"#;
        assert_eq!(
            read_whole_answer(EndpointKind::Messages, anthropic.as_bytes())
                .map(|answer| answer.usage),
            Ok(None)
        );
        // At the bound, and with counts absent or null, the usage is read as reported.
        let at_most = format!(r#"{{"usage":{{"prompt_tokens":{most},"completion_tokens":null}}}}"#);
        let usage = read_whole_answer(EndpointKind::ChatCompletions, at_most.as_bytes())
            .map(|answer| answer.usage)
            .unwrap()
            .unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (most, 0));
    }

    #[test]
    fn a_stream_with_one_unbelievable_count_is_billed_on_the_estimate() {
        let mut chat = StreamUsage::new(EndpointKind::ChatCompletions, true);
        let chunk = r#"data: {"choices":[],"usage":{"prompt_tokens":-1,"completion_tokens":2}}"#;
        assert_eq!(
            chat.observe(&SseEvent::parse(chunk)),
            EventAction::Drop,
            "the usage-only chunk is still left out"
        );
        assert_eq!(chat.usage(), None);
        let mut messages = StreamUsage::new(EndpointKind::Messages, false);
        let start = r#"data: {"type":"message_start","message":{"usage":{"input_tokens":5,"output_tokens":1}}}"#;
        messages.observe(&SseEvent::parse(start));
        assert!(messages.usage().is_some());
        let delta = r#"data: {"type":"message_delta","usage":{"output_tokens":-7}}"#;
        messages.observe(&SseEvent::parse(delta));
        let later = r#"data: {"type":"message_delta","usage":{"output_tokens":9}}"#;
        messages.observe(&SseEvent::parse(later));
        assert_eq!(messages.usage(), None, "unreadable for good");
        let mut responses = StreamUsage::new(EndpointKind::Responses, false);
        let done =
            r#"data: {"type":"response.completed","response":{"usage":{"input_tokens":"x"}}}"#;
        responses.observe(&SseEvent::parse(done));
        assert_eq!(responses.usage(), None);
    }

    #[test]
    fn generated_text_is_the_string_values_of_each_formats_output_fields() {
        let chat = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","model":"gpt","choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"},"finish_reason":null}]}"#;
        assert_eq!(generated_text_bytes(EndpointKind::ChatCompletions, chat), 5);
        let escaped =
            r#"{"choices":[{"delta":{"content":"say \"hi\"\n","reasoning_content":"ok"}}]}"#;
        assert_eq!(
            generated_text_bytes(EndpointKind::ChatCompletions, escaped),
            14,
            "escapes as written, both fields"
        );
        let tool = r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{\"a\":1}"}}]}}]}"#;
        assert_eq!(generated_text_bytes(EndpointKind::ChatCompletions, tool), 9);
        let anthropic = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi there"}}"#;
        assert_eq!(generated_text_bytes(EndpointKind::Messages, anthropic), 8);
        let start =
            r#"{"type":"message_start","message":{"id":"msg_1","content":[],"model":"claude"}}"#;
        assert_eq!(generated_text_bytes(EndpointKind::Messages, start), 0);
        let delta = r#"{"type":"response.output_text.delta","item_id":"msg_1","delta":"Hey"}"#;
        assert_eq!(generated_text_bytes(EndpointKind::Responses, delta), 3);
        let done = r#"{"type":"response.output_text.done","text":"Hey you"}"#;
        assert_eq!(
            generated_text_bytes(EndpointKind::Responses, done),
            0,
            "a done event repeats the text"
        );
        let unclosed = r#"{"choices":[{"delta":{"content":"abc"#;
        assert_eq!(
            generated_text_bytes(EndpointKind::ChatCompletions, unclosed),
            3
        );
        let trailing_escape = "{\"content\":\"ab\\";
        assert_eq!(
            generated_text_bytes(EndpointKind::ChatCompletions, trailing_escape),
            3
        );
    }

    #[test]
    fn an_anthropic_stream_counts_its_output_only_at_its_message_delta() {
        let mut messages = StreamUsage::new(EndpointKind::Messages, false);
        assert_eq!(messages.reported(), ReportedUsage::Nothing);
        let start = r#"data: {"type":"message_start","message":{"usage":{"input_tokens":5,"output_tokens":1}}}"#;
        messages.observe(&SseEvent::parse(start));
        let ReportedUsage::InputOnly(input) = messages.reported() else {
            panic!(
                "message_start counts the input only: {:?}",
                messages.reported()
            );
        };
        assert_eq!((input.prompt_tokens, input.completion_tokens), (5, 1));
        let delta = r#"data: {"type":"message_delta","usage":{"output_tokens":9}}"#;
        messages.observe(&SseEvent::parse(delta));
        let ReportedUsage::Whole(whole) = messages.reported() else {
            panic!("message_delta counts the output: {:?}", messages.reported());
        };
        assert_eq!((whole.prompt_tokens, whole.completion_tokens), (5, 9));
        let mut chat = StreamUsage::new(EndpointKind::ChatCompletions, true);
        let usage = r#"data: {"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":3}}"#;
        chat.observe(&SseEvent::parse(usage));
        assert!(matches!(chat.reported(), ReportedUsage::Whole(_)));
    }

    #[test]
    fn response_usage_reads_only_the_top_level_usage() {
        let body = br#"{"choices":[{"usage":{"prompt_tokens":99}}],"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":3,"completion_tokens":2}}"#;
        let usage = read_whole_answer(EndpointKind::ChatCompletions, body)
            .map(|answer| answer.usage)
            .unwrap()
            .unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (3, 2));
        let escaped = br#"{"\u0075sage":{"input_tokens":4,"output_tokens":5}}"#;
        let usage = read_whole_answer(EndpointKind::Messages, escaped)
            .map(|answer| answer.usage)
            .unwrap()
            .unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (4, 5));
        for body in [&b"{}"[..], b"{\"usage\":null}", b"{\"usage\":1}"] {
            assert_eq!(
                read_whole_answer(EndpointKind::ChatCompletions, body).map(|answer| answer.usage),
                Ok(None)
            );
        }
        for body in [
            &b""[..],
            b"[1]",
            b"{\"usage\":1} x",
            b"<html>",
            b"{\"usage\":",
        ] {
            assert_eq!(
                read_whole_answer(EndpointKind::ChatCompletions, body).map(|answer| answer.usage),
                Err(NotAnObject),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_whole_responses_answer_names_its_stored_response_and_others_are_not_asked() {
        let body = br#"{"id":"resp_1","output":[{"id":"msg_1"}],"usage":{"input_tokens":1}}"#;
        let answer = read_whole_answer(EndpointKind::Responses, body).unwrap();
        assert_eq!(answer.response_id.as_deref(), Some("resp_1"));
        assert_eq!(answer.usage.map(|usage| usage.prompt_tokens), Some(1));
        let chat = br#"{"id":"chatcmpl-1","usage":null}"#;
        assert_eq!(
            read_whole_answer(EndpointKind::ChatCompletions, chat).unwrap(),
            WholeAnswer::default()
        );
        // An id that is not a string names nothing, and is no reason to refuse the answer.
        for odd in [&br#"{"id":7}"#[..], br#"{"id":null}"#, br#"{"id":""}"#] {
            assert_eq!(
                read_whole_answer(EndpointKind::Responses, odd).unwrap(),
                WholeAnswer::default()
            );
        }
    }

    #[test]
    fn stream_usage_is_found_even_behind_escapes() {
        let mut tracker = StreamUsage::new(EndpointKind::ChatCompletions, true);
        let plain = SseEvent::parse("data: {\"choices\":[{\"delta\":{}}]}\n\n");
        assert_eq!(tracker.observe(&plain), EventAction::Forward);
        assert_eq!(tracker.usage(), None);
        let escaped = SseEvent::parse(
            "data: {\"choices\":[],\"\\u0075sage\":{\"prompt_tokens\":7,\"completion_tokens\":1}}\n\n",
        );
        assert_eq!(tracker.observe(&escaped), EventAction::Drop);
        assert_eq!(tracker.usage().map(|usage| usage.prompt_tokens), Some(7));
        let mut anthropic = StreamUsage::new(EndpointKind::Messages, false);
        anthropic.observe(&SseEvent::parse(
            "event: x\ndata: {\"type\":\"message_\\u0064elta\",\"usage\":{\"output_tokens\":9}}\n\n",
        ));
        assert_eq!(
            anthropic.usage().map(|usage| usage.completion_tokens),
            Some(9)
        );
    }

    #[test]
    fn sse_events_parse() {
        let event = SseEvent::parse("event: ping\ndata: {\"a\":1}\ndata: x\n\n");
        assert_eq!(event.event.as_deref(), Some("ping"));
        assert_eq!(event.data, "{\"a\":1}\nx");
    }
}
