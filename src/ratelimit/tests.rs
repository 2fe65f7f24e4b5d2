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
    // The budget is used: 2,000 slots take 200 windows (each with its slack), not more.
    let span = *slots.last().unwrap() - start;
    let windows = (WINDOW + WINDOW_SLACK) * 200;
    assert!(span < windows + Duration::from_secs(2), "{span:?}");
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

/// Admits `n` requests arriving at `now` and returns their tickets.
fn queue(limiter: &Limiter, now: Instant, n: usize) -> Vec<u64> {
    (0..n)
        .filter_map(|_| match limiter.admit(now, Duration::from_secs(60)) {
            Admission::Wait { ticket, .. } => Some(ticket),
            Admission::Now => None,
            Admission::Reject { .. } => panic!("refused"),
        })
        .collect()
}

/// The slots of `tickets` as planned now.
fn planned(limiter: &Limiter, tickets: &[u64]) -> Vec<Instant> {
    tickets
        .iter()
        .map(|&t| limiter.slot_of(t).0.expect("still planned"))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_smaller_share_replans_the_waiting_requests_within_it() {
    // Alone with rps = 10, forty requests are queued four seconds deep; then two more
    // replicas join. From then on this one may send only its 4 a second, queue or not.
    let limiter = Limiter::new(&config(10, 10, Over::Wait, Duration::from_secs(60)));
    let start = Instant::now();
    let tickets = queue(&limiter, start, 50);
    assert_eq!(tickets.len(), 40);
    tokio::time::advance(Duration::from_millis(500)).await;
    let replanned = Instant::now();
    limiter.set_share(10, 0, 3);
    let slots = planned(&limiter, &tickets);
    assert!(slots.windows(2).all(|w| w[0] <= w[1]), "order kept");
    let after: Vec<Instant> = slots.into_iter().filter(|&s| s > replanned).collect();
    assert_eq!(after.len(), 40, "none of them had gone yet");
    assert!(most_in_any_window(&after, WINDOW) <= 4);
    // And they still use the share: forty at 4 a second take about ten seconds.
    let span = *after.last().unwrap() - replanned;
    assert!(span < Duration::from_millis(10_200), "{span:?}");
}

#[tokio::test(start_paused = true)]
async fn a_larger_share_moves_the_waiting_requests_earlier() {
    // One of three replicas (4 a second) with a queue; the other two leave.
    let limiter = Limiter::new(&config(10, 10, Over::Wait, Duration::from_secs(60)));
    limiter.set_share(10, 0, 3);
    let start = Instant::now();
    let tickets = queue(&limiter, start, 24);
    assert_eq!(tickets.len(), 20);
    let before = *planned(&limiter, &tickets).last().unwrap();
    assert!(
        before - start >= Duration::from_secs(5),
        "{:?}",
        before - start
    );
    limiter.set_share(10, 0, 1);
    let slots = planned(&limiter, &tickets);
    assert!(slots.windows(2).all(|w| w[0] <= w[1]), "order kept");
    let last = *slots.last().unwrap();
    // 24 requests at 10 a window: the last goes two windows (with their slack) after the
    // start, not six (4 a window).
    assert!(
        last - start <= (WINDOW + WINDOW_SLACK) * 2,
        "{:?}",
        last - start
    );
    let mut all = vec![start; 4];
    all.extend(slots);
    assert!(most_in_any_window(&all, WINDOW) <= 10);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_takes_its_new_slot_when_the_share_grows() {
    let limiter = std::sync::Arc::new(Limiter::new(&config(
        2,
        2,
        Over::Wait,
        Duration::from_secs(10),
    )));
    limiter.set_share(2, 0, 2);
    let start = Instant::now();
    assert_eq!(limiter.acquire().await, Ok(Duration::ZERO));
    let waiter = tokio::spawn({
        let limiter = std::sync::Arc::clone(&limiter);
        async move { limiter.acquire().await.map(|_| Instant::now()) }
    });
    tokio::task::yield_now().await;
    tokio::time::advance(Duration::from_millis(100)).await;
    // The other replica left: this one's quota is 2 a second, so the waiter goes now, not
    // after the second it was planned for.
    limiter.set_share(2, 0, 1);
    let went = waiter.await.unwrap().unwrap();
    assert!(
        went - start < Duration::from_millis(200),
        "{:?}",
        went - start
    );
}

#[tokio::test(start_paused = true)]
async fn waiters_keep_their_order_through_a_pause() {
    // burst = 1: every waiter has a slot of its own, so their order is observable.
    let limiter = std::sync::Arc::new(Limiter::new(&config(
        5,
        1,
        Over::Wait,
        Duration::from_secs(30),
    )));
    let start = Instant::now();
    assert_eq!(
        limiter.admit(start, Duration::from_secs(30)),
        Admission::Now
    );
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for n in 0..8 {
        let (limiter, order) = (
            std::sync::Arc::clone(&limiter),
            std::sync::Arc::clone(&order),
        );
        waiters.push(tokio::spawn(async move {
            limiter.acquire().await.unwrap();
            order.lock().unwrap().push((n, Instant::now()));
        }));
        tokio::task::yield_now().await;
    }
    limiter.pause(start, Duration::from_secs(3));
    for waiter in waiters {
        waiter.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    let numbers: Vec<i32> = order.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, (0..8).collect::<Vec<_>>());
    assert!(
        order
            .iter()
            .all(|(_, t)| *t >= start + Duration::from_secs(3))
    );
    let times: Vec<Instant> = order.iter().map(|(_, t)| *t).collect();
    assert!(most_in_any_window(&times, WINDOW) <= 5);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_goes_away_gives_its_slot_to_the_next() {
    let limiter = std::sync::Arc::new(Limiter::new(&config(
        1,
        1,
        Over::Wait,
        Duration::from_secs(10),
    )));
    let start = Instant::now();
    assert_eq!(limiter.acquire().await, Ok(Duration::ZERO));
    let spawn = || {
        let limiter = std::sync::Arc::clone(&limiter);
        tokio::spawn(async move { limiter.acquire().await.map(|_| Instant::now()) })
    };
    let gone = spawn();
    tokio::task::yield_now().await;
    let next = spawn();
    tokio::task::yield_now().await;
    // The app behind the first waiter hangs up: the second takes its slot, a window on.
    gone.abort();
    let _ = gone.await;
    let went = next.await.unwrap().unwrap();
    assert!(
        went - start < Duration::from_millis(1100),
        "{:?}",
        went - start
    );
}

#[tokio::test(start_paused = true)]
async fn waiters_a_pause_pushes_past_max_wait_leave_and_the_rest_go_after_it() {
    let limiter = std::sync::Arc::new(Limiter::new(&config(
        2,
        2,
        Over::Wait,
        Duration::from_secs(3),
    )));
    let start = Instant::now();
    for _ in 0..2 {
        assert_eq!(limiter.acquire().await, Ok(Duration::ZERO));
    }
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let limiter = std::sync::Arc::clone(&limiter);
            tokio::spawn(async move { limiter.acquire().await.map(|_| Instant::now()) })
        })
        .collect();
    tokio::task::yield_now().await;
    // Retry-After: 2 moves the four to 2 s and 3.01 s: the last two would pass max_wait.
    limiter.pause(start, Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(1)).await;
    // Their slots are free again: a new request is planned right behind the first two, in
    // the window after the pause's (3.01 s), not behind two abandoned slots (4.02 s).
    let now = Instant::now();
    let Admission::Wait { at, .. } = limiter.admit(now, Duration::from_secs(5)) else {
        panic!("paused");
    };
    assert!(at - start < Duration::from_millis(3100), "{:?}", at - start);
    let mut went = 0;
    let mut refused = 0;
    for waiter in waiters {
        match waiter.await.unwrap() {
            Ok(t) => {
                assert!(t >= start + Duration::from_secs(2), "{:?}", t - start);
                went += 1;
            }
            Err(_) => refused += 1,
        }
    }
    assert_eq!((went, refused), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn a_held_limiter_lets_nothing_go_and_refuses_soon_when_held_until_further_notice() {
    let limiter = Limiter::new(&config(10, 10, Over::Wait, Duration::from_secs(5)));
    limiter.hold(None);
    assert!(limiter.held());
    let now = Instant::now();
    // Held until further notice: refused at once, with a short Retry-After (not the hour).
    let Admission::Reject { retry_after } = limiter.admit(now, Duration::from_secs(5)) else {
        panic!("a request went out while held");
    };
    assert!(retry_after <= Duration::from_secs(2), "{retry_after:?}");
    // Held until a known time within max_wait: the request waits for it.
    let until = now + Duration::from_millis(2_250);
    limiter.hold(Some(until));
    assert_eq!(slot(limiter.admit(now, Duration::from_secs(5)), now), until);
    // Released: the next request goes at once, after the one already planned.
    limiter.hold(Some(now));
    assert!(!limiter.held());
    assert_eq!(limiter.admit(now, Duration::from_secs(5)), Admission::Now);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_request_moves_with_the_hold() {
    let limiter = Limiter::new(&config(10, 10, Over::Wait, Duration::from_secs(5)));
    let now = Instant::now();
    limiter.hold(Some(now + Duration::from_secs(2)));
    let tickets = queue(&limiter, now, 3);
    assert!(
        planned(&limiter, &tickets)
            .iter()
            .all(|&at| at >= now + Duration::from_secs(2))
    );
    // Released early: the waiting requests are re-planned from now.
    limiter.hold(Some(now));
    assert!(planned(&limiter, &tickets).iter().all(|&at| at == now));
}
