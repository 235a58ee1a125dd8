//! The contract of each port, as tests written once: every function here
//! takes a port (fresh, unless it says otherwise) and panics, naming what
//! differs, if it does not behave as the port's documentation says. The
//! in-memory twins run them in this crate's tests, the redb catalog and the
//! file blob store in `cairn-store`'s, so the twins the engine's unit tests
//! use behave as the real store does (docs/internals.md, "Ports and their
//! twins").
//!
//! Compiled for this crate's tests and with the `contract` feature (a
//! dev-dependency feature of the crates that run them).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::digest::{ActionKey, ContentDigest};
use crate::ports::{BlobStore, Catalog, PutOutcome, RemoteCache, StoreError, corrupt_blob_of};
use crate::projection::{MemoryProjections, apply};
use crate::record::{
    BuildCounts, CheckpointRecord, CommandRecord, DefsRecord, Event, EventKind, FileEntry,
    InputRecord, Invalidation, Manifest, Materialization, OutputRecord, PartitionState,
    ProgramRecord, StatEntry, partition_digest,
};
use crate::refs::PartitionRef;

fn partition(text: &str) -> PartitionRef {
    PartitionRef::parse(text).expect("a valid ref")
}

fn key(byte: u8) -> ActionKey {
    ActionKey([byte; 32])
}

fn manifest(key: ActionKey, output: &PartitionRef, content: &[u8], build: u64) -> Manifest {
    let files = vec![FileEntry {
        path: "part.csv".into(),
        executable: false,
        size: content.len() as u64,
        digest: ContentDigest::of(content),
        mode: 0o644,
    }];
    Manifest {
        key,
        job: "clean".into(),
        outputs: vec![OutputRecord {
            partition: output.clone(),
            digest: partition_digest(&files),
            files,
        }],
        inputs: Vec::new(),
        code_digest: Some(ContentDigest::of(b"code")),
        versions: vec![("clean".into(), "1.0.0".into())],
        build,
        started_ms: 1_000,
        finished_ms: 2_000,
        stdout: Some(ContentDigest::of(b"out")),
        stderr: None,
        command: None,
    }
}

fn stat_entry(content: &[u8], inode: u64) -> StatEntry {
    StatEntry {
        size: content.len() as u64,
        mtime_ns: 1_700_000_000_000_000_000,
        ctime_ns: 1_700_000_000_000_000_001,
        inode,
        recorded_ns: 1_700_000_000_500_000_000,
        digest: ContentDigest::of(content),
    }
}

/// Every event of the log, in order.
fn all_events(catalog: &dyn Catalog, from: u64) -> Vec<Event> {
    let mut events = Vec::new();
    catalog
        .scan_events(from, &mut |event| {
            events.push(event);
            true
        })
        .expect("scan the log");
    events
}

/// The projections a replay of `catalog`'s log gives, by the pure rules.
fn replayed(catalog: &dyn Catalog) -> MemoryProjections {
    let mut model = MemoryProjections::default();
    for event in all_events(catalog, 1) {
        apply(&event, &mut model).expect("the rules never fail in memory");
    }
    model
}

/// Same events in, same projections out: every projection the port answers
/// equals the one the pure rules give over its own log, for every key the
/// log mentions (and for `unknown`, which it does not).
fn assert_projections_follow_the_log(catalog: &dyn Catalog, unknown: &[ActionKey]) {
    let model = replayed(catalog);
    for (key, manifest) in &model.actions {
        assert_eq!(
            catalog.action(key).unwrap().as_ref(),
            Some(manifest),
            "action {key}"
        );
    }
    for (key, checkpoint) in &model.checkpoints {
        assert_eq!(
            catalog.checkpoint(key).unwrap(),
            Some(*checkpoint),
            "checkpoint {key}"
        );
    }
    for key in unknown {
        if !model.actions.contains_key(key) {
            assert_eq!(catalog.action(key).unwrap(), None, "action {key}");
        }
        if !model.checkpoints.contains_key(key) {
            assert_eq!(catalog.checkpoint(key).unwrap(), None, "checkpoint {key}");
        }
    }
    for (partition, state) in &model.partitions {
        assert_eq!(
            catalog.partition(partition).unwrap().as_ref(),
            Some(state),
            "partition {partition}"
        );
    }
    assert_eq!(catalog.dataset_versions().unwrap(), model.datasets);
    for (source, record) in &model.defs {
        assert_eq!(
            catalog.defs(source).unwrap(),
            Some(*record),
            "defs {source}"
        );
    }
}

/// A new catalog records nothing: no event, no projection, no stat entry.
pub fn a_new_catalog_records_nothing(catalog: &dyn Catalog) {
    assert!(catalog.records_nothing().unwrap());
    assert!(all_events(catalog, 1).is_empty());
    assert_eq!(catalog.action(&key(1)).unwrap(), None);
    assert_eq!(catalog.checkpoint(&key(1)).unwrap(), None);
    assert_eq!(catalog.partition(&partition("clean/d=1")).unwrap(), None);
    assert_eq!(catalog.dataset_versions().unwrap(), BTreeMap::new());
    assert_eq!(catalog.defs("stations").unwrap(), None);
    assert_eq!(catalog.stat("/data/clean/d=1/part.csv").unwrap(), None);
}

