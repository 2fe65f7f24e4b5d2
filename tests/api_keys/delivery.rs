//! Automatic delivery: a `grant = "api_key"` connection is connected through the normal
//! connect flow; the callback exchanges the code with the api-key grant and stores the
//! returned `cbat_` key, encrypted at rest, before it is used; after a restart the key is
//! used as it is, and a revoked key stays stopped.

use std::time::Duration;

use crate::api_keys::rig::{STORE_KEY, cloudbeds, echoed, proxied, start, state, stored};
use crate::support::connect_rig::{Rig, connect};
use crate::support::{Bearerd, temp_store_dir};
use bearerd::token::ConnState;

const API_KEY_GRANT: &str = "urn:ietf:params:oauth:grant-type:api-key";

#[tokio::test]
async fn the_connect_flow_delivers_a_key_that_is_stored_sealed_and_used() {
    let (tokens, upstream) = cloudbeds(Duration::from_secs(3600)).await;
    let dir = temp_store_dir("key-delivery");
    let config = stored(
        "api_key",
        &tokens,
        &upstream,
        &dir,
        &format!("key = \"{STORE_KEY}\""),
    );
    let bearerd = start(&config).await;
    assert_eq!(state(&bearerd), ConnState::NeedsAuthorization);
    let rig = Rig {
        tokens: tokens.clone(),
        upstream: upstream.clone(),
        dir: dir.clone(),
        bearerd,
        config: config.clone(),
    };
    let page = connect(&rig).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let Rig { bearerd, .. } = rig;
    assert_eq!(tokens.key_deliveries(), 1);
    let grants: Vec<_> = tokens
        .token_request_log()
        .into_iter()
        .map(|l| l.grant_type.unwrap_or_default())
        .collect();
    assert_eq!(grants, [API_KEY_GRANT]);
    let key = tokens.keys_issued().pop().expect("a key was issued");
    assert!(key.starts_with("cbat_"));
    assert!(
        !page.text().contains(&key),
        "the success page never shows the key"
    );

    // Stored before use, sealed with store.key, marked as a key, no refresh token.
    let raw = std::fs::read_to_string(dir.join("hotel.json")).unwrap();
    assert!(!raw.contains(&key), "the key is encrypted at rest");
    let json: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(json["credential"], "api_key");
    assert!(
        json["access_token"]
            .as_str()
            .unwrap()
            .starts_with("enc:v1:")
    );
    assert!(json["refresh_token"].is_null());

    let answer = proxied(&bearerd, "/api/v1.3/getHotels", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(echoed(&answer, "x-api-key"), [key.as_str()]);
    assert!(echoed(&answer, "authorization").is_empty());
    bearerd.app.shutdown().await;

    // After a restart: the stored key, no token request of any kind.
    let requests_before = tokens.token_requests();
    let bearerd = start(&config).await;
    assert_eq!(state(&bearerd), ConnState::Connected);
    let answer = proxied(&bearerd, "/api/v1.3/getHotels", &[]).await;
    assert_eq!(echoed(&answer, "x-api-key"), [key.as_str()]);
    assert_eq!(tokens.token_requests(), requests_before);

    // Revoked at the provider: stopped, recorded, and still stopped after a restart.
    tokens.revoke_key(&key);
    let answer = proxied(&bearerd, "/api/v1.3/getHotels", &[]).await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    bearerd.app.shutdown().await;
    let upstream_calls = upstream.requests();
    let bearerd: Bearerd = start(&config).await;
    assert_eq!(state(&bearerd), ConnState::NeedsAuthorization);
    let answer = proxied(&bearerd, "/api/v1.3/getHotels", &[]).await;
    assert_eq!(answer.status, 503);
    assert_eq!(upstream.requests(), upstream_calls);
    assert_eq!(tokens.token_requests(), requests_before);
    bearerd.app.shutdown().await;
}
