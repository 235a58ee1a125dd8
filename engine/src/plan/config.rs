//! Job configs: what a job's configure step returns for requested outputs
//! (docs/job-protocol.md), parsed from JSON for executable jobs or templated in-process
//! for declarative ones.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::List;
use crate::graph::{Fan, Graph, Job};
use crate::refs::{Bindings, PartitionRef, Pattern, substitute_text};

/// Answers configure requests: one call per job per wave, with the refs of
/// the job's partitions it is asked for (sorted, distinct). The jobs of one
/// wave are configured concurrently (their answers are taken in job-name
/// order), so a configurer is shared between threads.
///
/// A configurer that templates from a ref's bindings makes them itself
/// ([`bindings_of`]), one ref at a time: the planner does not hold the
/// bindings of a million refs through the call.
pub trait Configurer: Sync {
    /// `wave` is every ref of the wave (all jobs'), sorted and distinct: a
    /// config's input equal to one of them may share its string
    /// ([`Known`]), as the planner would have it share its producer's.
    fn configure(
        &self,
        job: &Job,
        refs: &[PartitionRef],
        wave: &[PartitionRef],
    ) -> Result<Vec<JobConfig>, ConfigureError>;
}

/// Refs a templated config's inputs may share instead of allocating their
/// own: a wave's refs, sorted and distinct. At the 1M scale a million
/// inputs (each clean action's raw partition, each daily's clean ones) are
/// refs of the same wave; each templated string was swapped for its
/// producer's by the planner and freed, 64 MB left as holes between the
/// plan's live blocks, where a dry run's memory then peaked.
#[derive(Debug, Clone, Copy, Default)]
pub struct Known<'a>(pub &'a [PartitionRef]);

impl Known<'_> {
    /// `pattern` substituted by `lookup`: the known ref of that text if
    /// there is one, else a new ref.
    fn substitute<'v>(
        self,
        pattern: &Pattern,
        lookup: impl Fn(&str) -> Option<&'v str>,
    ) -> Result<PartitionRef, crate::refs::RefError> {
        if self.0.is_empty() {
            return pattern.substitute_by(lookup);
        }
        let mut text = String::with_capacity(pattern.as_str().len() + 16);
        pattern.write_by(lookup, &mut text)?;
        match self.find(&text) {
            Some(index) => Ok(self.0[index].clone()),
            None => PartitionRef::parse(&text),
        }
    }

    /// The index of `text` among the known refs. Templated inputs come in
    /// runs (a job's refs are configured in order; a fan-in reads a range
    /// of the wave; a job reading refs of a later wave misses the same gap
    /// of this one again and again), so the place after this thread's last
    /// answer is tried first: the ref there, or the gap before it. Only
    /// then a binary search (20 comparisons of refs sharing long prefixes,
    /// for each of a million inputs at the 1M scale, was a tenth of the dry
    /// run's CPU). The hint only saves comparisons: in sorted, distinct
    /// refs the answer is the binary search's.
    fn find(self, text: &str) -> Option<usize> {
        thread_local! {
            /// Just after the last ref found, or where the last one
            /// missing would have been.
            static NEXT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        }
        let known = self.0;
        let next = NEXT.get();
        if next <= known.len() {
            let after = known.get(next).map(|at| at.as_str().cmp(text));
            if after == Some(std::cmp::Ordering::Equal) {
                NEXT.set(next + 1);
                return Some(next);
            }
            let before_is_less = next == 0 || known[next - 1].as_str() < text;
            if after != Some(std::cmp::Ordering::Less) && before_is_less {
                return None;
            }
        }
        match known.binary_search_by(|at| at.as_str().cmp(text)) {
            Ok(found) => {
                NEXT.set(found + 1);
                Some(found)
            }
            Err(missing) => {
                NEXT.set(missing);
                None
            }
        }
    }
}

/// The bindings of `partition`, a ref `job` is configured for
/// ([`Job::bindings`]); an error naming it if it is none of the job's
/// partitions.
pub fn bindings_of(job: &Job, partition: &PartitionRef) -> Result<Bindings, ConfigureError> {
    job.bindings(partition).ok_or_else(|| {
        let patterns: Vec<&str> = job.outputs.iter().map(Pattern::as_str).collect();
        ConfigureError {
            job: job.name.clone(),
            problem: format!(
                "was asked for {partition}, which is not a partition of this job ({})",
                patterns.join(", ")
            ),
        }
    })
}

