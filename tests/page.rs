//! The web page of `cairn serve` (docs/web.md), tested in a real browser:
//! each test builds a small project, starts the real `cairn serve` on a
//! free loopback port, and runs one of the Playwright scripts of
//! tests/page/ (`node tests/page/TEST.mjs URL TOKEN ...`), which drives
//! Debian's headless Chromium and fails on any console error.
//!
//! Without /usr/bin/chromium or tests/page/node_modules (`apt-get install
//! chromium`, `npm ci --prefix tests/page`; `.ci/run` does both) a test
//! prints a loud "SKIPPED" line and returns; under CI (`CI` set) that is a
//! failure instead, so the skip is never the normal path.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{CAIRN, Project};

/// One browser at a time: the machine is small, and Chromium is heavy.
static BROWSER: Mutex<()> = Mutex::new(());

const CHROMIUM: &str = "/usr/bin/chromium";

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/page")
}

/// Whether the browser and the driver are here; if not, says so loudly
/// (and fails under CI, which installs them).
#[expect(clippy::print_stderr, reason = "a visible skip notice")]
fn browser_ready(test: &str) -> bool {
    let chromium = std::env::var("CAIRN_CHROMIUM").unwrap_or_else(|_| CHROMIUM.to_owned());
    let mut missing = Vec::new();
    if !Path::new(&chromium).exists() {
        missing.push(format!("{chromium} (apt-get install chromium)"));
    }
    if !scripts().join("node_modules/playwright-core").exists() {
        missing.push("tests/page/node_modules (npm ci --prefix tests/page)".to_owned());
    }
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("node".to_owned());
    }
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "SKIPPED: {test}: the browser test needs {}",
        missing.join(" and ")
    );
    assert!(
        std::env::var_os("CI").is_none(),
        "{message} (CI must install them: .ci/run)"
    );
    eprintln!("\n********\n{message}\n********\n");
    false
}

/// The browser, one test at a time; `None` (after a loud SKIPPED line)
/// when it is not installed.
fn browser(test: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    if !browser_ready(test) {
        return None;
    }
    Some(
        BROWSER
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    )
}

/// A running `cairn serve`, stopped (SIGTERM, then SIGKILL) when dropped.
struct Server {
    child: Child,
    url: String,
    token: String,
}

impl Server {
    fn start(project: &Project) -> Server {
        Server::start_with(project, &[])
    }

    fn start_with(project: &Project, extra: &[&str]) -> Server {
        let mut child = Command::new(CAIRN)
            .args(["serve", "--listen", "127.0.0.1:0", "--jobs", "2"])
            .args(extra)
            .current_dir(project.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cairn serve");
        let stdout = child.stdout.take().expect("the server's stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = sender.send(line);
            }
            // Keep reading so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match receiver.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("cairn serve printed no address within 60 s");
            }
        };
        let url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("cairn serve printed {line:?}, not `listening on URL`"))
            .trim()
            .to_owned();
        let token = project.read_string(".cairn/serve.token").trim().to_owned();
        assert_eq!(token.len(), 64, "the token file holds 64 hex characters");
        Server { child, url, token }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `node tests/page/SCRIPT URL TOKEN ARGS...`; panics with its
/// output unless it passed.
#[expect(clippy::print_stderr, reason = "the script's report")]
fn browse(server: &Server, script: &str, args: &[&str]) {
    let started = Instant::now();
    let output = Command::new("node")
        .arg(scripts().join(script))
        .arg(&server.url)
        .arg(&server.token)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    eprintln!(
        "{script} passed in {:.1}s:\n{stdout}",
        started.elapsed().as_secs_f64()
    );
}

/// Three days × three stations: `raw` (sleeps for as many seconds as the
/// file `delay` says), `clean` from it, which fails for S02 on wed with a
/// line on stderr, and `daily`, one per day from that day's `clean`.
const GRAPH: &str = r#"
[dimensions.day]
values = ["mon", "tue", "wed"]

[dimensions.station]
values = ["S01", "S02", "S03"]

[datasets.raw]
[datasets.clean]
[datasets.daily]

