//! The authorization-code connect flow (SPEC section 7): `GET /connections/NAME/connect`
//! redirects to the provider with a random single-use `state` (10 minutes) and a PKCE S256
//! challenge; `GET /oauth/callback` checks the state, and the refresher exchanges the code
//! (so it stays the only writer of the cell). Also the status and result pages ([`pages`])
//! and the provider's webhooks ([`webhook`]).

pub mod pages;
pub mod tenant_pages;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use url::Url;

use crate::scrub::scrub;
use crate::secret::SecretString;
use crate::store::flows::FlowRecord;

/// How long a connect flow may take between redirect and callback.
pub const STATE_LIFETIME: Duration = Duration::from_secs(600);
/// Flows started and not finished, per connection. Starting one more evicts that
/// connection's oldest: a flood of starts for one connection (a cross-site page that slipped
/// past the same-origin check, say) can neither block another connection's connect nor keep
/// the operator's own newest flow from working.
pub const MAX_PENDING_PER_CONNECTION: usize = 16;
/// The same for an app's install flows, which hotel staff start from the Marketplace (many
/// at once for a popular app). Bounded all the same: a flood evicts the oldest flows, never
/// another app's, and costs at most this many small entries.
pub const MAX_PENDING_INSTALLS: usize = 1024;

/// What a connection needs to send a browser to the provider.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    pub authorize_url: Url,
    pub client_id: String,
    pub redirect_uri: Url,
    pub scopes: Vec<String>,
}

/// A flow between redirect and callback.
pub struct Pending {
    pub connection: String,
    /// An app's install: the tenant named up front (`?tenant=`), if any.
    pub install: Option<Option<String>>,
    pub verifier: SecretString,
    pub redirect_uri: String,
    started: Instant,
    /// Kept in the store for the other replicas too: then the store's copy decides whether
    /// the flow is still open (another replica may have finished it).
    pub shared: bool,
}

/// Why a callback is refused. None of these change anything stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("the callback has no state parameter")]
    MissingState,
    #[error("the state is unknown, expired or already used; start the connect flow again")]
    UnknownState,
    #[error("the provider did not authorize the connection: {0}")]
    Denied(String),
    #[error("the callback has no code parameter")]
    MissingCode,
}

/// Flows under way, keyed by their `state`.
#[derive(Default)]
pub struct ConnectFlows {
    pending: Mutex<HashMap<String, Pending>>,
}

impl ConnectFlows {
    /// Starts a flow: returns the provider URL to redirect the browser to.
    pub fn start(&self, connection: &str, settings: &ConnectSettings, now: Instant) -> Url {
        self.begin(connection, settings, None, now)
    }

    /// Starts an app's install flow, for tenant `tenant` if it is named.
    pub fn start_install(
        &self,
        app: &str,
        settings: &ConnectSettings,
        tenant: Option<String>,
        now: Instant,
    ) -> Url {
        self.begin(app, settings, Some(tenant), now)
    }

    fn begin(
        &self,
        connection: &str,
        settings: &ConnectSettings,
        install: Option<Option<String>>,
        now: Instant,
    ) -> Url {
        let cap = match install {
            Some(_) => MAX_PENDING_INSTALLS,
            None => MAX_PENDING_PER_CONNECTION,
        };
        let state = random_token(32);
        let verifier = random_token(64);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut url = settings.authorize_url.clone();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &settings.client_id)
            .append_pair("redirect_uri", settings.redirect_uri.as_str())
            .append_pair("state", &state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if !settings.scopes.is_empty() {
            url.query_pairs_mut()
                .append_pair("scope", &settings.scopes.join(" "));
        }
        let mut pending = self.lock();
        pending.retain(|_, p| now.duration_since(p.started) < STATE_LIFETIME);
        let mut mine: Vec<(Instant, String)> = pending
            .iter()
            .filter(|(_, p)| p.connection == connection)
            .map(|(state, p)| (p.started, state.clone()))
            .collect();
        if mine.len() >= cap {
            mine.sort();
            let excess = mine.len() + 1 - cap;
            for (_, state) in mine.into_iter().take(excess) {
                pending.remove(&state);
            }
        }
        pending.insert(
            state,
            Pending {
                connection: connection.to_owned(),
                install,
                verifier: SecretString::new(verifier),
                redirect_uri: settings.redirect_uri.to_string(),
                started: now,
                shared: false,
            },
        );
        url
    }

