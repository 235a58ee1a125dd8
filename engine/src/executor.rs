//! Where jobs run: the graph file's `[executor]` section and the jobs'
//! `resources` (docs/graph-file.md, docs/slurm.md). Only where a job's
//! process runs depends on them: they enter no action key, so a partition
//! built by one executor is current for the other.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// Which runner starts the jobs' processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExecutorKind {
    /// Processes on this machine ([`crate::local::LocalRunner`]).
    #[default]
    Local,
    /// Slurm jobs running `cairn worker run` ([`crate::slurm::SlurmRunner`]).
    Slurm,
}

impl ExecutorKind {
    /// `local` or `slurm`, as the graph file and `--executor` spell it.
    pub fn parse(text: &str) -> Result<ExecutorKind, String> {
        match text {
            "local" => Ok(ExecutorKind::Local),
            "slurm" => Ok(ExecutorKind::Slurm),
            other => Err(format!(
                "{other:?} is not an executor: use \"local\" or \"slurm\""
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Local => "local",
            ExecutorKind::Slurm => "slurm",
        }
    }
}

/// How a Slurm job's files reach its node (`[executor] data`,
/// docs/slurm.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DataMode {
    /// The project, the data and the store are on a filesystem the nodes
    /// share with the coordinator (the HPC norm).
    #[default]
    Shared,
    /// No shared filesystem: the inputs, the job's code files and its
    /// outputs travel through the graph's remote cache (`[cache] url`).
    Cache,
}

/// What one Slurm job asks for (`sbatch --cpus-per-task`, `--mem`,
/// `--time`); a field left out is Slurm's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpus: Option<u32>,
    /// Slurm's spelling: a number of MiB, or with a K, M, G or T suffix.
    pub mem: Option<String>,
    pub time: Option<Duration>,
}

/// The `[executor]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executor {
    pub kind: ExecutorKind,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// The resources of a job that declares none (and of each batch).
    pub resources: Resources,
    /// The most actions one worker (a Slurm job) runs before it exits
    /// (`batch`, default [`DEFAULT_BATCH`]); 1: a Slurm job per action.
    pub batch: usize,
    /// How the files reach the nodes (`data`, default shared).
    pub data: DataMode,
    /// The cairn binary the nodes run (`worker`), when not this cairn's
    /// own path.
    pub worker: Option<std::path::PathBuf>,
    /// How long a running attempt's worker may go without a heartbeat
    /// before the attempt is lost (`heartbeat_timeout`, default
    /// [`DEFAULT_HEARTBEAT_TIMEOUT`]; docs/slurm.md, "Faults").
    pub heartbeat_timeout: Duration,
}

impl Default for Executor {
    /// What a graph file without `[executor]` says: local.
    fn default() -> Self {
        Executor {
            kind: ExecutorKind::Local,
            partition: None,
            account: None,
            qos: None,
            resources: Resources::default(),
            batch: DEFAULT_BATCH,
            data: DataMode::Shared,
            worker: None,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
        }
    }
}

/// How many actions one worker runs at most, unless `[executor] batch`
/// says otherwise. Each worker that ends costs its node a Slurm job's
/// end and the next one's start (0.3 to 1.4 s on the test cluster) while
/// its CPU idles: at 256, a 30×30 build (1,830 actions, 2 CPUs) had four
/// such gaps per node and took 1.6× as long as at 1024 (docs/slurm.md,
/// "Batching").
pub const DEFAULT_BATCH: usize = 1024;

