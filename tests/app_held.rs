//! A held workspace (`Workspace::hold`), as `cairn serve` uses it: the store
//! opened once as writer, use cases called from many threads at once,
//! builds running concurrently and cancelled through a `Cancel` handle
//! instead of signals.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn_app::build::{BuildRequest, Cancel, Unobserved};
use cairn_app::{Silent, Workspace, WorkspaceOptions};
use common::{Project, wait_for};

/// Two partitions whose jobs each wait (up to 10 s) for the other to have
/// started: both succeed only if they run at the same time.
const RENDEZVOUS: &str = r#"
[datasets.a]
version = "1.0.0"
[dimensions.i]
values = ["1", "2"]
[jobs.a]
outputs = ["a/i={i}"]
run = ["sh", "-c", "touch started-$0; other=$((3 - $0)); n=0; while [ ! -e started-$other ]; do n=$((n + 1)); [ $n -gt 200 ] && exit 1; sleep 0.05; done; echo $0 > $CAIRN_OUT/v"]
args = ["{i}"]
"#;

fn open(project: &Project) -> Workspace {
    let options = WorkspaceOptions {
        graph_file: Some(project.path().join("cairn.toml")),
        store_dir: None,
    };
    Workspace::open(&options, Arc::new(Silent)).expect("open the workspace")
}

/// `project`'s workspace, its store held (as `cairn serve` holds it).
fn held(project: &Project) -> Workspace {
    let mut workspace = open(project);
    workspace.hold(false).expect("hold the store");
    workspace
}

fn request(refs: &[&str], cancel: &Cancel) -> BuildRequest {
    BuildRequest {
        refs: refs.iter().map(|r| (*r).to_owned()).collect(),
        cancel: Some(cancel.clone()),
        ..BuildRequest::default()
    }
}

/// Failed before `Workspace::hold` (it did not exist: each build took the
/// writer lock itself, and the second of two concurrent builds of one
/// process was refused or waited, so the rendezvous timed out).
#[test]
fn builds_run_concurrently_on_a_held_workspace_and_reads_go_on_beside_them() {
    let p = Project::with_graph(RENDEZVOUS);
    let workspace = held(&p);
    assert!(workspace.is_held());

    // The store is held: another writer (here another workspace of this
    // process, which takes the lock through its own file) is refused.
    let error = open(&p).hold(false).expect_err("refused");
    assert_eq!(error.exit_code(), 3, "{error}");

    let running = AtomicBool::new(true);
    let workspace = &workspace;
    let (first, second, reads) = std::thread::scope(|threads| {
        let first = threads.spawn(|| {
            cairn_app::build::build(workspace, &request(&["a/i=1"], &Cancel::new()), &Unobserved)
        });
        let second = threads.spawn(|| {
            cairn_app::build::build(workspace, &request(&["a/i=2"], &Cancel::new()), &Unobserved)
        });
        let reads = threads.spawn(|| {
            let mut reads = 0;
            while running.load(Ordering::SeqCst) {
                cairn_app::status::status(workspace, &[]).expect("status beside the builds");
                cairn_app::status::why(workspace, "a/i=1").expect("why beside the builds");
                cairn_app::history::history(workspace, "a/i=2").expect("history beside the builds");
                reads += 1;
            }
            reads
        });
        let first = first.join().unwrap().expect("the first build");
        let second = second.join().unwrap().expect("the second build");
        running.store(false, Ordering::SeqCst);
        (first, second, reads.join().unwrap())
    });
    assert!(reads > 0);
    assert_eq!(
        (first.counts().executed, first.counts().failed),
        (1, 0),
        "{:?}",
        first.report.failures
    );
    assert_eq!(
        (second.counts().executed, second.counts().failed),
        (1, 0),
        "{:?}",
        second.report.failures
    );
    assert_ne!(first.build(), second.build(), "one build id each");
    drop((first, second));
    assert_eq!(p.read_string("data/a/i=1/v"), "1\n");
    assert_eq!(p.read_string("data/a/i=2/v"), "2\n");

    // Reads on the held store see both builds.
    let rows = cairn_app::status::status(workspace, &[]).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        cairn_app::status::count(&rows, cairn_app::status::State::Built),
        2
    );
    // A build of both now finds them current, on the same held store.
    let again =
        cairn_app::build::build(workspace, &request(&[], &Cancel::new()), &Unobserved).unwrap();
    assert_eq!((again.counts().cached, again.counts().executed), (2, 0));
}

