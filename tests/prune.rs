//! Partitions orphaned when a dimension shrinks (docs/cli.md, `status` and
//! `prune`): `status` lists them as `orphaned`, builds leave them alone,
//! `prune` removes their data and records why, and a replay of the log
//! rebuilds the same projections.

mod common;

use std::collections::BTreeSet;

use common::{Project, clean_ref, daily_ref, raw_ref, refs};

/// A built 2-day x 3-station podcast copy whose station dimension then
/// loses S003.
fn shrunk() -> Project {
    let p = Project::podcast(2, 3);
    p.build(&[]).assert_code(0);
    let graph = p.read_string("cairn.toml");
    let shrunk = graph.replace(
        "values = [\"S001\", \"S002\", \"S003\"]",
        "values = [\"S001\", \"S002\"]",
    );
    assert_ne!(shrunk, graph);
    p.write("cairn.toml", shrunk);
    p
}

fn orphans() -> BTreeSet<String> {
    refs([
        &raw_ref("2024-01-01", "S003"),
        &raw_ref("2024-01-02", "S003"),
        &clean_ref("2024-01-01", "S003"),
        &clean_ref("2024-01-02", "S003"),
    ])
}

fn orphaned(p: &Project) -> BTreeSet<String> {
    p.status(&[])
        .into_iter()
        .filter(|(_, (state, _))| state == "orphaned")
        .map(|(partition, _)| partition)
        .collect()
}

#[test]
fn status_flags_orphans_and_prune_removes_them_with_a_recorded_reason() {
    let p = shrunk();
    let build = p.build(&[]);
    build.assert_code(0);
    // The dailies re-run without S003; nothing else.
    assert_eq!(
        build.outputs("executed"),
        refs([&daily_ref("2024-01-01"), &daily_ref("2024-01-02")])
    );
    assert_eq!(orphaned(&p), orphans());
    let status = p.status(&[]);
    let (_, reason) = &status[&clean_ref("2024-01-01", "S003")];
    assert!(reason.contains("no longer declares it"), "{reason}");
    let human = p.cairn(&["status"]);
    assert!(human.stderr.contains(", 4 orphaned"), "{}", human.stderr);

    // A dry run lists them and changes nothing.
    let events = p.log(&[]).len();
    let dry = p.cairn(&["prune", "--dry-run", "--reason", "S003 retired"]);
    dry.assert_code(0);
    let listed: BTreeSet<String> = dry.stdout.lines().map(str::to_owned).collect();
    assert_eq!(listed, orphans());
    assert_eq!(p.log(&[]).len(), events);
    for partition in orphans() {
        assert!(p.file(&format!("data/{partition}")).is_dir(), "{partition}");
    }

    // A reason is required.
    p.cairn(&["prune"]).assert_code(2);
    p.cairn(&["prune", "--reason", " "])
        .assert_usage_error("--reason must say why");

    let pruned = p.cairn(&["prune", "--reason", "S003 retired"]);
    pruned.assert_code(0);
    let listed: BTreeSet<String> = pruned.stdout.lines().map(str::to_owned).collect();
    assert_eq!(listed, orphans());
    for partition in orphans() {
        assert!(
            !p.file(&format!("data/{partition}")).exists(),
            "{partition}"
        );
    }
    assert!(
        p.file(&format!("data/{}", clean_ref("2024-01-01", "S001")))
            .is_dir()
    );
    assert_eq!(orphaned(&p), BTreeSet::new());
    let recorded = p.log(&["--kind", "PartitionPruned"]);
    assert_eq!(recorded.len(), 4);
    assert!(
        recorded
            .iter()
            .all(|event| event["reason"] == "S003 retired")
    );
    let partitions: BTreeSet<String> = recorded
        .iter()
        .map(|event| event["partition"].as_str().expect("partition").to_owned())
        .collect();
    assert_eq!(partitions, orphans());
    // The projections are what a replay of the log gives.
    p.cairn(&["replay", "--check"]).assert_code(0);
    // Nothing left to prune, and the next build does nothing.
    let again = p.cairn(&["prune", "--reason", "again"]);
    again.assert_code(0);
    assert_eq!(again.stdout, "");
    p.build(&[]).assert_counts(10, 0, 10, 0, 0);

    // Declared again: built again (its data is gone).
    let graph = p.read_string("cairn.toml");
    p.write(
        "cairn.toml",
        graph.replace(
            "values = [\"S001\", \"S002\"]",
            "values = [\"S001\", \"S002\", \"S003\"]",
        ),
    );
    let rebuilt = p.build(&[]);
    rebuilt.assert_code(0);
    // Its content is in the store still: restored, not run again.
    assert!(
        rebuilt
            .outputs("restored")
            .contains(&clean_ref("2024-01-01", "S003")),
        "{:?}",
        rebuilt.actions()
    );
    assert!(
        p.file(&format!(
            "data/{}/reviews.csv",
            clean_ref("2024-01-01", "S003")
        ))
        .is_file()
    );
}
