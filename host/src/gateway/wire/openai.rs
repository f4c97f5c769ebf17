//! The OpenAI wire formats: where chat completions, responses and embeddings report usage,
//! whole and streamed.

use serde_json::Value;

use super::{SseEvent, count, may_mention};
use crate::billing::Usage;

/// The usage in an OpenAI `usage` object: chat completions and embeddings
/// (`prompt_tokens`, `completion_tokens`, `*_details`) or responses (`input_tokens`,
/// `output_tokens`, `*_details`). `None` when it is absent or null.
pub fn usage(usage: &Value) -> Option<Usage> {
    if !usage.is_object() {
        return None;
    }
    let prompt = count(usage, "prompt_tokens").or_else(|| count(usage, "input_tokens"));
    let completion = count(usage, "completion_tokens").or_else(|| count(usage, "output_tokens"));
    let prompt_details = usage
        .get("prompt_tokens_details")
        .or_else(|| usage.get("input_tokens_details"));
    let completion_details = usage
        .get("completion_tokens_details")
        .or_else(|| usage.get("output_tokens_details"));
    if prompt.is_none() && completion.is_none() {
        return None;
    }
    Some(Usage {
        prompt_tokens: prompt.unwrap_or(0),
        completion_tokens: completion.unwrap_or(0),
        cached_prompt_tokens: prompt_details.and_then(|details| count(details, "cached_tokens")),
        reasoning_tokens: completion_details.and_then(|details| count(details, "reasoning_tokens")),
        estimated: false,
    })
}

/// The usage of a chat-completions stream chunk, and whether the chunk is the usage-only
/// one (`choices` empty) that the host asked for.
pub fn chat_stream_usage(event: &SseEvent) -> Option<(Usage, bool)> {
    if event.data.trim() == "[DONE]" || !may_mention(&event.data, "usage") {
        return None;
    }
    let chunk: Value = serde_json::from_str(&event.data).ok()?;
    let found = usage(&chunk["usage"])?;
    let usage_only = chunk["choices"].as_array().is_some_and(Vec::is_empty);
    Some((found, usage_only))
}

/// The usage of a responses stream, reported by its `response.completed` (or
/// `response.incomplete`) event.
pub fn responses_stream_usage(event: &SseEvent) -> Option<Usage> {
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
    usage(&data["response"]["usage"])
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
            responses_stream_usage(&completed).map(|u| u.completion_tokens),
            Some(4)
        );
    }
}