[jobs.raw]
outputs = ["raw/day={day}/station={station}"]
run = ["sh", "-c", "sleep \"$(cat delay 2>/dev/null || echo 0)\"; echo \"raw $1 $2\"; echo \"$1 $2\" > \"$CAIRN_OUT/value.txt\"", "raw"]
args = ["{day}", "{station}"]

[jobs.clean]
outputs = ["clean/day={day}/station={station}"]
inputs = ["raw/day={day}/station={station}"]
run = ["sh", "-c", "if [ \"$2\" = S02 ] && [ \"$1\" = wed ]; then echo \"sensor $2 broke on $1\" >&2; exit 3; fi; echo clean; cat \"$CAIRN_IN/value.txt\" > \"$CAIRN_OUT/value.txt\"", "clean"]
args = ["{day}", "{station}"]

[jobs.daily]
outputs = ["daily/day={day}"]
inputs = ["clean/day={day}/station={station}"]
run = ["sh", "-c", "cat \"$CAIRN_INPUT_0\"/value.txt > \"$CAIRN_OUT/first.txt\"; echo \"daily $1\"", "daily"]
args = ["{day}"]
"#;

/// The project, built as far as it goes (`clean` of S02 on wed failed,
/// so `daily` of wed was not built).
fn built_project() -> Project {
    let project = Project::with_graph(GRAPH);
    let run = project.cairn(&["build", "--keep-going", "daily/day={day}"]);
    run.assert_code(1);
    project
}

/// `cairn status --json` into a file the script reads.
fn status_file(project: &Project) -> PathBuf {
    let run = project.cairn(&["status", "--json"]);
    run.assert_code(0);
    let path = project.file("status.jsonl");
    std::fs::write(&path, &run.stdout).expect("write status.jsonl");
    path
}

