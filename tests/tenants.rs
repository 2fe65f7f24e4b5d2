//! One app, many hotels (SPEC section 9): tenants installed at run time by the install
//! flow, routed per request on both request paths, each with its own grant; group grants;
//! webhooks per tenant; other processes sharing the store; admin lists, counts, readiness
//! and metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use http::StatusCode;
use support::connect_rig::{Options, Rig, admin_get, admin_post, rig_with};
use support::tenant_rig::{
    self, HEADER_APP, install, proxied, proxied_chunked, routed_by, user_of,
};
use support::{Bearerd, stored};

async fn cloudbeds_app() -> Rig {
    tenant_rig::cloudbeds_app("", "").await
}

#[tokio::test(flavor = "multi_thread")]
async fn hotels_install_themselves_and_requests_route_by_header_on_both_paths() {
    let rig = cloudbeds_app().await;
    let answer = install(&rig, "alice", &["1001"], "").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
    let page = answer.header("location").unwrap();
    assert_eq!(page, "/connections/hotel/installed?tenant=1001");
    // The success page names the property, and a reload shows it again (no error).
    for _ in 0..2 {
        let shown = admin_get(&rig, &page).await;
        assert_eq!(shown.status, StatusCode::OK);
        assert!(shown.text().contains("1001"), "{}", shown.text());
    }
    assert_eq!(
        install(&rig, "bob", &["1002"], "").await.status,
        StatusCode::SEE_OTHER
    );
    // Written before first use, one record per tenant.
    assert!(stored(&rig.dir, "hotel/1001").await.is_some());
    assert!(stored(&rig.dir, "hotel/1002").await.is_some());

    for (property, user) in [("1001", "alice"), ("1002", "bob")] {
        let fast = proxied(
            &rig,
            "/api/v1.3/getReservations",
            &[("x-property-id", property)],
        )
        .await;
        assert_eq!(fast.status, StatusCode::OK, "{}", fast.text());
        assert_eq!(user_of(&fast), user);
        // The header is the app's: forwarded unchanged.
        assert_eq!(fast.json()["headers"]["x-property-id"][0], property);
        let hyper = proxied_chunked(&rig, "/api/v1.3/postReservation", property).await;
        assert_eq!(hyper.status, StatusCode::OK, "{}", hyper.text());
        assert_eq!(user_of(&hyper), user);
        assert_eq!(hyper.json()["body_len"], 5);
    }

    // No tenant: 400 naming the header; unknown: 404 with the install URL; a list served by
    // different grants: 400. The same on hyper's path.
    let none = proxied(&rig, "/x", &[]).await;
    assert_eq!(none.status, StatusCode::BAD_REQUEST);
    assert!(
        none.json()["detail"]
            .as_str()
            .unwrap()
            .contains("x-property-id")
    );
    let unknown = proxied(&rig, "/x", &[("x-property-id", "9999")]).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text());
    assert_eq!(unknown.json()["tenant"], "9999");
    assert!(
        unknown.json()["detail"]
            .as_str()
            .unwrap()
            .contains("http://127.0.0.1:9901/connections/hotel/install")
    );
    assert_eq!(
        proxied_chunked(&rig, "/x", "9999").await.status,
        StatusCode::NOT_FOUND
    );
    let mixed = proxied(&rig, "/x", &[("x-property-id", "1001,1002")]).await;
    assert_eq!(mixed.status, StatusCode::BAD_REQUEST);
    let same = proxied(&rig, "/x", &[("x-property-id", "1001, 1001")]).await;
    assert_eq!(same.status, StatusCode::OK);
    assert_eq!(
        proxied(&rig, "/x", &[("x-property-id", "../1001")])
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn path_routing_takes_the_tenant_off_the_path() {
    let rig = rig_with(Options {
        extra: "tenants = \"path\"",
        ..Options::default()
    })
    .await;
    // A generic provider names no tenant: the operator's install link does.
    let refused = install(&rig, "alice", &[], "").await;
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY);
    assert!(refused.text().contains("?tenant="), "{}", refused.text());
    let answer = install(&rig, "alice", &[], "?tenant=acme").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
    let fast = proxied(&rig, "/acme/v1/things?page=2", &[]).await;
    assert_eq!(fast.status, StatusCode::OK, "{}", fast.text());
    assert_eq!(fast.json()["path"], "/v1/things");
    assert_eq!(fast.json()["query"], "page=2");
    assert_eq!(user_of(&fast), "alice");
    let root = proxied(&rig, "/acme", &[]).await;
    assert_eq!(root.json()["path"], "/");
    assert_eq!(
        proxied(&rig, "/", &[]).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        proxied(&rig, "/other/v1", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    let hyper = proxied_chunked(&rig, "/acme/v1/post", "ignored").await;
    assert_eq!(hyper.status, StatusCode::OK, "{}", hyper.text());
    assert_eq!(hyper.json()["path"], "/v1/post");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_the_provider_contradicts_is_refused_and_nothing_is_stored() {
    let rig = cloudbeds_app().await;
    let answer = install(&rig, "alice", &["1001"], "?tenant=1002").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(
        answer.text().contains("nothing was stored"),
        "{}",
        answer.text()
    );
    assert!(stored(&rig.dir, "hotel/1001").await.is_none());
    assert!(stored(&rig.dir, "hotel/1002").await.is_none());
    let bad = admin_get(&rig, "/connections/hotel/install?tenant=../x").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_grant_serves_its_properties_and_webhooks_act_per_tenant() {
    let rig = cloudbeds_app().await;
    assert_eq!(
        install(&rig, "alice", &["1001"], "").await.status,
        StatusCode::SEE_OTHER
    );
    let group = install(&rig, "carol", &["2001", "2002"], "").await;
    assert_eq!(
        group.header("location").as_deref(),
        Some("/connections/hotel/installed?tenant=2001")
    );
    for property in ["2001", "2002"] {
        let answer = proxied(&rig, "/x", &[("x-property-id", property)]).await;
        assert_eq!(user_of(&answer), "carol", "{property}");
    }
    // One grant, one token: a list of its properties is fine.
    let both = proxied(&rig, "/x", &[("x-property-id", "2001,2002")]).await;
    assert_eq!(both.status, StatusCode::OK);

    let client = rig.tokens.client_id();
    let event = |property: &str| {
        format!(
            r#"{{"event":"integration/appstate_changed","propertyID":{property},"clientID":"{client}","oldState":"enabled","newState":"disabled"}}"#
        )
    };
    let post = |body: String| {
        let rig = &rig;
        async move {
            admin_post(
                rig,
                "/webhooks/hotel",
                &[("content-type", "application/json")],
                &body,
            )
            .await
        }
    };
    // Not confirmed by the provider (still enabled): nothing changes.
    rig.upstream.set_app_state("2002", "enabled");
    let ignored = post(event("2002")).await;
    assert_eq!(ignored.json()["result"], "ignored", "{}", ignored.text());
    // Confirmed for one property of the group: that property stops routing, the others stay.
    rig.upstream.set_app_state("2002", "disabled");
    let removed = post(event("2002")).await;
    assert_eq!(
        removed.json()["result"],
        "property_removed",
        "{}",
        removed.text()
    );
    assert_eq!(
        proxied(&rig, "/x", &[("x-property-id", "2002")])
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        user_of(&proxied(&rig, "/x", &[("x-property-id", "2001")]).await),
        "carol"
    );
    assert_eq!(
        stored(&rig.dir, "hotel/2001").await.unwrap().covers,
        vec!["2001"]
    );
    // Its last property: the tenant is disconnected; alice's tenant is untouched.
    rig.upstream.set_app_state("2001", "disabled");
    let gone = post(event("2001")).await;
    assert_eq!(gone.json()["result"], "disconnected", "{}", gone.text());
    let answer = proxied(&rig, "/x", &[("x-property-id", "2001")]).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        answer.json()["detail"]
            .as_str()
            .unwrap()
            .contains("/connections/hotel/tenants/2001/connect"),
        "{}",
        answer.text()
    );
    assert_eq!(
        user_of(&proxied(&rig, "/x", &[("x-property-id", "1001")]).await),
        "alice"
    );
    // An event for a property no tenant serves changes nothing.
    let stranger = post(event("7777")).await;
    assert_eq!(stranger.json()["result"], "ignored");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_lists_counts_pages_and_readiness_is_per_app() {
    let rig = cloudbeds_app().await;
    for (user, property) in [("u1", "1001"), ("u2", "1002"), ("u3", "1003")] {
        assert_eq!(
            install(&rig, user, &[property], "").await.status,
            StatusCode::SEE_OTHER
        );
    }
    // Disconnect one tenant from the admin API.
    let disconnected = admin_post(
        &rig,
        "/connections/hotel/tenants/1002/disconnect",
        &[("content-type", "application/json")],
        "",
    )
    .await;
    assert_eq!(
        disconnected.status,
        StatusCode::OK,
        "{}",
        disconnected.text()
    );

    let all = admin_get(&rig, "/connections").await.json();
    let app = &all[0];
    assert_eq!(app["tenants"]["connected"], 2, "{app}");
    assert_eq!(app["tenants"]["disconnected"], 1, "{app}");
    assert_eq!(app["tenant_count"], 3);

    let first = admin_get(&rig, "/connections/hotel/tenants?limit=2")
        .await
        .json();
    let ids: Vec<&str> = first["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["1001", "1002"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = admin_get(
        &rig,
        &format!("/connections/hotel/tenants?limit=2&cursor={cursor}"),
    )
    .await
    .json();
    assert_eq!(second["tenants"][0]["id"], "1003");
    assert!(second["next_cursor"].is_null());
    let filtered = admin_get(&rig, "/connections/hotel/tenants?state=disconnected")
        .await
        .json();
    assert_eq!(filtered["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(filtered["tenants"][0]["id"], "1002");
    assert_eq!(filtered["tenants"][0]["covers"][0], "1002");
    let one = admin_get(&rig, "/connections/hotel/tenants/1001")
        .await
        .json();
    assert_eq!(one["state"], "connected");
    assert!(!one.to_string().contains("at_"), "never a token: {one}");
    assert_eq!(
        admin_get(&rig, "/connections/hotel/tenants/4040")
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // A tenant needing authorization does not make the pod unready.
    assert_eq!(admin_get(&rig, "/readyz").await.status, StatusCode::OK);
    // Metrics: counts per state, labelled by the app only.
    assert_eq!(
        rig.bearerd
            .metric("bearerd_tenants{connection=\"hotel\",state=\"connected\"}")
            .await,
        2.0
    );
    let metrics = rig.bearerd.metrics().await;
    assert!(!metrics.contains("1001"), "no tenant id in a metric label");
    // The HTML table (same protection as the status page; loopback: open).
    let page = admin_get(&rig, "/connections/hotel/page?state=disconnected").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("1002") && !page.text().contains(">1001<"));
}

#[tokio::test(flavor = "multi_thread")]
async fn another_process_routes_a_new_tenant_and_a_restart_keeps_them() {
    let rig = cloudbeds_app().await;
    // A second bearerd on the same store (another process on the host, or a replica).
    let other_config = support::ac_config(
        "hotel",
        "cloudbeds",
        &rig.tokens,
        &rig.upstream.url(),
        &rig.dir,
        &format!("{HEADER_APP}\nprobe = \"/userinfo\""),
    );
    let other = Bearerd::start(&other_config).await;
    assert_eq!(
        install(&rig, "alice", &["1001"], "").await.status,
        StatusCode::SEE_OTHER
    );
    let exchanges = rig.tokens.code_exchanges();
    let routed = routed_by(&other, "1001").await;
    assert_eq!(user_of(&routed), "alice");
    assert_eq!(rig.tokens.code_exchanges(), exchanges);
    // The other process adopted the stored tokens: no refresh of its own.
    assert_eq!(rig.tokens.refresh_requests(), 0);
    other.app.shutdown().await;

    // A restart loads every tenant from the store.
    let restarted = Bearerd::start(&other_config).await;
    let answer = routed_by(&restarted, "1001").await;
    assert_eq!(user_of(&answer), "alice");
    assert_eq!(rig.tokens.refresh_requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_shows_apps_lists_tenants_and_acts_on_one() {
    let rig = cloudbeds_app().await;
    for (user, property) in [("u1", "1001"), ("u2", "1002")] {
        assert_eq!(
            install(&rig, user, &[property], "").await.status,
            StatusCode::SEE_OTHER
        );
    }
    let admin = rig.bearerd.admin.clone();
    let cli = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bearerd"))
            .args(&args)
            .env_remove("BEARERD_ADMIN_TOKEN")
            .output()
            .await
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let args = |list: &[&str]| -> Vec<String> {
        list.iter()
            .map(|s| s.to_string())
            .chain(["--admin".to_owned(), admin.clone()])
            .collect()
    };
    let (code, out, _) = cli(args(&["status"])).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("tenants: 2 connected"), "{out}");

    let (code, out, err) = cli(args(&["disconnect", "hotel/1002"])).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("hotel/1002: disconnected"), "{out}");
    let (code, out, _) = cli(args(&["status", "hotel"])).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("1001") && out.contains("1002"), "{out}");
    let (_, out, _) = cli(args(&["status", "hotel", "--state", "disconnected"])).await;
    assert!(out.contains("1002") && !out.contains("1001"), "{out}");
    let (code, out, _) = cli(args(&["connect", "hotel"])).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("/connections/hotel/install"), "{out}");
    let (code, out, _) = cli(args(&["connect", "hotel/1002"])).await;
    assert_eq!(code, Some(0));
    assert!(
        out.contains("/connections/hotel/tenants/1002/connect"),
        "{out}"
    );
    let (code, _, err) = cli(args(&["refresh", "hotel/../x"])).await;
    assert_eq!(code, Some(2), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_imported_tenant_grant_is_picked_up_by_the_running_daemon() {
    use tokio::io::AsyncWriteExt;
    let rig = cloudbeds_app().await;
    let config = support::ac_config(
        "hotel",
        "cloudbeds",
        &rig.tokens,
        &rig.upstream.url(),
        &rig.dir,
        HEADER_APP,
    );
    let file = rig.dir.with_extension("toml");
    std::fs::write(&file, config).unwrap();
    let import = |name: &'static str, token: String| {
        let file = file.clone();
        async move {
            let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bearerd"))
                .args(["import", name, "--config"])
                .arg(&file)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(token.as_bytes()).await.unwrap();
            drop(stdin);
            let out = child.wait_with_output().await.unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (code, err) = import("hotel", rig.tokens.seed_grant()).await;
    assert_eq!(code, Some(2), "an app takes NAME/TENANT: {err}");
    let (code, err) = import("hotel/3003", rig.tokens.seed_grant()).await;
    assert_eq!(code, Some(0), "{err}");
    // The daemon's watcher lists the app's records (every 2 s with the file store).
    let answer = support::eventually(Duration::from_secs(10), "3003 routed", || async {
        let answer = proxied(&rig, "/x", &[("x-property-id", "3003")]).await;
        (answer.status == StatusCode::OK).then_some(answer)
    })
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let _ = std::fs::remove_file(&file);
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_waits_for_a_tenant_refresh_in_flight_to_be_saved() {
    let rig = cloudbeds_app().await;
    // Tokens living 2 s: the tenant's scheduled refresh comes about 1 s after the install.
    rig.tokens.set_lifetime(Some(Duration::from_secs(2)));
    assert_eq!(
        install(&rig, "alice", &["1001"], "").await.status,
        StatusCode::SEE_OTHER
    );
    let installed = stored(&rig.dir, "hotel/1001").await.unwrap().generation;
    // The provider takes the next refresh and holds it (rotating when released): no request
    // of the admin listener waits for this one, so only the refresher knows it is in flight.
    rig.tokens.script(support::Failure::Stall);
    let tokens = rig.tokens.clone();
    support::eventually(
        Duration::from_secs(10),
        "the refresh at the provider",
        || {
            let held = tokens.in_flight() == 1;
            async move { held.then_some(()) }
        },
    )
    .await;
    let Rig {
        bearerd,
        dir,
        tokens,
        ..
    } = rig;
    let admin = bearerd.admin.clone();
    // What the store holds when shutdown returns (the process would exit then).
    let store = dir.clone();
    let shutdown = tokio::spawn(async move {
        bearerd.app.shutdown().await;
        stored(&store, "hotel/1001").await.unwrap().generation
    });
    support::eventually(Duration::from_secs(10), "the admin listener closed", || {
        let admin = admin.clone();
        async move { support::get(&admin, None).await.is_err().then_some(()) }
    })
    .await;
    tokens.release_stalled();
    let at_exit = shutdown.await.unwrap();
    assert_eq!(
        at_exit,
        installed + 1,
        "shutdown returned before the rotated tokens were saved"
    );
    assert_eq!(tokens.successful_refreshes(), 1);
}

/// `n` requests for `property` at once, on the fast path (`chunked`: through hyper);
/// returns their statuses.
async fn at_once(rig: &Rig, property: &str, n: usize, chunked: bool) -> Vec<StatusCode> {
    let requests = (0..n).map(|_| async {
        if chunked {
            proxied_chunked(rig, "/api/v1.3/getReservations", property)
                .await
                .status
        } else {
            proxied(
                rig,
                "/api/v1.3/getReservations",
                &[("X-Property-ID", property)],
            )
            .await
            .status
        }
    });
    futures_util::future::join_all(requests).await
}

/// The Cloudbeds app with `limit`, hotels 1001 and 1002 installed and routed, and a window
/// gone by since the requests that showed them routed.
async fn two_hotels(limit: &str) -> Rig {
    let rig = tenant_rig::cloudbeds_app("", limit).await;
    for (user, property) in [("alice", "1001"), ("bob", "1002")] {
        let answer = install(&rig, user, &[property], "").await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
        routed_by(&rig.bearerd, property).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    rig
}

fn count(statuses: &[StatusCode], status: StatusCode) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_per_tenant_limits_each_hotel_apart_on_both_paths() {
    let rig = two_hotels(r#"rate_limit = { rps = 2, per = "tenant", over = "reject" }"#).await;
    let first = at_once(&rig, "1001", 3, false).await;
    let second = at_once(&rig, "1002", 3, true).await;
    for (property, statuses) in [("1001", &first), ("1002", &second)] {
        assert_eq!(
            count(statuses, StatusCode::OK),
            2,
            "{property}: {statuses:?}"
        );
        assert_eq!(
            count(statuses, StatusCode::TOO_MANY_REQUESTS),
            1,
            "{property}: {statuses:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_per_connection_is_shared_by_an_apps_hotels() {
    let rig = two_hotels(r#"rate_limit = { rps = 2, per = "connection", over = "reject" }"#).await;
    let first = at_once(&rig, "1001", 2, false).await;
    let second = at_once(&rig, "1002", 2, true).await;
    assert_eq!(count(&first, StatusCode::OK), 2, "{first:?}");
    assert_eq!(
        count(&second, StatusCode::TOO_MANY_REQUESTS),
        2,
        "the app's budget was spent by 1001: {second:?}"
    );
}
