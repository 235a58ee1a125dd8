//! The graph file (`cairn.toml`): datasets, jobs, dimensions and the
//! environment policy, parsed and validated into a [`Graph`].
//!
//! Every error names the file, the line and the field
//! (`cairn.toml:14: jobs.clean.outputs: ...`). A [`Graph`] that exists is
//! valid: patterns parse, every produced dataset is declared, no two jobs can
//! claim the same partition, templates only use placeholders they can bind.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::date::Date;
use crate::refs::{
    Bindings, PartitionRef, Pattern, PatternValue, substitute_text, text_placeholders,
};

/// Environment variables passed to jobs by default (docs/job-protocol.md).
pub const DEFAULT_ENV_ALLOW: [&str; 3] = ["PATH", "HOME", "LANG"];

/// A graph-file error: `file:line: field: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct GraphError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub version: Option<semver::Version>,
    pub source: Option<SourceTemplate>,
    /// `on_code_change`, if the dataset sets it (it then wins over its
    /// job's).
    pub on_code_change: Option<OnCodeChange>,
}

/// What a build does when the code of a job changed since it built the
/// partitions of a versioned dataset it keeps (the semver policy keeps
/// them until MAJOR moves): `on_code_change` of the dataset, else of the
/// job, else `warn` (docs/versions-and-invalidation.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnCodeChange {
    /// Keep the partitions and say so (build, status, why).
    #[default]
    Warn,
    /// Run the job again, as for an unversioned dataset.
    Rebuild,
    /// Fail the action until a version bump acknowledges the change.
    Error,
}

impl OnCodeChange {
    pub fn as_str(self) -> &'static str {
        match self {
            OnCodeChange::Warn => "warn",
            OnCodeChange::Rebuild => "rebuild",
            OnCodeChange::Error => "error",
        }
    }
}

/// Where a source dataset's partitions live: `inputs/{date}/{station}.txt`
/// names the partition `inputs/date=D/station=S`.
#[derive(Debug, Clone)]
pub struct SourceTemplate {
    pub template: String,
    pub pattern: Pattern,
    /// `cairn.toml:LINE` of the `source` field, for errors.
    pub at: String,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub outputs: Vec<Pattern>,
    /// Declarative inputs (templated from the output bindings); empty for
    /// executable jobs, whose configure step names them.
    pub inputs: Vec<Pattern>,
    /// How each input placeholder that does not take the output's value
    /// fans in (docs/graph-file.md, "Fan-in"): every input placeholder
    /// that is not an output placeholder, and each one `over` rebinds.
    pub fan: BTreeMap<String, Fan>,
    pub run: Vec<String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// `Some(argv)` for an executable job: `argv REF...` prints job configs.
    pub configure: Option<Vec<String>>,
    /// Files (or globs) whose content is the job's code digest: relative
    /// paths inside the project (no `..`, not absolute), checked at parse.
    pub code: Vec<String>,
    /// `cairn.toml:LINE` of each `code` entry, for errors found when the
    /// files are read (a missing file, a glob matching nothing).
    pub code_at: Vec<String>,
    /// Whether the configure step's answers may be cached
    /// (`configure_cache`, default true; `config::CachingConfigurer`). A
    /// job whose configure reads the outside world opts out.
    pub configure_cache: bool,
    /// Extra attempts after a failure (each resumes from the last checkpoint).
    pub retries: u32,
    /// Wait between attempts.
    pub retry_backoff: std::time::Duration,
    /// `on_code_change` for the job's versioned outputs, if it sets it.
    pub on_code_change: Option<OnCodeChange>,
    /// How long one attempt may run before it is stopped (SIGTERM, then
    /// SIGKILL after the grace) and fails as timed out; `None`: no limit.
    pub timeout: Option<std::time::Duration>,
    /// `resources = { cpus, mem, time }`: what its Slurm job asks for
    /// (such a job gets a Slurm job of its own, docs/slurm.md); `None`:
    /// the `[executor]` defaults, batched. No part of the key.
    pub resources: Option<crate::executor::Resources>,
}

impl Graph {
    /// What a build does when `job`'s code changed under `dataset`'s kept
    /// partitions: the dataset's `on_code_change`, else the job's, else
    /// warn.
    pub fn on_code_change(&self, dataset: &str, job: &str) -> OnCodeChange {
        self.datasets
            .get(dataset)
            .and_then(|d| d.on_code_change)
            .or_else(|| self.jobs.get(job).and_then(|j| j.on_code_change))
            .unwrap_or_default()
    }
}

impl Job {
    /// The bindings of `partition` from the first of the job's output
    /// patterns it matches (those [`Graph::lookup`] gives when the job
    /// produces it); `None` if it is none of the job's partitions.
    pub fn bindings(&self, partition: &PartitionRef) -> Option<Bindings> {
        self.outputs
            .iter()
            .find_map(|pattern| pattern.matches(partition))
    }

    /// Whether the answers of the job's configure step are cached
    /// (docs/internals.md): it has one, lists its `code`, and did not opt out
    /// with `configure_cache = false`.
    pub fn caches_configure(&self) -> bool {
        self.configure.is_some() && self.configure_cache && !self.code.is_empty()
    }
}

/// How a fan-in placeholder of a declarative job's inputs takes its values
/// (`[jobs.NAME.over]`, docs/graph-file.md). Each yields its values in a
/// fixed order, which is the order the job sees its inputs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fan {
    /// Every value of `dimension`, in the dimension's order.
    All { dimension: String },
    /// The values of `dimension` at positions `from..=to` relative to the
    /// position of the output's value of placeholder `of` in it (`[-6, 0]`:
    /// the seven values ending at it), clipped at the dimension's ends.
    Window {
        dimension: String,
        of: String,
        from: i64,
        to: i64,
    },
    /// The values listed under the output's value of placeholder `of`.
    Map {
        of: String,
        values: BTreeMap<String, Vec<String>>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dimension {
    Values(Vec<String>),
    Dates {
        start: Date,
        end: Date,
        step_days: u32,
    },
    /// `from = "SOURCE"`: the values of the source's latest defs record,
    /// which live in [`Graph::sources`] once the caller has read them from
    /// the store ([`Graph::set_source_values`]).
    Source(String),
}

impl Dimension {
    /// How many values a list or a date range has, counted without listing
    /// them (`None` for a [`Dimension::Source`]: see [`Graph::domain_len`]).
    pub fn count(&self) -> Option<usize> {
        match self {
            Dimension::Values(values) => Some(values.len()),
            Dimension::Source(_) => None,
            Dimension::Dates {
                start,
                end,
                step_days,
            } => {
                let days = start.days_until(*end).max(0);
                let count = days / i64::from((*step_days).max(1)) + 1;
                Some(usize::try_from(count).unwrap_or(usize::MAX))
            }
        }
    }

    /// The values of a list or a date range. A [`Dimension::Source`] has
    /// none of its own here: use [`Graph::domain`].
    pub fn values(&self) -> Vec<String> {
        match self {
            Dimension::Values(values) => values.clone(),
            Dimension::Source(_) => Vec::new(),
            Dimension::Dates {
                start,
                end,
                step_days,
            } => {
                let mut out = Vec::new();
                let mut date = Some(*start);
                while let Some(day) = date.filter(|day| day <= end) {
                    out.push(day.to_string());
                    date = day.add_days(i64::from(*step_days));
                }
                out
            }
        }
    }
}

/// A `[sources.NAME]` entry: a command that prints the values of a
/// dimension (docs/defs.md). Builds never run it; `cairn defs refresh` does,
/// and records what it printed.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    /// Run in the graph file's directory with the jobs' clean environment.
    pub command: Vec<String>,
    /// How long `cairn defs refresh` lets it run.
    pub timeout: std::time::Duration,
    /// The values of its latest record, set by the caller from the store
    /// (`None`: not read, or never refreshed).
    pub values: Option<Vec<String>>,
    /// Why the latest record could not be read, if it exists but could not.
    pub unreadable: Option<String>,
}

/// Which variables of cairn's environment reach jobs.
#[derive(Debug, Clone, Default)]
pub struct EnvPolicy {
    /// Passed through and part of the action key.
    pub allow: Vec<String>,
    /// Passed through, never part of a key, never recorded.
    pub secret: Vec<String>,
}

/// What produces a partition, without a job's bindings ([`Graph::origin`]).
#[derive(Debug, Clone)]
pub enum Origin<'graph> {
    /// A source partition, read from `path`.
    Source {
        path: PathBuf,
    },
    Job(&'graph Job),
}

/// What produces a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Producer<'graph> {
    Source {
        dataset: &'graph str,
        path: PathBuf,
    },
    Job {
        job: &'graph str,
        bindings: Bindings,
    },
}

#[derive(Debug, Clone)]
pub struct Graph {
    pub file: PathBuf,
    /// The directory of the graph file: jobs run here, relative paths start here.
    pub root: PathBuf,
    pub datasets: BTreeMap<String, Dataset>,
    pub jobs: BTreeMap<String, Job>,
    pub dimensions: BTreeMap<String, Dimension>,
    pub env: EnvPolicy,
    /// `[sources.NAME]`: definitions fetched from external sources.
    pub sources: BTreeMap<String, Source>,
    /// `[executor]`: where the jobs' processes run (no part of any key).
    pub executor: crate::executor::Executor,
    /// blake3 of the graph file's text, as parsed.
    pub text_digest: crate::digest::ContentDigest,
    /// `[cache]`: the shared remote cache (docs/remote-cache.md).
    pub cache: Option<CacheConfig>,
}

