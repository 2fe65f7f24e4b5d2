//! What the tests of apps (SPEC section 9) share: a Cloudbeds app `hotel` routed by
//! `X-Property-ID`, installing a hotel through the install URL, and requests naming a tenant
//! on either request path.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;

use super::connect_rig::{Options, Rig, admin_get, callback_path, rig_with};
use super::{Bearerd, TestResponse, send};

pub const HEADER_APP: &str = "tenants = \"header:X-Property-ID\"";

/// A Cloudbeds app `hotel` routed by `X-Property-ID`, with `grant` (empty:
/// `authorization_code`) and `extra` config lines.
pub async fn cloudbeds_app(grant: &str, extra: &str) -> Rig {
    rig_with(Options {
        provider: "cloudbeds",
        cloudbeds: true,
        no_revoke_url: true,
        extra: &format!("{HEADER_APP}\n{extra}"),
        grant,
        ..Options::default()
    })
    .await
}

/// Install as `user` (whose grants cover `properties`) through the install URL; returns the
/// callback's answer.
pub async fn install(rig: &Rig, user: &str, properties: &[&str], query: &str) -> TestResponse {
    rig.tokens.add_user(user, "pw");
    rig.tokens.set_properties(user, properties);
    let start = admin_get(rig, &format!("/connections/hotel/install{query}")).await;
    assert_eq!(start.status, StatusCode::FOUND, "{}", start.text());
    let authorize = start.header("location").unwrap();
    let back = rig.tokens.authorize_headless(user, &authorize).await;
    admin_get(rig, &callback_path(&back)).await
}

/// `GET path` on the app's proxy with `headers` (the fast path).
pub async fn proxied(rig: &Rig, path: &str, headers: &[(&str, &str)]) -> TestResponse {
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(format!("{}{path}", rig.bearerd.proxy("hotel")));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    send(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap()
}

/// A POST with a chunked body: the fast path hands it to hyper, so this is hyper's routing.
pub async fn proxied_chunked(rig: &Rig, path: &str, property: &str) -> TestResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = rig.bearerd.proxy("hotel").replace("http://", "");
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nX-Property-ID: {property}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head[9..12].parse().unwrap();
    // The upstream's answer is sent with a length (whole JSON); ours too.
    TestResponse {
        status: StatusCode::from_u16(status).unwrap(),
        version: http::Version::HTTP_11,
        headers: Default::default(),
        body: Bytes::from(body.to_owned()),
    }
}

/// The first 200 that `bearerd` answers for `property` (waiting up to 10 s for it to route).
pub async fn routed_by(bearerd: &Bearerd, property: &str) -> TestResponse {
    let what = format!("{} routes {property}", bearerd.admin);
    super::eventually(Duration::from_secs(10), &what, || {
        let url = format!("{}/x", bearerd.proxy("hotel"));
        async move {
            let request = Request::get(url)
                .header("x-property-id", property)
                .body(Full::new(Bytes::new()))
                .unwrap();
            let answer = send(request).await.ok()?;
            (answer.status == StatusCode::OK).then_some(answer)
        }
    })
    .await
}

/// The user of the credential the upstream saw (its echo's `"user"`).
pub fn user_of(answer: &TestResponse) -> String {
    answer.json()["user"].as_str().unwrap_or("").to_owned()
}

/// Stops the rig's bearerd and starts it again on the same config and store.
pub async fn restart(rig: Rig) -> Rig {
    let Rig {
        tokens,
        upstream,
        dir,
        bearerd,
        config,
    } = rig;
    bearerd.app.shutdown().await;
    let bearerd = Bearerd::start(&config).await;
    Rig {
        tokens,
        upstream,
        dir,
        bearerd,
        config,
    }
}

/// `POST path` on the rig's admin listener, as the admin API is called (JSON, no body).
pub async fn post(rig: &Rig, path: &str) -> TestResponse {
    super::connect_rig::admin_post(rig, path, &[("content-type", "application/json")], "").await
}