/// Three builds' events, appended in several groups: the log keeps them in
/// order with consecutive seqs, their times and builds; the projections
/// follow the rules at every step (materialize, invalidate, fail, prune,
/// checkpoints cleared by a success, dataset versions, defs records linked
/// to the previous one).
pub fn the_projections_follow_the_log(catalog: &dyn Catalog) {
    let p1 = partition("clean/d=1");
    let p2 = partition("clean/d=2");
    let (k1, k2) = (key(1), key(2));
    let m1 = manifest(k1, &p1, b"one", 1);
    let p1_digest = m1.outputs[0].digest;

    // Build 1: requested, planned, versions recorded.
    let seq = catalog
        .append_timed(
            1,
            vec![
                (
                    10,
                    EventKind::BuildRequested {
                        requested: Vec::new(),
                        command: "build".into(),
                        reason: None,
                        submission: None,
                    },
                ),
                (
                    11,
                    EventKind::Planned {
                        actions: 2,
                        sources: 1,
                    },
                ),
                (
                    12,
                    EventKind::DatasetVersionChanged {
                        dataset: "clean".into(),
                        from: None,
                        to: Some("1.0.0".into()),
                    },
                ),
                (
                    13,
                    EventKind::DatasetVersionChanged {
                        dataset: "daily".into(),
                        from: None,
                        to: Some("2.0.0".into()),
                    },
                ),
            ],
            Vec::new(),
        )
        .unwrap();
    assert_eq!(seq, 4, "append returns the seq of its last event");
    assert!(!catalog.records_nothing().unwrap());
    assert_eq!(
        catalog.dataset_versions().unwrap(),
        BTreeMap::from([
            ("clean".to_owned(), "1.0.0".to_owned()),
            ("daily".to_owned(), "2.0.0".to_owned())
        ])
    );

    // No event named a partition yet: nothing can be recorded of it
    // (`EventLog::never_named`; a catalog may answer `false` only if it
    // cannot tell, and the twins can).
    assert!(catalog.never_named(&p1).unwrap());

    // Two actions start and checkpoint.
    let started = |key: ActionKey, output: &PartitionRef| EventKind::ActionStarted {
        key,
        job: "clean".into(),
        outputs: vec![output.clone()],
        reason: "never built".into(),
        attempt: 1,
        resumed_from: None,
    };
    let checkpointed = |key: ActionKey, sequence: u64| EventKind::ActionCheckpointed {
        key,
        job: "clean".into(),
        sequence,
        digest: ContentDigest::of(format!("checkpoint {sequence}").as_bytes()),
        size: 12,
    };
    let seq = catalog
        .append_timed(
            1,
            vec![
                (20, started(k1, &p1)),
                (21, started(k2, &p2)),
                (22, checkpointed(k1, 1)),
                (23, checkpointed(k2, 1)),
                (24, checkpointed(k2, 2)),
            ],
            Vec::new(),
        )
        .unwrap();
    assert_eq!(seq, 9);
    // A checkpoint belongs to a started action: its outputs are named.
    assert!(!catalog.never_named(&p1).unwrap());
    assert!(!catalog.never_named(&p2).unwrap());
    assert!(catalog.never_named(&partition("clean/d=3")).unwrap());
    assert_eq!(
        catalog.checkpoint(&k2).unwrap(),
        Some(CheckpointRecord {
            sequence: 2,
            digest: ContentDigest::of(b"checkpoint 2"),
            build: 1,
        })
    );
    assert_projections_follow_the_log(catalog, &[k1, k2]);

    // One succeeds, the other fails; the build ends.
    let seq = catalog
        .append_timed(
            1,
            vec![
                (
                    30,
                    EventKind::ActionSucceeded {
                        manifest: m1.clone(),
                    },
                ),
                (
                    31,
                    EventKind::PartitionMaterialized {
                        partition: p1.clone(),
                        digest: p1_digest,
                        key: k1,
                    },
                ),
                (
                    32,
                    EventKind::ActionFailed {
                        key: Some(k2),
                        job: "clean".into(),
                        outputs: vec![p2.clone()],
                        error: "exit status 1".into(),
                        exit_code: Some(1),
                        stdout: None,
                        stderr: Some(ContentDigest::of(b"boom")),
                    },
                ),
                (
                    33,
                    EventKind::BuildFinished {
                        counts: BuildCounts {
                            executed: 1,
                            failed: 1,
                            ..BuildCounts::default()
                        },
                        interrupted: false,
                    },
                ),
            ],
            Vec::new(),
        )
        .unwrap();
    assert_eq!(seq, 13);
    assert_eq!(catalog.action(&k1).unwrap(), Some(m1.clone()));
    assert_eq!(catalog.action(&k2).unwrap(), None);
    assert_eq!(
        catalog.checkpoint(&k1).unwrap(),
        None,
        "cleared by the success"
    );
    assert!(
        catalog.checkpoint(&k2).unwrap().is_some(),
        "kept by the failure"
    );
    let materialized = Materialization {
        key: k1,
        digest: p1_digest,
        build: 1,
        seq: 11,
    };
    assert_eq!(
        catalog.partition(&p1).unwrap(),
        Some(PartitionState {
            current: Some(materialized.clone()),
            invalidated: None,
            failed: None,
        })
    );
    assert_eq!(
        catalog.partition(&p2).unwrap(),
        Some(PartitionState {
            current: None,
            invalidated: None,
            failed: Some((1, "exit status 1".into())),
        })
    );
    assert_projections_follow_the_log(catalog, &[k1, k2]);

    // Build 2: an invalidation, three defs refreshes of two sources, a
    // dataset no longer versioned, a prune, a reuse and a skip.
    let seq = catalog
        .append_timed(
            2,
            vec![
                (
                    40,
                    EventKind::PartitionInvalidated {
                        partition: p1.clone(),
                        reason: "bad feed".into(),
                        by: Some("ana".into()),
                    },
                ),
                (
                    41,
                    EventKind::DefsRefreshed {
                        source: "stations".into(),
                        digest: ContentDigest::of(b"a"),
                        values: 3,
                    },
                ),
                (
                    42,
                    EventKind::DefsRefreshed {
                        source: "regions".into(),
                        digest: ContentDigest::of(b"b"),
                        values: 1,
                    },
                ),
                (
                    43,
                    EventKind::DefsRefreshed {
                        source: "stations".into(),
                        digest: ContentDigest::of(b"c"),
                        values: 4,
                    },
                ),
                (
                    44,
                    EventKind::DatasetVersionChanged {
                        dataset: "daily".into(),
                        from: Some("2.0.0".into()),
                        to: None,
                    },
                ),
                (
                    45,
                    EventKind::PartitionPruned {
                        partition: p2.clone(),
                        reason: "station retired".into(),
                        by: None,
                    },
                ),
                (
                    46,
                    EventKind::ActionCached {
                        key: k1,
                        job: "clean".into(),
                        outputs: vec![p1.clone()],
                        built_by: 1,
                        restored: true,
                        remote: None,
                    },
                ),
                (
                    47,
                    EventKind::ActionSkipped {
                        job: "daily".into(),
                        outputs: vec![partition("daily/d=1")],
                        reason: "an input failed".into(),
                    },
                ),
            ],
            Vec::new(),
        )
        .unwrap();
    assert_eq!(seq, 21);
    assert_eq!(
        catalog.partition(&p1).unwrap(),
        Some(PartitionState {
            current: Some(materialized),
            invalidated: Some(Invalidation {
                reason: "bad feed".into(),
                by: Some("ana".into()),
                time_ms: 40,
                seq: 14,
            }),
            failed: None,
        })
    );
    assert_eq!(
        catalog.partition(&p2).unwrap(),
        Some(PartitionState::default()),
        "a pruned partition is no longer built"
    );
    assert_eq!(
        catalog.defs("stations").unwrap(),
        Some(DefsRecord {
            seq: 17,
            build: 2,
            time_ms: 43,
            digest: ContentDigest::of(b"c"),
            values: 4,
            previous: Some(15),
        })
    );
    assert_eq!(
        catalog.defs("regions").unwrap().map(|r| r.previous),
        Some(None)
    );
    assert_eq!(catalog.defs("towns").unwrap(), None);
    assert_eq!(
        catalog.dataset_versions().unwrap(),
        BTreeMap::from([("clean".to_owned(), "1.0.0".to_owned())])
    );
    assert_projections_follow_the_log(catalog, &[k1, k2]);

    // Build 3: the invalidated partition is built again, under a new key.
    let k3 = key(3);
    let m3 = manifest(k3, &p1, b"one again", 3);
    let p1_again = m3.outputs[0].digest;
    catalog
        .append(
            3,
            vec![
                EventKind::ActionSucceeded {
                    manifest: m3.clone(),
                },
                EventKind::PartitionMaterialized {
                    partition: p1.clone(),
                    digest: p1_again,
                    key: k3,
                },
            ],
            Vec::new(),
        )
        .unwrap();
    assert_eq!(catalog.action(&k3).unwrap(), Some(m3));
    assert_eq!(catalog.action(&k1).unwrap(), Some(m1), "older results stay");
    let state = catalog.partition(&p1).unwrap().unwrap();
    assert_eq!(
        state.current.as_ref().map(|m| (m.key, m.build, m.seq)),
        Some((k3, 3, 23))
    );
    assert_eq!(state.invalidated, None, "cleared by the materialization");
    assert_projections_follow_the_log(catalog, &[k1, k2, k3]);

    // The log: every event, in order, with its time and build.
    let events = all_events(catalog, 1);
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=23).collect::<Vec<_>>()
    );
    assert_eq!(
        events.iter().map(|e| e.build).collect::<Vec<_>>(),
        [[1; 13].as_slice(), &[2; 8], &[3; 2]].concat()
    );
    assert_eq!(events[13].time_ms, 40);
    assert_eq!(events[12].kind.name(), "BuildFinished");
    assert_eq!(events[22].kind.name(), "PartitionMaterialized");
    // `append` stamps its events with the clock.
    assert!(events[21].time_ms >= 1_577_836_800_000, "a wall time in ms");
    // A scan starts at its seq, and stops when told to.
    assert_eq!(all_events(catalog, 20), events[19..].to_vec());
    assert!(all_events(catalog, 24).is_empty());
    let mut seen = Vec::new();
    catalog
        .scan_events(5, &mut |event| {
            seen.push(event.seq);
            seen.len() < 3
        })
        .unwrap();
    assert_eq!(seen, [5, 6, 7]);
}

