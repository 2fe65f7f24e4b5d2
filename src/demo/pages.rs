//! The demo provider's HTML: its approval page, its console and its error page. Plain HTML,
//! every value escaped, no token ever rendered (the console shows generations and expiry).

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;

use super::provider::{DemoResponse, Stats};
use crate::connect::pages::escape;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;\
padding:0 1rem;color:#1d2330}h1{font-size:1.3rem}.box{border:1px solid #e3e6ea;border-radius:8px;\
padding:1rem;margin:1rem 0}button{padding:.5rem 1rem;border-radius:6px;border:1px solid #3056d3;\
background:#3056d3;color:#fff;font:inherit;cursor:pointer;margin-right:.5rem}\
button.secondary{background:#fff;color:#b3261e;border-color:#b3261e}.muted{color:#667085}\
td{padding:.2rem 1rem .2rem 0}";

/// What the console shows.
pub struct Console {
    pub generation: Option<u64>,
    pub expires_in: Option<Duration>,
    pub stats: Stats,
    pub token_ttl: Duration,
}

/// The page a hotel user sees when bearerd sends them to connect.
pub fn approve(redirect_uri: &str, state: &str, challenge: &str, scope: &str) -> DemoResponse {
    let hidden = |name: &str, value: &str| {
        format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
            escape(value)
        )
    };
    let body = format!(
        "<h1>Demo Hotel PMS</h1><div class=\"box\"><p><strong>bearerd demo</strong> asks to \
         access the data of <strong>Hotel Demo</strong>{scope_text}.</p>\
         <form method=\"post\" action=\"/authorize\">{}{}{}\
         <button type=\"submit\" name=\"decision\" value=\"approve\" id=\"approve\">Approve</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\" class=\"secondary\">Deny</button>\
         </form></div><p class=\"muted\">This is bearerd's simulated provider: nothing leaves \
         this machine.</p>",
        hidden("redirect_uri", redirect_uri),
        hidden("state", state),
        hidden("code_challenge", challenge),
        scope_text = if scope.is_empty() {
            String::new()
        } else {
            format!(" (scopes: {})", escape(scope))
        },
    );
    page(StatusCode::OK, "Approve bearerd demo", &body, false)
}

/// The provider's console: the grant as the provider sees it, and a way to revoke it.
pub fn console(console: &Console) -> DemoResponse {
    let grant = match (console.generation, console.expires_in) {
        (Some(generation), Some(left)) if !left.is_zero() => format!(
            "<p>Grant active. Access token #{generation} expires in <strong>{}s</strong> \
             (tokens live {}s; bearerd refreshes them before they expire).</p>",
            left.as_secs(),
            console.token_ttl.as_secs()
        ),
        (Some(generation), _) => {
            format!("<p>Grant active. Access token #{generation} has expired.</p>")
        }
        _ => "<p>No grant: nobody has approved bearerd, or the grant was revoked.</p>".to_owned(),
    };
    let s = console.stats;
    let body = format!(
        "<h1>Demo provider console</h1><div class=\"box\">{grant}\
         <form method=\"post\" action=\"/console/revoke\">\
         <button type=\"submit\" class=\"secondary\" id=\"revoke\">Revoke at provider</button>\
         </form><p class=\"muted\">Revoking ends the grant as a hotel uninstalling the app \
         would: bearerd's next refresh is rejected and the connection shows \
         needs_authorization until you connect again.</p></div>\
         <table><tr><td>authorizations</td><td>{}</td></tr>\
         <tr><td>refreshes</td><td>{}</td></tr><tr><td>rejected refreshes</td><td>{}</td></tr>\
         <tr><td>API calls</td><td>{}</td></tr><tr><td>rejected API calls</td><td>{}</td></tr>\
         <tr><td>revocations</td><td>{}</td></tr></table>",
        s.authorizations,
        s.refreshes,
        s.rejected_refreshes,
        s.api_calls,
        s.rejected_api_calls,
        s.revocations,
    );
    page(StatusCode::OK, "Demo provider", &body, true)
}

pub fn error(status: StatusCode, message: &str) -> DemoResponse {
    let body = format!("<h1>Demo provider</h1><p>{}</p>", escape(message));
    page(status, "Demo provider", &body, false)
}

fn page(status: StatusCode, title: &str, body: &str, refresh: bool) -> DemoResponse {
    let refresh = if refresh {
        "<meta http-equiv=\"refresh\" content=\"2\">"
    } else {
        ""
    };
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title>{refresh}\
         <meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head>\
         <body>{body}</body></html>",
        escape(title)
    );
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(html)))
        .unwrap_or_default()
}
