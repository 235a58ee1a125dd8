//! Declarative fan-in (docs/graph-file.md, "Fan-in"): the podcast's daily
//! reads every station of the station dimension, with no configure step and
//! no list of its own, and a rolling window reads the days before its own.

mod common;

use common::{Project, clean_ref, daily_ref, raw_ref, refs};

#[test]
fn the_daily_fans_in_every_station_and_a_new_station_reruns_only_what_it_must() {
    let p = Project::podcast(2, 2);
    let first = p.build(&[]);
    first.assert_code(0);
    first.assert_counts(10, 10, 0, 0, 0);
    assert!(!p.file("stations.txt").exists());
    for date in ["2024-01-01", "2024-01-02"] {
        assert_eq!(
            p.read_string(&format!("data/{}/summary.csv", daily_ref(date))),
            p.expected_summary(date)
        );
    }
    // The daily sees its inputs in the dimension's order.
    let plan = p.cairn(&["plan", "--format", "json", &daily_ref("2024-01-01")]);
    plan.assert_code(0);
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).expect("plan JSON");
    let daily = plan["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .find(|action| action["job"] == "daily")
        .expect("the daily action");
    let inputs: Vec<&str> = daily["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|input| input["ref"].as_str().expect("an input ref"))
        .collect();
    assert_eq!(
        inputs,
        [
            clean_ref("2024-01-01", "S001"),
            clean_ref("2024-01-01", "S002")
        ]
    );

    // A station added to the graph file (and its input files).
    p.write("inputs/2024-01-01/S003.txt", "ep0001,5\nep0002,3\n");
    p.write("inputs/2024-01-02/S003.txt", "ep0003,4\n");
    let graph = p.read_string("cairn.toml");
    let added = graph.replace(
        "values = [\"S001\", \"S002\"]",
        "values = [\"S001\", \"S002\", \"S003\"]",
    );
    assert_ne!(added, graph);
    p.write("cairn.toml", added);
    let second = p.build(&[]);
    second.assert_code(0);
    second.assert_counts(14, 6, 8, 0, 0);
    assert_eq!(
        second.outputs("executed"),
        refs([
            &raw_ref("2024-01-01", "S003"),
            &raw_ref("2024-01-02", "S003"),
            &clean_ref("2024-01-01", "S003"),
            &clean_ref("2024-01-02", "S003"),
            &daily_ref("2024-01-01"),
            &daily_ref("2024-01-02"),
        ])
    );
    for date in ["2024-01-01", "2024-01-02"] {
        let summary = p.read_string(&format!("data/{}/summary.csv", daily_ref(date)));
        assert_eq!(summary, p.expected_summary(date));
        assert!(summary.contains("\nS003,"), "{summary}");
    }
    // Nothing left to do.
    p.build(&[]).assert_counts(14, 0, 14, 0, 0);
}

const ROLLING: &str = r#"
[datasets.counts]
source = "counts/{date}.txt"
[datasets.week]
[dimensions.date]
start = "2024-01-01"
end = "2024-01-10"
[jobs.week]
outputs = ["week/date={date}"]
inputs = ["counts/date={date}"]
over.date = { window = [-6, 0] }
run = ["sh", "-c", "i=0; while [ $i -lt $CAIRN_INPUT_COUNT ]; do eval cat \\\"\\$CAIRN_INPUT_$i\\\"; i=$((i+1)); done > \"$CAIRN_OUT/days\""]
"#;

#[test]
fn a_rolling_window_reads_the_days_up_to_its_own() {
    let p = Project::with_graph(ROLLING);
    for day in 1..=10 {
        p.write(&format!("counts/2024-01-{day:02}.txt"), format!("{day}\n"));
    }
    let first = p.build(&[]);
    first.assert_code(0);
    first.assert_counts(10, 10, 0, 0, 0);
    assert_eq!(p.read_string("data/week/date=2024-01-01/days"), "1\n");
    assert_eq!(p.read_string("data/week/date=2024-01-03/days"), "1\n2\n3\n");
    assert_eq!(
        p.read_string("data/week/date=2024-01-10/days"),
        "4\n5\n6\n7\n8\n9\n10\n"
    );
    // A day's input changes: the seven windows that hold it re-run.
    p.write("counts/2024-01-04.txt", "four\n");
    let second = p.build(&[]);
    second.assert_code(0);
    let expected: Vec<String> = (4..=10)
        .map(|day| format!("week/date=2024-01-{day:02}"))
        .collect();
    assert_eq!(second.outputs("executed"), expected.into_iter().collect());
}

#[test]
fn an_input_placeholder_without_a_dimension_is_refused_saying_how_to_fan_in() {
    let p = Project::podcast(1, 1);
    let graph = p.read_string("cairn.toml");
    p.write(
        "cairn.toml",
        graph.replace(
            "station={station}\"]\nrun = [\"sh\", \"jobs/daily.sh\"",
            "station={feed}\"]\nrun = [\"sh\", \"jobs/daily.sh\"",
        ),
    );
    let run = p.cairn(&["build"]);
    run.assert_usage_error(
        "jobs.daily.inputs: {feed} is not a placeholder of the outputs (daily/date={date}) and there is no [dimensions.feed] to fan in over: add {feed} to the outputs, declare [dimensions.feed] to read every one of its values, or say which values with `over.feed = { dimension = \"...\" }`",
    );
}