/// Stat entries given to `append` are recorded with its events (or
/// alone), a later entry of a path replacing the earlier one.
pub fn the_stat_cache_keeps_the_last_entry_of_each_path(catalog: &dyn Catalog) {
    let (a, b) = ("/data/clean/d=1/part.csv", "/data/clean/d=1/");
    catalog
        .append(
            1,
            vec![EventKind::Planned {
                actions: 0,
                sources: 0,
            }],
            vec![
                (a.to_owned(), stat_entry(b"one", 7)),
                (b.to_owned(), stat_entry(b"listing", 8)),
            ],
        )
        .unwrap();
    assert_eq!(catalog.stat(a).unwrap(), Some(stat_entry(b"one", 7)));
    assert_eq!(catalog.stat(b).unwrap(), Some(stat_entry(b"listing", 8)));
    catalog
        .append(1, Vec::new(), vec![(a.to_owned(), stat_entry(b"two", 9))])
        .unwrap();
    assert_eq!(catalog.stat(a).unwrap(), Some(stat_entry(b"two", 9)));
    assert_eq!(catalog.stat(b).unwrap(), Some(stat_entry(b"listing", 8)));
    assert_eq!(catalog.stat("/elsewhere").unwrap(), None);
    assert_eq!(
        all_events(catalog, 1).len(),
        1,
        "stat entries are not events"
    );
}

