//! cairn-server: `cairn serve`, cairn's build service (docs/api.md).
//!
//! An HTTP API, versioned under `/v1`, over the use cases of cairn-app: it
//! never copies them. Builds and backfills are long-running operations
//! (Google AIP-151): a submit answers `202` with an operation, which
//! clients poll (or follow as server-sent events) until it is done.
//!
//! Tokio lives only here (docs/architecture.md): the use cases are
//! synchronous and run on tokio's blocking pool (`spawn_blocking`); the
//! async side only moves requests, responses and event streams.
//!
//! Modules, each importing only those below it (tests/import_cycles.rs):
//! `api` (routes, handlers, layers, shutdown); `stream` (the SSE streams
//! and the log's tailer); `ops` (what handlers share, an operation's run,
//! its observer); `restore` (earlier servers' operations, rebuilt from the
//! log), `feed` (the events read from the log), `metrics`
//! (Prometheus text); `registry` (operations and idempotency keys);
//! `error` (the error answer), `auth` (the token), `grid` (a dataset's
//! run-length-encoded states); `web` (the web page at `/` and `/ui/...`,
//! docs/web.md: its assets only, it reads `/v1` like any client).

mod api;
mod auth;
mod error;
mod expect;
mod feed;
mod grid;
mod grids;
mod metrics;
mod ops;
mod registry;
mod restore;
mod stream;
mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_app::{AppError, Notes, Workspace, WorkspaceOptions};

pub use auth::TOKEN_FILE;
pub use restore::KEPT as KEPT_OPERATIONS;

/// What `cairn serve` was asked.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen (default 127.0.0.1:7878; port 0 picks a free port).
    pub listen: SocketAddr,
    /// The graph file and store, as `--graph` and `--store` say.
    pub workspace: WorkspaceOptions,
    /// Reads (`GET`) need no token.
    pub public_read: bool,
    /// How long running operations may go on after SIGTERM/SIGINT before
    /// they are cancelled.
    pub grace: Duration,
    /// Jobs at once per build (default: the number of cores).
    pub jobs: Option<usize>,
    /// Operations running at once (the others queue).
    pub operations: usize,
    /// Earlier operations rebuilt from the log at startup, the newest
    /// ([`KEPT_OPERATIONS`] by default).
    pub keep_operations: usize,
}

/// The default address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

/// Why `cairn serve` could not start (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The graph file, the store, a use case.
    #[error(transparent)]
    App(#[from] AppError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The token file cannot be read or written.
    #[error("{}: {source}", path.display())]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    BadToken { path: PathBuf, message: String },
    #[error("cannot start the server's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the server failed: {0}")]
    Server(std::io::Error),
}

impl ServeError {
    /// The exit code `cairn serve` ends with: 2 for what the user gave
    /// (graph file, address), 3 for the store and the machine.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServeError::App(error) => error.exit_code(),
            ServeError::Listen { .. } => cairn_app::error::EXIT_USAGE,
            _ => cairn_app::error::EXIT_STORE,
        }
    }
}

/// Runs the server until SIGTERM or SIGINT, then shuts down as
/// docs/api.md ("Shutdown") says. `listening` hears the bound address once
/// the socket is open (with port 0, the port chosen).
pub fn serve(
    options: &ServeOptions,
    notes: Arc<dyn Notes>,
    listening: &mut dyn FnMut(SocketAddr),
) -> Result<(), ServeError> {
    let mut workspace = Workspace::open(&options.workspace, notes)?;
    // The server is the store's one writer for its whole life: its
    // operations run concurrently on the held store (docs/architecture.md).
    workspace.hold(true)?;
    let token = auth::load_or_create(&workspace.store_dir)?;
    // rayon's global pool (planning's and evaluation's parallel parts)
    // starts here, at the server's priority: started lazily from an
    // operation's thread it would take that thread's lower priority
    // (ops.rs, `BUILD_NICE`) for good, and slow the submits' dry runs.
    let _ = rayon::current_num_threads();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cairn-serve")
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let shared = Arc::new(ops::Shared::new(workspace, token, options)?);
    let mut runners = shared.start_runners().map_err(ServeError::Runtime)?;
    let result = runtime.block_on(api::run(Arc::clone(&shared), options, listening));
    shared.stop_runners(&mut runners);
    // Operations still running were cancelled and finished before `run`
    // returned; the store closes (and its lock goes) with the last handle
    // on `shared`, dropped here.
    runtime.shutdown_timeout(Duration::from_secs(5));
    drop(shared);
    result
}

/// For tests: yields until `done` holds, and fails the test (rather than
/// spinning for ever) if it does not within a minute.
#[cfg(test)]
pub(crate) async fn yield_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "still waiting after a minute until {what}"
        );
        tokio::task::yield_now().await;
    }
}