#[test]
fn every_page_loads_and_the_grid_equals_status() {
    let Some(_browser) = browser("every_page_loads_and_the_grid_equals_status") else {
        return;
    };
    let project = built_project();
    let status = status_file(&project);
    let text = std::fs::read_to_string(&status).expect("read status");
    assert!(
        text.contains(r#""state":"failed""#),
        "one partition failed: {text}"
    );
    let server = Server::start(&project);
    browse(
        &server,
        "pages.mjs",
        &[status.to_str().expect("utf-8 path"), "-"],
    );
}

#[test]
fn an_empty_store_shows_every_partition_missing() {
    let Some(_browser) = browser("an_empty_store_shows_every_partition_missing") else {
        return;
    };
    let project = Project::with_graph(GRAPH);
    let status = status_file(&project);
    let text = std::fs::read_to_string(&status).expect("read status");
    assert!(
        !text.contains(r#""state":"built""#),
        "nothing built: {text}"
    );
    let server = Server::start(&project);
    browse(
        &server,
        "pages.mjs",
        &[status.to_str().expect("utf-8 path"), "-"],
    );
}

#[test]
fn a_failed_partition_shows_its_stderr() {
    let Some(_browser) = browser("a_failed_partition_shows_its_stderr") else {
        return;
    };
    let project = built_project();
    let server = Server::start(&project);
    browse(
        &server,
        "failed.mjs",
        &[
            "clean",
            "clean/day=wed/station=S02",
            "sensor S02 broke on wed",
        ],
    );
}

/// Regenerates docs/web/*.png when `CAIRN_PAGE_SCREENSHOTS=docs/web`
/// (docs/web.md); otherwise takes them into a temporary directory, so
/// that the screenshot path keeps working.
#[test]
fn screenshots_of_each_page() {
    let Some(_browser) = browser("screenshots_of_each_page") else {
        return;
    };
    let project = built_project();
    let server = Server::start(&project);
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let dir = match std::env::var("CAIRN_PAGE_SCREENSHOTS") {
        Ok(dir) => Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
        Err(_) => scratch.path().to_owned(),
    };
    browse(
        &server,
        "screenshots.mjs",
        &[dir.to_str().expect("utf-8 path")],
    );
    for name in [
        "datasets",
        "grid",
        "grid-dark",
        "partition",
        "operations",
        "operation",
        "events",
    ] {
        let file = dir.join(format!("{name}.png"));
        let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{} is a PNG", file.display());
    }
}

#[test]
fn a_build_turns_cells_running_then_built_without_a_reload() {
    let Some(_browser) = browser("a_build_turns_cells_running_then_built_without_a_reload") else {
        return;
    };
    let project = Project::with_graph(GRAPH);
    // Each raw job takes a second: long enough to be seen running.
    project.write("delay", "1\n");
    let server = Server::start(&project);
    browse(
        &server,
        "live.mjs",
        &["raw", "raw/day={day}/station={station}"],
    );
    drop(server);
    let status = project.status(&[]);
    let raw: Vec<_> = status
        .iter()
        .filter(|(r, _)| r.starts_with("raw/"))
        .collect();
    assert_eq!(raw.len(), 9);
    assert!(
        raw.iter().all(|(_, (state, _))| state == "built"),
        "the build the page watched built every raw partition: {raw:?}"
    );
}

#[test]
fn the_page_asks_for_the_token_once_or_takes_it_from_the_fragment() {
    let Some(_browser) = browser("the_page_asks_for_the_token_once_or_takes_it_from_the_fragment")
    else {
        return;
    };
    let project = built_project();
    let server = Server::start(&project);
    browse(&server, "token.mjs", &["asked"]);
}

#[test]
fn with_public_read_the_page_needs_no_token() {
    let Some(_browser) = browser("with_public_read_the_page_needs_no_token") else {
        return;
    };
    let project = built_project();
    let server = Server::start_with(&project, &["--public-read"]);
    browse(&server, "token.mjs", &["public"]);
}

#[test]
fn a_grid_over_the_limit_rolls_up_into_blocks_that_add_up_to_status() {
    let Some(_browser) =
        browser("a_grid_over_the_limit_rolls_up_into_blocks_that_add_up_to_status")
    else {
        return;
    };
    let project = built_project();
    let status = status_file(&project);
    let server = Server::start(&project);
    // 9 partitions, at most 4 cells in a view: blocks.
    browse(
        &server,
        "heatmap.mjs",
        &[status.to_str().expect("utf-8 path"), "clean", "4"],
    );
}

#[test]
fn the_lineage_graph_equals_cairn_plan() {
    let Some(_browser) = browser("the_lineage_graph_equals_cairn_plan") else {
        return;
    };
    let project = built_project();
    let reference = "clean/day=tue/station=S03";
    let run = project.cairn(&["plan", "--format", "json", reference]);
    run.assert_code(0);
    let plan = project.file("plan.json");
    std::fs::write(&plan, &run.stdout).expect("write plan.json");
    let server = Server::start(&project);
    // Upstream raw's partition (as the plan says), downstream daily's.
    browse(
        &server,
        "lineage.mjs",
        &[
            reference,
            plan.to_str().expect("utf-8 path"),
            "daily/day=tue",
        ],
    );
}
#[test]
fn cancel_an_operation_from_the_page() {
    let Some(_browser) = browser("cancel_an_operation_from_the_page") else {
        return;
    };
    let project = Project::with_graph(GRAPH);
    // Nine jobs of 20 s each, two at a time: still running when cancelled.
    project.write("delay", "20\n");
    let server = Server::start(&project);
    browse(&server, "cancel.mjs", &["raw/day={day}/station={station}"]);
    drop(server);
    let status = project.status(&[]);
    let built = status
        .iter()
        .filter(|(r, (state, _))| r.starts_with("raw/") && state == "built")
        .count();
    assert_eq!(built, 0, "the cancelled build built nothing: {status:?}");
}

#[test]
fn a_selection_is_invalidated_with_a_reason_then_built_from_the_grid() {
    let Some(_browser) =
        browser("a_selection_is_invalidated_with_a_reason_then_built_from_the_grid")
    else {
        return;
    };
    let project = built_project();
    let server = Server::start(&project);
    browse(&server, "selection.mjs", &[]);
    drop(server);
    let status = project.status(&["raw/day=mon/station={station}"]);
    assert!(
        status.values().all(|(state, _)| state == "built"),
        "rebuilt: {status:?}"
    );
}

#[test]
fn a_50_mb_log_shows_its_tail_and_downloads_whole() {
    let Some(_browser) = browser("a_50_mb_log_shows_its_tail_and_downloads_whole") else {
        return;
    };
    // 50 MiB on stdout: 1,638,400 numbered lines of 32 bytes.
    let project = Project::with_graph(
        r#"
[datasets.big]
[jobs.big]
outputs = ["big"]
run = ["sh", "-c", "awk 'BEGIN { for (i = 1; i <= 1638400; i++) printf \"line %026d\\n\", i }'; echo done > \"$CAIRN_OUT/done.txt\""]
"#,
    );
    project.cairn(&["build", "big"]).assert_code(0);
    let server = Server::start(&project);
    browse(
        &server,
        "biglog.mjs",
        &["big", "52428800", "line 00000000000000000001638400"],
    );
}

/// Values with every punctuation a ref allows (`+` and `@` and `:` mean
/// something in URLs), and a job whose stderr is not ASCII.
const ODD_GRAPH: &str = r#"
[dimensions.station]
values = ["a+b", "c@d:e", "f,g~h.i"]

[datasets.odd]

[jobs.odd]
outputs = ["odd/station={station}"]
run = ["sh", "-c", "if [ \"$1\" = 'c@d:e' ]; then echo 'capteur en panne à Zürich ✗ 漢字' >&2; exit 4; fi; echo \"$1\" > \"$CAIRN_OUT/v.txt\"", "odd"]
args = ["{station}"]
"#;

#[test]
fn refs_with_url_punctuation_and_logs_beyond_ascii() {
    let Some(_browser) = browser("refs_with_url_punctuation_and_logs_beyond_ascii") else {
        return;
    };
    let project = Project::with_graph(ODD_GRAPH);
    project
        .cairn(&["build", "--keep-going", "odd/station={station}"])
        .assert_code(1);
    let status = status_file(&project);
    let server = Server::start(&project);
    browse(
        &server,
        "pages.mjs",
        &[status.to_str().expect("utf-8 path"), "-"],
    );
    browse(
        &server,
        "failed.mjs",
        &[
            "odd",
            "odd/station=c@d:e",
            "capteur en panne à Zürich ✗ 漢字",
        ],
    );
}

#[test]
fn a_store_with_only_failures() {
    let Some(_browser) = browser("a_store_with_only_failures") else {
        return;
    };
    let project = Project::with_graph(
        r#"
[dimensions.day]
values = ["mon", "tue"]

[dimensions.station]
values = ["S01", "S02"]

[datasets.broken]

[jobs.broken]
outputs = ["broken/day={day}/station={station}"]
run = ["sh", "-c", "echo \"no data for $1 $2\" >&2; exit 1", "broken"]
args = ["{day}", "{station}"]
"#,
    );
    project
        .cairn(&[
            "build",
            "--keep-going",
            "broken/day={day}/station={station}",
        ])
        .assert_code(1);
    let status = status_file(&project);
    let text = std::fs::read_to_string(&status).expect("read status");
    assert_eq!(text.matches(r#""state":"failed""#).count(), 4, "{text}");
    let server = Server::start(&project);
    browse(
        &server,
        "pages.mjs",
        &[status.to_str().expect("utf-8 path"), "-"],
    );
    browse(
        &server,
        "failed.mjs",
        &[
            "broken",
            "broken/day=tue/station=S02",
            "no data for tue S02",
        ],
    );
}
#[test]
fn an_operation_that_joins_another_ones_runs_shows_them_joined() {
    let Some(_browser) = browser("an_operation_that_joins_another_ones_runs_shows_them_joined")
    else {
        return;
    };
    let project = Project::with_graph(GRAPH);
    // Long enough for the second operation to find the first's runs.
    project.write("delay", "2\n");
    let server = Server::start(&project);
    browse(
        &server,
        "joined.mjs",
        &[
            "raw/day=mon/station={station}",
            "raw/day=mon/station=S01",
            "raw/day=mon/station=S02",
            "raw/day=mon/station=S03",
        ],
    );
}
