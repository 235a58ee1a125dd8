//! Snapshots of the JSON that `build`, `plan`, `backfill` and `defs` print
//! (docs/cli.md promises that its fields are never renamed or removed).
//!
//! Each snapshot is the command's stdout as printed, byte for byte, with
//! only what differs from run to run replaced: digests and keys (`[hex]`),
//! durations and times, the temporary directory. Lines whose order depends
//! on scheduling (the action lines of a build) are sorted; the summary
//! stays last. The snapshots were taken before the commands moved into
//! cairn-app, so they pin that the move kept the JSON.

mod common;

use std::path::Path;

use common::{Project, Run};

/// `run`'s stdout with what varies between runs replaced; `sort`: sort every
/// line but the last (after the replacements, so that the order does not
/// depend on them either).
fn normalized(project: &Project, run: &Run, sort: bool) -> String {
    let dir = project.path().to_str().expect("a UTF-8 temporary path");
    let text = redacted(&run.stdout.replace(dir, "[dir]"));
    let mut lines: Vec<&str> = text.lines().collect();
    if sort && lines.len() > 1 {
        let last = lines.len() - 1;
        lines[..last].sort_unstable();
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// `text` with every run of exactly 64 lowercase hex digits (a digest or a
/// key) replaced by `[hex]`, and the numbers of `"duration_ms":` and
/// `"time_ms":` by `"[ms]"` and `"[time]"`.
fn redacted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(first) = rest.chars().next() {
        let hex = rest
            .bytes()
            .take_while(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(byte))
            .count();
        if hex == 64 {
            out.push_str("[hex]");
            rest = &rest[64..];
            continue;
        }
        if hex > 0 {
            out.push_str(&rest[..hex]);
            rest = &rest[hex..];
            continue;
        }
        let mut replaced = false;
        for (field, with) in [
            ("\"duration_ms\":", "\"duration_ms\":\"[ms]\""),
            ("\"time_ms\":", "\"time_ms\":\"[time]\""),
        ] {
            if let Some(after) = rest.strip_prefix(field) {
                let digits = after.bytes().take_while(u8::is_ascii_digit).count();
                if digits > 0 {
                    out.push_str(with);
                    rest = &after[digits..];
                    replaced = true;
                    break;
                }
            }
        }
        if !replaced {
            out.push(first);
            rest = &rest[first.len_utf8()..];
        }
    }
    out
}

fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_snapshot_path("snapshots/json_writes");
    settings
}

/// Asserts the snapshot `name` of `cairn ARGS`' stdout, after checking its
/// exit code.
fn snapshot(project: &Project, name: &str, args: &[&str], code: i32, sort: bool) {
    let run = project.cairn(args);
    run.assert_code(code);
    let text = normalized(project, &run, sort);
    settings().bind(|| insta::assert_snapshot!(name, text));
}

#[test]
fn build_json() {
    let project = Project::podcast(2, 2);
    snapshot(
        &project,
        "build_cold",
        &["build", "--json", "-j", "1"],
        0,
        true,
    );
    // Every action current: answered from the up-to-date snapshot.
    snapshot(&project, "build_noop", &["build", "--json"], 0, true);
    snapshot(
        &project,
        "build_dry_run_current",
        &["build", "--dry-run", "--json"],
        0,
        false,
    );
    project.append("inputs/2024-01-02/S002.txt", "ep9999,5\n");
    snapshot(
        &project,
        "build_dry_run_changed",
        &["build", "--dry-run", "--json"],
        0,
        false,
    );
    // A changed input: the snapshot presumes the others current.
    snapshot(&project, "build_incremental", &["build", "--json"], 0, true);
    std::fs::remove_dir_all(project.file("data/clean")).expect("remove data/clean");
    snapshot(&project, "build_restored", &["build", "--json"], 0, true);
}

#[test]
fn build_json_with_a_failure() {
    let project = Project::podcast(2, 2);
    project.patch_clean(
        "if [ \"$CAIRN_OUTPUT_REF_0\" = \"clean/date=2024-01-02/station=S002\" ]; then echo 'clean: refusing on purpose' >&2; exit 3; fi",
    );
    snapshot(
        &project,
        "build_failed",
        &["build", "--json", "--keep-going"],
        1,
        true,
    );
    snapshot(
        &project,
        "build_failed_again",
        &["build", "--json"],
        1,
        true,
    );
}

