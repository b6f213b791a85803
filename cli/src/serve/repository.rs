//! `cairn serve --repo PATH [--append-only]`: serves a local repository to
//! clients that open it as `--repo http(s)://HOST:PORT/NAME`
//! (`cairn_store::backend::HttpBackend`; the protocol is FORMAT.md 18).
//!
//! Owns the listener (TCP, or TLS through rustls when a certificate is
//! given), authenticating each request by its signature before reading
//! its body (`format::request_auth`, against the keys this server was
//! told to trust), and mapping each request onto the local backend. With
//! `--append-only` only `--allow-prune-key` keys may delete; a create never
//! replaces an object (create-if-absent; other bytes under a taken name
//! are refused with 409 and the object keeps its own).
//!
//! Must never act on a request before its signature checked out, never
//! delete for a key that is not allowed to, and never read more of a body
//! than the largest object allows.

use crate::args::ServeArgs;
use crate::context::Context;
use anyhow::{Context as _, Result, bail};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_store::StoreError;
use cairn_store::backend::http::{
    ERROR_EXISTS_DIFFERENT, ERROR_FORBIDDEN, ERROR_INVALID, ERROR_MISSING, ERROR_PAST_END,
    ERROR_TOO_LARGE, ERROR_UNAUTHENTICATED, HEADER_ERROR, HEADER_OBJECT_SIZE, kind_from_segment,
    listing_line, valid_repository_name,
};
use cairn_store::backend::{Backend, Created, LocalBackend, ObjectKind};
use cairn_store::format::keys::PublicKey;
use cairn_store::format::request_auth::{AuthFailure, ReplayGuard, RequestParts, parse_headers};
use cairn_store::keystore::{TrustStore, parse_public_key_argument};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The largest body a create accepts: the largest object a repository
/// holds is a pack, 16 MiB by default and at most 1 GiB by its header's
/// bounds.
const MAX_BODY_SIZE: usize = 1 << 30;

struct Server {
    backend: Arc<LocalBackend>,
    name: String,
    /// Keys whose signed requests are served.
    trusted: Vec<PublicKey>,
    /// Keys that may delete; every trusted key without --append-only.
    deleters: Option<Vec<PublicKey>>,
    guard: ReplayGuard,
}

