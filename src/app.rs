//! Wiring: build each connection's cell, client and refresher, bind the listeners, serve,
//! and shut down gracefully. [`App::start`] takes a validated config and returns once every
//! listener is bound, so tests can use `127.0.0.1:0` and read the real addresses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{Admin, AdminConnection};
use crate::config::{Config, ConnectionConfig, GrantKind, Provider, RateScope, Revocation};
use crate::discovery;
use crate::metrics::Metrics;
use crate::proxy::{Proxy, h1};
use crate::ratelimit::Limiter;
use crate::ratelimit::replicas::{Budget, keep_shares, replica_id};
use crate::serve::{Drain, Gate, Workers, serve, serve_proxy};
use crate::store::{self, Reach, StoreError, TokenStore};
use crate::tenants::{Blueprint, Tenants};
use crate::token::oauth::TokenEndpoint;
use crate::token::refresher::{Grant, Refresher};
use crate::token::{ConnState, Connection, TokenState};
use crate::upstream::{self, Target, UpstreamError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connection {name}: {source}")]
    Upstream {
        name: String,
        #[source]
        source: UpstreamError,
    },
    #[error("token store: {0}")]
    Store(#[from] StoreError),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("notify.secret: {0}")]
    Notify(String),
}

/// A running bearerd.
pub struct App {
    pub admin_addr: SocketAddr,
    proxies: Vec<(String, SocketAddr)>,
    connections: Vec<Arc<Connection>>,
    apps: Vec<Arc<Tenants>>,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<Drain>>,
    refreshers: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl App {
    /// Binds every listener and starts every task, all on the calling runtime.
    pub async fn start(config: Config) -> Result<App, AppError> {
        Self::start_on(config, None).await
    }

    /// As [`App::start`], with each proxy listener served by every one of `workers` (each
    /// accepting from it, each with an upstream client of its own); the admin listener and
    /// the refreshers stay on the calling runtime. Drop `workers` after [`App::shutdown`].
    pub async fn start_on(config: Config, workers: Option<&Workers>) -> Result<App, AppError> {
        let metrics = Arc::new(Metrics::new()?);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut app = App {
            admin_addr: config.admin.listen,
            proxies: Vec::new(),
            connections: Vec::new(),
            apps: Vec::new(),
            shutdown,
            servers: Vec::new(),
            refreshers: Vec::new(),
            grace: config.shutdown_grace,
        };
        let store = open_store(&config, &metrics).await?;
        let mut admin_connections = Vec::new();
        let mut budgets = Vec::new();
        for c in &config.connections {
            let shared = Shared {
                public_url: &config.admin.public_url,
                metrics: &metrics,
                store: store.clone(),
                shutdown: shutdown_rx.clone(),
            };
            let clients = upstream::Clients::new(c.ca_file.as_deref(), c.connect_timeout).map_err(
                |source| AppError::Upstream {
                    name: c.name.clone(),
                    source,
                },
            )?;
            let client = clients.client();
            let (c, problem) = &resolve_endpoints(c, &client).await;
            let (mut proxy, refresher) = build_connection(c, client, problem.clone(), shared)?;
            if !config.runtime.fast_path {
                proxy.pool = None;
            }
            proxy.limits = config.limits;
            let what = format!("connection {}", c.name);
            let bind_error = |source| AppError::Bind {
                addr: c.listen,
                what: what.clone(),
                source,
            };
            let listeners = match workers {
                None => vec![(bind(c.listen, &what).await?, None)],
                Some(workers) => workers
                    .bind(c.listen)
                    .map_err(bind_error)?
                    .into_iter()
                    .zip(workers.handles().iter().map(Some))
                    .collect(),
            };
            let addr = listeners[0].0.local_addr().map_err(bind_error)?;
            tracing::info!(connection = %c.name, %addr, upstream = %c.upstream, "proxy listening");
            admin_connections.push(AdminConnection::new(c, &proxy, addr));
            app.connections.push(Arc::clone(&proxy.connection));
            app.proxies.push((c.name.clone(), addr));
            match (refresher, &proxy.tenants, &store) {
                (Some(refresher), _, _) => app.refreshers.push(tokio::spawn(refresher.run())),
                (None, Some(tenants), Some(store)) => {
                    app.apps.push(Arc::clone(tenants));
                    app.refreshers.push(tokio::spawn(crate::tenants::watch::run(
                        Arc::clone(tenants),
                        Arc::clone(store),
                        shutdown_rx.clone(),
                    )));
                }
                (None, _, _) => {}
            }
            if let (Some(limiter), Some(limit)) = (&proxy.limiter, &c.rate_limit) {
                // With replicas, nothing goes out before this one knows its share and the
                // others have made room for it (`keep_shares`).
                let budget = Budget {
                    rps: limit.rps,
                    limiter: Arc::clone(limiter),
                    tenants: proxy.tenants.clone(),
                };
                if store.as_ref().is_some_and(|s| s.has_replicas()) {
                    budget.each(|l| l.hold(None));
                }
                budgets.push(budget);
            }
            // One gate for all workers: the cap counts the listener's connections.
            let gate = Arc::new(Gate::new(config.limits, c.allow_clients.clone()));
            for (listener, worker) in listeners {
                let proxy = Arc::new(match worker {
                    None => proxy.clone(),
                    // A pool of its own: pooled connections stay on this worker.
                    Some(_) => Proxy {
                        client: clients.client(),
                        pool: proxy.pool.as_ref().map(h1::Pool::empty_copy),
                        ..proxy.clone()
                    },
                });
                let server = serve_proxy(listener, proxy, Arc::clone(&gate), shutdown_rx.clone());
                app.servers.push(match worker {
                    None => tokio::spawn(server),
                    Some(worker) => worker.spawn(server),
                });
            }
        }

        let admin_listener = bind(config.admin.listen, "admin").await?;
        app.admin_addr = admin_listener
            .local_addr()
            .map_err(|source| AppError::Bind {
                addr: config.admin.listen,
                what: "admin".into(),
                source,
            })?;
        tracing::info!(addr = %app.admin_addr, "admin listening");
        let admin = Arc::new(Admin::new(
            &config,
            metrics,
            admin_connections,
            app.admin_addr,
            store.clone(),
        ));
        let handler = move |request| {
            let admin = Arc::clone(&admin);
            async move { admin.handle(request).await }
        };
        if let Some(store) = &store {
            // Replicas of a postgres store split each rate limit; a file store keeps it whole.
            app.refreshers.push(tokio::spawn(keep_shares(
                Arc::clone(store),
                replica_id(),
                budgets,
                shutdown_rx.clone(),
            )));
        }
        if let (Some(notify), Some(store)) = (&config.notify, &store) {
            app.refreshers.extend(start_notifications(
                notify,
                store,
                &config.admin.public_url,
                (&app.connections, &app.apps),
                &shutdown_rx,
            )?);
        }
        let gate = Arc::new(Gate::new(config.limits, config.admin.allow_clients.clone()));
        app.servers.push(tokio::spawn(serve(
            admin_listener,
            gate,
            handler,
            shutdown_rx,
        )));
        Ok(app)
    }

    /// The bound address of a connection's proxy listener.
    pub fn proxy_addr(&self, name: &str) -> Option<SocketAddr> {
        self.proxies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, addr)| *addr)
    }

    /// An app's tenants (for tests, benchmarks and embedding).
    pub fn tenants(&self, name: &str) -> Option<Arc<Tenants>> {
        self.apps.iter().find(|t| t.app == name).cloned()
    }

    /// A connection's shared token cell (for tests and embedding).
    pub fn connection(&self, name: &str) -> Option<Arc<Connection>> {
        self.connections.iter().find(|c| c.name == name).cloned()
    }

    /// Stops accepting, lets in-flight requests finish (up to `shutdown_grace`), stops the
    /// refreshers.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let mut drains = Vec::new();
        for server in self.servers {
            if let Ok(graceful) = server.await {
                drains.push(graceful.wait());
            }
        }
        let drained = futures_join_all(drains);
        if tokio::time::timeout(self.grace, drained).await.is_err() {
            tracing::warn!(
                grace_s = self.grace.as_secs_f64(),
                "shutdown grace ran out with requests in flight"
            );
        }
        // Tenants' refreshers are not in `refreshers` (one task per tenant): wait for the
        // refreshes in flight, whose rotated tokens must reach the store.
        for tenants in &self.apps {
            if tokio::time::timeout(self.grace, tenants.quiesce())
                .await
                .is_err()
            {
                tracing::warn!(
                    connection = %tenants.app,
                    grace_s = self.grace.as_secs_f64(),
                    "shutdown grace ran out with tenant refreshes in flight"
                );
            }
        }
        for refresher in self.refreshers {
            let _ = refresher.await;
        }
    }
}

