//! Read-only evaluation of a plan: for each action, whether it is up to date,
//! would be restored, or would run and why — without running, restoring or
//! recording anything. Shared by `build --dry-run`, `plan` and `status`.

use rayon::prelude::*;

use crate::digest::{ActionKey, ContentDigest};
use crate::exec::{Context, Decision, ExecError, code_digests};
use crate::observe::Observer;
use crate::plan::{InputSource, Plan};
use crate::record::BuildCounts;
use crate::refs::PartitionRef;

/// What a build would do with one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Built under this key and intact: reused.
    UpToDate { key: ActionKey, built_by: u64 },
    /// Built under this key, but a data path is missing or altered: restored
    /// from the store without running the job.
    Restore { key: ActionKey },
    /// The job would run. The key is `None` when evaluation skipped it: a
    /// catalog that records nothing cannot match any key
    /// ([`evaluate`]; [`evaluate_with_keys`] always computes it).
    Run {
        key: Option<ActionKey>,
        /// Shared when it is a fixed sentence ("never built": half a
        /// million of them in the dry run of an unbuilt 1M graph).
        reason: std::borrow::Cow<'static, str>,
    },
    /// The job would run if an upstream rebuild changes its input; the key is
    /// not known until then. (The reason is made when asked for: a million
    /// of them would be a hundred megabytes of the same sentence.)
    Pending { input: PartitionRef },
    /// An input cannot be produced (a missing source file).
    Blocked { reason: String },
}

impl Verdict {
    /// A short state word: `up-to-date`, `restore`, `run` or `blocked`.
    pub fn state(&self) -> &'static str {
        match self {
            Verdict::UpToDate { .. } => "up-to-date",
            Verdict::Restore { .. } => "restore",
            Verdict::Run { .. } | Verdict::Pending { .. } => "run",
            Verdict::Blocked { .. } => "blocked",
        }
    }

    /// The state word and a one-line reason.
    pub fn describe(&self) -> (&'static str, String) {
        (self.state(), self.reason().to_string())
    }

    /// The one-line reason, made when displayed (a listing of a million
    /// writes each into its buffer instead of allocating it).
    pub fn reason(&self) -> Reason<'_> {
        Reason(self)
    }

    /// Why an action waiting on `input` would run.
    pub fn pending_reason(input: &PartitionRef) -> String {
        PendingReason(input).to_string()
    }

    /// Counts as `build` would report them if every job succeeded and every
    /// upstream rebuild changed its output (early cutoff can only lower them).
    pub fn count(verdicts: &[Verdict]) -> BuildCounts {
        let mut counts = BuildCounts::default();
        for verdict in verdicts {
            match verdict {
                Verdict::UpToDate { .. } | Verdict::Restore { .. } => counts.cached += 1,
                Verdict::Run { .. } | Verdict::Pending { .. } => counts.executed += 1,
                Verdict::Blocked { .. } => counts.skipped += 1,
            }
        }
        counts
    }
}

/// [`Verdict::reason`].
pub struct Reason<'a>(&'a Verdict);

impl std::fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Verdict::UpToDate { built_by, .. } => {
                write!(f, "reuses the result of build {built_by}")
            }
            Verdict::Restore { .. } => {
                f.write_str("data path missing or altered; restored from the store")
            }
            Verdict::Run { reason, .. } => f.write_str(reason),
            Verdict::Blocked { reason } => f.write_str(reason),
            Verdict::Pending { input } => PendingReason(input).fmt(f),
        }
    }
}

struct PendingReason<'a>(&'a PartitionRef);

impl std::fmt::Display for PendingReason<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "input {} will be rebuilt", self.0)
    }
}

/// Evaluates every action of `plan` (see [`evaluate_with_keys`]), without
/// the keys no store record can match. Against a catalog that records
/// nothing (a store never built in) every action would run and no key
/// could match one, so none is computed: sources are listed, not hashed
/// ([`evaluate_unbuilt`]) — at a million partitions, hashing half a million
/// source files was most of a dry run's evaluation. Otherwise the same
/// holds of each action none of whose outputs any event ever named
/// ([`EventLog::never_named`](crate::ports::EventLog::never_named)): it
/// runs, "never built", and its key is not computed, nor are the sources
/// only such actions read hashed (a store with one date of a year built
/// hashed every other date's sources for the keys of actions that can only
/// run).
pub fn evaluate(context: &Context<'_>, plan: &Plan) -> Result<Vec<Verdict>, ExecError> {
    if context.catalog.records_nothing()? {
        return evaluate_unbuilt(context, plan);
    }
    evaluate_keyed(context, plan, true)
}

