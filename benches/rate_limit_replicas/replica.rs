//! One bearerd replica: the release binary as a child process with its own config (admin and
//! proxy on free ports, the shared postgres store, one connection `pms` with
//! `rate_limit = { rps = 10 }`). Its log is read line by line as it comes, each line stamped
//! with the moment it was read, so the bench can see when the replica re-split its budget.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Replica {
    pub index: u8,
    pub admin: String,
    pub proxy: String,
    child: Child,
    log: Arc<Mutex<Vec<(Instant, String)>>>,
    _dir: TempDir,
}

/// The rate-limit split a replica logged: when, its index among the live ones, how many.
#[derive(Debug, Clone, Copy)]
pub struct Split {
    pub at: Instant,
    pub index: usize,
    pub live: usize,
}

impl Replica {
    pub fn spawn(index: u8, database_url: &str, token_url: &str, upstream: &str) -> Replica {
        let dir = TempDir::new(&format!("rl-replica-{index}"));
        let (admin, proxy) = (free_port(), free_port());
        let config = format!(
            r#"
[admin]
listen = "127.0.0.1:{admin}"
public_url = "http://127.0.0.1:{admin}"

[store]
kind = "postgres"
url = "{database_url}"

[[connection]]
name = "pms"
provider = "oauth2"
listen = "127.0.0.1:{proxy}"
upstream = "{upstream}"
grant = "client_credentials"
token_url = "{token_url}"
client_id = "bench"
client_secret = "bench-secret"
rate_limit = {{ rps = 10 }}
"#
        );
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
            admin: format!("http://127.0.0.1:{admin}"),
            proxy: format!("http://127.0.0.1:{proxy}"),
            child,
            log,
            _dir: dir,
        }
    }

    /// Every "rate limits split across replicas" line so far.
    pub fn splits(&self) -> Vec<Split> {
        let field = |line: &str, name: &str| -> Option<usize> {
            let start = line.find(&format!(" {name}="))? + name.len() + 2;
            line[start..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, line)| line.contains("rate limits split across replicas"))
            .filter_map(|(at, line)| {
                Some(Split {
                    at: *at,
                    index: field(line, "index")?,
                    live: field(line, "live")?,
                })
            })
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

fn free_port() -> u16 {
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
