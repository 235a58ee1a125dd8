//! The blob store and materialization under hostile or unusual conditions
//! (docs/reliability.md, promises 2, 5 and 6). Rows: store-entries,
//! sparse-restore, shared-data.
//!
//! - A FIFO, a directory tree or a symbolic link under a blob's name is
//!   damage like a corrupt blob: `store verify`, a restoring build and
//!   `cairn logs` report it without blocking (a FIFO opened for reading
//!   would wait for a writer forever, SIGTERM or not), never read it, and
//!   `--repair` (or the rerun of its job) replaces it. A blob that grew is
//!   said to have grown.
//! - A restore keeps a sparse output's holes.
//! - A second store building into a `data/` in use is refused.

mod common;

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{CAIRN, Project, Run, clean_ref, snapshot, str_field};

/// Runs `cairn ARGS` in the project, killing it and failing the test if it
/// has not exited within 60 s: a command blocked on a FIFO fails rather
/// than hangs the suite.
fn cairn_within(p: &Project, args: &[&str]) -> Run {
    let mut child = Command::new(CAIRN)
        .args(args)
        .current_dir(p.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn");
    // Drained on threads, so that a chatty command cannot fill a pipe.
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for cairn") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cairn {args:?} did not exit within 60 s (blocked on the store?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        code: status.code().expect("cairn exited"),
        stdout: stdout.join().expect("stdout"),
        stderr: stderr.join().expect("stderr"),
    }
}

/// A 2-day x 2-station podcast copy (10 actions), built.
fn built() -> Project {
    let p = Project::podcast(2, 2);
    let build = p.build(&[]);
    build.assert_code(0);
    build.assert_counts(10, 10, 0, 0, 0);
    p
}

/// The blob digest of the first file of `partition`'s current output.
fn first_blob(p: &Project, partition: &str) -> String {
    let events = p.log(&["--partition", partition, "--kind", "ActionSucceeded"]);
    let last = events.last().expect("a successful run");
    let output = last["manifest"]["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .find(|output| output["partition"] == partition)
        .expect("the output");
    str_field(&output["files"][0], "digest").to_owned()
}

fn blob_path(p: &Project, digest: &str) -> PathBuf {
    p.file(&format!(".cairn/cas/{}/{}", &digest[..2], &digest[2..]))
}

/// Replaces the blob at `path` with `kind`: `fifo`, `directory` (a tree),
/// `symlink` (to a copy of the blob's bytes outside the store).
fn plant(path: &Path, kind: &str) {
    let copy = path.with_extension("outside");
    std::fs::copy(path, &copy).expect("copy the blob");
    std::fs::remove_file(path).expect("remove the blob");
    match kind {
        "fifo" => {
            let status = Command::new("mkfifo").arg(path).status().expect("mkfifo");
            assert!(status.success());
            std::fs::remove_file(&copy).expect("remove the copy");
        }
        "directory" => {
            std::fs::create_dir_all(path.join("sub")).expect("mkdir");
            std::fs::rename(&copy, path.join("sub/file")).expect("move the copy");
        }
        "symlink" => {
            let outside = path.parent().unwrap().parent().unwrap().parent().unwrap();
            let target = outside.join("outside-blob");
            std::fs::rename(&copy, &target).expect("move the copy");
            std::os::unix::fs::symlink(&target, path).expect("symlink");
        }
        other => panic!("{other}"),
    }
}

fn described(kind: &str) -> &'static str {
    match kind {
        "fifo" => "a FIFO",
        "directory" => "a directory",
        "symlink" => "a symbolic link",
        other => panic!("{other}"),
    }
}

