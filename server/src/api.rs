//! The HTTP API (docs/api.md): routes, handlers, the error body, the
//! layers (token, body limit, metrics, tracing), and the shutdown.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{MatchedPath, Path as UrlPath, Query, Request, State as Shared_};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cairn_app::AppError;
use cairn_app::backfill::{Backfill, BackfillRequest, Targets};
use cairn_app::build::{BuildRequest, DryRun};
use cairn_app::dto::Refs;
use cairn_app::dto::build::DryActionLine;
use cairn_app::events::{EventFilter, EventQuery};
use cairn_engine::evaluate::Verdict;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, status_of};
use crate::expect::Dry;
use crate::ops::Shared;
use crate::registry::{Existing, Expected, Kind, Operation, State, Work};
use crate::stream::{self, Follow};
use crate::{ServeError, ServeOptions, auth, grid};

type Ctx = Shared_<Arc<Shared>>;

/// The request body limit: 1 MiB.
pub const BODY_LIMIT: usize = 1 << 20;

type Answer = Result<Response, ApiError>;

/// Runs `work` (a synchronous use case) on the blocking pool.
async fn blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    work: impl FnOnce(&Shared) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let shared = Arc::clone(shared);
    tokio::task::spawn_blocking(move || work(&shared))
        .await
        .map_err(|error| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the request's work failed: {error}"),
            )
        })?
}

/// How long each phase of a submit took (a `-vv` debug line, target
/// `cairn_server::submit`; docs/benchmarks.md, "cairn serve").
struct Phases {
    started: Instant,
    /// When each phase ended, since `started`.
    marks: Vec<(&'static str, Duration)>,
    /// Waits inside the phases (for a blocking thread).
    waits: Vec<(&'static str, Duration)>,
}

impl Phases {
    fn new() -> Phases {
        Phases {
            started: Instant::now(),
            marks: Vec::new(),
            waits: Vec::new(),
        }
    }

    fn mark(&mut self, phase: &'static str) {
        self.marks.push((phase, self.started.elapsed()));
    }

    fn log(&self, what: &str) {
        if tracing::enabled!(target: "cairn_server::submit", tracing::Level::DEBUG) {
            let mut line = String::new();
            let mut last = Duration::ZERO;
            for (phase, at) in &self.marks {
                line.push_str(&format!(" {phase} {:.1}", (*at - last).as_secs_f64() * 1e3));
                last = *at;
            }
            for (wait, took) in &self.waits {
                line.push_str(&format!(" ({wait} {:.1})", took.as_secs_f64() * 1e3));
            }
            tracing::debug!(
                target: "cairn_server::submit",
                "{what}: {:.1} ms:{line}",
                self.started.elapsed().as_secs_f64() * 1e3
            );
        }
    }
}

fn json_answer(status: StatusCode, value: Value) -> Response {
    (status, axum::Json(value)).into_response()
}

/// Parses a JSON body (empty: `{}`); errors name the line and column.
fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(text)
        .map_err(|error| ApiError::invalid(format!("request body: {error}")))
}

/// The `Idempotency-Key` header: at most 255 printable ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::invalid(
            "Idempotency-Key: expected 1 to 255 printable ASCII characters (letters, digits, punctuation, spaces)",
        )
    };
    let text = value.to_str().map_err(|_| bad())?;
    if text.is_empty() || text.len() > 255 || !text.bytes().all(|byte| (0x20..0x7f).contains(&byte))
    {
        return Err(bad());
    }
    Ok(Some(text.to_owned()))
}

// ------------------------------------------------------------------ router

pub fn router(shared: Arc<Shared>) -> Router {
    let v1 = Router::new()
        .route("/v1/builds", post(submit_build))
        .route("/v1/backfills", post(submit_backfill))
        .route("/v1/operations", get(list_operations))
        .route("/v1/operations/{id}", get(get_operation))
        .route("/v1/operations/{id}/cancel", post(cancel_operation))
        .route("/v1/operations/{id}/retry", post(retry_operation))
        .route("/v1/operations/{id}/events", get(operation_events))
        .route("/v1/events", get(events))
        .route("/v1/status", get(status))
        .route("/v1/partitions/{partition}/why", get(why))
        .route("/v1/partitions/{partition}/history", get(history))
        .route("/v1/partitions/{partition}/logs", get(logs))
        .route("/v1/plan", get(plan))
        .route("/v1/datasets", get(datasets))
        .route("/v1/datasets/{name}/grid", get(dataset_grid))
        .route("/v1/invalidate", post(invalidate))
        .route("/v1/store/stats", get(store_stats))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            authenticate,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(v1)
        // The web page at / and /ui/... (docs/web.md); it reads only /v1.
        .merge(crate::web::router())
        .fallback(no_route)
        .layer(tower_http::limit::RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            measure,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(shared)
}

/// Every `/v1` request carries the token (reads too, unless the server
/// runs with `--public-read`).
async fn authenticate(ctx: Ctx, request: Request, next: Next) -> Response {
    let shared = ctx.0;
    let read = request.method() == Method::GET || request.method() == Method::HEAD;
    if !(shared.public_read && read) {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        if !auth::authorized(given, &shared.token) {
            let message = if given.is_none() {
                "this request needs the token: `Authorization: Bearer TOKEN`, the token being in .cairn/serve.token"
            } else {
                "the token is not this server's (see .cairn/serve.token)"
            };
            // Read the (limited) body first: a connection whose request
            // body was left unread cannot serve the client's next request.
            let _ = axum::body::to_bytes(request.into_body(), BODY_LIMIT).await;
            return ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
        }
    }
    next.run(request).await
}

/// Error answers that a layer or axum made (413, 405, a bad query or
/// path) get the JSON error body too.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if status.as_u16() < 400 || is_json {
        return response;
    }
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        format!("the request body is larger than the limit of {BODY_LIMIT} bytes (1 MiB)")
    } else {
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body).trim().to_owned();
        if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_lowercase()
        } else {
            text
        }
    };
    ApiError::new(status, message).into_response()
}

