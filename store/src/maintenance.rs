//! Store maintenance behind `cairn store verify` and `cairn store gc`:
//! re-hash every blob, check what the catalog refers to and the cache
//! files (caches.rs), repair by invalidation (and removal of damaged
//! caches), and collect blobs no kept manifest needs.
//!
//! What "needed" means:
//! - A partition's *current* materialization (`partitions` → `current.key`
//!   → the manifest in `actions`) needs every blob of that manifest: its
//!   output files (to restore the partition) and its stdout/stderr (for
//!   `cairn logs`). A missing or damaged one is a problem `verify` reports
//!   and `--repair` fixes by invalidating the partition, so the next build
//!   reruns the job and writes the blobs again.
//! - Manifests that are no longer current (superseded by a version bump, an
//!   input change, ...) may lose their blobs to `gc`; that is not damage: if
//!   such a key is ever wanted again, the restore fails cleanly and the job
//!   runs. `verify` only counts them.
//! - A blob whose bytes do not hash to its name is always a problem, needed
//!   or not: it is deleted by `--repair` (a put never rewrites a blob that
//!   looks present, see `blobs.rs`).
//! - Blobs the log refers to outside manifests: every definitions record
//!   (`DefsRefreshed`, the history `cairn defs` shows, small) and the last
//!   checkpoint of every action key that has not succeeded since
//!   (`ActionCheckpointed`, what a resumed attempt gets) are kept by `gc`;
//!   `verify` reports the latest definitions record of a source, or a live
//!   checkpoint, that is missing.
//!
//! Both `repair` and `gc` must run under the writer lock (no build may be
//! writing blobs that no manifest refers to yet); `verify` may run on a
//! read-only store.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use cairn_engine::ports::{EventLog, StoreError};
use cairn_engine::record::{EventKind, Manifest};
use cairn_engine::{ActionKey, ContentDigest, PartitionRef};
use rayon::prelude::*;

use crate::Store;
use crate::blobs::BlobCheck;

/// What a blob is to the manifest that refers to it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum BlobRole {
    /// A file of an output partition, by its path inside the partition.
    File(String),
    Stdout,
    Stderr,
}

/// A manifest's reference to a blob.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlobOwner {
    pub partition: PartitionRef,
    pub key: ActionKey,
    /// The build whose run the manifest records.
    pub build: u64,
    pub role: BlobRole,
    /// Whether the manifest is the partition's current materialization.
    pub current: bool,
}

/// How a blob is damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// Needed by a current materialization, and not in the store.
    Missing,
    /// Present, but its bytes hash to `actual`.
    Corrupt { actual: ContentDigest },
    /// Present with `length` bytes, fewer than the `expected` the manifest
    /// records.
    Truncated {
        length: u64,
        expected: u64,
        actual: ContentDigest,
    },
    /// Present with `length` bytes, more than the `expected` the manifest
    /// records.
    Grown {
        length: u64,
        expected: u64,
        actual: ContentDigest,
    },
    /// Something other than a regular file is under the blob's name (`kind`:
    /// `a FIFO`, `a directory`...): never opened for reading, and removed
    /// by `--repair` like a corrupt blob.
    NotAFile { kind: &'static str },
}

impl Damage {
    /// `missing`, `corrupt`, `truncated`, `grown`, `not-a-file`.
    pub fn word(&self) -> &'static str {
        match self {
            Damage::Missing => "missing",
            Damage::Corrupt { .. } => "corrupt",
            Damage::Truncated { .. } => "truncated",
            Damage::Grown { .. } => "grown",
            Damage::NotAFile { .. } => "not-a-file",
        }
    }
}

/// One damaged blob and everything that refers to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobProblem {
    pub digest: ContentDigest,
    pub damage: Damage,
    /// Every manifest reference, current ones first, then by partition.
    pub owners: Vec<BlobOwner>,
    /// What else needs it: `definitions source S (seq N)`, `checkpoint N of
    /// action K…`.
    pub uses: Vec<String>,
}

impl BlobProblem {
    /// The partitions whose current materialization needs this blob.
    pub fn current_partitions(&self) -> BTreeSet<&PartitionRef> {
        self.owners
            .iter()
            .filter(|owner| owner.current)
            .map(|owner| &owner.partition)
            .collect()
    }

