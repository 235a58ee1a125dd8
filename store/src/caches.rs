//! `cairn store verify`'s check of the cache files beside the catalog:
//! the configure answers (`configure/<key>.answer`,
//! `cairn_engine::config::CachingConfigurer`), the up-to-date snapshot and
//! the kept plan (uptodate.rs). Builds verify each of them on every read
//! and ignore one that fails; `verify` reports every file a build would
//! refuse (altered, torn, foreign), and `--repair` removes it. What no
//! build reads, or reads and ignores for a reason that is no damage (a
//! temporary file or a head zeroed by an interrupted write, a stale plan,
//! an older layout), is not a problem.

use std::path::PathBuf;

use cairn_engine::config::{
    ANSWER_EXTENSION, ANSWER_TEMP_PREFIX, CONFIGURE_CACHE_DIR, check_cached_answer,
};

use crate::uptodate::{CacheCheck, check_plan, check_recheck, check_snapshot, snapshot_files};
use crate::{Store, StoreError};

/// Which cache a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CacheKind {
    ConfigureAnswer,
    Snapshot,
    KeptPlan,
    Recheck,
}

impl CacheKind {
    /// `configure-answer`, `up-to-date-snapshot`, `kept-plan`,
    /// `recheck-list` (JSON).
    pub fn word(self) -> &'static str {
        match self {
            CacheKind::ConfigureAnswer => "configure-answer",
            CacheKind::Snapshot => "up-to-date-snapshot",
            CacheKind::KeptPlan => "kept-plan",
            CacheKind::Recheck => "recheck-list",
        }
    }

    /// `configure answer`, `up-to-date snapshot`, `kept plan`, `recheck
    /// list`.
    pub fn describe(self) -> &'static str {
        match self {
            CacheKind::ConfigureAnswer => "configure answer",
            CacheKind::Snapshot => "up-to-date snapshot",
            CacheKind::KeptPlan => "kept plan",
            CacheKind::Recheck => "recheck list",
        }
    }
}

/// A cache file that no build would believe.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CacheProblem {
    pub kind: CacheKind,
    pub file: PathBuf,
    /// Why: `checksum mismatch (altered or torn)` and the like.
    pub problem: String,
}

impl CacheProblem {
    /// `configure answer F is damaged: checksum mismatch …; builds ignore it`.
    pub fn describe(&self) -> String {
        format!(
            "{} {} is damaged: {}; builds ignore it",
            self.kind.describe(),
            self.file.display(),
            self.problem
        )
    }
}

impl Store {
    /// Checks every cache file: each configure answer (against its key and
    /// checksum, then parsed as a fresh answer), the snapshot, the kept
    /// plan and the recheck list (their checksums, and the plan against
    /// the snapshot). Reads only.
    pub fn verify_caches(&self) -> Result<Vec<CacheProblem>, StoreError> {
        let mut problems = Vec::new();
        let configure = self.dir().join(CONFIGURE_CACHE_DIR);
        match std::fs::read_dir(&configure) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(|error| StoreError::io(&configure, error))?;
                    let path = entry.path();
                    let name = entry.file_name();
                    if name.to_string_lossy().starts_with(ANSWER_TEMP_PREFIX)
                        || path.extension().and_then(|extension| extension.to_str())
                            != Some(ANSWER_EXTENSION)
                    {
                        // Never read: a leftover of an interrupted write, or
                        // an entry of the first layout (pruned by builds).
                        continue;
                    }
                    if let Err(problem) = check_cached_answer(&path) {
                        problems.push(CacheProblem {
                            kind: CacheKind::ConfigureAnswer,
                            file: path,
                            problem,
                        });
                    }
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(StoreError::io(&configure, error)),
        }
        let [snapshot_file, plan_file, recheck_file] = snapshot_files(self.dir());
        let (snapshot, plan) = check_snapshot(self.dir());
        if let CacheCheck::Bad(problem) = snapshot {
            problems.push(CacheProblem {
                kind: CacheKind::Snapshot,
                file: snapshot_file,
                problem,
            });
        }
        if let CacheCheck::Bad(problem) = check_plan(self.dir(), plan.as_ref()) {
            problems.push(CacheProblem {
                kind: CacheKind::KeptPlan,
                file: plan_file,
                problem,
            });
        }
        if let CacheCheck::Bad(problem) = check_recheck(self.dir()) {
            problems.push(CacheProblem {
                kind: CacheKind::Recheck,
                file: recheck_file,
                problem,
            });
        }
        problems.sort();
        Ok(problems)
    }

    /// Removes a damaged cache file (writers only): the next build that
    /// needs it recomputes it.
    pub fn remove_cache_file(&self, problem: &CacheProblem) -> Result<(), StoreError> {
        let path = &problem.file;
        let removed = match std::fs::symlink_metadata(path) {
            Ok(metadata) if metadata.is_dir() => std::fs::remove_dir_all(path),
            Ok(_) => std::fs::remove_file(path),
            Err(error) => Err(error),
        };
        match removed {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(StoreError::io(path, error))
            }
            _ => Ok(()),
        }
    }
}
