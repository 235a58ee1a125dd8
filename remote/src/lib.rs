//! `cairn-remote`: the shared remote cache's network backends
//! (docs/remote-cache.md), behind the synchronous [`RemoteCache`] port of
//! `cairn-core`. Every backend is an `object_store` store:
//!
//! - `s3://bucket/prefix`: Amazon S3 or an S3-compatible server
//!   (`AWS_ENDPOINT_URL`), AC entries written with `PutMode::Create`
//!   (`If-None-Match: *`): the first writer wins, atomically.
//! - `http://host:port/prefix` (or https): a Bazel HTTP cache (nginx with
//!   WebDAV, bazel-remote). `HttpStore` has no conditional put, so an AC
//!   entry is written after a HEAD finds none (or the build's own lookup
//!   did, less than a second before): two writers of one key in the same
//!   instant may both write, the last one staying (both entries are valid
//!   for the key, and each is verified when read). `HttpStore` has no
//!   upload in parts either: a blob longer than 8 MiB is stored as its
//!   parts, each a blob of its own, and an index (`cas/<digest>.parts`).
//! - `file:///dir`: a directory (a shared mount), create-only like S3.
//!
//! The async client runs on runtimes of this crate's own: no caller sees
//! async. Each request is driven to its end on the calling thread, by a
//! *lane*: a single-threaded runtime with its own client (and so its own
//! pooled connections), taken from a pool for the request and given back
//! after it. A request never hands work to another thread and back: with a
//! shared multi-threaded runtime, the wake-ups between the caller and the
//! runtime's threads cost more CPU than the HTTP itself (docs/benchmarks.md,
//! "Shared remote cache"). A batch of requests (`get_actions`,
//! `put_actions`) runs on one lane, up to 16 at once (`IN_FLIGHT`): the
//! answers that arrive together cost the thread one wake-up. Every request
//! has a timeout of its own, and is retried at most once.

use std::future::Future;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

mod aws_profile;

use cairn_core::digest::{ActionKey, ContentDigest};
use cairn_core::ports::{ActionPut, Answered, PutOutcome, RemoteCache, RemoteError};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path as StorePath;
use object_store::prefix::PrefixStore;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig,
};

/// The per-request timeout when `[cache] timeout` does not set one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A request body above this size is a transfer: it is bounded by the
/// timeout plus its size at [`SLOWEST_RATE`], not by the timeout alone.
const LARGE_BODY: usize = 1024 * 1024;

/// The slowest transfer rate (bytes per second) a large blob's upload is
/// given time for before it counts as stalled.
const SLOWEST_RATE: u64 = 1024 * 1024;

/// The longest AC entry read (docs/remote-cache.md, "Lookup"): a
/// manifest of tens of thousands of files with its inlined blobs fits, a
/// cache answering gigabytes for one entry does not make cairn hold them
/// (with up to 64 answers asked ahead held at once, engine/src/remote.rs).
pub const AC_ENTRY_AT_MOST: usize = 16 * 1024 * 1024;

/// Requests of one batch ([`RemoteCache::get_actions`],
/// [`RemoteCache::put_actions`]) in flight at once on a lane: each answer
/// that arrives while others are under way costs no wake-up of its own.
const IN_FLIGHT: usize = 16;

/// A blob longer than this is sent in parts, read from the local store as
/// it is sent: as a multipart upload where the store has them (S3, a
/// directory: at most [`PARTS_IN_FLIGHT`] parts and one being filled are
/// in memory, whatever the blob's size), else (an HTTP cache) as part
/// objects and an index ([`parts_path`]), one part in memory at a time.
const PART: usize = 8 * 1024 * 1024;

/// The first line of a part index ([`parts_path`]), before the blob's
/// length.
const PARTS_FORMAT: &str = "cairn-parts/1";

/// Parts of one blob sent at once.
const PARTS_IN_FLIGHT: usize = 2;

/// The bytes read from the local store at a time while a blob is sent in
/// parts.
const READ_AT_ONCE: usize = 1024 * 1024;

/// The environment variable naming a file that holds a bearer token for an
/// HTTP cache.
pub const TOKEN_FILE_VARIABLE: &str = "CAIRN_REMOTE_CACHE_TOKEN_FILE";

/// Why a remote cache could not be opened: a usage error (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("remote cache {url}: {message}")]
    Url { url: String, message: String },
    #[error("remote cache {url}: cannot start its client: {message}")]
    Client { url: String, message: String },
    #[error("{path}: {message}")]
    Credentials { path: PathBuf, message: String },
}

/// Makes one lane's store (the same configuration every time) from the
/// client's options.
type MakeStore =
    dyn Fn(ClientOptions) -> Result<Arc<dyn ObjectStore>, object_store::Error> + Send + Sync;

/// A single-threaded runtime and the store whose connections live on it.
struct Lane {
    runtime: tokio::runtime::Runtime,
    /// Every request but a blob's streamed body: the client's timeout
    /// bounds the whole request.
    store: Arc<dyn ObjectStore>,
    /// A blob streamed by [`RemoteCache::open_blob`], or a large upload:
    /// no bound on the whole request (a large blob takes as long as it
    /// takes), but the response and each chunk of its body must come within
    /// the timeout. Made when first needed ([`ObjectCache::streaming`]): a
    /// client costs a few milliseconds to make, and a build that restores
    /// nothing never needs it.
    streaming: Option<Arc<dyn ObjectStore>>,
}

/// A remote cache over an `object_store` store.
pub struct ObjectCache {
    url: String,
    make: Box<MakeStore>,
    /// The client's options (timeouts, plain HTTP allowed).
    client: ClientOptions,
    /// Lanes not in use; one is made when none is free, so there are as
    /// many as requests ever ran at once (the upload threads and the
    /// build's workers).
    idle: Mutex<Vec<Lane>>,
    /// Whether the store has an atomic create-only put.
    conditional: bool,
    /// Whether the store takes an upload in parts (S3, a directory; an
    /// HTTP cache does not: a PUT's body is sent from memory whole, so a
    /// long blob goes as part objects and an index, [`parts_path`]).
    parts: bool,
    timeout: Duration,
}

