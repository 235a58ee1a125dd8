//! The JSON of `cairn store verify --json` and `cairn store stats --json`
//! (docs/cli.md). Keys are in alphabetical order (`type` among them), as
//! they have always been printed. They carry no `"schema"` field: their
//! fields are those of schema [`SCHEMA`](super::SCHEMA).

use serde::{Deserialize, Serialize};

use cairn_store::{BlobProblem, CacheProblem, Damage, OrphanPartition};

use crate::maintenance::{Stats, Verification};

/// One line of `cairn store verify --json`: a problem, or the summary
/// that ends the output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VerifyLine {
    Blob(BlobProblemLine),
    ManifestMissing(ManifestMissingLine),
    Cache(CacheProblemLine),
    Summary(VerifySummary),
}

impl VerifyLine {
    /// Every line `verify` prints for `verification`: its problems (blobs,
    /// current partitions without a manifest, cache files), then the
    /// summary.
    pub fn all(verification: &Verification) -> Vec<VerifyLine> {
        let repair = verification.repaired.is_some();
        let report = &verification.report;
        let mut lines: Vec<VerifyLine> = Vec::new();
        lines.extend(
            report
                .problems
                .iter()
                .map(|problem| VerifyLine::Blob(BlobProblemLine::new(problem, repair))),
        );
        lines.extend(
            report
                .orphans
                .iter()
                .map(|orphan| VerifyLine::ManifestMissing(ManifestMissingLine::new(orphan))),
        );
        lines.extend(
            report
                .caches
                .iter()
                .map(|cache| VerifyLine::Cache(CacheProblemLine::new(cache, repair))),
        );
        lines.push(VerifyLine::Summary(VerifySummary::new(verification)));
        lines
    }
}

/// A damaged blob: `{"type":"problem","damage":"corrupt"|"truncated"|
/// "grown"|"not-a-file"|"missing",...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobProblemLine {
    /// The digest its bytes hash to, when read.
    pub actual: Option<String>,
    pub blob: String,
    pub damage: String,
    /// The size the manifest records (truncated or grown).
    pub expected_length: Option<u64>,
    /// Its size (truncated or grown).
    pub length: Option<u64>,
    /// The current partitions that need it.
    pub partitions: Vec<String>,
    /// It was deleted (`--repair`).
    pub removed: bool,
    /// The partitions of superseded manifests that name it.
    pub superseded: Vec<String>,
    /// `problem`.
    #[serde(rename = "type")]
    pub kind: String,
    /// What else needs it: definitions records, checkpoints.
    pub uses: Vec<String>,
}

impl BlobProblemLine {
    pub fn new(problem: &BlobProblem, repair: bool) -> BlobProblemLine {
        let (actual, length, expected_length) = match problem.damage {
            Damage::Missing | Damage::NotAFile { .. } => (None, None, None),
            Damage::Corrupt { actual } => (Some(actual), None, None),
            Damage::Truncated {
                length,
                expected,
                actual,
            }
            | Damage::Grown {
                length,
                expected,
                actual,
            } => (Some(actual), Some(length), Some(expected)),
        };
        BlobProblemLine {
            actual: actual.map(|digest| digest.to_hex()),
            blob: problem.digest.to_hex(),
            damage: problem.damage.word().to_owned(),
            expected_length,
            length,
            partitions: problem
                .current_partitions()
                .into_iter()
                .map(ToString::to_string)
                .collect(),
            removed: repair && problem.damage != Damage::Missing,
            superseded: problem
                .owners
                .iter()
                .filter(|owner| !owner.current)
                .map(|owner| owner.partition.to_string())
                .collect(),
            kind: "problem".to_owned(),
            uses: problem.uses.clone(),
        }
    }
}

/// A current partition whose manifest is gone:
/// `{"type":"problem","damage":"manifest-missing",...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestMissingLine {
    /// `manifest-missing`.
    pub damage: String,
    pub key: String,
    pub partition: String,
    /// `[partition]`.
    pub partitions: Vec<String>,
    /// `problem`.
    #[serde(rename = "type")]
    pub kind: String,
}

impl ManifestMissingLine {
    pub fn new(orphan: &OrphanPartition) -> ManifestMissingLine {
        ManifestMissingLine {
            damage: "manifest-missing".to_owned(),
            key: orphan.key.to_hex(),
            partition: orphan.partition.to_string(),
            partitions: vec![orphan.partition.to_string()],
            kind: "problem".to_owned(),
        }
    }
}

/// A damaged cache file: `{"type":"problem","damage":"cache",...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheProblemLine {
    /// `configure-answer`, `up-to-date-snapshot` or `kept-plan`.
    pub cache: String,
    /// `cache`.
    pub damage: String,
    pub file: String,
    /// Always empty: no partition needs a cache file.
    pub partitions: Vec<String>,
    pub problem: String,
    /// It was deleted (`--repair`).
    pub removed: bool,
    /// `problem`.
    #[serde(rename = "type")]
    pub kind: String,
}

impl CacheProblemLine {
    pub fn new(cache: &CacheProblem, repair: bool) -> CacheProblemLine {
        CacheProblemLine {
            cache: cache.kind.word().to_owned(),
            damage: "cache".to_owned(),
            file: cache.file.to_string_lossy().into_owned(),
            partitions: Vec::new(),
            problem: cache.problem.clone(),
            removed: repair,
            kind: "problem".to_owned(),
        }
    }
}

