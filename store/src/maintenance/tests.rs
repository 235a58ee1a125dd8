//! Tests of verify, repair and gc on a store built by hand.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cairn_engine::ports::{BlobStore, Projections};
use cairn_engine::record::{FileEntry, OutputRecord};

use super::*;
use crate::OpenMode;

fn writer(dir: &Path) -> Store {
    Store::open(dir, OpenMode::Write { wait: false }, &mut |_: &str| {}).unwrap()
}

fn partition(text: &str) -> PartitionRef {
    PartitionRef::parse(text).unwrap()
}

/// Stores `files` as the outputs of one successful run of `key` for
/// `output`, materializes it, and returns the manifest.
fn run(
    store: &Store,
    build: u64,
    key: u8,
    output: &str,
    files: &[(&str, &[u8])],
    stdout: Option<&[u8]>,
) -> Manifest {
    let files: Vec<FileEntry> = files
        .iter()
        .map(|(path, bytes)| FileEntry {
            path: (*path).to_owned(),
            executable: false,
            size: bytes.len() as u64,
            digest: store.blobs().put_bytes(bytes).unwrap(),
            mode: 0o644,
        })
        .collect();
    let manifest = Manifest {
        key: ActionKey([key; 32]),
        job: "clean".into(),
        outputs: vec![OutputRecord {
            partition: partition(output),
            digest: cairn_engine::record::partition_digest(&files),
            files,
        }],
        inputs: Vec::new(),
        code_digest: None,
        versions: Vec::new(),
        build,
        started_ms: 1,
        finished_ms: 2,
        stdout: stdout.map(|bytes| store.blobs().put_bytes(bytes).unwrap()),
        stderr: None,
        command: None,
    };
    store.blobs().sync().unwrap();
    store
        .catalog()
        .append(
            build,
            vec![
                EventKind::ActionSucceeded {
                    manifest: manifest.clone(),
                },
                EventKind::PartitionMaterialized {
                    partition: partition(output),
                    digest: manifest.outputs[0].digest,
                    key: manifest.key,
                },
            ],
            Vec::new(),
        )
        .unwrap();
    manifest
}