pub fn run(context: &Context, args: &ServeArgs) -> Result<u8> {
    let location = context.repository_location()?;
    if cairn_store::backend::is_served(location) || crate::context::is_s3(location) {
        bail!("cairn serve serves a local directory; --repo {location} is not one");
    }
    let root = Path::new(location);
    // The repository's id names this machine's list of keys trusted for
    // it. A directory with no repository yet is served too (to the
    // --trusted-key keys alone), so that a client can make one there.
    let repository_id = match cairn_store::Repository::open(Arc::new(LocalBackend::new(root))) {
        Ok(repository) => Some(*repository.id()),
        Err(StoreError::NotARepository { .. }) => None,
        Err(error) => {
            return Err(error).with_context(|| format!("opening repository {location}"));
        }
    };
    let name = match &args.name {
        Some(name) => name.clone(),
        None => root
            .canonicalize()
            .unwrap_or_else(|_| root.to_path_buf())
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    if !valid_repository_name(&name) {
        bail!(
            "--name {name:?}: a served repository's name is 1 to 64 letters, digits, `-` or `_` (give --name NAME when the directory's name is not one)"
        );
    }
    let parse = |flag: &str, arguments: &[String]| -> Result<Vec<PublicKey>> {
        arguments
            .iter()
            .map(|argument| {
                parse_public_key_argument(argument).with_context(|| format!("{flag} {argument}"))
            })
            .collect()
    };
    let prune_keys = parse("--allow-prune-key", &args.allow_prune_keys)?;
    if !args.append_only && !prune_keys.is_empty() {
        bail!("--allow-prune-key is for --append-only (without it every trusted key may delete)");
    }
    let mut trusted = parse("--trusted-key", &context.global.trusted_keys)?;
    let mut pinned = Vec::new();
    if let Some(id) = &repository_id {
        pinned = TrustStore::new(&context.config_dir()?, id)
            .trusted_keys()?
            .keys;
    }
    for key in pinned.into_iter().chain(prune_keys.clone()) {
        if !trusted.contains(&key) {
            trusted.push(key);
        }
    }
    if trusted.is_empty() {
        bail!(
            "no key is trusted to use repository {location}: give --trusted-key HEX for each client (or pin them on this machine with `cairn --repo {location} trust HEX`)"
        );
    }
    let backend = Arc::new(LocalBackend::new(root));
    let removed = backend.remove_stale_temporaries()?;
    if removed > 0 {
        eprintln!("cairn serve: removed {removed} stale temporary file(s)");
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(super::tls::acceptor(cert, key)?),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    let server = Arc::new(Server {
        backend,
        name: name.clone(),
        trusted,
        deleters: args.append_only.then_some(prune_keys),
        guard: ReplayGuard::default(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cairn-serve")
        .build()
        .context("starting the server's runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("--listen {}: cannot listen there", args.listen))?;
        let address: SocketAddr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        // One line that says where, first on stdout: scripts (and the
        // tests) read the port from it when --listen asked for port 0.
        println!(
            "cairn serve: repository {location} at {scheme}://{address}/{name}{}",
            if args.append_only {
                " (append-only)"
            } else {
                ""
            }
        );
        let router = Router::new().fallback(handle).with_state(server);
        match tls {
            Some(acceptor) => {
                axum::serve(super::tls::TlsListener::new(listener, acceptor), router).await
            }
            None => axum::serve(listener, router).await,
        }
        .context("serving")
    })?;
    Ok(crate::exit::SUCCESS)
}

/// A refusal: a status, a `cairn-error` code and a reason as the body.
fn refuse(status: StatusCode, code: &str, reason: impl Into<String>) -> Response {
    let mut response = (status, format!("{}\n", reason.into())).into_response();
    if let Ok(value) = HeaderValue::from_str(code) {
        response.headers_mut().insert(HEADER_ERROR, value);
    }
    response
}

/// A refusal that gives the object's size too.
fn refuse_with_size(status: StatusCode, code: &str, reason: String, size: u64) -> Response {
    let mut response = refuse(status, code, reason);
    response
        .headers_mut()
        .insert(HEADER_OBJECT_SIZE, HeaderValue::from(size));
    response
}

fn store_failure(error: StoreError) -> Response {
    match error {
        StoreError::Missing { .. } => {
            refuse(StatusCode::NOT_FOUND, ERROR_MISSING, error.to_string())
        }
        StoreError::Invalid(_) => refuse(StatusCode::BAD_REQUEST, ERROR_INVALID, error.to_string()),
        // Reasons stay on the server's side: a path there is no client's
        // business.
        other => {
            eprintln!("cairn serve: error: {other}");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server",
                "the server could not carry out the request (see its log)",
            )
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0)
}

/// What a request's query asks of a read.
enum ReadQuery {
    Whole { limit: u64 },
    Range { offset: u64, length: u64 },
}

fn parse_read_query(query: &str) -> Option<ReadQuery> {
    let mut fields = query.split('&').map(|field| field.split_once('='));
    match (fields.next(), fields.next(), fields.next()) {
        (Some(Some(("limit", limit))), None, None) => Some(ReadQuery::Whole {
            limit: limit.parse().ok()?,
        }),
        (Some(Some(("offset", offset))), Some(Some(("length", length))), None) => {
            Some(ReadQuery::Range {
                offset: offset.parse().ok()?,
                length: length.parse().ok()?,
            })
        }
        _ => None,
    }
}

/// Every request: authenticate from the headers, then route by method and
/// path (`/NAME/KIND` lists, `/NAME/KIND/OBJECT` reads, creates, deletes).
async fn handle(State(server): State<Arc<Server>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let signed = parse_headers(|name| {
        parts
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
    });
    let (signature, body_hash) = match signed {
        Ok(signed) => signed,
        Err(failure) => return unauthenticated(&method, &path, None, failure),
    };
    let request_parts = RequestParts {
        method: method.as_str(),
        path: &path,
        query: &query,
        body_hash,
    };
    let signer = match server
        .guard
        .verify(&request_parts, &signature, &server.trusted, now())
    {
        Ok(signer) => signer,
        Err(failure) => return unauthenticated(&method, &path, Some(&signature.signer), failure),
    };

    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (kind, object) = match segments.as_slice() {
        [name, kind] if *name == server.name => (kind_from_segment(kind), None),
        [name, kind, object] if *name == server.name => (kind_from_segment(kind), Some(*object)),
        _ => {
            return refuse(
                StatusCode::NOT_FOUND,
                ERROR_INVALID,
                format!(
                    "no such path: {path} (this server serves /{}/KIND/OBJECT)",
                    server.name
                ),
            );
        }
    };
    let Some(kind) = kind else {
        return refuse(
            StatusCode::NOT_FOUND,
            ERROR_INVALID,
            format!("no such kind of object in {path}"),
        );
    };
    match (method, object) {
        (Method::GET, None) => blocking(move || list(&server, kind)).await,
        (Method::GET, Some(object)) => {
            let Some(read) = parse_read_query(&query) else {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    ERROR_INVALID,
                    "a read asks ?limit=N or ?offset=N&length=N",
                );
            };
            let object = object.to_string();
            blocking(move || read_object(&server, kind, &object, read)).await
        }
        (Method::PUT, Some(object)) => {
            let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_SIZE).await else {
                return refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ERROR_INVALID,
                    format!("the body could not be read whole (at most {MAX_BODY_SIZE} bytes)"),
                );
            };
            if *blake3::hash(&bytes).as_bytes() != body_hash {
                return unauthenticated(
                    &Method::PUT,
                    &path,
                    Some(&signer),
                    AuthFailure::BodyMismatch,
                );
            }
            let object = object.to_string();
            blocking(move || create(&server, kind, &object, &bytes)).await
        }
        (Method::DELETE, Some(object)) => {
            if let Some(deleters) = &server.deleters
                && !deleters.contains(&signer)
            {
                eprintln!(
                    "cairn serve: refused DELETE {path} by key {}: append-only",
                    signer.to_hex()
                );
                return refuse(
                    StatusCode::FORBIDDEN,
                    ERROR_FORBIDDEN,
                    format!(
                        "this server is append-only: key {} may not delete (only an --allow-prune-key key may)",
                        signer.to_hex()
                    ),
                );
            }
            let object = object.to_string();
            blocking(move || match server.backend.delete(kind, &object) {
                Ok(()) => StatusCode::NO_CONTENT.into_response(),
                Err(error) => store_failure(error),
            })
            .await
        }
        (method, _) => refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            ERROR_INVALID,
            format!("{method} {path} is not a request this server answers"),
        ),
    }
}

