//! `[executor] data = "cache"`: Slurm without a shared filesystem
//! (docs/slurm.md, "Without a shared filesystem"). The coordinator uploads
//! what the job reads to the remote cache — its inputs, its `code` files,
//! the checkpoint it resumes from — and a [`CachedSpec`] naming them, as
//! blobs; the Slurm job runs `cairn worker cached URL SPEC_DIGEST` on its
//! node, which fetches and verifies the spec and the files into a scratch
//! directory of its own (never the project), runs the job there with the
//! local runner's code, uploads its outputs and logs as blobs, and writes a
//! [`CachedOutcome`] under the attempt's [`outcome_key`]. The coordinator
//! reads that outcome, downloads each blob and checks its blake3 against its
//! name and each path against its partition (nothing the worker says is
//! trusted), writes the files into the attempt's staging directory, and the
//! executor ingests them exactly as after a local job.
//!
//! Scratch layout on the node: `work/` (the working directory, with the
//! job's code files at their paths in the project), `in/<i>` (input `i`: a
//! file or a directory), `out/<i>/`, `stdout`, `stderr`, `checkpoint.json`,
//! `resume.json`.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::digest::{ActionKey, ContentDigest};
use crate::job::{Children, Invocation};
use crate::ports::{RemoteCache, VerifyingReader, corrupt_blob_of};

use super::worker::{SPEC_VERSION, WorkerError, WorkerOutcome};

/// One file the worker places in its scratch directory, or one it made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Placed {
    /// Relative to the scratch directory (or to the output directory, in
    /// an outcome): plain components only.
    pub path: String,
    pub digest: ContentDigest,
    /// Permission bits (`& 0o777`).
    pub mode: u32,
}

/// What a cache-mode worker runs: one attempt, with every file it needs
/// named by digest. No path of the coordinator's is in it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CachedSpec {
    pub version: u32,
    pub label: String,
    pub argv: Vec<String>,
    /// The allow-listed variables of the coordinator's environment.
    pub passed: Vec<(String, String)>,
    pub secret_names: Vec<String>,
    /// The job's own variables; those named in `scratch_vars` are paths
    /// relative to the scratch directory.
    pub extra: Vec<(String, String)>,
    pub scratch_vars: Vec<String>,
    pub run_id: String,
    pub timeout_ms: Option<u64>,
    /// The files to place, and the directories to create (relative).
    pub files: Vec<Placed>,
    pub dirs: Vec<String>,
    /// How many outputs (`out/0` … `out/<n-1>`).
    pub outputs: usize,
}

/// What a cache-mode worker reports, under [`outcome_key`] of its spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CachedOutcome {
    pub outcome: WorkerOutcome,
    /// The files of each output directory (uploaded as blobs), on success.
    pub outputs: Vec<Vec<Placed>>,
    pub stdout: Option<ContentDigest>,
    pub stderr: Option<ContentDigest>,
}

/// Where the outcome of the attempt whose spec is the blob `spec` is
/// written: an entry under `ac/`, at a key no action key can be (the
/// blake3 of a prefix no action recipe starts with, and the spec's digest,
/// which holds the attempt's unique run id).
pub fn outcome_key(spec: &ContentDigest) -> ActionKey {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cairn-slurm-outcome/1\0");
    hasher.update(&spec.0);
    ActionKey(*hasher.finalize().as_bytes())
}

/// Where the worker of the attempt whose spec is `spec` writes its beat
/// number `beat` (docs/slurm.md, "Faults"): AC entries are written once,
/// so each beat is an entry of its own (1, 2, 3…, a second apart), at a
/// key no action key or outcome key can be.
pub fn heartbeat_key(spec: &ContentDigest, beat: u64) -> ActionKey {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cairn-slurm-heartbeat/1\0");
    hasher.update(&spec.0);
    hasher.update(&beat.to_le_bytes());
    ActionKey(*hasher.finalize().as_bytes())
}