/// Opens the cache at `url` (already checked by
/// `cairn_engine::graph::check_cache_url`: no credential in it), with
/// credentials from the process's environment.
pub fn open(url: &str, timeout: Option<Duration>) -> Result<ObjectCache, OpenError> {
    open_with_env(url, timeout, std::env::vars())
}

/// [`open`], with `env` as the environment: `AWS_*` for S3 (what
/// `AmazonS3Builder::from_env` reads), over the AWS profile's settings
/// (`AWS_PROFILE`, `AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`, else
/// under `HOME`: see `aws_profile`); `CAIRN_REMOTE_CACHE_TOKEN_FILE`,
/// `NETRC` and `HOME` for HTTP.
pub fn open_with_env(
    url: &str,
    timeout: Option<Duration>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<ObjectCache, OpenError> {
    let env: std::collections::BTreeMap<String, String> = env.into_iter().collect();
    let var = |name: &str| env.get(name).cloned();
    let url = url.trim_end_matches('/').to_owned();
    let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
    let bad = |message: String| OpenError::Url {
        url: url.clone(),
        message,
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("not a URL".to_owned()))?;
    let client = ClientOptions::new()
        .with_allow_http(true)
        .with_timeout(timeout)
        .with_connect_timeout(timeout);
    // One retry at most, within the timeout: a cache that fails is skipped,
    // not waited for.
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            base: 2.0,
        },
        max_retries: 1,
        retry_timeout: timeout,
    };
    // Each lane builds its own store from the same configuration.
    let (make, conditional): (Box<MakeStore>, bool) = match scheme {
        "s3" => {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            // The profile's settings (docs/remote-cache.md), then the
            // environment's over them.
            let mut aws: std::collections::BTreeMap<String, String> = aws_profile::settings(&var)?
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect();
            aws.extend(
                env.iter()
                    .filter(|(name, _)| name.starts_with("AWS_"))
                    .map(|(name, value)| (name.clone(), value.clone())),
            );
            let var = |name: &str| aws.get(name).cloned();
            let mut builder = object_store::aws::AmazonS3Builder::new();
            for (name, value) in &aws {
                if let Ok(key) = name.to_ascii_lowercase().parse() {
                    builder = builder.with_config(key, value);
                }
            }
            let mut builder = builder
                .with_bucket_name(bucket)
                .with_retry(retry)
                .with_allow_http(true);
            if var("AWS_REGION").is_none() && var("AWS_DEFAULT_REGION").is_none() {
                builder = builder.with_region("us-east-1");
            }
            // No credentials in the environment: anonymous requests
            // (object_store would otherwise ask an instance metadata
            // service, which off a cloud machine hangs until the timeout).
            let credentials = [
                "AWS_ACCESS_KEY_ID",
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            ];
            if credentials.iter().all(|name| var(name).is_none()) {
                builder = builder.with_skip_signature(true);
            }
            let prefix = prefix.to_owned();
            (
                Box::new(move |client| {
                    let store = builder.clone().with_client_options(client).build()?;
                    Ok(prefixed(Arc::new(store), &prefix))
                }),
                true,
            )
        }
        "http" | "https" => {
            let (host, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let base = format!("{scheme}://{host}");
            let headers = http_credentials(host, &var)?;
            let builder = object_store::http::HttpBuilder::new()
                .with_url(base)
                .with_retry(retry);
            let prefix = prefix.to_owned();
            (
                Box::new(move |client: ClientOptions| {
                    let client = match &headers {
                        Some(headers) => client.with_default_headers(headers.clone()),
                        None => client,
                    };
                    let store = builder.clone().with_client_options(client).build()?;
                    Ok(prefixed(Arc::new(store), &prefix))
                }),
                false,
            )
        }
        "file" => {
            let dir = PathBuf::from(rest);
            std::fs::create_dir_all(&dir).map_err(|error| bad(error.to_string()))?;
            (
                Box::new(move |_| {
                    let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)?;
                    Ok(Arc::new(store) as Arc<dyn ObjectStore>)
                }),
                true,
            )
        }
        other => {
            return Err(bad(format!(
                "{other}:// is not a remote cache cairn speaks"
            )));
        }
    };
    let parts = matches!(scheme, "s3" | "file");
    let cache = ObjectCache {
        url,
        make,
        client,
        idle: Mutex::new(Vec::new()),
        conditional,
        parts,
        timeout,
    };
    // The first lane is made now, so that a configuration the client
    // refuses is an error at open, not a failed request later.
    let lane = cache.new_lane().map_err(|message| OpenError::Client {
        url: cache.url.clone(),
        message,
    })?;
    cache.give_back(lane);
    Ok(cache)
}

/// `root`, with every path under `prefix` (none if empty).
fn prefixed(root: Arc<dyn ObjectStore>, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        root
    } else {
        Arc::new(PrefixStore::new(root, prefix))
    }
}

/// The `Authorization` header for an HTTP cache: a bearer token from the
/// file `CAIRN_REMOTE_CACHE_TOKEN_FILE` names, or basic credentials from
/// the netrc (`NETRC`, else `~/.netrc`) entry of the host. Marked
/// sensitive: never logged.
fn http_credentials(
    host: &str,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<object_store::HeaderMap>, OpenError> {
    let value = if let Some(path) = var(TOKEN_FILE_VARIABLE) {
        let path = PathBuf::from(path);
        let token = std::fs::read_to_string(&path).map_err(|error| OpenError::Credentials {
            path: path.clone(),
            message: format!("cannot read the bearer token ({TOKEN_FILE_VARIABLE}): {error}"),
        })?;
        format!("Bearer {}", token.trim())
    } else {
        let path = var("NETRC")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".netrc")));
        let Some(path) = path else { return Ok(None) };
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(None);
        };
        let name = host.split(':').next().unwrap_or(host);
        let Some((login, password)) = netrc_entry(&text, name) else {
            return Ok(None);
        };
        format!("Basic {}", base64(format!("{login}:{password}").as_bytes()))
    };
    let mut header =
        object_store::HeaderValue::from_str(&value).map_err(|_| OpenError::Credentials {
            path: PathBuf::from(TOKEN_FILE_VARIABLE),
            message: "the credential is not a valid header value".to_owned(),
        })?;
    header.set_sensitive(true);
    let mut headers = object_store::HeaderMap::new();
    headers.insert("authorization", header);
    Ok(Some(headers))
}

