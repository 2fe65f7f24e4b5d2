//! `POST /webhooks/NAME`: Cloudbeds app-state events, confirmed before they act.
//!
//! The answer must come within 2 s (Cloudbeds counts a slower one as failed and retries),
//! and must say what was done, not what will be. So the confirmation ([`AppStateCheck`]) and
//! the disconnect run in a background task; the request waits for it at most
//! [`ANSWER_BUDGET`] and then answers `accepted` (202) if it is still going - a busy refresher
//! (a token request that hangs for the whole `token_timeout`) never holds a webhook answer.
//! While a confirmation for a connection and property is under way, the same event joins it
//! instead of starting another, so a burst runs one confirmation and at most one disconnect.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http::header::RETRY_AFTER;
use serde_json::json;
use tokio::sync::{oneshot, watch};

use super::respond::{AdminResponse, json_response};
use super::{Admin, AdminConnection};
use crate::connect::webhook::{self, confirm::Answer, confirm::AppStateCheck};
use crate::token::{Command, Connection};

/// Longest a webhook request waits for its confirmation before answering `accepted`.
pub const ANSWER_BUDGET: Duration = Duration::from_millis(1500);
/// Confirmations under way per connection for different properties; more are answered 503
/// (Cloudbeds retries), so a flood of made-up property ids cannot turn into a flood of
/// getAppState calls against the provider's rate limit.
const MAX_CONFIRMING: usize = 4;
/// Longest a confirmed disconnect waits for the refresher (which may be in a token request).
const DISCONNECT_WAIT: Duration = Duration::from_secs(300);

/// How a confirmation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Disconnected,
    /// The provider did not confirm the event; nothing changed.
    NotConfirmed(String),
    /// Confirmed, but the refresher did not carry out the disconnect (shutting down).
    Failed(String),
}

type Key = (String, String);
type InFlight = HashMap<Key, watch::Receiver<Option<Verdict>>>;

/// Confirmations under way, by connection and property.
#[derive(Default, Clone)]
pub struct Confirmations {
    in_flight: Arc<Mutex<InFlight>>,
}

/// Removes a confirmation from the map when its task ends, however it ends.
struct Done {
    in_flight: Arc<Mutex<InFlight>>,
    key: Key,
}

impl Drop for Done {
    fn drop(&mut self) {
        lock(&self.in_flight).remove(&self.key);
    }
}

fn lock(map: &Mutex<InFlight>) -> MutexGuard<'_, InFlight> {
    // Insert and remove only: a panic while holding the lock cannot leave it inconsistent.
    map.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Confirmations {
    /// Joins the confirmation of (`connection`, `property`) under way, or starts `work` as
    /// a new one. `None` when too many are under way for the connection.
    fn join_or_start<F>(
        &self,
        connection: &str,
        property: &str,
        work: F,
    ) -> Option<watch::Receiver<Option<Verdict>>>
    where
        F: Future<Output = Verdict> + Send + 'static,
    {
        let key = (connection.to_owned(), property.to_owned());
        let mut map = lock(&self.in_flight);
        if let Some(joined) = map.get(&key) {
            return Some(joined.clone());
        }
        if map.keys().filter(|(c, _)| c == connection).count() >= MAX_CONFIRMING {
            return None;
        }
        let (verdict, receiver) = watch::channel(None);
        map.insert(key.clone(), receiver.clone());
        let done = Done {
            in_flight: Arc::clone(&self.in_flight),
            key,
        };
        tokio::spawn(async move {
            let _done = done;
            let _ = verdict.send(Some(work.await));
        });
        Some(receiver)
    }
}

