//! An app's tenants (SPEC section 9): one grant per hotel, created by the install flow while
//! bearerd runs, each with the token cell, refresher, single flight and store record
//! (`NAME/TENANT`) of a connection.
//!
//! [`Tenants`] is the app's registry. The request paths read its routing table (tenant id ->
//! the grant serving it) from an `ArcSwap`, without locks; installs, the store watcher
//! ([`watch`]) and a grant's change of covered ids replace the table whole. A tenant's
//! refresher is the one of [`crate::token::refresher`], told by the registry when its record
//! changed (it does not poll or listen itself: with thousands of tenants one watcher per
//! app is what the store can bear), and sharing the app's `token_concurrency` permits.

pub mod ids;
pub mod install;
pub mod list;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch as channel;

use crate::config::{ConnectionConfig, Provider, Revocation, TenantRouting};
use crate::metrics::ConnectionMetrics;
use crate::store::TokenStore;
use crate::token::oauth::TokenEndpoint;
use crate::token::refresher::{Grant, KeySettings, Refresher, TenantLink};
use crate::token::{ConnState, Connection, TokenState};
use crate::upstream::HttpClient;

pub use ids::valid_id;

/// One tenant: its id and the cell its refresher writes.
pub struct Tenant {
    pub id: String,
    pub connection: Arc<Connection>,
    /// The ids its grant serves (empty: its own id).
    pub covers: Vec<String>,
}

impl Tenant {
    /// The ids requests may name to reach this tenant.
    pub fn routes(&self) -> Vec<String> {
        if self.covers.is_empty() {
            vec![self.id.clone()]
        } else {
            self.covers.clone()
        }
    }
}

/// What building a tenant's refresher takes, from the app's config.
pub struct Blueprint {
    pub endpoint: Option<Arc<TokenEndpoint>>,
    pub revocation: Arc<Revocation>,
    pub store: Option<Arc<dyn TokenStore>>,
    pub skew: Option<Duration>,
    pub lock_wait: Duration,
    pub token_wait: Duration,
    pub metrics: ConnectionMetrics,
    pub shutdown: channel::Receiver<bool>,
    /// How tenants hold API keys (SPEC section 10): delivered by the install flow
    /// (`grant = "api_key"`) or migrated from a tenant's refresh token. One for all tenants.
    pub keys: Arc<KeySettings>,
    /// With a budget per tenant (`per = "tenant"`): the app's limiter, which admits nothing
    /// itself but holds this replica's share, copied into each tenant's own.
    pub per_tenant_limit: Option<Arc<crate::ratelimit::Limiter>>,
}

/// Why a request reaches no tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// The request names none (or an invalid one).
    NoTenant,
    /// Several ids that different grants serve.
    Mixed,
    /// No tenant of this id is installed.
    Unknown(String),
}

/// An app's tenants.
pub struct Tenants {
    pub app: String,
    pub provider: Provider,
    pub routing: TenantRouting,
    pub claim: Option<String>,
    /// `{public_url}/connections/NAME`.
    pub base_url: String,
    /// Tenant id -> the cell of the grant serving it. Read by every request.
    routes: ArcSwap<HashMap<String, Arc<Connection>>>,
    /// Every tenant by id; the writers' side.
    all: Mutex<BTreeMap<String, Tenant>>,
    blueprint: Blueprint,
    link: Arc<TenantLink>,
    /// The number of `link.permits`.
    token_concurrency: u32,
    /// For the install flow's `getHotels` (Cloudbeds) and the upstream's base.
    pub client: HttpClient,
    pub upstream: url::Url,
}

impl Tenants {
    pub fn new(
        c: &ConnectionConfig,
        routing: TenantRouting,
        base_url: String,
        blueprint: Blueprint,
        client: HttpClient,
        token_concurrency: u32,
    ) -> Arc<Self> {
        Arc::new_cyclic(|registry: &Weak<Tenants>| {
            let registry = registry.clone();
            let link = Arc::new(TenantLink {
                permits: tokio::sync::Semaphore::new(token_concurrency as usize),
                on_covers: Box::new(move |name, covers| {
                    if let Some(tenants) = registry.upgrade() {
                        tenants.covers_changed(name, covers);
                    }
                }),
            });
            Tenants {
                app: c.name.clone(),
                provider: c.provider,
                routing,
                claim: c.tenants.as_ref().and_then(|t| t.claim.clone()),
                base_url,
                routes: ArcSwap::from_pointee(HashMap::new()),
                all: Mutex::new(BTreeMap::new()),
                blueprint,
                link,
                token_concurrency,
                client,
                upstream: c.upstream.clone(),
            }
        })
    }

