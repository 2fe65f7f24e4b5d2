//! The demo provider's HTML: its approval page (with the hotel choice), its console (each
//! grant with its own revoke button) and its error page. Plain HTML, every value escaped, no
//! token ever rendered (the console shows generations and expiry).

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;

use super::clients;
use super::hotels::{HOTELS, Hotel};
use super::provider::DemoResponse;
use super::stats::Stats;
use crate::connect::pages::escape;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;\
padding:0 1rem;color:#1d2330}h1{font-size:1.3rem}.box{border:1px solid #e3e6ea;border-radius:8px;\
padding:1rem;margin:1rem 0}button{padding:.5rem 1rem;border-radius:6px;border:1px solid #3056d3;\
background:#3056d3;color:#fff;font:inherit;cursor:pointer;margin-right:.5rem}\
button.secondary{background:#fff;color:#b3261e;border-color:#b3261e}.muted{color:#667085}\
td{padding:.2rem 1rem .2rem 0}";

/// What the console shows.
pub struct Console {
    pub grants: Vec<GrantView>,
    pub stats: Stats,
    pub token_ttl: Duration,
}

/// One grant as the console shows it: never its tokens.
pub struct GrantView {
    pub client: &'static str,
    pub hotel: &'static Hotel,
    pub generation: u64,
    pub expires_in: Duration,
}

/// An authorization request the approval page asks about.
pub struct Approval<'a> {
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub state: &'a str,
    pub challenge: &'a str,
    pub scope: &'a str,
}

/// The page a hotel user sees when bearerd sends them to connect or install: they choose
/// which of their hotels the client may access.
pub fn approve(request: &Approval) -> DemoResponse {
    let hidden = |name: &str, value: &str| {
        format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
            escape(value)
        )
    };
    let choices: String = HOTELS
        .iter()
        .enumerate()
        .map(|(i, h)| {
            format!(
                "<p><label><input type=\"radio\" name=\"hotel\" value=\"{id}\" \
                 id=\"hotel-{id}\"{checked}> <strong>{name}</strong> \
                 <span class=\"muted\">({id})</span></label></p>",
                id = escape(h.id),
                name = escape(h.name),
                checked = if i == 0 { " checked" } else { "" },
            )
        })
        .collect();
    let body = format!(
        "<h1>Demo Hotel PMS</h1><div class=\"box\"><p><strong>{who}</strong> asks to \
         access the data of one of your hotels{scope_text}. Which one?</p>\
         <form method=\"post\" action=\"/authorize\">{choices}{}{}{}{}\
         <button type=\"submit\" name=\"decision\" value=\"approve\" id=\"approve\">Approve</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\" class=\"secondary\">Deny</button>\
         </form></div><p class=\"muted\">This is bearerd's simulated provider: nothing leaves \
         this machine.</p>",
        hidden("client_id", request.client_id),
        hidden("redirect_uri", request.redirect_uri),
        hidden("state", request.state),
        hidden("code_challenge", request.challenge),
        who = clients::title(request.client_id),
        scope_text = if request.scope.is_empty() {
            String::new()
        } else {
            format!(" (scopes: {})", escape(request.scope))
        },
    );
    page(StatusCode::OK, "Approve bearerd demo", &body, false)
}

/// The provider's console: each grant as the provider sees it, each with a way to revoke it.
pub fn console(console: &Console) -> DemoResponse {
    let grants: String = console.grants.iter().map(grant_row).collect();
    let grants = if grants.is_empty() {
        "<p>No grant: nobody has approved bearerd, or every grant was revoked.</p>".to_owned()
    } else {
        format!(
            "<p>Tokens live {}s; bearerd refreshes them before they expire.</p>\
             <table>{grants}</table>",
            console.token_ttl.as_secs()
        )
    };
    let s = &console.stats;
    let per_hotel: String = HOTELS
        .iter()
        .map(|h| {
            let c = s.hotels.get(h.id).copied().unwrap_or_default();
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(h.name),
                c.authorizations,
                c.refreshes,
                c.api_calls,
                c.revocations
            )
        })
        .collect();
    let body = format!(
        "<h1>Demo provider console</h1><div class=\"box\">{grants}\
         <p class=\"muted\">Revoking ends a grant as a hotel uninstalling the app \
         would: bearerd's next refresh is rejected and that connection (or that hotel of the \
         app) needs authorization until it is connected again.</p></div>\
         <table><tr><td></td><td>authorizations</td><td>refreshes</td><td>API calls</td>\
         <td>revocations</td></tr>{per_hotel}\
         <tr><td>all hotels</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>\
         <p class=\"muted\">Rejected: {} refreshes, {} API calls.</p>",
        s.authorizations,
        s.refreshes,
        s.api_calls,
        s.revocations,
        s.rejected_refreshes,
        s.rejected_api_calls,
    );
    page(StatusCode::OK, "Demo provider", &body, true)
}

/// One grant's line: hotel, client, current token, and its "Revoke at provider" button.
fn grant_row(grant: &GrantView) -> String {
    let expiry = if grant.expires_in.is_zero() {
        "has expired".to_owned()
    } else {
        format!(
            "expires in <strong>{}s</strong>",
            grant.expires_in.as_secs()
        )
    };
    format!(
        "<tr id=\"grant-{client}-{hotel}\"><td><strong>{name}</strong></td><td>{who}</td>\
         <td>access token #{generation} {expiry}</td><td>\
         <form method=\"post\" action=\"/console/revoke\">\
         <input type=\"hidden\" name=\"client\" value=\"{client}\">\
         <input type=\"hidden\" name=\"hotel\" value=\"{hotel}\">\
         <button type=\"submit\" class=\"secondary revoke\">Revoke at provider</button>\
         </form></td></tr>",
        client = escape(grant.client),
        hotel = escape(grant.hotel.id),
        name = escape(grant.hotel.name),
        who = clients::title(grant.client),
        generation = grant.generation,
    )
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