    /// `blob 3f2a… is corrupt (expected 3f2a…, read 9c1d…)` and the like.
    pub fn describe(&self) -> String {
        let short = self.digest.short();
        match self.damage {
            Damage::Missing => format!("blob {short}… is missing"),
            Damage::Corrupt { actual } => format!(
                "blob {short}… is corrupt (expected {short}…, read {}…)",
                actual.short()
            ),
            Damage::Truncated {
                length, expected, ..
            } => format!("blob {short}… is truncated ({length} of {expected} bytes)"),
            Damage::Grown {
                length, expected, ..
            } => format!("blob {short}… grew ({length} bytes, {expected} stored)"),
            Damage::NotAFile { kind } => format!("blob {short}… is {kind}, not a regular file"),
        }
    }
}

/// A current materialization whose manifest is not in `actions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanPartition {
    pub partition: PartitionRef,
    pub key: ActionKey,
}

/// What [`Store::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Blobs re-hashed, and their bytes.
    pub blobs: u64,
    pub bytes: u64,
    pub problems: Vec<BlobProblem>,
    pub orphans: Vec<OrphanPartition>,
    /// Blobs that only superseded manifests refer to and that are gone
    /// (collected by `gc`): not a problem.
    pub superseded_missing: u64,
    /// Blobs present that no manifest refers to (what `gc` would remove,
    /// failure logs aside).
    pub unreferenced: u64,
    /// Cache files no build would believe (caches.rs).
    pub caches: Vec<crate::CacheProblem>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.orphans.is_empty() && self.caches.is_empty()
    }

    /// Every partition whose current materialization is damaged, with the
    /// reason recorded when `--repair` invalidates it (its first problem).
    pub fn affected_partitions(&self) -> BTreeMap<PartitionRef, String> {
        let mut out = BTreeMap::new();
        for problem in &self.problems {
            for partition in problem.current_partitions() {
                out.entry(partition.clone()).or_insert_with(|| {
                    format!(
                        "store verify: blob {}… is {}",
                        problem.digest.short(),
                        problem.damage.word()
                    )
                });
            }
        }
        for orphan in &self.orphans {
            out.entry(orphan.partition.clone()).or_insert_with(|| {
                format!(
                    "store verify: the manifest of key {} is missing",
                    orphan.key.short()
                )
            });
        }
        out
    }
}

/// What [`Store::repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Damaged blob files deleted.
    pub removed: Vec<ContentDigest>,
    /// Damaged cache files deleted.
    pub removed_caches: Vec<std::path::PathBuf>,
    /// Partitions invalidated, so that the next build rebuilds them.
    pub invalidated: Vec<PartitionRef>,
    /// The build id the invalidations were recorded under (0: none).
    pub build: u64,
}

/// Which manifests `gc` keeps besides the current materializations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcKeep {
    /// Only current materializations.
    Current,
    /// Manifests (and failure logs) of the last `n` build ids.
    Builds(u64),
    /// Manifests finished (and failure logs recorded) at or after this
    /// wall time, in ms since the epoch.
    Since(u64),
}

/// What [`Store::gc`] removed (or would remove, in a dry run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    pub removed: u64,
    pub removed_bytes: u64,
    pub kept: u64,
    pub kept_bytes: u64,
    /// Manifests whose blobs were kept.
    pub kept_manifests: u64,
    /// Manifests in `actions` whose blobs may go.
    pub dropped_manifests: u64,
    pub dry_run: bool,
}

/// Count and bytes of the blob store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlobUsage {
    pub blobs: u64,
    pub bytes: u64,
}

/// The blobs the log refers to outside manifests (see the module doc).
#[derive(Debug, Default)]
struct LogBlobs {
    /// Every definitions record: digest → what it is.
    defs: HashMap<ContentDigest, String>,
    /// The latest definitions record of each source: digest → what it is.
    latest_defs: HashMap<ContentDigest, String>,
    /// The last checkpoint of each key not succeeded since: digest → what.
    checkpoints: HashMap<ContentDigest, String>,
}

