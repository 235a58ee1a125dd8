//! The scheduler in-process, with no process spawned: the in-memory twins of
//! the catalog and the blob store (cairn-core) and a `ScriptedRunner` that
//! writes the outputs each job's script says. Each case asserts exactly
//! which actions ran (the runner's record) and what the build report says
//! (executed, cached, failed, skipped), salsa-style.
//!
//! The graph: `raw/day={mon,tue}` (source files) -> job `clean` (dataset
//! `clean`, versioned) -> job `daily`. `clean` keeps the first line of its
//! input, upper-cased and tagged with the output format; `daily` wraps
//! what `clean` wrote.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_engine::ContentDigest;
use cairn_engine::exec::{BuildOptions, BuildReport, Context, Silent, build};
use cairn_engine::graph::Graph;
use cairn_engine::job::{Children, JobEnvironment, ScriptedJob, ScriptedRunner};
use cairn_engine::local::ProcessConfigurer;
use cairn_engine::memory::{MemoryBlobs, MemoryCatalog};
use cairn_engine::plan::plan;
use cairn_engine::ports::{BlobStore, EventLog, StoreError};
use cairn_engine::record::BuildCounts;

const GRAPH: &str = r#"
[datasets.raw]
source = "inputs/{day}.txt"

[datasets.clean]
version = "1.0.0"

[datasets.daily]

[dimensions.day]
values = ["mon", "tue"]

[jobs.clean]
outputs = ["clean/day={day}"]
inputs = ["raw/day={day}"]
run = ["clean"]

[jobs.daily]
outputs = ["daily/day={day}"]
inputs = ["clean/day={day}"]
run = ["daily"]
"#;

/// What the scripts do, changed by the tests between builds.
#[derive(Default)]
struct Knobs {
    /// The format `clean` writes (a MAJOR bump changes it).
    format: AtomicU32,
    /// The output whose job exits 1.
    fail: Mutex<Option<String>>,
    /// The output whose job runs until the build is interrupted.
    hang: Mutex<Option<String>>,
    /// The output whose job waits until `gate` is cleared.
    gated: Mutex<Option<String>>,
    gate: AtomicBool,
}

