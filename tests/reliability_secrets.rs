//! secret_canary (docs/reliability.md, promise 6): a variable marked secret
//! in the graph file reaches the job but never the log, the catalog, a key,
//! the blob store, the lock file, captured-output metadata or anything a
//! command prints; a variable that is not allow-listed does not even reach
//! the job. The planted values are searched raw, in hex (both cases) and in
//! base64 (standard and URL-safe, at every alignment).
//!
//! The job may use the secret (it is passed to it). What it writes into its
//! outputs is the user's data, stored as written; what it prints (its
//! captured stdout and stderr) and what a configure step prints are
//! redacted, raw, hex and base64 forms alike, before they are stored or
//! shown (secret_canary_printed_*).

mod common;

use std::process::{Command, Stdio};

use common::{CAIRN, Project, Run};

fn random_token(label: &str) -> String {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |elapsed| elapsed.as_nanos())
        ^ u128::from(std::process::id());
    let digest = cairn_engine::ContentDigest::of(format!("{label}{seed}").as_bytes());
    format!("{label}-{}", &digest.to_hex()[..24])
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The forms in which `secret` must never appear.
fn forms(secret: &str) -> Vec<String> {
    let bytes = secret.as_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut forms = vec![secret.to_owned(), hex.clone(), hex.to_uppercase()];
    // Inside a longer base64 stream the secret starts at one of three
    // alignments; each has a run of characters that only it produces.
    for skip in 0..3 {
        let aligned = &bytes[skip..];
        let whole = aligned.len() / 3 * 3;
        let encoded = base64(&aligned[..whole]);
        forms.push(encoded.replace('+', "-").replace('/', "_"));
        forms.push(encoded);
    }
    forms
}

