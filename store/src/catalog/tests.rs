//! Tests of the redb catalog: the log, the projections, the stat cache,
//! formats and replay.

use cairn_engine::ContentDigest;
use cairn_engine::record::{BuildCounts, Materialization};

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.redb");
        Fixture { _dir: dir, path }
    }

    fn writer(&self) -> RedbCatalog {
        RedbCatalog::open_writer(&self.path, true).unwrap()
    }

    fn reader(&self) -> RedbCatalog {
        match RedbCatalog::open_reader(&self.path).unwrap() {
            ReaderOpen::Opened(catalog) => catalog,
            ReaderOpen::NeedsRecovery => panic!("catalog needs recovery"),
        }
    }

    /// Changes the raw database behind the catalog's back (no catalog open).
    fn tamper(&self, change: impl FnOnce(&redb::WriteTransaction)) {
        let database = Builder::new()
            .set_concurrency_mode(ConcurrencyMode::SingleWriter)
            .open(&self.path)
            .unwrap();
        let transaction = database.begin_write().unwrap();
        change(&transaction);
        transaction.commit().unwrap();
    }
}

fn partition(text: &str) -> PartitionRef {
    PartitionRef::parse(text).unwrap()
}

fn manifest(key: ActionKey, output: &str) -> Manifest {
    Manifest {
        key,
        job: "clean".into(),
        outputs: Vec::new(),
        inputs: Vec::new(),
        code_digest: None,
        versions: vec![("clean".into(), "1.0.0".into())],
        build: 1,
        started_ms: 10,
        finished_ms: 20,
        stdout: Some(ContentDigest::of(output.as_bytes())),
        stderr: None,
        command: None,
    }
}

fn materialized(text: &str, key: ActionKey, content: &[u8]) -> EventKind {
    EventKind::PartitionMaterialized {
        partition: partition(text),
        digest: ContentDigest::of(content),
        key,
    }
}

fn failed(text: &str, error: &str) -> EventKind {
    EventKind::ActionFailed {
        key: Some(ActionKey([9; 32])),
        job: "clean".into(),
        outputs: vec![partition(text)],
        error: error.into(),
        exit_code: Some(1),
        stdout: None,
        stderr: None,
    }
}

fn invalidated(text: &str, reason: &str) -> EventKind {
    EventKind::PartitionInvalidated {
        partition: partition(text),
        reason: reason.into(),
        by: Some("tester".into()),
    }
}

fn planned() -> EventKind {
    EventKind::Planned {
        actions: 1,
        sources: 0,
    }
}

fn all_events(catalog: &RedbCatalog, from: u64) -> Vec<Event> {
    let mut events = Vec::new();
    catalog
        .scan_events(from, &mut |event| {
            events.push(event);
            true
        })
        .unwrap();
    events
}

#[test]
fn seqs_stay_consecutive_across_reopen() {
    let fixture = Fixture::new();
    let catalog = fixture.writer();
    assert_eq!(catalog.last_seq().unwrap(), 0);
    assert_eq!(catalog.next_build_id().unwrap(), 1);
    assert_eq!(
        catalog
            .append(1, vec![planned(), planned(), planned()], Vec::new())
            .unwrap(),
        3
    );
    drop(catalog);

    let catalog = fixture.writer();
    assert_eq!(catalog.next_build_id().unwrap(), 2);
    let finished = EventKind::BuildFinished {
        counts: BuildCounts::default(),
        interrupted: false,
    };
    assert_eq!(
        catalog
            .append(2, vec![planned(), finished.clone()], Vec::new())
            .unwrap(),
        5
    );
    assert_eq!(catalog.append(2, Vec::new(), Vec::new()).unwrap(), 5);
    assert_eq!(catalog.last_seq().unwrap(), 5);

    let events = all_events(&catalog, 1);
    let seqs: Vec<u64> = events.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    let builds: Vec<u64> = events.iter().map(|event| event.build).collect();
    assert_eq!(builds, [1, 1, 1, 2, 2]);
    assert_eq!(events[4].kind, finished);
    assert!(events.iter().all(|event| event.time_ms > 1_600_000_000_000));

    let tail: Vec<u64> = all_events(&catalog, 4)
        .iter()
        .map(|event| event.seq)
        .collect();
    assert_eq!(tail, [4, 5]);
    let mut first_two = Vec::new();
    catalog
        .scan_events(1, &mut |event| {
            first_two.push(event.seq);
            first_two.len() < 2
        })
        .unwrap();
    assert_eq!(first_two, [1, 2]);
}