/// How a job uses an input. Both kinds enter the action key by content;
/// `query` documents that the job reads the input without needing it
/// materialized (cairn materializes it anyway today).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DepKind {
    #[default]
    Materialize,
    Query,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DataDep {
    #[serde(rename = "ref")]
    pub partition: PartitionRef,
    pub dep: DepKind,
}

/// One parameterization of a job: the unit that becomes an action. Its
/// outputs and inputs are [`List`]s: most configs have one of each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobConfig {
    pub outputs: List<PartitionRef>,
    pub inputs: List<DataDep>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// Why a configure step's answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job {job}: configure {problem}")]
pub struct ConfigureError {
    pub job: String,
    pub problem: String,
}

/// The values a declarative job's fan-in placeholders range over (its
/// `Fan`s with their dimensions' domains looked up), made once per
/// configure call and shared by every config of the call: a window finds
/// the output's value by a hash lookup, so templating stays linear in the
/// inputs it writes.
#[derive(Debug, Default)]
pub struct FanDomains<'job> {
    entries: Vec<(&'job str, Resolved<'job>)>,
}

#[derive(Debug)]
enum Resolved<'job> {
    All(Vec<String>),
    Window {
        values: Vec<String>,
        positions: rustc_hash::FxHashMap<String, usize>,
        dimension: &'job str,
        of: &'job str,
        from: i64,
        to: i64,
    },
    Map {
        of: &'job str,
        values: &'job BTreeMap<String, Vec<String>>,
    },
}

impl<'job> FanDomains<'job> {
    /// Looks up the domains `job`'s fan-in placeholders need; fails naming
    /// a dimension without values (a defs source never refreshed).
    pub fn of(graph: &Graph, job: &'job Job) -> Result<Self, ConfigureError> {
        let mut entries = Vec::with_capacity(job.fan.len());
        for (name, fan) in &job.fan {
            let domain = |dimension: &str| {
                graph.domain(dimension).map_err(|error| ConfigureError {
                    job: job.name.clone(),
                    problem: format!("cannot fan in over {{{name}}}: {error}"),
                })
            };
            let resolved = match fan {
                Fan::All { dimension } => Resolved::All(domain(dimension)?),
                Fan::Window {
                    dimension,
                    of,
                    from,
                    to,
                } => {
                    let values = domain(dimension)?;
                    let positions = values
                        .iter()
                        .enumerate()
                        .map(|(position, value)| (value.clone(), position))
                        .collect();
                    Resolved::Window {
                        values,
                        positions,
                        dimension,
                        of,
                        from: *from,
                        to: *to,
                    }
                }
                Fan::Map { of, values } => Resolved::Map { of, values },
            };
            entries.push((name.as_str(), resolved));
        }
        Ok(FanDomains { entries })
    }

    /// The values placeholder `name` takes for an output with `bindings`;
    /// `None` if it is not a fan-in placeholder.
    fn values(&self, name: &str, bindings: &Bindings) -> Option<Result<&[String], String>> {
        let (_, resolved) = self.entries.iter().find(|(known, _)| *known == name)?;
        Some(match resolved {
            Resolved::All(values) => Ok(values),
            Resolved::Window {
                values,
                positions,
                dimension,
                of,
                from,
                to,
            } => {
                let value = bindings.get(of).unwrap_or_default();
                match positions.get(value) {
                    None => Err(format!(
                        "{{{of}}} = {value:?} is not a value of dimension {dimension}, so the window of {{{name}}} around it is not defined"
                    )),
                    Some(&position) => {
                        let position = position as i64;
                        let last = values.len() as i64 - 1;
                        let start = (position + from).clamp(0, last.max(0));
                        let end = (position + to).min(last);
                        if end < 0 || start > end {
                            Ok(&values[..0])
                        } else {
                            Ok(&values[start as usize..=end as usize])
                        }
                    }
                }
            }
            Resolved::Map { of, values } => {
                let value = bindings.get(of).unwrap_or_default();
                values
                    .get(value)
                    .map(Vec::as_slice)
                    .ok_or_else(|| format!("over.{name}.map has no entry for {{{of}}} = {value:?}"))
            }
        })
    }

