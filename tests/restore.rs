//! Restoring altered data from the store, and early cutoff, on 3-day x
//! 3-station podcast copies (21 actions).

mod common;

use common::{Build, Project, clean_ref, daily_ref, partitions_of_kind, raw_ref, refs};

const TOTAL: u64 = 21;

fn built_project() -> Project {
    let p = Project::podcast(3, 3);
    let b = p.build(&[]);
    b.assert_code(0);
    b.assert_counts(TOTAL, TOTAL, 0, 0, 0);
    p
}

#[test]
fn overwritten_data_file_is_restored_without_running_a_job() {
    let p = built_project();
    let partition = clean_ref("2024-01-01", "S002");
    let rel = format!("data/{partition}/reviews.csv");
    let original = p.read(&rel);
    p.write(&rel, "S002,ep9999,1\nnot what the job wrote\n");
    assert_ne!(p.read(&rel), original);

    // status and the dry run see it; neither repairs it.
    let (state, reason) = p.status(&[&partition])[&partition].clone();
    assert_eq!(state, "stale", "{reason}");
    let dry = Build::new(p.cairn(&["build", "--dry-run", "--json"]));
    dry.assert_code(0);
    assert_eq!(dry.outputs_where("verdict", "restore"), refs([&partition]));
    assert_eq!(dry.outputs_where("verdict", "run"), refs([]));
    assert_ne!(p.read(&rel), original, "a dry run repaired the file");

    let b = p.build(&[]);
    b.assert_code(0);
    b.assert_counts(TOTAL, 0, TOTAL, 0, 0);
    assert_eq!(b.outputs("restored"), refs([&partition]));
    assert!(
        partitions_of_kind(&p.build_events(b.id()), "ActionStarted").is_empty(),
        "a job ran to restore {partition}"
    );
    assert_eq!(p.read(&rel), original, "{rel} is not back byte for byte");
    // Downstream, the daily summary was not rebuilt and is still right.
    assert_eq!(
        p.read_string("data/daily/date=2024-01-01/summary.csv"),
        p.expected_summary("2024-01-01")
    );

    // The next build has nothing to do.
    let again = p.build(&[]);
    again.assert_counts(TOTAL, 0, TOTAL, 0, 0);
    assert_eq!(again.outputs("cached"), p.all_refs());
}

#[test]
fn same_size_overwrite_and_deleted_files_are_restored() {
    let p = built_project();
    // Same length, other bytes (the stat cache must not be fooled by size).
    let summary = "data/daily/date=2024-01-02/summary.csv";
    let original_summary = p.read(summary);
    let mut altered = original_summary.clone();
    let last = altered.len() - 2;
    altered[last] = if altered[last] == b'0' { b'1' } else { b'0' };
    p.write(summary, &altered);
    // A deleted file and a deleted partition directory.
    let raw = raw_ref("2024-01-03", "S003");
    let raw_file = format!("data/{raw}/reviews.csv");
    let original_raw = p.read(&raw_file);
    std::fs::remove_file(p.file(&raw_file)).expect("rm the raw file");
    let clean = clean_ref("2024-01-02", "S001");
    let clean_file = format!("data/{clean}/reviews.csv");
    let original_clean = p.read(&clean_file);
    std::fs::remove_dir_all(p.file(&format!("data/{clean}"))).expect("rm the clean partition");

    let b = p.build(&[]);
    b.assert_code(0);
    b.assert_counts(TOTAL, 0, TOTAL, 0, 0);
    assert_eq!(
        b.outputs("restored"),
        refs([&daily_ref("2024-01-02"), &raw, &clean])
    );
    assert_eq!(p.read(summary), original_summary);
    assert_eq!(p.read(&raw_file), original_raw);
    assert_eq!(p.read(&clean_file), original_clean);
}

#[test]
fn early_cutoff_stops_at_an_identical_clean_output() {
    let p = built_project();
    let clean_file = "data/clean/date=2024-01-03/station=S001/reviews.csv";
    let clean_before = p.read(clean_file);
    let summary_before = p.read("data/daily/date=2024-01-03/summary.csv");

    // A line that clean filters out: raw changes, clean's output does not.
    p.append("inputs/2024-01-03/S001.txt", "epX,N/A\n");
    let b = p.build(&[]);
    b.assert_code(0);
    b.assert_counts(TOTAL, 2, TOTAL - 2, 0, 0);
    let ran = refs([
        &raw_ref("2024-01-03", "S001"),
        &clean_ref("2024-01-03", "S001"),
    ]);
    assert_eq!(b.outputs("executed"), ran);
    assert_eq!(b.outputs("cached").len() as u64, TOTAL - 2);
    assert!(b.outputs("cached").contains(&daily_ref("2024-01-03")));
    assert_eq!(
        partitions_of_kind(&p.build_events(b.id()), "ActionStarted"),
        ran
    );
    assert_eq!(p.read(clean_file), clean_before);
    assert_eq!(
        p.read("data/daily/date=2024-01-03/summary.csv"),
        summary_before
    );
    assert!(
        p.read_string("data/raw/date=2024-01-03/station=S001/reviews.csv")
            .ends_with("epX,N/A\n")
    );

    // Nothing left to do afterwards.
    let again = p.build(&[]);
    again.assert_counts(TOTAL, 0, TOTAL, 0, 0);
}

