//! End to end on loopback, in one process: a keep-alive HTTP/1.1 client -> bearerd -> a
//! small-JSON upstream, against the same client straight to the upstream.
//!
//! - `bearerd`: everything on this bench's one thread, so the time is the CPU cost of a
//!   proxied round trip (user and kernel), free of cross-thread wake-ups;
//! - `bearerd_worker`: the proxy on a worker thread as `bearerd run` serves it, so each hop
//!   is also a thread wake-up (on a VM that wake-up latency dominates `sequential`).
//!
//! `sequential` is one request at a time (latency); `concurrent_32` is time per request
//! with 32 connections busy (inverse throughput).
//!
//! `cargo bench --bench loopback`

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bearerd::serve::Workers;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const PATH: &str = "/v1/items/42?fields=all";

async fn connect(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    sender
}

/// `count` requests one after another on `sender`; every answer must be a 200.
async fn requests(sender: &mut SendRequest<Empty<Bytes>>, addr: SocketAddr, count: u64) {
    for _ in 0..count {
        sender.ready().await.unwrap();
        // The app's own placeholder token: bearerd replaces it, the upstream accepts it.
        let request = Request::get(PATH)
            .header("host", addr.to_string())
            .header("authorization", "Bearer tok-1")
            .body(Empty::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
    }
}

/// Time for `iters` requests spread over `connections` connections.
async fn run(addr: SocketAddr, connections: u64, iters: u64) -> Duration {
    let mut senders = Vec::new();
    for _ in 0..connections {
        senders.push(connect(addr).await);
    }
    let started = Instant::now();
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            let count = iters.div_ceil(connections);
            tokio::spawn(async move { requests(&mut sender, addr, count).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed()
}

fn loopback(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let workers = Workers::start(1).unwrap();
    let (_apps, targets) = runtime.block_on(async {
        let tokens = support::TokenEndpoint::start(Duration::ZERO, Some(3600)).await;
        let upstream = support::upstream(support::Gate::default()).await;
        let here = support::bearerd(&tokens, upstream, None).await;
        let worker = support::bearerd(&tokens, upstream, Some(&workers)).await;
        let targets = [
            ("direct", upstream),
            ("bearerd", here.proxy_addr("bench").unwrap()),
            ("bearerd_worker", worker.proxy_addr("bench").unwrap()),
        ];
        ((here, worker), targets)
    });

    let mut group = c.benchmark_group("loopback");
    for (name, addr) in targets {
        group.bench_function(format!("sequential/{name}"), |b| {
            b.to_async(&runtime)
                .iter_custom(|iters| run(addr, 1, iters))
        });
        group.bench_function(format!("concurrent_32/{name}"), |b| {
            b.to_async(&runtime)
                .iter_custom(|iters| run(addr, 32, iters))
        });
    }
    group.finish();
}

criterion_group!(benches, loopback);
criterion_main!(benches);
