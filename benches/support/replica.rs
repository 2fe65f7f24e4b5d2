//! bearerd as a child process, as the replica benches run it: the built binary with a config
//! of its own (in a temporary directory), its log read line by line as it comes, each line
//! stamped with the moment it was read; killed (a crash) or stopped (SIGTERM) on demand and
//! killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Replica {
    pub index: u8,
    child: Child,
    log: Arc<Mutex<Vec<(Instant, String)>>>,
    _dir: TempDir,
}

impl Replica {
    /// `bearerd run` with `config` (TOML), named `bench-replica-INDEX` (its replica id).
    pub fn spawn(index: u8, tag: &str, config: &str) -> Replica {
        let dir = TempDir::new(&format!("{tag}-{index}"));
        let path = dir.0.join("bearerd.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_bearerd"))
            .args(["run", "--config"])
            .arg(&path)
            .env_remove("BEARERD_LOG")
            .env_remove("BEARERD_LOG_FORMAT")
            // A replica id that names it in the log.
            .env("HOSTNAME", format!("bench-replica-{index}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bearerd");
        let log: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push((Instant::now(), line));
            }
        });
        Replica {
            index,
            child,
            log,
            _dir: dir,
        }
    }

    /// Every log line so far that contains `text`, with when it was read.
    pub fn lines_with(&self, text: &str) -> Vec<(Instant, String)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, line)| line.contains(text))
            .cloned()
            .collect()
    }

    /// Its whole log so far (for a failure message).
    pub fn log_text(&self) -> String {
        let log = self.log.lock().unwrap();
        log.iter().map(|(_, l)| format!("{l}\n")).collect()
    }

    /// SIGKILL: a crash, so its row in the store stays until it ages out.
    pub fn kill(&mut self) -> Instant {
        let _ = self.child.kill();
        let at = Instant::now();
        let _ = self.child.wait();
        at
    }

    /// SIGTERM and wait (a clean stop withdraws it from the store).
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `{admin}/readyz` until it answers 200; panics with the replica's log after `limit`.
pub async fn wait_ready(replica: &Replica, admin: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    let url = format!("{admin}/readyz");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    loop {
        if let Ok(answer) = client.get(url.parse().unwrap()).await
            && answer.status() == 200
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replica {} not ready in {limit:?}:\n{}",
            replica.index,
            replica.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `[admin]` (on port `admin`) and `[store]` tables of a replica on `database_url`.
pub fn admin_and_store(admin: u16, database_url: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:{admin}"
public_url = "http://127.0.0.1:{admin}"

[store]
kind = "postgres"
url = "{database_url}"
"#
    )
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "bearerd-bench-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