/// Evaluates every action of `plan`, with the key of every action whose
/// inputs are known: level by level (an action's level is one more than
/// its deepest upstream action's), the actions of one level in parallel on
/// rayon's pool — at a million partitions the work is observing every
/// source and output through the stat cache, which is independent per
/// action once its inputs' digests are known.
pub fn evaluate_with_keys(context: &Context<'_>, plan: &Plan) -> Result<Vec<Verdict>, ExecError> {
    evaluate_keyed(context, plan, false)
}

/// A source as evaluation observed it.
enum Observed {
    /// Hashed: its content's digest.
    Hashed(ContentDigest),
    /// Listed, not read: present, and read only by actions whose key is
    /// not computed.
    Listed,
    /// Missing or refused: the reason its readers are blocked.
    Unusable(String),
}

/// [`evaluate_with_keys`]; with `skip_unnamed`, an action none of whose
/// outputs an event ever named gets no key (see [`evaluate`]).
fn evaluate_keyed(
    context: &Context<'_>,
    plan: &Plan,
    skip_unnamed: bool,
) -> Result<Vec<Verdict>, ExecError> {
    let observer = Observer::new(context.catalog);
    let mut scratch = Vec::new();
    let codes = code_digests(
        context.graph,
        plan.actions.iter().map(|a| &*a.job),
        &observer,
        &mut scratch,
    )?;
    let unnamed: Vec<bool> = if skip_unnamed {
        plan.actions
            .par_iter()
            .map(|action| {
                for output in &action.config.outputs {
                    if !context.catalog.never_named(output)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            })
            .collect::<Result<_, crate::ports::StoreError>>()?
    } else {
        vec![false; plan.actions.len()]
    };
    // A source read by an action whose key is computed is hashed; one
    // read only by unnamed actions is listed.
    let mut hashed = vec![false; plan.sources.len()];
    for (action, unnamed) in plan.actions.iter().zip(&unnamed) {
        if !unnamed {
            for input in &action.inputs {
                if let InputSource::Source { source } = *input {
                    hashed[source] = true;
                }
            }
        }
    }
    let sources = observe_sources(context, plan, &hashed);
    let mut outputs = OutputDigests::new(plan);
    let mut verdicts: Vec<Option<Verdict>> = vec![None; plan.actions.len()];
    for level in levels(plan) {
        // A level at a time would hold a level's results at once (half a
        // million at the 1M scale): a batch at a time holds a batch's.
        for batch in level.chunks(EVALUATION_BATCH) {
            let evaluated: Vec<(usize, Verdict, Option<Vec<ContentDigest>>)> = batch
                .par_iter()
                .map(|&index| {
                    let (verdict, digests) = evaluate_one(
                        context,
                        plan,
                        index,
                        unnamed[index],
                        &codes,
                        &sources,
                        &outputs,
                        &verdicts,
                    )?;
                    Ok((index, verdict, digests))
                })
                .collect::<Result<_, ExecError>>()?;
            for (index, verdict, digests) in evaluated {
                if let Some(digests) = digests {
                    outputs.set(index, &digests);
                }
                verdicts[index] = Some(verdict);
            }
        }
    }
    Ok(verdicts
        .into_iter()
        .map(|verdict| verdict.expect("every action is in the order"))
        .collect())
}

/// Each source of `plan`, hashed where `hashed` says, else listed
/// ([`list_source`]), on rayon's pool in chunks (a chunk shares its
/// directories' file descriptors).
fn observe_sources(context: &Context<'_>, plan: &Plan, hashed: &[bool]) -> Vec<Observed> {
    const CHUNK: usize = 512;
    plan.sources
        .par_chunks(CHUNK)
        .zip(hashed.par_chunks(CHUNK))
        .flat_map_iter(|(chunk, hashed)| {
            let mut bases = crate::observe::Bases::default();
            chunk
                .iter()
                .zip(hashed)
                .map(|(source, &hashed)| {
                    if !hashed {
                        return match list_source(&mut bases, source) {
                            None => Observed::Listed,
                            Some(reason) => Observed::Unusable(reason),
                        };
                    }
                    let observer = Observer::new(context.catalog);
                    match observer.partition(&source.path, &mut Vec::new()) {
                        Ok(Some((digest, _))) => Observed::Hashed(digest),
                        Ok(None) => Observed::Unusable(source.missing()),
                        Err(error) => Observed::Unusable(source.unreadable(error)),
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Lists every source of `plan` ([`list_source`]); returns the reasons of
/// those its readers cannot read, by source index. Only these are kept:
/// an [`Observed`] per source was 20 MB at the 1M scale, alive beside the
/// million verdicts at the end of a dry run, where its memory peaks.
///
/// Sources in one directory (consecutive in the plan, whose refs are
/// sorted: a source template's directories come from its leading
/// dimensions) are listed by reading the directory once
/// ([`RegularFiles`]) rather than by a stat each: 500,050 `fstatat` at the
/// 1M scale, each walking its path's last components, were a tenth of the
/// dry run's CPU. A source not listed as a regular file there is listed
/// as before, so the reasons are the same.
fn unusable_sources(plan: &Plan) -> rustc_hash::FxHashMap<usize, String> {
    const CHUNK: usize = 512;
    let sources = &plan.sources;
    // The directory's part of each path, as bytes up to its last `/`
    // (`Path::parent` parses every component: a sequential 50 ms at the
    // 1M scale); a run's directory is then found with `Path::parent`.
    let directory = |index: usize| {
        let path = sources[index].path.as_os_str().as_encoded_bytes();
        &path[..path.iter().rposition(|&byte| byte == b'/').unwrap_or(0)]
    };
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    let mut start = 0;
    for index in 1..=sources.len() {
        if index == sources.len() || directory(index) != directory(start) {
            runs.push(start..index);
            start = index;
        }
    }
    // The sources of `range` (in one run, in `directory`, read as `listed`)
    // that cannot be read, each with its reason.
    let unusable_in = |bases: &mut crate::observe::Bases,
                       range: std::ops::Range<usize>,
                       directory: Option<&std::path::Path>,
                       listed: Option<&RegularFiles>| {
        range
            .filter_map(|index| {
                let source = &sources[index];
                // (A path ending in `/` has the directory above as its
                // parent: not the run's.)
                let present = listed.is_some_and(|listed| {
                    source.path.parent() == directory
                        && source
                            .path
                            .file_name()
                            .is_some_and(|name| listed.names.contains(name))
                });
                if present {
                    return None;
                }
                list_source(bases, source).map(|reason| (index, reason))
            })
            .collect::<Vec<(usize, String)>>()
    };
    // One `Bases` per rayon task, kept across the runs it takes (a run of
    // one source per directory would otherwise open and close the
    // directory its stats are relative to for each); a long run is split
    // into chunks checked in parallel.
    runs.par_iter()
        .map_init(crate::observe::Bases::default, |bases, run| {
            let directory = sources[run.start].path.parent();
            let listed = match directory {
                Some(directory) if run.len() >= RegularFiles::WORTH_READING => {
                    RegularFiles::of(directory)
                }
                _ => None,
            };
            if run.len() <= CHUNK {
                return unusable_in(bases, run.clone(), directory, listed.as_ref());
            }
            (0..run.len().div_ceil(CHUNK))
                .into_par_iter()
                .map_init(crate::observe::Bases::default, |bases, chunk| {
                    let start = run.start + chunk * CHUNK;
                    let end = (start + CHUNK).min(run.end);
                    unusable_in(bases, start..end, directory, listed.as_ref())
                })
                .flatten_iter()
                .collect()
        })
        .flatten_iter()
        .collect()
}

/// The names of a directory's regular files, read with `readdir` (the type
/// from the entry itself where the file system records it, as ext4 does;
/// a stat otherwise): each of them is a plain file that [`list_source`]
/// would find with its `lstat`.
struct RegularFiles {
    names: rustc_hash::FxHashSet<std::ffi::OsString>,
}

impl RegularFiles {
    /// Fewer sources in a directory are stat'ed one by one.
    const WORTH_READING: usize = 32;

    /// `None` if the directory cannot be read, or if its files cannot be
    /// stat'ed through it (a directory that can be read but not searched:
    /// checked on one of its files), so that each source is stat'ed.
    fn of(directory: &std::path::Path) -> Option<Self> {
        let mut names = rustc_hash::FxHashSet::default();
        for entry in std::fs::read_dir(directory).ok()? {
            let entry = entry.ok()?;
            if entry.file_type().ok()?.is_file() {
                names.insert(entry.file_name());
            }
        }
        let searchable = names.iter().next().is_none_or(|name| {
            std::fs::symlink_metadata(directory.join(name)).is_ok_and(|meta| meta.is_file())
        });
        searchable.then_some(RegularFiles { names })
    }
}

/// Lists `source` without reading it: `None` when it is present (a plain
/// file, stat'ed relative to a directory two components up, as the
/// up-to-date snapshot's paths are: most of the cost of a full path's stat
/// is walking its components; or anything a walk lists), else why its
/// readers are blocked. An unreadable file is found by the build that
/// reads it.
fn list_source(
    bases: &mut crate::observe::Bases,
    source: &crate::plan::SourceNode,
) -> Option<String> {
    let plain_file = source
        .path
        .to_str()
        .filter(|_| source.path.is_absolute())
        .and_then(|path| bases.lstat(path))
        .is_some_and(|fields| fields.is_file());
    if plain_file {
        return None;
    }
    match crate::observe::list_files(&source.path) {
        Ok(Some(_)) => None,
        Ok(None) => Some(source.missing()),
        Err(error) => Some(source.unreadable(error)),
    }
}

/// Actions evaluated per parallel step (within a level).
const EVALUATION_BATCH: usize = 65_536;

/// The output digests of the evaluated actions whose outputs are known, in
/// one array: a vector per action was 72 MB at a million actions.
struct OutputDigests {
    /// Where each action's digests start in `digests` (one more entry than
    /// actions: the end of the last).
    start: Vec<usize>,
    digests: Vec<ContentDigest>,
    known: Vec<bool>,
}

impl OutputDigests {
    fn new(plan: &Plan) -> Self {
        let mut start = Vec::with_capacity(plan.actions.len() + 1);
        let mut total = 0;
        for action in &plan.actions {
            start.push(total);
            total += action.config.outputs.len();
        }
        start.push(total);
        OutputDigests {
            start,
            digests: vec![ContentDigest([0; 32]); total],
            known: vec![false; plan.actions.len()],
        }
    }

    /// The digests of `action`'s outputs, if known.
    fn get(&self, action: usize) -> Option<&[ContentDigest]> {
        self.known[action].then(|| &self.digests[self.start[action]..self.start[action + 1]])
    }

    /// Records `action`'s output digests; a manifest that does not have
    /// one per output of the action leaves them unknown.
    fn set(&mut self, action: usize, digests: &[ContentDigest]) {
        let slot = &mut self.digests[self.start[action]..self.start[action + 1]];
        if slot.len() == digests.len() {
            slot.copy_from_slice(digests);
            self.known[action] = true;
        }
    }
}

/// The actions of `plan` grouped by level, each level in topological order.
fn levels(plan: &Plan) -> Vec<Vec<usize>> {
    let mut level = vec![0usize; plan.actions.len()];
    let mut levels: Vec<Vec<usize>> = Vec::new();
    for &index in &plan.order {
        let depth = plan.actions[index]
            .inputs
            .iter()
            .filter_map(|input| match *input {
                InputSource::Action { action, .. } => Some(level[action] + 1),
                InputSource::Source { .. } => None,
            })
            .max()
            .unwrap_or(0);
        level[index] = depth;
        if levels.len() <= depth {
            levels.resize_with(depth + 1, Vec::new);
        }
        levels[depth].push(index);
    }
    levels
}

/// The verdict of one action whose upstream actions are evaluated, with its
/// outputs' digests when they are known.
#[allow(clippy::too_many_arguments)]
fn evaluate_one(
    context: &Context<'_>,
    plan: &Plan,
    index: usize,
    unnamed: bool,
    codes: &std::collections::HashMap<String, Option<ContentDigest>>,
    sources: &[Observed],
    outputs: &OutputDigests,
    verdicts: &[Option<Verdict>],
) -> Result<(Verdict, Option<Vec<ContentDigest>>), ExecError> {
    let action = &plan.actions[index];
    let mut resolved = Vec::with_capacity(action.inputs.len());
    for (dep, input) in action.config.inputs.iter().zip(&action.inputs) {
        match *input {
            InputSource::Source { source } => match &sources[source] {
                Observed::Hashed(digest) => resolved.push(crate::exec::ResolvedInput {
                    partition: dep.partition.clone(),
                    digest: *digest,
                    path: plan.sources[source].path.clone(),
                }),
                Observed::Listed if unnamed => {}
                Observed::Listed => {
                    unreachable!("a source an action with a key reads is hashed")
                }
                Observed::Unusable(error) => {
                    return Ok((
                        Verdict::Blocked {
                            reason: error.clone(),
                        },
                        None,
                    ));
                }
            },
            InputSource::Action {
                action: upstream,
                output,
            } => match (outputs.get(upstream), &verdicts[upstream]) {
                (Some(digests), _) => resolved.push(crate::exec::ResolvedInput {
                    partition: dep.partition.clone(),
                    digest: digests[output],
                    path: context.data_path(&dep.partition),
                }),
                (None, Some(Verdict::Blocked { reason })) => {
                    return Ok((
                        Verdict::Blocked {
                            reason: reason.clone(),
                        },
                        None,
                    ));
                }
                (None, _) => {
                    return Ok((
                        Verdict::Pending {
                            input: dep.partition.clone(),
                        },
                        None,
                    ));
                }
            },
        }
    }
    if unnamed {
        // What `decide` concludes with any key: no event named an output,
        // so no state, invalidation, manifest or checkpoint applies.
        return Ok((
            Verdict::Run {
                key: None,
                reason: crate::exec::NEVER_BUILT.into(),
            },
            None,
        ));
    }
    let code = codes.get(&*action.job).copied().flatten();
    let key = context.key(action, &resolved, code);
    let decision = context
        .decide(action, &key, &resolved, code, &mut Vec::new())
        .map_err(ExecError::Code)?;
    Ok(match decision {
        Decision::UpToDate { manifest, .. } => (
            Verdict::UpToDate {
                key,
                built_by: manifest.build,
            },
            Some(manifest.outputs.iter().map(|o| o.digest).collect()),
        ),
        Decision::Restore { manifest, .. } => (
            Verdict::Restore { key },
            Some(manifest.outputs.iter().map(|o| o.digest).collect()),
        ),
        Decision::Run { reason } => (
            Verdict::Run {
                key: Some(key),
                reason: reason.into(),
            },
            None,
        ),
    })
}

/// [`evaluate`] against a catalog that records nothing: the verdicts
/// [`evaluate_with_keys`] gives there, without a key. Inputs are taken in
/// order, the first that decides: a missing or refused source, or an
/// upstream action that is blocked, blocks; any other upstream action
/// makes it wait on that input; an action whose inputs are all sources
/// present would run, "never built". Sources are listed (a stat, and a
/// walk of a directory), not read: an unreadable source file is found by
/// the build that reads it.
fn evaluate_unbuilt(context: &Context<'_>, plan: &Plan) -> Result<Vec<Verdict>, ExecError> {
    // The code digests are not needed, but a job whose code cannot be
    // read fails the dry run as it fails the build.
    let observer = Observer::new(context.catalog);
    code_digests(
        context.graph,
        plan.actions.iter().map(|a| &*a.job),
        &observer,
        &mut Vec::new(),
    )?;
    let unusable = unusable_sources(plan);
    let mut verdicts: Vec<Option<Verdict>> = vec![None; plan.actions.len()];
    for &index in &plan.order {
        let action = &plan.actions[index];
        let mut verdict = None;
        for (dep, input) in action.config.inputs.iter().zip(&action.inputs) {
            verdict = match *input {
                InputSource::Source { source } => {
                    unusable.get(&source).map(|reason| Verdict::Blocked {
                        reason: reason.clone(),
                    })
                }
                InputSource::Action {
                    action: upstream, ..
                } => Some(match &verdicts[upstream] {
                    Some(Verdict::Blocked { reason }) => Verdict::Blocked {
                        reason: reason.clone(),
                    },
                    _ => Verdict::Pending {
                        input: dep.partition.clone(),
                    },
                }),
            };
            if verdict.is_some() {
                break;
            }
        }
        verdicts[index] = Some(verdict.unwrap_or_else(|| Verdict::Run {
            key: None,
            reason: crate::exec::NEVER_BUILT.into(),
        }));
    }
    Ok(verdicts
        .into_iter()
        .map(|verdict| verdict.expect("every action is in the order"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::SourceNode;

    /// Sources read from one directory's listing get the reasons a stat of
    /// each gives: none for a plain file or a directory; a reason for a
    /// missing file and for a link, dangling or not.
    #[test]
    fn a_directory_read_once_lists_its_sources_as_a_stat_each_would() {
        let dir = tempfile::tempdir().unwrap();
        let days = dir.path().join("inputs/2024-01-01");
        std::fs::create_dir_all(&days).unwrap();
        let mut names: Vec<String> = (0..40).map(|i| format!("S{i:04}.txt")).collect();
        for name in &names {
            std::fs::write(days.join(name), "x").unwrap();
        }
        std::fs::create_dir(days.join("dir.txt")).unwrap();
        std::fs::write(days.join("dir.txt/part"), "x").unwrap();
        std::fs::create_dir(days.join("empty.txt")).unwrap();
        std::os::unix::fs::symlink(days.join("S0000.txt"), days.join("link.txt")).unwrap();
        std::os::unix::fs::symlink(days.join("nowhere"), days.join("dangling.txt")).unwrap();
        names.extend(
            [
                "dir.txt",
                "empty.txt",
                "link.txt",
                "dangling.txt",
                "missing.txt",
            ]
            .map(String::from),
        );
        names.sort();
        // A directory of few sources, each stat'ed.
        let few = dir.path().join("inputs/2024-01-02");
        std::fs::create_dir_all(&few).unwrap();
        std::fs::write(few.join("S0001.txt"), "x").unwrap();
        let mut sources: Vec<SourceNode> = names
            .iter()
            .map(|name| SourceNode {
                partition: PartitionRef::parse(&format!(
                    "inputs/date=2024-01-01/station={}",
                    name.trim_end_matches(".txt")
                ))
                .unwrap(),
                path: days.join(name),
            })
            .collect();
        for name in ["S0001", "S0002"] {
            sources.push(SourceNode {
                partition: PartitionRef::parse(&format!("inputs/date=2024-01-02/station={name}"))
                    .unwrap(),
                path: few.join(format!("{name}.txt")),
            });
        }
        let plan = Plan {
            actions: Vec::new(),
            sources,
            requested: Vec::new(),
            order: Vec::new(),
            configure_calls: 0,
        };
        let mut bases = crate::observe::Bases::default();
        let each: rustc_hash::FxHashMap<usize, String> = plan
            .sources
            .iter()
            .enumerate()
            .filter_map(|(index, source)| list_source(&mut bases, source).map(|r| (index, r)))
            .collect();
        let mut missing: Vec<&str> = each
            .keys()
            .map(|&index| plan.sources[index].partition.as_str())
            .collect();
        missing.sort_unstable();
        assert_eq!(
            missing,
            [
                "inputs/date=2024-01-01/station=dangling",
                "inputs/date=2024-01-01/station=link",
                "inputs/date=2024-01-01/station=missing",
                "inputs/date=2024-01-02/station=S0002",
            ]
        );
        assert_eq!(unusable_sources(&plan), each);
        assert!(RegularFiles::of(&days).is_some_and(|listed| listed.names.len() == 40));
    }
}
