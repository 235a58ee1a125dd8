//! The planner: a pure function from requested refs to an action DAG.
//!
//! Requested refs are resolved to their producing jobs; each job is
//! configured once per wave with all of its refs (batched, never one call per
//! partition); the configs' inputs form the next wave. The result is
//! deterministic for the same graph and configure answers: jobs are visited in
//! name order, refs in sorted order. Cycles are an error naming the cycle.
//! No clock, no file system: configure answers come through [`Configurer`].

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

pub mod config;
pub mod list;

use crate::graph::{Graph, Origin};
use crate::refs::PartitionRef;
pub use config::Configurer;
use config::{ConfigureError, DataDep, DepKind, JobConfig};
pub use list::List;
use rayon::prelude::*;
use rustc_hash::FxHashMap;

/// Where an action's input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum InputSource {
    /// Output `output` of action `action`.
    Action { action: usize, output: usize },
    /// Source partition `source`, observed from a user file.
    Source { source: usize },
}

#[derive(Debug, Clone)]
pub struct PlannedAction {
    /// The job's name, shared by all of its actions.
    pub job: Arc<str>,
    pub config: JobConfig,
    /// Parallel to `config.inputs`.
    pub inputs: List<InputSource>,
    /// Actions that read an output of this one, each once, in index order.
    pub dependents: List<usize>,
}