impl LogBlobs {
    fn uses(&self, digest: &ContentDigest) -> Vec<String> {
        let mut uses: Vec<String> = [&self.defs, &self.checkpoints]
            .into_iter()
            .filter_map(|map| map.get(digest).cloned())
            .collect();
        uses.dedup();
        uses
    }

    /// Blobs whose absence is a problem.
    fn needed(&self) -> impl Iterator<Item = &ContentDigest> {
        self.latest_defs.keys().chain(self.checkpoints.keys())
    }
}

/// Every blob a manifest refers to, with its role.
fn manifest_blobs(
    manifest: &Manifest,
) -> Vec<(ContentDigest, PartitionRef, BlobRole, Option<u64>)> {
    let mut out = Vec::new();
    for output in &manifest.outputs {
        for file in &output.files {
            out.push((
                file.digest,
                output.partition.clone(),
                BlobRole::File(file.path.clone()),
                Some(file.size),
            ));
        }
    }
    // Logs belong to every output of the run.
    for (digest, role) in [
        (manifest.stdout, BlobRole::Stdout),
        (manifest.stderr, BlobRole::Stderr),
    ] {
        if let Some(digest) = digest {
            for output in &manifest.outputs {
                out.push((digest, output.partition.clone(), role.clone(), None));
            }
        }
    }
    out
}

impl Store {
    /// One pass over the log for the blobs it names outside manifests;
    /// `failure_window` also collects the logs of failures inside it.
    fn log_blobs(
        &self,
        mut failure_window: impl FnMut(u64, u64) -> bool,
        failure_logs: &mut HashSet<ContentDigest>,
    ) -> Result<LogBlobs, StoreError> {
        let mut blobs = LogBlobs::default();
        let mut latest_defs: BTreeMap<String, (ContentDigest, u64)> = BTreeMap::new();
        let mut checkpoints: HashMap<ActionKey, (ContentDigest, u64)> = HashMap::new();
        self.catalog().scan_events(1, &mut |event| {
            match &event.kind {
                EventKind::DefsRefreshed { source, digest, .. } => {
                    blobs.defs.insert(
                        *digest,
                        format!("definitions source {source} (seq {})", event.seq),
                    );
                    latest_defs.insert(source.clone(), (*digest, event.seq));
                }
                EventKind::ActionCheckpointed {
                    key,
                    digest,
                    sequence,
                    ..
                } => {
                    checkpoints.insert(*key, (*digest, *sequence));
                }
                EventKind::ActionSucceeded { manifest } => {
                    checkpoints.remove(&manifest.key);
                }
                EventKind::ActionFailed { stdout, stderr, .. }
                    if failure_window(event.build, event.time_ms) =>
                {
                    failure_logs.extend(stdout.iter().chain(stderr.iter()).copied());
                }
                _ => {}
            }
            true
        })?;
        for (source, (digest, seq)) in latest_defs {
            blobs
                .latest_defs
                .insert(digest, format!("definitions source {source} (seq {seq})"));
        }
        for (key, (digest, sequence)) in checkpoints {
            blobs.checkpoints.insert(
                digest,
                format!("checkpoint {sequence} of action {}…", key.short()),
            );
        }
        Ok(blobs)
    }

    /// The current key of every materialized partition.
    fn current_keys(&self) -> Result<BTreeMap<PartitionRef, ActionKey>, StoreError> {
        let mut current = BTreeMap::new();
        self.catalog().partition_states(&mut |partition, state| {
            if let Some(materialization) = state.current {
                current.insert(partition, materialization.key);
            }
            true
        })?;
        Ok(current)
    }

    /// Re-hashes every blob (in parallel) and checks every blob the
    /// manifests of current materializations refer to. Reads only.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let current = self.current_keys()?;
        let current_pairs: HashSet<(&PartitionRef, &ActionKey)> = current.iter().collect();
        let mut owners: HashMap<ContentDigest, Vec<BlobOwner>> = HashMap::new();
        let mut expected_length: HashMap<ContentDigest, u64> = HashMap::new();
        let mut manifest_keys = HashSet::new();
        self.catalog().manifests(&mut |manifest| {
            manifest_keys.insert(manifest.key);
            for (digest, partition, role, length) in manifest_blobs(&manifest) {
                if let Some(length) = length {
                    expected_length.insert(digest, length);
                }
                let is_current = current_pairs.contains(&(&partition, &manifest.key));
                owners.entry(digest).or_default().push(BlobOwner {
                    partition,
                    key: manifest.key,
                    build: manifest.build,
                    role,
                    current: is_current,
                });
            }
            true
        })?;
        let orphans = current
            .iter()
            .filter(|(_, key)| !manifest_keys.contains(*key))
            .map(|(partition, key)| OrphanPartition {
                partition: partition.clone(),
                key: *key,
            })
            .collect();

