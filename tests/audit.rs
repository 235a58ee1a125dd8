//! The audit trail through the binary: `cairn history`, `cairn log`'s
//! filters, `cairn logs`, `cairn replay`, `cairn store verify|gc|stats`
//! (issue 4). Named after the promises they check (docs/audit.md,
//! ../shared/reliability.md).

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use common::*;
use serde_json::Value;

/// A graph of one versioned job whose output, stdout and stderr are known,
/// and that fails (exit 4) while a file `fail` exists.
const SHOUT: &str = r#"
[datasets.inputs]
source = "inputs/{day}.txt"

[datasets.shout]
version = "1.0.0"

[dimensions.day]
values = ["mon", "tue"]

[jobs.shout]
outputs = ["shout/day={day}"]
inputs = ["inputs/day={day}"]
run = ["sh", "-c", "echo \"shouting $1\"; echo 'warning: loud' >&2; test ! -f fail || exit 4; tr a-z A-Z < \"$CAIRN_IN\" > \"$CAIRN_OUT/text.txt\"", "shout"]
args = ["{day}"]
"#;

fn shout() -> Project {
    let p = Project::with_graph(SHOUT);
    p.write("inputs/mon.txt", "monday\n");
    p.write("inputs/tue.txt", "tuesday\n");
    p
}

/// Sets `version` of `[datasets.NAME]` in the copy's cairn.toml.
fn set_version(p: &Project, dataset: &str, version: &str) {
    let toml = p.read_string("cairn.toml");
    let header = format!("[datasets.{dataset}]\nversion = \"");
    let start = toml
        .find(&header)
        .unwrap_or_else(|| panic!("no versioned [datasets.{dataset}] in:\n{toml}"))
        + header.len();
    let end = start + toml[start..].find('"').expect("closing quote");
    let mut edited = toml;
    edited.replace_range(start..end, version);
    p.write("cairn.toml", edited);
}

fn replay_check_passes(p: &Project, context: &str) {
    let run = p.cairn(&["replay", "--check"]);
    assert_eq!(
        run.code, 0,
        "replay --check after {context}:\n{}\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout.starts_with("projections equal the log ("),
        "{}",
        run.stdout
    );
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|event| event["seq"].as_u64().expect("seq"))
        .collect()
}

/// Every output file digest of the `ActionSucceeded` events for `partition`,
/// latest run last: `(relative path, blob digest)`.
fn output_blobs(p: &Project, partition: &str) -> Vec<(String, String)> {
    p.output_files(partition)
        .iter()
        .map(|file| {
            (
                str_field(file, "path").to_owned(),
                str_field(file, "digest").to_owned(),
            )
        })
        .collect()
}

fn blob_path(p: &Project, digest: &str) -> PathBuf {
    p.file(&format!(".cairn/cas/{}/{}", &digest[..2], &digest[2..]))
}

fn make_writable(path: &PathBuf) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
}

fn flip_first_byte(path: &PathBuf) {
    make_writable(path);
    let mut bytes = std::fs::read(path).expect("read blob");
    bytes[0] ^= 0x20;
    std::fs::write(path, bytes).expect("write blob");
}

