//! The inspection commands on 3-day x 3-station podcast copies (21 actions):
//! `log` and its filters, `plan` in every format, `status`, and
//! `build --dry-run`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Command, Stdio};

use common::{
    Build, Project, clean_ref, daily_ref, event_job, event_partitions, of_kind, partitions_of_kind,
    raw_ref, refs, str_field,
};
use serde_json::Value;

const TOTAL: u64 = 21;

/// A 3x3 copy built twice: build 1 executes everything; `data/` is
/// removed, and build 2 restores all of it from the store.
fn built_twice() -> (Project, Build, Build) {
    let p = Project::podcast(3, 3);
    let first = p.build(&[]);
    first.assert_code(0);
    first.assert_counts(TOTAL, TOTAL, 0, 0, 0);
    std::fs::remove_dir_all(p.path().join("data")).expect("remove data/");
    let second = p.build(&[]);
    second.assert_code(0);
    second.assert_counts(TOTAL, 0, TOTAL, 0, 0);
    (p, first, second)
}

fn kinds(events: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for event in events {
        *counts
            .entry(str_field(event, "kind").to_owned())
            .or_default() += 1;
    }
    counts
}

/// Asserts how many events of each listed kind there are (other kinds,
/// such as `DatasetVersionChanged`, may appear too).
fn assert_kinds(events: &[Value], expected: &BTreeMap<String, usize>) {
    let actual = kinds(events);
    for (kind, count) in expected {
        assert_eq!(
            actual.get(kind).copied().unwrap_or(0),
            *count,
            "{kind} events; all kinds: {actual:?}"
        );
    }
}

/// Digests and keys are 64 lowercase hex characters.
fn assert_hex64(text: &str) {
    assert!(
        text.len() == 64
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "not 64 hex characters: {text:?}"
    );
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq is a number"))
        .collect()
}

