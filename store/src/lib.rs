//! cairn-store: the `.cairn/` store — the redb catalog (event log,
//! projections, stat cache), the blob CAS, and the one-writer lock.
//!
//! Layout of a store directory (`.cairn/`):
//!
//! ```text
//! .gitignore     `*`: the store never belongs in version control
//! lock           kernel lock of the one writer, plus the holder's pid (lock.rs)
//! catalog.redb   events, projections, stat cache, meta (catalog.rs)
//! cas/ab/cdef…   blobs by blake3 of content; cas/tmp/ holds partial writes (blobs.rs)
//!                verify, repair and gc of both: maintenance.rs
//! tmp/           job staging, on the same file system as cas/
//! up-to-date     what the last build that ended with everything current
//!                relied on: a checksummed cache, never the truth (uptodate.rs)
//! up-to-date.plan  that build's plan, named by the snapshot (uptodate.rs)
//! configure/     configure answers by cache key, checksummed (engine's
//!                config.rs); `store verify` checks all three caches (caches.rs)
//! ```
//!
//! Invariants:
//! - At most one process writes a store: [`OpenMode::Write`] holds the kernel
//!   lock for the life of the [`Store`]; the catalog and the CAS are closed
//!   before it is released.
//! - [`OpenMode::ReadOnly`] creates nothing and reads beside a running
//!   writer. Its one exception: a catalog left unclean by a killed writer,
//!   with no writer running, is recovered (as the next build would) under a
//!   briefly held writer lock, because a read-only handle cannot read it.

mod blobs;
mod caches;
mod catalog;
mod encoding;
mod lock;
mod maintenance;
mod uptodate;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub use blobs::{BlobCheck, FsBlobStore};
pub use caches::{CacheKind, CacheProblem};
pub use cairn_engine::ports::{BlobStore, Catalog, EventLog, Projections, StatCache, StoreError};
pub use cairn_engine::projection::partitions_of;
pub use catalog::{CatalogStats, RedbCatalog, ReplayReport};
pub use encoding::{
    DecodeError, FORMAT_VERSION, decode_event, decode_manifest, decode_partition_state,
    decode_stat_entry, encode_event, encode_manifest, encode_partition_state, encode_stat_entry,
};
pub use lock::{DATA_OWNER_FILE, DataRootLock, Holder, StoreLock, holder};
pub use maintenance::{
    BlobOwner, BlobProblem, BlobRole, BlobUsage, Damage, GcKeep, GcReport, OrphanPartition,
    RepairReport, VerifyReport,
};
pub use uptodate::{SnapshotFile, SnapshotReader, SnapshotWrite};

use catalog::ReaderOpen;

const CATALOG_FILE: &str = "catalog.redb";

/// How to open a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the store if missing and take the writer lock; if another
    /// process holds it, wait (`wait: true`) or fail with
    /// [`StoreError::Locked`].
    Write { wait: bool },
    /// Read an existing store, beside a writer if one runs; never waits.
    ReadOnly,
}

/// An open `.cairn/` store.
pub struct Store {
    // Fields drop in order: the catalog and the CAS close before the lock
    // is released, so the next writer never finds the database still open.
    catalog: RedbCatalog,
    blobs: FsBlobStore,
    dir: PathBuf,
    lock: Option<StoreLock>,
    /// Serializes the in-place writes of the up-to-date snapshot and the
    /// kept plan by the builds of one process (a held store runs several
    /// at once; store/src/uptodate.rs). A torn or mixed file fails its
    /// checksum anyway; this only keeps concurrent builds from wasting
    /// each other's snapshot.
    snapshot_writes: std::sync::Mutex<()>,
}

impl Store {
    /// Opens the store at `dir` (the `.cairn` directory). Write mode creates
    /// it (with `cas/`, `tmp/` and a `.gitignore`) if missing, takes the lock
    /// (calling `on_wait` once with a message naming the holder if it has to
    /// wait) and opens or creates the catalog. ReadOnly never creates
    /// anything and fails, naming `dir`, if there is no store.
    pub fn open(
        dir: &Path,
        mode: OpenMode,
        on_wait: &mut dyn FnMut(&str),
    ) -> Result<Store, StoreError> {
        match mode {
            OpenMode::Write { wait } => Store::open_writer(dir, wait, on_wait),
            OpenMode::ReadOnly => Store::open_reader(dir),
        }
    }

    pub fn catalog(&self) -> &RedbCatalog {
        &self.catalog
    }

    pub fn blobs(&self) -> &FsBlobStore {
        &self.blobs
    }

    /// The `.cairn` directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `.cairn/tmp`, for job staging: on the same file system as the CAS, so
    /// staged outputs can be renamed into place.
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// Names `build` in the lock file, so that a build refused the lock can
    /// say which build holds it. Informational: a failure is only logged.
    pub fn record_build(&self, build: u64) {
        if let Some(lock) = &self.lock
            && let Err(error) = lock.record_build(build)
        {
            tracing::warn!("{error}");
        }
    }