fn script(knobs: &Knobs, job: &ScriptedJob<'_>) -> std::io::Result<i32> {
    let output = job.outputs[0].to_string();
    if knobs.fail.lock().unwrap().as_deref() == Some(output.as_str()) {
        return Ok(1);
    }
    if knobs.hang.lock().unwrap().as_deref() == Some(output.as_str()) {
        return Ok(job.wait_for_interrupt());
    }
    if knobs.gated.lock().unwrap().as_deref() == Some(output.as_str()) {
        // Runs on, whatever interrupt its build gets, until released.
        while knobs.gate.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    match job.job {
        "clean" => {
            let text = std::fs::read_to_string(job.input(0))?;
            let first = text.lines().next().unwrap_or_default().to_uppercase();
            let format = knobs.format.load(Ordering::SeqCst);
            job.write(0, "clean.txt", format!("v{format}:{first}\n").as_bytes())?;
        }
        "daily" => {
            let clean = std::fs::read(job.input(0).join("clean.txt"))?;
            job.write(0, "daily.txt", &[b"daily of ".as_slice(), &clean].concat())?;
        }
        other => panic!("no script for job {other}"),
    }
    Ok(0)
}

/// A project in a temporary directory, its store in memory.
struct Fixture {
    dir: tempfile::TempDir,
    catalog: MemoryCatalog,
    blobs: MemoryBlobs,
    runner: ScriptedRunner,
    knobs: Arc<Knobs>,
}

/// What one build did.
struct Built {
    report: BuildReport,
    /// The outputs of the jobs the runner started, sorted.
    ran: Vec<String>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cairn.toml"), GRAPH).unwrap();
        std::fs::create_dir(dir.path().join("inputs")).unwrap();
        std::fs::write(dir.path().join("inputs/mon.txt"), "monday\n").unwrap();
        std::fs::write(dir.path().join("inputs/tue.txt"), "tuesday\n").unwrap();
        let knobs = Arc::new(Knobs::default());
        knobs.format.store(1, Ordering::SeqCst);
        let scripted = Arc::clone(&knobs);
        Fixture {
            dir,
            catalog: MemoryCatalog::new(),
            blobs: MemoryBlobs::new(),
            runner: ScriptedRunner::new(move |job| script(&scripted, job)),
            knobs,
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn data(&self, relative: &str) -> PathBuf {
        self.root().join("data").join(relative)
    }

    fn build(&self, keep_going: bool) -> Built {
        let interrupt = AtomicBool::new(false);
        let children = Children::default();
        self.build_with(keep_going, &interrupt, &children)
    }

    /// Builds every partition with `runner` instead of the fixture's own.
    fn build_on(&self, runner: &ScriptedRunner, keep_going: bool) -> (usize, BuildReport) {
        build_in(
            self.root(),
            &self.catalog,
            &self.blobs,
            runner,
            keep_going,
            &AtomicBool::new(false),
            &Children::default(),
            1,
        )
    }

    fn build_with(&self, keep_going: bool, interrupt: &AtomicBool, children: &Children) -> Built {
        self.runner.clear();
        let (_, report) = build_in(
            self.root(),
            &self.catalog,
            &self.blobs,
            &self.runner,
            keep_going,
            interrupt,
            children,
            1,
        );
        Built {
            report,
            ran: self.runner.ran_outputs(),
        }
    }
}

/// Plans every partition of the graph file in `root` and builds them on
/// these ports with `jobs` workers, as `cairn build -j JOBS` does:
/// `(planned actions, report)`.
#[allow(clippy::too_many_arguments, reason = "a test helper's knobs")]
fn build_in(
    root: &Path,
    catalog: &MemoryCatalog,
    blobs: &dyn BlobStore,
    runner: &ScriptedRunner,
    keep_going: bool,
    interrupt: &AtomicBool,
    children: &Children,
    jobs: usize,
) -> (usize, BuildReport) {
    let graph = Graph::load(&root.join("cairn.toml")).unwrap();
    let environment = JobEnvironment::default();
    let refs = graph.all_partitions().unwrap();
    let configurer = ProcessConfigurer {
        graph: &graph,
        environment: &environment,
    };
    let plan = plan(&graph, &refs, &configurer).unwrap();
    let build_id = catalog.next_build_id().unwrap();
    let context = Context::new(
        &graph,
        catalog,
        blobs,
        &environment,
        children,
        runner,
        build_id,
    );
    let options = BuildOptions {
        keep_going,
        jobs,
        ..BuildOptions::new(interrupt)
    };
    let report = build(&context, &plan, &options, &Silent).unwrap();
    (plan.actions.len(), report)
}

fn counts(executed: u64, cached: u64, failed: u64, skipped: u64) -> BuildCounts {
    BuildCounts {
        executed,
        cached,
        failed,
        skipped,
        joined: 0,
    }
}

const ALL: [&str; 4] = [
    "clean/day=mon",
    "clean/day=tue",
    "daily/day=mon",
    "daily/day=tue",
];

#[test]
fn a_cold_build_runs_every_action() {
    let fixture = Fixture::new();
    let built = fixture.build(false);
    assert_eq!(built.ran, ALL);
    assert_eq!(built.report.counts, counts(4, 0, 0, 0));
    assert!(!built.report.interrupted);
    assert_eq!(
        std::fs::read_to_string(fixture.data("daily/day=tue/daily.txt")).unwrap(),
        "daily of v1:TUESDAY\n"
    );
    // What ran was given its inputs and outputs by position.
    let ran = fixture.runner.ran();
    let daily_mon = ran
        .iter()
        .find(|ran| ran.outputs[0].as_str() == "daily/day=mon")
        .unwrap();
    assert_eq!(daily_mon.job, "daily");
    assert!(
        daily_mon
            .env
            .iter()
            .any(|(name, value)| name == "CAIRN_INPUT_REF_0" && value == "clean/day=mon"),
        "{:?}",
        daily_mon.env
    );
}

#[test]
fn a_second_build_runs_nothing() {
    let fixture = Fixture::new();
    fixture.build(false);
    let built = fixture.build(false);
    assert_eq!(built.ran, Vec::<String>::new());
    assert_eq!(built.report.counts, counts(0, 4, 0, 0));
}

#[test]
fn an_input_change_that_gives_the_same_bytes_stops_there() {
    let fixture = Fixture::new();
    fixture.build(false);
    // `clean` keeps the first line only: its output is unchanged.
    std::fs::write(fixture.root().join("inputs/mon.txt"), "monday\nnotes\n").unwrap();
    let built = fixture.build(false);
    assert_eq!(built.ran, ["clean/day=mon"]);
    assert_eq!(built.report.counts, counts(1, 3, 0, 0));
    // An input change that changes the output runs downstream too.
    std::fs::write(fixture.root().join("inputs/mon.txt"), "lundi\n").unwrap();
    let built = fixture.build(false);
    assert_eq!(built.ran, ["clean/day=mon", "daily/day=mon"]);
    assert_eq!(built.report.counts, counts(2, 2, 0, 0));
}

#[test]
fn a_major_version_bump_runs_the_dataset_and_downstream_again() {
    let fixture = Fixture::new();
    fixture.build(false);
    let graph_file = fixture.root().join("cairn.toml");
    // A MINOR bump keeps every partition.
    std::fs::write(&graph_file, GRAPH.replace("1.0.0", "1.1.0")).unwrap();
    let built = fixture.build(false);
    assert_eq!(built.ran, Vec::<String>::new());
    assert_eq!(built.report.counts, counts(0, 4, 0, 0));
    // A MAJOR bump (with the new format it stands for) runs `clean`, and
    // `daily` reads what changed.
    std::fs::write(&graph_file, GRAPH.replace("1.0.0", "2.0.0")).unwrap();
    fixture.knobs.format.store(2, Ordering::SeqCst);
    let built = fixture.build(false);
    assert_eq!(built.ran, ALL);
    assert_eq!(built.report.counts, counts(4, 0, 0, 0));
    assert_eq!(
        std::fs::read_to_string(fixture.data("daily/day=mon/daily.txt")).unwrap(),
        "daily of v2:MONDAY\n"
    );
}

#[test]
fn deleted_outputs_are_restored_from_the_blobs_without_running() {
    let fixture = Fixture::new();
    fixture.build(false);
    std::fs::remove_dir_all(fixture.data("clean")).unwrap();
    std::fs::remove_file(fixture.data("daily/day=tue/daily.txt")).unwrap();
    let built = fixture.build(false);
    assert_eq!(built.ran, Vec::<String>::new());
    assert_eq!(built.report.counts, counts(0, 4, 0, 0));
    assert_eq!(
        std::fs::read_to_string(fixture.data("clean/day=mon/clean.txt")).unwrap(),
        "v1:MONDAY\n"
    );
    assert_eq!(
        std::fs::read_to_string(fixture.data("daily/day=tue/daily.txt")).unwrap(),
        "daily of v1:TUESDAY\n"
    );
}

#[test]
fn a_failure_with_keep_going_skips_its_downstream_and_runs_the_rest() {
    let fixture = Fixture::new();
    *fixture.knobs.fail.lock().unwrap() = Some("clean/day=mon".to_owned());
    let built = fixture.build(true);
    assert_eq!(
        built.ran,
        ["clean/day=mon", "clean/day=tue", "daily/day=tue"]
    );
    assert_eq!(built.report.counts, counts(2, 0, 1, 1));
    assert_eq!(
        built.report.failures.len(),
        1,
        "{:?}",
        built.report.failures
    );
    assert!(
        built.report.failures[0].contains("clean/day=mon"),
        "{:?}",
        built.report.failures
    );
    assert!(!fixture.data("daily/day=mon").exists());
    // Fixed, the next build runs what failed and what it blocked only.
    *fixture.knobs.fail.lock().unwrap() = None;
    let built = fixture.build(true);
    assert_eq!(built.ran, ["clean/day=mon", "daily/day=mon"]);
    assert_eq!(built.report.counts, counts(2, 2, 0, 0));
}

#[test]
fn an_interrupt_starts_nothing_more() {
    let fixture = Fixture::new();
    *fixture.knobs.hang.lock().unwrap() = Some("clean/day=mon".to_owned());
    let interrupt = AtomicBool::new(false);
    let children = Children::default();
    let built = std::thread::scope(|scope| {
        scope.spawn(|| {
            // As cairn's signal handler does, once the job is running.
            while !fixture
                .runner
                .ran()
                .iter()
                .any(|ran| ran.outputs[0].as_str() == "clean/day=mon")
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            interrupt.store(true, Ordering::SeqCst);
            children.interrupt();
        });
        fixture.build_with(false, &interrupt, &children)
    });
    assert!(built.report.interrupted);
    // One worker: the interrupted job was the last one started.
    let ran = fixture.runner.ran();
    assert_eq!(
        ran.last().unwrap().outputs[0].as_str(),
        "clean/day=mon",
        "{ran:?}"
    );
    assert!(
        !built.ran.contains(&"daily/day=mon".to_owned()),
        "{:?}",
        built.ran
    );
    let counts = built.report.counts;
    assert_eq!(counts.executed, ran.len() as u64 - 1, "{counts:?}");
    assert_eq!(counts.cached, 0, "{counts:?}");
    assert_eq!(
        counts.executed + counts.failed + counts.skipped,
        4,
        "{counts:?}"
    );
    assert!(counts.skipped >= 1, "{counts:?}");
    // The next build runs what the interrupt stopped, and only that.
    *fixture.knobs.hang.lock().unwrap() = None;
    let before: Vec<String> = ran.iter().map(|ran| ran.outputs[0].to_string()).collect();
    let built = fixture.build(false);
    let mut expected: Vec<String> = ALL
        .iter()
        .map(ToString::to_string)
        .filter(|output| output == "clean/day=mon" || !before.contains(output))
        .collect();
    expected.sort();
    assert_eq!(built.ran, expected);
}

/// Two builds of one process sharing an in-flight registry, run at the
/// same time, each of the whole plan: every action runs once over both
/// builds (each taken by one build, joined by the other), and each build
/// ends with every action executed or joined. Cancelling the build that
/// runs the gated job does not stop it: the other build, which joined it,
/// completes with its result.
#[test]
fn concurrent_builds_share_in_flight_actions_and_a_cancel_spares_a_joined_one() {
    use cairn_engine::exec::inflight::InFlight;
    for cancel_first in [false, true] {
        let fixture = Fixture::new();
        *fixture.knobs.gated.lock().unwrap() = Some("clean/day=mon".to_owned());
        fixture.knobs.gate.store(true, Ordering::SeqCst);
        let graph = Graph::load(&fixture.root().join("cairn.toml")).unwrap();
        let environment = JobEnvironment::default();
        let refs = graph.all_partitions().unwrap();
        let configurer = ProcessConfigurer {
            graph: &graph,
            environment: &environment,
        };
        let plan = plan(&graph, &refs, &configurer).unwrap();
        let registry = InFlight::new(4);
        let run = |build_id: u64, interrupt: &AtomicBool, children: &Children| {
            let context = Context {
                in_flight: Some(&registry),
                ..Context::new(
                    &graph,
                    &fixture.catalog,
                    &fixture.blobs,
                    &environment,
                    children,
                    &fixture.runner,
                    build_id,
                )
            };
            build(&context, &plan, &BuildOptions::new(interrupt), &Silent).unwrap()
        };
        let (first_stop, second_stop) = (AtomicBool::new(false), AtomicBool::new(false));
        let (first_children, second_children) = (Children::default(), Children::default());
        let (first, second) = std::thread::scope(|scope| {
            let first = scope.spawn(|| run(1, &first_stop, &first_children));
            // The first build runs the gated job; then the second starts,
            // and waits on it.
            while !fixture
                .runner
                .ran()
                .iter()
                .any(|ran| ran.outputs[0].as_str() == "clean/day=mon")
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            let second = scope.spawn(|| run(2, &second_stop, &second_children));
            std::thread::sleep(Duration::from_millis(200));
            if cancel_first {
                first_stop.store(true, Ordering::SeqCst);
                first_children.interrupt();
            }
            fixture.knobs.gate.store(false, Ordering::SeqCst);
            (first.join().unwrap(), second.join().unwrap())
        });
        let mut ran = fixture.runner.ran_outputs();
        ran.dedup();
        assert_eq!(
            ran.len(),
            fixture.runner.ran().len(),
            "each ran once: {ran:?}"
        );
        let (a, b) = (first.counts, second.counts);
        assert_eq!(b.failed + b.skipped, 0, "{b:?}");
        // Taken from the other build's run, or found current once it was
        // committed.
        assert_eq!(b.executed + b.joined + b.cached, 4, "{b:?}");
        assert!(b.joined >= 1, "the gated job was joined: {b:?}");
        if cancel_first {
            assert!(first.interrupted);
            // The joined job ran to its end in the first build.
            assert!(a.executed >= 1, "{a:?}");
            assert_eq!(ran.len() as u64, a.executed + b.executed, "{ran:?}");
        } else {
            assert_eq!(ALL.len(), ran.len());
            assert_eq!(a.executed + a.joined + a.cached, 4, "{a:?}");
            assert_eq!(a.executed + b.executed, 4, "{a:?} {b:?}");
        }
        // The log: one ActionStarted per output over both builds; the
        // second build's ActionJoined name the first.
        let mut started = Vec::new();
        let mut joined = Vec::new();
        fixture
            .catalog
            .scan_events(1, &mut |event| {
                match &event.kind {
                    cairn_engine::record::EventKind::ActionStarted { outputs, .. } => {
                        started.push(outputs[0].to_string());
                    }
                    cairn_engine::record::EventKind::ActionJoined {
                        outputs,
                        joined_build,
                        ..
                    } => joined.push((event.build, outputs[0].to_string(), *joined_build)),
                    _ => {}
                }
                true
            })
            .unwrap();
        started.sort();
        assert_eq!(started, ran, "one start per action run");
        assert!(
            joined.contains(&(2, "clean/day=mon".to_owned(), 1)),
            "{joined:?}"
        );
        assert!(fixture.data("clean/day=mon").join("clean.txt").exists());
    }
}

/// Counts the group commits' blob syncs of a [`MemoryBlobs`].
struct CountingBlobs {
    inner: MemoryBlobs,
    syncs: AtomicU32,
}

impl BlobStore for CountingBlobs {
    fn put_file(&self, path: &Path) -> Result<ContentDigest, StoreError> {
        self.inner.put_file(path)
    }
    fn adopt_file(&self, path: &Path) -> Result<ContentDigest, StoreError> {
        self.inner.adopt_file(path)
    }
    fn put_bytes(&self, bytes: &[u8]) -> Result<ContentDigest, StoreError> {
        self.inner.put_bytes(bytes)
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
    fn open_verified(
        &self,
        digest: &ContentDigest,
    ) -> Result<Box<dyn std::io::Read + Send + '_>, StoreError> {
        self.inner.open_verified(digest)
    }
    fn sync(&self) -> Result<(), StoreError> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        self.inner.sync()
    }
}

/// A chain runs one action at a time, so there is always a moment with
/// nothing in flight: that moment must not close a group, or every action
/// of the chain pays a sync and a transaction of its own
/// (docs/internals.md, "Durability").
#[test]
fn a_chain_shares_its_group_commits() {
    const DEPTH: u32 = 60;
    let dir = chain();
    let runner = ScriptedRunner::new(|job| {
        let previous = job
            .var("CAIRN_INPUT_0")
            .map(|input| std::fs::read_to_string(Path::new(input).join("f")))
            .transpose()?
            .unwrap_or_default();
        job.write(0, "f", format!("{previous}{}\n", job.outputs[0]).as_bytes())?;
        Ok(0)
    });
    let blobs = CountingBlobs {
        inner: MemoryBlobs::new(),
        syncs: AtomicU32::new(0),
    };
    let (planned, report) = build_in(
        dir.path(),
        &MemoryCatalog::new(),
        &blobs,
        &runner,
        false,
        &AtomicBool::new(false),
        &Children::default(),
        1,
    );
    assert_eq!(planned, DEPTH as usize);
    assert_eq!(report.counts, counts(u64::from(DEPTH), 0, 0, 0));
    let last = std::fs::read_to_string(dir.path().join("data/step/n=2000-02-29/f")).unwrap();
    assert_eq!(last.lines().count(), DEPTH as usize);
    // The build's start, the groups of the 100 ms that the chain's
    // scripted jobs take (a few), and the build's end: nowhere near one
    // per action, which is what closing a group whenever nothing was in
    // flight made (59 syncs here).
    let syncs = blobs.syncs.load(Ordering::SeqCst);
    assert!(
        syncs <= DEPTH / 4,
        "{syncs} blob syncs for a {DEPTH}-deep chain"
    );
}

/// A 60-deep chain (`step/n=2000-01-01` … `2000-02-29`), each step
/// reading the one before, in a temporary directory.
fn chain() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cairn.toml"),
        r#"
[datasets.step]

[dimensions.n]
start = "2000-01-01"
end = "2000-02-29"

[jobs.step]
outputs = ["step/n={n}"]
inputs = ["step/n={n}"]
over.n = { window = [-1, -1] }
run = ["step"]
"#,
    )
    .unwrap();
    dir
}