#[test]
fn projections_follow_the_log() {
    let fixture = Fixture::new();
    let catalog = fixture.writer();
    let target = "clean/date=2024-01-01";
    let first_key = ActionKey([1; 32]);
    let second_key = ActionKey([2; 32]);

    catalog
        .append(
            1,
            vec![
                EventKind::ActionSucceeded {
                    manifest: manifest(first_key, "first"),
                },
                materialized(target, first_key, b"first"),
            ],
            Vec::new(),
        )
        .unwrap();
    assert_eq!(
        catalog.action(&first_key).unwrap(),
        Some(manifest(first_key, "first"))
    );
    assert_eq!(catalog.action(&second_key).unwrap(), None);
    let expected_current = Materialization {
        key: first_key,
        digest: ContentDigest::of(b"first"),
        build: 1,
        seq: 2,
    };
    let state = catalog.partition(&partition(target)).unwrap().unwrap();
    assert_eq!(state.current.as_ref(), Some(&expected_current));
    assert_eq!((state.invalidated, state.failed), (None, None));

    catalog
        .append(2, vec![invalidated(target, "bad input")], Vec::new())
        .unwrap();
    drop(catalog);
    let catalog = fixture.writer();
    catalog
        .append(3, vec![failed(target, "exit status 1")], Vec::new())
        .unwrap();
    let state = catalog.partition(&partition(target)).unwrap().unwrap();
    assert_eq!(state.current.as_ref(), Some(&expected_current));
    assert_eq!(
        state.invalidated.as_ref().map(|i| i.reason.as_str()),
        Some("bad input")
    );
    assert_eq!(state.failed, Some((3, "exit status 1".into())));

    // A failure or invalidation of a partition never built creates its state.
    catalog
        .append(
            3,
            vec![
                failed("clean/date=2024-01-02", "boom"),
                invalidated("clean/date=2024-01-03", "why"),
            ],
            Vec::new(),
        )
        .unwrap();
    let never_built = catalog
        .partition(&partition("clean/date=2024-01-02"))
        .unwrap()
        .unwrap();
    assert_eq!(never_built.current, None);
    assert_eq!(never_built.failed, Some((3, "boom".into())));

    let last = catalog
        .append(
            4,
            vec![
                EventKind::ActionSucceeded {
                    manifest: manifest(second_key, "second"),
                },
                materialized(target, second_key, b"second"),
            ],
            Vec::new(),
        )
        .unwrap();
    let state = catalog.partition(&partition(target)).unwrap().unwrap();
    assert_eq!(
        state.current,
        Some(Materialization {
            key: second_key,
            digest: ContentDigest::of(b"second"),
            build: 4,
            seq: last,
        })
    );
    assert_eq!((state.invalidated, state.failed), (None, None));
    assert_eq!(catalog.partition(&partition("other/x=1")).unwrap(), None);
    assert_eq!(catalog.replay_check().unwrap(), Vec::<String>::new());
}

#[test]
fn stat_cache_round_trips_and_is_overwritten() {
    let fixture = Fixture::new();
    let catalog = fixture.writer();
    let entry = StatEntry {
        size: 5,
        mtime_ns: 1_700_000_000_123_456_789,
        ctime_ns: 1_700_000_000_123_456_790,
        inode: 77,
        recorded_ns: 1_700_000_001_000_000_000,
        digest: ContentDigest::of(b"hello"),
    };
    catalog
        .append(1, Vec::new(), vec![("/data/in.txt".into(), entry)])
        .unwrap();
    assert_eq!(catalog.stat("/data/in.txt").unwrap(), Some(entry));
    assert_eq!(catalog.stat("/data/other.txt").unwrap(), None);

    let newer = StatEntry { size: 6, ..entry };
    catalog
        .append(2, vec![planned()], vec![("/data/in.txt".into(), newer)])
        .unwrap();
    drop(catalog);
    assert_eq!(fixture.writer().stat("/data/in.txt").unwrap(), Some(newer));
}

