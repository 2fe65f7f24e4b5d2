//! Notifications (SPEC section 12) end to end: bearerd in-process with `[notify]`, a grant the
//! provider revokes, and a receiver that checks every Standard Webhooks signature itself,
//! fails the first attempts, is down across a bearerd restart, and sees two replicas on one
//! store. Each event arrives once, signed, with no token in it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use sha2::Sha256;
use support::{Bearerd, TempDir, TokenServer, TokenServerConfig, Upstream, eventually};

/// 32 bytes, base64: a Standard Webhooks secret.
const SECRET: &str = "whsec_c2VjcmV0LWtleS1mb3ItdGhlLW5vdGlmeS10ZXN0cw==";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    signed: bool,
    body: Value,
}

/// A webhook receiver on 127.0.0.1: records every request, answers 503 to the first
/// `fail_first`, 204 after.
#[derive(Clone)]
struct Receiver {
    seen: Arc<Mutex<Vec<Delivery>>>,
    fail_first: usize,
}

impl Receiver {
    async fn start_on(addr: SocketAddr, fail_first: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let receiver = Receiver {
            seen: Arc::default(),
            fail_first,
        };
        let r = receiver.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let r = r.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let r = r.clone();
                        async move { Ok::<_, hyper::Error>(r.handle(request).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        receiver
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let (id, timestamp, signature) = (
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
        );
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body).into_owned();
        let delivery = Delivery {
            signed: verify(&id, &timestamp, &text, &signature),
            id,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        };
        let mut seen = self.seen.lock().unwrap();
        seen.push(delivery);
        let status = if seen.len() <= self.fail_first {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::NO_CONTENT
        };
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    fn seen(&self) -> Vec<Delivery> {
        self.seen.lock().unwrap().clone()
    }

    /// Deliveries that were answered 2xx.
    fn accepted(&self) -> Vec<Delivery> {
        self.seen().into_iter().skip(self.fail_first).collect()
    }
}

/// The receiver's own check, as the Standard Webhooks libraries do it.
fn verify(id: &str, timestamp: &str, body: &str, signature: &str) -> bool {
    let key = STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    let fresh = timestamp.parse::<u64>().is_ok_and(|t| {
        t.abs_diff(bearerd::notify::unix_ms(std::time::SystemTime::now()) / 1000) < 300
    });
    fresh && signature.split(' ').any(|s| s == expected)
}

fn config(
    tokens: &TokenServer,
    upstream: &Upstream,
    dir: &std::path::Path,
    receiver: SocketAddr,
) -> String {
    format!(
        "{}\n[notify]\nurl = \"http://{receiver}/hooks/bearerd\"\nsecret = \"{SECRET}\"\n",
        support::ac_config("hotel", "oauth2", tokens, &upstream.url(), dir, "")
    )
}

async fn wait_connected(bearerd: &Bearerd) {
    eventually(Duration::from_secs(10), "hotel connected", || async {
        let r = support::get(&format!("{}/connections/hotel", bearerd.admin), None)
            .await
            .ok()?;
        (r.json()["state"] == "connected").then_some(())
    })
    .await;
}

/// The grant dies at the provider; bearerd finds out on a forced refresh.
async fn revoke_and_refresh(tokens: &TokenServer, bearerd: &Bearerd) {
    wait_connected(bearerd).await;
    tokens.disconnect();
    let r = support::send(
        Request::post(format!("{}/connections/hotel/refresh", bearerd.admin))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.json()["state"], "needs_authorization");
}

fn assert_event(delivery: &Delivery, tokens: &TokenServer, admin_public: &str) {
    assert!(delivery.signed, "the signature verifies: {delivery:?}");
    assert!(delivery.id.starts_with("evt_"), "{delivery:?}");
    let body = &delivery.body;
    assert_eq!(body["type"], "needs_authorization");
    assert_eq!(body["connection"], "hotel");
    assert_eq!(body["state"], "needs_authorization");
    assert!(body["tenant"].is_null());
    assert_eq!(
        body["reconnect_url"],
        format!("{admin_public}/connections/hotel/connect")
    );
    assert!(humantime::parse_rfc3339(body["at"].as_str().unwrap()).is_ok());
    let text = body.to_string();
    for secret in tokens.issued_secrets() {
        assert!(!text.contains(&secret), "no token or secret in the event");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_grant_is_announced_signed_and_retried_until_accepted() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    let dir = TempDir::new("notify-retry");
    support::seed_store(dir.path(), "hotel", &tokens.seed_grant()).await;
    let receiver_addr: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    // The first two attempts fail.
    let receiver = Receiver::start_on(receiver_addr, 2).await;
    let bearerd = Bearerd::start(&config(&tokens, &upstream, dir.path(), receiver_addr)).await;
    revoke_and_refresh(&tokens, &bearerd).await;

    let accepted = eventually(Duration::from_secs(20), "the event accepted", || {
        let accepted = receiver.accepted();
        async move { (!accepted.is_empty()).then_some(accepted) }
    })
    .await;
    let seen = receiver.seen();
    assert_eq!(seen.len(), 3, "two failures, then accepted: {seen:?}");
    assert!(
        seen.iter().all(|d| d.id == accepted[0].id && d.signed),
        "the same webhook-id on every attempt, each signed"
    );
    assert_event(&accepted[0], &tokens, "http://127.0.0.1:9901");
    bearerd.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_survives_a_restart_while_the_receiver_is_down() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    let dir = TempDir::new("notify-restart");
    support::seed_store(dir.path(), "hotel", &tokens.seed_grant()).await;
    let receiver_addr: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let text = config(&tokens, &upstream, dir.path(), receiver_addr);
    let first = Bearerd::start(&text).await;
    revoke_and_refresh(&tokens, &first).await;
    // The event is stored and its first attempt fails: nothing listens yet.
    let outbox = dir.path().join("outbox");
    eventually(
        Duration::from_secs(10),
        "an attempt recorded in the outbox",
        || {
            let attempted = std::fs::read_dir(&outbox).ok().is_some_and(|entries| {
                entries.flatten().any(|e| {
                    std::fs::read_to_string(e.path())
                        .ok()
                        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                        .is_some_and(|v| v["attempts"].as_u64() >= Some(1))
                })
            });
            async move { attempted.then_some(()) }
        },
    )
    .await;
    first.app.shutdown().await;

    // The receiver comes up; a new bearerd on the same store delivers the stored event.
    let receiver = Receiver::start_on(receiver_addr, 0).await;
    let second = Bearerd::start(&text).await;
    let accepted = eventually(
        Duration::from_secs(20),
        "the stored event delivered",
        || {
            let accepted = receiver.accepted();
            async move { (!accepted.is_empty()).then_some(accepted) }
        },
    )
    .await;
    assert_event(&accepted[0], &tokens, "http://127.0.0.1:9901");
    // The restarted bearerd starts in needs_authorization: that is not a second event.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.seen().len(), 1, "{:?}", receiver.seen());
    second.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_on_one_store_send_an_event_once() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    let dir = TempDir::new("notify-replicas");
    support::seed_store(dir.path(), "hotel", &tokens.seed_grant()).await;
    let receiver_addr: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let receiver = Receiver::start_on(receiver_addr, 0).await;
    let text = config(&tokens, &upstream, dir.path(), receiver_addr);
    let (a, b) = (Bearerd::start(&text).await, Bearerd::start(&text).await);
    wait_connected(&b).await;
    revoke_and_refresh(&tokens, &a).await;
    // The other process finds out too, from its next request (a 401, then the store's
    // record or the provider's answer), and so sees the same change.
    let r = support::get(&format!("{}/v1/x", b.proxy("hotel")), None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    eventually(
        Duration::from_secs(15),
        "both processes see needs_authorization",
        || async {
            let r = support::get(&format!("{}/connections/hotel", b.admin), None)
                .await
                .ok()?;
            (r.json()["state"] == "needs_authorization").then_some(())
        },
    )
    .await;
    eventually(Duration::from_secs(15), "the event delivered", || {
        let n = receiver.accepted().len();
        async move { (n >= 1).then_some(()) }
    })
    .await;
    // Both watchers sample once a second and deliver at once: give them that long.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = receiver.seen();
    assert_eq!(seen.len(), 1, "one delivery for one change: {seen:?}");
    assert_event(&seen[0], &tokens, "http://127.0.0.1:9901");
    a.app.shutdown().await;
    b.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_whose_grant_dies_is_announced_with_its_own_reconnect_url() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    let dir = TempDir::new("notify-tenant");
    // Two tenants of app `hotel`, as installs would have stored them.
    support::seed_store(dir.path(), "hotel/1001", &tokens.seed_grant()).await;
    support::seed_store(dir.path(), "hotel/1002", &tokens.seed_grant()).await;
    let receiver_addr: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let receiver = Receiver::start_on(receiver_addr, 0).await;
    let text = config(&tokens, &upstream, dir.path(), receiver_addr).replace(
        "client_secret = ",
        "tenants = \"header:X-Property-ID\"\nclient_secret = ",
    );
    let bearerd = Bearerd::start(&text).await;
    let tenant = |id: &'static str| {
        let url = format!("{}/connections/hotel/tenants/{id}", bearerd.admin);
        async move { support::get(&url, None).await.unwrap().json() }
    };
    eventually(
        Duration::from_secs(10),
        "both tenants connected",
        || async {
            (tenant("1001").await["state"] == "connected"
                && tenant("1002").await["state"] == "connected")
                .then_some(())
        },
    )
    .await;
    // One hotel's grant dies at the provider; a forced refresh finds out.
    tokens.disconnect();
    let r = support::send(
        Request::post(format!(
            "{}/connections/hotel/tenants/1001/refresh",
            bearerd.admin
        ))
        .body(Full::new(Bytes::new()))
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.json()["state"], "needs_authorization", "{}", r.text());
    let accepted = eventually(Duration::from_secs(20), "the tenant's event", || {
        let accepted = receiver.accepted();
        async move { (!accepted.is_empty()).then_some(accepted) }
    })
    .await;
    let body = &accepted[0].body;
    assert!(accepted[0].signed);
    assert_eq!(body["type"], "needs_authorization");
    assert_eq!(body["connection"], "hotel");
    assert_eq!(body["tenant"], "1001");
    assert_eq!(
        body["reconnect_url"],
        "http://127.0.0.1:9901/connections/hotel/tenants/1001/connect"
    );
    bearerd.app.shutdown().await;
}