/// The last line of `cairn store verify --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifySummary {
    /// Blobs re-hashed, and their bytes.
    pub blobs: u64,
    /// The build id of the repair's invalidations (null without).
    pub build: Option<u64>,
    pub bytes: u64,
    /// `sound`, or `repaired` (redb repaired damaged pages).
    pub catalog: String,
    /// Partitions invalidated by the repair.
    pub invalidated: Vec<String>,
    pub problems: usize,
    /// Damaged blobs deleted.
    pub removed: usize,
    /// Damaged cache files deleted.
    pub removed_caches: usize,
    pub repaired: bool,
    /// Blobs of superseded manifests that gc collected (not problems).
    pub superseded_missing: u64,
    /// `summary`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Blobs no manifest refers to.
    pub unreferenced: u64,
}

impl VerifySummary {
    pub fn new(verification: &Verification) -> VerifySummary {
        let report = &verification.report;
        let repaired = verification.repaired.as_ref();
        VerifySummary {
            blobs: report.blobs,
            build: repaired.map(|r| r.build),
            bytes: report.bytes,
            catalog: if verification.catalog_sound {
                "sound"
            } else {
                "repaired"
            }
            .to_owned(),
            invalidated: repaired.map_or_else(Vec::new, |r| {
                r.invalidated.iter().map(ToString::to_string).collect()
            }),
            problems: verification.problems(),
            removed: repaired.map_or(0, |r| r.removed.len()),
            removed_caches: repaired.map_or(0, |r| r.removed_caches.len()),
            repaired: repaired.is_some(),
            superseded_missing: report.superseded_missing,
            kind: "summary".to_owned(),
            unreferenced: report.unreferenced,
        }
    }
}

/// The object of `cairn store stats --json` (all zero when nothing was
/// built yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsLine {
    /// Manifests of successful runs.
    pub actions: u64,
    pub blob_bytes: u64,
    pub blobs: u64,
    /// Build ids allocated (builds, invalidations, repairs).
    pub builds: u64,
    pub catalog_bytes: u64,
    pub events: u64,
    /// Entries of the partition index.
    pub index_entries: u64,
    /// Partitions with a current materialization.
    pub materialized: u64,
    /// Partitions with any recorded state.
    pub partitions: u64,
    /// The shared remote cache's traffic (present only when there was
    /// some): `restored`, `refused`, `uploaded`, `uploaded_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteTrafficLine>,
}

/// `StatsLine.remote`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteTrafficLine {
    pub refused: u64,
    pub restored: u64,
    pub uploaded: u64,
    pub uploaded_bytes: u64,
}

impl From<Option<&Stats>> for StatsLine {
    fn from(stats: Option<&Stats>) -> StatsLine {
        let Some(stats) = stats else {
            return StatsLine::default();
        };
        StatsLine {
            actions: stats.catalog.actions,
            blob_bytes: stats.blobs.bytes,
            blobs: stats.blobs.blobs,
            builds: stats.catalog.builds,
            catalog_bytes: stats.catalog.file_bytes,
            events: stats.catalog.events,
            index_entries: stats.catalog.indexed,
            materialized: stats.catalog.materialized,
            partitions: stats.catalog.partitions,
            remote: stats.remote.any().then_some(RemoteTrafficLine {
                refused: stats.remote.refused,
                restored: stats.remote.restored,
                uploaded: stats.remote.uploaded,
                uploaded_bytes: stats.remote.uploaded_bytes,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dto::status::tests::keys_in_alphabetical_order;

    #[test]
    fn verify_and_stats_lines_keep_their_keys_in_order() {
        let hex = "ab".repeat(32);
        keys_in_alphabetical_order(&BlobProblemLine {
            actual: Some(hex.clone()),
            blob: hex.clone(),
            damage: "truncated".into(),
            expected_length: Some(308),
            length: Some(5),
            partitions: vec!["clean/day=mon".into()],
            removed: false,
            superseded: vec!["clean/day=tue".into()],
            kind: "problem".into(),
            uses: vec!["checkpoint 3 of action ab…".into()],
        });
        keys_in_alphabetical_order(&ManifestMissingLine {
            damage: "manifest-missing".into(),
            key: hex,
            partition: "clean/day=mon".into(),
            partitions: vec!["clean/day=mon".into()],
            kind: "problem".into(),
        });
        keys_in_alphabetical_order(&CacheProblemLine {
            cache: "kept-plan".into(),
            damage: "cache".into(),
            file: "/p/.cairn/plan".into(),
            partitions: Vec::new(),
            problem: "checksum mismatch".into(),
            removed: true,
            kind: "problem".into(),
        });
        keys_in_alphabetical_order(&VerifySummary {
            blobs: 11,
            build: Some(4),
            bytes: 103,
            catalog: "sound".into(),
            invalidated: vec!["clean/day=mon".into()],
            problems: 2,
            removed: 1,
            removed_caches: 1,
            repaired: true,
            superseded_missing: 0,
            kind: "summary".into(),
            unreferenced: 0,
        });
        keys_in_alphabetical_order(&StatsLine::default());
    }
}
