//! The JSON of `cairn status --json` and `cairn why --json` (docs/cli.md).
//! Keys are in alphabetical order, as they have always been printed. They
//! carry no `"schema"` field: their fields are those of schema
//! [`SCHEMA`](super::SCHEMA) (docs/cli.md).

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `serde_json::Value` sorts its keys: a line serialized through it
    /// equals the line serialized directly only when every key is in
    /// alphabetical order, as these lines have always been printed.
    pub(crate) fn keys_in_alphabetical_order<T: Serialize>(line: &T) {
        let direct = serde_json::to_string(line).unwrap();
        let sorted = serde_json::to_string(&serde_json::to_value(line).unwrap()).unwrap();
        assert_eq!(direct, sorted);
    }

    #[test]
    fn status_and_why_lines_keep_their_keys_in_order() {
        keys_in_alphabetical_order(&StatusLine {
            reason: "up to date (build 3)".into(),
            partition: "clean/day=mon".into(),
            state: "built".into(),
        });
        keys_in_alphabetical_order(&WhyLine {
            built_by: Some(3),
            key: Some("ab".repeat(32)),
            reason: "clean/day=mon is up to date".into(),
            partition: "clean/day=mon".into(),
            state: "up-to-date".into(),
        });
    }
}
