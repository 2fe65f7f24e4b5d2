//! The embedded file store: `DIR/NAME.json` per connection, replaced atomically (write a
//! temp file, fsync, rename, fsync the directory) with mode 0600 in a 0700 directory;
//! `DIR/NAME.lock` is the advisory (`flock`) lock held for a whole refresh. With a
//! [`Sealer`] the token fields are encrypted, and a record that does not open under it is
//! never overwritten.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::outbox::{FileOutbox, OutboxEntry};
use super::seal::Sealer;
use super::{BoxFuture, Record, RecordJson, StoreError, StoreLock, TokenStore};
use crate::metrics::Metrics;

pub struct FileStore {
    dir: PathBuf,
    outbox: FileOutbox,
    metrics: Option<Arc<Metrics>>,
    sealer: Option<Arc<Sealer>>,
}

struct FileLock {
    _file: File,
}

impl StoreLock for FileLock {}

impl FileStore {
    /// Opens (creating, mode 0700) the store directory.
    pub fn open(dir: &Path, metrics: Option<Arc<Metrics>>) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        };
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        Ok(Self {
            dir: dir.to_owned(),
            outbox: FileOutbox::new(dir),
            metrics,
            sealer: None,
        })
    }

    /// Encrypts token fields with `sealer` (`store.key`) from now on.
    pub fn with_sealer(mut self, sealer: Option<Arc<Sealer>>) -> Self {
        self.sealer = sealer;
        self
    }

    /// At start: fails if a record of `names` does not open under the key, and re-writes
    /// plaintext records sealed (under the lock). Returns how many were re-written.
    pub async fn check_records(&self, names: &[String]) -> Result<usize, StoreError> {
        let mut migrated = 0;
        for name in names {
            let path = self.record_path(name);
            let Some(json) = read_json(&path)? else {
                continue;
            };
            let location = path.display().to_string();
            let sealer = self.sealer.as_deref();
            if super::check_and_reseal(self, sealer, name, json, &location).await? {
                migrated += 1;
            }
        }
        Ok(migrated)
    }

    /// `DIR/NAME.json`; a tenant's `NAME/TENANT` is `DIR/NAME/TENANT.json`.
    pub fn record_path(&self, connection: &str) -> PathBuf {
        let (dir, stem) = self.place(connection);
        dir.join(format!("{stem}.json"))
    }

    /// The temp file a save writes before renaming it over the record.
    pub fn temp_path(&self, connection: &str) -> PathBuf {
        let (dir, stem) = self.place(connection);
        dir.join(format!(".{stem}.json.tmp"))
    }

    /// The directory of a record and its file name without extension. Names are checked
    /// before they get here (connection names by the config, tenant ids by
    /// [`crate::tenants::valid_id`]); anything that could leave the store directory is
    /// confined to a harmless name all the same.
    fn place<'a>(&self, connection: &'a str) -> (PathBuf, &'a str) {
        match connection.split_once('/') {
            Some((app, tenant)) if safe_part(app) && safe_part(tenant) => {
                (self.dir.join(app), tenant)
            }
            _ if safe_part(connection) => (self.dir.clone(), connection),
            _ => (self.dir.clone(), "invalid-name"),
        }
    }

    /// Creates (mode 0700) the directory a tenant's record lives in.
    fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
        if dir.exists() {
            return Ok(());
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error(dir))
    }

    fn count(&self, op: &str, ok: bool) {
        if let Some(metrics) = &self.metrics {
            metrics.store_operation(op, ok);
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn read_record(
    path: &Path,
    connection: &str,
    sealer: Option<&Sealer>,
) -> Result<Option<Record>, StoreError> {
    let Some(json) = read_json(path)? else {
        return Ok(None);
    };
    Record::from_sealed_json(json, connection, sealer)
        .map(Some)
        .map_err(|e| e.into_store_error(connection, &path.display().to_string()))
}

fn read_json(path: &Path) -> Result<Option<RecordJson>, StoreError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path)(e)),
    };
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.display().to_string(),
        reason,
    };
    // Only the position: serde_json's own message can quote a value, which may be a token.
    serde_json::from_str(&text).map(Some).map_err(|e| {
        corrupt(format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

fn write_record(
    dir: &Path,
    temp: &Path,
    path: &Path,
    record: &Record,
    sealer: Option<&Sealer>,
) -> Result<(), StoreError> {
    // Never replace a record whose tokens this key cannot read: that would lose a grant.
    // (A record that is not valid JSON at all may be replaced, as before.)
    if let Ok(Some(existing)) = read_json(path)
        && let Err(super::OpenOrInvalid::Open(error)) =
            Record::from_sealed_json(existing, &record.connection, sealer)
    {
        return Err(StoreError::unsealing(
            error,
            &record.connection,
            &path.display().to_string(),
        ));
    }
    let json = record.to_sealed_json(sealer);
    let bytes = serde_json::to_vec_pretty(&json).map_err(|e| StoreError::Corrupt {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    write_durably(dir, temp, path, &bytes)
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new file, never a torn
/// one: write `temp` (mode 0600), fsync it, rename it over `path`, fsync `dir`.
pub(super) fn write_durably(
    dir: &Path,
    temp: &Path,
    path: &Path,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(temp)
        .map_err(io_error(temp))?;
    // The mode given at creation does not apply to a file left by an earlier run.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_error(temp))?;
    file.write_all(bytes).map_err(io_error(temp))?;
    file.sync_all().map_err(io_error(temp))?;
    drop(file);
    fs::rename(temp, path).map_err(io_error(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

impl TokenStore for FileStore {
    fn load<'a>(
        &'a self,
        connection: &'a str,
    ) -> BoxFuture<'a, Result<Option<Record>, StoreError>> {
        Box::pin(async move {
            let path = self.record_path(connection);
            let sealer = self.sealer.clone();
            let name = connection.to_owned();
            let result =
                tokio::task::spawn_blocking(move || read_record(&path, &name, sealer.as_deref()))
                    .await
                    .unwrap_or_else(|e| Err(join_error(e)));
            self.count("load", result.is_ok());
            result
        })
    }

    fn save<'a>(&'a self, record: &'a Record) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let dir = self.place(&record.connection).0;
            let temp = self.temp_path(&record.connection);
            let path = self.record_path(&record.connection);
            let record = record.clone();
            let sealer = self.sealer.clone();
            let result = tokio::task::spawn_blocking(move || {
                Self::ensure_dir(&dir)?;
                write_record(&dir, &temp, &path, &record, sealer.as_deref())
            })
            .await
            .unwrap_or_else(|e| Err(join_error(e)));
            self.count("save", result.is_ok());
            result
        })
    }

    fn lock<'a>(
        &'a self,
        connection: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Box<dyn StoreLock>, StoreError>> {
        Box::pin(async move {
            let (dir, stem) = self.place(connection);
            let path = dir.join(format!("{stem}.lock"));
            let result = match Self::ensure_dir(&dir) {
                Ok(()) => lock_file(&path, wait).await,
                Err(error) => Err(error),
            };
            self.count("lock", result.is_ok());
            result.map(|file| Box::new(FileLock { _file: file }) as Box<dyn StoreLock>)
        })
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_secs(2)
    }

    fn tenants<'a>(
        &'a self,
        app: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, u64)>, StoreError>> {
        Box::pin(async move {
            let dir = self.dir.join(app);
            let result = tokio::task::spawn_blocking(move || list_records(&dir))
                .await
                .unwrap_or_else(|e| Err(join_error(e)));
            self.count("load", result.is_ok());
            result
        })
    }

    fn outbox_put<'a>(&'a self, entry: &'a OutboxEntry) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { self.outbox.put(entry, false) })
    }

    fn outbox_claim(
        &self,
        now: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<OutboxEntry>, StoreError>> {
        Box::pin(async move { self.outbox.claim(now, limit) })
    }

    fn outbox_update<'a>(
        &'a self,
        entry: &'a OutboxEntry,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { self.outbox.put(entry, true) })
    }
}

/// A path component that stays inside its directory: not empty, no `/`, no leading `.`.
fn safe_part(part: &str) -> bool {
    !part.is_empty() && !part.contains('/') && !part.starts_with('.')
}

/// The stems of `DIR/*.json` (temp files start with `.` and are skipped) with their
/// modification times in nanoseconds; none if `dir` does not exist.
fn list_records(dir: &Path) -> Result<Vec<(String, u64)>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".json")
            && safe_part(stem)
        {
            // A rename replaces the file: its modification time is the last save's.
            let stamp = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            names.push((stem.to_owned(), stamp));
        }
    }
    Ok(names)
}

