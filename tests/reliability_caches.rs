//! Every cache file cairn reads back is verified (docs/reliability.md):
//! the configure answers (`.cairn/configure/`), the up-to-date snapshot
//! (`.cairn/up-to-date`) and the kept plan (`.cairn/up-to-date.plan`).
//!
//! Each test edits one of them in a way that keeps it well-formed (an
//! input dropped from a configure answer, a byte of an action key flipped
//! in the snapshot, an input ref changed in the kept plan), then checks
//! that `cairn store verify` names the file, that a build does not believe
//! it (it says so at `-v`, and the data equals what the inputs give), and
//! that `--repair` removes it.
//!
//! Also the configure cache's opt-out (`configure_cache = false`,
//! docs/graph-file.md): such a job is configured on every build.

mod common;

use common::{Build, Project, daily_ref, str_field};

const DATE: &str = "2024-01-01";
const SNAPSHOT: &str = ".cairn/up-to-date";
const PLAN: &str = ".cairn/up-to-date.plan";

/// The configure answers in `.cairn/configure` (relative paths), leftover
/// temporary files aside.
fn configure_answers(p: &Project) -> Vec<String> {
    let mut answers: Vec<String> = std::fs::read_dir(p.file(".cairn/configure"))
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .filter(|name| !name.starts_with("tmp-") && !name.contains(".tmp-"))
                .map(|name| format!(".cairn/configure/{name}"))
                .collect()
        })
        .unwrap_or_default();
    answers.sort();
    answers
}

/// `cairn -v build --json`.
fn build_v(p: &Project) -> Build {
    Build::new(p.cairn(&["-v", "build", "--json"]))
}

/// A built 1-day x 3-station podcast copy whose daily job is executable
/// (its configure answer is cached).
fn built() -> Project {
    let p = Project::podcast(1, 3);
    p.executable_daily();
    let cold = p.build(&[]);
    cold.assert_code(0);
    cold.assert_counts(7, 7, 0, 0, 0);
    p
}

/// Adds a review to station S003's input: its clean and the daily
/// partition must be rebuilt.
fn change_s003(p: &Project) {
    p.append(&format!("inputs/{DATE}/S003.txt"), "ep-new,1\n");
}

/// What [`change_s003`] makes a build run.
fn changed_s003() -> std::collections::BTreeSet<String> {
    common::refs([
        &common::raw_ref(DATE, "S003"),
        &common::clean_ref(DATE, "S003"),
        &daily_ref(DATE),
    ])
}

/// The daily summary is what the inputs give (S003 included).
fn assert_daily_is_right(p: &Project) {
    assert_eq!(
        p.read_string(&format!("data/daily/date={DATE}/summary.csv")),
        p.expected_summary(DATE)
    );
}

/// `cairn store verify` fails (exit 3) and names `file` on stdout.
fn assert_verify_names(p: &Project, file: &str) {
    let verify = p.cairn(&["store", "verify"]);
    verify.assert_code(3);
    assert!(
        verify.stdout.contains(file),
        "store verify does not name {file}:\n{}\n{}",
        verify.stdout,
        verify.stderr
    );
    let json = p.cairn(&["store", "verify", "--json"]);
    json.assert_code(3);
    let lines = json.json_lines();
    assert!(
        lines.iter().any(|line| line["type"] == "problem"
            && line["damage"] == "cache"
            && line["file"]
                .as_str()
                .is_some_and(|path| path.ends_with(file))),
        "store verify --json has no problem line for {file}:\n{}",
        json.stdout
    );
}

/// Replaces `from` with `to` (same length) in `file`, once.
fn replace_bytes(p: &Project, file: &str, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut bytes = p.read(file);
    let at = bytes
        .windows(from.len())
        .position(|window| window == from)
        .unwrap_or_else(|| panic!("{file} does not hold {:?}", String::from_utf8_lossy(from)));
    bytes[at..at + to.len()].copy_from_slice(to);
    p.write(file, bytes);
}

