//! The log phase: one structured line per request.

use std::time::Instant;

/// What the log line of one request says; filled in as the pipeline goes.
#[derive(Debug, Clone)]
pub struct RequestLog {
    /// The request's id.
    pub request_id: String,
    /// The endpoint it arrived on, as its metrics label (`chat_completions`, `messages`, …).
    pub endpoint: &'static str,
    /// When it arrived.
    pub started: Instant,
    /// The API key that made it (`api_keys.id`) and its owner, once authenticated.
    pub key: Option<(String, String)>,
    /// The logical model, once known.
    pub model: Option<String>,
    /// The provider that served it (or the last one tried).
    pub provider: Option<String>,
    /// The channel that served it.
    pub channel: Option<String>,
    /// The id the serving upstream gave the request (its `x-request-id` or `request-id`), for
    /// the operator to quote to the provider; clients see only Monoize's.
    pub upstream_request_id: Option<String>,
    /// Upstream attempts made.
    pub attempts: usize,
    /// The status answered; 499 when the client went away before the answer
    /// ([`super::CLIENT_CLOSED_REQUEST`]).
    pub status: u16,
    /// How a stream ended, for streams.
    pub stream_end: Option<&'static str>,
}

impl RequestLog {
    /// A log for `request_id` on `endpoint`, starting now.
    pub fn new(request_id: &str, endpoint: &'static str) -> Self {
        RequestLog {
            request_id: request_id.to_owned(),
            endpoint,
            started: Instant::now(),
            key: None,
            model: None,
            provider: None,
            channel: None,
            upstream_request_id: None,
            attempts: 0,
            status: 0,
            stream_end: None,
        }
    }

    /// Writes the line.
    pub fn emit(&self) {
        tracing::info!(
            target: "monoize::gateway::request",
            request_id = %self.request_id,
            endpoint = self.endpoint,
            key_id = self.key.as_ref().map_or("-", |(key_id, _)| key_id.as_str()),
            user_id = self.key.as_ref().map_or("-", |(_, user_id)| user_id.as_str()),
            model = self.model.as_deref().unwrap_or("-"),
            provider = self.provider.as_deref().unwrap_or("-"),
            channel = self.channel.as_deref().unwrap_or("-"),
            upstream_request_id = self.upstream_request_id.as_deref().unwrap_or("-"),
            status = self.status,
            attempts = self.attempts,
            stream_end = self.stream_end.unwrap_or("-"),
            duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "request"
        );
    }
}
