//! API keys with tenants (SPEC sections 9 and 10), on real sockets against the test token
//! server's Cloudbeds key endpoints and an upstream that checks each key and the
//! `X-PROPERTY-ID` it is sent with: an app with `grant = "api_key"` installs a key per hotel
//! by automatic delivery (ids from `resources[]`, or `getHotels` asked with the new key) and
//! routes each hotel with its own key on both request paths; a revoked key stops only its
//! tenant; an OAuth app's tenant migrated to a key (admin route and `bearerd migrate
//! NAME/TENANT`) is never sent a refresh grant again, also after a restart, and its key is
//! not used before it is saved; what cannot migrate gets a clear error and nothing changes;
//! each idle tenant key is kept alive.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bearerd::store::Credential;
use http::StatusCode;
use support::connect_rig::{Rig, admin_get};
use support::tenant_rig::{
    cloudbeds_app, install, post, proxied, proxied_chunked, restart, routed_by, user_of,
};
use support::upstream::echoed;
use support::{TestResponse, eventually, stored};

const API_KEY_GRANT: &str = "urn:ietf:params:oauth:grant-type:api-key";

/// The `grant_type` of every token request the provider received, in order.
fn grant_types(rig: &Rig) -> Vec<String> {
    rig.tokens
        .token_request_log()
        .into_iter()
        .map(|r| r.grant_type.unwrap_or_default())
        .collect()
}

/// `GET /connections/hotel/tenants/ID`.
async fn tenant(rig: &Rig, id: &str) -> serde_json::Value {
    admin_get(rig, &format!("/connections/hotel/tenants/{id}"))
        .await
        .json()
}

/// Installs `user`'s hotel `property` and checks the flow ended on its success page.
async fn installed(rig: &Rig, user: &str, property: &str) {
    let answer = install(rig, user, &[property], "").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
    let page = answer.header("location").unwrap();
    assert_eq!(
        page,
        format!("/connections/hotel/installed?tenant={property}")
    );
}

