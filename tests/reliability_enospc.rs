//! enospc (docs/reliability.md, promise 2): a build whose store fills its
//! file system fails with a clear message naming the path and the error;
//! `cairn store verify` and `cairn replay --check` pass afterwards; once
//! space is freed, a build completes and the data is right.
//!
//! The test mounts a 2 MiB tmpfs for the store (`--store`), so it needs root
//! and a working `mount`; elsewhere it prints a visible notice and passes
//! without checking anything.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Build, CAIRN, Project, Run};

/// A mounted tmpfs, unmounted when dropped (also when the test fails).
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::Builder::new()
            .prefix("cairn-enospc-")
            .tempdir()
            .ok()?;
        let path = dir.path().to_owned();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        mounted.then_some(Tmpfs { _dir: dir, path })
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .expect("run mount");
        assert!(status.success(), "remount {size} failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn cairn(p: &Project, store: &Path, args: &[&str]) -> Run {
    let output = Command::new(CAIRN)
        .arg("--store")
        .arg(store)
        .args(args)
        .current_dir(p.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("spawn cairn");
    Run {
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

const PARTITIONS: usize = 16;
const BYTES: usize = 256 * 1024;

#[test]
#[expect(clippy::print_stderr, reason = "a visible skip notice")]
fn enospc_a_full_store_fails_clearly_verifies_clean_and_recovers() {
    let Some(tmpfs) = Tmpfs::mount("2m") else {
        eprintln!(
            "NOTE: enospc_a_full_store_fails_clearly_verifies_clean_and_recovers: SKIPPED \
             (mounting a tmpfs needs root and a working `mount`)"
        );
        return;
    };
    let values: Vec<String> = (0..PARTITIONS).map(|i| format!("\"p{i:02}\"")).collect();
    // Each job writes 256 KiB of its own content: 4 MiB of blobs in all.
    let p = Project::with_graph(&format!(
        r#"
[datasets.fill]
version = "1.0.0"
[dimensions.i]
values = [{}]
[jobs.fill]
outputs = ["fill/i={{i}}"]
args = ["{{i}}"]
run = ["sh", "-c", "yes \"$0\" | head -c {BYTES} > \"$CAIRN_OUT/v\""]
"#,
        values.join(", ")
    ));
    let store = tmpfs.path.join(".cairn");
    let full = cairn(&p, &store, &["build", "-j", "1", "--keep-going"]);
    assert!(
        full.code == 1 || full.code == 3,
        "a build into a full store exits {}:\n{}",
        full.code,
        full.stderr
    );
    assert!(
        full.stderr.contains("No space left on device"),
        "the error does not say the disk is full:\n{}",
        full.stderr
    );
    assert!(
        full.stderr.contains(&store.display().to_string()),
        "the error does not name the store path:\n{}",
        full.stderr
    );
    // Whatever was recorded is sound.
    let verify = cairn(&p, &store, &["store", "verify"]);
    assert_eq!(
        verify.code, 0,
        "store verify after ENOSPC:\n{}\n{}",
        verify.stdout, verify.stderr
    );
    let replay = cairn(&p, &store, &["replay", "--check"]);
    assert_eq!(replay.code, 0, "{}\n{}", replay.stdout, replay.stderr);

    // Free space: the next build completes what was missing.
    tmpfs.resize("64m");
    let rebuild = Build::new(cairn(&p, &store, &["build", "--json"]));
    rebuild.assert_code(0);
    assert_eq!(rebuild.count("total"), PARTITIONS as u64);
    assert_eq!(rebuild.count("failed"), 0);
    assert!(rebuild.count("executed") > 0, "{}", rebuild.summary());
    for i in 0..PARTITIONS {
        let bytes = p.read(&format!("data/fill/i=p{i:02}/v"));
        assert_eq!(bytes.len(), BYTES);
        assert!(bytes.starts_with(format!("p{i:02}\n").as_bytes()));
    }
    cairn(&p, &store, &["store", "verify"]).assert_code(0);
    cairn(&p, &store, &["replay", "--check"]).assert_code(0);
}