    /// `pattern` with its fan-in placeholders expanded (in the order they
    /// appear in it, the last fastest; each in its values' order) and the
    /// others bound from `bindings`, appended to `out`.
    fn expand(
        &self,
        pattern: &Pattern,
        bindings: &Bindings,
        known: Known<'_>,
        out: &mut Vec<PartitionRef>,
    ) -> Result<(), String> {
        let names = pattern.placeholders();
        let mut fanned: Vec<(&str, &[String])> = Vec::new();
        for name in names {
            if let Some(values) = self.values(name, bindings) {
                fanned.push((name, values?));
            }
        }
        if fanned.is_empty() {
            out.push(
                known
                    .substitute(pattern, |name| bindings.get(name))
                    .map_err(|e| e.to_string())?,
            );
            return Ok(());
        }
        if fanned.iter().any(|(_, values)| values.is_empty()) {
            return Ok(());
        }
        let mut positions = vec![0usize; fanned.len()];
        loop {
            let partition = known
                .substitute(pattern, |name| {
                    match fanned.iter().position(|(fan, _)| *fan == name) {
                        Some(index) => Some(fanned[index].1[positions[index]].as_str()),
                        None => bindings.get(name),
                    }
                })
                .map_err(|e| e.to_string())?;
            out.push(partition);
            // The odometer: the last placeholder turns fastest.
            let mut digit = fanned.len();
            loop {
                if digit == 0 {
                    return Ok(());
                }
                digit -= 1;
                positions[digit] += 1;
                if positions[digit] < fanned[digit].1.len() {
                    break;
                }
                positions[digit] = 0;
            }
        }
    }
}

/// Templates a declarative job's config for one output ref. `bindings` come
/// from matching the ref against one of the job's output patterns; `fan`
/// from [`FanDomains::of`] for the same job.
pub fn declarative_config(
    job: &Job,
    bindings: &Bindings,
    fan: &FanDomains<'_>,
) -> Result<JobConfig, ConfigureError> {
    templated_config(job, bindings, None, fan, Known::default())
}

/// [`declarative_config`] for a requested `partition` that the lookup
/// found this job produces, with the bindings made here ([`bindings_of`]),
/// each input that is one of the `known` refs sharing its string. A
/// single-output job's output is `partition` itself, shared rather than
/// templated, validated and allocated again: a million times each at the
/// 1M scale. It is matched once more, by [`bindings_of`], which refuses a
/// ref that is not this job's.
pub fn declarative_config_bound(
    job: &Job,
    partition: &PartitionRef,
    fan: &FanDomains<'_>,
    known: Known<'_>,
) -> Result<JobConfig, ConfigureError> {
    let bindings = bindings_of(job, partition)?;
    let itself = (job.outputs.len() == 1).then(|| List::one(partition.clone()));
    templated_config(job, &bindings, itself, fan, known)
}