/// Build ids start at 1, each reservation gives a new one, and an id
/// carried by an append is never handed out again.
pub fn build_ids_are_never_reused(catalog: &dyn Catalog) {
    assert_eq!(catalog.next_build_id().unwrap(), 1);
    assert_eq!(
        catalog.next_build_id().unwrap(),
        2,
        "reserved, not appended"
    );
    catalog
        .append(
            2,
            vec![EventKind::BuildRequested {
                requested: Vec::new(),
                command: "build".into(),
                reason: None,
                submission: None,
            }],
            Vec::new(),
        )
        .unwrap();
    assert_eq!(catalog.next_build_id().unwrap(), 3);
    catalog.append(7, Vec::new(), Vec::new()).unwrap();
    assert_eq!(catalog.next_build_id().unwrap(), 8);
}

fn read_stream(blobs: &dyn BlobStore, digest: &ContentDigest) -> std::io::Result<Vec<u8>> {
    let mut reader = blobs.open_verified(digest).expect("open the blob");
    let mut bytes = Vec::new();
    // Small reads: the check happens at the end, however it is reached.
    let mut buffer = [0u8; 1000];
    loop {
        let count = reader.read(&mut buffer)?;
        if count == 0 {
            return Ok(bytes);
        }
        bytes.extend_from_slice(&buffer[..count]);
    }
}

/// What goes in comes out, by every read: `put_bytes`, `put_file` and
/// `adopt_file` name content by its blake3; `read`, the streaming read and
/// `restore` give it back. `scratch` is an empty directory.
pub fn blobs_round_trip(blobs: &dyn BlobStore, scratch: &Path) {
    let small = b"station,value\nNL01,3\n".to_vec();
    // Over a few buffers of any reader.
    let large: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    for content in [Vec::new(), small, large] {
        let digest = blobs.put_bytes(&content).unwrap();
        assert_eq!(digest, ContentDigest::of(&content));
        assert!(blobs.contains(&digest));
        assert_eq!(blobs.read(&digest).unwrap(), content);
        assert_eq!(read_stream(blobs, &digest).unwrap(), content);
        let mut whole = Vec::new();
        blobs
            .open_verified(&digest)
            .unwrap()
            .read_to_end(&mut whole)
            .unwrap();
        assert_eq!(whole, content);
        assert_eq!(blobs.put_bytes(&content).unwrap(), digest, "stored once");
        let dest = scratch.join(format!("restored-{}", digest.short()));
        blobs.restore(&digest, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), content);
        // A restore never overwrites.
        std::fs::write(&dest, b"mine").unwrap();
        assert!(blobs.restore(&digest, &dest).is_err());
        assert_eq!(std::fs::read(&dest).unwrap(), b"mine");
    }
    for (name, adopt) in [("put", false), ("adopt", true)] {
        let path = scratch.join(format!("{name}.csv"));
        let content = format!("content stored by {name}_file\n");
        std::fs::write(&path, &content).unwrap();
        let digest = if adopt {
            blobs.adopt_file(&path).unwrap()
        } else {
            blobs.put_file(&path).unwrap()
        };
        assert_eq!(digest, ContentDigest::of(content.as_bytes()));
        assert_eq!(std::fs::read(&path).unwrap(), content.as_bytes());
        assert_eq!(blobs.read(&digest).unwrap(), content.as_bytes());
    }
    blobs.sync().unwrap();
}

