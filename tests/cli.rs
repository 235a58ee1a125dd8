//! The command line's conventions (issue 26 §7): no colour codes in pipes,
//! `--version` with the commit and store format, shell completions and a
//! man page, `build --dry-run` writing its plan to stdout, singular nouns
//! for one, and a build summary with its duration.

mod common;

use std::process::{Command, Stdio};

use common::{CAIRN, Project};

/// One source partition and one job: a build of one action.
const ONE: &str = r#"
[datasets.src]
source = "src/{p}.txt"

[dimensions.p]
values = ["a"]

[datasets.copy]

[jobs.copy]
outputs = ["copy/p={p}"]
inputs = ["src/p={p}"]
run = ["sh", "-c", "cat \"$CAIRN_INPUT_0\" > \"$CAIRN_OUT/o\""]
"#;

fn one() -> Project {
    let project = Project::with_graph(ONE);
    project.write("src/a.txt", "A\n");
    project
}

/// `cairn ARGS` in `project` with the environment the test chooses (no
/// NO_COLOR unless given), stdout and stderr piped.
fn run_with_env(project: &Project, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(CAIRN);
    command
        .args(args)
        .current_dir(project.path())
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("CAIRN_LOG")
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("spawn cairn");
    (
        output.status.code().expect("exited"),
        String::from_utf8(output.stdout).expect("UTF-8"),
        String::from_utf8(output.stderr).expect("UTF-8"),
    )
}

/// `cairn -vv build 2>&1 | cat -v` showed `^[[2m…`: the diagnostics were
/// coloured whenever NO_COLOR was unset, terminal or not. (Failed before:
/// the tracing lines carried escape codes.)
#[test]
fn no_escape_codes_reach_a_pipe() {
    let project = one();
    let (code, stdout, stderr) = run_with_env(&project, &["-vv", "build"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("DEBUG"), "no diagnostics at -vv:\n{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "escape codes in a pipe:\n{stderr:?}"
    );
    assert!(!stdout.contains('\x1b'));
    // An error line too.
    let (code, _, stderr) = run_with_env(&project, &["why", "nope/x=1"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.starts_with("error: "), "{stderr:?}");
    // Forcing colours (CLICOLOR_FORCE) still colours a pipe: the choice is
    // anstream's, as for clap's own messages.
    let (_, _, stderr) = run_with_env(&project, &["why", "nope/x=1"], &[("CLICOLOR_FORCE", "1")]);
    assert!(stderr.starts_with("\x1b["), "{stderr:?}");
}

#[test]
fn the_version_names_the_commit_and_the_store_format() {
    let project = Project::empty();
    let (code, stdout, _) = run_with_env(&project, &["--version"], &[]);
    assert_eq!(code, 0);
    let line = stdout.trim_end();
    let rest = line
        .strip_prefix(&format!("cairn {} (commit ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{line:?}"));
    let (commit, format) = rest.split_once(", store format ").expect("store format");
    assert!(
        commit == "unknown" || commit.bytes().all(|b| b.is_ascii_hexdigit()),
        "{commit:?}"
    );
    assert_eq!(format, format!("{})", cairn_store::FORMAT_VERSION));
}

#[test]
fn completions_and_man_pages_are_printed() {
    let project = Project::empty();
    for (shell, needle) in [
        ("bash", "_cairn()"),
        ("zsh", "#compdef cairn"),
        ("fish", "complete -c cairn"),
    ] {
        let (code, stdout, stderr) = run_with_env(&project, &["completions", shell], &[]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains(needle), "{shell}: {stdout}");
        assert!(stdout.contains("backfill"), "{shell} misses a command");
    }
    let (code, stdout, _) = run_with_env(&project, &["man"], &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains(".TH cairn 1"), "{stdout}");
    assert!(stdout.contains("backfill"));
    let (code, stdout, _) = run_with_env(&project, &["man", "build"], &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains(".TH cairn-build 1"), "{stdout}");
    assert!(stdout.contains("\\-\\-retries"), "{stdout}");
    let (code, stdout, _) = run_with_env(&project, &["man", "store", "gc"], &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains(".TH cairn-store-gc 1"), "{stdout}");
    let (code, _, stderr) = run_with_env(&project, &["man", "bulid"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no command \"bulid\""), "{stderr}");
}

/// `build --dry-run` printed its plan on stderr while `backfill --dry-run`
/// prints on stdout. (Failed before: stdout was empty.)
#[test]
fn a_dry_run_writes_its_plan_to_stdout_and_counts_one_action_as_one() {
    let project = one();
    let run = project.cairn(&["build", "--dry-run"]);
    run.assert_code(0);
    assert_eq!(
        run.stdout, "       run copy/p=a (copy): never built\n",
        "stderr:\n{}",
        run.stderr
    );
    assert_eq!(
        run.stderr,
        "dry run: 1 action: 1 would run, 0 up to date or restorable, 0 blocked\n"
    );
}

/// `1 partitions` → `1 partition`, and the summary has a duration. (Failed
/// before: `1 actions`, `1 partitions`, no duration.)
#[test]
fn one_is_singular_and_the_summary_has_a_duration() {
    let project = one();
    let build = project.cairn(&["build"]);
    build.assert_code(0);
    let summary = build.stderr.lines().last().expect("a summary");
    let duration = summary
        .strip_prefix("build 1: 1 action: 1 executed, 0 cached, 0 failed, 0 skipped in ")
        .unwrap_or_else(|| panic!("{summary:?}"));
    assert!(
        duration.ends_with("ms") || duration.ends_with('s'),
        "{duration:?}"
    );
    let json = project.build(&[]);
    assert!(json.summary()["duration_ms"].is_u64(), "{}", json.summary());
    let status = project.cairn(&["status"]);
    status.assert_code(0);
    assert_eq!(
        status.stderr,
        "1 partition: 1 built, 0 stale, 0 missing, 0 failed, 0 running\n"
    );
    let plan = project.cairn(&["plan", "copy/p=a"]);
    assert!(
        plan.stdout
            .ends_with("1 action: 0 would run, 1 up to date or restorable\n"),
        "{}",
        plan.stdout
    );
    let invalidate = project.cairn(&["invalidate", "copy/p=a", "--reason", "test"]);
    invalidate.assert_code(0);
    assert!(
        invalidate.stderr.starts_with("invalidated 1 partition at "),
        "{}",
        invalidate.stderr
    );
    assert!(
        invalidate
            .stderr
            .ends_with("; the next build rebuilds it\n"),
        "{}",
        invalidate.stderr
    );
    let history = project.cairn(&["history", "copy/p=a"]);
    assert!(
        history.stdout.starts_with(
            "copy/p=a: 1 materialization, 0 failed runs, 1 invalidation (newest first)\n"
        ),
        "{}",
        history.stdout
    );
    assert!(history.stdout.contains("(1 file)"), "{}", history.stdout);
}
