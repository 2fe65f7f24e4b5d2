//! bearerd: a token-refreshing authenticating reverse proxy.
//!
//! A legacy app points its API base URL at a bearerd listener; bearerd forwards each request
//! to the real upstream with a current `Authorization: Bearer` token and owns the token's
//! whole lifecycle.
//!
//! # Request flow
//!
//! app -> [`serve::serve_proxy`] -> for plain-`http` upstreams, the HTTP/1.1 fast path
//! ([`proxy::h1`]: httparse, the head rewritten byte for byte, a per-worker upstream pool);
//! requests it does not serve (h2c, HTTP/1.0, chunked or large bodies, `Expect`, `Upgrade`)
//! and https upstreams go to hyper and [`proxy::Proxy::handle`]. Both follow the same rules:
//! refuse non-origin-form targets, strip hop-by-hop headers and the app's `Authorization`
//! (and its API-key header), read the credential from the connection's cell
//! ([`token::Connection::token`], lock-free: a bearer token, or an API key in its own
//! header), forward. On a 401 for the current generation, ask the refresher for a newer one, wait for
//! it, replay a buffered body once.
//!
//! # Layout
//!
//! - [`config`]: TOML schema -> validated [`config::Config`]; provider presets; secrets.
//! - [`app`]: wiring, listeners, graceful shutdown.
//! - [`serve`]: the accept loop; [`serve::gate`]: `max_connections` and `allow_clients` per
//!   listener; [`serve::limits`] and [`serve::body`]: head, idle and body timeouts on
//!   connections hyper serves; [`serve::workers`]: one current-thread runtime per proxy
//!   worker thread, each with its own upstream pool.
//! - [`proxy`]: the per-connection service and the error -> status map; [`proxy::h1`]: the
//!   HTTP/1.1 fast path.
//! - [`upstream`]: rustls client, base URL joining.
//! - [`token`]: the token cell; [`token::refresher`] (single writer, schedule, backoff),
//!   [`token::oauth`] (token endpoint and failure classification), [`token::schedule`],
//!   [`token::import`] (`bearerd import`: redeem first, store what the provider returns),
//!   [`token::keys`] (API keys: never refreshed, delivered, migrated, kept alive).
//! - [`admin`]: health, readiness, metrics, status JSON and page, manual refresh, the
//!   connect flow's routes, disconnect, webhooks.
//! - [`connect`]: connect-flow state and PKCE, HTML pages, webhook parsing.
//! - [`store`]: the token store trait; [`store::file`] (flock + atomic replace),
//!   [`store::postgres`] (row lock, `NOTIFY`, migrations), [`store::seal`] (AES-256-GCM).
//! - [`tenants`]: an app's tenants (one grant per hotel): the routing table read by both
//!   request paths, the install flow's tenant ids, the store watcher.
//! - [`demo`]: `bearerd demo`, the real bearerd in front of a simulated provider.
//! - [`discovery`]: RFC 8414 / OpenID metadata for `issuer`.
//! - [`metrics`]: every metric name, one owned registry.
//! - [`logging`]: the log filter, with every dependency held below debug.
//! - [`notify`]: signed notifications of state changes someone must act on, from an
//!   outbox in the store.
//! - [`ratelimit`]: upstream request budgets: per-window quota, FIFO waiting, pauses.
//! - [`secret`]: `SecretString`, redacted in `Debug`, shared by every layer.
//! - [`scrub`]: provider text cleaned of every secret bearerd knows before it is stored,
//!   logged or shown.

pub mod admin;
pub mod app;
pub mod config;
pub mod connect;
pub mod demo;
pub mod discovery;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod proxy;
pub mod ratelimit;
pub mod scrub;
pub mod secret;
pub mod serve;
pub mod store;
pub mod tenants;
pub mod token;
pub mod upstream;