    /// At shutdown: waits until no tenant's refresh is in flight, then keeps every permit so
    /// that none starts. A refresh holds one of the app's `token_concurrency` permits from
    /// before its token request until its tokens are saved; a process that exited in
    /// between would lose a refresh token the provider has already rotated, and the next
    /// replica to refresh that tenant would present the old one (a reuse: the provider
    /// revokes the grant). Measured with benches/tenant_replicas: 1 reuse in 10,219
    /// refreshes when replicas were stopped at the end of a run.
    pub async fn quiesce(&self) {
        if let Ok(permits) = self.link.permits.acquire_many(self.token_concurrency).await {
            permits.forget();
        }
    }

    /// The cell of the grant serving the tenant(s) a request names. `key` is the header
    /// value (a comma-separated list is allowed when one grant serves every id) or the first
    /// path segment.
    pub fn route(&self, key: &[u8]) -> Result<Arc<Connection>, Miss> {
        let routes = self.routes.load();
        let key = std::str::from_utf8(key).map_err(|_| Miss::NoTenant)?;
        let mut found: Option<&Arc<Connection>> = None;
        for id in key.split(',') {
            let id = id.trim();
            if !valid_id(id) {
                return Err(Miss::NoTenant);
            }
            let Some(connection) = routes.get(id) else {
                return Err(Miss::Unknown(id.to_owned()));
            };
            match found {
                Some(previous) if !Arc::ptr_eq(previous, connection) => return Err(Miss::Mixed),
                _ => found = Some(connection),
            }
        }
        found.cloned().ok_or(Miss::NoTenant)
    }

    /// The tenant's cell, creating the tenant (and starting its refresher) if it is new.
    /// `None` for an invalid id.
    pub fn get_or_create(&self, id: &str) -> Option<Arc<Connection>> {
        self.get_or_create_many(std::iter::once(id.to_owned()))
            .pop()
            .map(|(_, c)| c)
    }

    /// As [`Tenants::get_or_create`] for many ids, publishing the routing table once.
    pub fn get_or_create_many(
        &self,
        ids: impl IntoIterator<Item = String>,
    ) -> Vec<(String, Arc<Connection>)> {
        let mut all = self.lock();
        let mut created = false;
        let mut out = Vec::new();
        for id in ids {
            if !valid_id(&id) {
                continue;
            }
            if let Some(tenant) = all.get(&id) {
                out.push((id, Arc::clone(&tenant.connection)));
                continue;
            }
            let connection = self.spawn(&id);
            all.insert(
                id.clone(),
                Tenant {
                    id: id.clone(),
                    connection: Arc::clone(&connection),
                    covers: Vec::new(),
                },
            );
            created = true;
            out.push((id, connection));
        }
        if created {
            self.publish_routes(&all);
        }
        out
    }

    /// Whether each tenant has a rate limit of its own (`per = "tenant"`).
    pub fn limits_per_tenant(&self) -> bool {
        self.blueprint.per_tenant_limit.is_some()
    }

    /// Applies `change` (a new share, a hold) to the app's per-tenant limit and to every
    /// tenant's own, under the lock that creating a tenant takes: a tenant made meanwhile
    /// copies the changed limit or is changed here, never neither.
    pub fn each_limiter(&self, change: impl Fn(&crate::ratelimit::Limiter)) {
        let Some(template) = &self.blueprint.per_tenant_limit else {
            return;
        };
        let all = self.lock();
        change(template);
        for tenant in all.values() {
            if let Some(limiter) = tenant.connection.limiter() {
                change(limiter);
            }
        }
    }

