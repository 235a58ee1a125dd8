//! Tests of the blob CAS: round trips, dedup, corruption, loss, concurrency.

use std::os::unix::fs::PermissionsExt;

use rayon::prelude::*;

use super::*;

fn store(durability: Durability) -> (tempfile::TempDir, FsBlobStore) {
    let dir = tempfile::tempdir().unwrap();
    let cas = dir.path().join("cas");
    std::fs::create_dir_all(cas.join("tmp")).unwrap();
    let blobs = FsBlobStore::with_durability(cas, true, durability);
    (dir, blobs)
}

fn linux_store() -> (tempfile::TempDir, FsBlobStore) {
    store(Durability::FileSystem)
}

/// Overwrites one byte of a stored blob, as bit rot would.
fn flip_byte(blobs: &FsBlobStore, digest: &ContentDigest, offset: u64) {
    use std::os::unix::fs::FileExt;
    let path = blobs.blob_path(digest);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ 0x01], offset).unwrap();
}

fn temp_entries(blobs: &FsBlobStore) -> usize {
    std::fs::read_dir(&blobs.temp_dir).unwrap().count()
}

#[test]
fn bytes_round_trip_under_their_digest() {
    let (_dir, blobs) = linux_store();
    let digest = blobs.put_bytes(b"hello").unwrap();
    assert_eq!(digest, ContentDigest::of(b"hello"));
    assert!(blobs.contains(&digest));
    assert_eq!(blobs.read(&digest).unwrap(), b"hello");
    blobs.verify(&digest).unwrap();

    let hex = digest.to_hex();
    let path = blobs.blob_path(&digest);
    assert_eq!(path, blobs.cas_dir.join(&hex[..2]).join(&hex[2..]));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o444);
    assert_eq!(temp_entries(&blobs), 0);
    blobs.sync().unwrap();
}

#[test]
fn small_and_large_files_round_trip() {
    let (dir, blobs) = linux_store();
    let small = dir.path().join("small");
    let large = dir.path().join("large");
    std::fs::write(&small, b"a small file").unwrap();
    let large_content: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|n| (n % 251) as u8).collect();
    std::fs::write(&large, &large_content).unwrap();

    let small_digest = blobs.put_file(&small).unwrap();
    let large_digest = blobs.put_file(&large).unwrap();
    assert_eq!(small_digest, ContentDigest::of(b"a small file"));
    assert_eq!(large_digest, ContentDigest::of(&large_content));
    assert_eq!(blobs.read(&large_digest).unwrap(), large_content);

    let restored = dir.path().join("restored");
    blobs.restore(&large_digest, &restored).unwrap();
    assert_eq!(std::fs::read(&restored).unwrap(), large_content);
    // Restored files are ordinary files, not read-only blobs.
    let mode = std::fs::metadata(&restored).unwrap().permissions().mode();
    assert_ne!(mode & 0o200, 0);
    assert_eq!(temp_entries(&blobs), 0);
    blobs.sync().unwrap();
}

#[test]
fn equal_content_is_stored_once() {
    let (dir, blobs) = linux_store();
    let file = dir.path().join("file");
    std::fs::write(&file, b"same").unwrap();
    let first = blobs.put_bytes(b"same").unwrap();
    let second = blobs.put_file(&file).unwrap();
    let third = blobs.put_bytes(b"same").unwrap();
    assert_eq!(first, second);
    assert_eq!(second, third);
    assert_eq!(blobs.iter_digests().unwrap(), vec![first]);
    assert_eq!(temp_entries(&blobs), 0);
}

#[test]
fn a_torn_blob_of_the_wrong_length_is_replaced() {
    let (_dir, blobs) = linux_store();
    let digest = blobs.put_bytes(b"complete content").unwrap();
    let path = blobs.blob_path(&digest);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(
        blobs.read(&digest),
        Err(StoreError::CorruptBlob { .. })
    ));
    blobs.put_bytes(b"complete content").unwrap();
    assert_eq!(blobs.read(&digest).unwrap(), b"complete content");
}