/// A blob from elsewhere enters the store only with the content it was
/// named for: `put_verified` stores a matching stream (of any length) and
/// returns its length; a stream of other content is refused with
/// [`StoreError::CorruptBlob`], and a stream that fails half-way with the
/// reader's own error; neither leaves anything stored.
pub fn a_verified_put_stores_only_what_was_expected(blobs: &dyn BlobStore) {
    /// Yields `bytes` in small reads, then fails if `fail` is set.
    struct Flaky<'a> {
        bytes: &'a [u8],
        fail: bool,
    }
    impl Read for Flaky<'_> {
        fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
            if self.bytes.is_empty() && self.fail {
                return Err(std::io::Error::other("the connection was reset"));
            }
            let count = buffer.len().min(self.bytes.len()).min(4096);
            buffer[..count].copy_from_slice(&self.bytes[..count]);
            self.bytes = &self.bytes[count..];
            Ok(count)
        }
    }
    let large: Vec<u8> = (0..700_000u32).map(|i| (i % 241) as u8).collect();
    for content in [Vec::new(), b"a verified blob\n".to_vec(), large] {
        let digest = ContentDigest::of(&content);
        let other = ContentDigest::of(b"something else");
        let mut reader = Flaky {
            bytes: &content,
            fail: false,
        };
        let refused = blobs.put_verified(&other, &mut reader).unwrap_err();
        assert!(
            matches!(refused, StoreError::CorruptBlob { expected, actual } if expected == other && actual == digest),
            "{refused}"
        );
        assert!(!blobs.contains(&digest) && !blobs.contains(&other));
        let mut reader = Flaky {
            bytes: &content,
            fail: true,
        };
        let failed = blobs.put_verified(&digest, &mut reader).unwrap_err();
        assert!(
            matches!(&failed, StoreError::Io { source, .. } if source.to_string() == "the connection was reset"),
            "{failed}"
        );
        assert!(!blobs.contains(&digest));
        let mut reader = Flaky {
            bytes: &content,
            fail: false,
        };
        assert_eq!(
            blobs.put_verified(&digest, &mut reader).unwrap(),
            content.len() as u64
        );
        assert_eq!(blobs.read(&digest).unwrap(), content);
    }
    blobs.sync().unwrap();
}

/// A blob the store does not hold: absent, and every read says so.
pub fn a_missing_blob_is_reported_missing(blobs: &dyn BlobStore, scratch: &Path) {
    let digest = ContentDigest::of(b"never stored");
    let missing = |error: StoreError| matches!(error, StoreError::MissingBlob { expected } if expected == digest);
    assert!(!blobs.contains(&digest));
    assert!(missing(blobs.read(&digest).unwrap_err()));
    assert!(missing(
        blobs.open_verified(&digest).err().expect("an error")
    ));
    let dest = scratch.join("missing");
    assert!(missing(blobs.restore(&digest, &dest).unwrap_err()));
    assert!(!dest.exists(), "nothing restored");
}

/// A blob whose content no longer matches its name (`damage` replaces it
/// with other bytes) is never served: `read` and `restore` fail with
/// [`StoreError::CorruptBlob`], the streaming read fails at its end with
/// it, and the next put of the right content repairs the blob.
pub fn a_corrupt_blob_is_never_served(
    blobs: &dyn BlobStore,
    scratch: &Path,
    damage: &dyn Fn(&ContentDigest, &[u8]),
) {
    let content = b"2024-01-01,12.5\n2024-01-02,13.0\n".to_vec();
    let damaged = b"2024-01-01,99.9\n2024-01-02,13.0\n".to_vec();
    let digest = blobs.put_bytes(&content).unwrap();
    let corrupt = (digest, ContentDigest::of(&damaged));

    // Found by the streaming read, at its end; a put then repairs it.
    damage(&digest, &damaged);
    let error = read_stream(blobs, &digest).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(corrupt_blob_of(&error), Some(corrupt), "{error}");
    assert_eq!(blobs.put_bytes(&content).unwrap(), digest);
    assert_eq!(read_stream(blobs, &digest).unwrap(), content, "repaired");

    // Found by `read` and `restore`; a put then repairs it.
    damage(&digest, &damaged);
    let is_corrupt = |error: StoreError| matches!(error, StoreError::CorruptBlob { expected, actual } if (expected, actual) == corrupt);
    assert!(is_corrupt(blobs.read(&digest).unwrap_err()));
    let dest = scratch.join("restored");
    assert!(is_corrupt(blobs.restore(&digest, &dest).unwrap_err()));
    assert!(!dest.exists(), "a corrupt restore leaves nothing");
    let mut whole = Vec::new();
    let error = blobs
        .open_verified(&digest)
        .unwrap()
        .read_to_end(&mut whole)
        .unwrap_err();
    assert_eq!(corrupt_blob_of(&error), Some(corrupt));
    assert_eq!(blobs.put_bytes(&content).unwrap(), digest);
    assert_eq!(blobs.read(&digest).unwrap(), content, "repaired");
}