/// Times every request for `cairn_http_request_duration_seconds`.
async fn measure(ctx: Ctx, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    ctx.0.metrics.request(
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {method} {}", uri.path()))
}

// ----------------------------------------------------------------- service

async fn healthz() -> Response {
    json_answer(StatusCode::OK, json!({"status": "ok"}))
}

async fn readyz(ctx: Ctx) -> Response {
    if ctx.0.shutting_down() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    json_answer(StatusCode::OK, json!({"status": "ready"}))
}

async fn metrics(ctx: Ctx) -> Response {
    let mut text = ctx.0.metrics.render(&ctx.0.registry());
    // The grids' computations (server/src/grids.rs).
    text.push_str(&format!(
        "# HELP cairn_grid_computations_total Statuses of a dataset's grid computed (an answer kept for its generation is not counted).\n\
         # TYPE cairn_grid_computations_total counter\n\
         cairn_grid_computations_total {}\n",
        ctx.0.grids.computations()
    ));
    // Plans made, by dry runs and builds (a build that took its submit's
    // dry-run plan made none: server/src/expect.rs).
    text.push_str(&format!(
        "# HELP cairn_plans_total Plans made by the server's dry runs and builds.\n\
         # TYPE cairn_plans_total counter\n\
         cairn_plans_total {}\n",
        ctx.0.workspace.plans_made()
    ));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

// ------------------------------------------------------------- operations

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildBody {
    #[serde(default)]
    refs: Vec<String>,
    #[serde(default)]
    keep_going: bool,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default)]
    jobs: Option<usize>,
    #[serde(default)]
    dry_run: bool,
    /// Why it was submitted (shown with the operation).
    #[serde(default)]
    reason: Option<String>,
    /// Who or what submitted it (shown with the operation).
    #[serde(default)]
    submitted_by: Option<String>,
}

/// At most this many characters of a submit's `reason` or `submitted_by`.
const NOTE_LIMIT: usize = 1_000;

/// Adds a submit's `reason` and `submitted_by` to its normalized request
/// (only when given: a request without them digests as before, so the
/// idempotency keys recorded by earlier servers still match).
fn with_notes(
    mut request: Value,
    reason: Option<&str>,
    submitted_by: Option<&str>,
) -> Result<Value, ApiError> {
    for (field, text) in [("reason", reason), ("submitted_by", submitted_by)] {
        let Some(text) = text.map(str::trim) else {
            continue;
        };
        if text.chars().count() > NOTE_LIMIT || text.chars().any(char::is_control) {
            return Err(ApiError::invalid(format!(
                "{field}: at most {NOTE_LIMIT} characters, on one line"
            )));
        }
        if !text.is_empty() {
            request[field] = Value::String(text.to_owned());
        }
    }
    Ok(request)
}

fn refused_while_stopping(shared: &Shared) -> Result<(), ApiError> {
    if shared.shutting_down() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down: submit to the next one",
        ));
    }
    Ok(())
}

/// The answer to a submit whose idempotency key names an operation.
fn existing_answer(existing: Existing, key: Option<&str>) -> Option<Answer> {
    match existing {
        Existing::Same(op) => Some(Ok(json_answer(StatusCode::OK, op))),
        Existing::Conflict(id) => Some(Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "Idempotency-Key {:?} was used for operation {id} with another request body",
                key.unwrap_or_default()
            ),
        ))),
        Existing::None => None,
    }
}

