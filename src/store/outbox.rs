//! The notification outbox (SPEC section 12): events wait in the store until their receiver
//! has them, so a restart loses none; a claim is a lease, so with several processes or
//! replicas on one store each event is sent by one of them at a time.
//!
//! [`OutboxEntry`] is what both stores keep: the event body exactly as it is signed and
//! sent, and its delivery schedule. The file store keeps `DIR/outbox/ID.json` and takes
//! `DIR/outbox.lock` while it claims; the postgres store keeps rows in `bearerd_outbox` and
//! claims with `FOR UPDATE SKIP LOCKED`.

use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::StoreError;

/// How long a claimed entry is reserved for the process that claimed it.
pub const LEASE: Duration = Duration::from_secs(60);

/// One event waiting for delivery. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxEntry {
    /// Also the `webhook-id`: the same for every attempt, and the same on every replica that
    /// saw the same change, so a replica's copy of an event is not a second event.
    pub id: String,
    pub body: String,
    pub created_at: u64,
    pub attempts: u32,
    pub next_at: u64,
    pub lease_until: Option<u64>,
    /// Delivered or given up. A settled entry is kept for [`KEEP_SETTLED`], so that a replica
    /// that notices the same change late does not send it again.
    pub settled_at: Option<u64>,
}

/// How long settled entries are kept.
pub const KEEP_SETTLED: Duration = Duration::from_secs(48 * 3600);

/// The file store's outbox directory.
pub(super) struct FileOutbox {
    dir: PathBuf,
    lock: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl FileOutbox {
    pub(super) fn new(store_dir: &Path) -> Self {
        Self {
            dir: store_dir.join("outbox"),
            lock: store_dir.join("outbox.lock"),
        }
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn ensure_dir(&self) -> Result<(), StoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io(&self.dir))
    }

    /// Writes `entry` atomically; an entry with the same id that exists already stays.
    pub(super) fn put(&self, entry: &OutboxEntry, replace: bool) -> Result<(), StoreError> {
        self.ensure_dir()?;
        let path = self.path(&entry.id);
        if !replace && path.exists() {
            return Ok(());
        }
        let temp = self.dir.join(format!(".{}.tmp", entry.id));
        let bytes = serde_json::to_vec(entry).map_err(|e| StoreError::Corrupt {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        super::file::write_durably(&self.dir, &temp, &path, &bytes)
    }

    fn remove(&self, id: &str) -> Result<(), StoreError> {
        match fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(io(&self.path(id))(e)),
            _ => Ok(()),
        }
    }

    /// Claims up to `limit` entries due at `now` (Unix ms): each gets a lease, written
    /// before it is returned. Nothing if another process is claiming right now.
    pub(super) fn claim(&self, now: u64, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.ensure_dir()?;
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.lock)
            .map_err(io(&self.lock))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(Vec::new()),
            Err(fs::TryLockError::Error(e)) => return Err(io(&self.lock)(e)),
        }
        let mut due = Vec::new();
        for dirent in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let path = dirent.map_err(io(&self.dir))?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = match fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&path)(e)),
            };
            let Ok(entry) = serde_json::from_str::<OutboxEntry>(&text) else {
                tracing::warn!(path = %path.display(), "outbox: unreadable entry skipped");
                continue;
            };
            let keep = u64::try_from(KEEP_SETTLED.as_millis()).unwrap_or(u64::MAX);
            match entry.settled_at {
                Some(settled) if settled.saturating_add(keep) < now => self.remove(&entry.id)?,
                Some(_) => {}
                None if entry.next_at <= now
                    && entry.lease_until.is_none_or(|until| until <= now) =>
                {
                    due.push(entry);
                }
                None => {}
            }
        }
        due.sort_by_key(|e| (e.created_at, e.id.clone()));
        due.truncate(limit);
        let lease = now + u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX);
        for entry in &mut due {
            entry.lease_until = Some(lease);
            self.put(entry, true)?;
        }
        Ok(due)
    }
}
