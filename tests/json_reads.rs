//! Snapshots of what the read-side commands print: `status`, `why`,
//! `history`, `log`, `logs`, `invalidate`, `prune`, `replay --check` and
//! `store verify|gc|stats` (docs/cli.md promises that JSON fields are never
//! renamed or removed; the human forms are pinned too).
//!
//! Each snapshot is the command's stdout as printed, byte for byte (and,
//! for the human forms, its stderr and exit code), with only what differs
//! from run to run replaced: digests and keys (`[hex]`, `[hex12]` for the
//! short form), times (`[time]`), durations, the temporary directory
//! (`[dir]`) and the catalog's file size. Builds run with `-j 1` on a graph
//! whose days are independent, so the log's order is that of the plan. The
//! snapshots were taken before the commands moved into cairn-app, so they
//! pin that the move kept the output.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use common::{CAIRN, Project, Run};
use serde_json::Value;

/// Days from a definitions source; `shout` (versioned, checkpointing when it
/// fails) and `summary` after it. `shout` fails while `fail-DAY` exists,
/// after printing on both streams and writing a checkpoint.
const GRAPH: &str = r#"
[sources.days]
command = ["cat", "days.json"]

[datasets.inputs]
source = "inputs/{day}.txt"

[datasets.shout]
version = "1.0.0"

[datasets.summary]

[dimensions.day]
from = "days"

[jobs.shout]
outputs = ["shout/day={day}"]
inputs = ["inputs/day={day}"]
run = ["sh", "-c", "echo \"shouting $1\"; echo 'warning: loud' >&2; if [ -f \"fail-$1\" ]; then echo '{\"page\": 1}' > \"$CAIRN_CHECKPOINT\"; echo \"no $1 today\" >&2; exit 4; fi; tr a-z A-Z < \"$CAIRN_IN\" > \"$CAIRN_OUT/text.txt\"", "shout"]
args = ["{day}"]

[jobs.summary]
outputs = ["summary/day={day}"]
inputs = ["shout/day={day}"]
run = ["sh", "-c", "printf 'last' >&2; wc -c < \"$CAIRN_IN/text.txt\" > \"$CAIRN_OUT/size.txt\""]
"#;

fn project() -> Project {
    let project = Project::with_graph(GRAPH);
    project.write("days.json", "[\"mon\", \"tue\"]\n");
    project.write("inputs/mon.txt", "monday\n");
    project.write("inputs/tue.txt", "tuesday\n");
    project
}

