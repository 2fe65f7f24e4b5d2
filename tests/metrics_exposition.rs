//! The admin listener's answers (SPEC sections 7 and 8): `/metrics` after real traffic (every
//! metric name, the expected label values, accepted by `promtool check metrics` when it is
//! installed), `/healthz`, `/readyz`, `/connections`, and never a token in any of them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use support::{
    Bearerd, Failure, TestResponse, TokenServer, TokenServerConfig, Upstream, cc_config, dead_url,
    eventually, get, send,
};

/// SPEC sections 8 and 11: every metric and its type.
const METRICS: [(&str, &str); 15] = [
    ("bearerd_requests_total", "counter"),
    ("bearerd_request_duration_seconds", "histogram"),
    ("bearerd_upstream_unauthorized_total", "counter"),
    ("bearerd_replays_total", "counter"),
    ("bearerd_token_refreshes_total", "counter"),
    ("bearerd_token_refresh_duration_seconds", "histogram"),
    ("bearerd_token_refresh_waiters_total", "counter"),
    ("bearerd_token_expiry_timestamp_seconds", "gauge"),
    ("bearerd_token_generation", "gauge"),
    ("bearerd_connection_state", "gauge"),
    ("bearerd_store_operations_total", "counter"),
    ("bearerd_build_info", "gauge"),
    ("bearerd_rate_limited_total", "counter"),
    ("bearerd_rate_limit_wait_seconds", "histogram"),
    ("bearerd_upstream_throttled_total", "counter"),
];

const STATES: [&str; 7] = [
    "connected",
    "refreshing",
    "degraded",
    "authorizing",
    "needs_authorization",
    "disconnected",
    "misconfigured",
];

/// A `[[connection]]` table for a client_credentials connection.
fn connection_toml(name: &str, tokens: &TokenServer, upstream: &str, secret: &str) -> String {
    format!(
        r#"
[[connection]]
name = "{name}"
provider = "oauth2"
listen = "127.0.0.1:0"
upstream = "{upstream}"
grant = "client_credentials"
token_url = "{token_url}"
client_id = "{client_id}"
client_secret = {secret}
"#,
        token_url = tokens.token_url(),
        client_id = tokens.client_id(),
    )
}

