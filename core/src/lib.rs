//! cairn-core: the vocabulary of cairn and the ports through which the engine
//! reaches durable state, with no process spawning, no async and no I/O of
//! its own beyond the in-memory twins and a clock.
//!
//! - [`digest`], [`refs`], [`date`], [`record`], [`clock`]: content digests
//!   and action keys, partition refs and patterns, calendar dates, the facts
//!   cairn records (events, manifests, partition states), the wall clock.
//! - [`ports`]: the event log, the projections, the stat cache and the blob
//!   store, as traits (`Catalog` is the three catalog ports together).
//! - [`projection`]: the pure rules by which an event changes the
//!   projections; the redb catalog and the in-memory one both apply them.
//! - [`memory`]: in-memory twins of every port, for tests and tools.
//! - `contract` (feature `contract`): the ports' contract as tests written
//!   once, run against the twins here and against the real store in
//!   `cairn-store`.
//!
//! See docs/internals.md ("Ports and their twins").

pub mod clock;
#[cfg(any(test, feature = "contract"))]
pub mod contract;
pub mod date;
pub mod digest;
pub mod memory;
pub mod ports;
pub mod projection;
pub mod record;
pub mod refs;

pub use digest::{ActionKey, ContentDigest, KeyHasher};
pub use refs::{Bindings, PartitionRef, Pattern, RefError};
