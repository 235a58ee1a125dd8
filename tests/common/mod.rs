//! Helpers shared by the integration tests: podcast copies in temporary
//! directories, running the `cairn` binary, parsing its JSON lines, and
//! snapshots of directory trees.
//!
//! Every test binary includes this module with `mod common;` and uses a
//! different subset of it.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// The binary under test.
pub const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");

/// The podcast fixture's `generate` script.
pub fn generate_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/podcast/generate")
}

/// A project directory (a podcast copy or a hand-written graph) that is
/// removed when dropped.
pub struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    /// `fixtures/podcast/generate DIR DAYS STATIONS` into a fresh temporary
    /// directory.
    pub fn podcast(days: u32, stations: u32) -> Project {
        let project = Project::empty();
        let output = Command::new("sh")
            .arg(generate_script())
            .arg(project.path())
            .arg(days.to_string())
            .arg(stations.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run fixtures/podcast/generate");
        assert!(
            output.status.success(),
            "generate {days} {stations} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        project
    }

    /// An empty temporary directory.
    pub fn empty() -> Project {
        let dir = tempfile::Builder::new()
            .prefix("cairn-it-")
            .tempdir()
            .expect("create a temporary directory");
        Project { dir }
    }

    /// A temporary directory holding only this `cairn.toml`.
    pub fn with_graph(toml: &str) -> Project {
        let project = Project::empty();
        project.write("cairn.toml", toml);
        project
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `DIR/rel`.
    pub fn file(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        let path = self.file(rel);
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    pub fn read_string(&self, rel: &str) -> String {
        String::from_utf8(self.read(rel)).expect("UTF-8 file")
    }

    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) {
        let path = self.file(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent directory");
        }
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Appends `text` to `DIR/rel`.
    pub fn append(&self, rel: &str, text: &str) {
        let mut bytes = self.read(rel);
        bytes.extend_from_slice(text.as_bytes());
        self.write(rel, bytes);
    }

    /// Runs `cairn ARGS` in the project directory.
    pub fn cairn(&self, args: &[&str]) -> Run {
        let output = Command::new(CAIRN)
            .args(args)
            .current_dir(self.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("spawn cairn");
        Run::from_output(args, &output)
    }

    /// Runs `cairn build --json EXTRA...` and parses its JSON lines.
    pub fn build(&self, extra: &[&str]) -> Build {
        let mut args = vec!["build", "--json"];
        args.extend_from_slice(extra);
        Build::new(self.cairn(&args))
    }

    /// `cairn log --json EXTRA...`, parsed; panics unless it exits 0.
    pub fn log(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["log", "--json"];
        args.extend_from_slice(extra);
        let run = self.cairn(&args);
        run.assert_code(0);
        run.json_lines()
    }

    /// The files (`path`, `digest`, `mode`, ...) of `partition`'s output in
    /// the manifest of its latest `ActionSucceeded`.
    pub fn output_files(&self, partition: &str) -> Vec<Value> {
        let events = self.log(&["--partition", partition, "--kind", "ActionSucceeded"]);
        let last = events.last().expect("a successful run");
        let output = last["manifest"]["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .find(|output| output["partition"] == partition)
            .expect("the output");
        output["files"].as_array().expect("files").clone()
    }

    /// The events of build `id`.
    pub fn build_events(&self, id: u64) -> Vec<Value> {
        self.log(&["--build", &id.to_string()])
    }

    /// `cairn status --json ARGS...` as `ref -> (state, reason)`.
    pub fn status(&self, extra: &[&str]) -> BTreeMap<String, (String, String)> {
        let mut args = vec!["status", "--json"];
        args.extend_from_slice(extra);
        let run = self.cairn(&args);
        run.assert_code(0);
        run.json_lines()
            .iter()
            .map(|line| {
                (
                    str_field(line, "ref").to_owned(),
                    (
                        str_field(line, "state").to_owned(),
                        str_field(line, "reason").to_owned(),
                    ),
                )
            })
            .collect()
    }

    /// The bytes of `.cairn/catalog.redb`, `None` when it does not exist.
    pub fn catalog_bytes(&self) -> Option<Vec<u8>> {
        std::fs::read(self.file(".cairn/catalog.redb")).ok()
    }

    /// Everything that makes up the store and the data: the catalog's bytes
    /// and every file of `.cairn/cas` and `data/`. (The lock file is left
    /// out: its content only names the last holder.)
    pub fn state(&self) -> ProjectState {
        ProjectState {
            catalog: self.catalog_bytes(),
            cas: snapshot_if_exists(&self.file(".cairn/cas")),
            data: snapshot_if_exists(&self.file("data")),
        }
    }

    /// Inserts one shell line into the copy's `jobs/clean.sh`, just before
    /// its `LC_ALL=C` line (after the comment header).
    pub fn patch_clean(&self, line: &str) {
        let script = self.read_string("jobs/clean.sh");
        let marker = "\nLC_ALL=C\n";
        assert!(
            script.contains(marker),
            "jobs/clean.sh has no LC_ALL=C line"
        );
        let patched = script.replacen(marker, &format!("\n{line}\nLC_ALL=C\n"), 1);
        self.write("jobs/clean.sh", patched);
    }

    /// Makes a podcast copy's daily job executable: `jobs/daily.sh
    /// configure` (which reads the stations from its request on stdin)
    /// names its inputs instead of the declarative fan-in.
    pub fn executable_daily(&self) {
        self.patch_graph(
            "inputs = [\"clean/date={date}/station={station}\"]\nrun = [\"sh\", \"jobs/daily.sh\", \"run\"]\nargs = [\"{date}\"]\n",
            "configure = [\"sh\", \"jobs/daily.sh\", \"configure\"]\nrun = [\"sh\", \"jobs/daily.sh\", \"run\"]\n",
            "daily",
        );
    }

    /// Puts `line` (shell) before the podcast's raw job's copy, as
    /// [`Project::patch_clean`] does for clean's script.
    pub fn patch_raw(&self, line: &str) {
        self.patch_graph(
            "run = [\"sh\", \"-c\", \"cp",
            &format!(
                "run = [\"sh\", \"-c\", \"{} ; cp",
                line.replace('\\', "\\\\").replace('"', "\\\"")
            ),
            "raw",
        );
    }

    /// Replaces the first `from` in the podcast's cairn.toml with `to`;
    /// panics if it is not there (`job` changed shape).
    fn patch_graph(&self, from: &str, to: &str, job: &str) {
        let graph = self.read_string("cairn.toml");
        let patched = graph.replacen(from, to, 1);
        assert_ne!(patched, graph, "the podcast's {job} job changed shape");
        self.write("cairn.toml", patched);
    }

    /// The dates of a podcast copy (the directories under `inputs/`).
    pub fn dates(&self) -> Vec<String> {
        let mut dates: Vec<String> = std::fs::read_dir(self.file("inputs"))
            .expect("read inputs/")
            .map(|entry| {
                entry
                    .expect("inputs/ entry")
                    .file_name()
                    .into_string()
                    .expect("UTF-8 name")
            })
            .collect();
        dates.sort();
        dates
    }

    /// The stations of a podcast copy: the `values` of its
    /// `[dimensions.station]`, in order.
    pub fn stations(&self) -> Vec<String> {
        let graph: toml::Value =
            toml::from_str(&self.read_string("cairn.toml")).expect("parse cairn.toml");
        graph["dimensions"]["station"]["values"]
            .as_array()
            .expect("[dimensions.station] values")
            .iter()
            .map(|value| value.as_str().expect("a string value").to_owned())
            .collect()
    }

    /// Every partition a podcast copy's full build produces: the raw, clean
    /// and daily refs.
    pub fn all_refs(&self) -> BTreeSet<String> {
        let stations = self.stations();
        let mut refs = BTreeSet::new();
        for date in self.dates() {
            for station in &stations {
                refs.insert(raw_ref(&date, station));
                refs.insert(clean_ref(&date, station));
            }
            refs.insert(daily_ref(&date));
        }
        refs
    }

    /// `daily/date=D/summary.csv` recomputed in Rust from the input files,
    /// following `jobs/daily.sh` and `jobs/clean.sh` (independently of cairn).
    pub fn expected_summary(&self, date: &str) -> String {
        let mut out = String::from("station,reviews,mean_rating\n");
        let (mut total_count, mut total_sum) = (0_u64, 0_u64);
        let mut stations = self.stations();
        stations.sort();
        for station in &stations {
            let input = self.read_string(&format!("inputs/{date}/{station}.txt"));
            let ratings: Vec<u64> = input.split('\n').filter_map(valid_rating).collect();
            let count = ratings.len() as u64;
            let sum: u64 = ratings.iter().sum();
            total_count += count;
            total_sum += sum;
            writeln!(out, "{station},{count},{}", mean(sum, count)).expect("write to String");
        }
        writeln!(out, "ALL,{total_count},{}", mean(total_sum, total_count))
            .expect("write to String");
        out
    }

    /// `clean/date=D/station=S/reviews.csv` recomputed in Rust.
    pub fn expected_clean(&self, date: &str, station: &str) -> String {
        let input = self.read_string(&format!("inputs/{date}/{station}.txt"));
        let mut out = String::new();
        for line in input.split('\n') {
            if valid_rating(line).is_some() {
                writeln!(out, "{station},{line}").expect("write to String");
            }
        }
        out
    }
}

/// The rating of an input line that matches `^[^,]+,[1-5]$`, else `None`.
pub fn valid_rating(line: &str) -> Option<u64> {
    let (episode, rating) = line.split_once(',')?;
    if episode.is_empty() || rating.contains(',') || rating.len() != 1 {
        return None;
    }
    match rating.as_bytes()[0] {
        digit @ b'1'..=b'5' => Some(u64::from(digit - b'0')),
        _ => None,
    }
}

/// `sum / count` printed like `printf "%.3f"`; `0.000` when `count` is 0.
pub fn mean(sum: u64, count: u64) -> String {
    if count == 0 {
        "0.000".to_owned()
    } else {
        let value = sum as f64 / count as f64;
        format!("{value:.3}")
    }
}

pub fn raw_ref(date: &str, station: &str) -> String {
    format!("raw/date={date}/station={station}")
}

pub fn clean_ref(date: &str, station: &str) -> String {
    format!("clean/date={date}/station={station}")
}

pub fn daily_ref(date: &str) -> String {
    format!("daily/date={date}")
}

/// A set of refs, from string literals.
pub fn refs<const N: usize>(items: [&str; N]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The store and the data of a project at one moment (see [`Project::state`]).
#[derive(Debug, PartialEq, Eq)]
pub struct ProjectState {
    pub catalog: Option<Vec<u8>>,
    pub cas: Option<BTreeMap<String, Vec<u8>>>,
    pub data: Option<BTreeMap<String, Vec<u8>>>,
}

/// The result of one `cairn` invocation.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(args: &[&str], output: &Output) -> Run {
        Run {
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            code: output
                .status
                .code()
                .unwrap_or_else(|| panic!("cairn {args:?} was killed: {:?}", output.status)),
            stdout: String::from_utf8(output.stdout.clone()).expect("UTF-8 stdout"),
            stderr: String::from_utf8(output.stderr.clone()).expect("UTF-8 stderr"),
        }
    }

    /// Panics (showing stderr) unless the exit code is `code`.
    pub fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code, code,
            "cairn {:?}: exit code {} (expected {code})\nstderr:\n{}\nstdout:\n{}",
            self.args, self.code, self.stderr, self.stdout
        );
    }

    /// Panics unless this is a usage/graph/config error: exit 2, nothing on
    /// stdout, and an `error: ` message on stderr containing `needle`.
    pub fn assert_usage_error(&self, needle: &str) {
        self.assert_code(2);
        assert!(
            self.stderr.starts_with("error: "),
            "cairn {:?}: stderr does not start with `error: `:\n{}",
            self.args,
            self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "cairn {:?}: stderr does not contain {needle:?}:\n{}",
            self.args,
            self.stderr
        );
        assert!(
            self.stdout.is_empty(),
            "cairn {:?}: unexpected stdout:\n{}",
            self.args,
            self.stdout
        );
    }

    /// Every stdout line parsed as JSON (panics on a line that is not).
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!(
                        "cairn {:?}: stdout line is not JSON ({e}): {line}",
                        self.args
                    )
                })
            })
            .collect()
    }
}

