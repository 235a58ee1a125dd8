//! Tests of the store as a whole: layout, locking, read-only access.

use cairn_engine::record::EventKind;

use super::*;

fn never_wait() -> impl FnMut(&str) {
    |message: &str| panic!("unexpected wait: {message}")
}

fn writer(dir: &Path) -> Store {
    Store::open(dir, OpenMode::Write { wait: false }, &mut never_wait()).unwrap()
}

fn reader(dir: &Path) -> Result<Store, StoreError> {
    Store::open(dir, OpenMode::ReadOnly, &mut never_wait())
}

fn planned() -> EventKind {
    EventKind::Planned {
        actions: 0,
        sources: 0,
    }
}

#[test]
fn write_mode_creates_the_layout() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(".cairn");
    let store = writer(&dir);
    assert!(store.is_writer());
    assert_eq!(store.dir(), dir);
    assert_eq!(store.tmp_dir(), dir.join("tmp"));
    for path in ["cas", "cas/tmp", "tmp"] {
        assert!(dir.join(path).is_dir(), "{path}");
    }
    for path in ["lock", "catalog.redb"] {
        assert!(dir.join(path).is_file(), "{path}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join(".gitignore")).unwrap(),
        "*\n"
    );
    assert_eq!(store.catalog().last_seq().unwrap(), 0);
}

#[test]
fn read_only_needs_an_existing_store_and_creates_nothing() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(".cairn");
    let Err(error) = reader(&dir) else {
        panic!("opened a store that does not exist")
    };
    assert_eq!(
        error.to_string(),
        format!(
            "{}: no cairn store here (nothing has been built yet)",
            dir.display()
        )
    );
    assert!(!dir.exists());
}

#[test]
fn a_second_writer_is_refused_with_the_holder_pid() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(".cairn");
    let first = writer(&dir);
    let Err(error) = Store::open(&dir, OpenMode::Write { wait: false }, &mut never_wait()) else {
        panic!("two writers opened one store")
    };
    assert!(matches!(error, StoreError::Locked(_)));
    assert_eq!(
        error.to_string(),
        format!(
            "store {} is locked by another cairn process (pid {}, for 0s)",
            dir.display(),
            std::process::id()
        )
    );
    drop(first);
    let second = writer(&dir);
    assert_eq!(second.catalog().next_build_id().unwrap(), 1);
}

#[test]
fn a_waiting_writer_is_told_once_and_proceeds() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(".cairn");
    let first = writer(&dir);
    first
        .catalog()
        .append(1, vec![planned()], Vec::new())
        .unwrap();
    let (told_sender, told_receiver) = std::sync::mpsc::channel();
    let waiter_dir = dir.clone();
    let waiter = std::thread::spawn(move || {
        let mut messages = Vec::new();
        let store = Store::open(
            &waiter_dir,
            OpenMode::Write { wait: true },
            &mut |message: &str| {
                messages.push(message.to_owned());
                told_sender.send(()).unwrap();
            },
        )
        .unwrap();
        let seq = store
            .catalog()
            .append(2, vec![planned()], Vec::new())
            .unwrap();
        (messages, seq)
    });
    told_receiver.recv().unwrap();
    drop(first);
    let (messages, seq) = waiter.join().unwrap();
    assert_eq!(seq, 2);
    assert_eq!(messages.len(), 1);
    assert!(
        messages[0].starts_with(&format!(
            "store {} is locked by another cairn process (pid {}, for ",
            dir.display(),
            std::process::id()
        )) && messages[0].ends_with("s); waiting… (--no-wait to fail)"),
        "{}",
        messages[0]
    );
}

#[test]
fn a_reader_reads_beside_a_writer() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(".cairn");
    let store = writer(&dir);
    let digest = store.blobs().put_bytes(b"output").unwrap();
    store.blobs().sync().unwrap();
    store
        .catalog()
        .append(1, vec![planned()], Vec::new())
        .unwrap();

    let read_only = reader(&dir).unwrap();
    assert!(!read_only.is_writer());
    assert_eq!(read_only.catalog().last_seq().unwrap(), 1);
    assert_eq!(read_only.blobs().read(&digest).unwrap(), b"output");
    store
        .catalog()
        .append(1, vec![planned()], Vec::new())
        .unwrap();
    assert_eq!(read_only.catalog().last_seq().unwrap(), 2);

    assert!(read_only.blobs().put_bytes(b"x").is_err());
    let error = read_only.catalog().next_build_id().unwrap_err();
    assert!(error.to_string().contains("opened read-only"), "{error}");
    // The writer is unaffected, and still the only writer.
    assert!(store.catalog().next_build_id().is_ok());
}

