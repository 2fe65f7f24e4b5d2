//! The `LISTEN bearerd_tokens` task: one dedicated session per store that forwards each
//! notification's payload (a connection name) to the store's `changes()` channel.
//!
//! After every (re)connect it announces every configured name, because notifications sent
//! while it was not listening are gone: each refresher then re-reads its record. A ping
//! every 30 s notices a silently dead session sooner than TCP would.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Config, NoTls, Socket};

use super::{CHANNEL, Tls, describe};

const PING_EVERY: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_DELAY: Duration = Duration::from_secs(30);

pub(super) fn spawn(
    config: Config,
    tls: Tls,
    names: Vec<String>,
    changes: broadcast::Sender<String>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(500);
        loop {
            let started = Instant::now();
            let ended = match &tls {
                Tls::Plain => listen(&config, NoTls, &names, &changes).await,
                Tls::Rustls(tls) => listen(&config, tls.clone(), &names, &changes).await,
            };
            if started.elapsed() > Duration::from_secs(60) {
                delay = Duration::from_millis(500);
            }
            tracing::warn!(
                reason = %ended,
                retry_in_s = delay.as_secs_f64(),
                "token store: not listening for changes; other replicas' refreshes are picked up by polling until it reconnects"
            );
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_DELAY);
        }
    })
}

/// One session: connect, `LISTEN`, announce, forward until it fails. Returns why it ended.
async fn listen<T>(
    config: &Config,
    tls: T,
    names: &[String],
    changes: &broadcast::Sender<String>,
) -> String
where
    T: MakeTlsConnect<Socket> + Send,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, mut connection) = match config.connect(tls).await {
        Ok(pair) => pair,
        Err(error) => return describe(&error),
    };
    let (forward, mut received) = mpsc::unbounded_channel();
    // Polling the connection for messages is also what drives the client's queries.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = forward.send(n.payload().to_owned());
                }
                Ok(_) => {}
                Err(error) => return describe(&error),
            }
        }
        "the server closed the session".to_owned()
    });
    let listening = client.batch_execute(&format!("LISTEN {CHANNEL}")).await;
    if let Err(error) = listening {
        driver.abort();
        return describe(&error);
    }
    tracing::debug!("token store: listening for changes");
    for name in names {
        let _ = changes.send(name.clone());
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            name = received.recv() => match name {
                Some(name) => {
                    let _ = changes.send(name);
                }
                None => {
                    return driver
                        .await
                        .unwrap_or_else(|e| format!("listener task failed: {e}"));
                }
            },
            _ = ping.tick() => {
                match tokio::time::timeout(PING_TIMEOUT, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        driver.abort();
                        return describe(&error);
                    }
                    Err(_) => {
                        driver.abort();
                        return format!("no answer to a ping within {PING_TIMEOUT:?}");
                    }
                }
            }
        }
    }
}
