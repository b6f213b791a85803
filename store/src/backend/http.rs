//! [`HttpBackend`]: a repository served by `cairn serve --repo` over HTTP or
//! HTTPS, at `http(s)://HOST:PORT/NAME`.
//!
//! Owns the wire protocol both sides share (FORMAT.md 18.1: the paths,
//! status codes, the `cairn-error` codes and the listing's lines), signing
//! every request with the client's cairn key (`format::request_auth`),
//! bounding every response before allocating for it, and retrying what a
//! network loses (a request without a body whose connection goes silent
//! for the idle-read timeout counts as lost). Never trusts a response's
//! length without checking it against what was asked, and never turns a
//! refusal into success: a delete the server refuses (append-only) is an
//! error naming the object.
//!
//! The `Backend` trait is synchronous; like the S3 backend this one owns a
//! small tokio runtime and blocks on it, one request per calling thread.

use super::{Backend, Created, ObjectInfo, ObjectKind, check_name, missing, past_end, too_large};
use crate::error::{Result, StoreError};
use crate::format::keys::SigningKey;
use crate::format::request_auth::{RequestParts, sign_request};
use std::io::ErrorKind;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Requests a caller may keep in flight: a server on another machine is a
/// round trip away, as S3 is.
pub const HTTP_PARALLELISM: usize = 4;
/// Header naming why a request failed, one of the `ERROR_*` codes.
pub const HEADER_ERROR: &str = "cairn-error";
/// Header giving an object's whole size with `too-large` and `past-end`.
pub const HEADER_OBJECT_SIZE: &str = "cairn-object-size";
pub const ERROR_MISSING: &str = "missing";
pub const ERROR_TOO_LARGE: &str = "too-large";
pub const ERROR_PAST_END: &str = "past-end";
/// A create found the name holding other bytes; they are kept.
pub const ERROR_EXISTS_DIFFERENT: &str = "exists-different";
pub const ERROR_UNAUTHENTICATED: &str = "unauthenticated";
pub const ERROR_FORBIDDEN: &str = "forbidden";
pub const ERROR_INVALID: &str = "invalid";
/// The largest listing read: at about 100 bytes a line, ten million objects.
pub const MAX_LISTING_SIZE: u64 = 1 << 30;
/// The largest reason read from an error response.
const MAX_REASON_SIZE: u64 = 4 << 10;
/// Attempts of one request before its failure is returned.
const ATTEMPTS: u32 = 6;

/// The path segment of each kind (FORMAT.md 18.1).
pub fn kind_segment(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Config => "config",
        ObjectKind::Key => "keys",
        ObjectKind::Pack => "data",
        ObjectKind::Index => "index",
        ObjectKind::Snapshot => "snapshots",
        ObjectKind::Forget => "forgotten",
        ObjectKind::Deletion => "deletions",
        ObjectKind::KeySlot => "keyslots",
        ObjectKind::Keyring => "keyring",
        ObjectKind::Annotation => "annotations",
    }
}

/// The kind a path segment names, if any.
pub fn kind_from_segment(segment: &str) -> Option<ObjectKind> {
    [
        ObjectKind::Config,
        ObjectKind::Key,
        ObjectKind::Pack,
        ObjectKind::Index,
        ObjectKind::Snapshot,
        ObjectKind::Forget,
        ObjectKind::Deletion,
        ObjectKind::KeySlot,
        ObjectKind::Keyring,
        ObjectKind::Annotation,
    ]
    .into_iter()
    .find(|kind| kind_segment(*kind) == segment)
}

/// A repository name on a server: what `cairn serve --name` accepts and
/// the last part of `http(s)://HOST:PORT/NAME`.
pub fn valid_repository_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// One line of a listing: `NAME SIZE MODIFIED`, the time in nanoseconds
/// since the Unix epoch or `-` if unknown.
pub fn listing_line(object: &ObjectInfo) -> String {
    let modified = object
        .modified
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map(|since| since.as_nanos().to_string())
        .unwrap_or_else(|| "-".into());
    format!("{} {} {modified}\n", object.name, object.size)
}

