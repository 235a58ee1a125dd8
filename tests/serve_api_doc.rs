//! docs/api.md's curl examples, run as written against a real `cairn
//! serve`: every ```sh block of the page, in order, in one shell, with
//! `$CAIRN` and `$TOKEN` set, in a copy of the podcast example (3 days × 2
//! stations) with `backfills/jan.toml`. Each `# expect: NNN` line checks
//! the HTTP status of the request before it. So the page cannot drift from
//! what the server answers.

mod common;
mod serve_support;

use std::path::Path;
use std::process::{Command, Stdio};

use common::Project;
use serve_support::Server;

/// The ```sh blocks of docs/api.md, in order.
fn blocks() -> Vec<String> {
    let page = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api.md"))
        .expect("read docs/api.md");
    let mut blocks = Vec::new();
    let mut rest = page.as_str();
    while let Some(start) = rest.find("\n```sh\n") {
        let body = &rest[start + "\n```sh\n".len()..];
        let end = body.find("\n```").expect("the end of a block");
        blocks.push(body[..end].to_owned());
        rest = &body[end + 4..];
    }
    blocks
}

/// Records the status of each request (`curl -D`) for `check`.
const PRELUDE: &str = r#"
HEADERS=$(mktemp)
curl() {
    command curl -D "$HEADERS" "$@"
    status=$?
    LAST=$(sed -n 's/^HTTP\/[0-9.]* \([0-9][0-9]*\).*/\1/p' "$HEADERS" | tail -n 1)
    echo "$LAST" > "$HEADERS.last"
    return $status
}
check() {
    got=$(cat "$HEADERS.last" 2>/dev/null)
    if [ "$got" != "$1" ]; then
        echo "CHECK FAILED at expect $1 (line $2): got ${got:-nothing}" >&2
        FAILED=1
    fi
    echo "checked $1" >&2
}
FAILED=0
"#;

#[test]
fn the_curl_examples_of_docs_api_md_answer_what_they_say() {
    if Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map_or(true, |status| !status.success())
    {
        panic!("curl is needed to run docs/api.md's examples");
    }
    let blocks = blocks();
    assert!(
        blocks.len() >= 8,
        "docs/api.md has {} sh blocks",
        blocks.len()
    );
    let mut script = String::from(PRELUDE);
    let mut expected = 0;
    for block in &blocks {
        for (number, line) in block.lines().enumerate() {
            match line.trim().strip_prefix("# expect: ") {
                Some(status) => {
                    expected += 1;
                    script.push_str(&format!("check {} {}\n", status.trim(), number + 1));
                }
                None => {
                    script.push_str(line);
                    script.push('\n');
                }
            }
        }
    }
    script.push_str("rm -f \"$HEADERS\" \"$HEADERS.last\"\nexit $FAILED\n");
    assert!(expected >= 20, "only {expected} checks");
    let project = Project::podcast(3, 2);
    project.write(
        "backfills/jan.toml",
        "target = \"daily/date={date}\"\nreason = \"the January backfill\"\n\n[dimensions]\ndate = { start = \"2024-01-02\", end = \"2024-01-03\" }\n",
    );
    let server = Server::start(project.path(), &["-j", "2"]);
    let output = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(project.path())
        .env("CAIRN", &server.base)
        .env("TOKEN", &server.token)
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let checked = stderr
        .lines()
        .filter(|line| line.starts_with("checked "))
        .count();
    assert!(
        output.status.success() && checked == expected,
        "docs/api.md's examples: {checked} of {expected} checks ran\nstderr:\n{stderr}\nstdout:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
}
