//! The shared remote cache (docs/remote-cache.md), through the binary: two
//! checkouts of one project with separate stores share results through a
//! cache, which is never trusted (poisoned entries and corrupt blobs are
//! refused, reported and rebuilt), never written in read mode, and never
//! in the way (down, hanging or killed, the build goes on locally).
//!
//! The same scenarios run against a directory (`file://`), a Bazel HTTP
//! cache served by Debian's nginx with WebDAV, and an S3 store served by
//! SeaweedFS, both started on loopback by the scripts in .ci/services/
//! (which .ci/run installs). Where a server cannot be started the test
//! prints a loud `SKIPPED:` line and returns.

mod common;
mod serve_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Build, CAIRN, Project, Run, snapshot};
use serde_json::Value;

/// A remote cache a test builds against: its URL, the environment a
/// `cairn` needs to reach it, and how to read and write its objects
/// behind cairn's back.
struct Cache {
    url: String,
    env: Vec<(String, String)>,
    backend: Backend,
    /// Holds the directory (and, through it, the server) while the test runs.
    _dir: tempfile::TempDir,
}

enum Backend {
    /// `file://DIR`: objects are files under DIR.
    Directory(PathBuf),
    /// nginx serving ROOT/data.
    Nginx { root: PathBuf },
    /// SeaweedFS: objects over plain HTTP at `http://127.0.0.1:PORT/BUCKET/`.
    Seaweed { root: PathBuf, port: u16 },
}

const SERVICES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/services");
const BUCKET: &str = "cairn";
const PREFIX: &str = "team";

/// A loud SKIPPED line; under CI (`CI` set) a failure instead: .ci/run
/// installs the servers.
#[allow(clippy::print_stderr, reason = "the notice is the point")]
fn skipped(test: &str, why: &str) {
    let message = format!("SKIPPED: {test}: {why}");
    assert!(std::env::var_os("CI").is_none(), "{message}");
    eprintln!("\n********\n{message}\n********\n");
}

fn script(name: &str) -> PathBuf {
    Path::new(SERVICES).join(name)
}

