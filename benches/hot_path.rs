//! The per-request hot path in ns: the token cell read ([`Connection::token`], lock-free when
//! the token is usable), the upstream URI ([`Target::uri`]) and the in-place head rewrite with
//! header injection ([`bearerd::proxy::prepare`]), as [`bearerd::proxy::Proxy`] runs them;
//! and the HTTP/1.1 fast path's equivalents ([`bearerd::proxy::h1`]): request head parse and
//! rewrite with the token, answer head parse and rewrite.
//!
//! `cargo bench --bench hot_path`

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bearerd::proxy::h1::{request, response};
use bearerd::proxy::{insert_credential, prepare};
use bearerd::token::{Connection, Token};
use bearerd::upstream::Target;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::request::Parts;
use http::{Method, Request};

/// The head of a typical API call from an app (its own `Authorization` is replaced).
fn app_request() -> Parts {
    Request::builder()
        .method(Method::GET)
        .uri("/v1/items/42?fields=all")
        .header("host", "127.0.0.1:8081")
        .header("user-agent", "legacy-app/1.0")
        .header("accept", "application/json")
        .header("authorization", "Bearer app-placeholder")
        .header("connection", "keep-alive")
        .header("x-request-id", "6f1c2a9e-1d2b-4c1a-9a53-0c2d1f4b7e11")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

/// [`app_request`] as it arrives on the wire.
const APP_HEAD: &str = "GET /v1/items/42?fields=all HTTP/1.1\r\nHost: 127.0.0.1:8081\r\n\
    User-Agent: legacy-app/1.0\r\nAccept: application/json\r\nAuthorization: Bearer app-placeholder\r\n\
    Connection: keep-alive\r\nX-Request-Id: 6f1c2a9e-1d2b-4c1a-9a53-0c2d1f4b7e11\r\n\r\n";

/// A small-JSON answer head as nginx sends it.
const UPSTREAM_HEAD: &str = "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\
    Date: Mon, 23 Nov 2026 02:33:50 GMT\r\nContent-Type: application/json\r\n\
    Content-Length: 54\r\nConnection: keep-alive\r\n\r\n";

/// `Connection::token` when the token is usable: one poll, no await point reached.
fn token_now(connection: &Connection) -> Token {
    let mut future = pin!(connection.token());
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(token) => token.expect("a usable token"),
        Poll::Pending => panic!("the token is not usable"),
    }
}

fn hot_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_app, connection, upstream) = runtime.block_on(async {
        let tokens = support::TokenEndpoint::start(Duration::ZERO, Some(3600)).await;
        let upstream = support::upstream(support::Gate::default()).await;
        let app = support::bearerd(&tokens, upstream, None).await;
        let connection = app.connection("bench").unwrap();
        (app, connection, upstream)
    });
    let url = url::Url::parse(&format!("http://{upstream}")).unwrap();
    let target = Target::new(&url).unwrap();
    let based = Target::new(&url.join("/api/").unwrap()).unwrap();

    let mut group = c.benchmark_group("hot_path");
    group.bench_function("token", |b| b.iter(|| black_box(token_now(&connection))));
    group.bench_function("uri", |b| {
        let parts = app_request();
        b.iter(|| black_box(target.uri(parts.uri.path_and_query()).unwrap()))
    });
    group.bench_function("uri_with_base_path", |b| {
        let parts = app_request();
        b.iter(|| black_box(based.uri(parts.uri.path_and_query()).unwrap()))
    });
    group.bench_function("token_uri_prepare", |b| {
        b.iter_batched(
            app_request,
            |mut parts| {
                let uri = target.uri(parts.uri.path_and_query()).unwrap();
                let token = token_now(&connection);
                prepare(&mut parts, uri, target.host());
                insert_credential(&mut parts.headers, &token);
                parts
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("replay_copy", |b| {
        let mut parts = app_request();
        let uri = target.uri(None).unwrap();
        prepare(&mut parts, uri, target.host());
        insert_credential(&mut parts.headers, &token_now(&connection));
        b.iter(|| {
            black_box((
                parts.method.clone(),
                parts.uri.clone(),
                parts.headers.clone(),
            ))
        })
    });
    group.bench_function("fast_path_request_head", |b| {
        let raw = APP_HEAD.as_bytes();
        let rewrite = request::Rewrite {
            base_path: target.base_path(),
            host: target.host().unwrap().as_bytes(),
            tenant: request::TenantKey::None,
        };
        let mut head = request::UpstreamHead::default();
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            let parsed = request::parse(
                black_box(raw),
                request::BodyLimit(1 << 20),
                &rewrite,
                &mut head,
            );
            assert!(matches!(parsed, request::Parsed::Fast(_)));
            out.clear();
            head.write(&token_now(&connection).header, &mut out);
            black_box(out.len())
        })
    });
    group.bench_function("fast_path_answer_head", |b| {
        let raw = UPSTREAM_HEAD.as_bytes();
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            out.clear();
            black_box(response::parse(black_box(raw), false, &mut out).unwrap())
        })
    });
    group.finish();
    drop(runtime);
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
