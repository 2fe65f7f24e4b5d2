//! The limiter driven by hand-picked arrival times, with Tokio's clock paused: no sockets,
//! no sleeping in real time.

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::config::{Over, RateLimitConfig, RateScope};

fn config(rps: u32, burst: u32, over: Over, max_wait: Duration) -> RateLimitConfig {
    RateLimitConfig {
        rps,
        burst,
        per: RateScope::Connection,
        over,
        max_wait,
    }
}

fn slot(admission: Admission, now: Instant) -> Instant {
    match admission {
        Admission::Now => now,
        Admission::Wait { at, .. } => at,
        Admission::Reject { retry_after } => panic!("rejected, retry after {retry_after:?}"),
    }
}

/// The most slots in any window of `window` starting at a slot.
fn most_in_any_window(slots: &[Instant], window: Duration) -> usize {
    slots
        .iter()
        .map(|&start| {
            slots
                .iter()
                .filter(|&&s| s >= start && s < start + window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(start_paused = true)]
async fn a_burst_goes_at_once_and_the_next_request_waits_for_the_window() {
    let limiter = Limiter::new(&config(10, 10, Over::Wait, Duration::from_secs(5)));
    let now = Instant::now();
    for _ in 0..10 {
        assert_eq!(limiter.admit(now, Duration::from_secs(5)), Admission::Now);
    }
    let Admission::Wait { at, .. } = limiter.admit(now, Duration::from_secs(5)) else {
        panic!("the eleventh waits");
    };
    assert!(at >= now + WINDOW, "{:?}", at - now);
    assert!(at <= now + WINDOW + WINDOW_SLACK + Duration::from_millis(1));
}

#[tokio::test(start_paused = true)]
async fn under_heavy_load_every_window_holds_the_quota_and_the_budget_is_used() {
    let limiter = Limiter::new(&config(10, 10, Over::Wait, Duration::from_secs(600)));
    let start = Instant::now();
    // 2,000 requests arriving over 20 s in uneven clumps: far more than 10 a second.
    let mut slots = Vec::new();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..2000u64 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let arrival = start + Duration::from_millis(i * 10 + seed % 7);
        slots.push(slot(
            limiter.admit(arrival, Duration::from_secs(600)),
            arrival,
        ));
    }
    assert!(
        slots.windows(2).all(|w| w[0] <= w[1]),
        "first come, first served"
    );
    assert!(most_in_any_window(&slots, WINDOW) <= 10);
    // The budget is used: 2,000 slots take about 200 s, not more.
    let span = *slots.last().unwrap() - start;
    assert!(span < Duration::from_secs(205), "{span:?}");
}

#[tokio::test(start_paused = true)]
async fn a_small_burst_spaces_requests() {
    let limiter = Limiter::new(&config(10, 1, Over::Wait, Duration::from_secs(60)));
    let now = Instant::now();
    let slots: Vec<Instant> = (0..20)
        .map(|_| slot(limiter.admit(now, Duration::from_secs(60)), now))
        .collect();
    for pair in slots.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(99),
            "{:?}",
            pair[1] - pair[0]
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_wait_longer_than_max_wait_is_refused_and_reserves_nothing() {
    let limiter = Limiter::new(&config(2, 2, Over::Wait, Duration::from_millis(500)));
    let now = Instant::now();
    assert_eq!(
        limiter.admit(now, Duration::from_millis(500)),
        Admission::Now
    );
    assert_eq!(
        limiter.admit(now, Duration::from_millis(500)),
        Admission::Now
    );
    let Admission::Reject { retry_after } = limiter.admit(now, Duration::from_millis(500)) else {
        panic!("a 1 s wait is over the 500 ms budget");
    };
    assert!(retry_after >= WINDOW, "{retry_after:?}");
    // Nothing was reserved: after the window the next request goes at once.
    let later = now + WINDOW + WINDOW_SLACK;
    assert_eq!(
        limiter.admit(later, Duration::from_millis(500)),
        Admission::Now
    );
}

#[tokio::test(start_paused = true)]
async fn over_reject_answers_at_once() {
    let limiter = Limiter::new(&config(1, 1, Over::Reject, Duration::from_secs(5)));
    let now = Instant::now();
    assert_eq!(limiter.admit(now, Duration::from_secs(5)), Admission::Now);
    assert!(matches!(
        limiter.admit(now, Duration::from_secs(5)),
        Admission::Reject { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn an_upstream_pause_holds_new_and_waiting_requests() {
    let limiter = std::sync::Arc::new(Limiter::new(&config(
        1,
        1,
        Over::Wait,
        Duration::from_secs(10),
    )));
    let start = Instant::now();
    assert_eq!(limiter.acquire().await, Ok(Duration::ZERO));
    // A second request waits for the next window...
    let waiter = tokio::spawn({
        let limiter = std::sync::Arc::clone(&limiter);
        async move { limiter.acquire().await.map(|_| Instant::now()) }
    });
    tokio::task::yield_now().await;
    // ...and the upstream says 429, Retry-After: 2 before it goes.
    limiter.pause(Instant::now(), Duration::from_secs(2));
    let went = waiter.await.unwrap().unwrap();
    assert!(went >= start + Duration::from_secs(2), "{:?}", went - start);
    // A new request also goes after the pause.
    let Admission::Wait { at, .. } = limiter.admit(start, Duration::from_secs(10)) else {
        panic!("paused");
    };
    assert!(at >= start + Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_pause_longer_than_max_wait_refuses_with_its_retry_after() {
    let limiter = Limiter::new(&config(10, 10, Over::Wait, Duration::from_secs(1)));
    let now = Instant::now();
    limiter.pause(now, Duration::from_secs(3));
    let Admission::Reject { retry_after } = limiter.admit(now, Duration::from_secs(1)) else {
        panic!("paused for 3 s");
    };
    assert_eq!(retry_after, Duration::from_secs(3));
    // A hostile Retry-After is capped.
    limiter.pause(now, Duration::from_secs(86_400));
    let Admission::Reject { retry_after } = limiter.admit(now, Duration::from_secs(1)) else {
        panic!("paused");
    };
    assert_eq!(retry_after, MAX_PAUSE);
}

#[test]
fn shares_sum_to_the_budget() {
    for rps in [1u32, 2, 3, 10, 11, 100] {
        for live in 1usize..=12 {
            let shares: Vec<(u32, Duration)> = (0..live).map(|i| share(rps, i, live)).collect();
            // Requests per second over all replicas, from each one's quota and window.
            let total: f64 = shares
                .iter()
                .map(|(q, w)| f64::from(*q) / w.as_secs_f64())
                .sum();
            if rps as usize >= live {
                assert_eq!(
                    shares.iter().map(|s| s.0).sum::<u32>(),
                    rps,
                    "{rps} / {live}"
                );
                assert!(shares.iter().all(|s| s.1 == WINDOW));
            } else {
                let rps = f64::from(rps);
                assert!(
                    total <= rps + 1e-9 && total > rps - 1e-6,
                    "{rps} / {live}: {total}"
                );
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_smaller_share_applies_to_the_next_request() {
    let limiter = Limiter::new(&config(10, 10, Over::Wait, Duration::from_secs(5)));
    limiter.set_share(10, 0, 3);
    assert_eq!(limiter.share(), (4, WINDOW));
    let now = Instant::now();
    for _ in 0..4 {
        assert_eq!(limiter.admit(now, Duration::from_secs(5)), Admission::Now);
    }
    assert!(matches!(
        limiter.admit(now, Duration::from_secs(5)),
        Admission::Wait { .. }
    ));
}

#[test]
fn retry_after_is_seconds_or_a_date() {
    let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    assert_eq!(parse_retry_after(b"2", now), Some(Duration::from_secs(2)));
    assert_eq!(
        parse_retry_after(b" 120 ", now),
        Some(Duration::from_secs(120))
    );
    let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
    assert_eq!(
        parse_retry_after(date.as_bytes(), now),
        Some(Duration::from_secs(30))
    );
    let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
    assert_eq!(
        parse_retry_after(past.as_bytes(), now),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after(b"soon", now), None);
    assert_eq!(parse_retry_after(b"-1", now), None);
}
