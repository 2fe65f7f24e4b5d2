//! The heavy load: many concurrent keep-alive clients per replica, each request for one of
//! 40 properties (`X-Property-ID`), until told to stop. A client whose request bearerd
//! refuses (its own 429: the wait would pass `max_wait`) waits 200 ms before the next, as a
//! polite app would; everything else is sent again at once. Answers are counted by kind.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub const PROPERTIES: usize = 40;

/// Answers the clients got, by kind.
#[derive(Default)]
pub struct Counts {
    /// 200 from the upstream.
    pub ok: AtomicU64,
    /// 429 from the upstream (passed through by bearerd).
    pub upstream_429: AtomicU64,
    /// bearerd's own 429: the request would have waited past `max_wait`.
    pub bearerd_429: AtomicU64,
    /// Anything else (a connection error, a 5xx).
    pub other: AtomicU64,
}

/// Starts `clients` tasks against `proxy` (replica `replica`), running until `stop`.
pub fn start(
    proxy: &str,
    replica: u8,
    clients: usize,
    counts: &Arc<Counts>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(clients)
        .build_http();
    (0..clients)
        .map(|n| {
            let (client, counts, stop) = (client.clone(), Arc::clone(counts), Arc::clone(stop));
            let uri = format!("{proxy}/api/v1.3/getReservations");
            tokio::spawn(async move {
                let mut i = n;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let property = 1000 + i % PROPERTIES;
                    let request = Request::get(&uri)
                        .header("x-property-id", property.to_string())
                        .header("x-bench-replica", replica.to_string())
                        .body(Empty::new())
                        .unwrap();
                    match client.request(request).await {
                        Ok(answer) => {
                            let status = answer.status().as_u16();
                            let from_upstream = answer.headers().contains_key("x-bench-upstream");
                            let _ = answer.into_body().collect().await;
                            let kind = match (status, from_upstream) {
                                (200, _) => &counts.ok,
                                (429, true) => &counts.upstream_429,
                                (429, false) => &counts.bearerd_429,
                                _ => &counts.other,
                            };
                            kind.fetch_add(1, Ordering::Relaxed);
                            if status == 429 && !from_upstream {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }
                        Err(_) => {
                            counts.other.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            })
        })
        .collect()
}