/// The login and password of `machine` in a netrc file (or of `default`).
fn netrc_entry(text: &str, machine: &str) -> Option<(String, String)> {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let credentials_from = |mut index: usize| {
        let (mut login, mut password) = (None, None);
        while index + 1 < tokens.len() && !matches!(tokens[index], "machine" | "default") {
            match tokens[index] {
                "login" => login = Some(tokens[index + 1].to_owned()),
                "password" => password = Some(tokens[index + 1].to_owned()),
                _ => {}
            }
            index += 2;
        }
        login.zip(password)
    };
    let mut default = None;
    for index in 0..tokens.len() {
        match tokens[index] {
            "machine" if tokens.get(index + 1) == Some(&machine) => {
                return credentials_from(index + 2);
            }
            "default" if default.is_none() => default = credentials_from(index + 1),
            _ => {}
        }
    }
    default
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn ac_path(key: &ActionKey) -> StorePath {
    StorePath::from(format!("ac/{key}"))
}

fn cas_path(digest: &ContentDigest) -> StorePath {
    StorePath::from(format!("cas/{digest}"))
}

/// Where a blob stored as parts keeps its index: a cache without uploads
/// in parts (HTTP) takes a PUT's body whole from memory, so a blob longer
/// than [`PART`] is sent as parts of that length, each stored as a blob of
/// its own (`cas/<its blake3>`), then this text: the line `cairn-parts/1
/// LENGTH`, then a line `DIGEST LENGTH` per part in order. The index is
/// written after every part, so one that exists names parts that were all
/// stored; what is read back through it is checked against the blob's
/// digest by the caller, as any blob is (docs/remote-cache.md).
fn parts_path(digest: &ContentDigest) -> StorePath {
    StorePath::from(format!("cas/{digest}.parts"))
}

/// The parts a part index names, with their lengths; an error says what
/// is wrong with it (it is the cache's answer: not trusted).
fn parse_parts(index: &[u8]) -> Result<Vec<(ContentDigest, u64)>, String> {
    let text = std::str::from_utf8(index).map_err(|_| "the part index is not text".to_owned())?;
    let mut lines = text.lines();
    let total: u64 = lines
        .next()
        .and_then(|line| line.strip_prefix(PARTS_FORMAT))
        .and_then(|rest| rest.strip_prefix(' '))
        .and_then(|length| length.parse().ok())
        .ok_or_else(|| format!("the part index does not start with `{PARTS_FORMAT} LENGTH`"))?;
    let mut parts = Vec::new();
    let mut sum = 0u64;
    for (number, line) in lines.enumerate() {
        let bad = || {
            format!(
                "line {} of the part index is not `DIGEST LENGTH`",
                number + 2
            )
        };
        let (digest, length) = line.split_once(' ').ok_or_else(bad)?;
        let digest: ContentDigest = digest.parse().map_err(|_| bad())?;
        let length: u64 = length.parse().map_err(|_| bad())?;
        if length == 0 || length > PART as u64 {
            return Err(format!(
                "line {} of the part index names a part of {length} bytes",
                number + 2
            ));
        }
        sum = sum.saturating_add(length);
        parts.push((digest, length));
    }
    if sum != total {
        return Err(format!(
            "the part index's parts add up to {sum} bytes, not its {total}"
        ));
    }
    Ok(parts)
}

impl ObjectCache {
    fn new_lane(&self) -> Result<Lane, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| error.to_string())?;
        let store = (self.make)(self.client.clone()).map_err(|error| error.to_string())?;
        Ok(Lane {
            runtime,
            store,
            streaming: None,
        })
    }

    /// `lane`'s client without a whole-request timeout, made on first use.
    fn streaming(
        &self,
        lane: &mut Lane,
        operation: &'static str,
        object: &StorePath,
    ) -> Result<Arc<dyn ObjectStore>, RemoteError> {
        if let Some(store) = &lane.streaming {
            return Ok(Arc::clone(store));
        }
        let store = (self.make)(self.client.clone().with_timeout_disabled()).map_err(|error| {
            self.request_error(operation, object, format!("cannot start a client: {error}"))
        })?;
        lane.streaming = Some(Arc::clone(&store));
        Ok(store)
    }

    fn give_back(&self, lane: Lane) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(lane);
    }

    /// An idle lane, or a new one.
    fn take_lane(&self, operation: &'static str, object: &StorePath) -> Result<Lane, RemoteError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(lane) => Ok(lane),
            None => self.new_lane().map_err(|message| {
                self.request_error(
                    operation,
                    object,
                    format!("cannot start a client: {message}"),
                )
            }),
        }
    }

    /// The bound on a whole request, retry included (the client's own
    /// timeout bounds each attempt).
    fn limit(&self) -> Duration {
        self.timeout * 2 + Duration::from_millis(500)
    }

    fn timed_out(
        &self,
        operation: &'static str,
        object: &StorePath,
        after: Duration,
    ) -> RemoteError {
        RemoteError::Timeout {
            url: self.url.clone(),
            operation,
            object: object.to_string(),
            after_ms: after.as_millis() as u64,
        }
    }

    /// The store and the bound for a request sending `sending` bytes on
    /// `lane`.
    ///
    /// A request sending more than [`LARGE_BODY`] bytes may take longer:
    /// the timeout plus a second per MiB ([`SLOWEST_RATE`]), so that a
    /// large blob over a slow link is sent, and a stalled one still fails.
    fn bound(
        &self,
        lane: &mut Lane,
        operation: &'static str,
        object: &StorePath,
        sending: usize,
    ) -> Result<Bound, RemoteError> {
        if sending > LARGE_BODY {
            let transfer = Duration::from_secs_f64(sending as f64 / SLOWEST_RATE as f64);
            Ok(Bound {
                store: self.streaming(lane, operation, object)?,
                limit: self.limit() + transfer,
                large: true,
            })
        } else {
            Ok(Bound {
                store: Arc::clone(&lane.store),
                limit: self.limit(),
                large: false,
            })
        }
    }

    /// `request`, within `bound`'s limit.
    async fn bounded<T>(
        &self,
        operation: &'static str,
        object: &StorePath,
        bound: &Bound,
        request: impl Future<Output = Result<T, object_store::Error>>,
    ) -> Result<T, RemoteError> {
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(bound.limit, request)
            .await
            .map_err(|_| self.timed_out(operation, object, bound.limit))?;
        // The client's errors do not say that an attempt timed out (only
        // "error sending request"): one that took the whole timeout did.
        match result {
            Err(_) if !bound.large && started.elapsed() >= self.timeout => {
                Err(self.timed_out(operation, object, started.elapsed()))
            }
            Err(error) => Err(self.failed(operation, object, &error)),
            Ok(value) => Ok(value),
        }
    }

    /// Runs one request on a lane, to its end.
    fn run<T, F>(
        &self,
        operation: &'static str,
        object: &StorePath,
        sending: usize,
        request: impl FnOnce(Bound) -> F,
    ) -> Result<T, RemoteError>
    where
        F: Future<Output = Result<T, RemoteError>>,
    {
        let mut lane = self.take_lane(operation, object)?;
        let bound = match self.bound(&mut lane, operation, object, sending) {
            Ok(bound) => bound,
            Err(error) => {
                self.give_back(lane);
                return Err(error);
            }
        };
        let result = lane.runtime.block_on(request(bound));
        self.give_back(lane);
        result
    }

    /// Runs `count` requests on one lane, up to [`IN_FLIGHT`] at once,
    /// giving each answer to `answered` as it arrives
    /// (`cairn_core::ports::Answered`: once it says stop, no further
    /// request starts). Request `index` sends `sending(index)` bytes to
    /// `object(index)`; each has its own bound, as if it ran alone.
    fn run_many<T, F>(
        &self,
        operation: &'static str,
        count: usize,
        object: impl Fn(usize) -> StorePath,
        sending: impl Fn(usize) -> usize,
        request: impl Fn(usize, Bound) -> F,
        answered: &mut Answered<'_, T>,
    ) where
        F: Future<Output = Result<T, RemoteError>>,
    {
        if count == 0 {
            return;
        }
        let mut lane = match self.take_lane(operation, &object(0)) {
            Ok(lane) => lane,
            Err(error) => {
                for index in 0..count {
                    if !answered(index, Err(error.clone())) {
                        return;
                    }
                }
                return;
            }
        };
        // The bounds first (a large body's client is made on the lane),
        // then the lane's runtime drives the requests.
        let bounds: Vec<Result<Bound, RemoteError>> = (0..count)
            .map(|index| self.bound(&mut lane, operation, &object(index), sending(index)))
            .collect();
        let request = &request;
        lane.runtime.block_on(async {
            let mut waiting = bounds.into_iter().enumerate();
            let mut running = futures::stream::FuturesUnordered::new();
            let mut go_on = true;
            loop {
                while go_on && running.len() < IN_FLIGHT {
                    let Some((index, bound)) = waiting.next() else {
                        break;
                    };
                    match bound {
                        Ok(bound) => {
                            running.push(async move { (index, request(index, bound).await) });
                        }
                        Err(error) => go_on = answered(index, Err(error)),
                    }
                }
                let Some((index, result)) = running.next().await else {
                    break;
                };
                go_on = answered(index, result) && go_on;
            }
        });
        self.give_back(lane);
    }

    fn failed(
        &self,
        operation: &'static str,
        object: &StorePath,
        error: &object_store::Error,
    ) -> RemoteError {
        self.request_error(operation, object, error.to_string())
    }

    /// A request on `object` that failed, saying `message`.
    fn request_error(
        &self,
        operation: &'static str,
        object: &StorePath,
        message: String,
    ) -> RemoteError {
        RemoteError::Request {
            url: self.url.clone(),
            operation,
            object: object.to_string(),
            message,
        }
    }

    /// The object at `path`, read whole; with `at_most`, a body longer
    /// than that many bytes is a failed request, read no further (an AC
    /// entry is held in memory: a cache must not make cairn hold gigabytes).
    async fn get(
        &self,
        bound: &Bound,
        path: &StorePath,
        at_most: Option<usize>,
    ) -> Result<Option<Vec<u8>>, RemoteError> {
        let store = &bound.store;
        self.bounded("get", path, bound, async move {
            let found = match store.get(path).await {
                Ok(found) => found,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(error) => return Err(error),
            };
            let Some(at_most) = at_most else {
                return found.bytes().await.map(|bytes| Some(bytes.to_vec()));
            };
            let mut body = found.into_stream();
            let mut bytes = Vec::new();
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                if bytes.len() + chunk.len() > at_most {
                    return Err(object_store::Error::Generic {
                        store: "cairn",
                        source: format!(
                            "longer than the {at_most} bytes an AC entry may have: not read"
                        )
                        .into(),
                    });
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(Some(bytes))
        })
        .await
    }

    async fn head(&self, bound: &Bound, path: &StorePath) -> Result<bool, RemoteError> {
        let store = &bound.store;
        self.bounded("head", path, bound, async move {
            match store.head(path).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(error) => Err(error),
            }
        })
        .await
    }

    async fn put(
        &self,
        bound: &Bound,
        path: &StorePath,
        payload: PutPayload,
        create: bool,
    ) -> Result<PutOutcome, RemoteError> {
        let options = PutOptions {
            mode: if create {
                PutMode::Create
            } else {
                PutMode::Overwrite
            },
            ..PutOptions::default()
        };
        let store = &bound.store;
        self.bounded("put", path, bound, async move {
            match store.put_opts(path, payload, options).await {
                Ok(_) => Ok(PutOutcome::Created),
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => Ok(PutOutcome::AlreadyExists),
                Err(error) => Err(error),
            }
        })
        .await
    }

    /// Writes the AC entry of `key` unless one exists; `after_miss`: a
    /// lookup found none moments ago.
    async fn put_entry(
        &self,
        bound: &Bound,
        key: &ActionKey,
        entry: &[u8],
        after_miss: bool,
    ) -> Result<PutOutcome, RemoteError> {
        let path = ac_path(key);
        if self.conditional || after_miss {
            // Create-only where the store has it; over HTTP, the caller's
            // lookup a moment ago is the look (no more atomic than the
            // HEAD itself: see the crate's documentation).
            let payload = PutPayload::from(entry.to_vec());
            return self.put(bound, &path, payload, self.conditional).await;
        }
        // No conditional put (HTTP): HEAD, then PUT if absent. Not atomic:
        // see the crate's documentation.
        if self.head(bound, &path).await? {
            return Ok(PutOutcome::AlreadyExists);
        }
        self.put(bound, &path, PutPayload::from(entry.to_vec()), false)
            .await
    }

    /// The error of an upload whose blob could not be read from the local
    /// store.
    fn unread(&self, path: &StorePath, error: &std::io::Error) -> RemoteError {
        self.request_error(
            "put",
            path,
            format!("reading the blob from the local store: {error}"),
        )
    }

    /// Sends the blob whose first [`PART`] bytes are `first` and whose
    /// rest `reader` yields in parts (a multipart upload), as it reads
    /// them: its length, once every part is sent and the upload complete.
    /// On any failure, a read's included, the upload is aborted: nothing
    /// is stored under `path`.
    fn put_in_parts(
        &self,
        path: &StorePath,
        first: Vec<u8>,
        reader: &mut dyn Read,
    ) -> Result<u64, RemoteError> {
        // Bound as a request sending the parts that may be under way at
        // once: each wait below gets the timeout plus their bytes at the
        // slowest rate a transfer is given.
        let in_flight = (PARTS_IN_FLIGHT + 1) * PART;
        self.run("put", path, in_flight, |bound| async move {
            let upload = self
                .bounded("put", path, &bound, bound.store.put_multipart(path))
                .await?;
            let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART);
            let mut sent = first.len() as u64;
            writer.put(bytes::Bytes::from(first));
            let read = async {
                loop {
                    self.bounded(
                        "put",
                        path,
                        &bound,
                        writer.wait_for_capacity(PARTS_IN_FLIGHT),
                    )
                    .await?;
                    let mut chunk = Vec::with_capacity(READ_AT_ONCE);
                    (&mut *reader)
                        .take(READ_AT_ONCE as u64)
                        .read_to_end(&mut chunk)
                        .map_err(|error| self.unread(path, &error))?;
                    if chunk.is_empty() {
                        return Ok(());
                    }
                    sent += chunk.len() as u64;
                    writer.put(bytes::Bytes::from(chunk));
                    // The parts under way go on between two reads.
                    tokio::task::yield_now().await;
                }
            };
            match read.await {
                Ok(()) => self
                    .bounded("put", path, &bound, writer.finish())
                    .await
                    .map(|_| sent),
                Err(error) => {
                    let _ = tokio::time::timeout(self.limit(), writer.abort()).await;
                    Err(error)
                }
            }
        })
    }
}