/// The podcast's daily as an executable job (`jobs/daily.sh configure`
/// reads the stations from the request on its stdin, docs/job-protocol.md)
/// whose configure calls are counted in `configure-calls`.
fn with_executable_daily(p: &Project) {
    p.executable_daily();
    let counter = p.file("configure-calls");
    let script = p.read_string("jobs/daily.sh");
    let patched = script.replacen(
        "\nconfigure() {\n",
        &format!(
            "\nconfigure() {{\n    echo call >> '{}'\n",
            counter.display()
        ),
        1,
    );
    assert_ne!(patched, script, "daily.sh has no configure() function");
    p.write("jobs/daily.sh", patched);
}

#[test]
fn no_op_build_does_not_run_configure_again() {
    let p = Project::podcast(2, 2);
    with_executable_daily(&p);
    p.build(&[]).assert_code(0);
    let calls = p.read_string("configure-calls").lines().count();
    assert_eq!(calls, 1, "one configure call for the whole first build");
    // The configure step fanned in both stations it was told about.
    assert_eq!(
        p.read_string(&format!("data/{}/summary.csv", daily_ref("2024-01-01"))),
        p.expected_summary("2024-01-01")
    );
    let again = p.build(&[]);
    again.assert_counts(10, 0, 10, 0, 0);
    assert_eq!(
        p.read_string("configure-calls").lines().count(),
        calls,
        "a no-op build ran daily's configure"
    );
}

/// The values a configure step is told are part of its cached answer: a
/// station added to the graph file configures again, and the dailies read
/// the new station.
#[test]
fn a_configure_step_sees_a_dimension_value_added_to_the_graph_file() {
    let p = Project::podcast(2, 2);
    with_executable_daily(&p);
    p.build(&[]).assert_code(0);
    p.write(
        "inputs/2024-01-01/S003.txt",
        p.read("inputs/2024-01-01/S001.txt"),
    );
    p.write(
        "inputs/2024-01-02/S003.txt",
        p.read("inputs/2024-01-02/S002.txt"),
    );
    let graph = p.read_string("cairn.toml");
    p.write(
        "cairn.toml",
        graph.replace(
            "values = [\"S001\", \"S002\"]",
            "values = [\"S001\", \"S002\", \"S003\"]",
        ),
    );
    let b = p.build(&[]);
    b.assert_code(0);
    assert_eq!(p.read_string("configure-calls").lines().count(), 2);
    assert_eq!(
        b.outputs("executed"),
        refs([
            &raw_ref("2024-01-01", "S003"),
            &raw_ref("2024-01-02", "S003"),
            &clean_ref("2024-01-01", "S003"),
            &clean_ref("2024-01-02", "S003"),
            &daily_ref("2024-01-01"),
            &daily_ref("2024-01-02"),
        ])
    );
    assert!(
        p.read_string(&format!("data/{}/summary.csv", daily_ref("2024-01-02")))
            .contains("\nS003,")
    );
}

#[test]
fn output_changes_are_seen_when_the_directory_listings_are_trusted() {
    // A no-op build more than a second after the outputs were written
    // records their directories' listings (and re-hashes the files, whose
    // entries were racy); from then on a no-op build checks each output
    // with a stat per directory and file, without listing it.
    let p = built_project();
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    p.build(&[]).assert_counts(TOTAL, 0, TOTAL, 0, 0);
    p.build(&[]).assert_counts(TOTAL, 0, TOTAL, 0, 0);

    // An extra file, a same-size overwrite, a removed file: each is seen
    // through the listing or the file's own stat.
    let extra = clean_ref("2024-01-01", "S001");
    p.write(&format!("data/{extra}/stray.csv"), "not from a job\n");
    let overwritten = clean_ref("2024-01-02", "S002");
    let rel = format!("data/{overwritten}/reviews.csv");
    let original = p.read(&rel);
    let mut altered = original.clone();
    altered[0] = if altered[0] == b'X' { b'Y' } else { b'X' };
    p.write(&rel, &altered);
    let removed = raw_ref("2024-01-03", "S003");
    std::fs::remove_file(p.file(&format!("data/{removed}/reviews.csv"))).expect("rm");

    let b = p.build(&[]);
    b.assert_code(0);
    b.assert_counts(TOTAL, 0, TOTAL, 0, 0);
    assert_eq!(
        b.outputs("restored"),
        refs([&extra, &overwritten, &removed])
    );
    assert!(
        partitions_of_kind(&p.build_events(b.id()), "ActionStarted").is_empty(),
        "a job ran"
    );
    assert!(!p.file(&format!("data/{extra}/stray.csv")).exists());
    assert_eq!(p.read(&rel), original);
}