/// For each action, how many distinct actions it reads outputs of (from
/// `dependents`, which lists each dependent once). Releasing a dependent
/// then costs one decrement per finished upstream whatever its fan-in; a
/// daily of 1,370 stations would otherwise rescan its inputs for each.
pub fn upstream_counts(actions: &[PlannedAction]) -> Vec<usize> {
    let mut counts = vec![0; actions.len()];
    for action in actions {
        for &dependent in &action.dependents {
            counts[dependent] += 1;
        }
    }
    counts
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
/// A source partition (its dataset is `partition.dataset()`) and the user
/// file it is read from.
pub struct SourceNode {
    pub partition: PartitionRef,
    pub path: PathBuf,
}

impl SourceNode {
    /// Why a build cannot read this source: its file does not exist.
    pub fn missing(&self) -> String {
        format!(
            "source {} is missing: {} does not exist",
            self.partition,
            self.path.display()
        )
    }

    /// Why a build cannot read this source: observing it failed.
    pub fn unreadable(&self, error: impl std::fmt::Display) -> String {
        format!("source {}: {error}", self.partition)
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub actions: Vec<PlannedAction>,
    pub sources: Vec<SourceNode>,
    /// The refs asked for, sorted and distinct. Empty in a plan read back
    /// from the up-to-date snapshot's kept plan ([`PlanRecord`]) and in a
    /// dry run's that is not made for a build: no build reads them.
    pub requested: Vec<PartitionRef>,
    /// Action indices in a topological order (inputs first).
    pub order: Vec<usize>,
    pub configure_calls: usize,
}

impl Plan {
    /// The index of the action producing each output of the plan. A hash
    /// map of a million refs: FxHash, sized once (with std's SipHash and
    /// growing, this map was a third of `cairn status`'s CPU at 10^6
    /// partitions).
    pub fn producers(&self) -> FxHashMap<&PartitionRef, usize> {
        let outputs = self.actions.iter().map(|a| a.config.outputs.len()).sum();
        let mut producer = FxHashMap::with_capacity_and_hasher(outputs, rustc_hash::FxBuildHasher);
        for (index, action) in self.actions.iter().enumerate() {
            for output in &action.config.outputs {
                producer.insert(output, index);
            }
        }
        producer
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Lookup(String),
    #[error(transparent)]
    Configure(#[from] ConfigureError),
    #[error("cycle in the graph: {}", .0.iter().map(PartitionRef::as_str).collect::<Vec<_>>().join(" -> "))]
    Cycle(Vec<PartitionRef>),
}

/// A plan as the up-to-date snapshot keeps it (`Store::write_plan`): job
/// names once, each action naming its job by index, and no input's ref: an
/// input is its producer's output or a source, which [`InputSource`] names
/// (a plan's input refs are those refs by construction), so reading the
/// plan back shares their strings instead of parsing and allocating each
/// again (about half a kept plan's refs: 30×30's plan 334 -> 241 KB, its
/// decode 1.7 -> 1.45 ms). Nor the requested refs, which no build of a
/// kept plan reads (at 10^6 partitions a million refs: the file 134 -> 97
/// MB, the changed-input build's peak 1.03 -> 0.96 GB); a plan read back
/// has none.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct PlanRecord {
    jobs: Vec<String>,
    actions: Vec<ActionRecord>,
    sources: Vec<SourceNode>,
    /// Always written empty; kept in the layout, which files written
    /// before held it in (the same magic), and dropped when read back.
    requested: Vec<PartitionRef>,
    order: Vec<usize>,
    configure_calls: usize,
}

/// One action of a [`PlanRecord`]: its config but for the inputs' refs.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ActionRecord {
    job: u32,
    outputs: Vec<PartitionRef>,
    /// Parallel to `inputs`: each input's kind.
    input_kinds: Vec<DepKind>,
    inputs: Vec<InputSource>,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    dependents: Vec<usize>,
}

impl PlanRecord {
    pub fn of(plan: &Plan) -> Self {
        let mut jobs: Vec<String> = Vec::new();
        let mut index: HashMap<&str, u32> = HashMap::new();
        let actions = plan
            .actions
            .iter()
            .map(|action| {
                let job = *index.entry(&action.job).or_insert_with(|| {
                    jobs.push(action.job.to_string());
                    (jobs.len() - 1) as u32
                });
                let config = &action.config;
                ActionRecord {
                    job,
                    outputs: config.outputs.to_vec(),
                    input_kinds: config.inputs.iter().map(|input| input.dep).collect(),
                    inputs: action.inputs.to_vec(),
                    args: config.args.clone(),
                    env: config.env.clone(),
                    dependents: action.dependents.to_vec(),
                }
            })
            .collect();
        PlanRecord {
            jobs,
            actions,
            sources: plan.sources.clone(),
            // Not kept: see the type's doc.
            requested: Vec::new(),
            order: plan.order.clone(),
            configure_calls: plan.configure_calls,
        }
    }

    /// The plan again; `None` if an index is out of range (a record that
    /// does not hold together).
    pub fn into_plan(self) -> Option<Plan> {
        let jobs: Vec<Arc<str>> = self.jobs.into_iter().map(Arc::from).collect();
        let count = self.actions.len();
        let fits = |record: &ActionRecord| {
            (record.job as usize) < jobs.len()
                && record.input_kinds.len() == record.inputs.len()
                && record.dependents.iter().all(|&dependent| dependent < count)
                && record.inputs.iter().all(|input| match *input {
                    InputSource::Action { action, output } => self
                        .actions
                        .get(action)
                        .is_some_and(|producer| output < producer.outputs.len()),
                    InputSource::Source { source } => source < self.sources.len(),
                })
        };
        if !self.actions.iter().all(fits)
            || self.order.len() != count
            || self.order.iter().any(|&i| i >= count)
        {
            return None;
        }
        // Every input's ref, shared with its producer's output or source.
        let inputs: Vec<List<DataDep>> = self
            .actions
            .iter()
            .map(|record| {
                record
                    .inputs
                    .iter()
                    .zip(&record.input_kinds)
                    .map(|(input, &dep)| DataDep {
                        partition: match *input {
                            InputSource::Action { action, output } => {
                                self.actions[action].outputs[output].clone()
                            }
                            InputSource::Source { source } => {
                                self.sources[source].partition.clone()
                            }
                        },
                        dep,
                    })
                    .collect()
            })
            .collect();
        let actions = self
            .actions
            .into_iter()
            .zip(inputs)
            .map(|(record, inputs)| PlannedAction {
                job: Arc::clone(&jobs[record.job as usize]),
                config: JobConfig {
                    outputs: record.outputs.into(),
                    inputs,
                    args: record.args,
                    env: record.env,
                },
                inputs: record.inputs.into(),
                dependents: record.dependents.into(),
            })
            .collect();
        Some(Plan {
            actions,
            sources: self.sources,
            // Empty, unless the file was written before they were dropped.
            requested: Vec::new(),
            order: self.order,
            configure_calls: self.configure_calls,
        })
    }
}

/// Plans the actions that produce `requested`.
pub fn plan(
    graph: &Graph,
    requested: &[PartitionRef],
    configurer: &dyn Configurer,
) -> Result<Plan, PlanError> {
    let mut planner = Planner {
        graph,
        actions: Vec::new(),
        sources: Vec::new(),
        // Every requested ref gets a producer, and its sources (about half
        // as many again in a typical graph) too.
        producers: Produced::with_capacity(requested.len().saturating_add(requested.len() / 2)),
        configure_calls: 0,
    };
    // The first wave is the requested refs, sorted and distinct: the
    // plan's own list, not a copy of it (a million refs at the 1M scale).
    let mut requested: Vec<PartitionRef> = requested.to_vec();
    requested.sort_unstable();
    requested.dedup();
    let mut frontier = planner.wave(&requested, configurer)?;
    while !frontier.is_empty() {
        frontier = planner.wave(&frontier, configurer)?;
    }
    planner.link()?;
    let order = topological_order(&planner.actions)?;
    Ok(Plan {
        actions: planner.actions,
        sources: planner.sources,
        requested,
        order,
        configure_calls: planner.configure_calls,
    })
}

struct Planner<'graph> {
    graph: &'graph Graph,
    actions: Vec<PlannedAction>,
    sources: Vec<SourceNode>,
    /// Each planned ref's producer.
    producers: Produced,
    configure_calls: usize,
}

impl Planner<'_> {
    /// Resolves one wave of refs (sorted, distinct); returns the refs the
    /// new actions need, sorted and distinct. Sorting a vector once is much
    /// cheaper than a tree of half a million refs built one insert at a time.
    fn wave(
        &mut self,
        frontier: &[PartitionRef],
        configurer: &dyn Configurer,
    ) -> Result<Vec<PartitionRef>, PlanError> {
        // Lookups (pattern matching, a path or bindings per ref) are
        // independent: made in parallel, then taken in the frontier's order
        // so the first error and every index are what a sequential pass
        // gives. (A source planned in this loop is never looked up again:
        // the frontier is distinct.)
        let (graph, producers) = (self.graph, &self.producers);
        let found: Vec<Option<Result<Origin<'_>, String>>> = frontier
            .par_iter()
            .map(|partition| (!producers.contains_key(partition)).then(|| graph.origin(partition)))
            .collect();
        // The sources are counted first and their list grown once: grown
        // by doubling (half a million at the 1M scale), each smaller copy
        // was left as a hole in the heap.
        let sources = found
            .iter()
            .filter(|found| matches!(found, Some(Ok(Origin::Source { .. }))))
            .count();
        self.sources.reserve(sources);
        let mut by_job: BTreeMap<&str, Vec<PartitionRef>> = BTreeMap::new();
        let first_source = self.sources.len();
        for (partition, found) in frontier.iter().zip(found) {
            let Some(found) = found else {
                continue;
            };
            match found.map_err(PlanError::Lookup)? {
                Origin::Source { path } => {
                    self.sources.push(SourceNode {
                        partition: partition.clone(),
                        path,
                    });
                }
                Origin::Job(job) => {
                    by_job.entry(&job.name).or_default().push(partition.clone());
                }
            }
        }
        // The new sources' refs are distinct and none is planned yet (the
        // frontier is distinct, and its planned refs were skipped).
        let sources = &self.sources[first_source..];
        let duplicate = self.producers.insert_all(sources.len(), |position| {
            let source = first_source + position;
            (&self.sources[source].partition, Made::source(source))
        });
        debug_assert!(duplicate.is_none(), "a source planned twice");
        let first_new = self.actions.len();
        let jobs: Vec<(&str, Vec<PartitionRef>)> = by_job.into_iter().collect();
        self.configure_calls += jobs.len();
        configure_in_order(
            self.graph,
            &jobs,
            frontier,
            configurer,
            |position, configs| {
                let (job_name, refs) = &jobs[position];
                self.take_configs(job_name, refs, configs?)
            },
        )?;
        drop(jobs);
        // Each input of this wave's actions that an action or source
        // planned so far produces is resolved now, and its ref replaced by
        // the producer's (one string per partition in the plan, not one
        // per mention); the others are the next wave, sorted and distinct.
        let producers = &self.producers;
        let mut next: Vec<PartitionRef> = self.actions[first_new..]
            .par_iter_mut()
            .flat_map_iter(|action| resolve(action, producers))
            .collect();
        next.par_sort_unstable();
        next.dedup();
        Ok(next)
    }

    /// Adds one job's configs as actions, in the answer's order, and
    /// registers their outputs; refuses an output outside the job's
    /// patterns, one produced twice, and a requested ref left without a
    /// config.
    fn take_configs(
        &mut self,
        job_name: &str,
        refs: &[PartitionRef],
        configs: Vec<JobConfig>,
    ) -> Result<(), PlanError> {
        let job = &self.graph.jobs[job_name];
        let shared_name: Arc<str> = Arc::from(job_name);
        let fail = |problem: String| ConfigureError {
            job: job_name.to_owned(),
            problem,
        };
        // Checked in parallel (a pattern match per output); the first
        // stray output in the answer's order is the one reported. An
        // output that is the very ref asked for at its config's position
        // (a declarative config shares it) is one of the job's: the lookup
        // matched it to this job's patterns.
        if let Some(partition) = configs
            .par_iter()
            .enumerate()
            .flat_map_iter(|(index, config)| {
                let asked = refs.get(index);
                config.outputs.iter().filter(move |partition| {
                    !asked.is_some_and(|asked| asked.is_clone_of(partition))
                })
            })
            .find_first(|partition| {
                !job.outputs
                    .iter()
                    .any(|pattern| pattern.is_match(partition))
            })
        {
            let patterns: Vec<&str> = job.outputs.iter().map(|p| p.as_str()).collect();
            return Err(fail(format!(
                "returned output {partition}, which is not a partition of this job ({})",
                patterns.join(", ")
            ))
            .into());
        }
        let first = self.actions.len();
        self.actions.reserve(configs.len());
        self.actions
            .extend(configs.into_iter().map(|config| PlannedAction {
                job: Arc::clone(&shared_name),
                config,
                inputs: List::new(),
                dependents: List::new(),
            }));
        // Each output, in the answers' order, by its action and position.
        let new = &self.actions[first..];
        let outputs: Vec<(u32, u32)> = new
            .iter()
            .enumerate()
            .flat_map(|(offset, action)| {
                (0..action.config.outputs.len())
                    .map(move |output| (Made::narrow(first + offset), Made::narrow(output)))
            })
            .collect();
        let actions = &self.actions;
        let duplicate = self.producers.insert_all(outputs.len(), |position| {
            let (action, output) = outputs[position];
            (
                &actions[action as usize].config.outputs[output as usize],
                Made::action(action as usize, output as usize),
            )
        });
        if let Some(partition) = duplicate {
            return Err(fail(format!(
                "returned {partition} twice (two configs produce it)"
            ))
            .into());
        }
        let producers = &self.producers;
        if let Some(partition) = refs
            .par_iter()
            .find_first(|partition| !producers.contains_key(partition))
        {
            return Err(fail(format!("returned no config for {partition}")).into());
        }
        Ok(())
    }

    /// Resolves the inputs the waves left unresolved (those planned after
    /// their reader) and records dependents. The first unplanned input in
    /// action order is the one reported.
    fn link(&mut self) -> Result<(), PlanError> {
        let producers = &self.producers;
        let complete = |action: &PlannedAction| action.inputs.len() == action.config.inputs.len();
        let unresolved = self
            .actions
            .par_iter_mut()
            .filter(|action| !complete(action))
            .map(|action| resolve(action, producers).is_empty())
            .any(|resolved| !resolved);
        if unresolved {
            let action = self.actions.iter().find(|action| !complete(action));
            let dep = action.and_then(|action| {
                action
                    .config
                    .inputs
                    .iter()
                    .find(|dep| !producers.contains_key(&dep.partition))
            });
            let named = dep.map_or_else(String::new, |dep| dep.partition.to_string());
            return Err(PlanError::Lookup(format!("{named} was never planned")));
        }
        // Every input is resolved: the map of produced refs (50 MB at the
        // 1M scale) is not needed by the dependents' layout and the
        // topological order that follow.
        self.producers = Produced::default();
        // Each action's dependents, in index order, laid out in one array
        // (counted, then placed) and copied into the actions' lists: each
        // list is made whole, one item (the usual count) in place.
        let distinct_upstreams = |action: &PlannedAction, upstreams: &mut Vec<usize>| {
            upstreams.clear();
            upstreams.extend(action.inputs.iter().filter_map(|source| match source {
                InputSource::Action { action, .. } => Some(*action),
                InputSource::Source { .. } => None,
            }));
            upstreams.sort_unstable();
            upstreams.dedup();
        };
        let mut upstreams: Vec<usize> = Vec::new();
        let mut start = vec![0usize; self.actions.len() + 1];
        for action in &self.actions {
            distinct_upstreams(action, &mut upstreams);
            for &upstream in &upstreams {
                start[upstream + 1] += 1;
            }
        }
        for index in 0..self.actions.len() {
            start[index + 1] += start[index];
        }
        let mut placed = start.clone();
        let mut dependents = vec![0usize; start[self.actions.len()]];
        for (index, action) in self.actions.iter().enumerate() {
            distinct_upstreams(action, &mut upstreams);
            for &upstream in &upstreams {
                dependents[placed[upstream]] = index;
                placed[upstream] += 1;
            }
        }
        for (index, action) in self.actions.iter_mut().enumerate() {
            action.dependents = List::from(&dependents[start[index]..start[index + 1]]);
        }
        Ok(())
    }
}