impl ObjectCache {
    /// The next [`PART`] bytes of `reader` (fewer at its end), for the
    /// upload to `path`.
    fn read_part(&self, path: &StorePath, reader: &mut dyn Read) -> Result<Vec<u8>, RemoteError> {
        let mut part = Vec::with_capacity(PART);
        reader
            .take(PART as u64)
            .read_to_end(&mut part)
            .map_err(|error| self.unread(path, &error))?;
        Ok(part)
    }

    /// Sends the blob `digest`, whose first [`PART`] bytes are `first`
    /// and whose rest `reader` yields, as part objects (each under its own
    /// blake3, written over any copy: a blob is named by its content),
    /// then their index ([`parts_path`]), once the whole blob was read
    /// (and, from the local store, verified: a corrupt blob fails its last
    /// read, so no index names its parts). One part is in memory at a time.
    fn put_as_parts(
        &self,
        digest: &ContentDigest,
        first: Vec<u8>,
        reader: &mut dyn Read,
    ) -> Result<u64, RemoteError> {
        let index_path = &parts_path(digest);
        let mut lines = String::new();
        let mut length = 0u64;
        let mut part = first;
        while !part.is_empty() {
            let part_digest = ContentDigest::of(&part);
            let part_path = &cas_path(&part_digest);
            let sending = part.len();
            let payload = PutPayload::from(part);
            self.run("put", part_path, sending, |bound| async move {
                self.put(&bound, part_path, payload, false).await
            })?;
            lines.push_str(&format!("{part_digest} {sending}\n"));
            length += sending as u64;
            part = self.read_part(index_path, reader)?;
        }
        let index = format!("{PARTS_FORMAT} {length}\n{lines}").into_bytes();
        let sending = index.len();
        let payload = PutPayload::from(index);
        self.run("put", index_path, sending, |bound| async move {
            self.put(&bound, index_path, payload, false).await
        })?;
        Ok(length)
    }