/// The JSON lines of a `cairn build --json` (or `--dry-run --json`).
#[derive(Debug)]
pub struct Build {
    pub run: Run,
    pub lines: Vec<Value>,
}

impl Build {
    pub fn new(run: Run) -> Build {
        let lines = run.json_lines();
        let build = Build { run, lines };
        // The last line is the summary; every other line is an action.
        assert_eq!(
            build.summary()["type"],
            "summary",
            "last line is not the summary:\n{}",
            build.run.stdout
        );
        for line in &build.lines[..build.lines.len() - 1] {
            assert_eq!(line["type"], "action", "not an action line: {line}");
        }
        build
    }

    pub fn code(&self) -> i32 {
        self.run.code
    }

    pub fn assert_code(&self, code: i32) {
        self.run.assert_code(code);
    }

    pub fn summary(&self) -> &Value {
        self.lines
            .last()
            .unwrap_or_else(|| panic!("no JSON output; stderr:\n{}", self.run.stderr))
    }

    /// The build id of the summary.
    pub fn id(&self) -> u64 {
        self.count("build")
    }

    /// A numeric field of the summary.
    pub fn count(&self, field: &str) -> u64 {
        self.summary()[field]
            .as_u64()
            .unwrap_or_else(|| panic!("summary has no number {field:?}: {}", self.summary()))
    }

