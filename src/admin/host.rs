//! Which `Host` the admin listener answers to (DNS rebinding, SPEC section 13).
//!
//! A page on `attacker.example` whose name is re-pointed at bearerd's address is same-origin
//! with itself, so the browser lets it read bearerd's answers (the status page with its
//! CSRF token) and drive the connect flow. What gives it away is `Host: attacker.example`.
//! bearerd answers only to the authority of `admin.public_url` (and of each connection's
//! `redirect_uri`, which may name a public host for the callback) and to the address it
//! listens on: exactly that address, any IP literal on its port when it listens on every address
//! (probes and Prometheus come by pod IP), any loopback IP on its port when it listens on
//! loopback, and `localhost` on its port (`kubectl port-forward`). Neither an IP literal nor
//! `localhost` can be re-pointed by a page, so neither is a rebinding.
//! Everything else gets 421 Misdirected Request.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::header::HOST;

/// The names the admin listener answers to.
#[derive(Debug, Clone)]
pub struct Hosts {
    /// Configured names of this listener (`admin.public_url`, `redirect_uri`s): host (lower
    /// case), port (or its scheme's default), and the port a `Host` without one means.
    public: Vec<(String, u16, u16)>,
    /// The bound listen address.
    listen: SocketAddr,
}

impl Hosts {
    pub fn new(public_url: &str, listen: SocketAddr) -> Self {
        let mut hosts = Self {
            public: Vec::new(),
            listen,
        };
        hosts.also(public_url);
        hosts
    }

    /// Also answers to `url`'s authority (a connection's `redirect_uri`).
    pub fn also(&mut self, url: &str) {
        let Ok(url) = url::Url::parse(url) else {
            return;
        };
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return;
        };
        let default = if url.scheme() == "https" { 443 } else { 80 };
        self.public.push((host.to_ascii_lowercase(), port, default));
    }

    /// True if a request with these headers (and this URI authority, for HTTP/2) was meant
    /// for this listener.
    pub fn allows(&self, uri: &http::Uri, headers: &HeaderMap) -> bool {
        let authority = match uri.authority() {
            Some(authority) => authority.as_str().to_owned(),
            None => match headers.get(HOST).and_then(|v| v.to_str().ok()) {
                Some(host) => host.trim().to_owned(),
                None => return false,
            },
        };
        let Some((host, port)) = split(&authority) else {
            return false;
        };
        if self
            .public
            .iter()
            .any(|(public_host, public_port, default)| {
                host == *public_host && port.unwrap_or(*default) == *public_port
            })
        {
            return true;
        }
        // The admin listener speaks plain HTTP: no port means 80.
        if port.unwrap_or(80) != self.listen.port() {
            return false;
        }
        let listen_ip = self.listen.ip();
        let ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>();
        match ip {
            Ok(ip) => {
                ip == listen_ip
                    || listen_ip.is_unspecified()
                    || (listen_ip.is_loopback() && ip.is_loopback())
            }
            // Browsers resolve `localhost` themselves (to loopback): no page can re-point it.
            Err(_) => host == "localhost",
        }
    }
}

/// `host[:port]` -> (lower-case host, port). `None` if the port is not a number.
fn split(authority: &str) -> Option<(String, Option<u16>)> {
    let authority = authority.to_ascii_lowercase();
    // `[v6]:port`: the colon to split at comes after the bracket.
    let split_at = match authority.rfind(']') {
        Some(bracket) => authority[bracket..].find(':').map(|i| bracket + i),
        None => authority.rfind(':'),
    };
    match split_at {
        Some(i) => {
            let port = authority[i + 1..].parse::<u16>().ok()?;
            Some((authority[..i].to_owned(), Some(port)))
        }
        None => Some((authority, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(hosts: &Hosts, host: &str) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, host.parse().unwrap());
        hosts.allows(&http::Uri::from_static("/"), &headers)
    }

    #[test]
    fn loopback_listener() {
        let hosts = Hosts::new("http://127.0.0.1:9901", "127.0.0.1:9901".parse().unwrap());
        for ok in [
            "127.0.0.1:9901",
            "localhost:9901",
            "LOCALHOST:9901",
            "[::1]:9901",
        ] {
            assert!(allows(&hosts, ok), "{ok}");
        }
        for refused in [
            "attacker.example",
            "attacker.example:9901",
            "localhost:9902",
            "127.0.0.1",
            "10.0.0.1:9901",
            "127.0.0.1:x",
            "",
        ] {
            assert!(!allows(&hosts, refused), "{refused}");
        }
        assert!(!hosts.allows(&http::Uri::from_static("/"), &HeaderMap::new()));
    }

    #[test]
    fn public_url_behind_a_proxy() {
        let hosts = Hosts::new(
            "https://Bearerd.Example.com",
            "0.0.0.0:9901".parse().unwrap(),
        );
        assert!(allows(&hosts, "bearerd.example.com"));
        assert!(allows(&hosts, "bearerd.example.com:443"));
        assert!(!allows(&hosts, "bearerd.example.com:9901"));
        // Probes and scrapes by pod IP.
        assert!(allows(&hosts, "10.1.2.3:9901"));
        assert!(allows(&hosts, "localhost:9901"), "kubectl port-forward");
        assert!(!allows(&hosts, "localhost:9902"));
        assert!(!allows(&hosts, "attacker.example:9901"));
    }

    #[test]
    fn a_redirect_uri_names_the_listener_too() {
        let mut hosts = Hosts::new("http://127.0.0.1:9901", "0.0.0.0:9901".parse().unwrap());
        assert!(!allows(&hosts, "callback.example.com"));
        hosts.also("https://callback.example.com/oauth/callback");
        assert!(allows(&hosts, "callback.example.com"));
        assert!(!allows(&hosts, "callback.example.com:80"));
    }

    #[test]
    fn http2_authority() {
        let hosts = Hosts::new("http://127.0.0.1:9901", "127.0.0.1:9901".parse().unwrap());
        let uri = http::Uri::from_static("http://attacker.example:9901/");
        assert!(!hosts.allows(&uri, &HeaderMap::new()));
        let uri = http::Uri::from_static("http://127.0.0.1:9901/");
        assert!(hosts.allows(&uri, &HeaderMap::new()));
    }
}
