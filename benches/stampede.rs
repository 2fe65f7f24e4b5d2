//! Stampede: 10,000 concurrent requests arrive with a token the provider no longer accepts
//! (it expired there first). Each gets a 401 for the same generation, asks for a newer one
//! and waits; the refresher makes exactly one token request (latency `TOKEN_MS`) and every
//! request is replayed. Prints token requests (must be 1), failures (must be 0) and the time
//! until all are answered, against the same burst with a valid token; then the request
//! path's wait alone: 10,000 concurrent [`Connection::newer_than`] callers.
//!
//! Clients speak h2c (50 connections x 200 streams); the upstream runs in a child process
//! (this binary again) so neither process needs more than ~10,000 descriptors.
//!
//! `cargo bench --bench stampede` (env: `STAMPEDE_REQUESTS`, `STAMPEDE_TOKEN_MS`, `STAMPEDE_ROUNDS`)
//!
//! [`Connection::newer_than`]: bearerd::token::Connection::newer_than

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bearerd::serve::Workers;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

const ROLE: &str = "BEARERD_BENCH_ROLE";
const CONNECTIONS: usize = 50;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    if std::env::var(ROLE).as_deref() == Ok("upstream") {
        // The child: serve until the parent closes our stdin.
        runtime.block_on(async {
            let addr = support::upstream(support::Gate::default()).await;
            println!("{addr}");
            let _ = tokio::task::spawn_blocking(|| std::io::stdin().lines().count()).await;
        });
        return;
    }
    let requests = env("STAMPEDE_REQUESTS", 10_000) as usize;
    let latency = Duration::from_millis(env("STAMPEDE_TOKEN_MS", 200));
    let rounds = env("STAMPEDE_ROUNDS", 3);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE, "upstream")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let upstream: SocketAddr = line.trim().parse().unwrap();
    let workers =
        Workers::start(std::thread::available_parallelism().map_or(1, |n| n.get())).unwrap();
    runtime.block_on(measure(upstream, &workers, requests, latency, rounds));
    drop(child.stdin.take());
    let _ = child.wait();
}

async fn measure(
    upstream: SocketAddr,
    workers: &Workers,
    requests: usize,
    latency: Duration,
    rounds: u64,
) {
    let tokens = support::TokenEndpoint::start(latency, Some(3600)).await;
    let app = support::bearerd(&tokens, upstream, Some(workers)).await;
    let proxy = app.proxy_addr("bench").unwrap();
    let connection = app.connection("bench").unwrap();
    let mut senders = Vec::new();
    for _ in 0..CONNECTIONS {
        let stream = TcpStream::connect(proxy).await.unwrap();
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        senders.push(sender);
    }
    println!(
        "stampede: {requests} concurrent requests (h2c, {CONNECTIONS} connections), token endpoint latency {latency:?}"
    );
    // The first burst opens the upstream connections; not reported.
    burst(&senders, proxy, requests).await;
    for round in 1..=rounds {
        let (warm, warm_failed) = burst(&senders, proxy, requests).await;
        let before = tokens.requests();
        // The provider now rejects every token issued so far.
        reject_below(upstream, before + 1).await;
        let (stampede, failed) = burst(&senders, proxy, requests).await;
        let token_requests = tokens.requests() - before;
        println!(
            "round {round}: valid token {:.1} ms ({warm_failed} failed); expired at the provider {:.1} ms, \
             {failed} failed, {token_requests} token request(s); added {:.1} ms = token latency + {:.1} ms",
            ms(warm),
            ms(stampede),
            ms(stampede.saturating_sub(warm)),
            ms(stampede.saturating_sub(warm)) - ms(latency),
        );
    }
    for round in 1..=rounds {
        let before = tokens.requests();
        let failed_generation = connection.generation();
        let started = Instant::now();
        let waiters: Vec<_> = (0..requests)
            .map(|_| {
                let connection = connection.clone();
                tokio::spawn(async move { connection.newer_than(failed_generation, true).await })
            })
            .collect();
        let mut failed = 0;
        for waiter in waiters {
            if !matches!(waiter.await, Ok(Ok(_))) {
                failed += 1;
            }
        }
        let elapsed = started.elapsed();
        println!(
            "wait round {round}: {requests} concurrent newer_than callers all served in {:.1} ms = token latency + {:.1} ms; \
             {failed} failed, {} token request(s)",
            ms(elapsed),
            ms(elapsed) - ms(latency),
            tokens.requests() - before,
        );
    }
    app.shutdown().await;
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `count` concurrent GETs spread over `senders`; (time until all answered, non-200s).
async fn burst(
    senders: &[http2::SendRequest<Empty<Bytes>>],
    proxy: SocketAddr,
    count: usize,
) -> (Duration, usize) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let mut sender = senders[i % senders.len()].clone();
            let request = Request::get(format!("http://{proxy}/v1/items/{i}"))
                .body(Empty::new())
                .unwrap();
            tokio::spawn(async move {
                match sender.send_request(request).await {
                    Ok(response) => {
                        let ok = response.status() == 200;
                        ok && response.into_body().collect().await.is_ok()
                    }
                    Err(_) => false,
                }
            })
        })
        .collect();
    let mut failed = 0;
    for task in tasks {
        if !task.await.unwrap_or(false) {
            failed += 1;
        }
    }
    (started.elapsed(), failed)
}

/// Tells the upstream to reject tokens numbered below `n`.
async fn reject_below(upstream: SocketAddr, n: u64) {
    let stream = TcpStream::connect(upstream).await.unwrap();
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let request = Request::post(format!("/__reject-below/{n}"))
        .header("host", upstream.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
}
