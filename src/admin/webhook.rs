//! `POST /webhooks/NAME`: Cloudbeds app-state events, confirmed before they act.
//!
//! The answer must come within 2 s (Cloudbeds counts a slower one as failed and retries),
//! and must say what was done, not what will be. So the confirmation ([`AppStateCheck`]) and
//! the disconnect run in a background task; the request waits for it at most
//! [`ANSWER_BUDGET`] and then answers `accepted` (202) if it is still going - a busy refresher
//! (a token request that hangs for the whole `token_timeout`) never holds a webhook answer.
//! While a confirmation for a connection and property is under way, the same event joins it
//! instead of starting another, so a burst runs one confirmation and at most one disconnect.
//! A connection starts at most [`MAX_STARTS`] confirmations a minute and runs at most
//! [`MAX_CONFIRMING`] at once; events beyond get 503 and `Retry-After` (Cloudbeds retries
//! five times, a minute apart). Cloudbeds counts API calls per client id (10 a second) and
//! may suspend credentials that exceed it, so forged events must not become provider calls
//! at the attacker's rate. A genuine event lost to a flood is not lost for long: an uninstall
//! ends the sessions, and the next API call or refresh finds out.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http::header::RETRY_AFTER;
use serde_json::json;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::respond::{AdminResponse, json_response};
use super::{Admin, AdminConnection};
use crate::connect::webhook::{self, confirm::Answer, confirm::AppStateCheck};
use crate::token::{Command, Connection};

/// Longest a webhook request waits for its confirmation before answering `accepted`.
pub const ANSWER_BUDGET: Duration = Duration::from_millis(1500);
/// Confirmations under way per connection (for different properties).
pub const MAX_CONFIRMING: usize = 4;
/// Confirmations a connection starts per [`WINDOW`].
pub const MAX_STARTS: usize = 12;
const WINDOW: Duration = Duration::from_secs(60);
/// Longest a confirmed disconnect waits for the refresher (which may be in a token request).
const DISCONNECT_WAIT: Duration = Duration::from_secs(300);

const DISABLED: &str = "getAppState answered disabled";

/// How a confirmation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Disconnected,
    /// A group grant stopped serving the property; it keeps serving the others.
    Uncovered,
    /// The provider did not confirm the event; nothing changed.
    NotConfirmed(String),
    /// Confirmed, but the refresher did not carry out the disconnect (shutting down).
    Failed(String),
}

type Key = (String, String);

#[derive(Default)]
struct State {
    in_flight: HashMap<Key, watch::Receiver<Option<Verdict>>>,
    /// When each connection's confirmations of the last [`WINDOW`] started.
    started: HashMap<String, VecDeque<Instant>>,
}

/// Confirmations under way, by connection and property.
#[derive(Default, Clone)]
pub struct Confirmations {
    state: Arc<Mutex<State>>,
}

/// Removes a confirmation from the map when its task ends, however it ends.
struct Done {
    state: Arc<Mutex<State>>,
    key: Key,
}