#[test]
fn a_flipped_byte_is_reported_and_never_restored() {
    let (dir, blobs) = linux_store();
    let content = vec![7u8; 100_000];
    let digest = blobs.put_bytes(&content).unwrap();
    flip_byte(&blobs, &digest, 50_000);

    let error = blobs.read(&digest).unwrap_err();
    let StoreError::CorruptBlob { expected, actual } = error else {
        panic!("expected CorruptBlob, got {error:?}")
    };
    assert_eq!(expected, digest);
    assert_ne!(actual, digest);
    assert!(
        error_text(&blobs.verify(&digest))
            .starts_with(&format!("blob {} is corrupt", digest.short()))
    );

    let dest = dir.path().join("restored");
    let error = blobs.restore(&digest, &dest).unwrap_err();
    assert!(matches!(error, StoreError::CorruptBlob { .. }), "{error:?}");
    assert!(!dest.exists(), "a corrupt restore must leave no file");
}

fn error_text(result: &Result<(), StoreError>) -> String {
    match result {
        Ok(()) => String::from("ok"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn a_deleted_blob_is_missing() {
    let (dir, blobs) = linux_store();
    let digest = blobs.put_bytes(b"soon gone").unwrap();
    std::fs::remove_file(blobs.blob_path(&digest)).unwrap();
    assert!(!blobs.contains(&digest));
    let missing = |result: Result<(), StoreError>| matches!(result, Err(StoreError::MissingBlob { expected }) if expected == digest);
    assert!(missing(blobs.read(&digest).map(drop)));
    assert!(missing(blobs.verify(&digest)));
    let dest = dir.path().join("restored");
    assert!(missing(blobs.restore(&digest, &dest)));
    assert!(!dest.exists());
}

#[test]
fn restore_never_overwrites() {
    let (dir, blobs) = linux_store();
    let digest = blobs.put_bytes(b"blob").unwrap();
    let dest = dir.path().join("existing");
    std::fs::write(&dest, b"user data").unwrap();
    assert!(matches!(
        blobs.restore(&digest, &dest),
        Err(StoreError::Io { .. })
    ));
    assert_eq!(std::fs::read(&dest).unwrap(), b"user data");
}

#[test]
fn iteration_skips_what_is_not_a_blob() {
    let (_dir, blobs) = linux_store();
    let mut expected = vec![
        blobs.put_bytes(b"one").unwrap(),
        blobs.put_bytes(b"two").unwrap(),
    ];
    expected.sort();
    std::fs::write(blobs.cas_dir.join("stray"), b"").unwrap();
    std::fs::create_dir(blobs.cas_dir.join("zz")).unwrap();
    std::fs::write(blobs.cas_dir.join("zz").join("not-hex"), b"").unwrap();
    assert_eq!(blobs.iter_digests().unwrap(), expected);
}

#[test]
fn concurrent_puts_from_rayon_threads() {
    for durability in [Durability::FileSystem, Durability::EachFile] {
        let (dir, blobs) = store(durability);
        let sources = dir.path().join("sources");
        std::fs::create_dir(&sources).unwrap();
        let paths: Vec<PathBuf> = (0..200)
            .map(|index| {
                let path = sources.join(format!("file-{index}"));
                // A few identical contents, so that threads also race on dedup.
                let content = format!("content {}\n", index % 180).repeat(index % 7 + 1);
                std::fs::write(&path, content).unwrap();
                path
            })
            .collect();
        let digests: Vec<ContentDigest> = paths
            .par_iter()
            .map(|path| blobs.put_file(path).unwrap())
            .collect();
        blobs.sync().unwrap();
        for (path, digest) in paths.iter().zip(&digests) {
            assert_eq!(*digest, ContentDigest::of(&std::fs::read(path).unwrap()));
            blobs.verify(digest).unwrap();
        }
        let mut distinct = digests.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(blobs.iter_digests().unwrap(), distinct);
        assert_eq!(temp_entries(&blobs), 0);
        assert!(blobs.pending_paths().is_empty());
    }
}

#[test]
fn sync_is_a_no_op_until_something_is_written() {
    let (_dir, blobs) = linux_store();
    assert!(!blobs.unsynced.load(Ordering::Acquire));
    blobs.sync().unwrap();
    blobs.put_bytes(b"x").unwrap();
    assert!(blobs.unsynced.load(Ordering::Acquire));
    blobs.sync().unwrap();
    assert!(!blobs.unsynced.load(Ordering::Acquire));
}

#[test]
fn a_read_only_store_refuses_writes_but_reads() {
    let (dir, blobs) = linux_store();
    let digest = blobs.put_bytes(b"kept").unwrap();
    let reader = FsBlobStore::new(blobs.cas_dir, false);
    assert_eq!(reader.read(&digest).unwrap(), b"kept");
    let error = reader.put_bytes(b"new").unwrap_err();
    assert!(error.to_string().contains("read-only"), "{error}");
    let file = dir.path().join("file");
    std::fs::write(&file, b"new").unwrap();
    assert!(reader.put_file(&file).is_err());
    reader.sync().unwrap();
}

#[test]
fn stale_temps_are_removed() {
    let (_dir, blobs) = linux_store();
    std::fs::write(blobs.temp_dir.join("4242-0"), b"half a blob").unwrap();
    blobs.remove_stale_temps().unwrap();
    assert_eq!(temp_entries(&blobs), 0);
}

#[test]
fn a_blob_found_corrupt_is_rewritten_by_the_next_put() {
    for durability in [Durability::FileSystem, Durability::EachFile] {
        let (dir, blobs) = store(durability);
        let small = b"same length, flipped".to_vec();
        let large = vec![3u8; 2 * SMALL_FILE_LIMIT as usize];
        let small_digest = blobs.put_bytes(&small).unwrap();
        let source = dir.path().join("large");
        std::fs::write(&source, &large).unwrap();
        let large_digest = blobs.put_file(&source).unwrap();
        flip_byte(&blobs, &small_digest, 3);
        flip_byte(&blobs, &large_digest, 12_345);

        // Without having seen the damage, a put trusts the present blob.
        blobs.put_bytes(&small).unwrap();
        assert!(blobs.read(&small_digest).is_err());

        // Once a read, a restore or a check has seen it, the put rewrites it.
        assert!(matches!(
            blobs.check_blob(&small_digest).unwrap(),
            BlobCheck::Corrupt { length, .. } if length == small.len() as u64
        ));
        let dest = dir.path().join("restored");
        assert!(blobs.restore(&large_digest, &dest).is_err());
        blobs.put_bytes(&small).unwrap();
        blobs.put_file(&source).unwrap();
        assert_eq!(blobs.read(&small_digest).unwrap(), small);
        assert_eq!(
            blobs.check_blob(&large_digest).unwrap(),
            BlobCheck::Intact {
                length: large.len() as u64
            }
        );
        blobs.sync().unwrap();
    }
}

#[test]
fn check_remove_and_sizes() {
    let (_dir, blobs) = linux_store();
    let one = blobs.put_bytes(b"one").unwrap();
    let two = blobs.put_bytes(b"second").unwrap();
    assert_eq!(
        blobs.check_blob(&one).unwrap(),
        BlobCheck::Intact { length: 3 }
    );
    let mut sizes = vec![(one, 3), (two, 6)];
    sizes.sort();
    assert_eq!(blobs.sizes().unwrap(), sizes);
    assert_eq!(blobs.remove(&one).unwrap(), 3);
    assert_eq!(blobs.remove(&one).unwrap(), 0);
    assert_eq!(blobs.check_blob(&one).unwrap(), BlobCheck::Missing);
    // The emptied fan-out directory went with it.
    assert!(!blobs.blob_path(&one).parent().unwrap().exists());
    assert_eq!(blobs.sizes().unwrap(), [(two, 6)]);
    let reader = FsBlobStore::new(blobs.cas_dir.clone(), false);
    assert!(reader.remove(&two).is_err());
    assert!(blobs.contains(&two));
}