/// Makes a copy of a store whose catalog was never closed, as a killed
/// writer leaves it: the live writer's file, copied while it is open.
fn killed_writer_store(root: &Path) -> PathBuf {
    let dir = root.join(".cairn");
    let store = writer(&dir);
    store
        .catalog()
        .append(1, vec![planned(), planned()], Vec::new())
        .unwrap();
    let copy = root.join("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(dir.join(CATALOG_FILE), copy.join(CATALOG_FILE)).unwrap();
    drop(store);
    copy
}

#[test]
fn a_reader_recovers_the_catalog_of_a_killed_writer() {
    let root = tempfile::tempdir().unwrap();
    let copy = killed_writer_store(root.path());
    let catalog_path = copy.join(CATALOG_FILE);
    assert!(matches!(
        RedbCatalog::open_reader(&catalog_path).unwrap(),
        ReaderOpen::NeedsRecovery
    ));
    let store = reader(&copy).unwrap();
    assert_eq!(store.catalog().last_seq().unwrap(), 2);
    assert!(store.catalog().replay_check().unwrap().is_empty());
}

#[test]
fn a_reader_does_not_recover_under_a_live_lock() {
    let root = tempfile::tempdir().unwrap();
    let copy = killed_writer_store(root.path());
    let lock = StoreLock::acquire(&copy, false, &mut never_wait()).unwrap();
    let Err(error) = reader(&copy) else {
        panic!("recovered a catalog while another process held the store")
    };
    let text = error.to_string();
    assert!(
        text.contains("the last writer did not close it cleanly"),
        "{text}"
    );
    assert!(
        text.contains("is locked by another cairn process"),
        "{text}"
    );
    drop(lock);
    assert_eq!(reader(&copy).unwrap().catalog().last_seq().unwrap(), 2);
}

#[test]
fn a_corrupted_catalog_is_an_error_naming_it_not_a_panic() {
    use std::os::unix::fs::FileExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(".cairn");
    let store = writer(&dir);
    for build in 0..20 {
        store
            .catalog()
            .append(build, vec![planned(); 20], Vec::new())
            .unwrap();
    }
    drop(store);
    let path = dir.join(CATALOG_FILE);
    let length = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0x5a; 16], length / 2).unwrap();
    drop(file);

    let Err(error) = Store::open(&dir, OpenMode::Write { wait: false }, &mut never_wait()) else {
        panic!("opened a corrupted catalog")
    };
    assert!(
        error
            .to_string()
            .starts_with(&format!("catalog {}: ", path.display())),
        "{error}"
    );

    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(length / 3)
        .unwrap();
    let Err(error) = Store::open(&dir, OpenMode::Write { wait: false }, &mut never_wait()) else {
        panic!("opened a truncated catalog")
    };
    assert!(error.to_string().contains("truncated"), "{error}");
}

// The ports' contract (cairn-core's `contract`, the same tests the
// in-memory twins pass), against the redb catalog and the file blob store.
mod contract {
    use std::os::unix::fs::PermissionsExt;

    use cairn_core::contract;

    use super::*;

    fn fresh() -> (tempfile::TempDir, Store) {
        let root = tempfile::tempdir().unwrap();
        let store = writer(&root.path().join(".cairn"));
        (root, store)
    }

    #[test]
    fn the_redb_catalog_keeps_the_catalog_contract() {
        contract::a_new_catalog_records_nothing(fresh().1.catalog());
        contract::the_projections_follow_the_log(fresh().1.catalog());
        contract::the_stat_cache_keeps_the_last_entry_of_each_path(fresh().1.catalog());
        contract::build_ids_are_never_reused(fresh().1.catalog());
        contract::a_remote_restore_records_its_manifest(fresh().1.catalog());
    }

    #[test]
    fn a_reader_sees_what_the_writer_appended_as_the_memory_twin_does() {
        let (root, store) = fresh();
        contract::the_projections_follow_the_log(store.catalog());
        let events = {
            let mut events = Vec::new();
            store
                .catalog()
                .scan_events(1, &mut |event| {
                    events.push(event);
                    true
                })
                .unwrap();
            events
        };
        drop(store);
        let reader = reader(&root.path().join(".cairn")).unwrap();
        let twin = cairn_core::memory::MemoryCatalog::from_events(events).unwrap();
        // The live tables, read back, equal the twin's fold of the same log.
        assert!(reader.catalog().replay_check().unwrap().is_empty());
        assert_eq!(
            reader.catalog().live_projections().unwrap(),
            twin.projections()
        );
    }

    #[test]
    fn the_file_blob_store_keeps_the_blob_contract() {
        let scratch = tempfile::tempdir().unwrap();
        contract::blobs_round_trip(fresh().1.blobs(), scratch.path());
        contract::a_verified_put_stores_only_what_was_expected(fresh().1.blobs());
        let scratch = tempfile::tempdir().unwrap();
        contract::a_missing_blob_is_reported_missing(fresh().1.blobs(), scratch.path());
        let scratch = tempfile::tempdir().unwrap();
        let (_root, store) = fresh();
        let blobs = store.blobs();
        contract::a_corrupt_blob_is_never_served(blobs, scratch.path(), &|digest, bytes| {
            let path = blobs.blob_path(digest);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            std::fs::write(&path, bytes).unwrap();
        });
    }
}
