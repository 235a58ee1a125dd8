//! What the use cases can fail with, and the exit code each maps to
//! (docs/cli.md, "Exit codes").
//!
//! A build whose jobs failed or that was interrupted is not an error: it
//! ends with a summary to report, whose `exit_code` is 1 or 130. An
//! `AppError` ends the command before (or instead of) any such summary:
//! exit 2 for what the user asked or the graph file says, 3 for the store.
//! The messages are those users have always seen: each variant displays
//! exactly the text the command line prints after `error:`.

use std::path::PathBuf;

use cairn_engine::exec::ExecError;
use cairn_engine::graph::GraphError;
use cairn_engine::plan::PlanError;
use cairn_engine::ports::StoreError;

/// Exit code of a usage, graph file, ref or configure error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of a store that is locked (with `--no-wait`), unreadable or
/// corrupt.
pub const EXIT_STORE: u8 = 3;
/// Exit code of a command in which at least one job failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of an interrupted command (Ctrl-C, SIGTERM).
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A path given (graph file, store directory) cannot be made absolute.
    #[error("{}: {source}", path.display())]
    Path {
        path: PathBuf,
        source: std::io::Error,
    },
    /// No graph file where one was looked for.
    #[error(
        "{}: no graph file here (run cairn where cairn.toml is, or pass --graph FILE)",
        .0.display()
    )]
    NoGraphFile(PathBuf),
    /// The graph file (or a config checked against it) is wrong:
    /// `file:line: field: message`.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// A ref or pattern asked for that the graph refuses (unknown dataset,
    /// a value outside its dimension's domain, past a limit).
    #[error("{0}")]
    Request(String),
    /// Planning failed: a configure call, a cycle, a lookup.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Another usage error (a flag's value, a name not declared), with the
    /// whole message.
    #[error("{0}")]
    Usage(String),
    /// The store: locked, unreadable, corrupt, or the disk under it.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another store or machine problem, with the whole message.
    #[error("{0}")]
    StoreProblem(String),
}

impl AppError {
    /// The process exit code this error ends a command with.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Path { .. }
            | AppError::NoGraphFile(_)
            | AppError::Graph(_)
            | AppError::Request(_)
            | AppError::Plan(_)
            | AppError::Usage(_) => EXIT_USAGE,
            AppError::Store(_) | AppError::StoreProblem(_) => EXIT_STORE,
        }
    }
}

impl From<ExecError> for AppError {
    /// A bad `code` entry is the graph file's error (exit 2); the rest are
    /// the store's or the machine's (exit 3).
    fn from(error: ExecError) -> Self {
        match error {
            ExecError::Graph(message) => AppError::Usage(message),
            ExecError::Store(error) => AppError::Store(error),
            other => AppError::StoreProblem(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_exit_2_and_store_errors_exit_3() {
        assert_eq!(AppError::Usage("x".into()).exit_code(), 2);
        assert_eq!(AppError::NoGraphFile("/p/cairn.toml".into()).exit_code(), 2);
        assert_eq!(AppError::Request("bad ref".into()).exit_code(), 2);
        assert_eq!(AppError::StoreProblem("x".into()).exit_code(), 3);
        assert_eq!(
            AppError::Store(StoreError::MissingBlob {
                expected: cairn_engine::ContentDigest::of(b"blob")
            })
            .exit_code(),
            3
        );
        assert_eq!(
            AppError::from(ExecError::Graph("cairn.toml:3: jobs.a.code: gone".into())).exit_code(),
            2
        );
        assert_eq!(
            AppError::from(ExecError::Code("jobs.a.code: unreadable".into())).exit_code(),
            3
        );
    }

    #[test]
    fn messages_are_those_users_saw() {
        assert_eq!(
            AppError::NoGraphFile("/p/cairn.toml".into()).to_string(),
            "/p/cairn.toml: no graph file here (run cairn where cairn.toml is, or pass --graph FILE)"
        );
        assert_eq!(
            AppError::from(ExecError::Graph("cairn.toml:3: jobs.a.code: gone".into())).to_string(),
            "cairn.toml:3: jobs.a.code: gone"
        );
    }
}
