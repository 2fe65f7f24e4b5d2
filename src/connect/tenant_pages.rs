//! An app's HTML pages (SPEC section 9): the page after an install, and the tenant table
//! (counts by state, search, filter, one page at a time so it stays usable with 10,000
//! tenants). Everything shown is escaped; no token is ever on a page.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::Value;

use super::pages::{escape, page, page_with};
use crate::tenants::list::ListQuery;
use crate::token::ConnState;

/// After an install: which tenant (and which properties its grant serves), and its state.
pub fn installed(app: &str, id: &str, covers: &[String], state: ConnState) -> String {
    let serves = if covers.len() > 1 {
        format!(
            "<p>This grant serves {} properties: {}.</p>",
            covers.len(),
            escape(&covers.join(", "))
        )
    } else {
        String::new()
    };
    let (title, text) = match state {
        ConnState::Connected | ConnState::Refreshing => (
            "Installed",
            "is connected: the app's requests for it now carry its own token.",
        ),
        _ => ("Installed", "is installed; its state is shown below."),
    };
    page(
        title,
        &format!(
            "<h1>{title}</h1><p>Property <strong>{id}</strong> {text}</p>{serves}\
<p>App <strong>{app}</strong>, state <strong>{state}</strong>. You can close this page.</p>",
            id = escape(id),
            app = escape(app),
            state = escape(state.as_str()),
        ),
    )
}

/// The tenant table of an app.
#[allow(clippy::too_many_arguments)]
pub fn table(
    app: &str,
    counts: &BTreeMap<&'static str, usize>,
    rows: &[Value],
    query: &ListQuery,
    next: Option<&str>,
    csrf: &str,
    _now: SystemTime,
) -> String {
    let app_e = escape(app);
    let total: usize = counts.values().sum();
    let mut summary: Vec<String> = ["needs_authorization", "misconfigured", "degraded"]
        .iter()
        .filter_map(|s| {
            counts
                .get(s)
                .map(|n| format!("<strong>{n} {}</strong>", s.replace('_', " ")))
        })
        .collect();
    for (state, n) in counts {
        if !matches!(*state, "needs_authorization" | "misconfigured" | "degraded") {
            summary.push(format!("{n} {}", state.replace('_', " ")));
        }
    }
    let mut body = format!(
        "<h1>{app_e}: {total} tenants</h1><p>{}</p>\
<form method=\"get\" action=\"/connections/{app_e}/page\">\
<input name=\"q\" placeholder=\"tenant id\" value=\"{q}\"> \
<select name=\"state\"><option value=\"\">any state</option>{options}</select> \
<button type=\"submit\">Search</button></form>\
<table><thead><tr><th>Tenant</th><th>State</th><th>Serves</th><th>Token expires (key: last used)</th><th>Last error</th><th></th></tr></thead><tbody>",
        summary.join(", "),
        q = escape(query.q.as_deref().unwrap_or("")),
        options = ConnState::ALL
            .iter()
            .map(|s| {
                let selected = if query.state.as_deref() == Some(s.as_str()) {
                    " selected"
                } else {
                    ""
                };
                format!("<option{selected}>{}</option>", s.as_str())
            })
            .collect::<String>(),
    );
    for row in rows {
        let id = escape(row["id"].as_str().unwrap_or(""));
        let state = row["state"].as_str().unwrap_or("");
        let serves = row["covers"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let form = |action: &str, label: &str| {
            format!(
                "<form method=\"post\" action=\"/connections/{app_e}/tenants/{id}/{action}\" style=\"display:inline\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\">{label}</button></form>",
                csrf = escape(csrf),
            )
        };
        body.push_str(&format!(
            "<tr class=\"{state}\"><td>{id}</td><td>{state_e}</td><td>{serves}</td><td style=\"white-space:nowrap\">{expires}</td><td>{error}</td>\
<td style=\"white-space:nowrap\"><a href=\"/connections/{app_e}/tenants/{id}/connect\">Reconnect</a> {refresh} {disconnect}</td></tr>",
            state_e = escape(state),
            serves = escape(&serves),
            expires = escape(&expiry_or_last_use(row)),
            error = escape(row["last_error"].as_str().unwrap_or("")),
            refresh = form("refresh", "Refresh"),
            disconnect = form("disconnect", "Disconnect"),
        ));
    }
    body.push_str("</tbody></table>");
    if let Some(next) = next {
        let mut link = form_urlencoded::Serializer::new(String::new());
        link.append_pair("cursor", next);
        // The next page is as long as this one (`?limit=` would otherwise fall back to 50).
        link.append_pair("limit", &query.limit.to_string());
        if let Some(q) = &query.q {
            link.append_pair("q", q);
        }
        if let Some(state) = &query.state {
            link.append_pair("state", state);
        }
        body.push_str(&format!(
            "<p><a href=\"/connections/{app_e}/page?{}\">Next page</a></p>",
            escape(&link.finish())
        ));
    }
    body.push_str(&format!(
        "<p class=\"muted\">Install link for hotel staff: <code>/connections/{app_e}/install</code>. JSON at <a href=\"/connections/{app_e}/tenants\">/connections/{app_e}/tenants</a>. <a href=\"/\">Back to the status page</a></p>"
    ));
    page_with(&format!("{app} tenants"), &body, "")
}

/// A token's expiry, or for an API key (never expires, SPEC section 10) its last use.
fn expiry_or_last_use(row: &Value) -> String {
    if row["credential"] == "api_key" {
        let used = row["last_used_at"].as_str().unwrap_or("-");
        format!("API key, last used {used}")
    } else {
        row["access_expires_at"].as_str().unwrap_or("-").to_owned()
    }
}
