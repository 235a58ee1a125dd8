//! Tests of the blob CAS: round trips, dedup, corruption, loss, concurrency,
//! adoption.

use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};

use rayon::prelude::*;

use super::adopt::copy_after_link_error;
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

/// A fan-out directory this handle made once, and `remove` took with its
/// last blob, is made again by the next put into it: the handle remembers
/// the directories it made, and must not trust that memory past a rename
/// that finds one gone. Likewise one removed from outside.
#[test]
fn a_fan_out_removed_with_its_last_blob_is_made_again() {
    let (_dir, blobs) = linux_store();
    let digest = blobs.put_bytes(b"alone in its fan-out").unwrap();
    let fan_out = blobs.blob_path(&digest).parent().unwrap().to_owned();
    assert_eq!(blobs.remove(&digest).unwrap(), 20);
    assert!(!fan_out.exists(), "the emptied fan-out went with it");
    assert_eq!(blobs.put_bytes(b"alone in its fan-out").unwrap(), digest);
    assert_eq!(blobs.read(&digest).unwrap(), b"alone in its fan-out");
    std::fs::remove_file(blobs.blob_path(&digest)).unwrap();
    std::fs::remove_dir(&fan_out).unwrap();
    assert_eq!(blobs.put_bytes(b"alone in its fan-out").unwrap(), digest);
    assert!(blobs.contains(&digest));
    assert_eq!(temp_entries(&blobs), 0, "no temp left behind");
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
fn a_few_blobs_are_fsynced_each_and_many_with_one_syncfs() {
    let (_dir, blobs) = linux_store();
    // A few: each is remembered, and the sync takes them all.
    for index in 0..3 {
        blobs.put_bytes(format!("few {index}").as_bytes()).unwrap();
    }
    assert_eq!(blobs.pending_paths().len(), 3);
    blobs.sync().unwrap();
    assert!(blobs.pending_paths().is_empty());
    assert!(!blobs.unsynced.load(Ordering::Acquire));
    // Many: the list stops one past the limit (memory stays bounded), and
    // the sync that sees it that long syncs the whole file system.
    for index in 0..(EACH_FILE_AT_MOST * 4) {
        blobs.put_bytes(format!("many {index}").as_bytes()).unwrap();
    }
    assert_eq!(blobs.pending_paths().len(), EACH_FILE_AT_MOST + 1);
    blobs.sync().unwrap();
    assert!(blobs.pending_paths().is_empty());
    assert!(!blobs.unsynced.load(Ordering::Acquire));
    for index in 0..(EACH_FILE_AT_MOST * 4) {
        let bytes = format!("many {index}");
        assert_eq!(
            blobs.read(&ContentDigest::of(bytes.as_bytes())).unwrap(),
            bytes.as_bytes()
        );
    }
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
    assert!(reader.adopt_file(&file).is_err());
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

/// Content past the small-file limit, different for each `seed`.
fn large_content(seed: u8) -> Vec<u8> {
    (0..3 * 1024 * 1024 + 17)
        .map(|n: u32| (n % 251) as u8 ^ seed)
        .collect()
}

/// Writes `content` at `dir/name` with `mode`.
fn source_file(dir: &Path, name: &str, content: &[u8], mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

fn io_failure(result: Result<ContentDigest, StoreError>) -> (PathBuf, String) {
    match result {
        Err(StoreError::Io { path, source }) => (path, source.to_string()),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[test]
fn adopting_a_large_file_links_it_and_clears_its_write_bits() {
    for durability in [Durability::FileSystem, Durability::EachFile] {
        let (dir, blobs) = store(durability);
        let content = large_content(1);
        let source = source_file(dir.path(), "output.bin", &content, 0o4775);

        let digest = blobs.adopt_file(&source).unwrap();
        assert_eq!(digest, ContentDigest::of(&content));
        let blob = blobs.blob_path(&digest);
        // One inode under two names: nothing was copied.
        assert_eq!(inode(&blob), inode(&source));
        assert_eq!(std::fs::metadata(&source).unwrap().nlink(), 2);
        // Read and exec bits kept; write and set-id bits gone.
        assert_eq!(mode(&source), 0o555);
        assert_eq!(std::fs::read(&source).unwrap(), content);
        assert_eq!(blobs.read(&digest).unwrap(), content);
        assert_eq!(temp_entries(&blobs), 0);
        // The next sync covers it like any other write.
        match durability {
            Durability::FileSystem => assert!(blobs.unsynced.load(Ordering::Acquire)),
            Durability::EachFile => assert_eq!(*blobs.pending_paths(), [blob]),
        }
        blobs.sync().unwrap();
        assert!(blobs.pending_paths().is_empty());
    }
}

#[test]
fn adoption_and_put_file_agree_on_digests_around_the_small_file_limit() {
    let (dir, adopted) = linux_store();
    let (_other, copied) = linux_store();
    let limit = SMALL_FILE_LIMIT as usize;
    for (index, length) in [0, 1, limit - 1, limit, limit + 1, 2 * limit + 3]
        .into_iter()
        .enumerate()
    {
        let content: Vec<u8> = (0..length).map(|n| (n % 241) as u8).collect();
        let name = format!("file-{index}");
        let for_put = source_file(dir.path(), &format!("{name}-put"), &content, 0o644);
        let for_adopt = source_file(dir.path(), &name, &content, 0o644);
        let expected = ContentDigest::of(&content);
        assert_eq!(copied.put_file(&for_put).unwrap(), expected, "{length} B");
        assert_eq!(
            adopted.adopt_file(&for_adopt).unwrap(),
            expected,
            "{length} B"
        );
        let linked = inode(&adopted.blob_path(&expected)) == inode(&for_adopt);
        assert_eq!(linked, length > limit, "{length} B linked: {linked}");
    }
}

#[test]
fn adopting_a_small_file_copies_it_and_leaves_it_alone() {
    let (dir, blobs) = linux_store();
    let source = source_file(dir.path(), "small", b"a small output", 0o644);
    let digest = blobs.adopt_file(&source).unwrap();
    assert_eq!(digest, ContentDigest::of(b"a small output"));
    let blob = blobs.blob_path(&digest);
    assert_ne!(inode(&blob), inode(&source));
    assert_eq!(mode(&source), 0o644);
    assert_eq!(mode(&blob), 0o444);
}

#[test]
fn adopting_content_already_stored_keeps_the_blob_and_leaves_the_file_alone() {
    let (dir, blobs) = linux_store();
    let content = large_content(2);
    let digest = blobs.put_bytes(&content).unwrap();
    let blob_inode = inode(&blobs.blob_path(&digest));
    blobs.sync().unwrap();
    let source = source_file(dir.path(), "again.bin", &content, 0o644);

    assert_eq!(blobs.adopt_file(&source).unwrap(), digest);
    assert_eq!(inode(&blobs.blob_path(&digest)), blob_inode);
    assert_eq!(mode(&source), 0o644);
    assert_eq!(std::fs::metadata(&source).unwrap().nlink(), 1);
    // Another thread may have stored it a moment ago: the caller's sync
    // must still cover it.
    assert!(blobs.unsynced.load(Ordering::Acquire));
    assert_eq!(temp_entries(&blobs), 0);
}

#[test]
fn a_file_with_another_name_is_copied_not_linked() {
    let (dir, blobs) = linux_store();
    let content = large_content(3);
    // A job that hard-linked one of its inputs into its output.
    let input = source_file(dir.path(), "input.bin", &content, 0o644);
    let output = dir.path().join("output.bin");
    std::fs::hard_link(&input, &output).unwrap();

    let digest = blobs.adopt_file(&output).unwrap();
    assert_eq!(digest, ContentDigest::of(&content));
    assert_ne!(inode(&blobs.blob_path(&digest)), inode(&input));
    assert_eq!(mode(&input), 0o644);
    assert_eq!(std::fs::metadata(&input).unwrap().nlink(), 2);
    assert_eq!(temp_entries(&blobs), 0);
}

#[test]
fn a_file_that_cannot_be_linked_is_copied() {
    let (dir, blobs) = linux_store();
    let content = large_content(4);
    let source = source_file(dir.path(), "elsewhere.bin", &content, 0o644);
    // As if the output were on another file system than the store.
    let digest = blobs
        .adopt(&source, |_, _| {
            Err(std::io::Error::from_raw_os_error(libc::EXDEV))
        })
        .unwrap();
    assert_eq!(digest, ContentDigest::of(&content));
    let blob = blobs.blob_path(&digest);
    assert_ne!(inode(&blob), inode(&source));
    assert_eq!(mode(&source), 0o644);
    assert_eq!(mode(&blob), 0o444);
    assert_eq!(blobs.read(&digest).unwrap(), content);
    assert_eq!(temp_entries(&blobs), 0);
}

#[test]
fn a_link_that_fails_for_lack_of_space_is_an_error_naming_the_file() {
    let (dir, blobs) = linux_store();
    let source = source_file(dir.path(), "big.bin", &large_content(5), 0o644);
    let result = blobs.adopt(&source, |_, _| {
        Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
    });
    let (path, message) = io_failure(result);
    assert_eq!(path, source);
    assert!(message.contains("cannot link it into"), "{message}");
    assert!(blobs.iter_digests().unwrap().is_empty());
    assert_eq!(mode(&source), 0o644);
    assert_eq!(temp_entries(&blobs), 0);
}

#[test]
fn which_link_errors_fall_back_to_a_copy() {
    let error = std::io::Error::from_raw_os_error;
    for errno in [libc::EXDEV, libc::EPERM, libc::EMLINK, libc::EACCES] {
        assert!(copy_after_link_error(&error(errno)), "errno {errno}");
    }
    for errno in [libc::ENOSPC, libc::EDQUOT, libc::EROFS, libc::EIO] {
        assert!(!copy_after_link_error(&error(errno)), "errno {errno}");
    }
}

#[test]
fn a_file_changed_while_it_is_hashed_is_refused() {
    let (dir, blobs) = linux_store();
    let content = large_content(6);
    let append: fn(&File) = |file| {
        file.write_all_at(b"more", 3 * 1024 * 1024 + 17).unwrap();
    };
    // Same size and bytes, another mtime.
    let touch: fn(&File) = |file| {
        file.set_modified(std::time::UNIX_EPOCH).unwrap();
    };
    for (name, change) in [("appended", append), ("touched", touch)] {
        let path = source_file(dir.path(), name, &content, 0o644);
        let source = File::open(&path).unwrap();
        let before = source.metadata().unwrap();
        // What a writer does between the `fstat` before hashing and the one after.
        change(&OpenOptions::new().write(true).open(&path).unwrap());
        let result = blobs.adopt_large(source, &path, &before, |source, link| {
            std::fs::hard_link(source, link)
        });
        let (error_path, message) = io_failure(result);
        assert_eq!(error_path, path, "{name}");
        assert!(
            message.contains("changed while it was being stored"),
            "{name}: {message}"
        );
        assert_eq!(mode(&path), 0o644, "{name}");
        assert_eq!(std::fs::metadata(&path).unwrap().nlink(), 1, "{name}");
    }
    assert!(blobs.iter_digests().unwrap().is_empty());
    assert_eq!(temp_entries(&blobs), 0);
}

#[test]
fn an_adopted_file_written_in_place_is_a_corrupt_blob_never_served() {
    let (dir, blobs) = linux_store();
    let content = large_content(7);
    let source = source_file(dir.path(), "data.bin", &content, 0o644);
    let digest = blobs.adopt_file(&source).unwrap();

    // Someone who may write anyway (the superuser, or after a chmod) edits
    // the data file in place: the blob is that file.
    std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file = OpenOptions::new().write(true).open(&source).unwrap();
    file.write_all_at(b"edited", 2 * 1024 * 1024).unwrap();
    drop(file);

    assert!(matches!(
        blobs.read(&digest),
        Err(StoreError::CorruptBlob { expected, .. }) if expected == digest
    ));
    let dest = dir.path().join("restored");
    assert!(matches!(
        blobs.restore(&digest, &dest),
        Err(StoreError::CorruptBlob { expected, .. }) if expected == digest
    ));
    assert!(!dest.exists(), "a corrupt restore must leave no file");
    assert!(matches!(
        blobs.verify(&digest),
        Err(StoreError::CorruptBlob { .. })
    ));

    // The rerun's output replaces the damaged blob, and the edited data
    // file no longer is the blob.
    let rerun = source_file(dir.path(), "rerun.bin", &content, 0o644);
    assert_eq!(blobs.adopt_file(&rerun).unwrap(), digest);
    assert_eq!(blobs.read(&digest).unwrap(), content);
    assert_eq!(inode(&blobs.blob_path(&digest)), inode(&rerun));
    assert_ne!(std::fs::read(&source).unwrap(), content);
}

#[test]
fn concurrent_adoptions_of_one_content() {
    let (dir, blobs) = linux_store();
    let content = large_content(8);
    let paths: Vec<PathBuf> = (0..6)
        .map(|index| source_file(dir.path(), &format!("copy-{index}"), &content, 0o644))
        .collect();
    let digests: Vec<ContentDigest> = paths
        .par_iter()
        .map(|path| blobs.adopt_file(path).unwrap())
        .collect();
    let digest = ContentDigest::of(&content);
    assert!(digests.iter().all(|each| *each == digest));
    assert_eq!(blobs.iter_digests().unwrap(), [digest]);
    blobs.verify(&digest).unwrap();
    assert_eq!(temp_entries(&blobs), 0);
    // Each source is intact, whichever became the blob.
    for path in &paths {
        assert_eq!(std::fs::read(path).unwrap(), content);
    }
}

/// Runs `work` on another thread and panics if it does not finish within
/// 20 s: a read blocked on a FIFO fails the test instead of hanging it.
fn within_time<T: Send + 'static>(what: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(work());
    });
    receiver
        .recv_timeout(std::time::Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} did not return within 20 s (blocked?)"))
}

/// Plants something other than a regular file under `path`, a blob's name:
/// `fifo`, `directory` (a tree with a read-only subdirectory and a link),
/// `symlink` (to a file holding the right content, elsewhere).
fn plant(path: &Path, kind: &str, outside: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    match kind {
        "fifo" => {
            let status = std::process::Command::new("mkfifo")
                .arg(path)
                .status()
                .unwrap();
            assert!(status.success());
        }
        "directory" => {
            std::fs::create_dir_all(path.join("sub")).unwrap();
            std::fs::write(path.join("sub/file"), "x").unwrap();
            std::os::unix::fs::symlink(outside, path.join("link")).unwrap();
            std::fs::set_permissions(path.join("sub"), std::fs::Permissions::from_mode(0o555))
                .unwrap();
        }
        "symlink" => std::os::unix::fs::symlink(outside, path).unwrap(),
        other => panic!("{other}"),
    }
}

#[test]
fn a_fifo_directory_or_link_under_a_blobs_name_is_never_read_and_a_put_replaces_it() {
    for (kind, described) in [
        ("fifo", "a FIFO"),
        ("directory", "a directory"),
        ("symlink", "a symbolic link"),
    ] {
        let (dir, blobs) = linux_store();
        let blobs = std::sync::Arc::new(blobs);
        let content = b"the blob's content".to_vec();
        let digest = ContentDigest::of(&content);
        // A file elsewhere with the right bytes: a link to it is still not
        // a blob, and nothing done to the store reaches it.
        let outside = dir.path().join("outside");
        std::fs::write(&outside, &content).unwrap();
        let path = blobs.blob_path(&digest);
        plant(&path, kind, &outside);

        let checked = {
            let blobs = blobs.clone();
            within_time("check_blob", move || blobs.check_blob(&digest).unwrap())
        };
        assert_eq!(checked, BlobCheck::NotAFile { kind: described }, "{kind}");
        let verified = {
            let blobs = blobs.clone();
            within_time("verify", move || blobs.verify(&digest))
        };
        let message = verified.unwrap_err().to_string();
        assert!(
            message.contains(&format!("is {described}, not a regular file"))
                && message.contains(&path.display().to_string()),
            "{kind}: {message}"
        );
        let read = {
            let blobs = blobs.clone();
            within_time("read", move || blobs.read(&digest))
        };
        assert!(matches!(read, Err(StoreError::NotAFile { .. })), "{kind}");
        let streamed = {
            let blobs = blobs.clone();
            within_time("open_verified", move || {
                blobs
                    .open_verified(&digest)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        };
        assert!(
            streamed
                .as_ref()
                .is_err_and(|message| message.contains("not a regular file")),
            "{kind}: {streamed:?}"
        );
        let dest = dir.path().join("restored");
        let restored = {
            let (blobs, dest) = (blobs.clone(), dest.clone());
            within_time("restore", move || blobs.restore(&digest, &dest))
        };
        assert!(
            matches!(restored, Err(StoreError::NotAFile { .. })),
            "{kind}"
        );
        assert!(!dest.exists(), "{kind}");
        assert!(!blobs.contains(&digest), "{kind}");
        assert_eq!(blobs.sizes().unwrap(), [(digest, 0)], "{kind}");

        // The job that reruns stores its output: the entry is replaced.
        assert_eq!(blobs.put_bytes(&content).unwrap(), digest, "{kind}");
        assert_eq!(blobs.read(&digest).unwrap(), content, "{kind}");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(std::fs::read(&outside).unwrap(), content, "{kind}");
        blobs.sync().unwrap();
    }
}

#[test]
fn remove_takes_whatever_is_under_a_blobs_name() {
    for kind in ["fifo", "directory", "symlink"] {
        let (dir, blobs) = linux_store();
        let digest = ContentDigest::of(kind.as_bytes());
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "kept").unwrap();
        plant(&blobs.blob_path(&digest), kind, &outside);
        assert_eq!(blobs.remove(&digest).unwrap(), 0, "{kind}");
        assert!(
            std::fs::symlink_metadata(blobs.blob_path(&digest)).is_err(),
            "{kind}"
        );
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "kept");
    }
}

/// The group and other bits of the blob `digest`.
fn shared_bits(blobs: &FsBlobStore, digest: &ContentDigest) -> u32 {
    mode(&blobs.blob_path(digest)) & 0o077
}

#[test]
fn a_blob_is_never_more_readable_than_its_file() {
    let (dir, blobs) = linux_store();
    let small = b"private small".to_vec();
    let large = large_content(7);
    for (name, content) in [("small", &small), ("large", &large)] {
        for (how, adopt) in [("put", false), ("adopt", true)] {
            let file = source_file(dir.path(), &format!("{name}-{how}"), content, 0o600);
            let digest = if adopt {
                blobs.adopt_file(&file).unwrap()
            } else {
                blobs.put_file(&file).unwrap()
            };
            let blob = blobs.blob_path(&digest);
            assert_eq!(mode(&blob), 0o400, "{name} {how}: the blob of a 0600 file");
            blobs.remove(&digest).unwrap();
        }
    }
    // A readable file's blob is readable: the umask aside, 0444 as before.
    let open = source_file(dir.path(), "open", b"open", 0o644);
    let digest = blobs.put_file(&open).unwrap();
    assert_eq!(mode(&blobs.blob_path(&digest)) & 0o444, 0o444 & !umask());
    // A file its owner cannot read still gives a blob cairn can read.
    let write_only = source_file(dir.path(), "write-only", &large_content(9), 0o200);
    let digest = blobs.adopt_file(&write_only).unwrap();
    assert_eq!(mode(&blobs.blob_path(&digest)), 0o400);
    assert_eq!(blobs.read(&digest).unwrap(), large_content(9));
}

/// The process's umask, as a file created with mode 0777 shows it
/// (`umask(2)` would change it for the test's other threads).
fn umask() -> u32 {
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe");
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o777)
        .open(&probe)
        .unwrap();
    !mode(&probe) & 0o777
}

#[test]
fn files_of_one_content_share_a_blob_with_the_most_restrictive_mode() {
    let (dir, blobs) = linux_store();
    // Copied blobs: narrowed in place.
    let small = b"same bytes".to_vec();
    let open = source_file(dir.path(), "open", &small, 0o644);
    let digest = blobs.put_file(&open).unwrap();
    assert_eq!(shared_bits(&blobs, &digest), 0o044 & !umask());
    let private = source_file(dir.path(), "private", &small, 0o600);
    assert_eq!(blobs.put_file(&private).unwrap(), digest);
    assert_eq!(mode(&blobs.blob_path(&digest)), 0o400);
    // A later, more open file (or bytes) does not widen it again.
    assert_eq!(blobs.put_file(&open).unwrap(), digest);
    assert_eq!(blobs.put_bytes(&small).unwrap(), digest);
    assert_eq!(mode(&blobs.blob_path(&digest)), 0o400);

    // An adopted blob is another partition's data file: it is replaced by
    // the private file's own inode, and that data file keeps its mode.
    let large = large_content(3);
    let first = source_file(dir.path(), "first", &large, 0o644);
    let digest = blobs.adopt_file(&first).unwrap();
    assert_eq!(inode(&blobs.blob_path(&digest)), inode(&first));
    let second = source_file(dir.path(), "second", &large, 0o600);
    assert_eq!(blobs.adopt_file(&second).unwrap(), digest);
    let blob = blobs.blob_path(&digest);
    assert_eq!(mode(&blob), 0o400);
    assert_eq!(inode(&blob), inode(&second));
    assert_eq!(
        mode(&first) & 0o444,
        0o444,
        "the first data file is untouched"
    );
    assert_eq!(mode(&second), 0o400);
    assert_eq!(blobs.read(&digest).unwrap(), large);
    blobs.sync().unwrap();
}

#[test]
fn concurrent_puts_of_one_content_with_two_modes_leave_the_narrow_one() {
    let (dir, blobs) = linux_store();
    let content = b"raced".to_vec();
    let files: Vec<PathBuf> = (0..32)
        .map(|n| {
            let mode = if n % 2 == 0 { 0o644 } else { 0o600 };
            source_file(dir.path(), &format!("f{n}"), &content, mode)
        })
        .collect();
    let digests: Vec<ContentDigest> = files
        .par_iter()
        .map(|file| blobs.put_file(file).unwrap())
        .collect();
    assert!(digests.iter().all(|digest| *digest == digests[0]));
    assert_eq!(mode(&blobs.blob_path(&digests[0])), 0o400);
}

#[test]
fn a_restore_keeps_holes_and_every_byte() {
    let (dir, blobs) = linux_store();
    // 16 MiB: data at the start, in the middle (not block-aligned) and at
    // the end, holes between.
    let length = 16 * 1024 * 1024;
    let source = dir.path().join("sparse");
    let file = File::create(&source).unwrap();
    file.set_len(length).unwrap();
    file.write_all_at(b"head", 0).unwrap();
    file.write_all_at(b"middle", 8 * 1024 * 1024 + 1000)
        .unwrap();
    file.write_all_at(b"tail", length - 4).unwrap();
    drop(file);
    let digest = blobs.put_file(&source).unwrap();
    let dest = dir.path().join("restored");
    blobs.restore(&digest, &dest).unwrap();
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(&source).unwrap()
    );
    let allocated = std::fs::metadata(&dest).unwrap().blocks() * 512;
    assert!(
        allocated < 1024 * 1024,
        "{allocated} bytes allocated for a 16 MiB file of 14 bytes of data"
    );
    // A file ending in a hole has its full length.
    let ends_in_hole = dir.path().join("ends-in-hole");
    let file = File::create(&ends_in_hole).unwrap();
    file.set_len(3 * 1024 * 1024).unwrap();
    file.write_all_at(b"only this", 5).unwrap();
    drop(file);
    let digest = blobs.put_file(&ends_in_hole).unwrap();
    let dest = dir.path().join("restored-2");
    blobs.restore(&digest, &dest).unwrap();
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), 3 * 1024 * 1024);
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(&ends_in_hole).unwrap()
    );
}