/// The last beat seen of the worker of `spec`'s attempt, after `last`
/// (0: none yet): asks for beat `last + 1`, then the next while there is
/// one (a few at most, when the coordinator looked late). A cache that
/// cannot be asked shows no new beat: one down for longer than the bound
/// loses the attempt, as its worker could not report either.
pub fn last_heartbeat(cache: &dyn RemoteCache, spec: &ContentDigest, last: u64) -> u64 {
    let mut seen = last;
    while let Ok(Some(_)) = cache.get_action(&heartbeat_key(spec, seen + 1)) {
        seen += 1;
        if seen - last >= 64 {
            break;
        }
    }
    seen
}

/// A non-empty relative path of normal components only.
fn plain_relative(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|component| matches!(component, Component::Normal(_)))
}

/// Uploads `bytes` unless the cache has them; their digest.
fn put(cache: &dyn RemoteCache, bytes: &[u8]) -> Result<ContentDigest, String> {
    let digest = ContentDigest::of(bytes);
    if !cache.has_blob(&digest).map_err(|error| error.to_string())? {
        cache
            .put_blob(&digest, bytes)
            .map_err(|error| error.to_string())?;
    }
    Ok(digest)
}

/// Downloads blob `digest`, checking that its content hashes to its name.
fn get(cache: &dyn RemoteCache, digest: &ContentDigest) -> Result<Vec<u8>, String> {
    let bytes = cache
        .get_blob(digest)
        .map_err(|error| error.to_string())?
        .ok_or_else(|| format!("blob {digest} is not in the remote cache {}", cache.url()))?;
    let actual = ContentDigest::of(&bytes);
    if actual != *digest {
        return Err(format!(
            "blob {digest} failed verification (its content hashes to {actual})"
        ));
    }
    Ok(bytes)
}

/// Every regular file under `dir`, as `(relative path, path)`, sorted.
/// A symbolic link or other special file is refused.
fn walk(dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    fn visit(root: &Path, dir: &Path, found: &mut Vec<(String, PathBuf)>) -> Result<(), String> {
        let entries = fs::read_dir(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|error| format!("{}: {error}", dir.display()))?;
            let path = entry.path();
            let kind = entry
                .file_type()
                .map_err(|error| format!("{}: {error}", path.display()))?;
            if kind.is_dir() {
                visit(root, &path, found)?;
            } else if kind.is_file() {
                let relative = path
                    .strip_prefix(root)
                    .map_err(|error| format!("{}: {error}", path.display()))?;
                found.push((relative.to_string_lossy().into_owned(), path));
            } else {
                return Err(format!(
                    "{}: not a regular file or directory (cache mode carries only those)",
                    path.display()
                ));
            }
        }
        Ok(())
    }
    let mut found = Vec::new();
    visit(dir, dir, &mut found)?;
    found.sort();
    Ok(found)
}

fn mode_of(path: &Path) -> Result<u32, String> {
    fs::metadata(path)
        .map(|meta| meta.permissions().mode() & 0o777)
        .map_err(|error| format!("{}: {error}", path.display()))
}

/// Uploads the file at `from` and names it `to` in the scratch directory.
fn place(cache: &dyn RemoteCache, from: &Path, to: String) -> Result<Placed, String> {
    Ok(Placed {
        path: to,
        digest: put_file(cache, from)?,
        mode: mode_of(from)?,
    })
}

/// Uploads the file at `path` unless the cache has it; its digest. Read
/// as a stream twice (hashed, then sent), never held whole: an input, an
/// output or a log may be larger than the machine's memory. The second
/// read is checked against the first: a file that changed in between (a
/// process the job left behind, still writing) is an error naming it, and
/// never stored under a digest that is not its content's.
fn put_file(cache: &dyn RemoteCache, path: &Path) -> Result<ContentDigest, String> {
    let failed = |error: io::Error| format!("{}: {error}", path.display());
    let digest = crate::observe::hash_file(path).map_err(failed)?;
    if !cache.has_blob(&digest).map_err(|error| error.to_string())? {
        let file = fs::File::open(path).map_err(failed)?;
        let changed = std::sync::atomic::AtomicBool::new(false);
        let mut verified = VerifyingReader::new(file, digest)
            .on_corrupt(|| changed.store(true, std::sync::atomic::Ordering::SeqCst));
        let sent = cache.put_blob_from(&digest, &mut verified);
        drop(verified);
        if changed.into_inner() {
            return Err(format!(
                "{}: changed while it was sent to the remote cache (it hashed to {digest} before)",
                path.display()
            ));
        }
        sent.map_err(|error| error.to_string())?;
    }
    Ok(digest)
}