/// `hotel`'s `property` goes upstream with `key` as `x-api-key` (and no `Authorization`) on
/// both request paths, and the upstream takes it as `user`'s.
async fn routed_with_key(rig: &Rig, property: &str, user: &str, key: &str) {
    let header = [("x-property-id", property)];
    let fast = proxied(rig, "/api/v1.3/getReservations", &header).await;
    let hyper = proxied_chunked(rig, "/api/v1.3/postReservation", property).await;
    for answer in [&fast, &hyper] {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        assert_eq!(user_of(answer), user, "{}", answer.text());
        assert_eq!(echoed(answer, "x-api-key"), [key]);
        assert!(echoed(answer, "authorization").is_empty());
        assert_eq!(echoed(answer, "x-property-id"), [property]);
    }
    assert_eq!(hyper.json()["body_len"], 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_hotel_installs_a_key_of_its_own_and_is_routed_with_it() {
    let rig = cloudbeds_app("api_key", "").await;
    installed(&rig, "alice", "1001").await;
    installed(&rig, "bob", "1002").await;
    // Automatic delivery: each code exchanged for a key, nothing else asked of the provider.
    assert_eq!(grant_types(&rig), [API_KEY_GRANT, API_KEY_GRANT]);
    let keys = rig.tokens.keys_issued();
    assert_eq!(keys.len(), 2);
    // A key record per tenant, written before first use: no refresh token, no expiry.
    for (property, key) in [("1001", &keys[0]), ("1002", &keys[1])] {
        let record = stored(&rig.dir, &format!("hotel/{property}"))
            .await
            .unwrap();
        assert_eq!(record.credential, Credential::ApiKey);
        assert_eq!(record.access_token.unwrap().secret(), key.as_str());
        assert!(record.refresh_token.is_none() && record.expires_at.is_none());
        assert!(record.last_used_at.is_some());
    }
    routed_with_key(&rig, "1001", "alice", &keys[0]).await;
    routed_with_key(&rig, "1002", "bob", &keys[1]).await;
    // (The upstream refuses a key sent for another hotel, so a mixed-up key fails above.)
    let wrong = http::Request::get(format!("{}/x", rig.upstream.url()))
        .header("x-api-key", &keys[0])
        .header("x-property-id", "1002")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let wrong = support::send(wrong).await.unwrap();
    assert_eq!(wrong.json()["success"], false, "{}", wrong.text());
    // The app's own x-api-key never reaches the upstream: the tenant's key replaces it.
    let own = proxied(
        &rig,
        "/x",
        &[("x-property-id", "1001"), ("x-api-key", &keys[1])],
    )
    .await;
    assert_eq!(echoed(&own, "x-api-key"), [keys[0].as_str()]);

    // The tenant list and one tenant show the key and its last use, never the key itself.
    let one = tenant(&rig, "1001").await;
    assert_eq!(one["credential"], "api_key", "{one}");
    assert_eq!(one["state"], "connected", "{one}");
    assert!(one["last_used_at"].is_string(), "{one}");
    assert!(one["access_expires_at"].is_null(), "{one}");
    let list = admin_get(&rig, "/connections/hotel/tenants").await.text();
    let page = admin_get(&rig, "/connections/hotel/page").await.text();
    for shown in [&list, &page, &one.to_string()] {
        assert!(keys.iter().all(|k| !shown.contains(k.as_str())), "{shown}");
    }
    assert!(page.contains("API key, last used"), "{page}");
    assert_eq!(rig.tokens.refresh_requests(), 0);
    rig.bearerd.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_naming_no_property_asks_get_hotels_with_the_new_key() {
    let rig = cloudbeds_app("api_key", "").await;
    rig.tokens.keys_name_no_property();
    installed(&rig, "carol", "2001").await;
    let key = rig.tokens.keys_issued().pop().unwrap();
    assert_eq!(
        rig.tokens.key_uses(&key),
        1,
        "getHotels was asked with the key"
    );
    let record = stored(&rig.dir, "hotel/2001").await.unwrap();
    assert_eq!(record.credential, Credential::ApiKey);
    routed_with_key(&rig, "2001", "carol", &key).await;

    // An install link naming another hotel than getHotels does: refused, nothing stored.
    let refused = install(&rig, "dave", &["3001"], "?tenant=9999").await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_GATEWAY,
        "{}",
        refused.text()
    );
    assert!(
        refused.text().contains("nothing was stored"),
        "{}",
        refused.text()
    );
    assert!(stored(&rig.dir, "hotel/9999").await.is_none());
    assert!(stored(&rig.dir, "hotel/3001").await.is_none());
    let unknown = proxied(&rig, "/x", &[("x-property-id", "3001")]).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    rig.bearerd.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_key_stops_only_its_tenant_until_it_installs_again() {
    let rig = cloudbeds_app("api_key", "").await;
    installed(&rig, "alice", "1001").await;
    installed(&rig, "bob", "1002").await;
    let keys = rig.tokens.keys_issued();
    rig.tokens.revoke_key(&keys[0]);

    let first = proxied(&rig, "/x", &[("x-property-id", "1001")]).await;
    assert_eq!(
        first.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        first.text()
    );
    let detail = first.json()["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("/connections/hotel/tenants/1001/connect"),
        "{detail}"
    );
    let shown = tenant(&rig, "1001").await;
    assert_eq!(shown["state"], "needs_authorization", "{shown}");
    assert!(
        shown["last_error"].as_str().unwrap().contains("revoked"),
        "{shown}"
    );
    // No retry loop: answered by bearerd from now on, on both paths, and an operator's
    // refresh asks the provider nothing.
    for _ in 0..3 {
        let again = proxied(&rig, "/x", &[("x-property-id", "1001")]).await;
        assert_eq!(again.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let hyper = proxied_chunked(&rig, "/x", "1001").await;
    assert_eq!(hyper.status, StatusCode::SERVICE_UNAVAILABLE);
    let forced = post(&rig, "/connections/hotel/tenants/1001/refresh").await;
    assert_eq!(forced.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rig.upstream.unauthorized(), 1);
    assert_eq!(grant_types(&rig).len(), 2, "only the two deliveries");
    let record = stored(&rig.dir, "hotel/1001").await.unwrap();
    assert_eq!(record.state, "needs_authorization");
    assert!(record.access_token.is_none());

    // The other hotel is unaffected.
    routed_with_key(&rig, "1002", "bob", &keys[1]).await;
    assert_eq!(tenant(&rig, "1002").await["state"], "connected");
    let counts = admin_get(&rig, "/connections").await.json()[0]["tenants"].clone();
    assert_eq!(counts["connected"], 1, "{counts}");
    assert_eq!(counts["needs_authorization"], 1, "{counts}");

    // Installing again delivers a new key for the same tenant.
    installed(&rig, "alice", "1001").await;
    let new_key = rig.tokens.keys_issued().pop().unwrap();
    assert_ne!(new_key, keys[0]);
    routed_with_key(&rig, "1001", "alice", &new_key).await;
    rig.bearerd.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migrated_tenant_is_never_sent_a_refresh_grant_even_after_a_restart() {
    let rig = cloudbeds_app("", "").await;
    installed(&rig, "alice", "1001").await;
    installed(&rig, "bob", "1002").await;
    let refresh_token = stored(&rig.dir, "hotel/1001")
        .await
        .unwrap()
        .refresh_token
        .unwrap();
    let refresh_token = refresh_token.secret().to_owned();

    let migrated = post(&rig, "/connections/hotel/tenants/1001/migrate").await;
    assert_eq!(migrated.status, StatusCode::OK, "{}", migrated.text());
    let shown = migrated.json();
    assert_eq!(shown["id"], "1001", "{shown}");
    assert_eq!(shown["migrated"], true, "{shown}");
    assert_eq!(shown["credential"], "api_key", "{shown}");
    let key = rig.tokens.keys_issued().pop().unwrap();
    assert!(!migrated.text().contains(&key));
    assert_eq!(rig.tokens.key_exchanges(), 1);
    let record = stored(&rig.dir, "hotel/1001").await.unwrap();
    assert_eq!(record.credential, Credential::ApiKey);
    assert_eq!(record.access_token.unwrap().secret(), key);
    routed_with_key(&rig, "1001", "alice", &key).await;
    // The other tenant keeps its OAuth grant.
    let bob = proxied(&rig, "/x", &[("x-property-id", "1002")]).await;
    assert_eq!(user_of(&bob), "bob");
    assert!(echoed(&bob, "authorization")[0].starts_with("Bearer "));
    assert_eq!(tenant(&rig, "1002").await["credential"], "token");

    // An operator's refresh of each: the migrated tenant asks nothing, the other refreshes.
    let forced = post(&rig, "/connections/hotel/tenants/1001/refresh").await;
    assert_eq!(forced.status, StatusCode::OK, "{}", forced.text());
    let other = post(&rig, "/connections/hotel/tenants/1002/refresh").await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.text());
    assert_eq!(rig.tokens.refresh_requests(), 1, "bob's refresh only");

    let rig = restart(rig).await;
    let answer = routed_by(&rig.bearerd, "1001").await;
    assert_eq!(echoed(&answer, "x-api-key"), [key.as_str()]);
    assert_eq!(user_of(&answer), "alice");
    let forced = post(&rig, "/connections/hotel/tenants/1001/refresh").await;
    assert_eq!(forced.status, StatusCode::OK, "{}", forced.text());
    assert_eq!(tenant(&rig, "1001").await["credential"], "api_key");
    // A 401 for the key after the restart: needs authorization, still no refresh grant.
    rig.tokens.revoke_key(&key);
    let rejected = proxied(&rig, "/x", &[("x-property-id", "1001")]).await;
    assert_eq!(rejected.status, StatusCode::SERVICE_UNAVAILABLE);
    let post_restart = post(&rig, "/connections/hotel/tenants/1001/refresh").await;
    assert_eq!(post_restart.status, StatusCode::SERVICE_UNAVAILABLE);

    let log = rig.tokens.token_request_log();
    assert!(
        !log.iter()
            .any(|r| r.grant_type.as_deref() == Some("refresh_token")
                && r.refresh_token.as_deref() == Some(refresh_token.as_str())),
        "the migrated tenant's refresh token was never redeemed"
    );
    assert_eq!(rig.tokens.refresh_requests(), 1);
    assert_eq!(rig.tokens.keys_invalidated_by_refresh(), 0);
    rig.bearerd.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_key_that_cannot_be_saved_stays_pending_and_unused_until_it_is() {
    let rig = cloudbeds_app("", "").await;
    installed(&rig, "alice", "1001").await;
    installed(&rig, "bob", "1002").await;
    // A directory where the temp file must go makes every save of hotel/1001 fail.
    let blocker = rig.dir.join("hotel").join(".1001.json.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let admin = rig.bearerd.admin.clone();
    let migrate = tokio::spawn(async move {
        let request =
            http::Request::post(format!("{admin}/connections/hotel/tenants/1001/migrate"))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
        support::send(request).await.unwrap()
    });
    eventually(Duration::from_secs(10), "the pending save shows", || {
        let shown = tenant(&rig, "1001");
        async move {
            let shown = shown.await;
            let error = shown["last_error"].as_str().unwrap_or("").to_owned();
            (shown["state"] == "degraded" && error.contains("not saved")).then_some(())
        }
    })
    .await;
    assert_eq!(rig.tokens.key_exchanges(), 1, "the provider issued the key");
    let key = rig.tokens.keys_issued().pop().unwrap();
    // Meanwhile the hotel is served with its access token; the key is not used.
    let answer = proxied(&rig, "/x", &[("x-property-id", "1001")]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert!(echoed(&answer, "x-api-key").is_empty());
    assert_eq!(
        rig.tokens.key_uses(&key),
        0,
        "not used before it is durable"
    );
    let record = stored(&rig.dir, "hotel/1001").await.unwrap();
    assert_eq!(record.credential, Credential::Token);

    std::fs::remove_dir(&blocker).unwrap();
    let answer = migrate.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let record = stored(&rig.dir, "hotel/1001").await.unwrap();
    assert_eq!(record.credential, Credential::ApiKey);
    routed_with_key(&rig, "1001", "alice", &key).await;
    assert_eq!(rig.tokens.refresh_requests(), 0);
    rig.bearerd.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn what_cannot_migrate_gets_a_clear_error_and_nothing_changes() {
    let rig = cloudbeds_app("", "").await;
    installed(&rig, "alice", "1001").await;
    installed(&rig, "bob", "1002").await;
    assert_eq!(
        post(&rig, "/connections/hotel/tenants/1001/migrate")
            .await
            .status,
        StatusCode::OK
    );
    let refused = |answer: TestResponse, status: StatusCode, says: &str| {
        assert_eq!(answer.status, status, "{}", answer.text());
        assert_eq!(
            answer.header("content-type").unwrap(),
            "application/problem+json"
        );
        let detail = answer.json()["detail"].as_str().unwrap().to_owned();
        assert!(detail.contains(says), "{detail}");
    };

    // Already migrated.
    let before = stored(&rig.dir, "hotel/1001").await.unwrap();
    let again = post(&rig, "/connections/hotel/tenants/1001/migrate").await;
    refused(again, StatusCode::CONFLICT, "already uses an API key");
    assert_eq!(stored(&rig.dir, "hotel/1001").await.unwrap(), before);
    // Disconnected: no refresh token left.
    let gone = post(&rig, "/connections/hotel/tenants/1002/disconnect").await;
    assert_eq!(gone.status, StatusCode::OK, "{}", gone.text());
    let before = stored(&rig.dir, "hotel/1002").await.unwrap();
    let none = post(&rig, "/connections/hotel/tenants/1002/migrate").await;
    refused(none, StatusCode::CONFLICT, "no refresh token");
    assert_eq!(stored(&rig.dir, "hotel/1002").await.unwrap(), before);
    // The app itself: migrated tenant by tenant.
    let app = post(&rig, "/connections/hotel/migrate").await;
    refused(
        app,
        StatusCode::CONFLICT,
        "/connections/hotel/tenants/ID/migrate",
    );
    // An unknown tenant.
    let unknown = post(&rig, "/connections/hotel/tenants/9999/migrate").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(rig.tokens.key_exchanges(), 1);
    assert_eq!(rig.tokens.refresh_requests(), 0);
    rig.bearerd.app.shutdown().await;

    // A delivered key's tenant has no refresh token either.
    let rig = cloudbeds_app("api_key", "").await;
    installed(&rig, "carol", "2001").await;
    let before = stored(&rig.dir, "hotel/2001").await.unwrap();
    let key = post(&rig, "/connections/hotel/tenants/2001/migrate").await;
    refused(key, StatusCode::CONFLICT, "already uses an API key");
    assert_eq!(stored(&rig.dir, "hotel/2001").await.unwrap(), before);
    assert_eq!(rig.tokens.key_exchanges(), 0);
    rig.bearerd.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bearerd_migrate_name_tenant_asks_the_daemon() {
    let rig = cloudbeds_app("", "").await;
    installed(&rig, "alice", "1001").await;
    let admin = rig.bearerd.admin.clone();
    let run = |name: &'static str| {
        let admin = admin.clone();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bearerd"))
                .args(["migrate", name, "--admin", &admin])
                .env_remove("BEARERD_ADMIN_TOKEN")
                .output()
                .await
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            (out.status.code(), stdout, stderr)
        }
    };
    let (code, stdout, stderr) = run("hotel/1001").await;
    assert_eq!(code, Some(0), "{stdout} {stderr}");
    assert!(
        stdout.contains("hotel/1001: migrated to an API key"),
        "{stdout}"
    );
    let key = rig.tokens.keys_issued().pop().unwrap();
    assert!(!stdout.contains(&key) && !stderr.contains(&key));
    let record = stored(&rig.dir, "hotel/1001").await.unwrap();
    assert_eq!(record.credential, Credential::ApiKey);

    let (code, _, stderr) = run("hotel/1001").await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("already uses an API key"), "{stderr}");
    let (code, _, stderr) = run("hotel/../x").await;
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(rig.tokens.key_exchanges(), 1);
    assert_eq!(rig.tokens.refresh_requests(), 0);
    rig.bearerd.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_idle_tenant_key_is_kept_alive() {
    // The provider lapses keys idle for 3 s; bearerd's keep-alive is 2 s.
    let rig = cloudbeds_app("api_key", "keepalive = \"2s\"").await;
    rig.tokens.set_key_idle(Some(Duration::from_secs(3)));
    installed(&rig, "alice", "1001").await;
    installed(&rig, "bob", "1002").await;
    let keys = rig.tokens.keys_issued();
    let installed_at = stored(&rig.dir, "hotel/1001").await.unwrap().last_used_at;
    eventually(
        Duration::from_secs(20),
        "two keep-alive calls per key",
        || {
            let uses: Vec<usize> = keys.iter().map(|k| rig.tokens.key_uses(k)).collect();
            async move { uses.iter().all(|n| *n >= 2).then_some(()) }
        },
    )
    .await;
    // Longer than the provider's idle period has passed without a request from the app.
    assert!(keys.iter().all(|k| rig.tokens.key_is_live(k)));
    assert!(rig.upstream.token_checks() >= 4);
    assert_eq!(rig.upstream.unauthorized(), 0);
    let recorded = stored(&rig.dir, "hotel/1001").await.unwrap().last_used_at;
    assert!(recorded > installed_at, "the keep-alive's use is stored");
    assert!(tenant(&rig, "1002").await["last_used_at"].is_string());
    assert_eq!(grant_types(&rig), [API_KEY_GRANT, API_KEY_GRANT]);
    rig.bearerd.app.shutdown().await;
}
