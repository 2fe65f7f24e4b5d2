//! The admin routes of the connect flow: start (redirect to the provider), callback (code
//! exchange by the refresher, then the probe), disconnect, and provider webhooks.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http::header::AUTHORIZATION;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::respond::{AdminResponse, html, json_response, redirect};
use super::{Admin, AdminConnection, Probe};
use crate::connect::{STATE_LIFETIME, pages, webhook};
use crate::token::{Command, ConnState, Connection, DisconnectReport};

/// Longest the callback waits for the code exchange.
const EXCHANGE_WAIT: Duration = Duration::from_secs(60);
/// Webhooks must be answered within 2 s; the disconnect usually finishes well before.
const WEBHOOK_WAIT: Duration = Duration::from_millis(1500);
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
const PROBE_SHOWN: usize = 4096;

impl Admin {
    pub(super) async fn start_connect(&self, c: &AdminConnection) -> AdminResponse {
        let Some(settings) = &c.connect else {
            let why = match c.connection.snapshot().last_error.clone() {
                Some(error) if c.connection.snapshot().state == ConnState::Misconfigured => error,
                _ => "this connection uses client_credentials: there is nothing to connect".into(),
            };
            return html(StatusCode::CONFLICT, pages::problem("Cannot connect", &why));
        };
        let now = Instant::now();
        match self.flows.start(&c.connection.name, settings, now) {
            Ok(url) => {
                let (done, published) = oneshot::channel();
                let until = now + STATE_LIFETIME;
                if c.connection
                    .command(Command::Authorizing { until, done })
                    .await
                {
                    let _ = published.await;
                }
                redirect(StatusCode::FOUND, url.as_str())
            }
            Err(error) => html(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::problem("Try again later", &error.to_string()),
            ),
        }
    }

    pub(super) async fn callback(&self, uri: &http::Uri) -> AdminResponse {
        let query: Vec<(String, String)> =
            form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let (pending, code) = match self.flows.finish(&query, Instant::now()) {
            Ok(done) => done,
            Err((connection, error)) => {
                if let Some(c) = connection.as_deref().and_then(|n| self.find(n)) {
                    c.connection.command(Command::AuthorizingEnded).await;
                }
                return html(
                    StatusCode::BAD_REQUEST,
                    pages::problem("Not connected", &error.to_string()),
                );
            }
        };
        let Some(c) = self.find(&pending.connection) else {
            return html(
                StatusCode::BAD_REQUEST,
                pages::problem("Not connected", "that connection no longer exists"),
            );
        };
        let (reply, answer) = oneshot::channel();
        let sent = c
            .connection
            .command(Command::Exchange {
                code,
                verifier: pending.verifier,
                redirect_uri: pending.redirect_uri,
                reply,
            })
            .await;
        let result = match tokio::time::timeout(EXCHANGE_WAIT, answer).await {
            Ok(Ok(result)) if sent => result,
            _ => Err("bearerd is shutting down or the exchange took too long".into()),
        };
        match result {
            Ok(generation) => {
                let probe = match &c.probe {
                    Some(probe) => Some(run_probe(&c.connection, probe).await),
                    None => None,
                };
                html(
                    StatusCode::OK,
                    pages::connected(&c.connection.name, generation, probe.as_deref()),
                )
            }
            Err(error) => html(
                StatusCode::BAD_GATEWAY,
                pages::problem(
                    "Not connected",
                    &format!("the provider did not exchange the code: {error}"),
                ),
            ),
        }
    }

    pub(super) async fn disconnect(&self, c: &AdminConnection, from_page: bool) -> AdminResponse {
        let report = disconnect(
            &c.connection,
            true,
            "disconnected from the admin listener",
            EXCHANGE_WAIT,
        )
        .await;
        if from_page {
            return redirect(StatusCode::SEE_OTHER, "/");
        }
        match report {
            Some(report) => json_response(
                StatusCode::OK,
                &json!({"state": "disconnected", "report": report}),
            ),
            None => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": "bearerd is shutting down or the disconnect took too long"}),
            ),
        }
    }

    /// Cloudbeds `integration/appstate_changed`; idempotent under the provider's retries.
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
        if c.client_id.is_none() || event.client_id != c.client_id {
            return json_response(
                StatusCode::OK,
                &json!({"ignored": "not this connection's clientID"}),
            );
        }
        match event.new_state.as_deref() {
            Some("disabled") => {
                if c.connection.snapshot().state == ConnState::Disconnected {
                    return json_response(StatusCode::OK, &json!({"state": "disconnected"}));
                }
                let reason = "the provider reported the app disabled";
                disconnect(&c.connection, false, reason, WEBHOOK_WAIT).await;
                json_response(StatusCode::OK, &json!({"state": "disconnected"}))
            }
            other => json_response(
                StatusCode::OK,
                &json!({"ignored": format!("app state {}", other.unwrap_or("missing"))}),
            ),
        }
    }
}

/// Asks the refresher to disconnect and waits up to `wait` for its report.
async fn disconnect(
    connection: &Connection,
    notify_provider: bool,
    reason: &str,
    wait: Duration,
) -> Option<DisconnectReport> {
    let (reply, answer) = oneshot::channel();
    let command = Command::Disconnect {
        notify_provider,
        reason: reason.to_owned(),
        reply: Some(reply),
    };
    if !connection.command(command).await {
        return None;
    }
    tokio::time::timeout(wait, answer).await.ok()?.ok()
}

/// `GET probe` with the new token; what it answered, for the success page.
async fn run_probe(connection: &Connection, probe: &Probe) -> String {
    let token = match connection.token().await {
        Ok(token) => token,
        Err(error) => return format!("no token for the probe: {error}"),
    };
    let request = http::Request::get(probe.uri.clone())
        .header(AUTHORIZATION, token.header)
        .header("accept", "application/json")
        .body(http_body_util::Either::Left(Full::new(Bytes::new())));
    let Ok(request) = request else {
        return "the probe request could not be built".into();
    };
    let exchange = async {
        let response = probe
            .client
            .request(request)
            .await
            .map_err(|e| crate::proxy::error_chain(&e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), 1 << 20)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text: String = String::from_utf8_lossy(&body)
            .chars()
            .take(PROBE_SHOWN)
            .collect();
        Ok::<_, String>(format!(
            "GET {} -> HTTP {}\n{text}",
            probe.uri.path(),
            status.as_u16()
        ))
    };
    match tokio::time::timeout(PROBE_TIMEOUT, exchange).await {
        Ok(Ok(text)) => text,
        Ok(Err(error)) => format!("the probe failed: {error}"),
        Err(_) => "the probe timed out".into(),
    }
}
