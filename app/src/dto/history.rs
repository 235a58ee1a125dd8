//! The JSON of `cairn history --json` (docs/cli.md): one object per entry,
//! newest first, its `type` one of `materialization`, `failure` and
//! `invalidation`. Keys are in alphabetical order (`type` among them), as
//! they have always been printed. The lines carry no `"schema"` field:
//! their fields are those of schema [`SCHEMA`](super::SCHEMA).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::history::{FailedRun, HistoryEntry, InvalidationEntry, JoinedRun, Materialized};

/// One line of `cairn history --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HistoryLine {
    Materialization(Box<MaterializationLine>),
    Failure(Box<FailureLine>),
    Invalidation(InvalidationLine),
    Joined(JoinedLine),
}

impl HistoryLine {
    /// The line of `entry`, a history entry of `partition`.
    pub fn new(partition: &str, entry: &HistoryEntry) -> HistoryLine {
        match entry {
            HistoryEntry::Materialization(m) => {
                HistoryLine::Materialization(Box::new(MaterializationLine::new(partition, m)))
            }
            HistoryEntry::Failure(f) => {
                HistoryLine::Failure(Box::new(FailureLine::new(partition, f)))
            }
            HistoryEntry::Invalidation(i) => {
                HistoryLine::Invalidation(InvalidationLine::new(partition, i))
            }
            HistoryEntry::Joined(j) => HistoryLine::Joined(JoinedLine::new(partition, j)),
        }
    }
}

/// `{"type":"materialization",...}`: the partition got content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaterializationLine {
    pub build: u64,
    /// The reason the build was requested with (a backfill's), or null.
    pub build_reason: Option<String>,
    pub code_digest: Option<String>,
    /// This is the partition's current content.
    pub current: bool,
    /// The output's content digest.
    pub digest: String,
    /// The job of another system it ran in (only then): `{"executor":
    /// "slurm", "id": "42"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatched: Option<DispatchLine>,
    /// Of the run that produced the content.
    pub duration_ms: Option<u64>,
    pub inputs: Option<Vec<InputLine>>,
    pub job: Option<String>,
    pub key: String,
    pub manifest_build: Option<u64>,
    /// The server operation the build ran (only when a server submitted it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// `executed` or `reused`.
    pub outcome: String,
    /// Why it ran; null when reused.
    pub reason: Option<String>,
    #[serde(rename = "ref")]
    pub partition: String,
    /// The shared remote cache it was restored from (only then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    pub restored: bool,
    pub seq: u64,
    pub stderr: Option<String>,
    pub stdout: Option<String>,
    pub time_ms: u64,
    /// `materialization`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The shared remote cache this build uploaded it to (only then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploaded: Option<String>,
    /// `{dataset: version}`.
    pub versions: Option<BTreeMap<String, String>>,
}

/// The job of another system a run was in: `{"executor","id"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchLine {
    /// `slurm`.
    pub executor: String,
    /// Its id of the job (the Slurm job id).
    pub id: String,
}

impl DispatchLine {
    fn new(dispatch: &crate::history::Dispatch) -> DispatchLine {
        DispatchLine {
            executor: dispatch.executor.clone(),
            id: dispatch.id.clone(),
        }
    }

    /// `Slurm job 42`.
    pub fn title(&self) -> String {
        crate::history::Dispatch {
            executor: self.executor.clone(),
            id: self.id.clone(),
        }
        .title()
    }
}

/// An input of a materialization: `{"changed","digest","ref"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputLine {
    /// Its content differs from the previous materialization's.
    pub changed: bool,
    pub digest: String,
    #[serde(rename = "ref")]
    pub partition: String,
}

impl MaterializationLine {
    pub fn new(partition: &str, m: &Materialized) -> MaterializationLine {
        let manifest = m.manifest.as_ref();
        MaterializationLine {
            build: m.build,
            build_reason: m.build_reason.clone(),
            operation: m.operation.clone(),
            code_digest: manifest
                .and_then(|manifest| manifest.code_digest)
                .map(|digest| digest.to_hex()),
            current: m.current,
            digest: m.digest.to_hex(),
            dispatched: m.dispatched.as_ref().map(DispatchLine::new),
            duration_ms: m.duration_ms(),
            inputs: manifest.map(|manifest| {
                manifest
                    .inputs
                    .iter()
                    .map(|input| InputLine {
                        changed: m.changed.contains(&input.partition),
                        digest: input.digest.to_hex(),
                        partition: input.partition.to_string(),
                    })
                    .collect()
            }),
            job: manifest.map(|manifest| manifest.job.clone()),
            key: m.key.to_hex(),
            manifest_build: manifest.map(|manifest| manifest.build),
            outcome: if m.executed { "executed" } else { "reused" }.to_owned(),
            reason: m.reason.clone(),
            partition: partition.to_owned(),
            remote: m.remote.clone(),
            restored: m.restored,
            seq: m.seq,
            stderr: manifest
                .and_then(|manifest| manifest.stderr)
                .map(|digest| digest.to_hex()),
            stdout: manifest
                .and_then(|manifest| manifest.stdout)
                .map(|digest| digest.to_hex()),
            time_ms: m.time_ms,
            kind: "materialization".to_owned(),
            uploaded: m.uploaded.clone(),
            versions: manifest.map(|manifest| manifest.versions.iter().cloned().collect()),
        }
    }
}