    /// Says in the lock file that `cairn serve`, answering at `url`, holds
    /// this store (writer only): a local command refused the lock then
    /// says `the store … is held by \`cairn serve\` (pid N) at URL: use
    /// \`cairn --remote URL build …\`` (exit 3 with `--no-wait`).
    pub fn record_server(&self, url: &str) -> Result<(), StoreError> {
        match &self.lock {
            Some(lock) => lock.record_server(url),
            None => Err(StoreError::Locked(format!(
                "store {}: opened read-only, it cannot name a server",
                self.dir.display()
            ))),
        }
    }

    /// Whether this handle holds the writer lock.
    pub fn is_writer(&self) -> bool {
        self.lock.is_some()
    }

    /// Runs redb's full page-checksum check of the catalog (writer only; slow,
    /// for `cairn store verify`): `Ok(true)` if sound, `Ok(false)` if repaired.
    pub fn check_catalog_integrity(&mut self) -> Result<bool, StoreError> {
        self.catalog.check_integrity()
    }

    fn open_writer(
        dir: &Path,
        wait: bool,
        on_wait: &mut dyn FnMut(&str),
    ) -> Result<Store, StoreError> {
        let existed = dir.join(CATALOG_FILE).exists();
        create_dir_all(dir)?;
        let lock = StoreLock::acquire(dir, wait, on_wait)?;
        let cas_dir = dir.join("cas");
        create_dir_all(&cas_dir.join("tmp"))?;
        create_dir_all(&dir.join("tmp"))?;
        let gitignore = dir.join(".gitignore");
        if !gitignore.exists() {
            std::fs::write(&gitignore, "*\n").map_err(|error| StoreError::io(&gitignore, error))?;
        }
        let blobs = FsBlobStore::new(cas_dir, true);
        blobs.remove_stale_temps()?;
        let catalog = RedbCatalog::open_writer(&dir.join(CATALOG_FILE), true)?;
        if !existed {
            // redb fsyncs the file on commit, not the directory entries that
            // name it: make the new store's skeleton durable once.
            sync_directory(dir)?;
            let parent = match dir.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            sync_directory(parent)?;
        }
        Ok(Store {
            catalog,
            blobs,
            dir: dir.to_owned(),
            lock: Some(lock),
            snapshot_writes: std::sync::Mutex::new(()),
        })
    }

    fn open_reader(dir: &Path) -> Result<Store, StoreError> {
        let catalog_path = dir.join(CATALOG_FILE);
        if !catalog_path.is_file() {
            return Err(StoreError::io(
                dir,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no cairn store here (nothing has been built yet)",
                ),
            ));
        }
        let catalog = match RedbCatalog::open_reader(&catalog_path)? {
            ReaderOpen::Opened(catalog) => catalog,
            ReaderOpen::NeedsRecovery => recover_then_read(dir, &catalog_path)?,
        };
        Ok(Store {
            catalog,
            blobs: FsBlobStore::new(dir.join("cas"), false),
            dir: dir.to_owned(),
            lock: None,
            snapshot_writes: std::sync::Mutex::new(()),
        })
    }
}

/// The last writer was killed before closing the catalog, and redb refuses
/// to let a read-only handle read it before its crash recovery has run. If
/// no writer holds the store, run that recovery now, as the next build
/// would, under the writer lock (never waiting), then read.
fn recover_then_read(dir: &Path, catalog_path: &Path) -> Result<RedbCatalog, StoreError> {
    let unclean = |detail: &str| StoreError::Catalog {
        path: catalog_path.to_owned(),
        message: format!("the last writer did not close it cleanly, and {detail}"),
    };
    let lock = match StoreLock::acquire(dir, false, &mut |_| {}) {
        Ok(lock) => lock,
        Err(StoreError::Locked(message)) => {
            return Err(unclean(&format!(
                "it cannot be recovered now ({message}); try again when that process is done"
            )));
        }
        Err(error) => return Err(error),
    };
    drop(RedbCatalog::open_writer(catalog_path, false)?);
    drop(lock);
    match RedbCatalog::open_reader(catalog_path)? {
        ReaderOpen::Opened(catalog) => Ok(catalog),
        ReaderOpen::NeedsRecovery => Err(unclean("recovering it did not make it readable")),
    }
}

fn create_dir_all(path: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(path).map_err(|error| StoreError::io(path, error))
}

fn sync_directory(path: &Path) -> Result<(), StoreError> {
    std::fs::File::open(path)
        .and_then(|directory| directory.sync_all())
        .map_err(|error| StoreError::io(path, error))
}

/// Wall time in milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod golden;