/// Partition 1 runs until stopped (and notes a SIGTERM); partition 2 runs
/// for a second.
const SLOW_AND_QUICK: &str = r#"
[datasets.a]
version = "1.0.0"
[dimensions.i]
values = ["1", "2"]
[jobs.a]
outputs = ["a/i={i}"]
run = ["sh", "-c", "trap 'touch termed-$0; exit 1' TERM; touch started-$0; if [ $0 = 1 ]; then while :; do sleep 0.1; done; fi; sleep 1; echo $0 > $CAIRN_OUT/v"]
args = ["{i}"]
"#;

/// Failed before `Cancel` (there was no way to stop one build of a process
/// but a signal, which stops them all).
#[test]
fn a_cancelled_build_stops_and_the_other_build_of_the_process_runs_on() {
    let p = Project::with_graph(SLOW_AND_QUICK);
    let workspace = held(&p);
    let workspace = &workspace;

    // Cancelled before it starts: nothing runs.
    let early = Cancel::new();
    early.cancel();
    let built = cairn_app::build::build(workspace, &request(&["a/i=2"], &early), &Unobserved)
        .expect("a cancelled build still ends with a report");
    assert!(built.interrupted());
    assert_eq!(built.exit_code(), 130);
    assert_eq!(built.counts().executed, 0);
    drop(built);
    assert!(!p.file("started-2").exists());

    let slow = Cancel::new();
    let (stopped, finished, waited) = std::thread::scope(|threads| {
        let stopped = threads
            .spawn(|| cairn_app::build::build(workspace, &request(&["a/i=1"], &slow), &Unobserved));
        let finished = threads.spawn(|| {
            cairn_app::build::build(workspace, &request(&["a/i=2"], &Cancel::new()), &Unobserved)
        });
        wait_for(&p.file("started-1"));
        wait_for(&p.file("started-2"));
        let cancelled = Instant::now();
        slow.cancel();
        slow.cancel(); // idempotent
        let stopped = stopped.join().unwrap().expect("the cancelled build");
        let waited = cancelled.elapsed();
        (
            stopped,
            finished.join().unwrap().expect("the other build"),
            waited,
        )
    });
    assert!(stopped.interrupted());
    assert_eq!(stopped.exit_code(), 130);
    assert!(
        waited < Duration::from_secs(4),
        "its job exits on SIGTERM: stopped after {waited:?}"
    );
    assert!(p.file("termed-1").exists(), "the cancelled job got SIGTERM");
    assert!(!p.file("data/a/i=1").exists());
    assert_eq!(finished.exit_code(), 0, "{:?}", finished.report.failures);
    assert_eq!(finished.counts().executed, 1);
    assert!(
        !p.file("termed-2").exists(),
        "the other build's job was not signalled"
    );
    assert_eq!(p.read_string("data/a/i=2/v"), "2\n");
}

/// A store held by `cairn serve` (here: this test process, holding it as
/// the server does and naming its URL in the lock file) refuses a local
/// `cairn build --no-wait` with exit 3, saying to use `--remote`. Failed
/// before `Store::record_server` (the message named only a pid).
#[test]
fn a_local_build_of_a_store_a_server_holds_is_told_to_use_remote() {
    let p = Project::with_graph(RENDEZVOUS);
    let workspace = held(&p);
    let url = "http://127.0.0.1:8421";
    workspace
        .held_store()
        .expect("held")
        .record_server(url)
        .expect("name the server");
    let refused = p.cairn(&["build", "--no-wait"]);
    refused.assert_code(3);
    let expected = format!(
        "the store {} is held by `cairn serve` (pid {}) at {url}: use `cairn --remote {url} build …`",
        p.path().join(".cairn").display(),
        std::process::id()
    );
    assert!(refused.stderr.contains(&expected), "{}", refused.stderr);
    // Released with the workspace: the local build goes ahead.
    drop(workspace);
    p.cairn(&["build", "--no-wait", "a/i=1", "a/i=2"])
        .assert_code(0);
}

