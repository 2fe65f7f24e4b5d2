//! A real Prometheus (Debian's `/usr/bin/prometheus`) as a child process, for the tests that
//! evaluate the alert rules and the dashboard against a running bearerd.
//!
//! [`Prometheus::start`] writes a config (1 s scrape and evaluation interval, the repository's
//! rules file) into a temporary directory, starts the server on a free 127.0.0.1 port with its
//! TSDB there, and waits for `/-/ready`; the process is killed when dropped. [`tool_or_skip`]
//! decides whether a test that needs a Prometheus binary runs: without it, a loud `SKIPPED`, or
//! a failure when `CI` is set (`.ci/run` installs the `prometheus` package).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{TempDir, eventually, free_port, get};

pub const PROMETHEUS: &str = "prometheus";
pub const PROMTOOL: &str = "promtool";

/// True if `tool` is on PATH. Otherwise prints a loud `SKIPPED` and returns false, or panics
/// when `CI` is set (CI must have installed the `prometheus` package).
pub fn tool_or_skip(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
    if found {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(
        !ci,
        "CI is set but `{tool}` is not on PATH: .ci/run must install the prometheus package"
    );
    eprintln!("\n!!!!!!!!!! SKIPPED: `{tool}` is not installed !!!!!!!!!!");
    eprintln!("!!!!!!!!!! install it with: apt-get install -y prometheus\n");
    false
}

/// The repository's file `path` (relative to the crate root).
pub fn repo_file(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A running Prometheus server, killed (and reaped) on drop.
pub struct Prometheus {
    child: Child,
    pub url: String,
    dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `targets` (host:port) as job `bearerd` every second and evaluates the
    /// repository's rules file every second.
    pub async fn start(targets: &[String]) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let rules = repo_file("deploy/prometheus/bearerd-rules.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - \"{rules}\"\n\
             scrape_configs:\n  - job_name: bearerd\n    static_configs:\n      - targets: [{targets}]\n",
            rules = rules.display(),
            targets = targets.join(", "),
        );
        let config = dir.file("prometheus.yml", &config);
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let port = free_port();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start prometheus");
        let mut prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let ready = format!("{}/-/ready", prometheus.url);
        let exited = eventually(Duration::from_secs(20), "prometheus to be ready", || {
            let status = prometheus.child.try_wait().ok().flatten();
            let ready = ready.clone();
            async move {
                if status.is_some() {
                    return Some(true);
                }
                let r = get(&ready, None).await.ok()?;
                r.status.is_success().then_some(false)
            }
        })
        .await;
        assert!(!exited, "prometheus exited:\n{}", prometheus.log());
        prometheus
    }

    /// What Prometheus logged (warnings and errors), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/PATH?QUERY`; panics unless the answer is `"status": "success"`, and returns
    /// its `data`.
    pub async fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let url = format!("{}/api/v1/{path}?{query}", self.url);
        let answer = get(&url, None).await.expect("prometheus answers").json();
        assert_eq!(
            answer["status"], "success",
            "{path} {params:?} did not succeed: {answer}"
        );
        answer["data"].clone()
    }

    /// Every series `expr` had between `start` and now (Unix seconds), one point a second.
    pub async fn range(&self, expr: &str, start: f64) -> Vec<Value> {
        let end = crate::unix_now();
        let (start, end) = (format!("{start:.3}"), format!("{end:.3}"));
        let data = self
            .api(
                "query_range",
                &[
                    ("query", expr),
                    ("start", &start),
                    ("end", &end),
                    ("step", "1"),
                ],
            )
            .await;
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// The instant vector `expr` now.
    pub async fn instant(&self, expr: &str) -> Vec<Value> {
        let data = self.api("query", &[("query", expr)]).await;
        data["result"].as_array().cloned().unwrap_or_default()
    }
}
