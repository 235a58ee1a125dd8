//! cairn-engine: the domain of cairn — partition refs and patterns, the graph
//! file, the configure protocol, action keys, the pure planner, and the
//! executor that runs a plan through the ports in [`ports`].

pub mod action;
pub mod backfill;
pub mod codechange;
pub mod config;
pub mod date;
pub mod defs;
pub mod digest;
pub mod evaluate;
pub mod exec;
pub mod graph;
pub mod groups;
pub mod key;
pub mod limits;
pub mod observe;
mod par;
pub mod plan;
pub mod ports;
pub mod program;
pub mod record;
pub mod redact;
pub mod refs;
pub mod run;
pub mod runner;
pub mod script;
mod spawn;
pub mod uptodate;

pub use digest::{ActionKey, ContentDigest, KeyHasher};
pub use refs::{Bindings, PartitionRef, Pattern, RefError};
