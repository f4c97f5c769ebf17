//! How much a request gives the model to read, for the input side of an estimated usage: the
//! bill of a stream that ended before its upstream reported usage (DESIGN §6).
//!
//! The request's size in bytes is a poor measure of that. JSON framing, keys and escapes are no
//! tokens, and an inline image or document is base64 text many times the size of what a
//! provider charges for it: a 1 MB screenshot is ~330,000 "tokens" at 4 bytes each, and about
//! 1,600 at Anthropic or OpenAI. So the walk counts the bytes of string values (decoded), the
//! token ids of an embeddings `input`, and each attachment as [`ATTACHMENT_TOKENS`], whatever
//! its size or shape:
//!
//! - an object whose `type` names a medium (OpenAI's `image_url`, `input_audio`, `file`; the
//!   Responses API's `input_image`, `input_file`; Anthropic's `image`, `document`), with
//!   nothing inside it counted as text, however the fields are ordered;
//! - anywhere else, a `data:` URL.
//!
//! The values of `type` fields are structure, and the request's `model`, `user` and `metadata`
//! no input: neither counts. The walk borrows the body's strings and allocates nothing.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Tokens one attachment is estimated at: about what an image costs at the providers' usual
/// sizes (Anthropic caps an image near 1,600; OpenAI's high detail is 765 for 1024×1024).
pub const ATTACHMENT_TOKENS: u64 = 1_600;

/// Bytes of text per token of the estimate.
pub const BYTES_PER_TOKEN: u64 = 4;

/// The `type`s of a content part or block that carry a medium rather than text.
const MEDIA_TYPES: &[&str] = &[
    "image_url",
    "input_image",
    "image",
    "input_audio",
    "file",
    "input_file",
    "document",
];

/// Top-level fields that are not given to the model to read.
const NOT_INPUT: &[&str] = &["model", "user", "metadata"];

/// What a request gives the model to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromptSize {
    /// Bytes of text, strings as decoded from the JSON.
    pub text_bytes: u64,
    /// Token ids given as numbers (an embeddings `input` of token arrays).
    pub token_ids: u64,
    /// Images, audio and documents.
    pub attachments: u64,
}

impl PromptSize {
    /// Measures the JSON object `body`. A body that is not JSON (the gateway refuses those before
    /// this is asked) is measured as text of its length.
    pub fn of(body: &[u8]) -> PromptSize {
        let mut size = PromptSize::default();
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let walked = Walk {
            size: &mut size,
            depth: Depth::Top,
        }
        .deserialize(&mut deserializer);
        match walked {
            Ok(()) => size,
            Err(_) => PromptSize {
                text_bytes: body.len() as u64,
                ..PromptSize::default()
            },
        }
    }

    /// The estimated input tokens: a token per [`BYTES_PER_TOKEN`] bytes of text begun, one per
    /// token id, [`ATTACHMENT_TOKENS`] per attachment (saturating: it is an estimate).
    pub fn tokens(&self) -> u64 {
        self.text_bytes
            .div_ceil(BYTES_PER_TOKEN)
            .saturating_add(self.token_ids)
            .saturating_add(self.attachments.saturating_mul(ATTACHMENT_TOKENS))
    }

    fn add(&mut self, other: PromptSize) {
        self.text_bytes = self.text_bytes.saturating_add(other.text_bytes);
        self.token_ids = self.token_ids.saturating_add(other.token_ids);
        self.attachments = self.attachments.saturating_add(other.attachments);
    }

    fn add_text(&mut self, text: &str) {
        if is_data_url(text) {
            self.attachments = self.attachments.saturating_add(1);
        } else {
            self.text_bytes = self.text_bytes.saturating_add(text.len() as u64);
        }
    }
}

/// Whether `text` is a `data:` URL (`data:[<media type>][;base64],<data>`), not prose that
/// happens to begin with "data:".
fn is_data_url(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("data:") else {
        return false;
    };
    let header = rest
        .get(..rest.len().min(256))
        .and_then(|start| start.split_once(','));
    header.is_some_and(|(header, _)| {
        !header.contains(char::is_whitespace) && (header.is_empty() || header.contains(['/', ';']))
    })
}

/// Where in the request a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Depth {
    /// The request object itself.
    Top,
    /// Inside the top-level `input`, where numbers are token ids.
    Input,
    /// Anywhere else.
    Nested,
}

