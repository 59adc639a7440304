//! Lark's timestamps (lark-protocol.md §5): a decimal string or a number; `<= 0` is absent;
//! below 1e11 seconds, below 1e14 milliseconds, otherwise microseconds. Decimal strings are read
//! exactly (no float rounding), so `"1608725989.123"` seconds is 1608725989123 ms.

use serde_json::Value;

/// A timestamp that is present but is not a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotANumber;

/// Milliseconds since the epoch from a decimal string; `Ok(None)` when `<= 0`.
pub fn parse_millis(s: &str) -> Result<Option<i64>, NotANumber> {
    let s = s.trim();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || int.len() > 18
    {
        return Err(NotANumber);
    }
    let whole: i64 = int.parse().map_err(|_| NotANumber)?;
    let any_frac = frac.bytes().any(|b| b != b'0');
    if neg || (whole == 0 && !any_frac) {
        return Ok(None);
    }
    let ms = if whole < 100_000_000_000 {
        // Seconds: keep the first three fraction digits (truncate).
        let mut f = frac
            .as_bytes()
            .iter()
            .take(3)
            .map(|b| (b - b'0') as i64)
            .collect::<Vec<_>>();
        f.resize(3, 0);
        whole * 1000 + f[0] * 100 + f[1] * 10 + f[2]
    } else if whole < 100_000_000_000_000 {
        whole
    } else {
        whole / 1000
    };
    if ms <= 0 {
        return Ok(None);
    }
    Ok(Some(ms))
}

/// Milliseconds from a JSON value (number or decimal string); `Ok(None)` when absent, null or
/// `<= 0`.
pub fn value_millis(v: Option<&Value>) -> Result<Option<i64>, NotANumber> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_millis(s),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                parse_millis(&i.to_string())
            } else if n.is_u64() {
                Err(NotANumber)
            } else {
                // A float: serde_json prints the shortest form that round-trips.
                parse_millis(&n.to_string())
            }
        }
        Some(_) => Err(NotANumber),
    }
}

/// RFC 3339 UTC with milliseconds: `2020-12-23T12:19:49.000Z`. `None` outside the years
/// 0000–9999: RFC 3339 has four-digit years only (chrono would write `+33658-…`, which the
/// published schema refuses), and a 17- or 18-digit value read as microseconds lands there.
pub fn rfc3339_millis(ms: i64) -> Option<String> {
    use chrono::Datelike;
    let t = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)?;
    if !(0..=9999).contains(&t.year()) {
        return None;
    }
    Some(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn units_follow_the_magnitude_rule() {
        assert_eq!(parse_millis("1608725989"), Ok(Some(1_608_725_989_000)));
        assert_eq!(parse_millis("1608725989000"), Ok(Some(1_608_725_989_000)));
        assert_eq!(
            parse_millis("1603977298000000"),
            Ok(Some(1_603_977_298_000))
        );
        assert_eq!(parse_millis("1608725989.123"), Ok(Some(1_608_725_989_123)));
        assert_eq!(parse_millis("1608725989.1239"), Ok(Some(1_608_725_989_123)));
        assert_eq!(parse_millis("0"), Ok(None));
        assert_eq!(parse_millis("-1"), Ok(None));
        assert_eq!(parse_millis("abc"), Err(NotANumber));
        assert_eq!(parse_millis(""), Err(NotANumber));
        assert_eq!(parse_millis("1e12"), Err(NotANumber));
    }

    #[test]
    fn values() {
        assert_eq!(
            value_millis(Some(&json!(1616920429000i64))),
            Ok(Some(1_616_920_429_000))
        );
        assert_eq!(value_millis(Some(&json!(-1))), Ok(None));
        assert_eq!(value_millis(None), Ok(None));
        assert_eq!(value_millis(Some(&json!(null))), Ok(None));
        assert_eq!(value_millis(Some(&json!(true))), Err(NotANumber));
        assert_eq!(
            value_millis(Some(&json!(1608725989.5))),
            Ok(Some(1_608_725_989_500))
        );
    }

    #[test]
    fn formats_with_millis() {
        assert_eq!(
            rfc3339_millis(1_608_725_989_000).unwrap(),
            "2020-12-23T12:19:49.000Z"
        );
        assert_eq!(
            rfc3339_millis(1_616_920_429_000).unwrap(),
            "2021-03-28T08:33:49.000Z"
        );
    }

    #[test]
    fn years_past_9999_cannot_be_written() {
        // Found by tests/prop_protocol.rs: an 18-digit create_time (read as microseconds)
        // gave "+33658-09-27T01:46:39.999Z", invalid against the published schema.
        assert_eq!(
            rfc3339_millis(253_402_300_799_999).as_deref(),
            Some("9999-12-31T23:59:59.999Z")
        );
        assert_eq!(rfc3339_millis(253_402_300_800_000), None);
        assert_eq!(
            parse_millis("999999999999999999").map(|ms| ms.and_then(rfc3339_millis)),
            Ok(None)
        );
    }
}
