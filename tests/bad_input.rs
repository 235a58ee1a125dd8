//! Bad input: refs that try to leave the data root, broken graph files and
//! cyclic graphs. Each is refused with exit code 2 and an `error: ` message
//! naming the problem, and leaves the store and the data as they were.

mod common;

use common::{Project, Run};

/// A 2-day x 2-station podcast copy (10 actions), built once.
fn built_project() -> Project {
    let p = Project::podcast(2, 2);
    let b = p.build(&[]);
    b.assert_code(0);
    b.assert_counts(10, 10, 0, 0, 0);
    p
}

/// Runs `cairn ARGS` on a fresh copy (no store may appear) and on a built
/// copy (store and data unchanged), expecting exit 2 with `needle` in the
/// message both times.
fn assert_refused(args: &[&str], needle: &str) {
    let fresh = Project::podcast(2, 2);
    fresh.cairn(args).assert_usage_error(needle);
    assert!(
        !fresh.file(".cairn").exists(),
        "cairn {args:?} created a store"
    );
    assert!(!fresh.file("data").exists(), "cairn {args:?} created data/");

    let built = built_project();
    let before = built.state();
    assert!(before.catalog.is_some());
    built.cairn(args).assert_usage_error(needle);
    assert!(
        built.state() == before,
        "cairn {args:?} changed the store or the data"
    );
}

#[test]
fn dotdot_ref_is_refused() {
    assert_refused(
        &["build", "../../etc"],
        r#"invalid partition ref "../../etc": segment ".." is not allowed"#,
    );
}

#[test]
fn dotdot_inside_a_ref_is_refused() {
    assert_refused(
        &["build", "raw/date=2024-01-01/station=S001/../../../x"],
        r#"segment ".." is not allowed"#,
    );
    assert_refused(
        &["build", "raw/date=../station=S001"],
        r#"invalid partition ref "raw/date=../station=S001""#,
    );
}

#[test]
fn absolute_ref_is_refused() {
    assert_refused(
        &["build", "/etc/passwd"],
        r#"invalid partition ref "/etc/passwd": absolute paths are not allowed"#,
    );
}

#[test]
fn percent_encoded_dotdot_is_refused() {
    assert_refused(
        &["build", "raw/date=%2e%2e/station=S001"],
        r#"invalid partition ref "raw/date=%2e%2e/station=S001""#,
    );
    assert_refused(&["build", "%2e%2e/%2e%2e/etc"], "percent-encoding");
}

#[test]
fn bad_refs_are_refused_by_every_command() {
    for args in [
        &["plan", "../../etc"][..],
        &["plan", "--format", "json", "raw/date=%2e%2e/station=S001"],
        &["status", "../../etc"],
        &["status", "--json", "/etc/passwd"],
        &["build", "--dry-run", "/etc/passwd"],
        &["build", "--dry-run", "--json", "../../etc"],
    ] {
        assert_refused(args, "error: invalid partition ref");
    }
    assert_refused(
        &["log", "--partition", "../../etc"],
        r#"segment ".." is not allowed"#,
    );
}

/// Replaces the first occurrence of `line` (a whole line) in the copy's
/// `cairn.toml` by `replacement`; returns the 1-based line number.
fn edit_graph(p: &Project, line: &str, replacement: &str) -> usize {
    let toml = p.read_string("cairn.toml");
    let index = toml
        .lines()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("cairn.toml has no line {line:?}"));
    let mut lines: Vec<&str> = toml.lines().collect();
    lines[index] = replacement;
    p.write("cairn.toml", lines.join("\n") + "\n");
    index + 1
}

/// Asserts that every command refuses the project's graph with `needles`
/// in the message, leaving the store and the data as they were.
fn assert_graph_refused(p: &Project, needles: &[String]) {
    let before = p.state();
    for args in [
        &["build"][..],
        &["build", "--json"],
        &["build", "--dry-run"],
        &["plan", "daily/date=2024-01-01"],
        &["status"],
    ] {
        let run: Run = p.cairn(args);
        for needle in needles {
            run.assert_usage_error(needle);
        }
        assert!(
            p.state() == before,
            "cairn {args:?} changed the store or the data"
        );
    }
}