/// A remote cache's AC entries: missing is `None`; the first put creates,
/// a second put of the same key keeps the first entry and says so (not an
/// error); other keys are untouched. `cache` must hold no entry for the
/// keys 0xa1..0xa3 (a real backend runs it under a fresh prefix).
pub fn remote_actions_are_written_once(cache: &dyn RemoteCache) {
    let (first, second) = (key(0xa1), key(0xa2));
    assert_eq!(cache.get_action(&first).unwrap(), None, "nothing yet");
    assert_eq!(
        cache.put_action(&first, b"entry one").unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        cache.put_action(&first, b"entry two").unwrap(),
        PutOutcome::AlreadyExists,
        "the first writer wins"
    );
    assert_eq!(
        cache.get_action(&first).unwrap().as_deref(),
        Some(&b"entry one"[..])
    );
    assert_eq!(cache.get_action(&second).unwrap(), None);
    assert_eq!(
        cache.put_action(&second, b"").unwrap(),
        PutOutcome::Created,
        "an empty entry is an entry"
    );
    assert_eq!(
        cache.get_action(&second).unwrap().as_deref(),
        Some(&b""[..])
    );
    assert_eq!(cache.get_action(&key(0xa3)).unwrap(), None);
}

/// A remote cache's batches ([`RemoteCache::put_actions`],
/// [`RemoteCache::get_actions`]) answer each request once, by its index, as
/// the single requests would: an entry already there is kept. Once the
/// receiver says stop, the requests not under way are not made. `cache`
/// must hold no entry for the keys 0xb0..0xdf.
pub fn remote_batches_answer_each_request_once(cache: &dyn RemoteCache) {
    use crate::ports::ActionPut;
    assert_eq!(
        cache.put_action(&key(0xb1), b"first").unwrap(),
        PutOutcome::Created
    );
    let puts = [
        ActionPut {
            key: key(0xb1),
            entry: b"second".to_vec(),
            after_miss: false,
        },
        ActionPut {
            key: key(0xb2),
            entry: b"two".to_vec(),
            after_miss: false,
        },
        ActionPut {
            key: key(0xb3),
            entry: b"three".to_vec(),
            after_miss: true,
        },
    ];
    let mut outcomes = vec![None; puts.len()];
    cache.put_actions(&puts, &mut |index, outcome| {
        assert!(outcomes[index].is_none(), "answered once");
        outcomes[index] = Some(outcome.unwrap());
        true
    });
    assert_eq!(
        outcomes,
        [
            Some(PutOutcome::AlreadyExists),
            Some(PutOutcome::Created),
            Some(PutOutcome::Created)
        ],
        "the first writer wins in a batch too"
    );
    let keys = [key(0xb1), key(0xb2), key(0xb3), key(0xb4)];
    let mut entries = vec![None; keys.len()];
    cache.get_actions(&keys, &mut |index, entry| {
        assert!(entries[index].is_none(), "answered once");
        entries[index] = Some(entry.unwrap());
        true
    });
    assert_eq!(
        entries,
        [
            Some(Some(b"first".to_vec())),
            Some(Some(b"two".to_vec())),
            Some(Some(b"three".to_vec())),
            Some(None)
        ]
    );
    // Told to stop at the first answer: the requests not under way then
    // are never made.
    let many: Vec<ActionKey> = (0xc0..=0xdf).map(key).collect();
    let mut answers = 0;
    cache.get_actions(&many, &mut |_, entry| {
        assert_eq!(entry.unwrap(), None);
        answers += 1;
        false
    });
    assert!(
        (1..many.len()).contains(&answers),
        "{answers} answers after the first said stop"
    );
}

