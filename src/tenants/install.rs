//! The install flow's second half for an app (SPEC section 9): redeem the code (for an app
//! with `grant = "api_key"`, exchange it for an API key: automatic delivery, SPEC section
//! 10), learn which tenant ids the grant covers, and hand the tokens or the key to that
//! tenant's refresher, which writes them to the store before anything uses them.

use std::time::Duration;

use bytes::Bytes;
use http::HeaderName;
use http::header::{ACCEPT, AUTHORIZATION};
use http_body_util::{BodyExt, Either, Full, Limited};
use serde_json::Value;
use tokio::sync::oneshot;

use super::{Tenants, ids};
use crate::config::Provider;
use crate::secret::SecretString;
use crate::token::Command;
use crate::token::keys::credential_value;
use crate::token::oauth::GrantRequest;

/// Longest the callback waits for the tenant's refresher to store the grant.
const STORE_WAIT: Duration = Duration::from_secs(60);
const HOTELS_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HOTELS_ANSWER: usize = 1024 * 1024;

/// A tenant installed (or reinstalled) by the flow.
#[derive(Debug, Clone)]
pub struct Installed {
    pub id: String,
    /// Every id the grant serves (one, or a group's properties).
    pub serves: Vec<String>,
    /// The property's name, when the provider said it.
    pub title: Option<String>,
    pub generation: u64,
}

impl Tenants {
    /// Redeems `code` and installs the grant as tenant `hint` (if given) or as the tenant the
    /// provider names. Nothing is stored when the provider's answer contradicts `hint`, or
    /// names no tenant and no `hint` was given. Errors are scrubbed text for the page.
    pub async fn install(
        &self,
        code: &SecretString,
        verifier: &SecretString,
        redirect_uri: &str,
        hint: Option<&str>,
    ) -> Result<Installed, String> {
        let endpoint = self
            .blueprint
            .endpoint
            .clone()
            .ok_or("the app's client credentials are unavailable")?;
        // Automatic delivery (SPEC section 10): the same code, exchanged for an API key.
        let keys = self.delivers_keys();
        let request = GrantRequest::code(keys, code, verifier, redirect_uri);
        let set = endpoint
            .request(request, &[])
            .await
            .map_err(|failure| format!("the provider did not exchange the code: {failure}"))?;
        let facts = set.facts.as_deref().cloned().unwrap_or(Value::Null);
        let mut serves = ids::covered_ids(self.provider, self.claim.as_deref(), &facts)?;
        let mut titles = Vec::new();
        if serves.is_empty() && self.provider == Provider::Cloudbeds {
            // A key goes in its own header, a token in `Authorization`.
            let header = keys.then(|| self.blueprint.keys.header.clone()).flatten();
            titles = self.ask_hotels(&set.access_token, header.as_ref()).await;
            serves = titles.iter().map(|(id, _)| id.clone()).collect();
        }
        let id = match (hint, serves.first()) {
            (Some(hint), _) if serves.is_empty() => hint.to_owned(),
            (Some(hint), _) if serves.iter().any(|s| s == hint) => hint.to_owned(),
            (Some(hint), _) => {
                return Err(format!(
                    "the grant is for {}, not for tenant {hint}; nothing was stored",
                    serves.join(", ")
                ));
            }
            (None, Some(first)) => first.clone(),
            (None, None) => {
                return Err(
                    "the provider's answer names no tenant; open the install link with ?tenant=ID"
                        .into(),
                );
            }
        };
        let covers = if serves.len() > 1 {
            serves.clone()
        } else {
            Vec::new()
        };
        let title = titles
            .into_iter()
            .find(|(t, _)| *t == id)
            .and_then(|(_, title)| title);
        let connection = self
            .get_or_create(&id)
            .ok_or_else(|| format!("`{id}` is not a valid tenant id"))?;
        let (reply, answer) = oneshot::channel();
        let command = Command::Install {
            set: Box::new(set),
            covers,
            reply,
        };
        if !connection.command(command).await {
            return Err("bearerd is shutting down".into());
        }
        let generation = match tokio::time::timeout(STORE_WAIT, answer).await {
            Ok(Ok(result)) => result?,
            _ => return Err("the tenant's grant could not be stored in time".into()),
        };
        tracing::info!(connection = %self.app, tenant = %id, serves = serves.len().max(1), generation, "tenant installed");
        Ok(Installed {
            serves: if serves.is_empty() {
                vec![id.clone()]
            } else {
                serves
            },
            id,
            title,
            generation,
        })
    }

    /// Cloudbeds: the properties a new credential serves, from `getHotels` (an API-key
    /// delivery names none in its answer). Empty when the call fails.
    async fn ask_hotels(
        &self,
        credential: &SecretString,
        key_header: Option<&HeaderName>,
    ) -> Vec<(String, Option<String>)> {
        let Ok(url) = self.upstream.join("/api/v1.3/getHotels") else {
            return Vec::new();
        };
        let Some(value) = credential_value(credential, key_header) else {
            return Vec::new();
        };
        let name = key_header.cloned().unwrap_or(AUTHORIZATION);
        let request = http::Request::get(url.as_str())
            .header(name, value)
            .header(ACCEPT, "application/json")
            .body(Either::Left(Full::new(Bytes::new())));
        let Ok(request) = request else {
            return Vec::new();
        };
        let exchange = async {
            let response = self.client.request(request).await.ok()?;
            if !response.status().is_success() {
                return None;
            }
            let body = Limited::new(response.into_body(), MAX_HOTELS_ANSWER)
                .collect()
                .await
                .ok()?
                .to_bytes();
            Some(ids::hotels(&body))
        };
        match tokio::time::timeout(HOTELS_TIMEOUT, exchange).await {
            Ok(Some(hotels)) => hotels,
            _ => {
                tracing::warn!(connection = %self.app, "getHotels did not say which properties the new grant serves");
                Vec::new()
            }
        }
    }
}
