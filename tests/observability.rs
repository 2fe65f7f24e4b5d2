//! Operators' view of bearerd (SPEC section 12): the alert rules in `deploy/prometheus/`, their
//! `PrometheusRule` copy, the Grafana dashboard and the README runbooks they link to.
//!
//! The main test runs a real Prometheus against a running bearerd whose connections are put
//! through the situations the alerts are about (`observability/scenario.rs`), then sends every
//! rule and every dashboard query to Prometheus: each must parse and evaluate, and each that
//! the scenario should produce must return data. `promtool test rules` runs the rules' unit
//! tests. Without the `prometheus` package these tests print SKIPPED (and fail under CI).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[path = "observability/expressions.rs"]
mod expressions;
#[path = "observability/manifests.rs"]
mod manifests;
#[path = "observability/prometheus.rs"]
mod prometheus;
#[path = "observability/scenario.rs"]
mod scenario;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use serde_json::Value;

use expressions::{Query, dashboard_queries, readme_anchors};
use prometheus::{PROMETHEUS, PROMTOOL, Prometheus, repo_file, tool_or_skip};
use scenario::Scenario;

const RULES: &str = "deploy/prometheus/bearerd-rules.yml";
const RULES_TEST: &str = "deploy/prometheus/bearerd-rules.test.yml";
const PROMETHEUS_RULE: &str = "deploy/kubernetes/prometheusrule.yaml";
const DASHBOARD: &str = "deploy/grafana/bearerd.json";

/// Rules and queries that the scenario cannot make return data yet, and why. Everything not
/// listed here (or in the conditional lists below) must return data.
const EXPECTED_EMPTY: &[(&str, &str)] = &[
    (
        "BearerdTenantsNeedAuthorization",
        "bearerd_tenants does not exist yet: tenants (SPEC section 9) are a later issue",
    ),
    (
        "Tenants by state / A",
        "bearerd_tenants does not exist yet: tenants (SPEC section 9) are a later issue",
    ),
];

/// Rules that need a capability bearerd may not have yet, and the series of the exposition
/// that shows it has it (a series containing the text, with a value above zero). With the
/// capability they must return data like the rest; without it they are only parsed and
/// evaluated, and the test says so loudly.
const CONDITIONAL: &[(&str, &str, &str)] = &[
    // SPEC section 8's `source` label of bearerd_requests_total.
    (
        "BearerdUpstreamErrors",
        "bearerd_requests_total{",
        "source=\"upstream\"",
    ),
    (
        "BearerdProxyErrors",
        "bearerd_requests_total{",
        "source=\"bearerd\"",
    ),
    // The upstream's 429 counted (SPEC section 11).
    (
        "BearerdUpstreamThrottled",
        "bearerd_upstream_throttled_total{",
        "connection=\"api\"",
    ),
    // The rate limiter on the request path (SPEC section 11).
    (
        "BearerdRateLimited",
        "bearerd_rate_limited_total{",
        "outcome=\"rejected\"",
    ),
];

/// Alerts whose expression keeps no `connection` label: they name the instance instead.
const PER_INSTANCE: &[&str] = &["BearerdStoreWriteFailing", "BearerdDown"];

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `POST url` with an empty body; the answer is not needed.
pub async fn post(url: String) {
    let request = Request::builder()
        .method(Method::POST)
        .uri(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let _ = support::send(request).await;
}

pub fn read(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_prometheusrule_carries_the_rules_file_unchanged() {
    // Without a YAML parser in the dependencies: the manifest's `spec:` block, de-indented by
    // its two spaces, must be the rules file from `groups:` on, byte for byte.
    let rules = read(RULES);
    let plain = &rules[rules.find("\ngroups:").expect("groups in the rules file") + 1..];
    let manifest = read(PROMETHEUS_RULE);
    let spec = manifest.split_once("\nspec:\n").expect("a spec: block").1;
    let spec: String = spec
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect();
    assert_eq!(spec, plain, "{PROMETHEUS_RULE} differs from {RULES}");
    assert!(manifest.contains("kind: PrometheusRule\n"));
    assert!(manifest.contains("apiVersion: monitoring.coreos.com/v1\n"));
}

#[test]
fn promtool_accepts_the_rules_and_passes_their_unit_tests() {
    if !tool_or_skip(PROMTOOL) {
        return;
    }
    for args in [
        vec!["check", "rules", RULES],
        vec!["test", "rules", RULES_TEST],
    ] {
        let out = Command::new(PROMTOOL)
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_dashboard_is_importable_and_has_the_spec_panels() {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("valid JSON");
    assert_eq!(dashboard["uid"], "bearerd");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let kind_of = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .map(|v| v["type"].clone())
    };
    assert_eq!(kind_of("datasource"), Some(Value::from("datasource")));
    assert_eq!(kind_of("connection"), Some(Value::from("query")));
    let text = read(DASHBOARD);
    assert!(
        !text.contains("\"uid\": \"prometheus\""),
        "no fixed datasource uid: it must come from the variable"
    );
    let queries = dashboard_queries(&dashboard);
    let titles: String = queries.iter().map(|q| q.name.to_lowercase()).collect();
    for needed in [
        "requests",
        "latency",
        "401",
        "replays",
        "refreshes",
        "expires",
        "tenants",
        "rate limit",
    ] {
        assert!(titles.contains(needed), "no panel about {needed}: {titles}");
    }
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{}",
                panel["title"]
            );
        }
    }
}

