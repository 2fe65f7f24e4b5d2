//! A bearerd whose metrics give every alert and dashboard panel something to show: each
//! connection is set up for one situation an operator must see.
//!
//! | connection | situation |
//! | --- | --- |
//! | `api` | traffic: 2xx, 4xx, upstream 5xx and 429, a 401 answered by refresh-and-replay |
//! | `down` | upstream unreachable: bearerd answers 502 itself |
//! | `limited` | `rate_limit` 1 rps: one request waits, others are refused with 429 |
//! | `flaky` | 20 s tokens, then a token endpoint that keeps failing (token runs out) |
//! | `ledger` | refresh-token grant whose refreshed tokens cannot be saved |
//! | `hotel` | refresh-token grant revoked at the provider: `needs_authorization` |
//! | `cfg` | the token endpoint rejects the client: `misconfigured` |

use std::time::Duration;

use http::StatusCode;
use serde_json::Value;

use crate::support::{
    Bearerd, Failure, TempDir, TokenServer, TokenServerConfig, Upstream, ac_config, cc_config,
    cc_config_for, dead_url, eventually, get, seed_store,
};

pub struct Scenario {
    pub bearerd: Bearerd,
    store: TempDir,
    api: TokenServer,
    api_upstream: Upstream,
    hotel: TokenServer,
    flaky: TokenServer,
    _others: Vec<TokenServer>,
}

/// The `[[connection]]` table of a whole test config (without its `[admin]` and `[store]`).
fn table(config: String) -> String {
    let start = config.find("[[connection]]").unwrap_or(0);
    config[start..].to_owned()
}

async fn token_server(lifetime: Duration) -> TokenServer {
    TokenServer::start(TokenServerConfig {
        lifetime: Some(lifetime),
        ..TokenServerConfig::default()
    })
    .await
}

impl Scenario {
    /// Starts every connection and waits until each has settled in its starting state.
    pub async fn start() -> Scenario {
        let hour = Duration::from_secs(3600);
        let (api, hotel, ledger) = (
            token_server(hour).await,
            token_server(hour).await,
            token_server(hour).await,
        );
        let (flaky, cfg) = (
            token_server(Duration::from_secs(20)).await,
            token_server(hour).await,
        );
        cfg.script(Failure::InvalidClient);
        let api_upstream = Upstream::start(api.clone()).await;
        let hotel_upstream = Upstream::start(hotel.clone()).await;
        let open = Upstream::start_open().await;
        let store = TempDir::new("observability-store");
        seed_store(store.path(), "hotel", &hotel.seed_grant()).await;
        seed_store(store.path(), "ledger", &ledger.seed_grant()).await;
        let path = store.path();
        let limit = r#"rate_limit = { rps = 1, burst = 1, over = "wait", max_wait = "1500ms" }"#;
        let config = [
            ac_config("hotel", "oauth2", &hotel, &hotel_upstream.url(), path, ""),
            table(ac_config(
                "ledger",
                "oauth2",
                &ledger,
                &open.url(),
                path,
                "",
            )),
            table(cc_config("api", &api, &api_upstream, "")),
            table(cc_config_for("down", &api, &dead_url(), "")),
            table(cc_config("limited", &api, &open, limit)),
            table(cc_config("flaky", &flaky, &open, "")),
            table(cc_config("cfg", &cfg, &open, "")),
        ]
        .concat();
        let scenario = Scenario {
            bearerd: Bearerd::start(&config).await,
            store,
            api,
            api_upstream,
            hotel,
            flaky,
            _others: vec![ledger, cfg],
        };
        for name in ["hotel", "ledger", "api", "down", "limited", "flaky"] {
            scenario.wait_state(name, "connected").await;
        }
        scenario.wait_state("cfg", "misconfigured").await;
        scenario
    }

    pub async fn wait_state(&self, name: &str, state: &str) {
        let url = format!("{}/connections/{name}", self.bearerd.admin);
        eventually(Duration::from_secs(15), &format!("{name} {state}"), || {
            let url = url.clone();
            async move {
                let c: Value = get(&url, None).await.ok()?.json();
                (c["state"] == state).then_some(())
            }
        })
        .await;
    }

    async fn through(&self, name: &str, path: &str) -> StatusCode {
        let url = format!("{}{path}", self.bearerd.proxy(name));
        get(&url, None).await.expect("proxy answers").status
    }

    /// Makes every situation of the table above happen (after Prometheus has scraped the
    /// counters at zero, so that `increase()` sees each event).
    pub async fn act(&self) {
        // The next refreshes of `flaky` fail; its 20 s token runs out meanwhile.
        for _ in 0..50 {
            self.flaky.script(Failure::Status500);
        }
        // A directory where the temp file must go makes every save fail, even for root.
        std::fs::create_dir(self.store.path().join(".ledger.json.tmp")).expect("blocker");
        let refresh = format!("{}/connections/ledger/refresh", self.bearerd.admin);
        tokio::spawn(crate::post(refresh));

        for path in ["/ok/1", "/ok/2", "/ok/3"] {
            assert_eq!(self.through("api", path).await, StatusCode::OK);
        }
        assert_eq!(
            self.through("api", "/status/404").await,
            StatusCode::NOT_FOUND
        );
        for _ in 0..2 {
            let status = self.through("api", "/status/503").await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        }
        let status = self.through("api", "/status/429").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        for _ in 0..2 {
            assert_eq!(self.through("down", "/x").await, StatusCode::BAD_GATEWAY);
        }
        self.api.kill_all_access_tokens();
        assert_eq!(self.through("api", "/after-401").await, StatusCode::OK);
        assert!(self.api_upstream.unauthorized() >= 1, "the 401 happened");

        // Four at once at 1 rps, burst 1, max_wait 1.5 s: one goes, one waits about a
        // second, the others would wait longer and are refused (once the limiter is on the
        // request path; the test reads the counters to know).
        let requests = (0..4).map(|_| self.through("limited", "/limited"));
        let statuses = futures_util::future::join_all(requests).await;
        assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");

        // The hotel withdraws its grant; the next request finds out.
        self.hotel.disconnect();
        let status = self.through("hotel", "/after-uninstall").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        self.wait_state("hotel", "needs_authorization").await;
    }
}