    /// Flows under way for `connection` (for tests and the status page).
    pub fn pending(&self, connection: &str) -> usize {
        self.lock()
            .values()
            .filter(|p| p.connection == connection)
            .count()
    }

    /// Checks a callback's query. The state is used up whatever the outcome, so a replayed
    /// callback is refused. On success: the flow and the code.
    pub fn finish(
        &self,
        query: &[(String, String)],
        now: Instant,
    ) -> Result<(Pending, SecretString), (Option<String>, CallbackError)> {
        let param = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let state = param("state")
            .filter(|s| !s.is_empty())
            .ok_or((None, CallbackError::MissingState))?;
        let pending = self
            .lock()
            .remove(state)
            .filter(|p| now.duration_since(p.started) < STATE_LIFETIME)
            .ok_or((None, CallbackError::UnknownState))?;
        complete(pending, query)
    }

    /// As [`ConnectFlows::finish`] for a flow another replica started, taken from the store
    /// (which only returns it unexpired, and only once).
    pub fn finish_shared(
        &self,
        query: &[(String, String)],
        flow: FlowRecord,
        now: Instant,
    ) -> Result<(Pending, SecretString), (Option<String>, CallbackError)> {
        let pending = Pending {
            connection: flow.connection,
            install: flow.install,
            verifier: flow.verifier,
            redirect_uri: flow.redirect_uri,
            started: now,
            shared: true,
        };
        complete(pending, query)
    }