    /// The object at `path`, streamed as it arrives; `None` if there is
    /// none.
    fn open(&self, path: StorePath) -> Result<Option<BlobReader<'_>>, RemoteError> {
        let mut lane = self.take_lane("get", &path)?;
        let store = match self.streaming(&mut lane, "get", &path) {
            Ok(store) => store,
            Err(error) => {
                self.give_back(lane);
                return Err(error);
            }
        };
        let limit = self.limit();
        let answered = lane
            .runtime
            .block_on(async { tokio::time::timeout(limit, store.get(&path)).await });
        let found = match answered {
            Ok(Ok(found)) => found,
            Ok(Err(object_store::Error::NotFound { .. })) => {
                self.give_back(lane);
                return Ok(None);
            }
            Ok(Err(error)) => {
                self.give_back(lane);
                return Err(self.failed("get", &path, &error));
            }
            Err(_) => {
                self.give_back(lane);
                return Err(self.timed_out("get", &path, limit));
            }
        };
        Ok(Some(BlobReader {
            cache: self,
            lane: Some(lane),
            body: found.into_stream(),
            chunk: bytes::Bytes::new(),
            path,
        }))
    }

    /// The blob `digest` stored as parts ([`parts_path`]), read part
    /// after part; `None` if it has no index. An index the cache answers
    /// wrongly (not one, or longer than an AC entry may be) is a failed
    /// request.
    fn open_parts(&self, digest: &ContentDigest) -> Result<Option<PartsReader<'_>>, RemoteError> {
        let index_path = &parts_path(digest);
        let Some(index) = self.run("get", index_path, 0, |bound| async move {
            self.get(&bound, index_path, Some(AC_ENTRY_AT_MOST)).await
        })?
        else {
            return Ok(None);
        };
        let parts = parse_parts(&index)
            .map_err(|message| self.request_error("get", index_path, message))?;
        Ok(Some(PartsReader {
            cache: self,
            index: index_path.clone(),
            parts: parts.into_iter(),
            current: None,
        }))
    }
}

