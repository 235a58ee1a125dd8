//! crash_points (docs/reliability.md, promises 1–3): fault injection at every
//! durable step of a build, driven through the engine's library API
//! (`cairn_engine::exec::build`, as `cairn build` calls it) with the real
//! store behind fault-injecting ports.
//!
//! The durable steps a build takes through the ports, in the order the engine
//! must take them (blob bytes durable → catalog commit → report):
//!
//! | point | port call | what the real store does there |
//! | --- | --- | --- |
//! | `build-id` | `EventLog::next_build_id` | reserves the id in memory; the first `append` carrying it stores it |
//! | `blob-write` | `BlobStore::adopt_file` / `put_file` / `put_bytes` | write a temp file in `cas/tmp` (or link a large output there), rename it to `cas/ab/cdef…` |
//! | `blob-sync` | `BlobStore::sync` | `syncfs` (file data, renames and new directories) |
//! | `catalog-commit` | `EventLog::append_timed` | a redb commit (events, projections, stat cache) |
//!
//! At the Nth call of each kind (every N that a normal build reaches) one of
//! these faults is injected, in a child process (this test binary again):
//!
//! - `crash-before`: `kill -9` of the process before the call;
//! - `crash-after`: the call completes, then `kill -9`;
//! - `torn` (blob writes): a half-written temp file is left in `cas/tmp` (a
//!   crash in the middle of the write, before the rename), then `kill -9`;
//! - `power-loss`: `kill -9`, and every blob created since the last
//!   successful sync is deleted, as a power cut would lose unsynced writes
//!   (at a sync: the sync never happened; at a write or commit: after it).
//!   If the engine ever committed a catalog record before syncing the blobs
//!   it refers to, `store verify` finds them missing;
//! - `error`: the call fails with an I/O error; the build must report it
//!   naming the path and record nothing wrong.
//!
//! After each, the real store is reopened through the `cairn` binary:
//! `cairn store verify` is clean, `cairn replay --check` passes, `cairn
//! build` completes running exactly the actions without a recorded success,
//! and `data/` equals a clean build byte for byte.
//!
//! Not covered here: the durable steps of creating a store (`.cairn`
//! skeleton, the catalog's first commit), which happen before a build can
//! be wrapped; the kill -9 harness (tests/reliability_kill9.rs) kills cairn
//! at random moments including those. A power cut cannot be simulated for
//! the redb file itself: its commits are fsynced by redb before `append`
//! returns, so a commit is either durable or absent.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use cairn_engine::ContentDigest;
use cairn_engine::action::Context;
use cairn_engine::digest::ActionKey;
use cairn_engine::exec::{BuildOptions, Silent, build};
use cairn_engine::graph::Graph;
use cairn_engine::plan::plan;
use cairn_engine::ports::{BlobStore, EventLog, Projections, StatCache, StoreError};
use cairn_engine::record::{
    CheckpointRecord, DefsRecord, Event, EventKind, Manifest, PartitionState, StatEntry,
};
use cairn_engine::refs::PartitionRef;
use cairn_engine::runner::{Children, JobEnvironment, ProcessConfigurer};
use cairn_store::{FsBlobStore, OpenMode, RedbCatalog, Store};
use common::{Build, CAIRN, Run, snapshot, str_field};

const TOTAL: u64 = 6;

const GRAPH: &str = r#"
[datasets.src]
source = "inputs/{i}.txt"

[datasets.copy]
version = "1.0.0"

[datasets.twice]
version = "1.0.0"

[dimensions.i]
values = ["a", "b", "c"]

[jobs.copy]
outputs = ["copy/i={i}"]
inputs = ["src/i={i}"]
run = ["sh", "-c", "read -r x < \"$CAIRN_IN\"; printf '%s copied\n' \"$x\" > \"$CAIRN_OUT/v\"; echo \"copy $x\""]

[jobs.twice]
outputs = ["twice/i={i}"]
inputs = ["copy/i={i}"]
args = ["{i}"]
run = ["sh", "-c", "read -r x < \"$CAIRN_IN/v\"; printf '%s\n%s\n' \"$x\" \"$x\" > \"$CAIRN_OUT/v\"; echo \"twice $0\" >&2"]
"#;

