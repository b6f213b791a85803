//! `cairn serve --plan`'s HTTP API: the routes, who may call each, the
//! JSON of requests, answers and errors, `/health` and `/metrics`. The
//! work itself is the library's and the commands' (see [`jobs`]); this
//! module parses, authorises, starts and renders. Never runs the `cairn`
//! binary, and never starts anything for a request it refuses.
//!
//! Routes (docs/openapi.json says the same precisely):
//! - `GET /health`, `GET /metrics`: no token.
//! - `GET /`, `GET /snapshots`, `GET /snapshots/{id}`, `GET /jobs`,
//!   `GET /jobs/{id}`: a read-only or operator token.
//! - `POST /snapshots`, `POST /snapshots/{id}/restore`, `POST /verify`,
//!   `POST /drill`: an operator token; each answers 202 with a job at once,
//!   or 409 while another job runs.

pub mod jobs;
mod status;

use crate::context::Context;
use crate::plan::Plan;
use crate::serve::auth::{Role, Tokens};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jobs::{Kind, Registry};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What the server knows: the plan, the context its work runs in, the
/// tokens, the jobs.
pub struct Server {
    /// The command line's context with the plan's repositories.
    pub context: Context,
    pub plan: Plan,
    pub tokens: Tokens,
    pub jobs: Registry,
    /// `cairn drill`'s history file (the config directory's).
    pub drill_history: PathBuf,
    /// The verify jobs' history (the config directory's
    /// `verify-history.jsonl`).
    pub verify_history: PathBuf,
    /// `/health` fails once a component's newest snapshot is older.
    pub max_age: Duration,
}

/// `[serve] max_age` when the plan says none: a nightly backup with two
/// hours' slack.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(26 * 3600);

pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/", get(status::page))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/snapshots", get(list_snapshots).post(create_snapshot))
        .route("/snapshots/{id}", get(show_snapshot))
        .route("/snapshots/{id}/restore", post(restore_snapshot))
        .route("/verify", post(start_verify))
        .route("/drill", post(start_drill))
        .route("/jobs", get(list_jobs))
        .route("/jobs/{id}", get(show_job))
        .fallback(not_found)
        .with_state(server)
}

/// An error answer: `{"error": {"code": ..., "message": ...}}`.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request((code, message): (&'static str, String)) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A failure of the work behind a read: a snapshot that does not
    /// exist is 404, an unreachable or unreadable repository 503.
    fn from_store(error: anyhow::Error) -> Self {
        use cairn_store::StoreError;
        let found = error
            .chain()
            .find_map(|cause| cause.downcast_ref::<StoreError>());
        let (status, code) = match found {
            Some(StoreError::SnapshotNotFound(_)) => (StatusCode::NOT_FOUND, "snapshot-not-found"),
            Some(StoreError::AmbiguousSnapshot { .. }) => {
                (StatusCode::BAD_REQUEST, "ambiguous-snapshot")
            }
            Some(StoreError::ComponentNotFound { .. }) => {
                (StatusCode::NOT_FOUND, "component-not-found")
            }
            _ => (StatusCode::SERVICE_UNAVAILABLE, "repository-error"),
        };
        ApiError::new(status, code, format!("{error:#}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

type ApiResult = Result<Response, ApiError>;

/// Lets a request through if it carries a token of at least `needed`:
/// `Authorization: Bearer TOKEN`, or (for a browser opening the status
/// page) `?token=TOKEN`.
fn authorize(
    server: &Server,
    headers: &HeaderMap,
    query_token: Option<&str>,
    needed: Role,
) -> Result<Role, ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .or(query_token);
    let Some(presented) = presented else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a bearer token is needed (Authorization: Bearer TOKEN)",
        ));
    };
    let Some(role) = server.tokens.role_of(presented) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "the token is not known to this server",
        ));
    };
    if role < needed {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this needs an {} token; the token given is {}",
                needed.name(),
                role.name()
            ),
        ));
    }
    Ok(role)
}

/// Runs blocking repository work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request's work panicked (see the server's log)",
        )
    })?
}

/// A JSON request body; an empty body is the request's defaults.
fn parse_body<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "bad-json", error.to_string()))
}