#[test]
fn toml_syntax_error_names_the_file_and_line() {
    let fresh = Project::podcast(2, 2);
    let line = edit_graph(&fresh, "[jobs.clean]", "[jobs.clean");
    assert_graph_refused(&fresh, &[format!("cairn.toml:{line}:")]);
    assert!(!fresh.file(".cairn").exists());

    let built = built_project();
    let line = edit_graph(&built, "[jobs.clean]", "[jobs.clean");
    assert_graph_refused(&built, &[format!("cairn.toml:{line}:")]);
}

#[test]
fn unknown_field_names_the_line_and_the_field() {
    let fresh = Project::podcast(2, 2);
    let line = edit_graph(
        &fresh,
        "code = [\"jobs/clean.sh\"]",
        "colde = [\"jobs/clean.sh\"]",
    );
    assert_graph_refused(
        &fresh,
        &[
            format!("cairn.toml:{line}:"),
            "unknown field `colde`".to_owned(),
        ],
    );
    assert!(!fresh.file(".cairn").exists());

    let built = built_project();
    let line = edit_graph(
        &built,
        "[datasets.raw]",
        "[datasets.raw]\nversoin = \"2.0.0\"",
    ) + 1;
    assert_graph_refused(
        &built,
        &[
            format!("cairn.toml:{line}:"),
            "unknown field `versoin`".to_owned(),
        ],
    );
}

/// Two datasets whose jobs need each other's partitions, and an unrelated
/// dataset `c` that builds fine.
const CYCLE: &str = r#"
[datasets.a]
version = "1.0.0"

[datasets.b]
version = "1.0.0"

[datasets.c]
version = "1.0.0"

[jobs.a]
outputs = ["a/x={x}"]
inputs = ["b/x={x}"]
run = ["sh", "-c", "echo a > \"$CAIRN_OUT/a\""]

[jobs.b]
outputs = ["b/x={x}"]
inputs = ["a/x={x}"]
run = ["sh", "-c", "echo b > \"$CAIRN_OUT/b\""]

[jobs.c]
outputs = ["c/x={x}"]
run = ["sh", "-c", "echo c > \"$CAIRN_OUT/c\""]
"#;

#[test]
fn cycle_is_refused_before_anything_runs() {
    let p = Project::with_graph(CYCLE);
    for args in [
        &["build", "a/x=1"][..],
        &["build", "--json", "b/x=1"],
        &["build", "--dry-run", "a/x=1"],
        &["plan", "a/x=1"],
    ] {
        p.cairn(args).assert_usage_error("cycle in the graph");
        assert!(!p.file(".cairn").exists(), "cairn {args:?} created a store");
        assert!(!p.file("data").exists(), "cairn {args:?} created data/");
    }

    // With a store: the cycle leaves it unchanged.
    let c = p.build(&["c/x=1"]);
    c.assert_code(0);
    c.assert_counts(1, 1, 0, 0, 0);
    let before = p.state();
    let run = p.cairn(&["build", "a/x=1", "c/x=2"]);
    run.assert_usage_error("cycle in the graph");
    assert!(
        run.stderr.contains("a/x=1") && run.stderr.contains("b/x=1"),
        "the message does not name the cycle: {}",
        run.stderr
    );
    assert!(p.state() == before, "a refused cycle changed the store");
}

/// A symbolic link planted inside the data root: `data/daily` points to a
/// directory outside it, which already holds a file where the partition
/// `daily/date=2024-01-01` would land.
fn project_with_symlinked_dataset_dir() -> (Project, Project) {
    let p = Project::podcast(1, 1);
    let outside = Project::empty();
    outside.write("date=2024-01-01/precious.txt", "not cairn's\n");
    std::fs::create_dir(p.file("data")).expect("mkdir data");
    std::os::unix::fs::symlink(outside.path(), p.file("data/daily")).expect("symlink");
    (p, outside)
}

#[test]
fn build_never_writes_or_deletes_outside_the_data_root() {
    let (p, outside) = project_with_symlinked_dataset_dir();
    let before = common::snapshot(outside.path());
    // Refusing is fine, and so is replacing the link: the outside directory
    // must stay as it was either way.
    let b = p.build(&[]);
    assert!(
        common::snapshot(outside.path()) == before,
        "cairn build (exit {}) changed a directory outside the data root: {:?}",
        b.code(),
        common::snapshot(outside.path()).keys().collect::<Vec<_>>()
    );
}