/// Every byte sequence that could carry a leak, with where it came from.
fn haystacks(p: &Project, outputs: &[Run]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for root in [".cairn", "data"] {
        for (path, bytes) in common::snapshot(&p.file(root)) {
            out.push((format!("{root}/{path}"), bytes));
        }
    }
    for run in outputs {
        out.push((
            format!("stdout of cairn {:?}", run.args),
            run.stdout.clone().into_bytes(),
        ));
        out.push((
            format!("stderr of cairn {:?}", run.args),
            run.stderr.clone().into_bytes(),
        ));
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

const GRAPH: &str = r#"
[env]
secret = ["CAIRN_TEST_SECRET"]

[datasets.src]
source = "inputs/{i}.txt"

[datasets.out]
version = "1.0.0"

[datasets.sum]

[datasets.bad]

[dimensions.i]
values = ["a", "b"]

# Uses the secret and reports what it can see, never the value.
[jobs.out]
outputs = ["out/i={i}"]
inputs = ["src/i={i}"]
run = ["sh", "-c", "cat \"$CAIRN_IN\" > \"$CAIRN_OUT/v\"; echo \"secret length ${#CAIRN_TEST_SECRET}\" >> \"$CAIRN_OUT/v\"; if [ -n \"${CAIRN_TEST_NOT_ALLOWED+x}\" ]; then echo 'not-allowed: present'; else echo 'not-allowed: absent'; fi >> \"$CAIRN_OUT/v\"; echo working; echo 'a warning' >&2"]

# An executable job: its configure step sees the secret too.
[jobs.sum]
outputs = ["sum/all=1"]
configure = ["sh", "-c", "test -n \"$CAIRN_TEST_SECRET\" || exit 9; echo '{\"configs\":[{\"outputs\":[\"sum/all=1\"],\"inputs\":[\"out/i=a\",\"out/i=b\"]}]}'", "configure"]
run = ["sh", "-c", "cat \"$CAIRN_INPUT_0/v\" \"$CAIRN_INPUT_1/v\" > \"$CAIRN_OUT/v\""]
# Listed code: its configure answer is cached in .cairn/configure.
code = ["sum.code"]

# Fails (with the secret in its environment): the failure is recorded.
[jobs.bad]
outputs = ["bad/x={i}"]
run = ["sh", "-c", "echo 'failing on purpose' >&2; exit 4"]
args = ["{i}"]
"#;

fn run_with(p: &Project, secret: &str, other: &str, args: &[&str]) -> Run {
    let output = Command::new(CAIRN)
        .args(args)
        .current_dir(p.path())
        .env("NO_COLOR", "1")
        .env("CAIRN_TEST_SECRET", secret)
        .env("CAIRN_TEST_NOT_ALLOWED", other)
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

#[test]
fn secret_canary_never_leaves_the_job() {
    let secret = random_token("canary-secret");
    let other = random_token("canary-not-allowed");
    let p = Project::with_graph(GRAPH);
    p.write("inputs/a.txt", "alpha\n");
    p.write("inputs/b.txt", "beta\n");
    p.write("sum.code", "v1\n");

    let mut runs = Vec::new();
    let build = run_with(&p, &secret, &other, &["build", "--json", "--keep-going"]);
    assert_eq!(build.code, 1, "{}", build.stderr);
    runs.push(build);
    // The job saw the secret, and not the variable that is not allowed.
    let output = p.read_string("data/out/i=a/v");
    assert_eq!(
        output,
        format!(
            "alpha\nsecret length {}\nnot-allowed: absent\n",
            secret.len()
        )
    );
    assert!(p.file("data/sum/all=1/v").is_file());
    for args in [
        &["build", "--json", "--keep-going"][..],
        &["build", "--dry-run", "--json"],
        &["status"],
        &["status", "--json"],
        &["plan", "sum/all=1", "--format", "json"],
        &["plan", "sum/all=1"],
        &["why", "out/i=a"],
        &["why", "bad/x=a", "--json"],
        &["log"],
        &["log", "--json"],
        &["history", "out/i=a", "--json"],
        &["history", "bad/x=a"],
        &["logs", "out/i=a"],
        &["logs", "bad/x=b"],
        &["replay", "--check"],
        &["store", "verify", "--json"],
        &["store", "stats", "--json"],
    ] {
        runs.push(run_with(&p, &secret, &other, args));
    }
    let needles: Vec<(String, String)> = forms(&secret)
        .into_iter()
        .map(|form| ("the secret".to_owned(), form))
        .chain(
            forms(&other)
                .into_iter()
                .map(|form| ("the variable that is not allowed".to_owned(), form)),
        )
        .collect();
    let haystacks = haystacks(&p, &runs);
    assert!(
        haystacks
            .iter()
            .any(|(name, _)| name == ".cairn/catalog.redb")
            && haystacks.iter().any(|(name, _)| name == ".cairn/lock")
            && haystacks
                .iter()
                .any(|(name, _)| name.starts_with(".cairn/cas/"))
            && haystacks
                .iter()
                .any(|(name, _)| name.starts_with(".cairn/configure/")),
        "the search must cover the catalog, the lock, the blobs and the configure cache"
    );
    for (name, bytes) in &haystacks {
        for (what, needle) in &needles {
            assert!(
                !contains(bytes, needle.as_bytes()),
                "{what} appears in {name} (as {needle:?})"
            );
        }
    }

    // The secret is not part of any key: another value rebuilds nothing.
    let again = run_with(
        &p,
        &random_token("another-secret"),
        "other",
        &["build", "--json", "--keep-going"],
    );
    assert_eq!(again.code, 1, "{}", again.stderr);
    let again = common::Build::new(again);
    assert_eq!(again.count("executed"), 0, "{}", again.summary());
    assert_eq!(again.count("cached"), 3);
}

#[test]
fn secret_canary_forms_cover_every_alignment() {
    // The base64 forms match the secret wherever it sits in a stream.
    let secret = "canary-secret-0123456789abcdef";
    let needles = forms(secret);
    for prefix in ["", "x", "xy", "xyz"] {
        let stream = base64(format!("{prefix}{secret}!!").as_bytes());
        assert!(
            needles.iter().any(|needle| stream.contains(needle)),
            "prefix {prefix:?}: {stream}"
        );
    }
    assert_eq!(base64(b"Man"), "TWFu");
    assert_eq!(base64(b"Ma"), "TWE");
}

/// Prints the secret raw (with `sh -x` tracing), in hex (both cases) and in
/// base64 at every alignment, on stdout and stderr, from a job that
/// succeeds and from one that fails.
const LOUD: &str = r#"
[env]
secret = ["CAIRN_TEST_SECRET"]

[datasets.loud]

[datasets.fail]

[jobs.loud]
outputs = ["loud/x=1"]
run = ["sh", "-xc", "echo \"token=$CAIRN_TEST_SECRET\"; printf %s \"$CAIRN_TEST_SECRET\" | od -An -tx1 | tr -d ' \\n'; echo; printf %s \"$CAIRN_TEST_SECRET\" | od -An -tx1 | tr -d ' \\n' | tr a-f A-F >&2; echo >&2; for p in '' x xy; do printf %s \"$p$CAIRN_TEST_SECRET\" | base64 -w0; echo; printf %s \"$p$CAIRN_TEST_SECRET\" | base64 -w0 | tr '+/' '-_' >&2; echo >&2; done; echo built > \"$CAIRN_OUT/v\""]

[jobs.fail]
outputs = ["fail/x=1"]
run = ["sh", "-xc", "echo \"failing with $CAIRN_TEST_SECRET\" >&2; exit 3"]
"#;

fn assert_nowhere(secret: &str, haystacks: &[(String, Vec<u8>)]) {
    for (name, bytes) in haystacks {
        for needle in forms(secret) {
            assert!(
                !contains(bytes, needle.as_bytes()),
                "the secret appears in {name} (as {needle:?}):\n{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}

#[test]
fn secret_canary_printed_by_a_job_is_redacted_in_its_logs_and_messages() {
    let secret = random_token("canary-printed");
    let p = Project::with_graph(LOUD);
    let mut runs = vec![run_with(&p, &secret, "other", &["build", "--keep-going"])];
    assert_eq!(runs[0].code, 1, "{}", runs[0].stderr);
    // The job's data is the user's, stored as written; it was built.
    assert_eq!(p.read_string("data/loud/x=1/v"), "built\n");
    for args in [
        &["logs", "loud/x=1"][..],
        &["logs", "fail/x=1"],
        &["log"],
        &["history", "fail/x=1"],
        &["status"],
        &["why", "fail/x=1"],
    ] {
        runs.push(run_with(&p, &secret, "other", args));
    }
    // The logs were captured, with every form replaced.
    let loud = &runs[1];
    assert_eq!(loud.code, 0, "{}", loud.stderr);
    let shown = format!("{}{}", loud.stdout, loud.stderr);
    assert!(
        shown.matches("[redacted]").count() >= 10,
        "raw (traced and echoed), hex twice, base64 six times: {shown}"
    );
    assert!(shown.contains("token=[redacted]"), "{shown}");
    let failed = &runs[2];
    assert!(
        format!("{}{}", failed.stdout, failed.stderr).contains("failing with [redacted]"),
        "{failed:?}"
    );
    let mut haystacks = haystacks(&p, &runs);
    haystacks.retain(|(name, _)| !name.starts_with("data/"));
    assert_nowhere(&secret, &haystacks);
}

#[test]
fn secret_canary_printed_by_a_failing_configure_step_is_redacted() {
    let secret = random_token("canary-configure");
    let p = Project::with_graph(
        r#"
[env]
secret = ["CAIRN_TEST_SECRET"]

[datasets.sum]

[jobs.sum]
outputs = ["sum/all=1"]
configure = ["sh", "-xc", "echo \"configure sees $CAIRN_TEST_SECRET\" >&2; printf %s \"$CAIRN_TEST_SECRET\" | base64 >&2; exit 5", "configure"]
run = ["true"]

[sources.stations]
command = ["sh", "-xc", "echo \"source sees $CAIRN_TEST_SECRET\" >&2; exit 1"]
"#,
    );
    let build = run_with(&p, &secret, "other", &["build"]);
    assert_ne!(build.code, 0, "{build:?}");
    assert!(
        build.stderr.contains("configure sees [redacted]"),
        "the configure step's stderr is shown, redacted: {}",
        build.stderr
    );
    let refresh = run_with(&p, &secret, "other", &["defs", "refresh"]);
    assert_ne!(refresh.code, 0, "{refresh:?}");
    assert!(
        refresh.stderr.contains("source sees [redacted]"),
        "{}",
        refresh.stderr
    );
    let plan = run_with(&p, &secret, "other", &["plan", "sum/all=1"]);
    let status = run_with(&p, &secret, "other", &["status"]);
    // Nothing was built: the search covers whatever the store holds.
    for root in [".cairn", "data"] {
        std::fs::create_dir_all(p.file(root)).unwrap();
    }
    assert_nowhere(&secret, &haystacks(&p, &[build, refresh, plan, status]));
}