/// A blob stored as parts ([`parts_path`]), read part after part, each
/// part's length held to its index's: a part missing, shorter or longer
/// is an error naming it. Its content is checked by the caller against
/// the blob's digest, as any blob's is.
struct PartsReader<'a> {
    cache: &'a ObjectCache,
    index: StorePath,
    parts: std::vec::IntoIter<(ContentDigest, u64)>,
    /// The part being read, and how many of its bytes are still to come.
    current: Option<(BlobReader<'a>, u64)>,
}

impl PartsReader<'_> {
    fn wrong(&self, part: &StorePath, what: &str) -> std::io::Error {
        std::io::Error::other(self.cache.request_error(
            "get",
            part,
            format!("{what}, as {} names it", self.index),
        ))
    }
}

impl Read for PartsReader<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if buffer.is_empty() {
            return Ok(0);
        }
        loop {
            let Some((reader, left)) = &mut self.current else {
                let Some((digest, length)) = self.parts.next() else {
                    return Ok(0);
                };
                let path = cas_path(&digest);
                match self
                    .cache
                    .open(path.clone())
                    .map_err(std::io::Error::other)?
                {
                    Some(reader) => self.current = Some((reader, length)),
                    None => return Err(self.wrong(&path, "the part is missing")),
                }
                continue;
            };
            // A byte past the part's end, if the cache has one, is an
            // error, not the next part's.
            let at_most = usize::try_from(*left + 1).unwrap_or(usize::MAX);
            let count = buffer.len().min(at_most);
            let read = reader.read(&mut buffer[..count])?;
            if read as u64 > *left {
                let path = reader.path.clone();
                return Err(self.wrong(&path, "the part is longer"));
            }
            if read == 0 {
                if *left > 0 {
                    let path = reader.path.clone();
                    return Err(self.wrong(&path, "the part is shorter"));
                }
                self.current = None;
                continue;
            }
            *left -= read as u64;
            return Ok(read);
        }
    }
}

/// Where a request goes and how long it may take ([`ObjectCache::bound`]).
struct Bound {
    store: Arc<dyn ObjectStore>,
    /// The whole request, retry included (the client's own timeout bounds
    /// each attempt).
    limit: Duration,
    /// A large body: not failed for taking longer than the timeout.
    large: bool,
}

impl RemoteCache for ObjectCache {
    fn url(&self) -> &str {
        &self.url
    }

    fn get_action(&self, key: &ActionKey) -> Result<Option<Vec<u8>>, RemoteError> {
        let path = &ac_path(key);
        self.run("get", path, 0, |bound| async move {
            self.get(&bound, path, Some(AC_ENTRY_AT_MOST)).await
        })
    }

    fn put_action(&self, key: &ActionKey, entry: &[u8]) -> Result<PutOutcome, RemoteError> {
        self.run("put", &ac_path(key), entry.len(), |bound| async move {
            self.put_entry(&bound, key, entry, false).await
        })
    }

    fn put_action_after_miss(
        &self,
        key: &ActionKey,
        entry: &[u8],
    ) -> Result<PutOutcome, RemoteError> {
        self.run("put", &ac_path(key), entry.len(), |bound| async move {
            self.put_entry(&bound, key, entry, true).await
        })
    }

    fn get_actions(&self, keys: &[ActionKey], answered: &mut Answered<'_, Option<Vec<u8>>>) {
        self.run_many(
            "get",
            keys.len(),
            |index| ac_path(&keys[index]),
            |_| 0,
            |index, bound| async move {
                self.get(&bound, &ac_path(&keys[index]), Some(AC_ENTRY_AT_MOST))
                    .await
            },
            answered,
        );
    }

    fn put_actions(&self, puts: &[ActionPut], answered: &mut Answered<'_, PutOutcome>) {
        self.run_many(
            "put",
            puts.len(),
            |index| ac_path(&puts[index].key),
            |index| puts[index].entry.len(),
            |index, bound| async move {
                let put = &puts[index];
                self.put_entry(&bound, &put.key, &put.entry, put.after_miss)
                    .await
            },
            answered,
        );
    }

    /// Stored whole, or (a cache without uploads in parts, which stores
    /// long blobs that way) as parts whose index is written.
    fn has_blob(&self, digest: &ContentDigest) -> Result<bool, RemoteError> {
        let path = &cas_path(digest);
        let whole = self.run("head", path, 0, |bound| async move {
            self.head(&bound, path).await
        })?;
        if whole || self.parts {
            return Ok(whole);
        }
        let index = &parts_path(digest);
        self.run("head", index, 0, |bound| async move {
            self.head(&bound, index).await
        })
    }