#[test]
fn log_json_records_a_build_and_its_cached_rebuild() {
    let (p, first, second) = built_twice();
    let all = p.all_refs();
    let events = p.log(&[]);

    // Every line is an object with seq, time_ms, build and kind; seq is
    // strictly increasing.
    for event in &events {
        assert!(event["seq"].is_u64(), "no seq: {event}");
        assert!(event["time_ms"].is_u64(), "no time_ms: {event}");
        assert!(event["build"].is_u64(), "no build: {event}");
        assert!(event["kind"].is_string(), "no kind: {event}");
    }
    let all_seqs = seqs(&events);
    assert!(
        all_seqs.windows(2).all(|w| w[0] < w[1]),
        "seq not increasing: {all_seqs:?}"
    );
    let builds: BTreeSet<u64> = events.iter().filter_map(|e| e["build"].as_u64()).collect();
    assert_eq!(builds, [first.id(), second.id()].into_iter().collect());

    // Build 1: requested, planned, every action started, succeeded and
    // materialized its partition, finished.
    let build1: Vec<Value> = events
        .iter()
        .filter(|e| e["build"] == first.id())
        .cloned()
        .collect();
    let expected_kinds: BTreeMap<String, usize> = [
        ("BuildRequested", 1),
        ("Planned", 1),
        ("ActionStarted", 21),
        ("ActionSucceeded", 21),
        ("PartitionMaterialized", 21),
        ("BuildFinished", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    assert_kinds(&build1, &expected_kinds);
    assert_eq!(build1[0]["kind"], "BuildRequested");
    let planned = of_kind(&build1, "Planned");
    assert_eq!(planned[0]["actions"], TOTAL);
    assert_eq!(build1.last().expect("events")["kind"], "BuildFinished");
    assert_eq!(partitions_of_kind(&build1, "ActionStarted"), all);
    assert_eq!(partitions_of_kind(&build1, "ActionSucceeded"), all);
    assert_eq!(partitions_of_kind(&build1, "PartitionMaterialized"), all);
    for started in of_kind(&build1, "ActionStarted") {
        for field in ["job", "key", "reason"] {
            assert!(
                started[field].is_string(),
                "ActionStarted without {field}: {started}"
            );
        }
        assert!(started["outputs"].is_array());
        assert_hex64(str_field(started, "key"));
    }
    for materialized in of_kind(&build1, "PartitionMaterialized") {
        for field in ["partition", "digest", "key"] {
            assert!(
                materialized[field].is_string(),
                "PartitionMaterialized without {field}: {materialized}"
            );
        }
        assert_hex64(str_field(materialized, "digest"));
        assert_hex64(str_field(materialized, "key"));
    }
    // Each action started before it succeeded, under the same key.
    for succeeded in of_kind(&build1, "ActionSucceeded") {
        let key = str_field(&succeeded["manifest"], "key");
        let started = of_kind(&build1, "ActionStarted")
            .into_iter()
            .find(|e| e["key"] == key)
            .unwrap_or_else(|| panic!("no ActionStarted with key {key}"));
        assert!(started["seq"].as_u64() < succeeded["seq"].as_u64());
    }
    let finished = of_kind(&build1, "BuildFinished")[0];
    for field in ["executed", "cached", "failed", "skipped"] {
        assert_eq!(
            finished["counts"][field],
            first.summary()[field],
            "BuildFinished counts vs the summary: {field}"
        );
    }
    assert_eq!(finished["interrupted"], false);

    // Build 2: every action cached (restored), built by build 1; nothing
    // started.
    let build2: Vec<Value> = events
        .iter()
        .filter(|e| e["build"] == second.id())
        .cloned()
        .collect();
    let expected_kinds: BTreeMap<String, usize> = [
        ("BuildRequested", 1),
        ("Planned", 1),
        ("ActionStarted", 0),
        ("ActionSucceeded", 0),
        ("ActionFailed", 0),
        ("ActionCached", 21),
        ("PartitionMaterialized", 21),
        ("BuildFinished", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    assert_kinds(&build2, &expected_kinds);
    assert_eq!(partitions_of_kind(&build2, "ActionCached"), all);
    for cached in of_kind(&build2, "ActionCached") {
        assert_eq!(cached["built_by"], first.id(), "{cached}");
        assert_eq!(cached["restored"], true, "{cached}");
    }

    // Build 3, a no-op: the actions were already current, which is not an
    // event of each action but the count of the build's BuildFinished; the
    // log does not grow with every action of every no-op build.
    let third = p.build(&[]);
    third.assert_counts(TOTAL, 0, TOTAL, 0, 0);
    let build3: Vec<Value> = p
        .log(&["--build", &third.id().to_string()])
        .into_iter()
        .collect();
    let kinds3: Vec<&str> = build3.iter().map(|e| str_field(e, "kind")).collect();
    assert_eq!(kinds3, ["BuildRequested", "Planned", "BuildFinished"]);
    assert_eq!(build3[2]["counts"]["cached"], TOTAL);
    assert_eq!(build3[2]["counts"]["executed"], 0);
}

#[test]
fn log_filters_keep_exactly_the_matching_events() {
    let (p, first, second) = built_twice();
    let everything = p.log(&[]);

    let by_build = p.log(&["--build", &second.id().to_string()]);
    let expected: Vec<u64> = seqs(&everything)
        .into_iter()
        .zip(&everything)
        .filter(|(_, e)| e["build"] == second.id())
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(seqs(&by_build), expected);
    assert!(by_build.iter().all(|e| e["build"] == second.id()));
    assert_eq!(of_kind(&by_build, "ActionCached").len(), 21);

    let target = daily_ref("2024-01-02");
    let by_partition = p.log(&["--partition", &target]);
    let expected: Vec<u64> = everything
        .iter()
        .filter(|e| event_partitions(e).contains(&target))
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs(&by_partition), expected);
    // Started, succeeded and materialized in build 1, cached (restored)
    // and materialized again in build 2.
    assert_eq!(
        kinds(&by_partition).into_iter().collect::<Vec<_>>(),
        [
            ("ActionCached".to_owned(), 1),
            ("ActionStarted".to_owned(), 1),
            ("ActionSucceeded".to_owned(), 1),
            ("PartitionMaterialized".to_owned(), 2),
        ]
    );

    let by_pattern = p.log(&["--partition", "clean/date=2024-01-03/station={station}"]);
    assert!(!by_pattern.is_empty());
    for event in &by_pattern {
        let partitions = event_partitions(event);
        assert!(
            partitions
                .iter()
                .any(|r| r.starts_with("clean/date=2024-01-03/station=")),
            "does not match the pattern: {event}"
        );
    }
    assert_eq!(
        partitions_of_kind(&by_pattern, "ActionCached"),
        (1..=3)
            .map(|s| clean_ref("2024-01-03", &format!("S{s:03}")))
            .collect()
    );

    let by_job = p.log(&["--job", "clean"]);
    let expected: Vec<u64> = everything
        .iter()
        .filter(|e| event_job(e) == Some("clean"))
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs(&by_job), expected);
    assert_eq!(by_job.len(), 9 * 3, "9 started + 9 succeeded + 9 cached");

    let combined = p.log(&["--job", "daily", "--build", &first.id().to_string()]);
    assert_eq!(
        kinds(&combined).into_iter().collect::<Vec<_>>(),
        [
            ("ActionStarted".to_owned(), 3),
            ("ActionSucceeded".to_owned(), 3)
        ]
    );

    let since = everything[10]["seq"].as_u64().expect("seq");
    let tail = p.log(&["--since", &since.to_string()]);
    assert_eq!(seqs(&tail), seqs(&everything[10..]));
}

#[test]
fn plan_prints_mermaid_dot_and_json() {
    let p = Project::podcast(3, 3);
    let target = daily_ref("2024-01-02");

    let mermaid = p.cairn(&["plan", &target, "--format", "mermaid"]);
    mermaid.assert_code(0);
    assert!(
        mermaid.stdout.starts_with("graph LR"),
        "mermaid:\n{}",
        mermaid.stdout
    );
    for partition in [
        &target,
        &clean_ref("2024-01-02", "S003"),
        &raw_ref("2024-01-02", "S001"),
    ] {
        assert!(
            mermaid.stdout.contains(partition.as_str()),
            "{partition} missing"
        );
    }

    let dot = p.cairn(&["plan", &target, "--format", "dot"]);
    dot.assert_code(0);
    assert!(dot.stdout.starts_with("digraph"), "dot:\n{}", dot.stdout);
    render_dot(&dot.stdout);

    let json = p.cairn(&["plan", &target, "--format", "json"]);
    json.assert_code(0);
    let plan: Value = serde_json::from_str(&json.stdout).expect("plan JSON");
    let actions = plan["actions"].as_array().expect("actions");
    assert_eq!(actions.len(), 7, "3 raw + 3 clean + 1 daily");
    let outputs: BTreeSet<String> = actions
        .iter()
        .flat_map(|a| common::string_array(&a["outputs"]))
        .collect();
    let mut expected = BTreeSet::from([target.clone()]);
    for s in ["S001", "S002", "S003"] {
        expected.insert(raw_ref("2024-01-02", s));
        expected.insert(clean_ref("2024-01-02", s));
    }
    assert_eq!(outputs, expected);
    assert!(actions.iter().all(|a| a["verdict"] == "run"), "{actions:?}");
    assert!(!p.file(".cairn").exists(), "plan created a store");

    // After a build and one input change, the plan names what would run.
    p.build(&[]).assert_code(0);
    p.append("inputs/2024-01-02/S003.txt", "epNEW,1\n");
    let before = p.state();
    let json = p.cairn(&["plan", &target, "--format", "json"]);
    json.assert_code(0);
    assert!(p.state() == before, "plan changed the store");
    let plan: Value = serde_json::from_str(&json.stdout).expect("plan JSON");
    let mut verdicts: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for action in plan["actions"].as_array().expect("actions") {
        verdicts
            .entry(str_field(action, "verdict").to_owned())
            .or_default()
            .extend(common::string_array(&action["outputs"]));
        assert!(action["reason"].is_string(), "no reason: {action}");
    }
    let run = refs([
        &raw_ref("2024-01-02", "S003"),
        &clean_ref("2024-01-02", "S003"),
        &target,
    ]);
    assert_eq!(verdicts.get("run"), Some(&run));
    assert_eq!(verdicts.get("up-to-date").map(BTreeSet::len), Some(4));
    assert_eq!(verdicts.len(), 2, "{verdicts:?}");
}

/// Renders DOT with graphviz (`dot -Tsvg`), skipping when it is missing.
#[expect(clippy::print_stderr, reason = "tell that the check was skipped")]
fn render_dot(source: &str) {
    if !common::have_dot() {
        eprintln!("note: `dot` (graphviz) is not on PATH; not rendering the DOT output");
        return;
    }
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dot");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(source.as_bytes())
        .expect("write DOT to dot");
    let output = child.wait_with_output().expect("wait for dot");
    assert!(
        output.status.success(),
        "dot -Tsvg refused the DOT: {}\n{source}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("<svg"));
}

#[test]
fn status_tracks_missing_built_stale_and_failed() {
    let p = Project::podcast(3, 3);
    let all = p.all_refs();

    // Before any build: every partition is missing, and status creates no store.
    let status = p.status(&[]);
    assert_eq!(status.keys().cloned().collect::<BTreeSet<_>>(), all);
    for (partition, (state, reason)) in &status {
        assert_eq!(state, "missing", "{partition}: {reason}");
        if partition.starts_with("raw/") {
            assert_eq!(reason, "never built", "{partition}");
        }
    }
    assert!(!p.file(".cairn").exists(), "status created a store");

    // After a build: every partition is built.
    p.build(&[]).assert_code(0);
    let status = p.status(&[]);
    assert_eq!(status.len(), all.len());
    for (partition, (state, reason)) in &status {
        assert_eq!(state, "built", "{partition}: {reason}");
    }
    // A pattern selects its partitions only.
    let dailies = p.status(&["daily/date={date}"]);
    assert_eq!(
        dailies.keys().cloned().collect::<BTreeSet<_>>(),
        ["2024-01-01", "2024-01-02", "2024-01-03"]
            .map(daily_ref)
            .into_iter()
            .collect()
    );

    // After changing one input: it and everything downstream is stale, the
    // raw partition naming the changed input.
    p.append("inputs/2024-01-02/S003.txt", "epNEW,2\n");
    let status = p.status(&[]);
    let stale: BTreeSet<String> = status
        .iter()
        .filter(|(_, (state, _))| state == "stale")
        .map(|(partition, _)| partition.clone())
        .collect();
    assert_eq!(
        stale,
        refs([
            &raw_ref("2024-01-02", "S003"),
            &clean_ref("2024-01-02", "S003"),
            &daily_ref("2024-01-02"),
        ])
    );
    let (_, reason) = &status[&raw_ref("2024-01-02", "S003")];
    assert!(
        reason.contains("inputs/date=2024-01-02/station=S003"),
        "reason does not name the input: {reason}"
    );
    assert!(
        status
            .iter()
            .all(|(r, (state, _))| stale.contains(r) || state == "built")
    );

    // After a failure: the partition whose job failed is `failed`.
    let bad = clean_ref("2024-01-02", "S003");
    p.patch_clean(&format!(
        "if [ \"$CAIRN_OUTPUT_REF_0\" = \"{bad}\" ]; then exit 3; fi"
    ));
    let b = p.build(&["--keep-going"]);
    b.assert_code(1);
    assert_eq!(b.outputs("failed"), refs([&bad]));
    let status = p.status(&[]);
    let (state, reason) = &status[&bad];
    assert_eq!(state, "failed", "{bad}: {reason}");
    assert!(reason.contains("exited with status 3"), "reason: {reason}");
    let (state, _) = &status[&raw_ref("2024-01-02", "S003")];
    assert_eq!(state, "built");
}

#[test]
fn status_before_any_build_says_never_built_for_every_partition() {
    let p = Project::podcast(3, 3);
    for (partition, (state, reason)) in p.status(&[]) {
        assert_eq!(
            (state.as_str(), reason.as_str()),
            ("missing", "never built"),
            "{partition}"
        );
    }
}

/// A store that records nothing is evaluated without action keys (sources
/// listed, not hashed); once it records anything, with them. Both must
/// give the same verdicts and reasons, blocked ones included.
#[test]
fn a_dry_run_before_anything_is_recorded_lists_what_the_keyed_evaluation_does() {
    let p = Project::podcast(3, 3);
    p.append(
        "cairn.toml",
        r#"
[datasets.notes]
source = "notes/{note}.txt"

[datasets.copied]

[dimensions.note]
values = ["n1"]

[jobs.copy]
outputs = ["copied/note={note}"]
inputs = ["notes/note={note}"]
run = ["sh", "-c", "cp \"$CAIRN_IN\" \"$CAIRN_OUT/note.txt\""]
"#,
    );
    p.write("notes/n1.txt", "a note\n");
    std::fs::remove_file(p.file("inputs/2024-01-02/S002.txt")).expect("remove a source");
    let unrelated = |dry: &Build| -> Vec<Value> {
        dry.actions()
            .iter()
            .filter(|action| action["job"] != "copy")
            .cloned()
            .collect()
    };

    let before = Build::new(p.cairn(&["build", "--dry-run", "--json"]));
    assert!(!p.file(".cairn").exists(), "a dry run created a store");
    let copied = p.build(&["copied/note=n1"]);
    copied.assert_code(0);
    copied.assert_counts(1, 1, 0, 0, 0);
    let after = Build::new(p.cairn(&["build", "--dry-run", "--json"]));

    assert_eq!(before.code(), after.code());
    assert_eq!(unrelated(&before), unrelated(&after));
    // The daily waits on its first input (S001's clean) before it reaches
    // the blocked one, in both evaluations.
    let blocked = before.outputs_where("verdict", "blocked");
    assert_eq!(
        blocked,
        refs([
            &raw_ref("2024-01-02", "S002"),
            &clean_ref("2024-01-02", "S002"),
        ])
    );
    for action in before.actions() {
        if action["verdict"] == "blocked" {
            let reason = str_field(action, "reason");
            assert!(
                reason.contains("inputs/date=2024-01-02/station=S002 is missing"),
                "{action}"
            );
        }
    }
    assert_eq!(before.outputs_where("verdict", "run").len(), 22 - 2);
    assert_eq!(
        after.outputs_where("verdict", "up-to-date"),
        refs(["copied/note=n1"])
    );
}

#[test]
fn dry_run_predicts_exactly_what_the_build_executes_and_changes_nothing() {
    let p = Project::podcast(3, 3);

    // On a fresh project: everything would run; no store appears.
    let dry = Build::new(p.cairn(&["build", "--dry-run", "--json"]));
    dry.assert_code(0);
    assert_eq!(dry.summary()["dry_run"], true);
    assert_eq!(dry.outputs_where("verdict", "run"), p.all_refs());
    assert!(!p.file(".cairn").exists(), "a dry run created a store");
    assert!(!p.file("data").exists(), "a dry run created data/");
    let real = p.build(&[]);
    real.assert_code(0);
    assert_eq!(
        real.outputs("executed"),
        dry.outputs_where("verdict", "run")
    );

    // After one input change: the prediction matches the real build.
    p.append("inputs/2024-01-03/S001.txt", "epNEW,4\n");
    let before = p.state();
    let dry = Build::new(p.cairn(&["build", "--dry-run", "--json"]));
    dry.assert_code(0);
    assert_eq!(dry.summary()["dry_run"], true);
    assert!(
        p.state() == before,
        "a dry run changed .cairn or data/ (catalog bytes, CAS or data)"
    );
    let predicted = dry.outputs_where("verdict", "run");
    assert_eq!(
        predicted,
        refs([
            &raw_ref("2024-01-03", "S001"),
            &clean_ref("2024-01-03", "S001"),
            &daily_ref("2024-01-03"),
        ])
    );
    assert_eq!(dry.all_outputs(), p.all_refs());
    for action in dry.actions() {
        assert!(action["reason"].is_string(), "no reason: {action}");
        let verdict = str_field(action, "verdict");
        assert!(
            ["run", "up-to-date"].contains(&verdict),
            "unexpected verdict: {action}"
        );
    }
    let real = p.build(&[]);
    real.assert_code(0);
    assert_eq!(real.outputs("executed"), predicted);
    assert_eq!(
        partitions_of_kind(&p.build_events(real.id()), "ActionStarted"),
        predicted
    );
}

#[test]
fn action_started_event_time_is_not_after_the_action_finished() {
    let p = Project::podcast(3, 3);
    p.build(&[]).assert_code(0);
    let events = p.log(&[]);
    for succeeded in of_kind(&events, "ActionSucceeded") {
        let manifest = &succeeded["manifest"];
        let key = str_field(manifest, "key");
        let started = of_kind(&events, "ActionStarted")
            .into_iter()
            .find(|e| e["key"] == key)
            .expect("ActionStarted");
        let event_ms = started["time_ms"].as_u64().expect("time_ms");
        let finished_ms = manifest["finished_ms"].as_u64().expect("finished_ms");
        assert!(
            event_ms <= finished_ms,
            "ActionStarted of {} at {event_ms} ms, but the action finished at {finished_ms} ms",
            started["outputs"]
        );
    }
}