/// A chain's next step runs on the worker that finished the step before:
/// with `-j 2` the whole chain runs on one thread. Handing each step to the
/// other, idle worker costs a wake-up per action, on a busy machine a wait
/// for a CPU (docs/internals.md).
#[test]
fn a_chain_stays_on_one_worker() {
    let dir = chain();
    let threads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&threads);
    let runner = ScriptedRunner::new(move |job| {
        seen.lock()
            .unwrap()
            .push(std::thread::current().name().unwrap_or("").to_owned());
        job.write(0, "f", b"step\n")?;
        Ok(0)
    });
    let (planned, report) = build_in(
        dir.path(),
        &MemoryCatalog::new(),
        &MemoryBlobs::new(),
        &runner,
        false,
        &AtomicBool::new(false),
        &Children::default(),
        2,
    );
    assert_eq!(report.counts, counts(planned as u64, 0, 0, 0));
    let mut threads = threads.lock().unwrap().clone();
    assert_eq!(threads.len(), planned);
    threads.dedup();
    assert_eq!(threads.len(), 1, "{threads:?}");
}

/// A panic while running an action fails that action, names it, and the
/// build goes on and ends (it used to wait forever for the action).
#[test]
fn a_panic_running_an_action_fails_it_and_the_build_ends() {
    let fixture = Fixture::new();
    let runner = ScriptedRunner::new(|job| {
        if job.outputs[0].to_string() == "clean/day=mon" {
            panic!("scripted panic");
        }
        script(&Knobs::default(), job)
    });
    let (_, report) = fixture.build_on(&runner, true);
    assert_eq!(report.counts, counts(2, 0, 1, 1));
    assert!(
        report.failures[0].contains("scripted panic"),
        "{:?}",
        report.failures
    );
}

/// The parallel work inside an action (the remote cache's downloads,
/// hashing a large output) runs on the build's `-j` workers, so `-j 1`
/// bounds it; on rayon's global pool it would take a thread per core.
#[test]
fn parallel_work_inside_an_action_is_bounded_by_the_jobs() {
    let fixture = Fixture::new();
    let widths = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&widths);
    let runner = ScriptedRunner::new(move |job| {
        seen.lock().unwrap().push(rayon::current_num_threads());
        script(&Knobs::default(), job)
    });
    let (planned, report) = fixture.build_on(&runner, false);
    assert_eq!(report.counts, counts(planned as u64, 0, 0, 0));
    // build_in builds with BuildOptions' default of one job.
    assert_eq!(*widths.lock().unwrap(), vec![1; planned]);
}
