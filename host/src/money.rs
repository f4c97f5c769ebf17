//! Exact money and multipliers.
//!
//! Money is nano-USD (1 USD = 10^9 nano-USD) in `i64`, stored as decimal TEXT; multipliers are
//! exact decimals with at most nine fractional digits, carried as the value × 10^9 in `u64`
//! (the WIT `decimal`). Nothing here uses floats: a value with more precision than nine
//! fractional digits is refused, never rounded.

use std::fmt;
use std::str::FromStr;

/// 10^9: nano-units per unit.
pub const NANOS_PER_UNIT: u64 = 1_000_000_000;

/// Why a decimal or money string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// Not a plain decimal number (`12`, `0.3`, `-1.25`).
    #[error("`{0}` is not a decimal number")]
    Syntax(String),
    /// More than nine digits after the point.
    #[error("`{0}` has more than 9 fractional digits")]
    TooPrecise(String),
    /// Outside the representable range.
    #[error("`{0}` is out of range")]
    OutOfRange(String),
    /// A sign where none is allowed (multipliers are never negative).
    #[error("`{0}` must not be negative")]
    Negative(String),
}

/// Parses a plain decimal (`[-]digits[.digits]`) into its value × 10^9 as `i128`.
fn parse_scaled(text: &str) -> Result<i128, DecimalError> {
    let syntax = || DecimalError::Syntax(text.to_owned());
    let trimmed = text.trim();
    let (negative, unsigned) = match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
    };
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (unsigned, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !all_digits(whole) || !all_digits(fraction) {
        return Err(syntax());
    }
    if unsigned.ends_with('.') && fraction.is_empty() && whole.is_empty() {
        return Err(syntax());
    }
    let significant_fraction = fraction.trim_end_matches('0');
    if significant_fraction.len() > 9 {
        return Err(DecimalError::TooPrecise(text.to_owned()));
    }
    let out_of_range = || DecimalError::OutOfRange(text.to_owned());
    let whole_digits = whole.trim_start_matches('0');
    if whole_digits.len() > 20 {
        return Err(out_of_range());
    }
    let whole_value: i128 = if whole_digits.is_empty() {
        0
    } else {
        whole_digits.parse().map_err(|_| out_of_range())?
    };
    let mut fraction_value: i128 = 0;
    for position in 0..9 {
        let digit = significant_fraction
            .as_bytes()
            .get(position)
            .map_or(0, |b| b - b'0');
        fraction_value = fraction_value * 10 + i128::from(digit);
    }
    let magnitude = whole_value
        .checked_mul(i128::from(NANOS_PER_UNIT))
        .and_then(|v| v.checked_add(fraction_value))
        .ok_or_else(out_of_range)?;
    Ok(if negative { -magnitude } else { magnitude })
}

/// Writes `value / 10^9` as the shortest exact decimal (`1.25`, `2`, `-0.000000001`).
fn format_scaled(value: i128, out: &mut fmt::Formatter<'_>) -> fmt::Result {
    let sign = if value < 0 { "-" } else { "" };
    let magnitude = value.unsigned_abs();
    let whole = magnitude / u128::from(NANOS_PER_UNIT);
    let fraction = magnitude % u128::from(NANOS_PER_UNIT);
    if fraction == 0 {
        write!(out, "{sign}{whole}")
    } else {
        let digits = format!("{fraction:09}");
        write!(out, "{sign}{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// An exact, non-negative multiplier with nine fractional digits (the WIT `decimal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Multiplier(u64);

impl Multiplier {
    /// The multiplier 1.
    pub const ONE: Multiplier = Multiplier(NANOS_PER_UNIT);

    /// The multiplier whose value × 10^9 is `nanos`.
    pub const fn from_nanos(nanos: u64) -> Self {
        Multiplier(nanos)
    }

    /// Its value × 10^9.
    pub const fn nanos(self) -> u64 {
        self.0
    }

    /// `amount × self`, truncated toward zero; `None` on overflow.
    pub fn apply(self, amount: i128) -> Option<i128> {
        amount
            .checked_mul(i128::from(self.0))
            .map(|product| product / i128::from(NANOS_PER_UNIT))
    }
}

impl FromStr for Multiplier {
    type Err = DecimalError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let scaled = parse_scaled(text)?;
        if scaled < 0 {
            return Err(DecimalError::Negative(text.to_owned()));
        }
        u64::try_from(scaled)
            .map(Multiplier)
            .map_err(|_| DecimalError::OutOfRange(text.to_owned()))
    }
}

impl fmt::Display for Multiplier {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        format_scaled(i128::from(self.0), out)
    }
}

/// An amount of money in nano-USD. Arithmetic is checked: overflow is an error, never a wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NanoUsd(pub i64);

impl NanoUsd {
    /// Zero.
    pub const ZERO: NanoUsd = NanoUsd(0);

    /// `self + other`, `None` on overflow.
    pub fn checked_add(self, other: NanoUsd) -> Option<NanoUsd> {
        self.0.checked_add(other.0).map(NanoUsd)
    }

    /// `self - other`, `None` on overflow.
    pub fn checked_sub(self, other: NanoUsd) -> Option<NanoUsd> {
        self.0.checked_sub(other.0).map(NanoUsd)
    }

    /// Parses a USD amount (`"12.5"`, at most nine fractional digits) into nano-USD.
    pub fn from_usd_str(text: &str) -> Result<NanoUsd, DecimalError> {
        let scaled = parse_scaled(text)?;
        i64::try_from(scaled)
            .map(NanoUsd)
            .map_err(|_| DecimalError::OutOfRange(text.to_owned()))
    }

    /// The amount in USD as an exact decimal string (`"12.5"`).
    pub fn to_usd_string(self) -> String {
        UsdDisplay(self.0).to_string()
    }
}

impl FromStr for NanoUsd {
    type Err = DecimalError;

    /// Parses the stored form: a plain integer count of nano-USD.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let digits = trimmed.strip_prefix('-').unwrap_or(trimmed);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DecimalError::Syntax(text.to_owned()));
        }
        trimmed
            .parse()
            .map(NanoUsd)
            .map_err(|_| DecimalError::OutOfRange(text.to_owned()))
    }
}