fn templated_config(
    job: &Job,
    bindings: &Bindings,
    outputs: Option<List<PartitionRef>>,
    fan: &FanDomains<'_>,
    known: Known<'_>,
) -> Result<JobConfig, ConfigureError> {
    let fail = |problem: String| ConfigureError {
        job: job.name.clone(),
        problem,
    };
    let substitute = |pattern: &crate::refs::Pattern| {
        pattern
            .substitute(bindings)
            .map_err(|error| fail(error.to_string()))
    };
    let outputs = match outputs {
        Some(outputs) => outputs,
        None => job
            .outputs
            .iter()
            .map(substitute)
            .collect::<Result<_, _>>()?,
    };
    let materialize = |partition| DataDep {
        partition,
        dep: DepKind::Materialize,
    };
    let inputs = if job.fan.is_empty() {
        job.inputs
            .iter()
            .map(|pattern| {
                known
                    .substitute(pattern, |name| bindings.get(name))
                    .map(materialize)
                    .map_err(|error| fail(error.to_string()))
            })
            .collect::<Result<_, _>>()?
    } else {
        let mut inputs = Vec::with_capacity(job.inputs.len());
        for pattern in &job.inputs {
            fan.expand(pattern, bindings, known, &mut inputs)
                .map_err(|problem| fail(format!("inputs {pattern}: {problem}")))?;
        }
        inputs.into_iter().map(materialize).collect()
    };
    let args = job
        .args
        .iter()
        .map(|arg| substitute_text(arg, bindings).map_err(&fail))
        .collect::<Result<_, _>>()?;
    let env = job
        .env
        .iter()
        .map(|(name, value)| {
            Ok((
                name.clone(),
                substitute_text(value, bindings).map_err(&fail)?,
            ))
        })
        .collect::<Result<_, ConfigureError>>()?;
    Ok(JobConfig {
        outputs,
        inputs,
        args,
        env,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResponse {
    configs: Vec<RawConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    outputs: Vec<String>,
    #[serde(default)]
    inputs: Vec<RawDep>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawDep {
    Ref(String),
    Full {
        #[serde(rename = "ref")]
        partition: String,
        #[serde(default)]
        dep: DepKind,
    },
}

/// Environment variable names a config may set: not cairn's own protocol
/// variables, and shell-safe names.
fn check_env_name(name: &str) -> Result<(), String> {
    if name.starts_with("CAIRN_") {
        return Err(format!("env {name:?}: CAIRN_ variables are reserved"));
    }
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!("env {name:?} is not a valid variable name"))
    }
}

/// Parses what an executable job's configure printed on stdout.
pub fn parse_configure_output(job: &str, stdout: &[u8]) -> Result<Vec<JobConfig>, ConfigureError> {
    let fail = |problem: String| ConfigureError {
        job: job.to_owned(),
        problem,
    };
    let response: RawResponse = serde_json::from_slice(stdout).map_err(|error| {
        fail(format!(
            "printed invalid JSON (line {}, column {}): {error}; expected {{\"configs\":[{{\"outputs\":[...],\"inputs\":[...],\"args\":[...],\"env\":{{}}}}]}}",
            error.line(),
            error.column()
        ))
    })?;
    let mut configs = Vec::with_capacity(response.configs.len());
    for (index, raw) in response.configs.into_iter().enumerate() {
        let parse = |text: &str, field: &str| {
            PartitionRef::parse(text)
                .map_err(|error| fail(format!("configs[{index}].{field}: {error}")))
        };
        if raw.outputs.is_empty() {
            return Err(fail(format!("configs[{index}].outputs is empty")));
        }
        let outputs = raw
            .outputs
            .iter()
            .map(|text| parse(text, "outputs"))
            .collect::<Result<List<_>, _>>()?;
        let inputs = raw
            .inputs
            .iter()
            .map(|dep| match dep {
                RawDep::Ref(text) => Ok(DataDep {
                    partition: parse(text, "inputs")?,
                    dep: DepKind::Materialize,
                }),
                RawDep::Full { partition, dep } => Ok(DataDep {
                    partition: parse(partition, "inputs")?,
                    dep: *dep,
                }),
            })
            .collect::<Result<List<_>, ConfigureError>>()?;
        for name in raw.env.keys() {
            check_env_name(name).map_err(|problem| fail(format!("configs[{index}].{problem}")))?;
        }
        configs.push(JobConfig {
            outputs,
            inputs,
            args: raw.args,
            env: raw.env,
        });
    }
    Ok(configs)
}

/// Caches the answers of executable jobs' configure steps (docs/internals.md),
/// so that a build whose request, configure command and code did not change
/// spawns no configure process at all.
///
/// An answer is keyed by the job's name, its configure argv, the
/// allow-listed environment, the content of every file in the job's `code`
/// (and of each configure argument that names a file of the project), the
/// request's dimension values and source records, and the requested refs
/// in order. So a configure step may read its request and what its `code`
/// lists; a job
/// whose configure reads anything else (the network, files not listed)
/// opts out with `configure_cache = false` (or by declaring no `code`):
/// such jobs are configured every time ([`Job::caches_configure`]).
///
/// Entries live in `.cairn/configure/<key>.answer`: a header line
/// `cairn-configure-answer/v2 <checksum> <job>`, then the answer in the
/// configure protocol's own JSON (docs/internals.md). The checksum covers
/// the key, the job and the JSON, so an entry edited, truncated or copied
/// under another key's name fails it: a miss, said at `-v`, and configure
/// runs again (`cairn store verify` reports such entries). Entries are
/// written atomically (temp file, rename), and a hit is parsed and
/// validated like a fresh answer. Only builds write entries (`write`);
/// `plan`, `status` and dry runs only read them. At most
/// [`CONFIGURE_CACHE_ENTRIES`] are kept (newest first).
pub struct CachingConfigurer<'a> {
    pub inner: &'a dyn Configurer,
    pub graph: &'a crate::graph::Graph,
    /// The allow-listed variables configure steps see.
    pub passed_env: &'a [(String, String)],
    /// `.cairn/configure`.
    pub dir: std::path::PathBuf,
    pub write: bool,
}

/// How many configure answers the cache keeps.
pub const CONFIGURE_CACHE_ENTRIES: usize = 64;

/// The configure cache's directory, inside the store directory.
pub const CONFIGURE_CACHE_DIR: &str = "configure";

/// The extension of a configure cache entry (`<key>.answer`). Entries of
/// the first layout (`<key>.json`, no checksum) are never read, and are
/// removed when the cache is pruned.
pub const ANSWER_EXTENSION: &str = "answer";

/// The names of the temporary files entries were written to by earlier
/// versions (now `<key>.answer.tmp-…`, [`write_cache_file`], whose
/// extension is not [`ANSWER_EXTENSION`]): a leftover of an interrupted
/// write, never read.
pub const ANSWER_TEMP_PREFIX: &str = "tmp-";

/// The first word of an entry's header line.
const ANSWER_MAGIC: &str = "cairn-configure-answer/v2";

/// The recipe of an entry's checksum.
const ANSWER_RECIPE: &str = "cairn/configure-answer/v1";

/// The checksum of the entry answering for `job` under `key`.
fn answer_checksum(key: &crate::digest::ContentDigest, job: &str, json: &[u8]) -> [u8; 32] {
    crate::digest::KeyHasher::new(ANSWER_RECIPE)
        .digest("key", key)
        .str("job", job)
        .bytes("answer", json)
        .finish()
}

/// The bytes of the entry answering `configs` for `job` under `key`.
fn encode_answer(
    key: &crate::digest::ContentDigest,
    job: &str,
    configs: &[JobConfig],
) -> serde_json::Result<Vec<u8>> {
    #[derive(Serialize)]
    struct Answer<'c> {
        configs: &'c [JobConfig],
    }
    let json = serde_json::to_vec(&Answer { configs })?;
    let checksum = crate::digest::ContentDigest(answer_checksum(key, job, &json));
    let mut bytes = format!("{ANSWER_MAGIC} {} {job}\n", checksum.to_hex()).into_bytes();
    bytes.extend_from_slice(&json);
    Ok(bytes)
}