/// Writes blob `digest` of the cache to a new file at `path` with `mode`
/// as it arrives, hashing it on the way: a blob that is not what its name
/// says is an error and leaves no file (written beside `path`, then
/// renamed).
fn fetch(
    cache: &dyn RemoteCache,
    digest: &ContentDigest,
    path: &Path,
    mode: u32,
) -> Result<(), String> {
    let failed = |path: &Path, error: io::Error| format!("{}: {error}", path.display());
    // The directories made for it, removed again if it is refused.
    let made = path
        .ancestors()
        .skip(1)
        .take_while(|dir| !dir.as_os_str().is_empty() && !dir.exists())
        .last()
        .map(Path::to_owned);
    let reader = cache
        .open_blob(digest)
        .map_err(|error| error.to_string())?
        .ok_or_else(|| format!("blob {digest} is not in the remote cache {}", cache.url()))?;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|error| failed(parent, error))?;
    }
    let mut name = path.as_os_str().to_owned();
    name.push(".fetching");
    let temporary = PathBuf::from(name);
    let written = (|| {
        let mut file = fs::File::create(&temporary).map_err(|error| failed(&temporary, error))?;
        let mut verified = VerifyingReader::new(reader, *digest);
        io::copy(&mut verified, &mut file).map_err(|error| match corrupt_blob_of(&error) {
            Some((_, actual)) => {
                format!("blob {digest} failed verification (its content hashes to {actual})")
            }
            None => format!("blob {digest} into {}: {error}", temporary.display()),
        })?;
        fs::set_permissions(&temporary, fs::Permissions::from_mode(mode & 0o777))
            .map_err(|error| failed(&temporary, error))?;
        fs::rename(&temporary, path).map_err(|error| failed(path, error))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
        if let Some(made) = made {
            let _ = fs::remove_dir_all(made);
        }
    }
    written
}

/// `CAIRN_INPUT_<n>` → `Some(n)`.
fn numbered(name: &str, prefix: &str) -> Option<usize> {
    name.strip_prefix(prefix)?.parse().ok()
}

/// The coordinator's half before submitting: uploads the attempt's files
/// (its inputs, its job's `code` files found under `root`, the checkpoint
/// it resumes from) and its spec; the spec's digest.
pub fn prepare(
    cache: &dyn RemoteCache,
    invocation: &Invocation<'_>,
    code: &[String],
    root: &Path,
    run_id: &str,
) -> Result<ContentDigest, String> {
    let mut files = Vec::new();
    let mut dirs = vec!["work".to_owned()];
    let mut extra = Vec::new();
    let mut scratch_vars = Vec::new();
    let mut outputs = 0;
    for (name, value) in invocation.extra_env {
        let relative = if let Some(index) = numbered(name, "CAIRN_INPUT_") {
            let path = Path::new(value);
            let target = format!("in/{index}");
            if path.is_dir() {
                dirs.push(target.clone());
                for (relative, file) in walk(path)? {
                    files.push(place(cache, &file, format!("{target}/{relative}"))?);
                }
            } else {
                files.push(place(cache, path, target.clone())?);
            }
            Some(target)
        } else if name == "CAIRN_IN" {
            Some("in/0".to_owned())
        } else if let Some(index) = numbered(name, "CAIRN_OUTPUT_") {
            outputs = outputs.max(index + 1);
            Some(format!("out/{index}"))
        } else if name == "CAIRN_OUT" {
            Some("out/0".to_owned())
        } else if name == "CAIRN_CHECKPOINT" {
            Some("checkpoint.json".to_owned())
        } else if name == "CAIRN_RESUME" {
            files.push(place(cache, Path::new(value), "resume.json".to_owned())?);
            Some("resume.json".to_owned())
        } else {
            None
        };
        match relative {
            Some(relative) => {
                scratch_vars.push(name.clone());
                extra.push((name.clone(), relative));
            }
            None => extra.push((name.clone(), value.clone())),
        }
    }
    for index in 0..outputs {
        dirs.push(format!("out/{index}"));
    }
    for file in code {
        files.push(place(cache, &root.join(file), format!("work/{file}"))?);
    }
    let spec = CachedSpec {
        version: SPEC_VERSION,
        label: invocation.label.to_owned(),
        argv: invocation.argv.to_vec(),
        passed: invocation.environment.passed.clone(),
        secret_names: invocation
            .environment
            .secret
            .iter()
            .map(|(name, _)| name.clone())
            .collect(),
        extra,
        scratch_vars,
        run_id: run_id.to_owned(),
        timeout_ms: invocation
            .timeout
            .map(|timeout| u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
        files,
        dirs,
        outputs,
    };
    let bytes = serde_json::to_vec(&spec).map_err(|error| error.to_string())?;
    put(cache, &bytes)
}

/// The outcome of the attempt whose spec is `spec`, once the worker wrote
/// it (`Ok(None)` before).
pub fn read_outcome(
    cache: &dyn RemoteCache,
    spec: &ContentDigest,
) -> Result<Option<CachedOutcome>, String> {
    let Some(bytes) = cache
        .get_action(&outcome_key(spec))
        .map_err(|error| error.to_string())?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|error| format!("the worker's outcome for spec {spec} is not valid: {error}"))
}