fn write_project(dir: &Path) {
    std::fs::create_dir_all(dir.join("inputs")).expect("mkdir inputs");
    std::fs::write(dir.join("cairn.toml"), GRAPH).expect("write cairn.toml");
    for name in ["a", "b", "c"] {
        std::fs::write(
            dir.join(format!("inputs/{name}.txt")),
            format!("value {name}\n"),
        )
        .expect("write input");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    BuildId,
    BlobWrite,
    BlobSync,
    CatalogCommit,
}

const KINDS: [Kind; 4] = [
    Kind::BuildId,
    Kind::BlobWrite,
    Kind::BlobSync,
    Kind::CatalogCommit,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::BuildId => "build-id",
            Kind::BlobWrite => "blob-write",
            Kind::BlobSync => "blob-sync",
            Kind::CatalogCommit => "catalog-commit",
        }
    }

    fn parse(text: &str) -> Kind {
        *KINDS
            .iter()
            .find(|kind| kind.name() == text)
            .unwrap_or_else(|| panic!("unknown kind {text}"))
    }

    fn modes(self) -> &'static [Mode] {
        match self {
            Kind::BlobWrite => &[
                Mode::CrashBefore,
                Mode::Torn,
                Mode::CrashAfter,
                Mode::PowerLoss,
                Mode::Error,
            ],
            Kind::BuildId => &[Mode::CrashBefore, Mode::CrashAfter, Mode::Error],
            Kind::BlobSync | Kind::CatalogCommit => &[
                Mode::CrashBefore,
                Mode::CrashAfter,
                Mode::PowerLoss,
                Mode::Error,
            ],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Mode {
    CrashBefore,
    Torn,
    CrashAfter,
    PowerLoss,
    Error,
}

const MODES: [Mode; 5] = [
    Mode::CrashBefore,
    Mode::Torn,
    Mode::CrashAfter,
    Mode::PowerLoss,
    Mode::Error,
];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::CrashBefore => "crash-before",
            Mode::Torn => "torn",
            Mode::CrashAfter => "crash-after",
            Mode::PowerLoss => "power-loss",
            Mode::Error => "error",
        }
    }

    fn parse(text: &str) -> Mode {
        *MODES
            .iter()
            .find(|mode| mode.name() == text)
            .unwrap_or_else(|| panic!("unknown mode {text}"))
    }

    fn crashes(self) -> bool {
        self != Mode::Error
    }
}

// ------------------------------------------------------------------ child

/// Counts durable calls and injects the fault at the target one.
struct Injector {
    target: Option<(Kind, u64, Mode)>,
    counts: Mutex<BTreeMap<Kind, u64>>,
    result: PathBuf,
    cas_dir: PathBuf,
    catalog_path: PathBuf,
    /// Blobs created (not found present) since the last successful sync.
    unsynced: Mutex<Vec<PathBuf>>,
    /// Set when a crashing fault is reached: from then on the process is
    /// dead as far as the store can tell, so every other thread's durable
    /// call stops before it starts (a real `kill -9` stops all threads at
    /// once; `crash` takes a moment to deliver it).
    crashed: AtomicBool,
}

impl Injector {
    /// Counts a call of `kind`; the fault to inject, if it is the target.
    fn arrive(&self, kind: Kind) -> Option<Mode> {
        // Checked and set under the same lock, so no call passes this point
        // once a crash has been decided.
        let mut counts = self.counts.lock().expect("counts");
        if self.crashed.load(Ordering::SeqCst) {
            drop(counts);
            self.hang()
        }
        let count = counts.entry(kind).or_insert(0);
        *count += 1;
        let (target_kind, n, mode) = self.target?;
        if target_kind != kind || n != *count {
            return None;
        }
        if mode.crashes() {
            self.crashed.store(true, Ordering::SeqCst);
        }
        drop(counts);
        self.note(&format!("reached {} #{n} {}", kind.name(), mode.name()));
        Some(mode)
    }

    fn note(&self, line: &str) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.result)
            .expect("open the result file");
        writeln!(file, "{line}").expect("write the result file");
    }

    /// `kill -9` of this process: no destructor, no flush, nothing more.
    fn crash(&self) -> ! {
        self.crashed.store(true, Ordering::SeqCst);
        let _ = Command::new("kill")
            .args(["-9", &std::process::id().to_string()])
            .status();
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }

    /// A thread that reached a durable call after the crash: it waits for
    /// the `kill -9` that is on its way.
    fn hang(&self) -> ! {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }

    /// What a power cut does to blobs written since the last sync.
    fn lose_unsynced(&self) {
        for path in self.unsynced.lock().expect("unsynced").drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }

    fn injected(&self, kind: Kind, path: &Path) -> StoreError {
        StoreError::io(
            path,
            std::io::Error::other(format!("injected fault at {}", kind.name())),
        )
    }
}