/// `{"type":"failure",...}`: a run of its job failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureLine {
    pub build: u64,
    pub build_reason: Option<String>,
    /// The job of another system the attempt ran in (only then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatched: Option<DispatchLine>,
    pub error: String,
    pub exit_code: Option<i32>,
    pub job: String,
    /// Null when it never ran (a missing source input).
    pub key: Option<String>,
    /// The server operation the build ran (only when a server submitted it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    pub reason: Option<String>,
    #[serde(rename = "ref")]
    pub partition: String,
    pub seq: u64,
    pub stderr: Option<String>,
    pub stdout: Option<String>,
    pub time_ms: u64,
    /// `failure`.
    #[serde(rename = "type")]
    pub kind: String,
}

impl FailureLine {
    pub fn new(partition: &str, f: &FailedRun) -> FailureLine {
        FailureLine {
            build: f.build,
            build_reason: f.build_reason.clone(),
            operation: f.operation.clone(),
            dispatched: f.dispatched.as_ref().map(DispatchLine::new),
            error: f.error.clone(),
            exit_code: f.exit_code,
            job: f.job.clone(),
            key: f.key.map(|key| key.to_hex()),
            reason: f.reason.clone(),
            partition: partition.to_owned(),
            seq: f.seq,
            stderr: f.stderr.map(|digest| digest.to_hex()),
            stdout: f.stdout.map(|digest| digest.to_hex()),
            time_ms: f.time_ms,
            kind: "failure".to_owned(),
        }
    }
}

/// `{"type":"invalidation",...}`: it was invalidated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidationLine {
    pub build: u64,
    pub by: Option<String>,
    pub reason: String,
    #[serde(rename = "ref")]
    pub partition: String,
    pub seq: u64,
    pub time_ms: u64,
    /// `invalidation`.
    #[serde(rename = "type")]
    pub kind: String,
}

impl InvalidationLine {
    pub fn new(partition: &str, i: &InvalidationEntry) -> InvalidationLine {
        InvalidationLine {
            build: i.build,
            by: i.by.clone(),
            reason: i.reason.clone(),
            partition: partition.to_owned(),
            seq: i.seq,
            time_ms: i.time_ms,
            kind: "invalidation".to_owned(),
        }
    }
}

/// `{"type":"joined",...}`: the build joined the run of `joined_build`
/// (a server's builds sharing an action), instead of building it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinedLine {
    pub build: u64,
    pub job: String,
    pub joined_build: u64,
    pub key: String,
    #[serde(rename = "ref")]
    pub partition: String,
    pub seq: u64,
    pub time_ms: u64,
    /// `joined`.
    #[serde(rename = "type")]
    pub kind: String,
}

impl JoinedLine {
    pub fn new(partition: &str, j: &JoinedRun) -> JoinedLine {
        JoinedLine {
            build: j.build,
            job: j.job.clone(),
            joined_build: j.joined_build,
            key: j.key.to_hex(),
            partition: partition.to_owned(),
            seq: j.seq,
            time_ms: j.time_ms,
            kind: "joined".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dto::status::tests::keys_in_alphabetical_order;

    #[test]
    fn history_lines_keep_their_keys_in_order() {
        let hex = "ab".repeat(32);
        keys_in_alphabetical_order(&MaterializationLine {
            build: 2,
            build_reason: Some("backfill".into()),
            code_digest: Some(hex.clone()),
            current: true,
            digest: hex.clone(),
            dispatched: Some(DispatchLine {
                executor: "slurm".into(),
                id: "42".into(),
            }),
            duration_ms: Some(12),
            inputs: Some(vec![InputLine {
                changed: true,
                digest: hex.clone(),
                partition: "raw/day=mon".into(),
            }]),
            job: Some("clean".into()),
            key: hex.clone(),
            manifest_build: Some(2),
            operation: Some("op-1".into()),
            outcome: "executed".into(),
            reason: Some("never built".into()),
            partition: "clean/day=mon".into(),
            remote: None,
            restored: false,
            seq: 9,
            stderr: None,
            stdout: Some(hex.clone()),
            time_ms: 1,
            kind: "materialization".into(),
            uploaded: None,
            versions: Some([("clean".to_owned(), "1.0.0".to_owned())].into()),
        });
        keys_in_alphabetical_order(&FailureLine {
            build: 2,
            build_reason: None,
            dispatched: Some(DispatchLine {
                executor: "slurm".into(),
                id: "42".into(),
            }),
            error: "exited with status 4".into(),
            exit_code: Some(4),
            job: "clean".into(),
            key: None,
            operation: Some("op-1".into()),
            reason: None,
            partition: "clean/day=mon".into(),
            seq: 7,
            stderr: Some(hex),
            stdout: None,
            time_ms: 1,
            kind: "failure".into(),
        });
        keys_in_alphabetical_order(&InvalidationLine {
            build: 3,
            by: Some("ana".into()),
            reason: "bad feed".into(),
            partition: "clean/day=mon".into(),
            seq: 12,
            time_ms: 1,
            kind: "invalidation".into(),
        });
    }
}
