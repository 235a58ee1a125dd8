//! `cairn --remote URL ...`: the command line as a client of `cairn serve`
//! (docs/cli.md, "`--remote`"; the HTTP API is docs/api.md).
//!
//! The commands that work remotely (`build`, `backfill`, `status`, `why`,
//! `history`, `logs`, `log`) ask the server instead of opening the store,
//! read its JSON into the same `cairn_app::dto` types the local commands
//! print, and render them with the same code: the output, human and
//! `--json`, and the exit codes are those of the local command. Plain HTTP
//! through ureq (synchronous, as the rest of the command line).

mod events;
mod http;
mod log;
mod operation;
mod read;
mod sse;

use std::path::{Path, PathBuf};

use crate::{Cli, Command, Failure};

pub use http::Remote;

/// The commands `--remote` serves, for the message about the others.
const REMOTE_COMMANDS: &str = "build, backfill, status, why, history, logs, log";

/// Runs `cli`'s command against the server at `url`.
pub fn run(cli: &Cli, url: &str) -> Result<u8, Failure> {
    let name = match &cli.command {
        Command::Build(_) => "build",
        Command::Backfill(_) => "backfill",
        Command::Status { .. } => "status",
        Command::Why { .. } => "why",
        Command::History { .. } => "history",
        Command::Logs { .. } => "logs",
        Command::Log { .. } => "log",
        Command::Plan { .. } => "plan",
        Command::Invalidate { .. } => "invalidate",
        Command::Prune { .. } => "prune",
        Command::Replay { .. } => "replay",
        Command::Defs { .. } => "defs",
        Command::Store { .. } => "store",
        Command::Completions { .. } => "completions",
        Command::Man { .. } => "man",
        Command::Serve(_) => "serve",
        Command::Worker { .. } => "worker",
    };
    let executor = match &cli.command {
        Command::Build(args) => args.executor.is_some(),
        Command::Backfill(args) => args.executor.is_some(),
        _ => false,
    };
    if executor {
        return Err(Failure::usage(
            "--executor does not work with --remote (the server's graph file says where its jobs run)"
                .to_owned(),
        ));
    }
    if !REMOTE_COMMANDS.split(", ").any(|command| command == name) {
        return Err(Failure::usage(format!(
            "`cairn {name}` does not work with --remote (it works with: {REMOTE_COMMANDS})"
        )));
    }
    let token = token(
        cli.token_file.as_deref(),
        std::env::var("CAIRN_TOKEN").ok(),
        &default_token_file(cli),
    )?;
    let remote = Remote::new(url, token)?;
    match &cli.command {
        Command::Build(args) => operation::build(&remote, args),
        Command::Backfill(args) => operation::backfill(&remote, args),
        Command::Status { refs, json } => read::status(&remote, refs, *json),
        Command::Why { partition, json } => read::why(&remote, partition, *json),
        Command::History { partition, json } => read::history(&remote, partition, *json),
        Command::Logs {
            partition,
            build,
            stdout,
            stderr,
        } => {
            let streams = match (stdout, stderr) {
                (true, _) => crate::audit::Streams::Stdout,
                (_, true) => crate::audit::Streams::Stderr,
                _ => crate::audit::Streams::Both,
            };
            read::logs(&remote, partition, *build, streams)
        }
        Command::Log {
            json,
            since,
            until,
            build,
            partition,
            job,
            kind,
            dimension,
        } => log::log(
            &remote,
            &cairn_app::events::EventQuery {
                since: since.clone(),
                until: until.clone(),
                build: *build,
                partition: partition.clone(),
                job: job.clone(),
                kinds: kind.clone(),
                dimension: dimension.clone(),
            },
            *json,
        ),
        _ => unreachable!("checked above"),
    }
}

/// `<store>/serve.token`: where `cairn serve` writes its token, found as
/// `--graph` and `--store` say (useful when the server is local).
fn default_token_file(cli: &Cli) -> PathBuf {
    let catalog = cli.workspace_options().catalog_file();
    catalog
        .parent()
        .map_or_else(|| PathBuf::from(".cairn"), Path::to_path_buf)
        .join("serve.token")
}

/// The bearer token: the file `--token-file` names (it must be readable),
/// else `environment` (`$CAIRN_TOKEN`), else `default` if it exists;
/// `None` when there is none (a server started with `--public-read`
/// answers reads without one).
fn token(
    token_file: Option<&Path>,
    environment: Option<String>,
    default: &Path,
) -> Result<Option<String>, Failure> {
    if let Some(file) = token_file {
        let text = std::fs::read_to_string(file).map_err(|error| {
            Failure::usage(format!(
                "--token-file {}: cannot read it: {error}",
                file.display()
            ))
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(Failure::usage(format!(
                "--token-file {}: the file is empty",
                file.display()
            )));
        }
        return Ok(Some(token.to_owned()));
    }
    if let Some(token) = environment {
        let token = token.trim();
        if !token.is_empty() {
            return Ok(Some(token.to_owned()));
        }
    }
    match std::fs::read_to_string(default) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_owned())),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_the_file_then_the_environment_then_the_store() {
        let dir = std::env::temp_dir().join(format!("cairn-token-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let given = dir.join("given.token");
        let stored = dir.join("serve.token");
        let missing = dir.join("missing.token");
        std::fs::write(&given, "aa11\n").unwrap();
        std::fs::write(&stored, "bb22\n").unwrap();
        let env = || Some("cc33".to_owned());

        assert_eq!(token(None, None, &missing).unwrap(), None);
        assert_eq!(token(None, None, &stored).unwrap().as_deref(), Some("bb22"));
        assert_eq!(
            token(None, Some(" ".into()), &stored).unwrap().as_deref(),
            Some("bb22")
        );
        assert_eq!(
            token(None, env(), &stored).unwrap().as_deref(),
            Some("cc33")
        );
        assert_eq!(
            token(Some(&given), env(), &stored).unwrap().as_deref(),
            Some("aa11")
        );
        let failure = token(Some(&missing), env(), &stored).unwrap_err();
        assert_eq!(failure.code, 2);
        assert!(
            failure.message.contains("missing.token"),
            "{}",
            failure.message
        );
        std::fs::write(&given, "\n").unwrap();
        assert!(
            token(Some(&given), env(), &stored)
                .unwrap_err()
                .message
                .contains("empty")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
