//! The JSON of `cairn status --json` and `cairn why --json` (docs/cli.md).
//! Keys are in alphabetical order, as they have always been printed.

use serde::{Deserialize, Serialize};

use crate::status::{Explanation, PartitionStatus};

/// One line of `cairn status --json`: `{"reason","ref","state"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusLine {
    /// Why, in one sentence.
    pub reason: String,
    /// The partition.
    #[serde(rename = "ref")]
    pub partition: String,
    /// `source`, `built`, `stale`, `missing`, `failed`, `running` or
    /// `orphaned`.
    pub state: String,
}

impl From<&PartitionStatus> for StatusLine {
    fn from(status: &PartitionStatus) -> StatusLine {
        StatusLine {
            reason: status.reason.clone(),
            partition: status.partition.to_string(),
            state: status.state.word().to_owned(),
        }
    }
}

/// The object of `cairn why --json`:
/// `{"built_by","key","reason","ref","state"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhyLine {
    /// The build whose result it reuses (up to date), else null.
    pub built_by: Option<u64>,
    /// The action key it is (or would be) built under, when known.
    pub key: Option<String>,
    /// The explanation, naming the partition.
    pub reason: String,
    #[serde(rename = "ref")]
    pub partition: String,
    /// `source`, `running`, `up-to-date`, `restore`, `rebuild` or
    /// `blocked`.
    pub state: String,
}

impl From<&Explanation> for WhyLine {
    fn from(explanation: &Explanation) -> WhyLine {
        WhyLine {
            built_by: explanation.built_by,
            key: explanation.key.map(|key| key.to_hex()),
            reason: explanation.text.clone(),
            partition: explanation.partition.to_string(),
            state: explanation.state.word().to_owned(),
        }
    }
}
