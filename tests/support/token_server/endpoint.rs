//! `POST /token` and `POST /revoke` handlers of the test token server, and the routing of the
//! authorization pages (`authorize.rs`).

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use super::wire::*;
use super::*;

pub(super) async fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> Result<Resp, BoxError> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/token") => handle_token(inner, req).await,
        (&Method::POST, "/revoke") => handle_revoke(inner, req).await,
        (&Method::GET, "/authorize") => Ok(authorize::get_authorize(&inner, &req)),
        (&Method::POST, "/authorize/login") => authorize::post_login(inner, req).await,
        (&Method::POST, "/authorize/consent") => authorize::post_consent(inner, req).await,
        (
            &Method::GET,
            "/.well-known/oauth-authorization-server" | "/.well-known/openid-configuration",
        ) => {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_owned();
            Ok(discovery::document(&inner, &host))
        }
        (_, "/authorize" | "/authorize/login" | "/authorize/consent") => Ok(text_resp(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed",
        )),
        (_, "/token" | "/revoke") => Ok(oauth_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "use POST",
        )),
        _ => Ok(text_resp(StatusCode::NOT_FOUND, "text/plain", "not found")),
    }
}

struct Parsed {
    ctype: Option<String>,
    auth: Option<String>,
    body: Bytes,
    form: Result<Vec<(String, String)>, Box<Resp>>,
}

async fn read_request(inner: &Inner, req: Request<Incoming>) -> Result<Parsed, BoxError> {
    let hdr = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let ctype = hdr(header::CONTENT_TYPE);
    let auth = hdr(header::AUTHORIZATION);
    let body = req.into_body().collect().await?.to_bytes();
    let form = parse_body(ctype.as_deref(), &body, inner.cfg.cloudbeds);
    Ok(Parsed {
        ctype,
        auth,
        body,
        form,
    })
}

async fn handle_token(inner: Arc<Inner>, req: Request<Incoming>) -> Result<Resp, BoxError> {
    let _guard = InFlight::enter(&inner);
    let p = read_request(&inner, req).await?;
    let form = p.form.clone().unwrap_or_default();
    let grant_type = param(&form, "grant_type").map(str::to_owned);
    let failure = {
        let mut st = inner.state();
        st.token_requests += 1;
        match grant_type.as_deref() {
            Some("client_credentials") => st.cc_requests += 1,
            Some("refresh_token") => st.refresh_requests += 1,
            Some("authorization_code") => st.code_exchanges += 1,
            Some(keys::API_KEY_GRANT) => st.key_deliveries += 1,
            Some(keys::REFRESH_TOKEN_EXCHANGE) => st.key_exchanges += 1,
            _ => {}
        }
        st.log.push(TokenRequestLog {
            grant_type: grant_type.clone(),
            refresh_token: param(&form, "refresh_token").map(str::to_owned),
            client_auth: presented_auth(p.auth.as_deref(), &form),
            content_type: p.ctype.clone(),
            form: form.clone(),
        });
        st.script.pop_front()
    };
    match failure {
        None => Ok(process_token(&inner, p)),
        Some(Failure::Delay(d)) => {
            tokio::time::sleep(d).await;
            Ok(process_token(&inner, p))
        }
        Some(Failure::Stall) => {
            if let Ok(permit) = inner.stall.acquire().await {
                permit.forget();
            }
            Ok(process_token(&inner, p))
        }
        Some(Failure::LostResponse) => {
            let _committed = process_token(&inner, p);
            Err("scripted LostResponse: dropping the connection".into())
        }
        Some(Failure::CommitThenStall(d)) => {
            let committed = process_token(&inner, p);
            tokio::time::sleep(d).await;
            Ok(committed)
        }
        Some(Failure::EchoBody503) => Ok(oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            &format!(
                "could not process {} {}",
                p.auth.as_deref().unwrap_or("-"),
                String::from_utf8_lossy(&p.body)
            ),
        )),
        Some(f) => Ok(failure_response(&f).unwrap_or_else(|| process_token(&inner, p))),
    }
}

fn process_token(inner: &Inner, p: Parsed) -> Resp {
    let form = match p.form {
        Ok(f) => f,
        Err(r) => return *r,
    };
    if let Err(r) = check_client(inner, p.auth.as_deref(), &form) {
        return *r;
    }
    match param(&form, "grant_type") {
        Some("client_credentials") => {
            let mut st = inner.state();
            let access = st.issue_access(None);
            success(inner, &st, &access, None)
        }
        Some("refresh_token") => match param(&form, "refresh_token") {
            Some(rt) => refresh(inner, rt),
            None => oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "missing refresh_token",
            ),
        },
        Some("authorization_code") => authorize::exchange(inner, &form, false),
        Some(keys::API_KEY_GRANT) => authorize::exchange(inner, &form, true),
        Some(keys::REFRESH_TOKEN_EXCHANGE) => {
            keys::exchange_refresh(inner, param(&form, "refresh_token"))
        }
        Some(_) => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant type not supported",
        ),
        None => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "missing grant_type",
        ),
    }
}

pub(super) fn success(inner: &Inner, st: &State, access: &str, refresh: Option<&str>) -> Resp {
    let mut body = json!({"access_token": access, "token_type": "Bearer"});
    if let Some(secs) = st.expires_in(access) {
        body["expires_in"] = json!(secs);
    }
    if let Some(rt) = refresh {
        body["refresh_token"] = json!(rt);
    }
    if inner.cfg.cloudbeds {
        let grant = st.access.get(access).and_then(|a| a.grant);
        body["resources"] = resources(st, grant);
    }
    json_resp(StatusCode::OK, body)
}

