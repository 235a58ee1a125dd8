//! The write-side use cases of cairn-app (build, dry run, plan, backfill)
//! called in-process, as a second front end (the coming `cairn serve`)
//! would: a workspace opened from paths, a build observed through
//! `BuildObserver`, typed results, no clap and nothing printed.
//!
//! One test function: a build installs signal handlers and reaps orphans
//! process-wide, so builds in one test binary run one at a time.

mod common;

use std::sync::Arc;
use std::sync::Mutex;

use cairn_app::build::{BuildObserver, BuildRequest, DryRun};
use cairn_app::{Notes, Workspace, WorkspaceOptions};
use cairn_engine::action::Outcome;
use cairn_engine::digest::ActionKey;
use cairn_engine::exec::{Progress, Reporter};
use cairn_engine::plan::PlannedAction;
use cairn_engine::uptodate::Snapshot;
use common::Project;

/// What a front end heard.
#[derive(Default)]
struct Heard {
    /// `job outcome` per finished action.
    finished: Mutex<Vec<String>>,
    /// Actions the up-to-date snapshot reported current, per call.
    current: Mutex<Vec<usize>>,
    done: Mutex<u32>,
}

impl Reporter for Heard {
    fn finished(
        &self,
        action: &PlannedAction,
        _key: Option<&ActionKey>,
        outcome: &Outcome,
        _progress: Progress,
    ) {
        self.finished.lock().unwrap().push(format!(
            "{} {}",
            action.job,
            cairn_app::dto::build::outcome_word(outcome)
        ));
    }
}

impl BuildObserver for Heard {
    fn actions_done(&self) {
        *self.done.lock().unwrap() += 1;
    }
    fn found_current(&self, snapshot: &Snapshot) {
        self.current.lock().unwrap().push(snapshot.actions.len());
    }
}

/// Notes kept instead of printed.
#[derive(Default)]
struct Kept(Mutex<Vec<String>>);

impl Notes for Kept {
    fn note(&self, message: &str) {
        self.0.lock().unwrap().push(message.to_owned());
    }
    fn warning(&self, message: &str) {
        self.0.lock().unwrap().push(format!("warning: {message}"));
    }
}

#[test]
fn a_front_end_builds_plans_and_dry_runs_through_the_library() {
    let project = Project::podcast(2, 2);
    let dir = &project;
    let options = WorkspaceOptions {
        graph_file: Some(dir.path().join("cairn.toml")),
        store_dir: None,
    };
    let notes = Arc::new(Kept::default());
    let workspace = Workspace::open(&options, notes.clone()).expect("open the workspace");
    assert_eq!(workspace.store_dir, dir.path().join(".cairn"));

    // A missing graph file is a usage error (exit 2), with its message.
    let missing = WorkspaceOptions {
        graph_file: Some(dir.path().join("nope.toml")),
        store_dir: None,
    };
    let error = Workspace::open(&missing, Arc::new(cairn_app::Silent))
        .err()
        .expect("no graph file there");
    assert_eq!(error.exit_code(), 2);
    assert!(error.to_string().contains("no graph file here"), "{error}");

    // The plan, with a verdict per action: 10 actions never built.
    let planned =
        cairn_app::plan::plan(&workspace, &["daily/date={date}".to_owned()], true).unwrap();
    assert_eq!(planned.plan.actions.len(), 10);
    assert!(
        planned
            .verdicts
            .iter()
            .all(|verdict| verdict.state() == "run")
    );
    assert_eq!(planned.json().actions.len(), 10);

    // A cold build: every action executed, each heard once.
    let cold = Heard::default();
    let built = cairn_app::build::build(&workspace, &BuildRequest::default(), &cold).unwrap();
    assert_eq!((built.total, built.counts().executed), (10, 10));
    assert_eq!(built.exit_code(), 0);
    assert!(built.plan.is_some());
    drop(built);
    let mut finished = cold.finished.lock().unwrap().clone();
    finished.sort();
    assert_eq!(finished.len(), 10);
    assert!(finished.iter().all(|line| line.ends_with(" executed")));
    assert_eq!(*cold.done.lock().unwrap(), 1);
    assert!(cold.current.lock().unwrap().is_empty());

    // Again: the up-to-date snapshot finishes it, reported in one call.
    let again = Heard::default();
    let built = cairn_app::build::build(&workspace, &BuildRequest::default(), &again).unwrap();
    assert_eq!((built.total, built.counts().cached), (10, 10));
    assert!(built.plan.is_none(), "no planning on the quick path");
    drop(built);
    assert!(again.finished.lock().unwrap().is_empty());
    assert_eq!(*again.current.lock().unwrap(), vec![10]);

    // The dry run answers from the snapshot too; after an input changed,
    // from a plan: 3 actions would run.
    let dry = cairn_app::build::dry_run(&workspace, &[], None).unwrap();
    assert!(matches!(dry, DryRun::Current(_)));
    assert_eq!(dry.counts().0, 10);
    let input = dir.path().join("inputs/2024-01-02/S002.txt");
    let mut text = std::fs::read_to_string(&input).unwrap();
    text.push_str("ep9999,5\n");
    std::fs::write(&input, text).unwrap();
    let dry = cairn_app::build::dry_run(&workspace, &[], None).unwrap();
    let (total, counts) = dry.counts();
    assert!(matches!(dry, DryRun::Planned { .. }));
    assert_eq!((total, counts.executed, counts.cached), (10, 3, 7));

    // -j past the limit is clamped, with a note (not printed).
    let request = BuildRequest {
        jobs: Some(100_000),
        ..BuildRequest::default()
    };
    let incremental = Heard::default();
    let built = cairn_app::build::build(&workspace, &request, &incremental).unwrap();
    assert_eq!(built.counts().executed, 3);
    drop(built);
    let mut ran = incremental.finished.lock().unwrap().clone();
    ran.retain(|line| line.ends_with(" executed"));
    ran.sort();
    assert_eq!(ran, ["clean executed", "daily executed", "raw executed"]);
    let notes = notes.0.lock().unwrap();
    assert!(
        notes
            .iter()
            .any(|note| note.starts_with("-j 100000 clamped")),
        "{notes:?}"
    );
}