#[test]
fn a_newer_format_is_refused() {
    let fixture = Fixture::new();
    drop(fixture.writer());
    let newer = u64::from(FORMAT_VERSION) + 1;
    fixture.tamper(|transaction| {
        let mut meta = transaction.open_table(META).unwrap();
        meta.insert(META_FORMAT, newer).unwrap();
    });
    let expected = format!(
        "store {} was written by a newer cairn (format {newer}, this cairn reads up to {FORMAT_VERSION})",
        fixture.path.display()
    );
    let Err(error) = RedbCatalog::open_writer(&fixture.path, true) else {
        panic!("a newer format was opened for writing")
    };
    assert!(matches!(error, StoreError::NewerFormat { found, .. } if u64::from(found) == newer));
    assert_eq!(error.to_string(), expected);
    let Err(error) = RedbCatalog::open_reader(&fixture.path) else {
        panic!("a newer format was opened for reading")
    };
    assert_eq!(error.to_string(), expected);
}

#[test]
fn a_writer_marks_an_older_store_with_its_format() {
    let fixture = Fixture::new();
    drop(fixture.writer());
    fixture.tamper(|transaction| {
        let mut meta = transaction.open_table(META).unwrap();
        meta.insert(META_FORMAT, 1).unwrap();
    });
    assert_eq!(fixture.reader().format_version().unwrap(), 1);
    assert_eq!(
        fixture.writer().format_version().unwrap(),
        u64::from(FORMAT_VERSION)
    );
}

#[test]
fn replay_check_finds_tampered_projections() {
    let fixture = Fixture::new();
    let catalog = fixture.writer();
    let key = ActionKey([1; 32]);
    catalog
        .append(
            1,
            vec![
                EventKind::ActionSucceeded {
                    manifest: manifest(key, "out"),
                },
                materialized("clean/date=2024-01-01", key, b"a"),
                materialized("clean/date=2024-01-02", key, b"b"),
            ],
            Vec::new(),
        )
        .unwrap();
    assert!(catalog.replay_check().unwrap().is_empty());
    drop(catalog);

    let forged = PartitionState {
        current: None,
        invalidated: Some(cairn_engine::record::Invalidation {
            reason: "forged".into(),
            by: None,
            time_ms: 0,
            seq: 0,
        }),
        failed: None,
    };
    fixture.tamper(|transaction| {
        let mut partitions = transaction.open_table(PARTITIONS).unwrap();
        partitions
            .insert(
                "clean/date=2024-01-01",
                encode_partition_state(&forged).as_slice(),
            )
            .unwrap();
        partitions.remove("clean/date=2024-01-02").unwrap();
        partitions
            .insert("clean/date=2024-01-09", [1u8, 0xff].as_slice())
            .unwrap();
        let mut actions = transaction.open_table(ACTIONS).unwrap();
        actions.remove(&key.0).unwrap();
    });

    let found = fixture.reader().replay_check().unwrap();
    assert_eq!(found.len(), 4, "{found:#?}");
    let mentions = |needle: &str| found.iter().any(|line| line.contains(needle));
    assert!(mentions("partition clean/date=2024-01-09: the record"));
    assert!(mentions(&format!(
        "action {key}: the log produces it but the live table does not have it"
    )));
    assert!(mentions(
        "partition clean/date=2024-01-01: the live table has PartitionState"
    ));
    assert!(mentions(
        "partition clean/date=2024-01-02: the log produces it but the live table does not have it"
    ));
}

