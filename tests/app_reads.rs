//! The read-side use cases of cairn-app called in-process, as a second
//! front end (the coming `cairn serve`) would call them: their typed
//! results say what the command line prints, and their dto structs
//! serialize to exactly the JSON lines the binary prints.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_app::dto::events::EventLine;
use cairn_app::dto::history::HistoryLine;
use cairn_app::dto::status::{StatusLine, WhyLine};
use cairn_app::dto::store::{StatsLine, VerifyLine};
use cairn_app::events::{EventQuery, Scanned};
use cairn_app::history::{History, HistoryEntry};
use cairn_app::logs::{Logs, Stream};
use cairn_app::status::{State, WhyState};
use cairn_app::{Silent, Workspace, WorkspaceOptions};
use common::Project;

/// Two days; `shout` fails for a day while `fail-DAY` exists, `summary`
/// follows it.
const GRAPH: &str = r#"
[datasets.inputs]
source = "inputs/{day}.txt"

[datasets.shout]

[datasets.summary]

[dimensions.day]
values = ["mon", "tue"]

[jobs.shout]
outputs = ["shout/day={day}"]
inputs = ["inputs/day={day}"]
run = ["sh", "-c", "echo \"shouting $1\"; if [ -f \"fail-$1\" ]; then exit 4; fi; tr a-z A-Z < \"$CAIRN_IN\" > \"$CAIRN_OUT/text.txt\"", "shout"]
args = ["{day}"]

[jobs.summary]
outputs = ["summary/day={day}"]
inputs = ["shout/day={day}"]
run = ["sh", "-c", "wc -c < \"$CAIRN_IN/text.txt\" > \"$CAIRN_OUT/size.txt\""]
"#;

fn workspace(project: &Project) -> Workspace {
    let options = WorkspaceOptions {
        graph_file: Some(project.file("cairn.toml")),
        store_dir: None,
    };
    Workspace::open(&options, Arc::new(Silent)).expect("open the workspace")
}

/// `value`'s JSON and a newline, as `--json` prints it.
fn line<T: serde::Serialize>(value: &T) -> String {
    let mut text = serde_json::to_string(value).expect("serialize");
    text.push('\n');
    text
}

#[test]
fn the_use_cases_return_what_the_command_line_prints() {
    let p = Project::with_graph(GRAPH);
    p.write("inputs/mon.txt", "monday\n");
    p.write("inputs/tue.txt", "tuesday\n");
    p.write("fail-mon", "");
    p.cairn(&["build", "--keep-going"]).assert_code(1);
    let ws = workspace(&p);

    // status: a typed state per partition, and the same JSON.
    let rows = cairn_app::status::status(&ws, &[]).expect("status");
    let states: BTreeMap<String, State> = rows
        .iter()
        .map(|row| (row.partition.to_string(), row.state))
        .collect();
    assert_eq!(
        states,
        BTreeMap::from([
            ("shout/day=mon".to_owned(), State::Failed),
            ("shout/day=tue".to_owned(), State::Built),
            ("summary/day=mon".to_owned(), State::Missing),
            ("summary/day=tue".to_owned(), State::Built),
        ])
    );
    let source = cairn_app::status::status(&ws, &["inputs/day=mon".to_owned()]).expect("status");
    assert_eq!(source[0].state, State::Source);
    let built = rows
        .iter()
        .find(|row| row.partition.as_str() == "shout/day=tue")
        .expect("a row");
    assert_eq!(built.built_by, Some(1));
    let printed = p.cairn(&["status", "--json"]);
    printed.assert_code(0);
    let json: String = rows
        .iter()
        .map(|row| line(&StatusLine::from(row)))
        .collect();
    assert_eq!(json, printed.stdout);

    // why
    let explanation = cairn_app::status::why(&ws, "summary/day=mon").expect("why");
    assert_eq!(explanation.state, WhyState::Rebuild);
    let printed = p.cairn(&["why", "summary/day=mon", "--json"]);
    assert_eq!(line(&WhyLine::from(&explanation)), printed.stdout);
    let error = cairn_app::status::why(&ws, "nope/day=mon").expect_err("no such dataset");
    assert_eq!(error.exit_code(), 2);

    // history: a failure of shout/day=mon.
    let History::Entries(entries) =
        cairn_app::history::history(&ws, "shout/day=mon").expect("history")
    else {
        panic!("shout/day=mon has a history");
    };
    assert!(
        matches!(&entries[..], [HistoryEntry::Failure(failure)] if failure.exit_code == Some(4)),
        "{entries:?}"
    );
    let printed = p.cairn(&["history", "shout/day=mon", "--json"]);
    let json: String = entries
        .iter()
        .map(|entry| line(&HistoryLine::new("shout/day=mon", entry)))
        .collect();
    assert_eq!(json, printed.stdout);
    assert!(matches!(
        cairn_app::history::history(&ws, "inputs/day=mon").expect("history"),
        History::Source { .. }
    ));

    // log: the events streamed, as JSON lines.
    let mut json = Vec::new();
    let query = EventQuery {
        kinds: vec!["ActionFailed".into(), "ActionSkipped".into()],
        ..EventQuery::default()
    };
    let scanned = cairn_app::events::scan(&ws, &query, &mut |event| {
        EventLine(&event).write(&mut json);
        true
    })
    .expect("scan");
    assert_eq!(scanned, Scanned::Done);
    let printed = p.log(&["--kind", "ActionFailed", "--kind", "ActionSkipped"]);
    assert_eq!(printed.len(), 2);
    let printed = p.cairn(&[
        "log",
        "--json",
        "--kind",
        "ActionFailed",
        "--kind",
        "ActionSkipped",
    ]);
    assert_eq!(String::from_utf8(json).expect("UTF-8"), printed.stdout);

    // logs: the failed run's stdout, verified and streamed.
    let Logs::Run(logs) = cairn_app::logs::logs(&ws, "shout/day=mon", None).expect("logs") else {
        panic!("shout/day=mon ran");
    };
    assert_eq!(logs.run.build, 1);
    assert!(logs.run.error.is_some());
    {
        let mut captured = logs.open(Stream::Stdout).expect("open").expect("stdout");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut captured, &mut text).expect("read");
        assert_eq!((captured.length, text.as_str()), (13, "shouting mon\n"));
    }
    assert!(logs.open(Stream::Stderr).expect("open").is_none());
    drop(logs);

    // store stats and verify
    let stats = cairn_app::maintenance::stats(&ws).expect("stats");
    let printed = p.cairn(&["store", "stats", "--json"]);
    assert_eq!(line(&StatsLine::from(stats.as_ref())), printed.stdout);
    let verification = cairn_app::maintenance::verify(&ws, false, true)
        .expect("verify")
        .expect("a store");
    assert_eq!(verification.problems(), 0);
    let printed = p.cairn(&["store", "verify", "--json"]);
    let json: String = VerifyLine::all(&verification).iter().map(line).collect();
    assert_eq!(json, printed.stdout);

    // invalidate: recorded by whom the caller says.
    let invalidated = cairn_app::invalidate::invalidate(
        &ws,
        &["shout/day=tue".to_owned()],
        "bad feed",
        Some("a server"),
        false,
        true,
    )
    .expect("invalidate");
    assert!(invalidated.recorded.is_some());
    let recorded = p.log(&["--kind", "PartitionInvalidated"]);
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["by"], "a server");
    let rows = cairn_app::status::status(&ws, &["shout/day=tue".to_owned()]).expect("status");
    assert_eq!(rows[0].state, State::Stale);
}