    /// One tenant's cell and covered ids.
    pub fn get(&self, id: &str) -> Option<(Arc<Connection>, Vec<String>)> {
        self.lock()
            .get(id)
            .map(|t| (Arc::clone(&t.connection), t.covers.clone()))
    }

    /// Every tenant: id, cell and covered ids, ordered by id.
    pub fn list(&self) -> Vec<(String, Arc<Connection>, Vec<String>)> {
        self.lock()
            .values()
            .map(|t| (t.id.clone(), Arc::clone(&t.connection), t.covers.clone()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tenant counts by reported state.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for tenant in self.lock().values() {
            *counts
                .entry(tenant.connection.snapshot().state.as_str())
                .or_insert(0) += 1;
        }
        counts
    }

    /// The tenant whose grant serves `id` (a covered property of a group grant included).
    pub fn serving(&self, id: &str) -> Option<Arc<Connection>> {
        self.routes.load().get(id).cloned()
    }

    /// `grant = "api_key"`: installs deliver API keys (SPEC section 10), not tokens.
    pub fn delivers_keys(&self) -> bool {
        self.blueprint.keys.delivered
    }

    /// `{public_url}/connections/NAME/install`.
    pub fn install_url(&self) -> String {
        format!("{}/install", self.base_url)
    }

    /// Where a tenant is reconnected.
    pub fn connect_url(&self, id: &str) -> String {
        format!("{}/tenants/{id}/connect", self.base_url)
    }

    /// The record name of a tenant.
    pub fn record_name(&self, id: &str) -> String {
        format!("{}/{id}", self.app)
    }

    /// The tenant id of a record name of this app.
    pub fn tenant_of<'a>(&self, record: &'a str) -> Option<&'a str> {
        record
            .strip_prefix(self.app.as_str())?
            .strip_prefix('/')
            .filter(|id| valid_id(id))
    }

    fn covers_changed(&self, record: &str, covers: &[String]) {
        let Some(id) = self.tenant_of(record) else {
            return;
        };
        let mut all = self.lock();
        if let Some(tenant) = all.get_mut(id) {
            tenant.covers = covers.to_vec();
            self.publish_routes(&all);
        }
    }

    /// Rebuilds the routing table: each tenant's own id first, then the ids its grant
    /// covers, so that a property with a grant of its own is served by that grant.
    fn publish_routes(&self, all: &BTreeMap<String, Tenant>) {
        let mut routes = HashMap::with_capacity(all.len());
        for tenant in all.values() {
            if tenant.covers.is_empty() || tenant.covers.contains(&tenant.id) {
                routes.insert(tenant.id.clone(), Arc::clone(&tenant.connection));
            }
        }
        for tenant in all.values() {
            for id in &tenant.covers {
                routes
                    .entry(id.clone())
                    .or_insert_with(|| Arc::clone(&tenant.connection));
            }
        }
        self.routes.store(Arc::new(routes));
    }

    /// Builds a tenant's cell and starts its refresher.
    fn spawn(&self, id: &str) -> Arc<Connection> {
        let b = &self.blueprint;
        let initial = match &b.endpoint {
            Some(_) => TokenState::initial(ConnState::Refreshing, None),
            None => TokenState::initial(
                ConnState::Misconfigured,
                Some("the app's client credentials are unavailable".into()),
            ),
        };
        let (connection, commands) = Connection::new(
            self.record_name(id),
            initial,
            b.token_wait,
            b.metrics.for_tenant(),
        );
        let refresher = Refresher::new(
            Arc::clone(&connection),
            commands,
            Arc::clone(&b.revocation),
            b.endpoint.clone(),
            Grant::None,
            b.store.clone(),
            b.skew,
            b.lock_wait,
            b.shutdown.clone(),
        )
        .with_keys(Arc::clone(&b.keys))
        .for_tenant(Arc::clone(&self.link), Vec::new());
        if let Some(template) = &b.per_tenant_limit {
            connection.limit_with(Arc::new(template.follower()));
        }
        tokio::spawn(refresher.run());
        connection
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Tenant>> {
        // Inserts and field updates only: a panic cannot leave the map inconsistent.
        self.all
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