#[test]
fn an_undecodable_event_is_reported_with_its_seq() {
    let fixture = Fixture::new();
    fixture
        .writer()
        .append(1, vec![planned(), planned()], Vec::new())
        .unwrap();
    fixture.tamper(|transaction| {
        let mut events = transaction.open_table(EVENTS).unwrap();
        events.insert(2, [1u8, 0xff, 0xff].as_slice()).unwrap();
    });
    let catalog = fixture.writer();
    let error = catalog.scan_events(1, &mut |_| true).unwrap_err();
    assert!(
        error.to_string().contains("event 2 does not decode"),
        "{error}"
    );
    assert!(catalog.replay_check().is_err());
    // The first event is still delivered before the bad one is reached.
    let mut seen = Vec::new();
    let _ = catalog.scan_events(1, &mut |event| {
        seen.push(event.seq);
        true
    });
    assert_eq!(seen, [1]);
}

#[test]
fn a_failed_append_leaves_the_catalog_as_it_was() {
    let fixture = Fixture::new();
    fixture
        .writer()
        .append(1, vec![planned()], Vec::new())
        .unwrap();
    fixture.tamper(|transaction| {
        let mut partitions = transaction.open_table(PARTITIONS).unwrap();
        partitions
            .insert("clean/date=2024-01-01", [0u8].as_slice())
            .unwrap();
    });
    let catalog = fixture.writer();
    let error = catalog
        .append(
            2,
            vec![planned(), invalidated("clean/date=2024-01-01", "x")],
            Vec::new(),
        )
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("partition clean/date=2024-01-01: the record has unknown format byte 0"),
        "{error}"
    );
    assert_eq!(catalog.last_seq().unwrap(), 1);
}

#[test]
fn a_reader_follows_the_writer_and_cannot_write() {
    let fixture = Fixture::new();
    let writer = fixture.writer();
    writer.append(1, vec![planned()], Vec::new()).unwrap();
    let reader = fixture.reader();
    assert!(reader.is_read_only());
    assert_eq!(reader.last_seq().unwrap(), 1);
    writer.append(1, vec![planned()], Vec::new()).unwrap();
    assert_eq!(reader.last_seq().unwrap(), 2);
    assert_eq!(all_events(&reader, 1).len(), 2);

    let error = reader.append(1, vec![planned()], Vec::new()).unwrap_err();
    assert!(error.to_string().contains("opened read-only"), "{error}");
    assert!(reader.next_build_id().is_err());
    assert_eq!(writer.last_seq().unwrap(), 2);
}

#[test]
fn integrity_check_passes_on_a_healthy_catalog() {
    let fixture = Fixture::new();
    let mut catalog = fixture.writer();
    catalog.append(1, vec![planned()], Vec::new()).unwrap();
    assert!(catalog.check_integrity().unwrap());
    assert!(fixture.reader().check_integrity().is_err());
}

/// A log touching several partitions: a success, a failure, an
/// invalidation, a cached reuse and a version change.
fn audit_log(catalog: &RedbCatalog) {
    let key = ActionKey([1; 32]);
    let mut manifest = manifest(key, "out");
    manifest.outputs = vec![cairn_engine::record::OutputRecord {
        partition: partition("clean/date=2024-01-01"),
        digest: ContentDigest::of(b"a"),
        files: Vec::new(),
    }];
    catalog
        .append(
            1,
            vec![
                planned(),
                EventKind::DatasetVersionChanged {
                    dataset: "clean".into(),
                    from: None,
                    to: Some("1.0.0".into()),
                },
                EventKind::ActionStarted {
                    key,
                    job: "clean".into(),
                    outputs: vec![partition("clean/date=2024-01-01")],
                    reason: "never built".into(),
                    attempt: 1,
                    resumed_from: None,
                },
                EventKind::ActionSucceeded { manifest },
                materialized("clean/date=2024-01-01", key, b"a"),
                failed("clean/date=2024-01-02", "boom"),
            ],
            Vec::new(),
        )
        .unwrap();
    catalog
        .append(
            2,
            vec![
                invalidated("clean/date=2024-01-01", "bad"),
                EventKind::ActionCached {
                    key,
                    job: "clean".into(),
                    outputs: vec![partition("clean/date=2024-01-01")],
                    built_by: 1,
                    restored: true,
                    remote: None,
                },
                materialized("clean/date=2024-01-01", key, b"a"),
                planned(),
            ],
            Vec::new(),
        )
        .unwrap();
}