fn writable(store: &Store, digest: &ContentDigest) -> std::path::PathBuf {
    let path = store.blobs().blob_path(digest);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

fn build_ids(store: &Store, count: u64) {
    for _ in 0..count {
        store.catalog().next_build_id().unwrap();
    }
}

#[test]
fn verify_finds_flipped_truncated_and_missing_blobs_and_repair_invalidates() {
    let root = tempfile::tempdir().unwrap();
    let store = writer(&root.path().join(".cairn"));
    build_ids(&store, 1);
    let one = run(
        &store,
        1,
        1,
        "clean/date=1",
        &[("a.csv", b"alpha alpha")],
        Some(b"log one\n"),
    );
    let two = run(
        &store,
        1,
        2,
        "clean/date=2",
        &[("b.csv", b"bravo bravo")],
        None,
    );
    let three = run(&store, 1, 3, "clean/date=3", &[("c.csv", b"charlie")], None);
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!((report.blobs, report.bytes), (4, 11 + 8 + 11 + 7));

    // Flip one byte, truncate another, delete a third.
    let flipped = one.outputs[0].files[0].digest;
    std::fs::write(writable(&store, &flipped), b"alpha alphA").unwrap();
    let truncated = two.outputs[0].files[0].digest;
    std::fs::write(writable(&store, &truncated), b"bra").unwrap();
    let deleted = three.outputs[0].files[0].digest;
    std::fs::remove_file(store.blobs().blob_path(&deleted)).unwrap();
    // A stray corrupt blob nobody refers to is reported too.
    let stray = store.blobs().put_bytes(b"stray").unwrap();
    std::fs::write(writable(&store, &stray), b"strax").unwrap();

    let report = store.verify().unwrap();
    assert!(!report.is_clean());
    let by_digest = |digest: &ContentDigest| {
        report
            .problems
            .iter()
            .find(|problem| problem.digest == *digest)
            .unwrap_or_else(|| panic!("{digest} not reported: {report:#?}"))
    };
    let problem = by_digest(&flipped);
    assert!(matches!(problem.damage, Damage::Corrupt { .. }));
    assert_eq!(
        problem.current_partitions().into_iter().collect::<Vec<_>>(),
        [&partition("clean/date=1")]
    );
    assert!(problem.describe().starts_with(&format!(
        "blob {}… is corrupt (expected {}…, read ",
        flipped.short(),
        flipped.short()
    )));
    let problem = by_digest(&truncated);
    assert!(matches!(
        problem.damage,
        Damage::Truncated {
            length: 3,
            expected: 11,
            ..
        }
    ));
    assert_eq!(
        problem.describe(),
        format!("blob {}… is truncated (3 of 11 bytes)", truncated.short())
    );
    assert_eq!(by_digest(&deleted).damage, Damage::Missing);
    assert!(by_digest(&stray).owners.is_empty());
    assert_eq!(report.problems.len(), 4);

    let repair = store.repair(&report, "cairn store verify").unwrap();
    let mut removed = repair.removed.clone();
    removed.sort();
    let mut expected = vec![flipped, truncated, stray];
    expected.sort();
    assert_eq!(removed, expected);
    assert_eq!(
        repair.invalidated,
        [
            partition("clean/date=1"),
            partition("clean/date=2"),
            partition("clean/date=3")
        ]
    );
    assert_eq!(repair.build, 2);
    for (text, word) in [("clean/date=1", "corrupt"), ("clean/date=3", "missing")] {
        let state = store
            .catalog()
            .partition(&partition(text))
            .unwrap()
            .unwrap();
        let invalidation = state.invalidated.unwrap();
        assert_eq!(invalidation.by.as_deref(), Some("cairn store verify"));
        assert!(
            invalidation.reason.starts_with("store verify: blob ")
                && invalidation.reason.ends_with(&format!("is {word}")),
            "{}",
            invalidation.reason
        );
    }

    // The next build reruns the three jobs: the store verifies again.
    run(
        &store,
        3,
        1,
        "clean/date=1",
        &[("a.csv", b"alpha alpha")],
        Some(b"log one\n"),
    );
    run(
        &store,
        3,
        2,
        "clean/date=2",
        &[("b.csv", b"bravo bravo")],
        None,
    );
    run(&store, 3, 3, "clean/date=3", &[("c.csv", b"charlie")], None);
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(
        store.catalog().replay_check().unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn a_missing_log_of_a_current_run_is_a_problem_and_a_lost_old_blob_is_not() {
    let root = tempfile::tempdir().unwrap();
    let store = writer(&root.path().join(".cairn"));
    let old = run(&store, 1, 1, "clean/date=1", &[("a.csv", b"old")], None);
    let new = run(
        &store,
        2,
        2,
        "clean/date=1",
        &[("a.csv", b"new")],
        Some(b"out"),
    );
    std::fs::remove_file(store.blobs().blob_path(&old.outputs[0].files[0].digest)).unwrap();
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.superseded_missing, 1);

    std::fs::remove_file(store.blobs().blob_path(&new.stdout.unwrap())).unwrap();
    let report = store.verify().unwrap();
    assert_eq!(report.problems.len(), 1);
    assert_eq!(report.problems[0].damage, Damage::Missing);
    assert_eq!(report.problems[0].owners[0].role, BlobRole::Stdout);
    assert_eq!(
        report.affected_partitions().into_keys().collect::<Vec<_>>(),
        [partition("clean/date=1")]
    );
}

#[test]
fn gc_keeps_current_partitions_and_the_window_and_dry_run_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let store = writer(&root.path().join(".cairn"));
    build_ids(&store, 3);
    let first = run(
        &store,
        1,
        1,
        "clean/date=1",
        &[("a.csv", b"version one")],
        Some(b"1"),
    );
    let second = run(
        &store,
        2,
        2,
        "clean/date=1",
        &[("a.csv", b"version two!")],
        None,
    );
    let current = run(
        &store,
        3,
        3,
        "clean/date=1",
        &[("a.csv", b"version three")],
        None,
    );
    // A standing failure keeps its log.
    let stderr = store.blobs().put_bytes(b"it broke").unwrap();
    store
        .catalog()
        .append(
            3,
            vec![EventKind::ActionFailed {
                key: Some(ActionKey([9; 32])),
                job: "clean".into(),
                outputs: vec![partition("clean/date=2")],
                error: "boom".into(),
                exit_code: Some(1),
                stdout: None,
                stderr: Some(stderr),
            }],
            Vec::new(),
        )
        .unwrap();
    let all = store.blob_usage().unwrap();
    assert_eq!(all.blobs, 5);

    let dry = store.gc(GcKeep::Builds(2), true).unwrap();
    assert_eq!((dry.removed, dry.removed_bytes), (2, 11 + 1));
    assert_eq!(dry.kept_manifests, 2);
    assert_eq!(
        store.blob_usage().unwrap(),
        all,
        "a dry run removes nothing"
    );

    let kept_window = store.gc(GcKeep::Builds(2), false).unwrap();
    assert_eq!(kept_window.removed, 2);
    assert!(!store.blobs().contains(&first.outputs[0].files[0].digest));
    assert!(store.blobs().contains(&second.outputs[0].files[0].digest));

    let only_current = store.gc(GcKeep::Current, false).unwrap();
    assert_eq!((only_current.removed, only_current.removed_bytes), (1, 12));
    assert_eq!((only_current.kept, only_current.kept_manifests), (2, 1));
    assert!(store.blobs().contains(&current.outputs[0].files[0].digest));
    assert!(store.blobs().contains(&stderr));
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.superseded_missing, 3);

    let everything = store.gc(GcKeep::Since(0), false).unwrap();
    assert_eq!(everything.removed, 0);
}