impl Drop for Done {
    fn drop(&mut self) {
        lock(&self.state).in_flight.remove(&self.key);
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Small inserts and removals only: a panic while holding the lock cannot leave it
    // inconsistent.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Confirmations {
    /// Joins the confirmation of (`connection`, `property`) under way, or starts `work` as
    /// a new one. `None` when the connection has too many under way or started too many
    /// in the last minute.
    fn join_or_start<F>(
        &self,
        connection: &str,
        property: &str,
        now: Instant,
        work: F,
    ) -> Option<watch::Receiver<Option<Verdict>>>
    where
        F: Future<Output = Verdict> + Send + 'static,
    {
        let key = (connection.to_owned(), property.to_owned());
        let mut state = lock(&self.state);
        if let Some(joined) = state.in_flight.get(&key) {
            return Some(joined.clone());
        }
        let running = state.in_flight.keys().filter(|(c, _)| c == connection);
        if running.count() >= MAX_CONFIRMING {
            return None;
        }
        let started = state.started.entry(connection.to_owned()).or_default();
        while started
            .front()
            .is_some_and(|at| now.duration_since(*at) >= WINDOW)
        {
            started.pop_front();
        }
        if started.len() >= MAX_STARTS {
            return None;
        }
        started.push_back(now);
        let (verdict, receiver) = watch::channel(None);
        state.in_flight.insert(key.clone(), receiver.clone());
        let done = Done {
            state: Arc::clone(&self.state),
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
        // An app's event is about the tenant whose grant serves the property (SPEC 9).
        let connection = match &c.tenants {
            None => Arc::clone(&c.connection),
            Some(tenants) => match tenants.serving(&property) {
                Some(tenant) => tenant,
                None => return ignored("no tenant of this app serves that propertyID"),
            },
        };
        let state = connection.snapshot().state;
        if state.is_dead_end() {
            return ignored(&format!("the connection is already {}", state.as_str()));
        }
        let work = confirm(connection, Arc::clone(check), property.clone());
        let name = &c.connection.name;
        let joined = self
            .confirmations
            .join_or_start(name, &property, Instant::now(), work);
        let Some(mut verdict) = joined else {
            let mut busy = json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"result": "busy", "reason": "too many events to confirm; retry in a minute"}),
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
            Some(Verdict::Uncovered) => json_response(
                StatusCode::OK,
                &json!({"result": "property_removed", "reason": "the group grant keeps serving its other properties"}),
            ),
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
        Answer::Disabled => DISABLED,
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
    tracing::info!(connection = %name, %property, why, "app-state event confirmed");
    // A group grant stops serving just this property; any other grant, or one whose token
    // the provider rejected, is disconnected.
    let (reply, serving) = oneshot::channel();
    let disabled = why == DISABLED;
    let uncover = Command::Uncover {
        id: property.clone(),
        reply,
    };
    if disabled && !connection.command(uncover).await {
        return Verdict::Failed("bearerd is shutting down".into());
    }
    if disabled && let Ok(Ok(true)) = tokio::time::timeout(DISCONNECT_WAIT, serving).await {
        return Verdict::Uncovered;
    }
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

    async fn gated(mut released: watch::Receiver<bool>) -> Verdict {
        let _ = released.wait_for(|r| *r).await;
        Verdict::NotConfirmed("test".into())
    }

    async fn until_idle(confirmations: &Confirmations) {
        // The spawned tasks end once released; give them turns to do so.
        for _ in 0..10_000 {
            if lock(&confirmations.state).in_flight.is_empty() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("confirmations still under way");
    }

    #[tokio::test]
    async fn the_same_event_joins_and_too_many_properties_are_refused() {
        let confirmations = Confirmations::default();
        let now = Instant::now();
        let (release, released) = watch::channel(false);
        let start = |connection: &str, property: &str| {
            confirmations.join_or_start(connection, property, now, gated(released.clone()))
        };
        let mut first = start("hotel", "1").unwrap();
        let joined = confirmations
            .join_or_start("hotel", "1", now, async {
                unreachable!("joins, never runs")
            })
            .unwrap();
        assert!(first.same_channel(&joined));
        for property in 2..=MAX_CONFIRMING {
            assert!(start("hotel", &property.to_string()).is_some());
        }
        assert!(start("hotel", "99").is_none());
        // Another connection is not affected.
        assert!(start("other", "99").is_some());

        release.send_replace(true);
        let verdict = first.wait_for(Option::is_some).await.unwrap().clone();
        assert_eq!(verdict, Some(Verdict::NotConfirmed("test".into())));
        // Finished confirmations leave the map.
        until_idle(&confirmations).await;
    }

    #[tokio::test]
    async fn a_connection_starts_a_bounded_number_a_minute() {
        let confirmations = Confirmations::default();
        let now = Instant::now();
        let done = || async { Verdict::NotConfirmed("test".into()) };
        for property in 0..MAX_STARTS {
            let started = confirmations.join_or_start("hotel", &property.to_string(), now, done());
            assert!(started.is_some());
            until_idle(&confirmations).await;
        }
        assert!(
            confirmations
                .join_or_start("hotel", "x", now, done())
                .is_none()
        );
        assert!(
            confirmations
                .join_or_start("other", "x", now, done())
                .is_some()
        );
        let later = now + WINDOW;
        assert!(
            confirmations
                .join_or_start("hotel", "x", later, done())
                .is_some()
        );
    }
}
