//! Store maintenance: `replay` (check or rebuild the projections), `store
//! verify` (and `--repair`), `store gc` and `store stats` (docs/audit.md).
//!
//! `replay`, `store verify` and `store gc` take the writer lock (a check
//! or a dry run only reads); the others read beside a running build.

use std::path::PathBuf;

use cairn_store::{
    BlobUsage, CatalogStats, GcKeep, GcReport, RepairReport, ReplayReport, VerifyReport,
};

use crate::{AppError, Workspace};

/// Who `store verify --repair` records as the author of its invalidations.
pub const REPAIRER: &str = "cairn store verify";

// ----------------------------------------------------------------- replay

/// What `replay --check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayCheck {
    /// Nothing was built here yet: the log is empty.
    NothingBuilt,
    /// The projections compared with a replay of `events` events: one line
    /// per difference (none: they are equal).
    Checked {
        events: u64,
        differences: Vec<String>,
    },
}

/// Rebuilds every projection from the events alone, in memory, and compares
/// it with the live tables, in one read snapshot.
pub fn replay_check(workspace: &Workspace) -> Result<ReplayCheck, AppError> {
    let Some(store) = workspace.open_reader()? else {
        return Ok(ReplayCheck::NothingBuilt);
    };
    let events = store.catalog().last_seq()?;
    let differences = store.catalog().replay_check()?;
    Ok(ReplayCheck::Checked {
        events,
        differences,
    })
}

/// What `replay` rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// Nothing was built here yet: the log is empty.
    NothingBuilt,
    /// The projections were rebuilt; `differences` lists what that fixed.
    Rebuilt {
        differences: Vec<String>,
        report: ReplayReport,
    },
}

/// Takes the writer lock (`wait`: wait for it) and rebuilds the projections
/// from the log in one transaction; the up-to-date snapshot is removed.
pub fn replay(workspace: &Workspace, wait: bool) -> Result<Replayed, AppError> {
    if workspace.open_reader()?.is_none() {
        return Ok(Replayed::NothingBuilt);
    }
    let store = workspace.open_writer(wait)?;
    // Rebuilt projections appended no event: a snapshot taken from the old
    // ones must not vouch for the new.
    store.forget_snapshot()?;
    let differences = store.catalog().replay_check()?;
    let report = store.catalog().replay()?;
    Ok(Replayed::Rebuilt {
        differences,
        report,
    })
}

// ----------------------------------------------------------------- verify

/// What `store verify` found (and repaired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// `false`: redb found damaged pages and repaired the file.
    pub catalog_sound: bool,
    /// The catalog file.
    pub catalog: PathBuf,
    pub report: VerifyReport,
    /// What `--repair` did (`None` without it, or when nothing was found).
    pub repaired: Option<RepairReport>,
}

impl Verification {
    /// Every problem found: damaged blobs, current partitions without a
    /// manifest, damaged cache files, and a repaired catalog.
    pub fn problems(&self) -> usize {
        self.report.problems.len()
            + self.report.orphans.len()
            + self.report.caches.len()
            + usize::from(!self.catalog_sound)
    }
}

/// Takes the writer lock, checks the catalog's pages, re-hashes every blob
/// and checks the cache files; with `repair`, deletes what is damaged and
/// invalidates the partitions that need it (by [`REPAIRER`]). `None`:
/// nothing was built here yet.
pub fn verify(
    workspace: &Workspace,
    repair: bool,
    wait: bool,
) -> Result<Option<Verification>, AppError> {
    if workspace.open_reader()?.is_none() {
        return Ok(None);
    }
    // The page check needs the catalog to itself: not beside the builds
    // of a workspace that holds it.
    let mut store = workspace.open_writer(wait)?.into_opened().map_err(|_| {
        AppError::Store(cairn_engine::ports::StoreError::Locked(
            "the store is held by this process (`cairn serve`): `store verify` needs it to itself"
                .to_owned(),
        ))
    })?;
    let catalog_sound = store
        .check_catalog_integrity()
        .map_err(|error| AppError::StoreProblem(format!("the catalog is damaged: {error}")))?;
    let report = store.verify()?;
    let repaired = if repair && !report.is_clean() {
        Some(store.repair(&report, REPAIRER)?)
    } else {
        None
    };
    Ok(Some(Verification {
        catalog_sound,
        catalog: store.catalog().path().to_owned(),
        report,
        repaired,
    }))
}

