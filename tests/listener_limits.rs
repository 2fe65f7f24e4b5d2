//! Client limits and exposure on the listeners (SPEC section 13), black-box on real sockets:
//! slow heads, idle keep-alive connections and stalled bodies are closed (408 for the body),
//! heads over 64 KiB get 431, `max_connections` closes one connection too many at once
//! while the others and the other listener keep answering, and `allow_clients` answers 403.
//!
//! The proxy cases run through hyper (`fast_path = false`, the path of https upstreams) or
//! on connections the fast path hands to hyper; the fast path's own timers are tested with
//! the wire-level cases. Timeouts are configured short (300 ms) and the other timeouts long
//! (60 s), so a close within the support code's 10 s wait can only come from the one under
//! test.
//!
//! [`timeouts`]: slow heads, idle connections, stalled bodies; [`heads`]: the 64 KiB head
//! limit; [`admission`]: `max_connections` and `allow_clients`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[path = "listener_limits/admission.rs"]
mod admission;
#[path = "listener_limits/heads.rs"]
mod heads;
#[path = "listener_limits/timeouts.rs"]
mod timeouts;

use bearerd::app::App;
use bearerd::config::Config;
use support::raw_upstream::{Response, Wire};
use support::{Bearerd, TokenServer, TokenServerConfig, Upstream};

const NAME: &str = "api";
const HYPER: &str = "[runtime]\nfast_path = false\n";

struct Rig {
    _tokens: TokenServer,
    upstream: Upstream,
    bearerd: Bearerd,
}

/// bearerd with one client_credentials connection `NAME`; `connection` is more of its keys,
/// `tables` whole tables after it (`[limits]`, `[runtime]`), `admin_allow` the admin
/// listener's `allow_clients`.
async fn rig(connection: &str, tables: &str, admin_allow: &[&str]) -> Rig {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    let extra = format!("{connection}\n{tables}");
    let mut config = Config::from_toml_str(&support::cc_config(NAME, &tokens, &upstream, &extra))
        .expect("test config is valid");
    config.admin.allow_clients = admin_allow.iter().map(|n| n.parse().unwrap()).collect();
    let app = App::start(config).await.expect("bearerd starts");
    let admin = format!("http://{}", app.admin_addr);
    Rig {
        _tokens: tokens,
        upstream,
        bearerd: Bearerd { app, admin },
    }
}

fn limits(lines: &str) -> String {
    format!("[limits]\n{lines}\n")
}

impl Rig {
    fn proxy(&self) -> String {
        self.bearerd.proxy(NAME)
    }

    fn admin(&self) -> String {
        self.bearerd.admin.clone()
    }
}

/// `METHOD PATH` with the `Host` of `base` (a listener's URL) and `more` header lines.
fn request(method: &str, path: &str, base: &str, more: &str) -> Vec<u8> {
    let host = base.trim_start_matches("http://");
    format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n{more}\r\n").into_bytes()
}

async fn exchange(wire: &mut Wire, bytes: &[u8]) -> Response {
    wire.send(bytes).await.unwrap();
    wire.read_response(false).await.unwrap()
}

/// A connection to `base` that has had one `GET path` answered 200, so the listener has
/// certainly accepted it.
async fn answered(base: &str, path: &str) -> Wire {
    let mut wire = Wire::connect(base).await.unwrap();
    let response = exchange(&mut wire, &request("GET", path, base, "")).await;
    assert_eq!(response.status, 200, "{response:?}");
    wire
}