#[test]
fn history_shows_both_materializations_and_the_input_that_changed() {
    let p = Project::podcast(3, 3);
    p.build(&[]).assert_code(0);
    p.append("inputs/2024-01-02/S001.txt", "ep9999,5\n");
    let second = p.build(&[]);
    second.assert_code(0);
    let target = daily_ref("2024-01-02");
    let changed = clean_ref("2024-01-02", "S001");

    let run = p.cairn(&["history", &target, "--json"]);
    run.assert_code(0);
    let entries = run.json_lines();
    assert_eq!(entries.len(), 2, "{}", run.stdout);
    let (newer, older) = (&entries[0], &entries[1]);
    for entry in &entries {
        assert_eq!(entry["type"], "materialization");
        assert_eq!(entry["ref"], target.as_str());
        assert_eq!(entry["outcome"], "executed");
        assert_eq!(entry["job"], "daily");
        assert_eq!(entry["versions"]["daily"], "1.0.0");
        assert_eq!(str_field(entry, "code_digest").len(), 64);
        assert_eq!(str_field(entry, "key").len(), 64);
        assert!(entry["duration_ms"].is_u64());
    }
    assert_eq!(newer["build"], second.id());
    assert_eq!(newer["current"], true);
    assert_eq!(older["current"], false);
    assert!(newer["seq"].as_u64() > older["seq"].as_u64());
    assert_ne!(newer["key"], older["key"]);
    assert_ne!(newer["digest"], older["digest"]);
    assert!(
        str_field(newer, "reason").contains(&changed),
        "{}",
        newer["reason"]
    );
    let inputs = |entry: &Value| -> Vec<(String, String, bool)> {
        entry["inputs"]
            .as_array()
            .expect("inputs")
            .iter()
            .map(|input| {
                (
                    str_field(input, "ref").to_owned(),
                    str_field(input, "digest").to_owned(),
                    input["changed"].as_bool().expect("changed"),
                )
            })
            .collect()
    };
    let (now, before) = (inputs(newer), inputs(older));
    assert_eq!(now.len(), 3);
    for ((now_ref, now_digest, now_changed), (before_ref, before_digest, _)) in
        now.iter().zip(&before)
    {
        assert_eq!(now_ref, before_ref);
        let is_changed = *now_ref == changed;
        assert_eq!(*now_changed, is_changed, "{now_ref}");
        assert_eq!(now_digest != before_digest, is_changed, "{now_ref}");
    }

    // The human form names both builds and marks the changed input.
    let human = p.cairn(&["history", &target]);
    human.assert_code(0);
    assert!(
        human
            .stdout
            .starts_with(&format!("{target}: 2 materializations, 0 failed runs")),
        "{}",
        human.stdout
    );
    let changed_line = human
        .stdout
        .lines()
        .find(|line| line.contains("(changed)"))
        .expect("a changed input");
    assert!(changed_line.contains(&changed), "{changed_line}");
    assert!(human.stdout.contains(&format!("build {}  ", second.id())));

    // `log --partition REF --json` shows the matching events: every line is
    // JSON, every event is about the partition, and the index it reads
    // agrees with a scan of the whole log.
    let events = p.log(&["--partition", &target]);
    assert!(
        events
            .iter()
            .all(|event| event_partitions(event).contains(&target))
    );
    let materialized: Vec<u64> = of_kind(&events, "PartitionMaterialized")
        .iter()
        .map(|event| event["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(
        materialized,
        [
            older["seq"].as_u64().unwrap(),
            newer["seq"].as_u64().unwrap()
        ]
    );
    assert_eq!(of_kind(&events, "ActionSucceeded").len(), 2);
    let scanned: Vec<u64> = p
        .log(&[])
        .iter()
        .filter(|event| event_partitions(event).contains(&target))
        .map(|event| event["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs(&events), scanned);

    // A restore is history too: reused, restored, the manifest it reused.
    std::fs::remove_dir_all(p.file("data")).expect("remove data");
    let third = p.build(&[]);
    third.assert_code(0);
    let entries = p.cairn(&["history", &target, "--json"]).json_lines();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["build"], third.id());
    assert_eq!(entries[0]["outcome"], "reused");
    assert_eq!(entries[0]["restored"], true);
    assert_eq!(entries[0]["manifest_build"], second.id());
    assert_eq!(entries[0]["key"], entries[1]["key"]);
    assert_eq!(entries[0]["current"], true);
    assert_eq!(entries[1]["current"], false);
}

#[test]
fn history_lists_failures_and_invalidations_and_refuses_bad_refs() {
    let p = shout();
    p.build(&[]).assert_code(0);
    p.cairn(&["invalidate", "shout/day=mon", "--reason", "audit test"])
        .assert_code(0);
    p.write("fail", "");
    p.build(&[]).assert_code(1);
    let entries = p
        .cairn(&["history", "shout/day=mon", "--json"])
        .json_lines();
    let types: Vec<&str> = entries.iter().map(|e| str_field(e, "type")).collect();
    assert_eq!(types, ["failure", "invalidation", "materialization"]);
    assert_eq!(entries[0]["exit_code"], 4);
    assert!(str_field(&entries[0], "error").contains("exited with status 4"));
    assert_eq!(entries[1]["reason"], "audit test");

    p.cairn(&["history", "../../etc"])
        .assert_usage_error(r#"segment ".." is not allowed"#);
    let source = p.cairn(&["history", "inputs/day=mon"]);
    source.assert_code(0);
    assert!(
        source.stderr.contains("is a source partition"),
        "{}",
        source.stderr
    );
    let never = p.cairn(&["history", "shout/day=sun"]);
    never.assert_code(0);
    assert!(never.stdout.is_empty());
    assert!(
        never.stderr.contains("has no history here"),
        "{}",
        never.stderr
    );
}

#[test]
fn log_filters_by_seq_and_date_ranges_and_by_kind() {
    let p = shout();
    p.build(&[]).assert_code(0);
    p.append("inputs/mon.txt", "again\n");
    p.build(&[]).assert_code(0);
    let everything = p.log(&[]);
    let all = seqs(&everything);
    assert_eq!(all, (1..=all.len() as u64).collect::<Vec<_>>());

    assert_eq!(
        seqs(&p.log(&["--since", "5", "--until", "9"])),
        [5, 6, 7, 8, 9]
    );
    assert_eq!(seqs(&p.log(&["--until", "3"])), [1, 2, 3]);
    // Dates are UTC days (inclusive at both ends); times are to the second.
    assert_eq!(seqs(&p.log(&["--since", "2000-01-01"])), all);
    assert_eq!(seqs(&p.log(&["--until", "2999-12-31T23:59:59Z"])), all);
    assert!(p.log(&["--since", "2999-01-01"]).is_empty());
    assert!(p.log(&["--until", "2000-01-01T00:00:00Z"]).is_empty());
    let first_time = everything[0]["time_ms"].as_u64().unwrap();
    let day = first_time / 86_400_000;
    let (year, month, date) = civil(day);
    let today = format!("{year:04}-{month:02}-{date:02}");
    let same_day: Vec<u64> = everything
        .iter()
        .filter(|e| e["time_ms"].as_u64().unwrap() / 86_400_000 == day)
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs(&p.log(&["--since", &today, "--until", &today])),
        same_day
    );

    let started = p.log(&["--kind", "ActionStarted"]);
    assert_eq!(started.len(), 3, "two in build 1, one in build 2");
    assert!(started.iter().all(|e| e["kind"] == "ActionStarted"));
    let two_kinds = p.log(&[
        "--kind",
        "actionstarted",
        "--kind",
        "BuildFinished",
        "--build",
        "2",
    ]);
    let kinds: BTreeSet<&str> = two_kinds.iter().map(|e| str_field(e, "kind")).collect();
    assert_eq!(
        kinds,
        ["ActionStarted", "BuildFinished"].into_iter().collect()
    );

    let unknown = p.cairn(&["log", "--kind", "ActionExploded"]);
    unknown.assert_usage_error("--kind \"ActionExploded\" is not an event kind");
    assert!(unknown.stderr.contains("PartitionMaterialized"));
    for bad in [
        "2024-02-30",
        "yesterday",
        "2024-01-01T25:00:00Z",
        "2024-01-01T10:00:00",
    ] {
        p.cairn(&["log", "--since", bad])
            .assert_usage_error("expected a sequence number, a date YYYY-MM-DD");
    }
}

/// Days since the epoch to (year, month, day), for the test's own check.
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as u64, m as u64, d as u64)
}

