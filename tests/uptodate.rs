//! The up-to-date snapshot (engine/src/uptodate.rs): a build that ends with
//! every action current (found current, or run and checked again) leaves
//! one, the next identical build confirms "nothing to do" from it, and
//! everything the full check would catch sends a build down the full path,
//! which then does what it always did. On 3-day x 3-station podcast copies
//! (21 actions).

mod common;

use std::process::{Command, Stdio};

use common::{Build, CAIRN, Project, clean_ref, raw_ref};
use serde_json::Value;

const TOTAL: u64 = 21;
/// `-vv`'s line when the snapshot finished the build.
const CONFIRMED: &str = "up-to-date snapshot confirmed:";
/// `-vv`'s line when the snapshot let the build take unconcerned actions as
/// current.
const PRESUMED: &str = "actions current from the snapshot";

/// `cairn -vv build --json EXTRA...`, and whether the snapshot finished it.
fn build(p: &Project, extra: &[&str]) -> (Build, bool) {
    let mut args = vec!["-vv", "build", "--json"];
    args.extend_from_slice(extra);
    let build = Build::new(p.cairn(&args));
    let quick = build.run.stderr.contains(CONFIRMED);
    (build, quick)
}

const SNAPSHOT: &str = ".cairn/up-to-date";

/// Where the snapshot a test starts from was taken.
#[derive(Debug, Clone, Copy)]
enum Taken {
    /// By the cold build, which ran every job and checked each again.
    Cold,
    /// By a full no-op build after it.
    NoOp,
}

/// A built copy with a snapshot taken as `taken` says.
fn with_snapshot(taken: Taken) -> Project {
    let p = Project::podcast(3, 3);
    let (cold, quick) = build(&p, &[]);
    cold.assert_code(0);
    cold.assert_counts(TOTAL, TOTAL, 0, 0, 0);
    assert!(!quick);
    assert!(
        p.file(SNAPSHOT).is_file(),
        "a build that ran every job recorded no snapshot\n{}",
        cold.run.stderr
    );
    if let Taken::NoOp = taken {
        full_no_op(&p);
    }
    p
}

/// A build down the full path (its snapshot removed first), which finds
/// everything current and records a snapshot.
fn full_no_op(p: &Project) -> Build {
    std::fs::remove_file(p.file(SNAPSHOT)).unwrap();
    let (noop, quick) = build(p, &[]);
    noop.assert_counts(TOTAL, 0, TOTAL, 0, 0);
    assert!(!quick, "no snapshot, but the build says it used one");
    assert!(
        p.file(SNAPSHOT).is_file(),
        "a full no-op recorded no snapshot"
    );
    noop
}

/// The events of a build without what differs between any two builds.
fn shape(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .map(|event| {
            let mut event = event.clone();
            let object = event.as_object_mut().expect("an event is an object");
            for field in ["seq", "time_ms", "build"] {
                object.remove(field);
            }
            // When a job ran, in two builds of two copies.
            if let Some(manifest) = object.get_mut("manifest").and_then(Value::as_object_mut) {
                for field in ["started_ms", "finished_ms"] {
                    manifest.remove(field);
                }
            }
            event
        })
        .collect()
}

/// Panics unless `one` (a build of `p`) and `other` (a build of `q`, the
/// same project or its twin) gave every action the same key and recorded
/// the same events.
fn assert_same_keys_and_events(p: &Project, one: &Build, q: &Project, other: &Build) {
    for output in p.all_refs() {
        assert_eq!(
            one.action_for(&output)["key"],
            other.action_for(&output)["key"],
            "{output}"
        );
    }
    assert_eq!(
        shape(&p.build_events(one.id())),
        shape(&q.build_events(other.id()))
    );
}

#[test]
fn a_confirmed_no_op_reports_and_records_what_a_full_one_does() {
    let p = with_snapshot(Taken::Cold);
    // Confirmed from the cold build's snapshot: every output was written
    // within a second, so all are re-hashed (the racy-timestamp rule).
    let (first, quick) = build(&p, &[]);
    assert!(quick, "{}", first.run.stderr);
    first.assert_counts(TOTAL, 0, TOTAL, 0, 0);
    let full = full_no_op(&p);
    let (quick_build, quick) = build(&p, &[]);
    assert!(quick, "{}", quick_build.run.stderr);
    quick_build.assert_code(0);
    quick_build.assert_counts(TOTAL, 0, TOTAL, 0, 0);
    assert_eq!(quick_build.outputs("cached"), p.all_refs());
    // The same key for every action, and the same events.
    assert_same_keys_and_events(&p, &quick_build, &p, &full);
    assert!(quick_build.id() > full.id());
    // And the one after it is confirmed too (the snapshot follows the log).
    let (again, quick) = build(&p, &[]);
    assert!(quick, "{}", again.run.stderr);
    again.assert_counts(TOTAL, 0, TOTAL, 0, 0);
}

