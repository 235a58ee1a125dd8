//! Where things are: the graph file, the data root, the store — resolved
//! from paths (the command line's `--graph` and `--store`, or a server's
//! configuration) before anything touches the store.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_engine::action::Context;
use cairn_engine::config::CachingConfigurer;
use cairn_engine::digest::{ActionKey, ContentDigest};
use cairn_engine::graph::Graph;
use cairn_engine::plan::{Plan, plan};
use cairn_engine::ports::{BlobStore, Catalog, StoreError};
use cairn_engine::record::{
    CheckpointRecord, DefsRecord, Event, EventKind, Manifest, PartitionState, StatEntry,
};
use cairn_engine::refs::PartitionRef;
use cairn_engine::runner::{Children, JobEnvironment, ProcessConfigurer};
use cairn_store::{DataRootLock, OpenMode, Store};

use crate::error::AppError;

/// Where a workspace is: what a front end resolved from its arguments or
/// configuration. Relative paths are taken from the current directory.
#[derive(Debug, Clone, Default)]
pub struct WorkspaceOptions {
    /// The graph file (default: `cairn.toml` in the current directory).
    pub graph_file: Option<PathBuf>,
    /// The store directory (default: `.cairn` beside the graph file).
    pub store_dir: Option<PathBuf>,
}

impl WorkspaceOptions {
    /// The graph file these options name, absolute when it can be made so.
    pub fn graph_file(&self) -> PathBuf {
        let file = self
            .graph_file
            .clone()
            .unwrap_or_else(|| PathBuf::from("cairn.toml"));
        std::path::absolute(&file).unwrap_or(file)
    }

    /// The store's catalog file these options name, worked out without
    /// reading the graph file (for reporting a corrupt catalog from a panic
    /// hook, where nothing else may be opened).
    pub fn catalog_file(&self) -> PathBuf {
        let store = match &self.store_dir {
            Some(dir) => std::path::absolute(dir).unwrap_or_else(|_| dir.clone()),
            None => self
                .graph_file()
                .parent()
                .map_or_else(|| PathBuf::from(".cairn"), |root| root.join(".cairn")),
        };
        store.join("catalog.redb")
    }
}

/// `--remote-cache-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteMode {
    /// Look up only.
    Read,
    /// Look up, and upload what the build runs.
    Write,
    /// No remote cache, whatever the graph file says.
    Off,
}

/// The command line's say about the remote cache: each `None` leaves the
/// graph file's `[cache]` in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteChoice {
    /// `--remote-cache URL`.
    pub url: Option<String>,
    /// `--remote-cache-mode`.
    pub mode: Option<RemoteMode>,
    /// `--no-upload-wait`: the build does not wait for its uploads.
    pub no_upload_wait: bool,
}

/// What a use case has to say to the person (or log) behind the front end
/// while it runs: waiting for a lock, processes cleaned up, a warning. The
/// command line writes them to stderr; a server may log them.
pub trait Notes: Send + Sync {
    /// A plain note (`waiting for the store's lock ...`).
    fn note(&self, message: &str);
    /// A warning (`job clean: 3 partitions of clean: ...`).
    fn warning(&self, message: &str);
}

/// Notes that go nowhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Notes for Silent {
    fn note(&self, _message: &str) {}
    fn warning(&self, _message: &str) {}
}

/// An opened workspace: the graph file read and checked, the sources'
/// latest records applied, the data root and the store located. Opening
/// it touches no store but to read the sources' records.
///
/// A workspace is `Send + Sync`. The command line opens the store for each
/// use case (its writer lock taken and released by that command); a server
/// calls [`Workspace::hold`] once, and from then on every use case run on
/// the workspace, from any number of threads at once, uses the held store
/// (docs/architecture.md, "A held workspace").
pub struct Workspace {
    pub graph: Graph,
    pub store_dir: PathBuf,
    pub data_root: PathBuf,
    pub environment: JobEnvironment,
    notes: Arc<dyn Notes>,
    /// The command line's overrides of the graph file's `[cache]`
    /// (docs/remote-cache.md).
    pub remote_cache: RemoteChoice,
    /// The store opened once as writer, with the data directory claimed,
    /// for the life of the workspace ([`Workspace::hold`]).
    held: Option<Held>,
    /// Plans made ([`Workspace::plans_made`]).
    plans: std::sync::atomic::AtomicU64,
}

