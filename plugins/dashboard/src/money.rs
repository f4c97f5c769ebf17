//! Exact money and multipliers in the dashboard's JSON.
//!
//! Money is nano-USD (`i64`, 10^9 per USD); multipliers are the WIT `decimal` (value × 10^9 in
//! a `u64`). Both are answered as strings and accepted as a JSON string or number; a number is
//! read from its text (serde_json's `arbitrary_precision`), so nothing passes through a float.
//! A value with more than nine fractional digits is refused, never rounded.
//!
//! The formatting mirrors `monoize_billing::meta::decimal`. It is not shared by depending on
//! `monoize-billing`: in a workspace build that crate gets its `component` feature, and its
//! `authorize`/`settle` exports would land in this component.

use serde_json::Value;

use crate::http::ApiError;

/// 10^9: nano-units per unit.
pub const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// The multiplier 1 (WIT `decimal`).
pub const DECIMAL_ONE: u64 = 1_000_000_000;

/// Parses a plain decimal (`[-+]digits[.digits]`) into its value × 10^9. The error says why.
pub fn parse_scaled(text: &str) -> Result<i128, &'static str> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return Err("is not a plain decimal number");
    }
    if unsigned.ends_with('.') {
        return Err("is not a plain decimal number");
    }
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > 9 {
        return Err("has more than 9 fractional digits");
    }
    let whole = whole.trim_start_matches('0');
    if whole.len() > 20 {
        return Err("is out of range");
    }
    let whole: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| "is out of range")?
    };
    let mut scaled_fraction: i128 = 0;
    for position in 0..9 {
        let digit = fraction.as_bytes().get(position).map_or(0, |b| b - b'0');
        scaled_fraction = scaled_fraction * 10 + i128::from(digit);
    }
    let magnitude = whole
        .checked_mul(NANOS_PER_UNIT)
        .and_then(|value| value.checked_add(scaled_fraction))
        .ok_or("is out of range")?;
    Ok(if negative { -magnitude } else { magnitude })
}

/// `value / 10^9` as its shortest exact decimal: `1.25`, `2`, `-0.000000001`.
pub fn format_scaled(value: i128) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let magnitude = value.unsigned_abs();
    let unit = NANOS_PER_UNIT.unsigned_abs();
    let (whole, fraction) = (magnitude / unit, magnitude % unit);
    if fraction == 0 {
        return format!("{sign}{whole}");
    }
    let digits = format!("{fraction:09}");
    format!("{sign}{whole}.{}", digits.trim_end_matches('0'))
}

/// A multiplier (WIT `decimal`) as text: `1.25`.
pub fn format_decimal(nanos: u64) -> String {
    format_scaled(i128::from(nanos))
}

/// nano-USD as USD text: `-1.5`.
pub fn format_usd(nano_usd: i64) -> String {
    format_scaled(i128::from(nano_usd))
}

/// The text of a JSON string or number, or a 400 naming `param`.
fn number_text<'a>(value: &'a Value, param: &str) -> Result<std::borrow::Cow<'a, str>, ApiError> {
    match value {
        Value::String(text) => Ok(std::borrow::Cow::Borrowed(text.trim())),
        Value::Number(number) => Ok(std::borrow::Cow::Owned(number.to_string())),
        _ => Err(ApiError::invalid(
            param,
            format!("`{param}` must be a number or a string holding one"),
        )),
    }
}

/// The highest price a model may be given, in nano-USD per token: $10,000 per million tokens,
/// some sixteen times the dearest model on sale. With [`MAX_PROVIDER_MULTIPLIER`] it keeps every
/// charge the gateway can compute inside an `i64`: at most 2 × 2^32 believable tokens (prompt and
/// completion) × 10^7 × 100 ≈ 8.6 × 10^18 nano-USD, under 9.22 × 10^18. A price past it would
/// make a served request uncountable, and so unbillable (DESIGN §6).
pub const MAX_PRICE_NANO_USD_PER_TOKEN: u64 = 10_000_000;

/// The highest multiplier a provider may put on a model, scaled by 10^9: ×100.
pub const MAX_PROVIDER_MULTIPLIER: u64 = 100 * DECIMAL_ONE;

/// A multiplier > 0 with at most nine fractional digits, from a JSON number or string.
pub fn multiplier(value: &Value, param: &str) -> Result<u64, ApiError> {
    let text = number_text(value, param)?;
    let scaled =
        parse_scaled(&text).map_err(|why| ApiError::invalid(param, format!("`{param}` {why}")))?;
    if scaled <= 0 {
        return Err(ApiError::invalid(
            param,
            format!("`{param}` must be greater than 0"),
        ));
    }
    u64::try_from(scaled)
        .map_err(|_| ApiError::invalid(param, format!("`{param}` is out of range")))
}

/// A provider's multiplier on a model: a [`multiplier`] of at most [`MAX_PROVIDER_MULTIPLIER`].
pub fn provider_multiplier(value: &Value, param: &str) -> Result<u64, ApiError> {
    let scaled = multiplier(value, param)?;
    if scaled > MAX_PROVIDER_MULTIPLIER {
        return Err(ApiError::invalid(
            param,
            format!(
                "`{param}` must be at most {}",
                format_decimal(MAX_PROVIDER_MULTIPLIER)
            ),
        ));
    }
    Ok(scaled)
}

/// An amount in USD (at most nine fractional digits), as nano-USD.
pub fn usd(value: &Value, param: &str) -> Result<i64, ApiError> {
    let text = number_text(value, param)?;
    let scaled =
        parse_scaled(&text).map_err(|why| ApiError::invalid(param, format!("`{param}` {why}")))?;
    i64::try_from(scaled)
        .map_err(|_| ApiError::invalid(param, format!("`{param}` is out of range")))
}

