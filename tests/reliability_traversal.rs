//! traversal (docs/reliability.md, promises 5 and 6): refs cannot name a
//! path outside the data root, whichever way they arrive — the command
//! line, the graph file, a job's configure output — and partitions cannot
//! point outside it. Each bad ref is refused with exit 2 and a message
//! naming the ref (and the file, line and field, or the job and config
//! field, it came from); nothing is recorded or written.
//!
//! (More of the same through the command line: tests/bad_input.rs; outputs
//! that are links, FIFOs or devices: tests/reliability_jobs.rs.)

mod common;

use common::{Project, snapshot};

fn assert_refused(p: &Project, args: &[&str], needles: &[&str]) {
    let before = p.state();
    let run = p.cairn(args);
    run.assert_code(2);
    assert!(
        run.stderr.starts_with("error: "),
        "cairn {args:?}: {}",
        run.stderr
    );
    for needle in needles {
        assert!(
            run.stderr.contains(needle),
            "cairn {args:?}: {needle:?} not in:\n{}",
            run.stderr
        );
    }
    assert!(run.stdout.is_empty(), "cairn {args:?}: {}", run.stdout);
    assert!(
        p.state() == before,
        "cairn {args:?} changed the store or data"
    );
}

#[test]
fn traversal_refs_on_the_command_line_are_refused_naming_the_ref() {
    let p = Project::podcast(1, 1);
    p.build(&[]).assert_code(0);
    let cases: &[(&str, &str)] = &[
        (
            "../../etc",
            r#"invalid partition ref "../../etc": segment ".." is not allowed"#,
        ),
        (
            "/etc/passwd",
            r#"invalid partition ref "/etc/passwd": absolute paths are not allowed"#,
        ),
        (
            "raw/date=%2e%2e/station=S001",
            r#"invalid partition ref "raw/date=%2e%2e/station=S001""#,
        ),
        ("%2e%2e/%2e%2e/etc", "percent-encoding"),
        (
            "raw/date=../station=S001",
            r#"invalid partition ref "raw/date=../station=S001""#,
        ),
        (
            "raw/date=.hidden/station=S001",
            r#"invalid partition ref "raw/date=.hidden/station=S001""#,
        ),
        ("raw//date=x", r#"invalid partition ref "raw//date=x""#),
        (
            "raw/date=a\\..\\..\\etc",
            r#"invalid partition ref "raw/date=a\\..\\..\\etc""#,
        ),
        (
            "raw/date=x/station=S001/..",
            r#"segment ".." is not allowed"#,
        ),
        ("./raw/date=x", r#"invalid partition ref "./raw/date=x""#),
    ];
    for (text, needle) in cases {
        for command in [&["build", *text][..], &["status", *text], &["plan", *text]] {
            assert_refused(&p, command, &[needle]);
        }
    }
}

/// `cairn.toml` with `pattern` as the job's output and `value` in its
/// dimension (written with TOML escapes, so `\u0000` is a NUL).
fn graph(pattern: &str, value: &str) -> String {
    format!(
        "[datasets.out]\n[dimensions.i]\nvalues = [\"{value}\"]\n[jobs.j]\noutputs = [\"{pattern}\"]\nrun = [\"true\"]\n"
    )
}

#[test]
fn traversal_nul_and_dotdot_in_the_graph_file_name_the_line_and_field() {
    for (pattern, value, needles) in [
        (
            r"out/i={i}\u0000",
            "a",
            vec![
                ":5: jobs.j.outputs: ",
                r#"invalid pattern "out/i={i}\0": it contains a NUL byte"#,
            ],
        ),
        (
            "out/i={i}",
            r"a\u0000b",
            vec![
                ":3: dimensions.i.values: ",
                r#""a\0b" is not a valid partition value"#,
            ],
        ),
        (
            "out/i={i}",
            "..",
            vec![
                ":3: dimensions.i.values: ",
                r#"".." is not a valid partition value"#,
            ],
        ),
        (
            "../out/i={i}",
            "a",
            vec![":5: jobs.j.outputs: ", r#"invalid pattern "../out/i={i}""#],
        ),
        (
            "/out/i={i}",
            "a",
            vec![":5: jobs.j.outputs: ", "absolute paths are not allowed"],
        ),
    ] {
        let p = Project::with_graph(&graph(pattern, value));
        let file = p.file("cairn.toml").display().to_string();
        let mut all = needles.clone();
        all.push(&file);
        for args in [&["build"][..], &["status"], &["build", "--dry-run"]] {
            assert_refused(&p, args, &all);
        }
        assert!(!p.file(".cairn").exists() && !p.file("data").exists());
    }
}

#[test]
fn traversal_refs_from_a_configure_step_are_refused_naming_the_job_and_field() {
    for (output, needle) in [
        (
            r"daily/date=x\u0000",
            r#"invalid partition ref "daily/date=x\0": it contains a NUL byte"#,
        ),
        (
            "daily/date=../../etc",
            r#"invalid partition ref "daily/date=../../etc""#,
        ),
        (
            "/etc/passwd",
            r#"invalid partition ref "/etc/passwd": absolute paths are not allowed"#,
        ),
        (
            "daily/date=%2e%2e",
            r#"invalid partition ref "daily/date=%2e%2e""#,
        ),
    ] {
        let p = Project::with_graph(
            "[datasets.daily]\n[jobs.d]\noutputs = [\"daily/date={d}\"]\nconfigure = [\"sh\", \"configure.sh\"]\nrun = [\"true\"]\n",
        );
        p.write(
            "configure.sh",
            format!("printf '%s\\n' '{{\"configs\":[{{\"outputs\":[\"{output}\"]}}]}}'\n"),
        );
        for args in [&["build", "daily/date=x"][..], &["plan", "daily/date=x"]] {
            assert_refused(&p, args, &["job d: configure configs[0].outputs: ", needle]);
        }
    }
}

#[test]
fn traversal_a_partition_replaced_by_a_link_out_of_the_root_is_never_written_through() {
    let p = Project::podcast(1, 1);
    p.build(&[]).assert_code(0);
    let outside = Project::empty();
    outside.write("reviews.csv", "not cairn's\n");
    let partition = "data/clean/date=2024-01-01/station=S001";
    std::fs::remove_dir_all(p.file(partition)).expect("remove the partition");
    std::os::unix::fs::symlink(outside.path(), p.file(partition)).expect("plant a link");
    let before = snapshot(outside.path());
    let build = p.build(&[]);
    build.assert_code(0);
    assert_eq!(
        snapshot(outside.path()),
        before,
        "the build wrote through the link"
    );
    // The link was replaced by the real partition, restored from the store.
    let metadata = std::fs::symlink_metadata(p.file(partition)).expect("partition");
    assert!(metadata.is_dir(), "{partition} is still a link");
    assert_eq!(
        build.outputs("restored"),
        common::refs(["clean/date=2024-01-01/station=S001"])
    );
    assert_eq!(
        p.read_string(&format!("{partition}/reviews.csv")),
        p.expected_clean("2024-01-01", "S001")
    );
}