/// What a held workspace keeps open. Fields drop in order: the store
/// closes (and releases its lock) before the data directory is released.
struct Held {
    store: Arc<Store>,
    /// The runs in flight across the builds of this workspace, and their
    /// shared job limit (engine/src/exec/inflight.rs).
    in_flight: cairn_engine::exec::inflight::InFlight,
    /// The builds running now (what `status` and `why` show as running).
    running: std::sync::Mutex<std::collections::BTreeSet<u64>>,
    _data_root: DataRootLock,
}

/// A build of a held workspace, listed as running while this lives.
pub(crate) struct RunningBuild<'w> {
    workspace: &'w Workspace,
    build: u64,
}

impl Drop for RunningBuild<'_> {
    fn drop(&mut self) {
        if let Some(held) = &self.workspace.held {
            held.running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&self.build);
        }
    }
}

/// A store a use case opened, or the store its workspace holds: use it as
/// a [`Store`] (it derefs to one). Dropping an opened store closes it (and
/// releases the writer lock); dropping a held one leaves the store open.
#[expect(
    clippy::large_enum_variant,
    reason = "one handle per use case, on the stack, never in a collection"
)]
pub enum StoreHandle {
    /// Opened for this use case.
    Opened(Store),
    /// The workspace's held store ([`Workspace::hold`]).
    Held(Arc<Store>),
}

impl Deref for StoreHandle {
    type Target = Store;
    fn deref(&self) -> &Store {
        match self {
            StoreHandle::Opened(store) => store,
            StoreHandle::Held(store) => store,
        }
    }
}

impl StoreHandle {
    /// The store, if this use case opened it (and may close it); `Err` with
    /// the held store.
    pub fn into_opened(self) -> Result<Store, Arc<Store>> {
        match self {
            StoreHandle::Opened(store) => Ok(store),
            StoreHandle::Held(store) => Err(store),
        }
    }

    /// Whether this is the workspace's held store.
    pub fn is_held(&self) -> bool {
        matches!(self, StoreHandle::Held(_))
    }
}

impl Workspace {
    /// Opens the workspace `options` name; `notes` hears what the use
    /// cases run on it have to say.
    pub fn open(options: &WorkspaceOptions, notes: Arc<dyn Notes>) -> Result<Workspace, AppError> {
        let file = options
            .graph_file
            .clone()
            .unwrap_or_else(|| PathBuf::from("cairn.toml"));
        let file = std::path::absolute(&file).map_err(|source| AppError::Path {
            path: file.clone(),
            source,
        })?;
        if !file.is_file() {
            return Err(AppError::NoGraphFile(file));
        }
        let graph = Graph::load(&file)?;
        let store_dir = match &options.store_dir {
            Some(dir) => std::path::absolute(dir).map_err(|source| AppError::Path {
                path: dir.clone(),
                source,
            })?,
            None => graph.root.join(".cairn"),
        };
        let data_root = graph.root.join("data");
        let environment = JobEnvironment::from_process(&graph.env);
        let mut workspace = Workspace {
            graph,
            store_dir,
            data_root,
            environment,
            notes,
            remote_cache: Default::default(),
            held: None,
            plans: std::sync::atomic::AtomicU64::new(0),
        };
        workspace.read_sources();
        Ok(workspace)
    }