/// An integer, from a JSON number or a string of digits (optionally signed).
fn integer(value: &Value, param: &str) -> Result<i128, ApiError> {
    let text = number_text(value, param)?;
    let digits = text.strip_prefix('-').unwrap_or(&text);
    if digits.is_empty() || digits.len() > 30 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::invalid(
            param,
            format!("`{param}` must be a whole number"),
        ));
    }
    text.parse()
        .map_err(|_| ApiError::invalid(param, format!("`{param}` is out of range")))
}

/// An amount in nano-USD: a whole number, from a JSON number or string.
pub fn nano_usd(value: &Value, param: &str) -> Result<i64, ApiError> {
    i64::try_from(integer(value, param)?)
        .map_err(|_| ApiError::invalid(param, format!("`{param}` is out of range")))
}

/// A price in nano-USD per token: a whole number from 0 to [`MAX_PRICE_NANO_USD_PER_TOKEN`],
/// from a JSON number or string.
pub fn price(value: &Value, param: &str) -> Result<u64, ApiError> {
    u64::try_from(integer(value, param)?)
        .ok()
        .filter(|price| *price <= MAX_PRICE_NANO_USD_PER_TOKEN)
        .ok_or_else(|| {
            ApiError::invalid(
                param,
                format!(
                    "`{param}` must be a whole number of nano-USD from 0 to \
                     {MAX_PRICE_NANO_USD_PER_TOKEN}"
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn prices_and_provider_multipliers_are_bounded_so_that_every_charge_fits_an_i64() {
        assert_eq!(
            price(&json!(MAX_PRICE_NANO_USD_PER_TOKEN), "p"),
            Ok(10_000_000)
        );
        assert_eq!(price(&json!("0"), "p"), Ok(0));
        for too_much in [
            json!(10_000_001),
            json!(u64::MAX),
            json!("18446744073709551616"),
        ] {
            assert!(price(&too_much, "p").is_err(), "{too_much}");
        }
        assert_eq!(
            provider_multiplier(&json!("100"), "m"),
            Ok(100 * DECIMAL_ONE)
        );
        assert!(provider_multiplier(&json!("100.000000001"), "m").is_err());
        assert!(provider_multiplier(&json!(0), "m").is_err());
        // The gateway believes at most 2^32 tokens in a count (`MAX_BELIEVABLE_TOKENS`); a
        // charge prices two counts (prompt and completion) and applies the multiplier.
        let largest = 2
            * (1u128 << 32)
            * u128::from(MAX_PRICE_NANO_USD_PER_TOKEN)
            * u128::from(MAX_PROVIDER_MULTIPLIER)
            / u128::from(DECIMAL_ONE);
        assert!(largest <= i64::MAX as u128, "{largest}");
    }

    #[test]
    fn decimals_parse_and_format_exactly() {
        assert_eq!(parse_scaled("1.25"), Ok(1_250_000_000));
        assert_eq!(parse_scaled("0.000000001"), Ok(1));
        assert_eq!(parse_scaled("-2"), Ok(-2_000_000_000));
        assert_eq!(parse_scaled("3.100000000000"), Ok(3_100_000_000));
        assert!(parse_scaled("0.0000000001").is_err());
        for bad in ["", ".5", "1.", "1e3", "abc", "1.2.3", "--1", " 1"] {
            assert!(parse_scaled(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_decimal(1_250_000_000), "1.25");
        assert_eq!(format_decimal(2_000_000_000), "2");
        assert_eq!(format_usd(-1), "-0.000000001");
        assert_eq!(format_usd(0), "0");
        assert_eq!(format_usd(i64::MIN), "-9223372036.854775808");
    }

    #[test]
    fn multipliers_from_numbers_are_read_from_their_text() {
        assert_eq!(multiplier(&parse_json("1.1"), "m").unwrap(), 1_100_000_000);
        assert_eq!(multiplier(&parse_json("0.3"), "m").unwrap(), 300_000_000);
        assert_eq!(multiplier(&json!("2.5"), "m").unwrap(), 2_500_000_000);
        assert_eq!(
            multiplier(&parse_json("1.0000000001"), "m")
                .unwrap_err()
                .param(),
            Some("m")
        );
        assert!(multiplier(&json!(0), "m").is_err());
        assert!(multiplier(&json!("-1"), "m").is_err());
        assert!(multiplier(&json!(true), "m").is_err());
        assert!(multiplier(&parse_json("1e2"), "m").is_err());
    }

    #[test]
    fn money_fields_are_exact() {
        assert_eq!(usd(&json!("12.5"), "b").unwrap(), 12_500_000_000);
        assert_eq!(usd(&parse_json("0.1"), "b").unwrap(), 100_000_000);
        assert!(usd(&json!("0.0000000001"), "b").is_err());
        assert!(usd(&json!("99999999999"), "b").is_err());
        assert_eq!(nano_usd(&json!("-5"), "b").unwrap(), -5);
        assert_eq!(
            nano_usd(&parse_json("9223372036854775807"), "b").unwrap(),
            i64::MAX
        );
        assert!(nano_usd(&parse_json("9223372036854775808"), "b").is_err());
        assert!(nano_usd(&json!("1.5"), "b").is_err());
        assert_eq!(price(&json!(15), "p").unwrap(), 15);
        assert!(price(&json!(-1), "p").is_err());
    }
}