#[test]
fn logs_prints_the_captured_output_of_the_run() {
    let p = shout();
    let nothing = p.cairn(&["logs", "shout/day=mon"]);
    nothing.assert_code(0);
    assert!(
        nothing.stderr.contains("was never run"),
        "{}",
        nothing.stderr
    );

    let first = p.build(&[]);
    first.assert_code(0);
    let run = p.cairn(&["logs", "shout/day=mon"]);
    run.assert_code(0);
    // Labelled on stdout, so that a pipe keeps the streams apart.
    assert_eq!(
        run.stdout,
        "--- stdout (13 bytes) ---\nshouting mon\n--- stderr (14 bytes) ---\nwarning: loud\n"
    );
    assert!(
        run.stderr
            .contains(&format!("job shout in build {}", first.id())),
        "{}",
        run.stderr
    );

    // A failed run is shown by default until the partition builds again.
    p.write("fail", "");
    p.append("inputs/mon.txt", "more\n");
    let failed = p.build(&[]);
    failed.assert_code(1);
    let run = p.cairn(&["logs", "shout/day=mon", "--stderr"]);
    run.assert_code(0);
    assert_eq!(run.stdout, "warning: loud\n");
    assert!(run.stderr.contains("failed: job shout"), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("build {}", failed.id())));
    let by_build = p.cairn(&["logs", "shout/day=mon", "--build", &first.id().to_string()]);
    by_build.assert_code(0);
    assert!(by_build.stderr.contains("succeeded"), "{}", by_build.stderr);
    p.cairn(&["logs", "shout/day=mon", "--build", "99"])
        .assert_usage_error("shout/day=mon did not run in build 99: it ran in builds 1, 2");

    // A job that printed nothing says so; a source is never run.
    let podcast = Project::podcast(1, 1);
    podcast.build(&[]).assert_code(0);
    let quiet = podcast.cairn(&["logs", &raw_ref("2024-01-01", "S001")]);
    quiet.assert_code(0);
    assert!(quiet.stdout.is_empty());
    assert!(
        quiet.stderr.contains("produced no output"),
        "{}",
        quiet.stderr
    );
    let source = podcast.cairn(&["logs", "inputs/date=2024-01-01/station=S001"]);
    source.assert_code(0);
    assert!(source.stderr.contains("is a source partition"));
}