#[test]
fn plan_json() {
    let project = Project::podcast(2, 2);
    snapshot(
        &project,
        "plan_cold",
        &["plan", "daily/date={date}", "--format", "json"],
        0,
        false,
    );
    project.cairn(&["build"]).assert_code(0);
    project.append("inputs/2024-01-01/S001.txt", "ep9999,5\n");
    snapshot(
        &project,
        "plan_changed",
        &["plan", "daily/date=2024-01-01", "--format", "json"],
        0,
        false,
    );
}

/// A copy of `fixtures/airquality` (without any local data or store), with
/// a backfill of two days.
fn airquality() -> Project {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("create a directory");
        for entry in std::fs::read_dir(from).expect("read the fixture") {
            let entry = entry.expect("read the fixture");
            let name = entry.file_name();
            if name == "data" || name == ".cairn" {
                continue;
            }
            let target = to.join(&name);
            if entry.file_type().expect("a file type").is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).expect("copy a file");
            }
        }
    }
    let project = Project::empty();
    copy(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/airquality"),
        project.path(),
    );
    project.write(
        "backfills/short.toml",
        "target = \"daily/date={date}/station={station}\"\nreason = \"two days\"\n\n\
         [dimensions.date]\nstart = \"2024-01-01\"\nend = \"2024-01-02\"\n\n\
         [dimensions.station]\nfrom = \"stations\"\n",
    );
    project
}

#[test]
fn defs_json() {
    let project = airquality();
    // A store without a record of the source.
    project
        .cairn(&["build", "daily/date=2024-01-01/station=NL01497"])
        .assert_code(0);
    snapshot(
        &project,
        "defs_show_no_record",
        &["defs", "show", "--json"],
        0,
        false,
    );
    snapshot(
        &project,
        "defs_refresh_first",
        &["defs", "refresh", "--json"],
        0,
        false,
    );
    project.write(
        "api/stations.json",
        "{\"number\": \"NL01497\"}\n{\"number\": \"NL01913\"}\n{\"number\": \"NL01914\"}\n",
    );
    snapshot(
        &project,
        "defs_refresh_changed",
        &["defs", "refresh", "stations", "--json"],
        0,
        false,
    );
    project.write("api/OUTAGE", "");
    snapshot(
        &project,
        "defs_refresh_failed",
        &["defs", "refresh", "--json"],
        1,
        false,
    );
    snapshot(
        &project,
        "defs_show_one",
        &["defs", "show", "stations", "--json"],
        0,
        false,
    );
    snapshot(
        &project,
        "defs_show_all",
        &["defs", "show", "--json"],
        0,
        false,
    );
    snapshot(
        &project,
        "defs_diff",
        &["defs", "diff", "stations", "--json"],
        0,
        false,
    );
    let first = project.cairn(&["log", "--json", "--kind", "DefsRefreshed"]);
    first.assert_code(0);
    let seq = first.json_lines()[0]["seq"].to_string();
    snapshot(
        &project,
        "defs_diff_from",
        &["defs", "diff", "stations", "--from", &seq, "--json"],
        0,
        false,
    );
}

#[test]
fn backfill_json() {
    let project = airquality();
    project.cairn(&["defs", "refresh"]).assert_code(0);
    snapshot(
        &project,
        "backfill_retry_nothing",
        &[
            "backfill",
            "backfills/short.toml",
            "--retry-failed",
            "--json",
        ],
        0,
        false,
    );
    snapshot(
        &project,
        "backfill_dry_run",
        &["backfill", "backfills/short.toml", "--dry-run", "--json"],
        0,
        false,
    );
    let script = project.read_string("jobs/clean.sh");
    project.write(
        "jobs/clean.sh",
        script.replacen(
            "\nLC_ALL=C\n",
            "\ncase $CAIRN_IN in */2024-01-02/NL01912.csv) [ -e broken ] && { echo 'feed broken' >&2; exit 3; } ;; esac\nLC_ALL=C\n",
            1,
        ),
    );
    project.write("broken", "");
    snapshot(
        &project,
        "backfill_failed",
        &["backfill", "backfills/short.toml", "--json", "-j", "1"],
        1,
        true,
    );
    std::fs::remove_file(project.file("broken")).expect("remove broken");
    snapshot(
        &project,
        "backfill_retry_failed",
        &[
            "backfill",
            "backfills/short.toml",
            "--retry-failed",
            "--json",
        ],
        0,
        true,
    );
    snapshot(
        &project,
        "backfill_done",
        &["backfill", "backfills/short.toml", "--json"],
        0,
        true,
    );
}