fn unauthenticated(
    method: &Method,
    path: &str,
    signer: Option<&PublicKey>,
    failure: AuthFailure,
) -> Response {
    let by = signer
        .map(|key| format!(" by key {}", key.to_hex()))
        .unwrap_or_default();
    eprintln!("cairn serve: refused {method} {path}{by}: {failure}");
    let status = match failure {
        AuthFailure::Busy => StatusCode::SERVICE_UNAVAILABLE,
        AuthFailure::BodyMismatch => StatusCode::BAD_REQUEST,
        _ => StatusCode::UNAUTHORIZED,
    };
    refuse(status, ERROR_UNAUTHENTICATED, failure.to_string())
}

/// Runs backend work on tokio's blocking threads: the local backend
/// reads, writes and fsyncs synchronously.
async fn blocking(work: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|_| {
        refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server",
            "the request's work failed",
        )
    })
}

fn list(server: &Server, kind: ObjectKind) -> Response {
    match server.backend.list(kind) {
        Ok(objects) => objects
            .iter()
            .map(listing_line)
            .collect::<String>()
            .into_response(),
        Err(error) => store_failure(error),
    }
}

fn read_object(server: &Server, kind: ObjectKind, object: &str, read: ReadQuery) -> Response {
    let size = match server.backend.size(kind, object) {
        Ok(size) => size,
        Err(error) => return store_failure(error),
    };
    let what = format!("{} {object}", kind.label());
    let bytes = match read {
        ReadQuery::Whole { limit } if size > limit => {
            return refuse_with_size(
                StatusCode::PAYLOAD_TOO_LARGE,
                ERROR_TOO_LARGE,
                format!("{what} is {size} bytes, more than the {limit} asked for"),
                size,
            );
        }
        ReadQuery::Whole { limit } => server.backend.read(kind, object, limit),
        ReadQuery::Range { offset, length }
            if offset.checked_add(length).is_none_or(|end| end > size) =>
        {
            return refuse_with_size(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ERROR_PAST_END,
                format!("range {offset}+{length} lies past the end of {what} ({size} bytes)"),
                size,
            );
        }
        ReadQuery::Range { offset, length } => {
            server.backend.read_range(kind, object, offset, length)
        }
    };
    match bytes {
        Ok(bytes) => Body::from(bytes).into_response(),
        Err(error) => store_failure(error),
    }
}

fn create(server: &Server, kind: ObjectKind, object: &str, bytes: &[u8]) -> Response {
    match server.backend.create(kind, object, bytes) {
        Ok(Created::New) => StatusCode::CREATED.into_response(),
        Ok(Created::AlreadyExisted) => {
            // Same bytes: a retry, fine. Other bytes: refused, and the
            // object keeps its own (never an overwrite).
            let same = server
                .backend
                .read(kind, object, bytes.len() as u64)
                .is_ok_and(|existing| existing == bytes);
            if same {
                StatusCode::OK.into_response()
            } else {
                eprintln!(
                    "cairn serve: refused to replace {} {object} with other bytes",
                    kind.label()
                );
                refuse(
                    StatusCode::CONFLICT,
                    ERROR_EXISTS_DIFFERENT,
                    format!(
                        "{} {object} exists with other bytes; it is kept as it is",
                        kind.label()
                    ),
                )
            }
        }
        Err(error) => store_failure(error),
    }
}
