//! The status page an on-call person reads in two seconds: a summary line, then one row per
//! connection with problems first. Each row says in plain words where the connection stands,
//! what the app points at (the proxy's base URL) and where that goes (the upstream), when
//! its token expires and was last refreshed, the last error of a problem, and the buttons
//! that fit. A deliberate disconnect and a connection that was never connected are neutral,
//! not errors. The page reloads itself; it has no script (the CSP allows none).

use std::fmt::Write;
use std::time::SystemTime;

use super::{escape, page_with, when};
use crate::token::ConnState;

/// One connection as the status page shows it. Rendered by one function ([`row`]), so a
/// new part of a row (an app's tenant counts, say) is a field here and a cell there.
pub struct Row<'a> {
    pub name: &'a str,
    pub provider: &'a str,
    pub state: ConnState,
    /// Never held a grant: nothing was ever stored or connected (generation 0).
    pub never_connected: bool,
    /// The base URL the app points at, e.g. `http://127.0.0.1:8081`.
    pub listen: String,
    pub upstream: &'a str,
    pub token: Expiry,
    pub last_refresh: Option<SystemTime>,
    pub last_error: Option<&'a str>,
    /// An authorization-code connection that can be (re)connected from the page.
    pub connectable: bool,
    /// An app's tenants (SPEC section 9); `None` for a connection with one grant.
    pub tenants: Option<AppTenants>,
    /// An API key connection (SPEC section 10): `Some(when the key was last used)`.
    pub api_key: Option<Option<SystemTime>>,
}

/// An app's tenants as its row shows them: how many in each state.
pub struct AppTenants {
    pub counts: Vec<(ConnState, usize)>,
}

/// The access token's expiry as the page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No token.
    None,
    /// A valid token the provider gave no lifetime: it lasts until a 401.
    Unknown,
    /// A valid token expiring then.
    At(SystemTime),
    /// The token expired then.
    Expired(SystemTime),
}

/// Where a connection stands, as a person acts on it. Declared in the page's order:
/// problems first, then what waits on someone, then what works, then what was switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Standing {
    NeedsAuthorization,
    Misconfigured,
    Degraded,
    Authorizing,
    NotConnectedYet,
    Connected,
    Refreshing,
    Disconnected,
}

impl Standing {
    pub fn of(state: ConnState, never_connected: bool) -> Standing {
        match state {
            ConnState::NeedsAuthorization if never_connected => Self::NotConnectedYet,
            ConnState::NeedsAuthorization => Self::NeedsAuthorization,
            ConnState::Misconfigured => Self::Misconfigured,
            ConnState::Degraded => Self::Degraded,
            ConnState::Authorizing => Self::Authorizing,
            ConnState::Connected => Self::Connected,
            ConnState::Refreshing => Self::Refreshing,
            ConnState::Disconnected => Self::Disconnected,
        }
    }

    /// The row's label.
    pub fn label(self) -> &'static str {
        match self {
            Self::NeedsAuthorization => "Needs authorization",
            Self::Misconfigured => "Misconfigured",
            Self::Degraded => "Degraded",
            Self::Authorizing => "Authorizing",
            Self::NotConnectedYet => "Not connected yet",
            Self::Connected => "Connected",
            Self::Refreshing => "Refreshing",
            Self::Disconnected => "Disconnected",
        }
    }

    /// The summary's word; a refresh in flight is still connected.
    fn counted_as(self) -> Standing {
        match self {
            Self::Refreshing => Self::Connected,
            other => other,
        }
    }

    /// Someone must act (or the provider is failing): red or amber, listed first.
    pub fn is_problem(self) -> bool {
        matches!(
            self,
            Self::NeedsAuthorization | Self::Misconfigured | Self::Degraded
        )
    }

    /// The CSS class of its colour.
    fn tone(self) -> &'static str {
        match self {
            Self::NeedsAuthorization | Self::Misconfigured => "bad",
            Self::Degraded => "warn",
            Self::Authorizing => "wait",
            Self::Connected | Self::Refreshing => "ok",
            Self::NotConnectedYet | Self::Disconnected => "off",
        }
    }

    /// What it means, in plain words.
    fn explain(self, connectable: bool, token: Expiry) -> &'static str {
        match self {
            Self::NeedsAuthorization => {
                "No usable grant: press Connect and log in at the provider. Requests get 503 until then."
            }
            Self::Misconfigured => {
                "The operator must fix the configuration (see the error). Requests get 503."
            }
            Self::Degraded => match token {
                Expiry::At(_) | Expiry::Unknown => {
                    "Refreshing the token fails; retrying. The current token is used while valid."
                }
                Expiry::None | Expiry::Expired(_) => {
                    "Refreshing the token fails; retrying. Requests get 503 until it works."
                }
            },
            Self::Authorizing => "Waiting for someone to finish logging in at the provider.",
            Self::NotConnectedYet if connectable => {
                "Never connected: press Connect and log in at the provider."
            }
            Self::NotConnectedYet => "Never connected.",
            Self::Connected => "Requests carry a valid token.",
            Self::Refreshing => "Connected; a token refresh is under way.",
            Self::Disconnected if connectable => {
                "Disconnected on purpose. Press Connect to connect again."
            }
            Self::Disconnected => "Disconnected on purpose.",
        }
    }
}

