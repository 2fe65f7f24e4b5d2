//! Server-rendered HTML: the status page ([`status`], in its own file) and the connect
//! result pages.
//! Plain HTML and a little CSS: fast, no build step, readable on a phone. Every value is
//! escaped; no token, secret or code is ever rendered.

mod status_page;
pub mod when;

pub use status_page::{AppTenants, Expiry, Row, Standing, status};

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;padding:1rem;color:#1d2330;background:#f6f7f9}\
h1{font-size:1.4rem}table{border-collapse:collapse;width:100%;background:#fff}\
th,td{padding:.6rem;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}\
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

/// A page; `head` goes after the shared style, so a page's own CSS wins over it.
pub(crate) fn page_with(title: &str, body: &str, head: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{title}</title><style>{STYLE}</style>{head}</head><body>{body}</body></html>",
        title = escape(title),
    )
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
