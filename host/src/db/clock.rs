//! Timestamps as stored: RFC 3339 in UTC with exactly three fractional digits
//! (`2026-03-01T12:00:00.000Z`). One fixed width means text order is time order, so SQL can
//! compare stored timestamps (`expires_at < ?`) without parsing them.

use std::time::{SystemTime, UNIX_EPOCH};

const MILLIS_PER_SECOND: i64 = 1000;
const SECONDS_PER_DAY: i64 = 86_400;
/// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z: the range four year digits can hold.
const MIN_MILLIS: i64 = -62_167_219_200_000;
const MAX_MILLIS: i64 = 253_402_300_799_999;

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_millis() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(elapsed) => i64::try_from(elapsed.as_millis()).unwrap_or(MAX_MILLIS),
        Err(before_epoch) => {
            i64::try_from(before_epoch.duration().as_millis()).map_or(MIN_MILLIS, |ms| -ms)
        }
    }
}

/// The current time as a stored timestamp.
pub fn now() -> String {
    format_unix_millis(now_unix_millis())
}

/// The stored timestamp `seconds` from now (negative: in the past).
pub fn seconds_from_now(seconds: i64) -> String {
    let offset = seconds.saturating_mul(MILLIS_PER_SECOND);
    format_unix_millis(now_unix_millis().saturating_add(offset))
}

/// The stored timestamp `days` from now (negative: in the past).
pub fn days_from_now(days: i64) -> String {
    seconds_from_now(days.saturating_mul(SECONDS_PER_DAY))
}

/// Formats milliseconds since the Unix epoch, clamped to years 0000–9999.
pub fn format_unix_millis(millis: i64) -> String {
    let millis = millis.clamp(MIN_MILLIS, MAX_MILLIS);
    let seconds = millis.div_euclid(MILLIS_PER_SECOND);
    let fraction = millis.rem_euclid(MILLIS_PER_SECOND);
    let (year, month, day) = civil_from_days(seconds.div_euclid(SECONDS_PER_DAY));
    let in_day = seconds.rem_euclid(SECONDS_PER_DAY);
    let (hour, minute, second) = (in_day / 3600, in_day % 3600 / 60, in_day % 60);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{fraction:03}Z")
}

/// Parses an RFC 3339 timestamp (any offset, any number of fractional digits, `T`, `t` or a
/// space between date and time) into milliseconds since the Unix epoch; digits beyond
/// milliseconds are truncated.
pub fn parse_unix_millis(text: &str) -> Option<i64> {
    let bytes = text.trim().as_bytes();
    if bytes.len() < 20 || !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    let year = digits(bytes, 0, 4)?;
    let month = digits(bytes, 5, 2)?;
    let day = digits(bytes, 8, 2)?;
    let (hour, minute, second) = (
        digits(bytes, 11, 2)?,
        digits(bytes, 14, 2)?,
        digits(bytes, 17, 2)?,
    );
    let separators_ok =
        bytes[4] == b'-' && bytes[7] == b'-' && bytes[13] == b':' && bytes[16] == b':';
    if !separators_ok || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let (fraction_millis, rest) = fraction(&bytes[19..])?;
    let offset_seconds = offset(rest)?;
    let seconds = days_from_civil(year, month, day) * SECONDS_PER_DAY
        + hour * 3600
        + minute * 60
        + second.min(59)
        - offset_seconds;
    Some(seconds * MILLIS_PER_SECOND + fraction_millis)
}

/// `text` as a stored timestamp (UTC, milliseconds), if it is RFC 3339.
pub fn canonical(text: &str) -> Option<String> {
    parse_unix_millis(text).map(format_unix_millis)
}

fn digits(bytes: &[u8], start: usize, count: usize) -> Option<i64> {
    let slice = bytes.get(start..start + count)?;
    slice.iter().try_fold(0i64, |value, byte| {
        byte.is_ascii_digit()
            .then(|| value * 10 + i64::from(byte - b'0'))
    })
}

/// The optional `.digits` after the seconds, as milliseconds, and what follows it.
fn fraction(bytes: &[u8]) -> Option<(i64, &[u8])> {
    let Some(after_dot) = bytes.strip_prefix(b".") else {
        return Some((0, bytes));
    };
    let count = after_dot
        .iter()
        .take_while(|byte| byte.is_ascii_digit())
        .count();
    if count == 0 {
        return None;
    }
    let millis = (0..3).fold(0i64, |value, index| {
        let digit = after_dot
            .get(index)
            .filter(|_| index < count)
            .map_or(0, |b| b - b'0');
        value * 10 + i64::from(digit)
    });
    Some((millis, &after_dot[count..]))
}

/// `Z` or `±hh:mm`, as seconds east of UTC.
fn offset(bytes: &[u8]) -> Option<i64> {
    match bytes {
        [b'Z' | b'z'] => Some(0),
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (hours, minutes) = (digits(bytes, 1, 2)?, digits(bytes, 4, 2)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let magnitude = hours * 3600 + minutes * 60;
            Some(if *sign == b'-' { -magnitude } else { magnitude })
        }
        _ => None,
    }
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (`civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_fixed_width_utc_with_milliseconds() {
        assert_eq!(format_unix_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_unix_millis(1_772_366_400_123),
            "2026-03-01T12:00:00.123Z"
        );
        assert_eq!(
            format_unix_millis(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(format_unix_millis(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_unix_millis(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_unix_millis(i64::MIN), "0000-01-01T00:00:00.000Z");
    }

    #[test]
    fn parses_what_it_formats_and_other_rfc3339_forms() {
        for millis in [
            0,
            1,
            951_782_400_000,
            1_772_366_400_123,
            -86_400_001,
            MAX_MILLIS,
        ] {
            assert_eq!(parse_unix_millis(&format_unix_millis(millis)), Some(millis));
        }
        assert_eq!(
            parse_unix_millis("2026-03-01T12:00:00Z"),
            Some(1_772_366_400_000)
        );
        assert_eq!(
            parse_unix_millis("2026-03-01t12:00:00.1234567z"),
            Some(1_772_366_400_123)
        );
        assert_eq!(
            parse_unix_millis("2026-03-01 14:00:00+02:00"),
            Some(1_772_366_400_000)
        );
        assert_eq!(
            parse_unix_millis("2026-03-01T07:30:00-04:30"),
            Some(1_772_366_400_000)
        );
    }

    #[test]
    fn refuses_what_is_not_rfc3339() {
        for bad in [
            "",
            "2026-03-01",
            "2026-03-01T12:00:00",
            "2026-13-01T12:00:00Z",
            "2026-02-30T12:00:00Z",
            "2025-02-29T12:00:00Z",
            "2026-03-01T24:00:00Z",
            "2026-03-01T12:00:00.Z",
            "2026-03-01T12:00:00+0200",
            "2026/03/01T12:00:00Z",
            "now",
        ] {
            assert_eq!(parse_unix_millis(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn text_order_is_time_order() {
        let earlier = format_unix_millis(999);
        let later = format_unix_millis(1_000);
        assert!(earlier < later);
        assert!(now() < seconds_from_now(60));
        assert_eq!(
            canonical("2026-03-01T14:00:00+02:00").as_deref(),
            Some("2026-03-01T12:00:00.000Z")
        );
    }
}
