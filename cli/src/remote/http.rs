//! The HTTP side of `cairn --remote`: one ureq agent, the bearer token,
//! and the server's answers turned into values or into a [`Failure`] with
//! one clear line (the URL, the status and the server's message) and the
//! exit code docs/cli.md documents for it.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::Failure;

/// How long connecting may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a plain request (not an event stream) may take in all.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest wait for a byte of an event stream: the server sends a
/// keep-alive comment every 15 s, so a silence this long is a dead
/// connection, which the follower reconnects.
pub const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(45);

/// A `cairn serve` at `base` (e.g. `http://127.0.0.1:8080`).
#[derive(Clone)]
pub struct Remote {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// The body of every 4xx/5xx answer (docs/api.md):
/// `{"error": {"code", "status", "message"}}`.
#[derive(Debug, serde::Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, serde::Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl Remote {
    /// Checks `url` (an `http://` URL; a trailing `/` is dropped).
    pub fn new(url: &str, token: Option<String>) -> Result<Remote, Failure> {
        let base = url.trim_end_matches('/').to_owned();
        if base.starts_with("https://") {
            return Err(Failure::usage(format!(
                "--remote {url}: this cairn speaks plain HTTP only (`cairn serve` listens on loopback); \
                 use an http:// URL, or a tunnel"
            )));
        }
        let rest = base.strip_prefix("http://").ok_or_else(|| {
            Failure::usage(format!(
                "--remote {url}: not an http:// URL (e.g. http://127.0.0.1:8080)"
            ))
        })?;
        if rest.is_empty() || rest.contains(['?', '#', ' ']) {
            return Err(Failure::usage(format!(
                "--remote {url}: not a server address (e.g. http://127.0.0.1:8080)"
            )));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .max_redirects(0)
            .user_agent(format!("cairn/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Remote { base, token, agent })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        }
    }

    /// `GET path?query`, the answer's body as `T`.
    pub fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, Failure> {
        let body = self.get_bytes(path, query)?;
        self.parse(path, &body)
    }

    /// `GET path?query`, the answer's body as bytes.
    pub fn get_bytes(&self, path: &str, query: &[(&str, &str)]) -> Result<Vec<u8>, Failure> {
        let request = self
            .authorized(self.agent.get(self.url(path)))
            .query_pairs(query.iter().copied())
            .config()
            .timeout_global(Some(CALL_TIMEOUT))
            .build();
        let response = request
            .call()
            .map_err(|error| self.unreachable(path, &error))?;
        self.body(path, response)
    }

    /// `POST path` with a JSON body (and extra headers); the answer's
    /// status and body as `T`.
    pub fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> Result<(u16, T), Failure> {
        let mut request = self
            .authorized(self.agent.post(self.url(path)))
            .content_type("application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let text = serde_json::to_string(body).unwrap_or_default();
        let response = request
            .config()
            .timeout_global(Some(CALL_TIMEOUT))
            .build()
            .send(text.as_str())
            .map_err(|error| self.unreachable(path, &error))?;
        let status = response.status().as_u16();
        let bytes = self.body(path, response)?;
        Ok((status, self.parse(path, &bytes)?))
    }

    /// Opens the server-sent event stream at `path`, from after event
    /// `last_event_id` when given (`Last-Event-ID`).
    pub fn open_stream(
        &self,
        path: &str,
        last_event_id: Option<&str>,
    ) -> Result<ureq::BodyReader<'static>, Failure> {
        let mut request = self
            .authorized(self.agent.get(self.url(path)))
            .header("Accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request
            .config()
            .timeout_per_read(Some(STREAM_READ_TIMEOUT))
            .build()
            .call()
            .map_err(|error| self.unreachable(path, &error))?;
        let status = response.status().as_u16();
        if status >= 400 {
            return Err(self.body(path, response).err().unwrap_or_else(|| {
                Failure::store(format!("{}: answered {status}", self.url(path)))
            }));
        }
        Ok(response.into_body().into_reader())
    }

    /// The body of a 2xx answer, or the failure a 4xx/5xx one stands for.
    fn body(
        &self,
        path: &str,
        mut response: ureq::http::Response<ureq::Body>,
    ) -> Result<Vec<u8>, Failure> {
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .map_err(|error| self.unreachable(path, &error))?;
        if status < 400 {
            return Ok(bytes);
        }
        Err(self.refused(path, status, &bytes))
    }

    fn parse<T: DeserializeOwned>(&self, path: &str, bytes: &[u8]) -> Result<T, Failure> {
        serde_json::from_slice(bytes).map_err(|error| {
            Failure::store(format!(
                "{}: the server's answer is not what this cairn understands ({error}); \
                 is it a `cairn serve` of the same version?",
                self.url(path)
            ))
        })
    }

    /// A request that got no answer: exit 3.
    fn unreachable(&self, path: &str, error: &ureq::Error) -> Failure {
        let what = match error {
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                "cannot connect (is `cairn serve` running there?)".to_owned()
            }
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                "connection refused (is `cairn serve` running there?)".to_owned()
            }
            ureq::Error::Timeout(_) => format!("no answer in time ({error})"),
            other => other.to_string(),
        };
        Failure::store(format!(
            "cannot reach the cairn server at {}: {what}",
            self.url(path)
        ))
    }

    /// A 4xx/5xx answer as one line naming the URL, the status and the
    /// server's message; 401 and every other 4xx exit 2, 5xx exit 3.
    fn refused(&self, path: &str, status: u16, body: &[u8]) -> Failure {
        let (name, message) = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(parsed) => (
                parsed.error.status.unwrap_or_default(),
                parsed.error.message.unwrap_or_default(),
            ),
            Err(_) => (
                String::new(),
                String::from_utf8_lossy(body).trim().to_owned(),
            ),
        };
        let name = if name.is_empty() {
            String::new()
        } else {
            format!(" {name}")
        };
        let mut line = format!("{} answered {status}{name}: {message}", self.url(path));
        if status == 401 {
            line.push_str(if self.token.is_some() {
                " (the token was refused: check --token-file, CAIRN_TOKEN or the store's serve.token)"
            } else {
                " (no token: pass --token-file FILE or set CAIRN_TOKEN)"
            });
        }
        Failure {
            code: if status >= 500 { 3 } else { 2 },
            message: line,
        }
    }
}

/// `text` percent-encoded for one path segment or query value: every byte
/// but the unreserved ones of RFC 3986 (`ref` `clean/date=2024-01-31` is
/// `clean%2Fdate%3D2024-01-31`).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_are_encoded_as_one_path_segment() {
        assert_eq!(
            encode("clean/date=2024-01-31/station=S07"),
            "clean%2Fdate%3D2024-01-31%2Fstation%3DS07"
        );
        assert_eq!(encode("a b/é"), "a%20b%2F%C3%A9");
    }

    #[test]
    fn only_http_urls_are_taken() {
        assert!(Remote::new("http://127.0.0.1:8080/", None).is_ok());
        assert_eq!(
            Remote::new("http://127.0.0.1:8080/", None).unwrap().base(),
            "http://127.0.0.1:8080"
        );
        for bad in [
            "127.0.0.1:8080",
            "https://example.org",
            "http://",
            "ftp://x",
        ] {
            let failure = Remote::new(bad, None).err().expect(bad);
            assert_eq!(failure.code, 2, "{bad}");
            assert!(failure.message.contains(bad), "{}", failure.message);
        }
    }

    #[test]
    fn a_refusal_names_the_url_the_status_and_the_servers_message() {
        let remote = Remote::new("http://127.0.0.1:9", None).unwrap();
        let body = br#"{"error":{"code":400,"status":"INVALID_ARGUMENT","message":"ref \"x\": no dataset x"}}"#;
        let failure = remote.refused("/v1/builds", 400, body);
        assert_eq!(failure.code, 2);
        assert_eq!(
            failure.message,
            "http://127.0.0.1:9/v1/builds answered 400 INVALID_ARGUMENT: ref \"x\": no dataset x"
        );
        let failure = remote.refused("/v1/status", 401, br#"{"error":{"code":401,"status":"UNAUTHENTICATED","message":"missing bearer token"}}"#);
        assert_eq!(failure.code, 2);
        assert!(
            failure
                .message
                .contains("401 UNAUTHENTICATED: missing bearer token")
        );
        assert!(failure.message.contains("--token-file"));
        let failure = remote.refused("/v1/status", 503, b"shutting down");
        assert_eq!(failure.code, 3);
        assert!(failure.message.ends_with("answered 503: shutting down"));
    }
}