/// Registers `op` and starts it; 202 with its resource and `Location`.
fn start(shared: &Arc<Shared>, op: Operation) -> Answer {
    let key = op.idempotency_key.clone();
    let id = op.id.clone();
    let inserted = shared.registry().insert(op);
    let json = match inserted {
        Ok(json) => json,
        Err(existing) => {
            return existing_answer(existing, key.as_deref())
                .unwrap_or_else(|| Err(ApiError::invalid("cannot register the operation")));
        }
    };
    shared.touch();
    crate::ops::start_run(shared, &id);
    let mut response = json_answer(StatusCode::ACCEPTED, json);
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/operations/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn submit_build(ctx: Ctx, headers: HeaderMap, body: Bytes) -> Answer {
    let shared = ctx.0;
    let body: BuildBody = parse_body(&body)?;
    let request = json!({
        "refs": body.refs,
        "keep_going": body.keep_going,
        "retries": body.retries,
        "jobs": body.jobs,
    });
    let request = with_notes(
        request,
        body.reason.as_deref(),
        body.submitted_by.as_deref(),
    )?;
    submit_build_request(&shared, &headers, body, request).await
}

async fn submit_build_request(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    body: BuildBody,
    request: Value,
) -> Answer {
    let key = idempotency_key(headers)?;
    if !body.dry_run {
        refused_while_stopping(shared)?;
    }
    let digest = crate::registry::digest(Kind::Build, &request);
    if !body.dry_run
        && let Some(answer) = existing_answer(
            shared.registry().existing(key.as_deref(), &digest),
            key.as_deref(),
        )
    {
        return answer;
    }
    let dry_run = body.dry_run;
    let jobs = shared.jobs_for(body.jobs);
    let build = BuildRequest {
        refs: body.refs,
        jobs: Some(jobs),
        keep_going: body.keep_going,
        no_wait: false,
        retries: body.retries,
        cancel: None,
        submission: None,
        reason: None,
        plan: None,
    };
    if dry_run {
        let (expected, actions) = blocking(shared, move |shared| {
            let workspace = &shared.workspace;
            let partitions = workspace.requested(&build.refs)?.len() as u64;
            let dry = cairn_app::build::dry_run(workspace, &build.refs, build.jobs)?;
            let (total, counts) = dry.counts();
            let expected = Expected {
                partitions,
                actions: total,
                current: counts.cached,
                to_run: counts.executed,
            };
            Ok((expected, dry_listing(&dry)))
        })
        .await?;
        return Ok(json_answer(
            StatusCode::OK,
            json!({"expected": expected, "actions": actions}),
        ));
    }
    // The accepted answer carries the dry run's counts; submits for the
    // same refs at the same time share one (server/src/expect.rs).
    // The build takes the dry run's plan if nothing changed by the time
    // it starts (server/src/expect.rs).
    let counted_as = crate::expect::key("build", &mut build.refs.clone());
    let counting = {
        let shared = Arc::clone(shared);
        let (refs, threads) = (build.refs.clone(), build.jobs);
        async move {
            blocking(&shared, move |shared| {
                let workspace = &shared.workspace;
                let partitions = workspace.requested_checked(&refs)?.len() as u64;
                let dry = cairn_app::build::dry_run_for_build(workspace, &refs, threads)?;
                let (total, counts) = dry.counts();
                let expected = Expected {
                    partitions,
                    actions: total,
                    current: counts.cached,
                    to_run: counts.executed,
                };
                let plan = match dry {
                    DryRun::Planned { plan, .. } => Some(Arc::new(plan)),
                    DryRun::Current(_) => None,
                };
                Ok(Dry { expected, plan })
            })
            .await
        }
    };
    let counted = shared.expecting.counts(counted_as, counting).await?;
    let mut op = Operation::new(Kind::Build, request, digest, key, Work::Build(build), jobs);
    op.expected = Some(counted.dry.expected);
    op.dry_plan = counted.plan();
    start(shared, op)
}

/// A dry run's actions as `cairn build --dry-run --json` prints them.
fn dry_listing(dry: &DryRun) -> Vec<Value> {
    match dry {
        DryRun::Current(snapshot) => snapshot
            .actions
            .iter()
            .map(|action| {
                let verdict = Verdict::UpToDate {
                    key: action.key,
                    built_by: action.built_by,
                };
                let job = &snapshot.jobs[action.job as usize];
                serde_json::to_value(DryActionLine::new(
                    job,
                    Refs::from(&action.outputs[..]),
                    &verdict,
                ))
                .unwrap_or(Value::Null)
            })
            .collect(),
        DryRun::Planned { plan, verdicts } => plan
            .order
            .iter()
            .map(|&index| {
                let action = &plan.actions[index];
                serde_json::to_value(DryActionLine::new(
                    &action.job,
                    Refs::from(&action.config.outputs[..]),
                    &verdicts[index],
                ))
                .unwrap_or(Value::Null)
            })
            .collect(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackfillBody {
    #[serde(default)]
    config_path: Option<String>,
    #[serde(default)]
    config: Option<String>,
    #[serde(default)]
    config_name: Option<String>,
    /// Backfills keep going by default.
    #[serde(default)]
    keep_going: Option<bool>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default)]
    jobs: Option<usize>,
    #[serde(default)]
    dry_run: bool,
    /// Only the partitions whose last attempt (or an input's) failed, as
    /// `cairn backfill --retry-failed` picks them.
    #[serde(default)]
    retry_failed: bool,
    /// Who or what submitted it (shown with the operation, recorded in
    /// its build's `BuildRequested`). Its reason is the config's.
    #[serde(default)]
    submitted_by: Option<String>,
}

/// The answer to a `retry_failed` backfill that finds nothing to retry
/// (the local command says the same and exits 0).
const NOTHING_TO_RETRY: &str =
    "nothing to retry: no partition of this backfill has a failed last attempt";

/// `path`, relative to the project `root`, as a file inside it: absolute
/// paths, `..` and symlinks that leave the project are refused.
pub fn confine(root: &Path, path: &str) -> Result<PathBuf, ApiError> {
    let refused = |why: &str| ApiError::invalid(format!("config_path {path:?}: {why}"));
    if path.is_empty() {
        return Err(refused("empty"));
    }
    let relative = Path::new(path);
    for component in relative.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(refused(
                    "`..` is not allowed: paths stay inside the project",
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(refused(
                    "must be relative to the project (the graph file's directory)",
                ));
            }
        }
    }
    let joined = root.join(relative);
    let real = joined
        .canonicalize()
        .map_err(|error| refused(&format!("cannot be read in the project: {error}")))?;
    let real_root = root.canonicalize().unwrap_or_else(|_| root.to_owned());
    if !real.starts_with(&real_root) {
        return Err(refused("leaves the project (through a symlink)"));
    }
    if !real.is_file() {
        return Err(refused("not a file"));
    }
    Ok(joined)
}

async fn submit_backfill(ctx: Ctx, headers: HeaderMap, body: Bytes) -> Answer {
    let mut phases = Phases::new();
    let shared = ctx.0;
    let body: BackfillBody = parse_body(&body)?;
    let key = idempotency_key(&headers)?;
    if !body.dry_run {
        refused_while_stopping(&shared)?;
    }
    let keep_going = body.keep_going.unwrap_or(true);
    let request = match (&body.config_path, &body.config) {
        (Some(path), None) => json!({
            "config_path": path,
            "keep_going": keep_going,
            "retries": body.retries,
            "jobs": body.jobs,
        }),
        (None, Some(config)) => json!({
            "config": config,
            "config_name": body.config_name.as_deref().unwrap_or("inline.toml"),
            "keep_going": keep_going,
            "retries": body.retries,
            "jobs": body.jobs,
        }),
        _ => {
            return Err(ApiError::invalid(
                "give either config_path (a file in the project) or config (the TOML text)",
            ));
        }
    };
    let mut request = with_notes(request, None, body.submitted_by.as_deref())?;
    let retry_failed = body.retry_failed;
    if retry_failed {
        // Only when given: a request without it digests as before, so the
        // idempotency keys recorded by earlier servers still match.
        request["retry_failed"] = Value::Bool(true);
    }
    let digest = crate::registry::digest(Kind::Backfill, &request);
    if !body.dry_run
        && let Some(answer) = existing_answer(
            shared.registry().existing(key.as_deref(), &digest),
            key.as_deref(),
        )
    {
        return answer;
    }
    phases.mark("existing");
    let jobs = shared.jobs_for(body.jobs);
    let dry_run = body.dry_run;
    let queued = Instant::now();
    let (backfill, retry, listing, waited) = blocking(&shared, move |shared| {
        let waited = queued.elapsed();
        let workspace = &shared.workspace;
        let root = &workspace.graph.root;
        let backfill = match (body.config_path, body.config) {
            (Some(path), _) => {
                let file = confine(root, &path)?;
                cairn_app::backfill::load(workspace, &file).map_err(|error| {
                    // Name the file as the client gave it, not where the
                    // project lives on the server.
                    let (status, _) = status_of(&error);
                    let prefix = format!("{}/", root.display());
                    ApiError::new(status, error.to_string().replace(&prefix, ""))
                })?
            }
            (None, Some(text)) => {
                let name = body.config_name.unwrap_or_else(|| "inline.toml".to_owned());
                if name.contains('/') || name.contains('\\') || name.contains("..") {
                    return Err(ApiError::invalid(format!(
                        "config_name {name:?}: a file name, without a directory"
                    )));
                }
                Backfill::parse(&text, Path::new(&name), &workspace.graph)
                    .map_err(|error| ApiError::from(AppError::from(error)))?
            }
            (None, None) => return Err(ApiError::invalid("no config")),
        };
        // What `cairn backfill --retry-failed` retries, read from the
        // store the server holds: the requested partitions whose action,
        // or an upstream one, has an output whose last attempt failed
        // (whichever operations, of this server or an earlier one, ran
        // them).
        let retry = if retry_failed {
            match cairn_app::backfill::targets(workspace, &backfill, true)? {
                Targets::Retry(refs) if refs.is_empty() => {
                    let nothing = json!({
                        "nothing_to_retry": true,
                        "message": NOTHING_TO_RETRY,
                        "partitions": [],
                    });
                    return Ok((backfill, None, Some(nothing), (waited, Instant::now())));
                }
                targets => Some(targets.refs().to_vec()),
            }
        } else {
            None
        };
        if !dry_run {
            return Ok((backfill, retry, None, (waited, Instant::now())));
        }
        let plan = match &retry {
            Some(refs) => workspace.plan(refs)?,
            None => workspace.plan(&backfill.refs())?,
        };
        let dry = cairn_app::backfill::dry_run(workspace, &plan)?;
        let expected = Expected {
            partitions: dry.partitions.len() as u64,
            actions: dry.total,
            current: dry.counts.cached,
            to_run: dry.counts.executed,
        };
        let listing = json!({
            "expected": expected,
            "partitions": dry
                .partitions
                .iter()
                .map(|partition| serde_json::to_value(partition.json()).unwrap_or(Value::Null))
                .collect::<Vec<_>>(),
            "summary": serde_json::to_value(dry.summary()).unwrap_or(Value::Null),
        });
        Ok((backfill, retry, Some(listing), (waited, Instant::now())))
    })
    .await?;
    let (waited, ran_until) = waited;
    phases.waits.push(("parse queued", waited));
    phases
        .waits
        .push(("parse ran", ran_until.duration_since(queued) - waited));
    phases.mark("parsed");
    if let Some(listing) = listing {
        return Ok(json_answer(StatusCode::OK, listing));
    }
    // The accepted answer carries the dry run's counts; submits for the
    // same partitions at the same time share one (server/src/expect.rs).
    let refs = retry.clone().unwrap_or_else(|| backfill.refs());
    let counted_as = crate::expect::key(
        "backfill",
        &mut refs
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect::<Vec<_>>(),
    );
    let counting = {
        let shared = Arc::clone(&shared);
        let queued = Instant::now();
        async move {
            blocking(&shared, move |shared| {
                let mut phases = Phases::new();
                phases.waits.push(("queued", queued.elapsed()));
                let workspace = &shared.workspace;
                let plan = workspace.plan(&refs)?;
                phases.mark("planned");
                let dry = cairn_app::backfill::dry_run(workspace, &plan)?;
                phases.mark("evaluated");
                phases.log("a backfill's dry run");
                let expected = Expected {
                    partitions: dry.partitions.len() as u64,
                    actions: dry.total,
                    current: dry.counts.cached,
                    to_run: dry.counts.executed,
                };
                Ok(Dry {
                    expected,
                    plan: Some(Arc::new(plan)),
                })
            })
            .await
        }
    };
    let counted = shared.expecting.counts(counted_as, counting).await?;
    phases.mark("counted");
    let reason = backfill.reason();
    let work = Work::Backfill {
        backfill: Box::new(backfill),
        request: BackfillRequest {
            jobs: Some(jobs),
            fail_fast: !keep_going,
            no_wait: false,
            retries: body.retries,
            cancel: None,
            submission: None,
        },
        retry,
    };
    let mut op = Operation::new(Kind::Backfill, request, digest, key, work, jobs);
    op.reason = Some(reason);
    op.expected = Some(counted.dry.expected);
    op.dry_plan = counted.plan();
    let answer = start(&shared, op);
    phases.mark("started");
    phases.log("a backfill's submit");
    answer
}

async fn list_operations(ctx: Ctx, Query(query): Query<Vec<(String, String)>>) -> Answer {
    let mut state = None;
    let mut kind = None;
    let mut page_size = 50usize;
    let mut skip = 0usize;
    for (name, value) in &query {
        match name.as_str() {
            "state" => {
                state = Some(State::parse(value).ok_or_else(|| {
                    ApiError::invalid(format!(
                        "state {value:?}: one of queued, running, succeeded, failed, cancelled"
                    ))
                })?);
            }
            "kind" => {
                kind = Some(match value.as_str() {
                    "build" => Kind::Build,
                    "backfill" => Kind::Backfill,
                    _ => {
                        return Err(ApiError::invalid(format!(
                            "kind {value:?}: build or backfill"
                        )));
                    }
                });
            }
            "page_size" => {
                page_size = value
                    .parse::<usize>()
                    .ok()
                    .filter(|size| (1..=1000).contains(size))
                    .ok_or_else(|| {
                        ApiError::invalid(format!("page_size {value:?}: a number from 1 to 1000"))
                    })?;
            }
            "page_token" => {
                skip = value.parse().map_err(|_| {
                    ApiError::invalid(format!(
                        "page_token {value:?}: not a token this server gave"
                    ))
                })?;
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown query parameter {other:?} (state, kind, page_size, page_token)"
                )));
            }
        }
    }
    let registry = ctx.0.registry();
    let mut selected = registry
        .newest_first()
        .filter(|op| state.is_none_or(|state| op.state == state))
        .filter(|op| kind.is_none_or(|kind| op.kind == kind))
        .skip(skip);
    let operations: Vec<Value> = selected
        .by_ref()
        .take(page_size)
        .map(Operation::json)
        .collect();
    let next = selected.next().map(|_| (skip + page_size).to_string());
    Ok(json_answer(
        StatusCode::OK,
        json!({"operations": operations, "next_page_token": next}),
    ))
}