/// How to reach a server beyond its URL.
#[derive(Clone, Debug, Default)]
pub struct HttpOptions {
    /// PEM certificates trusted for HTTPS beside the system's roots (a
    /// server with its own certificate authority or a self-signed one).
    pub extra_root_certificates: Option<Vec<u8>>,
    /// How long a request that sends no body may go without a byte coming
    /// in before that attempt is given up; `super::DEFAULT_READ_TIMEOUT`
    /// when `None`.
    pub read_timeout: Option<Duration>,
}

pub struct HttpBackend {
    /// For requests that send a body (creates).
    client: reqwest::Client,
    /// For requests that send none (reads, listings, deletes), with the
    /// idle-read timeout: a response that goes silent fails that attempt,
    /// which is retried as a lost connection is. Apart from `client`
    /// because reqwest's read timer also runs while a request's body goes
    /// up, and would cut a slow upload.
    reader: reqwest::Client,
    read_timeout: Duration,
    runtime: tokio::runtime::Runtime,
    /// `http(s)://HOST:PORT`, without a trailing `/`.
    origin: String,
    /// The repository's name on the server.
    name: String,
    key: SigningKey,
}

/// What one attempt came to: an answer, or a failure worth retrying.
enum Attempt<T> {
    Done(Result<T>),
    Retry(StoreError),
}

