//! Issue 26, section 4: the job's program, resolved (its path and content),
//! is in the action key instead of the `PATH` string, unless `[env] allow`
//! lists `PATH`; and `why` and `status` name the variable, argument or
//! program that changed. Builds here run with an explicit environment.

mod common;

use common::{Build, CAIRN, Project, Run};
use serde_json::Value;

/// `cairn ARGS` in the project with exactly this environment (and `HOME`,
/// `LANG`).
fn cairn_env(project: &Project, args: &[&str], env: &[(&str, &str)]) -> Run {
    let output = std::process::Command::new(CAIRN)
        .args(args)
        .current_dir(project.path())
        .env_clear()
        .env("HOME", "/nonexistent")
        .env("LANG", "C")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("spawn cairn");
    Run {
        args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn build_env(project: &Project, env: &[(&str, &str)]) -> Build {
    Build::new(cairn_env(project, &["build", "--json"], env))
}

/// `cairn why REF --json`'s reason.
fn why_env(project: &Project, partition: &str, env: &[(&str, &str)]) -> String {
    let run = cairn_env(project, &["why", partition, "--json"], env);
    run.assert_code(0);
    let value: Value = serde_json::from_str(run.stdout.trim()).expect("one JSON object");
    value["reason"].as_str().expect("a reason").to_owned()
}

/// `cairn status REF --json`'s (state, reason).
fn status_env(project: &Project, partition: &str, env: &[(&str, &str)]) -> (String, String) {
    let run = cairn_env(project, &["status", partition, "--json"], env);
    run.assert_code(0);
    let value: Value = serde_json::from_str(run.stdout.trim()).expect("one JSON object");
    (
        value["state"].as_str().expect("a state").to_owned(),
        value["reason"].as_str().expect("a reason").to_owned(),
    )
}

const COPY: &str = r#"[datasets.src]
source = "src/{k}.txt"
[datasets.copy]
[dimensions.k]
values = ["a"]
[jobs.copy]
outputs = ["copy/k={k}"]
inputs = ["src/k={k}"]
run = ["sh", "-c", "cat \"$CAIRN_IN\" > \"$CAIRN_OUT/o\""]
"#;

/// Another PATH that finds the same programs (a virtualenv, direnv, perf
/// putting a directory in front) changes no key.
#[test]
fn a_different_path_finding_the_same_programs_runs_nothing() {
    let project = Project::with_graph(COPY);
    project.write("src/a.txt", "a\n");
    let empty = tempfile::tempdir().expect("tempdir");
    let before = [("PATH", "/usr/bin:/bin")];
    build_env(&project, &before).assert_counts(1, 1, 0, 0, 0);
    let other = format!("{}:/usr/bin:/bin:/nonexistent", empty.path().display());
    let after = [("PATH", other.as_str())];
    assert!(
        why_env(&project, "copy/k=a", &after).contains("is up to date"),
        "a new PATH alone rebuilds nothing"
    );
    assert_eq!(status_env(&project, "copy/k=a", &after).0, "built");
    build_env(&project, &after).assert_counts(1, 0, 1, 0, 0);
}

/// Listing `PATH` in `[env] allow` puts the string back in every key: a
/// job that runs programs by name from its own script asks for that.
#[test]
fn path_listed_in_env_allow_enters_the_key_and_why_names_it() {
    let project = Project::with_graph(&format!("[env]\nallow = [\"PATH\"]\n{COPY}"));
    project.write("src/a.txt", "a\n");
    let empty = tempfile::tempdir().expect("tempdir");
    build_env(&project, &[("PATH", "/usr/bin:/bin")]).assert_counts(1, 1, 0, 0, 0);
    let other = format!("{}:/usr/bin:/bin", empty.path().display());
    let after = [("PATH", other.as_str())];
    let reason = why_env(&project, "copy/k=a", &after);
    assert!(
        reason.contains(&format!(
            "environment variable PATH changed from \"/usr/bin:/bin\" to \"{other}\""
        )),
        "{reason}"
    );
    build_env(&project, &after).assert_counts(1, 1, 0, 0, 0);
}

/// The program found on PATH is keyed by content: replacing it (an
/// upgrade, another tool of the same name at the same place) re-runs, and
/// `why` and `status` say which file changed.
#[test]
fn replacing_the_program_reruns_and_why_names_it() {
    let project = Project::with_graph(
        r#"[datasets.tool]
[jobs.tool]
outputs = ["tool/x=1"]
run = ["cairn-test-tool"]
"#,
    );
    let tools = tempfile::tempdir().expect("tempdir");
    let tool = tools.path().join("cairn-test-tool");
    let write_tool = |version: &str| {
        std::fs::write(
            &tool,
            format!("#!/bin/sh\necho {version} > \"$CAIRN_OUT/o\"\n"),
        )
        .expect("write the tool");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    write_tool("v1");
    let path = format!("{}:/usr/bin:/bin", tools.path().display());
    let env = [("PATH", path.as_str())];
    build_env(&project, &env).assert_counts(1, 1, 0, 0, 0);
    assert_eq!(project.read_string("data/tool/x=1/o"), "v1\n");
    build_env(&project, &env).assert_counts(1, 0, 1, 0, 0);

    write_tool("v2");
    let reason = why_env(&project, "tool/x=1", &env);
    let expected = format!("the job's program {} changed (content ", tool.display());
    assert!(reason.contains(&expected), "{reason}");
    let (state, status_reason) = status_env(&project, "tool/x=1", &env);
    assert_eq!(state, "stale");
    assert!(status_reason.contains(&expected), "{status_reason}");
    let build = build_env(&project, &env);
    build.assert_counts(1, 1, 0, 0, 0);
    assert_eq!(project.read_string("data/tool/x=1/o"), "v2\n");
}

/// `why` and `status` name the allow-listed variable, the argument or the
/// config variable that changed, with both values.
#[test]
fn why_and_status_name_the_changed_variable_and_argument() {
    let graph = r#"[env]
allow = ["CAIRN_TEST_MODE"]
[datasets.out]
[jobs.out]
outputs = ["out/x=1"]
run = ["sh", "-c", "echo \"$1 $LEVEL $CAIRN_TEST_MODE\" > \"$CAIRN_OUT/o\"", "job"]
args = ["first"]
env = { LEVEL = "low" }
"#;
    let project = Project::with_graph(graph);
    let fast = [("PATH", "/usr/bin:/bin"), ("CAIRN_TEST_MODE", "fast")];
    build_env(&project, &fast).assert_counts(1, 1, 0, 0, 0);

    let slow = [("PATH", "/usr/bin:/bin"), ("CAIRN_TEST_MODE", "slow")];
    let expected = "environment variable CAIRN_TEST_MODE changed from \"fast\" to \"slow\"";
    let reason = why_env(&project, "out/x=1", &slow);
    assert!(reason.contains(expected), "{reason}");
    let (state, status_reason) = status_env(&project, "out/x=1", &slow);
    assert_eq!(state, "stale");
    assert!(status_reason.contains(expected), "{status_reason}");
    let unset = [("PATH", "/usr/bin:/bin")];
    let reason = why_env(&project, "out/x=1", &unset);
    assert!(
        reason.contains("environment variable CAIRN_TEST_MODE is no longer set (was \"fast\")"),
        "{reason}"
    );

    project.write("cairn.toml", graph.replace("\"first\"", "\"second\""));
    let reason = why_env(&project, "out/x=1", &fast);
    assert!(
        reason.contains("args[0] changed from \"first\" to \"second\""),
        "{reason}"
    );
    project.write("cairn.toml", graph.replace("\"low\"", "\"high\""));
    let reason = why_env(&project, "out/x=1", &fast);
    assert!(
        reason.contains("env LEVEL changed from \"low\" to \"high\""),
        "{reason}"
    );
    project.write("cairn.toml", graph.replace("\"job\"]", "\"task\"]"));
    let reason = why_env(&project, "out/x=1", &fast);
    assert!(
        reason.contains("run[3] changed from \"job\" to \"task\""),
        "{reason}"
    );
    let build = build_env(&project, &fast);
    build.assert_counts(1, 1, 0, 0, 0);
    assert_eq!(project.read_string("data/out/x=1/o"), "first low fast\n");
}