/// The coordinator's half after the worker: the job's logs into the
/// attempt's stdout and stderr files and, on success, each output's files
/// into its staging directory (`outputs[i]`), every blob verified against
/// its name and every path checked to stay inside its output first.
pub fn restore(
    cache: &dyn RemoteCache,
    outcome: &CachedOutcome,
    stdout: &Path,
    stderr: &Path,
    outputs: &[PathBuf],
) -> Result<(), String> {
    for (digest, path) in [(&outcome.stdout, stdout), (&outcome.stderr, stderr)] {
        if let Some(digest) = digest {
            fetch(cache, digest, path, 0o644)?;
        }
    }
    let success = outcome.outcome.code == Some(0) && outcome.outcome.error.is_none();
    if !success {
        return Ok(());
    }
    if outcome.outputs.len() != outputs.len() {
        return Err(format!(
            "the worker reported {} outputs, the job has {}",
            outcome.outputs.len(),
            outputs.len()
        ));
    }
    for (files, dir) in outcome.outputs.iter().zip(outputs) {
        for file in files {
            if !plain_relative(&file.path) {
                return Err(format!(
                    "the worker reported a file path {:?} outside its output",
                    file.path
                ));
            }
            fetch(cache, &file.digest, &dir.join(&file.path), file.mode)?;
        }
    }
    Ok(())
}

/// `cairn worker cached URL SPEC...`: runs each attempt in turn
/// ([`run_cached`]), and stops starting new ones once `children` is
/// interrupted (SIGTERM from `scancel`). The errors of those it could not
/// run; the specs after one still run.
pub fn run_batch(
    cache: &dyn RemoteCache,
    specs: &[ContentDigest],
    scratch_root: &Path,
    children: &Children,
) -> Result<(), Vec<WorkerError>> {
    super::worker::in_turn(specs, children, |spec| {
        run_cached(cache, spec, scratch_root, children)
    })
}

