//! The load: keep-alive clients on every replica, each request for another tenant
//! (`X-Tenant: tN`, stepping through all of them in a different order per client), sent
//! again as soon as it is answered, until told to stop. Answers are counted by status;
//! the first few failures are kept with their bodies.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[derive(Default)]
pub struct Counts {
    pub ok: AtomicU64,
    /// Not 200 (status, or 0 for a connection error), with the first few answers.
    pub failed: AtomicU64,
    pub failures: Mutex<Vec<String>>,
}

impl Counts {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.failures.lock().unwrap();
        if kept.len() < 10 {
            kept.push(what);
        }
    }
}

/// Starts `clients` tasks against `proxy` (replica `replica`) over `tenants` tenants.
pub fn start(
    proxy: &str,
    replica: u8,
    clients: usize,
    tenants: usize,
    counts: &Arc<Counts>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(clients)
        .build_http();
    (0..clients)
        .map(|n| {
            let (client, counts, stop) = (client.clone(), Arc::clone(counts), Arc::clone(stop));
            let uri = format!("{proxy}/api/v1/reservations");
            // A stride prime to any tenant count this bench uses, a start of its own.
            let mut i = (n * 7919 + usize::from(replica) * 104_729) % tenants;
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    i = (i + 7) % tenants;
                    let tenant = format!("t{i}");
                    let request = Request::get(&uri)
                        .header("x-tenant", &tenant)
                        .body(Empty::new())
                        .unwrap();
                    match client.request(request).await {
                        Ok(answer) => {
                            let status = answer.status();
                            let body = answer.into_body().collect().await;
                            if status == 200 {
                                counts.ok.fetch_add(1, Ordering::Relaxed);
                            } else {
                                let body = body.map(|b| b.to_bytes()).unwrap_or_default();
                                counts.fail(format!(
                                    "replica {replica} {tenant}: {status} {}",
                                    String::from_utf8_lossy(&body)
                                ));
                            }
                        }
                        Err(e) => counts.fail(format!("replica {replica} {tenant}: {e}")),
                    }
                }
            })
        })
        .collect()
}
