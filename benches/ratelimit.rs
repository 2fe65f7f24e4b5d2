//! What the upstream rate limit costs a request that is under it (SPEC section 11): the
//! limiter's decision ([`Limiter::admit`], one short critical section) and the whole
//! [`Limiter::acquire`] the request path awaits (clock read included), when a slot is free.
//! Target: at most 1 µs p50 (criterion's median, `target/criterion/ratelimit/*/new/estimates.json`).
//!
//! - `admit_steady_10rps`: a connection at `rps = 10` with requests arriving 100 ms apart, so
//!   its window always holds ten slots and every request still goes at once (the busiest
//!   state in which nobody waits).
//! - `admit_idle`: the first request after a quiet spell (empty window).
//! - `acquire_nine_in_window`: `acquire()` polled once, with nine requests already in the
//!   current window: the tenth goes at once.
//!
//! `cargo bench --bench ratelimit`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bearerd::config::{Over, RateLimitConfig, RateScope};
use bearerd::ratelimit::{Admission, Limiter};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tokio::time::Instant;

fn limiter(rps: u32) -> Limiter {
    Limiter::new(&RateLimitConfig {
        rps,
        burst: rps,
        per: RateScope::Connection,
        over: Over::Wait,
        max_wait: Duration::from_secs(5),
    })
}

/// A limiter with nine requests in the window that ends now (100 ms apart).
fn nine_in_window() -> Limiter {
    let limiter = limiter(10);
    let now = Instant::now();
    for k in (1..=9u32).rev() {
        let at = now - Duration::from_millis(100) * k;
        assert_eq!(limiter.admit(at, Duration::ZERO), Admission::Now);
    }
    limiter
}

fn ratelimit(c: &mut Criterion) {
    // `acquire` sleeps with tokio's timer; a runtime context lets it be polled (it never
    // sleeps here: every poll below is answered at once).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _context = runtime.enter();
    let budget = Duration::from_secs(5);
    let mut group = c.benchmark_group("ratelimit");

    group.bench_function("admit_steady_10rps", |b| {
        let limiter = limiter(10);
        let mut now = Instant::now();
        let step = Duration::from_millis(100);
        b.iter(|| {
            now += step;
            let admission = limiter.admit(black_box(now), budget);
            debug_assert_eq!(admission, Admission::Now);
            black_box(admission)
        })
    });

    group.bench_function("admit_idle", |b| {
        b.iter_batched_ref(
            || (limiter(10), Instant::now()),
            |(limiter, now)| black_box(limiter.admit(*now, budget)),
            BatchSize::SmallInput,
        )
    });

    group.bench_function("acquire_nine_in_window", |b| {
        b.iter_batched_ref(
            nine_in_window,
            |limiter| {
                let mut acquire = pin!(limiter.acquire());
                let polled = acquire
                    .as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()));
                match polled {
                    Poll::Ready(Ok(waited)) => black_box(waited),
                    Poll::Ready(Err(rejected)) => panic!("refused: {rejected:?}"),
                    Poll::Pending => panic!("the tenth request in a window had to wait"),
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, ratelimit);
criterion_main!(benches);
