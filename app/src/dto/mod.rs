//! The stable JSON that the command line prints and the coming `cairn
//! serve` will serialize: serde structs, one module per family of commands
//! (docs/cli.md names them).
//!
//! Rules (docs/cli.md): fields may be added, never renamed or removed. Each
//! struct declares its fields in alphabetical order, the order cairn has
//! always printed them in. A JSON-lines stream (`build`, `backfill`) ends
//! with a summary that carries [`SCHEMA`] as `"schema"`, the version of
//! every line before it; `plan --format json` carries it in its one
//! object. The `defs` objects do not (see [`defs`]).

pub mod backfill;
pub mod build;
pub mod defs;
pub mod events;
pub mod history;
pub mod plan;
pub mod status;
pub mod store;

use cairn_engine::refs::PartitionRef;
use serde::Serialize;

/// The version of these schemas, printed as `"schema"`. It moves only if a
/// field had to change meaning or go: adding a field keeps it.
pub const SCHEMA: u32 = 1;

/// The `"type"` of a JSON line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LineType {
    /// One action of a build or a dry run.
    Action,
    /// One partition of a backfill's dry run.
    Partition,
    /// The last line.
    Summary,
}

/// A list of partitions, as refs (a plan's) or as strings (the up-to-date
/// snapshot's): the same JSON array of strings.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(untagged)]
pub enum Refs<'a> {
    Refs(&'a [PartitionRef]),
    Strings(&'a [String]),
}

impl<'a> From<&'a [PartitionRef]> for Refs<'a> {
    fn from(refs: &'a [PartitionRef]) -> Self {
        Refs::Refs(refs)
    }
}

impl<'a> From<&'a [String]> for Refs<'a> {
    fn from(refs: &'a [String]) -> Self {
        Refs::Strings(refs)
    }
}

/// Milliseconds of `duration`, saturating.
pub fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