/// `[cache]`: where the shared remote cache is and how it is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// `s3://bucket/prefix`, `http(s)://host:port/prefix` or
    /// `file:///dir`; never with a credential in it.
    pub url: String,
    pub mode: CacheMode,
    /// Per-request timeout.
    pub timeout: Option<std::time::Duration>,
    /// `file:line` of the `[cache]` table, for errors found later (the
    /// backend refusing the URL).
    pub at: String,
}

/// How a build uses the remote cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Look up and upload.
    ReadWrite,
    /// Look up only (untrusted machines).
    Read,
}

/// Checks a remote cache URL: a scheme cairn speaks, and no credential in
/// it (they come from the environment: docs/remote-cache.md).
pub fn check_cache_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "{url:?} is not a URL (expected s3://bucket/prefix, http://host:port/prefix or file:///dir)"
        ));
    };
    if !matches!(scheme, "s3" | "http" | "https" | "file") {
        return Err(format!(
            "{scheme}:// is not a remote cache cairn speaks (s3://, http://, https://, file://)"
        ));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(
            "the URL holds a credential: give credentials through the environment (AWS_* variables or profile, a netrc, CAIRN_REMOTE_CACHE_TOKEN_FILE), never in the graph file or the command line"
                .to_owned(),
        );
    }
    if scheme != "file" && authority.is_empty() {
        return Err(format!("{url:?} names no host or bucket"));
    }
    if scheme == "file" && !rest.starts_with('/') {
        return Err(format!("{url:?}: a file:// URL takes an absolute path"));
    }
    if url.contains('?') || url.contains('#') {
        return Err(format!("{url:?}: a query or fragment is not allowed"));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGraph {
    #[serde(default)]
    datasets: BTreeMap<String, Spanned<RawDataset>>,
    #[serde(default)]
    jobs: BTreeMap<String, Spanned<RawJob>>,
    #[serde(default)]
    dimensions: BTreeMap<String, Spanned<RawDimension>>,
    #[serde(default)]
    env: Option<RawEnv>,
    #[serde(default)]
    sources: BTreeMap<String, Spanned<RawSource>>,
    #[serde(default)]
    executor: Option<Spanned<crate::executor::RawExecutor>>,
    #[serde(default)]
    cache: Option<Spanned<RawCache>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    url: Spanned<String>,
    mode: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    command: Option<Spanned<Vec<String>>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataset {
    version: Option<Spanned<String>>,
    on_code_change: Option<Spanned<OnCodeChange>>,
    source: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    outputs: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    inputs: Option<Spanned<Vec<Spanned<String>>>>,
    run: Spanned<Vec<String>>,
    #[serde(default)]
    args: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    env: Option<Spanned<BTreeMap<String, String>>>,
    configure: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    code: Option<Spanned<Vec<Spanned<String>>>>,
    configure_cache: Option<Spanned<bool>>,
    on_code_change: Option<Spanned<OnCodeChange>>,
    #[serde(default)]
    retries: u32,
    retry_backoff: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    over: Option<Spanned<BTreeMap<String, Spanned<RawOver>>>>,
    resources: Option<Spanned<crate::executor::RawResources>>,
}

/// One `[jobs.NAME.over]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOver {
    dimension: Option<String>,
    window: Option<[i64; 2]>,
    of: Option<String>,
    map: Option<BTreeMap<String, Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDimension {
    values: Option<Spanned<Vec<Spanned<String>>>>,
    start: Option<Spanned<String>>,
    end: Option<Spanned<String>>,
    step_days: Option<Spanned<u32>>,
    from: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnv {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    secret: Vec<String>,
}

struct Context<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Context<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn error(&self, span: std::ops::Range<usize>, field: String, message: String) -> GraphError {
        GraphError {
            file: self.file.to_owned(),
            line: Some(self.line(span.start)),
            field,
            message,
        }
    }
}

impl Graph {
    /// Reads and validates the graph file at `file`.
    pub fn load(file: &Path) -> Result<Graph, GraphError> {
        let fail = |message: String| GraphError {
            file: file.to_owned(),
            line: None,
            field: String::new(),
            message,
        };
        let bytes = crate::limits::read_regular_file(
            file,
            "the graph file",
            &crate::limits::GRAPH_FILE_BYTES,
        )
        .map_err(fail)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| fail("cannot read the graph file: it is not UTF-8".into()))?;
        let root = file
            .parent()
            .map(Path::to_path_buf)
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        Graph::parse(&text, file, &root)
    }

    /// Parses graph-file `text` (named `file` in errors), with jobs rooted at `root`.
    pub fn parse(text: &str, file: &Path, root: &Path) -> Result<Graph, GraphError> {
        let context = Context { file, text };
        let raw: RawGraph = toml::from_str(text).map_err(|error| {
            let line = error.span().map(|span| context.line(span.start));
            GraphError {
                file: file.to_owned(),
                line,
                field: String::new(),
                message: format!(
                    "{}{}",
                    error.message().trim(),
                    suggest_field(error.message())
                ),
            }
        })?;

        let mut datasets = BTreeMap::new();
        for (name, raw_dataset) in &raw.datasets {
            let field = format!("datasets.{name}");
            let span = raw_dataset.span();
            let raw_dataset = raw_dataset.get_ref();
            PartitionRef::parse(name).map_err(|_| {
                context.error(
                    span.clone(),
                    field.clone(),
                    format!("{name:?} is not a valid dataset name (letters, digits, '_' and '-')"),
                )
            })?;
            let version = match &raw_dataset.version {
                Some(version) => {
                    Some(semver::Version::parse(version.get_ref()).map_err(|error| {
                        context.error(
                            version.span(),
                            format!("{field}.version"),
                            format!("{:?} is not a semantic version: {error}", version.get_ref()),
                        )
                    })?)
                }
                None => None,
            };
            let source = match &raw_dataset.source {
                Some(template) => {
                    if version.is_some() {
                        return Err(context.error(
                            template.span(),
                            format!("{field}.source"),
                            "a source dataset is observed by content and cannot have a version"
                                .into(),
                        ));
                    }
                    let mut source = parse_source(name, template.get_ref()).map_err(|message| {
                        context.error(template.span(), format!("{field}.source"), message)
                    })?;
                    source.at =
                        format!("{}:{}", file.display(), context.line(template.span().start));
                    Some(source)
                }
                None => None,
            };
            if let Some(mode) = &raw_dataset.on_code_change
                && version.is_none()
            {
                return Err(context.error(
                    mode.span(),
                    format!("{field}.on_code_change"),
                    "only a versioned dataset keeps its partitions when its job's code changes (without a version, any code change rebuilds them); add a `version` or remove `on_code_change`".into(),
                ));
            }
            datasets.insert(
                name.clone(),
                Dataset {
                    name: name.clone(),
                    version,
                    source,
                    on_code_change: raw_dataset
                        .on_code_change
                        .as_ref()
                        .map(|mode| *mode.get_ref()),
                },
            );
        }

        let mut sources = BTreeMap::new();
        for (name, raw_source) in &raw.sources {
            let source = parse_source_entry(&context, name, raw_source)?;
            sources.insert(name.clone(), source);
        }

        let mut dimensions = BTreeMap::new();
        for (name, raw_dimension) in &raw.dimensions {
            let field = format!("dimensions.{name}");
            let dimension = parse_dimension(&context, &field, raw_dimension)?;
            if let Dimension::Source(source) = &dimension
                && !sources.contains_key(source)
            {
                let span = raw_dimension
                    .get_ref()
                    .from
                    .as_ref()
                    .map_or_else(|| raw_dimension.span(), Spanned::span);
                return Err(context.error(
                    span,
                    format!("{field}.from"),
                    format!("no [sources.{source}] is declared"),
                ));
            }
            dimensions.insert(name.clone(), dimension);
        }

        let mut jobs = BTreeMap::new();
        for (name, raw_job) in &raw.jobs {
            let job = parse_job(&context, name, raw_job, &datasets, &dimensions)?;
            jobs.insert(name.clone(), job);
        }

        let env = raw
            .env
            .as_ref()
            .map(|env| EnvPolicy {
                allow: env.allow.clone(),
                secret: env.secret.clone(),
            })
            .unwrap_or_default();

        let executor = match &raw.executor {
            Some(executor) => crate::executor::parse_executor(executor.get_ref(), parse_duration)
                .map_err(|(span, field, message)| {
                context.error(span, format!("executor.{field}"), message)
            })?,
            None => crate::executor::Executor::default(),
        };

        let cache = match &raw.cache {
            None => None,
            Some(raw_cache) => {
                let raw_cache_ref = raw_cache.get_ref();
                let url = raw_cache_ref.url.get_ref().trim_end_matches('/').to_owned();
                check_cache_url(&url).map_err(|message| {
                    context.error(raw_cache_ref.url.span(), "cache.url".into(), message)
                })?;
                let mode = match &raw_cache_ref.mode {
                    None => CacheMode::ReadWrite,
                    Some(mode) => match mode.get_ref().as_str() {
                        "read-write" => CacheMode::ReadWrite,
                        "read" => CacheMode::Read,
                        other => {
                            return Err(context.error(
                                mode.span(),
                                "cache.mode".into(),
                                format!("{other:?} is not a mode: \"read-write\" or \"read\""),
                            ));
                        }
                    },
                };
                let timeout = match &raw_cache_ref.timeout {
                    None => None,
                    Some(timeout) => {
                        Some(parse_duration(timeout.get_ref()).map_err(|message| {
                            context.error(timeout.span(), "cache.timeout".into(), message)
                        })?)
                    }
                };
                Some(CacheConfig {
                    url,
                    mode,
                    timeout,
                    at: format!(
                        "{}:{}",
                        file.display(),
                        context.line(raw_cache.span().start)
                    ),
                })
            }
        };

        let graph = Graph {
            cache,
            file: file.to_owned(),
            root: root.to_owned(),
            datasets,
            jobs,
            dimensions,
            env,
            sources,
            executor,
            text_digest: crate::digest::ContentDigest::of(text.as_bytes()),
        };
        graph.check_overlaps(&context, &raw)?;
        graph.check_source_inputs(&context, &raw)?;
        graph.check_datasets_produced(&context, &raw)?;
        Ok(graph)
    }

    /// Two jobs (or a job and a source) that could claim the same partition
    /// make lookup ambiguous: refuse the graph.
    fn check_overlaps(&self, context: &Context<'_>, raw: &RawGraph) -> Result<(), GraphError> {
        let mut claims: Vec<(&str, &Pattern)> = Vec::new();
        for job in self.jobs.values() {
            for pattern in &job.outputs {
                if let Some(dataset) = self.datasets.get(pattern.dataset())
                    && dataset.source.is_some()
                {
                    let span = raw.jobs[&job.name].get_ref().outputs.span();
                    return Err(context.error(
                        span,
                        format!("jobs.{}.outputs", job.name),
                        format!("{pattern} is a partition of source dataset {}, which no job may produce", dataset.name),
                    ));
                }
                for (other_job, other) in &claims {
                    if *other_job != job.name && patterns_overlap(pattern, other) {
                        let span = raw.jobs[&job.name].get_ref().outputs.span();
                        return Err(context.error(
                            span,
                            format!("jobs.{}.outputs", job.name),
                            format!("{pattern} overlaps {other} of job {other_job}: each partition must have exactly one producer"),
                        ));
                    }
                }
                claims.push((&job.name, pattern));
            }
        }
        Ok(())
    }

    /// A declarative input of a source dataset must have the keys of the
    /// source's pattern (`source = "inputs/{date}/{station}.txt"` names
    /// `inputs/date=D/station=S`): a placeholder typo on either side would
    /// otherwise fail at build time with no line. The error is put on the
    /// side whose key is not a dimension (the likelier typo).
    fn check_source_inputs(&self, context: &Context<'_>, raw: &RawGraph) -> Result<(), GraphError> {
        for job in self.jobs.values() {
            let Some(raw_inputs) = &raw.jobs[&job.name].get_ref().inputs else {
                continue;
            };
            for (input, raw_input) in job.inputs.iter().zip(raw_inputs.get_ref()) {
                let Some(source) = self
                    .datasets
                    .get(input.dataset())
                    .and_then(|dataset| dataset.source.as_ref())
                else {
                    continue;
                };
                let keys = |pattern: &Pattern| -> Vec<String> {
                    pattern
                        .dimensions()
                        .iter()
                        .map(|(key, _)| key.clone())
                        .collect()
                };
                let (wanted, given) = (keys(&source.pattern), keys(input));
                if wanted == given {
                    continue;
                }
                let differing = wanted
                    .iter()
                    .zip(&given)
                    .find(|(a, b)| a != b)
                    .map(|(a, b)| (a.clone(), b.clone()));
                let dataset = input.dataset();
                let source_span = raw.datasets[dataset]
                    .get_ref()
                    .source
                    .as_ref()
                    .map_or_else(|| raw.datasets[dataset].span(), Spanned::span);
                let input_line = context.line(raw_input.span().start);
                match differing {
                    Some((in_source, in_input))
                        if !self.dimensions.contains_key(&in_source)
                            && self.dimensions.contains_key(&in_input) =>
                    {
                        return Err(context.error(
                            source_span,
                            format!("datasets.{dataset}.source"),
                            format!(
                                "placeholder {{{in_source}}} of {:?} has no [dimensions.{in_source}], and jobs.{}.inputs (line {input_line}) reads {input}{}",
                                source.template,
                                job.name,
                                closest(&in_source, self.dimensions.keys().map(String::as_str))
                                    .map(|name| format!("; did you mean {{{name}}}?"))
                                    .unwrap_or_default()
                            ),
                        ));
                    }
                    _ => {
                        return Err(context.error(
                            raw_input.span(),
                            format!("jobs.{}.inputs", job.name),
                            format!(
                                "{input} does not match the partitions of source dataset {dataset}, {} (line {}: source = {:?})",
                                source.pattern,
                                context.line(source_span.start),
                                source.template
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_datasets_produced(
        &self,
        context: &Context<'_>,
        raw: &RawGraph,
    ) -> Result<(), GraphError> {
        for dataset in self.datasets.values() {
            let produced = self.jobs.values().any(|job| {
                job.outputs
                    .iter()
                    .any(|pattern| pattern.dataset() == dataset.name)
            });
            if dataset.source.is_none() && !produced {
                return Err(context.error(
                    raw.datasets[&dataset.name].span(),
                    format!("datasets.{}", dataset.name),
                    "no job produces this dataset and it has no `source`".into(),
                ));
            }
        }
        Ok(())
    }

    /// Which job (or source) produces `partition`, with the bindings.
    pub fn lookup(&self, partition: &PartitionRef) -> Result<Producer<'_>, String> {
        let dataset = self.declared(partition)?;
        if let Some(source) = &dataset.source {
            return Ok(Producer::Source {
                dataset: &dataset.name,
                path: self.source_path(dataset, source, partition)?,
            });
        }
        for job in self.jobs.values() {
            for pattern in &job.outputs {
                if let Some(bindings) = pattern.matches(partition) {
                    return Ok(Producer::Job {
                        job: &job.name,
                        bindings,
                    });
                }
            }
        }
        Err(self.no_job_produces(partition))
    }

    /// [`Graph::lookup`] without a job's bindings: the job whose output
    /// pattern `partition` matches (the first, as `lookup` finds it), or
    /// the source's file. The planner looks up a million refs at the 1M
    /// scale: their bindings, a ref and two heap blocks each, were alive
    /// through the first wave's configure calls, where a dry run's memory
    /// peaked; a declarative job binds each ref as it templates its config
    /// instead ([`Job::bindings`]).
    pub fn origin(&self, partition: &PartitionRef) -> Result<Origin<'_>, String> {
        let dataset = self.declared(partition)?;
        if let Some(source) = &dataset.source {
            return Ok(Origin::Source {
                path: self.source_path(dataset, source, partition)?,
            });
        }
        self.jobs
            .values()
            .find(|job| {
                job.outputs
                    .iter()
                    .any(|pattern| pattern.is_match(partition))
            })
            .map(Origin::Job)
            .ok_or_else(|| self.no_job_produces(partition))
    }

    /// The dataset of `partition`, if the graph declares it.
    fn declared(&self, partition: &PartitionRef) -> Result<&Dataset, String> {
        self.datasets.get(partition.dataset()).ok_or_else(|| {
            format!(
                "{partition}: dataset {:?} is not declared in {}",
                partition.dataset(),
                self.file.display()
            )
        })
    }

    /// The file of `partition`, a partition of the source `dataset`.
    fn source_path(
        &self,
        dataset: &Dataset,
        source: &SourceTemplate,
        partition: &PartitionRef,
    ) -> Result<PathBuf, String> {
        let Some(bindings) = source.pattern.matches(partition) else {
            return Err(format!(
                "{partition} does not match source pattern {} ({}: datasets.{}.source = {:?})",
                source.pattern, source.at, dataset.name, source.template
            ));
        };
        let relative = substitute_text(&source.template, &bindings)?;
        Ok(self.root.join(relative))
    }

    fn no_job_produces(&self, partition: &PartitionRef) -> String {
        let known: Vec<&str> = self
            .jobs
            .values()
            .flat_map(|job| job.outputs.iter())
            .filter(|pattern| pattern.dataset() == partition.dataset())
            .map(Pattern::as_str)
            .collect();
        format!(
            "no job produces {partition} (patterns of dataset {}: {})",
            partition.dataset(),
            known.join(", ")
        )
    }

    /// Expands a pattern over the dimension domains (cartesian product, in
    /// domain order). Fails naming a placeholder without a domain.
    pub fn expand(&self, pattern: &Pattern) -> Result<Vec<PartitionRef>, String> {
        let names = pattern.placeholders();
        // Counted before anything is listed: a date range of 0001..9999
        // must be refused, not materialized (docs/reliability.md, "Limits").
        let limit = crate::limits::PARTITIONS.value()?;
        let count = self.count(pattern)?;
        if count > u128::from(limit) {
            return Err(format!(
                "cannot expand {pattern}: {}",
                crate::limits::PARTITIONS.exceeded(
                    &format!("{count} partitions ({})", self.sizes(pattern)),
                    limit
                )
            ));
        }
        let mut domains = Vec::with_capacity(names.len());
        for name in &names {
            let domain = self
                .domain(name)
                .map_err(|error| format!("cannot expand {pattern}: {error}"))?;
            domains.push(domain);
        }
        if domains.iter().any(Vec::is_empty) {
            return Ok(Vec::new());
        }
        // The refs in odometer order (last placeholder fastest): ref `index`
        // takes value `index / stride % len` of each domain, made in
        // parallel (a million refs for a 1M graph's `build`).
        let mut strides = vec![1usize; domains.len()];
        for position in (0..domains.len().saturating_sub(1)).rev() {
            strides[position] = strides[position + 1]
                .checked_mul(domains[position + 1].len())
                .ok_or_else(|| format!("cannot expand {pattern}: too many partitions"))?;
        }
        let total = strides
            .first()
            .map_or(Some(1), |first| first.checked_mul(domains[0].len()))
            .ok_or_else(|| format!("cannot expand {pattern}: too many partitions"))?;
        let make = |index: usize| {
            pattern.substitute_by(|name| {
                let position = names.iter().position(|known| *known == name)?;
                let domain = &domains[position];
                Some(domain[index / strides[position] % domain.len()].as_str())
            })
        };
        crate::par::try_map_in_order(total, make).map_err(|error| error.to_string())
    }

    /// How many partitions `pattern` expands to, counted without listing
    /// them. Fails as [`Graph::expand`] does on a placeholder without values.
    pub fn count(&self, pattern: &Pattern) -> Result<u128, String> {
        let mut total: u128 = 1;
        for name in pattern.placeholders() {
            let len = self
                .domain_len(name)
                .map_err(|error| format!("cannot expand {pattern}: {error}"))?;
            total = total.saturating_mul(len as u128);
        }
        Ok(total)
    }

    /// `3652059 date x 2 station`: the domain sizes of `pattern`'s
    /// placeholders, for messages.
    fn sizes(&self, pattern: &Pattern) -> String {
        pattern
            .placeholders()
            .iter()
            .map(|name| match self.domain_len(name) {
                Ok(len) => format!("{len} {name}"),
                Err(_) => format!("? {name}"),
            })
            .collect::<Vec<_>>()
            .join(" x ")
    }

    /// How many values dimension `name` has (see [`Graph::domain`]), without
    /// listing a date range.
    pub fn domain_len(&self, name: &str) -> Result<usize, String> {
        match self.dimensions.get(name) {
            Some(dimension) => match dimension.count() {
                Some(len) => Ok(len),
                None => self.domain(name).map(|values| values.len()),
            },
            None => self.domain(name).map(|values| values.len()),
        }
    }

    /// The values of dimension `name`: its list, its dates, or the values of
    /// its source's record. Fails naming a missing dimension, or a source
    /// that was never refreshed (with the command that refreshes it).
    pub fn domain(&self, name: &str) -> Result<Vec<String>, String> {
        match self.dimensions.get(name) {
            None => Err(format!(
                "placeholder {{{name}}} has no [dimensions.{name}] in {}",
                self.file.display()
            )),
            Some(Dimension::Source(source)) => self.source_values(source).map(<[String]>::to_vec),
            Some(dimension) => Ok(dimension.values()),
        }
    }

    /// The values of the latest record of source `name`; an error names what
    /// to do when there is none.
    pub fn source_values(&self, name: &str) -> Result<&[String], String> {
        match self.sources.get(name) {
            None => Err(format!(
                "no [sources.{name}] is declared in {}",
                self.file.display()
            )),
            Some(Source {
                values: Some(values),
                ..
            }) => Ok(values),
            Some(Source {
                unreadable: Some(problem),
                ..
            }) => Err(format!(
                "the record of source {name:?} cannot be read ({problem}): run `cairn defs refresh {name}`"
            )),
            Some(_) => Err(format!(
                "source {name:?} has no record yet: run `cairn defs refresh {name}`"
            )),
        }
    }

    /// Sets the values of source `name` (read from its latest record).
    pub fn set_source_values(&mut self, name: &str, values: Vec<String>) {
        if let Some(source) = self.sources.get_mut(name) {
            source.values = Some(values);
            source.unreadable = None;
        }
    }

    /// Notes that the latest record of source `name` exists but cannot be
    /// read (expanding its dimension then fails saying so).
    pub fn set_source_unreadable(&mut self, name: &str, problem: String) {
        if let Some(source) = self.sources.get_mut(name) {
            source.values = None;
            source.unreadable = Some(problem);
        }
    }

    /// Every partition the graph declares: each job's outputs expanded over
    /// the dimension domains (what `cairn build` with no refs builds).
    pub fn all_partitions(&self) -> Result<Vec<PartitionRef>, String> {
        // Counted first: the sum over every job's outputs is bounded too.
        let limit = crate::limits::PARTITIONS.value()?;
        let mut total: u128 = 0;
        let mut parts = Vec::new();
        for job in self.jobs.values() {
            for pattern in &job.outputs {
                let count = self
                    .count(pattern)
                    .map_err(|error| format!("jobs.{}.outputs: {error}", job.name))?;
                total = total.saturating_add(count);
                if parts.len() < 5 {
                    parts.push(format!("{count} of {pattern}"));
                } else if parts.len() == 5 {
                    parts.push("…".to_owned());
                }
            }
        }
        if total > u128::from(limit) {
            return Err(format!(
                "{}: {}; build a pattern or a backfill at a time, or narrow the dimensions",
                self.file.display(),
                crate::limits::PARTITIONS.exceeded(
                    &format!(
                        "the graph declares {total} partitions ({})",
                        parts.join(", ")
                    ),
                    limit
                )
            ));
        }
        // Sorted once at the end: a million inserts into a tree cost more.
        let mut out = Vec::new();
        for job in self.jobs.values() {
            for pattern in &job.outputs {
                let expanded = self
                    .expand(pattern)
                    .map_err(|error| format!("jobs.{}.outputs: {error}", job.name))?;
                out.extend(expanded);
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Checks that each value `partition` binds to a placeholder with a
    /// dimension is in that dimension's domain: a listed value, a valid date
    /// inside the range and on its step, a value of the source's record.
    /// Refs no job or source produces are left to the planner. The error
    /// names the ref, the value and the dimension
    /// (`daily/date=banana: "banana" is not a date of the form YYYY-MM-DD
    /// ([dimensions.date] is 2024-01-01..2024-01-31)`).
    pub fn check_domain(&self, partition: &PartitionRef) -> Result<(), String> {
        let bindings = match self.lookup(partition) {
            Ok(Producer::Job { bindings, .. }) => bindings,
            Ok(Producer::Source { dataset, .. }) => {
                let Some(bindings) = self.datasets[dataset]
                    .source
                    .as_ref()
                    .and_then(|source| source.pattern.matches(partition))
                else {
                    return Ok(());
                };
                bindings
            }
            Err(_) => return Ok(()),
        };
        for (name, value) in bindings.iter() {
            let Some(dimension) = self.dimensions.get(name) else {
                continue;
            };
            self.check_value_in(name, dimension, value)
                .map_err(|problem| format!("{partition}: {problem}"))?;
        }
        Ok(())
    }

    fn check_value_in(&self, name: &str, dimension: &Dimension, value: &str) -> Result<(), String> {
        match dimension {
            Dimension::Dates {
                start,
                end,
                step_days,
            } => {
                let range = if *step_days == 1 {
                    format!("[dimensions.{name}]: {start}..{end}")
                } else {
                    format!("[dimensions.{name}]: {start}..{end}, every {step_days} days")
                };
                let date = Date::parse(value).map_err(|problem| format!("{problem} ({range})"))?;
                if date < *start || date > *end {
                    return Err(format!("{value} is outside the dates ({range})"));
                }
                if start.days_until(date) % i64::from((*step_days).max(1)) != 0 {
                    return Err(format!("{value} is not one of the dates ({range})"));
                }
                Ok(())
            }
            Dimension::Values(values) => {
                if values.iter().any(|known| known == value) {
                    return Ok(());
                }
                Err(format!(
                    "{} is not a value of [dimensions.{name}] ({}){}",
                    crate::refs::quoted(value),
                    shown(values),
                    did_you_mean(value, values.iter().map(String::as_str))
                ))
            }
            Dimension::Source(source) => {
                // Without a record there is nothing to check against, and a
                // ref that does not need the record still builds
                // (docs/defs.md).
                let Ok(values) = self.source_values(source) else {
                    return Ok(());
                };
                if values.iter().any(|known| known == value) {
                    return Ok(());
                }
                Err(format!(
                    "{} is not a value of [dimensions.{name}] (the latest record of source {source:?}: {}){}",
                    crate::refs::quoted(value),
                    shown(values),
                    did_you_mean(value, values.iter().map(String::as_str))
                ))
            }
        }
    }

    /// Parses a request (`daily/date=2024-01-01` or a pattern with
    /// placeholders) into refs.
    pub fn resolve_request(&self, request: &str) -> Result<Vec<PartitionRef>, String> {
        if request.contains('{') {
            let pattern = Pattern::parse(request).map_err(|error| error.to_string())?;
            self.expand(&pattern)
        } else {
            let partition = PartitionRef::parse(request).map_err(|error| error.to_string())?;
            Ok(vec![partition])
        }
    }

    /// What configure steps are told about the graph (docs/job-protocol.md):
    /// `{"dimensions":{NAME:[VALUES]},"sources":{NAME:[VALUES]}}`, every
    /// dimension's values in order and every defs source's latest record
    /// (a dimension or source without a record is left out).
    pub fn configure_context(&self) -> serde_json::Value {
        let dimensions: serde_json::Map<String, serde_json::Value> = self
            .dimensions
            .keys()
            .filter_map(|name| Some((name.clone(), self.domain(name).ok()?.into())))
            .collect();
        let sources: serde_json::Map<String, serde_json::Value> = self
            .sources
            .values()
            .filter_map(|source| Some((source.name.clone(), source.values.clone()?.into())))
            .collect();
        serde_json::json!({ "dimensions": dimensions, "sources": sources })
    }

    /// The data path of a partition under the data root.
    pub fn data_path(&self, data_root: &Path, partition: &PartitionRef) -> PathBuf {
        data_root.join(partition.relative_path())
    }
}

/// `; did you mean `start`?` for a TOML error `unknown field `strat`,
/// expected one of `values`, `start`, ...` (serde's message for a key the
/// graph file or a backfill config does not have), else empty.
pub fn suggest_field(message: &str) -> String {
    let Some(rest) = message.trim().strip_prefix("unknown field `") else {
        return String::new();
    };
    let Some((typed, rest)) = rest.split_once('`') else {
        return String::new();
    };
    let Some((_, expected)) = rest.split_once("expected") else {
        return String::new();
    };
    // The names are the backticked words: `a`, `b` or `a` or `b`.
    let known = expected.split('`').skip(1).step_by(2);
    closest(typed, known)
        .map(|name| format!("; did you mean `{name}`?"))
        .unwrap_or_default()
}

/// `a, b, c` or `a, b, c and 7 more`, for messages.
fn shown(values: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = values
        .iter()
        .take(SHOWN)
        .map(|value| crate::refs::quoted(value))
        .collect::<Vec<_>>()
        .join(", ");
    if values.len() > SHOWN {
        text.push_str(&format!(" and {} more", values.len() - SHOWN));
    }
    text
}

/// `; did you mean "station"?` when one of `known` is close to `typed`
/// (Jaro-Winkler similarity of at least 0.8), else empty.
pub fn did_you_mean<'k>(typed: &str, known: impl Iterator<Item = &'k str>) -> String {
    closest(typed, known)
        .map(|candidate| format!("; did you mean {}?", crate::refs::quoted(candidate)))
        .unwrap_or_default()
}

/// The one of `known` closest to `typed`, if close enough (Jaro-Winkler
/// similarity of at least 0.8; the last of equals).
fn closest<'k>(typed: &str, known: impl Iterator<Item = &'k str>) -> Option<&'k str> {
    known
        .map(|candidate| (strsim::jaro_winkler(typed, candidate), candidate))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// A duration of the graph file, in humantime's syntax: numbers (a
/// fraction allowed) each followed by a unit, `500ms`, `2s`, `1.5h`,
/// `1h 30m`, `2d`, `1w` (docs/graph-file.md lists the units).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|error| {
        format!("{text:?} is not a duration ({error}); write a number and a unit, like 500ms, 2s, 1.5h or 1h 30m")
    })
}

/// A duration as the graph file would give it: `2s`, `500ms`, `1h 30m`.
pub fn format_duration(duration: std::time::Duration) -> String {
    humantime::format_duration(duration).to_string()
}

fn patterns_overlap(a: &Pattern, b: &Pattern) -> bool {
    if a.dataset() != b.dataset() || a.dimensions().len() != b.dimensions().len() {
        return false;
    }
    a.dimensions()
        .iter()
        .zip(b.dimensions())
        .all(|((key_a, value_a), (key_b, value_b))| {
            key_a == key_b
                && match (value_a, value_b) {
                    (PatternValue::Literal(x), PatternValue::Literal(y)) => x == y,
                    _ => true,
                }
        })
}

fn parse_source(name: &str, template: &str) -> Result<SourceTemplate, String> {
    let path = Path::new(template);
    if path.is_absolute() {
        return Err(format!("{template:?} must be relative to the graph file"));
    }
    if path
        .components()
        .any(|component| !matches!(component, Component::Normal(_)))
    {
        return Err(format!(
            "{template:?} must not contain '.' or '..' components"
        ));
    }
    let placeholders = text_placeholders(template)?;
    let mut pattern_text = name.to_owned();
    for placeholder in &placeholders {
        pattern_text.push_str(&format!("/{placeholder}={{{placeholder}}}"));
    }
    let pattern = Pattern::parse(&pattern_text).map_err(|error| error.to_string())?;
    Ok(SourceTemplate {
        template: template.to_owned(),
        pattern,
        at: String::new(),
    })
}

fn parse_source_entry(
    context: &Context<'_>,
    name: &str,
    raw: &Spanned<RawSource>,
) -> Result<Source, GraphError> {
    let field = format!("sources.{name}");
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(context.error(
            raw.span(),
            field,
            "source names use letters, digits, '_' and '-'".into(),
        ));
    }
    let command = match &raw.get_ref().command {
        None => {
            return Err(context.error(
                raw.span(),
                format!("{field}.command"),
                "missing: the command that prints the values as JSON".into(),
            ));
        }
        Some(command) if command.get_ref().is_empty() => {
            return Err(context.error(
                command.span(),
                format!("{field}.command"),
                "the command is empty".into(),
            ));
        }
        Some(command) => command.get_ref().clone(),
    };
    let timeout = match &raw.get_ref().timeout {
        Some(text) => parse_duration(text.get_ref())
            .map_err(|message| context.error(text.span(), format!("{field}.timeout"), message))?,
        None => std::time::Duration::from_secs(60),
    };
    Ok(Source {
        name: name.to_owned(),
        command,
        timeout,
        values: None,
        unreadable: None,
    })
}

fn parse_dimension(
    context: &Context<'_>,
    field: &str,
    raw: &Spanned<RawDimension>,
) -> Result<Dimension, GraphError> {
    let span = raw.span();
    let raw = raw.get_ref();
    if let Some(from) = &raw.from {
        if raw.values.is_some()
            || raw.start.is_some()
            || raw.end.is_some()
            || raw.step_days.is_some()
        {
            return Err(context.error(
                from.span(),
                format!("{field}.from"),
                "a dimension with `from` takes its values from the source's record: remove `values`, `start`, `end` and `step_days`".into(),
            ));
        }
        return Ok(Dimension::Source(from.get_ref().clone()));
    }
    match (&raw.values, &raw.start, &raw.end) {
        (Some(values), None, None) => {
            if raw.step_days.is_some() {
                return Err(context.error(
                    span,
                    format!("{field}.step_days"),
                    "step_days only applies to a date range".into(),
                ));
            }
            let mut out = Vec::new();
            for value in values.get_ref() {
                crate::defs::check_value(value.get_ref()).map_err(|problem| {
                    context.error(value.span(), format!("{field}.values"), problem)
                })?;
                if out.contains(value.get_ref()) {
                    return Err(context.error(
                        value.span(),
                        format!("{field}.values"),
                        format!("{} appears twice", crate::refs::quoted(value.get_ref())),
                    ));
                }
                out.push(value.get_ref().clone());
            }
            Ok(Dimension::Values(out))
        }
        (None, Some(start), Some(end)) => {
            let parse = |date: &Spanned<String>, name: &str| {
                Date::parse(date.get_ref()).map_err(|message| {
                    context.error(date.span(), format!("{field}.{name}"), message)
                })
            };
            let (start_date, end_date) = (parse(start, "start")?, parse(end, "end")?);
            if end_date < start_date {
                return Err(context.error(
                    end.span(),
                    format!("{field}.end"),
                    format!("end {end_date} is before start {start_date}"),
                ));
            }
            let step_days = match &raw.step_days {
                Some(step) if *step.get_ref() == 0 => {
                    return Err(context.error(
                        step.span(),
                        format!("{field}.step_days"),
                        "must be at least 1".into(),
                    ));
                }
                Some(step) => *step.get_ref(),
                None => 1,
            };
            Ok(Dimension::Dates {
                start: start_date,
                end: end_date,
                step_days,
            })
        }
        _ => Err(context.error(
            span,
            field.to_owned(),
            "a dimension has either `values = [...]`, both `start` and `end` (dates), or `from = \"SOURCE\"`".into(),
        )),
    }
}

fn parse_patterns(
    context: &Context<'_>,
    field: &str,
    raw: &Spanned<Vec<Spanned<String>>>,
    datasets: &BTreeMap<String, Dataset>,
) -> Result<Vec<Pattern>, GraphError> {
    let mut out = Vec::new();
    for text in raw.get_ref() {
        let pattern = Pattern::parse(text.get_ref())
            .map_err(|error| context.error(text.span(), field.to_owned(), error.to_string()))?;
        if !datasets.contains_key(pattern.dataset()) {
            return Err(context.error(
                text.span(),
                field.to_owned(),
                format!(
                    "dataset {:?} of {pattern} is not declared under [datasets]",
                    pattern.dataset()
                ),
            ));
        }
        out.push(pattern);
    }
    Ok(out)
}

fn parse_job(
    context: &Context<'_>,
    name: &str,
    raw: &Spanned<RawJob>,
    datasets: &BTreeMap<String, Dataset>,
    dimensions: &BTreeMap<String, Dimension>,
) -> Result<Job, GraphError> {
    let span = raw.span();
    let raw = raw.get_ref();
    let field = |suffix: &str| format!("jobs.{name}.{suffix}");
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(context.error(
            span,
            format!("jobs.{name}"),
            "job names use letters, digits, '_' and '-'".into(),
        ));
    }
    let outputs = parse_patterns(context, &field("outputs"), &raw.outputs, datasets)?;
    if outputs.is_empty() {
        return Err(context.error(
            raw.outputs.span(),
            field("outputs"),
            "a job needs at least one output pattern".into(),
        ));
    }
    let inputs = match &raw.inputs {
        Some(inputs) => parse_patterns(context, &field("inputs"), inputs, datasets)?,
        None => Vec::new(),
    };
    if raw.run.get_ref().is_empty() {
        return Err(context.error(
            raw.run.span(),
            field("run"),
            "the run command is empty".into(),
        ));
    }
    let configure = match &raw.configure {
        Some(argv) if argv.get_ref().is_empty() => {
            return Err(context.error(
                argv.span(),
                field("configure"),
                "the configure command is empty".into(),
            ));
        }
        Some(argv) => {
            if let Some(inputs) = &raw.inputs {
                return Err(context.error(
                    inputs.span(),
                    field("inputs"),
                    "an executable job's configure step names its inputs; remove `inputs` or `configure`".into(),
                ));
            }
            Some(argv.get_ref().clone())
        }
        None => None,
    };
    if let Some(cache) = &raw.configure_cache
        && configure.is_none()
    {
        return Err(context.error(
            cache.span(),
            field("configure_cache"),
            "only a job with `configure` has configure answers to cache; remove `configure_cache`"
                .into(),
        ));
    }
    let args = raw
        .args
        .as_ref()
        .map(|args| args.get_ref().clone())
        .unwrap_or_default();
    let env = raw
        .env
        .as_ref()
        .map(|env| env.get_ref().clone())
        .unwrap_or_default();

    // Declarative jobs template everything from the bindings of the output
    // ref, so every placeholder they use must be bound by every output pattern.
    let first: BTreeSet<&str> = outputs[0].placeholders().into_iter().collect();
    for pattern in &outputs[1..] {
        let names: BTreeSet<&str> = pattern.placeholders().into_iter().collect();
        if names != first {
            return Err(context.error(
                raw.outputs.span(),
                field("outputs"),
                format!(
                    "{pattern} and {} must use the same placeholders",
                    outputs[0]
                ),
            ));
        }
    }
    let check_bound = |names: Vec<String>, what: &str, span: std::ops::Range<usize>| {
        match names
        .iter()
        .find(|name| !first.contains(name.as_str()))
    {
        Some(placeholder) => Err(context.error(
            span,
            field(what),
            format!(
                "{{{placeholder}}} is not a placeholder of the outputs ({}): `{what}` can only use the output's placeholders (fan-in placeholders are for `inputs`)",
                outputs[0]
            ),
        )),
        None => Ok(()),
    }
    };
    let fan = match &raw.inputs {
        Some(raw_inputs) => parse_fan(
            context,
            &field("over"),
            raw_inputs,
            &inputs,
            &outputs[0],
            &first,
            raw.over.as_ref(),
            dimensions,
        )?,
        None => {
            if let Some(over) = &raw.over {
                return Err(context.error(
                    over.span(),
                    field("over"),
                    "`over` says how the placeholders of `inputs` fan in, and this job has no `inputs`".into(),
                ));
            }
            BTreeMap::new()
        }
    };
    if let Some(raw_args) = &raw.args {
        for arg in &args {
            let names = text_placeholders(arg)
                .map_err(|message| context.error(raw_args.span(), field("args"), message))?;
            check_bound(names, "args", raw_args.span())?;
        }
    }
    if let Some(raw_env) = &raw.env {
        for value in env.values() {
            let names = text_placeholders(value)
                .map_err(|message| context.error(raw_env.span(), field("env"), message))?;
            check_bound(names, "env", raw_env.span())?;
        }
    }
    let mut code = Vec::new();
    let mut code_at = Vec::new();
    for entry in raw
        .code
        .as_ref()
        .map(Spanned::get_ref)
        .into_iter()
        .flatten()
    {
        check_code_entry(entry.get_ref())
            .map_err(|message| context.error(entry.span(), field("code"), message))?;
        code.push(entry.get_ref().clone());
        code_at.push(format!(
            "{}:{}",
            context.file.display(),
            context.line(entry.span().start)
        ));
    }
    let retry_backoff = match &raw.retry_backoff {
        Some(text) => parse_duration(text.get_ref())
            .map_err(|message| context.error(text.span(), field("retry_backoff"), message))?,
        None => std::time::Duration::from_secs(1),
    };
    let timeout = match &raw.timeout {
        Some(text) => {
            let timeout = parse_duration(text.get_ref())
                .map_err(|message| context.error(text.span(), field("timeout"), message))?;
            if timeout.is_zero() {
                return Err(context.error(
                    text.span(),
                    field("timeout"),
                    "must be longer than 0 (leave it out for no limit)".into(),
                ));
            }
            Some(timeout)
        }
        None => None,
    };
    let resources = match &raw.resources {
        Some(resources) => Some(
            crate::executor::parse_resources(resources.get_ref(), parse_duration).map_err(
                |(span, name, message)| {
                    context.error(span, field(&format!("resources.{name}")), message)
                },
            )?,
        ),
        None => None,
    };
    Ok(Job {
        resources,
        retries: raw.retries,
        retry_backoff,
        timeout,
        name: name.to_owned(),
        outputs,
        inputs,
        fan,
        run: raw.run.get_ref().clone(),
        args,
        env,
        configure,
        code,
        code_at,
        configure_cache: raw
            .configure_cache
            .as_ref()
            .is_none_or(|cache| *cache.get_ref()),
        on_code_change: raw.on_code_change.as_ref().map(|mode| *mode.get_ref()),
    })
}

/// A `code` entry names files inside the project: a relative path or glob
/// with no `..` or `.` component, not absolute, and a valid glob. Hashing
/// `../../../usr/**/*` would read outside the project (issue 28).
fn check_code_entry(entry: &str) -> Result<(), String> {
    if entry.is_empty() {
        return Err("an entry is empty".into());
    }
    if entry.contains('\0') {
        return Err(format!("{entry:?} contains a NUL byte"));
    }
    if entry.starts_with('/') || entry.starts_with('~') {
        return Err(format!(
            "{entry:?} must be relative to the graph file: code files are inside the project"
        ));
    }
    if entry.split('/').any(|part| part == "..") {
        return Err(format!(
            "{entry:?} must not contain '..': code files are inside the project"
        ));
    }
    if entry.contains(['*', '?', '[', '{']) {
        globset::Glob::new(entry)
            .map_err(|error| format!("{entry:?} is not a valid glob: {error}"))?;
    }
    Ok(())
}

/// Reads how each fan-in placeholder of a declarative job's `inputs` takes
/// its values: an input placeholder the outputs do not bind fans in over
/// its dimension's values unless `over` says otherwise; `over` may also
/// rebind an output placeholder to a window or a mapping of its value.
#[expect(
    clippy::too_many_arguments,
    reason = "the parts of one job being parsed"
)]
fn parse_fan(
    context: &Context<'_>,
    field: &str,
    raw_inputs: &Spanned<Vec<Spanned<String>>>,
    inputs: &[Pattern],
    output: &Pattern,
    output_names: &BTreeSet<&str>,
    over: Option<&Spanned<BTreeMap<String, Spanned<RawOver>>>>,
    dimensions: &BTreeMap<String, Dimension>,
) -> Result<BTreeMap<String, Fan>, GraphError> {
    let empty = BTreeMap::new();
    let entries = over.map_or(&empty, Spanned::get_ref);
    let mut fan = BTreeMap::new();
    let used: BTreeSet<&str> = inputs.iter().flat_map(Pattern::placeholders).collect();
    for (name, entry) in entries {
        let span = entry.span();
        let entry = entry.get_ref();
        let here =
            |message: String| context.error(span.clone(), format!("{field}.{name}"), message);
        if !used.contains(name.as_str()) {
            return Err(here(format!(
                "{{{name}}} is not a placeholder of the inputs"
            )));
        }
        let dimension = entry.dimension.clone().unwrap_or_else(|| name.clone());
        let known_dimension = |dimension: &str| {
            if dimensions.contains_key(dimension) {
                Ok(())
            } else {
                Err(here(format!("no [dimensions.{dimension}] is declared")))
            }
        };
        let output_placeholder = |of: &str| {
            if output_names.contains(of) {
                Ok(())
            } else {
                Err(here(format!(
                    "`of = \"{of}\"`: {{{of}}} is not a placeholder of the outputs ({output})"
                )))
            }
        };
        let parsed = match (&entry.window, &entry.map) {
            (Some(_), Some(_)) => {
                return Err(here("an entry has `window` or `map`, not both".into()));
            }
            (None, Some(map)) => {
                if entry.dimension.is_some() {
                    return Err(here(
                        "a `map` lists the values itself: remove `dimension`".into(),
                    ));
                }
                let Some(of) = &entry.of else {
                    return Err(here(
                        "a `map` needs `of = \"PLACEHOLDER\"`: the output placeholder whose value picks the list".into(),
                    ));
                };
                output_placeholder(of)?;
                for (key, values) in map {
                    for value in std::iter::once(key).chain(values) {
                        PartitionRef::from_parts("d", [("k", value.as_str())]).map_err(|_| {
                            here(format!("{value:?} is not a valid partition value (letters, digits and -_.:+@,~; not starting with '.')"))
                        })?;
                    }
                }
                Fan::Map {
                    of: of.clone(),
                    values: map.clone(),
                }
            }
            (Some([from, to]), None) => {
                known_dimension(&dimension)?;
                if from > to {
                    return Err(here(format!(
                        "window [{from}, {to}]: the first offset must not be after the second"
                    )));
                }
                let of = match &entry.of {
                    Some(of) => of.clone(),
                    None if output_names.contains(dimension.as_str()) => dimension.clone(),
                    None => {
                        return Err(here(format!(
                            "a `window` needs `of = \"PLACEHOLDER\"`: the output placeholder whose value it is around ({{{dimension}}} is not one)"
                        )));
                    }
                };
                output_placeholder(&of)?;
                Fan::Window {
                    dimension,
                    of,
                    from: *from,
                    to: *to,
                }
            }
            (None, None) => {
                if entry.of.is_some() {
                    return Err(here("`of` goes with `window` or `map`".into()));
                }
                if output_names.contains(name.as_str()) {
                    return Err(here(format!(
                        "{{{name}}} is a placeholder of the outputs, so inputs take the output's value: \
                         give `window = [FROM, TO]` or `map` to widen it, or use another placeholder name to fan in over every value"
                    )));
                }
                known_dimension(&dimension)?;
                Fan::All { dimension }
            }
        };
        fan.insert(name.clone(), parsed);
    }
    for (pattern, text) in inputs.iter().zip(raw_inputs.get_ref()) {
        for name in pattern.placeholders() {
            if output_names.contains(name) || entries.contains_key(name) {
                continue;
            }
            if !dimensions.contains_key(name) {
                return Err(context.error(
                    text.span(),
                    field.replace(".over", ".inputs"),
                    format!(
                        "{{{name}}} is not a placeholder of the outputs ({output}) and there is no [dimensions.{name}] to fan in over: \
                         add {{{name}}} to the outputs, declare [dimensions.{name}] to read every one of its values, \
                         or say which values with `over.{name} = {{ dimension = \"...\" }}` (every value of another dimension), \
                         `{{ dimension = \"...\", of = \"PLACEHOLDER\", window = [-6, 0] }}` (a range around the output's value) \
                         or `{{ of = \"PLACEHOLDER\", map = {{ VALUE = [\"...\"] }} }}` (listed values); see docs/graph-file.md"
                    ),
                ));
            }
            fan.insert(
                name.to_owned(),
                Fan::All {
                    dimension: name.to_owned(),
                },
            );
        }
    }
    Ok(fan)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = r#"
[datasets.inputs]
source = "inputs/{date}/{station}.txt"
[datasets.raw]
version = "1.0.0"
[datasets.daily]
version = "2.1.0"

[dimensions.date]
start = "2024-02-28"
end = "2024-03-01"
[dimensions.station]
values = ["A", "B"]

[jobs.raw]
outputs = ["raw/date={date}/station={station}"]
inputs = ["inputs/date={date}/station={station}"]
run = ["sh", "-c", "cp $CAIRN_IN $CAIRN_OUT/x"]
args = ["{station}"]

[jobs.daily]
outputs = ["daily/date={date}"]
configure = ["sh", "daily.sh", "configure"]
run = ["sh", "daily.sh", "run"]
"#;

    fn parse(text: &str) -> Result<Graph, GraphError> {
        Graph::parse(text, Path::new("cairn.toml"), Path::new("/project"))
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn durations_use_one_syntax_with_fractions_and_compounds() {
        use std::time::Duration;
        for (text, expected) in [
            ("500ms", Duration::from_millis(500)),
            ("1.5h", Duration::from_secs(5400)),
            ("1h 30m", Duration::from_secs(5400)),
            ("2s", Duration::from_secs(2)),
            ("2d", Duration::from_secs(2 * 86_400)),
            (" 1m ", Duration::from_secs(60)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for bad in ["", "30", "soon", "-1s", "1.5", "5 parsecs"] {
            let error = parse_duration(bad).unwrap_err();
            assert!(
                error.contains("like 500ms, 2s, 1.5h or 1h 30m"),
                "{bad}: {error}"
            );
        }
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h 30m");
    }

    /// `origin` finds what `lookup` finds, but a job's bindings, and fails
    /// with the same errors.
    #[test]
    fn origin_is_lookup_without_the_bindings() {
        let graph = parse(EXAMPLE).unwrap();
        let mut refs = graph.all_partitions().unwrap();
        refs.extend(
            [
                "inputs/date=2024-02-28/station=A",
                "inputs/date=2024-02-28",
                "raw/date=2024-02-28",
                "nothing/date=2024-02-28",
            ]
            .map(|text| PartitionRef::parse(text).unwrap()),
        );
        for partition in &refs {
            match (graph.origin(partition), graph.lookup(partition)) {
                (Ok(Origin::Source { path }), Ok(Producer::Source { path: looked, .. })) => {
                    assert_eq!(path, looked);
                }
                (
                    Ok(Origin::Job(job)),
                    Ok(Producer::Job {
                        job: looked,
                        bindings,
                    }),
                ) => {
                    assert_eq!(job.name, looked);
                    assert_eq!(job.bindings(partition), Some(bindings));
                }
                (Err(error), Err(looked)) => assert_eq!(error, looked),
                (origin, lookup) => panic!("{partition}: {origin:?}, but {lookup:?}"),
            }
        }
    }

    #[test]
    fn parses_the_example_and_enumerates_partitions() {
        let graph = parse(EXAMPLE).unwrap();
        let all = graph.all_partitions().unwrap();
        assert_eq!(all.len(), 3 + 3 * 2);
        assert!(all.iter().any(|p| p.as_str() == "daily/date=2024-02-29"));
        assert!(
            all.iter()
                .any(|p| p.as_str() == "raw/date=2024-03-01/station=B")
        );
        let source = PartitionRef::parse("inputs/date=2024-02-28/station=A").unwrap();
        assert_eq!(
            graph.lookup(&source).unwrap(),
            Producer::Source {
                dataset: "inputs",
                path: PathBuf::from("/project/inputs/2024-02-28/A.txt")
            }
        );
        let raw = PartitionRef::parse("raw/date=2024-02-28/station=A").unwrap();
        assert!(matches!(
            graph.lookup(&raw).unwrap(),
            Producer::Job { job: "raw", .. }
        ));
        assert!(
            graph
                .lookup(&PartitionRef::parse("raw/date=1").unwrap())
                .unwrap_err()
                .contains("no job produces raw/date=1")
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let message = error("[datasets.raw]\nversion = \"1.0.0\"\n[jobs.x\n");
        assert!(message.starts_with("cairn.toml:3: "), "{message}");
    }

    #[test]
    fn unknown_fields_name_the_line_and_field() {
        let message = error("[datasets.raw]\nversoin = \"1.0.0\"\n");
        assert!(message.starts_with("cairn.toml:2"), "{message}");
        assert!(message.contains("versoin"), "{message}");
    }

    #[test]
    fn bad_patterns_name_line_and_field() {
        let text = EXAMPLE.replace(
            "outputs = [\"raw/date={date}/station={station}\"]",
            "outputs = [\"raw/date={date\"]",
        );
        let message = error(&text);
        let line = text
            .lines()
            .position(|l| l.contains("raw/date={date\""))
            .unwrap()
            + 1;
        assert_eq!(
            message,
            format!(
                "cairn.toml:{line}: jobs.raw.outputs: invalid pattern \"raw/date={{date\": placeholder \"{{date\" is not closed"
            )
        );
    }

    #[test]
    fn bad_versions_name_the_field() {
        let message = error(&EXAMPLE.replace("\"2.1.0\"", "\"2.1\""));
        assert!(message.contains("datasets.daily.version"), "{message}");
        assert!(message.contains("not a semantic version"), "{message}");
    }

    #[test]
    fn overlapping_producers_are_refused() {
        let text = format!(
            "{EXAMPLE}\n[jobs.other]\noutputs = [\"raw/date={{d}}/station=A\"]\nrun = [\"true\"]\n"
        );
        let message = error(&text);
        assert!(message.contains("overlaps"), "{message}");
    }

    #[test]
    fn unbound_placeholders_are_refused() {
        let message = error(&EXAMPLE.replace("args = [\"{station}\"]", "args = [\"{region}\"]"));
        assert!(message.contains("jobs.raw.args"), "{message}");
        assert!(message.contains("{region}"), "{message}");
    }

    #[test]
    fn an_input_placeholder_without_a_dimension_says_how_to_fan_in() {
        let text = EXAMPLE.replace(
            "outputs = [\"daily/date={date}\"]\nconfigure = [\"sh\", \"daily.sh\", \"configure\"]",
            "outputs = [\"daily/date={date}\"]\ninputs = [\"raw/date={date}/station={feed}\"]",
        );
        let line = text.lines().position(|l| l.contains("{feed}")).unwrap() + 1;
        assert_eq!(
            error(&text),
            format!(
                "cairn.toml:{line}: jobs.daily.inputs: {{feed}} is not a placeholder of the outputs (daily/date={{date}}) and there is no [dimensions.feed] to fan in over: \
                 add {{feed}} to the outputs, declare [dimensions.feed] to read every one of its values, \
                 or say which values with `over.feed = {{ dimension = \"...\" }}` (every value of another dimension), \
                 `{{ dimension = \"...\", of = \"PLACEHOLDER\", window = [-6, 0] }}` (a range around the output's value) \
                 or `{{ of = \"PLACEHOLDER\", map = {{ VALUE = [\"...\"] }} }}` (listed values); see docs/graph-file.md"
            )
        );
        // Naming the dimension fixes it.
        let fixed = text.replace(
            "{feed}\"]",
            "{feed}\"]\nover.feed = { dimension = \"station\" }",
        );
        let graph = parse(&fixed).unwrap();
        assert_eq!(
            graph.jobs["daily"].fan["feed"],
            Fan::All {
                dimension: "station".into()
            }
        );
        // Without `over`, a placeholder named after a dimension fans in.
        let graph = parse(&text.replace("{feed}", "{station}")).unwrap();
        assert_eq!(
            graph.jobs["daily"].fan["station"],
            Fan::All {
                dimension: "station".into()
            }
        );
        for (over, message) in [
            (
                "over.nope = { dimension = \"station\" }",
                "jobs.daily.over.nope: {nope} is not a placeholder of the inputs",
            ),
            (
                "over.feed = { dimension = \"region\" }",
                "jobs.daily.over.feed: no [dimensions.region] is declared",
            ),
            (
                "over.feed = { dimension = \"station\", window = [0, -1], of = \"date\" }",
                "window [0, -1]: the first offset must not be after the second",
            ),
            (
                "over.feed = { dimension = \"station\", window = [-1, 0] }",
                "a `window` needs `of = \"PLACEHOLDER\"`",
            ),
            (
                "over.feed = { map = { a = [\"x\"] } }",
                "a `map` needs `of = \"PLACEHOLDER\"`",
            ),
            (
                "over.feed = { of = \"zone\", map = { a = [\"x\"] } }",
                "{zone} is not a placeholder of the outputs",
            ),
            (
                "over.feed = { of = \"date\", map = { a = [\"../x\"] } }",
                "\"../x\" is not a valid partition value",
            ),
        ] {
            let text = text.replace("{feed}\"]", &format!("{{feed}}\"]\n{over}"));
            let got = error(&text);
            assert!(got.contains(message), "{over}: {got}");
        }
        // args and env stay bound by the outputs.
        let message = error(&fixed.replace(
            "run = [\"sh\", \"daily.sh\", \"run\"]",
            "run = [\"x\"]\nargs = [\"{feed}\"]",
        ));
        assert!(
            message.contains("jobs.daily.args: {feed} is not a placeholder of the outputs"),
            "{message}"
        );
    }

    #[test]
    fn dimension_errors() {
        let message = error(&EXAMPLE.replace("end = \"2024-03-01\"", "end = \"2024-01-01\""));
        assert!(
            message.contains("dimensions.date.end: end 2024-01-01 is before start 2024-02-28"),
            "{message}"
        );
        let message = error(&EXAMPLE.replace("end = \"2024-03-01\"", "end = \"2024-02-30\""));
        assert!(message.contains("not a valid calendar date"), "{message}");
    }

    #[test]
    fn undeclared_datasets_are_refused() {
        let message = error(&EXAMPLE.replace("[datasets.raw]\nversion = \"1.0.0\"\n", ""));
        assert!(message.contains("dataset \"raw\""), "{message}");
    }

    #[test]
    fn source_dimensions_need_a_declared_source_and_a_record() {
        let text = EXAMPLE.replace(
            "values = [\"A\", \"B\"]",
            "from = \"stations\"\n[sources.stations]\ncommand = [\"sh\", \"api.sh\"]",
        );
        let mut graph = parse(&text).unwrap();
        assert_eq!(graph.sources["stations"].command, ["sh", "api.sh"]);
        assert_eq!(
            graph.all_partitions().unwrap_err(),
            "jobs.raw.outputs: cannot expand raw/date={date}/station={station}: source \"stations\" has no record yet: run `cairn defs refresh stations`"
        );
        graph.set_source_values("stations", vec!["X".into()]);
        assert_eq!(graph.all_partitions().unwrap().len(), 3 + 3);

        let message = error(&EXAMPLE.replace("values = [\"A\", \"B\"]", "from = \"nope\""));
        assert!(
            message.contains("dimensions.station.from: no [sources.nope] is declared"),
            "{message}"
        );
        let message = error(&text.replace(
            "from = \"stations\"",
            "from = \"stations\"\nvalues = [\"A\"]",
        ));
        assert!(
            message.contains("dimensions.station.from: a dimension with `from`"),
            "{message}"
        );
        let message = error(&text.replace("command = [\"sh\", \"api.sh\"]", "command = []"));
        assert!(
            message.contains("sources.stations.command: the command is empty"),
            "{message}"
        );
    }

    #[test]
    fn date_ranges_are_counted_without_listing_and_refs_checked_against_them() {
        let text = EXAMPLE.replace(
            "end = \"2024-03-01\"",
            "end = \"9999-12-31\"\nstep_days = 7",
        );
        let graph = parse(&text).unwrap();
        let dates = &graph.dimensions["date"];
        // 0..=(days / 7): counted, never listed.
        let days = Date::parse("2024-02-28")
            .unwrap()
            .days_until(Date::parse("9999-12-31").unwrap());
        assert_eq!(dates.count(), Some(usize::try_from(days / 7 + 1).unwrap()));
        let check = |text: &str| graph.check_domain(&PartitionRef::parse(text).unwrap());
        assert_eq!(check("raw/date=2024-03-06/station=A"), Ok(()));
        assert_eq!(
            check("raw/date=2024-03-07/station=A").unwrap_err(),
            "raw/date=2024-03-07/station=A: 2024-03-07 is not one of the dates ([dimensions.date]: 2024-02-28..9999-12-31, every 7 days)"
        );
        assert_eq!(
            check("raw/date=2024-02-21/station=A").unwrap_err(),
            "raw/date=2024-02-21/station=A: 2024-02-21 is outside the dates ([dimensions.date]: 2024-02-28..9999-12-31, every 7 days)"
        );
        assert_eq!(
            check("raw/date=2024-03-06/station=a").unwrap_err(),
            "raw/date=2024-03-06/station=a: \"a\" is not a value of [dimensions.station] (\"A\", \"B\")"
        );
        // Refs no job produces are the planner's to refuse.
        assert_eq!(check("nope/x=1"), Ok(()));
    }

    #[test]
    fn code_entries_stay_inside_the_project() {
        let with_code = |code: &str| {
            EXAMPLE.replace(
                "args = [\"{station}\"]",
                &format!("args = [\"{{station}}\"]\ncode = [{code}]"),
            )
        };
        assert!(parse(&with_code("\"jobs/*.sh\", \"./x.py\"")).is_ok());
        let message = error(&with_code("\"../../../usr/**/*\""));
        assert!(
            message.ends_with(
                "jobs.raw.code: \"../../../usr/**/*\" must not contain '..': code files are inside the project"
            ),
            "{message}"
        );
        let message = error(&with_code("\"/etc/passwd\""));
        assert!(
            message.contains("must be relative to the graph file"),
            "{message}"
        );
        let message = error(&with_code("\"jobs/[x\""));
        assert!(message.contains("is not a valid glob"), "{message}");
    }

    #[test]
    fn requests_expand_patterns() {
        let graph = parse(EXAMPLE).unwrap();
        let refs = graph
            .resolve_request("raw/date=2024-02-28/station={station}")
            .unwrap();
        assert_eq!(refs.len(), 2);
        assert!(
            graph
                .resolve_request("raw/date={nope}/station=A")
                .unwrap_err()
                .contains("{nope}")
        );
        assert!(
            graph
                .resolve_request("../../etc")
                .unwrap_err()
                .contains("\"..\" is not allowed")
        );
    }
}