    /// Holds the store for the life of this workspace: opens it as its one
    /// writer (waiting for another cairn's lock if `wait`, else failing
    /// with [`StoreError::Locked`], exit 3), kills what a killed cairn's
    /// jobs left running, and claims the data directory. From then on
    /// every use case run on this workspace uses this store instead of
    /// opening one, and never closes it; builds may run concurrently
    /// (docs/architecture.md, "A held workspace"). Holding twice is a
    /// no-op. The store closes when the workspace is dropped.
    ///
    /// Builds on a held workspace share their in-flight actions (one run
    /// per key, docs/architecture.md) and run at most `jobs` jobs at once
    /// between them (default: the number of cores).
    pub fn hold(&mut self, wait: bool) -> Result<(), AppError> {
        self.hold_with_jobs(wait, None)
    }

    /// [`Workspace::hold`], with the most jobs all its builds run at once.
    pub fn hold_with_jobs(&mut self, wait: bool, jobs: Option<usize>) -> Result<(), AppError> {
        if self.held.is_some() {
            return Ok(());
        }
        let store = self.open_store_writer(wait)?;
        let data_root = DataRootLock::acquire(&self.data_root, &self.store_dir)?;
        // As `build::jobs` (not called: workspace comes before build in
        // the module order, tests/import_cycles.rs).
        let jobs = jobs
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(usize::from)
                    .unwrap_or(1)
            })
            .clamp(1, cairn_engine::limits::MAX_JOBS);
        self.held = Some(Held {
            store: Arc::new(store),
            in_flight: cairn_engine::exec::inflight::InFlight::new(jobs),
            running: std::sync::Mutex::default(),
            _data_root: data_root,
        });
        Ok(())
    }

    /// The builds running now on a held workspace, oldest first (`None`
    /// when not held: a live build is found from the store's lock file).
    pub(crate) fn running_builds(&self) -> Option<Vec<u64>> {
        let held = self.held.as_ref()?;
        let running = held
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(running.iter().copied().collect())
    }

    /// Lists `build` as running on a held workspace until the returned
    /// guard is dropped (nothing when not held).
    pub(crate) fn running_build(&self, build: u64) -> Option<RunningBuild<'_>> {
        let held = self.held.as_ref()?;
        held.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(build);
        Some(RunningBuild {
            workspace: self,
            build,
        })
    }

    /// The runs in flight across the builds of a held workspace (`None`
    /// when not held: a build is alone in its process).
    pub fn in_flight(&self) -> Option<&cairn_engine::exec::inflight::InFlight> {
        self.held.as_ref().map(|held| &held.in_flight)
    }

    /// Whether this workspace holds its store ([`Workspace::hold`]).
    pub fn is_held(&self) -> bool {
        self.held.is_some()
    }

    /// The held store, if any.
    pub fn held_store(&self) -> Option<&Arc<Store>> {
        self.held.as_ref().map(|held| &held.store)
    }

    /// Where this workspace's use cases send their notes.
    pub fn notes(&self) -> &dyn Notes {
        &*self.notes
    }

    /// The same, for a thread that outlives a borrow of the workspace.
    pub fn notes_handle(&self) -> Arc<dyn Notes> {
        Arc::clone(&self.notes)
    }

    /// Gives every `[sources.NAME]` the values of its latest record, read
    /// from the store (read-only; sources are never run here). A source
    /// without a record keeps none, and one whose record cannot be read is
    /// marked so: expanding a dimension `from` it then fails saying what
    /// to do, while commands that do not need it are unaffected.
    fn read_sources(&mut self) {
        if self.graph.sources.is_empty() {
            return;
        }
        let store = match self.open_reader() {
            Ok(Some(store)) => store,
            Ok(None) => return,
            Err(error) => {
                let names: Vec<String> = self.graph.sources.keys().cloned().collect();
                for name in names {
                    self.graph.set_source_unreadable(&name, error.to_string());
                }
                return;
            }
        };
        let names: Vec<String> = self.graph.sources.keys().cloned().collect();
        for name in names {
            match crate::records::read_record(&store, &name) {
                Ok(Some((_, values))) => self.graph.set_source_values(&name, values),
                Ok(None) => {}
                Err(problem) => self.graph.set_source_unreadable(&name, problem),
            }
        }
    }

    /// The refs named by `requests` (refs or patterns), or every declared
    /// partition when there are none.
    pub fn requested(&self, requests: &[String]) -> Result<Vec<PartitionRef>, AppError> {
        let mut refs = Vec::new();
        if requests.is_empty() {
            refs = self.graph.all_partitions().map_err(AppError::Request)?;
        }
        for request in requests {
            let resolved = self
                .graph
                .resolve_request(request)
                .map_err(AppError::Request)?;
            // Values outside their dimension's domain (`date=banana`,
            // `date=2024-02-30`, a station not listed) are refused before
            // planning. A pattern's placeholders take domain values, so its
            // first ref checks its literals.
            let checked = if request.contains('{') {
                &resolved[..resolved.len().min(1)]
            } else {
                &resolved[..]
            };
            for partition in checked {
                self.graph
                    .check_domain(partition)
                    .map_err(AppError::Request)?;
            }
            refs.extend(resolved);
        }
        refs.sort();
        refs.dedup();
        Ok(refs)
    }

    /// [`Workspace::requested`], each ref also checked to have a producer
    /// (a declared dataset whose job or source makes it): the errors a
    /// plan would give first, without planning (`cairn serve` answers a
    /// submit with them before the operation exists).
    pub fn requested_checked(&self, requests: &[String]) -> Result<Vec<PartitionRef>, AppError> {
        let refs = self.requested(requests)?;
        for partition in &refs {
            self.graph.lookup(partition).map_err(AppError::Request)?;
        }
        Ok(refs)
    }

    /// Plans `refs`, reusing cached configure answers (read only).
    pub fn plan(&self, refs: &[PartitionRef]) -> Result<Plan, AppError> {
        self.plan_caching(refs, false)
    }

    /// Plans `refs` for a build: configure answers not cached yet are
    /// cached for the next build (docs/internals.md).
    pub fn plan_for_build(&self, refs: &[PartitionRef]) -> Result<Plan, AppError> {
        // A `code` file that is missing is the graph file's error: refused
        // before the configure cache (or anything else) is written.
        cairn_engine::exec::check_code_files(
            &self.graph,
            self.graph.jobs.keys().map(String::as_str),
        )?;
        self.plan_caching(refs, true)
    }

    /// How many plans this workspace made ([`Workspace::plan`],
    /// [`Workspace::plan_for_build`]): what a server counts
    /// (`cairn_plans_total`, docs/api.md).
    pub fn plans_made(&self) -> u64 {
        self.plans.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn plan_caching(&self, refs: &[PartitionRef], write: bool) -> Result<Plan, AppError> {
        self.plans
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let process = ProcessConfigurer {
            graph: &self.graph,
            environment: &self.environment,
        };
        let configurer = CachingConfigurer {
            inner: &process,
            graph: &self.graph,
            passed_env: &self.environment.passed,
            dir: self
                .store_dir
                .join(cairn_engine::config::CONFIGURE_CACHE_DIR),
            write,
        };
        Ok(plan(&self.graph, refs, &configurer)?)
    }

    /// Opens the store as its one writer (or hands out the held store).
    /// Processes that a cairn killed while its jobs ran left behind are
    /// killed first (a live cairn would hold the lock): no job outlives its
    /// attempt (docs/reliability.md).
    pub fn open_writer(&self, wait: bool) -> Result<StoreHandle, AppError> {
        if let Some(held) = &self.held {
            return Ok(StoreHandle::Held(Arc::clone(&held.store)));
        }
        self.open_store_writer(wait).map(StoreHandle::Opened)
    }

    fn open_store_writer(&self, wait: bool) -> Result<Store, AppError> {
        let mut on_wait = |message: &str| self.notes.note(message);
        let store = Store::open(&self.store_dir, OpenMode::Write { wait }, &mut on_wait)?;
        match cairn_engine::groups::stop_leftovers(&store.dir().join("running")) {
            Ok(found) if !found.killed.is_empty() => self.notes.note(&format!(
                "cairn: killed {} process{} left running by the jobs of a cairn that was killed",
                found.killed.len(),
                if found.killed.len() == 1 { "" } else { "es" }
            )),
            Ok(_) => {}
            Err(error) => {
                return Err(AppError::StoreProblem(format!(
                    "cannot check for processes left by a killed cairn: {error}"
                )));
            }
        }
        Ok(store)
    }

    /// Runs `read` with a context that can evaluate but never changes
    /// anything: the store opened read-only, or an empty one if nothing was
    /// ever built here.
    pub fn read_context<R, E: From<AppError>>(
        &self,
        read: impl FnOnce(&Context<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        let reader = self.open_reader()?;
        let children = Children::default();
        let (catalog, blobs): (&dyn Catalog, &dyn BlobStore) = match &reader {
            Some(store) => (store.catalog(), store.blobs()),
            None => (&EmptyCatalog, &NoBlobs),
        };
        let context = Context {
            graph: &self.graph,
            data_root: self.data_root.clone(),
            staging_root: self.data_root.join(".cairn-tmp"),
            catalog,
            blobs,
            environment: &self.environment,
            children: &children,
            runner: &cairn_engine::local::LocalRunner,
            build: 0,
            retries: None,
            real_dirs: Default::default(),
            programs: Default::default(),
            code_changes: Default::default(),
            in_flight: None,
            remote: None,
        };
        read(&context)
    }

    /// Built partitions the graph no longer declares (a dimension shrank,
    /// a pattern or a dataset was removed), in ref order, each with the
    /// build that made its content: what `status` lists as `orphaned` and
    /// `prune` removes (docs/cli.md).
    pub fn orphans(&self, store: &Store) -> Result<Vec<(PartitionRef, u64)>, AppError> {
        let declared: std::collections::HashSet<PartitionRef> = self
            .graph
            .all_partitions()
            .map_err(AppError::Request)?
            .into_iter()
            .collect();
        let mut orphans = Vec::new();
        store.catalog().partition_states(&mut |partition, state| {
            let is_source = self
                .graph
                .datasets
                .get(partition.dataset())
                .is_some_and(|dataset| dataset.source.is_some());
            if let Some(current) = state.current
                && !is_source
                && !declared.contains(&partition)
            {
                orphans.push((partition, current.build));
            }
            true
        })?;
        Ok(orphans)
    }

    /// The store for reading, or `None` if nothing was ever built here
    /// (the held store, when the workspace holds one).
    pub fn open_reader(&self) -> Result<Option<StoreHandle>, AppError> {
        if let Some(held) = &self.held {
            return Ok(Some(StoreHandle::Held(Arc::clone(&held.store))));
        }
        let catalog = self.store_dir.join("catalog.redb");
        if !catalog.exists() {
            return Ok(None);
        }
        // A first build creates the file and then initializes it: a reader
        // that arrives in between sees an empty file. Give the writer a
        // moment; a file that stays empty is reported as damaged.
        for _ in 0..40 {
            if std::fs::metadata(&catalog).is_ok_and(|metadata| metadata.len() > 0) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let mut on_wait = |_: &str| {};
        Store::open(&self.store_dir, OpenMode::ReadOnly, &mut on_wait)
            .map(|store| Some(StoreHandle::Opened(store)))
            .map_err(AppError::from)
    }
}

/// `; resumable from {"page":23} (checkpoint 7 of build 3)` when `key` has a
/// checkpoint not cleared by a success, else empty.
pub fn resumable_note(context: &Context<'_>, key: &ActionKey) -> Result<String, AppError> {
    let Some(record) = context.catalog.checkpoint(key)? else {
        return Ok(String::new());
    };
    let state = match context.blobs.read(&record.digest) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let mut text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
            if text.len() > 200 {
                let cut = (0..=200)
                    .rev()
                    .find(|index| text.is_char_boundary(*index))
                    .unwrap_or(0);
                text.truncate(cut);
                text.push('…');
            }
            text
        }
        Err(error) => format!("<unreadable: {error}>"),
    };
    Ok(format!(
        "; resumable from {state} (checkpoint {} of build {})",
        record.sequence, record.build
    ))
}