/// A small deterministic generator (xorshift), so the "property test" of
/// replay is reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn replay_check_holds_after_any_sequence_of_builds_invalidations_and_bumps() {
    for seed in [
        0x9e37_79b9_7f4a_7c15_u64,
        0xdead_beef_cafe_f00d,
        0x0123_4567_89ab_cdef,
    ] {
        let p = Project::podcast(2, 2);
        let mut rng = Rng(seed);
        let mut version = (1, 0);
        let refs: Vec<String> = p.all_refs().into_iter().collect();
        let mut history = Vec::new();
        for step in 0..14 {
            let op = rng.below(6);
            match op {
                0 | 1 => {
                    history.push("build".to_owned());
                    let build = p.build(&[]);
                    assert!(build.code() == 0, "{}", build.run.stderr);
                }
                2 => {
                    let target = &refs[rng.below(refs.len() as u64) as usize];
                    if target.starts_with("raw/")
                        || target.starts_with("clean/")
                        || target.starts_with("daily/")
                    {
                        history.push(format!("invalidate {target}"));
                        p.cairn(&["invalidate", target, "--reason", "property test"])
                            .assert_code(0);
                    }
                }
                3 => {
                    version = if rng.below(2) == 0 {
                        (version.0, version.1 + 1)
                    } else {
                        (version.0 + 1, 0)
                    };
                    let text = format!("{}.{}.0", version.0, version.1);
                    history.push(format!("clean {text}"));
                    set_version(&p, "clean", &text);
                }
                4 => {
                    let date = &p.dates()[rng.below(2) as usize];
                    history.push(format!("edit input {date}"));
                    p.append(&format!("inputs/{date}/S001.txt"), &format!("ep{step},3\n"));
                }
                _ => {
                    history.push("rm data".to_owned());
                    let _ = std::fs::remove_dir_all(p.file("data"));
                }
            }
            if p.file(".cairn/catalog.redb").exists() {
                replay_check_passes(&p, &history.join(", "));
            }
        }
        p.build(&[]).assert_code(0);
        replay_check_passes(&p, &history.join(", "));
        // `cairn replay` on an intact store changes nothing observable.
        let status = p.status(&[]);
        let run = p.cairn(&["replay"]);
        run.assert_code(0);
        assert!(
            run.stdout.contains("; 0 differences fixed"),
            "{}",
            run.stdout
        );
        assert_eq!(p.status(&[]), status);
        replay_check_passes(&p, "cairn replay");
    }
}

