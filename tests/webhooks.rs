//! Cloudbeds app-state webhooks (SPEC sections 5 and 13): an unsigned event is only a hint.
//! bearerd confirms it with the provider (getAppState for that property answers `disabled`,
//! or the token is rejected) before it disconnects; a forged event or one for a property the
//! grant does not cover changes nothing; answers never wait for a busy refresher and say what
//! was done; a burst of the same event confirms and disconnects once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bearerd::token::ConnState;
use http::StatusCode;
use support::connect_rig::{Options, Rig, admin_post, connect, rig_with, state};
use support::{Failure, TestResponse, stored};

async fn cloudbeds() -> Rig {
    let rig = rig_with(Options {
        provider: "cloudbeds",
        cloudbeds: true,
        no_revoke_url: true,
        ..Options::default()
    })
    .await;
    assert_eq!(connect(&rig).await.status, StatusCode::OK);
    assert_eq!(state(&rig), ConnState::Connected);
    rig
}

fn event(client: &str, property: &str, new_state: &str) -> String {
    format!(
        r#"{{"version":"1.0","event":"integration/appstate_changed","timestamp":1700000000.25,"propertyID":{property},"clientID":"{client}","oldState":"enabled","newState":"{new_state}"}}"#
    )
}

async fn post_event(rig: &Rig, body: &str) -> TestResponse {
    let ct = [("content-type", "application/json")];
    admin_post(rig, "/webhooks/hotel", &ct, body).await
}

fn result(answer: &TestResponse) -> String {
    answer.json()["result"].as_str().unwrap_or("").to_owned()
}

/// Posts `body` until an answer reports the confirmation's end (not `accepted`): events
/// arriving while it runs join it, so this never starts more than one at a time.
async fn settled_answer(rig: &Rig, body: &str) -> TestResponse {
    support::eventually(
        Duration::from_secs(20),
        "a settled webhook answer",
        || async {
            let answer = post_event(rig, body).await;
            (result(&answer) != "accepted").then_some(answer)
        },
    )
    .await
}

