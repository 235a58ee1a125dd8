//! `cairn plan --format sh` (docs/cli.md): the script, run with `sh` on a
//! clean copy of a project, writes the same data as a cairn build, byte for
//! byte, with no cairn and no store; it never holds a secret's value.

mod common;

use std::process::{Command, Stdio};

use common::{Project, daily_ref};

/// Runs `sh SCRIPT ARGS...` in `dir` with only `env` (plus PATH).
fn run_script(
    script: &std::path::Path,
    args: &[&str],
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut command = Command::new("sh");
    command
        .arg(script)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run sh")
}

/// The data directory without cairn's staging area.
fn data(p: &Project) -> std::collections::BTreeMap<String, Vec<u8>> {
    common::snapshot(&p.file("data"))
        .into_iter()
        .filter(|(path, _)| !path.starts_with(".cairn-tmp"))
        .collect()
}

#[test]
fn the_script_builds_a_clean_copy_byte_for_byte_like_cairn() {
    let built = Project::podcast(3, 3);
    let clean = Project::podcast(3, 3);
    let plan = built.cairn(&["plan", "--format", "sh", "daily/date={date}"]);
    plan.assert_code(0);
    let script = built.file("build.sh");
    std::fs::write(&script, &plan.stdout).expect("write the script");
    built.build(&[]).assert_code(0);

    let output = run_script(
        &script,
        &["-j", "3", "-C", &clean.path().display().to_string()],
        built.path(),
        &[],
    );
    assert!(
        output.status.success(),
        "the script failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("21 executed, 0 failed, 0 skipped"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected = data(&built);
    assert_eq!(expected.len(), 21);
    assert_eq!(data(&clean), expected);
    assert!(!clean.file(".cairn").exists(), "the script made a store");
    assert!(
        !clean.file("data/.cairn-tmp").exists(),
        "staging left behind"
    );
    assert_eq!(
        clean.read_string(&format!("data/{}/summary.csv", daily_ref("2024-01-03"))),
        clean.expected_summary("2024-01-03")
    );
}

const PROTOCOL: &str = r#"
[datasets.words]
source = "words/{w}.txt"
[datasets.pair]
[dimensions.w]
values = ["a", "b"]
[env]
allow = ["TZ"]
secret = ["CAIRN_TEST_TOKEN"]
[jobs.pair]
outputs = ["pair/w={w}/side=left", "pair/w={w}/side=right"]
inputs = ["words/w={w}"]
run = ["sh", "-c", "env | LC_ALL=C sort | grep -v -e '^PWD=' -e '^SHLVL=' -e '^_=' -e '^CAIRN_OUT=' -e '^CAIRN_OUTPUT_[0-9]*=' -e '^CAIRN_CHECKPOINT=' -e '^CAIRN_RUN_ID=' | sed \"s|$PWD|ROOT|g\" > \"$CAIRN_OUTPUT_0/env\"; printf '%s|' \"$@\" > \"$CAIRN_OUTPUT_1/args\"; printf %s \"$CAIRN_TEST_TOKEN\" | wc -c | tr -d ' ' > \"$CAIRN_OUTPUT_1/secret_length\"", "job"]
args = ["it's {w}", "$HOME `id` \"quoted\" \\ *"]
env = { MODE = "a b'c" }
"#;

#[test]
fn each_job_gets_the_argv_env_and_staging_cairn_gives_it_and_no_secret_is_written() {
    let built = Project::with_graph(PROTOCOL);
    let clean = Project::with_graph(PROTOCOL);
    for p in [&built, &clean] {
        p.write("words/a.txt", "A\n");
        p.write("words/b.txt", "B\n");
    }
    let plan = Command::new(common::CAIRN)
        .args(["plan", "--format", "sh", "pair/w={w}/side=left"])
        .current_dir(built.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CAIRN_TEST_TOKEN", "hunter2")
        .output()
        .expect("cairn plan");
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let text = String::from_utf8(plan.stdout).expect("UTF-8 script");
    assert!(
        !text.contains("hunter2"),
        "the secret's value is in the script"
    );
    assert!(
        text.contains("CAIRN_TEST_TOKEN"),
        "the secret is not passed on"
    );
    let script = built.file("build.sh");
    std::fs::write(&script, &text).expect("write the script");
    let build = Command::new(common::CAIRN)
        .args(["build", "pair/w={w}/side=left"])
        .current_dir(built.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CAIRN_TEST_TOKEN", "hunter2")
        .env("TZ", "UTC")
        .output()
        .expect("cairn build");
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );

    let env = [("CAIRN_TEST_TOKEN", "hunter2"), ("TZ", "UTC")];
    let output = run_script(&script, &[], clean.path(), &env);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected = data(&built);
    assert_eq!(data(&clean), expected);
    let args = clean.read_string("data/pair/w=a/side=right/args");
    assert_eq!(args, "it's a|$HOME `id` \"quoted\" \\ *|");
    assert_eq!(
        clean.read_string("data/pair/w=b/side=right/secret_length"),
        "7\n",
        "the job did not get the secret"
    );
    let env = clean.read_string("data/pair/w=a/side=left/env");
    for line in [
        "CAIRN_INPUT_0=ROOT/words/a.txt",
        "CAIRN_INPUT_COUNT=1",
        "CAIRN_INPUT_REF_0=words/w=a",
        "CAIRN_OUTPUT_COUNT=2",
        "CAIRN_OUTPUT_REF_1=pair/w=a/side=right",
        "MODE=a b'c",
        "TZ=UTC",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} not in\n{env}");
    }
}

#[test]
fn a_failing_job_skips_what_depends_on_it_and_the_script_fails() {
    let p = Project::podcast(2, 2);
    p.write("inputs/2024-01-02/S002.txt", "");
    std::fs::remove_file(p.file("inputs/2024-01-02/S002.txt")).expect("remove an input");
    let plan = p.cairn(&["plan", "--format", "sh", "daily/date={date}"]);
    plan.assert_code(0);
    let script = p.file("build.sh");
    std::fs::write(&script, &plan.stdout).expect("write the script");
    let output = run_script(&script, &["-j", "2"], p.path(), &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("failed: source inputs/date=2024-01-02/station=S002 is missing"),
        "{stderr}"
    );
    assert!(
        stderr.contains("skipped: job daily (daily/date=2024-01-02) (an input failed)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("7 executed, 1 failed, 2 skipped"),
        "{stderr}"
    );
    assert!(
        p.file(&format!("data/{}/summary.csv", daily_ref("2024-01-01")))
            .exists()
    );
    assert!(
        !p.file(&format!("data/{}", daily_ref("2024-01-02")))
            .exists()
    );
}