/// A remote cache's blobs: absent until put, then present and read back
/// as put, large or empty; putting again is harmless.
pub fn remote_blobs_round_trip(cache: &dyn RemoteCache) {
    let large: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    for content in [&b"a blob"[..], b"", &large] {
        let digest = ContentDigest::of(content);
        assert!(!cache.has_blob(&digest).unwrap(), "absent before the put");
        assert_eq!(cache.get_blob(&digest).unwrap(), None);
        assert!(cache.open_blob(&digest).unwrap().is_none());
        cache.put_blob(&digest, content).unwrap();
        assert!(cache.has_blob(&digest).unwrap());
        assert_eq!(cache.get_blob(&digest).unwrap().as_deref(), Some(content));
        let mut streamed = Vec::new();
        cache
            .open_blob(&digest)
            .unwrap()
            .expect("the blob just put")
            .read_to_end(&mut streamed)
            .unwrap();
        assert_eq!(streamed, content);
        cache.put_blob(&digest, content).unwrap();
        assert_eq!(cache.get_blob(&digest).unwrap().as_deref(), Some(content));
    }
}

/// A remote cache's blobs sent from a stream ([`RemoteCache::put_blob_from`]):
/// small, empty or longer than a backend's part (21 MiB and a few bytes),
/// each read back as sent, with its length returned. A stream that fails
/// after 9 MiB stores nothing under its name.
pub fn remote_blobs_stream_in(cache: &dyn RemoteCache) {
    let long: Vec<u8> = (0..(21 << 20) + 7u32).map(|i| (i % 253) as u8).collect();
    for content in [&b"a streamed blob"[..], b"", &long] {
        let digest = ContentDigest::of(content);
        let sent = cache
            .put_blob_from(&digest, &mut std::io::Cursor::new(content))
            .unwrap();
        assert_eq!(sent, content.len() as u64);
        let mut read = Vec::new();
        cache
            .open_blob(&digest)
            .unwrap()
            .expect("the blob just sent")
            .read_to_end(&mut read)
            .unwrap();
        assert!(
            read == content,
            "{} bytes sent, read back otherwise",
            content.len()
        );
    }
    let failing = ContentDigest::of(b"a blob whose stream fails");
    let mut reader = std::io::Read::chain(std::io::Cursor::new(vec![1u8; 9 << 20]), FailingReader);
    assert!(cache.put_blob_from(&failing, &mut reader).is_err());
    assert!(
        !cache.has_blob(&failing).unwrap(),
        "a failed stream stored nothing"
    );
}

/// A reader that fails at once.
struct FailingReader;

impl Read for FailingReader {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("the local store's disk failed"))
    }
}

/// A remote cache that cannot be reached fails every request with an error
/// naming its URL and the object, and nothing else: no credential.
pub fn a_failing_remote_names_itself(cache: &dyn RemoteCache) {
    let digest = ContentDigest::of(b"x");
    let errors = [
        cache.get_action(&key(1)).unwrap_err(),
        cache.put_action(&key(1), b"e").unwrap_err(),
        cache.has_blob(&digest).unwrap_err(),
        cache.get_blob(&digest).unwrap_err(),
        cache.open_blob(&digest).err().expect("an error"),
        cache.put_blob(&digest, b"x").unwrap_err(),
    ];
    for error in errors {
        let text = error.to_string();
        assert!(text.contains(cache.url()), "{text}");
        assert!(
            text.contains(&key(1).to_hex()) || text.contains(&digest.to_hex()),
            "{text}"
        );
    }
}

/// A result restored from the remote cache (`ActionCached` with `remote`,
/// store format 10) makes the manifest it brought the key's local one, so
/// the next build reuses it without asking the remote; a local reuse
/// (`remote: None`) changes no manifest. `catalog` is fresh.
pub fn a_remote_restore_records_its_manifest(catalog: &dyn Catalog) {
    let (k1, k2) = (key(0x71), key(0x72));
    let p1 = partition("clean/date=2024-01-01");
    let m1 = manifest(k1, &p1, b"from afar", 1);
    let build = catalog.next_build_id().unwrap();
    catalog
        .append(
            build,
            vec![
                EventKind::ActionCached {
                    key: k1,
                    job: "clean".into(),
                    outputs: vec![p1.clone()],
                    built_by: 1,
                    restored: true,
                    remote: Some(Box::new(crate::record::RemoteOrigin {
                        url: "s3://bucket/team".into(),
                        producer: "host ci-1, cairn 0.1.0, build 7".into(),
                        manifest: m1.clone(),
                    })),
                },
                EventKind::PartitionMaterialized {
                    partition: p1.clone(),
                    digest: m1.outputs[0].digest,
                    key: k1,
                },
                EventKind::ActionCached {
                    key: k2,
                    job: "clean".into(),
                    outputs: vec![p1],
                    built_by: 1,
                    restored: true,
                    remote: None,
                },
            ],
            Vec::new(),
        )
        .unwrap();
    assert_eq!(catalog.action(&k1).unwrap(), Some(m1));
    assert_eq!(
        catalog.action(&k2).unwrap(),
        None,
        "a local reuse brings none"
    );
    assert_projections_follow_the_log(catalog, &[k1, k2]);
    let events = all_events(catalog, 1);
    assert_eq!(events.len(), 3);
    assert!(
        matches!(&events[0].kind, EventKind::ActionCached { remote: Some(origin), .. } if origin.url == "s3://bucket/team"),
        "the origin reads back: {:?}",
        events[0].kind
    );
}