impl Depth {
    /// Where a value inside one at this depth is (the `input` field is told apart by name).
    fn below(self) -> Depth {
        match self {
            Depth::Top => Depth::Nested,
            inner => inner,
        }
    }
}

/// Adds what one value holds to `size`.
struct Walk<'a> {
    size: &'a mut PromptSize,
    depth: Depth,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.write_str("a JSON value")
    }

    fn visit_str<E>(self, text: &str) -> Result<(), E> {
        self.size.add_text(text);
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.number()
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.number()
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let depth = self.depth.below();
        while items
            .next_element_seed(Walk {
                size: &mut *self.size,
                depth,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<(), A::Error> {
        // Counted apart, so that a medium's insides can be dropped once its `type` is known,
        // wherever in the object that comes.
        let mut inside = PromptSize::default();
        let mut medium = false;
        while let Some(key) = fields.next_key_seed(KeySeed)? {
            match key {
                Key::Type => {
                    medium |= fields.next_value_seed(TypeSeed { size: &mut inside })?;
                }
                Key::NotInput if self.depth == Depth::Top => {
                    fields.next_value::<IgnoredAny>()?;
                }
                Key::Input if self.depth == Depth::Top => {
                    fields.next_value_seed(Walk {
                        size: &mut inside,
                        depth: Depth::Input,
                    })?;
                }
                _ => {
                    fields.next_value_seed(Walk {
                        size: &mut inside,
                        depth: self.depth.below(),
                    })?;
                }
            }
        }
        if medium {
            self.size.attachments = self.size.attachments.saturating_add(1);
        } else {
            self.size.add(inside);
        }
        Ok(())
    }
}

impl Walk<'_> {
    fn number<E>(self) -> Result<(), E> {
        if self.depth == Depth::Input {
            self.size.token_ids = self.size.token_ids.saturating_add(1);
        }
        Ok(())
    }
}

/// A field name, as far as the walk cares.
enum Key {
    Type,
    Input,
    NotInput,
    Other,
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key;

    fn expecting(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.write_str("a field name")
    }

    fn visit_str<E>(self, name: &str) -> Result<Key, E> {
        Ok(match name {
            "type" => Key::Type,
            "input" => Key::Input,
            _ if NOT_INPUT.contains(&name) => Key::NotInput,
            _ => Key::Other,
        })
    }
}

/// A `type` field's value: whether it names a medium. Any other value is walked as usual.
struct TypeSeed<'a> {
    size: &'a mut PromptSize,
}

