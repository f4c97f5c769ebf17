//! The `meta_json` of a request charge: what was served, at what multiplier, the usage and the
//! cost, so a ledger row explains itself. Money is written as a string (it may exceed what a
//! JSON number holds exactly in most readers), the multiplier as its exact decimal string, token
//! counts as numbers. The host adds `request_id` and `amount_nano_usd`.

use crate::price::{MULTIPLIER_ONE, Tokens};

/// Everything a charge's ledger row records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeMeta<'a> {
    /// The logical model asked for.
    pub model: &'a str,
    /// The model name sent upstream.
    pub upstream_model: &'a str,
    /// The provider that served the request.
    pub provider_id: &'a str,
    /// Its channel.
    pub channel_id: &'a str,
    /// The attempt's multiplier (a WIT `decimal`).
    pub multiplier: u64,
    /// The usage billed.
    pub tokens: Tokens,
    /// The computed cost in nano-USD.
    pub cost_nano_usd: i64,
    /// Whether the usage was estimated by the host.
    pub usage_estimated: bool,
    /// Whether the model had pricing.
    pub priced: bool,
    /// The model id whose prices were used, if any.
    pub pricing_model: Option<&'a str>,
}

impl ChargeMeta<'_> {
    /// The JSON object text.
    pub fn to_json(&self) -> String {
        let mut object = JsonObject::new();
        object.string("model", self.model);
        object.string("upstream_model", self.upstream_model);
        object.string("provider_id", self.provider_id);
        object.string("channel_id", self.channel_id);
        object.string("multiplier", &decimal(self.multiplier));
        object.number("prompt_tokens", Some(self.tokens.prompt));
        object.number("completion_tokens", Some(self.tokens.completion));
        object.number("cached_prompt_tokens", self.tokens.cached_prompt);
        object.number("reasoning_tokens", self.tokens.reasoning);
        object.string("cost_nano_usd", &self.cost_nano_usd.to_string());
        object.boolean("usage_estimated", self.usage_estimated);
        object.boolean("priced", self.priced);
        match self.pricing_model {
            Some(model) => object.string("pricing_model", model),
            None => object.null("pricing_model"),
        }
        object.finish()
    }
}

/// A WIT `decimal` (value × 10^9) as its shortest exact decimal text: `1.25`, `2`, `0.3`.
pub fn decimal(nanos: u64) -> String {
    let whole = nanos / MULTIPLIER_ONE;
    let fraction = nanos % MULTIPLIER_ONE;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:09}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// A flat JSON object written by hand: the component needs no JSON library for this.
struct JsonObject {
    out: String,
}

impl JsonObject {
    fn new() -> Self {
        JsonObject {
            out: String::from("{"),
        }
    }

    fn key(&mut self, key: &str) {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        push_string(&mut self.out, key);
        self.out.push(':');
    }

    fn string(&mut self, key: &str, value: &str) {
        self.key(key);
        push_string(&mut self.out, value);
    }

    fn number(&mut self, key: &str, value: Option<u64>) {
        self.key(key);
        match value {
            Some(value) => self.out.push_str(&value.to_string()),
            None => self.out.push_str("null"),
        }
    }

    fn boolean(&mut self, key: &str, value: bool) {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
    }

    fn null(&mut self, key: &str) {
        self.key(key);
        self.out.push_str("null");
    }

    fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// Appends `text` as a JSON string, escaped (RFC 8259 §7).
fn push_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact_and_short() {
        assert_eq!(decimal(1_000_000_000), "1");
        assert_eq!(decimal(1_250_000_000), "1.25");
        assert_eq!(decimal(300_000_000), "0.3");
        assert_eq!(decimal(1), "0.000000001");
        assert_eq!(decimal(0), "0");
        assert_eq!(decimal(u64::MAX), "18446744073.709551615");
    }

    #[test]
    fn charge_meta_is_a_flat_json_object_with_every_field() {
        let meta = ChargeMeta {
            model: "gpt-4o",
            upstream_model: "gpt-4o-2024-08-06",
            provider_id: "p1",
            channel_id: "c1",
            multiplier: 1_250_000_000,
            tokens: Tokens {
                prompt: 10,
                completion: 5,
                cached_prompt: Some(4),
                reasoning: None,
            },
            cost_nano_usd: 12_345,
            usage_estimated: true,
            priced: true,
            pricing_model: Some("gpt-4o-2024-08-06"),
        };
        assert_eq!(
            meta.to_json(),
            r#"{"model":"gpt-4o","upstream_model":"gpt-4o-2024-08-06","provider_id":"p1","channel_id":"c1","multiplier":"1.25","prompt_tokens":10,"completion_tokens":5,"cached_prompt_tokens":4,"reasoning_tokens":null,"cost_nano_usd":"12345","usage_estimated":true,"priced":true,"pricing_model":"gpt-4o-2024-08-06"}"#
        );
    }

    #[test]
    fn strings_are_escaped() {
        let mut out = String::new();
        push_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
    }
}