#[test]
fn repair_and_gc_need_the_writer_lock() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(".cairn");
    drop(writer(&dir));
    let reader = Store::open(&dir, OpenMode::ReadOnly, &mut |_: &str| {}).unwrap();
    assert!(reader.verify().unwrap().is_clean());
    assert!(reader.repair(&VerifyReport::default(), "x").is_err());
    assert!(reader.gc(GcKeep::Current, false).is_err());
    assert_eq!(reader.gc(GcKeep::Current, true).unwrap().removed, 0);
}

#[test]
fn definitions_records_and_live_checkpoints_are_kept_and_checked() {
    let root = tempfile::tempdir().unwrap();
    let store = writer(&root.path().join(".cairn"));
    let old_defs = store.blobs().put_bytes(b"S001\n").unwrap();
    let new_defs = store.blobs().put_bytes(b"S001\nS002\n").unwrap();
    let live = store
        .blobs()
        .put_bytes(b"{\"cursor\":\"page-23\"}")
        .unwrap();
    let done = store.blobs().put_bytes(b"{\"cursor\":\"page-9\"}").unwrap();
    let refreshed = |digest| EventKind::DefsRefreshed {
        source: "stations".into(),
        digest,
        values: 1,
    };
    let checkpointed = |key: u8, digest| EventKind::ActionCheckpointed {
        key: ActionKey([key; 32]),
        job: "fetch".into(),
        sequence: 1,
        digest,
        size: 20,
    };
    store
        .catalog()
        .append(
            1,
            vec![
                refreshed(old_defs),
                refreshed(new_defs),
                checkpointed(7, live),
                checkpointed(8, done),
            ],
            Vec::new(),
        )
        .unwrap();
    // Key 8 succeeds: its checkpoint is no longer needed.
    let mut manifest = run(&store, 1, 9, "fetch/page=all", &[("all.json", b"[]")], None);
    manifest.key = ActionKey([8; 32]);
    store
        .catalog()
        .append(1, vec![EventKind::ActionSucceeded { manifest }], Vec::new())
        .unwrap();

    let report = store.gc(GcKeep::Current, false).unwrap();
    assert_eq!(report.removed, 1, "{report:?}");
    assert!(!store.blobs().contains(&done));
    for kept in [old_defs, new_defs, live] {
        assert!(store.blobs().contains(&kept));
    }
    assert!(store.verify().unwrap().is_clean());

    // The latest record of a source and a live checkpoint are needed; an
    // older record is history, kept by gc but not needed.
    std::fs::remove_file(store.blobs().blob_path(&new_defs)).unwrap();
    std::fs::remove_file(store.blobs().blob_path(&old_defs)).unwrap();
    std::fs::write(writable(&store, &live), b"{\"cursor\":\"page-99\"}").unwrap();
    let report = store.verify().unwrap();
    assert_eq!(report.problems.len(), 2, "{report:#?}");
    let missing = report
        .problems
        .iter()
        .find(|problem| problem.digest == new_defs)
        .unwrap();
    assert_eq!(missing.damage, Damage::Missing);
    assert_eq!(missing.uses, ["definitions source stations (seq 2)"]);
    let corrupt = report
        .problems
        .iter()
        .find(|problem| problem.digest == live)
        .unwrap();
    assert!(matches!(corrupt.damage, Damage::Corrupt { .. }));
    assert!(corrupt.uses[0].starts_with("checkpoint 1 of action 070707"));
    assert!(report.affected_partitions().is_empty());
}