    /// Panics unless the summary's counts are exactly these, and disjoint
    /// (`executed + cached + failed + skipped == total`).
    pub fn assert_counts(&self, total: u64, executed: u64, cached: u64, failed: u64, skipped: u64) {
        let actual = [
            self.count("total"),
            self.count("executed"),
            self.count("cached"),
            self.count("failed"),
            self.count("skipped"),
        ];
        assert_eq!(
            actual,
            [total, executed, cached, failed, skipped],
            "[total, executed, cached, failed, skipped] of {}\nstderr:\n{}",
            self.summary(),
            self.run.stderr
        );
        assert_eq!(executed + cached + failed + skipped, total);
    }

    /// The action lines.
    pub fn actions(&self) -> &[Value] {
        &self.lines[..self.lines.len() - 1]
    }

    /// The outputs of the action lines whose `key` field (`outcome`, or
    /// `verdict` for a dry run) is `value`.
    pub fn outputs_where(&self, key: &str, value: &str) -> BTreeSet<String> {
        let mut set = BTreeSet::new();
        for action in self.actions() {
            if action[key] == value {
                for output in string_array(&action["outputs"]) {
                    assert!(set.insert(output.clone()), "output {output} listed twice");
                }
            }
        }
        set
    }

    /// The outputs of the actions with this `outcome`.
    pub fn outputs(&self, outcome: &str) -> BTreeSet<String> {
        self.outputs_where("outcome", outcome)
    }

