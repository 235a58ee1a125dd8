//! cairn-app: cairn's use cases, with typed results and no printing.
//!
//! Every front end calls this library: the command line (`cairn-cli`
//! parses its arguments, calls a use case here and renders what it
//! returns) and the coming `cairn serve`. Nothing here parses arguments,
//! prints, or knows about terminals: what a use case has to say while it
//! runs goes to the [`Notes`] its [`Workspace`] was opened with, and what
//! it found comes back as a value. Errors are [`AppError`]s, each mapping
//! to an exit code (docs/cli.md, "Exit codes").

pub mod backfill;
pub mod build;
pub mod defs;
pub mod dto;
pub mod error;
pub mod events;
pub mod history;
pub mod invalidate;
pub mod logs;
pub mod maintenance;
pub mod plan;
mod records;
pub mod remote;
pub mod running;
pub mod status;
mod text;
mod uptodate;
pub mod workspace;

pub use error::AppError;
pub use workspace::{Notes, Silent, StoreHandle, Workspace, WorkspaceOptions, resumable_note};
