//! The stable JSON that the command line prints and the coming `cairn
//! serve` will serialize: serde structs, one module per family of
//! commands (docs/cli.md names them). Fields may be added, never renamed
//! or removed.

pub mod events;
pub mod history;
pub mod status;
pub mod store;
