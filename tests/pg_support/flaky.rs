//! A TCP forwarder in front of PostgreSQL that a test can take down (new connections are
//! closed at once) and cut (every forwarded connection is closed now, as when a network
//! path or the database goes away mid-transaction).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Flaky {
    pub port: u16,
    up: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
}

impl Flaky {
    /// Forwards `127.0.0.1:PORT` to `target`; starts up or down.
    pub async fn start(target: SocketAddr, up: bool) -> Flaky {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(up));
        let (cuts, _) = watch::channel(0);
        let (accept_up, accept_cuts) = (Arc::clone(&up), cuts.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accept_up.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut = accept_cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Flaky { port, up, cuts }
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    /// Closes every connection forwarded so far.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// `url` with its host and port replaced by this forwarder's.
    pub fn url(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(self.port)).unwrap();
        url.to_string()
    }
}

/// The address a PostgreSQL URL points at.
pub fn target(url: &str) -> SocketAddr {
    let url = url::Url::parse(url).unwrap();
    let host = url.host_str().unwrap_or("127.0.0.1");
    let port = url.port().unwrap_or(5432);
    format!("{host}:{port}").parse().unwrap()
}