impl HttpBackend {
    /// A backend for `url` (`http://HOST:PORT/NAME` or `https://…`) that
    /// signs its requests with `key`. Sends no request.
    pub fn open(url: &str, key: SigningKey, options: &HttpOptions) -> Result<HttpBackend> {
        let invalid = |reason: &str| StoreError::Invalid(format!("repository {url:?}: {reason}"));
        let (scheme, rest) = url
            .split_once("://")
            .filter(|(scheme, _)| *scheme == "http" || *scheme == "https")
            .ok_or_else(|| invalid("a served repository is written http(s)://HOST:PORT/NAME"))?;
        let (authority, name) = rest
            .trim_end_matches('/')
            .split_once('/')
            .ok_or_else(|| invalid("the URL names no repository (http(s)://HOST:PORT/NAME)"))?;
        if authority.is_empty() || authority.contains(['@', '?', '#']) {
            return Err(invalid("the host must be HOST or HOST:PORT"));
        }
        if !valid_repository_name(name) {
            return Err(invalid(
                "the repository name must be 1 to 64 letters, digits, `-` or `_`",
            ));
        }
        super::s3::install_tls_provider();
        let certificates = match &options.extra_root_certificates {
            Some(pem) => Some(
                reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|error| invalid(&format!("the extra root certificates: {error}")))?,
            ),
            None => None,
        };
        let read_timeout = options.read_timeout.unwrap_or(super::DEFAULT_READ_TIMEOUT);
        let build = |read_timeout: Option<Duration>| {
            let mut builder = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .timeout(super::REQUEST_TIMEOUT)
                .pool_max_idle_per_host(HTTP_PARALLELISM);
            if let Some(certificates) = &certificates {
                builder = builder.tls_certs_merge(certificates.clone());
            }
            if let Some(read_timeout) = read_timeout {
                builder = builder.read_timeout(read_timeout);
            }
            builder
                .build()
                .map_err(|error| invalid(&format!("cannot set up the HTTP client: {error}")))
        };
        let client = build(None)?;
        let reader = build(Some(read_timeout))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-http")
            // A write to a connection the service closed must fail, not
            // end the process (see `crate::os::sigpipe`).
            .on_thread_start(crate::os::sigpipe::block_on_this_thread)
            .enable_all()
            .build()
            .map_err(|error| StoreError::io("starting the HTTP client's runtime", error))?;
        Ok(HttpBackend {
            client,
            reader,
            read_timeout,
            runtime,
            origin: format!("{scheme}://{authority}"),
            name: name.to_string(),
            key,
        })
    }

    fn object_path(&self, kind: ObjectKind, name: &str) -> String {
        format!("/{}/{}/{name}", self.name, kind_segment(kind))
    }

    /// Sends one signed request, retrying transient failures (no answer,
    /// a 5xx) with a fresh signature each time, and hands the response
    /// to `handle`, which decides what it means.
    fn request<T>(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &str,
        body: &[u8],
        what: &str,
        handle: impl AsyncFn(reqwest::Response) -> Attempt<T>,
    ) -> Result<T> {
        let body_hash = *blake3::hash(body).as_bytes();
        let url = match query {
            "" => format!("{}{path}", self.origin),
            query => format!("{}{path}?{query}", self.origin),
        };
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let parts = RequestParts {
                method: method.as_str(),
                path,
                query,
                body_hash,
            };
            let time = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|since| since.as_secs())
                .unwrap_or(0);
            let nonce = crate::os::random::random_bytes::<16>()?;
            let client = match body.is_empty() {
                true => &self.reader,
                false => &self.client,
            };
            let mut request = client.request(method.clone(), &url);
            for (header, value) in sign_request(&self.key, &parts, time, nonce) {
                request = request.header(header, value);
            }
            if !body.is_empty() {
                request = request.body(body.to_vec());
            }
            let outcome = self.runtime.block_on(async {
                match request.send().await {
                    Ok(response) if response.status().is_server_error() => {
                        let status = response.status();
                        let reason = reason(response).await;
                        Attempt::Retry(self.failure(
                            what,
                            ErrorKind::Other,
                            &format!("{status}: {reason}"),
                        ))
                    }
                    Ok(response) => handle(response).await,
                    Err(error) if error.is_timeout() => Attempt::Retry(self.failure(
                        what,
                        ErrorKind::TimedOut,
                        &self.timed_out(body.is_empty()),
                    )),
                    Err(error) => Attempt::Retry(self.failure(
                        what,
                        ErrorKind::ConnectionAborted,
                        &chain(&error),
                    )),
                }
            });
            match outcome {
                Attempt::Done(result) => return result,
                Attempt::Retry(error) if attempt >= ATTEMPTS => return Err(error),
                Attempt::Retry(_) => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Why a request timed out: on the client with the idle-read timeout
    /// (`idle`), a silence that long, or the whole request's limit.
    fn timed_out(&self, idle: bool) -> String {
        let limit = super::REQUEST_TIMEOUT.as_secs();
        match idle {
            true => format!(
                "nothing came for {} s or the request ran past {limit} s: the server went silent",
                self.read_timeout.as_secs()
            ),
            false => format!("the server did not answer within {limit} s"),
        }
    }

    /// An error naming the server, the repository and what was being done.
    fn failure(&self, what: &str, kind: ErrorKind, reason: &str) -> StoreError {
        StoreError::io(
            format!("repository {}: {what}", self.location()),
            std::io::Error::new(kind, reason.to_string()),
        )
    }

    /// What an answer that is not a success means, for object `name`.
    async fn refusal(&self, what: &str, response: reqwest::Response) -> StoreError {
        let status = response.status();
        let code = header(&response, HEADER_ERROR).unwrap_or_default();
        let kind = match status.as_u16() {
            401 | 403 => ErrorKind::PermissionDenied,
            _ => ErrorKind::Other,
        };
        let reason = reason(response).await;
        let code = if code.is_empty() {
            String::new()
        } else {
            format!(" ({code})")
        };
        self.failure(
            what,
            kind,
            &format!("the server refused it: {status}{code}: {reason}"),
        )
    }

    /// Reads a body of exactly `expected` bytes, or at most `limit` when
    /// the length is not known in advance; anything else is an error.
    async fn body(
        &self,
        what: &str,
        mut response: reqwest::Response,
        expected: Option<u64>,
        limit: u64,
    ) -> Attempt<Vec<u8>> {
        let declared = response.content_length();
        if let (Some(declared), Some(expected)) = (declared, expected)
            && declared != expected
        {
            return Attempt::Retry(self.failure(
                what,
                ErrorKind::InvalidData,
                &format!("the server sent {declared} bytes, not the {expected} asked for"),
            ));
        }
        let bound = expected.or(declared).unwrap_or(limit).min(limit);
        let mut bytes = Vec::with_capacity(usize::try_from(bound.min(64 << 20)).unwrap_or(0));
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() as u64 + chunk.len() as u64 > bound {
                        return Attempt::Done(Err(self.failure(
                            what,
                            ErrorKind::InvalidData,
                            &format!("the server sent more than {bound} bytes"),
                        )));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(error) if error.is_timeout() => {
                    return Attempt::Retry(self.failure(
                        what,
                        ErrorKind::TimedOut,
                        &format!("{} after {} bytes", self.timed_out(true), bytes.len()),
                    ));
                }
                Err(error) => {
                    return Attempt::Retry(self.failure(
                        what,
                        ErrorKind::ConnectionAborted,
                        &chain(&error),
                    ));
                }
            }
        }
        if let Some(expected) = expected.or(declared)
            && bytes.len() as u64 != expected
        {
            return Attempt::Retry(self.failure(
                what,
                ErrorKind::UnexpectedEof,
                &format!("the server sent {} of {expected} bytes", bytes.len()),
            ));
        }
        Attempt::Done(Ok(bytes))
    }
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