/// `cairn worker cached URL SPEC`: runs the attempt whose spec is blob
/// `spec` of `cache` in a fresh scratch directory under `scratch_root`
/// (removed afterwards), then uploads its outputs, its logs and its
/// outcome. Interrupted by `children` as a local job.
pub fn run_cached(
    cache: &dyn RemoteCache,
    spec_digest: &ContentDigest,
    scratch_root: &Path,
    children: &Children,
) -> Result<(), WorkerError> {
    crate::groups::become_subreaper();
    let what = PathBuf::from(format!("{}/cas/{spec_digest}", cache.url()));
    let invalid = |message: String| WorkerError::Invalid {
        path: what.clone(),
        message,
    };
    let bytes = get(cache, spec_digest).map_err(invalid)?;
    let spec: CachedSpec =
        serde_json::from_slice(&bytes).map_err(|error| invalid(error.to_string()))?;
    if spec.version != SPEC_VERSION {
        return Err(invalid(format!(
            "version {} (this cairn reads version {SPEC_VERSION}): the nodes run another cairn than the coordinator",
            spec.version
        )));
    }
    let scratch = scratch_root.join(format!("cairn-worker-{}", crate::groups::unique_id()));
    let beat = |count: u64| {
        if let Err(error) = cache.put_action(&heartbeat_key(spec_digest, count), b"beat") {
            tracing::warn!("cannot beat in the remote cache {}: {error}", cache.url());
        }
    };
    let result = super::worker::beating(beat, || run_in(cache, &spec, &scratch, children));
    let _ = fs::remove_dir_all(&scratch);
    let mut outcome = result.unwrap_or_else(|error| CachedOutcome {
        outcome: WorkerOutcome {
            version: SPEC_VERSION,
            error: Some(error),
            ..WorkerOutcome::default()
        },
        ..CachedOutcome::default()
    });
    outcome.outcome.node = std::env::var("SLURMD_NODENAME").ok();
    outcome.outcome.slurm_job = std::env::var("SLURM_JOB_ID").ok();
    let json = serde_json::to_vec(&outcome).map_err(|error| WorkerError::Outcome {
        path: what.clone(),
        source: io::Error::other(error),
    })?;
    cache
        .put_action(&outcome_key(spec_digest), &json)
        .map(|_| ())
        .map_err(|error| WorkerError::Outcome {
            path: what,
            source: io::Error::other(error),
        })
}