/// The catalog of a store that does not exist yet: nothing was ever built.
pub struct EmptyCatalog;

impl cairn_engine::ports::EventLog for EmptyCatalog {
    fn append_timed(
        &self,
        _build: u64,
        _events: Vec<(u64, EventKind)>,
        _stats: Vec<(String, StatEntry)>,
    ) -> Result<u64, StoreError> {
        Err(StoreError::Catalog {
            path: Path::new(".cairn").to_owned(),
            message: "the store does not exist".into(),
        })
    }
    fn records_nothing(&self) -> Result<bool, StoreError> {
        Ok(true)
    }
    fn never_named(&self, _partition: &PartitionRef) -> Result<bool, StoreError> {
        Ok(true)
    }
    fn next_build_id(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
    fn scan_events(
        &self,
        _from: u64,
        _visit: &mut dyn FnMut(Event) -> bool,
    ) -> Result<(), StoreError> {
        Ok(())
    }
}

impl cairn_engine::ports::Projections for EmptyCatalog {
    fn checkpoint(&self, _key: &ActionKey) -> Result<Option<CheckpointRecord>, StoreError> {
        Ok(None)
    }
    fn action(&self, _key: &ActionKey) -> Result<Option<Manifest>, StoreError> {
        Ok(None)
    }
    fn partition(&self, _partition: &PartitionRef) -> Result<Option<PartitionState>, StoreError> {
        Ok(None)
    }
    fn defs(&self, _source: &str) -> Result<Option<DefsRecord>, StoreError> {
        Ok(None)
    }
    fn dataset_versions(&self) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
        Ok(std::collections::BTreeMap::new())
    }
}

