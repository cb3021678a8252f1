//! Time stamps: RFC 3339 in UTC with nanoseconds for records, ages for people.

use jiff::{Timestamp, Unit};

/// Now, as RFC 3339 UTC with nanosecond precision (sorts lexically).
pub fn now_rfc3339() -> String {
    format_ts(Timestamp::now())
}

/// Format a timestamp the way records store it.
pub fn format_ts(ts: Timestamp) -> String {
    // Fixed 9 fractional digits so that string order equals time order.
    format!(
        "{}.{:09}Z",
        ts.strftime("%Y-%m-%dT%H:%M:%S"),
        ts.subsec_nanosecond()
    )
}

/// Parse a stored time stamp.
pub fn parse_ts(text: &str) -> Option<Timestamp> {
    text.parse().ok()
}

/// Now in nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    Timestamp::now().as_nanosecond() as i64
}

/// "3 s", "5 min", "2 h", "4 d" — how long ago `ts` was.
pub fn age(ts: &str) -> String {
    let Some(t) = parse_ts(ts) else {
        return "?".into();
    };
    let secs = Timestamp::now()
        .since(t)
        .ok()
        .and_then(|s| s.total(Unit::Second).ok())
        .unwrap_or(0.0)
        .max(0.0) as u64;
    human_duration(secs)
}

/// Seconds to a short human duration.
pub fn human_duration(secs: u64) -> String {
    match secs {
        0..=89 => format!("{secs} s"),
        90..=5399 => format!("{} min", secs / 60),
        5400..=172_799 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86400),
    }
}

/// Seconds since `ts`, if it parses.
pub fn seconds_since(ts: &str) -> Option<i64> {
    let t = parse_ts(ts)?;
    Some(Timestamp::now().as_second() - t.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_sort_as_times_and_parse_back() {
        let a = format_ts(Timestamp::from_second(1_000_000_000).unwrap());
        let b = format_ts(Timestamp::from_nanosecond(1_000_000_000_500_000_000).unwrap());
        assert_eq!(a, "2001-09-09T01:46:40.000000000Z");
        assert!(a < b);
        assert_eq!(
            parse_ts(&b).unwrap().as_nanosecond(),
            1_000_000_000_500_000_000
        );
        assert_eq!(human_duration(30), "30 s");
        assert_eq!(human_duration(600), "10 min");
        assert_eq!(human_duration(7200), "2 h");
        assert_eq!(human_duration(3 * 86400), "3 d");
    }
}