/// One bad input of the snapshot table: an edit of the podcast copy's
/// `cairn.toml` (a whole line and its replacement, or none), the command,
/// and the whole stderr expected (`$P` for the project's directory).
struct Case {
    name: &'static str,
    edit: Option<(&'static str, String)>,
    args: Vec<String>,
    stderr: String,
}

fn case(
    name: &'static str,
    edit: Option<(&'static str, &str)>,
    args: &[&str],
    stderr: &str,
) -> Case {
    Case {
        name,
        edit: edit.map(|(line, replacement)| (line, replacement.to_owned())),
        args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        stderr: stderr.to_owned(),
    }
}

/// Every bad-input error of issue 26 §5 and issue 28 ("Also seen"), pinned
/// as the exact text cairn prints: each exits 2 before planning, prints
/// nothing on stdout, creates no store on a fresh copy and changes nothing
/// on a built one. Each of these failed before: a missing code file was
/// exit 3 without a line, a source typo had no line, `date=banana` recorded
/// a failed build, `2024-02-30` was "missing, never built", a glob left the
/// project, a long value was echoed whole and called "not a valid partition
/// value", unknown keys had no suggestion.
#[test]
fn every_bad_input_error_is_pinned() {
    let long_arg = format!("raw/date=2024-01-01/station={}", "a".repeat(100_000));
    let long_value = format!("values = [\"S001\", \"{}\"]", "b".repeat(10_000_000));
    let a64 = "a".repeat(64 - "raw/date=2024-01-01/station=".len());
    let b64 = "b".repeat(64);
    let cases = [
        case(
            "missing code file",
            Some(("code = [\"jobs/clean.sh\"]", "code = [\"jobs/clean.py\"]")),
            &["build"],
            "error: $P/cairn.toml:31: jobs.clean.code: \"jobs/clean.py\" is not a file: $P/jobs/clean.py does not exist\n",
        ),
        case(
            "code glob matching nothing",
            Some(("code = [\"jobs/clean.sh\"]", "code = [\"jobs/*.py\"]")),
            &["status"],
            "error: $P/cairn.toml:31: jobs.clean.code: \"jobs/*.py\" matches no file\n",
        ),
        case(
            "code glob leaving the project",
            Some((
                "code = [\"jobs/clean.sh\"]",
                "code = [\"../../../usr/**/*\"]",
            )),
            &["build"],
            "error: $P/cairn.toml:31: jobs.clean.code: \"../../../usr/**/*\" must not contain '..': code files are inside the project\n",
        ),
        case(
            "absolute code path",
            Some(("code = [\"jobs/clean.sh\"]", "code = [\"/etc/passwd\"]")),
            &["plan", "daily/date=2024-01-01"],
            "error: $P/cairn.toml:31: jobs.clean.code: \"/etc/passwd\" must be relative to the graph file: code files are inside the project\n",
        ),
        case(
            "placeholder typo in a source pattern",
            Some((
                "source = \"inputs/{date}/{station}.txt\"",
                "source = \"inputs/{date}/{staton}.txt\"",
            )),
            &["build"],
            "error: $P/cairn.toml:3: datasets.inputs.source: placeholder {staton} of \"inputs/{date}/{staton}.txt\" has no [dimensions.staton], and jobs.raw.inputs (line 23) reads inputs/date={date}/station={station}; did you mean {station}?\n",
        ),
        case(
            "placeholder typo in a job's source input",
            Some((
                "inputs = [\"inputs/date={date}/station={station}\"]",
                "inputs = [\"inputs/date={date}/staton={station}\"]",
            )),
            &["build"],
            "error: $P/cairn.toml:23: jobs.raw.inputs: inputs/date={date}/staton={station} does not match the partitions of source dataset inputs, inputs/date={date}/station={station} (line 3: source = \"inputs/{date}/{station}.txt\")\n",
        ),
        case(
            "unknown key in a table",
            Some(("start = \"2024-01-01\"", "strat = \"2024-01-01\"")),
            &["build"],
            "error: $P/cairn.toml:15: unknown field `strat`, expected one of `values`, `start`, `end`, `step_days`, `from`; did you mean `start`?\n",
        ),
        case(
            "unknown top-level table",
            Some(("[datasets.raw]", "[dataset.raw]")),
            &["status"],
            "error: $P/cairn.toml:5: unknown field `dataset`, expected one of `datasets`, `jobs`, `dimensions`, `env`, `sources`, `executor`, `cache`; did you mean `datasets`?\n",
        ),
        case(
            "a date that is not a date",
            None,
            &["build", "daily/date=banana"],
            "error: daily/date=banana: \"banana\" is not a date of the form YYYY-MM-DD ([dimensions.date]: 2024-01-01..2024-01-02)\n",
        ),
        case(
            "an impossible date",
            None,
            &["status", "daily/date=2024-02-30"],
            "error: daily/date=2024-02-30: \"2024-02-30\" is not a valid calendar date ([dimensions.date]: 2024-01-01..2024-01-02)\n",
        ),
        case(
            "a date outside the range",
            None,
            &["why", "daily/date=2023-12-31"],
            "error: daily/date=2023-12-31: 2023-12-31 is outside the dates ([dimensions.date]: 2024-01-01..2024-01-02)\n",
        ),
        case(
            "a value not listed",
            None,
            &["build", "--dry-run", "clean/date=2024-01-01/station=S003"],
            "error: clean/date=2024-01-01/station=S003: \"S003\" is not a value of [dimensions.station] (\"S001\", \"S002\"); did you mean \"S002\"?\n",
        ),
        case(
            "a literal outside the domain in a pattern",
            None,
            &["plan", "clean/date=2024-01-09/station={station}"],
            "error: clean/date=2024-01-09/station=S001: 2024-01-09 is outside the dates ([dimensions.date]: 2024-01-01..2024-01-02)\n",
        ),
        case(
            "a 100 kB ref",
            None,
            &["build", &long_arg],
            &format!(
                "error: invalid partition ref \"raw/date=2024-01-01/station={a64}\"… (100028 bytes): it is too long (100028 bytes, at most 4096)\n"
            ),
        ),
        case(
            "a 10 MB value in the graph file",
            Some(("values = [\"S001\", \"S002\"]", &long_value)),
            &["build"],
            &format!(
                "error: $P/cairn.toml:19: dimensions.station.values: \"{b64}\"… is too long (10000000 bytes, at most 4096)\n"
            ),
        ),
    ];
    let mut failures = Vec::new();
    for case in &cases {
        let fresh = Project::podcast(2, 2);
        if let Some((line, replacement)) = &case.edit {
            edit_graph(&fresh, line, replacement);
        }
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let run = fresh.cairn(&args);
        let stderr = run
            .stderr
            .replace(&fresh.path().display().to_string(), "$P");
        if run.code != 2 || stderr != case.stderr || !run.stdout.is_empty() {
            failures.push(format!(
                "{}: exit {} (expected 2)\n  got:      {:?}\n  expected: {:?}",
                case.name,
                run.code,
                stderr.chars().take(600).collect::<String>(),
                case.stderr.chars().take(600).collect::<String>()
            ));
        }
        assert!(
            !fresh.file(".cairn").exists(),
            "{}: a refused command created a store",
            case.name
        );
        assert!(
            !fresh.file("data").exists(),
            "{}: a refused command created data/",
            case.name
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // On a built copy, the refused refs change nothing (no failed build is
    // recorded for `date=banana`).
    let built = built_project();
    let before = built.state();
    for args in [
        &["build", "daily/date=banana"][..],
        &["build", "--json", "daily/date=2024-02-30"],
        &["status", "daily/date=2024-02-30"],
        &["invalidate", "--reason", "x", "daily/date=2023-01-01"],
        &["build", "clean/date=2024-01-01/station=S003"],
    ] {
        built
            .cairn(args)
            .assert_usage_error(&format!("error: {}: ", args[args.len() - 1]));
        assert!(built.state() == before, "cairn {args:?} changed the store");
    }
}
