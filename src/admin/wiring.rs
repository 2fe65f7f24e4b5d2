//! What the admin listener is built from: the config and each connection's proxy (its token
//! cell, outbound client and upstream).

use std::net::SocketAddr;
use std::sync::Arc;

use super::{Admin, AdminConnection, Guard, Hosts, Probe};
use crate::config::{Config, ConnectionConfig, GrantKind, Provider};
use crate::connect::webhook::confirm::AppStateCheck;
use crate::connect::{ConnectFlows, ConnectSettings};
use crate::metrics::Metrics;
use crate::proxy::Proxy;

impl Admin {
    /// The admin listener of `config`, bound at `listen` (the real address, port 0 resolved).
    pub fn new(
        config: &Config,
        metrics: Arc<Metrics>,
        connections: Vec<AdminConnection>,
        listen: SocketAddr,
        store: Option<Arc<dyn crate::store::TokenStore>>,
    ) -> Admin {
        let public_origin = url::Url::parse(&config.admin.public_url)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default();
        let mut hosts = Hosts::new(&config.admin.public_url, listen);
        for c in &config.connections {
            hosts.also(c.redirect_uri.as_str());
        }
        Admin {
            metrics,
            connections,
            guard: Guard {
                auth_token: config.admin.auth_token.clone(),
                csrf: crate::connect::random_token(32),
                public_origin,
            },
            hosts,
            flows: ConnectFlows::default(),
            confirmations: Default::default(),
            shared_flows: store,
        }
    }
}

impl AdminConnection {
    /// What the admin listener needs of a connection whose proxy listens at `listen`.
    pub fn new(c: &ConnectionConfig, proxy: &Proxy, listen: SocketAddr) -> AdminConnection {
        let credentials = c.credentials.as_ref().ok();
        let client_id = credentials.map(|creds| creds.client_id.secret().to_owned());
        let client_secret = credentials.and_then(|creds| creds.client_secret.clone());
        // Keys from the config are not connected from the page; delivered keys are.
        let from_flow = match c.grant {
            GrantKind::AuthorizationCode => true,
            GrantKind::ApiKey => !crate::token::keys::from_config(c),
            GrantKind::ClientCredentials => false,
        };
        let connect = match (&c.authorize_url, &client_id, from_flow) {
            (Some(authorize_url), Some(client_id), true) => Some(ConnectSettings {
                authorize_url: authorize_url.clone(),
                client_id: client_id.clone(),
                redirect_uri: c.redirect_uri.clone(),
                scopes: c.scopes.clone(),
            }),
            _ => None,
        };
        let probe = c.probe.as_deref().and_then(|path| {
            let path = http::uri::PathAndQuery::try_from(path).ok()?;
            let uri = proxy.target.uri(Some(&path)).ok()?;
            Some(Probe {
                client: proxy.client.clone(),
                uri,
            })
        });
        // Only Cloudbeds sends app-state webhooks, and only it has getAppState to confirm them.
        let app_state = match (c.provider, c.grant) {
            (Provider::Cloudbeds, GrantKind::AuthorizationCode | GrantKind::ApiKey) => {
                AppStateCheck::new(
                    proxy.client.clone(),
                    &c.upstream,
                    c.timeout,
                    client_secret.clone(),
                )
                .map(Arc::new)
            }
            _ => None,
        };
        // `https://api.example.com/` reads better without the root path's slash.
        let upstream = match c.upstream.as_str().strip_suffix('/') {
            Some(base) if c.upstream.path() == "/" => base.to_owned(),
            _ => c.upstream.to_string(),
        };
        AdminConnection {
            connection: Arc::clone(&proxy.connection),
            listen,
            upstream,
            provider: c.provider,
            grant: c.grant,
            connect,
            client_id,
            client_secret,
            probe,
            app_state,
            tenants: proxy.tenants.clone(),
        }
    }
}