/// An alert rule as Prometheus loaded it.
struct Rule {
    name: String,
    expr: String,
    rule: Value,
}

async fn loaded_rules(prometheus: &Prometheus) -> Vec<Rule> {
    let data = prometheus.api("rules", &[]).await;
    let groups = data["groups"].as_array().cloned().unwrap_or_default();
    groups
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .map(|rule| Rule {
            name: rule["name"].as_str().unwrap_or_default().to_owned(),
            expr: rule["query"].as_str().unwrap_or_default().to_owned(),
            rule,
        })
        .collect()
}

fn check_rule_metadata(rules: &[Rule]) {
    let declared = read(RULES).matches("- alert: ").count();
    assert_eq!(rules.len(), declared, "Prometheus loaded every alert");
    let anchors = readme_anchors(&read("README.md"));
    for Rule { name, rule, .. } in rules {
        assert_eq!(rule["type"], "alerting", "{name}");
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning"].contains(&severity),
            "{name}: {severity}"
        );
        let text = |key: &str| {
            rule["annotations"][key]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        let names = if PER_INSTANCE.contains(&name.as_str()) {
            "{{ $labels.instance }}"
        } else {
            "{{ $labels.connection }}"
        };
        for key in ["summary", "description"] {
            assert!(text(key).contains(names), "{name}: {key} names {names}");
        }
        let runbook = text("runbook_url");
        let anchor = runbook
            .strip_prefix("https://github.com/bearerd/bearerd#")
            .unwrap_or_else(|| panic!("{name}: runbook_url {runbook}"));
        assert_eq!(anchor, format!("runbook-{}", name.to_lowercase()));
        assert!(anchors.iter().any(|a| a == anchor), "README has #{anchor}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_evaluates_every_rule_and_panel_against_a_running_bearerd() {
    if !tool_or_skip(PROMETHEUS) {
        return;
    }
    let scenario = Scenario::start().await;
    let admin = scenario
        .bearerd
        .admin
        .trim_start_matches("http://")
        .to_owned();
    let dead = support::dead_url().trim_start_matches("http://").to_owned();
    let start = unix_now();
    let prometheus = Prometheus::start(&[admin.clone(), dead]).await;
    // The counters' zeros are scraped before anything happens, so `increase()` sees it.
    support::eventually(Duration::from_secs(20), "a first scrape of bearerd", || {
        let query = format!("bearerd_requests_total{{instance=\"{admin}\"}}");
        let prometheus = &prometheus;
        async move { (!prometheus.instant(&query).await.is_empty()).then_some(()) }
    })
    .await;
    scenario.act().await;

    let rules = loaded_rules(&prometheus).await;
    check_rule_metadata(&rules);
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    let mut queries: Vec<Query> = rules
        .iter()
        .map(|r| Query {
            name: r.name.clone(),
            expr: r.expr.clone(),
        })
        .collect();
    queries.extend(dashboard_queries(&dashboard));

    let exposition = scenario.bearerd.metrics().await;
    let mut optional: BTreeSet<&str> = EXPECTED_EMPTY.iter().map(|(n, _)| *n).collect();
    for (name, metric, label) in CONDITIONAL {
        let shown = exposition.lines().any(|l| {
            l.starts_with(metric)
                && l.contains(label)
                && l.rsplit_once(' ')
                    .is_some_and(|(_, v)| v.parse::<f64>().is_ok_and(|v| v > 0.0))
        });
        if !shown {
            eprintln!(
                "\n!!!!!!!!!! NOTE: no {metric}..{label}..}} above 0 in bearerd's /metrics: \
                 {name} may return no data and is only parsed and evaluated !!!!!!!!!!\n"
            );
            optional.insert(name);
        }
    }
    for name in &optional {
        assert!(
            queries.iter().any(|q| q.name == *name),
            "{name} is listed but no longer exists"
        );
    }

    // Every query parses and evaluates (`api` panics otherwise); those the scenario produces
    // return data once Prometheus has scraped and evaluated the events.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    loop {
        let mut missing = Vec::new();
        for query in &queries {
            let result = prometheus.range(&query.expr, start).await;
            if result.is_empty() && !optional.contains(query.name.as_str()) {
                missing.push(format!("{}: {}", query.name, query.expr));
            }
        }
        for rule in loaded_rules(&prometheus).await {
            assert_ne!(rule.rule["health"], "err", "{}: {}", rule.name, rule.rule);
        }
        let alerts = prometheus.api("alerts", &[]).await;
        let needs_authorization = alerts["alerts"].as_array().into_iter().flatten().any(|a| {
            a["labels"]["alertname"] == "BearerdNeedsAuthorization"
                && a["labels"]["connection"] == "hotel"
                && (a["state"] == "pending" || a["state"] == "firing")
        });
        if !needs_authorization {
            missing.push("BearerdNeedsAuthorization pending or firing for hotel".into());
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no data for:\n{}\nbearerd /metrics:\n{exposition}\nprometheus log:\n{}",
            missing.join("\n"),
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (name, why) in EXPECTED_EMPTY {
        let query = queries.iter().find(|q| q.name == *name).unwrap();
        if !prometheus.range(&query.expr, start).await.is_empty() {
            eprintln!("NOTE: {name} returns data now ({why} no longer holds): make it required");
        }
    }
}