        let log_blobs = self.log_blobs(|_, _| false, &mut HashSet::new())?;
        let present = self.blobs().iter_digests()?;
        let checks: Vec<(ContentDigest, BlobCheck)> = present
            .par_iter()
            .map(|digest| Ok((*digest, self.blobs().check_blob(digest)?)))
            .collect::<Result<_, StoreError>>()?;

        let mut report = VerifyReport {
            orphans,
            caches: self.verify_caches()?,
            ..VerifyReport::default()
        };
        let mut seen = HashSet::with_capacity(checks.len());
        let problem = |digest: ContentDigest, damage: Damage, report: &mut VerifyReport| {
            let mut list = owners.get(&digest).cloned().unwrap_or_default();
            list.sort_by(|a, b| b.current.cmp(&a.current).then_with(|| a.cmp(b)));
            list.dedup();
            report.problems.push(BlobProblem {
                digest,
                damage,
                owners: list,
                uses: log_blobs.uses(&digest),
            });
        };
        for (digest, check) in checks {
            match check {
                BlobCheck::Intact { length } => {
                    report.blobs += 1;
                    report.bytes += length;
                    if !owners.contains_key(&digest) && log_blobs.uses(&digest).is_empty() {
                        report.unreferenced += 1;
                    }
                    seen.insert(digest);
                }
                BlobCheck::Corrupt { length, actual } => {
                    report.blobs += 1;
                    report.bytes += length;
                    seen.insert(digest);
                    let damage = match expected_length.get(&digest) {
                        Some(&expected) if length < expected => Damage::Truncated {
                            length,
                            expected,
                            actual,
                        },
                        Some(&expected) if length > expected => Damage::Grown {
                            length,
                            expected,
                            actual,
                        },
                        _ => Damage::Corrupt { actual },
                    };
                    problem(digest, damage, &mut report);
                }
                BlobCheck::NotAFile { kind } => {
                    seen.insert(digest);
                    problem(digest, Damage::NotAFile { kind }, &mut report);
                }
                // Deleted between the listing and the check: as if absent.
                BlobCheck::Missing => {}
            }
        }
        let mut missing: Vec<&ContentDigest> = owners
            .keys()
            .filter(|digest| !seen.contains(*digest))
            .collect();
        missing.sort_unstable();
        for digest in missing {
            if owners[digest].iter().any(|owner| owner.current) {
                problem(*digest, Damage::Missing, &mut report);
            } else if !log_blobs.needed().any(|needed| needed == digest) {
                report.superseded_missing += 1;
            }
        }
        let mut needed: Vec<&ContentDigest> = log_blobs
            .needed()
            .filter(|digest| !seen.contains(*digest) && !owners.contains_key(*digest))
            .collect();
        needed.sort_unstable();
        needed.dedup();
        for digest in needed {
            problem(*digest, Damage::Missing, &mut report);
        }
        report.problems.sort_by_key(|problem| problem.digest);
        Ok(report)
    }

    /// Repairs what `report` found: deletes every damaged blob file and
    /// cache file, then records a `PartitionInvalidated` (by `by`) for every partition whose
    /// current materialization needs a damaged or missing blob, so that the
    /// next build reruns its job. Writer only.
    pub fn repair(&self, report: &VerifyReport, by: &str) -> Result<RepairReport, StoreError> {
        if !self.is_writer() {
            return Err(StoreError::io(
                self.dir(),
                std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "repairing the store needs the writer lock",
                ),
            ));
        }
        let mut repair = RepairReport::default();
        // Blobs first: an invalidation recorded while the bad bytes stay
        // would let the rerun keep them (a put trusts a present blob).
        for problem in &report.problems {
            if problem.damage != Damage::Missing {
                self.blobs().remove(&problem.digest)?;
                repair.removed.push(problem.digest);
            }
        }
        for problem in &report.caches {
            self.remove_cache_file(problem)?;
            repair.removed_caches.push(problem.file.clone());
        }
        let affected = report.affected_partitions();
        if !affected.is_empty() {
            let build = self.catalog().next_build_id()?;
            let events = affected
                .iter()
                .map(|(partition, reason)| EventKind::PartitionInvalidated {
                    partition: partition.clone(),
                    reason: reason.clone(),
                    by: Some(by.to_owned()),
                })
                .collect();
            self.catalog().append(build, events, Vec::new())?;
            repair.build = build;
            repair.invalidated = affected.into_keys().collect();
        }
        Ok(repair)
    }

    /// Deletes every blob that no kept manifest refers to (unless
    /// `dry_run`). Kept: the manifests of current materializations, those
    /// `keep` names, the logs of each partition's standing failure and,
    /// with `keep`, the failure logs inside its window; every definitions
    /// record and every live checkpoint. Writer only, unless `dry_run`.
    pub fn gc(&self, keep: GcKeep, dry_run: bool) -> Result<GcReport, StoreError> {
        if !dry_run && !self.is_writer() {
            return Err(StoreError::io(
                self.dir(),
                std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "collecting garbage needs the writer lock",
                ),
            ));
        }
        let current: HashSet<ActionKey> = self.current_keys()?.into_values().collect();
        let last_build = self.catalog().last_build_id()?;
        let in_window = |build: u64, time_ms: u64| match keep {
            GcKeep::Current => false,
            GcKeep::Builds(count) => build > last_build.saturating_sub(count),
            GcKeep::Since(cutoff) => time_ms >= cutoff,
        };
        let mut kept: HashSet<ContentDigest> = HashSet::new();
        let mut report = GcReport {
            dry_run,
            ..GcReport::default()
        };
        self.catalog().manifests(&mut |manifest| {
            if current.contains(&manifest.key) || in_window(manifest.build, manifest.finished_ms) {
                report.kept_manifests += 1;
                kept.extend(
                    manifest_blobs(&manifest)
                        .into_iter()
                        .map(|(digest, ..)| digest),
                );
            } else {
                report.dropped_manifests += 1;
            }
            true
        })?;
        // The logs of standing failures (what `cairn logs` shows for them).
        let mut failed = Vec::new();
        self.catalog().partition_states(&mut |partition, state| {
            if state.failed.is_some() {
                failed.push(partition);
            }
            true
        })?;
        let keep_logs = |kind: &EventKind, kept: &mut HashSet<ContentDigest>| {
            if let EventKind::ActionFailed { stdout, stderr, .. } = kind {
                kept.extend(stdout.iter().chain(stderr.iter()).copied());
            }
        };
        // Definitions records, live checkpoints and the failure logs of the
        // window, in one pass over the log.
        let log_blobs = self.log_blobs(in_window, &mut kept)?;
        kept.extend(log_blobs.defs.keys().copied());
        kept.extend(log_blobs.checkpoints.keys().copied());
        for partition in &failed {
            let mut last = None;
            self.catalog()
                .partition_events(partition, 1, &mut |event| {
                    if matches!(event.kind, EventKind::ActionFailed { .. }) {
                        last = Some(event.kind);
                    }
                    true
                })?;
            if let Some(kind) = last {
                keep_logs(&kind, &mut kept);
            }
        }
        for (digest, length) in self.blobs().sizes()? {
            if kept.contains(&digest) {
                report.kept += 1;
                report.kept_bytes += length;
            } else {
                let freed = if dry_run {
                    length
                } else {
                    self.blobs().remove(&digest)?
                };
                report.removed += 1;
                report.removed_bytes += freed;
            }
        }
        Ok(report)
    }

    /// How many blobs the store holds, and their bytes.
    pub fn blob_usage(&self) -> Result<BlobUsage, StoreError> {
        let sizes = self.blobs().sizes()?;
        Ok(BlobUsage {
            blobs: sizes.len() as u64,
            bytes: sizes.iter().map(|(_, length)| length).sum(),
        })
    }
}

#[cfg(test)]
mod tests;