const STATUS_STYLE: &str = ".summary{font-size:1.1rem;margin:.2rem 0 1rem}.summary .total{font-weight:600}\
.count{white-space:nowrap}th,td{padding:.5rem .6rem}\
tr.row>td:first-child{border-left:5px solid #d0d5dd}tr.tone-bad>td:first-child{border-left-color:#b3261e}\
tr.tone-warn>td:first-child{border-left-color:#b86e00}tr.tone-ok>td:first-child{border-left-color:#1f8a3b}\
tr.tone-wait>td:first-child{border-left-color:#3056d3}\
.name{white-space:nowrap}.route{margin-top:.3rem;font-size:.9rem}\
.label{font-weight:600;white-space:nowrap}.bad{color:#b3261e}.warn{color:#8a5a00}.ok{color:#136c2e}\
.wait{color:#3056d3}.off{color:#596273}\
code.state{font-size:.8rem;color:#667085;background:#f2f4f7;padding:0 .3rem;border-radius:4px}\
.explain{margin-top:.2rem}.error{margin-top:.3rem;color:#b3261e;overflow-wrap:break-word}\
.note{margin-top:.3rem;overflow-wrap:break-word}\
.tenants{margin-top:.3rem}.when,.listen,.upstream{white-space:nowrap}.upstream{color:#667085}\
td.actions form,td.actions .button{display:block;margin:0 0 .3rem}td.actions button,td.actions .button{width:100%;text-align:center;box-sizing:border-box}";

/// How often the status page reloads itself, so an open tab shows the token counting down
/// and being refreshed, and a state change, without anyone pressing reload.
const STATUS_RELOAD_SECONDS: u32 = 5;