impl cairn_engine::ports::StatCache for EmptyCatalog {
    fn stat(&self, _path: &str) -> Result<Option<StatEntry>, StoreError> {
        Ok(None)
    }
}

/// The blob store of a store that does not exist yet: holds nothing.
pub struct NoBlobs;

impl BlobStore for NoBlobs {
    fn put_file(&self, path: &Path) -> Result<ContentDigest, StoreError> {
        Err(StoreError::io(
            path,
            std::io::Error::other("the store is read-only here"),
        ))
    }
    fn adopt_file(&self, path: &Path) -> Result<ContentDigest, StoreError> {
        self.put_file(path)
    }
    fn put_bytes(&self, _bytes: &[u8]) -> Result<ContentDigest, StoreError> {
        Err(StoreError::io(
            ".cairn",
            std::io::Error::other("the store is read-only here"),
        ))
    }
    fn contains(&self, _digest: &ContentDigest) -> bool {
        false
    }
    fn restore(&self, digest: &ContentDigest, _dest: &Path) -> Result<(), StoreError> {
        Err(StoreError::MissingBlob { expected: *digest })
    }
    fn read(&self, digest: &ContentDigest) -> Result<Vec<u8>, StoreError> {
        Err(StoreError::MissingBlob { expected: *digest })
    }
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// A server shares one workspace between its request threads.
    #[test]
    fn a_workspace_and_its_store_handles_are_send_and_sync() {
        fn shared<T: Send + Sync>() {}
        shared::<super::Workspace>();
        shared::<super::StoreHandle>();
    }
}