/// At most this many configure calls of one wave run at once.
const CONFIGURE_THREADS: usize = 8;

/// Configures each of `jobs` (name, refs) and hands every answer to `take`
/// in the jobs' order, as soon as it and those before it are in. The calls
/// run concurrently on up to [`CONFIGURE_THREADS`] threads (at least two):
/// a job whose configure is a process (its answer parsed here) then does
/// not hold up the templating of the declarative ones, nor the planner
/// taking their actions. The plan does not depend on which call ends
/// first. An error from `take` stops handing out calls; the ones running
/// finish.
fn configure_in_order(
    graph: &Graph,
    jobs: &[(&str, Vec<PartitionRef>)],
    wave: &[PartitionRef],
    configurer: &dyn Configurer,
    mut take: impl FnMut(usize, Result<Vec<JobConfig>, ConfigureError>) -> Result<(), PlanError>,
) -> Result<(), PlanError> {
    if jobs.len() <= 1 {
        for (position, (name, refs)) in jobs.iter().enumerate() {
            take(
                position,
                configurer.configure(&graph.jobs[*name], refs, wave),
            )?;
        }
        return Ok(());
    }
    let threads = std::thread::available_parallelism()
        .map_or(2, std::num::NonZeroUsize::get)
        .clamp(2, CONFIGURE_THREADS)
        .min(jobs.len());
    let claimed = std::sync::atomic::AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::channel();
        for _ in 0..threads {
            let sender = sender.clone();
            let (claimed, stop) = (&claimed, &stop);
            scope.spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let position = claimed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((name, refs)) = jobs.get(position) else {
                        break;
                    };
                    let answer = configurer.configure(&graph.jobs[*name], refs, wave);
                    if sender.send((position, answer)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sender);
        let mut arrived = BTreeMap::new();
        for position in 0..jobs.len() {
            let answer = loop {
                if let Some(answer) = arrived.remove(&position) {
                    break answer;
                }
                // Every thread sends each answer it makes; they all ended
                // without this one only if one panicked (the scope then
                // panics too).
                let (at, answer) = receiver
                    .recv()
                    .expect("a configure thread ended without answering");
                arrived.insert(at, answer);
            };
            if let Err(error) = take(position, answer) {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(error);
            }
        }
        Ok(())
    })
}

