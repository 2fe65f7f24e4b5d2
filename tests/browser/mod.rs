//! A real headless Chromium for end-to-end tests, driven over WebDriver with `fantoccini`.
//!
//! [`Browser::start`] spawns Debian's `/usr/bin/chromedriver` on a free port (a child process,
//! killed on drop) and opens a session on `/usr/bin/chromium` with a fresh profile directory.
//! [`tools_or_skip`] decides whether the test runs: without the two binaries it prints a loud
//! `SKIPPED` line, unless `CI` is set, where a missing browser is a failure (`.ci/run` installs
//! `chromium` and `chromium-driver`). Helpers wait with deadlines, never with fixed sleeps.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use crate::support::{BoxError, TempDir, free_port};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long one page may take to show an awaited element.
pub const STEP: Duration = Duration::from_secs(15);

/// True if the browser test should run. Without chromium or chromedriver: prints a loud
/// `SKIPPED` and returns false, or panics when `CI` is set (CI must have installed them).
pub fn tools_or_skip() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(
        !ci,
        "CI is set but {missing:?} is missing: .ci/run must install chromium and chromium-driver"
    );
    eprintln!("\n!!!!!!!!!! SKIPPED: chromium/chromedriver not installed ({missing:?}) !!!!!!!!!!");
    eprintln!("!!!!!!!!!! install them with: apt-get install -y chromium chromium-driver\n");
    false
}

/// A chromedriver child process and one WebDriver session in a fresh profile.
pub struct Browser {
    pub client: Client,
    _driver: Driver,
    _profile: TempDir,
}

/// The chromedriver child process, killed (and reaped) when dropped, also mid-start.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Browser {
    pub async fn start() -> Result<Browser, BoxError> {
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let driver = Driver(driver);
        let webdriver = format!("http://127.0.0.1:{port}");
        wait_ready(&webdriver).await?;
        let profile = TempDir::new("chromium-profile");
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            "--disable-quic".into(),
            "--window-size=1024,900".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("a JSON object literal")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&webdriver)
            .await;
        let client = client.map_err(|e| ctx(&format!("WebDriver session on {CHROMIUM}"), e))?;
        Ok(Browser {
            client,
            _driver: driver,
            _profile: profile,
        })
    }

    /// [`Browser::start`] within 30 s, or a panic saying why not.
    pub async fn launch() -> Browser {
        match tokio::time::timeout(Duration::from_secs(30), Browser::start()).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => panic!("cannot start the browser: {e}"),
            Err(_) => panic!("chromedriver/chromium did not start a session within 30 s"),
        }
    }

    /// Runs a test's steps for at most `limit`, then ends the session (chromedriver goes
    /// when the `Browser` is dropped). On failure (an error, or the time ran out) first saves
    /// `target/browser-{shot}.png` and prints where the browser was and its page. Returns
    /// the failure.
    pub async fn run_steps(
        &self,
        limit: Duration,
        shot: &str,
        steps: impl Future<Output = Result<(), BoxError>>,
    ) -> Option<String> {
        let failure = match tokio::time::timeout(limit, steps).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("the browser test did not finish within {limit:?}")),
        };
        if let Some(failure) = &failure {
            self.screenshot(shot).await;
            eprintln!("browser at {}\n{}", self.url().await, self.source().await);
            eprintln!("FAILED: {failure}");
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.clone().close()).await;
        failure
    }

    /// Ends the session (chromedriver quits Chromium), then the chromedriver process.
    pub async fn close(self) {
        let client = self.client.clone();
        let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
    }

    pub async fn goto(&self, url: &str) -> Result<(), BoxError> {
        self.client.goto(url).await.map_err(|e| ctx(url, e))
    }

    /// The first element matching `css`, waiting up to [`STEP`] for it to appear.
    pub async fn wait_css(&self, css: &str) -> Result<Element, BoxError> {
        let found = self
            .client
            .wait()
            .at_most(STEP)
            .every(Duration::from_millis(50));
        found
            .for_element(Locator::Css(css))
            .await
            .map_err(|e| ctx(&format!("waiting for `{css}`"), e))
    }

    /// The visible text of `css` (waiting for it).
    pub async fn text(&self, css: &str) -> Result<String, BoxError> {
        let el = self.wait_css(css).await?;
        el.text()
            .await
            .map_err(|e| ctx(&format!("text of `{css}`"), e))
    }

    pub async fn click(&self, css: &str) -> Result<(), BoxError> {
        let el = self.wait_css(css).await?;
        el.click()
            .await
            .map_err(|e| ctx(&format!("click `{css}`"), e))
    }

    pub async fn type_into(&self, css: &str, text: &str) -> Result<(), BoxError> {
        let el = self.wait_css(css).await?;
        el.clear().await.map_err(|e| ctx(css, e))?;
        el.send_keys(text).await.map_err(|e| ctx(css, e))
    }

    /// Polls until the text of `css` equals `want`; the last text seen is in the error.
    pub async fn wait_text(&self, css: &str, want: &str) -> Result<(), BoxError> {
        let deadline = tokio::time::Instant::now() + STEP;
        let mut seen = String::new();
        while tokio::time::Instant::now() < deadline {
            if let Ok(el) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = el.text().await
            {
                if text.trim() == want {
                    return Ok(());
                }
                seen = text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let at = self.url().await;
        Err(format!("`{css}` reads {seen:?}, not {want:?}, after {STEP:?} (page {at})").into())
    }

    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map_or_else(|e| format!("(no url: {e})"), |u| u.to_string())
    }

    pub async fn source(&self) -> String {
        self.client.source().await.unwrap_or_default()
    }

    /// Saves a PNG of the current page as `target/browser-NAME.png` (for humans; best effort).
    pub async fn screenshot(&self, name: &str) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        let path = dir.join(format!("browser-{name}.png"));
        match self.client.screenshot().await {
            Ok(png) => {
                match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, png)) {
                    Ok(()) => eprintln!("browser: screenshot {}", path.display()),
                    Err(e) => eprintln!("browser: cannot write {}: {e}", path.display()),
                }
            }
            Err(e) => eprintln!("browser: screenshot failed: {e}"),
        }
    }
}

fn ctx(what: &str, e: impl std::fmt::Display) -> BoxError {
    format!("{what}: {e}").into()
}

/// Polls chromedriver's `/status` until it answers 200 (at most 10 s).
async fn wait_ready(webdriver: &str) -> Result<(), BoxError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let status = format!("{webdriver}/status");
    loop {
        if let Ok(r) = crate::support::get(&status, None).await
            && r.status.is_success()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{CHROMEDRIVER} did not answer {status} within 10 s").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A browser step's expectation: `Err(what)` when it does not hold, so the run stops there
/// and says what was expected.
pub fn check(ok: bool, what: impl Into<String>) -> Result<(), BoxError> {
    if ok { Ok(()) } else { Err(what.into().into()) }
}
