//! The OpenAI wire formats: where chat completions, responses and embeddings report usage,
//! whole and streamed.

use serde_json::Value;

use super::{SseEvent, Unbelievable, count, detail_count, may_mention};
use crate::billing::Usage;

/// The usage in an OpenAI `usage` object: chat completions and embeddings
/// (`prompt_tokens`, `completion_tokens`, `*_details`) or responses (`input_tokens`,
/// `output_tokens`, `*_details`). `None` when it is absent or null, or when a count in it
/// cannot be believed (see [`super::MAX_BELIEVABLE_TOKENS`]).
pub fn usage(usage: &Value) -> Option<Usage> {
    read(usage).ok().flatten()
}

/// The usage in `usage` (`Ok(None)` when it is not an object or names no count).
fn read(usage: &Value) -> Result<Option<Usage>, Unbelievable> {
    let prompt = match count(usage, "prompt_tokens")? {
        None => count(usage, "input_tokens")?,
        found => found,
    };
    let completion = match count(usage, "completion_tokens")? {
        None => count(usage, "output_tokens")?,
        found => found,
    };
    let prompt_details = usage
        .get("prompt_tokens_details")
        .or_else(|| usage.get("input_tokens_details"));
    let completion_details = usage
        .get("completion_tokens_details")
        .or_else(|| usage.get("output_tokens_details"));
    let cached_prompt_tokens = detail_count(prompt_details, "cached_tokens")?;
    let reasoning_tokens = detail_count(completion_details, "reasoning_tokens")?;
    if prompt.is_none() && completion.is_none() {
        return Ok(None);
    }
    Ok(Some(Usage {
        prompt_tokens: prompt.unwrap_or(0),
        completion_tokens: completion.unwrap_or(0),
        cached_prompt_tokens,
        reasoning_tokens,
        estimated: false,
    }))
}

/// The usage of a chat-completions stream chunk that has one (`Err` when a count in it cannot
/// be believed), and whether the chunk is the usage-only one (`choices` empty) that the host
/// asked for.
pub fn chat_stream_usage(event: &SseEvent) -> Option<(Result<Usage, Unbelievable>, bool)> {
    if event.data.trim() == "[DONE]" || !may_mention(&event.data, "usage") {
        return None;
    }
    let chunk: Value = serde_json::from_str(&event.data).ok()?;
    let found = reported(&chunk["usage"])?;
    let usage_only = chunk["choices"].as_array().is_some_and(Vec::is_empty);
    Some((found, usage_only))
}

/// The usage of a responses stream, reported by its `response.completed` (or
/// `response.incomplete`) event (`Err` when a count in it cannot be believed).
pub fn responses_stream_usage(event: &SseEvent) -> Option<Result<Usage, Unbelievable>> {
    if !may_mention(&event.data, "usage") {
        return None;
    }
    let data: Value = serde_json::from_str(&event.data).ok()?;
    let kind = event
        .event
        .as_deref()
        .or_else(|| data["type"].as_str())
        .unwrap_or_default();
    if kind != "response.completed" && kind != "response.incomplete" {
        return None;
    }
    reported(&data["response"]["usage"])
}

/// The id of the response a responses stream creates, from the first of its events that
/// carries the response (`response.created`, then `response.in_progress`, …).
pub fn responses_stream_id(event: &SseEvent) -> Option<String> {
    if !may_mention(&event.data, "\"response\"") {
        return None;
    }
    let data: Value = serde_json::from_str(&event.data).ok()?;
    data["response"]["id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// The usage in `usage` when it reports one, believable or not.
fn reported(usage: &Value) -> Option<Result<Usage, Unbelievable>> {
    read(usage).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_and_responses_usage_map_to_one_shape() {
        let chat = json!({"prompt_tokens": 10, "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 2}});
        assert_eq!(
            usage(&chat),
            Some(Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
                cached_prompt_tokens: Some(4),
                reasoning_tokens: Some(2),
                estimated: false
            })
        );
        let responses = json!({"input_tokens": 7, "output_tokens": 3,
            "output_tokens_details": {"reasoning_tokens": 1}});
        let mapped = usage(&responses).unwrap();
        assert_eq!((mapped.prompt_tokens, mapped.completion_tokens), (7, 3));
        assert_eq!(mapped.reasoning_tokens, Some(1));
        assert_eq!(usage(&Value::Null), None);
        let embeddings = usage(&json!({"prompt_tokens": 8, "total_tokens": 8})).unwrap();
        assert_eq!(
            (embeddings.prompt_tokens, embeddings.completion_tokens),
            (8, 0)
        );
    }

    #[test]
    fn stream_usage_is_found_in_its_event() {
        let chunk = SseEvent::parse(
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}",
        );
        assert_eq!(chat_stream_usage(&chunk).map(|(_, only)| only), Some(true));
        assert_eq!(chat_stream_usage(&SseEvent::parse("data: [DONE]")), None);
        let completed = SseEvent::parse(
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":4}}}",
        );
        assert_eq!(
            responses_stream_usage(&completed).map(|u| u.map(|u| u.completion_tokens)),
            Some(Ok(4))
        );
        let created = SseEvent::parse(
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_9\",\"usage\":null}}",
        );
        assert_eq!(responses_stream_id(&created).as_deref(), Some("resp_9"));
        let delta = SseEvent::parse(
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"item_id\":\"msg_1\",\"delta\":\"id\"}",
        );
        assert_eq!(responses_stream_id(&delta), None);
    }
}