fn post(url: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::POST)
        .uri(url)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Every sample line of the exposition as (series, value).
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The value of one exact series (labels in the exposition's alphabetical order).
fn value(text: &str, series: &str) -> f64 {
    samples(text)
        .into_iter()
        .find(|(s, _)| s == series)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no series `{series}` in /metrics:\n{text}"))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Pipes the exposition into `promtool check metrics` if promtool is installed.
fn promtool_check(exposition: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "\n==============================================================\n\
                 WARNING: promtool is not on PATH: `promtool check metrics` was SKIPPED.\n\
                 Install it (apt-get install prometheus) to check the exposition.\n\
                 ==============================================================\n"
            );
            return;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\nexposition:\n{exposition}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bearerd after traffic: `api` (client_credentials, token-checking upstream) answered 2xx,
/// 3xx and 4xx and a 401 by refresh-and-replay, then an operator's refresh; `down` (upstream
/// unreachable) answered 502; `hotel` (refresh-token grant from a file store) answered 2xx.
async fn after_traffic() -> (TokenServer, Bearerd, support::TempDir) {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    let store = support::TempDir::new("metrics-store");
    support::seed_store(store.path(), "hotel", &tokens.seed_grant()).await;
    let secret = format!("\"{}\"", tokens.client_secret());
    let hotel = connection_toml("hotel", &tokens, &upstream.url(), &secret).replace(
        "grant = \"client_credentials\"",
        &format!(
            "grant = \"authorization_code\"\nauthorize_url = \"{}/authorize\"",
            tokens.base_url()
        ),
    );
    let config = format!(
        "{}{}{hotel}\n[store]\nkind = \"file\"\ndir = \"{}\"\n",
        cc_config("api", &tokens, &upstream, ""),
        connection_toml("down", &tokens, &dead_url(), &secret),
        store.path().display()
    );
    let bearerd = Bearerd::start(&config).await;
    // `hotel` and `down` first, so no startup refresh can still be running when the access
    // tokens are killed below. (`hotel` reads its grant from the store after start; until
    // then it would answer 503: see proxy_forwarding.rs, a_stored_grant_is_served_right_after_start.)
    let admin = bearerd.admin.clone();
    eventually(Duration::from_secs(10), "hotel connected", || {
        let url = format!("{admin}/connections/hotel");
        async move {
            let c = get(&url, None).await.ok()?.json();
            (c["state"] == "connected").then_some(())
        }
    })
    .await;
    let r = get(&format!("{}/x", bearerd.proxy("hotel")), None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = get(&format!("{}/x", bearerd.proxy("down")), None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());

    let api = bearerd.proxy("api");
    for path in ["/ok/1", "/ok/2", "/ok/3"] {
        let r = get(&format!("{api}{path}"), None).await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let r = get(&format!("{api}/status/302"), None).await.unwrap();
    assert_eq!(r.status, StatusCode::FOUND);
    let r = get(&format!("{api}/status/404"), None).await.unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    tokens.kill_all_access_tokens();
    let r = get(&format!("{api}/after-401"), None).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "replayed: {}", r.text());
    assert_eq!(upstream.unauthorized(), 1);

    let r = send(post(&format!("{}/connections/api/refresh", bearerd.admin)))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    (tokens, bearerd, store)
}

fn assert_every_spec_metric(text: &str) {
    let missing: Vec<&str> = METRICS
        .iter()
        .filter(|(name, kind)| !text.contains(&format!("# TYPE {name} {kind}\n")))
        .map(|(name, _)| *name)
        .collect();
    assert!(
        missing.is_empty(),
        "metrics missing from /metrics (or of the wrong type): {missing:?}\n{text}"
    );
    assert!(
        text.contains(&format!(
            "bearerd_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )),
        "build info names the version"
    );
    for process in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
    ] {
        assert!(
            text.contains(&format!("\n{process} ")),
            "{process} is exposed"
        );
    }
    for (name, _) in METRICS {
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && !l.starts_with('#')),
            "{name} has at least one sample"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_has_every_spec_metric_with_its_type() {
    let (_tokens, bearerd, _store) = after_traffic().await;
    assert_every_spec_metric(&bearerd.metrics().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_has_every_spec_metric_before_any_traffic_or_store_use() {
    // Names are fixed (SPEC section 8): a dashboard or alert must find every family even
    // when no store operation (client_credentials only) or request has happened yet.
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    let bearerd = Bearerd::start(&cc_config("api", &tokens, &upstream, "")).await;
    let r = get(&format!("{}/v1/x", bearerd.proxy("api")), None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_every_spec_metric(&bearerd.metrics().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_the_traffic_with_bounded_labels() {
    let (_tokens, bearerd, _store) = after_traffic().await;
    let text = bearerd.metrics().await;
    let v = |series: &str| value(&text, series);

    assert_eq!(
        v(r#"bearerd_requests_total{code="2xx",connection="api",source="upstream"}"#),
        4.0
    );
    assert_eq!(
        v(r#"bearerd_requests_total{code="3xx",connection="api",source="upstream"}"#),
        1.0
    );
    assert_eq!(
        v(r#"bearerd_requests_total{code="4xx",connection="api",source="upstream"}"#),
        1.0
    );
    for source in ["upstream", "bearerd"] {
        assert_eq!(
            v(&format!(
                r#"bearerd_requests_total{{code="5xx",connection="api",source="{source}"}}"#
            )),
            0.0
        );
    }
    // An unreachable upstream: bearerd's own 502, told apart from an upstream's 5xx.
    assert_eq!(
        v(r#"bearerd_requests_total{code="5xx",connection="down",source="bearerd"}"#),
        1.0
    );
    assert_eq!(
        v(r#"bearerd_requests_total{code="5xx",connection="down",source="upstream"}"#),
        0.0
    );
    assert_eq!(
        v(r#"bearerd_request_duration_seconds_count{connection="api"}"#),
        6.0
    );
    assert_eq!(
        v(r#"bearerd_request_duration_seconds_bucket{connection="api",le="+Inf"}"#),
        6.0
    );
    assert_eq!(
        v(r#"bearerd_upstream_unauthorized_total{connection="api",token="current"}"#),
        1.0
    );
    assert_eq!(
        v(r#"bearerd_upstream_unauthorized_total{connection="api",token="superseded"}"#),
        0.0
    );
    assert_eq!(
        v(r#"bearerd_replays_total{connection="api",outcome="ok"}"#),
        1.0
    );
    assert_eq!(
        v(r#"bearerd_replays_total{connection="api",outcome="unauthorized"}"#),
        0.0
    );
    assert_eq!(
        v(r#"bearerd_replays_total{connection="api",outcome="not_replayable"}"#),
        0.0
    );
    for trigger in ["startup", "unauthorized", "manual"] {
        assert_eq!(
            v(&format!(
                r#"bearerd_token_refreshes_total{{connection="api",result="ok",trigger="{trigger}"}}"#
            )),
            1.0,
            "{trigger}"
        );
    }
    assert_eq!(
        v(r#"bearerd_token_refreshes_total{connection="down",result="ok",trigger="startup"}"#),
        1.0
    );
    assert_eq!(
        v(r#"bearerd_token_refresh_duration_seconds_count{connection="api"}"#),
        3.0
    );
    assert!(v(r#"bearerd_token_refresh_waiters_total{connection="api"}"#) >= 1.0);
    assert_eq!(v(r#"bearerd_token_generation{connection="api"}"#), 3.0);
    assert_eq!(v(r#"bearerd_token_generation{connection="down"}"#), 1.0);
    let expiry = v(r#"bearerd_token_expiry_timestamp_seconds{connection="api"}"#);
    let now = unix_now();
    assert!(
        expiry > now + 3000.0 && expiry < now + 3700.0,
        "expiry is about an hour from now: {expiry} (now {now})"
    );
    for connection in ["api", "down"] {
        for state in STATES {
            let expected = if state == "connected" { 1.0 } else { 0.0 };
            assert_eq!(
                v(&format!(
                    r#"bearerd_connection_state{{connection="{connection}",state="{state}"}}"#
                )),
                expected,
                "{connection} {state}"
            );
        }
    }

    // Bounded labels: `connection` is only ever a configured name, never a path.
    for (series, _) in samples(&text) {
        if let Some(rest) = series.split("connection=\"").nth(1) {
            let name = rest.split('"').next().unwrap_or_default();
            assert!(
                ["api", "down", "hotel"].contains(&name),
                "label connection=\"{name}\""
            );
        }
        for path in ["/ok", "after-401", "/status", "/x"] {
            assert!(!series.contains(path), "a path in a label: {series}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn promtool_accepts_the_exposition() {
    let (_tokens, bearerd, _store) = after_traffic().await;
    let response = get(&format!("{}/metrics", bearerd.admin), None)
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "Prometheus text format: {content_type}"
    );
    promtool_check(&response.text());
}

/// Every admin answer worth reading, with its path.
async fn admin_answers(bearerd: &Bearerd, names: &[&str]) -> Vec<(String, TestResponse)> {
    let mut paths = vec![
        "/".to_owned(),
        "/healthz".to_owned(),
        "/readyz".to_owned(),
        "/metrics".to_owned(),
        "/connections".to_owned(),
    ];
    paths.extend(names.iter().map(|n| format!("/connections/{n}")));
    let mut answers = Vec::new();
    for path in paths {
        let r = get(&format!("{}{path}", bearerd.admin), None)
            .await
            .unwrap();
        answers.push((path, r));
    }
    for name in names {
        let path = format!("/connections/{name}/refresh");
        let r = send(post(&format!("{}{path}", bearerd.admin)))
            .await
            .unwrap();
        answers.push((format!("POST {path}"), r));
    }
    answers
}

fn assert_no_tokens(tokens: &TokenServer, answers: &[(String, TestResponse)]) {
    let secrets = tokens.issued_secrets();
    assert!(secrets.len() >= 2, "some tokens were issued");
    for (path, r) in answers {
        let headers = format!("{:?}", r.headers);
        for secret in &secrets {
            assert!(
                !r.text().contains(secret.as_str()) && !headers.contains(secret.as_str()),
                "{path} shows a token or secret"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_connection_status() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    let bearerd = Bearerd::start(&cc_config("api", &tokens, &upstream, "")).await;
    let admin = bearerd.admin.clone();

    let health = get(&format!("{admin}/healthz"), None).await.unwrap();
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.text().trim(), "ok");

    let ready = eventually(Duration::from_secs(10), "/readyz 200", || {
        let url = format!("{admin}/readyz");
        async move {
            let r = get(&url, None).await.ok()?;
            (r.status == StatusCode::OK).then_some(r)
        }
    })
    .await;
    assert_eq!(ready.json()["ready"], true, "{}", ready.text());

    let all = get(&format!("{admin}/connections"), None).await.unwrap();
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(
        all.header("content-type").as_deref(),
        Some("application/json")
    );
    let list = all.json();
    let list = list.as_array().expect("a JSON array");
    assert_eq!(list.len(), 1);
    let one = get(&format!("{admin}/connections/api"), None)
        .await
        .unwrap();
    assert_eq!(one.status, StatusCode::OK);
    let c = one.json();
    assert_eq!(&list[0]["name"], &c["name"]);
    for field in [
        "name",
        "provider",
        "state",
        "app_state",
        "generation",
        "access_expires_at",
        "last_refresh_at",
        "last_error",
        "refreshes",
    ] {
        assert!(
            c.get(field).is_some(),
            "/connections/api has `{field}`: {c}"
        );
        assert!(list[0].get(field).is_some(), "/connections has `{field}`");
    }
    assert_eq!(c["name"], "api");
    assert_eq!(c["provider"], "oauth2");
    assert_eq!(c["state"], "connected");
    assert_eq!(c["app_state"], "enabled");
    assert_eq!(c["generation"], 1);
    assert_eq!(c["refreshes"], 1);
    assert_eq!(c["last_error"], Value::Null);
    for time in ["access_expires_at", "last_refresh_at"] {
        let text = c[time].as_str().unwrap_or_else(|| panic!("{time}: {c}"));
        assert!(
            humantime::parse_rfc3339(text).is_ok(),
            "{time} is RFC 3339: {text}"
        );
    }

    let nope = get(&format!("{admin}/connections/nope"), None)
        .await
        .unwrap();
    assert_eq!(nope.status, StatusCode::NOT_FOUND);
    let nope = send(post(&format!("{admin}/connections/nope/refresh")))
        .await
        .unwrap();
    assert_eq!(nope.status, StatusCode::NOT_FOUND);

    let r = get(&format!("{}/v1/x", bearerd.proxy("api")), None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let answers = admin_answers(&bearerd, &["api"]).await;
    let refreshed = &answers.last().unwrap().1;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text());
    assert_eq!(refreshed.json()["generation"], 2, "{}", refreshed.text());
    assert_no_tokens(&tokens, &answers);
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_names_the_connections_that_cannot_serve() {
    const UNSET: &str = "BEARERD_TEST_UNSET_SECRET_M3T";
    assert!(std::env::var_os(UNSET).is_none());
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let rejecting = TokenServer::start(TokenServerConfig::default()).await;
    rejecting.script(Failure::InvalidClient);
    let upstream = Upstream::start(tokens.clone()).await;
    let config = format!(
        "{}{}{}",
        cc_config("good", &tokens, &upstream, ""),
        connection_toml(
            "noenv",
            &tokens,
            &upstream.url(),
            &format!("{{ env = \"{UNSET}\" }}")
        ),
        connection_toml(
            "badclient",
            &rejecting,
            &upstream.url(),
            &format!("\"{}\"", rejecting.client_secret())
        ),
    );
    let bearerd = Bearerd::start(&config).await;
    let admin = bearerd.admin.clone();

    // Wait until the token endpoint has answered both token-fetching connections.
    for name in ["good", "badclient"] {
        eventually(
            Duration::from_secs(10),
            &format!("{name} to finish its first refresh"),
            || {
                let url = format!("{admin}/connections/{name}");
                async move {
                    let c = get(&url, None).await.ok()?.json();
                    (c["state"] != "refreshing").then_some(())
                }
            },
        )
        .await;
    }

    let ready = get(&format!("{admin}/readyz"), None).await.unwrap();
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.text()
    );
    assert_eq!(
        ready.header("content-type").as_deref(),
        Some("application/json")
    );
    let body = ready.json();
    let not_ready = body["not_ready"].as_array().expect("not_ready list");
    let mut named: Vec<(String, String)> = not_ready
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                c["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    named.sort();
    assert_eq!(
        named,
        [
            ("badclient".to_owned(), "misconfigured".to_owned()),
            ("noenv".to_owned(), "misconfigured".to_owned())
        ],
        "{body}"
    );
    let noenv = not_ready.iter().find(|c| c["name"] == "noenv").unwrap();
    assert!(
        noenv["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains(UNSET),
        "says which variable is missing: {noenv}"
    );

    let text = bearerd.metrics().await;
    for (name, state) in [
        ("good", "connected"),
        ("noenv", "misconfigured"),
        ("badclient", "misconfigured"),
    ] {
        assert_eq!(
            value(
                &text,
                &format!(r#"bearerd_connection_state{{connection="{name}",state="{state}"}}"#)
            ),
            1.0
        );
    }
    assert_eq!(
        value(
            &text,
            r#"bearerd_token_refreshes_total{connection="badclient",result="misconfigured",trigger="startup"}"#
        ),
        1.0
    );

    let c = get(&format!("{admin}/connections/badclient"), None)
        .await
        .unwrap()
        .json();
    assert_eq!(c["state"], "misconfigured");
    assert_eq!(c["app_state"], "disabled");
    assert!(c["last_error"].is_string(), "{c}");

    let mut answers = admin_answers(&bearerd, &["good", "noenv", "badclient"]).await;
    answers.push((
        "readyz".into(),
        get(&format!("{admin}/readyz"), None).await.unwrap(),
    ));
    assert_no_tokens(&tokens, &answers);
    assert_no_tokens(&rejecting, &answers);
}
