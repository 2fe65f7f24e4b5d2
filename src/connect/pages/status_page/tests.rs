//! The status page's HTML without a server: order, labels, summary, times, buttons, escaping.

use std::time::{Duration, SystemTime};

use super::*;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn row(name: &'static str, state: ConnState) -> Row<'static> {
    Row {
        name,
        provider: "cloudbeds",
        state,
        never_connected: false,
        listen: "http://127.0.0.1:8081".into(),
        upstream: "https://api.cloudbeds.com",
        token: Expiry::None,
        last_refresh: None,
        last_error: None,
        connectable: true,
        tenants: None,
        api_key: None,
    }
}

/// The ids of the rows in page order.
fn order(page: &str) -> Vec<&str> {
    page.split("<tr id=\"conn-")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect()
}

/// The `<tr>` of `name`.
fn row_html<'p>(page: &'p str, name: &str) -> &'p str {
    let start = page
        .find(&format!("<tr id=\"conn-{name}\""))
        .expect("row present");
    let rest = &page[start..];
    &rest[..rest.find("</tr>").expect("row ends")]
}

fn summary_text(page: &str) -> String {
    let start = page.find("id=\"summary\">").expect("summary") + "id=\"summary\">".len();
    let html = &page[start..start + page[start..].find("</p>").expect("summary ends")];
    // Strip tags.
    let mut text = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text
}

#[test]
fn problems_come_first_and_the_summary_counts_in_page_order() {
    let mut never = row("spa", ConnState::NeedsAuthorization);
    never.never_connected = true;
    let rows = [
        row("front-desk", ConnState::Connected),
        row("housekeeping", ConnState::Disconnected),
        never,
        row("payments", ConnState::Degraded),
        row("reporting", ConnState::Misconfigured),
        row("channel-manager", ConnState::NeedsAuthorization),
        row("pos", ConnState::Refreshing),
    ];
    let page = status(&rows, "c", now());
    assert_eq!(
        order(&page),
        [
            "channel-manager",
            "reporting",
            "payments",
            "spa",
            "front-desk",
            "pos",
            "housekeeping"
        ]
    );
    assert_eq!(
        summary_text(&page),
        "7 connections: 1 needs authorization, 1 misconfigured, 1 degraded, \
1 not connected yet, 2 connected, 1 disconnected"
    );
}

#[test]
fn a_single_connection_and_none() {
    let page = status(&[row("a", ConnState::Connected)], "c", now());
    assert_eq!(summary_text(&page), "1 connection: 1 connected");
    assert_eq!(summary_text(&status(&[], "c", now())), "0 connections");
}

#[test]
fn deliberate_and_never_connected_rows_are_neutral_with_a_connect_button() {
    let mut never = row("spa", ConnState::NeedsAuthorization);
    never.never_connected = true;
    never.last_error = Some("not connected yet: press Connect on the status page");
    let mut off = row("housekeeping", ConnState::Disconnected);
    off.last_error = Some("disconnected by an operator");
    let page = status(&[never, off], "c", now());
    let never = row_html(&page, "spa");
    assert!(never.contains("class=\"row tone-off\""), "{never}");
    assert!(never.contains("<span class=\"label off\">Not connected yet</span>"));
    assert!(never.contains("class=\"button connect\""));
    assert!(!never.contains("class=\"error\"") && !never.contains("press Connect on the status"));
    let off = row_html(&page, "housekeeping");
    assert!(off.contains("class=\"row tone-off\"") && off.contains(">Disconnected</span>"));
    assert!(off.contains(">disconnected<") && off.contains("class=\"button connect\""));
    assert!(off.contains("<div class=\"note muted\">disconnected by an operator</div>"));
    assert!(!off.contains("class=\"error\""));
}

#[test]
fn problems_show_their_last_error_in_red() {
    let mut dead = row("channel-manager", ConnState::NeedsAuthorization);
    dead.last_error = Some("token endpoint answered HTTP 400 invalid_grant");
    let page = status(&[dead], "c", now());
    let dead = row_html(&page, "channel-manager");
    assert!(dead.contains("class=\"row tone-bad\""));
    assert!(dead.contains(
        "<div class=\"error\">Last error: token endpoint answered HTTP 400 invalid_grant</div>"
    ));
}