fn run_script(name: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new("bash")
        .arg(script(name))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("{name}: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "{name} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

impl Cache {
    fn directory() -> Cache {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        Cache {
            url: format!("file://{}", root.display()),
            env: Vec::new(),
            backend: Backend::Directory(root),
            _dir: dir,
        }
    }

    /// nginx on a free loopback port, or `None` (with a loud SKIPPED line)
    /// when nginx is not installed.
    fn nginx(test: &str) -> Option<Cache> {
        if Command::new("nginx").arg("-v").output().is_err() {
            skipped(test, "nginx is not installed (.ci/run installs it)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let port = run_script("nginx-cache.sh", &["start", root.to_str().unwrap()])
            .unwrap_or_else(|error| panic!("starting nginx: {error}"));
        Some(Cache {
            url: format!("http://127.0.0.1:{port}/{PREFIX}"),
            env: Vec::new(),
            backend: Backend::Nginx { root },
            _dir: dir,
        })
    }

    /// SeaweedFS's S3 on free loopback ports, or `None` (with a loud
    /// SKIPPED line) when its venv cannot be made.
    fn seaweed(test: &str) -> Option<Cache> {
        if let Err(error) = run_script("seaweedfs.sh", &["install"]) {
            skipped(test, &format!("seaweedfs cannot be installed: {error}"));
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let port: u16 = run_script("seaweedfs.sh", &["start", root.to_str().unwrap(), BUCKET])
            .unwrap_or_else(|error| panic!("starting seaweedfs: {error}"))
            .parse()
            .unwrap();
        Some(Cache {
            url: format!("s3://{BUCKET}/{PREFIX}"),
            env: vec![
                (
                    "AWS_ENDPOINT_URL".to_owned(),
                    format!("http://127.0.0.1:{port}"),
                ),
                ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
            ],
            backend: Backend::Seaweed { root, port },
            _dir: dir,
        })
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    fn kill(&self) {
        match &self.backend {
            Backend::Directory(_) => panic!("a directory cannot be killed"),
            Backend::Nginx { root } => {
                run_script("nginx-cache.sh", &["kill", root.to_str().unwrap()]).unwrap();
            }
            Backend::Seaweed { root, .. } => {
                run_script("seaweedfs.sh", &["kill", root.to_str().unwrap()]).unwrap();
            }
        }
    }

    /// Starts the server again on the same data (nginx gets a new port: the
    /// URL changes).
    fn restart(&mut self) {
        match &mut self.backend {
            Backend::Directory(_) => {}
            Backend::Nginx { root } => {
                let port = run_script("nginx-cache.sh", &["start", root.to_str().unwrap()])
                    .unwrap_or_else(|error| panic!("restarting nginx: {error}"));
                self.url = format!("http://127.0.0.1:{port}/{PREFIX}");
            }
            Backend::Seaweed { root, port } => {
                *port = run_script("seaweedfs.sh", &["start", root.to_str().unwrap(), BUCKET])
                    .unwrap_or_else(|error| panic!("restarting seaweedfs: {error}"))
                    .parse()
                    .unwrap();
                self.env[0].1 = format!("http://127.0.0.1:{port}");
            }
        }
    }

    /// `BUCKET/PREFIX` of an `s3://` URL.
    fn s3_path(&self) -> &str {
        self.url.strip_prefix("s3://").expect("an s3:// URL")
    }

    /// Reads object `name` (`ac/<key>`, `cas/<digest>`) behind cairn's back.
    fn get(&self, name: &str) -> Option<Vec<u8>> {
        match &self.backend {
            Backend::Directory(root) => std::fs::read(root.join(name)).ok(),
            Backend::Nginx { root } => {
                std::fs::read(root.join("data").join(PREFIX).join(name)).ok()
            }
            Backend::Seaweed { port, .. } => {
                let output = Command::new("curl")
                    .args([
                        "-sf",
                        &format!("http://127.0.0.1:{port}/{}/{name}", self.s3_path()),
                    ])
                    .output()
                    .unwrap();
                output.status.success().then_some(output.stdout)
            }
        }
    }

    /// Writes object `name` behind cairn's back, as a hostile writer or
    /// bit rot would.
    fn put(&self, name: &str, bytes: &[u8]) {
        match &self.backend {
            Backend::Directory(root) => write_file(&root.join(name), bytes),
            Backend::Nginx { root } => {
                write_file(&root.join("data").join(PREFIX).join(name), bytes);
            }
            Backend::Seaweed { port, .. } => {
                let file = tempfile::NamedTempFile::new().unwrap();
                std::fs::write(file.path(), bytes).unwrap();
                let status = Command::new("curl")
                    .args([
                        "-sf",
                        "-X",
                        "PUT",
                        "--data-binary",
                        &format!("@{}", file.path().display()),
                        &format!("http://127.0.0.1:{port}/{}/{name}", self.s3_path()),
                    ])
                    .status()
                    .unwrap();
                assert!(status.success(), "PUT {name}");
            }
        }
    }

    /// How many objects the cache holds (files under a directory or
    /// nginx's data; for S3, the AC entries of `keys`).
    fn objects(&self, keys: &[String]) -> usize {
        match &self.backend {
            Backend::Directory(root) => count_files(root),
            Backend::Nginx { root } => count_files(&root.join("data")),
            Backend::Seaweed { .. } => keys
                .iter()
                .filter(|key| self.get(&format!("ac/{key}")).is_some())
                .count(),
        }
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        match &self.backend {
            Backend::Directory(_) => {}
            Backend::Nginx { root } => {
                let _ = run_script("nginx-cache.sh", &["stop", root.to_str().unwrap()]);
            }
            Backend::Seaweed { root, .. } => {
                let _ = run_script("seaweedfs.sh", &["stop", root.to_str().unwrap()]);
            }
        }
    }
}

fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    // Another owner's read-only file (nginx's) is replaced, not written.
    let _ = std::fs::remove_file(path);
    std::fs::write(path, bytes).unwrap();
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            if entry.file_type().unwrap().is_dir() {
                count_files(&entry.path())
            } else {
                1
            }
        })
        .sum()
}

/// `cairn ARGS` in `project` with `env` added.
fn cairn(project: &Project, args: &[&str], env: &[(String, String)]) -> Run {
    let output = Command::new(CAIRN)
        .args(args)
        .current_dir(project.path())
        .env("NO_COLOR", "1")
        .envs(env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::null())
        .output()
        .expect("spawn cairn");
    Run {
        args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        code: output.status.code().expect("cairn exited"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// `cairn build --json --remote-cache URL EXTRA...` in `project`.
fn build(project: &Project, cache: &Cache, extra: &[&str]) -> Build {
    let mut args = vec!["build", "--json", "--remote-cache", &cache.url];
    args.extend_from_slice(extra);
    Build::new(cairn(project, &args, &cache.env))
}

/// The summary's `remote` object.
fn remote(build: &Build) -> &Value {
    let remote = &build.summary()["remote"];
    assert!(remote.is_object(), "no remote in {}", build.summary());
    remote
}

fn remote_count(build: &Build, field: &str) -> u64 {
    remote(build)[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {}", build.summary()))
}

/// The warning lines a command printed.
fn warnings(run: &Run) -> Vec<&str> {
    run.stderr
        .lines()
        .filter(|line| line.starts_with("warning:"))
        .collect()
}

/// The key of each action that ran, by its first output, from the log.
fn keys_by_output(project: &Project) -> BTreeMap<String, String> {
    project
        .log(&["--kind", "ActionSucceeded"])
        .iter()
        .map(|event| {
            let manifest = &event["manifest"];
            (
                manifest["outputs"][0]["partition"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                manifest["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn events_of(project: &Project, kind: &str) -> Vec<Value> {
    project.log(&["--kind", kind])
}

fn two_projects(days: u32, stations: u32) -> (Project, Project) {
    (
        Project::podcast(days, stations),
        Project::podcast(days, stations),
    )
}

// ---------------------------------------------------------------------
// The scenarios, each run against every backend.
// ---------------------------------------------------------------------

/// Two machines: the first builds with upload; the second, with an empty
/// store, executes nothing, restores everything from the cache, and ends
/// with identical data; its log says where each result came from.
fn two_machines(cache: &Cache, days: u32, stations: u32) {
    let (first, second) = two_projects(days, stations);
    let total = u64::from(days * stations * 2 + days);
    let built = build(&first, cache, &["--remote-cache-mode", "write"]);
    built.assert_code(0);
    built.assert_counts(total, total, 0, 0, 0);
    assert_eq!(
        remote_count(&built, "uploaded"),
        total,
        "{}",
        built.run.stderr
    );
    assert_eq!(remote_count(&built, "errors"), 0, "{}", built.run.stderr);
    assert_eq!(
        events_of(&first, "ActionUploaded").len() as u64,
        total,
        "every upload is in the log"
    );

    let restored = build(&second, cache, &[]);
    restored.assert_code(0);
    restored.assert_counts(total, 0, total, 0, 0);
    assert_eq!(restored.outputs("restored"), first.all_refs());
    assert_eq!(remote_count(&restored, "hits"), total);
    assert_eq!(remote_count(&restored, "uploaded"), 0);
    assert!(
        warnings(&restored.run).is_empty(),
        "{}",
        restored.run.stderr
    );
    assert_eq!(
        snapshot(&first.file("data")),
        snapshot(&second.file("data"))
    );
    let cached = events_of(&second, "ActionCached");
    assert_eq!(cached.len() as u64, total);
    for event in &cached {
        assert_eq!(event["remote"]["url"], cache.url.as_str(), "{event}");
    }
    // `log` says so in words.
    let log = cairn(&second, &["log", "--kind", "ActionCached"], &[]);
    assert!(
        log.stdout
            .contains(&format!("restored from the remote cache ({})", cache.url)),
        "{}",
        log.stdout
    );

    // history, why and store stats say where results came from and went.
    let sample = "clean/date=2024-01-01/station=S001";
    let restored_from = format!("restored from the remote cache ({})", cache.url);
    let uploaded_to = format!("uploaded to the remote cache ({})", cache.url);
    for (project, phrase) in [(&second, &restored_from), (&first, &uploaded_to)] {
        for command in ["history", "why"] {
            let run = cairn(project, &[command, sample], &[]);
            run.assert_code(0);
            assert!(
                run.stdout.contains(phrase.as_str()),
                "{command}: {}",
                run.stdout
            );
        }
    }
    let stats = |project: &Project| {
        let run = cairn(project, &["store", "stats", "--json"], &[]);
        run.assert_code(0);
        run.json_lines()[0]["remote"].clone()
    };
    assert_eq!(stats(&second)["restored"], total);
    assert_eq!(stats(&second)["uploaded"], 0);
    assert_eq!(stats(&first)["uploaded"], total);
    assert_eq!(stats(&first)["restored"], 0);

    // The second machine's next build is a local no-op: the results it
    // restored are its own now (the cache is not even asked).
    std::fs::remove_dir_all(second.file("data")).unwrap();
    let again = build(&second, cache, &[]);
    again.assert_counts(total, 0, total, 0, 0);
    assert_eq!(remote_count(&again, "hits"), 0);
    assert_eq!(remote_count(&again, "misses"), 0);
    assert_eq!(
        snapshot(&first.file("data")),
        snapshot(&second.file("data"))
    );
}

/// A MAJOR version switched back and forth across the two machines: each
/// version built once, anywhere, is restored from the remote.
fn version_ping_pong(cache: &Cache) {
    let (first, second) = two_projects(2, 2);
    let total = 2 * 2 * 2 + 2;
    let bump = |project: &Project, from: &str, to: &str| {
        let graph = project.read_string("cairn.toml").replacen(
            &format!("[datasets.raw]\nversion = \"{from}\""),
            &format!("[datasets.raw]\nversion = \"{to}\""),
            1,
        );
        assert!(graph.contains(&format!("[datasets.raw]\nversion = \"{to}\"")));
        project.write("cairn.toml", graph);
    };
    let write = ["--remote-cache-mode", "write"];
    // Machine 1 builds 1.0.0, then 2.0.0: raw runs again, and its
    // unchanged outputs leave clean and daily as they were (early cutoff).
    let raw = 2 * 2;
    build(&first, cache, &write).assert_counts(total, total, 0, 0, 0);
    bump(&first, "1.0.0", "2.0.0");
    build(&first, cache, &write).assert_counts(total, raw, total - raw, 0, 0);
    // Machine 2: 2.0.0 first, then 1.0.0, then 2.0.0: never a job.
    bump(&second, "1.0.0", "2.0.0");
    let at_2 = build(&second, cache, &write);
    at_2.assert_counts(total, 0, total, 0, 0);
    assert_eq!(remote_count(&at_2, "hits"), total);
    bump(&second, "2.0.0", "1.0.0");
    let at_1 = build(&second, cache, &write);
    at_1.assert_counts(total, 0, total, 0, 0);
    assert_eq!(
        remote_count(&at_1, "hits"),
        raw,
        "raw 1.0.0 from the remote"
    );
    bump(&second, "1.0.0", "2.0.0");
    let back = build(&second, cache, &write);
    back.assert_counts(total, 0, total, 0, 0);
    assert_eq!(remote_count(&back, "hits"), 0, "2.0.0 is local by now");
    assert_eq!(remote_count(&back, "misses"), 0);
    // And machine 1, back at 1.0.0, restores locally.
    bump(&first, "2.0.0", "1.0.0");
    let local = build(&first, cache, &write);
    local.assert_counts(total, 0, total, 0, 0);
    assert_eq!(remote_count(&local, "hits"), 0);
    bump(&first, "1.0.0", "2.0.0");
    assert_eq!(
        snapshot(&first.file("data")),
        snapshot(&second.file("data"))
    );
}

/// A hand-written AC entry pointing at other content is refused, reported
/// once, never materialized, and the job runs.
fn poisoned_entry_refused(cache: &Cache) {
    let (first, second) = two_projects(2, 2);
    let total = 2 * 2 * 2 + 2;
    build(&first, cache, &["--remote-cache-mode", "write"]).assert_code(0);
    let keys = keys_by_output(&first);
    let victim = "clean/date=2024-01-01/station=S001";
    let other = "clean/date=2024-01-02/station=S002";
    let (victim_key, other_key) = (&keys[victim], &keys[other]);
    // 1. The other key's entry, stored under the victim's key as is.
    let entry = cache.get(&format!("ac/{other_key}")).expect("the entry");
    cache.put(&format!("ac/{victim_key}"), &entry);
    // 2. The same entry rewritten to name a second victim's key: its
    //    outputs and inputs are still the other action's.
    let second_victim = "clean/date=2024-01-02/station=S001";
    let second_key = &keys[second_victim];
    let forged = String::from_utf8(entry)
        .unwrap()
        .replace(other_key.as_str(), second_key);
    cache.put(&format!("ac/{second_key}"), forged.as_bytes());

    let built = build(&second, cache, &[]);
    built.assert_code(0);
    assert_eq!(
        built.outputs("executed"),
        BTreeSet::from([victim.to_owned(), second_victim.to_owned()]),
        "{}",
        built.run.stderr
    );
    assert_eq!(built.count("cached"), total - 2);
    assert_eq!(remote_count(&built, "refused"), 2);
    let refused = events_of(&second, "RemoteRefused");
    assert_eq!(refused.len(), 2, "{refused:?}");
    let reasons: Vec<&str> = refused
        .iter()
        .map(|event| event["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().any(|reason| reason.contains("names key")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|reason| reason.contains("other outputs")),
        "{reasons:?}"
    );
    assert_eq!(warnings(&built.run).len(), 1, "{}", built.run.stderr);
    // What ran is what a clean build gives, not the other partition.
    assert_eq!(
        snapshot(&first.file("data")),
        snapshot(&second.file("data"))
    );
}

/// A blob corrupted on the server is detected by its blake3, reported (an
/// event and one warning), never placed, and the action is rebuilt. The
/// podcast's outputs are small, so the blob is inlined in its AC entry
/// (`cairn-ac/2`): the corruption is there; a blob corrupted in `cas/` is
/// engine/src/remote.rs's unit tests'.
fn corrupted_blob_rebuilt(cache: &Cache) {
    let (first, second) = two_projects(2, 2);
    let total = 2 * 2 * 2 + 2;
    build(&first, cache, &["--remote-cache-mode", "write"]).assert_code(0);
    let victim = "clean/date=2024-01-02/station=S001";
    let files = first.output_files(victim);
    let digest = files[0]["digest"].as_str().unwrap().to_owned();
    let path = files[0]["path"].as_str().unwrap();
    let good = std::fs::read(first.file(&format!("data/{victim}/{path}"))).unwrap();
    let key = &keys_by_output(&first)[victim];
    let name = format!("ac/{key}");
    let mut entry: Value = serde_json::from_slice(&cache.get(&name).expect("the entry")).unwrap();
    assert_eq!(entry["format"], "cairn-ac/2");
    assert!(
        cache.get(&format!("cas/{digest}")).is_none(),
        "a small blob is inlined, not in cas/"
    );
    let inlined = entry["inline"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|blob| blob["digest"] == digest.as_str())
        .expect("the blob, inlined");
    // Another base64 digit first: other bytes, still base64.
    let content = inlined["content"].as_str().unwrap();
    let swapped = if content.starts_with('U') { "V" } else { "U" };
    inlined["content"] = Value::from(format!("{swapped}{}", &content[1..]));
    cache.put(&name, &serde_json::to_vec(&entry).unwrap());

    let built = build(&second, cache, &[]);
    built.assert_code(0);
    assert_eq!(
        built.outputs("executed"),
        BTreeSet::from([victim.to_owned()]),
        "{}",
        built.run.stderr
    );
    assert_eq!(built.count("cached"), total - 1);
    refused_once_as_corrupt(&second, &built, &digest);
    assert_eq!(
        snapshot(&first.file("data")),
        snapshot(&second.file("data"))
    );
    // The corrupt bytes never entered the local store.
    let blob = second.file(&format!(".cairn/cas/{}/{}", &digest[..2], &digest[2..]));
    assert_eq!(std::fs::read(blob).unwrap(), good);
}

/// `built` (in `project`) refused the blob `digest` from the cache once,
/// as failing its check, with one warning.
fn refused_once_as_corrupt(project: &Project, built: &Build, digest: &str) {
    let refused = events_of(project, "RemoteRefused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("blob {digest} failed verification")),
        "{refused:?}"
    );
    assert_eq!(warnings(&built.run).len(), 1, "{}", built.run.stderr);
}

/// Read mode looks up and never writes.
fn read_only_writes_nothing(cache: &Cache) {
    let project = Project::podcast(2, 2);
    let total = 2 * 2 * 2 + 2;
    let built = build(&project, cache, &["--remote-cache-mode", "read"]);
    built.assert_counts(total, total, 0, 0, 0);
    assert_eq!(remote_count(&built, "misses"), total);
    assert_eq!(remote_count(&built, "uploaded"), 0);
    let keys: Vec<String> = keys_by_output(&project).into_values().collect();
    assert_eq!(cache.objects(&keys), 0, "read mode wrote to the cache");
    assert!(events_of(&project, "ActionUploaded").is_empty());
}

/// The server killed during the uploads: the build still succeeds; after
/// a restart, a second machine restores what was uploaded whole and runs
/// the rest: nothing half-written is ever served.
fn killed_mid_upload(cache: &mut Cache) {
    let (first, second) = two_projects(10, 10);
    let total = 10 * 10 * 2 + 10;
    let mut args = vec!["build", "--json", "--remote-cache", &cache.url];
    args.extend(["--remote-cache-mode", "write", "-j", "2"]);
    let child = Command::new(CAIRN)
        .args(&args)
        .current_dir(first.path())
        .envs(cache.env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed once a tenth of the jobs are done: their uploads run beside
    // the jobs, so some are whole by then and most are not (both are
    // checked below: some restored, not all uploaded).
    let deadline = Instant::now() + Duration::from_secs(120);
    while keys_by_output_of_log(&first).len() < 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    cache.kill();
    let output = child.wait_with_output().unwrap();
    let run = Run {
        args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        code: output.status.code().unwrap(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    };
    let built = Build::new(run);
    built.assert_code(0);
    built.assert_counts(total, total, 0, 0, 0);
    assert!(
        remote_count(&built, "uploaded") < total,
        "{}",
        built.summary()
    );
    assert!(
        warnings(&built.run).len() <= 1,
        "one warning at most: {}",
        built.run.stderr
    );

    cache.restart();
    let restored = build(&second, cache, &[]);
    restored.assert_code(0);
    let hits = remote_count(&restored, "hits");
    let uploaded = remote_count(&built, "uploaded");
    // An entry the server wrote just before it was killed, whose answer
    // never came back, is restored too: that upload counted as an error.
    let lost_answers = remote_count(&built, "errors");
    assert!(
        hits <= uploaded + lost_answers,
        "{hits} restored, {uploaded} uploaded, {lost_answers} errors"
    );
    // What was uploaded is restored, on a server that keeps what it
    // acknowledged across a SIGKILL (nginx writes files; SeaweedFS may lose
    // its last writes, which is then a miss, never a bad restore).
    if matches!(cache.backend, Backend::Nginx { .. }) {
        assert!(
            hits > 0 && uploaded > 0,
            "what was uploaded is restored: {}\n{}",
            restored.summary(),
            restored.run.stderr
        );
    }
    assert_eq!(restored.count("cached"), hits);
    assert_eq!(restored.count("executed"), total - hits);
    assert_eq!(remote_count(&restored, "refused"), 0);
    assert!(events_of(&second, "RemoteRefused").is_empty());
    assert_eq!(
        snapshot(&first.file("data")),
        snapshot(&second.file("data"))
    );
}

/// The keys of the actions that ran so far, read while a build runs (a
/// reader does not wait for the writer).
/// `cairn ARGS` in `project` with `cache`'s environment, and the most
/// memory it held that is no file's (`RssAnon`, KiB: the blobs of an
/// upload or a download; an output hashed through a memory map is the
/// file's), sampled every 2 ms.
fn cairn_holding(project: &Project, cache: &Cache, args: &[&str]) -> (Build, u64) {
    let mut child = Command::new(CAIRN)
        .args(args)
        .current_dir(project.path())
        .env("NO_COLOR", "1")
        .envs(cache.env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn");
    let held = common::peak_status_kib(&mut child, "RssAnon").expect("RssAnon of /proc/PID/status");
    let output = child.wait_with_output().expect("cairn's output");
    (Build::new(Run::from_output(args, &output)), held)
}

/// An output of `size_mib` goes up and comes back with bounded memory
/// (`upload_most_mib` for the upload): in parts as it is read, as a
/// multipart upload where the store takes them (S3, a directory), else as
/// part objects and their index (an HTTP cache); a download is always
/// streamed into the store.
/// Before, an upload held the blob twice (read whole, then copied for the
/// request), so a 10 GiB output needed 20 GiB of memory.
fn a_large_output_in_bounded_memory(cache: &Cache, size_mib: u64, upload_most_mib: u64) {
    const DOWNLOAD_MOST_MIB: u64 = 128;
    let graph = format!(
        "[datasets.big]\n[jobs.big]\noutputs = [\"big\"]\n\
         run = [\"sh\", \"-c\", \"head -c {} /dev/urandom > $CAIRN_OUT/blob.bin\"]\n",
        size_mib << 20
    );
    let (first, second) = (Project::with_graph(&graph), Project::with_graph(&graph));
    let write = [
        "build",
        "--json",
        "--remote-cache",
        &cache.url,
        "--remote-cache-mode",
        "write",
    ];
    let (built, held) = cairn_holding(&first, cache, &write);
    built.assert_code(0);
    assert_eq!(remote_count(&built, "uploaded"), 1, "{}", built.run.stderr);
    assert!(
        held <= upload_most_mib << 10,
        "uploading a {size_mib} MiB output held {} MiB of memory (at most {upload_most_mib})",
        held >> 10
    );
    let read = [
        "build",
        "--json",
        "--remote-cache",
        &cache.url,
        "--remote-cache-mode",
        "read",
    ];
    let (restored, held) = cairn_holding(&second, cache, &read);
    restored.assert_code(0);
    assert_eq!(restored.count("executed"), 0, "{}", restored.run.stderr);
    assert_eq!(
        remote_count(&restored, "hits"),
        1,
        "{}",
        restored.run.stderr
    );
    assert!(
        held <= DOWNLOAD_MOST_MIB << 10,
        "restoring a {size_mib} MiB output held {} MiB of memory (at most {DOWNLOAD_MOST_MIB})",
        held >> 10
    );
    common::assert_same_file(
        &first.file("data/big/blob.bin"),
        &second.file("data/big/blob.bin"),
        "the restored output differs",
    );
}

fn keys_by_output_of_log(project: &Project) -> Vec<String> {
    let run = project.cairn(&["log", "--json", "--kind", "ActionSucceeded"]);
    if run.code != 0 {
        return Vec::new();
    }
    run.stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|event| event["manifest"]["key"].as_str().map(str::to_owned))
        .collect()
}

// ---------------------------------------------------------------------
// A directory (file://).
// ---------------------------------------------------------------------

#[test]
fn directory_two_machines() {
    two_machines(&Cache::directory(), 3, 3);
}

#[test]
fn directory_version_ping_pong() {
    version_ping_pong(&Cache::directory());
}

#[test]
fn directory_poisoned_entry_is_refused() {
    poisoned_entry_refused(&Cache::directory());
}

/// An entry under its own key, whose file path leads out of its partition,
/// is refused before anything is written.
#[test]
fn directory_an_entry_escaping_its_partition_is_refused() {
    let cache = Cache::directory();
    let (first, second) = two_projects(1, 1);
    build(&first, &cache, &["--remote-cache-mode", "write"]).assert_code(0);
    let victim = "clean/date=2024-01-01/station=S001";
    let key = &keys_by_output(&first)[victim];
    let name = format!("ac/{key}");
    let mut entry: Value = serde_json::from_slice(&cache.get(&name).unwrap()).unwrap();
    entry["manifest"]["outputs"][0]["files"][0]["path"] = "../../../escaped.csv".into();
    cache.put(&name, &serde_json::to_vec(&entry).unwrap());
    let built = build(&second, &cache, &[]);
    built.assert_code(0);
    assert_eq!(
        built.outputs("executed"),
        BTreeSet::from([victim.to_owned()])
    );
    let refused = events_of(&second, "RemoteRefused");
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap()
            .contains("outside its partition"),
        "{refused:?}"
    );
    assert!(!second.file("escaped.csv").exists());
    assert!(!second.file("data/escaped.csv").exists());
    assert_eq!(
        snapshot(&first.file("data")),
        snapshot(&second.file("data"))
    );
}

#[test]
fn directory_corrupted_blob_is_rebuilt() {
    corrupted_blob_rebuilt(&Cache::directory());
}

#[test]
fn directory_read_mode_writes_nothing() {
    read_only_writes_nothing(&Cache::directory());
}

#[test]
fn directory_a_large_output_goes_up_in_parts_and_comes_back_streamed() {
    a_large_output_in_bounded_memory(&Cache::directory(), 256, 128);
}

#[test]
fn no_upload_wait_leaves_the_uploads() {
    let cache = Cache::directory();
    let project = Project::podcast(2, 2);
    let built = build(
        &project,
        &cache,
        &["--remote-cache-mode", "write", "--no-upload-wait"],
    );
    built.assert_code(0);
    let remote = remote(&built);
    let (uploaded, abandoned) = (
        remote["uploaded"].as_u64().unwrap(),
        remote["abandoned"].as_u64().unwrap(),
    );
    // Uploads under way when the build ended finished; those queued were
    // dropped. Either way each is accounted for, and the log holds the
    // finished ones.
    assert_eq!(uploaded + abandoned, 10, "{remote}");
    assert_eq!(
        events_of(&project, "ActionUploaded").len() as u64,
        uploaded,
        "{remote}"
    );
}

#[test]
fn the_graph_file_configures_the_cache_and_the_flags_override_it() {
    let cache = Cache::directory();
    let (first, second) = two_projects(2, 2);
    for project in [&first, &second] {
        project.append(
            "cairn.toml",
            &format!(
                "\n[cache]\nurl = \"{}\"\nmode = \"read-write\"\n",
                cache.url
            ),
        );
    }
    // `--remote-cache-mode off`: nothing asked, nothing written.
    let off = Build::new(cairn(
        &first,
        &["build", "--json", "--remote-cache-mode", "off"],
        &[],
    ));
    off.assert_counts(10, 10, 0, 0, 0);
    assert!(off.summary()["remote"].is_null());
    assert_eq!(cache.objects(&[]), 0);
    std::fs::remove_dir_all(first.file("data")).unwrap();
    std::fs::remove_dir_all(first.file(".cairn")).unwrap();
    // The graph file's read-write: uploads.
    let written = Build::new(cairn(&first, &["build", "--json"], &[]));
    written.assert_counts(10, 10, 0, 0, 0);
    assert_eq!(remote_count(&written, "uploaded"), 10);
    let restored = Build::new(cairn(&second, &["build", "--json"], &[]));
    restored.assert_counts(10, 0, 10, 0, 0);
}

#[test]
fn a_bad_url_or_mode_is_a_usage_error_naming_the_field() {
    let project = Project::podcast(1, 1);
    project.append("cairn.toml", "\n[cache]\nurl = \"ftp://host/x\"\n");
    let run = cairn(&project, &["build"], &[]);
    run.assert_usage_error("cairn.toml:");
    assert!(
        run.stderr
            .contains("cache.url: ftp:// is not a remote cache"),
        "{}",
        run.stderr
    );

    let graph = project.read_string("cairn.toml").replace(
        "url = \"ftp://host/x\"",
        "url = \"file:///tmp/x\"\nmode = \"sometimes\"",
    );
    project.write("cairn.toml", graph);
    let run = cairn(&project, &["build"], &[]);
    run.assert_usage_error("cache.mode: \"sometimes\" is not a mode");

    let graph = project.read_string("cairn.toml").replace(
        "url = \"file:///tmp/x\"\nmode = \"sometimes\"",
        "url = \"http://ana:s3cret@cache.example/x\"",
    );
    project.write("cairn.toml", graph);
    let run = cairn(&project, &["build"], &[]);
    run.assert_usage_error("cache.url: the URL holds a credential");
    assert!(!run.stderr.contains("s3cret"), "{}", run.stderr);

    let empty = Project::podcast(1, 1);
    let run = cairn(&empty, &["build", "--remote-cache", "nonsense"], &[]);
    run.assert_usage_error("--remote-cache: \"nonsense\" is not a URL");
    let run = cairn(&empty, &["build", "--remote-cache-mode", "read"], &[]);
    run.assert_usage_error("--remote-cache-mode: no remote cache is configured");
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn a_cache_down_from_the_start_warns_once_and_the_build_goes_on() {
    let project = Project::podcast(3, 3);
    let url = format!("http://127.0.0.1:{}/team", closed_port());
    let built = Build::new(cairn(
        &project,
        &[
            "build",
            "--json",
            "--remote-cache",
            &url,
            "--remote-cache-mode",
            "write",
            "-j",
            "1",
        ],
        &[],
    ));
    built.assert_code(0);
    built.assert_counts(21, 21, 0, 0, 0);
    assert_eq!(warnings(&built.run).len(), 1, "{}", built.run.stderr);
    assert!(built.run.stderr.contains(&url), "{}", built.run.stderr);
    // The breaker opens at the third failure in a row; requests already
    // under way then (the worker's next lookup, and the lookahead's and
    // the upload thread's, one at a time while the cache fails:
    // engine/src/remote.rs, `batch_at_most`) still fail and count, and no
    // request starts after it. With -j 1 that is 3 to 3 + 4.
    let errors = remote_count(&built, "errors");
    assert!(
        (3..=7).contains(&errors),
        "the breaker opens after 3 failures in a row and stops asking: {errors} errors"
    );
    assert_eq!(remote(&built)["tripped"], true);
    assert_eq!(remote_count(&built, "uploaded"), 0);
}

#[test]
fn a_hanging_cache_times_out_and_the_build_goes_on() {
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let project = Project::podcast(3, 3);
    project.append(
        "cairn.toml",
        &format!("\n[cache]\nurl = \"http://127.0.0.1:{port}/team\"\ntimeout = \"1s\"\n"),
    );
    let started = Instant::now();
    let built = Build::new(cairn(&project, &["build", "--json", "-j", "1"], &[]));
    let took = started.elapsed();
    built.assert_code(0);
    built.assert_counts(21, 21, 0, 0, 0);
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert_eq!(warnings(&built.run).len(), 1, "{}", built.run.stderr);
    assert!(
        built.run.stderr.contains("timed out"),
        "{}",
        built.run.stderr
    );
    assert_eq!(remote(&built)["tripped"], true);
}

#[test]
fn credentials_never_reach_events_keys_or_output() {
    let secret = "sekrit-7f3a-credential";
    let scratch = tempfile::tempdir().unwrap();
    let token = scratch.path().join("token");
    std::fs::write(&token, format!("{secret}-token\n")).unwrap();
    let netrc = scratch.path().join("netrc");
    std::fs::write(
        &netrc,
        format!("machine 127.0.0.1 login ana password {secret}-netrc\n"),
    )
    .unwrap();
    let env = vec![
        ("AWS_ACCESS_KEY_ID".to_owned(), format!("{secret}-id")),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), format!("{secret}-key")),
        (
            "CAIRN_REMOTE_CACHE_TOKEN_FILE".to_owned(),
            token.display().to_string(),
        ),
        ("NETRC".to_owned(), netrc.display().to_string()),
    ];
    let cache = Cache::directory();
    let (with, without) = two_projects(2, 2);
    let down = format!("http://127.0.0.1:{}/team", closed_port());
    let mut runs = Vec::new();
    for url in [&cache.url, &down] {
        runs.push(cairn(
            &with,
            &[
                "build",
                "--json",
                "--remote-cache",
                url,
                "--remote-cache-mode",
                "write",
            ],
            &env,
        ));
        std::fs::remove_dir_all(with.file("data")).unwrap();
    }
    runs.push(cairn(&with, &["log", "--json"], &env));
    runs.push(cairn(&with, &["log"], &env));
    runs.push(cairn(&with, &["store", "stats"], &env));
    for run in &runs {
        assert!(!run.stdout.contains(secret), "{run:?}");
        assert!(!run.stderr.contains(secret), "{run:?}");
    }
    // Nor in the store, nor in the cache.
    let store = snapshot(&with.file(".cairn"));
    for (name, bytes) in &store {
        assert!(
            !String::from_utf8_lossy(bytes).contains(secret),
            "{name} holds the secret"
        );
    }
    let Backend::Directory(root) = &cache.backend else {
        unreachable!()
    };
    for (name, bytes) in &snapshot(root) {
        assert!(
            !String::from_utf8_lossy(bytes).contains(secret),
            "{name} holds the secret"
        );
    }
    // The keys do not depend on them.
    build(&without, &Cache::directory(), &[]).assert_code(0);
    assert_eq!(keys_by_output(&with), keys_by_output(&without));
}

// ---------------------------------------------------------------------
// A Bazel HTTP cache: nginx with WebDAV.
// ---------------------------------------------------------------------

#[test]
fn nginx_two_machines_30x30() {
    let Some(cache) = Cache::nginx("nginx_two_machines_30x30") else {
        return;
    };
    two_machines(&cache, 30, 30);
}

#[test]
fn nginx_version_ping_pong() {
    let Some(cache) = Cache::nginx("nginx_version_ping_pong") else {
        return;
    };
    version_ping_pong(&cache);
}

#[test]
fn nginx_poisoned_entry_and_corrupted_blob() {
    // A fresh server for each: the scenarios share nothing.
    for scenario in SCENARIOS {
        let Some(cache) = Cache::nginx("nginx_poisoned_entry_and_corrupted_blob") else {
            return;
        };
        scenario(&cache);
    }
}

/// What a cache must refuse, detect or leave alone, one scenario each.
const SCENARIOS: [fn(&Cache); 3] = [
    poisoned_entry_refused,
    corrupted_blob_rebuilt,
    read_only_writes_nothing,
];

/// A blob that takes longer to download than a request's timeout is
/// restored all the same, as long as its body keeps coming (nginx's /slow/
/// sends 1 MB/s): the timeout bounds the answer and each chunk, not the
/// whole transfer, and the blob is streamed into the store, never held
/// whole. Before, the 4 MiB blob timed out after 2.5 s and the job ran.
#[test]
fn nginx_a_large_blob_over_a_slow_link_is_restored() {
    let Some(cache) = Cache::nginx("nginx_a_large_blob_over_a_slow_link_is_restored") else {
        return;
    };
    let slow = cache
        .url
        .replace(&format!("/{PREFIX}"), &format!("/slow/{PREFIX}"));
    let graph = format!(
        "[datasets.big]\n[jobs.big]\noutputs = [\"big\"]\n\
         run = [\"sh\", \"-c\", \"head -c 4194304 /dev/urandom > $CAIRN_OUT/blob.bin\"]\n\
         [cache]\nurl = \"{slow}\"\ntimeout = \"1s\"\n"
    );
    let (first, second) = (Project::with_graph(&graph), Project::with_graph(&graph));
    let built = Build::new(cairn(
        &first,
        &["build", "--json", "--remote-cache-mode", "write"],
        &[],
    ));
    built.assert_code(0);
    assert_eq!(remote_count(&built, "uploaded"), 1, "{}", built.run.stderr);
    let started = Instant::now();
    let built = Build::new(cairn(&second, &["build", "--json"], &[]));
    let took = started.elapsed();
    built.assert_code(0);
    assert_eq!(built.count("executed"), 0, "{}", built.run.stderr);
    assert_eq!(remote_count(&built, "hits"), 1, "{}", built.run.stderr);
    assert_eq!(remote_count(&built, "errors"), 0, "{}", built.run.stderr);
    // It really was slower than the timeout's bound on a whole request.
    assert!(took > Duration::from_millis(2500), "took {took:?}");
    assert_eq!(
        snapshot(&first.file("data")),
        snapshot(&second.file("data"))
    );
}

/// An HTTP PUT's body is sent from memory (object_store's HTTP store
/// takes no upload in parts): the 256 MiB blob goes as 8 MiB part objects
/// and their index, one part in memory at a time (it was held whole).
#[test]
fn nginx_a_large_output_goes_up_as_parts_and_comes_back_streamed() {
    let Some(cache) = Cache::nginx("nginx_a_large_output_goes_up_as_parts_and_comes_back_streamed")
    else {
        return;
    };
    a_large_output_in_bounded_memory(&cache, 256, 128);
}

/// A blob stored as parts on an HTTP cache is checked whole when it comes
/// back: a part altered on the server (its length kept, so the index still
/// matches it) is refused, reported once, never placed, and the action runs.
#[test]
fn nginx_a_part_altered_on_the_server_is_refused_and_rebuilt() {
    let Some(cache) = Cache::nginx("nginx_a_part_altered_on_the_server_is_refused_and_rebuilt")
    else {
        return;
    };
    let graph = "[datasets.big]\n[jobs.big]\noutputs = [\"big\"]\n\
                 run = [\"sh\", \"-c\", \"head -c 20971520 /dev/urandom > $CAIRN_OUT/blob.bin\"]\n";
    let (first, second) = (Project::with_graph(graph), Project::with_graph(graph));
    build(&first, &cache, &["--remote-cache-mode", "write"]).assert_code(0);
    let files = first.output_files("big");
    let digest = files[0]["digest"].as_str().unwrap().to_owned();
    assert!(cache.get(&format!("cas/{digest}")).is_none(), "not whole");
    let index = String::from_utf8(
        cache
            .get(&format!("cas/{digest}.parts"))
            .expect("the index"),
    )
    .unwrap();
    let lines: Vec<&str> = index.lines().collect();
    assert_eq!(lines[0], "cairn-parts/1 20971520", "{index}");
    assert_eq!(lines.len(), 4, "three parts: {index}");
    let part = format!("cas/{}", lines[2].split_once(' ').unwrap().0);
    let mut altered = cache.get(&part).expect("the part");
    altered[4096] ^= 1;
    cache.put(&part, &altered);

    let built = build(&second, &cache, &[]);
    built.assert_code(0);
    assert_eq!(
        built.outputs("executed"),
        BTreeSet::from(["big".to_owned()]),
        "{}",
        built.run.stderr
    );
    refused_once_as_corrupt(&second, &built, &digest);
    let made = second.output_files("big");
    assert_ne!(
        made[0]["digest"].as_str().unwrap(),
        digest,
        "the job ran again (random bytes)"
    );
    let blob = second.file(&format!(".cairn/cas/{}/{}", &digest[..2], &digest[2..]));
    assert!(!blob.exists(), "the altered blob entered the local store");
}

#[test]
fn nginx_killed_mid_upload() {
    let Some(mut cache) = Cache::nginx("nginx_killed_mid_upload") else {
        return;
    };
    killed_mid_upload(&mut cache);
}

// ---------------------------------------------------------------------
// S3: SeaweedFS.
// ---------------------------------------------------------------------

#[test]
fn s3_two_machines_30x30() {
    let Some(cache) = Cache::seaweed("s3_two_machines_30x30") else {
        return;
    };
    two_machines(&cache, 30, 30);
}

#[test]
fn s3_version_ping_pong_poisoned_entry_and_corrupted_blob() {
    let test = "s3_version_ping_pong_poisoned_entry_and_corrupted_blob";
    let Some(cache) = Cache::seaweed(test) else {
        return;
    };
    version_ping_pong(&cache);
    // One server, fresh prefixes: the scenarios share nothing.
    let mut cache = cache;
    for (index, scenario) in SCENARIOS.into_iter().enumerate() {
        cache.url = format!("s3://{BUCKET}/{PREFIX}-{index}");
        scenario(&cache);
    }
}

#[test]
fn s3_a_large_output_goes_up_in_parts_and_comes_back_streamed() {
    let Some(cache) = Cache::seaweed("s3_a_large_output_goes_up_in_parts_and_comes_back_streamed")
    else {
        return;
    };
    // 96 MiB: the test server holds 4 volumes of 64 MiB
    // (.ci/services/seaweedfs.sh), and a 256 MiB blob could leave no room
    // for its entry (a 500, seen once). Held twice before, 96 MiB was
    // still above the bound.
    a_large_output_in_bounded_memory(&cache, 96, 128);
}

#[test]
fn s3_killed_mid_upload() {
    let Some(mut cache) = Cache::seaweed("s3_killed_mid_upload") else {
        return;
    };
    killed_mid_upload(&mut cache);
}

/// The port's contract (core/src/contract.rs) against the real servers:
/// create-only AC entries (first writer wins: PutMode::Create on S3,
/// HEAD-then-PUT on HTTP), blobs round-tripping, large and empty.
#[test]
fn the_real_servers_keep_the_remote_contract() {
    use cairn_core::contract;
    let test = "the_real_servers_keep_the_remote_contract";
    let Some(nginx) = Cache::nginx(test) else {
        return;
    };
    let Some(seaweed) = Cache::seaweed(test) else {
        return;
    };
    let open = |cache: &Cache| {
        cairn_remote::open_with_env(&cache.url, Some(Duration::from_secs(10)), cache.env.clone())
            .unwrap()
    };
    for cache in [&nginx, &seaweed] {
        contract::remote_actions_are_written_once(&open(cache));
        contract::remote_blobs_round_trip(&open(cache));
        contract::remote_blobs_stream_in(&open(cache));
    }
    // First writer wins under a race on S3 (PutMode::Create): of eight
    // machines writing one key at once, exactly one creates the entry and
    // the others keep it (docs/remote-cache.md; HTTP's HEAD-then-PUT has
    // no such promise).
    use cairn_core::ports::{PutOutcome, RemoteCache};
    let key = cairn_core::ActionKey([0xee; 32]);
    let outcomes: Vec<(PutOutcome, Vec<u8>)> = std::thread::scope(|threads| {
        let racers: Vec<_> = (0..8u8)
            .map(|writer| {
                let cache = open(&seaweed);
                threads.spawn(move || {
                    let entry = vec![writer; 64];
                    (cache.put_action(&key, &entry).unwrap(), entry)
                })
            })
            .collect();
        racers
            .into_iter()
            .map(|racer| racer.join().unwrap())
            .collect()
    });
    let created: Vec<&Vec<u8>> = outcomes
        .iter()
        .filter(|(outcome, _)| *outcome == PutOutcome::Created)
        .map(|(_, entry)| entry)
        .collect();
    assert_eq!(created.len(), 1, "{outcomes:?}");
    assert_eq!(
        open(&seaweed).get_action(&key).unwrap().as_ref(),
        Some(created[0]),
        "the entry is the first writer's"
    );
}

/// The batches of requests (several in flight on one thread) keep the
/// port's contract against nginx and SeaweedFS: each answered once, the
/// first writer winning, no request started once told to stop.
#[test]
fn the_real_servers_keep_the_batch_contract() {
    let test = "the_real_servers_keep_the_batch_contract";
    let Some(nginx) = Cache::nginx(test) else {
        return;
    };
    let Some(seaweed) = Cache::seaweed(test) else {
        return;
    };
    for cache in [&nginx, &seaweed] {
        let opened = cairn_remote::open_with_env(
            &cache.url,
            Some(Duration::from_secs(10)),
            cache.env.clone(),
        )
        .unwrap();
        cairn_core::contract::remote_batches_answer_each_request_once(&opened);
    }
}

/// A loopback HTTP server for a test: its port. Each connection gets a
/// thread of its own, which `handle` runs with the connection's buffered
/// reader and a writer on the same socket.
fn serve_connections(
    handle: impl Fn(std::io::BufReader<std::net::TcpStream>, std::net::TcpStream)
    + Send
    + Sync
    + 'static,
) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::sync::Arc::new(handle);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let handle = std::sync::Arc::clone(&handle);
            std::thread::spawn(move || {
                let writer = stream.try_clone().unwrap();
                handle(std::io::BufReader::new(stream), writer);
            });
        }
    });
    port
}

/// The next request's head (its request line and headers) read from a
/// test server's connection, and its body's length (`content-length`, 0
/// without one); `None` once the client closed the connection.
fn request_head(reader: &mut impl std::io::BufRead) -> Option<(String, u64)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    Some((head, length))
}

/// A loopback HTTP server that keeps the requests' heads: what a cache
/// would see. It answers 404 to reads at once and 201 to writes (whose
/// bodies it drops) after `delay`.
fn recording_server(delay: Duration) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    recording_server_reading_at(delay, None)
}

/// [`recording_server`], reading request bodies at `rate` bytes per second
/// if given: a slow link for uploads.
fn recording_server_reading_at(
    delay: Duration,
    rate: Option<u64>,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&heads);
    let port = serve_connections(move |mut reader, mut writer| {
        loop {
            let Some((head, length)) = request_head(&mut reader) else {
                return;
            };
            let mut left = length;
            while left > 0 {
                let piece = rate.map_or(left, |rate| left.min(rate / 16));
                let mut body = Vec::new();
                if (&mut reader).take(piece).read_to_end(&mut body).is_err() || body.is_empty() {
                    return;
                }
                left -= body.len() as u64;
                if let Some(rate) = rate {
                    std::thread::sleep(Duration::from_secs_f64(body.len() as f64 / rate as f64));
                }
            }
            let put = head.starts_with("PUT ");
            seen.lock().unwrap().push(head);
            if put {
                std::thread::sleep(delay);
            }
            let answer = if put {
                "HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n"
            } else {
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
            };
            if writer.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    });
    (port, heads)
}

/// The lookups are asked ahead of the workers: with one worker and three
/// ready actions whose jobs each take two seconds, the cache has been asked
/// for all three entries while the first job still runs. Before, each
/// lookup waited for the worker, after the job before it.
#[test]
fn lookups_are_asked_before_the_workers_take_the_actions() {
    let (port, heads) = recording_server(Duration::ZERO);
    let project = Project::with_graph(&format!(
        "[datasets.out]\n[dimensions.n]\nvalues = [\"a\", \"b\", \"c\"]\n\
         [jobs.slow]\noutputs = [\"out/n={{n}}\"]\n\
         run = [\"sh\", \"-c\", \"sleep 2; echo done > $CAIRN_OUT/f\"]\n\
         [cache]\nurl = \"http://127.0.0.1:{port}/team\"\n"
    ));
    let lookups = || {
        heads
            .lock()
            .unwrap()
            .iter()
            .filter(|head| head.starts_with("GET /team/ac/"))
            .count()
    };
    let child = Command::new(CAIRN)
        .args(["build", "--json", "-j", "1", "--remote-cache-mode", "read"])
        .current_dir(project.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while lookups() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // The first job sleeps for two seconds from about now.
    std::thread::sleep(Duration::from_millis(500));
    let asked = lookups();
    let output = child.wait_with_output().unwrap();
    let built = Build::new(Run {
        args: vec!["build".to_owned()],
        code: output.status.code().unwrap(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    });
    built.assert_code(0);
    built.assert_counts(3, 3, 0, 0, 0);
    assert_eq!(asked, 3, "lookups asked during the first job");
    assert_eq!(lookups(), 3, "each asked once");
    assert_eq!(remote_count(&built, "misses"), 3);
}

/// A large blob's upload over a slow link (a server reading 2 MiB/s) takes
/// longer than the timeout and is sent all the same: a transfer is given
/// the timeout plus a second per MiB. Before, the 6 MiB upload timed out
/// after 1 s and counted as an error.
#[test]
fn a_large_blob_over_a_slow_link_is_uploaded() {
    let (port, heads) = recording_server_reading_at(Duration::ZERO, Some(2 * 1024 * 1024));
    let project = Project::with_graph(&format!(
        "[datasets.big]\n[jobs.big]\noutputs = [\"big\"]\n\
         run = [\"sh\", \"-c\", \"head -c 6291456 /dev/urandom > $CAIRN_OUT/blob.bin\"]\n\
         [cache]\nurl = \"http://127.0.0.1:{port}/team\"\ntimeout = \"1s\"\n"
    ));
    let built = Build::new(cairn(
        &project,
        &["build", "--json", "--remote-cache-mode", "write"],
        &[],
    ));
    built.assert_code(0);
    assert_eq!(remote_count(&built, "errors"), 0, "{}", built.run.stderr);
    assert_eq!(remote_count(&built, "uploaded"), 1, "{}", built.run.stderr);
    assert!(remote_count(&built, "uploaded_bytes") >= 6_291_456);
    let heads = heads.lock().unwrap();
    assert!(
        heads.iter().any(|head| head.starts_with("PUT /team/ac/")),
        "{heads:?}"
    );
}

/// An `s3://` cache signs with the AWS profile's keys when the environment
/// has none: `[default]`, or the profile `AWS_PROFILE` names, from
/// `~/.aws/credentials` with its region and endpoint from `~/.aws/config`.
/// Keys in the environment win. A named profile that does not exist is a
/// usage error naming the file. The server records each request's
/// `Authorization` header, which names the access key (never the secret).
#[test]
fn s3_credentials_come_from_the_aws_profile() {
    let (port, heads) = recording_server(Duration::ZERO);
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".aws")).unwrap();
    std::fs::write(
        home.path().join(".aws/credentials"),
        "[default]\naws_access_key_id = AKIDPROFILEDEFAULT\naws_secret_access_key = sekrit-profile-default\n\
         [ci]\naws_access_key_id = AKIDPROFILECI\naws_secret_access_key = sekrit-profile-ci\n",
    )
    .unwrap();
    std::fs::write(
        home.path().join(".aws/config"),
        format!(
            "[default]\nendpoint_url = http://127.0.0.1:{port}\n\
             [profile ci]\nendpoint_url = http://127.0.0.1:{port}\nregion = eu-west-1\n"
        ),
    )
    .unwrap();
    let build_with = |extra: &[(&str, &str)]| {
        // A project of its own each time: nothing is current, every action
        // asks the cache.
        let project = Project::podcast(1, 1);
        heads.lock().unwrap().clear();
        let mut env = vec![("HOME".to_owned(), home.path().display().to_string())];
        env.extend(
            extra
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
        );
        let run = cairn(
            &project,
            &[
                "build",
                "--json",
                "--remote-cache",
                "s3://bucket/team",
                "--remote-cache-mode",
                "read",
            ],
            &env,
        );
        assert!(
            !run.stdout.contains("sekrit") && !run.stderr.contains("sekrit"),
            "{run:?}"
        );
        let seen = heads.lock().unwrap().join("");
        (run, seen)
    };
    let (run, seen) = build_with(&[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(seen.contains("Credential=AKIDPROFILEDEFAULT/"), "{seen}");
    let (run, seen) = build_with(&[("AWS_PROFILE", "ci")]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(seen.contains("Credential=AKIDPROFILECI/"), "{seen}");
    assert!(seen.contains("/eu-west-1/s3/aws4_request"), "{seen}");
    let (run, seen) = build_with(&[
        ("AWS_PROFILE", "ci"),
        ("AWS_ACCESS_KEY_ID", "AKIDENVIRONMENT"),
        ("AWS_SECRET_ACCESS_KEY", "sekrit-environment"),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(seen.contains("Credential=AKIDENVIRONMENT/"), "{seen}");
    let (run, seen) = build_with(&[("AWS_PROFILE", "nope")]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains(".aws/credentials"), "{}", run.stderr);
    assert!(run.stderr.contains("AWS_PROFILE=nope"), "{}", run.stderr);
    assert!(seen.is_empty(), "{seen}");
}

#[test]
fn no_upload_wait_drops_the_queued_uploads() {
    // Every write takes 500 ms: the jobs end long before the uploads.
    let (port, heads) = recording_server(Duration::from_millis(500));
    let url = format!("http://127.0.0.1:{port}/team");
    let project = Project::podcast(2, 2);
    let built = Build::new(cairn(
        &project,
        &[
            "build",
            "--json",
            "--remote-cache",
            &url,
            "--remote-cache-mode",
            "write",
            "--no-upload-wait",
            "-j",
            "2",
        ],
        &[],
    ));
    built.assert_code(0);
    built.assert_counts(10, 10, 0, 0, 0);
    let remote = remote(&built);
    let (uploaded, abandoned) = (
        remote["uploaded"].as_u64().unwrap(),
        remote["abandoned"].as_u64().unwrap(),
    );
    assert!(abandoned > 0, "queued uploads were dropped: {remote}");
    assert_eq!(uploaded + abandoned, 10, "{remote}");
    assert_eq!(remote["errors"], 0, "{remote}");
    assert_eq!(events_of(&project, "ActionUploaded").len() as u64, uploaded);
    // An entry is written only after its blobs: as many entries as uploads.
    let entries = heads
        .lock()
        .unwrap()
        .iter()
        .filter(|head| head.starts_with("PUT /team/ac/"))
        .count() as u64;
    assert_eq!(entries, uploaded);
}

/// An HTTP cache has no conditional put, so an entry is written after a
/// HEAD finds none; but the build's own lookup found none a moment before,
/// and for a job shorter than a second that lookup is the look: three
/// requests per action instead of four. A job that ran longer is looked
/// for again before its entry is written.
#[test]
fn an_entry_is_written_without_a_second_look_right_after_its_lookup() {
    let ac = |heads: &[String], method: &str| {
        heads
            .iter()
            .filter(|head| head.starts_with(&format!("{method} /team/ac/")))
            .count()
    };
    let (port, heads) = recording_server(Duration::ZERO);
    let url = format!("http://127.0.0.1:{port}/team");
    let write = ["--remote-cache", &url, "--remote-cache-mode", "write"];
    let project = Project::podcast(2, 2);
    let built = Build::new(cairn(
        &project,
        &[&["build", "--json"][..], &write[..]].concat(),
        &[],
    ));
    built.assert_code(0);
    assert_eq!(remote_count(&built, "uploaded"), 10);
    let seen = heads.lock().unwrap().clone();
    assert_eq!(ac(&seen, "GET"), 10, "{seen:?}");
    assert_eq!(ac(&seen, "PUT"), 10, "{seen:?}");
    // Each upload follows its lookup by milliseconds; a machine loaded
    // enough to delay one past the second still sends the rest unasked.
    assert!(ac(&seen, "HEAD") < 10, "{seen:?}");

    heads.lock().unwrap().clear();
    let slow = Project::with_graph(
        "[datasets.slow]\n[jobs.slow]\noutputs = [\"slow\"]\n\
         run = [\"sh\", \"-c\", \"sleep 1.2; echo done > $CAIRN_OUT/out\"]\n",
    );
    let built = Build::new(cairn(
        &slow,
        &[&["build", "--json"][..], &write[..]].concat(),
        &[],
    ));
    built.assert_code(0);
    let seen = heads.lock().unwrap().clone();
    assert_eq!(ac(&seen, "HEAD"), 1, "{seen:?}");
    assert_eq!(ac(&seen, "PUT"), 1, "{seen:?}");
}

#[test]
fn http_credentials_come_from_a_token_file_or_the_netrc() {
    let scratch = tempfile::tempdir().unwrap();
    let token = scratch.path().join("token");
    std::fs::write(&token, "tok-4d9a\n").unwrap();
    let netrc = scratch.path().join("netrc");
    std::fs::write(&netrc, "machine 127.0.0.1 login ana password pw-77\n").unwrap();
    let project = Project::podcast(1, 1);
    let cases: [(Vec<(String, String)>, &str); 2] = [
        (
            vec![(
                "CAIRN_REMOTE_CACHE_TOKEN_FILE".to_owned(),
                token.display().to_string(),
            )],
            "authorization: bearer tok-4d9a",
        ),
        (
            vec![("NETRC".to_owned(), netrc.display().to_string())],
            // base64("ana:pw-77") is YW5hOnB3LTc3; heads are compared lowercased.
            "authorization: basic yw5honb3ltc3",
        ),
    ];
    for (env, expected) in cases {
        let (port, heads) = recording_server(Duration::ZERO);
        let url = format!("http://127.0.0.1:{port}/team");
        std::fs::remove_dir_all(project.file(".cairn")).ok();
        let built = Build::new(cairn(
            &project,
            &[
                "build",
                "--json",
                "--remote-cache",
                &url,
                "--remote-cache-mode",
                "read",
            ],
            &env,
        ));
        built.assert_code(0);
        assert_eq!(remote_count(&built, "misses"), 3, "{}", built.summary());
        let heads = heads.lock().unwrap();
        assert_eq!(heads.len(), 3, "{heads:?}");
        for head in heads.iter() {
            assert!(head.starts_with("GET /team/ac/"), "{head}");
            assert!(head.to_lowercase().contains(expected), "{head}");
        }
        // Never in what cairn prints.
        assert!(!built.run.stderr.contains("tok-4d9a") && !built.run.stderr.contains("pw-77"));
    }
}

/// A build that `cairn serve` runs uses the graph file's `[cache]` like the
/// command line's: what the server built, another machine restores.
#[test]
fn a_server_build_uploads_through_the_graph_files_cache() {
    let cache = Cache::directory();
    let (first, second) = two_projects(2, 2);
    for project in [&first, &second] {
        project.append(
            "cairn.toml",
            &format!("\n[cache]\nurl = \"{}\"\n", cache.url),
        );
    }
    let server = serve_support::Server::start(first.path(), &[]);
    let operation = server.submit(&[]);
    let id = operation["name"]
        .as_str()
        .or_else(|| operation["id"].as_str())
        .unwrap_or_else(|| panic!("no operation id in {operation}"))
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let done = server.wait_done(&id, Duration::from_secs(120));
    assert!(done["error"].is_null(), "{done}");
    server.stop();
    assert_eq!(events_of(&first, "ActionUploaded").len(), 10);
    let restored = Build::new(cairn(&second, &["build", "--json"], &[]));
    restored.assert_counts(10, 0, 10, 0, 0);
    assert_eq!(remote_count(&restored, "hits"), 10);
    assert_eq!(
        snapshot(&first.file("data")),
        snapshot(&second.file("data"))
    );
}

/// What [`put_server`] saw of the PUTs.
#[derive(Default)]
struct Puts {
    /// PUTs received and not answered yet.
    in_flight: usize,
    /// The most of them at once.
    most_in_flight: usize,
    /// The paths PUT to.
    paths: BTreeSet<String>,
    /// PUTs received.
    received: usize,
    /// Those of blobs (`cas/`) received and not answered yet, and the most
    /// of them at once.
    blobs_in_flight: usize,
    most_blobs_in_flight: usize,
}

/// A loopback HTTP server that answers GET and HEAD with 404 at once, and
/// the `n`th PUT (from 0) with 201 after `answer_after(n)` (never, with
/// `None`: it holds the connection), counting the PUTs it holds at once.
fn put_server(
    answer_after: fn(usize) -> Option<Duration>,
) -> (u16, std::sync::Arc<std::sync::Mutex<Puts>>) {
    use std::io::{BufRead, Read, Write};
    let puts = std::sync::Arc::new(std::sync::Mutex::new(Puts::default()));
    let seen = std::sync::Arc::clone(&puts);
    let port = serve_connections(move |mut reader, mut writer| {
        loop {
            let Some((head, length)) = request_head(&mut reader) else {
                return;
            };
            let mut body = Vec::new();
            if (&mut reader).take(length).read_to_end(&mut body).is_err() {
                return;
            }
            let answer = if let Some(path) = head.strip_prefix("PUT ") {
                let nth = {
                    let mut puts = seen.lock().unwrap();
                    puts.in_flight += 1;
                    puts.most_in_flight = puts.most_in_flight.max(puts.in_flight);
                    let path = path.split(' ').next().unwrap_or_default();
                    puts.paths.insert(path.to_owned());
                    if path.contains("/cas/") {
                        puts.blobs_in_flight += 1;
                        puts.most_blobs_in_flight =
                            puts.most_blobs_in_flight.max(puts.blobs_in_flight);
                    }
                    puts.received += 1;
                    puts.received - 1
                };
                let Some(after) = answer_after(nth) else {
                    // Holds the connection until the client drops it.
                    let _ = reader.read_line(&mut String::new());
                    return;
                };
                std::thread::sleep(after);
                let mut puts = seen.lock().unwrap();
                puts.in_flight -= 1;
                if path.contains("/cas/") {
                    puts.blobs_in_flight -= 1;
                }
                drop(puts);
                "HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n"
            } else {
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
            };
            if writer.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    });
    (port, puts)
}

/// A project of 16 actions uploading to `port` with a timeout of
/// `timeout`: `out/n=00` ends at once, the others after a tenth of a second
/// each, so that the first upload is alone in its batch and the others
/// (all done within a second with `-j 2`) are queued behind it together.
fn sixteen_actions_one_first(port: u16, timeout: &str) -> Project {
    let values: Vec<String> = (0..16).map(|n| format!("\"{n:02}\"")).collect();
    Project::with_graph(&format!(
        "[datasets.out]\n[dimensions.n]\nvalues = [{}]\n\
         [jobs.quick]\noutputs = [\"out/n={{n}}\"]\n\
         run = [\"sh\", \"-c\", \"[ $CAIRN_OUTPUT_REF_0 = out/n=00 ] || sleep 0.1; \
         echo $CAIRN_OUTPUT_REF_0 > $CAIRN_OUT/f\"]\n\
         [cache]\nurl = \"http://127.0.0.1:{port}/team\"\ntimeout = \"{timeout}\"\n",
        values.join(", ")
    ))
}

/// The uploads of many actions are in flight together on one thread
/// (engine/src/remote.rs, `Remote::upload_many`): with a cache that takes
/// a second and a half to answer each PUT, the entries of the actions that
/// finished meanwhile are all sent at once, not one per upload thread.
/// Before, four upload threads sent one request each at a time: at most 4
/// PUTs were in flight.
#[test]
fn the_uploads_of_many_actions_are_in_flight_together() {
    let (port, puts) = put_server(|_| Some(Duration::from_millis(1500)));
    let project = sixteen_actions_one_first(port, "10s");
    let built = Build::new(cairn(
        &project,
        &["build", "--json", "-j", "2", "--remote-cache-mode", "write"],
        &[],
    ));
    built.assert_code(0);
    built.assert_counts(16, 16, 0, 0, 0);
    assert_eq!(remote_count(&built, "errors"), 0, "{}", built.run.stderr);
    assert_eq!(remote_count(&built, "uploaded"), 16, "{}", built.run.stderr);
    assert_eq!(events_of(&project, "ActionUploaded").len(), 16);
    let puts = puts.lock().unwrap();
    assert_eq!(puts.paths.len(), 16, "{:?}", puts.paths);
    assert!(
        puts.most_in_flight >= 8,
        "{} PUTs in flight at most",
        puts.most_in_flight
    );
}

/// A cache that answers the first PUT and then hangs: each upload in
/// flight times out on its own (all of them together, not one after the
/// other), each counts as an error, the breaker opens, and the build ends
/// with one warning. The first upload is alone in its batch and answered
/// after a second and a half; the fifteen queued behind it meanwhile are sent
/// together and all time out. Before, the four upload threads' requests
/// tripped the breaker and no more than five entries were ever sent.
#[test]
fn a_hanging_cache_times_out_each_upload_in_flight() {
    let (port, puts) = put_server(|nth| (nth == 0).then_some(Duration::from_millis(1500)));
    let project = sixteen_actions_one_first(port, "2s");
    let started = Instant::now();
    let built = Build::new(cairn(
        &project,
        &["build", "--json", "-j", "2", "--remote-cache-mode", "write"],
        &[],
    ));
    let took = started.elapsed();
    built.assert_code(0);
    built.assert_counts(16, 16, 0, 0, 0);
    assert_eq!(remote_count(&built, "uploaded"), 1, "the first, answered");
    assert_eq!(remote(&built)["tripped"], true);
    assert_eq!(warnings(&built.run).len(), 1, "{}", built.run.stderr);
    assert!(
        built.run.stderr.contains("timed out"),
        "{}",
        built.run.stderr
    );
    let keys = puts.lock().unwrap().paths.len();
    assert!(keys >= 10, "{keys} entries in flight together");
    assert!(
        remote_count(&built, "errors") >= keys as u64 - 1,
        "each entry sent after the first timed out and counts: {} errors for {keys} entries",
        remote_count(&built, "errors")
    );
    // One round of at most 4.5 s (twice the timeout and half a second:
    // remote/src/lib.rs, `limit`) for all of them, not one per entry.
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

/// The blobs that travel apart from their entries (here one output of
/// 100 kB per result) are sent for several results at once: with a cache
/// that takes a second to answer each PUT, the five results queued behind
/// the first send their blobs together. Before, the one upload thread sent
/// them one after the other (one blob in flight at a time).
#[test]
fn the_blobs_of_several_results_are_sent_together() {
    let (port, puts) = put_server(|_| Some(Duration::from_secs(1)));
    let values: Vec<String> = (0..6).map(|n| format!("\"{n:02}\"")).collect();
    let project = Project::with_graph(&format!(
        "[datasets.out]\n[dimensions.n]\nvalues = [{}]\n\
         [jobs.blob]\noutputs = [\"out/n={{n}}\"]\n\
         run = [\"sh\", \"-c\", \"[ $CAIRN_OUTPUT_REF_0 = out/n=00 ] || sleep 0.1; \
         head -c 100000 /dev/urandom > $CAIRN_OUT/f\"]\n\
         [cache]\nurl = \"http://127.0.0.1:{port}/team\"\n",
        values.join(", ")
    ));
    let built = Build::new(cairn(
        &project,
        &["build", "--json", "-j", "2", "--remote-cache-mode", "write"],
        &[],
    ));
    built.assert_code(0);
    built.assert_counts(6, 6, 0, 0, 0);
    assert_eq!(remote_count(&built, "errors"), 0, "{}", built.run.stderr);
    assert_eq!(remote_count(&built, "uploaded"), 6, "{}", built.run.stderr);
    let puts = puts.lock().unwrap();
    let blobs = puts
        .paths
        .iter()
        .filter(|path| path.contains("/cas/"))
        .count();
    assert_eq!(blobs, 6, "{:?}", puts.paths);
    assert!(
        puts.most_blobs_in_flight >= 3,
        "{} blobs in flight at most",
        puts.most_blobs_in_flight
    );
}