impl fmt::Display for NanoUsd {
    /// The stored form: the integer count of nano-USD.
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(out, "{}", self.0)
    }
}

struct UsdDisplay(i64);

impl fmt::Display for UsdDisplay {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        format_scaled(i128::from(self.0), out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipliers_parse_exactly_and_print_canonically() {
        for (text, nanos, canonical) in [
            ("1", 1_000_000_000, "1"),
            ("1.25", 1_250_000_000, "1.25"),
            ("0.3", 300_000_000, "0.3"),
            ("2.000", 2_000_000_000, "2"),
            ("0.000000001", 1, "0.000000001"),
            (".5", 500_000_000, "0.5"),
            ("0", 0, "0"),
            ("1.1000000000000", 1_100_000_000, "1.1"),
        ] {
            let parsed: Multiplier = text.parse().unwrap();
            assert_eq!(parsed.nanos(), nanos, "{text}");
            assert_eq!(parsed.to_string(), canonical, "{text}");
        }
    }

    #[test]
    fn multipliers_refuse_what_they_cannot_hold_exactly() {
        assert!(matches!(
            "0.0000000001".parse::<Multiplier>(),
            Err(DecimalError::TooPrecise(_))
        ));
        assert!(matches!(
            "-1".parse::<Multiplier>(),
            Err(DecimalError::Negative(_))
        ));
        for bad in ["", ".", "1e3", "abc", "1.2.3", "NaN", "1,5", " - 1"] {
            assert!(bad.parse::<Multiplier>().is_err(), "{bad:?}");
        }
        assert!("99999999999999999999999".parse::<Multiplier>().is_err());
    }

    #[test]
    fn multiplier_application_truncates_toward_zero() {
        let m: Multiplier = "0.3".parse().unwrap();
        assert_eq!(m.apply(10), Some(3));
        assert_eq!(m.apply(7), Some(2));
        assert_eq!(m.apply(-7), Some(-2));
        assert_eq!(Multiplier::ONE.apply(i128::MAX), None);
    }

    #[test]
    fn usd_amounts_convert_exactly_both_ways() {
        assert_eq!(NanoUsd::from_usd_str("12.5"), Ok(NanoUsd(12_500_000_000)));
        assert_eq!(NanoUsd::from_usd_str("-0.000000001"), Ok(NanoUsd(-1)));
        assert!(matches!(
            NanoUsd::from_usd_str("0.0000000001"),
            Err(DecimalError::TooPrecise(_))
        ));
        assert!(NanoUsd::from_usd_str("10000000000").is_err());
        assert_eq!(NanoUsd(12_500_000_000).to_usd_string(), "12.5");
        assert_eq!(NanoUsd(-1).to_usd_string(), "-0.000000001");
        assert_eq!("-42".parse::<NanoUsd>(), Ok(NanoUsd(-42)));
        assert!("4.2".parse::<NanoUsd>().is_err());
        assert_eq!(NanoUsd(i64::MAX).checked_add(NanoUsd(1)), None);
    }
}
