//! Headless walk through the authorization pages of the test token server, for tests that
//! need a code without a browser: the same HTTP requests a browser would send.

use hyper::StatusCode;

use super::super::{TestResponse, get, post_form};
use super::TokenServer;

impl TokenServer {
    /// Walks `authorize_url` (the `Location` bearerd redirected to) over HTTP as `username` (added
    /// with [`TokenServer::add_user`]): GET it, log in, press Allow. Returns the `Location` the
    /// server redirects to: the callback URL with `code` and `state`, or with `error=...` if the
    /// request was refused by redirect. Panics if a page answers otherwise (e.g. a bad client).
    pub async fn authorize_headless(&self, username: &str, authorize_url: &str) -> String {
        self.walk(username, authorize_url, "allow").await
    }
    /// As [`TokenServer::authorize_headless`], but presses Deny (`error=access_denied`).
    pub async fn deny_headless(&self, username: &str, authorize_url: &str) -> String {
        self.walk(username, authorize_url, "deny").await
    }

    async fn walk(&self, username: &str, authorize_url: &str, decision: &str) -> String {
        let location = |r: &TestResponse| r.header("location").unwrap_or_default();
        let page = get(authorize_url, None).await.expect("GET authorize");
        if page.status == StatusCode::FOUND {
            return location(&page);
        }
        assert_eq!(
            page.status,
            StatusCode::OK,
            "GET {authorize_url}: {}",
            page.text()
        );
        let password = self.st().users.get(username).cloned();
        let password = password.unwrap_or_else(|| panic!("unknown user {username}: add_user"));
        let query = authorize_url.split_once('?').map_or("", |(_, q)| q);
        let mut form: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        form.push(("username".into(), username.into()));
        form.push(("password".into(), password));
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let login_url = format!("{}/authorize/login", self.base_url());
        let consent = post_form(&login_url, &pairs, None)
            .await
            .expect("POST login");
        let body = consent.text();
        let ticket = body
            .split_once("name=\"ticket\" value=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(t, _)| t.to_owned())
            .unwrap_or_else(|| panic!("login as {username} failed ({}): {body}", consent.status));
        let consent_url = format!("{}/authorize/consent", self.base_url());
        let form = [("ticket", ticket.as_str()), ("decision", decision)];
        let done = post_form(&consent_url, &form, None)
            .await
            .expect("POST consent");
        assert_eq!(done.status, StatusCode::FOUND, "consent: {}", done.text());
        location(&done)
    }
}