struct FaultyBlobs<'a> {
    inner: &'a FsBlobStore,
    injector: &'a Injector,
}

impl FaultyBlobs<'_> {
    fn put(
        &self,
        bytes: &[u8],
        put: impl FnOnce() -> Result<ContentDigest, StoreError>,
    ) -> Result<ContentDigest, StoreError> {
        let track = |result: &Result<ContentDigest, StoreError>, existed: bool| {
            if let Ok(digest) = result
                && !existed
            {
                self.injector
                    .unsynced
                    .lock()
                    .expect("unsynced")
                    .push(self.inner.blob_path(digest));
            }
        };
        let digest = ContentDigest::of(bytes);
        let existed = self.inner.contains(&digest);
        match self.injector.arrive(Kind::BlobWrite) {
            None => {
                let result = put();
                track(&result, existed);
                result
            }
            Some(Mode::CrashBefore) => self.injector.crash(),
            Some(Mode::Torn) => {
                let temp = self
                    .injector
                    .cas_dir
                    .join("tmp")
                    .join(format!("{}-torn", std::process::id()));
                std::fs::write(&temp, &bytes[..bytes.len() / 2]).expect("write a torn temp");
                self.injector.crash()
            }
            Some(Mode::CrashAfter) => {
                let result = put();
                track(&result, existed);
                self.injector.crash()
            }
            Some(Mode::PowerLoss) => {
                let result = put();
                track(&result, existed);
                self.injector.lose_unsynced();
                self.injector.crash()
            }
            Some(Mode::Error) => Err(self
                .injector
                .injected(Kind::BlobWrite, &self.injector.cas_dir)),
        }
    }
}

impl BlobStore for FaultyBlobs<'_> {
    fn put_file(&self, path: &Path) -> Result<ContentDigest, StoreError> {
        let bytes = std::fs::read(path).map_err(|error| StoreError::io(path, error))?;
        self.put(&bytes, || self.inner.put_file(path))
    }
    fn adopt_file(&self, path: &Path) -> Result<ContentDigest, StoreError> {
        let bytes = std::fs::read(path).map_err(|error| StoreError::io(path, error))?;
        self.put(&bytes, || self.inner.adopt_file(path))
    }
    fn put_bytes(&self, bytes: &[u8]) -> Result<ContentDigest, StoreError> {
        self.put(bytes, || self.inner.put_bytes(bytes))
    }
    fn contains(&self, digest: &ContentDigest) -> bool {
        self.inner.contains(digest)
    }
    fn restore(&self, digest: &ContentDigest, dest: &Path) -> Result<(), StoreError> {
        self.inner.restore(digest, dest)
    }
    fn read(&self, digest: &ContentDigest) -> Result<Vec<u8>, StoreError> {
        self.inner.read(digest)
    }
    fn sync(&self) -> Result<(), StoreError> {
        let synced = || {
            let result = self.inner.sync();
            if result.is_ok() {
                self.injector.unsynced.lock().expect("unsynced").clear();
            }
            result
        };
        match self.injector.arrive(Kind::BlobSync) {
            None => synced(),
            Some(Mode::CrashBefore | Mode::Torn) => self.injector.crash(),
            Some(Mode::CrashAfter) => {
                let _ = synced();
                self.injector.crash()
            }
            Some(Mode::PowerLoss) => {
                self.injector.lose_unsynced();
                self.injector.crash()
            }
            Some(Mode::Error) => Err(self
                .injector
                .injected(Kind::BlobSync, &self.injector.cas_dir)),
        }
    }
}

struct FaultyCatalog<'a> {
    inner: &'a RedbCatalog,
    injector: &'a Injector,
}

