//! Durations as Istio writes them: protobuf JSON (`1.5s`) and Go's
//! `time.ParseDuration` forms (`300ms`, `1m30s`, `2h`), which `istioctl` and
//! kubectl users mix freely.

use std::time::Duration;

/// Parses `value`, or says why not.
pub fn parse(value: &str) -> Result<Duration, String> {
    let text = value.trim();
    if text.is_empty() {
        return Err("empty duration".to_string());
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if number_len == 0 {
            return Err(format!("{value:?}: expected a number before {rest:?}"));
        }
        let (number, after) = rest.split_at(number_len);
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("{value:?}: missing unit (use s, ms, m or h)")),
            other => return Err(format!("{value:?}: unknown unit {other:?}")),
        };
        total_nanos += scaled(number, nanos_per_unit).ok_or_else(|| format!("{value:?}: bad number {number:?}"))?;
        rest = next;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| format!("{value:?}: too large"))?;
    // The remainder of a division by 10^9 always fits in u32.
    let nanos = (total_nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// `number` (decimal, possibly fractional) times `unit` nanoseconds.
fn scaled(number: &str, unit: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return None;
    }
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let mut result = whole.checked_mul(unit)?;
    let mut scale = unit;
    for digit in fraction.bytes().take(18) {
        scale /= 10;
        result = result.checked_add(u128::from(digit - b'0') * scale)?;
    }
    Some(result)
}

/// Formats like protobuf JSON: seconds with up to 9 fractional digits.
pub fn format(duration: Duration) -> String {
    let nanos = duration.subsec_nanos();
    if nanos == 0 {
        return format!("{}s", duration.as_secs());
    }
    let fraction = format!("{nanos:09}");
    format!("{}.{}s", duration.as_secs(), fraction.trim_end_matches('0'))
}

/// `#[serde(with = "crate::duration::serde_opt")]` for `Option<Duration>`.
pub mod serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => serializer.serialize_str(&super::format(*duration)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(deserializer)?;
        text.map(|t| super::parse(&t).map_err(serde::de::Error::custom)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_and_go_forms() {
        assert_eq!(parse("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("").is_err());
        assert!(parse("10").is_err());
        assert!(parse("5 minutes").is_err());
        assert!(parse("1.2.3s").is_err());
        assert!(parse("s").is_err());
        assert!(parse("99999999999999999999999h").is_err());
    }

    #[test]
    fn formats_like_protobuf_json() {
        assert_eq!(format(Duration::from_secs(300)), "300s");
        assert_eq!(format(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format(Duration::from_micros(1)), "0.000001s");
    }
}
