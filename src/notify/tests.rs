//! The event rules and the signature, without sockets.

use std::time::Duration;

use tokio::time::Instant;

use super::deliver::{GIVE_UP_AFTER, next_attempt, parse_secret, signature};
use super::*;

#[test]
fn problems_are_announced_once_and_recovery_once() {
    let t0 = Instant::now();
    let mut tracker = Tracker::new(ConnState::Connected, t0);
    assert_eq!(tracker.observe(ConnState::Refreshing, t0), None);
    assert_eq!(
        tracker.observe(ConnState::NeedsAuthorization, t0),
        Some(EventKind::NeedsAuthorization)
    );
    assert_eq!(tracker.observe(ConnState::NeedsAuthorization, t0), None);
    assert_eq!(tracker.observe(ConnState::Authorizing, t0), None);
    assert_eq!(
        tracker.observe(ConnState::Connected, t0),
        Some(EventKind::Recovered)
    );
    assert_eq!(tracker.observe(ConnState::Connected, t0), None);
    assert_eq!(
        tracker.observe(ConnState::Disconnected, t0),
        Some(EventKind::Disconnected)
    );
    assert_eq!(
        tracker.observe(ConnState::Misconfigured, t0),
        Some(EventKind::Misconfigured),
        "a different problem is a new event"
    );
}

#[test]
fn degraded_is_an_event_only_after_five_minutes_and_then_recovers() {
    let t0 = Instant::now();
    let mut tracker = Tracker::new(ConnState::Connected, t0);
    assert_eq!(tracker.observe(ConnState::Degraded, t0), None);
    assert_eq!(
        tracker.observe(ConnState::Refreshing, t0 + DEGRADED_AFTER / 2),
        None
    );
    assert_eq!(
        tracker.observe(ConnState::Degraded, t0 + DEGRADED_AFTER / 2),
        None
    );
    assert_eq!(
        tracker.observe(ConnState::Degraded, t0 + DEGRADED_AFTER),
        Some(EventKind::Degraded)
    );
    assert_eq!(
        tracker.observe(ConnState::Degraded, t0 + DEGRADED_AFTER * 2),
        None
    );
    assert_eq!(
        tracker.observe(ConnState::Connected, t0 + DEGRADED_AFTER * 2),
        Some(EventKind::Recovered)
    );
    // A short degraded spell is no event, and no recovery either.
    assert_eq!(
        tracker.observe(ConnState::Degraded, t0 + DEGRADED_AFTER * 3),
        None
    );
    assert_eq!(
        tracker.observe(ConnState::Connected, t0 + DEGRADED_AFTER * 3),
        None
    );
}

#[test]
fn a_problem_present_at_start_is_not_announced_but_its_recovery_is() {
    let t0 = Instant::now();
    let mut tracker = Tracker::new(ConnState::NeedsAuthorization, t0);
    assert_eq!(tracker.observe(ConnState::NeedsAuthorization, t0), None);
    assert_eq!(
        tracker.observe(ConnState::Connected, t0),
        Some(EventKind::Recovered)
    );
}

#[test]
fn the_event_id_is_the_same_for_the_same_change_on_any_replica() {
    let at = SystemTime::now();
    let a = entry(
        "hotel",
        EventKind::NeedsAuthorization,
        ConnState::NeedsAuthorization,
        ConnState::Refreshing,
        7,
        Some("invalid_grant"),
        "http://h",
        at,
    );
    let b = entry(
        "hotel",
        EventKind::NeedsAuthorization,
        ConnState::NeedsAuthorization,
        ConnState::Connected,
        7,
        None,
        "http://h",
        at + Duration::from_secs(2),
    );
    let c = entry(
        "hotel",
        EventKind::NeedsAuthorization,
        ConnState::NeedsAuthorization,
        ConnState::Connected,
        8,
        None,
        "http://h",
        at,
    );
    assert_eq!(a.id, b.id);
    assert_ne!(a.id, c.id);
    let body: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
    assert_eq!(body["type"], "needs_authorization");
    assert_eq!(body["reconnect_url"], "http://h/connections/hotel/connect");
    assert_eq!(body["previous_state"], "refreshing");
    assert!(body["tenant"].is_null());
}

#[test]
fn the_signature_matches_the_standard_webhooks_example() {
    // The example of the Standard Webhooks specification.
    let key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_or_default();
    let body = r#"{"test": 2432232314}"#;
    assert_eq!(
        signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
    assert!(parse_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
    assert!(parse_secret("whsec_not base64!").is_err());
    assert!(parse_secret("whsec_c2hvcnQ=").is_err());
}

#[test]
fn retries_start_within_seconds_grow_to_an_hour_and_stop_after_a_day() {
    let created = 1_000_000;
    let gaps: Vec<u64> = (1..=9)
        .map(|n| next_attempt(created, n, created).unwrap_or(0) - created)
        .collect();
    assert_eq!(&gaps[..3], &[1_000, 5_000, 30_000]);
    assert!(gaps.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(*gaps.last().unwrap_or(&0), 3_600_000);
    let day = u64::try_from(GIVE_UP_AFTER.as_millis()).unwrap_or(0);
    assert_eq!(next_attempt(created, 30, created + day - 1_000), None);
}