fn seqs_of(catalog: &RedbCatalog, text: &str, from: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    catalog
        .partition_events(&partition(text), from, &mut |event| {
            seqs.push(event.seq);
            true
        })
        .unwrap();
    seqs
}

#[test]
fn a_build_id_is_stored_by_the_first_append_that_carries_it() {
    let fixture = Fixture::new();
    let catalog = fixture.writer();
    assert_eq!(catalog.next_build_id().unwrap(), 1);
    assert_eq!(
        catalog.next_build_id().unwrap(),
        2,
        "one handle never repeats"
    );
    drop(catalog);
    // Nothing carried 1 or 2: a crash or exit here leaves no trace of them.
    let catalog = fixture.writer();
    assert_eq!(catalog.last_build_id().unwrap(), 0);
    assert_eq!(catalog.next_build_id().unwrap(), 1);
    catalog.append(1, vec![planned()], Vec::new()).unwrap();
    drop(catalog);
    let catalog = fixture.writer();
    assert_eq!(catalog.last_build_id().unwrap(), 1);
    assert_eq!(catalog.next_build_id().unwrap(), 2);
}

#[test]
fn partition_events_come_from_the_index_and_match_a_scan() {
    let fixture = Fixture::new();
    let catalog = fixture.writer();
    audit_log(&catalog);
    let by_scan = |text: &str| -> Vec<u64> {
        all_events(&catalog, 1)
            .into_iter()
            .filter(|event| partitions_of(&event.kind).contains(&&partition(text)))
            .map(|event| event.seq)
            .collect()
    };
    assert_eq!(
        seqs_of(&catalog, "clean/date=2024-01-01", 1),
        [3, 4, 5, 7, 8, 9]
    );
    assert_eq!(
        seqs_of(&catalog, "clean/date=2024-01-01", 1),
        by_scan("clean/date=2024-01-01")
    );
    assert_eq!(seqs_of(&catalog, "clean/date=2024-01-02", 1), [6]);
    assert_eq!(seqs_of(&catalog, "clean/date=2024-01-01", 6), [7, 8, 9]);
    assert_eq!(
        seqs_of(&catalog, "clean/date=2024-01-0", 1),
        Vec::<u64>::new()
    );
    assert_eq!(catalog.event(6).unwrap().unwrap().seq, 6);
    assert_eq!(catalog.event(99).unwrap(), None);

    // The log above carries builds 1 and 2 (appended without asking for
    // ids): ids handed out now come after them.
    assert_eq!(catalog.last_build_id().unwrap(), 2);
    assert_eq!(catalog.next_build_id().unwrap(), 3);
    assert_eq!(catalog.next_build_id().unwrap(), 4);
    assert_eq!(catalog.last_build_id().unwrap(), 4);
    let stats = catalog.stats().unwrap();
    assert_eq!(
        (
            stats.events,
            stats.builds,
            stats.actions,
            stats.partitions,
            stats.materialized,
            stats.indexed
        ),
        (10, 4, 1, 2, 1, 7)
    );
    assert!(stats.file_bytes > 0);
    assert_eq!(catalog.replay_check().unwrap(), Vec::<String>::new());
}