    fn get_blob(&self, digest: &ContentDigest) -> Result<Option<Vec<u8>>, RemoteError> {
        let path = &cas_path(digest);
        let whole = self.run("get", path, 0, |bound| async move {
            self.get(&bound, path, None).await
        })?;
        if whole.is_some() {
            return Ok(whole);
        }
        let Some(mut parts) = self.open_parts(digest)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        parts
            .read_to_end(&mut bytes)
            .map_err(|error| self.request_error("get", &parts_path(digest), error.to_string()))?;
        Ok(Some(bytes))
    }

    /// Streamed as it arrives; a blob stored as parts, part after part.
    fn open_blob(
        &self,
        digest: &ContentDigest,
    ) -> Result<Option<Box<dyn Read + Send + '_>>, RemoteError> {
        if let Some(reader) = self.open(cas_path(digest))? {
            return Ok(Some(Box::new(reader)));
        }
        Ok(self
            .open_parts(digest)?
            .map(|reader| Box::new(reader) as Box<dyn Read + Send + '_>))
    }

    fn put_blob(&self, digest: &ContentDigest, bytes: &[u8]) -> Result<(), RemoteError> {
        // A blob is named by its content: writing it again is harmless,
        // so the put overwrites (no conditional request needed).
        let path = &cas_path(digest);
        self.run("put", path, bytes.len(), |bound| async move {
            self.put(&bound, path, PutPayload::from(bytes.to_vec()), false)
                .await
        })
        .map(|_| ())
    }

    /// Up to [`PART`] bytes: one PUT. Longer: in parts as it is read,
    /// as a multipart upload where the store has them, else as part
    /// objects and their index ([`parts_path`]).
    fn put_blob_from(
        &self,
        digest: &ContentDigest,
        reader: &mut dyn Read,
    ) -> Result<u64, RemoteError> {
        let path = &cas_path(digest);
        let first = self.read_part(path, reader)?;
        if first.len() == PART {
            return if self.parts {
                self.put_in_parts(path, first, reader)
            } else {
                self.put_as_parts(digest, first, reader)
            };
        }
        let length = first.len();
        let payload = PutPayload::from(first);
        self.run("put", path, length, |bound| async move {
            self.put(&bound, path, payload, false).await
        })
        .map(|_| length as u64)
    }
}

/// A blob's body as it arrives, on the lane that asked for it (given back
/// when the reader is dropped). Each chunk must come within the cache's
/// timeout; the whole body takes as long as it takes.
struct BlobReader<'a> {
    cache: &'a ObjectCache,
    lane: Option<Lane>,
    body: BoxStream<'static, Result<bytes::Bytes, object_store::Error>>,
    /// What is left of the last chunk.
    chunk: bytes::Bytes,
    path: StorePath,
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            let Some(lane) = &self.lane else {
                return Ok(0);
            };
            let timeout = self.cache.timeout;
            let body = &mut self.body;
            let next = lane
                .runtime
                .block_on(async { tokio::time::timeout(timeout, body.next()).await });
            self.chunk = match next {
                Ok(Some(Ok(chunk))) => chunk,
                Ok(None) => return Ok(0),
                Ok(Some(Err(error))) => {
                    return Err(std::io::Error::other(
                        self.cache.failed("get", &self.path, &error),
                    ));
                }
                Err(_) => {
                    return Err(std::io::Error::other(
                        self.cache.timed_out("get", &self.path, timeout),
                    ));
                }
            };
        }
        let count = buffer.len().min(self.chunk.len());
        buffer[..count].copy_from_slice(&self.chunk[..count]);
        self.chunk = self.chunk.slice(count..);
        Ok(count)
    }
}

