//! cairn-engine: the domain of cairn — partition refs and patterns, the graph
//! file, the configure protocol, action keys, the pure planner, and the
//! executor that runs a plan through the ports in [`ports`].

pub mod backfill;
pub mod code;
pub mod codechange;
pub mod defs;
pub mod evaluate;
pub mod exec;
pub mod executor;
pub mod graph;
pub mod groups;
pub mod job;
pub mod key;
pub mod limits;
pub mod local;
pub mod observe;
mod par;
pub mod plan;
pub mod program;
pub mod redact;
pub mod remote;
pub mod script;
pub mod slurm;
pub mod uptodate;

// The action and the run of its job are parts of the executor (exec/);
// their old paths stay.
pub use exec::{action, run};
// The jobs' configs and the configure protocol are the planner's input.
pub use plan::config;
// The local job runner under its old name.
pub use local as runner;

// The vocabulary and the ports live in cairn-core; they are re-exported
// under their old names so that `cairn_engine::refs::…` and `crate::refs::…`
// keep working.
pub use cairn_core::{clock, date, digest, memory, projection, record, refs};

pub use digest::{ActionKey, ContentDigest, KeyHasher};
pub use refs::{Bindings, PartitionRef, Pattern, RefError};

/// The ports of cairn-core, and the stat-cache twin under its old path
/// (`crate::ports::MemoryStatCache`).
pub mod ports {
    pub use cairn_core::memory::MemoryStatCache;
    pub use cairn_core::ports::*;
}