/// One event of every kind, with text that needs escaping (quotes,
/// backslashes, newlines, tabs, non-ASCII): what the tests of each printed
/// and parsed form of the log (`cairn log --json` in cairn-app, its reading
/// back in the `--remote` client) run through.
pub fn every_event_kind() -> Vec<EventKind> {
    let partition = PartitionRef::parse("clean/date=2024-01-01/station=S001").unwrap();
    let key = ActionKey([7; 32]);
    let digest = ContentDigest([9; 32]);
    let tricky = "quote \" backslash \\ newline \n tab \t é".to_owned();
    let kinds = vec![
        EventKind::BuildRequested {
            requested: vec![tricky.clone()],
            command: "build".into(),
            reason: Some(tricky.clone()),
            submission: None,
        },
        EventKind::Planned {
            actions: 3,
            sources: 2,
        },
        EventKind::DatasetVersionChanged {
            dataset: "clean".into(),
            from: None,
            to: Some("1.2.0".into()),
        },
        EventKind::ActionStarted {
            key,
            job: "clean".into(),
            outputs: vec![partition.clone()],
            reason: tricky.clone(),
            attempt: 2,
            resumed_from: Some(4),
        },
        EventKind::ActionCheckpointed {
            key,
            job: "clean".into(),
            sequence: 3,
            digest,
            size: 10,
        },
        EventKind::ActionSucceeded {
            manifest: Manifest {
                key,
                job: "clean".into(),
                outputs: vec![OutputRecord {
                    partition: partition.clone(),
                    digest,
                    files: vec![FileEntry {
                        path: "part 1.csv".into(),
                        executable: false,
                        size: 12,
                        digest,
                        mode: 0o640,
                    }],
                }],
                inputs: vec![InputRecord {
                    partition: partition.clone(),
                    digest,
                }],
                code_digest: None,
                versions: vec![("clean".into(), "1.0.0".into())],
                build: 5,
                started_ms: 1,
                finished_ms: 2,
                stdout: Some(digest),
                stderr: None,
                command: Some(Box::new(CommandRecord {
                    run: vec!["sh".into(), "jobs/clean.sh".into()],
                    args: vec!["2024-01-01".into()],
                    env: vec![("MODE".into(), "fast".into())],
                    passed_env: vec![("LANG".into(), "C".into())],
                    program: ProgramRecord {
                        path: "/bin/sh".into(),
                        digest: Some(digest),
                    },
                })),
            },
        },
        EventKind::ActionFailed {
            key: Some(key),
            job: "clean".into(),
            outputs: vec![partition.clone()],
            error: tricky.clone(),
            exit_code: Some(-1),
            stdout: None,
            stderr: Some(digest),
        },
        EventKind::ActionCached {
            key,
            job: "clean".into(),
            outputs: vec![partition.clone()],
            built_by: 1,
            restored: true,
            remote: None,
        },
        EventKind::ActionSkipped {
            job: "clean".into(),
            outputs: vec![partition.clone()],
            reason: tricky.clone(),
        },
        EventKind::PartitionMaterialized {
            partition: partition.clone(),
            digest,
            key,
        },
        EventKind::PartitionInvalidated {
            partition: partition.clone(),
            reason: tricky,
            by: None,
        },
        EventKind::BuildFinished {
            counts: BuildCounts {
                executed: 1,
                cached: 2,
                failed: 3,
                skipped: 4,
                joined: 0,
            },
            interrupted: false,
        },
        EventKind::DefsRefreshed {
            source: "stations".into(),
            digest,
            values: 8,
        },
        EventKind::PartitionPruned {
            partition: PartitionRef::parse("raw/date=1/station=gone").unwrap(),
            reason: "station retired".into(),
            by: Some("ana".into()),
        },
        EventKind::ActionRetrying {
            key,
            job: "clean".into(),
            outputs: vec![partition.clone()],
            attempt: 2,
            delay_ms: 1500,
        },
        EventKind::ActionJoined {
            key,
            job: "clean".into(),
            outputs: vec![partition.clone()],
            joined_build: 4,
        },
        EventKind::RemoteRefused {
            key,
            job: "clean".into(),
            outputs: vec![partition.clone()],
            url: "s3://bucket/team".into(),
            reason: "blob 0909 failed verification".into(),
        },
        EventKind::ActionUploaded {
            key,
            job: "clean".into(),
            outputs: vec![partition.clone()],
            url: "http://127.0.0.1:8080/team".into(),
            blobs: 2,
            bytes: 4096,
            created: true,
        },
        EventKind::ActionDispatched {
            key,
            job: "clean".into(),
            outputs: vec![partition],
            attempt: 2,
            executor: "slurm".into(),
            id: "4242".into(),
        },
    ];
    kinds
}