impl Admin {
    pub(super) async fn webhook(
        &self,
        c: &AdminConnection,
        content_type: &str,
        body: &Bytes,
    ) -> AdminResponse {
        let Some(event) = webhook::parse(content_type, body) else {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "expected a JSON or form body"}),
            );
        };
        let ignored = |reason: &str| {
            json_response(
                StatusCode::OK,
                &json!({"result": "ignored", "reason": reason}),
            )
        };
        if c.client_id.is_none() || event.client_id != c.client_id {
            return ignored("not this connection's clientID");
        }
        if event
            .event
            .as_deref()
            .is_some_and(|e| !e.eq_ignore_ascii_case("integration/appstate_changed"))
        {
            return ignored("not an integration/appstate_changed event");
        }
        if event.new_state.as_deref() != Some("disabled") {
            return ignored("the new app state is not disabled");
        }
        let Some(check) = &c.app_state else {
            return ignored("this connection's provider has no app-state webhooks to confirm");
        };
        let Some(property) = event.property_id else {
            return ignored("the event names no propertyID");
        };
        let state = c.connection.snapshot().state;
        if state.is_dead_end() {
            return ignored(&format!("the connection is already {}", state.as_str()));
        }
        let work = confirm(
            Arc::clone(&c.connection),
            Arc::clone(check),
            property.clone(),
        );
        let Some(mut verdict) =
            self.confirmations
                .join_or_start(&c.connection.name, &property, work)
        else {
            let mut busy = json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"result": "busy", "reason": "too many events are being confirmed"}),
            );
            busy.headers_mut()
                .insert(RETRY_AFTER, http::HeaderValue::from_static("60"));
            return busy;
        };
        let waited = tokio::time::timeout(ANSWER_BUDGET, verdict.wait_for(Option::is_some)).await;
        let verdict = match waited {
            Ok(Ok(verdict)) => verdict.clone(),
            _ => None,
        };
        match verdict {
            Some(Verdict::Disconnected) => {
                json_response(StatusCode::OK, &json!({"result": "disconnected"}))
            }
            Some(Verdict::NotConfirmed(reason)) => {
                ignored(&format!("the provider did not confirm the event: {reason}"))
            }
            Some(Verdict::Failed(reason)) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"result": "failed", "reason": reason}),
            ),
            None => json_response(
                StatusCode::ACCEPTED,
                &json!({"result": "accepted", "reason": "confirming with the provider"}),
            ),
        }
    }
}

/// Confirms the event with the provider and, if it is confirmed, disconnects.
async fn confirm(
    connection: Arc<Connection>,
    check: Arc<AppStateCheck>,
    property: String,
) -> Verdict {
    let name = connection.name.clone();
    let token = match connection.token().await {
        Ok(token) => token,
        Err(error) => {
            let reason = format!("no token to ask the provider with ({error})");
            tracing::info!(connection = %name, %property, %reason, "app-state event not confirmed; nothing changed");
            return Verdict::NotConfirmed(reason);
        }
    };
    let why = match check.ask(&property, &token).await {
        Answer::Disabled => "getAppState answered disabled",
        // Only the token in use: one replaced meanwhile says nothing about the grant.
        Answer::TokenRejected if connection.generation() == token.generation => {
            "the provider rejected the access token"
        }
        Answer::TokenRejected => {
            let reason = "the token was replaced while asking; ask again".to_owned();
            tracing::info!(connection = %name, %property, %reason, "app-state event not confirmed; nothing changed");
            return Verdict::NotConfirmed(reason);
        }
        Answer::NotConfirmed(reason) => {
            tracing::info!(connection = %name, %property, %reason, "app-state event not confirmed; nothing changed");
            return Verdict::NotConfirmed(reason);
        }
    };
    tracing::info!(connection = %name, %property, why, "app-state event confirmed; disconnecting");
    let (reply, report) = oneshot::channel();
    let command = Command::Disconnect {
        notify_provider: false,
        reason: format!("the provider reported the app disabled for property {property} ({why})"),
        reply: Some(reply),
    };
    if !connection.command(command).await {
        return Verdict::Failed("bearerd is shutting down".into());
    }
    match tokio::time::timeout(DISCONNECT_WAIT, report).await {
        Ok(Ok(_)) => Verdict::Disconnected,
        _ => Verdict::Failed("the disconnect did not finish".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_same_event_joins_and_too_many_properties_are_refused() {
        let confirmations = Confirmations::default();
        let (release, released) = watch::channel(false);
        let work = |mut released: watch::Receiver<bool>| async move {
            let _ = released.wait_for(|r| *r).await;
            Verdict::NotConfirmed("test".into())
        };
        let first = confirmations
            .join_or_start("hotel", "1", work(released.clone()))
            .unwrap();
        let joined = confirmations
            .join_or_start("hotel", "1", async { unreachable!("joins, never runs") })
            .unwrap();
        assert!(first.same_channel(&joined));
        for property in 2..=MAX_CONFIRMING {
            let property = property.to_string();
            assert!(
                confirmations
                    .join_or_start("hotel", &property, work(released.clone()))
                    .is_some()
            );
        }
        assert!(
            confirmations
                .join_or_start("hotel", "99", work(released.clone()))
                .is_none()
        );
        // Another connection is not affected.
        assert!(
            confirmations
                .join_or_start("other", "99", work(released.clone()))
                .is_some()
        );

        release.send_replace(true);
        let mut first = first;
        let verdict = first.wait_for(Option::is_some).await.unwrap().clone();
        assert_eq!(verdict, Some(Verdict::NotConfirmed("test".into())));
        // Finished confirmations leave the map: the next event starts a new one.
        // The spawned tasks end once released; give them turns to do so.
        for _ in 0..10_000 {
            if lock(&confirmations.in_flight).is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(lock(&confirmations.in_flight).is_empty());
    }
}
