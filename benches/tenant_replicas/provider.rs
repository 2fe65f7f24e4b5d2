//! The provider of the tenant replicas bench, in the bench's process: a token endpoint with
//! strict rotation (PROVIDERS.md section 4, rule 5b: a refresh token is good once; presenting
//! a consumed one is a reuse, which revokes the tenant's grant, newest tokens included) and
//! an API that accepts a request only with a live access token of the tenant it names.
//!
//! Each replica is given its own token URL (`/rN/token`), so every refresh is known by the
//! replica that sent it. Every refresh attempt is noted: tenant, the generation of the
//! refresh token presented, replica, time, outcome.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::support::{json, serve};

/// What became of one refresh request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new access and refresh token were issued.
    Rotated,
    /// The refresh token had been used before: the grant is now revoked.
    Reuse,
    /// The grant was revoked earlier (after a reuse).
    Revoked,
    /// Not a refresh token the provider issued.
    Unknown,
}

#[derive(Debug, Clone, Copy)]
pub struct Refresh {
    pub tenant: usize,
    /// The generation of the refresh token presented (1: the seeded one).
    pub generation: u64,
    pub replica: u8,
    pub at: Instant,
    pub outcome: Outcome,
}

struct Issued {
    tenant: usize,
    generation: u64,
    used: bool,
}

struct Access {
    tenant: usize,
    expires_at: Instant,
}

#[derive(Default)]
struct State {
    refresh_tokens: HashMap<String, Issued>,
    access_tokens: HashMap<String, Access>,
    revoked: HashSet<usize>,
    refreshes: Vec<Refresh>,
    /// API answers by status.
    api: HashMap<u16, u64>,
}

#[derive(Clone)]
pub struct Provider {
    pub addr: std::net::SocketAddr,
    state: Arc<Mutex<State>>,
}

/// The tokens a tenant's grant starts with (generation 1), as written to the store.
pub fn seed_tokens(tenant: usize) -> (String, String) {
    (format!("at-t{tenant}-1"), format!("rt-t{tenant}-1"))
}

impl Provider {
    /// Serves the token endpoint (`POST /rN/token`, answered after `latency`, tokens living
    /// `lifetime`) and the API (anything else) on one port.
    pub async fn start(latency: Duration, lifetime: Duration) -> Provider {
        let state: Arc<Mutex<State>> = Arc::default();
        let shared = Arc::clone(&state);
        let addr = serve(move |request: Request<Incoming>| {
            let state = Arc::clone(&shared);
            async move {
                let path = request.uri().path().to_owned();
                match path
                    .strip_suffix("/token")
                    .and_then(|p| p.strip_prefix("/r"))
                {
                    Some(replica) => {
                        let replica = replica.parse().unwrap_or(u8::MAX);
                        let body = request.into_body().collect().await.map(|b| b.to_bytes());
                        tokio::time::sleep(latency).await;
                        token(&state, replica, &body.unwrap_or_default(), lifetime)
                    }
                    None => api(&state, &request),
                }
            }
        })
        .await;
        Provider { addr, state }
    }

    /// A grant for `tenant` whose seeded access token lives until `expires_at`.
    pub fn seed(&self, tenant: usize, expires_at: Instant) {
        let (access, refresh) = seed_tokens(tenant);
        let mut st = self.state.lock().unwrap();
        st.access_tokens
            .insert(access, Access { tenant, expires_at });
        st.refresh_tokens.insert(
            refresh,
            Issued {
                tenant,
                generation: 1,
                used: false,
            },
        );
    }

    pub fn token_url(&self, replica: u8) -> String {
        format!("http://{}/r{replica}/token", self.addr)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn refreshes(&self) -> Vec<Refresh> {
        self.state.lock().unwrap().refreshes.clone()
    }

    /// Grants revoked after a reuse.
    pub fn revoked(&self) -> usize {
        self.state.lock().unwrap().revoked.len()
    }

    /// API answers by status code.
    pub fn api_answers(&self) -> Vec<(u16, u64)> {
        let mut answers: Vec<_> = self.state.lock().unwrap().api.clone().into_iter().collect();
        answers.sort();
        answers
    }
}

fn token(
    state: &Mutex<State>,
    replica: u8,
    body: &Bytes,
    lifetime: Duration,
) -> http::Response<http_body_util::Full<Bytes>> {
    let presented = form_urlencoded::parse(body)
        .find(|(k, _)| k == "refresh_token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let mut guard = state.lock().unwrap();
    // Through a plain reference, so that fields can be borrowed apart.
    let st: &mut State = &mut guard;
    let at = Instant::now();
    let Some(issued) = st.refresh_tokens.get_mut(&presented) else {
        st.refreshes.push(Refresh {
            tenant: usize::MAX,
            generation: 0,
            replica,
            at,
            outcome: Outcome::Unknown,
        });
        return invalid_grant();
    };
    let (tenant, generation) = (issued.tenant, issued.generation);
    let outcome = if st.revoked.contains(&tenant) {
        Outcome::Revoked
    } else if issued.used {
        Outcome::Reuse
    } else {
        issued.used = true;
        Outcome::Rotated
    };
    st.refreshes.push(Refresh {
        tenant,
        generation,
        replica,
        at,
        outcome,
    });
    match outcome {
        Outcome::Rotated => {}
        Outcome::Reuse => {
            // The whole grant: every access token of the tenant dies with it.
            st.revoked.insert(tenant);
            st.access_tokens.retain(|_, a| a.tenant != tenant);
            return invalid_grant();
        }
        Outcome::Revoked | Outcome::Unknown => return invalid_grant(),
    }
    let next = generation + 1;
    let access = format!("at-t{tenant}-{next}-{}", rand::random::<u32>());
    let refresh = format!("rt-t{tenant}-{next}-{}", rand::random::<u32>());
    st.access_tokens.insert(
        access.clone(),
        Access {
            tenant,
            expires_at: at + lifetime,
        },
    );
    st.refresh_tokens.insert(
        refresh.clone(),
        Issued {
            tenant,
            generation: next,
            used: false,
        },
    );
    json(
        StatusCode::OK,
        format!(
            r#"{{"access_token":"{access}","token_type":"Bearer","expires_in":{},"refresh_token":"{refresh}"}}"#,
            lifetime.as_secs()
        ),
    )
}

fn invalid_grant() -> http::Response<http_body_util::Full<Bytes>> {
    json(
        StatusCode::BAD_REQUEST,
        r#"{"error":"invalid_grant"}"#.into(),
    )
}

/// 200 for a live access token of the tenant named in `X-Tenant` (`tN`); 401 otherwise.
fn api(
    state: &Mutex<State>,
    request: &Request<Incoming>,
) -> http::Response<http_body_util::Full<Bytes>> {
    let headers = request.headers();
    let tenant = headers
        .get("x-tenant")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix('t'))
        .and_then(|v| v.parse::<usize>().ok());
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let mut st = state.lock().unwrap();
    let live = match (tenant, token) {
        (Some(tenant), Some(token)) => st
            .access_tokens
            .get(token)
            .is_some_and(|a| a.tenant == tenant && a.expires_at > Instant::now()),
        _ => false,
    };
    let status = if live {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    *st.api.entry(status.as_u16()).or_default() += 1;
    drop(st);
    let mut response = if live {
        json(StatusCode::OK, r#"{"reservations":[]}"#.into())
    } else {
        json(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid_token"}"#.into(),
        )
    };
    if !live {
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
    }
    response
}
