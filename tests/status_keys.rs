//! `status` computes only the action keys a store record can match
//! (engine/src/evaluate.rs, `evaluate`): an action none of whose outputs
//! an event ever named is "never built" without its key, and the sources
//! only such actions read are listed, not hashed. Held here to the status
//! with every key computed (`Keys::Every`, as `why` evaluates), row for
//! row, on a store where the states differ; and checked to not read those
//! sources.
//!
//! One test in this file: it counts the bytes this process reads
//! (`/proc/self/io`), which another test running beside it would disturb.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use cairn_app::status::{Keys, State, states, status, status_with};
use cairn_app::{Silent, Workspace, WorkspaceOptions};
use cairn_engine::refs::PartitionRef;
use common::Project;

/// Nine days; `shout` records a checkpoint and fails for a day while
/// `fail-DAY` exists; `summary` follows it.
const GRAPH: &str = r#"
[datasets.inputs]
source = "inputs/{day}.txt"

[datasets.shout]

[datasets.summary]

[dimensions.day]
values = ["d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9"]

[jobs.shout]
outputs = ["shout/day={day}"]
inputs = ["inputs/day={day}"]
run = ["sh", "-c", "if [ -f \"fail-$1\" ]; then echo '{\"page\": 7}' > \"$CAIRN_CHECKPOINT.tmp\"; mv \"$CAIRN_CHECKPOINT.tmp\" \"$CAIRN_CHECKPOINT\"; sleep 0.3; exit 4; fi; tr a-z A-Z < \"$CAIRN_IN\" > \"$CAIRN_OUT/text.txt\"", "shout"]
args = ["{day}"]

[jobs.summary]
outputs = ["summary/day={day}"]
inputs = ["shout/day={day}"]
run = ["sh", "-c", "wc -c < \"$CAIRN_IN/text.txt\" > \"$CAIRN_OUT/size.txt\""]
"#;

/// The bytes this process has read so far (`rchar`: every `read`, from
/// the page cache too).
fn bytes_read() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("read /proc/self/io");
    io.lines()
        .find_map(|line| line.strip_prefix("rchar: "))
        .and_then(|value| value.trim().parse().ok())
        .expect("rchar in /proc/self/io")
}

#[test]
fn status_without_the_keys_nothing_can_match_gives_the_full_rows_and_reads_less() {
    let p = Project::with_graph(GRAPH);
    for day in ["d1", "d2", "d3", "d4", "d5", "d9"] {
        p.write(&format!("inputs/{day}.txt"), format!("day {day}\n"));
    }
    // Never built, and large: the fast status must not read them.
    let big = "a line of a large input that no status needs to read\n".repeat(80_000);
    for day in ["d6", "d7"] {
        p.write(&format!("inputs/{day}.txt"), &big);
    }
    // d8's source is missing: blocked, never built.
    p.write("fail-d3", "");
    let requested: Vec<String> = ["d1", "d2", "d3", "d4", "d5", "d9"]
        .iter()
        .flat_map(|day| [format!("shout/day={day}"), format!("summary/day={day}")])
        // summary/day=d1: never built, its input built.
        .filter(|partition| partition != "summary/day=d1")
        .collect();
    let mut args = vec!["build", "--keep-going"];
    args.extend(requested.iter().map(String::as_str));
    p.cairn(&args).assert_code(1);
    // Stale: an input edited; invalidated; a data path deleted (restored);
    // blocked although built: its source removed.
    p.write("inputs/d2.txt", "day two, edited\n");
    p.cairn(&["invalidate", "shout/day=d4", "--reason", "bad batch"])
        .assert_code(0);
    std::fs::remove_dir_all(p.file("data/shout/day=d5")).expect("remove d5's data");
    std::fs::remove_file(p.file("inputs/d9.txt")).expect("remove d9's source");

    let workspace = Workspace::open(
        &WorkspaceOptions {
            graph_file: Some(p.file("cairn.toml")),
            store_dir: None,
        },
        Arc::new(Silent),
    )
    .expect("open the workspace");
    let before = bytes_read();
    let fast = status(&workspace, &[]).expect("status");
    let fast_read = bytes_read() - before;
    let before = bytes_read();
    let full = status_with(&workspace, &[], Keys::Every).expect("status with every key");
    let full_read = bytes_read() - before;

    assert_eq!(fast, full, "the rows differ");
    // What a grid shows: the states alone, the unnamed not evaluated.
    for requests in [
        Vec::new(),
        vec!["shout/day={day}".to_owned()],
        vec![
            "summary/day={day}".to_owned(),
            "inputs/day={day}".to_owned(),
        ],
    ] {
        let rows = status(&workspace, &requests).expect("status");
        let states = states(&workspace, &requests).expect("states");
        let expected: Vec<(PartitionRef, State)> = rows
            .into_iter()
            .map(|row| (row.partition, row.state))
            .collect();
        assert_eq!(states, expected, "the states of {requests:?}");
    }
    // Never named: missing, and nothing planned for them.
    let plans = workspace.plans_made();
    let unnamed = ["shout/day=d6".to_owned(), "summary/day=d7".to_owned()];
    let missing = states(&workspace, &unnamed).expect("states");
    assert_eq!(
        workspace.plans_made(),
        plans,
        "planned for unnamed partitions"
    );
    assert!(
        missing.iter().all(|(_, state)| *state == State::Missing),
        "{missing:?}"
    );
    let source = states(&workspace, &["inputs/day={day}".to_owned()]).expect("states");
    assert!(
        source.iter().all(|(_, state)| *state == State::Source),
        "{source:?}"
    );
    // The store holds every state the fast path must get right.
    let states: HashSet<State> = fast.iter().map(|row| row.state).collect();
    for state in [State::Built, State::Stale, State::Missing, State::Failed] {
        assert!(states.contains(&state), "no {state} row: {fast:#?}");
    }
    let reason = |partition: &str| {
        fast.iter()
            .find(|row| row.partition.as_str() == partition)
            .map(|row| (row.state, row.reason.clone()))
            .unwrap_or_else(|| panic!("no row for {partition}"))
    };
    assert_eq!(reason("shout/day=d1").0, State::Built);
    let (state, why) = reason("shout/day=d2");
    assert_eq!(state, State::Stale);
    assert!(why.contains("inputs/day=d2"), "{why}");
    let (state, why) = reason("shout/day=d3");
    assert_eq!(state, State::Failed);
    assert!(why.contains("resumable from {\"page\": 7}"), "{why}");
    let (state, why) = reason("shout/day=d4");
    assert_eq!(state, State::Stale);
    assert!(
        why.contains("invalidated") && why.contains("bad batch"),
        "{why}"
    );
    let (state, why) = reason("shout/day=d5");
    assert_eq!(state, State::Stale);
    assert!(why.contains("restores it from the store"), "{why}");
    // Never built, its input built: keyed by the full path, not the fast.
    assert_eq!(
        reason("summary/day=d1"),
        (State::Missing, "never built".to_owned())
    );
    assert_eq!(
        reason("shout/day=d6"),
        (State::Missing, "never built".to_owned())
    );
    // Blocked: its source is missing (never built: status says only that).
    assert_eq!(
        reason("shout/day=d8"),
        (State::Missing, "never built".to_owned())
    );
    assert!(reason("shout/day=d9").1.contains("is missing"));

    // The full status hashed d6's and d7's 8 MB; the fast one listed them.
    let large = 2 * big.len() as u64;
    assert!(full_read >= large, "the full status read {full_read} bytes");
    assert!(
        fast_read < large / 4,
        "the fast status read {fast_read} bytes (the full one {full_read})"
    );
}