fn no_operation(id: &str) -> ApiError {
    ApiError::not_found(format!("no operation {id:?} on this server"))
}

async fn get_operation(ctx: Ctx, UrlPath(id): UrlPath<String>) -> Answer {
    let registry = ctx.0.registry();
    let op = registry.get(&id).ok_or_else(|| no_operation(&id))?;
    Ok(json_answer(StatusCode::OK, op.json()))
}

async fn cancel_operation(ctx: Ctx, UrlPath(id): UrlPath<String>) -> Answer {
    let op = ctx.0.cancel(&id).ok_or_else(|| no_operation(&id))?;
    Ok(json_answer(StatusCode::OK, op))
}

async fn retry_operation(ctx: Ctx, headers: HeaderMap, UrlPath(id): UrlPath<String>) -> Answer {
    let shared = ctx.0;
    let (request, kind) = {
        let registry = shared.registry();
        let op = registry.get(&id).ok_or_else(|| no_operation(&id))?;
        if !matches!(op.state, State::Failed | State::Cancelled) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "operation {id} is {}: only a failed or cancelled operation is retried",
                    op.state.word()
                ),
            ));
        }
        let mut refs = op.unfinished.clone();
        refs.sort();
        refs.dedup();
        (
            json!({
                "refs": refs,
                "keep_going": op.request.get("keep_going").and_then(Value::as_bool).unwrap_or(false),
                "retries": op.request.get("retries").cloned().unwrap_or(Value::Null),
                "jobs": op.request.get("jobs").cloned().unwrap_or(Value::Null),
                "whole": refs.is_empty(),
            }),
            op.kind,
        )
    };
    // A retry builds the partitions that failed or did not run (with what
    // depends on them being brought up to date by the build); an operation
    // that ended before any action ran is submitted again whole.
    let original = {
        let registry = shared.registry();
        registry.get(&id).map(|op| op.request.clone())
    };
    let refs: Vec<String> = if request["whole"] == Value::Bool(true) {
        match (kind, original) {
            (Kind::Build, Some(original)) => original
                .get("refs")
                .and_then(Value::as_array)
                .map(|refs| {
                    refs.iter()
                        .filter_map(|value| value.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            _ => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "operation {id} recorded no partition that failed or did not run: submit the backfill again"
                    ),
                ));
            }
        }
    } else {
        request["refs"]
            .as_array()
            .map(|refs| {
                refs.iter()
                    .filter_map(|value| value.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let body = BuildBody {
        refs: refs.clone(),
        keep_going: request["keep_going"].as_bool().unwrap_or(false),
        retries: request["retries"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok()),
        jobs: request["jobs"]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok()),
        dry_run: false,
        reason: None,
        submitted_by: None,
    };
    let normalized = json!({
        "refs": refs,
        "keep_going": body.keep_going,
        "retries": body.retries,
        "jobs": body.jobs,
        "retry_of": id,
    });
    submit_build_request(&shared, &headers, body, normalized).await
}

// ----------------------------------------------------------------- events

/// `Last-Event-ID`, if given.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| ApiError::invalid("Last-Event-ID: expected an event's seq (a number)"))
}

/// The filters of `cairn log` from a query: `build`, `partition`, `job`,
/// `kind` (repeatable), `dimension`; and `since` (a seq).
fn event_query(query: &[(String, String)]) -> Result<(EventQuery, Option<u64>), ApiError> {
    let mut events = EventQuery::default();
    let mut since = None;
    for (name, value) in query {
        match name.as_str() {
            "since" => {
                since = Some(value.parse::<u64>().map_err(|_| {
                    ApiError::invalid(format!("since {value:?}: expected a seq (a number)"))
                })?);
            }
            "build" => {
                events.build = Some(value.parse().map_err(|_| {
                    ApiError::invalid(format!("build {value:?}: expected a build id (a number)"))
                })?);
            }
            "partition" => events.partition = Some(value.clone()),
            "job" => events.job = Some(value.clone()),
            "kind" => events.kinds.push(value.clone()),
            "dimension" => events.dimension = Some(value.clone()),
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown query parameter {other:?} (since, build, partition, job, kind, dimension)"
                )));
            }
        }
    }
    Ok((events, since))
}

