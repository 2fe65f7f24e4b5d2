//! HTML pages of the test authorization server: login, consent and error pages.
//!
//! Element ids are part of the test contract: `#username`, `#password`, `#login` on the login
//! page; `#approve` and `#deny` (both `name="decision"`) on the consent page; `.error` holds a
//! message. Every page is `no-store`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::Resp;

/// Escapes text for HTML element content and double-quoted attributes.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

pub(super) fn html(status: StatusCode, body: String) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn layout(status: StatusCode, title: &str, body: &str) -> Resp {
    html(
        status,
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title} - Test Authorization Server</title>\
             <style>body{{font-family:sans-serif;max-width:28em;margin:2em auto}}\
             label,input,button{{display:block;margin:.4em 0}}.error{{color:#b00}}</style>\
             </head><body><h1>{title}</h1>\n{body}\n</body></html>\n",
            title = escape(title),
        ),
    )
}

fn hidden(fields: &[(&str, String)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
                escape(k),
                escape(v)
            )
        })
        .collect()
}

/// The login form, pre-filled with `username`, with `error` shown above it.
pub(super) fn login_page(fields: &[(&str, String)], username: &str, error: Option<&str>) -> Resp {
    let error = error.map_or(String::new(), |e| {
        format!("<p class=\"error\" id=\"error\">{}</p>\n", escape(e))
    });
    let body = format!(
        "{error}<form method=\"post\" action=\"/authorize/login\">\n{hidden}\
         <label for=\"username\">Username</label>\
         <input name=\"username\" id=\"username\" autocomplete=\"username\" value=\"{user}\">\n\
         <label for=\"password\">Password</label>\
         <input name=\"password\" id=\"password\" type=\"password\" \
         autocomplete=\"current-password\">\n\
         <button type=\"submit\" id=\"login\">Log in</button>\n</form>",
        hidden = hidden(fields),
        user = escape(username),
    );
    layout(StatusCode::OK, "Log in", &body)
}

/// The consent form for `user`, naming `client` and listing `scopes`.
pub(super) fn consent_page(client: &str, user: &str, scopes: &[&str], ticket: &str) -> Resp {
    let scopes = if scopes.is_empty() {
        "<li>(no scope requested)</li>".to_owned()
    } else {
        scopes
            .iter()
            .map(|s| format!("<li class=\"scope\">{}</li>", escape(s)))
            .collect()
    };
    let body = format!(
        "<p>Signed in as <b id=\"user\">{user}</b>.</p>\n\
         <p>The application <b id=\"client\">{client}</b> asks for access to your account:</p>\n\
         <ul id=\"scopes\">{scopes}</ul>\n\
         <form method=\"post\" action=\"/authorize/consent\">\n\
         <input type=\"hidden\" name=\"ticket\" value=\"{ticket}\">\n\
         <button id=\"approve\" name=\"decision\" value=\"allow\">Allow</button>\n\
         <button id=\"deny\" name=\"decision\" value=\"deny\">Deny</button>\n</form>",
        user = escape(user),
        client = escape(client),
        ticket = escape(ticket),
    );
    layout(StatusCode::OK, "Allow access?", &body)
}

/// An error page that does not redirect anywhere.
pub(super) fn error_page(status: StatusCode, message: &str) -> Resp {
    let body = format!("<p class=\"error\" id=\"error\">{}</p>", escape(message));
    layout(status, "Authorization error", &body)
}