#[test]
fn caches_configure_answer_with_a_dropped_input_is_a_miss_and_verify_reports_it() {
    let p = built();
    let answers = configure_answers(&p);
    assert_eq!(answers.len(), 1, "{answers:?}");
    let answer = &answers[0];
    // Drop S003 from the answer: still a well-formed answer.
    let text = p.read_string(answer);
    let dropped =
        format!(",{{\"ref\":\"clean/date={DATE}/station=S003\",\"dep\":\"materialize\"}}");
    assert!(text.contains(&dropped), "{text}");
    p.write(answer, text.replacen(&dropped, "", 1));

    assert_verify_names(&p, answer);
    // `status` and `why` plan too: they do not believe it either, and
    // agree with the build (which would find daily current).
    let status = p.status(&[&daily_ref(DATE)]);
    assert_eq!(status[&daily_ref(DATE)].0, "built", "{status:?}");
    let why = p.cairn(&["why", &daily_ref(DATE)]);
    why.assert_code(0);
    assert!(why.stdout.contains("is up to date"), "{}", why.stdout);
    // Without a snapshot the build plans, reading the configure cache.
    std::fs::remove_file(p.file(SNAPSHOT)).unwrap();
    change_s003(&p);
    let build = build_v(&p);
    build.assert_code(0);
    assert!(
        build.run.stderr.contains("configure answer") && build.run.stderr.contains(answer),
        "-v does not say the answer was refused:\n{}",
        build.run.stderr
    );
    assert_eq!(build.outputs("executed"), changed_s003());
    assert_daily_is_right(&p);
    // The build stored the answer again: verify is clean.
    p.cairn(&["store", "verify"]).assert_code(0);
    // The wrong result does not come back once the data is gone either.
    std::fs::remove_dir_all(p.file("data")).unwrap();
    std::fs::remove_file(p.file(SNAPSHOT)).unwrap();
    p.build(&[]).assert_code(0);
    assert_daily_is_right(&p);
}

#[test]
fn caches_configure_answer_truncated_or_renamed_is_a_miss_and_repair_removes_it() {
    let p = built();
    let answers = configure_answers(&p);
    assert_eq!(answers.len(), 1, "{answers:?}");
    let answer = &answers[0];
    let bytes = p.read(answer);
    // Truncated before its JSON starts.
    let cut = bytes.iter().position(|&b| b == b'{').unwrap_or(0);
    p.write(answer, &bytes[..cut]);
    assert_verify_names(&p, answer);
    let repair = p.cairn(&["store", "verify", "--repair"]);
    repair.assert_code(3);
    assert!(!p.file(answer).exists(), "--repair left {answer}");
    p.cairn(&["store", "verify"]).assert_code(0);

    // Another key's valid answer copied under this key's name.
    std::fs::remove_file(p.file(SNAPSHOT)).unwrap();
    p.build(&[]).assert_code(0);
    assert_eq!(configure_answers(&p), vec![answer.clone()]);
    let (dir, name) = answer.rsplit_once('/').unwrap();
    let first = if name.starts_with('0') { "1" } else { "0" };
    let other = format!("{dir}/{first}{}", &name[1..]);
    std::fs::rename(p.file(answer), p.file(&other)).unwrap();
    assert_verify_names(&p, &other);
    p.cairn(&["store", "verify", "--repair"]).assert_code(3);
    assert!(!p.file(&other).exists());

    // A FIFO in place of the answer: neither a build nor verify waits on it.
    let status = std::process::Command::new("mkfifo")
        .arg(p.file(answer))
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_file(p.file(SNAPSHOT)).unwrap();
    assert_verify_names(&p, answer);
    let build = build_v(&p);
    build.assert_code(0);
    assert!(
        build.run.stderr.contains("not a regular file"),
        "{}",
        build.run.stderr
    );
}

/// The hex key of the action that built `partition` (its last success).
fn key_of(p: &Project, partition: &str) -> String {
    let events = p.log(&[]);
    let event = events
        .iter()
        .rev()
        .find(|event| {
            event["kind"] == "ActionSucceeded"
                && event["manifest"]["outputs"]
                    .as_array()
                    .is_some_and(|outputs| outputs.iter().any(|o| o["partition"] == partition))
        })
        .unwrap_or_else(|| panic!("no success of {partition}"));
    str_field(&event["manifest"], "key").to_owned()
}

fn from_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap())
        .collect()
}

#[test]
fn caches_snapshot_with_a_flipped_action_key_is_not_believed_and_verify_reports_it() {
    let p = built();
    assert!(p.file(SNAPSHOT).is_file());
    let key = from_hex(&key_of(&p, &daily_ref(DATE)));
    let mut flipped = key.clone();
    flipped[0] ^= 1;
    replace_bytes(&p, SNAPSHOT, &key, &flipped);

    assert_verify_names(&p, SNAPSHOT);
    change_s003(&p);
    let build = build_v(&p);
    build.assert_code(0);
    assert!(
        build.run.stderr.contains("up-to-date snapshot ignored"),
        "-v does not say the snapshot was refused:\n{}",
        build.run.stderr
    );
    assert_eq!(build.outputs("executed"), changed_s003());
    assert_daily_is_right(&p);
    p.cairn(&["store", "verify"]).assert_code(0);

    // --repair removes an altered snapshot.
    let key = from_hex(&key_of(&p, &daily_ref(DATE)));
    let mut flipped = key.clone();
    flipped[31] ^= 0x80;
    replace_bytes(&p, SNAPSHOT, &key, &flipped);
    p.cairn(&["store", "verify", "--repair"]).assert_code(3);
    assert!(!p.file(SNAPSHOT).exists());
    p.cairn(&["store", "verify"]).assert_code(0);
    let again = p.build(&[]);
    again.assert_counts(7, 0, 7, 0, 0);
}

