//! The golden store: `fixtures/golden-store/.cairn`, written once (in store
//! format 1) by `fixtures/golden-store/regenerate` and committed. These tests read it
//! with today's code, so a change of the store format that would strand
//! existing stores fails here. Do not "fix" a failure by regenerating the
//! store: add a decoding path for the old format (encoding.rs), and
//! regenerate only together with a deliberate FORMAT_VERSION bump.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cairn_engine::record::{Event, EventKind};
use cairn_engine::{ContentDigest, PartitionRef};

use super::*;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/golden-store/.cairn")
}

fn open_golden() -> Store {
    Store::open(&golden_dir(), OpenMode::ReadOnly, &mut |message: &str| {
        panic!("unexpected wait: {message}")
    })
    .unwrap_or_else(|error| panic!("the golden store does not open: {error}"))
}

fn all_events(store: &Store) -> Vec<Event> {
    let mut events = Vec::new();
    store
        .catalog()
        .scan_events(1, &mut |event| {
            events.push(event);
            true
        })
        .unwrap();
    events
}

fn partition(text: &str) -> PartitionRef {
    PartitionRef::parse(text).unwrap()
}

fn digest(hex: &str) -> ContentDigest {
    hex.parse().unwrap()
}

/// A copy of the golden store in a temporary directory, to open for writing.
fn copy_golden() -> (tempfile::TempDir, PathBuf) {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(".cairn");
    copy(&golden_dir(), &dir);
    (root, dir)
}

#[test]
fn every_event_of_the_golden_store_decodes() {
    let store = open_golden();
    let events = all_events(&store);
    assert_eq!(events.len(), 65);
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event.seq, index as u64 + 1);
    }
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for event in &events {
        *kinds.entry(event.kind.name()).or_default() += 1;
    }
    let expected: BTreeMap<&str, usize> = [
        ("ActionCached", 15),
        ("ActionFailed", 2),
        ("ActionStarted", 9),
        ("ActionSucceeded", 7),
        ("BuildFinished", 6),
        ("BuildRequested", 6),
        ("DatasetVersionChanged", 2),
        ("PartitionInvalidated", 1),
        ("PartitionMaterialized", 11),
        ("Planned", 6),
    ]
    .into_iter()
    .collect();
    assert_eq!(kinds, expected);
    assert_eq!(events.last().unwrap().build, 7);
    let EventKind::PartitionInvalidated { reason, by, .. } = &events[36].kind else {
        panic!("event 37 is {:?}", events[36].kind)
    };
    assert_eq!(
        (reason.as_str(), by.as_deref()),
        ("golden: invalidated", Some("golden"))
    );
}