impl<'de> DeserializeSeed<'de> for TypeSeed<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TypeSeed<'_> {
    type Value = bool;

    fn expecting(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.write_str("a JSON value")
    }

    fn visit_str<E>(self, name: &str) -> Result<bool, E> {
        Ok(MEDIA_TYPES.contains(&name))
    }

    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, items: A) -> Result<bool, A::Error> {
        Walk {
            size: self.size,
            depth: Depth::Nested,
        }
        .visit_seq(items)?;
        Ok(false)
    }

    fn visit_map<A: MapAccess<'de>>(self, fields: A) -> Result<bool, A::Error> {
        Walk {
            size: self.size,
            depth: Depth::Nested,
        }
        .visit_map(fields)?;
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(body: &str) -> PromptSize {
        PromptSize::of(body.as_bytes())
    }

    #[test]
    fn text_is_the_decoded_strings_without_keys_framing_or_the_model() {
        let body = r#"{"model":"gpt-4o","user":"u-1","metadata":{"a":"bcd"},"temperature":0.5,
            "max_tokens":100,"messages":[{"role":"user","content":"h\u00e9llo \"you\""}]}"#;
        // "user" (the role) 4 + `héllo "you"` 12 (é is 2 bytes, the escapes 1 each).
        assert_eq!(
            size(body),
            PromptSize {
                text_bytes: 16,
                ..PromptSize::default()
            }
        );
        assert_eq!(size(body).tokens(), 4);
    }

    #[test]
    fn an_attachment_counts_once_whatever_its_size_and_wherever_its_type_is() {
        let base64 = "A".repeat(1 << 20);
        let shapes = [
            // OpenAI chat, by URL and inline, the type after the payload.
            r#"{"type":"image_url","image_url":{"url":"https://example.com/cat.png"}}"#.to_owned(),
            format!(
                r#"{{"image_url":{{"url":"data:image/png;base64,{base64}"}},"type":"image_url"}}"#
            ),
            format!(
                r#"{{"type":"input_audio","input_audio":{{"data":"{base64}","format":"wav"}}}}"#
            ),
            format!(
                r#"{{"type":"file","file":{{"file_data":"data:application/pdf;base64,{base64}"}}}}"#
            ),
            // The Responses API.
            format!(r#"{{"type":"input_image","image_url":"data:image/png;base64,{base64}"}}"#),
            r#"{"type":"input_file","file_id":"file-123"}"#.to_owned(),
            // Anthropic, its base64 in a `source` of type `base64`.
            format!(
                r#"{{"source":{{"type":"base64","media_type":"image/png","data":"{base64}"}},"type":"image"}}"#
            ),
            format!(r#"{{"type":"document","source":{{"type":"base64","data":"{base64}"}}}}"#),
            // Unknown shapes: a data URL anywhere.
            format!(r#"{{"type":"mystery","blob":"data:image/png;base64,{base64}"}}"#),
        ];
        for shape in shapes {
            let body = format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":[{{"type":"text","text":"what is this"}},{shape}]}}]}}"#
            );
            let measured = size(&body);
            assert_eq!(measured.attachments, 1, "{}", &shape[..60.min(shape.len())]);
            // "user" and "what is this": `type` values are structure.
            assert_eq!(measured.text_bytes, 16, "{measured:?}");
            assert_eq!(
                measured.tokens(),
                measured.text_bytes.div_ceil(4) + ATTACHMENT_TOKENS
            );
        }
    }

    #[test]
    fn token_ids_of_an_embeddings_input_count_one_each_and_other_numbers_none() {
        assert_eq!(
            size(r#"{"model":"e","input":[[1,2,3],[4,5]],"dimensions":256}"#),
            PromptSize {
                token_ids: 5,
                ..PromptSize::default()
            }
        );
        assert_eq!(
            size(r#"{"model":"e","input":["ab","cde"]}"#),
            PromptSize {
                text_bytes: 5,
                ..PromptSize::default()
            }
        );
        // `input` below the top is not the request's input.
        assert_eq!(
            size(r#"{"model":"m","tools":[{"input":[7,8]}]}"#),
            PromptSize::default()
        );
    }

    #[test]
    fn anthropic_system_tools_and_tool_results_are_input() {
        let body = r#"{"model":"claude","max_tokens":5,"system":[{"type":"text","text":"be brief"}],
            "tools":[{"name":"get","description":"gets","input_schema":{"type":"object"}}],
            "messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1",
            "content":[{"type":"text","text":"42"},{"type":"image","source":{"type":"url","url":"https://x/y.png"}}]}]}]}"#;
        let measured = size(body);
        assert_eq!(measured.attachments, 1);
        // "be brief" 8 + get 3 + gets 4 + user 4 + t1 2 + 42 2: `type` values are structure.
        assert_eq!(measured.text_bytes, 8 + 3 + 4 + 4 + 2 + 2);
    }

    #[test]
    fn only_a_data_url_is_an_attachment_not_prose_that_begins_with_data() {
        for url in [
            "data:image/png;base64,iVBOR",
            "data:,hello",
            "data:text/plain,hi",
        ] {
            assert_eq!(
                size(&format!(r#"{{"content":"{url}"}}"#)).attachments,
                1,
                "{url}"
            );
        }
        for prose in [
            "data: the numbers, please",
            "data:wrangling, a guide",
            "database",
        ] {
            let measured = size(&format!(r#"{{"content":"{prose}"}}"#));
            assert_eq!(measured.attachments, 0, "{prose}");
            assert_eq!(measured.text_bytes, prose.len() as u64);
        }
    }

    #[test]
    fn a_body_that_is_not_json_is_its_length_of_text() {
        assert_eq!(size("not json").text_bytes, 8);
        assert_eq!(
            PromptSize {
                text_bytes: u64::MAX,
                token_ids: u64::MAX,
                attachments: u64::MAX
            }
            .tokens(),
            u64::MAX
        );
    }
}