#[test]
fn a_touched_file_is_rehashed_and_confirmed() {
    let p = with_snapshot(Taken::NoOp);
    // Every stat recorded so far is within a second of its file's mtime,
    // too recent to trust (the racy-timestamp rule): the first confirmation
    // a second later re-hashes them all and records their stats.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (settle, quick) = build(&p, &[]);
    assert!(quick, "{}", settle.run.stderr);
    let (settled, quick) = build(&p, &[]);
    assert!(quick, "{}", settled.run.stderr);
    assert!(
        settled.run.stderr.contains(" 0 touched"),
        "{}",
        settled.run.stderr
    );

    let source = p.file("inputs/2024-01-02/S002.txt");
    let output = p.file(&format!(
        "data/{}/reviews.csv",
        clean_ref("2024-01-01", "S001")
    ));
    for path in [&source, &output] {
        let content = std::fs::read(path).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let (touched, quick) = build(&p, &[]);
    assert!(quick, "{}", touched.run.stderr);
    assert!(
        touched.run.stderr.contains(" 2 touched"),
        "{}",
        touched.run.stderr
    );
    touched.assert_counts(TOTAL, 0, TOTAL, 0, 0);
}

/// Each alteration, made after a snapshot was recorded, must send the next
/// build down the full path, which gives the counts it always gave.
#[test]
fn what_the_full_check_would_catch_is_not_confirmed() {
    type Alter = fn(&Project);
    type Counts = Option<(u64, u64)>;
    // Each case: what is altered, how, and the full path's (executed,
    // cached) counts when they are the point (`None`: only that it ran).
    let cases: [(&str, Alter, Counts); 11] = [
        (
            "a source's content",
            |p| p.append("inputs/2024-01-02/S002.txt", "ep9999,4\n"),
            Some((3, TOTAL - 3)),
        ),
        (
            "an output's content, same size",
            |p| {
                let path = format!("data/{}/reviews.csv", clean_ref("2024-01-01", "S001"));
                let mut bytes = p.read(&path);
                let last = bytes.len() - 2;
                bytes[last] ^= 1;
                p.write(&path, bytes);
            },
            Some((0, TOTAL)),
        ),
        (
            "an output deleted",
            |p| {
                std::fs::remove_file(p.file(&format!(
                    "data/{}/reviews.csv",
                    raw_ref("2024-01-03", "S003")
                )))
                .unwrap();
            },
            Some((0, TOTAL)),
        ),
        (
            "a file added to an output partition",
            |p| {
                p.write(
                    &format!("data/{}/extra.txt", clean_ref("2024-01-02", "S001")),
                    "x",
                );
            },
            Some((0, TOTAL)),
        ),
        (
            "an output made executable",
            |p| {
                use std::os::unix::fs::PermissionsExt;
                let path = p.file(&format!(
                    "data/{}/reviews.csv",
                    clean_ref("2024-01-03", "S002")
                ));
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            },
            Some((0, TOTAL)),
        ),
        (
            "a partition invalidated",
            |p| {
                p.cairn(&[
                    "invalidate",
                    &clean_ref("2024-01-01", "S003"),
                    "--reason",
                    "test",
                ])
                .assert_code(0);
            },
            // Rebuilt to the same content: the daily summary is cut off.
            Some((1, TOTAL - 1)),
        ),
        (
            "a comment added to the graph file",
            |p| p.append("cairn.toml", "\n# a comment\n"),
            Some((0, TOTAL)),
        ),
        (
            "a job's code",
            // Versioned datasets key on their major, not on code: nothing
            // runs, but the snapshot cannot know that without planning.
            |p| p.patch_clean("# a comment that changes the code digest"),
            Some((0, TOTAL)),
        ),
        (
            "the projections rebuilt from the log",
            |p| p.cairn(&["replay"]).assert_code(0),
            Some((0, TOTAL)),
        ),
        (
            "the snapshot file damaged",
            |p| {
                let mut bytes = p.read(".cairn/up-to-date");
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x40;
                p.write(".cairn/up-to-date", bytes);
            },
            Some((0, TOTAL)),
        ),
        (
            "a date directory of the outputs replaced by a link to its copy",
            |p| {
                let date = p.file("data/clean/date=2024-01-02");
                let moved = p.file("data/clean/moved");
                std::fs::rename(&date, &moved).unwrap();
                std::os::unix::fs::symlink(&moved, &date).unwrap();
            },
            None,
        ),
    ];
    for taken in [Taken::Cold, Taken::NoOp] {
        for (what, alter, counts) in cases {
            let p = with_snapshot(taken);
            alter(&p);
            let (after, quick) = build(&p, &[]);
            assert!(
                !quick,
                "{what} ({taken:?}): the snapshot was believed\n{}",
                after.run.stderr
            );
            if let Some((executed, cached)) = counts {
                after.assert_code(0);
                assert_eq!(after.count("executed"), executed, "{what} ({taken:?})");
                assert_eq!(after.count("cached"), cached, "{what} ({taken:?})");
            }
        }
    }
}

/// A build that ran some jobs leaves a snapshot of the final state: the
/// next no-op is confirmed, with the keys and events of a full no-op.
#[test]
fn a_build_that_ran_jobs_leaves_a_snapshot_of_what_it_built() {
    let p = with_snapshot(Taken::NoOp);
    p.append("inputs/2024-01-02/S002.txt", "ep9999,4\n");
    let (changed, quick) = build(&p, &[]);
    assert!(!quick, "{}", changed.run.stderr);
    changed.assert_counts(TOTAL, 3, TOTAL - 3, 0, 0);
    let (after, quick) = build(&p, &[]);
    assert!(quick, "{}", after.run.stderr);
    after.assert_counts(TOTAL, 0, TOTAL, 0, 0);
    let full = full_no_op(&p);
    assert_same_keys_and_events(&p, &after, &p, &full);
    // An output rewritten by the build it was found stale in: the settled
    // check replaces what the sweep saw of it.
    let output = format!("data/{}/reviews.csv", clean_ref("2024-01-01", "S001"));
    p.write(&output, "altered\n");
    let (restored, quick) = build(&p, &[]);
    assert!(!quick, "{}", restored.run.stderr);
    restored.assert_counts(TOTAL, 0, TOTAL, 0, 0);
    let (after, quick) = build(&p, &[]);
    assert!(quick, "{}", after.run.stderr);
    after.assert_counts(TOTAL, 0, TOTAL, 0, 0);
}

/// A changed source: the snapshot confirms everything else, and the build
/// checks only the actions the source concerns (and their dependents),
/// with the outcome, keys and events of the full path; the snapshot it
/// leaves confirms the next no-op.
#[test]
fn a_changed_source_is_built_with_the_rest_taken_from_the_snapshot() {
    let assisted = with_snapshot(Taken::NoOp);
    let full = with_snapshot(Taken::NoOp);
    for p in [&assisted, &full] {
        p.append("inputs/2024-01-02/S002.txt", "ep9999,4\n");
    }
    std::fs::remove_file(full.file(SNAPSHOT)).unwrap();
    let (with, _) = build(&assisted, &[]);
    let (without, _) = build(&full, &[]);
    assert!(
        with.run
            .stderr
            .contains(&format!("presumed {} of {TOTAL} {PRESUMED}", TOTAL - 3)),
        "{}",
        with.run.stderr
    );
    assert!(
        with.run.stderr.contains("read the kept plan"),
        "{}",
        with.run.stderr
    );
    assert!(
        !without.run.stderr.contains(PRESUMED),
        "{}",
        without.run.stderr
    );
    for run in [&with, &without] {
        run.assert_code(0);
        run.assert_counts(TOTAL, 3, TOTAL - 3, 0, 0);
    }
    assert_eq!(with.outputs("executed"), without.outputs("executed"));
    assert_same_keys_and_events(&assisted, &with, &full, &without);
    assert_eq!(
        assisted.read_string(&format!(
            "data/{}/summary.csv",
            common::daily_ref("2024-01-02")
        )),
        full.read_string(&format!(
            "data/{}/summary.csv",
            common::daily_ref("2024-01-02")
        ))
    );
    let (after, quick) = build(&assisted, &[]);
    assert!(quick, "{}", after.run.stderr);
    after.assert_counts(TOTAL, 0, TOTAL, 0, 0);

    // Two sources of one day (the kept plan damaged: planned again), then
    // an output altered: each time only what the change concerns is
    // checked, and the result is the full path's.
    let mut plan = assisted.read(".cairn/up-to-date.plan");
    let middle = plan.len() / 2;
    plan[middle] ^= 0x20;
    assisted.write(".cairn/up-to-date.plan", plan);
    assisted.append("inputs/2024-01-03/S001.txt", "ep9998,2\n");
    assisted.append("inputs/2024-01-03/S003.txt", "ep9997,5\n");
    let (two, _) = build(&assisted, &[]);
    assert!(two.run.stderr.contains(PRESUMED), "{}", two.run.stderr);
    assert!(
        two.run.stderr.contains("kept plan ignored"),
        "{}",
        two.run.stderr
    );
    assert!(
        two.run.stderr.contains("refs requested"),
        "{}",
        two.run.stderr
    );
    two.assert_counts(TOTAL, 5, TOTAL - 5, 0, 0);
    let output = format!("data/{}/reviews.csv", clean_ref("2024-01-01", "S001"));
    assisted.write(&output, "altered\n");
    let (restored, _) = build(&assisted, &[]);
    assert!(
        restored.run.stderr.contains(PRESUMED),
        "{}",
        restored.run.stderr
    );
    restored.assert_counts(TOTAL, 0, TOTAL, 0, 0);
    // The build that planned again kept its plan.
    assert!(
        restored.run.stderr.contains("read the kept plan"),
        "{}",
        restored.run.stderr
    );
    assert_ne!(assisted.read_string(&output), "altered\n");
    let (after, quick) = build(&assisted, &[]);
    assert!(quick, "{}", after.run.stderr);
}

/// A build in which an action failed leaves no snapshot, and the one it
/// had is stale: the next build takes the full path and retries.
#[test]
fn a_failed_build_leaves_no_snapshot() {
    let p = with_snapshot(Taken::NoOp);
    // The code is not in a versioned dataset's keys: a changed source
    // makes the failing clean job run.
    p.patch_clean("exit 3");
    p.append("inputs/2024-01-02/S002.txt", "ep9999,4\n");
    let (failed, quick) = build(&p, &[]);
    assert!(!quick, "{}", failed.run.stderr);
    failed.assert_code(1);
    assert!(
        !failed
            .run
            .stderr
            .contains("recorded the up-to-date snapshot"),
        "{}",
        failed.run.stderr
    );
    let (again, quick) = build(&p, &[]);
    assert!(!quick, "{}", again.run.stderr);
    again.assert_code(1);
    assert!(again.count("failed") > 0);
}

const RECHECK: &str = ".cairn/up-to-date.recheck";

/// The plan kept beside the snapshot.
const KEPT_PLAN: &str = ".cairn/up-to-date.plan";

/// Panics unless `build`'s `-vv` output says `text`.
fn assert_says(build: &Build, text: &str) {
    assert!(build.run.stderr.contains(text), "{}", build.run.stderr);
}

/// The input the failed-build tests make fail, and the line that does.
const FAILING_INPUT: &str = "inputs/2024-01-02/S002.txt";
const FAILING_LINE: &str = "FAIL,4\n";

/// Two built copies (with the snapshot of a full no-op) whose `job` fails
/// on a review line `FAIL,…`, that line appended to [`FAILING_INPUT`] in
/// both, and that input's bytes before it.
fn failing_twins(job: &str) -> (Project, Project, String) {
    let make = || {
        let p = Project::podcast(3, 3);
        match job {
            "clean" => p.patch_clean("grep -q '^FAIL,' \"$CAIRN_IN/reviews.csv\" && exit 3"),
            "raw" => p.patch_raw("grep -q '^FAIL,' \"$CAIRN_IN\" && exit 3"),
            other => panic!("no failing {other} job"),
        }
        build(&p, &[]).0.assert_code(0);
        full_no_op(&p);
        p
    };
    let (assisted, full) = (make(), make());
    let original = assisted.read_string(FAILING_INPUT);
    for p in [&assisted, &full] {
        p.append(FAILING_INPUT, FAILING_LINE);
    }
    (assisted, full, original)
}

/// Panics unless `with` (a build of `assisted`) reported and recorded
/// what `without` (the same build of `full` down the full path) did.
fn assert_same_build(assisted: &Project, with: &Build, full: &Project, without: &Build) {
    assert_eq!(with.run.code, without.run.code);
    for count in ["total", "executed", "cached", "failed", "skipped"] {
        assert_eq!(with.count(count), without.count(count), "{count}");
    }
    assert_same_keys_and_events(assisted, with, full, without);
}

/// A build that presumed actions from the snapshot and failed leaves the
/// actions it did not presume for the next build to check, which takes
/// the rest from the snapshot again instead of checking everything: it
/// retries the failure, and after the fix ends where the full path ends,
/// key for key and event for event, with a snapshot again.
#[test]
fn a_failed_build_leaves_its_actions_to_check_and_the_rest_presumed() {
    let (assisted, full, original) = failing_twins("clean");
    std::fs::remove_file(full.file(SNAPSHOT)).unwrap();
    let presumed = format!("presumed {} of {TOTAL} {PRESUMED}", TOTAL - 3);
    let left = "left 3 actions for the next build to check";

    // The failure: raw ran, clean failed, daily was skipped.
    let (with, _) = build(&assisted, &[]);
    let (without, _) = build(&full, &[]);
    with.assert_code(1);
    with.assert_counts(TOTAL, 1, TOTAL - 3, 1, 1);
    assert_says(&with, &presumed);
    assert_says(&with, left);
    assert!(assisted.file(RECHECK).is_file());
    assert!(
        !without.run.stderr.contains(PRESUMED),
        "{}",
        without.run.stderr
    );
    assert_same_build(&assisted, &with, &full, &without);
    // The grid and the dry run take the rest from the snapshot too (the
    // failed partition and those it concerns get the full path's word).
    assert!(
        grid_from_snapshot(&assisted),
        "the grid was not answered from the snapshot"
    );
    let listed = presumed_dry_run_is_the_full_one(&assisted);
    assert_dry_counts(&listed, 2, 0);

    // Again, unfixed: the three checked, the rest presumed, the same
    // failure; raw's new output is found current.
    let (with, quick) = build(&assisted, &[]);
    let (without, _) = build(&full, &[]);
    assert!(!quick, "{}", with.run.stderr);
    with.assert_code(1);
    with.assert_counts(TOTAL, 0, TOTAL - 2, 1, 1);
    assert_says(&with, "left 3 actions to check");
    assert_says(&with, "read the kept plan");
    assert_says(&with, &presumed);
    assert_same_build(&assisted, &with, &full, &without);

    // Fixed: the three run, the rest presumed; a snapshot again, and no
    // list left.
    for p in [&assisted, &full] {
        p.write(FAILING_INPUT, format!("{original}ep9999,4\n"));
    }
    let (with, _) = build(&assisted, &[]);
    let (without, _) = build(&full, &[]);
    with.assert_code(0);
    with.assert_counts(TOTAL, 3, TOTAL - 3, 0, 0);
    assert_says(&with, &presumed);
    assert_same_build(&assisted, &with, &full, &without);
    let daily = format!("data/{}/summary.csv", common::daily_ref("2024-01-02"));
    assert_eq!(assisted.read_string(&daily), full.read_string(&daily));
    assert!(!assisted.file(RECHECK).exists());
    let (after, quick) = build(&assisted, &[]);
    assert!(quick, "{}", after.run.stderr);
    after.assert_counts(TOTAL, 0, TOTAL, 0, 0);
}

/// What the list names is checked even when no path changed any more: the
/// input that made `raw` fail restored to its exact bytes (touched, not
/// changed), and `raw`'s output never rewritten, the next build still
/// checks the three actions the failed build left (and finds them
/// current) instead of taking everything from the snapshot; the full path
/// on a twin copy agrees. So does the dry run, which checks them too.
#[test]
fn the_listed_actions_are_checked_when_no_path_changed() {
    let (assisted, full, original) = failing_twins("raw");
    let (failed, _) = build(&assisted, &[]);
    failed.assert_code(1);
    failed.assert_counts(TOTAL, 0, TOTAL - 3, 1, 2);
    assert_says(&failed, "left 3 actions for the next build to check");
    let listed = presumed_dry_run_is_the_full_one(&assisted);
    assert_dry_counts(&listed, 3, 0);
    for p in [&assisted, &full] {
        p.write(FAILING_INPUT, &original);
    }
    let listed = presumed_dry_run_is_the_full_one(&assisted);
    assert_dry_counts(&listed, 0, 0);
    std::fs::remove_file(full.file(SNAPSHOT)).unwrap();
    let (with, quick) = build(&assisted, &[]);
    let (without, _) = build(&full, &[]);
    assert!(!quick, "{}", with.run.stderr);
    assert_says(
        &with,
        "the failed build since the up-to-date snapshot left 3 actions to check",
    );
    assert_says(&with, "up-to-date snapshot confirmed, no path changed");
    assert_says(
        &with,
        &format!("presumed {} of {TOTAL} {PRESUMED}", TOTAL - 3),
    );
    with.assert_code(0);
    with.assert_counts(TOTAL, 0, TOTAL, 0, 0);
    assert_same_build(&assisted, &with, &full, &without);
    assert!(!assisted.file(RECHECK).exists());
    let (after, quick) = build(&assisted, &[]);
    assert!(quick, "{}", after.run.stderr);
}

/// The actions a failed build left hold only while its events are the
/// log's last: anything recorded after them (an invalidation here) sends
/// the next build down the full path, and a damaged list is no list.
#[test]
fn a_recheck_list_holds_only_right_after_its_build() {
    // Two copies, each failing on its next build.
    let (p, q, _) = failing_twins("clean");
    let (failed, _) = build(&p, &[]);
    failed.assert_code(1);
    assert!(p.file(RECHECK).is_file(), "{}", failed.run.stderr);
    let invalidated = p.cairn(&[
        "invalidate",
        &clean_ref("2024-01-03", "S001"),
        "--reason",
        "test",
    ]);
    assert_eq!(invalidated.code, 0, "{invalidated:?}");
    let (next, _) = build(&p, &[]);
    next.assert_code(1);
    assert!(!next.run.stderr.contains(PRESUMED), "{}", next.run.stderr);
    assert_says(&next, "events were recorded since");

    // A fresh list from a failure after a new snapshot, then altered.
    build(&q, &[]).0.assert_code(1);
    let mut bytes = q.read(RECHECK);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    q.write(RECHECK, bytes);
    let (next, _) = build(&q, &[]);
    assert!(!next.run.stderr.contains(PRESUMED), "{}", next.run.stderr);
    let verify = q.cairn(&["store", "verify"]);
    assert!(
        verify.stdout.contains("recheck list") || verify.stderr.contains("recheck list"),
        "{verify:?}"
    );
}

#[test]
fn another_environment_or_other_refs_are_not_confirmed() {
    let p = with_snapshot(Taken::NoOp);
    // An allow-listed variable enters every key.
    let run = Command::new(CAIRN)
        .args(["-vv", "build", "--json"])
        .current_dir(p.path())
        .env("NO_COLOR", "1")
        .env("LANG", "xx_XX.UTF-8")
        .stdin(Stdio::null())
        .output()
        .expect("spawn cairn");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(!stderr.contains(CONFIRMED), "{stderr}");
    // Other refs asked for: a snapshot of `build` is not one of `build REF`.
    let p = with_snapshot(Taken::NoOp);
    let (one, quick) = build(&p, &[&clean_ref("2024-01-01", "S001")]);
    assert!(!quick, "{}", one.run.stderr);
    one.assert_counts(2, 0, 2, 0, 0);
}

/// `-vv`'s line when a dry run was answered from the snapshot alone (the
/// parenthesis tells it from [`DRY_PRESUMED`]'s).
const DRY_CONFIRMED: &str = "dry run answered from the snapshot (";

/// `cairn -vv build --dry-run --json`: its stdout (the action lines and the
/// summary), and whether the snapshot answered it.
fn dry_run(p: &Project) -> (String, bool) {
    let run = p.cairn(&["-vv", "build", "--dry-run", "--json"]);
    run.assert_code(0);
    (run.stdout.clone(), run.stderr.contains(DRY_CONFIRMED))
}

/// A dry run of a build the snapshot confirms lists from it what the full
/// dry run lists (the same lines in the same order, each naming the build
/// whose result it reuses, presumed actions included), and changes
/// nothing: no event, no stat, the snapshot as it was.
#[test]
fn a_dry_run_from_the_snapshot_lists_what_the_full_one_does() {
    let p = with_snapshot(Taken::Cold);
    // A changed source, built with the rest presumed from the snapshot:
    // the actions name two builds.
    p.append("inputs/2024-01-02/S002.txt", "ep9999,4\n");
    let (changed, _) = build(&p, &[]);
    assert!(
        changed.run.stderr.contains(PRESUMED),
        "{}",
        changed.run.stderr
    );
    changed.assert_counts(TOTAL, 3, TOTAL - 3, 0, 0);
    // Touched, same content: confirmed, and its new stat not recorded.
    let touched = p.file("inputs/2024-01-01/S001.txt");
    touch_later(&touched);
    let state = p.state();
    let snapshot = p.read(SNAPSHOT);
    let (quick, answered) = dry_run(&p);
    assert!(answered, "the dry run did not use the snapshot");
    assert_eq!(p.state(), state, "a dry run changed the store or the data");
    assert_eq!(p.read(SNAPSHOT), snapshot, "a dry run changed the snapshot");
    std::fs::remove_file(p.file(SNAPSHOT)).unwrap();
    let (full, answered) = dry_run(&p);
    assert!(!answered);
    assert_eq!(quick, full, "the two dry runs differ");
    let lines: Vec<Value> = full
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let summary = lines.last().unwrap();
    assert_eq!(summary["total"], TOTAL);
    assert_eq!(summary["cached"], TOTAL);
    let reasons: std::collections::BTreeSet<&str> = lines[..lines.len() - 1]
        .iter()
        .map(|line| line["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            format!("reuses the result of build {}", changed.id() - 1),
            format!("reuses the result of build {}", changed.id()),
        ]
        .iter()
        .map(String::as_str)
        .collect(),
    );
}

/// `-vv`'s line when a dry run took the actions no change concerns from
/// the snapshot and evaluated the rest.
const DRY_PRESUMED: &str = "dry run answered from the snapshot and its kept plan";

/// Panics unless `p`'s dry run took what no change concerns from the
/// snapshot (and changed nothing: no event, no stat, the snapshot as it
/// was) and listed what the full dry run lists, line for line; returns
/// the listing.
fn presumed_dry_run_is_the_full_one(p: &Project) -> String {
    let state = p.state();
    let caches = [SNAPSHOT, KEPT_PLAN, RECHECK].map(|file| std::fs::read(p.file(file)).ok());
    let snapshot = p.read(SNAPSHOT);
    let run = p.cairn(&["-vv", "build", "--dry-run", "--json"]);
    run.assert_code(0);
    assert!(run.stderr.contains(DRY_PRESUMED), "{}", run.stderr);
    assert_eq!(p.state(), state, "a dry run changed the store or the data");
    assert_eq!(
        [SNAPSHOT, KEPT_PLAN, RECHECK].map(|file| std::fs::read(p.file(file)).ok()),
        caches,
        "a dry run changed the snapshot, its plan or the recheck list"
    );
    std::fs::remove_file(p.file(SNAPSHOT)).unwrap();
    let (full, answered) = dry_run(p);
    p.write(SNAPSHOT, snapshot);
    assert!(!answered);
    assert_eq!(run.stdout, full, "the two dry runs differ");
    run.stdout
}

/// Panics unless a dry run's `listed` JSON summary counts `executed`
/// actions to run and `skipped` blocked or pending ones, the rest cached.
fn assert_dry_counts(listed: &str, executed: u64, skipped: u64) {
    let summary: Value = serde_json::from_str(listed.lines().last().unwrap()).unwrap();
    assert_eq!(summary["total"], TOTAL, "{summary}");
    assert_eq!(summary["executed"], executed, "{summary}");
    assert_eq!(summary["skipped"], skipped, "{summary}");
    assert_eq!(summary["cached"], TOTAL - executed - skipped, "{summary}");
}

/// A dry run after a change takes the actions it does not concern from
/// the snapshot, as the build would, and lists what the full one lists;
/// another build's snapshot answers nothing.
#[test]
fn a_dry_run_after_a_change_evaluates_only_what_it_concerns() {
    let p = with_snapshot(Taken::NoOp);
    p.append("inputs/2024-01-02/S002.txt", "ep9999,4\n");
    let listed = presumed_dry_run_is_the_full_one(&p);
    let run = p.cairn(&["-vv", "build", "--dry-run"]);
    assert!(
        run.stderr.contains(&format!(
            "dry run: presumed {} of {TOTAL} actions current from the snapshot",
            TOTAL - 3
        )),
        "{}",
        run.stderr
    );
    assert_dry_counts(&listed, 3, 0);
    // A deleted output: restored, and what reads it still current.
    let p = with_snapshot(Taken::NoOp);
    std::fs::remove_dir_all(p.file(&format!("data/{}", clean_ref("2024-01-03", "S003")))).unwrap();
    let listed = presumed_dry_run_is_the_full_one(&p);
    assert!(listed.contains("\"restore\""), "{listed}");
    assert_dry_counts(&listed, 0, 0);
    // Other refs asked for: the snapshot is of `build` alone.
    let p = with_snapshot(Taken::NoOp);
    let run = p.cairn(&[
        "-vv",
        "build",
        "--dry-run",
        &clean_ref("2024-01-01", "S001"),
    ]);
    run.assert_code(0);
    assert!(!run.stderr.contains(DRY_CONFIRMED), "{}", run.stderr);
    assert!(!run.stderr.contains(DRY_PRESUMED), "{}", run.stderr);
    assert!(run.stderr.contains("dry run: 2 actions"), "{}", run.stderr);
}

/// A configure that answers otherwise for another set of refs (here each
/// config's environment holds the size of the batch asked for) makes the
/// concerned actions planned again differ from the kept plan's, so their
/// verdicts would not be the build's: the dry run and the grid's states
/// take the full path, and say what it says.
#[test]
fn a_configure_that_reads_its_batch_sends_the_dry_run_down_the_full_path() {
    let p = Project::podcast(3, 3);
    p.executable_daily();
    let script = p.read_string("jobs/daily.sh");
    let patched = script.replacen(
        r#"printf "],\"args\":[\"%s\"],\"env\":{}}", d"#,
        r#"printf "],\"args\":[\"%s\"],\"env\":{\"BATCH\":\"%d\"}}", d, ARGC - 1"#,
        1,
    );
    assert_ne!(patched, script, "daily's configure changed shape");
    p.write("jobs/daily.sh", patched);
    build(&p, &[]).0.assert_code(0);
    full_no_op(&p);
    p.append("inputs/2024-01-02/S002.txt", "ep9999,4\n");
    let run = p.cairn(&["-vv", "build", "--dry-run", "--json"]);
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("the concerned actions planned again differ from the kept plan"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(DRY_PRESUMED), "{}", run.stderr);
    let snapshot = p.read(SNAPSHOT);
    std::fs::remove_file(p.file(SNAPSHOT)).unwrap();
    let (full, _) = dry_run(&p);
    p.write(SNAPSHOT, snapshot);
    assert_eq!(run.stdout, full, "the two dry runs differ");
    assert_dry_counts(&full, 3, 0);
    let workspace = workspace(&p);
    let everything: Vec<String> = Vec::new();
    let from_snapshot = cairn_app::status::snapshot_states(&workspace, &everything)
        .expect("the states from the snapshot");
    assert!(
        from_snapshot.is_none(),
        "the grid took the concerned states from a plan that differs"
    );
    let states = cairn_app::status::states(&workspace, &everything).expect("states");
    assert_eq!(states, full_states(&workspace, &everything));
}

/// A build with a changed input writes what changed over the snapshot it
/// presumed actions from (the entries of what it observed again, the keys
/// and builds of what it ran), and the snapshot it leaves says what the
/// full path's would: the next build is confirmed from it, a dry run from
/// it lists what the full dry run lists, and the next change is presumed
/// from it again.
#[test]
fn a_changed_input_patches_the_snapshot_in_place() {
    let p = with_snapshot(Taken::NoOp);
    p.append("inputs/2024-01-02/S002.txt", "ep9999,4\n");
    let (changed, _) = build(&p, &[]);
    changed.assert_code(0);
    changed.assert_counts(TOTAL, 3, TOTAL - 3, 0, 0);
    assert!(
        changed.run.stderr.contains(PATCHED),
        "the snapshot was not patched\n{}",
        changed.run.stderr
    );
    let (listed, answered) = dry_run(&p);
    assert!(answered, "the patched snapshot did not answer the dry run");
    let snapshot = p.read(SNAPSHOT);
    std::fs::remove_file(p.file(SNAPSHOT)).unwrap();
    let (full, answered) = dry_run(&p);
    assert!(!answered);
    assert_eq!(listed, full, "the patched snapshot lists other results");
    p.write(SNAPSHOT, snapshot);
    let (after, quick) = build(&p, &[]);
    assert!(quick, "{}", after.run.stderr);
    after.assert_counts(TOTAL, 0, TOTAL, 0, 0);
    p.append("inputs/2024-01-03/S001.txt", "ep9998,2\n");
    let (again, _) = build(&p, &[]);
    assert!(again.run.stderr.contains(PRESUMED), "{}", again.run.stderr);
    assert!(again.run.stderr.contains(PATCHED), "{}", again.run.stderr);
    again.assert_counts(TOTAL, 3, TOTAL - 3, 0, 0);
    let (after, quick) = build(&p, &[]);
    assert!(quick, "{}", after.run.stderr);
}

/// `-vv`'s line when a build wrote what changed over the snapshot.
const PATCHED: &str = "up-to-date snapshot (patched:";

/// Each partition gets `out.txt`, and `extra.txt` once its input says
/// "extra".
const EXTRA: &str = r#"
[datasets.inputs]
source = "inputs/{day}.txt"

[datasets.out]

[dimensions.day]
values = ["a", "b"]

[jobs.make]
outputs = ["out/day={day}"]
inputs = ["inputs/day={day}"]
run = ["sh", "-c", "cp \"$CAIRN_IN\" \"$CAIRN_OUT/out.txt\" && if grep -q extra \"$CAIRN_IN\"; then echo x > \"$CAIRN_OUT/extra.txt\"; fi"]
"#;

/// A build that observed a path the snapshot does not record (a job wrote
/// a new file) writes the snapshot whole, which confirms the next build;
/// a change after it patches it again.
#[test]
fn an_output_file_recorded_anew_writes_the_snapshot_whole() {
    let p = Project::with_graph(EXTRA);
    p.write("inputs/a.txt", "one\n");
    p.write("inputs/b.txt", "one\n");
    let (cold, _) = build(&p, &[]);
    cold.assert_code(0);
    cold.assert_counts(2, 2, 0, 0, 0);
    let (noop, quick) = build(&p, &[]);
    assert!(quick, "{}", noop.run.stderr);
    p.append("inputs/a.txt", "extra\n");
    let (changed, _) = build(&p, &[]);
    changed.assert_code(0);
    changed.assert_counts(2, 1, 1, 0, 0);
    assert!(
        changed.run.stderr.contains("presumed 1 of 2"),
        "{}",
        changed.run.stderr
    );
    assert!(
        changed.run.stderr.contains("written anew"),
        "{}",
        changed.run.stderr
    );
    assert!(p.file("data/out/day=a/extra.txt").is_file());
    let (after, quick) = build(&p, &[]);
    assert!(quick, "{}", after.run.stderr);
    after.assert_counts(2, 0, 2, 0, 0);
    p.append("inputs/b.txt", "two\n");
    let (patched, _) = build(&p, &[]);
    patched.assert_counts(2, 1, 1, 0, 0);
    assert!(
        patched.run.stderr.contains(PATCHED),
        "{}",
        patched.run.stderr
    );
    let (after, quick) = build(&p, &[]);
    assert!(quick, "{}", after.run.stderr);
}

/// The workspace of `p`, opened as `cairn serve` opens it.
fn workspace(p: &Project) -> cairn_app::Workspace {
    cairn_app::Workspace::open(
        &cairn_app::WorkspaceOptions {
            graph_file: Some(p.file("cairn.toml")),
            store_dir: None,
        },
        std::sync::Arc::new(cairn_app::Silent),
    )
    .expect("open the workspace")
}

/// What a grid asks for: each dataset's partitions, and everything.
fn grid_requests() -> Vec<Vec<String>> {
    [
        vec!["inputs/date={date}/station={station}"],
        vec!["raw/date={date}/station={station}"],
        vec!["clean/date={date}/station={station}"],
        vec!["daily/date={date}"],
        vec![],
    ]
    .into_iter()
    .map(|requests| requests.into_iter().map(str::to_owned).collect())
    .collect()
}

/// The states of `requests` by the full status (planned and evaluated).
fn full_states(
    workspace: &cairn_app::Workspace,
    requests: &[String],
) -> Vec<(cairn_engine::refs::PartitionRef, cairn_app::status::State)> {
    cairn_app::status::status(workspace, requests)
        .expect("status")
        .into_iter()
        .map(|row| (row.partition, row.state))
        .collect()
}

/// Whether the grids' states of `p` come from the snapshot; either way
/// they are the full status's, state for state.
fn grid_from_snapshot(p: &Project) -> bool {
    let workspace = workspace(p);
    let mut answered = Vec::new();
    for requests in grid_requests() {
        let full = full_states(&workspace, &requests);
        let from_snapshot = cairn_app::status::snapshot_states(&workspace, &requests)
            .expect("the states from the snapshot");
        if let Some(states) = &from_snapshot {
            assert_eq!(states, &full, "the snapshot's states of {requests:?}");
        }
        let states = cairn_app::status::states(&workspace, &requests).expect("states");
        assert_eq!(states, full, "the states of {requests:?}");
        answered.push(from_snapshot.is_some());
    }
    assert!(
        answered.iter().all(|&a| a == answered[0]),
        "some requests were answered from the snapshot, some not: {answered:?}"
    );
    answered[0]
}

/// A grid's states (`cairn_app::status::states`) of a store the snapshot
/// confirms are taken from it, without planning or evaluating: the full
/// status's. Touched files (same content) are confirmed. A changed input
/// or a data path altered outside cairn are presumed from it: the
/// partitions they concern get the full status's states (the cells differ
/// from the snapshot's: stale), the others are built. An invalidation or
/// changed code are not, and the full status says what they change.
#[test]
fn a_grid_of_a_built_store_is_answered_from_the_snapshot() {
    let p = with_snapshot(Taken::NoOp);
    assert!(grid_from_snapshot(&p), "a confirmed snapshot was not used");
    let touched = p.file("inputs/2024-01-01/S001.txt");
    touch_later(&touched);
    assert!(grid_from_snapshot(&p), "a touched input was not confirmed");
    // The fast path plans nothing.
    let workspace_now = workspace(&p);
    let before = workspace_now.plans_made();
    let clean = ["clean/date={date}/station={station}".to_owned()];
    cairn_app::status::states(&workspace_now, &clean).expect("states");
    assert_eq!(
        workspace_now.plans_made(),
        before,
        "planned from the snapshot"
    );

    let stale = |p: &Project, partition: &str| {
        let workspace = workspace(p);
        let states = cairn_app::status::states(&workspace, &[]).expect("states");
        let state = states
            .iter()
            .find(|(found, _)| found.as_str() == partition)
            .map(|(_, state)| *state);
        assert_eq!(
            state,
            Some(cairn_app::status::State::Stale),
            "{partition}: {states:?}"
        );
    };
    // An input changed: the snapshot answers, but for the partitions it
    // concerns (its raw partition, what reads that), whose states are
    // the full status's: stale, where the snapshot would say built.
    p.append("inputs/2024-01-02/S002.txt", "ep9999,4\n");
    assert!(grid_from_snapshot(&p), "a changed input was not presumed");
    stale(&p, &raw_ref("2024-01-02", "S002"));
    // Built again: the snapshot (patched by that build) answers again.
    build(&p, &[]).0.assert_code(0);
    assert!(grid_from_snapshot(&p), "the patched snapshot was not used");

    // A data path deleted outside cairn: restored by the next build.
    let p = with_snapshot(Taken::NoOp);
    std::fs::remove_dir_all(p.file(&format!("data/{}", clean_ref("2024-01-03", "S003")))).unwrap();
    assert!(
        grid_from_snapshot(&p),
        "a deleted data path was not presumed"
    );
    stale(&p, &clean_ref("2024-01-03", "S003"));

    // Invalidated: an event since the snapshot.
    let p = with_snapshot(Taken::NoOp);
    let partition = clean_ref("2024-01-01", "S002");
    p.cairn(&["invalidate", &partition, "--reason", "bad batch"])
        .assert_code(0);
    assert!(!grid_from_snapshot(&p), "an invalidation was not seen");
    stale(&p, &partition);

    // The clean job's code changed (what that means for its partitions
    // is the full status's to say).
    let p = with_snapshot(Taken::NoOp);
    p.append("jobs/clean.sh", "# changed\n");
    assert!(!grid_from_snapshot(&p), "changed code was confirmed");
}

/// Gives `path` a modification time 5 s ahead, its content unchanged: a
/// stat that differs from the recorded one, for the same content.
fn touch_later(path: &std::path::Path) {
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(later)
        .unwrap();
}