#[test]
fn the_golden_projections_hold_the_known_facts() {
    let store = open_golden();
    let catalog = store.catalog();
    let stats = catalog.stats().unwrap();
    assert_eq!(
        (stats.events, stats.builds, stats.actions, stats.partitions),
        (65, 7, 6, 4)
    );
    assert_eq!(stats.materialized, 4);
    assert_eq!(
        catalog.dataset_versions().unwrap(),
        [("upper".to_owned(), "1.1.0".to_owned())]
            .into_iter()
            .collect()
    );
    // Partition digests are content-only (the cairn/partition/v1 recipe):
    // they pin both the stored bytes and the recipe.
    let lines = digest("44ce224f5ca44ed4b0a5be9332a456fc5126033ecd46a968353b580e4ea2e014");
    for (text, expected) in [
        ("count/day=mon", lines),
        ("count/day=tue", lines),
        (
            "upper/day=tue",
            digest("cae2e5b4806cd1e976cff6ed852eb5d78ffc4c9315850f7ed132b523148209c5"),
        ),
        (
            "upper/day=mon",
            digest("5face4ec88df65787e6ce9779f036f899441821234d773deab393d2adb1d73f9"),
        ),
    ] {
        let state = catalog.partition(&partition(text)).unwrap().unwrap();
        let current = state.current.unwrap();
        assert_eq!(current.digest, expected, "{text}");
        assert_eq!(current.build, 7, "{text}: restored by the last build");
        assert_eq!(state.invalidated, None);
        assert_eq!(state.failed, None);
        let manifest = catalog.action(&current.key).unwrap().unwrap();
        assert_eq!(manifest.outputs[0].digest, expected);
    }
    // The blobs hold what the jobs wrote, and read back verified.
    let upper_mon = catalog.partition(&partition("upper/day=mon")).unwrap();
    let manifest = catalog
        .action(&upper_mon.unwrap().current.unwrap().key)
        .unwrap()
        .unwrap();
    assert_eq!(manifest.build, 5);
    assert_eq!(
        manifest.versions,
        [("upper".to_owned(), "1.0.0".to_owned())]
    );
    let text = store.blobs().read(&manifest.outputs[0].files[0].digest);
    assert_eq!(text.unwrap(), b"ALPHA\nBETA\n");
    // Format 1 recorded no mode: a file reads as what restores gave it then.
    let file = &manifest.outputs[0].files[0];
    assert_eq!((file.executable, file.mode), (false, 0o644));
    assert_eq!(
        store.blobs().read(&manifest.stdout.unwrap()).unwrap(),
        b"upper mon\n"
    );
    // The failure of build 1 kept its stderr.
    let mut failures = Vec::new();
    catalog
        .partition_events(&partition("count/day=mon"), 1, &mut |event| {
            if let EventKind::ActionFailed { stderr, .. } = event.kind {
                failures.push((event.build, stderr));
            }
            true
        })
        .unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, 1);
    assert_eq!(
        store.blobs().read(&failures[0].1.unwrap()).unwrap(),
        b"no ok file\n"
    );
    // Every blob is intact and every projection equals a replay of the log.
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.blobs, 8);
    assert_eq!(catalog.replay_check().unwrap(), Vec::<String>::new());
}

#[test]
fn todays_writer_opens_the_golden_store_and_appends() {
    let (_root, dir) = copy_golden();
    let reader = Store::open(&dir, OpenMode::ReadOnly, &mut |_: &str| {}).unwrap();
    assert_eq!(reader.catalog().format_version().unwrap(), 1);
    drop(reader);
    let mut store = Store::open(&dir, OpenMode::Write { wait: false }, &mut |_: &str| {}).unwrap();
    assert!(store.check_catalog_integrity().unwrap());
    // The writer will add records of today's format: older cairns must now
    // refuse the store.
    assert_eq!(
        store.catalog().format_version().unwrap(),
        u64::from(FORMAT_VERSION)
    );
    assert_eq!(
        store.catalog().replay_check().unwrap(),
        Vec::<String>::new()
    );
    let build = store.catalog().next_build_id().unwrap();
    assert_eq!(build, 8);
    let seq = store
        .catalog()
        .append(
            build,
            vec![EventKind::PartitionInvalidated {
                partition: partition("count/day=tue"),
                reason: "appended by today's cairn".into(),
                by: None,
            }],
            Vec::new(),
        )
        .unwrap();
    assert_eq!(seq, 66);
    assert_eq!(
        store.catalog().replay_check().unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn a_store_of_a_newer_format_is_refused_clearly() {
    let (_root, dir) = copy_golden();
    {
        const META: redb::TableDefinition<'_, &str, u64> = redb::TableDefinition::new("meta");
        let database = redb::Builder::new()
            .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
            .open(dir.join("catalog.redb"))
            .unwrap();
        let transaction = database.begin_write().unwrap();
        transaction
            .open_table(META)
            .unwrap()
            .insert("format", u64::from(FORMAT_VERSION) + 1)
            .unwrap();
        transaction.commit().unwrap();
    }
    let expected = format!(
        "store {} was written by a newer cairn (format {}, this cairn reads up to {})",
        dir.join("catalog.redb").display(),
        FORMAT_VERSION + 1,
        FORMAT_VERSION
    );
    for mode in [OpenMode::ReadOnly, OpenMode::Write { wait: false }] {
        let Err(error) = Store::open(&dir, mode, &mut |_: &str| {}) else {
            panic!("a newer store was opened ({mode:?})")
        };
        assert!(matches!(error, StoreError::NewerFormat { .. }), "{error}");
        assert_eq!(error.to_string(), expected);
    }
}