/// The status page at `now`: the summary, then `rows` with problems first (configuration
/// order within a standing).
pub fn status(rows: &[Row<'_>], csrf: &str, now: SystemTime) -> String {
    let mut ordered: Vec<&Row<'_>> = rows.iter().collect();
    ordered.sort_by_key(|r| Standing::of(r.state, r.never_connected));
    let mut body = format!(
        "<h1>bearerd</h1><p class=\"summary\" id=\"summary\">{}</p>\
<table><thead><tr><th>Connection</th><th>State</th>\
<th>Token expires</th><th>Last refresh</th><th></th></tr></thead><tbody>",
        summary(rows)
    );
    for r in ordered {
        body.push_str(&row(r, csrf, now));
    }
    let _ = write!(
        body,
        "</tbody></table><p class=\"muted\">This page reloads itself every {STATUS_RELOAD_SECONDS} seconds. \
Times are UTC. Metrics at <a href=\"/metrics\">/metrics</a>, JSON at <a href=\"/connections\">/connections</a>.</p>"
    );
    let head = format!(
        "<meta http-equiv=\"refresh\" content=\"{STATUS_RELOAD_SECONDS}\"><style>{STATUS_STYLE}</style>"
    );
    page_with("bearerd status", &body, &head)
}

/// "3 connections: 1 needs authorization, 2 connected", in the page's order.
fn summary(rows: &[Row<'_>]) -> String {
    let mut counts: Vec<(Standing, usize)> = Vec::new();
    for r in rows {
        let standing = Standing::of(r.state, r.never_connected).counted_as();
        match counts.iter_mut().find(|(s, _)| *s == standing) {
            Some((_, n)) => *n += 1,
            None => counts.push((standing, 1)),
        }
    }
    counts.sort();
    let total = match rows.len() {
        1 => "1 connection".to_owned(),
        n => format!("{n} connections"),
    };
    let parts: Vec<String> = counts
        .iter()
        .map(|(standing, n)| {
            format!(
                "<span class=\"count {tone}\">{n} {word}</span>",
                tone = standing.tone(),
                word = standing.label().to_lowercase(),
            )
        })
        .collect();
    if parts.is_empty() {
        return format!("<span class=\"total\">{total}</span>");
    }
    format!("<span class=\"total\">{total}:</span> {}", parts.join(", "))
}

/// One connection's row.
fn row(r: &Row<'_>, csrf: &str, now: SystemTime) -> String {
    let standing = Standing::of(r.state, r.never_connected);
    let tone = standing.tone();
    // The last error of a problem is the point of its row; a neutral row's note (the reason
    // for a disconnect) is shown quietly; a never-connected row has nothing to add.
    let error = match r.last_error {
        Some(e) if standing.is_problem() => {
            format!("<div class=\"error\">Last error: {}</div>", escape(e))
        }
        Some(_) if standing == Standing::NotConnectedYet => String::new(),
        Some(e) => format!("<div class=\"note muted\">{}</div>", escape(e)),
        None => String::new(),
    };
    let expires = match r.token {
        Expiry::None => dash(),
        Expiry::Unknown => "<span class=\"when\">until a 401</span><br>\
<span class=\"when muted\">no lifetime given</span>"
            .into(),
        Expiry::At(at) => moment(at, now, ""),
        Expiry::Expired(at) => moment(at, now, "expired "),
    };
    let expires = match r.api_key {
        Some(used) => format!(
            "<span class=\"when key\">API key, never refreshed</span><br>\
<span class=\"when muted key\">last used {}</span>",
            used.map_or_else(|| "-".to_owned(), |at| when::relative(at, now))
        ),
        None => expires,
    };
    let last_refresh = r.last_refresh.map_or_else(dash, |at| moment(at, now, ""));
    let (explain, buttons) = match &r.tenants {
        None => (standing.explain(r.connectable, r.token), buttons(r, csrf)),
        Some(_) => (
            "An app: each tenant (hotel) has a grant of its own.",
            app_buttons(r),
        ),
    };
    format!(
        "<tr id=\"conn-{name}\" class=\"row tone-{tone}\"><td><strong class=\"name\">{name}</strong> \
<span class=\"muted\">{provider}</span><div class=\"route\"><span class=\"listen\" title=\"the app's base URL\">{listen}</span><br>\
<span class=\"upstream\" title=\"forwarded to\">→ {upstream}</span></div></td>\
<td><span class=\"label {tone}\">{label}</span> <code class=\"state\">{state}</code>\
<div class=\"explain muted\">{explain}</div>{tenants}{error}</td>\
<td>{expires}</td><td>{last_refresh}</td><td class=\"actions\">{buttons}</td></tr>",
        name = escape(r.name),
        provider = escape(r.provider),
        label = standing.label(),
        state = r.state.as_str(),
        tenants = r.tenants.as_ref().map_or_else(String::new, tenant_counts),
        listen = escape(&r.listen),
        upstream = escape(r.upstream),
    )
}

/// "38 tenants: 2 needs authorization, 36 connected", problems first.
fn tenant_counts(tenants: &AppTenants) -> String {
    let mut counts: Vec<(Standing, usize)> = tenants
        .counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|&(state, n)| (Standing::of(state, false), n))
        .collect();
    counts.sort();
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    let parts: Vec<String> = counts
        .iter()
        .map(|(standing, n)| {
            format!(
                "<span class=\"count {tone}\">{n} {word}</span>",
                tone = standing.tone(),
                word = standing.label().to_lowercase(),
            )
        })
        .collect();
    let noun = if total == 1 { "tenant" } else { "tenants" };
    if parts.is_empty() {
        return format!("<div class=\"tenants\">{total} {noun}</div>");
    }
    format!(
        "<div class=\"tenants\">{total} {noun}: {}</div>",
        parts.join(", ")
    )
}

/// An app's own buttons: its tenant table, and installing a tenant when it can connect.
fn app_buttons(r: &Row<'_>) -> String {
    let name = escape(r.name);
    let table =
        format!("<a class=\"button tenants\" href=\"/connections/{name}/page\">Tenants</a>");
    if r.connectable && r.state != ConnState::Misconfigured {
        format!(
            "{table}<a class=\"button connect\" href=\"/connections/{name}/connect\">Install a tenant</a>"
        )
    } else {
        table
    }
}

fn dash() -> String {
    "<span class=\"muted\">—</span>".into()
}

/// "in 4m" over "2026-12-02 01:34Z", neither ever wrapped.
fn moment(at: SystemTime, now: SystemTime, prefix: &str) -> String {
    format!(
        "<time class=\"when\" datetime=\"{full}\" title=\"{full}\">{prefix}{relative}</time><br>\
<span class=\"when muted\">{short}</span>",
        full = when::rfc3339(at),
        relative = when::relative(at, now),
        short = when::short_utc(at),
    )
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

#[cfg(test)]
mod tests;
