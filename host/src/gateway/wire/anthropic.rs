//! The Anthropic messages wire format: where it reports usage, whole and streamed.

use serde_json::Value;

use super::{SseEvent, Unbelievable, count, may_mention};
use crate::billing::Usage;

/// The usage in an Anthropic `usage` object. Anthropic's `input_tokens` leaves out the
/// tokens read from or written to the prompt cache, so they are added back: the prompt is
/// all three, of which the cache reads are "cached". `None` when it is absent or null, or
/// when a count in it cannot be believed (see [`super::MAX_BELIEVABLE_TOKENS`]).
pub fn usage(usage: &Value) -> Option<Usage> {
    read(usage).ok().flatten()
}

/// The usage in `usage` (`Ok(None)` when it is not an object or names no count).
fn read(usage: &Value) -> Result<Option<Usage>, Unbelievable> {
    let input = count(usage, "input_tokens")?;
    let output = count(usage, "output_tokens")?;
    let cache_read = count(usage, "cache_read_input_tokens")?;
    let cache_write = count(usage, "cache_creation_input_tokens")?.unwrap_or(0);
    if input.is_none() && output.is_none() {
        return Ok(None);
    }
    Ok(Some(Usage {
        // Each is at most 2^32, so the sum cannot overflow.
        prompt_tokens: input
            .unwrap_or(0)
            .saturating_add(cache_read.unwrap_or(0))
            .saturating_add(cache_write),
        completion_tokens: output.unwrap_or(0),
        cached_prompt_tokens: cache_read,
        reasoning_tokens: None,
        estimated: false,
    }))
}

/// Folds one stream event into `total`: `message_start` carries the input usage (and a token
/// or so of output), `message_delta` the (cumulative) output tokens and, in newer API
/// versions, input counts. Answers whether the event counted the output (a `message_delta`
/// with `output_tokens`); `Err` when a count in it cannot be believed.
pub fn observe_stream_event(
    event: &SseEvent,
    total: &mut Option<Usage>,
) -> Result<bool, Unbelievable> {
    if !may_mention(&event.data, "message_start") && !may_mention(&event.data, "message_delta") {
        return Ok(false);
    }
    let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
        return Ok(false);
    };
    let mut counted_output = false;
    match data["type"].as_str() {
        Some("message_start") => {
            if let Some(start) = read(&data["message"]["usage"])? {
                *total = Some(start);
            }
        }
        Some("message_delta") => {
            let delta = &data["usage"];
            let mut current = total.unwrap_or_default();
            if let Some(output) = count(delta, "output_tokens")? {
                current.completion_tokens = output;
                counted_output = true;
            }
            if count(delta, "input_tokens")?.is_some()
                && let Some(with_input) = read(delta)?
            {
                current.prompt_tokens = with_input.prompt_tokens;
                current.cached_prompt_tokens = with_input.cached_prompt_tokens;
            }
            *total = Some(current);
        }
        _ => {}
    }
    Ok(counted_output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cache_tokens_count_as_prompt() {
        let found = usage(&json!({"input_tokens": 10, "output_tokens": 3,
            "cache_read_input_tokens": 5, "cache_creation_input_tokens": 2}))
        .unwrap();
        assert_eq!(
            (
                found.prompt_tokens,
                found.cached_prompt_tokens,
                found.completion_tokens
            ),
            (17, Some(5), 3)
        );
    }

    #[test]
    fn a_stream_adds_start_and_delta() {
        let mut total = None;
        observe_stream_event(
            &SseEvent::parse(
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}",
            ),
            &mut total,
        )
        .unwrap();
        observe_stream_event(
            &SseEvent::parse(
                "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}",
            ),
            &mut total,
        )
        .unwrap();
        let total = total.unwrap();
        assert_eq!((total.prompt_tokens, total.completion_tokens), (12, 9));
    }
}
