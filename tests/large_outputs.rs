//! Large outputs enter the store by adoption (docs/internals.md, the store):
//! the data file is its blob's inode, read-only; the stat cache records it
//! after the link, so a no-op build neither reruns nor re-hashes it; and a
//! data file edited in place (which edits the blob too) is rebuilt, never
//! restored from the damaged blob.

mod common;

use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;

use cairn_engine::ContentDigest;
use cairn_engine::record::StatEntry;
use cairn_store::{OpenMode, StatCache, Store};
use common::{Project, refs};

/// One partition: `big.csv` (3.4 MB, past the store's 1 MiB small-file
/// limit) and `small.txt`, both dated 2020 so that no stat-cache entry is
/// racy.
const GRAPH: &str = r#"
[datasets.big]
[dimensions.part]
values = ["one"]
[jobs.big]
outputs = ["big/part={part}"]
run = ["sh", "-c", "seq 1 500000 > \"$CAIRN_OUT/big.csv\"; echo small > \"$CAIRN_OUT/small.txt\"; touch -d 2020-01-01 \"$CAIRN_OUT/big.csv\" \"$CAIRN_OUT/small.txt\""]
"#;

const PARTITION: &str = "big/part=one";
const BIG: &str = "data/big/part=one/big.csv";
const SMALL: &str = "data/big/part=one/small.txt";

fn built() -> (Project, Vec<u8>) {
    let p = Project::with_graph(GRAPH);
    let first = p.build(&[]);
    first.assert_code(0);
    first.assert_counts(1, 1, 0, 0, 0);
    let content = p.read(BIG);
    assert!(content.len() > 1024 * 1024, "{} bytes", content.len());
    (p, content)
}

fn blob_path(p: &Project, content: &[u8]) -> PathBuf {
    let hex = ContentDigest::of(content).to_hex();
    p.file(&format!(".cairn/cas/{}/{}", &hex[..2], &hex[2..]))
}

/// The stat-cache entry of a data file.
fn stat_entry(p: &Project, relative: &str) -> StatEntry {
    let store = Store::open(&p.file(".cairn"), OpenMode::ReadOnly, &mut |_| {}).expect("store");
    let key = p.file(relative).to_string_lossy().into_owned();
    store
        .catalog()
        .stat(&key)
        .expect("read the stat cache")
        .unwrap_or_else(|| panic!("no stat-cache entry for {key}"))
}

#[test]
fn a_large_output_is_its_read_only_blob_and_a_no_op_build_leaves_it_alone() {
    let (p, content) = built();
    let big = std::fs::metadata(p.file(BIG)).expect("big.csv");
    let blob = std::fs::metadata(blob_path(&p, &content)).expect("its blob");
    assert_eq!((big.dev(), big.ino()), (blob.dev(), blob.ino()));
    assert_eq!(big.nlink(), 2);
    assert_eq!(big.permissions().mode() & 0o222, 0, "big.csv is writable");
    // A small output is copied into the store and stays an ordinary file.
    let small = std::fs::metadata(p.file(SMALL)).expect("small.txt");
    assert_eq!(small.nlink(), 1);
    assert_ne!(small.permissions().mode() & 0o200, 0);

    // The stat cache saw the file after the link and the chmod: the next
    // build trusts it without reading it.
    let recorded = stat_entry(&p, BIG);
    assert_eq!(
        (
            recorded.size,
            recorded.mtime_ns,
            recorded.ctime_ns,
            recorded.inode
        ),
        (
            big.len(),
            i128::from(big.mtime()) * 1_000_000_000 + i128::from(big.mtime_nsec()),
            i128::from(big.ctime()) * 1_000_000_000 + i128::from(big.ctime_nsec()),
            big.ino()
        ),
        "the stat cache recorded big.csv before it was adopted"
    );
    assert_eq!(recorded.digest, ContentDigest::of(&content));

    let again = p.build(&[]);
    again.assert_code(0);
    again.assert_counts(1, 0, 1, 0, 0);
    assert_eq!(again.outputs("cached"), refs([PARTITION]));
    assert_eq!(again.outputs("restored"), refs([]));
    // Not re-hashed: a fresh digest would have been recorded anew.
    assert_eq!(stat_entry(&p, BIG), recorded);
    assert_eq!(p.read(BIG), content);
    p.cairn(&["store", "verify"]).assert_code(0);
}

#[test]
fn a_large_data_file_edited_in_place_is_rebuilt_not_restored_from_its_blob() {
    let (p, content) = built();
    // Whoever may write it anyway (the superuser, or after a chmod) edits
    // the data file in place: its blob is the same inode.
    let big = p.file(BIG);
    std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .expect("open big.csv");
    file.write_all_at(b"edited", 0).expect("edit big.csv");
    drop(file);

    let verify = p.cairn(&["store", "verify"]);
    verify.assert_code(3);
    assert!(verify.stdout.contains(PARTITION), "{}", verify.stdout);

    let rebuild = p.build(&[]);
    rebuild.assert_code(0);
    rebuild.assert_counts(1, 1, 0, 0, 0);
    assert_eq!(rebuild.outputs("executed"), refs([PARTITION]));
    assert_eq!(p.read(BIG), content, "the edited bytes were served");
    // The rerun's output replaced the damaged blob.
    p.cairn(&["store", "verify"]).assert_code(0);
    let again = p.build(&[]);
    again.assert_counts(1, 0, 1, 0, 0);
}
