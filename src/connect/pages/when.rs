//! Moments as the status page shows them: a relative phrase a person reads at a glance
//! ("in 4m", "3m ago") and a short UTC form ("2026-12-02 01:34Z") that says which day. Pure
//! functions of the moment and `now`, so tests need no clock.

use std::time::{Duration, SystemTime};

/// "in 4m", "3m ago", "now": whole units, rounded down, at most two of them.
pub fn relative(at: SystemTime, now: SystemTime) -> String {
    match at.duration_since(now) {
        Ok(ahead) if ahead >= Duration::from_secs(1) => format!("in {}", span(ahead)),
        Ok(_) => "now".into(),
        Err(behind) if behind.duration() >= Duration::from_secs(1) => {
            format!("{} ago", span(behind.duration()))
        }
        Err(_) => "now".into(),
    }
}

/// "45s", "4m", "1h 5m", "2d 3h".
fn span(length: Duration) -> String {
    let s = length.as_secs();
    let (minute, hour, day) = (60, 3600, 86_400);
    let two = |big: u64, big_unit: &str, small: u64, small_unit: &str| {
        if small == 0 {
            format!("{big}{big_unit}")
        } else {
            format!("{big}{big_unit} {small}{small_unit}")
        }
    };
    match s {
        s if s < minute => format!("{s}s"),
        s if s < hour => format!("{}m", s / minute),
        s if s < day => two(s / hour, "h", s % hour / minute, "m"),
        s => two(s / day, "d", s % day / hour, "h"),
    }
}

/// "2026-12-02 01:34Z": to the minute, UTC, the date always there.
pub fn short_utc(at: SystemTime) -> String {
    // "2026-12-02T01:34:56Z" -> "2026-12-02 01:34Z"
    let full = humantime::format_rfc3339_seconds(at).to_string();
    match (full.get(..10), full.get(11..16)) {
        (Some(date), Some(time)) => format!("{date} {time}Z"),
        _ => full,
    }
}

/// The full RFC 3339 form, for a `datetime` attribute and a tooltip.
pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn relative_phrases() {
        let now = at(1_800_000_000);
        let later = |s: u64| now + Duration::from_secs(s);
        let earlier = |s: u64| now - Duration::from_secs(s);
        assert_eq!(relative(later(45), now), "in 45s");
        assert_eq!(relative(later(4 * 60 + 59), now), "in 4m");
        assert_eq!(relative(earlier(3 * 60 + 1), now), "3m ago");
        assert_eq!(relative(later(3600), now), "in 1h");
        assert_eq!(relative(later(3600 + 5 * 60 + 9), now), "in 1h 5m");
        assert_eq!(relative(earlier(2 * 86_400 + 3 * 3600), now), "2d 3h ago");
        assert_eq!(relative(now, now), "now");
        assert_eq!(relative(now - Duration::from_millis(300), now), "now");
    }

    #[test]
    fn short_utc_form() {
        // 2027-01-15T08:00:00Z
        assert_eq!(short_utc(at(1_800_000_000)), "2027-01-15 08:00Z");
        assert_eq!(rfc3339(at(1_800_000_000)), "2027-01-15T08:00:00Z");
    }
}
