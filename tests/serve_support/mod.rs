//! A real `cairn serve` for the tests of the HTTP API (tests/serve*.rs):
//! started on a free loopback port in a project directory, spoken to with
//! a blocking HTTP client, stopped by pid.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");

/// A running `cairn serve`, killed (SIGKILL) when dropped if still running.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub token: String,
    agent: ureq::Agent,
    /// What the server wrote to stderr, collected by a thread.
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

/// An answer: status, headers we look at, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub www_authenticate: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }

    /// The error message of an error answer, after checking its shape.
    pub fn error_message(&self) -> String {
        let json = self.json();
        let error = &json["error"];
        assert_eq!(error["code"], self.status, "{json}");
        assert!(error["status"].is_string(), "{json}");
        error["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {json}"))
            .to_owned()
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

impl Server {
    /// `cairn serve --listen 127.0.0.1:0 EXTRA...` in `project`; returns
    /// once it printed the address it listens on.
    pub fn start(project: &Path, extra: &[&str]) -> Server {
        Server::start_with_env(project, extra, &[])
    }

    /// [`Server::start`] with more environment variables.
    pub fn start_with_env(project: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(CAIRN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .current_dir(project)
            .env("NO_COLOR", "1")
            .env("CAIRN_LOG", "warn")
            // After the defaults: a test may ask for more of the log.
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cairn serve");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        {
            let mut pipe = child.stderr.take().expect("stderr");
            let collected = std::sync::Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                collected.lock().unwrap().push_str(&text);
            });
        }
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the address");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "cairn serve printed {line:?} instead of its address; stderr:\n{}",
                    stderr.lock().unwrap()
                )
            })
            .to_owned();
        let token = std::fs::read_to_string(project.join(".cairn/serve.token"))
            .expect("the token file")
            .trim()
            .to_owned();
        Server {
            child,
            base,
            token,
            agent: agent(),
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn answer(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        let mut response = response.expect("the request reaches the server");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let (location, www_authenticate, content_type) = (
            header("location"),
            header("www-authenticate"),
            header("content-type"),
        );
        Answer {
            status: response.status().as_u16(),
            location,
            www_authenticate,
            content_type,
            body: response.body_mut().read_to_string().expect("read the body"),
        }
    }

    /// `GET path` with the token.
    pub fn get(&self, path: &str) -> Answer {
        self.get_with(path, Some(&self.token))
    }

    /// `GET path` with `token` (none: no `Authorization`).
    pub fn get_with(&self, path: &str, token: Option<&str>) -> Answer {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        Self::answer(request.call())
    }

    /// `POST path` with `body`, the token, and `key` as `Idempotency-Key`.
    pub fn post(&self, path: &str, body: &str, key: Option<&str>) -> Answer {
        self.post_with(path, body, key, Some(&self.token))
    }

    pub fn post_with(
        &self,
        path: &str,
        body: &str,
        key: Option<&str>,
        token: Option<&str>,
    ) -> Answer {
        let mut request = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json");
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        Self::answer(request.send(body))
    }

    /// Sends `request` as written on a new connection, and returns what the
    /// server answered until it closed the connection (or 5 s passed).
    pub fn raw(&self, request: &str) -> String {
        use std::io::Write;
        let address = self.base.strip_prefix("http://").expect("http URL");
        let mut stream = std::net::TcpStream::connect(address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream.write_all(request.as_bytes()).expect("send");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// Submits a build of `refs`; panics unless it is accepted (202).
    pub fn submit(&self, refs: &[&str]) -> Value {
        self.submit_body(&serde_json::json!({"refs": refs}))
    }

    /// Submits the build `body` describes; panics unless it is accepted
    /// (202). The operation.
    pub fn submit_body(&self, body: &Value) -> Value {
        let answer = self.post("/v1/builds", &body.to_string(), None);
        assert_eq!(answer.status, 202, "{}", answer.body);
        answer.json()
    }

    /// Polls operation `id` until it is done (at most `limit`).
    pub fn wait_done(&self, id: &str, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let answer = self.get(&format!("/v1/operations/{id}"));
            assert_eq!(answer.status, 200, "{}", answer.body);
            let op = answer.json();
            if op["done"] == true {
                return op;
            }
            assert!(
                started.elapsed() < limit,
                "operation {id} not done after {limit:?}: {op}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls operation `id` until `ready` holds of it.
    pub fn wait_for(&self, id: &str, limit: Duration, ready: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let op = self.get(&format!("/v1/operations/{id}")).json();
            if ready(&op) {
                return op;
            }
            assert!(
                started.elapsed() < limit,
                "operation {id}: never ready: {op}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Opens an SSE stream at `path` (with `Last-Event-ID: last` if
    /// given).
    pub fn sse(&self, path: &str, last: Option<u64>) -> Sse {
        let mut request = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Accept", "text/event-stream");
        if let Some(last) = last {
            request = request.header("Last-Event-ID", last.to_string());
        }
        let response = request.call().expect("the stream opens");
        assert_eq!(response.status().as_u16(), 200);
        Sse {
            reader: BufReader::new(Box::new(response.into_body().into_reader())),
        }
    }

    /// Sends `signal` (`TERM`, `KILL`) to the server.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// SIGTERM, and waits for a clean exit (0).
    pub fn stop(mut self) {
        self.signal("TERM");
        let code = self.wait_exit(Duration::from_secs(60));
        assert_eq!(code, Some(0), "{}", self.stderr());
    }

    /// Waits for the server to exit (at most `limit`); its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                return status.code();
            }
            assert!(
                started.elapsed() < limit,
                "the server did not exit within {limit:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<u64>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|error| panic!("{error}: {}", self.data))
    }
}

/// An open SSE stream.
pub struct Sse {
    reader: BufReader<Box<dyn Read + Send>>,
}

impl Sse {
    /// The next event (comments such as `: keep-alive` are skipped);
    /// `None` when the server closed the stream.
    pub fn next(&mut self) -> Option<SseEvent> {
        let mut event = SseEvent {
            event: "message".to_owned(),
            id: None,
            data: String::new(),
        };
        let mut seen = false;
        loop {
            let mut line = String::new();
            let read = self.reader.read_line(&mut line).expect("read the stream");
            if read == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if seen {
                    return Some(event);
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            seen = true;
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event.event = value.to_owned(),
                "id" => event.id = value.parse().ok(),
                "data" => {
                    if !event.data.is_empty() {
                        event.data.push('\n');
                    }
                    event.data.push_str(value);
                }
                _ => {}
            }
        }
    }
}

/// `text` percent-encoded for a URL path segment or query value.
pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A project whose jobs take a while: `slow/n={n}` for n in 1..=COUNT,
/// each sleeping the seconds in `sleep.txt` (read at run time, so not part
/// of the action's key; a sleep cut short fails the job) and failing when
/// `fail-{n}` exists.
pub const SLOW_GRAPH: &str = r#"
[datasets.slow]

[dimensions.n]
values = ["1", "2", "3", "4"]

[jobs.slow]
outputs = ["slow/n={n}"]
run = ["sh", "-c", "if [ -e fail-$1 ]; then echo \"broken input $1\" >&2; exit 3; fi; sleep $(cat sleep.txt) || exit 1; echo $1 > \"$CAIRN_OUT/value\"", "slow"]
args = ["{n}"]
"#;