impl FaultyCatalog<'_> {
    fn commit<T>(
        &self,
        kind: Kind,
        commit: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match self.injector.arrive(kind) {
            None => commit(),
            Some(Mode::CrashBefore | Mode::Torn) => self.injector.crash(),
            Some(Mode::CrashAfter) => {
                let _ = commit();
                self.injector.crash()
            }
            Some(Mode::PowerLoss) => {
                let _ = commit();
                self.injector.lose_unsynced();
                self.injector.crash()
            }
            Some(Mode::Error) => Err(StoreError::Catalog {
                path: self.injector.catalog_path.clone(),
                message: format!("injected fault at {}", kind.name()),
            }),
        }
    }
}

impl EventLog for FaultyCatalog<'_> {
    fn append_timed(
        &self,
        build: u64,
        events: Vec<(u64, EventKind)>,
        stats: Vec<(String, StatEntry)>,
    ) -> Result<u64, StoreError> {
        self.commit(Kind::CatalogCommit, || {
            self.inner.append_timed(build, events, stats)
        })
    }
    fn next_build_id(&self) -> Result<u64, StoreError> {
        self.commit(Kind::BuildId, || self.inner.next_build_id())
    }
    fn scan_events(
        &self,
        from: u64,
        visit: &mut dyn FnMut(Event) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.scan_events(from, visit)
    }
}

impl Projections for FaultyCatalog<'_> {
    fn action(&self, key: &ActionKey) -> Result<Option<Manifest>, StoreError> {
        self.inner.action(key)
    }
    fn checkpoint(&self, key: &ActionKey) -> Result<Option<CheckpointRecord>, StoreError> {
        self.inner.checkpoint(key)
    }
    fn partition(&self, partition: &PartitionRef) -> Result<Option<PartitionState>, StoreError> {
        self.inner.partition(partition)
    }
    fn dataset_versions(&self) -> Result<BTreeMap<String, String>, StoreError> {
        self.inner.dataset_versions()
    }
    fn defs(&self, source: &str) -> Result<Option<DefsRecord>, StoreError> {
        self.inner.defs(source)
    }
}

impl StatCache for FaultyCatalog<'_> {
    fn stat(&self, path: &str) -> Result<Option<StatEntry>, StoreError> {
        self.inner.stat(path)
    }
}

/// What `cairn build` does, through the faulty ports; the outcome goes to
/// the result file.
fn child_build(dir: &Path, injector_target: Option<(Kind, u64, Mode)>, result: &Path) {
    let graph = Graph::load(&dir.join("cairn.toml")).expect("load the graph");
    let environment = JobEnvironment::from_process(&graph.env);
    let refs = graph.all_partitions().expect("partitions");
    let configurer = ProcessConfigurer {
        graph: &graph,
        environment: &environment,
    };
    let plan = plan(&graph, &refs, &configurer).expect("plan");
    let store = Store::open(
        &dir.join(".cairn"),
        OpenMode::Write { wait: false },
        &mut |_| {},
    )
    .expect("open the store");
    let injector = Injector {
        target: injector_target,
        counts: Mutex::new(BTreeMap::new()),
        result: result.to_owned(),
        cas_dir: store.dir().join("cas"),
        catalog_path: store.catalog().path().to_owned(),
        unsynced: Mutex::new(Vec::new()),
        crashed: AtomicBool::new(false),
    };
    let blobs = FaultyBlobs {
        inner: store.blobs(),
        injector: &injector,
    };
    let catalog = FaultyCatalog {
        inner: store.catalog(),
        injector: &injector,
    };
    let build_id = match catalog.next_build_id() {
        Ok(id) => id,
        Err(error) => {
            injector.note(&format!("error {error}"));
            return;
        }
    };
    let children = Children::default();
    let data_root = graph.root.join("data");
    let context = Context {
        graph: &graph,
        staging_root: data_root.join(".cairn-tmp"),
        data_root,
        catalog: &catalog,
        blobs: &blobs,
        environment: &environment,
        children: &children,
        runner: &cairn_engine::local::LocalRunner,
        build: build_id,
        retries: None,
        real_dirs: Default::default(),
        programs: Default::default(),
        code_changes: Default::default(),
        in_flight: None,
        remote: None,
    };
    let interrupt = AtomicBool::new(false);
    let options = BuildOptions {
        jobs: 1,
        keep_going: false,
        interrupt: &interrupt,
        requested: Vec::new(),
        command: "build".to_owned(),
        reason: None,
        witness: None,
        presumed: None,
        submission: None,
    };
    match build(&context, &plan, &options, &Silent) {
        Ok(report) => {
            let counts: Vec<String> = injector
                .counts
                .lock()
                .expect("counts")
                .iter()
                .map(|(kind, count)| format!("{}={count}", kind.name()))
                .collect();
            injector.note(&format!("counts {}", counts.join(" ")));
            injector.note(&format!(
                "ok executed={} failed={}",
                report.counts.executed, report.counts.failed
            ));
            for failure in report.failures {
                injector.note(&format!("failure {failure}"));
            }
        }
        Err(error) => injector.note(&format!("error {error}")),
    }
}

