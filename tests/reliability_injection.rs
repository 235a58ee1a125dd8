//! log_injection (issue 28 B8, docs/reliability.md promise 6): a stored text
//! that carries control characters — an invalidation or backfill `reason`,
//! a job's error, a line of its stderr — is printed escaped by every human
//! output, so it can neither forge a line of `cairn log` nor send escape
//! sequences to the terminal. The JSON forms carry the text as stored.

mod common;

use common::Project;

const GRAPH: &str = r#"
[datasets.src]
source = "inputs/{day}.txt"

[datasets.out]

[datasets.bad]

[dimensions.day]
values = ["mon", "tue"]

[jobs.out]
outputs = ["out/day={day}"]
inputs = ["src/day={day}"]
run = ["sh", "-c", "cp \"$CAIRN_IN\" \"$CAIRN_OUT/v\""]

# Fails with terminal escapes and a forged line on its stderr.
[jobs.bad]
outputs = ["bad/day={day}"]
run = ["sh", "-c", "printf 'boom\\033[31m\\n 77 b77 BuildFinished FORGED\\033]0;title\\007\\n' >&2; exit 1"]
"#;

/// What the reasons try to inject.
const FORGED: &str = "ok\n 99 b99 BuildFinished FORGED \x1b[31m";

fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.contains('\x1b') && !text.contains('\x07') && !text.contains('\u{9b}'),
        "{what} sends a control character to the terminal:\n{text:?}"
    );
    for line in text.lines() {
        assert!(
            !line.trim_start().starts_with("99 b99"),
            "{what} prints a forged line {line:?}:\n{text}"
        );
    }
}

#[test]
fn log_injection_reasons_and_errors_are_escaped_in_human_output() {
    let p = Project::with_graph(GRAPH);
    p.write("inputs/mon.txt", "monday\n");
    p.write("inputs/tue.txt", "tuesday\n");
    let build = p.cairn(&["build", "--keep-going"]);
    assert_eq!(build.code, 1, "{}", build.stderr);
    let invalidate = p.cairn(&["invalidate", "out/day=mon", "--reason", FORGED]);
    assert_eq!(invalidate.code, 0, "{}", invalidate.stderr);
    p.write(
        "backfill.toml",
        "target = \"out/day={day}\"\nreason = \"ok\\n 99 b99 BuildFinished FORGED \\u001b[31m\"\n\
         [dimensions.day]\nvalues = [\"mon\"]\n",
    );
    let backfill = p.cairn(&["backfill", "backfill.toml"]);
    assert_eq!(backfill.code, 0, "{}", backfill.stderr);
    let invalidate = p.cairn(&["invalidate", "out/day=tue", "--reason", FORGED]);
    assert_eq!(invalidate.code, 0, "{}", invalidate.stderr);

    let mut seen_escaped = 0;
    for args in [
        &["build", "--keep-going", "--dry-run"][..],
        &["log"],
        &["history", "out/day=mon"],
        &["history", "out/day=tue"],
        &["history", "bad/day=mon"],
        &["status"],
        &["why", "out/day=tue"],
        &["why", "bad/day=mon"],
        &["plan", "out/day=tue", "bad/day=mon"],
    ] {
        let run = p.cairn(args);
        let what = format!("cairn {args:?}");
        assert_clean(&what, &run.stdout);
        assert_clean(&what, &run.stderr);
        let all = format!("{}{}", run.stdout, run.stderr);
        if all.contains("ok\\n 99 b99 BuildFinished FORGED \\x1b[31m") {
            seen_escaped += 1;
        }
    }
    // The reasons are shown (escaped), not dropped: by log, the history and
    // why of the invalidated partition, and status.
    assert!(
        seen_escaped >= 4,
        "the escaped reason is shown: {seen_escaped}"
    );
    for run in [&build, &backfill] {
        assert_clean("the build", &run.stdout);
        assert_clean("the build", &run.stderr);
    }
    // The failing job's stderr is shown escaped, inside its failure block:
    // its forged line stays an indented line of that block.
    assert!(
        build
            .stderr
            .contains("    boom\\x1b[31m\n     77 b77 BuildFinished FORGED\\x1b]0;title\\x07\n"),
        "{}",
        build.stderr
    );
    // JSON keeps the text as stored.
    let events = p.log(&["--kind", "PartitionInvalidated"]);
    assert!(
        events.iter().any(|event| event["reason"] == FORGED),
        "{events:?}"
    );
}
