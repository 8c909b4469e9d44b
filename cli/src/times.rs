//! Times on the command line and in what the commands print: RFC 3339 in
//! UTC, microseconds since the Unix epoch, `now`, or a duration ago.

use std::time::{Duration, UNIX_EPOCH};

use zmanager::wire::envelope::now_us;

/// A time on the command line, in microseconds since the Unix epoch.
pub(crate) fn parse_time(text: &str) -> Result<u64, String> {
    parse_time_at(text, now_us())
}

pub(crate) fn parse_time_at(text: &str, now_us: u64) -> Result<u64, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(now_us);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map_err(|e| format!("{text:?} as microseconds: {e}"));
    }
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        let since_epoch = time
            .duration_since(UNIX_EPOCH)
            .map_err(|_| format!("{text:?} is before 1970"))?;
        return u64::try_from(since_epoch.as_micros()).map_err(|_| format!("{text:?} is too far"));
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        let ago = u64::try_from(ago.as_micros()).unwrap_or(u64::MAX);
        return Ok(now_us.saturating_sub(ago));
    }
    Err(format!(
        "{text:?} is not a time: use RFC 3339 in UTC (2026-11-25T10:00:00Z), \
         microseconds since the Unix epoch, `now`, or a duration meaning that long ago (15m, 2h)"
    ))
}

/// `2026-11-25T10:00:00.000000Z`, or the raw number if out of range.
pub(crate) fn time(us: u64) -> String {
    // humantime formats years up to 9999 only.
    const LAST: u64 = 253_402_300_799_999_999;
    if us > LAST {
        return format!("{us}µs");
    }
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(us)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_microseconds_or_durations_ago() {
        let now = 1_800_000_000_000_000;
        assert_eq!(
            parse_time_at("2026-11-25T10:00:00Z", now),
            Ok(1_795_600_800_000_000)
        );
        assert_eq!(
            parse_time_at("2026-11-25T10:00:00.25Z", now),
            Ok(1_795_600_800_250_000)
        );
        assert_eq!(
            parse_time_at("1795600800000000", now),
            Ok(1_795_600_800_000_000)
        );
        assert_eq!(parse_time_at("15m", now), Ok(now - 15 * 60 * 1_000_000));
        assert_eq!(parse_time_at("1h 30m", now), Ok(now - 90 * 60 * 1_000_000));
        assert_eq!(parse_time_at("now", now), Ok(now));
        for bad in ["", "yesterday", "2026-13-01T00:00:00Z", "-5", "10:00"] {
            let e = parse_time_at(bad, now).unwrap_err();
            assert!(e.contains("is not a time"), "{bad}: {e}");
        }
        assert_eq!(time(1_795_600_800_250_000), "2026-11-25T10:00:00.250000Z");
        assert_eq!(time(u64::MAX), format!("{}µs", u64::MAX));
    }
}
