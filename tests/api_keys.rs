//! API keys (SPEC section 10) end to end, on real sockets: a key from the config goes
//! upstream as `x-api-key` on both request paths and the app's own credentials do not; a key
//! the provider rejects stops the connection without a loop; automatic delivery through the
//! connect flow; migration by the admin listener and by `bearerd migrate`, its errors, and no
//! refresh grant ever sent for a migrated record (after a restart, from a second process on
//! the same store, and on postgres when `BEARERD_TEST_DATABASE_URL` is set); the keep-alive
//! of an idle key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pg_support;
mod support;

mod api_keys {
    pub mod delivery;
    pub mod injection;
    pub mod keepalive;
    pub mod migrate;
    pub mod rejection;
    pub mod rig;
    pub mod shared_store;
    pub mod token_server;
}