/// The planner's map of produced refs, in shards by hash, so that a wave's
/// million outputs are inserted on both cores ([`Produced::insert_all`]):
/// inserted one at a time on the planner's thread (a cache miss for the
/// table and one for the ref's text each), they were its longest
/// sequential step at the 1M scale (with the sources', about 0.5 s of a
/// 2.2 s dry run). Keyed with FxHash: the planner hashes
/// each ref a few times, and SipHash over a million refs was a tenth of
/// planning (refs come from the user's own graph file and configure code,
/// so there is no adversary to flood the table).
#[derive(Default)]
struct Produced {
    /// [`Produced::SHARDS`] maps (none once `link` has let the map go).
    shards: Vec<FxHashMap<PartitionRef, Made>>,
}

impl Produced {
    /// One per core of the machines measured. Each shard's table is one
    /// block (26 MB at the 1M scale) that the allocator maps on its own and
    /// gives back when the map is dropped; 64 shards of 800 KB were left
    /// in the heap once dropped, 50 MB more at the dry run's peak (and
    /// slower: each shard picks its items out of all of them).
    const SHARDS: usize = 2;

    fn with_capacity(refs: usize) -> Self {
        // A shard's share, with room for the spread of a hash's bits.
        let each = refs / Self::SHARDS + refs / Self::SHARDS / 16 + 16;
        Produced {
            shards: (0..Self::SHARDS)
                .map(|_| FxHashMap::with_capacity_and_hasher(each, rustc_hash::FxBuildHasher))
                .collect(),
        }
    }

    /// Bits of the ref's hash that the shard's own table does not use to
    /// place it (the low bits) nor to tag it (the top seven).
    fn shard(partition: &PartitionRef) -> usize {
        use std::hash::BuildHasher;
        (rustc_hash::FxBuildHasher.hash_one(partition) >> 32) as usize % Self::SHARDS
    }

    fn is_empty(&self) -> bool {
        self.shards.iter().all(FxHashMap::is_empty)
    }

    fn get_key_value(&self, partition: &PartitionRef) -> Option<(&PartitionRef, &Made)> {
        // An empty map answers before the ref is hashed to pick its shard:
        // the first wave looks up a million refs in it.
        if self.is_empty() {
            return None;
        }
        self.shards
            .get(Self::shard(partition))?
            .get_key_value(partition)
    }

    fn contains_key(&self, partition: &PartitionRef) -> bool {
        self.get_key_value(partition).is_some()
    }

    /// Inserts `item(0) .. item(count - 1)`, each shard's in that order and
    /// the shards in parallel; returns the first ref in that order that was
    /// already there (inserted before, or earlier in the items), as
    /// inserting them one by one finds it. The map is left incomplete
    /// then.
    fn insert_all<'a>(
        &mut self,
        count: usize,
        item: impl Fn(usize) -> (&'a PartitionRef, Made) + Sync,
    ) -> Option<&'a PartitionRef> {
        debug_assert_eq!(
            self.shards.len(),
            Self::SHARDS,
            "inserted into a map made without its shards"
        );
        let shard_of: Vec<u8> = (0..count)
            .into_par_iter()
            .map(|position| Self::shard(item(position).0) as u8)
            .collect();
        let first_duplicate = self
            .shards
            .par_iter_mut()
            .enumerate()
            .filter_map(|(shard, map)| {
                let mine = shard_of.iter().enumerate();
                for (position, _) in mine.filter(|(_, of)| usize::from(**of) == shard) {
                    let (partition, made) = item(position);
                    match map.entry(partition.clone()) {
                        Entry::Occupied(_) => return Some(position),
                        Entry::Vacant(vacant) => {
                            vacant.insert(made);
                        }
                    }
                }
                None
            })
            .min()?;
        Some(item(first_duplicate).0)
    }
}

/// What the planner keeps of each planned partition: its producer, in 8
/// bytes where an [`InputSource`] takes 24 (the map holds a million and a
/// half of them at the 1M scale: 86 -> 50 MB).
#[derive(Debug, Clone, Copy)]
struct Made {
    index: u32,
    /// The output of action `index`, or [`Made::SOURCE`]: source `index`.
    output: u32,
}

impl Made {
    const SOURCE: u32 = u32::MAX;

    fn action(action: usize, output: usize) -> Self {
        let output = Self::narrow(output);
        assert_ne!(
            output,
            Self::SOURCE,
            "fewer than 2^32 - 1 outputs per action"
        );
        Made {
            index: Self::narrow(action),
            output,
        }
    }

    fn source(source: usize) -> Self {
        Made {
            index: Self::narrow(source),
            output: Self::SOURCE,
        }
    }

    fn narrow(index: usize) -> u32 {
        // A plan of 2^32 actions, sources or outputs of one action would
        // hold hundreds of gigabytes before getting here.
        u32::try_from(index).expect("fewer than 2^32 actions, sources and outputs per action")
    }

    fn input(self) -> InputSource {
        if self.output == Self::SOURCE {
            InputSource::Source {
                source: self.index as usize,
            }
        } else {
            InputSource::Action {
                action: self.index as usize,
                output: self.output as usize,
            }
        }
    }
}

/// Resolves `action`'s inputs through `producers`: if every one is planned,
/// sets `action.inputs` and points each input's ref at the producer's copy;
/// returns the refs not planned yet (then `action.inputs` is not set).
fn resolve(action: &mut PlannedAction, producers: &Produced) -> Vec<PartitionRef> {
    let mut missing = Vec::new();
    let inputs: List<InputSource> = action
        .config
        .inputs
        .iter_mut()
        .filter_map(|dep| match producers.get_key_value(&dep.partition) {
            Some((planned, made)) => {
                dep.partition = planned.clone();
                Some(made.input())
            }
            None => {
                missing.push(dep.partition.clone());
                None
            }
        })
        .collect();
    if missing.is_empty() {
        action.inputs = inputs;
    }
    missing
}

/// Kahn's algorithm, lowest index first; a leftover node means a cycle.
fn topological_order(actions: &[PlannedAction]) -> Result<Vec<usize>, PlanError> {
    let mut pending = upstream_counts(actions);
    let order = lowest_first_order(&mut pending, |index| &actions[index].dependents);
    if order.len() == actions.len() {
        return Ok(order);
    }
    Err(PlanError::Cycle(find_cycle(actions, &pending)))
}