async fn until_state(rig: &Rig, want: ConnState) {
    support::eventually(Duration::from_secs(20), "the connection state", || async {
        (state(rig) == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_event_changes_nothing() {
    let rig = cloudbeds().await;
    // The provider says the app is enabled: the event is not true.
    let answer = settled_answer(&rig, &event("test-client", "1", "disabled")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(result(&answer), "ignored", "{}", answer.text());
    assert!(answer.text().contains("enabled"), "{}", answer.text());
    assert!(rig.upstream.app_state_gets() >= 1, "the provider was asked");
    assert_eq!(state(&rig), ConnState::Connected);
    assert!(
        stored(&rig.dir, "hotel")
            .await
            .unwrap()
            .refresh_token
            .is_some()
    );
    let proxied = support::get(&format!("{}/whoami", rig.bearerd.proxy("hotel")), None)
        .await
        .unwrap();
    assert_eq!(proxied.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_for_a_property_the_grant_does_not_cover_changes_nothing() {
    let rig = cloudbeds().await;
    rig.upstream.set_app_state("1", "disabled");
    let answer = settled_answer(&rig, &event("test-client", "999", "disabled")).await;
    assert_eq!(result(&answer), "ignored", "{}", answer.text());
    assert!(answer.text().contains("match"), "{}", answer.text());
    assert_eq!(state(&rig), ConnState::Connected);
    assert!(
        stored(&rig.dir, "hotel")
            .await
            .unwrap()
            .refresh_token
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_confirmed_event_disconnects_without_telling_the_provider() {
    let rig = cloudbeds().await;
    rig.upstream.set_app_state("1", "disabled");
    let answer = post_event(&rig, &event("test-client", "1", "disabled")).await;
    assert!(
        ["disconnected", "accepted"].contains(&result(&answer).as_str()),
        "{}",
        answer.text()
    );
    until_state(&rig, ConnState::Disconnected).await;
    let record = stored(&rig.dir, "hotel").await.unwrap();
    assert!(record.refresh_token.is_none() && record.access_token.is_none());
    assert_eq!(
        rig.upstream.app_state_posts(),
        0,
        "the provider already knows"
    );
    assert_eq!(rig.tokens.revoke_requests(), 0);
    // Cloudbeds retries: acknowledged, nothing else happens.
    let retry = post_event(&rig, &event("test-client", "1", "disabled")).await;
    assert_eq!(retry.status, StatusCode::OK);
    assert_eq!(result(&retry), "ignored", "{}", retry.text());
    assert_eq!(
        stored(&rig.dir, "hotel").await.unwrap().generation,
        record.generation
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_token_confirms_the_event() {
    let rig = cloudbeds().await;
    // An uninstall ends every session: getAppState with our token gets 401.
    rig.tokens.disconnect();
    post_event(&rig, &event("test-client", "1", "disabled")).await;
    until_state(&rig, ConnState::Disconnected).await;
    assert!(rig.upstream.app_state_gets() >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn events_that_cannot_be_ours_are_ignored_without_asking() {
    let rig = cloudbeds().await;
    for body in [
        event("someone-else", "1", "disabled"),
        event("test-client", "1", "enabled"),
        r#"{"clientID":"test-client","newState":"disabled"}"#.to_owned(),
        r#"{"event":"reservation/created","clientID":"test-client","propertyID":1,"newState":"disabled"}"#.to_owned(),
    ] {
        let answer = post_event(&rig, &body).await;
        assert_eq!(answer.status, StatusCode::OK, "{body}");
        assert_eq!(result(&answer), "ignored", "{body}: {}", answer.text());
    }
    let malformed = post_event(&rig, "{nope").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(rig.upstream.app_state_gets(), 0);
    assert_eq!(state(&rig), ConnState::Connected);

    // A form body works too.
    rig.upstream.set_app_state("1", "disabled");
    let form = [("content-type", "application/x-www-form-urlencoded")];
    admin_post(
        &rig,
        "/webhooks/hotel",
        &form,
        "client_id=test-client&app_state=disabled&propertyID=1",
    )
    .await;
    until_state(&rig, ConnState::Disconnected).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_generic_oauth2_connection_takes_no_app_state_webhooks() {
    let rig = rig_with(Options::default()).await;
    assert_eq!(connect(&rig).await.status, StatusCode::OK);
    let answer = post_event(&rig, &event("test-client", "1", "disabled")).await;
    assert_eq!(result(&answer), "ignored", "{}", answer.text());
    assert_eq!(state(&rig), ConnState::Connected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_while_the_refresher_hangs_is_answered_and_disconnects_once() {
    let rig = cloudbeds().await;
    let conn = rig.bearerd.app.connection("hotel").unwrap();
    let generation = stored(&rig.dir, "hotel").await.unwrap().generation;
    let saves = r#"bearerd_store_operations_total{op="save",result="ok"}"#;
    let saves_before = rig.bearerd.metric(saves).await;

    // The refresher is busy: a forced refresh whose token request hangs.
    rig.tokens.script(Failure::Stall);
    let admin = rig.bearerd.admin.clone();
    let refresh = tokio::spawn(async move {
        let request = http::Request::post(format!("{admin}/connections/hotel/refresh"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        support::send(request).await
    });
    support::eventually(
        Duration::from_secs(10),
        "the token request to hang",
        || async { (rig.tokens.in_flight() == 1).then_some(()) },
    )
    .await;

    rig.upstream.set_app_state("1", "disabled");
    let body = event("test-client", "1", "disabled");
    let answers: Vec<_> = (0..200)
        .map(|_| {
            let url = format!("{}/webhooks/hotel", rig.bearerd.admin);
            let body = body.clone();
            tokio::spawn(async move {
                let request = http::Request::post(url)
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .unwrap();
                support::send(request).await.unwrap()
            })
        })
        .collect();
    for answer in answers {
        let answer = answer.await.unwrap();
        // Confirmed, but the disconnect waits for the refresher: not done, so not claimed.
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
        assert_eq!(result(&answer), "accepted");
    }
    // Every answer came while the token request still hung.
    assert_eq!(
        rig.tokens.in_flight(),
        1,
        "the token endpoint is still stalled"
    );
    assert_eq!(
        rig.upstream.app_state_gets(),
        1,
        "one confirmation for the burst"
    );
    assert_eq!(conn.snapshot().state, ConnState::Refreshing);

    rig.tokens.release_stalled();
    until_state(&rig, ConnState::Disconnected).await;
    refresh.await.unwrap().unwrap();
    // One save for the refresh that hung, one for the disconnect.
    let record = stored(&rig.dir, "hotel").await.unwrap();
    assert_eq!(record.generation, generation + 2);
    assert!(record.refresh_token.is_none());
    assert_eq!(rig.bearerd.metric(saves).await, saves_before + 2.0);
    assert_eq!(rig.upstream.app_state_gets(), 1);
}