fn object_size(response: &reqwest::Response) -> Option<u64> {
    header(response, HEADER_OBJECT_SIZE).and_then(|size| size.parse().ok())
}

/// The first few KiB of an error response's body, as one line of text.
async fn reason(mut response: reqwest::Response) -> String {
    let mut text = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        text.extend_from_slice(&chunk);
        if text.len() as u64 >= MAX_REASON_SIZE {
            text.truncate(MAX_REASON_SIZE as usize);
            break;
        }
    }
    String::from_utf8_lossy(&text)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The error, with its causes, as one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text = format!("{text}: {line}");
        }
        source = cause.source();
    }
    text
}

fn parse_listing(text: &[u8], object: &str) -> Result<Vec<ObjectInfo>> {
    let bad = |reason: String| StoreError::corrupt(object, reason);
    let text = std::str::from_utf8(text).map_err(|_| bad("is not UTF-8".into()))?;
    let mut objects = Vec::new();
    for line in text.lines() {
        let mut fields = line.split(' ');
        let (Some(name), Some(size), Some(modified), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(bad(format!("line {line:?} is not NAME SIZE MODIFIED")));
        };
        let size: u64 = size
            .parse()
            .map_err(|_| bad(format!("line {line:?}: bad size")))?;
        let modified = match modified {
            "-" => None,
            nanos => {
                let nanos: u64 = nanos
                    .parse()
                    .map_err(|_| bad(format!("line {line:?}: bad time")))?;
                Some(UNIX_EPOCH + Duration::from_nanos(nanos))
            }
        };
        objects.push(ObjectInfo {
            name: name.to_string(),
            size,
            modified,
        });
    }
    Ok(objects)
}

impl Backend for HttpBackend {
    fn location(&self) -> String {
        format!("{}/{}", self.origin, self.name)
    }

    fn parallelism(&self) -> usize {
        HTTP_PARALLELISM
    }

    fn create(&self, kind: ObjectKind, name: &str, bytes: &[u8]) -> Result<Created> {
        check_name(kind, name)?;
        let what = format!("writing {} {name}", kind.label());
        self.request(
            reqwest::Method::PUT,
            &self.object_path(kind, name),
            "",
            bytes,
            &what,
            async |response| match response.status().as_u16() {
                201 => Attempt::Done(Ok(Created::New)),
                // The name holds the same bytes, or others the server
                // kept: either way nothing was written, as the trait says.
                200 => Attempt::Done(Ok(Created::AlreadyExisted)),
                409 if header(&response, HEADER_ERROR).as_deref()
                    == Some(ERROR_EXISTS_DIFFERENT) =>
                {
                    Attempt::Done(Ok(Created::AlreadyExisted))
                }
                _ => Attempt::Done(Err(self.refusal(&what, response).await)),
            },
        )
    }

