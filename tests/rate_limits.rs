//! Upstream rate limits (SPEC section 11) on both request paths, against an upstream that
//! records when each request arrived and answers 429 with `Retry-After` when told to: the
//! upstream never sees more than `rps` requests in a one-second window, `over = "reject"`
//! answers 429 problem+json with `Retry-After`, and an upstream 429 pauses the connection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{Bearerd, TokenServer, TokenServerConfig, get};
use tokio::time::Instant;

/// Arrival times of every request; the first request to `/throttle` gets 429, Retry-After: 2.
#[derive(Clone, Default)]
struct Counting {
    arrivals: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Counting {
    async fn start() -> (Counting, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let counting = Counting::default();
        let c = counting.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let c = c.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let c = c.clone();
                        async move { Ok::<_, hyper::Error>(c.answer(request.uri().path())) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (counting, url)
    }

    fn answer(&self, path: &str) -> Response<Full<Bytes>> {
        let mut arrivals = self.arrivals.lock().unwrap();
        let first_throttle = path == "/throttle" && !arrivals.iter().any(|(_, p)| p == path);
        arrivals.push((Instant::now(), path.to_owned()));
        let builder = Response::builder();
        let builder = if first_throttle {
            builder.status(429).header("retry-after", "2")
        } else {
            builder.status(200)
        };
        builder.body(Full::new(Bytes::from_static(b"{}"))).unwrap()
    }

    fn times(&self) -> Vec<Instant> {
        self.arrivals
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _)| *t)
            .collect()
    }
}

/// The most arrivals in any one-second window starting at an arrival.
fn most_in_a_second(times: &[Instant]) -> usize {
    times
        .iter()
        .map(|&start| {
            times
                .iter()
                .filter(|&&t| t >= start && t < start + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

async fn rig(fast_path: bool, limit: &str) -> (Bearerd, Counting) {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let (counting, url) = Counting::start().await;
    let extra = format!("rate_limit = {limit}\n[runtime]\nfast_path = {fast_path}\n");
    let bearerd = Bearerd::start(&support::cc_config_for("api", &tokens, &url, &extra)).await;
    (bearerd, counting)
}

async fn burst(bearerd: &Bearerd, n: usize, path: &str) -> Vec<support::TestResponse> {
    let base = bearerd.proxy("api");
    let requests = (0..n).map(|_| {
        let url = format!("{base}{path}");
        tokio::spawn(async move { get(&url, None).await.unwrap() })
    });
    let mut answers = Vec::new();
    for r in requests.collect::<Vec<_>>() {
        answers.push(r.await.unwrap());
    }
    answers
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_requests_go_in_turn_and_no_window_holds_more_than_rps() {
    for fast_path in [true, false] {
        let (bearerd, counting) =
            rig(fast_path, "{ rps = 5, burst = 5, max_wait = \"10s\" }").await;
        let answers = burst(&bearerd, 16, "/v1/items").await;
        assert!(
            answers.iter().all(|a| a.status == StatusCode::OK),
            "all served in turn"
        );
        let times = counting.times();
        assert_eq!(times.len(), 16);
        assert!(most_in_a_second(&times) <= 5, "fast_path={fast_path}");
        let waited = bearerd
            .metric("bearerd_rate_limited_total{connection=\"api\",outcome=\"waited\"}")
            .await;
        assert!(waited >= 11.0, "fast_path={fast_path}: {waited}");
        bearerd.app.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn over_reject_answers_429_with_retry_after_at_once() {
    for fast_path in [true, false] {
        let (bearerd, counting) = rig(fast_path, "{ rps = 2, over = \"reject\" }").await;
        let answers = burst(&bearerd, 8, "/v1/items").await;
        let refused: Vec<_> = answers
            .iter()
            .filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS)
            .collect();
        assert_eq!(refused.len(), 6, "fast_path={fast_path}");
        assert!(refused[0].header("retry-after").is_some());
        assert_eq!(
            refused[0].header("content-type").as_deref(),
            Some("application/problem+json")
        );
        assert_eq!(counting.times().len(), 2);
        let rejected = bearerd
            .metric("bearerd_rate_limited_total{connection=\"api\",outcome=\"rejected\"}")
            .await;
        assert_eq!(rejected, 6.0);
        bearerd.app.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_429_pauses_the_connection_for_its_retry_after() {
    for fast_path in [true, false] {
        let (bearerd, counting) = rig(fast_path, "{ rps = 100, max_wait = \"5s\" }").await;
        let first = get(&format!("{}/throttle", bearerd.proxy("api")), None)
            .await
            .unwrap();
        assert_eq!(first.status, StatusCode::TOO_MANY_REQUESTS, "passed on");
        let answers = burst(&bearerd, 3, "/v1/after").await;
        assert!(answers.iter().all(|a| a.status == StatusCode::OK));
        let times = counting.times();
        assert!(
            times[1..]
                .iter()
                .all(|&t| t >= times[0] + Duration::from_secs(2)),
            "fast_path={fast_path}: nothing reached the upstream within Retry-After"
        );
        let throttled = bearerd
            .metric("bearerd_upstream_throttled_total{connection=\"api\"}")
            .await;
        assert_eq!(throttled, 1.0);
        bearerd.app.shutdown().await;
    }
}