// --------------------------------------------------------------------- gc

/// `30d`, `12h`, `1.5h`, `45m`, `90s`, `2w` in milliseconds: the graph
/// file's duration syntax (humantime's), for `--older-than`.
pub fn parse_duration(text: &str) -> Result<u64, AppError> {
    let duration = cairn_engine::graph::parse_duration(text)
        .map_err(|problem| AppError::Usage(format!("--older-than {problem}")))?;
    u64::try_from(duration.as_millis())
        .map_err(|_| AppError::Usage(format!("--older-than {text:?}: too long")))
}

/// What `store gc` keeps besides every current materialization.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Keep {
    /// Only what is current.
    #[default]
    Current,
    /// The manifests and failure logs of the last N build ids.
    Builds(u64),
    /// Those younger than a duration (`30d`: see [`parse_duration`]).
    YoungerThan(String),
}

/// Deletes every blob that no kept manifest (or failure log, definitions
/// record, live checkpoint) refers to; `dry_run` only reads and says what
/// would go. `None`: nothing was built here yet.
pub fn gc(
    workspace: &Workspace,
    keep: &Keep,
    dry_run: bool,
    wait: bool,
) -> Result<Option<GcReport>, AppError> {
    let keep = match keep {
        Keep::Current => GcKeep::Current,
        Keep::Builds(builds) => GcKeep::Builds(*builds),
        Keep::YoungerThan(text) => {
            GcKeep::Since(cairn_engine::action::now_ms().saturating_sub(parse_duration(text)?))
        }
    };
    let Some(reader) = workspace.open_reader()? else {
        return Ok(None);
    };
    let store = if dry_run {
        reader
    } else {
        drop(reader);
        workspace.open_writer(wait)?
    };
    Ok(Some(store.gc(keep, dry_run)?))
}

// ------------------------------------------------------------------ stats

/// Counts and sizes of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub catalog: CatalogStats,
    pub blobs: BlobUsage,
    /// The catalog file.
    pub catalog_file: PathBuf,
    /// The shared remote cache's traffic the log records.
    pub remote: RemoteTraffic,
}

/// What the log says of the shared remote cache (docs/remote-cache.md):
/// results restored from it, refused, and uploaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteTraffic {
    pub restored: u64,
    pub refused: u64,
    pub uploaded: u64,
    /// Blob bytes sent by those uploads.
    pub uploaded_bytes: u64,
}

impl RemoteTraffic {
    pub fn any(&self) -> bool {
        *self != RemoteTraffic::default()
    }
}

/// Counts and sizes: events, builds, actions, partitions, blobs. `None`:
/// nothing was built here yet (the store is empty).
pub fn stats(workspace: &Workspace) -> Result<Option<Stats>, AppError> {
    let Some(store) = workspace.open_reader()? else {
        return Ok(None);
    };
    // One pass over the log (like `cairn log`): the remote cache's events
    // have no table of their own.
    let mut remote = RemoteTraffic::default();
    cairn_engine::ports::EventLog::scan_events(store.catalog(), 1, &mut |event| {
        match event.kind {
            cairn_engine::record::EventKind::ActionCached {
                remote: Some(_), ..
            } => remote.restored += 1,
            cairn_engine::record::EventKind::RemoteRefused { .. } => remote.refused += 1,
            cairn_engine::record::EventKind::ActionUploaded { bytes, .. } => {
                remote.uploaded += 1;
                remote.uploaded_bytes += bytes;
            }
            _ => {}
        }
        true
    })?;
    Ok(Some(Stats {
        catalog: store.catalog().stats()?,
        blobs: store.blob_usage()?,
        catalog_file: store.catalog().path().to_owned(),
        remote,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap(), 30 * 86_400_000);
        assert_eq!(parse_duration("12h").unwrap(), 12 * 3_600_000);
        assert_eq!(parse_duration("2w").unwrap(), 14 * 86_400_000);
        assert_eq!(parse_duration("90s").unwrap(), 90_000);
        assert_eq!(parse_duration("1.5h").unwrap(), 5_400_000);
        assert_eq!(parse_duration("1h 30m").unwrap(), 5_400_000);
        for bad in ["", "d", "30", "30x", "-1d", "99999999999999999999d"] {
            assert_eq!(parse_duration(bad).unwrap_err().exit_code(), 2, "{bad}");
        }
    }
}