/// 202 with the job's id and where to follow it.
fn accepted(id: &str, kind: Kind) -> Response {
    let url = format!("/jobs/{id}");
    let mut response = (
        StatusCode::ACCEPTED,
        axum::Json(json!({"job": id, "kind": kind, "status": "running", "url": url})),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Registers a job of `kind` and starts `work` for it, or answers 409.
fn start_job(
    server: Arc<Server>,
    kind: Kind,
    request: Value,
    work: impl FnOnce(&Server) -> anyhow::Result<jobs::Finished> + Send + 'static,
) -> ApiResult {
    let id = server.jobs.start(kind, request).map_err(|busy| {
        ApiError::new(
            StatusCode::CONFLICT,
            "busy",
            format!(
                "{} job {} is running; one job runs at a time (GET /jobs/{} says when it ends)",
                busy.kind.name(),
                busy.running,
                busy.running
            ),
        )
    })?;
    jobs::spawn(server, id.clone(), work);
    Ok(accepted(&id, kind))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such route")
}

#[derive(serde::Deserialize, Default)]
struct TokenQuery {
    token: Option<String>,
}

// ---- snapshots -------------------------------------------------------

/// `GET /snapshots` filters, as `snapshots` shows them.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SnapshotFilter {
    component: Option<String>,
    tag: Option<String>,
    host: Option<String>,
}

async fn list_snapshots(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    query: Result<Query<SnapshotFilter>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    authorize(&server, &headers, None, Role::ReadOnly)?;
    let Query(filter) = query.map_err(|rejection| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-query", rejection.body_text())
    })?;
    let listed = blocking(move || {
        let repository = server
            .context
            .open_repository()
            .map_err(ApiError::from_store)?;
        let trusted = server
            .context
            .trusted_keys_or_none(&repository)
            .map_err(ApiError::from_store)?;
        let (snapshots, broken) =
            cairn_store::ops::listing::list_snapshots(&repository, &trusted)
                .map_err(|error| ApiError::from_store(error.into()))?;
        // Tags as they stand now: a trusted `cairn tag` annotation's, else
        // the manifest's.
        let annotations = cairn_store::ops::annotate::read_annotations(&repository, &trusted)
            .map_err(|error| ApiError::from_store(error.into()))?;
        let listed: Vec<Value> = snapshots
            .iter()
            .filter(|snapshot| {
                let body = &snapshot.body;
                let tags = annotations.effective(&snapshot.id, body).tags;
                filter
                    .component
                    .as_ref()
                    .is_none_or(|name| body.components.iter().any(|c| &c.name == name))
                    && filter.tag.as_ref().is_none_or(|tag| tags.contains(tag))
                    && filter.host.as_ref().is_none_or(|host| &body.host == host)
            })
            .map(|snapshot| crate::commands::snapshots::snapshot_json(snapshot, &annotations))
            .collect();
        Ok(json!({
            "snapshots": listed,
            "unreadable": broken.iter().map(|(id, error)| json!({"id": id.to_hex(), "error": error})).collect::<Vec<_>>(),
            "encrypted": repository.is_encrypted(),
        }))
    })
    .await?;
    Ok(axum::Json(listed).into_response())
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PathQuery {
    /// `COMPONENT` or `COMPONENT/PATH`, as `ls` takes it.
    path: Option<String>,
}

async fn show_snapshot(
    State(server): State<Arc<Server>>,
    Path(spec): Path<String>,
    headers: HeaderMap,
    query: Result<Query<PathQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    authorize(&server, &headers, None, Role::ReadOnly)?;
    let Query(query) = query.map_err(|rejection| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-query", rejection.body_text())
    })?;
    let shown = blocking(move || {
        let context = &server.context;
        let repository = context.open_repository().map_err(ApiError::from_store)?;
        repository
            .require_read_key("the snapshot listed")
            .map_err(|error| ApiError::from_store(error.into()))?;
        let (id, body) =
            crate::commands::verified_snapshot(context, &repository, &spec, &Default::default())
                .map_err(ApiError::from_store)?;
        let opened = context
            .open_index(&repository)
            .map_err(ApiError::from_store)?;
        let entries = cairn_store::ops::listing::list_entries(
            &repository,
            opened.index.as_ref(),
            &body,
            &id.short(),
            query.path.as_deref(),
        )
        .map_err(|error| ApiError::from_store(error.into()))?;
        Ok(json!({
            "id": id.to_hex(),
            "manifest_hash": id.to_hex(),
            "time": body.time,
            "host": body.host,
            "tags": body.tags,
            "labels": body.labels,
            "parent": body.parent.map(|id| id.to_hex()),
            "complete": body.problems.is_empty(),
            "problems": body.problems,
            "components": crate::commands::backup::summarise_components(&body),
            "entries": entries.iter().map(crate::commands::ls::entry_json).collect::<Vec<_>>(),
        }))
    })
    .await?;
    Ok(axum::Json(shown).into_response())
}