/// How long a running attempt's worker may go without a heartbeat, unless
/// `[executor] heartbeat_timeout` says otherwise: a worker beats every
/// [`HEARTBEAT_EVERY`], so 30 s is 30 beats missed (a loaded node or a
/// slow shared filesystem is no lost one).
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a worker beats (rewrites its attempt's heartbeat).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// The shortest `heartbeat_timeout`: three beats and the coordinator's
/// own once-a-second look.
pub const MIN_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(4);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExecutor {
    kind: Option<Spanned<String>>,
    partition: Option<Spanned<String>>,
    account: Option<Spanned<String>>,
    qos: Option<Spanned<String>>,
    resources: Option<Spanned<RawResources>>,
    batch: Option<Spanned<i64>>,
    data: Option<Spanned<String>>,
    worker: Option<Spanned<String>>,
    heartbeat_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResources {
    cpus: Option<Spanned<i64>>,
    mem: Option<Spanned<String>>,
    time: Option<Spanned<String>>,
}

/// A problem of one field: its span in the graph file, its name below the
/// section (`kind`, `resources.mem`), the message.
pub(crate) type FieldError = (std::ops::Range<usize>, String, String);

/// A Slurm name (partition, account, qos): no blank, comma or quote, which
/// `sbatch` would read otherwise.
fn slurm_name(field: &str, value: &Spanned<String>) -> Result<String, FieldError> {
    let text = value.get_ref();
    if text.is_empty()
        || text
            .chars()
            .any(|c| c.is_whitespace() || c == ',' || c == '"' || c == '\'' || c.is_control())
    {
        return Err((
            value.span(),
            field.to_owned(),
            format!("{text:?} is not a Slurm name (no blanks, commas or quotes)"),
        ));
    }
    Ok(text.clone())
}

/// Parses a duration as the graph file does (`graph::parse_duration`,
/// passed in: the graph module uses this one).
pub(crate) type ParseDuration = fn(&str) -> Result<Duration, String>;

pub(crate) fn parse_executor(
    raw: &RawExecutor,
    parse_duration: ParseDuration,
) -> Result<Executor, FieldError> {
    let kind = match &raw.kind {
        Some(kind) => ExecutorKind::parse(kind.get_ref())
            .map_err(|message| (kind.span(), "kind".to_owned(), message))?,
        None => ExecutorKind::Local,
    };
    let name = |field: &str, value: &Option<Spanned<String>>| {
        value
            .as_ref()
            .map(|value| slurm_name(field, value))
            .transpose()
    };
    let batch = match &raw.batch {
        Some(batch) => {
            let value = *batch.get_ref();
            if !(1..=10_000).contains(&value) {
                return Err((
                    batch.span(),
                    "batch".to_owned(),
                    format!("{value} is not between 1 and 10000 actions per Slurm job"),
                ));
            }
            value as usize
        }
        None => DEFAULT_BATCH,
    };
    let data = match &raw.data {
        Some(data) => match data.get_ref().as_str() {
            "shared" => DataMode::Shared,
            "cache" => DataMode::Cache,
            other => {
                return Err((
                    data.span(),
                    "data".to_owned(),
                    format!("{other:?} is not a data mode: use \"shared\" or \"cache\""),
                ));
            }
        },
        None => DataMode::Shared,
    };
    let worker = match &raw.worker {
        Some(worker) => {
            let path = std::path::PathBuf::from(worker.get_ref());
            if !path.is_absolute() {
                return Err((
                    worker.span(),
                    "worker".to_owned(),
                    format!(
                        "{:?} is not an absolute path to a cairn binary",
                        worker.get_ref()
                    ),
                ));
            }
            Some(path)
        }
        None => None,
    };
    let heartbeat_timeout = match &raw.heartbeat_timeout {
        Some(text) => {
            let value = parse_duration(text.get_ref())
                .map_err(|message| (text.span(), "heartbeat_timeout".to_owned(), message))?;
            if value < MIN_HEARTBEAT_TIMEOUT {
                return Err((
                    text.span(),
                    "heartbeat_timeout".to_owned(),
                    format!(
                        "{:?} is too short: at least {}s (a worker beats every {}s)",
                        text.get_ref(),
                        MIN_HEARTBEAT_TIMEOUT.as_secs(),
                        HEARTBEAT_EVERY.as_secs()
                    ),
                ));
            }
            value
        }
        None => DEFAULT_HEARTBEAT_TIMEOUT,
    };
    Ok(Executor {
        data,
        worker,
        heartbeat_timeout,
        kind,
        partition: name("partition", &raw.partition)?,
        account: name("account", &raw.account)?,
        qos: name("qos", &raw.qos)?,
        resources: match &raw.resources {
            Some(resources) => parse_resources(resources.get_ref(), parse_duration)
                .map_err(|(span, field, message)| (span, format!("resources.{field}"), message))?,
            None => Resources::default(),
        },
        batch,
    })
}

pub(crate) fn parse_resources(
    raw: &RawResources,
    parse_duration: ParseDuration,
) -> Result<Resources, FieldError> {
    let cpus = match &raw.cpus {
        Some(cpus) => {
            let value = *cpus.get_ref();
            if !(1..=100_000).contains(&value) {
                return Err((
                    cpus.span(),
                    "cpus".to_owned(),
                    format!("{value} is not a number of CPUs (1 or more)"),
                ));
            }
            Some(value as u32)
        }
        None => None,
    };
    let mem = match &raw.mem {
        Some(mem) => {
            let text = mem.get_ref();
            let digits = text.trim_end_matches(['K', 'M', 'G', 'T']);
            let suffixes = text.len() - digits.len();
            if digits.is_empty()
                || suffixes > 1
                || !digits.bytes().all(|b| b.is_ascii_digit())
                || digits.bytes().all(|b| b == b'0')
            {
                return Err((
                    mem.span(),
                    "mem".to_owned(),
                    format!(
                        "{text:?} is not an amount of memory: a number of MiB, or with a K, M, G or T suffix (\"512M\", \"4G\")"
                    ),
                ));
            }
            Some(text.clone())
        }
        None => None,
    };
    let time = match &raw.time {
        Some(time) => {
            let value = parse_duration(time.get_ref())
                .map_err(|message| (time.span(), "time".to_owned(), message))?;
            if value.is_zero() {
                return Err((
                    time.span(),
                    "time".to_owned(),
                    "must be longer than 0 (leave it out for the partition's limit)".to_owned(),
                ));
            }
            Some(value)
        }
        None => None,
    };
    Ok(Resources { cpus, mem, time })
}

/// `--time` in whole minutes (rounded up), as sbatch reads it.
pub fn slurm_minutes(time: Duration) -> u64 {
    time.as_secs().div_ceil(60).max(1)
}