#[test]
fn store_entries_a_fifo_directory_or_link_blob_is_reported_and_repair_reruns_its_job() {
    for kind in ["fifo", "directory", "symlink"] {
        let p = built();
        let data = snapshot(&p.file("data"));
        let victim = clean_ref("2024-01-01", "S001");
        let digest = first_blob(&p, &victim);
        plant(&blob_path(&p, &digest), kind);

        let verify = cairn_within(&p, &["store", "verify"]);
        verify.assert_code(3);
        assert_eq!(
            verify.stdout,
            format!(
                "blob {}… is {}, not a regular file; partition {victim} is affected\n",
                &digest[..12],
                described(kind)
            ),
            "{kind}"
        );
        let repair = cairn_within(&p, &["store", "verify", "--repair"]);
        repair.assert_code(3);
        assert!(
            repair.stdout.ends_with("will be rebuilt (blob removed)\n"),
            "{kind}: {}",
            repair.stdout
        );
        assert!(
            std::fs::symlink_metadata(blob_path(&p, &digest)).is_err(),
            "{kind}: repair removed it"
        );
        let rebuild = p.build(&[]);
        rebuild.assert_code(0);
        assert_eq!(
            rebuild.outputs("executed"),
            BTreeSet::from([victim.clone()]),
            "{kind}"
        );
        assert_eq!(snapshot(&p.file("data")), data, "{kind}");
        cairn_within(&p, &["store", "verify"]).assert_code(0);
    }
}

#[test]
fn store_entries_a_restoring_build_reruns_the_job_of_a_fifo_or_directory_blob() {
    for kind in ["fifo", "directory", "symlink"] {
        let p = built();
        let data = snapshot(&p.file("data"));
        let victim = clean_ref("2024-01-02", "S002");
        let digest = first_blob(&p, &victim);
        plant(&blob_path(&p, &digest), kind);
        std::fs::remove_dir_all(p.file("data")).expect("remove data");

        let run = cairn_within(&p, &["build", "--json"]);
        let rebuild = common::Build::new(run);
        rebuild.assert_code(0);
        assert_eq!(
            rebuild.outputs("executed"),
            BTreeSet::from([victim.clone()]),
            "{kind}: only the job of the bad blob reruns"
        );
        assert_eq!(rebuild.outputs("restored").len(), 9, "{kind}");
        assert_eq!(snapshot(&p.file("data")), data, "{kind}");
        // The rerun replaced the entry with the blob.
        assert!(
            std::fs::symlink_metadata(blob_path(&p, &digest))
                .expect("blob")
                .is_file(),
            "{kind}"
        );
        cairn_within(&p, &["store", "verify"]).assert_code(0);
        // And the next build, with the data in place, has nothing to do.
        p.build(&[]).assert_counts(10, 0, 10, 0, 0);
    }
}