/// Reads the entry `bytes` stored under `key`: the job it answers for and
/// its configs, or why it is not to be believed (a header, checksum or
/// answer that is not right).
pub fn decode_answer(
    key: &crate::digest::ContentDigest,
    bytes: &[u8],
) -> Result<(String, Vec<JobConfig>), String> {
    let newline = bytes
        .iter()
        .position(|&byte| byte == b'\n')
        .ok_or("no header line (truncated, or not a configure answer)")?;
    let header = std::str::from_utf8(&bytes[..newline])
        .map_err(|_| "the header line is not UTF-8".to_owned())?;
    let json = &bytes[newline + 1..];
    let mut words = header.split(' ');
    let (Some(magic), Some(checksum), Some(job), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err("malformed header line".into());
    };
    if magic != ANSWER_MAGIC {
        return Err("not a configure answer of this layout".into());
    }
    let checksum: crate::digest::ContentDigest = checksum
        .parse()
        .map_err(|_| "malformed checksum in the header line".to_owned())?;
    if checksum.0 != answer_checksum(key, job, json) {
        return Err("checksum mismatch (edited, truncated, or another key's answer)".into());
    }
    let configs = parse_configure_output(job, json)
        .map_err(|error| format!("the answer is refused: {}", error.problem))?;
    Ok((job.to_owned(), configs))
}

/// Opens a cache file for reading without blocking on a FIFO, and refuses
/// anything that is not a regular file (a directory, a device, a link).
pub fn open_cache_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// Writes `bytes` as the cache file `path`, whole: to a temporary file
/// beside it (`<name>.tmp-<pid>-<n>`, one name per write, so that builds
/// of one process never share one), renamed over `path`. Not synced: a
/// cache file is checked when read, and a lost one is a miss.
pub fn write_cache_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let temporary = path.with_file_name(name);
    std::fs::write(&temporary, bytes)
        .and_then(|()| std::fs::rename(&temporary, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&temporary);
        })
}