#[test]
fn no_cloudbeds_app_state_words() {
    let rows: Vec<Row<'static>> = ConnState::ALL.iter().map(|s| row("x", *s)).collect();
    let page = status(&rows, "c", now());
    for word in [
        "(disabled)",
        "(enabled)",
        "(pending)",
        ">disabled<",
        ">enabled<",
    ] {
        assert!(!page.contains(word), "{word} on the page");
    }
}

#[test]
fn each_row_shows_the_app_address_and_the_upstream() {
    let page = status(&[row("a", ConnState::Connected)], "c", now());
    let a = row_html(&page, "a");
    assert!(a.contains("title=\"the app's base URL\">http://127.0.0.1:8081</span>"));
    assert!(a.contains("title=\"forwarded to\">→ https://api.cloudbeds.com</span>"));
}

#[test]
fn times_are_relative_over_a_short_utc_form_and_never_wrap() {
    let mut a = row("a", ConnState::Connected);
    a.token = Expiry::At(now() + Duration::from_secs(4 * 60 + 30));
    a.last_refresh = Some(now() - Duration::from_secs(3 * 60));
    let mut b = row("b", ConnState::Degraded);
    b.token = Expiry::Expired(now() - Duration::from_secs(90));
    let page = status(&[a, b], "c", now());
    let a = row_html(&page, "a");
    assert!(a.contains(">in 4m</time>"), "{a}");
    assert!(a.contains(">3m ago</time>"), "{a}");
    assert!(a.contains("<span class=\"when muted\">2027-01-15 08:04Z</span>"));
    assert!(a.contains("datetime=\"2027-01-15T08:04:30Z\""));
    assert!(row_html(&page, "b").contains(">expired 1m ago</time>"));
    assert!(page.contains(".when,.listen,.upstream{white-space:nowrap}"));
}

#[test]
fn buttons_fit_the_state() {
    let page = status(&[row("h", ConnState::NeedsAuthorization)], "c", now());
    assert!(page.contains("class=\"button connect\""));
    assert!(!page.contains("Disconnect"));
    let page = status(&[row("h", ConnState::Connected)], "c", now());
    assert!(page.contains("Reconnect") && page.contains("class=\"disconnect\""));
    let page = status(&[row("h", ConnState::Misconfigured)], "c", now());
    assert!(!page.contains("<button") && !page.contains("Connect</a>"));
    let mut cc = row("h", ConnState::Connected);
    cc.connectable = false;
    let page = status(&[cc], "c", now());
    assert!(page.contains("Refresh") && !page.contains("Connect</a>"));
    assert!(page.contains("<input type=\"hidden\" name=\"csrf\" value=\"c\">"));
}

#[test]
fn the_status_page_reloads_itself_and_the_result_pages_do_not() {
    let page = status(&[row("h", ConnState::Connected)], "c", now());
    assert!(page.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    assert!(!super::super::problem("t", "d").contains("http-equiv"));
}

#[test]
fn values_are_escaped() {
    let mut r = row("h", ConnState::Degraded);
    r.last_error = Some("<script>alert(1)</script>");
    r.provider = "<b>p</b>";
    r.upstream = "https://x/\"><script>";
    r.listen = "http://<i>".into();
    let page = status(&[r], "c", now());
    assert!(!page.contains("<script>") && !page.contains("<b>p") && !page.contains("<i>"));
    assert!(page.contains("&lt;script&gt;alert(1)"));
}

#[test]
fn an_app_shows_its_tenant_counts_problems_first_and_its_tenant_table() {
    let mut app = row("cloudbeds", ConnState::Connected);
    app.tenants = Some(AppTenants {
        counts: vec![
            (ConnState::Connected, 36),
            (ConnState::NeedsAuthorization, 2),
            (ConnState::Degraded, 0),
        ],
    });
    let page = status(&[app], "c", now());
    let app = row_html(&page, "cloudbeds");
    assert!(
        app.contains(
            "<div class=\"tenants\">38 tenants: <span class=\"count bad\">2 needs authorization</span>, \
<span class=\"count ok\">36 connected</span></div>"
        ),
        "{app}"
    );
    assert!(app.contains("href=\"/connections/cloudbeds/page\">Tenants</a>"));
    assert!(app.contains(">Install a tenant</a>"));
    assert!(!app.contains("Disconnect") && !app.contains("Requests carry a valid token"));
}