/// Cloudbeds `resources[]` of `grant`: its user's properties (with an `association` entry
/// for a group grant), property `1` for a user the test gave none.
pub(super) fn resources(st: &State, grant: Option<u64>) -> serde_json::Value {
    let user = grant.and_then(|g| st.grant_users.get(&g));
    let resources = match user.and_then(|u| st.properties.get(u)) {
        Some(ids) if ids.len() > 1 => {
            std::iter::once(json!({"type": "association", "id": "group-1"}))
                .chain(ids.iter().map(|id| json!({"type": "property", "id": id})))
                .collect()
        }
        Some(ids) => ids
            .iter()
            .map(|id| json!({"type": "property", "id": id}))
            .collect(),
        None => vec![json!({"type": "property", "id": "1"})],
    };
    serde_json::Value::Array(resources)
}

fn refresh(inner: &Inner, presented: &str) -> Resp {
    let cfg = &inner.cfg;
    let bad_refresh = || {
        if cfg.cloudbeds {
            cloudbeds_invalid_refresh()
        } else {
            oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "refresh token is invalid, expired or revoked",
            )
        }
    };
    let mut st = inner.state();
    let Some((grant, state)) = st
        .refresh
        .get(presented)
        .map(|rt| (rt.grant, rt.state.clone()))
    else {
        return bad_refresh();
    };
    if st.revoked(grant) {
        return bad_refresh();
    }
    match state {
        RtState::Consumed => {
            st.reuse_detections += 1;
            if cfg.rotation == Rotation::Strict {
                st.revoke_grant(grant);
            }
            bad_refresh()
        }
        RtState::Grace { refresh, access } => {
            st.invalidate_keys_of(grant);
            st.successful_refreshes += 1;
            success(inner, &st, &access, Some(&refresh))
        }
        RtState::Active => {
            st.invalidate_keys_of(grant);
            let access = st.issue_access(Some(grant));
            if cfg.kill_previous_access_on_refresh {
                for (tok, at) in st.access.iter_mut() {
                    if at.grant == Some(grant) && *tok != access {
                        at.killed = true;
                    }
                }
            }
            let new_refresh = match cfg.rotation {
                Rotation::Reuse => presented.to_owned(),
                Rotation::Strict | Rotation::OneTime | Rotation::Grace => {
                    let rt = st.new_secret("rt_");
                    st.refresh.insert(
                        rt.clone(),
                        RefreshToken {
                            grant,
                            state: RtState::Active,
                        },
                    );
                    rt
                }
            };
            if cfg.rotation == Rotation::Grace {
                // Using this token proves the previous pair arrived: end earlier grace periods.
                for (tok, rt) in st.refresh.iter_mut() {
                    if rt.grant == grant
                        && tok != presented
                        && matches!(rt.state, RtState::Grace { .. })
                    {
                        rt.state = RtState::Consumed;
                    }
                }
                if let Some(at) = st.access.get_mut(&access) {
                    at.grace_parent = Some(presented.to_owned());
                }
            }
            let next_state = match cfg.rotation {
                Rotation::Reuse => RtState::Active,
                Rotation::Strict | Rotation::OneTime => RtState::Consumed,
                Rotation::Grace => RtState::Grace {
                    refresh: new_refresh.clone(),
                    access: access.clone(),
                },
            };
            if let Some(rt) = st.refresh.get_mut(presented) {
                rt.state = next_state;
            }
            st.successful_refreshes += 1;
            success(inner, &st, &access, Some(&new_refresh))
        }
    }
}

async fn handle_revoke(inner: Arc<Inner>, req: Request<Incoming>) -> Result<Resp, BoxError> {
    let p = read_request(&inner, req).await?;
    inner.state().revoke_requests += 1;
    let form = match p.form {
        Ok(f) => f,
        Err(r) => return Ok(*r),
    };
    if let Err(r) = check_client(&inner, p.auth.as_deref(), &form) {
        return Ok(*r);
    }
    let Some(token) = param(&form, "token") else {
        return Ok(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "missing token",
        ));
    };
    let mut st = inner.state();
    if let Some(grant) = st.refresh.get(token).map(|rt| rt.grant) {
        st.revoke_grant(grant);
    } else if let Some(at) = st.access.get_mut(token) {
        at.killed = true;
    }
    Ok(text_resp(StatusCode::OK, "text/plain", ""))
}

/// PROVIDERS.md §4 rule 2. Sending both methods at once is a 400 `invalid_request`
/// (RFC 6749 §2.3: a client MUST NOT use more than one method).
fn check_client(
    inner: &Inner,
    auth: Option<&str>,
    form: &[(String, String)],
) -> Result<(), Box<Resp>> {
    let cfg = &inner.cfg;
    let body_id = param(form, "client_id");
    let body_secret = param(form, "client_secret");
    let basic = basic_credentials(auth);
    if basic.is_some() && body_secret.is_some() {
        return Err(Box::new(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "more than one client authentication method",
        )));
    }
    if let Some(b64) = basic {
        if cfg.client_auth == ClientAuth::Post {
            return Err(Box::new(invalid_client(true)));
        }
        let (id, secret) = decode_basic(b64).ok_or_else(|| Box::new(invalid_client(true)))?;
        if body_id.is_some_and(|b| b != id) || id != cfg.client_id || secret != cfg.client_secret {
            return Err(Box::new(invalid_client(true)));
        }
        return Ok(());
    }
    match body_secret {
        Some(secret) if cfg.client_auth != ClientAuth::Basic => {
            if body_id == Some(cfg.client_id.as_str()) && secret == cfg.client_secret {
                Ok(())
            } else {
                Err(Box::new(invalid_client(auth.is_some())))
            }
        }
        _ => Err(Box::new(invalid_client(auth.is_some()))),
    }
}