/// Writes the sealed cache file `path` ([`write_cache_file`]): `magic`,
/// the caller's fixed-length `header`, blake3 of `body`, then `body`.
/// [`unseal`] reads it back.
pub fn write_sealed_cache_file(
    path: &std::path::Path,
    magic: &[u8],
    header: &[u8],
    body: &[u8],
) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(magic.len() + header.len() + 32 + body.len());
    bytes.extend_from_slice(magic);
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&crate::digest::ContentDigest::of(body).0);
    bytes.extend_from_slice(body);
    write_cache_file(path, &bytes)
}

/// Why the bytes of a sealed cache file are not believed ([`unseal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsealed {
    /// Another magic, or shorter than the magic, header and digest.
    OtherMagic,
    /// The body does not match its digest (altered or cut short).
    Altered,
}

/// The header (`header_len` bytes) and the body of a file that
/// [`write_sealed_cache_file`] wrote with `magic`, if its body matches its
/// digest.
pub fn unseal<'b>(
    bytes: &'b [u8],
    magic: &[u8],
    header_len: usize,
) -> Result<(&'b [u8], &'b [u8]), Unsealed> {
    let rest = bytes.strip_prefix(magic).ok_or(Unsealed::OtherMagic)?;
    if rest.len() < header_len + 32 {
        return Err(Unsealed::OtherMagic);
    }
    let (header, rest) = rest.split_at(header_len);
    let (digest, body) = rest.split_at(32);
    if crate::digest::ContentDigest::of(body).0[..] != *digest {
        return Err(Unsealed::Altered);
    }
    Ok((header, body))
}

/// Reads a whole cache file ([`open_cache_file`]).
fn read_cache_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut open_cache_file(path)?, &mut bytes)?;
    Ok(bytes)
}

/// `cairn store verify`'s check of the configure cache entry at `path`
/// (named `<key>.answer`): the job it answers for, or why no build would
/// believe it.
pub fn check_cached_answer(path: &std::path::Path) -> Result<String, String> {
    let key: crate::digest::ContentDigest = path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .and_then(|stem| stem.parse().ok())
        .ok_or("not named by a cache key")?;
    let bytes = read_cache_file(path).map_err(|error| format!("unreadable: {error}"))?;
    decode_answer(&key, &bytes).map(|(job, _)| job)
}

impl Configurer for CachingConfigurer<'_> {
    fn configure(
        &self,
        job: &Job,
        refs: &[PartitionRef],
        wave: &[PartitionRef],
    ) -> Result<Vec<JobConfig>, ConfigureError> {
        let started = std::time::Instant::now();
        let configs = self.configure_cached(job, refs, wave)?;
        tracing::debug!(
            "configure {}: {} refs, {} configs ({:.2?})",
            job.name,
            refs.len(),
            configs.len(),
            started.elapsed()
        );
        Ok(configs)
    }
}

