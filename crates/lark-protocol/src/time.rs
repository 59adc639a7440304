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
        Some(Value::Number(n)) => number_millis(n),
        Some(_) => Err(NotANumber),
    }
}

/// Milliseconds from a JSON number, by the same rule as its decimal form.
pub fn number_millis(n: &serde_json::Number) -> Result<Option<i64>, NotANumber> {
    if let Some(i) = n.as_i64() {
        int_millis(i)
    } else if n.is_u64() {
        Err(NotANumber)
    } else {
        // A float: serde_json prints the shortest form that round-trips.
        parse_millis(&n.to_string())
    }
}

/// [`parse_millis`] of an integer's decimal form, without writing it: the same magnitude rule,
/// and more than 18 digits is not a number.
fn int_millis(i: i64) -> Result<Option<i64>, NotANumber> {
    if i <= 0 {
        return Ok(None);
    }
    if i >= 1_000_000_000_000_000_000 {
        return Err(NotANumber);
    }
    Ok(Some(if i < 100_000_000_000 {
        i * 1000
    } else if i < 100_000_000_000_000 {
        i
    } else {
        i / 1000
    }))
}

/// RFC 3339 UTC with milliseconds: `2020-12-23T12:19:49.000Z`. `None` outside the years
/// 0000–9999: RFC 3339 has four-digit years only (chrono would write `+33658-…`, which the
/// published schema refuses), and a 17- or 18-digit value read as microseconds lands there.
///
/// Written by hand (civil-from-days, H. Hinnant) rather than through chrono's formatter, which
/// cost four times as much and runs up to four times per event (issue 19); a test holds it to
/// chrono's output.
pub fn rfc3339_millis(ms: i64) -> Option<String> {
    let date = rfc3339_seconds(ms.div_euclid(1000))?;
    let mut out = String::with_capacity(24);
    // Only ASCII digits and separators.
    out.extend(date.iter().map(|&b| b as char));
    out.push('.');
    let milli = ms.rem_euclid(1000) as u32;
    out.extend(digits::<3>(milli).iter().map(|&b| b as char));
    out.push('Z');
    Some(out)
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of `secs` since the epoch, as ASCII; `None` outside the years
/// 0000–9999. The shared part of [`rfc3339_millis`] and the log lines' timestamps.
pub fn rfc3339_seconds(secs: i64) -> Option<[u8; 19]> {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
    let z = days.checked_add(719_468)?;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe.checked_add(era.checked_mul(400)?)? + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut out = *b"0000-00-00T00:00:00";
    out[0..4].copy_from_slice(&digits::<4>(year as u32));
    out[5..7].copy_from_slice(&digits::<2>(month as u32));
    out[8..10].copy_from_slice(&digits::<2>(day as u32));
    out[11..13].copy_from_slice(&digits::<2>((sod / 3600) as u32));
    out[14..16].copy_from_slice(&digits::<2>((sod / 60 % 60) as u32));
    out[17..19].copy_from_slice(&digits::<2>((sod % 60) as u32));
    Some(out)
}

/// The last `N` decimal digits of `v`, zero-padded, as ASCII.
pub fn digits<const N: usize>(mut v: u32) -> [u8; N] {
    let mut out = [b'0'; N];
    for d in out.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out
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
    fn agrees_with_chrono_from_year_0_to_9999() {
        use chrono::Datelike;
        let chrono_fmt = |ms: i64| {
            let t = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)?;
            (0..=9999)
                .contains(&t.year())
                .then(|| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        };
        let first = -62_167_219_200_000i64; // 0000-01-01T00:00:00.000Z
        let last = 253_402_300_799_999i64; // 9999-12-31T23:59:59.999Z
        let mut ms = first - 5;
        // About 120,000 instants spread over the whole range, each day's edges included.
        let step = (last - first) / 40_000;
        while ms <= last + 5 {
            for m in [ms, ms + 86_399_999, ms + 1, ms - 1] {
                assert_eq!(rfc3339_millis(m), chrono_fmt(m), "{m}");
            }
            ms += step;
        }
        for m in [
            first,
            first - 1,
            last,
            last + 1,
            0,
            -1,
            951_782_400_000,
            i64::MIN,
            i64::MAX,
        ] {
            assert_eq!(rfc3339_millis(m), chrono_fmt(m), "{m}");
        }
    }

    #[test]
    fn integers_follow_the_decimal_rule() {
        for i in [
            -5,
            0,
            1,
            99_999_999_999,
            100_000_000_000,
            99_999_999_999_999,
            100_000_000_000_000,
            999_999_999_999_999_999,
            1_000_000_000_000_000_000,
            i64::MAX,
        ] {
            assert_eq!(int_millis(i), parse_millis(&i.to_string()), "{i}");
        }
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
