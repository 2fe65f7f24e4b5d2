//! Authorization-code grant of the test token server (PROVIDERS.md §4 rule 3).
//!
//! `GET /authorize` checks `client_id` and `redirect_uri` (a bad one gets a 400 page, never a
//! redirect), then `response_type=code` and PKCE (only `S256`; a challenge without a method
//! would mean `plain` and is refused; both errors redirect with `error=invalid_request` or
//! `unsupported_response_type`). It serves a login form; a good login gets a consent form
//! carrying a single-use ticket; Allow redirects with a `code`, Deny with `error=access_denied`.
//! Codes are single use, live 10 minutes and are bound to client, `redirect_uri` and challenge.
//! A replayed code also revokes the grant it issued (RFC 6749 §4.1.2). A failed exchange
//! (wrong verifier or `redirect_uri`) does not consume the code.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::wire::{json_resp, oauth_error, param};
use super::{BoxError, Inner, Resp, TokenServer, pages};

/// Lifetime of a code and of a login ticket.
pub(super) const CODE_TTL: Duration = Duration::from_secs(600);

/// One `GET /authorize` as received (its parsed query, before any check).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthorizeLog {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
}

/// A validated authorization request.
#[derive(Clone, Debug)]
pub(super) struct AuthRequest {
    client_id: String,
    redirect_uri: String,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
}

pub(super) struct Code {
    request: AuthRequest,
    user: String,
    expires_at: Instant,
    /// The grant this code was exchanged for (`Some` once used).
    grant: Option<u64>,
}

/// A logged-in user's pending consent.
pub(super) struct Ticket {
    request: AuthRequest,
    user: String,
    expires_at: Instant,
}

impl AuthRequest {
    fn hidden_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("response_type", "code".to_owned()),
            ("client_id", self.client_id.clone()),
            ("redirect_uri", self.redirect_uri.clone()),
        ];
        let optional = [
            ("scope", &self.scope),
            ("state", &self.state),
            ("code_challenge", &self.code_challenge),
        ];
        fields.extend(
            optional
                .into_iter()
                .filter_map(|(k, v)| Some((k, v.clone()?))),
        );
        if self.code_challenge.is_some() {
            fields.push(("code_challenge_method", "S256".to_owned()));
        }
        fields
    }

    /// Where the browser goes next: `redirect_uri` plus `params` and `state`.
    fn redirect(&self, params: &[(&str, &str)]) -> Resp {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.extend_pairs(params);
        if let Some(state) = &self.state {
            query.append_pair("state", state);
        }
        let sep = if self.redirect_uri.contains('?') {
            '&'
        } else {
            '?'
        };
        let location = format!("{}{sep}{}", self.redirect_uri, query.finish());
        let mut r = pages::html(StatusCode::FOUND, String::new());
        if let Ok(v) = HeaderValue::from_str(&location) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        r
    }
}