/// The nodes in the topological order that always takes the lowest ready
/// index (`pending`: each node's count of upstreams not taken yet, left
/// with those of the nodes not reached, on a cycle). A heap of every ready
/// node gives this order, but at the 1M scale half a million actions are
/// ready at the start (every action reading only sources), and popping
/// them was most of the plan's last sequential step. Here the ready nodes
/// at or after a cursor are found by walking the indices once; only a
/// node that becomes ready behind the cursor goes into the heap, which
/// stays small when dependents follow their inputs closely.
fn lowest_first_order<'a>(
    pending: &mut [usize],
    dependents: impl Fn(usize) -> &'a List<usize>,
) -> Vec<usize> {
    use std::cmp::Reverse;
    let count = pending.len();
    let mut behind: std::collections::BinaryHeap<Reverse<usize>> =
        std::collections::BinaryHeap::new();
    // Every node before `cursor` is taken, in `behind`, or not ready yet
    // (it goes into `behind` when it becomes ready).
    let mut cursor = 0;
    let mut order = Vec::with_capacity(count);
    loop {
        while cursor < count && pending[cursor] != 0 {
            cursor += 1;
        }
        let ahead = (cursor < count).then_some(cursor);
        let next = match (behind.peek(), ahead) {
            (Some(&Reverse(low)), Some(ahead)) if low < ahead => behind.pop().map(|r| r.0),
            (_, Some(ahead)) => {
                cursor += 1;
                Some(ahead)
            }
            (Some(_), None) => behind.pop().map(|r| r.0),
            (None, None) => None,
        };
        let Some(index) = next else {
            return order;
        };
        order.push(index);
        for &dependent in dependents(index) {
            pending[dependent] -= 1;
            if pending[dependent] == 0 && dependent < cursor {
                behind.push(Reverse(dependent));
            }
        }
    }
}

