//! The admin routes of the connect flow: start (redirect to the provider), callback (code
//! exchange by the refresher, then the probe) and disconnect. Provider text shown on their
//! pages is scrubbed of every secret known on the path.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::respond::{AdminResponse, html, json_response, redirect};
use super::{Admin, AdminConnection, Probe};
use crate::connect::{STATE_LIFETIME, pages};
use crate::scrub::scrub;
use crate::secret::SecretString;
use crate::token::{Command, ConnState, Connection, DisconnectReport};

/// Longest the callback waits for the code exchange.
const EXCHANGE_WAIT: Duration = Duration::from_secs(60);
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
const PROBE_SHOWN: usize = 4096;

impl Admin {
    /// Starts a flow and redirects to the provider with `status` (302 for a GET, 303 after
    /// the confirming POST).
    pub(super) async fn start_connect(
        &self,
        c: &AdminConnection,
        status: StatusCode,
    ) -> AdminResponse {
        let Some(settings) = &c.connect else {
            let why = match c.connection.snapshot().last_error.clone() {
                Some(error) if c.connection.snapshot().state == ConnState::Misconfigured => error,
                _ => "this connection uses client_credentials: there is nothing to connect".into(),
            };
            return html(StatusCode::CONFLICT, pages::problem("Cannot connect", &why));
        };
        if c.tenants.is_some() {
            // An app has no grant of its own: connecting it installs a tenant.
            return self.install(c, None).await;
        }
        let now = Instant::now();
        let url = self.flows.start(&c.connection.name, settings, now);
        self.share_flow(&url).await;
        let (done, published) = oneshot::channel();
        let until = now + STATE_LIFETIME;
        if c.connection
            .command(Command::Authorizing { until, done })
            .await
        {
            let _ = published.await;
        }
        redirect(status, url.as_str())
    }

