//! The headline scenario on a 30-day x 30-station podcast copy (1830
//! actions): a full build, a no-op rebuild, a one-input change, a touch
//! without a content change, and a rebuild from a deleted data directory.

mod common;

use std::time::{Duration, SystemTime};

use common::{Project, clean_ref, daily_ref, raw_ref, refs, snapshot};

const DAYS: u32 = 30;
const STATIONS: u32 = 30;
const TOTAL: u64 = (DAYS * STATIONS * 2 + DAYS) as u64;

#[test]
fn podcast_30x30_builds_once_then_rebuilds_only_what_changed() {
    let p = Project::podcast(DAYS, STATIONS);
    let dates = p.dates();
    let stations = p.stations();
    assert_eq!(dates.len(), 30);
    assert_eq!(stations.len(), 30);
    let all = p.all_refs();
    assert_eq!(all.len() as u64, TOTAL);

    // 1. First build: every action executes, and the data is right.
    let first = p.build(&[]);
    first.assert_code(0);
    first.assert_counts(TOTAL, TOTAL, 0, 0, 0);
    assert_eq!(first.outputs("executed"), all);
    assert!(
        !first.summary()["interrupted"]
            .as_bool()
            .expect("interrupted is a bool")
    );
    for date in &dates {
        for station in &stations {
            assert_eq!(
                p.read(&format!(
                    "data/raw/date={date}/station={station}/reviews.csv"
                )),
                p.read(&format!("inputs/{date}/{station}.txt")),
                "raw {date} {station} is not a copy of its input"
            );
            assert_eq!(
                p.read_string(&format!(
                    "data/clean/date={date}/station={station}/reviews.csv"
                )),
                p.expected_clean(date, station),
                "clean {date} {station}"
            );
        }
        assert_eq!(
            p.read_string(&format!("data/daily/date={date}/summary.csv")),
            p.expected_summary(date),
            "daily summary of {date}"
        );
    }

    // 2. Rebuild with nothing changed: everything is cached, nothing runs.
    let second = p.build(&[]);
    second.assert_code(0);
    second.assert_counts(TOTAL, 0, TOTAL, 0, 0);
    assert_eq!(second.outputs("cached"), all);
    assert!(second.id() > first.id());
    assert!(
        common::of_kind(&p.build_events(second.id()), "ActionStarted").is_empty(),
        "a no-op rebuild started an action"
    );

    // 3. One input changes: exactly its raw, its clean and its day's daily run.
    let before_summary = p.read_string("data/daily/date=2024-01-05/summary.csv");
    p.append("inputs/2024-01-05/S007.txt", "epNEW,5\n");
    let changed = p.build(&[]);
    changed.assert_code(0);
    changed.assert_counts(TOTAL, 3, TOTAL - 3, 0, 0);
    let expected = refs([
        &raw_ref("2024-01-05", "S007"),
        &clean_ref("2024-01-05", "S007"),
        &daily_ref("2024-01-05"),
    ]);
    assert_eq!(changed.outputs("executed"), expected);
    let events = p.build_events(changed.id());
    assert_eq!(
        common::partitions_of_kind(&events, "ActionStarted"),
        expected,
        "ActionStarted events of build {}",
        changed.id()
    );
    let after_summary = p.read_string("data/daily/date=2024-01-05/summary.csv");
    assert_eq!(after_summary, p.expected_summary("2024-01-05"));
    assert_ne!(after_summary, before_summary);
    assert_eq!(
        p.read_string("data/clean/date=2024-01-05/station=S007/reviews.csv"),
        p.expected_clean("2024-01-05", "S007")
    );
    assert!(
        p.read_string("data/clean/date=2024-01-05/station=S007/reviews.csv")
            .ends_with("S007,epNEW,5\n")
    );

    // 4a. Touch an input (mtime one hour ahead, same content): nothing runs.
    let touched = p.file("inputs/2024-01-05/S007.txt");
    std::fs::File::options()
        .write(true)
        .open(&touched)
        .expect("open the input")
        .set_modified(SystemTime::now() + Duration::from_secs(3600))
        .expect("set mtime");
    let after_touch = p.build(&[]);
    after_touch.assert_code(0);
    after_touch.assert_counts(TOTAL, 0, TOTAL, 0, 0);
    assert_eq!(after_touch.outputs("cached"), all);

    // 4b. Rewrite identical bytes into another input: nothing runs either.
    let rel = "inputs/2024-01-17/S023.txt";
    let bytes = p.read(rel);
    p.write(rel, &bytes);
    let after_rewrite = p.build(&[]);
    after_rewrite.assert_code(0);
    after_rewrite.assert_counts(TOTAL, 0, TOTAL, 0, 0);

    // 5. Delete the whole data directory: everything comes back from the
    //    store, byte for byte, without running a job.
    let data = p.file("data");
    let before = snapshot(&data);
    assert_eq!(
        before.len() as u64,
        TOTAL,
        "one file per partition under data/"
    );
    std::fs::remove_dir_all(&data).expect("rm -rf data");
    let restored = p.build(&[]);
    restored.assert_code(0);
    restored.assert_counts(TOTAL, 0, TOTAL, 0, 0);
    assert_eq!(restored.outputs("restored"), all);
    assert!(
        common::of_kind(&p.build_events(restored.id()), "ActionStarted").is_empty(),
        "restoring started an action"
    );
    let after = snapshot(&data);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &before {
        assert!(
            after[path] == *bytes,
            "data/{path} differs after the restore"
        );
    }
}