    /// Every output of every action line.
    pub fn all_outputs(&self) -> BTreeSet<String> {
        self.actions()
            .iter()
            .flat_map(|action| string_array(&action["outputs"]))
            .collect()
    }

    /// The action line producing `output`.
    pub fn action_for(&self, output: &str) -> &Value {
        self.actions()
            .iter()
            .find(|action| string_array(&action["outputs"]).iter().any(|o| o == output))
            .unwrap_or_else(|| panic!("no action line outputs {output}:\n{}", self.run.stdout))
    }
}

/// A JSON array of strings as a vector.
pub fn string_array(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|item| {
            item.as_str()
                .unwrap_or_else(|| panic!("not a string: {item}"))
                .to_owned()
        })
        .collect()
}

/// A string field of a JSON object.
pub fn str_field<'v>(value: &'v Value, field: &str) -> &'v str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string field {field:?} in {value}"))
}

/// The partitions an event is about: its `outputs`, its `partition`, and the
/// outputs of its `manifest`.
pub fn event_partitions(event: &Value) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    if event["outputs"].is_array() {
        set.extend(string_array(&event["outputs"]));
    }
    if let Some(partition) = event["partition"].as_str() {
        set.insert(partition.to_owned());
    }
    if let Some(outputs) = event["manifest"]["outputs"].as_array() {
        for output in outputs {
            set.insert(str_field(output, "partition").to_owned());
        }
    }
    set
}

/// The job an event is about (its `job`, or its manifest's).
pub fn event_job(event: &Value) -> Option<&str> {
    event["job"]
        .as_str()
        .or_else(|| event["manifest"]["job"].as_str())
}

/// The events of this `kind`.
pub fn of_kind<'e>(events: &'e [Value], kind: &str) -> Vec<&'e Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

