//! Every metric of SPEC section 8, in one owned registry. Per-connection handles are
//! resolved once ([`ConnectionMetrics`]) so the request path does no label lookups.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::token::TokenState;
use crate::token::state::{ConnState, Outcome};

/// Why a refresh ran (the `trigger` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Scheduled,
    Unauthorized,
    Startup,
    Manual,
    Connect,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Unauthorized => "unauthorized",
            Self::Startup => "startup",
            Self::Manual => "manual",
            Self::Connect => "connect",
        }
    }
}

/// Who produced an answer (the `source` label of `bearerd_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The upstream's answer, passed on.
    Upstream,
    /// bearerd's own problem answer.
    Bearerd,
}

/// The registry and the metric families.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_unauthorized: IntCounterVec,
    replays: IntCounterVec,
    token_refreshes: IntCounterVec,
    token_refresh_duration: HistogramVec,
    token_refresh_waiters: IntCounterVec,
    token_expiry: IntGaugeVec,
    token_generation: IntGaugeVec,
    connection_state: IntGaugeVec,
    store_operations: IntCounterVec,
    rate_limited: IntCounterVec,
    rate_limit_wait: HistogramVec,
    upstream_throttled: IntCounterVec,
    tenants: IntGaugeVec,
}

const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const WAIT_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];
const REFRESH_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(metric.clone()))?;
            Ok::<_, prometheus::Error>(metric)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(metric.clone()))?;
            Ok::<_, prometheus::Error>(metric)
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            let metric = HistogramVec::new(opts, &["connection"])?;
            registry.register(Box::new(metric.clone()))?;
            Ok::<_, prometheus::Error>(metric)
        };
        let metrics = Self {
            requests: counter(
                "bearerd_requests_total",
                "Requests answered by the proxy, by status class and by who answered (upstream or bearerd).",
                &["connection", "code", "source"],
            )?,
            request_duration: histogram(
                "bearerd_request_duration_seconds",
                "Time from request to response headers.",
                REQUEST_BUCKETS,
            )?,
            upstream_unauthorized: counter(
                "bearerd_upstream_unauthorized_total",
                "Upstream 401s (or provider auth-failure signals), by the token's generation.",
                &["connection", "token"],
            )?,
            replays: counter(
                "bearerd_replays_total",
                "Requests replayed after a 401, by outcome.",
                &["connection", "outcome"],
            )?,
            token_refreshes: counter(
                "bearerd_token_refreshes_total",
                "Token endpoint requests, by trigger and result.",
                &["connection", "trigger", "result"],
            )?,
            token_refresh_duration: histogram(
                "bearerd_token_refresh_duration_seconds",
                "Duration of token endpoint requests.",
                REFRESH_BUCKETS,
            )?,
            token_refresh_waiters: counter(
                "bearerd_token_refresh_waiters_total",
                "Callers that waited for a refresh instead of starting their own.",
                &["connection"],
            )?,
            token_expiry: gauge(
                "bearerd_token_expiry_timestamp_seconds",
                "Unix time the current access token expires (0 if none or unknown).",
                &["connection"],
            )?,
            token_generation: gauge(
                "bearerd_token_generation",
                "Generation of the current token set.",
                &["connection"],
            )?,
            connection_state: gauge(
                "bearerd_connection_state",
                "1 for the connection's current state, 0 for the others.",
                &["connection", "state"],
            )?,
            store_operations: counter(
                "bearerd_store_operations_total",
                "Token store operations, by result.",
                &["op", "result"],
            )?,
            rate_limited: counter(
                "bearerd_rate_limited_total",
                "Requests held back by the upstream rate limit: waited their turn, or rejected with 429.",
                &["connection", "outcome"],
            )?,
            rate_limit_wait: histogram(
                "bearerd_rate_limit_wait_seconds",
                "How long requests waited for their turn under the upstream rate limit.",
                WAIT_BUCKETS,
            )?,
            upstream_throttled: counter(
                "bearerd_upstream_throttled_total",
                "Upstream 429 answers (each pauses the connection's requests).",
                &["connection"],
            )?,
            tenants: gauge(
                "bearerd_tenants",
                "An app's tenants (SPEC section 9), by state.",
                &["connection", "state"],
            )?,
            registry,
        };
        let build_info = IntGaugeVec::new(
            Opts::new(
                "bearerd_build_info",
                "1, labelled with the running bearerd's version.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        metrics.registry.register(Box::new(build_info))?;
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
        metrics.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        // Exposed at zero from the start, like the per-connection series.
        for op in ["load", "save", "lock"] {
            for result in ["ok", "error"] {
                metrics.store_operations.with_label_values(&[op, result]);
            }
        }
        Ok(metrics)
    }

    /// Resolves (and so exposes, at zero) every series of one connection.
    pub fn connection(&self, name: &str) -> ConnectionMetrics {
        ConnectionMetrics {
            handles: std::sync::Arc::new(self.handles(name)),
            tenant: None,
        }
    }

    fn handles(&self, name: &str) -> Handles {
        let codes = ["upstream", "bearerd"].map(|source| {
            ["2xx", "3xx", "4xx", "5xx"]
                .map(|c| self.requests.with_label_values(&[name, c, source]))
        });
        let states =
            ConnState::ALL.map(|s| self.connection_state.with_label_values(&[name, s.as_str()]));
        Handles {
            name: name.to_owned(),
            requests: codes,
            request_duration: self.request_duration.with_label_values(&[name]),
            unauthorized_current: self
                .upstream_unauthorized
                .with_label_values(&[name, "current"]),
            unauthorized_superseded: self
                .upstream_unauthorized
                .with_label_values(&[name, "superseded"]),
            replay_ok: self.replays.with_label_values(&[name, "ok"]),
            replay_unauthorized: self.replays.with_label_values(&[name, "unauthorized"]),
            replay_not_replayable: self.replays.with_label_values(&[name, "not_replayable"]),
            refreshes: self.token_refreshes.clone(),
            refresh_duration: self.token_refresh_duration.with_label_values(&[name]),
            refresh_waiters: self.token_refresh_waiters.with_label_values(&[name]),
            expiry: self.token_expiry.with_label_values(&[name]),
            generation: self.token_generation.with_label_values(&[name]),
            states,
            rate_waited: self.rate_limited.with_label_values(&[name, "waited"]),
            rate_rejected: self.rate_limited.with_label_values(&[name, "rejected"]),
            rate_wait: self.rate_limit_wait.with_label_values(&[name]),
            throttled: self.upstream_throttled.with_label_values(&[name]),
            tenant_states: None,
        }
    }

    /// An app's handles: as [`Metrics::connection`], plus its tenant counts by state (at zero
    /// from the start), which its tenants' handles ([`ConnectionMetrics::for_tenant`]) keep.
    pub fn app(&self, name: &str) -> ConnectionMetrics {
        let mut handles = self.handles(name);
        let gauges = ConnState::ALL.map(|s| self.tenants.with_label_values(&[name, s.as_str()]));
        handles.tenant_states = Some(gauges);
        ConnectionMetrics {
            handles: std::sync::Arc::new(handles),
            tenant: None,
        }
    }

    pub fn store_operation(&self, op: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.store_operations.with_label_values(&[op, result]).inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// One connection's metric handles. An app's tenants share the app's ([`Handles`], one
/// allocation per app): each tenant adds only the state it is counted under.
#[derive(Clone)]
pub struct ConnectionMetrics {
    handles: std::sync::Arc<Handles>,
    /// A tenant's handles: the state it is counted under in `bearerd_tenants` (an index into
    /// [`ConnState::ALL`], or `NOT_COUNTED`).
    tenant: Option<std::sync::Arc<std::sync::atomic::AtomicU8>>,
}

impl std::ops::Deref for ConnectionMetrics {
    type Target = Handles;

    fn deref(&self) -> &Handles {
        &self.handles
    }
}

/// The series of one connection (or app), resolved once.
pub struct Handles {
    name: String,
    /// By source (upstream, bearerd), then status class.
    requests: [[IntCounter; 4]; 2],
    pub request_duration: prometheus::Histogram,
    pub unauthorized_current: IntCounter,
    pub unauthorized_superseded: IntCounter,
    pub replay_ok: IntCounter,
    pub replay_unauthorized: IntCounter,
    pub replay_not_replayable: IntCounter,
    refreshes: IntCounterVec,
    pub refresh_duration: prometheus::Histogram,
    pub refresh_waiters: IntCounter,
    expiry: IntGauge,
    generation: IntGauge,
    states: [IntGauge; 7],
    rate_waited: IntCounter,
    rate_rejected: IntCounter,
    rate_wait: prometheus::Histogram,
    pub throttled: IntCounter,
    /// An app's `bearerd_tenants` gauges, by [`ConnState::ALL`].
    tenant_states: Option<[IntGauge; 7]>,
}

const NOT_COUNTED: u8 = u8::MAX;

impl ConnectionMetrics {
    pub fn request(&self, status: http::StatusCode, source: Source, elapsed: Duration) {
        let class = match status.as_u16() {
            ..300 => 0,
            300..400 => 1,
            400..500 => 2,
            _ => 3,
        };
        self.requests[source as usize][class].inc();
        self.request_duration.observe(elapsed.as_secs_f64());
    }

    /// A request that passed the rate limit after `waited` (zero: it went at once).
    pub fn rate_passed(&self, waited: Duration) {
        if !waited.is_zero() {
            self.rate_waited.inc();
            self.rate_wait.observe(waited.as_secs_f64());
        }
    }

    /// A request refused by the rate limit.
    pub fn rate_rejected(&self) {
        self.rate_rejected.inc();
    }

    pub fn refresh(&self, trigger: Trigger, outcome: Outcome, elapsed: Duration) {
        self.refreshes
            .with_label_values(&[self.name.as_str(), trigger.as_str(), outcome.as_str()])
            .inc();
        self.refresh_duration.observe(elapsed.as_secs_f64());
    }

    /// Handles for one tenant of this app: the same counters (labelled with the app's name,
    /// so cardinality stays bounded by apps), and its state counted in `bearerd_tenants`
    /// instead of the per-connection gauges.
    pub fn for_tenant(&self) -> ConnectionMetrics {
        ConnectionMetrics {
            handles: std::sync::Arc::clone(&self.handles),
            tenant: Some(std::sync::Arc::new(std::sync::atomic::AtomicU8::new(
                NOT_COUNTED,
            ))),
        }
    }

    /// Mirrors a cell value into the gauges, the state as reported now (the refresher
    /// calls this again when a token expires).
    pub fn publish(&self, state: &TokenState) {
        if let (Some(last), Some(gauges)) = (&self.tenant, &self.tenant_states) {
            let reported = state.reported_state(tokio::time::Instant::now());
            let index = ConnState::ALL
                .iter()
                .position(|s| *s == reported)
                .and_then(|i| u8::try_from(i).ok())
                .unwrap_or(NOT_COUNTED);
            let previous = last.swap(index, std::sync::atomic::Ordering::AcqRel);
            if previous != index {
                if let Some(gauge) = gauges.get(usize::from(previous)) {
                    gauge.dec();
                }
                if let Some(gauge) = gauges.get(usize::from(index)) {
                    gauge.inc();
                }
            }
            return;
        }
        let expiry = state
            .expires_at_wall
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        self.expiry
            .set(if state.has_valid_token(tokio::time::Instant::now()) {
                expiry
            } else {
                0
            });
        self.generation.set(state.generation as i64);
        let reported = state.reported_state(tokio::time::Instant::now());
        for (gauge, s) in self.states.iter().zip(ConnState::ALL) {
            gauge.set(i64::from(s == reported));
        }
    }
}

/// Seconds since the Unix epoch, for status JSON.
pub fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