async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: Vec<F>) {
    for future in futures {
        future.await;
    }
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind {
            addr,
            what: what.to_owned(),
            source,
        })
}

/// Opens the token store if some connection needs one (refresh-token grants). A wrong
/// `store.key` fails here; an unreachable database does not (the store keeps trying).
async fn open_store(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Option<Arc<dyn TokenStore>>, AppError> {
    let names: Vec<String> = config
        .connections
        .iter()
        .filter(|c| keeps_a_record(c))
        .map(|c| c.name.clone())
        .collect();
    // Client-credentials connections keep nothing, so a store is opened only when something
    // needs it: a refresh-token grant, the notification outbox, or (postgres) replicas
    // sharing a rate limit.
    let shared_limits = matches!(config.store.kind, crate::config::StoreKind::Postgres { .. })
        && config.connections.iter().any(|c| c.rate_limit.is_some());
    if names.is_empty() && config.notify.is_none() && !shared_limits {
        return Ok(None);
    }
    let metrics = Some(Arc::clone(metrics));
    let store = store::open(&config.store, &names, metrics, Reach::RetryInBackground).await?;
    Ok(Some(store))
}

/// One watcher per connection and the delivery task, for `[notify]`.
fn start_notifications(
    notify: &crate::config::NotifyConfig,
    store: &Arc<dyn TokenStore>,
    public_url: &str,
    (connections, apps): (&[Arc<Connection>], &[Arc<Tenants>]),
    shutdown: &watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, AppError> {
    use crate::notify::{self, deliver};
    let key = deliver::parse_secret(notify.secret.secret()).map_err(AppError::Notify)?;
    let client = upstream::Clients::new(None, Duration::from_secs(5))
        .map_err(|source| AppError::Upstream {
            name: "notify".into(),
            source,
        })?
        .client();
    let context = notify::Context {
        store: Arc::clone(store),
        public_url: public_url.to_owned(),
        stored: Arc::new(tokio::sync::Notify::new()),
    };
    // An app's own cell has no grant: its tenants are watched instead.
    let mut tasks: Vec<_> = connections
        .iter()
        .filter(|c| !apps.iter().any(|a| a.app == c.name))
        .map(|c| {
            tokio::spawn(notify::watch_connection(
                Arc::clone(c),
                context.clone(),
                shutdown.clone(),
            ))
        })
        .collect();
    tasks.extend(apps.iter().map(|tenants| {
        tokio::spawn(notify::watch_app(
            Arc::clone(tenants),
            context.clone(),
            shutdown.clone(),
        ))
    }));
    let receiver = deliver::Receiver {
        url: notify.url.clone(),
        key: key.into(),
    };
    tasks.push(tokio::spawn(deliver::run(
        Arc::clone(store),
        receiver,
        client,
        context.stored,
        shutdown.clone(),
    )));
    Ok(tasks)
}

/// What every connection is built from besides its own config.
struct Shared<'a> {
    public_url: &'a str,
    metrics: &'a Metrics,
    store: Option<Arc<dyn TokenStore>>,
    shutdown: watch::Receiver<bool>,
}

/// Fills endpoints from the issuer's discovery document (explicit keys win). Also says why
/// the connection cannot get tokens, if it cannot: unreadable credentials, failed discovery.
async fn resolve_endpoints(
    c: &ConnectionConfig,
    client: &upstream::HttpClient,
) -> (ConnectionConfig, Option<String>) {
    let mut c = c.clone();
    if crate::token::keys::from_config(&c) {
        // A key from the config needs neither client credentials nor a token endpoint.
        return (c, None);
    }
    let mut problem = c.credentials.as_ref().err().map(|reason| {
        // The full reason names a file or variable: for the log, not for /connections.
        tracing::error!(connection = %c.name, %reason, "credentials cannot be read: the connection starts misconfigured");
        crate::config::unreadable_credential(reason)
    });
    if let Some(issuer) = c.issuer.clone() {
        match discovery::discover(client, &issuer, c.connect_timeout + c.timeout).await {
            Ok(metadata) => {
                let parse = |u: Option<String>| u.and_then(|u| url::Url::parse(&u).ok());
                c.token_url = c.token_url.take().or(parse(metadata.token_endpoint));
                c.authorize_url = c
                    .authorize_url
                    .take()
                    .or(parse(metadata.authorization_endpoint));
                if c.revocation == Revocation::None
                    && let Some(url) = parse(metadata.revocation_endpoint)
                {
                    c.revocation = Revocation::Rfc7009(url);
                }
                tracing::info!(connection = %c.name, %issuer, "endpoints discovered");
            }
            Err(error) => {
                tracing::error!(connection = %c.name, %issuer, %error, "issuer discovery failed");
                problem.get_or_insert(format!("connection[{}].issuer: {error}", c.name));
            }
        }
    }
    if c.token_url.is_none() {
        problem.get_or_insert_with(|| "no token endpoint is known".into());
    }
    (c, problem)
}

/// The proxy and refresher of one connection, sharing its token cell. `problem` says why it
/// cannot get tokens (it then starts misconfigured).
fn build_connection(
    c: &ConnectionConfig,
    client: upstream::HttpClient,
    problem: Option<String>,
    shared: Shared<'_>,
) -> Result<(Proxy, Option<Refresher>), AppError> {
    let Shared {
        public_url,
        metrics,
        store,
        shutdown,
    } = shared;
    let upstream_error = |source| AppError::Upstream {
        name: c.name.clone(),
        source,
    };
    let target = Target::new(&c.upstream).map_err(upstream_error)?;
    let connect_url = format!("{public_url}/connections/{}/connect", c.name);
    let keys = crate::token::keys::settings(c, &client);
    let configured = crate::token::keys::configured_state(c);
    let (initial, endpoint, grant) = match (problem, &c.credentials, &c.token_url) {
        _ if let Some((initial, grant)) = configured => {
            let endpoint = match (&c.credentials, &c.token_url) {
                (Ok(credentials), Some(token_url)) => Some(Arc::new(TokenEndpoint::new(
                    token_url.clone(),
                    credentials.clone(),
                    c.client_auth,
                    &c.scopes,
                    client.clone(),
                    c.token_timeout,
                ))),
                _ => None,
            };
            (initial, endpoint, grant)
        }
        (None, Ok(credentials), Some(token_url)) => {
            let endpoint = Arc::new(TokenEndpoint::new(
                token_url.clone(),
                credentials.clone(),
                c.client_auth,
                &c.scopes,
                client.clone(),
                c.token_timeout,
            ));
            let grant = match c.grant {
                GrantKind::ClientCredentials => Grant::ClientCredentials,
                // Until the refresher has read the store, requests wait for it.
                GrantKind::AuthorizationCode | GrantKind::ApiKey => Grant::None,
            };
            let initial = TokenState::initial(ConnState::Refreshing, None);
            (initial, Some(endpoint), grant)
        }
        (problem, _, _) => (
            TokenState::initial(
                ConnState::Misconfigured,
                Some(problem.unwrap_or_else(|| "no token endpoint is known".into())),
            ),
            None,
            Grant::None,
        ),
    };
    let store = if keeps_a_record(c) { store } else { None };
    if let Some(settings) = &c.tenants {
        // An app: its own cell only says whether it can serve; each tenant has a grant.
        let app_metrics = metrics.app(&c.name);
        let initial = match &endpoint {
            Some(_) => TokenState::initial(ConnState::Connected, None),
            None => initial,
        };
        let (connection, _no_commands) =
            Connection::new(c.name.clone(), initial, c.token_wait, app_metrics.clone());
        let limiter = limiter(c);
        let per_tenant_limit = limiter.clone().filter(|_| {
            c.rate_limit
                .as_ref()
                .is_some_and(|r| r.per == RateScope::Tenant)
        });
        let blueprint = Blueprint {
            endpoint,
            revocation: Arc::new(c.revocation.clone()),
            store,
            skew: c.refresh_skew,
            lock_wait: c.timeout,
            token_wait: c.token_wait,
            metrics: app_metrics,
            shutdown,
            keys: Arc::new(keys),
            per_tenant_limit,
        };
        let tenants = Tenants::new(
            c,
            settings.routing.clone(),
            format!("{public_url}/connections/{}", c.name),
            blueprint,
            client.clone(),
            settings.token_concurrency,
        );
        let mut proxy = proxy(c, connection, client, target, connect_url, Some(tenants));
        proxy.limiter = limiter;
        return Ok((proxy, None));
    }
    let (connection, commands) = Connection::new(
        c.name.clone(),
        initial,
        c.token_wait,
        metrics.connection(&c.name),
    );
    let refresher = Refresher::new(
        Arc::clone(&connection),
        commands,
        Arc::new(c.revocation.clone()),
        endpoint,
        grant,
        store,
        c.refresh_skew,
        c.timeout,
        shutdown,
    )
    .with_keys(keys);
    let proxy = proxy(c, connection, client, target, connect_url, None);
    Ok((proxy, Some(refresher)))
}

fn proxy(
    c: &ConnectionConfig,
    connection: Arc<Connection>,
    client: upstream::HttpClient,
    target: Target,
    connect_url: String,
    tenants: Option<Arc<Tenants>>,
) -> Proxy {
    Proxy {
        connection,
        tenants,
        client,
        target,
        replay_body_limit: c.replay_body_limit,
        max_body: c.max_body,
        timeout: c.timeout,
        connect_url,
        provider_signals: c.provider == Provider::Cloudbeds,
        pool: h1::Pool::for_upstream(&c.upstream, c.connect_timeout),
        // The caller sets `[limits]`, which are not per connection.
        limits: Default::default(),
        limiter: limiter(c),
        key_header: c.keys.header.clone(),
    }
}

/// The connection's rate limit (SPEC section 11). With `per = "tenant"` on an app, this one
/// admits nothing itself: each tenant gets a copy ([`Limiter::follower`]).
fn limiter(c: &ConnectionConfig) -> Option<Arc<Limiter>> {
    c.rate_limit.as_ref().map(|r| Arc::new(Limiter::new(r)))
}

/// Refresh-token grants and delivered or migrated API keys live in the store; client
/// credentials and keys from the config do not.
fn keeps_a_record(c: &ConnectionConfig) -> bool {
    match c.grant {
        GrantKind::AuthorizationCode => true,
        GrantKind::ApiKey => !crate::token::keys::from_config(c),
        GrantKind::ClientCredentials => false,
    }
}