#[test]
fn replay_rebuilds_tampered_projections() {
    let fixture = Fixture::new();
    let catalog = fixture.writer();
    audit_log(&catalog);
    let before = (
        catalog
            .partition(&partition("clean/date=2024-01-01"))
            .unwrap(),
        catalog.dataset_versions().unwrap(),
        seqs_of(&catalog, "clean/date=2024-01-01", 1),
    );
    drop(catalog);
    fixture.tamper(|transaction| {
        let mut partitions = transaction.open_table(PARTITIONS).unwrap();
        partitions.remove("clean/date=2024-01-01").unwrap();
        partitions
            .insert("clean/date=2024-01-09", [1u8, 0xff].as_slice())
            .unwrap();
        let mut datasets = transaction.open_table(DATASETS).unwrap();
        datasets.insert("clean", "9.9.9").unwrap();
        let mut index = transaction.open_table(PARTITION_EVENTS).unwrap();
        index.remove(("clean/date=2024-01-01", 4)).unwrap();
        index.insert(("clean/date=2024-01-02", 1), ()).unwrap();
    });
    let catalog = fixture.writer();
    let found = catalog.replay_check().unwrap();
    assert_eq!(found.len(), 5, "{found:#?}");
    let mentions = |needle: &str| found.iter().any(|line| line.contains(needle));
    assert!(mentions(
        "partition index clean/date=2024-01-01: the live index lacks events 4"
    ));
    assert!(mentions(
        "partition index clean/date=2024-01-02: the live index lists events 1 that are not about it"
    ));
    assert!(mentions("dataset clean: the live table has \"9.9.9\""));

    let report = catalog.replay().unwrap();
    assert_eq!(
        report,
        ReplayReport {
            events: 10,
            actions: 1,
            partitions: 2,
            datasets: 1,
            indexed: 7,
        }
    );
    assert_eq!(catalog.replay_check().unwrap(), Vec::<String>::new());
    let after = (
        catalog
            .partition(&partition("clean/date=2024-01-01"))
            .unwrap(),
        catalog.dataset_versions().unwrap(),
        seqs_of(&catalog, "clean/date=2024-01-01", 1),
    );
    assert_eq!(after, before);
    assert_eq!(
        catalog
            .partition(&partition("clean/date=2024-01-09"))
            .unwrap(),
        None
    );
    // The log itself is untouched, and a reader cannot replay.
    assert_eq!(catalog.last_seq().unwrap(), 10);
    assert!(fixture.reader().replay().is_err());
}

#[test]
fn a_store_from_before_the_index_gets_it_from_its_first_writer() {
    let fixture = Fixture::new();
    audit_log(&fixture.writer());
    fixture.tamper(|transaction| {
        transaction.delete_table(PARTITION_EVENTS).unwrap();
    });
    // A reader cannot build it: it scans instead, and the check says so.
    let reader = fixture.reader();
    assert_eq!(
        seqs_of(&reader, "clean/date=2024-01-01", 4),
        [4, 5, 7, 8, 9]
    );
    let found = reader.replay_check().unwrap();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].contains("the partition event index is missing"));
    drop(reader);

    let writer = fixture.writer();
    assert_eq!(writer.replay_check().unwrap(), Vec::<String>::new());
    assert_eq!(
        seqs_of(&writer, "clean/date=2024-01-01", 1),
        [3, 4, 5, 7, 8, 9]
    );
}

#[test]
fn a_cleanly_closed_catalog_is_stamped_and_any_change_voids_the_stamp() {
    use std::io::{Seek, SeekFrom, Write};
    let fixture = Fixture::new();
    {
        let catalog = fixture.writer();
        catalog.append(1, vec![planned()], Vec::new()).unwrap();
        assert!(
            !closed_stamp_matches(&fixture.path),
            "no stamp while a writer has it open"
        );
    }
    assert!(closed_stamp_matches(&fixture.path), "stamped at close");
    // Reading does not void it.
    drop(fixture.reader());
    assert!(closed_stamp_matches(&fixture.path));
    // Opening for writing removes it until the writer closes.
    let writer = fixture.writer();
    assert!(!closed_stamp_path(&fixture.path).exists());
    drop(writer);
    assert!(closed_stamp_matches(&fixture.path));
    // The same bytes written over themselves: same size, same content, but
    // the file was written, so the stamp no longer vouches for it.
    let length = std::fs::metadata(&fixture.path).unwrap().len();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&fixture.path)
        .unwrap();
    let bytes = std::fs::read(&fixture.path).unwrap();
    file.seek(SeekFrom::Start(length / 2)).unwrap();
    file.write_all(&bytes[(length / 2) as usize..][..8])
        .unwrap();
    drop(file);
    assert!(!closed_stamp_matches(&fixture.path));
}