/// BASE64URL-no-pad(SHA256(verifier)), RFC 7636 §4.2.
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn is_pkce_string(s: &str, min: usize) -> bool {
    (min..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

fn validate(inner: &Inner, form: &[(String, String)]) -> Result<AuthRequest, Box<Resp>> {
    let get = |k| param(form, k).map(str::to_owned);
    let page = |msg: &str| Box::new(pages::error_page(StatusCode::BAD_REQUEST, msg));
    if get("client_id").as_deref() != Some(inner.cfg.client_id.as_str()) {
        return Err(page(
            "Unknown client_id: this application is not registered.",
        ));
    }
    let redirect_uri = get("redirect_uri").unwrap_or_default();
    let uri_ok = url::Url::parse(&redirect_uri)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.fragment().is_none());
    if !uri_ok {
        return Err(page("Missing or invalid redirect_uri."));
    }
    let request = AuthRequest {
        client_id: inner.cfg.client_id.clone(),
        redirect_uri,
        scope: get("scope"),
        state: get("state"),
        code_challenge: get("code_challenge"),
    };
    let fail = |error, desc| {
        Err(Box::new(
            request.redirect(&[("error", error), ("error_description", desc)]),
        ))
    };
    if get("response_type").as_deref() != Some("code") {
        return fail("unsupported_response_type", "response_type must be code");
    }
    match (
        &request.code_challenge,
        get("code_challenge_method").as_deref(),
    ) {
        (None, None) => {}
        (Some(c), Some("S256")) if is_pkce_string(c, 43) => {}
        (Some(_), Some("S256")) => return fail("invalid_request", "malformed code_challenge"),
        _ => return fail("invalid_request", "code_challenge_method must be S256"),
    }
    Ok(request)
}

async fn read_form(req: Request<Incoming>) -> Result<Vec<(String, String)>, BoxError> {
    let body = req.into_body().collect().await?.to_bytes();
    Ok(form_urlencoded::parse(&body).into_owned().collect())
}

/// `GET /authorize`: the login page.
pub(super) fn get_authorize(inner: &Inner, req: &Request<Incoming>) -> Resp {
    let query: Vec<(String, String)> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let get = |k| param(&query, k).map(str::to_owned);
    inner.state().authorize_log.push(AuthorizeLog {
        response_type: get("response_type"),
        client_id: get("client_id"),
        redirect_uri: get("redirect_uri"),
        scope: get("scope"),
        state: get("state"),
        code_challenge: get("code_challenge"),
        code_challenge_method: get("code_challenge_method"),
    });
    match validate(inner, &query) {
        Ok(request) => pages::login_page(&request.hidden_fields(), "", None),
        Err(r) => *r,
    }
}

/// `POST /authorize/login`: the consent page, or the login page again with an error.
pub(super) async fn post_login(
    inner: Arc<Inner>,
    req: Request<Incoming>,
) -> Result<Resp, BoxError> {
    let form = read_form(req).await?;
    let request = match validate(&inner, &form) {
        Ok(r) => r,
        Err(r) => return Ok(*r),
    };
    let user = param(&form, "username").unwrap_or_default().to_owned();
    let password = param(&form, "password").unwrap_or_default();
    let mut st = inner.state();
    if st.users.get(&user).is_none_or(|p| p != password) {
        let error = Some("Wrong username or password.");
        return Ok(pages::login_page(&request.hidden_fields(), &user, error));
    }
    let ticket = st.new_secret("tk_");
    let scopes: Vec<&str> = request
        .scope
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let page = pages::consent_page(&request.client_id, &user, &scopes, &ticket);
    let expires_at = Instant::now() + CODE_TTL;
    st.tickets.insert(
        ticket,
        Ticket {
            request,
            user,
            expires_at,
        },
    );
    Ok(page)
}

/// `POST /authorize/consent`: 302 back to the client with a code or `access_denied`.
pub(super) async fn post_consent(
    inner: Arc<Inner>,
    req: Request<Incoming>,
) -> Result<Resp, BoxError> {
    let form = read_form(req).await?;
    let mut st = inner.state();
    let ticket = param(&form, "ticket").and_then(|t| st.tickets.remove(t));
    let Some(ticket) = ticket.filter(|t| Instant::now() < t.expires_at) else {
        let msg = "This authorization request has expired or was already answered.";
        return Ok(pages::error_page(StatusCode::BAD_REQUEST, msg));
    };
    match param(&form, "decision") {
        Some("allow") => {
            let code = st.new_secret("ac_");
            let resp = ticket.request.redirect(&[("code", &code)]);
            let expires_at = Instant::now() + CODE_TTL;
            let (request, user) = (ticket.request, ticket.user);
            st.codes.insert(
                code,
                Code {
                    request,
                    user,
                    expires_at,
                    grant: None,
                },
            );
            Ok(resp)
        }
        Some("deny") => Ok(ticket.request.redirect(&[
            ("error", "access_denied"),
            ("error_description", "The user denied the request."),
        ])),
        _ => Ok(pages::error_page(
            StatusCode::BAD_REQUEST,
            "Missing decision.",
        )),
    }
}

/// `grant_type=authorization_code` at `POST /token` (client already authenticated).
/// The code exchange; with `key`, automatic delivery: the grant gets an API key instead of
/// tokens.
pub(super) fn exchange(inner: &Inner, form: &[(String, String)], key: bool) -> Resp {
    let bad = |desc: &str| {
        if inner.cfg.cloudbeds {
            let desc = "The authorization code is invalid or has expired.";
            json_resp(
                StatusCode::UNAUTHORIZED,
                json!({"error": "server_error", "error_description": desc}),
            )
        } else {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", desc)
        }
    };
    let Some(presented) = param(form, "code") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "missing code");
    };
    let mut st = inner.state();
    let Some(code) = st.codes.get(presented) else {
        return bad("unknown authorization code");
    };
    if let Some(grant) = code.grant {
        st.revoke_grant(grant);
        return bad("authorization code already used");
    }
    if Instant::now() >= code.expires_at {
        return bad("authorization code expired");
    }
    if code.request.client_id != inner.cfg.client_id {
        return bad("authorization code was issued to another client");
    }
    if param(form, "redirect_uri") != Some(code.request.redirect_uri.as_str()) {
        return bad("redirect_uri does not match the authorization request");
    }
    let verifier = param(form, "code_verifier");
    match (&code.request.code_challenge, verifier) {
        (None, None) => {}
        (Some(c), Some(v)) if is_pkce_string(v, 43) && pkce_challenge(v) == *c => {}
        (None, Some(_)) => return bad("code_verifier without code_challenge"),
        (Some(_), _) => return bad("code_verifier does not match code_challenge"),
    }
    let user = code.user.clone();
    let (grant, refresh) = st.new_grant();
    st.grant_users.insert(grant, user);
    if let Some(code) = st.codes.get_mut(presented) {
        code.grant = Some(grant);
    }
    if key {
        return super::keys::deliver(inner, &mut st, grant);
    }
    let access = st.issue_access(Some(grant));
    super::endpoint::success(inner, &st, &access, Some(&refresh))
}