/// Not a test of its own: the child process of `crash_points`, which runs
/// this binary again with `CAIRN_CRASH_POINT_DIR` set.
#[test]
fn crash_points_child_process() {
    let Ok(dir) = std::env::var("CAIRN_CRASH_POINT_DIR") else {
        return;
    };
    let spec = std::env::var("CAIRN_CRASH_POINT").expect("CAIRN_CRASH_POINT");
    let result = PathBuf::from(std::env::var("CAIRN_CRASH_POINT_RESULT").expect("result path"));
    let target = (spec != "count").then(|| {
        let parts: Vec<&str> = spec.split(':').collect();
        (
            Kind::parse(parts[0]),
            parts[1].parse().expect("n"),
            Mode::parse(parts[2]),
        )
    });
    child_build(Path::new(&dir), target, &result);
}

// ----------------------------------------------------------------- parent

fn cairn(dir: &Path, args: &[&str]) -> Run {
    let output = Command::new(CAIRN)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("spawn cairn");
    Run {
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs the child on `dir` with `spec`; returns its result lines and
/// whether it was killed by SIGKILL.
fn run_child(dir: &Path, spec: &str) -> (Vec<String>, bool) {
    use std::os::unix::process::ExitStatusExt;
    let result = dir.with_extension("result");
    let _ = std::fs::remove_file(&result);
    let output = Command::new(std::env::current_exe().expect("current exe"))
        .args([
            "crash_points_child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CAIRN_CRASH_POINT_DIR", dir)
        .env("CAIRN_CRASH_POINT", spec)
        .env("CAIRN_CRASH_POINT_RESULT", &result)
        .stdin(Stdio::null())
        .output()
        .expect("spawn the child");
    let killed = output.status.signal() == Some(9);
    assert!(
        killed || output.status.success(),
        "child {spec}: {:?}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = std::fs::read_to_string(&result)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    (lines, killed)
}

/// Reopens the real store after the fault and checks every promise.
fn recover(dir: &Path, expected: &BTreeMap<String, Vec<u8>>, point: &str) {
    let mut succeeded = HashSet::new();
    if dir.join(".cairn/catalog.redb").exists() {
        let verify = cairn(dir, &["store", "verify"]);
        assert_eq!(
            verify.code, 0,
            "{point}: store verify\n{}\n{}",
            verify.stdout, verify.stderr
        );
        let replay = cairn(dir, &["replay", "--check"]);
        assert_eq!(
            replay.code, 0,
            "{point}: replay --check\n{}\n{}",
            replay.stdout, replay.stderr
        );
        let log = cairn(dir, &["log", "--json", "--kind", "ActionSucceeded"]);
        log.assert_code(0);
        for event in log.json_lines() {
            succeeded.insert(str_field(&event["manifest"], "key").to_owned());
        }
    }
    let rebuild = Build::new(cairn(dir, &["build", "--json"]));
    rebuild.assert_code(0);
    assert_eq!(rebuild.count("total"), TOTAL, "{point}");
    assert_eq!(rebuild.count("failed"), 0, "{point}");
    for action in rebuild.actions() {
        let recorded = succeeded.contains(str_field(action, "key"));
        assert_eq!(
            str_field(action, "outcome") == "executed",
            !recorded,
            "{point}: {action} (recorded success: {recorded})"
        );
    }
    let actual = snapshot(&dir.join("data"));
    assert!(
        &actual == expected,
        "{point}: data/ differs from a clean build: {:?}",
        actual.keys().collect::<Vec<_>>()
    );
    let verify = cairn(dir, &["store", "verify"]);
    assert_eq!(
        verify.code, 0,
        "{point}: store verify after the rebuild\n{}\n{}",
        verify.stdout, verify.stderr
    );
}

/// Checks what the child said about an injected error.
fn check_error_outcome(point: &str, kind: Kind, lines: &[String], dir: &Path) {
    let cas = dir.join(".cairn/cas").display().to_string();
    let catalog = dir.join(".cairn/catalog.redb").display().to_string();
    let injected = format!("injected fault at {}", kind.name());
    let text = lines.join("\n");
    match kind {
        Kind::BlobWrite => {
            // An output's blob fails its action, naming the store path; a
            // captured log that cannot be stored is dropped (the run stays
            // good without it).
            let failure = lines.iter().find(|line| line.starts_with("failure "));
            if let Some(failure) = failure {
                assert!(
                    failure.contains(&format!("{cas}: {injected}")),
                    "{point}: {failure}"
                );
            } else {
                assert!(text.contains("ok executed="), "{point}: {text}");
            }
        }
        Kind::BlobSync => assert!(
            text.contains(&format!("error {cas}: {injected}")),
            "{point}: {text}"
        ),
        Kind::CatalogCommit | Kind::BuildId => assert!(
            text.contains(&format!("error catalog {catalog}: {injected}")),
            "{point}: {text}"
        ),
    }
}

#[test]
#[expect(clippy::print_stderr, reason = "the test reports its coverage")]
fn crash_points() {
    let root = tempfile::Builder::new()
        .prefix("cairn-crash-points-")
        .tempdir()
        .expect("tempdir");

    // A clean build through the same child, counting the durable calls.
    let reference = root.path().join("reference");
    write_project(&reference);
    let (lines, killed) = run_child(&reference, "count");
    assert!(!killed);
    let counts_line = lines
        .iter()
        .find(|line| line.starts_with("counts "))
        .unwrap_or_else(|| panic!("no counts: {lines:?}"));
    assert!(
        lines
            .iter()
            .any(|line| line == &format!("ok executed={TOTAL} failed=0")),
        "{lines:?}"
    );
    let counts: BTreeMap<Kind, u64> = counts_line["counts ".len()..]
        .split(' ')
        .map(|pair| {
            let (kind, count) = pair.split_once('=').expect("kind=count");
            (Kind::parse(kind), count.parse().expect("count"))
        })
        .collect();
    for kind in KINDS {
        assert!(
            counts.get(&kind).copied().unwrap_or(0) > 0,
            "a build never reached {}: {counts:?}",
            kind.name()
        );
    }
    let expected = snapshot(&reference.join("data"));
    assert_eq!(expected.len() as u64, TOTAL);

    let mut points = Vec::new();
    for (&kind, &count) in &counts {
        for n in 1..=count {
            for &mode in kind.modes() {
                points.push((kind, n, mode));
            }
        }
    }
    // Two at a time, each in a fresh project.
    let next = Mutex::new(points.clone().into_iter().enumerate());
    let reached: Mutex<Vec<(Kind, u64, Mode)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let Some((index, (kind, n, mode))) = next.lock().expect("points").next() else {
                        return;
                    };
                    let point = format!("{} #{n} {}", kind.name(), mode.name());
                    let dir = root.path().join(format!("point-{index}"));
                    write_project(&dir);
                    let spec = format!("{}:{n}:{}", kind.name(), mode.name());
                    let (lines, killed) = run_child(&dir, &spec);
                    let hit = lines.iter().any(|line| line.starts_with("reached "));
                    if hit {
                        reached.lock().expect("reached").push((kind, n, mode));
                        assert_eq!(killed, mode.crashes(), "{point}: {lines:?}");
                        if mode == Mode::Error {
                            check_error_outcome(&point, kind, &lines, &dir);
                        }
                    }
                    recover(&dir, &expected, &point);
                    std::fs::remove_dir_all(&dir).expect("remove the point's project");
                }
            });
        }
    });
    let reached = reached.into_inner().expect("reached");
    let mut summary = String::new();
    for kind in KINDS {
        for &mode in kind.modes() {
            let hits = reached
                .iter()
                .filter(|(k, _, m)| *k == kind && *m == mode)
                .count();
            assert!(
                hits > 0,
                "{} {} was never exercised",
                kind.name(),
                mode.name()
            );
            write!(summary, " {} {}: {hits};", kind.name(), mode.name()).expect("write");
        }
    }
    eprintln!(
        "crash_points: {} of {} points exercised and recovered ({counts:?}):{summary}",
        reached.len(),
        points.len()
    );
}