#[test]
fn replay_check_fails_after_a_projection_is_tampered_with_and_replay_repairs() {
    let p = Project::podcast(2, 2);
    p.build(&[]).assert_code(0);
    let status = p.status(&[]);
    let target = clean_ref("2024-01-01", "S001");
    {
        const PARTITIONS: redb::TableDefinition<'_, &str, &[u8]> =
            redb::TableDefinition::new("partitions");
        let database = redb::Builder::new()
            .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
            .open(p.file(".cairn/catalog.redb"))
            .expect("open the catalog with redb");
        let transaction = database.begin_write().expect("write");
        {
            let mut partitions = transaction.open_table(PARTITIONS).expect("partitions");
            partitions.remove(target.as_str()).expect("remove");
            // Format byte 1, then bytes that do not decode.
            partitions
                .insert("clean/date=2099-01-01/station=S001", [1u8, 0xff].as_slice())
                .expect("insert");
        }
        transaction.commit().expect("commit");
    }
    let run = p.cairn(&["replay", "--check"]);
    run.assert_code(3);
    assert!(
        run.stdout.contains(&format!(
            "partition {target}: the log produces it but the live table does not have it"
        )),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("clean/date=2099-01-01/station=S001"));
    assert!(
        run.stderr.contains("the projections differ from the log"),
        "{}",
        run.stderr
    );

    let repair = p.cairn(&["replay"]);
    repair.assert_code(0);
    assert!(
        repair.stdout.contains("2 differences fixed"),
        "{}",
        repair.stdout
    );
    replay_check_passes(&p, "cairn replay");
    assert_eq!(p.status(&[]), status);
}

#[test]
fn verify_reports_flipped_truncated_and_deleted_blobs_and_repair_then_build_restores() {
    let p = Project::podcast(2, 2);
    p.build(&[]).assert_code(0);
    let clean = p.cairn(&["store", "verify"]);
    clean.assert_code(0);
    assert!(
        clean.stderr.contains("store verified: "),
        "{}",
        clean.stderr
    );

    let victims = [
        clean_ref("2024-01-01", "S001"),
        clean_ref("2024-01-02", "S002"),
        daily_ref("2024-01-01"),
    ];
    let digests: Vec<String> = victims
        .iter()
        .map(|victim| output_blobs(&p, victim)[0].1.clone())
        .collect();
    flip_first_byte(&blob_path(&p, &digests[0]));
    let truncated = blob_path(&p, &digests[1]);
    make_writable(&truncated);
    let length = std::fs::metadata(&truncated).expect("blob").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .and_then(|file| file.set_len(length / 2))
        .expect("truncate");
    std::fs::remove_file(blob_path(&p, &digests[2])).expect("delete");

    let run = p.cairn(&["store", "verify"]);
    run.assert_code(3);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    let line_of = |digest: &str| {
        *lines
            .iter()
            .find(|line| line.starts_with(&format!("blob {}… is ", &digest[..12])))
            .unwrap_or_else(|| panic!("{digest} not reported:\n{}", run.stdout))
    };
    let flipped = line_of(&digests[0]);
    assert!(
        flipped.contains(&format!(
            "is corrupt (expected {}…, read ",
            &digests[0][..12]
        )),
        "{flipped}"
    );
    assert!(flipped.ends_with(&format!("; partition {} is affected", victims[0])));
    let cut = line_of(&digests[1]);
    assert!(
        cut.contains(&format!("is truncated ({} of {length} bytes)", length / 2)),
        "{cut}"
    );
    assert!(cut.ends_with(&format!("; partition {} is affected", victims[1])));
    assert_eq!(
        line_of(&digests[2]),
        format!(
            "blob {}… is missing; partition {} is affected",
            &digests[2][..12],
            victims[2]
        )
    );
    assert!(run.stderr.contains("3 problems found"), "{}", run.stderr);

    let json = p.cairn(&["store", "verify", "--json"]);
    json.assert_code(3);
    let objects = json.json_lines();
    let summary = objects.last().expect("summary");
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["problems"], 3);
    let damages: BTreeSet<&str> = objects[..3]
        .iter()
        .map(|o| str_field(o, "damage"))
        .collect();
    assert_eq!(
        damages,
        ["corrupt", "missing", "truncated"].into_iter().collect()
    );

    let repair = p.cairn(&["store", "verify", "--repair"]);
    repair.assert_code(3);
    assert!(repair.stdout.contains(&format!(
        "; partition {} will be rebuilt (blob removed)",
        victims[0]
    )));
    assert!(
        repair
            .stderr
            .contains("removed 2 damaged blobs, invalidated 3 partitions"),
        "{}",
        repair.stderr
    );
    let invalidations = p.log(&["--kind", "PartitionInvalidated"]);
    assert_eq!(
        partitions_of_kind(&invalidations, "PartitionInvalidated"),
        victims.iter().cloned().collect()
    );
    assert!(
        invalidations
            .iter()
            .all(|event| event["by"] == "cairn store verify"
                && str_field(event, "reason").starts_with("store verify: blob "))
    );

    let rebuild = p.build(&[]);
    rebuild.assert_code(0);
    assert_eq!(
        rebuild.outputs("executed"),
        victims.iter().cloned().collect(),
        "exactly the invalidated partitions rerun"
    );
    p.cairn(&["store", "verify"]).assert_code(0);
    replay_check_passes(&p, "verify --repair and a build");
    for date in p.dates() {
        assert_eq!(
            p.read_string(&format!("data/daily/date={date}/summary.csv")),
            p.expected_summary(&date)
        );
    }
}