/// Polls `try_lock` so that no thread blocks in `flock` while another process refreshes.
async fn lock_file(path: &Path, wait: Duration) -> Result<File, StoreError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(io_error(path))?;
    let deadline = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(fs::TryLockError::WouldBlock) => return Err(StoreError::LockTimeout(wait)),
            Err(fs::TryLockError::Error(e)) => return Err(io_error(path)(e)),
        }
    }
}

fn join_error(e: tokio::task::JoinError) -> StoreError {
    StoreError::Io {
        path: "<store task>".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretString;
    use std::time::SystemTime;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "bearerd-file-store-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn record(generation: u64) -> Record {
        Record {
            connection: "hotel".into(),
            generation,
            access_token: Some(SecretString::new("at")),
            expires_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000)),
            refresh_token: Some(SecretString::new("rt")),
            scope: None,
            state: "connected".into(),
            updated_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000),
            credential: crate::store::Credential::Token,
            last_used_at: None,
            covers: Vec::new(),
        }
    }

    #[tokio::test]
    async fn round_trip_with_private_modes() {
        let dir = temp_dir("rt");
        let store = FileStore::open(&dir, None).unwrap();
        assert_eq!(store.load("hotel").await.unwrap(), None);
        store.save(&record(3)).await.unwrap();
        assert_eq!(store.load("hotel").await.unwrap(), Some(record(3)));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&store.record_path("hotel")), 0o600);
        assert!(!store.temp_path("hotel").exists());
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn lock_is_exclusive_until_dropped() {
        let dir = temp_dir("lock");
        let store = FileStore::open(&dir, None).unwrap();
        let held = store
            .lock("hotel", Duration::from_millis(10))
            .await
            .unwrap();
        let busy = store.lock("hotel", Duration::from_millis(60)).await;
        assert!(matches!(busy, Err(StoreError::LockTimeout(_))));
        drop(held);
        assert!(store.lock("hotel", Duration::from_millis(10)).await.is_ok());
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn corrupt_record_is_an_error_not_a_missing_record() {
        let dir = temp_dir("corrupt");
        let store = FileStore::open(&dir, None).unwrap();
        fs::write(store.record_path("hotel"), "{not json").unwrap();
        assert!(matches!(
            store.load("hotel").await,
            Err(StoreError::Corrupt { .. })
        ));
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn import_refuses_to_replace_a_stored_token_without_force() {
        let dir = temp_dir("import");
        let store = FileStore::open(&dir, None).unwrap();
        let g = super::super::import(&store, "hotel", SecretString::new("rt1"), false)
            .await
            .unwrap();
        assert_eq!(g, 1);
        let again = super::super::import(&store, "hotel", SecretString::new("rt2"), false).await;
        assert!(matches!(again, Err(super::super::ImportError::Newer(1))));
        let forced = super::super::import(&store, "hotel", SecretString::new("rt2"), true)
            .await
            .unwrap();
        assert_eq!(forced, 2);
        let stored = store.load("hotel").await.unwrap().unwrap();
        assert_eq!(stored.refresh_token.unwrap().secret(), "rt2");
        fs::remove_dir_all(dir).unwrap();
    }
}