/// `cairn ARGS` in `project`, with a fixed user name (recorded as `by` of
/// invalidations and prunes).
fn cairn(project: &Project, args: &[&str]) -> Run {
    let output = Command::new(CAIRN)
        .args(args)
        .current_dir(project.path())
        .env("NO_COLOR", "1")
        .env("USER", "tester")
        .env("LOGNAME", "tester")
        .env_remove("CAIRN_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("spawn cairn");
    Run {
        args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        code: output.status.code().expect("cairn exited"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

/// `text` with what varies between runs replaced (see the module's comment).
fn redacted(project: &Project, text: &str) -> String {
    let dir = project.path().to_str().expect("a UTF-8 temporary path");
    // The catalog's file size (`store stats`) depends on redb's page use.
    let text: String = text
        .replace(dir, "[dir]")
        .split_inclusive('\n')
        .map(|line| match line.strip_prefix("catalog     ") {
            Some(rest) => format!(
                "catalog     [size]{}",
                &rest[rest.find(" (").unwrap_or(0)..]
            ),
            None => line.to_owned(),
        })
        .collect();
    let is_hex = |byte: &u8| byte.is_ascii_digit() || (b'a'..=b'f').contains(byte);
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    'scan: while let Some(first) = rest.chars().next() {
        // `"time_ms":1700000000000` and the other numbers that vary.
        for field in [
            "time_ms",
            "started_ms",
            "finished_ms",
            "duration_ms",
            "catalog_bytes",
        ] {
            let quoted = format!("\"{field}\":");
            if let Some(after) = rest.strip_prefix(quoted.as_str()) {
                let digits = after.bytes().take_while(u8::is_ascii_digit).count();
                if digits > 0 {
                    out.push_str(&format!("{quoted}\"[{field}]\""));
                    rest = &after[digits..];
                    continue 'scan;
                }
            }
        }
        // `2024-02-01 09:12:44 UTC` and `2024-02-01T09:12:44Z`.
        let bytes = rest.as_bytes();
        let digit = |at: usize| bytes.get(at).is_some_and(u8::is_ascii_digit);
        let time_shape = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .iter()
            .all(|&at| digit(at))
            && bytes.get(4) == Some(&b'-')
            && bytes.get(7) == Some(&b'-')
            && matches!(bytes.get(10), Some(b' ' | b'T'))
            && bytes.get(13) == Some(&b':')
            && bytes.get(16) == Some(&b':');
        if time_shape {
            let after = &rest[19..];
            let end = if after.starts_with(" UTC") {
                4
            } else {
                usize::from(after.starts_with('Z'))
            };
            out.push_str("[time]");
            rest = &after[end..];
            continue;
        }
        // A word: replaced whole when it is a digest, a key or a duration.
        let word = rest
            .char_indices()
            .find(|(_, c)| !c.is_ascii_alphanumeric())
            .map_or(rest.len(), |(at, _)| at);
        if word == 0 {
            out.push(first);
            rest = &rest[first.len_utf8()..];
            continue;
        }
        let text = &rest[..word];
        let hex = text.bytes().all(|byte| is_hex(&byte));
        if hex && word == 64 {
            out.push_str("[hex]");
        } else if hex && word == 12 {
            out.push_str("[hex12]");
        } else if text.bytes().all(|byte| byte.is_ascii_digit()) && rest[word..].starts_with(" ms")
        {
            out.push_str("[n]");
        } else {
            out.push_str(text);
        }
        rest = &rest[word..];
    }
    out
}

fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_snapshot_path("snapshots/json_reads");
    settings
}

/// Runs `cairn ARGS`, checks its exit code and asserts the snapshot `name`
/// of its stdout (JSON: the bytes as printed). Returns the run.
fn snapshot_stdout(project: &Project, name: &str, args: &[&str], code: i32) -> Run {
    let run = cairn(project, args);
    run.assert_code(code);
    let text = redacted(project, &run.stdout);
    settings().bind(|| insta::assert_snapshot!(name, text));
    run
}

/// Like [`snapshot_stdout`], for a human form: stdout, stderr and the exit
/// code in one snapshot.
fn snapshot_human(project: &Project, name: &str, args: &[&str], code: i32) -> Run {
    let run = cairn(project, args);
    run.assert_code(code);
    let text = format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        run.code,
        redacted(project, &run.stdout),
        redacted(project, &run.stderr)
    );
    settings().bind(|| insta::assert_snapshot!(name, text));
    run
}

fn build(project: &Project, code: i32) {
    let args = ["build", "-j", "1", "--keep-going"];
    let run = cairn(project, &args);
    run.assert_code(code);
}

/// Sets `[datasets.shout]`'s version.
fn set_version(project: &Project, version: &str) {
    let graph = project.read_string("cairn.toml");
    let edited = graph.replace(
        "[datasets.shout]\nversion = \"1.0.0\"",
        &format!("[datasets.shout]\nversion = \"{version}\""),
    );
    assert_ne!(edited, graph);
    project.write("cairn.toml", edited);
}

/// The whole life of a small project, with the read commands' output
/// pinned at each step: a definitions refresh, a failed build (a failure, a
/// checkpoint, a skip), its resumed rebuild, a changed input, a restore, a
/// MINOR version bump, an invalidation, then a day dropped by the source
/// and pruned. The log then holds every kind of event.
#[test]
fn status_why_history_and_log_through_a_projects_life() {
    let p = project();
    // Nothing built yet.
    snapshot_stdout(&p, "stats_empty", &["store", "stats", "--json"], 0);
    snapshot_human(&p, "status_no_record", &["status", "--json"], 2);
    cairn(&p, &["defs", "refresh"]).assert_code(0);
    snapshot_stdout(&p, "status_missing", &["status", "--json"], 0);

    // Build 2: shout/day=mon fails (after a checkpoint), its summary is
    // skipped; tue is built.
    p.write("fail-mon", "");
    build(&p, 1);
    snapshot_stdout(&p, "status_failed", &["status", "--json"], 0);
    snapshot_human(&p, "status_failed_text", &["status"], 0);
    snapshot_stdout(&p, "why_failed", &["why", "shout/day=mon", "--json"], 0);
    snapshot_stdout(
        &p,
        "why_waiting_on_failed_upstream",
        &["why", "summary/day=mon", "--json"],
        0,
    );
    snapshot_stdout(&p, "why_source", &["why", "inputs/day=mon", "--json"], 0);

    // Build 3: mon resumes from its checkpoint and succeeds.
    std::fs::remove_file(p.file("fail-mon")).expect("remove fail-mon");
    build(&p, 0);
    snapshot_stdout(
        &p,
        "why_up_to_date",
        &["why", "summary/day=mon", "--json"],
        0,
    );

    // Build 4: tue's input changed.
    p.append("inputs/tue.txt", "and wednesday\n");
    snapshot_stdout(&p, "status_stale", &["status", "--json"], 0);
    snapshot_stdout(
        &p,
        "why_waiting_on_input",
        &["why", "summary/day=tue", "--json"],
        0,
    );
    build(&p, 0);

    // Build 5: everything restored from the store.
    std::fs::remove_dir_all(p.file("data")).expect("remove data/");
    snapshot_stdout(&p, "why_restore", &["why", "shout/day=tue", "--json"], 0);
    build(&p, 0);

    // A MINOR bump keeps the partitions.
    set_version(&p, "1.1.0");
    build(&p, 0);
    snapshot_stdout(&p, "status_minor_bump", &["status", "--json"], 0);
    snapshot_stdout(&p, "why_minor_bump", &["why", "shout/day=tue", "--json"], 0);

    // An invalidation (a reason that needs escaping in the human forms).
    snapshot_human(
        &p,
        "invalidate_dry_run",
        &[
            "invalidate",
            "shout/day={day}",
            "--reason",
            "bad\tfeed",
            "--dry-run",
        ],
        0,
    );
    snapshot_human(
        &p,
        "invalidate",
        &["invalidate", "shout/day=tue", "--reason", "bad\tfeed"],
        0,
    );
    snapshot_stdout(&p, "status_invalidated", &["status", "--json"], 0);
    snapshot_stdout(
        &p,
        "why_invalidated",
        &["why", "shout/day=tue", "--json"],
        0,
    );
    snapshot_stdout(
        &p,
        "history_shout_tue",
        &["history", "shout/day=tue", "--json"],
        0,
    );
    snapshot_stdout(
        &p,
        "history_shout_mon",
        &["history", "shout/day=mon", "--json"],
        0,
    );
    snapshot_stdout(
        &p,
        "history_summary_mon",
        &["history", "summary/day=mon", "--json"],
        0,
    );
    snapshot_human(
        &p,
        "history_shout_tue_text",
        &["history", "shout/day=tue"],
        0,
    );
    snapshot_human(
        &p,
        "history_shout_mon_text",
        &["history", "shout/day=mon"],
        0,
    );
    snapshot_human(&p, "history_source", &["history", "inputs/day=mon"], 0);
    build(&p, 0);

    // The source drops tue: its partitions are orphaned, then pruned.
    p.write("days.json", "[\"mon\"]\n");
    cairn(&p, &["defs", "refresh"]).assert_code(0);
    snapshot_stdout(&p, "status_orphaned", &["status", "--json"], 0);
    snapshot_human(&p, "status_orphaned_text", &["status"], 0);
    snapshot_human(
        &p,
        "prune_dry_run",
        &["prune", "--reason", "tue retired", "--dry-run"],
        0,
    );
    snapshot_human(&p, "prune", &["prune", "--reason", "tue retired"], 0);
    snapshot_human(&p, "prune_nothing", &["prune", "--reason", "again"], 0);

    // The whole log, and one line of every kind.
    let log = snapshot_stdout(&p, "log", &["log", "--json"], 0);
    let kinds: BTreeSet<String> = log
        .json_lines()
        .iter()
        .map(|event| event["kind"].as_str().expect("kind").to_owned())
        .collect();
    let every: BTreeSet<String> = [
        "BuildRequested",
        "Planned",
        "DatasetVersionChanged",
        "ActionStarted",
        "ActionCheckpointed",
        "ActionSucceeded",
        "ActionFailed",
        "ActionCached",
        "ActionSkipped",
        "PartitionMaterialized",
        "PartitionInvalidated",
        "BuildFinished",
        "DefsRefreshed",
        "PartitionPruned",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    // Every kind but `ActionRetrying` (no job here is retried): its line is
    // pinned in app/src/dto/events.rs and read back in tests/running.rs;
    // `ActionJoined` (only builds of a server join): pinned there too,
    // read back in tests/app_held.rs; and `RemoteRefused` and
    // `ActionUploaded` (only builds with a remote cache): read back in
    // tests/remote_cache.rs; and `ActionDispatched` (only builds through
    // Slurm): pinned in app/src/dto/events.rs, read back in tests/slurm.rs.
    assert_eq!(
        kinds.len() + 5,
        cairn_app::events::EVENT_KINDS.len(),
        "a new kind of event belongs in this scenario"
    );
    assert_eq!(kinds, every, "the scenario records every kind of event");
    snapshot_human(&p, "log_text", &["log"], 0);
    snapshot_stdout(
        &p,
        "log_filtered",
        &[
            "log",
            "--json",
            "--partition",
            "shout/day={day}",
            "--kind",
            "ActionFailed",
            "--kind",
            "partitioninvalidated",
        ],
        0,
    );
    snapshot_human(&p, "replay_check", &["replay", "--check"], 0);
    snapshot_stdout(&p, "stats", &["store", "stats", "--json"], 0);
    snapshot_human(&p, "stats_text", &["store", "stats"], 0);
}

/// `cairn logs`: both streams labelled, one stream alone, a failed run,
/// a run by build id.
#[test]
fn logs_of_runs() {
    let p = project();
    cairn(&p, &["defs", "refresh"]).assert_code(0);
    p.write("fail-mon", "");
    build(&p, 1);
    snapshot_human(&p, "logs_failed", &["logs", "shout/day=mon"], 0);
    std::fs::remove_file(p.file("fail-mon")).expect("remove fail-mon");
    build(&p, 0);
    snapshot_human(&p, "logs_both", &["logs", "shout/day=mon"], 0);
    snapshot_human(&p, "logs_stdout", &["logs", "shout/day=mon", "--stdout"], 0);
    snapshot_human(&p, "logs_stderr", &["logs", "shout/day=mon", "--stderr"], 0);
    snapshot_human(&p, "logs_unterminated", &["logs", "summary/day=mon"], 0);
    snapshot_human(
        &p,
        "logs_build_2",
        &["logs", "shout/day=mon", "--build", "2"],
        0,
    );
    snapshot_human(
        &p,
        "logs_no_such_build",
        &["logs", "shout/day=mon", "--build", "1"],
        2,
    );
    snapshot_human(&p, "logs_source", &["logs", "inputs/day=mon"], 0);
}

/// The blob of `partition`'s first output file in its latest manifest.
fn output_blob(p: &Project, partition: &str) -> std::path::PathBuf {
    let run = cairn(
        p,
        &[
            "log",
            "--json",
            "--partition",
            partition,
            "--kind",
            "ActionSucceeded",
        ],
    );
    run.assert_code(0);
    let events = run.json_lines();
    let manifest = &events.last().expect("a success")["manifest"];
    let digest = manifest["outputs"][0]["files"][0]["digest"]
        .as_str()
        .expect("a digest")
        .to_owned();
    p.file(&format!(".cairn/cas/{}/{}", &digest[..2], &digest[2..]))
}

/// `store verify` clean, with a damaged blob and a damaged cache file, then
/// repaired; `store gc` and `store stats` around it.
#[test]
fn store_verify_gc_and_stats() {
    let p = project();
    cairn(&p, &["defs", "refresh"]).assert_code(0);
    build(&p, 0);
    p.append("inputs/tue.txt", "and wednesday\n");
    build(&p, 0);
    snapshot_stdout(&p, "verify_clean", &["store", "verify", "--json"], 0);
    snapshot_human(&p, "verify_clean_text", &["store", "verify"], 0);
    snapshot_human(&p, "gc_dry_run", &["store", "gc", "--dry-run"], 0);
    snapshot_stdout(&p, "stats_before_gc", &["store", "stats", "--json"], 0);

    // A flipped byte in the blob of shout/day=mon's output, and an altered
    // up-to-date snapshot.
    let blob = output_blob(&p, "shout/day=mon");
    let mut permissions = std::fs::metadata(&blob).expect("blob").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o644);
    std::fs::set_permissions(&blob, permissions).expect("chmod");
    let mut bytes = std::fs::read(&blob).expect("read the blob");
    bytes[0] ^= 0x20;
    std::fs::write(&blob, bytes).expect("write the blob");
    let snapshot_file = p.file(".cairn/up-to-date");
    let mut bytes = std::fs::read(&snapshot_file).expect("the up-to-date snapshot");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&snapshot_file, bytes).expect("alter the snapshot");

    snapshot_stdout(&p, "verify_damaged", &["store", "verify", "--json"], 3);
    snapshot_human(&p, "verify_damaged_text", &["store", "verify"], 3);
    snapshot_stdout(
        &p,
        "verify_repair",
        &["store", "verify", "--repair", "--json"],
        3,
    );
    snapshot_stdout(&p, "status_repaired", &["status", "--json"], 0);
    build(&p, 0);
    snapshot_human(&p, "verify_after_rebuild", &["store", "verify"], 0);
    snapshot_human(&p, "gc", &["store", "gc"], 0);
    snapshot_human(&p, "gc_nothing", &["store", "gc", "--keep-builds", "2"], 0);
    snapshot_stdout(&p, "stats_after_gc", &["store", "stats", "--json"], 0);
    let stats: Value = serde_json::from_str(cairn(&p, &["store", "stats", "--json"]).stdout.trim())
        .expect("one JSON object");
    assert!(
        stats["catalog_bytes"]
            .as_u64()
            .is_some_and(|bytes| bytes > 0)
    );
}

#[test]
fn redaction_replaces_only_what_varies() {
    let p = Project::empty();
    let dir = p.path().to_str().expect("UTF-8");
    let key = "ab".repeat(32);
    let text = format!(
        "{{\"seq\":12,\"time_ms\":1700000000000,\"key\":\"{key}\",\"ref\":\"a/day=mon\"}}\n\
         build 2  2024-02-01 09:12:44 UTC  executed in 16 ms at {dir}/x\n\
         12 b3 2024-02-01T09:12:44Z added deadbeefcafe 123456789012 bead"
    );
    assert_eq!(
        redacted(&p, &text),
        "{\"seq\":12,\"time_ms\":\"[time_ms]\",\"key\":\"[hex]\",\"ref\":\"a/day=mon\"}\n\
         build 2  [time]  executed in [n] ms at [dir]/x\n\
         12 b3 [time] added [hex12] [hex12] bead"
    );
}