async fn create_snapshot(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    authorize(&server, &headers, None, Role::Operator)?;
    let request: jobs::BackupRequest = parse_body(&body)?;
    request.check(&server).map_err(ApiError::bad_request)?;
    let echo = serde_json::to_value(&request).unwrap_or(Value::Null);
    start_job(server, Kind::Backup, echo, move |server| {
        jobs::backup(server, &request)
    })
}

async fn restore_snapshot(
    State(server): State<Arc<Server>>,
    Path(spec): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    authorize(&server, &headers, None, Role::Operator)?;
    let request: jobs::RestoreBody = parse_body(&body)?;
    request.check().map_err(ApiError::bad_request)?;
    let mut echo = serde_json::to_value(&request).unwrap_or(Value::Null);
    echo["snapshot"] = Value::String(spec.clone());
    start_job(server, Kind::Restore, echo, move |server| {
        jobs::restore(server, &spec, &request)
    })
}

async fn start_verify(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    authorize(&server, &headers, None, Role::Operator)?;
    let request: jobs::VerifyBody = parse_body(&body)?;
    request.check().map_err(ApiError::bad_request)?;
    let echo = serde_json::to_value(&request).unwrap_or(Value::Null);
    start_job(server, Kind::Verify, echo, move |server| {
        jobs::verify(server, &request)
    })
}

async fn start_drill(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    authorize(&server, &headers, None, Role::Operator)?;
    let request: jobs::DrillBody = parse_body(&body)?;
    let echo = serde_json::to_value(&request).unwrap_or(Value::Null);
    start_job(server, Kind::Drill, echo, move |server| {
        jobs::drill(server, &request)
    })
}

// ---- jobs ------------------------------------------------------------

async fn list_jobs(State(server): State<Arc<Server>>, headers: HeaderMap) -> ApiResult {
    authorize(&server, &headers, None, Role::ReadOnly)?;
    Ok(axum::Json(json!({"jobs": server.jobs.list()})).into_response())
}

async fn show_job(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    authorize(&server, &headers, None, Role::ReadOnly)?;
    let job = server.jobs.get(&id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "job-not-found",
            format!("no job {id:?} (jobs are kept in memory until the server restarts)"),
        )
    })?;
    Ok(axum::Json(job).into_response())
}

// ---- health and metrics ----------------------------------------------

/// What `/health`, `/metrics` and the status page say about the plan's
/// repository.
pub struct Health {
    pub reasons: Vec<String>,
    pub reachable: bool,
    /// Each plan component's newest trusted snapshot time (RFC 3339).
    pub newest: BTreeMap<String, Option<String>>,
    pub snapshots: Vec<cairn_store::ops::listing::SnapshotSummary>,
    pub last_verify: Option<Value>,
    pub last_drill: Option<Value>,
}