impl TokenServer {
    /// `{base}/authorize`.
    pub fn authorize_url(&self) -> String {
        format!("{}/authorize", self.base_url())
    }
    /// Adds (or replaces) a user of the login page.
    /// Cloudbeds mode: the properties `username`'s grants cover (several: a group grant).
    pub fn set_properties(&self, username: &str, ids: &[&str]) {
        self.inner.state().properties.insert(
            username.to_owned(),
            ids.iter().map(|id| (*id).to_owned()).collect(),
        );
    }

    pub fn add_user(&self, username: &str, password: &str) {
        let mut st = self.st();
        st.users.insert(username.to_owned(), password.to_owned());
    }
    /// The user whose grant issued `access_token` (live or not); `None` for unknown tokens and
    /// for grants without a user (`seed_grant`, `client_credentials`).
    pub fn user_of(&self, access_token: &str) -> Option<String> {
        let st = self.st();
        let grant = st.access.get(access_token)?.grant?;
        st.grant_users.get(&grant).cloned()
    }
    /// Makes every outstanding code expire now (as if its 10 minutes had passed).
    pub fn expire_codes(&self) {
        let now = Instant::now();
        for code in self.st().codes.values_mut() {
            code.expires_at = now;
        }
    }
    /// Every `GET /authorize` received, in order.
    pub fn authorization_requests(&self) -> Vec<AuthorizeLog> {
        self.st().authorize_log.clone()
    }
    /// `POST /token` requests with `grant_type=authorization_code`, whatever their outcome.
    pub fn code_exchanges(&self) -> usize {
        self.st().code_exchanges
    }
}