    fn read(&self, kind: ObjectKind, name: &str, limit: u64) -> Result<Vec<u8>> {
        check_name(kind, name)?;
        let what = format!("reading {} {name}", kind.label());
        self.request(
            reqwest::Method::GET,
            &self.object_path(kind, name),
            &format!("limit={limit}"),
            b"",
            &what,
            async |response| match response.status().as_u16() {
                200 => self.body(&what, response, None, limit).await,
                404 if header(&response, HEADER_ERROR).as_deref() == Some(ERROR_MISSING) => {
                    Attempt::Done(Err(missing(kind, name)))
                }
                413 => match object_size(&response) {
                    Some(size) => Attempt::Done(Err(too_large(kind, name, size, limit))),
                    None => Attempt::Done(Err(self.refusal(&what, response).await)),
                },
                _ => Attempt::Done(Err(self.refusal(&what, response).await)),
            },
        )
    }

    fn read_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>> {
        check_name(kind, name)?;
        let what = format!("reading {} {name}", kind.label());
        self.request(
            reqwest::Method::GET,
            &self.object_path(kind, name),
            &format!("offset={offset}&length={length}"),
            b"",
            &what,
            async |response| match response.status().as_u16() {
                200 => self.body(&what, response, Some(length), length).await,
                404 if header(&response, HEADER_ERROR).as_deref() == Some(ERROR_MISSING) => {
                    Attempt::Done(Err(missing(kind, name)))
                }
                416 => match object_size(&response) {
                    Some(size) => Attempt::Done(Err(past_end(kind, name, offset, length, size))),
                    None => Attempt::Done(Err(self.refusal(&what, response).await)),
                },
                _ => Attempt::Done(Err(self.refusal(&what, response).await)),
            },
        )
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        let what = format!("listing {}", kind_segment(kind));
        let text = self.request(
            reqwest::Method::GET,
            &format!("/{}/{}", self.name, kind_segment(kind)),
            "",
            b"",
            &what,
            async |response| match response.status().as_u16() {
                200 => self.body(&what, response, None, MAX_LISTING_SIZE).await,
                _ => Attempt::Done(Err(self.refusal(&what, response).await)),
            },
        )?;
        let objects = parse_listing(
            &text,
            &format!(
                "the listing of {} from {}",
                kind_segment(kind),
                self.location()
            ),
        )?;
        for object in &objects {
            check_name(kind, &object.name).map_err(|_| {
                StoreError::corrupt(
                    format!(
                        "the listing of {} from {}",
                        kind_segment(kind),
                        self.location()
                    ),
                    format!("names an invalid object {:?}", object.name),
                )
            })?;
        }
        Ok(objects)
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        check_name(kind, name)?;
        let what = format!("deleting {} {name}", kind.label());
        self.request(
            reqwest::Method::DELETE,
            &self.object_path(kind, name),
            "",
            b"",
            &what,
            async |response| match response.status().as_u16() {
                200 | 204 => Attempt::Done(Ok(())),
                _ => Attempt::Done(Err(self.refusal(&what, response).await)),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_lines_round_trip() {
        let objects = vec![
            ObjectInfo {
                name: "ab".into(),
                size: 3,
                modified: Some(UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789)),
            },
            ObjectInfo {
                name: "config".into(),
                size: 0,
                modified: None,
            },
        ];
        let text: String = objects.iter().map(listing_line).collect();
        assert_eq!(parse_listing(text.as_bytes(), "listing").unwrap(), objects);
        assert!(parse_listing(b"ab 3\n", "listing").is_err());
        assert!(parse_listing(b"ab x -\n", "listing").is_err());
    }

    #[test]
    fn urls_name_a_repository() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let options = HttpOptions::default();
        let backend = HttpBackend::open("http://127.0.0.1:8000/main/", key.clone(), &options)
            .expect("a served repository");
        assert_eq!(backend.location(), "http://127.0.0.1:8000/main");
        for bad in [
            "ftp://host/main",
            "http://host",
            "http://host/",
            "http://host/a/b",
            "http://user@host/main",
            "http:///main",
        ] {
            assert!(
                matches!(
                    HttpBackend::open(bad, key.clone(), &options),
                    Err(StoreError::Invalid(_))
                ),
                "{bad}"
            );
        }
        for kind in [ObjectKind::Config, ObjectKind::Pack, ObjectKind::Keyring] {
            assert_eq!(kind_from_segment(kind_segment(kind)), Some(kind));
        }
    }
}