impl Health {
    pub fn ok(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// Reads the repository's snapshots and the histories and decides.
pub fn assess(server: &Server) -> Health {
    let mut reasons = Vec::new();
    let listed = server.context.open_repository().and_then(|repository| {
        let trusted = server.context.trusted_keys_or_none(&repository)?;
        Ok(cairn_store::ops::listing::list_snapshots(&repository, &trusted)?.0)
    });
    let (reachable, snapshots) = match listed {
        Ok(snapshots) => (true, snapshots),
        Err(error) => {
            reasons.push(format!("repository unreachable: {error:#}"));
            (false, Vec::new())
        }
    };
    let now = jiff::Timestamp::now();
    let mut newest = BTreeMap::new();
    for component in &server.plan.components {
        let name = &component.name;
        let time = snapshots
            .iter()
            .filter(|snapshot| snapshot.trusted.is_ok())
            .filter(|snapshot| snapshot.body.components.iter().any(|c| &c.name == name))
            .filter_map(|snapshot| snapshot.body.time.parse::<jiff::Timestamp>().ok())
            .max();
        if reachable {
            match time {
                None => reasons.push(format!("component {name}: no trusted snapshot yet")),
                Some(time) => {
                    let age = now.duration_since(time).as_secs().max(0).unsigned_abs();
                    if age > server.max_age.as_secs() {
                        reasons.push(format!(
                            "component {name}: the newest snapshot ({time}) is {age} s old, older than max_age ({} s)",
                            server.max_age.as_secs()
                        ));
                    }
                }
            }
        }
        newest.insert(name.clone(), time.map(|time| time.to_string()));
    }
    let last_verify = jobs::read_history(&server.verify_history).pop();
    if let Some(record) = &last_verify
        && record["ok"] == Value::Bool(false)
    {
        reasons.push(format!(
            "the last verify ({}) found damage",
            record["time"].as_str().unwrap_or("?")
        ));
    }
    let last_drill = jobs::read_history(&server.drill_history).pop();
    if let Some(record) = &last_drill
        && record["ok"] == Value::Bool(false)
    {
        reasons.push(format!(
            "the last drill ({}) failed",
            record["time"].as_str().unwrap_or("?")
        ));
    }
    Health {
        reasons,
        reachable,
        newest,
        snapshots,
        last_verify,
        last_drill,
    }
}

async fn health(State(server): State<Arc<Server>>) -> ApiResult {
    let health = blocking(move || Ok(assess(&server))).await?;
    let status = if health.ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((
        status,
        axum::Json(json!({
            "status": if health.ok() { "ok" } else { "failing" },
            "reasons": health.reasons,
            "repository_reachable": health.reachable,
            "newest_snapshot": health.newest,
            "last_verify_ok": health.last_verify.as_ref().map(|record| record["ok"].clone()),
            "last_drill_ok": health.last_drill.as_ref().map(|record| record["ok"].clone()),
        })),
    )
        .into_response())
}

async fn metrics(State(server): State<Arc<Server>>) -> ApiResult {
    let text = blocking(move || {
        let health = assess(&server);
        let mut metrics = crate::metrics::Metrics::default();
        metrics.gauge(
            "repository_up",
            "1 if the plan's repository could be read, else 0.",
            &[],
            if health.reachable { 1.0 } else { 0.0 },
        );
        metrics.gauge(
            "health_ok",
            "1 if /health answers 200, else 0.",
            &[],
            if health.ok() { 1.0 } else { 0.0 },
        );
        metrics.gauge(
            "snapshots",
            "Snapshots in the repository (trusted or not).",
            &[],
            health.snapshots.len() as f64,
        );
        for (name, time) in &health.newest {
            if let Some(seconds) = time
                .as_deref()
                .and_then(|time| time.parse::<jiff::Timestamp>().ok())
                .map(|time| time.as_second() as f64)
            {
                metrics.gauge(
                    "newest_snapshot_timestamp_seconds",
                    "When each plan component's newest trusted snapshot was taken.",
                    &[("component", name)],
                    seconds,
                );
            }
        }
        for (kind, record) in [
            ("verify", &health.last_verify),
            ("drill", &health.last_drill),
        ] {
            if let Some(record) = record {
                metrics.gauge(
                    "last_check_ok",
                    "1 if the last verify or drill in its history passed, else 0.",
                    &[("kind", kind)],
                    if record["ok"] == Value::Bool(true) {
                        1.0
                    } else {
                        0.0
                    },
                );
            }
        }
        let mut text = metrics.text().to_string();
        text.push_str(&server.jobs.metrics_text());
        Ok(text)
    })
    .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}
