//! The upstream API of the replicas bench: it notes when each request arrives and from which
//! replica (the clients' `x-bench-replica` header, which bearerd forwards), answers 200, and
//! answers 429 as a provider would when its own count of the trailing second passes the
//! limit (11 or more, `Retry-After: 1`). On demand it answers the next request 429 with
//! `Retry-After: 2` ([`Upstream::throttle_next`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// The provider's limit: requests in any trailing second.
pub const LIMIT: usize = 10;

/// One request as the upstream saw it.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub at: Instant,
    /// Which replica sent it (0, 1, 2), from the client's header.
    pub replica: u8,
    /// 429 by the upstream's own count, or the one asked for with `throttle_next`.
    pub throttled: bool,
}

#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    throttle_next: Arc<AtomicBool>,
    /// The arrival answered 429 `Retry-After: 2` on demand.
    throttled: Arc<Mutex<Option<Arrival>>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = Upstream {
            addr: listener.local_addr().unwrap(),
            arrivals: Arc::default(),
            throttle_next: Arc::default(),
            throttled: Arc::default(),
        };
        let served = upstream.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let upstream = served.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: http::Request<_>| {
                        let answer = upstream.answer(request.headers());
                        async move { Ok::<_, Infallible>(answer) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        upstream
    }

    fn answer(&self, headers: &http::HeaderMap) -> Response<Full<Bytes>> {
        let at = Instant::now();
        let replica = headers
            .get("x-bench-replica")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(u8::MAX);
        let mut arrivals = self.arrivals.lock().unwrap();
        let in_last_second = 1 + arrivals
            .iter()
            .rev()
            .take_while(|a| at.duration_since(a.at) < Duration::from_secs(1))
            .count();
        let asked = self.throttle_next.swap(false, Ordering::SeqCst);
        let over = in_last_second > LIMIT;
        let arrival = Arrival {
            at,
            replica,
            throttled: over || asked,
        };
        arrivals.push(arrival);
        drop(arrivals);
        let (status, retry_after, body) = if asked {
            *self.throttled.lock().unwrap() = Some(arrival);
            (
                StatusCode::TOO_MANY_REQUESTS,
                "2",
                "{\"error\":\"throttled\"}",
            )
        } else if over {
            (
                StatusCode::TOO_MANY_REQUESTS,
                "1",
                "{\"error\":\"over the limit\"}",
            )
        } else {
            (StatusCode::OK, "", "{\"reservations\":[]}")
        };
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("x-bench-upstream", HeaderValue::from_static("1"));
        if !retry_after.is_empty() {
            headers.insert("retry-after", HeaderValue::from_static(retry_after));
        }
        response
    }

    /// Answers the next request 429 with `Retry-After: 2`.
    pub fn throttle_next(&self) {
        self.throttle_next.store(true, Ordering::SeqCst);
    }

    /// The request that got the `Retry-After: 2`, once one has.
    pub fn throttled(&self) -> Option<Arrival> {
        *self.throttled.lock().unwrap()
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }
}