/// Walks input edges among the actions left with pending inputs until one
/// repeats; returns the refs along that cycle.
fn find_cycle(actions: &[PlannedAction], pending: &[usize]) -> Vec<PartitionRef> {
    let Some(start) = pending.iter().position(|count| *count > 0) else {
        return Vec::new();
    };
    let mut path: Vec<(usize, usize)> = Vec::new();
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut current = start;
    loop {
        if let Some(&position) = seen.get(&current) {
            let mut cycle: Vec<PartitionRef> = path[position..]
                .iter()
                .map(|(action, output)| actions[*action].config.outputs[*output].clone())
                .collect();
            if let Some(first) = cycle.first().cloned() {
                cycle.push(first);
            }
            return cycle;
        }
        seen.insert(current, path.len());
        let next = actions[current]
            .inputs
            .iter()
            .find_map(|input| match input {
                InputSource::Action { action, output } if pending[*action] > 0 => {
                    Some((*action, *output))
                }
                _ => None,
            });
        let Some((action, output)) = next else {
            return Vec::new();
        };
        // Record which output of `action` the current action reads.
        path.push((action, output));
        current = action;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::graph::{Job, Producer};

    /// A reproducible source of numbers below its argument (xorshift64).
    fn xorshift(mut seed: u64) -> impl FnMut(usize) -> usize {
        move |below: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        }
    }

    /// The first ref of the items already there, as inserting them one by
    /// one finds it, whichever shard it and the later duplicates are in;
    /// and every item before it is then found.
    #[test]
    fn the_first_duplicate_in_order_is_the_one_reported() {
        let refs: Vec<PartitionRef> = (0..400)
            .map(|i| PartitionRef::parse(&format!("d/n={i}")).unwrap())
            .collect();
        let mut random = xorshift(0x9e37_79b9_7f4a_7c15_u64);
        for _ in 0..200 {
            let mut produced = Produced::with_capacity(refs.len());
            let before = random(100);
            assert_eq!(
                produced.insert_all(before, |i| (&refs[i], Made::source(i))),
                None
            );
            let items: Vec<usize> = (0..random(300)).map(|_| random(refs.len())).collect();
            let mut seen: std::collections::HashSet<usize> = (0..before).collect();
            let expected = items.iter().position(|&i| !seen.insert(i));
            let found = produced.insert_all(items.len(), |k| (&refs[items[k]], Made::source(k)));
            assert_eq!(found, expected.map(|k| &refs[items[k]]));
            let inserted = expected.unwrap_or(items.len());
            for &i in items[..inserted]
                .iter()
                .chain(&(0..before).collect::<Vec<_>>())
            {
                assert!(produced.contains_key(&refs[i]));
            }
        }
    }

    /// The order is the one a heap of every ready node gives (the lowest
    /// ready index each time), on graphs whose edges point forwards,
    /// backwards or both, with and without a cycle (then the nodes reached
    /// and the counts left are the heap's too).
    #[test]
    fn the_order_takes_the_lowest_ready_index_as_a_heap_would() {
        fn by_heap(pending: &mut [usize], dependents: &[List<usize>]) -> Vec<usize> {
            use std::cmp::Reverse;
            let mut ready: std::collections::BinaryHeap<Reverse<usize>> = (0..pending.len())
                .filter(|&index| pending[index] == 0)
                .map(Reverse)
                .collect();
            let mut order = Vec::new();
            while let Some(Reverse(index)) = ready.pop() {
                order.push(index);
                for &dependent in &dependents[index] {
                    pending[dependent] -= 1;
                    if pending[dependent] == 0 {
                        ready.push(Reverse(dependent));
                    }
                }
            }
            order
        }
        let mut random = xorshift(0x2545_f491_4f6c_dd1d_u64);
        for case in 0..300 {
            let count = 1 + random(60);
            // A random ranking of the nodes; edges go from lower to higher
            // rank, so the graph is acyclic unless one edge is reversed.
            let mut rank: Vec<usize> = (0..count).collect();
            for i in (1..count).rev() {
                rank.swap(i, random(i + 1));
            }
            let mut edges: Vec<Vec<usize>> = vec![Vec::new(); count];
            for _ in 0..random(3 * count + 1) {
                let (a, b) = (random(count), random(count));
                if rank[a] < rank[b] && !edges[a].contains(&b) {
                    edges[a].push(b);
                }
            }
            if case % 5 == 0 && count > 1 {
                let (a, b) = (random(count), random(count));
                if a != b && !edges[a].contains(&b) {
                    edges[a].push(b);
                }
            }
            let dependents: Vec<List<usize>> = edges
                .into_iter()
                .map(|mut targets| {
                    targets.sort_unstable();
                    List::from(targets)
                })
                .collect();
            let mut counts = vec![0; count];
            for targets in &dependents {
                for &target in targets {
                    counts[target] += 1;
                }
            }
            let mut expected_pending = counts.clone();
            let expected = by_heap(&mut expected_pending, &dependents);
            let mut pending = counts;
            let order = lowest_first_order(&mut pending, |index| &dependents[index]);
            assert_eq!(order, expected, "case {case}");
            assert_eq!(pending, expected_pending, "case {case}");
        }
    }
    use crate::plan::config::{bindings_of, declarative_config, parse_configure_output};
    use crate::refs::Bindings;
    use std::path::Path;

    /// Declarative jobs in-process; executable jobs answered by a closure.
    pub(crate) struct FakeConfigurer<F> {
        pub respond: F,
        pub calls: std::sync::Mutex<Vec<(String, usize)>>,
    }

    impl<F: Fn(&Job, &[(PartitionRef, Bindings)]) -> String + Sync> Configurer for FakeConfigurer<F> {
        fn configure(
            &self,
            job: &Job,
            refs: &[PartitionRef],
            _wave: &[PartitionRef],
        ) -> Result<Vec<JobConfig>, ConfigureError> {
            self.calls
                .lock()
                .unwrap()
                .push((job.name.clone(), refs.len()));
            let refs = refs
                .iter()
                .map(|partition| Ok((partition.clone(), bindings_of(job, partition)?)))
                .collect::<Result<Vec<_>, ConfigureError>>()?;
            let refs = refs.as_slice();
            if job.configure.is_none() {
                return refs
                    .iter()
                    .map(|(_, bindings)| declarative_config(job, bindings, &Default::default()))
                    .collect();
            }
            parse_configure_output(&job.name, (self.respond)(job, refs).as_bytes())
        }
    }

    pub(crate) const GRAPH: &str = r#"
[datasets.inputs]
source = "inputs/{date}/{station}.txt"
[datasets.raw]
version = "1.0.0"
[datasets.clean]
version = "1.0.0"
[datasets.daily]
version = "1.0.0"
[dimensions.date]
start = "2024-01-01"
end = "2024-01-03"
[dimensions.station]
values = ["A", "B"]
[jobs.raw]
outputs = ["raw/date={date}/station={station}"]
inputs = ["inputs/date={date}/station={station}"]
run = ["cp"]
[jobs.clean]
outputs = ["clean/date={date}/station={station}"]
inputs = ["raw/date={date}/station={station}"]
run = ["clean"]
[jobs.daily]
outputs = ["daily/date={date}"]
configure = ["daily", "configure"]
run = ["daily"]
"#;

    pub(crate) fn daily_response(_job: &Job, refs: &[(PartitionRef, Bindings)]) -> String {
        let configs: Vec<String> = refs
            .iter()
            .map(|(partition, bindings)| {
                let date = &bindings["date"];
                format!(
                    r#"{{"outputs":["{partition}"],"inputs":["clean/date={date}/station=A","clean/date={date}/station=B"],"args":["{date}"]}}"#
                )
            })
            .collect();
        format!(r#"{{"configs":[{}]}}"#, configs.join(","))
    }

    fn graph(text: &str) -> Graph {
        Graph::parse(text, Path::new("cairn.toml"), Path::new("/p")).unwrap()
    }

    fn refs(texts: &[&str]) -> Vec<PartitionRef> {
        texts
            .iter()
            .map(|t| PartitionRef::parse(t).unwrap())
            .collect()
    }

    #[test]
    fn a_kept_plan_reads_back_as_the_same_plan() {
        let graph = graph(GRAPH);
        let configurer = FakeConfigurer {
            respond: daily_response,
            calls: std::sync::Mutex::new(Vec::new()),
        };
        let all = graph.all_partitions().unwrap();
        let plan = plan(&graph, &all, &configurer).unwrap();
        let bytes = postcard::to_stdvec(&PlanRecord::of(&plan)).unwrap();
        let record: PlanRecord = postcard::from_bytes(&bytes).unwrap();
        let read = record.into_plan().unwrap();
        // All of it but the requested refs, which are not kept.
        assert!(!plan.requested.is_empty());
        assert!(read.requested.is_empty());
        let asked = Plan {
            requested: Vec::new(),
            ..plan
        };
        assert_eq!(format!("{read:?}"), format!("{asked:?}"));
        // Job names are shared again, one allocation per job.
        let same_job: Vec<&PlannedAction> = read
            .actions
            .iter()
            .filter(|action| *action.job == *read.actions[0].job)
            .collect();
        assert!(same_job.len() > 1);
        assert!(Arc::ptr_eq(&same_job[0].job, &same_job[1].job));
        // Each input's ref is its producer's output or its source's ref,
        // the same string.
        let mut shared = 0;
        for action in &read.actions {
            for (input, source) in action.config.inputs.iter().zip(&action.inputs) {
                let producer = match *source {
                    InputSource::Action { action, output } => {
                        &read.actions[action].config.outputs[output]
                    }
                    InputSource::Source { source } => &read.sources[source].partition,
                };
                assert_eq!(
                    input.partition.as_str().as_ptr(),
                    producer.as_str().as_ptr()
                );
                shared += 1;
            }
        }
        assert!(shared > read.actions.len());
        // A record whose indices do not hold together is no plan.
        let broken = |alter: fn(&mut PlanRecord)| {
            let mut record: PlanRecord = postcard::from_bytes(&bytes).unwrap();
            alter(&mut record);
            record.into_plan().is_none()
        };
        assert!(broken(|record| record.order.push(99)));
        assert!(broken(|record| record.actions[0].job = 7));
        assert!(broken(|record| record.actions[0].dependents.push(99)));
        assert!(broken(|record| record.actions[0].input_kinds.clear()));
        assert!(broken(|record| {
            let last = record.actions.len() - 1;
            record.actions[last].inputs[0] = InputSource::Action {
                action: 0,
                output: 5,
            };
        }));
        assert!(broken(|record| {
            let last = record.actions.len() - 1;
            record.actions[last].inputs[0] = InputSource::Action {
                action: 99,
                output: 0,
            };
        }));
    }

    /// The jobs of a wave are configured concurrently; the plan is the same
    /// whichever answer comes in first, and the first failing job in name
    /// order is the one reported.
    #[test]
    fn concurrent_configure_answers_are_taken_in_job_order() {
        struct Slow<'a> {
            inner: &'a dyn Configurer,
            slow: &'static str,
            fail: Option<&'static str>,
        }
        impl Configurer for Slow<'_> {
            fn configure(
                &self,
                job: &Job,
                refs: &[PartitionRef],
                wave: &[PartitionRef],
            ) -> Result<Vec<JobConfig>, ConfigureError> {
                if job.name == self.slow {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                if self.fail == Some(job.name.as_str()) {
                    return Err(ConfigureError {
                        job: job.name.clone(),
                        problem: "failed".into(),
                    });
                }
                self.inner.configure(job, refs, wave)
            }
        }
        let graph = graph(GRAPH);
        let fake = FakeConfigurer {
            respond: daily_response,
            calls: std::sync::Mutex::new(Vec::new()),
        };
        let all = graph.all_partitions().unwrap();
        let expected = format!("{:?}", plan(&graph, &all, &fake).unwrap());
        for slow in ["clean", "daily", "raw"] {
            let configurer = Slow {
                inner: &fake,
                slow,
                fail: None,
            };
            let planned = plan(&graph, &all, &configurer).unwrap();
            assert_eq!(format!("{planned:?}"), expected, "{slow} answering last");
        }
        // clean answers late and fails, raw fails at once: clean is named.
        let configurer = Slow {
            inner: &fake,
            slow: "clean",
            fail: Some("clean"),
        };
        let failing_raw = Slow {
            inner: &configurer,
            slow: "",
            fail: Some("raw"),
        };
        let error = plan(&graph, &all, &failing_raw).unwrap_err();
        assert!(error.to_string().starts_with("job clean:"), "{error}");
    }

    /// A single-output job's config for a requested ref shares the ref as
    /// its output and is otherwise the templated config.
    #[test]
    fn a_config_for_a_requested_ref_is_the_templated_config() {
        let graph = graph(GRAPH);
        let mut checked = 0;
        for partition in graph.all_partitions().unwrap() {
            let Producer::Job { job, bindings } = graph.lookup(&partition).unwrap() else {
                continue;
            };
            let job = &graph.jobs[job];
            if job.configure.is_some() {
                continue;
            }
            let shared = crate::config::declarative_config_bound(
                job,
                &partition,
                &Default::default(),
                crate::config::Known::default(),
            )
            .unwrap();
            assert_eq!(
                shared,
                declarative_config(job, &bindings, &Default::default()).unwrap()
            );
            assert_eq!(
                shared.outputs[0].as_str().as_ptr(),
                partition.as_str().as_ptr()
            );
            checked += 1;
        }
        assert_eq!(checked, 12);
    }

    /// A templated input that is a ref of the wave shares its string: no
    /// copy for the planner to swap for its producer's and free. The
    /// config is the one templated without known refs.
    #[test]
    fn a_templated_input_among_the_wave_shares_its_string() {
        let graph = graph(GRAPH);
        let mut wave = graph.all_partitions().unwrap();
        wave.sort();
        wave.dedup();
        let clean = &graph.jobs["clean"];
        let partition = PartitionRef::parse("clean/date=2024-01-02/station=B").unwrap();
        let raw = wave
            .iter()
            .find(|known| known.as_str() == "raw/date=2024-01-02/station=B")
            .unwrap();
        let bindings = bindings_of(clean, &partition).unwrap();
        let environment = crate::job::JobEnvironment::from_process(&graph.env);
        let configurer = crate::local::ProcessConfigurer {
            graph: &graph,
            environment: &environment,
        };
        let alone = declarative_config(clean, &bindings, &Default::default()).unwrap();
        for (known, shares) in [(wave.as_slice(), true), (&[][..], false)] {
            let config = configurer
                .configure(clean, std::slice::from_ref(&partition), known)
                .unwrap()
                .remove(0);
            assert_eq!(config, alone);
            let shared = config.inputs[0].partition.as_str().as_ptr() == raw.as_str().as_ptr();
            assert_eq!(shared, shares);
        }
        let shared = crate::config::declarative_config_bound(
            clean,
            &partition,
            &Default::default(),
            crate::config::Known(&wave),
        )
        .unwrap();
        assert_eq!(shared, alone);
        assert_eq!(
            shared.inputs[0].partition.as_str().as_ptr(),
            raw.as_str().as_ptr()
        );
        assert_ne!(
            alone.inputs[0].partition.as_str().as_ptr(),
            raw.as_str().as_ptr()
        );
        // A ref of another job is none of this job's partitions.
        let error = bindings_of(clean, raw).unwrap_err().to_string();
        assert!(error.contains("not a partition of this job"), "{error}");
    }

    #[test]
    fn plans_a_fan_in_with_batched_configure() {
        let graph = graph(GRAPH);
        let configurer = FakeConfigurer {
            respond: daily_response,
            calls: std::sync::Mutex::new(Vec::new()),
        };
        let all = graph.all_partitions().unwrap();
        let plan = plan(&graph, &all, &configurer).unwrap();
        assert_eq!(plan.actions.len(), 3 + 6 + 6);
        assert_eq!(plan.sources.len(), 6);
        // One configure call per job per wave, never one per partition.
        let calls = configurer.calls.lock().unwrap();
        assert_eq!(calls.iter().filter(|(job, _)| job == "daily").count(), 1);
        assert_eq!(calls.iter().find(|(job, _)| job == "daily").unwrap().1, 3);
        // Topological: every input before its reader.
        let position: HashMap<usize, usize> = plan
            .order
            .iter()
            .enumerate()
            .map(|(i, a)| (*a, i))
            .collect();
        for (index, action) in plan.actions.iter().enumerate() {
            for input in &action.inputs {
                if let InputSource::Action {
                    action: upstream, ..
                } = input
                {
                    assert!(position[upstream] < position[&index]);
                }
            }
        }
        // Each dependent is listed once, and counted once per distinct
        // upstream action (the daily reads two cleans: 2).
        let counts = upstream_counts(&plan.actions);
        for (index, action) in plan.actions.iter().enumerate() {
            // In index order, each once.
            let mut dependents = action.dependents.to_vec();
            dependents.sort_unstable();
            dependents.dedup();
            assert_eq!(dependents, action.dependents.to_vec());
            let distinct: std::collections::BTreeSet<usize> = action
                .inputs
                .iter()
                .filter_map(|input| match input {
                    InputSource::Action { action, .. } => Some(*action),
                    InputSource::Source { .. } => None,
                })
                .collect();
            assert_eq!(counts[index], distinct.len(), "{:?}", action.config.outputs);
        }
        assert!(
            plan.actions
                .iter()
                .zip(&counts)
                .any(|(action, count)| &*action.job == "daily" && *count == 2)
        );
    }

    #[test]
    fn planning_is_deterministic() {
        let graph = graph(GRAPH);
        let configurer = FakeConfigurer {
            respond: daily_response,
            calls: std::sync::Mutex::new(Vec::new()),
        };
        let mut requested = refs(&["daily/date=2024-01-02", "daily/date=2024-01-01"]);
        let first = plan(&graph, &requested, &configurer).unwrap();
        requested.reverse();
        let second = plan(&graph, &requested, &configurer).unwrap();
        let outputs = |plan: &Plan| {
            plan.actions
                .iter()
                .map(|a| a.config.outputs.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(outputs(&first), outputs(&second));
        assert_eq!(first.order, second.order);
    }

    #[test]
    fn missing_config_and_foreign_outputs_are_errors() {
        let graph = graph(GRAPH);
        let nothing = FakeConfigurer {
            respond: |_: &Job, _: &[(PartitionRef, Bindings)]| r#"{"configs":[]}"#.to_owned(),
            calls: std::sync::Mutex::new(Vec::new()),
        };
        let error = plan(&graph, &refs(&["daily/date=2024-01-01"]), &nothing)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "job daily: configure returned no config for daily/date=2024-01-01"
        );
        let foreign = FakeConfigurer {
            respond: |_: &Job, _: &[(PartitionRef, Bindings)]| {
                r#"{"configs":[{"outputs":["raw/date=1/station=A"]}]}"#.to_owned()
            },
            calls: std::sync::Mutex::new(Vec::new()),
        };
        let error = plan(&graph, &refs(&["daily/date=2024-01-01"]), &foreign)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a partition of this job"), "{error}");
    }

    /// The declarative fan-in graph of docs/graph-file.md: a daily over
    /// every station, a rolling three-day window over the dailies, and a
    /// mapping from regions to stations.
    const FAN_IN: &str = r#"
[datasets.clean]
source = "clean/{date}/{station}.txt"
[datasets.daily]
[datasets.rolling]
[datasets.region]
[dimensions.date]
start = "2024-01-01"
end = "2024-01-04"
[dimensions.station]
values = ["S2", "S1", "S3"]
[dimensions.area]
values = ["north", "south"]
[jobs.daily]
outputs = ["daily/date={date}"]
inputs = ["clean/date={date}/station={station}"]
run = ["daily"]
[jobs.rolling]
outputs = ["rolling/date={date}"]
inputs = ["daily/date={date}"]
over.date = { window = [-2, 0] }
run = ["rolling"]
[jobs.region]
outputs = ["region/area={area}/date={date}"]
inputs = ["clean/date={date}/station={s}"]
over.s = { of = "area", map = { north = ["S1", "S2"], south = ["S3"] } }
run = ["region"]
"#;

    fn fan_in_plan(text: &str, requested: &[&str]) -> Result<Plan, PlanError> {
        let graph = graph(text);
        let environment = crate::job::JobEnvironment::default();
        let configurer = crate::local::ProcessConfigurer {
            graph: &graph,
            environment: &environment,
        };
        plan(&graph, &refs(requested), &configurer)
    }

    fn inputs_of(plan: &Plan, output: &str) -> Vec<String> {
        let action = plan
            .actions
            .iter()
            .find(|action| action.config.outputs[0].as_str() == output)
            .unwrap_or_else(|| panic!("no action for {output}"));
        action
            .config
            .inputs
            .iter()
            .map(|dep| dep.partition.to_string())
            .collect()
    }

    #[test]
    fn a_placeholder_only_the_inputs_use_fans_in_over_every_value_in_order() {
        let plan = fan_in_plan(FAN_IN, &["daily/date=2024-01-02"]).unwrap();
        // The dimension's declared order, not sorted: the job sees them so.
        assert_eq!(
            inputs_of(&plan, "daily/date=2024-01-02"),
            [
                "clean/date=2024-01-02/station=S2",
                "clean/date=2024-01-02/station=S1",
                "clean/date=2024-01-02/station=S3"
            ]
        );
        assert_eq!(plan.sources.len(), 3);
    }

    #[test]
    fn a_window_takes_the_values_around_the_outputs_clipped_at_the_ends() {
        let plan = fan_in_plan(
            FAN_IN,
            &["rolling/date=2024-01-01", "rolling/date=2024-01-04"],
        )
        .unwrap();
        assert_eq!(
            inputs_of(&plan, "rolling/date=2024-01-04"),
            [
                "daily/date=2024-01-02",
                "daily/date=2024-01-03",
                "daily/date=2024-01-04"
            ]
        );
        assert_eq!(
            inputs_of(&plan, "rolling/date=2024-01-01"),
            ["daily/date=2024-01-01"]
        );
        // Four dailies (each fanning in three stations) and two rollings.
        assert_eq!(plan.actions.len(), 2 + 4);
        let error = fan_in_plan(FAN_IN, &["rolling/date=2025-01-01"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "job rolling: configure inputs daily/date={date}: {date} = \"2025-01-01\" is not a value of dimension date, so the window of {date} around it is not defined"
        );
    }

    #[test]
    fn a_map_takes_the_values_listed_for_the_outputs_value() {
        let plan = fan_in_plan(
            FAN_IN,
            &[
                "region/area=north/date=2024-01-01",
                "region/area=south/date=2024-01-01",
            ],
        )
        .unwrap();
        assert_eq!(
            inputs_of(&plan, "region/area=north/date=2024-01-01"),
            [
                "clean/date=2024-01-01/station=S1",
                "clean/date=2024-01-01/station=S2"
            ]
        );
        assert_eq!(
            inputs_of(&plan, "region/area=south/date=2024-01-01"),
            ["clean/date=2024-01-01/station=S3"]
        );
        let error = fan_in_plan(FAN_IN, &["region/area=east/date=2024-01-01"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("over.s.map has no entry for {area} = \"east\""),
            "{error}"
        );
    }

    #[test]
    fn several_fan_in_placeholders_expand_last_fastest() {
        let text = FAN_IN.replace(
            "outputs = [\"daily/date={date}\"]\ninputs = [\"clean/date={date}/station={station}\"]",
            "outputs = [\"daily/x={x}\"]\ninputs = [\"clean/date={date}/station={station}\"]\nover.x = { dimension = \"date\" }",
        );
        // {x} is an output placeholder: `over` may not rebind it to every value.
        let message = Graph::parse(&text, Path::new("cairn.toml"), Path::new("/p"))
            .unwrap_err()
            .to_string();
        assert!(message.contains("jobs.daily.over.x"), "{message}");
        let text = FAN_IN.replace(
            "outputs = [\"daily/date={date}\"]\ninputs = [\"clean/date={date}/station={station}\"]",
            "outputs = [\"daily/all=1\"]\ninputs = [\"clean/date={date}/station={station}\"]",
        );
        let plan = fan_in_plan(&text, &["daily/all=1"]).unwrap();
        let inputs = inputs_of(&plan, "daily/all=1");
        assert_eq!(inputs.len(), 4 * 3);
        assert_eq!(
            inputs[..4],
            [
                "clean/date=2024-01-01/station=S2",
                "clean/date=2024-01-01/station=S1",
                "clean/date=2024-01-01/station=S3",
                "clean/date=2024-01-02/station=S2"
            ]
        );
    }

    #[test]
    fn cycles_are_named() {
        let text = r#"
[datasets.a]
[datasets.b]
[jobs.a]
outputs = ["a/x={x}"]
inputs = ["b/x={x}"]
run = ["true"]
[jobs.b]
outputs = ["b/x={x}"]
inputs = ["a/x={x}"]
run = ["true"]
"#;
        let graph = graph(text);
        let configurer = FakeConfigurer {
            respond: daily_response,
            calls: std::sync::Mutex::new(Vec::new()),
        };
        let error = plan(&graph, &refs(&["a/x=1"]), &configurer)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("cycle in the graph: "), "{error}");
        assert!(
            error.contains("a/x=1") && error.contains("b/x=1"),
            "{error}"
        );
    }

    #[test]
    fn unknown_refs_are_lookup_errors() {
        let graph = graph(GRAPH);
        let configurer = FakeConfigurer {
            respond: daily_response,
            calls: std::sync::Mutex::new(Vec::new()),
        };
        let error = plan(&graph, &refs(&["nope/x=1"]), &configurer)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("dataset \"nope\" is not declared"),
            "{error}"
        );
    }
}