    /// The flow started with `url` (from [`ConnectFlows::start`]), as the store keeps it for
    /// the other replicas.
    pub fn shareable(&self, url: &Url) -> Option<FlowRecord> {
        let state = url
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())?;
        let pending = self.lock();
        let p = pending.get(&state)?;
        let left = STATE_LIFETIME.saturating_sub(p.started.elapsed());
        Some(FlowRecord {
            key: FlowRecord::key_of(&state),
            connection: p.connection.clone(),
            install: p.install.clone(),
            verifier: p.verifier.clone(),
            redirect_uri: p.redirect_uri.clone(),
            expires_at: SystemTime::now() + left,
        })
    }

    /// Records that the flow started with `url` is kept in the store as well.
    pub fn mark_shared(&self, url: &Url) {
        let state = url
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v);
        if let Some(state) = state
            && let Some(pending) = self.lock().get_mut(state.as_ref())
        {
            pending.shared = true;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The rest of a callback's checks, once its flow is found: the provider's refusal, or the
/// code.
fn complete(
    pending: Pending,
    query: &[(String, String)],
) -> Result<(Pending, SecretString), (Option<String>, CallbackError)> {
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let connection = Some(pending.connection.clone());
    if let Some(error) = param("error") {
        let description = param("error_description").unwrap_or("");
        let text = scrub(
            &format!("{error} {description}"),
            &[pending.verifier.secret()],
        );
        let text: String = text.chars().take(200).collect();
        return Err((connection, CallbackError::Denied(text.trim().to_owned())));
    }
    let code = param("code")
        .filter(|c| !c.is_empty())
        .ok_or((connection, CallbackError::MissingCode))?;
    Ok((pending, SecretString::new(code.to_owned())))
}

/// `bytes` random bytes, base64url without padding (RFC 7636 unreserved characters).
pub fn random_token(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::fill(&mut buffer[..]);
    URL_SAFE_NO_PAD.encode(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ConnectSettings {
        ConnectSettings {
            authorize_url: Url::parse("https://idp.example/authorize?tenant=1").unwrap(),
            client_id: "client".into(),
            redirect_uri: Url::parse("http://127.0.0.1:9901/oauth/callback").unwrap(),
            scopes: vec!["a".into(), "offline_access".into()],
        }
    }

    fn query(url: &Url) -> HashMap<String, String> {
        url.query_pairs().into_owned().collect()
    }

    fn callback(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn authorize_url_carries_state_and_pkce() {
        let flows = ConnectFlows::default();
        let now = Instant::now();
        let url = flows.start("hotel", &settings(), now);
        let q = query(&url);
        assert_eq!(q["tenant"], "1");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["scope"], "a offline_access");
        assert_eq!(q["redirect_uri"], "http://127.0.0.1:9901/oauth/callback");
        assert!(q["state"].len() >= 43);
        let (pending, code) = flows
            .finish(&callback(&[("state", &q["state"]), ("code", "c1")]), now)
            .unwrap();
        assert_eq!(code.secret(), "c1");
        let challenge =
            URL_SAFE_NO_PAD.encode(Sha256::digest(pending.verifier.secret().as_bytes()));
        assert_eq!(q["code_challenge"], challenge);
        assert!((43..=128).contains(&pending.verifier.secret().len()));
    }

    #[test]
    fn bad_states_are_refused() {
        let flows = ConnectFlows::default();
        let now = Instant::now();
        let state = query(&flows.start("hotel", &settings(), now))["state"].clone();
        let err = |r: Result<_, (Option<String>, CallbackError)>| r.err().map(|(_, e)| e);
        assert_eq!(
            err(flows.finish(&callback(&[("code", "c")]), now)),
            Some(CallbackError::MissingState)
        );
        assert_eq!(
            err(flows.finish(&callback(&[("state", "forged"), ("code", "c")]), now)),
            Some(CallbackError::UnknownState)
        );
        // Expired.
        let later = now + STATE_LIFETIME + Duration::from_secs(1);
        assert_eq!(
            err(flows.finish(&callback(&[("state", &state), ("code", "c")]), later)),
            Some(CallbackError::UnknownState)
        );
        // Single use.
        let state = query(&flows.start("hotel", &settings(), now))["state"].clone();
        assert!(
            flows
                .finish(&callback(&[("state", &state), ("code", "c")]), now)
                .is_ok()
        );
        assert_eq!(
            err(flows.finish(&callback(&[("state", &state), ("code", "c")]), now)),
            Some(CallbackError::UnknownState)
        );
        // Denied at the provider: refused, and the state is used up.
        let state = query(&flows.start("hotel", &settings(), now))["state"].clone();
        let denied = flows.finish(
            &callback(&[("state", &state), ("error", "access_denied")]),
            now,
        );
        assert!(matches!(denied, Err((Some(c), CallbackError::Denied(_))) if c == "hotel"));
        assert_eq!(
            err(flows.finish(&callback(&[("state", &state), ("code", "c")]), now)),
            Some(CallbackError::UnknownState)
        );
    }

    #[test]
    fn pending_flows_are_bounded_per_connection() {
        let flows = ConnectFlows::default();
        let now = Instant::now();
        let state = |url: Url| query(&url)["state"].clone();
        let other = state(flows.start("other", &settings(), now));
        let first = state(flows.start("hotel", &settings(), now));
        for i in 1..=(MAX_PENDING_PER_CONNECTION as u64 * 4) {
            flows.start("hotel", &settings(), now + Duration::from_millis(i));
        }
        assert_eq!(flows.pending("hotel"), MAX_PENDING_PER_CONNECTION);
        // The flood evicted hotel's oldest flow, and nothing of another connection's.
        assert_eq!(flows.pending("other"), 1);
        let finish = |state: &str| flows.finish(&callback(&[("state", state), ("code", "c")]), now);
        assert!(finish(&first).is_err());
        assert!(finish(&other).is_ok());
        let newest = state(flows.start("hotel", &settings(), now + Duration::from_secs(1)));
        assert!(finish(&newest).is_ok());
        // Expired flows go.
        flows.start(
            "hotel",
            &settings(),
            now + STATE_LIFETIME + Duration::from_secs(2),
        );
        assert_eq!(flows.pending("hotel"), 1);
    }

    #[test]
    fn a_denial_text_is_scrubbed_of_the_verifier() {
        let flows = ConnectFlows::default();
        let now = Instant::now();
        let state = query(&flows.start("hotel", &settings(), now))["state"].clone();
        let verifier = flows
            .lock()
            .get(&state)
            .map(|p| p.verifier.secret().to_owned())
            .unwrap();
        let denied = flows.finish(
            &callback(&[
                ("state", &state),
                ("error", "access_denied"),
                ("error_description", &format!("bad verifier {verifier}")),
            ]),
            now,
        );
        let Err((_, CallbackError::Denied(text))) = denied else {
            panic!("denied")
        };
        assert!(
            !text.contains(&verifier) && text.contains("[redacted]"),
            "{text}"
        );
    }
}