/// `s` runs until the file `go` exists (noting each run in `ran-s`, and a
/// SIGTERM in `termed-s`); `x` and `y` each read it.
const SHARED: &str = r#"
[datasets.s]
version = "1.0.0"
[datasets.x]
version = "1.0.0"
[datasets.y]
version = "1.0.0"
[dimensions.k]
values = ["1"]
[jobs.s]
outputs = ["s/k={k}"]
run = ["sh", "-c", "trap 'touch termed-s; exit 1' TERM; echo run >> ran-s; touch started-s; n=0; while [ ! -e go ]; do n=$((n + 1)); [ $n -gt 400 ] && exit 1; sleep 0.05; done; echo s > $CAIRN_OUT/v"]
[jobs.x]
outputs = ["x/k={k}"]
inputs = ["s/k={k}"]
run = ["sh", "-c", "cp $CAIRN_IN/v $CAIRN_OUT/v"]
[jobs.y]
outputs = ["y/k={k}"]
inputs = ["s/k={k}"]
run = ["sh", "-c", "cp $CAIRN_IN/v $CAIRN_OUT/v"]
"#;

/// Hears when its build joins another's run.
#[derive(Default)]
struct Joins(AtomicBool);

impl cairn_engine::exec::Reporter for Joins {
    fn joined(
        &self,
        _action: &cairn_engine::plan::PlannedAction,
        _joined_build: u64,
        _progress: cairn_engine::exec::Progress,
    ) {
        self.0.store(true, Ordering::SeqCst);
    }
}
impl cairn_app::build::BuildObserver for Joins {}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The kinds of `build`'s events about `partition`, in order.
fn kinds(p: &Project, build: u64, partition: &str) -> Vec<String> {
    p.log(&[])
        .iter()
        .filter(|event| event["build"].as_u64() == Some(build))
        .filter(|event| {
            event["outputs"]
                .as_array()
                .is_some_and(|outputs| outputs.iter().any(|o| o.as_str() == Some(partition)))
        })
        .map(|event| event["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// Two builds of one held workspace need `s` at once: it runs once, in the
/// first; the second joins it (`ActionJoined`, counted `joined`) and builds
/// on its output. Failed before the in-flight registry (`s` ran twice, its
/// two runs replacing each other's output).
#[test]
fn two_builds_needing_one_action_run_it_once() {
    let p = Project::with_graph(SHARED);
    let workspace = held(&p);
    let workspace = &workspace;
    let joins = Joins::default();
    let (first, second) = std::thread::scope(|threads| {
        let first = threads.spawn(|| {
            cairn_app::build::build(workspace, &request(&["x/k=1"], &Cancel::new()), &Unobserved)
        });
        wait_for(&p.file("started-s"));
        let second = threads.spawn(|| {
            let submitted = BuildRequest {
                submission: Some(cairn_app::build::Submission {
                    operation: "op-second".into(),
                    idempotency_key: None,
                    body_digest: [2; 32],
                    ..Default::default()
                }),
                ..request(&["y/k=1"], &Cancel::new())
            };
            cairn_app::build::build(workspace, &submitted, &joins)
        });
        wait_until("the second build joining", || {
            joins.0.load(Ordering::SeqCst)
        });
        // status and why on the held workspace see s running (in the
        // first build: the second waits on that run).
        wait_until("s shown running", || {
            cairn_app::status::why(workspace, "s/k=1")
                .is_ok_and(|why| why.state == cairn_app::status::WhyState::Running)
        });
        let why = cairn_app::status::why(workspace, "s/k=1").unwrap();
        assert!(
            why.text
                .starts_with("s/k=1 is being built now: job s in build "),
            "{}",
            why.text
        );
        p.write("go", "");
        (
            first.join().unwrap().expect("first"),
            second.join().unwrap().expect("second"),
        )
    });
    assert_eq!(p.read_string("ran-s"), "run\n", "s ran once");
    let (a, b) = (first.counts(), second.counts());
    assert_eq!((a.executed, a.joined, a.failed), (2, 0, 0), "s and x");
    assert_eq!(
        (b.executed, b.joined, b.failed),
        (1, 1, 0),
        "y, and s joined"
    );
    assert_eq!(p.read_string("data/y/k=1/v"), "s\n");
    let (a, b) = (first.build(), second.build());
    drop((first, second));
    // One ActionStarted for s in the whole log (the succeeded event
    // carries the manifest, not `outputs`).
    assert_eq!(kinds(&p, a, "s/k=1"), ["ActionStarted"]);
    let started = p.log(&["--kind", "ActionStarted"]);
    assert_eq!(
        started
            .iter()
            .filter(|event| event["job"].as_str() == Some("s"))
            .count(),
        1
    );
    assert_eq!(kinds(&p, b, "s/k=1"), ["ActionJoined"]);
    let joined = p
        .log(&["--kind", "ActionJoined"])
        .into_iter()
        .next()
        .expect("an ActionJoined");
    assert_eq!(joined["joined_build"].as_u64(), Some(a));
    assert_eq!(joined["build"].as_u64(), Some(b));

    // history and why say that the second build joined the run.
    let cairn_app::history::History::Entries(entries) =
        cairn_app::history::history(workspace, "s/k=1").unwrap()
    else {
        panic!("entries expected")
    };
    assert!(
        entries.iter().any(|entry| matches!(
            entry,
            cairn_app::history::HistoryEntry::Joined(joined)
                if joined.build == b && joined.joined_build == a
        )),
        "{entries:?}"
    );
    let why = cairn_app::status::why(workspace, "s/k=1").unwrap();
    assert!(
        why.text.ends_with(&format!(
            "; build {b} joined the run of build {a} (not built twice)"
        )),
        "{}",
        why.text
    );
    // The second build's events interleave with the first's: history
    // still finds its request, and names its operation.
    let cairn_app::history::History::Entries(entries) =
        cairn_app::history::history(workspace, "y/k=1").unwrap()
    else {
        panic!("entries expected")
    };
    assert!(
        matches!(
            &entries[0],
            cairn_app::history::HistoryEntry::Materialization(m)
                if m.build == b && m.operation.as_deref() == Some("op-second")
        ),
        "{entries:?}"
    );
    let history = p.cairn(&["history", "s/k=1"]);
    assert!(
        history.stdout.contains(&format!(
            "joined the run of build {a} (job s, not built twice)"
        )),
        "{}",
        history.stdout
    );
}

/// A server's build records its submission (operation, idempotency key,
/// body digest) in `BuildRequested`, shown by `cairn log --json`, so a
/// restarted server can rebuild its operations from the log. Failed before
/// `BuildRequest::submission` (store format 9).
#[test]
fn a_submission_is_recorded_in_the_log() {
    let p = Project::with_graph(RENDEZVOUS);
    let workspace = held(&p);
    p.write("started-2", "");
    let built = cairn_app::build::build(
        &workspace,
        &BuildRequest {
            submission: Some(cairn_app::build::Submission {
                operation: "op-7f3a9c2e01b4".into(),
                idempotency_key: Some("ci-42".into()),
                body_digest: [0xab; 32],
                ..Default::default()
            }),
            ..request(&["a/i=1"], &Cancel::new())
        },
        &Unobserved,
    )
    .unwrap();
    assert_eq!(built.exit_code(), 0, "{:?}", built.report.failures);
    let build = built.build();
    drop(built);
    drop(workspace);
    let requested = p.log(&["--kind", "BuildRequested"]);
    let line = requested
        .iter()
        .find(|event| event["build"].as_u64() == Some(build))
        .expect("the build's BuildRequested");
    assert_eq!(line["submission"]["operation"], "op-7f3a9c2e01b4");
    assert_eq!(line["submission"]["idempotency_key"], "ci-42");
    assert_eq!(line["submission"]["body_digest"], "ab".repeat(32));
    // The build's end is in the log too: how it ended.
    let finished = p.log(&["--kind", "BuildFinished"]);
    let line = finished
        .iter()
        .find(|event| event["build"].as_u64() == Some(build))
        .expect("the build's BuildFinished");
    assert_eq!(line["interrupted"], false);
    assert_eq!(line["counts"]["executed"], 1);
}

/// Cancelling the build that runs a joined action does not kill it: it
/// runs to its end (recorded by the cancelled build), and the build that
/// joined it completes. Failed before the shield (the cancel SIGTERMed
/// `s`, and the joined build failed).
#[test]
fn cancelling_a_build_never_kills_an_action_another_build_joined() {
    let p = Project::with_graph(SHARED);
    let workspace = held(&p);
    let workspace = &workspace;
    let joins = Joins::default();
    let cancel = Cancel::new();
    let (first, second) = std::thread::scope(|threads| {
        let first = threads.spawn(|| {
            cairn_app::build::build(workspace, &request(&["x/k=1"], &cancel), &Unobserved)
        });
        wait_for(&p.file("started-s"));
        let second = threads.spawn(|| {
            cairn_app::build::build(workspace, &request(&["y/k=1"], &Cancel::new()), &joins)
        });
        wait_until("the second build joining", || {
            joins.0.load(Ordering::SeqCst)
        });
        cancel.cancel();
        cancel.kill_now();
        std::thread::sleep(Duration::from_millis(500));
        p.write("go", "");
        (
            first.join().unwrap().expect("first"),
            second.join().unwrap().expect("second"),
        )
    });
    assert!(!p.file("termed-s").exists(), "s got no SIGTERM");
    assert_eq!(p.read_string("ran-s"), "run\n", "s ran once");
    assert!(first.interrupted());
    assert_eq!(
        first.counts().executed,
        1,
        "s ran to its end in the first build"
    );
    assert_eq!(first.counts().skipped, 1, "x was not started");
    assert_eq!(second.exit_code(), 0, "{:?}", second.report.failures);
    assert_eq!((second.counts().joined, second.counts().executed), (1, 1));
    assert_eq!(p.read_string("data/y/k=1/v"), "s\n");
    assert!(!p.file("data/x/k=1").exists());
}

/// `b`'s job leaves an orphan (a background process whose parent exited,
/// re-parented to cairn) that lives a second and then notes it survived;
/// `a` is quick.
const ORPHAN: &str = r#"
[datasets.a]
version = "1.0.0"
[datasets.b]
version = "1.0.0"
[dimensions.k]
values = ["1"]
[jobs.a]
outputs = ["a/k={k}"]
run = ["sh", "-c", "echo a > $CAIRN_OUT/v"]
[jobs.b]
outputs = ["b/k={k}"]
run = ["sh", "-c", "(sh -c 'sleep 1; touch survived' &); touch started-b; sleep 2; echo b > $CAIRN_OUT/v"]
"#;

/// The end of one build of a process reaps only its own orphans while
/// another build runs: the other build's orphan lives on. Failed before
/// (the end of every build killed every orphan re-parented to cairn).
#[test]
fn the_end_of_a_build_spares_the_orphans_of_another_build_of_the_process() {
    let p = Project::with_graph(ORPHAN);
    let workspace = held(&p);
    let workspace = &workspace;
    let (quick, slow) = std::thread::scope(|threads| {
        let slow = threads.spawn(|| {
            cairn_app::build::build(workspace, &request(&["b/k=1"], &Cancel::new()), &Unobserved)
        });
        wait_for(&p.file("started-b"));
        let quick =
            cairn_app::build::build(workspace, &request(&["a/k=1"], &Cancel::new()), &Unobserved)
                .expect("the quick build");
        assert!(
            !p.file("survived").exists(),
            "the quick build ended while the orphan sleeps"
        );
        (quick, slow.join().unwrap().expect("the slow build"))
    });
    assert_eq!(quick.exit_code(), 0, "{:?}", quick.report.failures);
    assert_eq!(slow.exit_code(), 0, "{:?}", slow.report.failures);
    assert!(
        p.file("survived").exists(),
        "the other build's orphan lived"
    );
}

/// When the build that joined a run is cancelled too, nobody waits on the
/// run any more: the first build's cancel reaches the job (SIGTERM), and
/// both builds end. Failed before the shield dropped with its last waiter
/// (the job ran on, unwanted, until it ended by itself).
#[test]
fn a_joined_run_nobody_waits_on_any_more_is_stopped() {
    let p = Project::with_graph(SHARED);
    let workspace = held(&p);
    let workspace = &workspace;
    let joins = Joins::default();
    let (first_cancel, second_cancel) = (Cancel::new(), Cancel::new());
    let (first, second, waited) = std::thread::scope(|threads| {
        let first = threads.spawn(|| {
            cairn_app::build::build(workspace, &request(&["x/k=1"], &first_cancel), &Unobserved)
        });
        wait_for(&p.file("started-s"));
        let second = threads.spawn(|| {
            cairn_app::build::build(workspace, &request(&["y/k=1"], &second_cancel), &joins)
        });
        wait_until("the second build joining", || {
            joins.0.load(Ordering::SeqCst)
        });
        first_cancel.cancel();
        std::thread::sleep(Duration::from_millis(300));
        assert!(!p.file("termed-s").exists(), "joined: spared");
        let cancelled = Instant::now();
        second_cancel.cancel();
        let second = second.join().unwrap().expect("second");
        let first = first.join().unwrap().expect("first");
        (first, second, cancelled.elapsed())
    });
    assert!(p.file("termed-s").exists(), "the job got SIGTERM");
    assert!(
        waited < Duration::from_secs(4),
        "stopped {waited:?} after the last waiter left"
    );
    assert!(first.interrupted() && second.interrupted());
    assert_eq!(second.counts().joined, 0);
    assert!(!p.file("data/s/k=1").exists());
}

/// `a/i=N` counts its runs in `runs-N` and, while `hold-N` exists, waits
/// for it to go (up to 20 s).
const COUNTED: &str = r#"
[datasets.a]
version = "1.0.0"
[dimensions.i]
values = ["1", "2"]
[jobs.a]
outputs = ["a/i={i}"]
run = ["sh", "-c", "echo run >> runs-$0; touch started-$0; n=0; while [ -e hold-$0 ]; do n=$((n + 1)); [ $n -gt 400 ] && exit 1; sleep 0.05; done; echo $0 > $CAIRN_OUT/v"]
args = ["{i}"]
"#;

fn runs(p: &Project, i: u32) -> usize {
    std::fs::read_to_string(p.file(&format!("runs-{i}")))
        .unwrap_or_default()
        .lines()
        .count()
}

/// A held store's builds finish from the up-to-date snapshot as the
/// command line's do (a no-op through `cairn serve` is then as cheap as a
/// local one), and a build that another caller appended beside leaves no
/// snapshot: here an invalidation made while a build ran, which the
/// snapshot of that build would otherwise have vouched past, so that the
/// next build took the invalidated partition as current. Failed before
/// the held snapshot (the second build planned: `plan` was `Some`).
#[test]
fn a_held_workspace_uses_the_snapshot_but_never_past_another_callers_events() {
    let p = Project::with_graph(COUNTED);
    let workspace = held(&p);
    let workspace = &workspace;
    let both = || request(&["a/i=1", "a/i=2"], &Cancel::new());
    let built = cairn_app::build::build(workspace, &both(), &Unobserved).expect("cold");
    assert_eq!(built.counts().executed, 2);
    drop(built);

    let again = cairn_app::build::build(workspace, &both(), &Unobserved).expect("no-op");
    assert_eq!((again.counts().executed, again.counts().cached), (0, 2));
    assert!(again.plan.is_none(), "the snapshot finished the no-op");
    drop(again);

    // a/i=1 rebuilds, held back; meanwhile another caller invalidates
    // a/i=2, which this build already took as current.
    cairn_app::invalidate::invalidate(workspace, &["a/i=1".into()], "redo", None, false, false)
        .expect("invalidate a/i=1");
    std::fs::write(p.file("hold-1"), "").unwrap();
    let _ = std::fs::remove_file(p.file("started-1"));
    let finished = AtomicBool::new(false);
    let heard = Heard {
        partition: "a/i=2",
        finished: &finished,
    };
    std::thread::scope(|threads| {
        let running = threads.spawn(|| cairn_app::build::build(workspace, &both(), &heard));
        wait_for(&p.file("started-1"));
        wait_until("a/i=2 taken as current", || finished.load(Ordering::SeqCst));
        cairn_app::invalidate::invalidate(
            workspace,
            &["a/i=2".into()],
            "upstream fixed",
            None,
            false,
            false,
        )
        .expect("invalidate a/i=2 beside the build");
        std::fs::remove_file(p.file("hold-1")).unwrap();
        let built = running.join().unwrap().expect("the build beside");
        assert_eq!((built.counts().executed, built.counts().cached), (1, 1));
    });
    assert_eq!((runs(&p, 1), runs(&p, 2)), (2, 1));

    let after = cairn_app::build::build(workspace, &both(), &Unobserved).expect("after");
    assert_eq!(
        (after.counts().executed, after.counts().cached),
        (1, 1),
        "the invalidated a/i=2 runs again"
    );
    assert_eq!((runs(&p, 1), runs(&p, 2)), (2, 2));
}

/// Sets `finished` once `partition`'s action ended (committed).
struct Heard<'a> {
    partition: &'a str,
    finished: &'a AtomicBool,
}

impl cairn_engine::exec::Reporter for Heard<'_> {
    fn finished(
        &self,
        action: &cairn_engine::plan::PlannedAction,
        _key: Option<&cairn_engine::digest::ActionKey>,
        _outcome: &cairn_engine::exec::Outcome,
        _progress: cairn_engine::exec::Progress,
    ) {
        if action
            .config
            .outputs
            .iter()
            .any(|o| o.as_str() == self.partition)
        {
            self.finished.store(true, Ordering::SeqCst);
        }
    }
}

impl cairn_app::build::BuildObserver for Heard<'_> {}