async fn events(
    ctx: Ctx,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Answer {
    let shared = ctx.0;
    let (query, since) = event_query(&query)?;
    let filter = EventFilter::new(&query)?;
    let cursor = match (last_event_id(&headers)?, since) {
        (Some(last), _) => last,
        (None, Some(since)) => since.saturating_sub(1),
        (None, None) => shared.feed.head(),
    };
    Ok(stream::stream(Follow {
        shared,
        cursor,
        filter,
        operation: None,
    })
    .into_response())
}

async fn operation_events(ctx: Ctx, headers: HeaderMap, UrlPath(id): UrlPath<String>) -> Answer {
    let shared = ctx.0;
    let start = {
        let registry = shared.registry();
        let op = registry.get(&id).ok_or_else(|| no_operation(&id))?;
        op.started_ms.map(|_| op.start_seq)
    };
    let cursor = match last_event_id(&headers)? {
        Some(last) => last,
        None => start.unwrap_or_else(|| shared.feed.head()),
    };
    let filter = EventFilter::new(&EventQuery::default())?;
    Ok(stream::stream(Follow {
        shared,
        cursor,
        filter,
        operation: Some(id),
    })
    .into_response())
}

// ------------------------------------------------------------------- reads

/// The values of repeated `name` in a query; other names are refused.
fn repeated(
    query: &[(String, String)],
    name: &str,
    allowed: &[&str],
) -> Result<Vec<String>, ApiError> {
    let mut values = Vec::new();
    for (key, value) in query {
        if key == name {
            values.push(value.clone());
        } else if !allowed.contains(&key.as_str()) {
            return Err(ApiError::invalid(format!(
                "unknown query parameter {key:?}"
            )));
        }
    }
    Ok(values)
}

async fn status(ctx: Ctx, Query(query): Query<Vec<(String, String)>>) -> Answer {
    let refs = repeated(&query, "ref", &[])?;
    let rows = blocking(&ctx.0, move |shared| {
        let rows = cairn_app::status::status(&shared.workspace, &refs)?;
        Ok(rows
            .iter()
            .map(|row| {
                serde_json::to_value(cairn_app::dto::status::StatusLine::from(row))
                    .unwrap_or(Value::Null)
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(json_answer(StatusCode::OK, json!({"partitions": rows})))
}

/// A partition ref from a URL path, checked as the command line checks it
/// (a concrete ref in a declared dimension's domain).
fn one_ref(shared: &Shared, partition: &str) -> Result<(), ApiError> {
    if partition.contains('{') {
        return Err(ApiError::invalid(format!(
            "{partition:?}: a partition ref, not a pattern"
        )));
    }
    shared.workspace.requested(&[partition.to_owned()])?;
    Ok(())
}

async fn why(ctx: Ctx, UrlPath(partition): UrlPath<String>) -> Answer {
    let line = blocking(&ctx.0, move |shared| {
        one_ref(shared, &partition)?;
        let explanation = cairn_app::status::why(&shared.workspace, &partition)?;
        Ok(
            serde_json::to_value(cairn_app::dto::status::WhyLine::from(&explanation))
                .unwrap_or(Value::Null),
        )
    })
    .await?;
    Ok(json_answer(StatusCode::OK, line))
}

async fn history(ctx: Ctx, UrlPath(partition): UrlPath<String>) -> Answer {
    let answer = blocking(&ctx.0, move |shared| {
        one_ref(shared, &partition)?;
        use cairn_app::history::History;
        Ok(
            match cairn_app::history::history(&shared.workspace, &partition)? {
                History::Source { .. } => {
                    json!({"partition": partition, "source": true, "entries": []})
                }
                History::NothingBuilt => {
                    json!({"partition": partition, "source": false, "entries": []})
                }
                History::Entries(entries) => json!({
                    "partition": partition,
                    "source": false,
                    "entries": entries
                        .iter()
                        .map(|entry| {
                            serde_json::to_value(cairn_app::dto::history::HistoryLine::new(
                                &partition, entry,
                            ))
                            .unwrap_or(Value::Null)
                        })
                        .collect::<Vec<_>>(),
                }),
            },
        )
    })
    .await?;
    Ok(json_answer(StatusCode::OK, answer))
}

async fn logs(
    ctx: Ctx,
    UrlPath(partition): UrlPath<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Answer {
    let streams = repeated(&query, "stream", &["build"])?;
    let build = match repeated(&query, "build", &["stream"])?.as_slice() {
        [] => None,
        [build] => Some(build.parse::<u64>().map_err(|_| {
            ApiError::invalid(format!("build {build:?}: expected a build id (a number)"))
        })?),
        _ => return Err(ApiError::invalid("build: give it once")),
    };
    let one = match streams.as_slice() {
        [] => None,
        [stream] if stream == "stdout" => Some(cairn_app::logs::Stream::Stdout),
        [stream] if stream == "stderr" => Some(cairn_app::logs::Stream::Stderr),
        _ => return Err(ApiError::invalid("stream: stdout or stderr")),
    };
    let (run, stdout, stderr) = blocking(&ctx.0, move |shared| {
        use cairn_app::logs::{Logs, Stream};
        use std::io::Read;
        one_ref(shared, &partition)?;
        let logs = match cairn_app::logs::logs(&shared.workspace, &partition, build)? {
            Logs::Source { .. } => {
                return Err(ApiError::not_found(format!(
                    "{partition} is a source partition: cairn never runs a job for it"
                )));
            }
            Logs::NothingBuilt | Logs::NeverRun => {
                return Err(ApiError::not_found(format!(
                    "{partition} was never run here: no job run is recorded for it"
                )));
            }
            Logs::Run(logs) => logs,
        };
        let read = |stream: Stream| -> Result<String, ApiError> {
            let Some(mut captured) = logs.open(stream)? else {
                return Ok(String::new());
            };
            let mut bytes = Vec::new();
            captured
                .read_to_end(&mut bytes)
                .map_err(|error| ApiError::from(cairn_app::logs::unreadable(stream, &error)))?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        };
        let run = &logs.run;
        let about = json!({
            "partition": partition,
            "job": run.job,
            "build": run.build,
            "key": run.key.to_string(),
            "error": run.error,
        });
        Ok((about, read(Stream::Stdout)?, read(Stream::Stderr)?))
    })
    .await?;
    Ok(match one {
        Some(cairn_app::logs::Stream::Stdout) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            stdout,
        )
            .into_response(),
        Some(cairn_app::logs::Stream::Stderr) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            stderr,
        )
            .into_response(),
        None => {
            let mut answer = run;
            answer["stdout"] = Value::String(stdout);
            answer["stderr"] = Value::String(stderr);
            json_answer(StatusCode::OK, answer)
        }
    })
}

async fn plan(ctx: Ctx, Query(query): Query<Vec<(String, String)>>) -> Answer {
    let refs = repeated(&query, "ref", &["format"])?;
    let format = query
        .iter()
        .find(|(name, _)| name == "format")
        .map_or("json", |(_, value)| value.as_str())
        .to_owned();
    if !["json", "mermaid", "dot"].contains(&format.as_str()) {
        return Err(ApiError::invalid(format!(
            "format {format:?}: json, mermaid or dot"
        )));
    }
    if refs.is_empty() {
        return Err(ApiError::invalid("ref: give the refs or patterns to plan"));
    }
    let (text, json) = blocking(&ctx.0, move |shared| {
        let planned = cairn_app::plan::plan(&shared.workspace, &refs, true)?;
        Ok(match format.as_str() {
            "mermaid" => (Some(planned.mermaid()), None),
            "dot" => (Some(planned.dot()), None),
            _ => (
                None,
                Some(serde_json::to_value(planned.json()).unwrap_or(Value::Null)),
            ),
        })
    })
    .await?;
    Ok(match (text, json) {
        (Some(text), _) => {
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
        }
        (None, json) => json_answer(StatusCode::OK, json.unwrap_or(Value::Null)),
    })
}

async fn datasets(ctx: Ctx) -> Answer {
    let graph = &ctx.0.workspace.graph;
    let datasets: Vec<Value> = grid::datasets(graph)
        .iter()
        .map(|name| match grid::shape(graph, name) {
            Ok(Some(shape)) => shape.json(),
            Ok(None) => json!({"name": name}),
            Err(error) => json!({"name": name, "error": error}),
        })
        .collect();
    Ok(json_answer(StatusCode::OK, json!({"datasets": datasets})))
}

async fn dataset_grid(ctx: Ctx, UrlPath(name): UrlPath<String>) -> Answer {
    let shared = ctx.0;
    // Before anything is kept for it: an unknown name is no entry.
    if !grid::datasets(&shared.workspace.graph).contains(&name) {
        return Err(ApiError::not_found(format!(
            "no dataset {name:?} in the graph"
        )));
    }
    // The first request since the server started: an answer an earlier
    // server kept for the store as it is now is given (and computed again
    // behind) rather than waited for.
    if shared.grids.is_new(&name) {
        let (kept_by, kept_name) = (Arc::clone(&shared), name.clone());
        if let Ok(Some((generation, body))) =
            tokio::task::spawn_blocking(move || kept_by.kept_grid(&kept_name)).await
        {
            shared.grids.adopt(&name, generation, body);
        }
    }
    let compute = shared.grid_computation(&name);
    let body = shared
        .grids
        .answer(&name, || shared.grid_generation(), compute)
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidateBody {
    refs: Vec<String>,
    reason: String,
    /// Who or what asked (recorded as `by`, with `via cairn serve`).
    #[serde(default)]
    submitted_by: Option<String>,
}

async fn invalidate(ctx: Ctx, body: Bytes) -> Answer {
    let body: InvalidateBody = parse_body(&body)?;
    if body.refs.is_empty() {
        return Err(ApiError::invalid(
            "refs: give the partitions (refs or patterns) to invalidate",
        ));
    }
    let noted = with_notes(json!({}), None, body.submitted_by.as_deref())?;
    let by = match noted.get("submitted_by").and_then(Value::as_str) {
        Some(who) => format!("{who} via cairn serve"),
        None => "cairn serve".to_owned(),
    };
    let answer = blocking(&ctx.0, move |shared| {
        // Around the append: no dry run that began before it is given
        // after it (server/src/expect.rs).
        shared.expecting.changed();
        let invalidated = cairn_app::invalidate::invalidate(
            &shared.workspace,
            &body.refs,
            &body.reason,
            Some(&by),
            false,
            true,
        )?;
        shared.expecting.changed();
        shared.feed.poke();
        let recorded = invalidated.recorded;
        Ok(json!({
            "partitions": invalidated.partitions.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
            "build": recorded.map(|r| r.build),
            "seq": recorded.map(|r| r.seq),
            "time": recorded.map(|r| crate::registry::rfc3339(r.time_ms)),
        }))
    })
    .await?;
    ctx.0.warm_grids();
    Ok(json_answer(StatusCode::OK, answer))
}

async fn store_stats(ctx: Ctx) -> Answer {
    let answer = blocking(&ctx.0, |shared| {
        let stats = cairn_app::maintenance::stats(&shared.workspace)?;
        Ok(
            serde_json::to_value(cairn_app::dto::store::StatsLine::from(stats.as_ref()))
                .unwrap_or(Value::Null),
        )
    })
    .await?;
    Ok(json_answer(StatusCode::OK, answer))
}

// ---------------------------------------------------------------- shutdown

/// Serves until SIGTERM or SIGINT, then: refuses new operations (readyz
/// 503), cancels the queued ones, lets the running ones finish for the
/// grace period, cancels those still running, waits for them to end (their
/// outcome recorded), ends the event streams and stops.
pub async fn run(
    shared: Arc<Shared>,
    options: &ServeOptions,
    listening: &mut dyn FnMut(SocketAddr),
) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: options.listen,
            source,
        })?;
    let address = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: options.listen,
        source,
    })?;
    let signals = Signals::new().map_err(ServeError::Runtime)?;
    // A local `cairn build` refused the lock says to use `--remote URL`.
    if let Some(store) = shared.workspace.held_store()
        && let Err(error) = store.record_server(&format!("http://{address}"))
    {
        tracing::warn!("cannot name the server in the store's lock file: {error}");
    }
    listening(address);
    let tailer = tokio::spawn(stream::tail(Arc::clone(&shared)));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // TCP_NODELAY: an answer or an SSE event goes out when written, not
    // held back by Nagle's algorithm waiting for the client's delayed ACK
    // of the previous segment (up to 40 ms on Linux).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {error}");
        }
    });
    let server =
        axum::serve(listener, router(Arc::clone(&shared))).with_graceful_shutdown(async move {
            let _ = stopped.await;
        });
    let server = tokio::spawn(async move { server.await });
    signals.wait().await;
    tracing::info!(
        "shutting down: no new operations; running ones have {:?}",
        shared.grace
    );
    shared.shutting_down.store(true, Ordering::SeqCst);
    drain(&shared).await;
    shared.feed.close();
    let _ = stop.send(());
    let served = server.await;
    let _ = tailer.await;
    match served {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(ServeError::Server(error)),
        Err(error) => Err(ServeError::Server(std::io::Error::other(error))),
    }
}

/// SIGTERM and SIGINT.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// Waits for the operations to end: the queued ones are cancelled at once,
/// the running ones after the grace period.
async fn drain(shared: &Arc<Shared>) {
    let unfinished = shared.registry().unfinished();
    for id in unfinished {
        let queued = shared
            .registry()
            .get(&id)
            .is_some_and(|op| op.state == State::Queued);
        if queued {
            shared.cancel(&id);
        }
    }
    let started = Instant::now();
    let mut cancelled = false;
    loop {
        let unfinished = shared.registry().unfinished();
        if unfinished.is_empty() {
            break;
        }
        if !cancelled && started.elapsed() >= shared.grace {
            tracing::info!(
                "grace period over: cancelling {} running operation(s)",
                unfinished.len()
            );
            for id in &unfinished {
                shared.cancel(id);
            }
            cancelled = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The last events reach the streams before they end.
    shared.feed.poke();
    tokio::time::sleep(Duration::from_millis(250)).await;
}