/// The union of the partitions of the events of this `kind`.
pub fn partitions_of_kind(events: &[Value], kind: &str) -> BTreeSet<String> {
    of_kind(events, kind)
        .into_iter()
        .flat_map(event_partitions)
        .collect()
}

/// Every regular file under `root`, as `relative path (with '/') -> bytes`.
/// Panics on anything that is neither a file nor a directory.
pub fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
            .map(|entry| entry.expect("directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let kind = std::fs::symlink_metadata(&path)
                .expect("metadata")
                .file_type();
            if kind.is_dir() {
                walk(root, &path, out);
            } else if kind.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .expect("under root")
                    .components()
                    .map(|c| c.as_os_str().to_str().expect("UTF-8 path"))
                    .collect::<Vec<_>>()
                    .join("/");
                out.insert(rel, std::fs::read(&path).expect("read file"));
            } else {
                panic!("{} is neither a file nor a directory", path.display());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// [`snapshot`] of `root`, or `None` when it does not exist.
pub fn snapshot_if_exists(root: &Path) -> Option<BTreeMap<String, Vec<u8>>> {
    root.exists().then(|| snapshot(root))
}

/// Whether the `dot` program (graphviz) is on PATH.
pub fn have_dot() -> bool {
    Command::new("dot")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Processes (not zombies) whose working directory is `dir` or below, or
/// whose environment names it: what a job of a project there left running.
pub fn processes_in(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if pid == std::process::id().to_string() {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z ") {
            continue;
        }
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if cwd.starts_with(dir) || String::from_utf8_lossy(&environ).contains(&needle) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            // An empty command line on a process that is not a kernel
            // thread means it is past `exit_mm` in `do_exit`: already dying
            // (a `PR_SET_PDEATHSIG` kill is delivered asynchronously after
            // its parent's death), only not yet a zombie. It is not left
            // running; counting it made the kill -9 case of tests/defs.rs
            // flaky on CI.
            if cmdline.is_empty() {
                continue;
            }
            found.push(format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    found
}

/// A `cairn` process started in the background, its stderr collected.
pub struct Background {
    pub child: std::process::Child,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Background {
    pub fn start(dir: &Path, args: &[&str]) -> Background {
        let mut child = Command::new(CAIRN)
            .args(args)
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cairn");
        let mut pipe = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
            text
        });
        Background {
            child,
            stderr: Some(stderr),
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits up to `limit` for the exit: `(code, stderr, waited)`. Past the
    /// limit cairn is SIGKILLed and the test fails.
    pub fn wait(mut self, limit: std::time::Duration) -> (i32, String, std::time::Duration) {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let stderr = self.stderr.take().expect("stderr").join().expect("reader");
                return (status.code().unwrap_or(-1), stderr, started.elapsed());
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stderr = self.stderr.take().expect("stderr").join().expect("reader");
                panic!("cairn did not exit within {limit:?}; stderr:\n{stderr}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// A test that fails before `wait` would otherwise leave its cairn running
/// (a build waiting an hour to retry outlived a failed tests/running.rs
/// by half an hour): killed with the test.
impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The largest value of `field` (a `/proc/PID/status` line in KiB:
/// `VmHWM`, the peak resident memory; `RssAnon`, the memory held now
/// that is no file's) seen while the process runs, read every 2 ms
/// until it exits; `None` off Linux.
pub fn peak_status_kib(child: &mut std::process::Child, field: &str) -> Option<u64> {
    let pid = child.id().to_string();
    let mut peak = None;
    loop {
        let value = status_kib(&pid, field);
        if value.is_some() {
            peak = value.max(peak);
        }
        if child.try_wait().expect("wait").is_some() {
            return peak;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// The value of `field` (KiB) in `/proc/PID/status` now, if the process
/// is there.
pub fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .ok()
}

/// Panics with `message` unless files `a` and `b` hold the same bytes
/// (compared by `cmp`, never read into memory: they may be large).
pub fn assert_same_file(a: &Path, b: &Path, message: &str) {
    let same = Command::new("cmp").arg(a).arg(b).status().expect("run cmp");
    assert!(same.success(), "{message}");
}

/// Waits (up to 30 s) until `path` exists.
pub fn wait_for(path: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