impl Drop for BlobReader<'_> {
    fn drop(&mut self) {
        if let Some(lane) = self.lane.take() {
            // The body (and its connection) goes first, inside its runtime,
            // so that the lane is given back with nothing of this request.
            let entered = lane.runtime.enter();
            drop(std::mem::replace(
                &mut self.body,
                futures::stream::empty().boxed(),
            ));
            drop(entered);
            self.cache.give_back(lane);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netrc_and_base64() {
        let text =
            "machine other login a password b\nmachine cache.example login ana password s3cret\n";
        assert_eq!(
            netrc_entry(text, "cache.example"),
            Some(("ana".into(), "s3cret".into()))
        );
        assert_eq!(netrc_entry(text, "nowhere"), None);
        assert_eq!(base64(b"ana:s3cret"), "YW5hOnMzY3JldA==");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
    }

    #[test]
    fn a_directory_keeps_the_remote_contract() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        cairn_core::contract::remote_actions_are_written_once(&open(&url, None).unwrap());
        cairn_core::contract::remote_blobs_round_trip(&open(&url, None).unwrap());
        cairn_core::contract::remote_blobs_stream_in(&open(&url, None).unwrap());
        cairn_core::contract::remote_batches_answer_each_request_once(&open(&url, None).unwrap());
        assert!(dir.path().join("ac").is_dir(), "ac/<key> in the directory");
        assert!(dir.path().join("cas").is_dir());
    }

    /// An AC entry longer than [`AC_ENTRY_AT_MOST`] is a failed request,
    /// not read into memory; one at the limit is read.
    #[test]
    fn an_ac_entry_over_the_limit_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(&format!("file://{}", dir.path().display()), None).unwrap();
        let (fits, over) = (ActionKey([1; 32]), ActionKey([2; 32]));
        std::fs::create_dir_all(dir.path().join("ac")).unwrap();
        std::fs::write(
            dir.path().join(format!("ac/{fits}")),
            vec![b'x'; AC_ENTRY_AT_MOST],
        )
        .unwrap();
        std::fs::write(
            dir.path().join(format!("ac/{over}")),
            vec![b'x'; AC_ENTRY_AT_MOST + 1],
        )
        .unwrap();
        assert_eq!(
            cache.get_action(&fits).unwrap().unwrap().len(),
            AC_ENTRY_AT_MOST
        );
        let error = cache.get_action(&over).unwrap_err().to_string();
        assert!(
            error.contains(&format!("ac/{over}"))
                && error.contains("longer than the 16777216 bytes"),
            "{error}"
        );
    }

    #[test]
    fn an_unreachable_server_fails_within_the_timeout_naming_itself() {
        // A port nothing listens on: refused at once.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let cache = open(
            &format!("http://127.0.0.1:{port}/team"),
            Some(Duration::from_secs(2)),
        )
        .unwrap();
        let started = std::time::Instant::now();
        cairn_core::contract::a_failing_remote_names_itself(&cache);
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    /// A directory cache made to behave as an HTTP cache does (no upload
    /// in parts), so that its files show what such a cache is sent.
    fn without_uploads_in_parts(dir: &std::path::Path) -> ObjectCache {
        let mut cache = open(&format!("file://{}", dir.display()), None).unwrap();
        cache.parts = false;
        cache
    }

    #[test]
    fn a_cache_without_uploads_in_parts_keeps_the_blob_contract() {
        let dir = tempfile::tempdir().unwrap();
        cairn_core::contract::remote_blobs_round_trip(&without_uploads_in_parts(dir.path()));
        cairn_core::contract::remote_blobs_stream_in(&without_uploads_in_parts(dir.path()));
    }

    /// `length` bytes sent to a directory cache made to behave as an HTTP
    /// cache: the cache, the bytes and their digest.
    fn sent_as_parts(dir: &std::path::Path, length: u32) -> (ObjectCache, Vec<u8>, ContentDigest) {
        let cache = without_uploads_in_parts(dir);
        let content: Vec<u8> = (0..length).map(|i| (i % 251) as u8).collect();
        let digest = ContentDigest::of(&content);
        let sent = cache
            .put_blob_from(&digest, &mut std::io::Cursor::new(&content))
            .unwrap();
        assert_eq!(sent, content.len() as u64);
        (cache, content, digest)
    }

    /// A blob longer than a part goes to a cache without uploads in parts
    /// (HTTP) as part objects and their index, and comes back whole
    /// through every read method.
    #[test]
    fn a_long_blob_goes_as_parts_and_an_index_where_uploads_take_no_parts() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, content, digest) = sent_as_parts(dir.path(), (20 << 20) + 7);
        let cas = dir.path().join("cas");
        assert!(!cas.join(digest.to_hex()).exists(), "not stored whole");
        let index = std::fs::read_to_string(cas.join(format!("{digest}.parts"))).unwrap();
        let parts: Vec<(ContentDigest, usize)> = [0..PART, PART..2 * PART, 2 * PART..content.len()]
            .into_iter()
            .map(|range| (ContentDigest::of(&content[range.clone()]), range.len()))
            .collect();
        let expected = format!(
            "cairn-parts/1 {}\n{}",
            content.len(),
            parts
                .iter()
                .map(|(part, length)| format!("{part} {length}\n"))
                .collect::<String>()
        );
        assert_eq!(index, expected);
        for (part, length) in &parts {
            assert_eq!(
                std::fs::metadata(cas.join(part.to_hex())).unwrap().len(),
                *length as u64
            );
        }
        assert!(cache.has_blob(&digest).unwrap());
        assert!(cache.get_blob(&digest).unwrap().unwrap() == content);
        let mut read = Vec::new();
        cache
            .open_blob(&digest)
            .unwrap()
            .unwrap()
            .read_to_end(&mut read)
            .unwrap();
        assert!(read == content, "read back otherwise");
    }

    /// What a cache answers through a part index is not trusted: a part
    /// missing, cut short or grown, and an index that is not one, are
    /// errors naming the object (the caller's digest check refuses a part
    /// altered in place, as for any blob).
    #[test]
    fn a_part_missing_cut_or_grown_and_a_wrong_index_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, content, digest) = sent_as_parts(dir.path(), (9 << 20) + 1);
        let cas = dir.path().join("cas");
        let second = cas.join(ContentDigest::of(&content[PART..]).to_hex());
        let read = |cache: &ObjectCache| -> Result<Vec<u8>, String> {
            let mut read = Vec::new();
            match cache.open_blob(&digest) {
                Err(error) => Err(error.to_string()),
                Ok(None) => Err("none".to_owned()),
                Ok(Some(mut reader)) => match reader.read_to_end(&mut read) {
                    Ok(_) => Ok(read),
                    Err(error) => Err(error.to_string()),
                },
            }
        };
        assert!(read(&cache).unwrap() == content);

        let kept = std::fs::read(&second).unwrap();
        std::fs::write(&second, &kept[..kept.len() - 1]).unwrap();
        let error = read(&cache).unwrap_err();
        assert!(error.contains("the part is shorter"), "{error}");
        assert!(error.contains(&format!("{digest}.parts")), "{error}");
        let mut grown = kept.clone();
        grown.push(0);
        std::fs::write(&second, &grown).unwrap();
        let error = read(&cache).unwrap_err();
        assert!(error.contains("the part is longer"), "{error}");
        std::fs::remove_file(&second).unwrap();
        let error = read(&cache).unwrap_err();
        assert!(error.contains("the part is missing"), "{error}");
        std::fs::write(&second, &kept).unwrap();

        let index = cas.join(format!("{digest}.parts"));
        let good = std::fs::read_to_string(&index).unwrap();
        for (bad, says) in [
            ("garbage".to_owned(), "does not start with"),
            (
                good.replacen("cairn-parts/1 ", "cairn-parts/1 1", 1),
                "add up to",
            ),
            (
                good.replacen(" 8388608\n", " x\n", 1),
                "line 2 of the part index",
            ),
            (
                good.replacen(" 8388608\n", " 8388609\n", 1),
                "a part of 8388609 bytes",
            ),
        ] {
            std::fs::write(&index, bad).unwrap();
            let error = read(&cache).unwrap_err();
            assert!(error.contains(says), "{error}");
            assert!(error.contains(&format!("{digest}.parts")), "{error}");
        }
        std::fs::write(&index, &good).unwrap();
        assert!(read(&cache).unwrap() == content);
    }
}
