//! `last_activity` as CHP writes it (JavaScript's `Date.toISOString()`,
//! `2026-12-05T17:40:00.123Z`) and `inactive_since` as clients send it
//! (ISO 8601: a date, or a date and time with an optional fraction and
//! offset). Milliseconds since the Unix epoch in between.

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_ms(ms: i64) -> String {
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let (seconds, millis) = (in_day / 1000, in_day % 1000);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// Parses an ISO 8601 date or date-time; a time without an offset is UTC
/// (JupyterHub sends UTC).
pub fn parse_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut ms = days_from_civil(year, month, day) * 86_400_000;
    if let Some(time) = time {
        let (clock, offset_ms) = split_offset(time)?;
        let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
        let mut fields = hms.split(':');
        let hours: i64 = fields.next()?.parse().ok()?;
        let minutes: i64 = fields.next()?.parse().ok()?;
        let seconds: i64 = fields.next().map_or(Some(0), |s| s.parse().ok())?;
        if fields.next().is_some() || hours > 23 || minutes > 59 || seconds > 60 {
            return None;
        }
        let millis: i64 = if fraction.is_empty() {
            0
        } else if fraction.bytes().all(|b| b.is_ascii_digit()) {
            format!("{fraction:0<3}")[..3].parse().ok()?
        } else {
            return None;
        };
        ms += ((hours * 60 + minutes) * 60 + seconds) * 1000 + millis - offset_ms;
    }
    Some(ms)
}

/// `12:00:00Z` -> (`12:00:00`, 0); `12:00:00+02:00` -> (`12:00:00`, 2 h).
fn split_offset(time: &str) -> Option<(&str, i64)> {
    if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        return Some((clock, 0));
    }
    match time.rfind(['+', '-']) {
        Some(at) => {
            let (clock, offset) = time.split_at(at);
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let digits: String = offset[1..].chars().filter(|c| *c != ':').collect();
            if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let hours: i64 = digits[..2].parse().ok()?;
            let minutes: i64 = digits[2..].parse().ok()?;
            Some((clock, sign * (hours * 60 + minutes) * 60_000))
        }
        None => Some((time, 0)),
    }
}

/// Howard Hinnant's days-from-civil: days since 1970-01-01.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = u32::try_from(day_of_year - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_like_javascript() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_796_492_400_123), "2026-12-05T17:40:00.123Z");
        assert_eq!(parse_ms("2026-12-05T17:40:00.123Z"), Some(1_796_492_400_123));
        assert_eq!(parse_ms("2026-12-05T19:40:00.123+02:00"), Some(1_796_492_400_123));
        assert_eq!(parse_ms("2026-12-05T17:40:00.123456"), Some(1_796_492_400_123));
        assert_eq!(parse_ms("2026-12-05"), Some(1_796_428_800_000));
        assert_eq!(parse_ms("2024-02-29T00:00:00Z").map(format_ms).as_deref(), Some("2024-02-29T00:00:00.000Z"));
    }

    #[test]
    fn garbage_is_not_a_date() {
        for text in ["", "yesterday", "2026-13-01", "2026-12-05T25:00:00Z", "2026-12-05T10:00:00+2"] {
            assert_eq!(parse_ms(text), None, "{text}");
        }
    }
}
