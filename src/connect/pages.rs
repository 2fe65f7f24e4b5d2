//! Server-rendered HTML: the status page (one row per connection with its state and the
//! Connect / Reconnect / Disconnect buttons that fit it) and the connect result pages.
//! Plain HTML and a little CSS: fast, no build step, readable on a phone. Every value is
//! escaped; no token, secret or code is ever rendered.

use std::fmt::Write;

use crate::token::ConnState;

/// One connection as the status page shows it.
pub struct Row<'a> {
    pub name: &'a str,
    pub provider: &'a str,
    pub state: ConnState,
    /// "in 42m", "expired", "-".
    pub expires: String,
    pub last_refresh: String,
    pub last_error: Option<&'a str>,
    /// An authorization-code connection that can be (re)connected from the page.
    pub connectable: bool,
    /// An API key connection: when the key was last used ("-" if not yet known).
    pub key_last_used: Option<String>,
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;padding:1rem;color:#1d2330;background:#f6f7f9}\
h1{font-size:1.4rem}table{border-collapse:collapse;width:100%;background:#fff}\
th,td{padding:.6rem;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}\
.state{font-weight:600}.ok{color:#136c2e}.warn{color:#8a5a00}.bad{color:#b3261e}\
.button,button{display:inline-block;padding:.4rem .8rem;border-radius:6px;border:1px solid #3056d3;\
background:#3056d3;color:#fff;text-decoration:none;font:inherit;cursor:pointer;margin:.1rem}\
button.disconnect{background:#fff;color:#b3261e;border-color:#b3261e}form{display:inline}\
.muted{color:#667085;font-size:.9rem}pre{white-space:pre-wrap;word-break:break-all;background:#fff;padding:.8rem;border:1px solid #e3e6ea}\
@media(max-width:700px){thead{display:none}tr,td{display:block}td{border:none;padding:.25rem .6rem}tr{border-bottom:1px solid #e3e6ea;padding:.5rem 0}}";

/// HTML-escapes `text`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn page(title: &str, body: &str) -> String {
    page_with(title, body, "")
}

/// How often the status page reloads itself, so an open tab shows the token counting down
/// and being refreshed, and a state change, without anyone pressing reload.
const STATUS_RELOAD_SECONDS: u32 = 5;

pub(crate) fn page_with(title: &str, body: &str, head: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">{head}\
<title>{title}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        title = escape(title),
    )
}

fn state_class(state: ConnState) -> &'static str {
    match state {
        ConnState::Connected | ConnState::Refreshing => "ok",
        ConnState::Degraded | ConnState::Authorizing => "warn",
        ConnState::NeedsAuthorization | ConnState::Disconnected | ConnState::Misconfigured => "bad",
    }
}

/// What a state means, in plain words.
fn explain(state: ConnState) -> &'static str {
    match state {
        ConnState::Connected => "Connected: requests carry a valid token.",
        ConnState::Refreshing => "Connected; a token refresh is under way.",
        ConnState::Degraded => {
            "The last refresh failed; retrying. The current token is used while valid."
        }
        ConnState::Authorizing => "Waiting for someone to finish connecting at the provider.",
        ConnState::NeedsAuthorization => "Not connected: press Connect and log in at the provider.",
        ConnState::Disconnected => "Disconnected on purpose. Press Connect to connect again.",
        ConnState::Misconfigured => {
            "The configuration must be fixed by the operator (see the error)."
        }
    }
}

fn buttons(row: &Row<'_>, csrf: &str) -> String {
    let name = escape(row.name);
    let post = |action: &str, class: &str, label: &str| {
        format!(
            "<form method=\"post\" action=\"/connections/{name}/{action}\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button class=\"{class}\" type=\"submit\">{label}</button></form>"
        )
    };
    let serving = matches!(
        row.state,
        ConnState::Connected | ConnState::Refreshing | ConnState::Degraded
    );
    match (row.connectable, serving, row.state) {
        (_, _, ConnState::Misconfigured) => String::new(),
        (true, true, _) => format!(
            "<a class=\"button reconnect\" href=\"/connections/{name}/connect\">Reconnect</a>{}",
            post("disconnect", "disconnect", "Disconnect")
        ),
        (true, false, _) => {
            format!("<a class=\"button connect\" href=\"/connections/{name}/connect\">Connect</a>")
        }
        (false, true, _) => format!(
            "{}{}",
            post("refresh", "refresh", "Refresh"),
            post("disconnect", "disconnect", "Disconnect")
        ),
        (false, false, _) => post("refresh", "refresh", "Refresh"),
    }
}

/// The status page.
pub fn status(rows: &[Row<'_>], csrf: &str) -> String {
    let mut body = String::from(
        "<h1>bearerd</h1><table><thead><tr><th>Connection</th><th>State</th>\
<th>Token expires</th><th>Last refresh</th><th>Last error</th><th></th></tr></thead><tbody>",
    );
    for row in rows {
        let _ = write!(
            body,
            "<tr id=\"conn-{name}\"><td><strong>{name}</strong><br><span class=\"muted\">{provider}</span></td>\
<td><span class=\"state {class}\">{state}</span> <span class=\"muted\">({app_state})</span><br>\
<span class=\"muted\">{explain}</span></td><td>{expires}{key}</td><td>{last_refresh}</td>\
<td>{error}</td><td>{buttons}</td></tr>",
            name = escape(row.name),
            provider = escape(row.provider),
            class = state_class(row.state),
            state = row.state.as_str(),
            app_state = row.state.app_state(),
            explain = explain(row.state),
            expires = escape(&row.expires),
            key = row
                .key_last_used
                .as_deref()
                .map_or_else(String::new, |at| format!(
                    "<br><span class=\"muted key\">API key, last used {}</span>",
                    escape(at)
                )),
            last_refresh = escape(&row.last_refresh),
            error = escape(row.last_error.unwrap_or("")),
            buttons = buttons(row, csrf),
        );
    }
    body.push_str("</tbody></table><p class=\"muted\">This page reloads itself every 5 seconds. Metrics at <a href=\"/metrics\">/metrics</a>, JSON at <a href=\"/connections\">/connections</a>.</p>");
    let reload = format!("<meta http-equiv=\"refresh\" content=\"{STATUS_RELOAD_SECONDS}\">");
    page_with("bearerd status", &body, &reload)
}

/// The page after a successful connect, with what the probe returned.
pub fn connected(name: &str, generation: u64, probe: Option<&str>) -> String {
    let probe = match probe {
        Some(text) => format!("<h2>Probe</h2><pre class=\"probe\">{}</pre>", escape(text)),
        None => "<p class=\"muted\">No probe is configured for this connection.</p>".into(),
    };
    page(
        "Connected",
        &format!(
            "<h1>Connected</h1><p>Connection <strong>{name}</strong> is connected \
(token generation {generation}). Requests through it now carry its token.</p>{probe}\
<p><a href=\"/\">Back to the status page</a></p>",
            name = escape(name),
        ),
    )
}

/// The answer to a connect link followed from another site: starting a flow changes state,
/// so it takes a press of this page's same-origin button (a POST with the CSRF token).
pub fn confirm_connect(name: &str, csrf: &str) -> String {
    let name = escape(name);
    page(
        "Connect?",
        &format!(
            "<h1>Connect {name}?</h1><p>This link came from another site. Connecting sends you to the provider to authorize <strong>{name}</strong>; press the button if you meant to.</p>\
<form method=\"post\" action=\"/connections/{name}/connect\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button class=\"connect\" type=\"submit\">Continue to the provider</button></form>\
<p><a href=\"/\">Back to the status page</a></p>",
            csrf = escape(csrf),
        ),
    )
}

/// A page explaining why something was refused.
pub fn problem(title: &str, detail: &str) -> String {
    page(
        title,
        &format!(
            "<h1>{}</h1><p>{}</p><p><a href=\"/\">Back to the status page</a></p>",
            escape(title),
            escape(detail)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: ConnState, connectable: bool) -> Row<'static> {
        Row {
            name: "hotel",
            provider: "cloudbeds",
            state,
            expires: "-".into(),
            last_refresh: "-".into(),
            last_error: Some("<script>alert(1)</script>"),
            connectable,
            key_last_used: None,
        }
    }

    #[test]
    fn buttons_fit_the_state() {
        let page = status(&[row(ConnState::NeedsAuthorization, true)], "c");
        assert!(page.contains("class=\"button connect\""));
        assert!(!page.contains("Disconnect"));
        let page = status(&[row(ConnState::Connected, true)], "c");
        assert!(page.contains("Reconnect") && page.contains("class=\"disconnect\""));
        let page = status(&[row(ConnState::Misconfigured, true)], "c");
        assert!(!page.contains("<button") && !page.contains("Connect</a>"));
        let page = status(&[row(ConnState::Connected, false)], "c");
        assert!(page.contains("Refresh") && !page.contains("Connect</a>"));
    }

    #[test]
    fn the_status_page_reloads_itself_and_the_result_pages_do_not() {
        let page = status(&[row(ConnState::Connected, true)], "c");
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        assert!(!problem("t", "d").contains("http-equiv"));
    }

    #[test]
    fn values_are_escaped() {
        let page = status(&[row(ConnState::Degraded, true)], "c");
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;"));
    }
}