/// Places the spec's files in `scratch`, runs the job, uploads what it
/// made: the outcome to report (an `Err`: why the job could not run).
fn run_in(
    cache: &dyn RemoteCache,
    spec: &CachedSpec,
    scratch: &Path,
    children: &Children,
) -> Result<CachedOutcome, String> {
    for dir in &spec.dirs {
        if !plain_relative(dir) {
            return Err(format!(
                "the spec names a directory {dir:?} outside the scratch"
            ));
        }
        fs::create_dir_all(scratch.join(dir))
            .map_err(|error| format!("{}: {error}", scratch.display()))?;
    }
    for file in &spec.files {
        if !plain_relative(&file.path) {
            return Err(format!(
                "the spec names a file {:?} outside the scratch",
                file.path
            ));
        }
        fetch(cache, &file.digest, &scratch.join(&file.path), file.mode)?;
    }
    let environment = super::worker::node_environment(&spec.passed, &spec.secret_names);
    let mut extra = super::worker::where_it_runs();
    for (name, value) in &spec.extra {
        let value = if spec.scratch_vars.contains(name) {
            scratch.join(value).to_string_lossy().into_owned()
        } else {
            value.clone()
        };
        extra.push((name.clone(), value));
    }
    let (stdout, stderr) = (scratch.join("stdout"), scratch.join("stderr"));
    let ended = super::worker::run_job(
        &Invocation {
            argv: &spec.argv,
            cwd: &scratch.join("work"),
            environment: &environment,
            extra_env: &extra,
            stdout: &stdout,
            stderr: &stderr,
            run_id: &spec.run_id,
            label: &spec.label,
            timeout: spec.timeout_ms.map(Duration::from_millis),
        },
        children,
    )
    .map_err(|error| error.to_string())?;
    let mut outcome = CachedOutcome {
        outcome: WorkerOutcome {
            version: SPEC_VERSION,
            code: ended.status.code(),
            signal: std::os::unix::process::ExitStatusExt::signal(&ended.status),
            timed_out: ended.timed_out,
            escalated: ended.escalated,
            stopped: ended.stopped,
            ..WorkerOutcome::default()
        },
        ..CachedOutcome::default()
    };
    for (path, log) in [
        (&stdout, &mut outcome.stdout),
        (&stderr, &mut outcome.stderr),
    ] {
        if fs::metadata(path).is_ok_and(|meta| meta.len() > 0) {
            *log = Some(put_file(cache, path)?);
        }
    }
    if ended.succeeded() {
        for index in 0..spec.outputs {
            let dir = scratch.join(format!("out/{index}"));
            let mut files = Vec::new();
            for (relative, path) in walk(&dir)? {
                files.push(place(cache, &path, relative)?);
            }
            outcome.outputs.push(files);
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobEnvironment;
    use crate::memory::MemoryRemoteCache;
    use crate::ports::{PutOutcome, RemoteError};

    /// A cache that lets the file at `path` grow when asked whether it has
    /// a blob: between the file's hash and its upload, as a process a job
    /// left behind would.
    struct GrowsTheFile<'a> {
        inner: MemoryRemoteCache,
        path: &'a Path,
    }

    impl RemoteCache for GrowsTheFile<'_> {
        fn url(&self) -> &str {
            self.inner.url()
        }
        fn get_action(&self, key: &ActionKey) -> Result<Option<Vec<u8>>, RemoteError> {
            self.inner.get_action(key)
        }
        fn put_action(&self, key: &ActionKey, entry: &[u8]) -> Result<PutOutcome, RemoteError> {
            self.inner.put_action(key, entry)
        }
        fn has_blob(&self, digest: &ContentDigest) -> Result<bool, RemoteError> {
            let mut file = fs::OpenOptions::new().append(true).open(self.path).unwrap();
            io::Write::write_all(&mut file, b"written late\n").unwrap();
            self.inner.has_blob(digest)
        }
        fn get_blob(&self, digest: &ContentDigest) -> Result<Option<Vec<u8>>, RemoteError> {
            self.inner.get_blob(digest)
        }
        fn put_blob(&self, digest: &ContentDigest, bytes: &[u8]) -> Result<(), RemoteError> {
            self.inner.put_blob(digest, bytes)
        }
    }

    /// A file that changes after it is hashed is an error naming it, and
    /// its new bytes are not stored under the old content's digest (the
    /// cache's readers would refuse them, the attempt then failing late).
    #[test]
    fn a_file_changed_after_its_hash_is_not_stored_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        fs::write(&path, "hashed\n").unwrap();
        let cache = GrowsTheFile {
            inner: MemoryRemoteCache::default(),
            path: &path,
        };
        let error = put_file(&cache, &path).unwrap_err();
        assert!(
            error.contains(&format!("{}: changed while it was sent", path.display())),
            "{error}"
        );
        let digest = ContentDigest::of(b"hashed\n");
        assert!(
            !cache.inner.has_blob(&digest).unwrap(),
            "stored under {digest}"
        );
        assert_eq!(fs::read(&path).unwrap(), b"hashed\nwritten late\n");
    }

    /// Each beat is an entry of its own; the coordinator catches up.
    #[test]
    fn heartbeats_are_entries_of_their_own_and_the_last_is_found() {
        let cache = MemoryRemoteCache::default();
        let spec = ContentDigest::of(b"spec");
        assert_eq!(last_heartbeat(&cache, &spec, 0), 0);
        for beat in 1..=3 {
            cache
                .put_action(&heartbeat_key(&spec, beat), b"beat")
                .unwrap();
        }
        assert_eq!(last_heartbeat(&cache, &spec, 0), 3);
        assert_eq!(last_heartbeat(&cache, &spec, 3), 3);
        assert_ne!(heartbeat_key(&spec, 1), outcome_key(&spec));
        assert_eq!(
            last_heartbeat(&cache, &ContentDigest::of(b"other"), 0),
            0,
            "another attempt's beats are not this one's"
        );
    }

    /// The coordinator's and the worker's halves over an in-memory cache:
    /// the job runs in the scratch, never in the project, reads its input
    /// and code there, and its output comes back verified.
    #[test]
    fn an_attempt_runs_from_the_cache_and_its_output_comes_back() {
        let project = tempfile::tempdir().unwrap();
        let root = project.path();
        fs::create_dir_all(root.join("jobs")).unwrap();
        fs::write(
            root.join("jobs/up.sh"),
            "tr a-z A-Z < \"$CAIRN_IN/x\" > \"$CAIRN_OUT/y\"; pwd; echo warn >&2\n",
        )
        .unwrap();
        fs::create_dir_all(root.join("data/in")).unwrap();
        fs::write(root.join("data/in/x"), "hello\n").unwrap();
        let staging = root.join("staging");
        fs::create_dir_all(staging.join("out/0")).unwrap();
        let argv = vec!["sh".to_owned(), "jobs/up.sh".to_owned()];
        let extra = vec![
            (
                "CAIRN_INPUT_0".to_owned(),
                root.join("data/in").display().to_string(),
            ),
            (
                "CAIRN_IN".to_owned(),
                root.join("data/in").display().to_string(),
            ),
            (
                "CAIRN_OUTPUT_0".to_owned(),
                staging.join("out/0").display().to_string(),
            ),
            (
                "CAIRN_OUT".to_owned(),
                staging.join("out/0").display().to_string(),
            ),
            ("CAIRN_OUTPUT_REF_0".to_owned(), "up".to_owned()),
        ];
        let environment = JobEnvironment {
            passed: vec![("PATH".into(), "/usr/bin:/bin".into())],
            ..JobEnvironment::default()
        };
        let invocation = Invocation {
            argv: &argv,
            cwd: root,
            environment: &environment,
            extra_env: &extra,
            stdout: &staging.join("stdout"),
            stderr: &staging.join("stderr"),
            run_id: "r1",
            label: "job up (up)",
            timeout: None,
        };
        let cache = MemoryRemoteCache::default();
        let spec = prepare(&cache, &invocation, &["jobs/up.sh".to_owned()], root, "r1").unwrap();
        assert!(read_outcome(&cache, &spec).unwrap().is_none());
        let scratch = tempfile::tempdir().unwrap();
        run_cached(&cache, &spec, scratch.path(), &Children::default()).unwrap();
        let outcome = read_outcome(&cache, &spec).unwrap().expect("an outcome");
        assert_eq!(outcome.outcome.code, Some(0), "{outcome:?}");
        restore(
            &cache,
            &outcome,
            &staging.join("stdout"),
            &staging.join("stderr"),
            &[staging.join("out/0")],
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(staging.join("out/0/y")).unwrap(),
            "HELLO\n"
        );
        let pwd = fs::read_to_string(staging.join("stdout")).unwrap();
        assert!(
            pwd.starts_with(&scratch.path().display().to_string())
                && pwd.trim_end().ends_with("/work"),
            "the job ran in the scratch: {pwd}"
        );
        assert_eq!(
            fs::read_to_string(staging.join("stderr")).unwrap(),
            "warn\n"
        );
        // The scratch is removed.
        assert_eq!(fs::read_dir(scratch.path()).unwrap().count(), 0);
    }

    /// A worker's outcome naming a blob whose content is not its name, or
    /// a path out of its output, is refused: nothing is written there.
    #[test]
    fn a_forged_outcome_is_refused() {
        let cache = MemoryRemoteCache::default();
        let good = put(&cache, b"data").unwrap();
        let forged = ContentDigest::of(b"other");
        cache.put_blob(&forged, b"not other").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let outcome = |path: &str, digest| CachedOutcome {
            outcome: WorkerOutcome {
                code: Some(0),
                ..WorkerOutcome::default()
            },
            outputs: vec![vec![Placed {
                path: path.into(),
                digest,
                mode: 0o644,
            }]],
            ..CachedOutcome::default()
        };
        let logs = (dir.path().join("stdout"), dir.path().join("stderr"));
        let error = restore(
            &cache,
            &outcome("x", forged),
            &logs.0,
            &logs.1,
            std::slice::from_ref(&out),
        )
        .unwrap_err();
        assert!(error.contains("failed verification"), "{error}");
        let error = restore(
            &cache,
            &outcome("../x", good),
            &logs.0,
            &logs.1,
            std::slice::from_ref(&out),
        )
        .unwrap_err();
        assert!(error.contains("outside its output"), "{error}");
        assert!(!out.exists() && !dir.path().join("x").exists());
        restore(
            &cache,
            &outcome("a/x", good),
            &logs.0,
            &logs.1,
            std::slice::from_ref(&out),
        )
        .unwrap();
        assert_eq!(fs::read(out.join("a/x")).unwrap(), b"data");
    }
}