#[test]
fn caches_kept_plan_with_a_changed_input_is_not_used_and_verify_reports_it() {
    let p = built();
    assert!(p.file(PLAN).is_file());
    // daily's inputs: S003 becomes S002 (same length: the plan decodes).
    let s003 = format!("clean/date={DATE}/station=S003");
    let s002 = format!("clean/date={DATE}/station=S002");
    let plan = p.read(PLAN);
    let count = plan
        .windows(s003.len())
        .filter(|window| *window == s003.as_bytes())
        .count();
    assert!(count >= 1, "the kept plan does not name {s003}");
    replace_bytes(&p, PLAN, s003.as_bytes(), s002.as_bytes());

    assert_verify_names(&p, PLAN);
    change_s003(&p);
    let build = build_v(&p);
    build.assert_code(0);
    assert!(
        build.run.stderr.contains("kept plan ignored"),
        "-v does not say the kept plan was refused:\n{}",
        build.run.stderr
    );
    assert_eq!(build.outputs("executed"), changed_s003());
    assert_daily_is_right(&p);
    p.cairn(&["store", "verify"]).assert_code(0);

    // --repair removes an altered kept plan.
    replace_bytes(&p, PLAN, s003.as_bytes(), s002.as_bytes());
    p.cairn(&["store", "verify", "--repair"]).assert_code(3);
    assert!(!p.file(PLAN).exists());
    p.cairn(&["store", "verify"]).assert_code(0);
}

/// The podcast's daily job with a configure step that counts its runs in
/// `configure.log`, and `extra` lines added to the job.
fn counting_configure(extra: &str) -> Project {
    let p = Project::podcast(1, 2);
    p.executable_daily();
    let graph = p.read_string("cairn.toml");
    let configure = r#"configure = ["sh", "jobs/daily.sh", "configure"]"#;
    assert!(graph.contains(configure));
    let counting = format!(
        "configure = [\"sh\", \"-c\", \"echo run >> configure.log; exec sh jobs/daily.sh configure \\\"$@\\\"\", \"configure\"]\n{extra}"
    );
    p.write("cairn.toml", graph.replacen(configure, &counting, 1));
    p
}

fn configure_runs(p: &Project) -> usize {
    std::fs::read_to_string(p.file("configure.log"))
        .map(|log| log.lines().count())
        .unwrap_or(0)
}

#[test]
fn caches_configure_runs_once_when_cached_and_on_every_build_when_opted_out() {
    // Cached (the default): configured once; later plans reuse the answer
    // (the snapshot is removed so that each build plans).
    let cached = counting_configure("");
    for round in 0..3 {
        let _ = std::fs::remove_file(cached.file(SNAPSHOT));
        let build = cached.build(&[]);
        build.assert_code(0);
        assert_eq!(configure_runs(&cached), 1, "after build {round}");
    }
    assert_eq!(configure_answers(&cached).len(), 1);

    // Opted out: configured on every build, nothing cached, and no
    // snapshot lets a build skip planning.
    let opted = counting_configure("configure_cache = false");
    for round in 1..=3 {
        let build = opted.build(&[]);
        build.assert_code(0);
        assert_eq!(configure_runs(&opted), round, "after build {round}");
    }
    assert!(
        configure_answers(&opted).is_empty(),
        "{:?}",
        configure_answers(&opted)
    );
    assert!(!opted.file(SNAPSHOT).exists());
    assert_daily_is_right(&opted);

    // Not a boolean: refused, with its line.
    let typo = counting_configure("configure_cache = \"no\"");
    typo.cairn(&["build"])
        .assert_usage_error("expected a boolean");
    // Without a configure step: refused, with the field named.
    let declarative = Project::podcast(1, 1);
    declarative.append("cairn.toml", "");
    let graph = declarative.read_string("cairn.toml").replacen(
        "code = [\"jobs/clean.sh\"]",
        "code = [\"jobs/clean.sh\"]\nconfigure_cache = false",
        1,
    );
    declarative.write("cairn.toml", graph);
    declarative
        .cairn(&["build"])
        .assert_usage_error("jobs.clean.configure_cache");
}