#[test]
fn store_entries_cairn_logs_of_a_fifo_log_blob_fails_without_blocking() {
    let p = Project::with_graph(
        r#"
[datasets.shout]
[dimensions.day]
values = ["mon"]
[jobs.shout]
outputs = ["shout/day={day}"]
run = ["sh", "-c", "echo 'the captured stdout'; echo done > \"$CAIRN_OUT/v\""]
"#,
    );
    p.build(&[]).assert_code(0);
    let succeeded = p.log(&["--kind", "ActionSucceeded"]);
    let stdout = str_field(&succeeded[0]["manifest"], "stdout").to_owned();
    plant(&blob_path(&p, &stdout), "fifo");
    let run = cairn_within(&p, &["logs", "shout/day=mon"]);
    run.assert_code(3);
    assert!(run.stdout.is_empty(), "printed {}", run.stdout);
    assert!(
        run.stderr.contains(&format!(
            "blob {} is a FIFO, not a regular file",
            &stdout[..12]
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn store_entries_a_blob_that_grew_is_said_to_have_grown_not_truncated() {
    let p = built();
    let victim = clean_ref("2024-01-01", "S002");
    let digest = first_blob(&p, &victim);
    let path = blob_path(&p, &digest);
    let mut bytes = std::fs::read(&path).expect("blob");
    let stored = bytes.len();
    bytes.extend_from_slice(&[b'x'; 44]);
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    std::fs::write(&path, &bytes).expect("grow the blob");
    let verify = cairn_within(&p, &["store", "verify"]);
    verify.assert_code(3);
    assert_eq!(
        verify.stdout,
        format!(
            "blob {}… grew ({} bytes, {stored} stored); partition {victim} is affected\n",
            &digest[..12],
            stored + 44
        )
    );
    let json = cairn_within(&p, &["store", "verify", "--json"]);
    let problem = json.json_lines()[0].clone();
    assert_eq!(problem["damage"], "grown", "{problem}");
    assert_eq!(problem["length"], stored as u64 + 44);
    assert_eq!(problem["expected_length"], stored as u64);
}

#[test]
#[expect(clippy::print_stderr, reason = "a visible skip notice")]
fn sparse_outputs_are_restored_sparse() {
    use std::os::unix::fs::MetadataExt;
    // 64 MiB of which 8 bytes are data: stored by a hard link (adopted),
    // restored by copying, which must keep the holes.
    let p = Project::with_graph(
        r#"
[datasets.sparse]
[dimensions.p]
values = ["a"]
[jobs.sparse]
outputs = ["sparse/p={p}"]
run = ["sh", "-c", "cd \"$CAIRN_OUT\" && printf head > big && dd if=/dev/null of=big bs=1 count=0 seek=67108860 2>/dev/null && printf tail >> big"]
"#,
    );
    p.build(&[]).assert_counts(1, 1, 0, 0, 0);
    let path = p.file("data/sparse/p=a/big");
    let built = std::fs::metadata(&path).expect("output");
    assert_eq!(built.len(), 64 * 1024 * 1024);
    if built.blocks() * 512 >= 1024 * 1024 {
        eprintln!("NOTE: this file system does not keep holes: sparse_outputs SKIPPED");
        return;
    }
    std::fs::remove_dir_all(p.file("data")).expect("remove data");
    let restore = p.build(&[]);
    restore.assert_counts(1, 0, 1, 0, 0);
    assert_eq!(restore.outputs("restored").len(), 1);
    let restored = std::fs::metadata(&path).expect("restored");
    assert_eq!(restored.len(), 64 * 1024 * 1024);
    assert!(
        restored.blocks() * 512 < 1024 * 1024,
        "{} bytes allocated for 8 bytes of data",
        restored.blocks() * 512
    );
    let bytes = std::fs::read(&path).expect("read");
    assert_eq!(&bytes[..4], b"head");
    assert_eq!(&bytes[bytes.len() - 4..], b"tail");
    assert!(bytes[4..bytes.len() - 4].iter().all(|&byte| byte == 0));
}

#[test]
fn shared_data_a_second_store_building_into_the_same_data_is_refused() {
    let p = Project::empty();
    // The job says it started, then waits (up to 30 s) until it is let go.
    let started = p.file("started");
    let go = p.file("go");
    p.write(
        "cairn.toml",
        format!(
            r#"
[datasets.slow]
[dimensions.p]
values = ["a"]
[jobs.slow]
outputs = ["slow/p={{p}}"]
run = ["sh", "-c", "touch '{}'; i=0; while [ ! -e '{}' ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; echo done > \"$CAIRN_OUT/v\""]
"#,
            started.display(),
            go.display()
        ),
    );
    let first = p.path().join("first");
    let second = p.path().join("second");
    let mut running = Command::new(CAIRN)
        .args(["--store", first.to_str().unwrap(), "build"])
        .current_dir(p.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the first build");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        assert!(
            Instant::now() < deadline,
            "the first build's job never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = cairn_within(&p, &["--store", second.to_str().unwrap(), "build"]);
    std::fs::write(&go, "").expect("release the job");
    let status = running.wait().expect("wait for the first build");
    assert!(status.success(), "the first build: {status:?}");
    refused.assert_code(3);
    let message = format!(
        "error: data directory {} is in use by a build of store {} (pid {}); this build's store is {}",
        p.file("data").display(),
        first.display(),
        running.id(),
        second.display()
    );
    assert!(refused.stderr.starts_with(&message), "{}", refused.stderr);
    assert_eq!(
        std::fs::read_to_string(p.file("data/slow/p=a/v")).expect("output"),
        "done\n"
    );
    // The claim goes with the build that held it.
    assert!(!p.file("data/.cairn-owner").exists());
    // One after the other, both stores may build there.
    let after = cairn_within(&p, &["--store", second.to_str().unwrap(), "build"]);
    after.assert_code(0);
    assert!(!p.file("data/.cairn-owner").exists());
}

/// The permission bits of `path`.
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

/// The `(path, mode, blob digest)` of each file of `partition`'s current
/// output, from its manifest.
fn manifest_files(p: &Project, partition: &str) -> Vec<(String, u64, String)> {
    p.output_files(partition)
        .iter()
        .map(|file| {
            (
                str_field(file, "path").to_owned(),
                file["mode"].as_u64().expect("mode"),
                str_field(file, "digest").to_owned(),
            )
        })
        .collect()
}

/// Partition `a` holds private files (0600: a small one, a 2.1 MB one the
/// store adopts by a hard link), a 0640 and a 0755 one; partition `b` the
/// same bytes, every file 0644.
const MODES_GRAPH: &str = r#"
[datasets.out]
[dimensions.p]
values = ["a", "b"]
[jobs.out]
outputs = ["out/p={p}"]
args = ["{p}"]
run = ["sh", "-c", """
cd "$CAIRN_OUT"
echo 'a secret' > small
yes 'a large secret' | head -c 2200000 > large
echo 'for the group' > group
printf '#!/bin/sh\necho hi\n' > tool
if [ "$0" = a ]; then chmod 600 small large; chmod 640 group; chmod 755 tool
else chmod 644 small large group tool; fi
"""]
"#;

#[test]
fn file_modes_blobs_are_no_more_readable_than_outputs_and_restores_keep_the_mode() {
    let p = Project::with_graph(MODES_GRAPH);
    p.build(&[]).assert_counts(2, 2, 0, 0, 0);
    let expected_a: [(&str, u32); 4] = [
        ("group", 0o640),
        ("large", 0o600),
        ("small", 0o600),
        ("tool", 0o755),
    ];
    let files_a = manifest_files(&p, "out/p=a");
    let recorded: Vec<(&str, u32)> = files_a
        .iter()
        .map(|(path, mode, _)| (path.as_str(), *mode as u32))
        .collect();
    assert_eq!(recorded, expected_a, "the manifest records the modes");
    // a and b share every blob: each has a's, more restrictive, read bits.
    let files_b = manifest_files(&p, "out/p=b");
    for ((path, mode, digest), (_, _, digest_b)) in files_a.iter().zip(&files_b) {
        assert_eq!(digest, digest_b, "{path}: one blob");
        let blob = mode_of(&blob_path(&p, digest));
        assert_eq!(blob & 0o222, 0, "{path}: blob {blob:o} is read-only");
        assert_eq!(
            blob & 0o044 & !(*mode as u32),
            0,
            "{path}: blob {blob:o} is readable beyond the output's {mode:o}"
        );
        assert_eq!(blob & 0o400, 0o400, "{path}: cairn can read it");
    }
    // The large private output is the blob's inode (adopted): read-only,
    // still private.
    assert_eq!(mode_of(&p.file("data/out/p=a/large")), 0o400);

    // Restored: exactly the modes the job left, whatever the blob's.
    std::fs::remove_dir_all(p.file("data")).expect("remove data");
    let restore = p.build(&[]);
    restore.assert_counts(2, 0, 2, 0, 0);
    assert_eq!(restore.outputs("restored").len(), 2);
    for (path, mode) in expected_a {
        assert_eq!(
            mode_of(&p.file(&format!("data/out/p=a/{path}"))),
            mode,
            "restored a/{path}"
        );
        assert_eq!(
            mode_of(&p.file(&format!("data/out/p=b/{path}"))),
            0o644,
            "restored b/{path}"
        );
    }
    // Nothing changed for the next build, and the store is sound.
    p.build(&[]).assert_counts(2, 0, 2, 0, 0);
    cairn_within(&p, &["store", "verify"]).assert_code(0);
}
