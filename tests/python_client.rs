//! The Python client (clients/python) against a real `cairn serve`: the
//! package is installed with `pip install ./clients/python` into a venv
//! under the target directory, then `python -m unittest` runs its tests
//! (clients/python/tests: the unit tests, and test_server.py against the
//! server this test starts on a loopback port).

mod common;
mod remote_server;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Project;
use remote_server::Server;

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python")
}

/// A venv under the target directory with the package installed by pip,
/// as a user would install it.
fn venv_with_the_client() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-client-venv");
    if venv.exists() {
        std::fs::remove_dir_all(&venv).expect("remove the old venv");
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 -m venv (is python3 installed?)");
    assert!(made.success(), "python3 -m venv failed");
    let python = venv.join("bin/python");
    let installed = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg(python_dir())
        .output()
        .expect("run pip");
    assert!(
        installed.status.success(),
        "pip install ./clients/python failed:\n{}{}",
        String::from_utf8_lossy(&installed.stdout),
        String::from_utf8_lossy(&installed.stderr)
    );
    // The package imports from the venv's site-packages, typed.
    let found = Command::new(&python)
        .args([
            "-c",
            "import cairn_client, pathlib; p = pathlib.Path(cairn_client.__file__).parent; \
             print(p); assert (p / 'py.typed').exists()",
        ])
        .current_dir(std::env::temp_dir())
        .output()
        .expect("import cairn_client");
    assert!(
        found.status.success(),
        "the installed package does not import: {}",
        String::from_utf8_lossy(&found.stderr)
    );
    let location = String::from_utf8_lossy(&found.stdout);
    assert!(
        location
            .trim()
            .starts_with(venv.to_str().expect("UTF-8 path")),
        "cairn_client imported from {location}, not the venv"
    );
    python
}

/// A podcast project whose clean job fails for station S while `fail-S`
/// exists and sleeps while `slow-S` exists, with a checked-in backfill
/// config.
fn project() -> Project {
    // Three days: the third is test_retry_failed_...'s alone.
    let project = Project::podcast(3, 2);
    project.patch_clean(
        "if [ -e \"fail-$1\" ]; then echo \"bad sensor $1: ratings out of range\" >&2; exit 3; fi\n\
         if [ -e \"slow-$1\" ]; then sleep 60; fi",
    );
    project.write(
        "backfills/day1.toml",
        "target = \"daily/date={date}\"\nreason = \"CI: recompute the first day\"\n\n\
         [dimensions.date]\nstart = \"2024-01-01\"\nend = \"2024-01-01\"\n",
    );
    project
}

#[test]
fn the_python_client_installs_and_passes_its_tests_against_cairn_serve() {
    let python = venv_with_the_client();
    let project = project();
    let server = Server::start(project.path(), &[]);
    let run = Command::new(&python)
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(python_dir().join("tests"))
        .current_dir(std::env::temp_dir())
        .env("CAIRN_TEST_URL", &server.url)
        .env(
            "CAIRN_TEST_TOKEN_FILE",
            project.path().join(".cairn/serve.token"),
        )
        .env("CAIRN_TEST_PROJECT", project.path())
        .env_remove("CAIRN_TOKEN")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python -m unittest");
    let report = String::from_utf8_lossy(&run.stderr).into_owned();
    let server_log = server.stderr();
    server.stop();
    assert!(
        run.status.success(),
        "python -m unittest failed:\n{report}\ncairn serve's stderr:\n{server_log}"
    );
    assert!(report.contains("\nOK"), "{report}");
    assert!(!report.contains("skipped"), "a test was skipped:\n{report}");
    // The tests against the server ran (none skipped: it was named).
    let against_server = report
        .lines()
        .filter(|line| line.contains("test_server.AgainstCairnServe") && line.ends_with("... ok"))
        .count();
    assert_eq!(against_server, 7, "{report}");
}