#[test]
fn a_build_never_serves_a_corrupt_blob() {
    let p = Project::podcast(2, 2);
    p.build(&[]).assert_code(0);
    let victim = clean_ref("2024-01-02", "S001");
    let (path, digest) = output_blobs(&p, &victim)[0].clone();
    std::fs::remove_dir_all(p.file("data")).expect("remove data");
    flip_first_byte(&blob_path(&p, &digest));

    let build = p.build(&[]);
    build.assert_code(0);
    // Everything else is restored; the victim's job runs again.
    assert_eq!(
        build.outputs("executed"),
        [victim.clone()].into_iter().collect()
    );
    assert!(build.outputs("restored").len() > 1);
    assert_eq!(
        p.read_string(&format!("data/{victim}/{path}")),
        p.expected_clean("2024-01-02", "S001")
    );
    for date in p.dates() {
        assert_eq!(
            p.read_string(&format!("data/daily/date={date}/summary.csv")),
            p.expected_summary(&date)
        );
    }
    // The rerun wrote the good bytes back over the corrupt blob.
    p.cairn(&["store", "verify"]).assert_code(0);
    let history = p.cairn(&["history", &victim, "--json"]).json_lines();
    assert_eq!(history[0]["outcome"], "executed");
    assert!(
        str_field(&history[0], "reason").contains("restoring from the store failed"),
        "{}",
        history[0]
    );
}

#[test]
fn gc_after_a_major_bump_frees_the_superseded_blobs_and_dry_run_changes_nothing() {
    let p = shout();
    p.build(&[]).assert_code(0);
    let old: Vec<String> = ["shout/day=mon", "shout/day=tue"]
        .iter()
        .map(|partition| output_blobs(&p, partition)[0].1.clone())
        .collect();
    // Version 2 writes the text reversed: new content, new blobs.
    set_version(&p, "shout", "2.0.0");
    let toml = p.read_string("cairn.toml").replace("tr a-z A-Z <", "rev <");
    p.write("cairn.toml", toml);
    p.build(&[]).assert_code(0);
    assert_eq!(p.read_string("data/shout/day=mon/text.txt"), "yadnom\n");

    let before = p.state();
    let dry = p.cairn(&["store", "gc", "--dry-run"]);
    dry.assert_code(0);
    assert!(
        dry.stdout.starts_with("would remove 2 blobs (15 B); kept "),
        "{}",
        dry.stdout
    );
    assert_eq!(p.state(), before, "a dry run changes nothing");
    // Keeping the last 2 builds keeps version 1's blobs.
    let window = p.cairn(&["store", "gc", "--keep-builds", "2"]);
    window.assert_code(0);
    assert!(
        window.stdout.starts_with("removed 0 blobs (0 B)"),
        "{}",
        window.stdout
    );

    let gc = p.cairn(&["store", "gc"]);
    gc.assert_code(0);
    assert!(
        gc.stdout.starts_with("removed 2 blobs (15 B); kept "),
        "{}",
        gc.stdout
    );
    for digest in &old {
        assert!(!blob_path(&p, digest).exists(), "{digest} survived gc");
    }
    let verify = p.cairn(&["store", "verify"]);
    verify.assert_code(0);
    assert!(
        verify
            .stderr
            .contains("2 blobs of superseded manifests were collected"),
        "{}",
        verify.stderr
    );
    // The current data is still restorable from the store.
    std::fs::remove_dir_all(p.file("data")).expect("remove data");
    let restore = p.build(&[]);
    restore.assert_code(0);
    assert_eq!(restore.count("executed"), 0);
    assert_eq!(p.read_string("data/shout/day=tue/text.txt"), "yadseut\n");
    // Going back to version 1 cannot restore collected blobs: the job runs.
    set_version(&p, "shout", "1.0.0");
    let toml = p.read_string("cairn.toml").replace("rev <", "tr a-z A-Z <");
    p.write("cairn.toml", toml);
    let back = p.build(&[]);
    back.assert_code(0);
    assert_eq!(p.read_string("data/shout/day=mon/text.txt"), "MONDAY\n");
    p.cairn(&["store", "verify"]).assert_code(0);

    p.cairn(&["store", "gc", "--older-than", "soon"])
        .assert_usage_error("--older-than \"soon\"");
    p.cairn(&["store", "gc", "--older-than", "30d"])
        .assert_code(0);
}

