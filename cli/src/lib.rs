//! cairn-cli: the `cairn` command line (docs/cli.md; layout in docs/architecture.md).
//!
//! Every command is parse, call cairn-app, render: arguments are parsed by
//! clap and turned into a validated [`cairn_app::Workspace`] (graph file,
//! data root, store location) before any I/O on the store; the use case
//! returns typed results (and tells a `BuildObserver` of progress), which
//! the modules here render as text, JSON (the `cairn_app::dto` structs),
//! Mermaid, DOT or a shell script; an `AppError` becomes a [`Failure`].
//! stdout carries only data (JSON lines with `--json`); everything for humans
//! goes to stderr. Exit codes: 0 ok, 1 a job failed, 2 usage/graph/config
//! error, 3 store locked or corrupt, 130 interrupted.

mod audit;
mod backfill;
mod build;
mod defs;
mod escape;
mod explain;
mod inspect;
mod memory;
mod plan;
mod remote;
mod report;
mod serve;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

/// The ways a command ends other than success.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
    pub fn store(message: impl Into<String>) -> Self {
        Failure {
            code: 3,
            message: message.into(),
        }
    }
}

impl From<cairn_engine::exec::ExecError> for Failure {
    /// A bad `code` entry is the graph file's error (exit 2); the rest are
    /// the store's or the machine's (exit 3).
    fn from(error: cairn_engine::exec::ExecError) -> Self {
        match error {
            cairn_engine::exec::ExecError::Graph(message) => Failure::usage(message),
            other => Failure::store(other.to_string()),
        }
    }
}

impl From<cairn_app::AppError> for Failure {
    fn from(error: cairn_app::AppError) -> Self {
        Failure {
            code: error.exit_code(),
            message: error.to_string(),
        }
    }
}

impl Cli {
    /// Where the workspace is, as `--graph` and `--store` say.
    fn workspace_options(&self) -> cairn_app::WorkspaceOptions {
        cairn_app::WorkspaceOptions {
            graph_file: self.graph.clone(),
            store_dir: self.store.clone(),
        }
    }
}

/// The use cases' notes, on stderr.
struct StderrNotes;

impl cairn_app::Notes for StderrNotes {
    fn note(&self, message: &str) {
        report::note(message);
    }
    fn warning(&self, message: &str) {
        report::warning_line(message);
    }
}

/// Opens the workspace `--graph` and `--store` name, its notes going to
/// stderr.
pub(crate) fn open_workspace(cli: &Cli) -> Result<cairn_app::Workspace, Failure> {
    Ok(cairn_app::Workspace::open(
        &cli.workspace_options(),
        std::sync::Arc::new(StderrNotes),
    )?)
}

impl From<cairn_engine::ports::StoreError> for Failure {
    fn from(error: cairn_engine::ports::StoreError) -> Self {
        Failure::store(error.to_string())
    }
}

/// `0.1.0 (commit 7f5dc18a2b3c, store format 3)`: what `cairn --version`
/// prints after the name. The commit is recorded at build time (build.rs:
/// `CAIRN_COMMIT`, else `git rev-parse`, else `unknown`).
static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{} (commit {}, store format {})",
        env!("CARGO_PKG_VERSION"),
        env!("CAIRN_COMMIT"),
        cairn_store::FORMAT_VERSION
    )
});

