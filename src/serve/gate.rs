//! Admission at accept time, per listener (SPEC section 13): at most `max_connections` open
//! connections (one more is closed at once, so a flood on one port cannot use up the
//! process's file descriptors and starve the others), and `allow_clients`, the networks
//! whose connections are served; any other peer gets 403 and a close.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ipnet::IpNet;

use crate::config::Limits;

/// One listener's admission rules and its count of open connections. Shared by every
/// worker accepting from the same listening socket, so the cap is per listener.
pub struct Gate {
    limits: Limits,
    allow: Vec<IpNet>,
    open: Arc<AtomicUsize>,
    /// Set while connections are being refused, so a flood logs one warning, not one per
    /// connection.
    refusing: AtomicBool,
}

/// Holds one place under the cap for as long as its connection is open.
pub struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    /// `allow` empty: every peer may use the listener.
    pub fn new(limits: Limits, allow: Vec<IpNet>) -> Self {
        Self {
            limits,
            allow,
            open: Arc::new(AtomicUsize::new(0)),
            refusing: AtomicBool::new(false),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A place for a new connection, or `None` when `max_connections` are open.
    pub fn admit(&self, what: &str) -> Option<Permit> {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if before >= self.limits.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            if !self.refusing.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    listener = what,
                    max_connections = self.limits.max_connections,
                    "connection limit reached: new connections are closed at once"
                );
            }
            return None;
        }
        self.refusing.store(false, Ordering::Relaxed);
        Some(Permit(Arc::clone(&self.open)))
    }

    /// Whether a peer at `ip` may use the listener.
    pub fn allows(&self, ip: IpAddr) -> bool {
        // A dual-stack listener sees IPv4 peers as `::ffff:a.b.c.d`.
        let ip = ip.to_canonical();
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max_connections: usize, allow: &[&str]) -> Gate {
        let limits = Limits {
            max_connections,
            ..Limits::default()
        };
        let allow = allow.iter().map(|n| n.parse().unwrap()).collect();
        Gate::new(limits, allow)
    }

    #[test]
    fn refuses_above_the_cap_and_frees_a_place_when_a_connection_closes() {
        let gate = gate(2, &[]);
        let first = gate.admit("test").unwrap();
        let _second = gate.admit("test").unwrap();
        assert!(gate.admit("test").is_none());
        assert_eq!(gate.open(), 2, "a refused connection does not count");
        drop(first);
        assert!(gate.admit("test").is_some());
    }

    #[test]
    fn an_empty_list_allows_everyone() {
        let gate = gate(1, &[]);
        assert!(gate.allows("203.0.113.9".parse().unwrap()));
        assert!(gate.allows("::1".parse().unwrap()));
    }

    #[test]
    fn only_listed_networks_are_allowed() {
        let gate = gate(1, &["10.0.0.0/8", "2001:db8::/32"]);
        assert!(gate.allows("10.1.2.3".parse().unwrap()));
        assert!(gate.allows("2001:db8::7".parse().unwrap()));
        assert!(!gate.allows("127.0.0.1".parse().unwrap()));
        assert!(!gate.allows("11.0.0.1".parse().unwrap()));
    }

    #[test]
    fn ipv4_peers_of_a_dual_stack_listener_match_ipv4_networks() {
        let gate = gate(1, &["10.0.0.0/8"]);
        assert!(gate.allows("::ffff:10.9.8.7".parse().unwrap()));
        assert!(!gate.allows("::ffff:127.0.0.1".parse().unwrap()));
    }
}