    pub(super) async fn callback(&self, uri: &http::Uri) -> AdminResponse {
        let query: Vec<(String, String)> =
            form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let (pending, code) = match self.finish_flow(&query).await {
            Ok(done) => done,
            Err((connection, error)) => {
                let c = connection.as_deref().and_then(|n| self.find(n));
                if let Some(c) = c {
                    let (done, published) = oneshot::channel();
                    if c.connection
                        .command(Command::AuthorizingEnded { done })
                        .await
                    {
                        let _ = published.await;
                    }
                }
                let secret = c.and_then(|c| c.client_secret.as_ref());
                let text = scrub(&error.to_string(), &secrets(&[secret]));
                return html(
                    StatusCode::BAD_REQUEST,
                    pages::problem("Not connected", &text),
                );
            }
        };
        let Some(c) = self.find(&pending.connection) else {
            return html(
                StatusCode::BAD_REQUEST,
                pages::problem("Not connected", "that connection no longer exists"),
            );
        };
        if let Some(tenants) = &c.tenants {
            let hint = pending.install.clone().flatten();
            return self.finish_install(c, tenants, pending, code, hint).await;
        }
        // Everything this path knows that must never be shown, whatever the provider echoes.
        let known = [
            c.client_secret.clone(),
            Some(code.clone()),
            Some(pending.verifier.clone()),
        ];
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
                    Some(probe) => Some(run_probe(&c.connection, probe, &known).await),
                    None => None,
                };
                html(
                    StatusCode::OK,
                    pages::connected(&c.connection.name, generation, probe.as_deref()),
                )
            }
            Err(error) => {
                let known: Vec<Option<&SecretString>> = known.iter().map(Option::as_ref).collect();
                let error = scrub(&error, &secrets(&known));
                html(
                    StatusCode::BAD_GATEWAY,
                    pages::problem(
                        "Not connected",
                        &format!("the provider did not exchange the code: {error}"),
                    ),
                )
            }
        }
    }

    /// Keeps the flow started with `url` in the store for the other replicas (the provider
    /// may send the browser back to any of them). A failure is logged; this replica can
    /// still finish the flow.
    pub(super) async fn share_flow(&self, url: &url::Url) {
        let (Some(store), Some(flow)) = (&self.shared_flows, self.flows.shareable(url)) else {
            return;
        };
        match store.flow_put(&flow).await {
            Ok(true) => self.flows.mark_shared(url),
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(connection = %flow.connection, %error, "cannot share a connect flow with the other replicas; its callback must come back to this one");
            }
        }
    }

    /// Finds a callback's flow: here, or kept in the store by the replica that started it.
    /// Either way the store's copy is taken, so no replica honours the callback twice.
    async fn finish_flow(
        &self,
        query: &[(String, String)],
    ) -> Result<
        (crate::connect::Pending, SecretString),
        (Option<String>, crate::connect::CallbackError),
    > {
        let now = Instant::now();
        let local = self.flows.finish(query, now);
        let Some(store) = &self.shared_flows else {
            return local;
        };
        let Some(state) = query.iter().find(|(k, _)| k == "state").map(|(_, v)| v) else {
            return local;
        };
        let key = crate::store::flows::FlowRecord::key_of(state);
        let shared = store.flow_take(&key).await;
        use crate::connect::CallbackError::UnknownState;
        match (local, shared) {
            (Err((None, UnknownState)), Ok(Some(flow))) => {
                self.flows.finish_shared(query, flow, now)
            }
            // Kept in the store, and no longer there: another replica finished it. Redeeming
            // the code again would fail, and a provider may revoke the grant the code gave.
            (Ok((pending, _)), Ok(None)) if pending.shared => {
                Err((Some(pending.connection), UnknownState))
            }
            (Ok((pending, _)), Err(error)) if pending.shared => {
                tracing::warn!(%error, "cannot read shared connect flows; refusing a callback another replica may have finished");
                Err((Some(pending.connection), UnknownState))
            }
            (local, Err(error)) => {
                tracing::warn!(%error, "cannot read shared connect flows");
                local
            }
            (local, _) => local,
        }
    }

    pub(super) async fn disconnect(&self, c: &AdminConnection, from_page: bool) -> AdminResponse {
        let response = self.disconnect_cell(c, &c.connection, from_page).await;
        if from_page {
            return redirect(StatusCode::SEE_OTHER, "/");
        }
        response
    }

    /// Disconnects `connection` (the connection's own cell, or one of its tenants') and
    /// answers with the report.
    pub(super) async fn disconnect_cell(
        &self,
        c: &AdminConnection,
        connection: &Connection,
        from_page: bool,
    ) -> AdminResponse {
        let report = disconnect(
            connection,
            true,
            "disconnected from the admin listener",
            EXCHANGE_WAIT,
        )
        .await;
        if from_page {
            return redirect(StatusCode::SEE_OTHER, "/");
        }
        let secret = [c.client_secret.as_ref()];
        let clean = |text: Option<String>| text.map(|t| scrub(&t, &secrets(&secret)));
        match report {
            Some(mut report) => {
                report.provider_error = clean(report.provider_error.take());
                report.store_error = clean(report.store_error.take());
                json_response(
                    StatusCode::OK,
                    &json!({"state": "disconnected", "report": report}),
                )
            }
            None => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": "bearerd is shutting down or the disconnect took too long"}),
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

/// The secrets that are present, as `scrub` takes them.
fn secrets<'a>(known: &[Option<&'a SecretString>]) -> Vec<&'a str> {
    known.iter().flatten().map(|s| s.secret()).collect()
}

/// `GET probe` with the new token; what it answered (scrubbed of `known` and the token), for
/// the success page.
async fn run_probe(
    connection: &Connection,
    probe: &Probe,
    known: &[Option<SecretString>],
) -> String {
    let token = match connection.token().await {
        Ok(token) => token,
        Err(error) => return format!("no token for the probe: {error}"),
    };
    let mut hide: Vec<&str> = known.iter().flatten().map(SecretString::secret).collect();
    hide.push(token.secret());
    let request = http::Request::get(probe.uri.clone())
        .header(token.name.clone(), token.header.clone())
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
            .map_err(|e| crate::upstream::error_chain(&e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), 1 << 20)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body).into_owned();
        Ok::<_, String>(format!(
            "GET {} -> HTTP {}\n{text}",
            probe.uri.path(),
            status.as_u16()
        ))
    };
    let shown = match tokio::time::timeout(PROBE_TIMEOUT, exchange).await {
        Ok(Ok(text)) => text,
        Ok(Err(error)) => format!("the probe failed: {error}"),
        Err(_) => "the probe timed out".into(),
    };
    // Scrubbed whole, then cut: a cut first could leave half a secret unrecognised.
    scrub(&shown, &hide).chars().take(PROBE_SHOWN).collect()
}