#[derive(Parser, Debug)]
#[command(
    name = "cairn",
    version = VERSION.as_str(),
    about = "An event-sourced, content-addressed build engine for data partitions"
)]
pub struct Cli {
    /// The graph file (default: ./cairn.toml).
    #[arg(long, global = true, value_name = "FILE")]
    graph: Option<PathBuf>,
    /// The store directory (default: .cairn beside the graph file).
    #[arg(long, global = true, value_name = "DIR")]
    store: Option<PathBuf>,
    /// Talk to the `cairn serve` at URL (http://HOST:PORT) instead of the
    /// local store: build, backfill, status, why, history, logs, log.
    #[arg(long, global = true, value_name = "URL")]
    remote: Option<String>,
    /// The file holding the server's bearer token, for --remote (default:
    /// $CAIRN_TOKEN, else the store's serve.token).
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Log diagnostics to stderr (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build partitions (default: every partition the graph declares).
    Build(BuildArgs),
    /// Show the actions that would build REFs, with the reason for each.
    Plan {
        /// Refs or patterns to plan (`daily/date=2024-01-05`).
        #[arg(required = true, value_name = "REF")]
        refs: Vec<String>,
        /// How to print the plan: a text list, JSON, or a Mermaid or DOT
        /// graph.
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
    },
    /// Show whether partitions are built, running, stale (and why), missing
    /// or failed.
    Status {
        /// Refs or patterns (default: every partition the graph declares).
        #[arg(value_name = "REF|PATTERN")]
        refs: Vec<String>,
        /// One JSON object per partition on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Explain whether REF is up to date, and why (or why not).
    Why {
        /// The partition to explain.
        #[arg(value_name = "REF")]
        partition: String,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Mark partitions bad so that the next build rebuilds them.
    Invalidate {
        /// Refs or patterns of the partitions to mark.
        #[arg(required = true, value_name = "REF|PATTERN")]
        refs: Vec<String>,
        /// Why (recorded in the log and shown by `why` and `status`).
        #[arg(long, required = true)]
        reason: String,
        /// List what would be invalidated without recording anything.
        #[arg(long)]
        dry_run: bool,
        /// Fail at once if another cairn holds the store, instead of waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Remove the built partitions the graph no longer declares (listed as
    /// `orphaned` by `status`), recording why.
    Prune {
        /// Why (recorded in the log with each partition).
        #[arg(long, required = true)]
        reason: String,
        /// List what would be removed without removing or recording anything.
        #[arg(long)]
        dry_run: bool,
        /// Fail at once if another cairn holds the store, instead of waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Print the event log.
    Log {
        /// One JSON object per event on stdout (schema in docs/cli.md).
        #[arg(long)]
        json: bool,
        /// Only events from this sequence number on, or recorded at or after
        /// this date (YYYY-MM-DD, midnight UTC) or RFC 3339 time
        /// (2024-06-01T10:00:00Z or 2024-06-01T10:00:00+02:00).
        #[arg(long, value_name = "SEQ|DATE")]
        since: Option<String>,
        /// Only events up to this sequence number, or recorded on or before
        /// this date (UTC) or RFC 3339 time (inclusive: a date covers the
        /// whole UTC day, a time the whole second).
        #[arg(long, value_name = "SEQ|DATE")]
        until: Option<String>,
        /// Only events of this build.
        #[arg(long, value_name = "ID")]
        build: Option<u64>,
        /// Only events about partitions matching this ref or pattern.
        #[arg(long, value_name = "REF|PATTERN")]
        partition: Option<String>,
        /// Only events about this job.
        #[arg(long, value_name = "NAME")]
        job: Option<String>,
        /// Only events of this kind (repeatable), e.g. ActionStarted.
        #[arg(long, value_name = "KIND")]
        kind: Vec<String>,
        /// Only events about partitions whose dimension NAME has VALUE
        /// (`--dimension station=S07`).
        #[arg(long, value_name = "NAME=VALUE")]
        dimension: Option<String>,
    },
    /// Every materialization of a partition, newest first, with its inputs,
    /// code, versions, and whether it ran or was reused; failures too.
    History {
        /// The partition whose history to show.
        #[arg(value_name = "REF")]
        partition: String,
        /// One JSON object per entry on stdout.
        #[arg(long)]
        json: bool,
    },
    /// The captured stdout and stderr of the job run that produced REF (or
    /// that last failed to), each under a `--- stdout|stderr ---` label.
    Logs {
        /// The partition whose job output to print.
        #[arg(value_name = "REF")]
        partition: String,
        /// The run of this build instead.
        #[arg(long, value_name = "ID")]
        build: Option<u64>,
        /// Only the captured stdout, exactly as captured (no label).
        #[arg(long, conflicts_with = "stderr")]
        stdout: bool,
        /// Only the captured stderr, exactly as captured (no label).
        #[arg(long)]
        stderr: bool,
    },
    /// Rebuild the catalog's projections from the event log.
    Replay {
        /// Only compare the projections with a replay of the log; exit 3
        /// and list the differences when they are not equal.
        #[arg(long)]
        check: bool,
        /// Fail at once if another cairn holds the store, instead of waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Build every partition a backfill config names (validated first).
    Backfill(BackfillArgs),
    /// The step a Slurm job runs on its node (docs/slurm.md); cairn submits
    /// it, people do not.
    Worker {
        #[command(subcommand)]
        command: WorkerCommand,
    },
    /// Definitions from external sources: refresh the records, show them,
    /// diff them.
    Defs {
        #[command(subcommand)]
        command: DefsCommand,
    },
    /// Check, collect or count the store.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Run the build service: an HTTP API (docs/api.md) that holds the
    /// store and builds what it is asked for.
    Serve(ServeArgs),
    /// Print a shell completion script (e.g. `cairn completions bash >
    /// ~/.local/share/bash-completion/completions/cairn`).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff; e.g. `cairn man | man -l -`), or a
    /// command's (`cairn man build`).
    Man {
        /// The command whose page to print (default: cairn's own).
        #[arg(value_name = "COMMAND")]
        command: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum StoreCommand {
    /// Re-hash every blob and check every blob the current partitions need;
    /// exit 3 when anything is corrupt or missing.
    Verify {
        /// Delete damaged blobs and invalidate the partitions that need
        /// them, so that the next build rebuilds them.
        #[arg(long)]
        repair: bool,
        /// One JSON object per problem, then a summary.
        #[arg(long)]
        json: bool,
        /// Fail at once if another cairn holds the store, instead of waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete blobs that no kept manifest refers to (kept: every current
    /// partition's, plus the window given).
    Gc {
        /// Also keep the manifests and failure logs of the last N builds.
        #[arg(long, value_name = "N", conflicts_with = "older_than")]
        keep_builds: Option<u64>,
        /// Also keep what is younger than this (e.g. 30d, 12h, 45m, 2w).
        #[arg(long, value_name = "DURATION")]
        older_than: Option<String>,
        /// Say what would be removed, and remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Fail at once if another cairn holds the store, instead of waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Counts and sizes: events, builds, actions, partitions, blobs.
    Stats {
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum DefsCommand {
    /// Run the source commands (all, or NAME), validate their output and
    /// record it; a failing source leaves its previous record in force.
    Refresh {
        /// The source to refresh (default: every source).
        #[arg(value_name = "NAME")]
        name: Option<String>,
        /// One JSON object per source on stdout.
        #[arg(long)]
        json: bool,
        /// Fail at once if another cairn holds the store, instead of waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// The values of the latest record (of NAME, or a line per source).
    Show {
        /// The source to show (default: a line per source).
        #[arg(value_name = "NAME")]
        name: Option<String>,
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Values added and removed between the previous record (or the record
    /// at SEQ) and the latest one.
    Diff {
        /// The source whose records to compare.
        #[arg(value_name = "NAME")]
        name: String,
        /// Compare with the record of this event (see `cairn log --kind
        /// DefsRefreshed`).
        #[arg(long, value_name = "SEQ")]
        from: Option<u64>,
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
struct BackfillArgs {
    /// Where the jobs run (see `cairn build --executor`).
    #[arg(long, value_enum, value_name = "local|slurm")]
    executor: Option<ExecutorArg>,
    /// The backfill config (TOML: target, reason, dimensions).
    #[arg(value_name = "CONFIG")]
    config: PathBuf,
    /// List the partitions and what would run, without running anything.
    #[arg(long)]
    dry_run: bool,
    /// Jobs to run at once (default: the number of cores).
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    jobs: Option<usize>,
    /// JSON lines on stdout; the last line is the summary.
    #[arg(long)]
    json: bool,
    /// Keep building independent partitions after a failure (the default
    /// for backfills; see --fail-fast).
    #[arg(long, conflicts_with = "fail_fast")]
    keep_going: bool,
    /// Stop starting new actions after the first failure.
    #[arg(long)]
    fail_fast: bool,
    /// Rerun only the partitions whose last attempt failed (and those
    /// downstream of them).
    #[arg(long)]
    retry_failed: bool,
    /// Fail at once if another cairn holds the store, instead of waiting.
    #[arg(long)]
    no_wait: bool,
    /// Extra attempts for a failing job (overrides each job's `retries`).
    #[arg(long, value_name = "N")]
    retries: Option<u32>,
    /// With --remote: print the operation id and return at once.
    #[arg(long)]
    detach: bool,
    /// With --remote: the submit's Idempotency-Key (default: a fresh random
    /// one); the same key and config return the same operation.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// The shared remote cache (docs/remote-cache.md).
    #[command(flatten)]
    remote_cache: RemoteCacheArgs,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// The address to listen on (loopback by default; port 0 picks a free
    /// port, printed on stdout).
    #[arg(long, value_name = "ADDR:PORT", default_value = cairn_server::DEFAULT_LISTEN)]
    listen: std::net::SocketAddr,
    /// Let reads (GET requests) in without the token.
    #[arg(long)]
    public_read: bool,
    /// How long running operations may go on after SIGTERM or SIGINT
    /// before they are cancelled (e.g. 30s, 5m).
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    grace: String,
    /// Jobs to run at once per build (default: the number of cores).
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    jobs: Option<usize>,
    /// Operations (builds, backfills) running at once; the others queue.
    #[arg(long, value_name = "N", default_value_t = 8)]
    operations: usize,
    /// Operations the server keeps: a starting server rebuilds the newest
    /// from the event log, a running one forgets the oldest finished ones
    /// beyond it (older builds stay in the log).
    #[arg(long, value_name = "N", default_value_t = cairn_server::KEPT_OPERATIONS)]
    keep_operations: usize,
}

/// `cairn worker …`.
#[derive(Subcommand, Debug)]
enum WorkerCommand {
    /// Run the attempts the spec files describe, one after another, each
    /// writing its outcome beside its spec.
    Run {
        /// Spec files written by the coordinator (`worker.json` in each
        /// attempt's staging directory).
        #[arg(required = true, value_name = "SPEC")]
        specs: Vec<PathBuf>,
    },
    /// Claim and run the attempts queued in a Slurm runner's directory
    /// until none comes for 3 s or N have run.
    Pull {
        /// The runner's directory (with `queue/` and `claimed/`).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// The most attempts to run before exiting.
        #[arg(long, value_name = "N", default_value_t = cairn_engine::executor::DEFAULT_BATCH)]
        most: usize,
    },
    /// Run attempts without a shared filesystem (`[executor] data =
    /// "cache"`), one after another: each one's spec and files come from
    /// the remote cache, it runs in a scratch directory under TMPDIR, its
    /// outputs, logs and outcome go back to the cache.
    Cached {
        /// The remote cache's URL (credentials from this environment).
        #[arg(value_name = "URL")]
        url: String,
        /// The blake3 of each attempt's spec, a blob in the cache.
        #[arg(value_name = "SPEC_DIGEST", required = true)]
        specs: Vec<String>,
    },
}

/// `--executor`: where the jobs run (overrides `[executor] kind`).
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum ExecutorArg {
    /// Processes on this machine.
    Local,
    /// Slurm jobs (the graph file's `[executor]` for partition, account,
    /// qos and resources; docs/slurm.md).
    Slurm,
}

impl ExecutorArg {
    fn kind(self) -> cairn_engine::executor::ExecutorKind {
        match self {
            ExecutorArg::Local => cairn_engine::executor::ExecutorKind::Local,
            ExecutorArg::Slurm => cairn_engine::executor::ExecutorKind::Slurm,
        }
    }
}

/// Opens the workspace of a command that runs jobs, with `--executor`
/// applied over the graph file's `[executor] kind`.
pub(crate) fn open_running_workspace(
    cli: &Cli,
    executor: Option<ExecutorArg>,
) -> Result<cairn_app::Workspace, Failure> {
    let mut workspace = open_workspace(cli)?;
    if let Some(executor) = executor {
        workspace.graph.executor.kind = executor.kind();
    }
    Ok(workspace)
}

/// `--remote-cache`, `--remote-cache-mode`, `--no-upload-wait` (build and
/// backfill).
#[derive(clap::Args, Debug)]
struct RemoteCacheArgs {
    /// The shared remote cache to use instead of the graph file's `[cache]`
    /// url: s3://BUCKET/PREFIX, http://HOST:PORT/PREFIX or file:///DIR.
    /// Credentials come from the environment, never from here.
    #[arg(long, value_name = "URL")]
    remote_cache: Option<String>,
    /// read: look up only; write: look up and upload what runs; off: no
    /// remote cache (default: the graph file's `[cache] mode`).
    #[arg(long, value_enum, value_name = "MODE")]
    remote_cache_mode: Option<RemoteCacheMode>,
    /// Do not wait at the end of the build for uploads to the remote cache
    /// (those not started are dropped).
    #[arg(long)]
    no_upload_wait: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum RemoteCacheMode {
    Read,
    Write,
    Off,
}

impl RemoteCacheArgs {
    fn choice(&self) -> cairn_app::remote::RemoteChoice {
        use cairn_app::remote::RemoteMode;
        cairn_app::remote::RemoteChoice {
            url: self.remote_cache.clone(),
            mode: self.remote_cache_mode.map(|mode| match mode {
                RemoteCacheMode::Read => RemoteMode::Read,
                RemoteCacheMode::Write => RemoteMode::Write,
                RemoteCacheMode::Off => RemoteMode::Off,
            }),
            no_upload_wait: self.no_upload_wait,
        }
    }

    /// Whether any was given (refused with --remote: the server's graph
    /// file decides).
    fn given(&self) -> bool {
        self.remote_cache.is_some() || self.remote_cache_mode.is_some() || self.no_upload_wait
    }
}

#[derive(clap::Args, Debug)]
struct BuildArgs {
    /// Where the jobs run: on this machine, or as Slurm jobs (default:
    /// the graph file's `[executor] kind`, else local).
    #[arg(long, value_enum, value_name = "local|slurm")]
    executor: Option<ExecutorArg>,
    /// Refs or patterns (`clean/date=2024-01-01/station={station}`).
    #[arg(value_name = "REF")]
    refs: Vec<String>,
    /// Jobs to run at once (default: the number of cores).
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    jobs: Option<usize>,
    /// Keep building independent actions after a failure.
    #[arg(long)]
    keep_going: bool,
    /// Print what would run and why (stdout), without running anything.
    #[arg(long)]
    dry_run: bool,
    /// JSON lines on stdout; the last line is the summary.
    #[arg(long)]
    json: bool,
    /// Fail at once if another cairn holds the store, instead of waiting.
    #[arg(long)]
    no_wait: bool,
    /// Extra attempts for a failing job (overrides each job's `retries`);
    /// every attempt resumes from the job's last checkpoint.
    #[arg(long, value_name = "N")]
    retries: Option<u32>,
    /// With --remote: print the operation id and return at once.
    #[arg(long)]
    detach: bool,
    /// With --remote: the submit's Idempotency-Key (default: a fresh random
    /// one); the same key and refs return the same operation.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// The shared remote cache (docs/remote-cache.md).
    #[command(flatten)]
    remote_cache: RemoteCacheArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum PlanFormat {
    /// One line per action: verdict, job, outputs, reason.
    Text,
    /// One JSON object: requested refs, actions, configure calls.
    Json,
    /// A Mermaid flowchart of the partition graph.
    Mermaid,
    /// A Graphviz DOT graph of the partition graph.
    Dot,
    /// A standalone POSIX shell script that runs the planned actions
    /// without cairn (`sh SCRIPT [-j N] [-C DIR]`).
    Sh,
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    memory::one_arena_per_core();
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    report_catalog_panics_as_corruption(&cli);
    let result = match &cli.remote {
        Some(url) => remote::run(&cli, url),
        None => run_local(&cli),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            report::error_line(&failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// The flags that only mean something with `--remote`, refused without.
fn refuse_remote_flags(cli: &Cli) -> Result<(), Failure> {
    let (detach, key) = match &cli.command {
        Command::Build(args) => (args.detach, args.idempotency_key.is_some()),
        Command::Backfill(args) => (args.detach, args.idempotency_key.is_some()),
        _ => (false, false),
    };
    let flag = if cli.token_file.is_some() {
        "--token-file"
    } else if detach {
        "--detach"
    } else if key {
        "--idempotency-key"
    } else {
        return Ok(());
    };
    Err(Failure::usage(format!(
        "{flag} works only with --remote URL (a `cairn serve` to talk to)"
    )))
}

/// Runs the command on the local store.
fn run_local(cli: &Cli) -> Result<u8, Failure> {
    refuse_remote_flags(cli)?;
    match &cli.command {
        Command::Build(args) => build::run(cli, args),
        Command::Plan { refs, format } => plan::plan(cli, refs, *format),
        Command::Status { refs, json } => inspect::status(cli, refs, *json),
        Command::Why { partition, json } => explain::why(cli, partition, *json),
        Command::Invalidate {
            refs,
            reason,
            dry_run,
            no_wait,
        } => explain::invalidate(cli, refs, reason, *dry_run, *no_wait),
        Command::Prune {
            reason,
            dry_run,
            no_wait,
        } => explain::prune(cli, reason, *dry_run, *no_wait),
        Command::Log {
            json,
            since,
            until,
            build,
            partition,
            job,
            kind,
            dimension,
        } => inspect::log(
            cli,
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
        Command::History { partition, json } => audit::history(cli, partition, *json),
        Command::Logs {
            partition,
            build,
            stdout,
            stderr,
        } => {
            let streams = match (stdout, stderr) {
                (true, _) => audit::Streams::Stdout,
                (_, true) => audit::Streams::Stderr,
                _ => audit::Streams::Both,
            };
            audit::logs(cli, partition, *build, streams)
        }
        Command::Replay { check, no_wait } => audit::replay(cli, *check, *no_wait),
        Command::Backfill(args) => backfill::run(cli, args),
        Command::Worker {
            command: WorkerCommand::Run { specs },
        } => worker::run(specs),
        Command::Worker {
            command: WorkerCommand::Pull { dir, most },
        } => worker::pull(dir, *most),
        Command::Worker {
            command: WorkerCommand::Cached { url, specs },
        } => worker::cached(url, specs),
        Command::Defs { command } => match command {
            DefsCommand::Refresh {
                name,
                json,
                no_wait,
            } => defs::refresh(cli, name.as_deref(), *no_wait, *json),
            DefsCommand::Show { name, json } => defs::show(cli, name.as_deref(), *json),
            DefsCommand::Diff { name, from, json } => defs::diff_command(cli, name, *from, *json),
        },
        Command::Store { command } => match command {
            StoreCommand::Verify {
                repair,
                json,
                no_wait,
            } => audit::verify(cli, *repair, *json, *no_wait),
            StoreCommand::Gc {
                keep_builds,
                older_than,
                dry_run,
                no_wait,
            } => audit::gc(cli, *keep_builds, older_than.as_deref(), *dry_run, *no_wait),
            StoreCommand::Stats { json } => audit::stats(cli, *json),
        },
        Command::Serve(args) => serve::run(cli, args),
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "cairn",
                &mut std::io::stdout().lock(),
            );
            Ok(0)
        }
        Command::Man { command } => man(command),
    }
}

/// `cairn man [COMMAND...]`: the manual page of cairn, or of one command
/// (`cairn man build` is cairn-build(1)), in roff on stdout, rendered by
/// clap_mangen from clap's own description of the commands.
fn man(path: &[String]) -> Result<u8, Failure> {
    let mut command = Cli::command();
    command.build();
    let mut name = "cairn".to_owned();
    for word in path {
        let Some(sub) = command.find_subcommand(word).cloned() else {
            let known: Vec<&str> = command
                .get_subcommands()
                .map(clap::Command::get_name)
                .collect();
            return Err(Failure::usage(format!(
                "`{name}` has no command {word:?} (commands: {})",
                known.join(", ")
            )));
        };
        name = format!("{name}-{}", sub.get_name());
        command = sub;
    }
    // clap names are &'static without its `string` feature; one name, once.
    let page = clap_mangen::Man::new(command.name(name.leak() as &str));
    match page.render(&mut std::io::stdout().lock()) {
        Ok(()) => Ok(0),
        // A closed pipe (`cairn man | head`) is not an error.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(error) => Err(Failure::usage(format!("cannot write the manual: {error}"))),
    }
}

/// redb trusts the pages of a file opened read-only (it verifies checksums
/// only when a writer opens it), so a reader (`status`, `log`, ...) of a
/// catalog altered behind its back (bit rot, a torn copy) can hit a panic
/// inside redb. That is store corruption, not a crash of cairn: report it as
/// such (exit 3), naming the file and the check that diagnoses it.
fn report_catalog_panics_as_corruption(cli: &Cli) {
    let catalog = cli.workspace_options().catalog_file();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let Some((location, at)) = info.location().and_then(|location| {
            let at = location.file().find("redb-")?;
            Some((location, &location.file()[at..]))
        }) else {
            default_hook(info);
            return;
        };
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        report::error_line(&format!(
            "catalog {}: the file is corrupt: reading it failed ({payload} at {at}:{}); \
             `cairn store verify` checks every page, and builds refuse the file",
            catalog.display(),
            location.line()
        ));
        std::process::exit(3);
    }));
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(report::stderr_colours())
        .without_time()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command and every argument (positional or flag) of every
    /// command, `COMMAND PATH: ARG`, that has no help text.
    fn undocumented(command: &clap::Command, path: &str, out: &mut Vec<String>) {
        if command.get_about().is_none() && path != "cairn" {
            out.push(format!("{path}: the command itself"));
        }
        for arg in command.get_arguments() {
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                out.push(format!("{path}: {}", arg.get_id()));
            }
        }
        for sub in command.get_subcommands() {
            undocumented(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_command_and_argument_has_help() {
        let mut command = Cli::command();
        command.build();
        command.clone().debug_assert();
        let mut missing = Vec::new();
        undocumented(&command, "cairn", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }

    #[test]
    fn the_version_names_the_commit_and_the_store_format() {
        let version = Cli::command().render_version();
        let expected = format!(
            "cairn {} (commit {}, store format {})\n",
            env!("CARGO_PKG_VERSION"),
            env!("CAIRN_COMMIT"),
            cairn_store::FORMAT_VERSION
        );
        assert_eq!(version, expected);
        assert!(!env!("CAIRN_COMMIT").is_empty());
    }
}