#[test]
fn stats_counts_events_builds_actions_partitions_and_blobs() {
    let p = shout();
    let empty = p.cairn(&["store", "stats", "--json"]);
    empty.assert_code(0);
    assert_eq!(empty.json_lines()[0]["events"], 0);
    p.build(&[]).assert_code(0);
    let events = p.log(&[]).len();
    let run = p.cairn(&["store", "stats", "--json"]);
    run.assert_code(0);
    let stats = &run.json_lines()[0];
    assert_eq!(stats["events"], events);
    assert_eq!(stats["builds"], 1);
    assert_eq!(stats["actions"], 2);
    assert_eq!(stats["partitions"], 2);
    assert_eq!(stats["materialized"], 2);
    // Two outputs, one stdout and one stderr blob shared by both runs? No:
    // stdout differs per day ("shouting mon"/"shouting tue"), stderr is shared.
    assert_eq!(stats["blobs"], 2 + 2 + 1);
    assert!(stats["catalog_bytes"].as_u64().unwrap() > 0);
    let human = p.cairn(&["store", "stats"]);
    human.assert_code(0);
    assert!(
        human.stdout.starts_with(&format!("events      {events}\n")),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains("blobs       5 ("), "{}", human.stdout);
}

/// The issue's benchmark: `cairn log --json` over 1,000,000 events keeps
/// peak memory under 100 MiB, and `--partition REF` reads only that
/// partition's events. Slow (it writes a million events): run it with
/// `cargo test --release --test audit -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: writes 1,000,000 events"]
#[expect(clippy::print_stderr, reason = "a benchmark reports its figures")]
fn log_json_over_a_million_events_stays_under_100_mib() {
    use cairn_engine::record::{EventKind, FileEntry, Manifest, OutputRecord};
    use cairn_engine::{ActionKey, ContentDigest, PartitionRef};
    use cairn_store::{EventLog, OpenMode, Store};

    const EVENTS: u64 = 1_000_000;
    const PER_ACTION: u64 = 4;
    let p = shout();
    let started = std::time::Instant::now();
    {
        let store = Store::open(
            &p.file(".cairn"),
            OpenMode::Write { wait: false },
            &mut |_: &str| {},
        )
        .expect("open the store");
        let build = store.catalog().next_build_id().expect("build id");
        let mut batch = Vec::new();
        for action in 0..EVENTS / PER_ACTION {
            let partition =
                PartitionRef::parse(&format!("shout/day=d{:06}", action % 50_000)).expect("ref");
            let key = ActionKey(*ContentDigest::of(&action.to_le_bytes()).as_bytes());
            let digest = ContentDigest::of(partition.as_str().as_bytes());
            let manifest = Manifest {
                key,
                job: "shout".into(),
                outputs: vec![OutputRecord {
                    partition: partition.clone(),
                    digest,
                    files: vec![FileEntry {
                        path: "text.txt".into(),
                        executable: false,
                        size: 12,
                        digest,
                        mode: 0o644,
                    }],
                }],
                inputs: Vec::new(),
                code_digest: None,
                versions: vec![("shout".into(), "1.0.0".into())],
                build,
                started_ms: 1,
                finished_ms: 2,
                stdout: None,
                stderr: None,
                command: None,
            };
            batch.push(EventKind::ActionStarted {
                key,
                job: "shout".into(),
                outputs: vec![partition.clone()],
                reason: "never built".into(),
                attempt: 1,
                resumed_from: None,
            });
            batch.push(EventKind::ActionSucceeded { manifest });
            batch.push(EventKind::PartitionMaterialized {
                partition: partition.clone(),
                digest,
                key,
            });
            batch.push(EventKind::ActionSkipped {
                job: "shout".into(),
                outputs: vec![partition],
                reason: "benchmark filler".into(),
            });
            if batch.len() >= 50_000 {
                store
                    .catalog()
                    .append(build, std::mem::take(&mut batch), Vec::new())
                    .expect("append");
            }
        }
        store
            .catalog()
            .append(build, batch, Vec::new())
            .expect("append");
        assert_eq!(store.catalog().last_seq().expect("seq"), EVENTS);
    }
    eprintln!("wrote {EVENTS} events in {:?}", started.elapsed());

    let catalog_bytes = std::fs::metadata(p.file(".cairn/catalog.redb"))
        .expect("catalog")
        .len();
    for args in [
        &["log", "--json"][..],
        &["log"],
        &["log", "--json", "--kind", "PartitionMaterialized"],
        &["log", "--json", "--partition", "shout/day=d000123"],
        &["history", "shout/day=d000123", "--json"],
    ] {
        let started = std::time::Instant::now();
        let mut child = std::process::Command::new(CAIRN)
            .args(args)
            .current_dir(p.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn cairn");
        let peak = peak_status_kib(&mut child, "VmHWM");
        let status = child.wait().expect("wait");
        assert!(status.success(), "cairn {args:?}: {status}");
        eprintln!(
            "cairn {}: {:?}, peak RSS {} KiB (catalog {} MiB)",
            args.join(" "),
            started.elapsed(),
            peak.map_or_else(|| "?".to_owned(), |kib| kib.to_string()),
            catalog_bytes / (1024 * 1024)
        );
        if let Some(kib) = peak {
            assert!(kib < 100 * 1024, "cairn {args:?} peaked at {kib} KiB");
        }
    }
}

/// Issue 26 §7: the human `cairn log` shows each event's time (in the form
/// `--since` accepts), `--since DATE` starts its scan at the first event of
/// that time instead of the start of the log, and `history` shows the
/// reason a backfill was run with.
#[test]
fn log_shows_times_since_date_skips_the_older_log_and_history_shows_the_backfill_reason() {
    let p = shout();
    p.build(&[]).assert_code(0);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    p.write(
        "again.toml",
        "target = \"shout/day={day}\"\nreason = \"#77 shout again\"\n[dimensions.day]\nvalues = [\"mon\"]\n",
    );
    p.append("inputs/mon.txt", "more\n");
    let backfill = p.cairn(&["backfill", "again.toml"]);
    backfill.assert_code(0);

    let events = p.log(&[]);
    let human = p.cairn(&["log"]);
    human.assert_code(0);
    let lines: Vec<&str> = human.stdout.lines().collect();
    assert_eq!(lines.len(), events.len());
    for (line, event) in lines.iter().zip(&events) {
        let time = utc_time(event["time_ms"].as_u64().unwrap());
        assert!(line.contains(&format!(" {time} ")), "{time}: {line}");
    }

    // The first event of the backfill, to the second: every earlier event
    // was recorded at least a second before it.
    let second_build = events
        .iter()
        .position(|event| event["command"] == "backfill")
        .unwrap();
    let since = utc_time(events[second_build]["time_ms"].as_u64().unwrap());
    let from = events[second_build]["seq"].as_u64().unwrap();
    let tail = p.cairn(&["-vv", "log", "--since", &since]);
    tail.assert_code(0);
    assert_eq!(tail.stdout.lines().count(), events.len() - second_build);
    assert!(
        tail.stderr
            .contains(&format!("--since starts the scan at seq {from} ")),
        "{}",
        tail.stderr
    );

    let history = p.cairn(&["history", "shout/day=mon"]);
    history.assert_code(0);
    assert!(
        history
            .stdout
            .contains("  because  #77 shout again (backfill again.toml"),
        "{}",
        history.stdout
    );
    let entries = p
        .cairn(&["history", "shout/day=mon", "--json"])
        .json_lines();
    assert!(
        entries[0]["build_reason"]
            .as_str()
            .unwrap()
            .starts_with("#77 shout again"),
        "{entries:?}"
    );
    assert_eq!(entries[1]["build_reason"], Value::Null);
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a time in ms since the epoch.
fn utc_time(ms: u64) -> String {
    let seconds = ms / 1000;
    let (y, m, d) = civil(seconds / 86_400);
    let of_day = seconds % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}