impl CachingConfigurer<'_> {
    fn configure_cached(
        &self,
        job: &Job,
        refs: &[PartitionRef],
        wave: &[PartitionRef],
    ) -> Result<Vec<JobConfig>, ConfigureError> {
        let Some(key) = job
            .configure
            .as_ref()
            .and_then(|argv| self.key(job, argv, refs))
        else {
            return self.inner.configure(job, refs, wave);
        };
        let path = self
            .dir
            .join(format!("{}.{ANSWER_EXTENSION}", key.to_hex()));
        let refused = match read_cache_file(&path) {
            Ok(bytes) => match decode_answer(&key, &bytes) {
                Ok((answered, configs)) if answered == job.name => return Ok(configs),
                Ok((answered, _)) => format!("it answers for job {answered}"),
                Err(why) => why,
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => format!("unreadable: {error}"),
        };
        if !refused.is_empty() {
            tracing::info!(
                "configure answer {} of job {} ignored: {refused}; running configure again",
                path.display(),
                job.name
            );
        }
        let configs = self.inner.configure(job, refs, wave)?;
        if self.write
            && let Err(error) = self.store(&path, &key, &job.name, &configs)
        {
            tracing::warn!(
                "could not cache the configure answer of job {}: {error}",
                job.name
            );
        }
        Ok(configs)
    }

    /// The cache key, or `None` if the job's answers are not cached (no
    /// `code`, or `configure_cache = false`) or its code cannot be read
    /// (configure then reports it).
    fn key(
        &self,
        job: &Job,
        argv: &[String],
        refs: &[PartitionRef],
    ) -> Option<crate::digest::ContentDigest> {
        if !job.caches_configure() {
            return None;
        }
        let mut files = crate::code::code_files(self.graph, job).ok()?;
        files.extend(
            argv.iter()
                .filter(|arg| {
                    !arg.starts_with('/')
                        && !arg.contains("..")
                        && self.graph.root.join(arg).is_file()
                })
                .map(|arg| arg.trim_start_matches("./").to_owned()),
        );
        files.sort();
        files.dedup();
        // v2: the request's dimension values and source records.
        let mut hasher = crate::digest::KeyHasher::new("cairn/configure/v2");
        hasher.str("job", &job.name);
        hasher.u64("argv", argv.len() as u64);
        for arg in argv {
            hasher.str("arg", arg);
        }
        hasher.u64("env", self.passed_env.len() as u64);
        for (name, value) in self.passed_env {
            hasher.str("env.name", name).str("env.value", value);
        }
        hasher.u64("code", files.len() as u64);
        for file in &files {
            let digest = crate::observe::hash_file(&self.graph.root.join(file)).ok()?;
            hasher.str("path", file).digest("content", &digest);
        }
        let context = serde_json::to_vec(&self.graph.configure_context()).ok()?;
        hasher.bytes("context", &context);
        hasher.u64("refs", refs.len() as u64);
        for partition in refs {
            hasher.str("ref", partition.as_str());
        }
        Some(crate::digest::ContentDigest(hasher.finish()))
    }

    fn store(
        &self,
        path: &std::path::Path,
        key: &crate::digest::ContentDigest,
        job: &str,
        configs: &[JobConfig],
    ) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let bytes = encode_answer(key, job, configs).map_err(std::io::Error::other)?;
        // Answers of one wave, and the same answer of two builds of one
        // process (a held workspace), are stored concurrently: one
        // temporary file per write.
        write_cache_file(path, &bytes)?;
        self.prune();
        Ok(())
    }

    /// Keeps the newest [`CONFIGURE_CACHE_ENTRIES`] answers, and removes
    /// entries of the first layout (never read).
    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut answers: Vec<(std::time::SystemTime, std::path::PathBuf)> = Vec::new();
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(ANSWER_TEMP_PREFIX)
            {
                continue;
            }
            let path = entry.path();
            match path.extension().and_then(|extension| extension.to_str()) {
                Some(ANSWER_EXTENSION) => {
                    if let Some(modified) = entry.metadata().ok().and_then(|m| m.modified().ok()) {
                        answers.push((modified, path));
                    }
                }
                Some("json") => {
                    let _ = std::fs::remove_file(path);
                }
                _ => {}
            }
        }
        if answers.len() <= CONFIGURE_CACHE_ENTRIES {
            return;
        }
        answers.sort();
        let excess = answers.len() - CONFIGURE_CACHE_ENTRIES;
        for (_, path) in answers.into_iter().take(excess) {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sealed file gives back its header and body; another magic, any
    /// cut and any altered byte are refused, as what they are.
    #[test]
    fn a_sealed_cache_file_is_believed_only_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sealed");
        write_sealed_cache_file(&path, b"magic\n", b"head", b"the body").unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            unseal(&bytes, b"magic\n", 4),
            Ok((&b"head"[..], &b"the body"[..]))
        );
        assert_eq!(unseal(&bytes, b"other\n", 4), Err(Unsealed::OtherMagic));
        for cut in 0..bytes.len() {
            let expected = if cut < 6 + 4 + 32 {
                Unsealed::OtherMagic
            } else {
                Unsealed::Altered
            };
            assert_eq!(
                unseal(&bytes[..cut], b"magic\n", 4),
                Err(expected),
                "cut at {cut}"
            );
        }
        for at in 6 + 4..bytes.len() {
            let mut altered = bytes.clone();
            altered[at] ^= 1;
            assert_eq!(
                unseal(&altered, b"magic\n", 4),
                Err(Unsealed::Altered),
                "byte {at}"
            );
        }
    }

    /// Whatever the order of the lookups (in runs, backwards, absent
    /// refs between them), a known ref is found where the binary search
    /// finds it, and an unknown one is not found.
    #[test]
    fn known_refs_are_found_in_any_order() {
        let wave: Vec<PartitionRef> = (0..200)
            .map(|i| PartitionRef::parse(&format!("raw/n={:04}", i * 2)).unwrap())
            .collect();
        let known = Known(&wave);
        let mut queries: Vec<usize> = (0..400).collect();
        queries.extend((0..400).rev());
        queries.extend((0..400).map(|i| (i * 7919) % 400));
        for query in queries {
            let text = format!("raw/n={query:04}");
            let expected = wave.binary_search_by(|k| k.as_str().cmp(&text)).ok();
            assert_eq!(known.find(&text), expected, "{text}");
            assert_eq!(expected.is_some(), query % 2 == 0);
        }
        // Before the first, after the last, and twice the same.
        for text in [
            "a/n=1",
            "a/n=1",
            "raw/n=0000",
            "zz/n=1",
            "zz/n=1",
            "raw/n=0398",
        ] {
            let expected = wave.binary_search_by(|k| k.as_str().cmp(text)).ok();
            assert_eq!(known.find(text), expected, "{text}");
        }
    }

    #[test]
    fn parses_strings_and_objects_as_inputs() {
        let json = br#"{"configs":[{"outputs":["daily/date=1"],"inputs":["clean/date=1/s=a",{"ref":"clean/date=1/s=b","dep":"query"}],"args":["1"],"env":{"MODE":"fast"}}]}"#;
        let configs = parse_configure_output("daily", json).unwrap();
        assert_eq!(configs.len(), 1);
        assert_eq!(configs[0].inputs[1].dep, DepKind::Query);
        assert_eq!(configs[0].env["MODE"], "fast");
    }

    #[test]
    fn bad_output_names_job_field_and_ref() {
        let json = br#"{"configs":[{"outputs":["../../etc"]}]}"#;
        let error = parse_configure_output("daily", json)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            r#"job daily: configure configs[0].outputs: invalid partition ref "../../etc": segment ".." is not allowed"#
        );
    }

    #[test]
    fn invalid_json_names_position() {
        let error = parse_configure_output("daily", b"{\"configs\": [")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("job daily: configure printed invalid JSON (line 1"),
            "{error}"
        );
        let error =
            parse_configure_output("daily", br#"{"configs":[{"outputs":["a"],"extra":1}]}"#)
                .unwrap_err()
                .to_string();
        assert!(error.contains("extra"), "{error}");
    }

    fn answer() -> (crate::digest::ContentDigest, Vec<u8>) {
        let json = br#"{"configs":[{"outputs":["daily/date=1"],"inputs":["clean/date=1/s=a","clean/date=1/s=b"],"args":["1"]}]}"#;
        let configs = parse_configure_output("daily", json).unwrap();
        let key = crate::digest::ContentDigest::of(b"key");
        (key, encode_answer(&key, "daily", &configs).unwrap())
    }

    #[test]
    fn a_cached_answer_reads_back_under_its_key_only() {
        let (key, bytes) = answer();
        let (job, configs) = decode_answer(&key, &bytes).unwrap();
        assert_eq!(job, "daily");
        assert_eq!(configs[0].inputs.len(), 2);
        let error = decode_answer(&crate::digest::ContentDigest::of(b"other"), &bytes).unwrap_err();
        assert!(error.contains("checksum mismatch"), "{error}");
    }

    #[test]
    fn an_edited_or_truncated_cached_answer_is_refused() {
        let (key, bytes) = answer();
        let text = String::from_utf8(bytes.clone()).unwrap();
        // An input dropped: still a well-formed answer.
        let dropped = text.replacen(r#",{"ref":"clean/date=1/s=b","dep":"materialize"}"#, "", 1);
        assert_ne!(dropped, text);
        // Another job named in the header.
        let renamed = text.replacen(" daily\n", " other\n", 1);
        assert_ne!(renamed, text);
        for edited in [dropped.as_bytes(), renamed.as_bytes()] {
            let error = decode_answer(&key, edited).unwrap_err();
            assert!(error.contains("checksum mismatch"), "{error}");
        }
        for length in 0..bytes.len() {
            assert!(decode_answer(&key, &bytes[..length]).is_err(), "{length}");
        }
        let json = &bytes[bytes.iter().position(|&b| b == b'\n').unwrap() + 1..];
        let error = decode_answer(&key, json).unwrap_err();
        assert!(error.contains("header"), "{error}");
    }

    #[test]
    fn reserved_env_is_refused() {
        let json = br#"{"configs":[{"outputs":["a"],"env":{"CAIRN_OUT":"/etc"}}]}"#;
        let error = parse_configure_output("j", json).unwrap_err().to_string();
        assert!(error.contains("reserved"), "{error}");
    }
}
