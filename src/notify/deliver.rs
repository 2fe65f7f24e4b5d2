//! Delivery of stored notifications: claim what is due, POST it signed as Standard Webhooks
//! do (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "id.timestamp.body">` keyed with the `whsec_` secret's bytes), and settle: delivered (any
//! 2xx) removes it; a failure schedules the next attempt (1 s, 5 s, 30 s, 2 min, 10 min,
//! 30 min, then hourly) until it is 24 hours old, when it is given up with an error log.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderValue, Method, Request};
use http_body_util::{Either, Full};
use sha2::Sha256;
use tokio::sync::{Notify, watch};
use url::Url;

use super::unix_ms;
use crate::store::{OutboxEntry, TokenStore};
use crate::upstream::HttpClient;

/// Gaps between attempts; the last repeats.
const BACKOFF: &[Duration] = &[
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
    Duration::from_secs(1800),
    Duration::from_secs(3600),
];
/// How long an event is retried.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// One delivery attempt, connect to last byte.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the outbox is looked at when nothing wakes the task.
const POLL: Duration = Duration::from_secs(1);

/// The `[notify]` receiver.
#[derive(Clone)]
pub struct Receiver {
    pub url: Url,
    /// The decoded bytes of the `whsec_` secret.
    pub key: Arc<[u8]>,
}

/// The Standard Webhooks signature header value for one attempt.
pub fn signature(key: &[u8], id: &str, timestamp: u64, body: &str) -> String {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Decodes a `whsec_<base64>` secret.
pub fn parse_secret(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or("must start with `whsec_` (a Standard Webhooks secret)")?;
    let key = STANDARD
        .decode(encoded)
        .map_err(|_| "the part after `whsec_` is not base64")?;
    if key.len() < 16 {
        return Err("the key is shorter than 16 bytes".into());
    }
    Ok(key)
}

/// After `attempts` failed attempts of an entry created at `created_at` (Unix ms), when to
/// try again, or `None` to give up.
pub fn next_attempt(created_at: u64, attempts: u32, now: u64) -> Option<u64> {
    let index = usize::try_from(attempts.saturating_sub(1)).unwrap_or(usize::MAX);
    let gap = BACKOFF[index.min(BACKOFF.len() - 1)];
    let next = now + u64::try_from(gap.as_millis()).unwrap_or(u64::MAX);
    let deadline = created_at + u64::try_from(GIVE_UP_AFTER.as_millis()).unwrap_or(u64::MAX);
    (next <= deadline).then_some(next)
}

/// Delivers due notifications until `shutdown`.
pub async fn run(
    store: Arc<dyn TokenStore>,
    receiver: Receiver,
    client: HttpClient,
    stored: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let due = match store.outbox_claim(unix_ms(SystemTime::now()), 16).await {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "notifications: cannot read the outbox");
                Vec::new()
            }
        };
        for entry in due {
            let delivered = attempt(&client, &receiver, &entry).await;
            settle(store.as_ref(), entry, delivered).await;
        }
        tokio::select! {
            _ = stored.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = crate::serve::stopped(&mut shutdown) => return,
        }
    }
}

async fn settle(store: &dyn TokenStore, entry: OutboxEntry, delivered: Result<(), String>) {
    let now = unix_ms(SystemTime::now());
    let attempts = entry.attempts + 1;
    let settled = OutboxEntry {
        attempts,
        lease_until: None,
        settled_at: Some(now),
        ..entry.clone()
    };
    let update = match &delivered {
        Ok(()) => {
            tracing::info!(id = %entry.id, attempts, "notification delivered");
            settled
        }
        Err(error) => match next_attempt(entry.created_at, attempts, now) {
            Some(next_at) => {
                tracing::warn!(id = %entry.id, attempts, %error, "notification not delivered; will retry");
                OutboxEntry {
                    attempts,
                    next_at,
                    lease_until: None,
                    ..entry.clone()
                }
            }
            None => {
                tracing::error!(id = %entry.id, attempts, %error, "notification not delivered for 24 h; given up");
                settled
            }
        },
    };
    if let Err(error) = store.outbox_update(&update).await {
        tracing::warn!(id = %entry.id, %error, "notifications: cannot update the outbox");
    }
}

/// One POST of `entry`; `Ok` on a 2xx answer.
async fn attempt(
    client: &HttpClient,
    receiver: &Receiver,
    entry: &OutboxEntry,
) -> Result<(), String> {
    let timestamp = unix_ms(SystemTime::now()) / 1000;
    let signature = signature(&receiver.key, &entry.id, timestamp, &entry.body);
    let header = |value: String| HeaderValue::from_str(&value).map_err(|e| e.to_string());
    let request = Request::builder()
        .method(Method::POST)
        .uri(receiver.url.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", header(entry.id.clone())?)
        .header("webhook-timestamp", header(timestamp.to_string())?)
        .header("webhook-signature", header(signature)?)
        .body(Either::Left(Full::new(Bytes::from(entry.body.clone()))))
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(request)).await {
        Err(_) => Err(format!("no answer within {ATTEMPT_TIMEOUT:?}")),
        Ok(Err(error)) => Err(crate::upstream::error_chain(&error)),
        Ok(Ok(response)) if response.status().is_success() => Ok(()),
        Ok(Ok(response)) => Err(format!("HTTP {}", response.status())),
    }
}
