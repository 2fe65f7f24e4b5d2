//! The clients the demo provider has registered: bearerd's single-hotel connection and
//! bearerd's app, each with its own secret, and how a token request proves which it is.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header;

/// The client bearerd's single-hotel connection is registered as.
pub const CLIENT_ID: &str = "bearerd-demo";
/// The client bearerd's app (one client, many hotels) is registered as.
pub const APP_CLIENT_ID: &str = "bearerd-demo-app";
const IDS: [&str; 2] = [CLIENT_ID, APP_CLIENT_ID];

/// The registered clients and their secrets.
pub struct Clients {
    /// In [`IDS`] order.
    secrets: [String; 2],
}

impl Clients {
    pub fn new(client_secret: &str, app_client_secret: &str) -> Self {
        Self {
            secrets: [client_secret.to_owned(), app_client_secret.to_owned()],
        }
    }

    /// The registered client with this id.
    pub fn find(id: &str) -> Option<&'static str> {
        IDS.into_iter().find(|c| *c == id)
    }

    /// The client a token request authenticated as: its secret in the body
    /// (`client_secret_post`) or as HTTP Basic.
    pub fn authenticated(
        &self,
        headers: &http::HeaderMap,
        form: &HashMap<String, String>,
    ) -> Option<&'static str> {
        IDS.into_iter()
            .zip(self.secrets.iter())
            .find(|(id, secret)| {
                let in_body = form.get("client_id").map(String::as_str) == Some(*id)
                    && form.get("client_secret") == Some(*secret);
                let basic = format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
                let in_header = headers
                    .get(header::AUTHORIZATION)
                    .is_some_and(|v| v.as_bytes() == basic.as_bytes());
                in_body || in_header
            })
            .map(|(id, _)| id)
    }
}

/// How the provider's pages name a client.
pub fn title(client_id: &str) -> &'static str {
    if client_id == APP_CLIENT_ID {
        "bearerd demo app"
    } else {
        "bearerd demo"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_authenticates_only_its_own_client() {
        let clients = Clients::new("one", "two");
        let form = |id: &str, secret: &str| {
            HashMap::from([
                ("client_id".to_owned(), id.to_owned()),
                ("client_secret".to_owned(), secret.to_owned()),
            ])
        };
        let none = http::HeaderMap::new();
        assert_eq!(
            clients.authenticated(&none, &form(CLIENT_ID, "one")),
            Some(CLIENT_ID)
        );
        assert_eq!(
            clients.authenticated(&none, &form(APP_CLIENT_ID, "two")),
            Some(APP_CLIENT_ID)
        );
        assert_eq!(
            clients.authenticated(&none, &form(APP_CLIENT_ID, "one")),
            None
        );
        let mut basic = http::HeaderMap::new();
        let value = format!("Basic {}", STANDARD.encode("bearerd-demo-app:two"));
        basic.insert(header::AUTHORIZATION, value.parse().unwrap());
        assert_eq!(
            clients.authenticated(&basic, &HashMap::new()),
            Some(APP_CLIENT_ID)
        );
        assert_eq!(Clients::find("someone-else"), None);
    }
}
