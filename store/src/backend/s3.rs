//! [`S3Backend`]: a repository under a prefix of an S3 bucket (Amazon S3 or
//! any S3-compatible service), through `object_store`'s S3 client.
//!
//! Owns the key layout under the prefix (the local layout's, without
//! `tmp/`), create-only writes, ranged reads, paginated listing, multipart
//! upload of large objects, retries, giving up on a read whose connection
//! went silent (the idle-read timeout, `read_timeout=`: reads go through a
//! client of their own that has it, writes through one that has not), and
//! turning the service's errors into messages that name the bucket, the
//! operation and the object. Never
//! overwrites an object cairn might hold different bytes under: only
//! content-addressed objects, whose bytes their name fixes, are ever written
//! without a precondition (see [`S3Backend::create`]).
//!
//! The `Backend` trait is synchronous; the backend owns a small tokio
//! runtime and blocks on it. Callers on several threads each block on their
//! own request, so as many requests are in flight as callers, up to
//! [`Backend::parallelism`] by the callers' own bounds.

use super::s3_settings::{S3Settings, redact_location};
use super::{
    Backend, Created, DEFAULT_READ_TIMEOUT, ObjectInfo, ObjectKind, REQUEST_TIMEOUT,
    aws_credentials, check_name, missing, past_end, too_large,
};
use crate::error::{Result, StoreError};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsCredential};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, RetryConfig,
    StaticCredentialProvider,
};
use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

/// Requests a caller may keep in flight: enough that a backup or restore
/// over a long round trip is limited by bandwidth, few enough that memory
/// (one pack per upload) stays bounded.
pub const S3_PARALLELISM: usize = 8;
/// Objects larger than this are uploaded in parts. Packs are 16 MiB by
/// default, which one PUT handles best; larger pack sizes go multipart.
pub const MULTIPART_THRESHOLD: usize = 32 * 1024 * 1024;
/// Size of each part but the last (S3's minimum is 5 MiB).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts of one object uploaded at a time.
const PART_CONCURRENCY: usize = 4;
/// Retries of a failed request (throttling, 5xx, timeouts, lost
/// connections), with exponential backoff and jitter, unless the
/// repository's `retries` setting says otherwise.
const DEFAULT_RETRIES: usize = 8;

/// How long a HEAD (a size look-up: no body) may take, retries included.
/// The client's own timeout (300 s) is sized for a whole pack going up; a
/// HEAD that the service has not answered in this long will not be
/// answered, and a restore must not wait minutes on it before turning to
/// another repository.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a repository lives in S3: `s3://bucket/prefix`, with this
/// repository's own settings from the location's query (see
/// `s3_settings`). The settings are not part of its identity: [`url`]
/// leaves them out.
///
/// [`url`]: S3Location::url
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
    pub settings: S3Settings,
}

impl S3Location {
    /// Parses `s3://bucket`, `s3://bucket/some/prefix`, either followed by
    /// `?setting=value&...`. Errors show the location redacted.
    pub fn parse(url: &str) -> Result<S3Location> {
        let shown = redact_location(url);
        let invalid = |reason: &str| StoreError::Invalid(format!("repository {shown}: {reason}"));
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("an S3 repository is written s3://BUCKET/PREFIX"))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.contains('@') {
            return Err(invalid(
                "credentials never go in a location (user:secret@): name a profile \
                 (?profile=NAME) or the environment variables that hold them",
            ));
        }
        // S3's bucket naming rules, loosely: what a URL can carry unescaped.
        let bucket_valid = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b".-_".contains(&byte));
        if !bucket_valid {
            return Err(invalid(
                "the bucket name must be 3 to 63 letters, digits, dots, hyphens or underscores",
            ));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if !prefix.is_empty() && Path::parse(&prefix).is_err() {
            return Err(invalid(
                "the prefix must be /-separated names, none empty, `.` or `..`",
            ));
        }
        Ok(S3Location {
            bucket: bucket.to_string(),
            prefix,
            settings: S3Settings::parse_query(query, &shown)?,
        })
    }

    /// What names this repository on this machine (pins, FORMAT.md
    /// 14): bucket and prefix, and the service when the location names
    /// one (`endpoint=`): one bucket name on two services is two
    /// repositories. The other settings say how to reach it, not which
    /// it is, and are left out.
    pub fn identity(&self) -> String {
        match &self.settings.endpoint {
            Some(endpoint) => format!("{} at {}", self.url(), endpoint.trim_end_matches('/')),
            None => self.url(),
        }
    }

    /// Bucket and prefix, without settings.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// How to reach S3 when a repository's settings do not say: the command
/// line's defaults. The `AWS_*` variables come after these.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// The service's URL, for S3-compatible services (`http://` allowed,
    /// e.g. for a server on loopback); Amazon S3 when absent.
    pub endpoint: Option<String>,
}

pub struct S3Backend {
    /// The client for requests that send a body (writes) and deletes.
    pub(super) store: AmazonS3,
    /// The client for requests that send none (GETs, HEADs, listings),
    /// with the idle-read timeout: a response that goes silent for
    /// `read_timeout` fails that attempt, which is retried (a body cut
    /// short is resumed from where it stopped) as a lost connection is.
    /// Apart from `store` because the client's read timer also runs while
    /// a request's body goes up, and would cut a slow upload.
    reader: AmazonS3,
    read_timeout: Duration,
    pub(super) runtime: tokio::runtime::Runtime,
    /// What the raw calls (versions, Object Lock; `s3_raw`) need:
    /// the bucket's URL and region as this client was set up.
    pub(super) raw: super::s3_raw::RawAccess,
    location: S3Location,
    /// The region requests are signed for, named when the bucket is
    /// elsewhere.
    region: String,
    /// Sent with every write, if the repository set one.
    storage_class: Option<String>,
    /// Cleared for good once the service answers that it does not support
    /// conditional puts, or a probe finds it ignores them; `create` then
    /// checks before it writes.
    conditional_put: AtomicBool,
    /// Set once the conditional put has been probed (before the first
    /// `config` is created: the one object whose race matters).
    probed: AtomicBool,
    /// Set once the bucket's region was found to be the one this backend
    /// signs for (before the first create).
    region_checked: AtomicBool,
}

/// What a probe found the service does with `If-None-Match: *`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionalPut {
    /// A second create-only write of a key is refused: create-if-absent
    /// without a race.
    Honoured,
    /// The service answers that conditional writes are not implemented.
    NotImplemented,
    /// The service accepted a second create-only write of one key: it
    /// ignores the condition, and would let a write replace an object.
    Ignored,
}

impl S3Backend {
    /// A backend for `location`. Its settings come first, then `options`
    /// (the command line's), then the AWS variables and shared files (see
    /// `aws_credentials` for the order credentials are looked for in).
    /// Sends no request: a missing bucket shows at the first operation.
    pub fn open(location: S3Location, options: &S3Options) -> Result<S3Backend> {
        Self::open_with(location, options, &aws_credentials::process_environment)
    }

    pub(crate) fn open_with(
        location: S3Location,
        options: &S3Options,
        env: aws_credentials::Environment,
    ) -> Result<S3Backend> {
        let url = location.url();
        let settings = location.settings.clone();
        let resolved = aws_credentials::resolve(&settings, &url, env)?;
        // As the AWS tools: the variables over the profile's region.
        let region = settings
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or(resolved.profile_region.clone())
            .unwrap_or_else(|| "us-east-1".into());
        let endpoint = settings
            .endpoint
            .clone()
            .or_else(|| options.endpoint.clone())
            .or(resolved.profile_endpoint.clone());
        install_tls_provider();
        let retries = settings.retries.unwrap_or(DEFAULT_RETRIES);
        let mut builder = match &resolved.credentials {
            // The instance role is object_store's last resort: a builder
            // that sees no other credentials in the variables.
            aws_credentials::Credentials::Instance { endpoint } => {
                AmazonS3Builder::new().with_metadata_endpoint(endpoint)
            }
            _ => AmazonS3Builder::from_env(),
        };
        if let aws_credentials::Credentials::Static {
            key_id,
            secret_key,
            token,
        } = &resolved.credentials
        {
            // A provider, not `with_access_key_id`: a session token in the
            // variables must not join a profile's keys.
            builder =
                builder.with_credentials(Arc::new(StaticCredentialProvider::new(AwsCredential {
                    key_id: key_id.clone(),
                    secret_key: secret_key.clone(),
                    token: token.clone(),
                })));
        }
        builder = builder
            .with_bucket_name(&location.bucket)
            .with_region(&region)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(10),
                    base: 2.0,
                },
                max_retries: retries,
                retry_timeout: Duration::from_secs(120),
            });
        if let Some(endpoint) = &endpoint {
            // S3-compatible services address buckets by path, not by host,
            // unless the repository says otherwise.
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(!settings.path_style.unwrap_or(true));
        } else if let Some(path_style) = settings.path_style {
            builder = builder.with_virtual_hosted_style_request(!path_style);
        }
        let read_timeout = settings
            .read_timeout
            .map_or(DEFAULT_READ_TIMEOUT, Duration::from_secs);
        let raw = super::s3_raw::RawAccess::new(
            &location.bucket,
            builder.get_config_value(&object_store::aws::AmazonS3ConfigKey::Region),
            // The endpoint the repository's settings chose, as the client's.
            endpoint.as_deref(),
            read_timeout,
        )?;
        let build = |options: ClientOptions| {
            builder
                .clone()
                .with_client_options(options)
                .build()
                .map_err(|error| {
                    StoreError::Invalid(format!(
                        "repository {url}: cannot set up the S3 client: {error}"
                    ))
                })
        };
        let store = build(client_options(endpoint.as_deref()))?;
        let reader = build(client_options(endpoint.as_deref()).with_read_timeout(read_timeout))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-s3")
            // A write to a connection the service closed must fail, not
            // end the process (see `crate::os::sigpipe`).
            .on_thread_start(crate::os::sigpipe::block_on_this_thread)
            .enable_all()
            .build()
            .map_err(|error| StoreError::io("starting the S3 client's runtime", error))?;
        Ok(S3Backend {
            store,
            reader,
            read_timeout,
            runtime,
            storage_class: settings.storage_class.clone(),
            region,
            raw,
            location,
            conditional_put: AtomicBool::new(true),
            probed: AtomicBool::new(false),
            region_checked: AtomicBool::new(false),
        })
    }

    /// The region this backend signs for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// This backend without conditional puts: every create is a `HEAD`
    /// then a plain `PUT` (FORMAT.md section 3.4, step 2), as on a service
    /// that lacks them; for services known to, and to test that path.
    pub fn without_conditional_put(self) -> Self {
        self.conditional_put.store(false, Ordering::Relaxed);
        self.probed.store(true, Ordering::Relaxed);
        self
    }

    /// Writes a scratch key (`<prefix>/probe/<32 hex digits>`, which no
    /// reader looks at) twice with `If-None-Match: *`, deletes it where the
    /// credentials allow, and says what the service did; unless it honoured
    /// the condition, later creates use the fallback.
    pub fn probe_conditional_put(&self) -> Result<ConditionalPut> {
        self.probed.store(true, Ordering::Relaxed);
        let name = hex::encode(crate::os::random::random_bytes::<16>()?);
        let key = match self.location.prefix.as_str() {
            "" => format!("probe/{name}"),
            prefix => format!("{prefix}/probe/{name}"),
        };
        let path = Path::parse(&key)
            .map_err(|error| StoreError::Invalid(format!("invalid S3 key {key:?}: {error}")))?;
        let what = format!("the conditional-put probe {key}");
        let first = self
            .put(&path, b"first", true)
            .map_err(|error| self.failure("writing", &what, &error))?;
        let found = match first {
            None => ConditionalPut::NotImplemented,
            Some(_) => match self
                .put(&path, b"second", true)
                .map_err(|error| self.failure("writing", &what, &error))?
            {
                Some(Created::AlreadyExisted) => ConditionalPut::Honoured,
                Some(Created::New) => ConditionalPut::Ignored,
                None => ConditionalPut::NotImplemented,
            },
        };
        // Best effort: an add-only role cannot delete, and a leftover
        // scratch key of a few bytes is never read.
        let _ = self.runtime.block_on(self.store.delete(&path));
        if found != ConditionalPut::Honoured {
            self.conditional_put.store(false, Ordering::Relaxed);
        }
        Ok(found)
    }

    pub fn bucket(&self) -> &str {
        &self.location.bucket
    }

    pub(super) fn location_prefix(&self) -> &str {
        &self.location.prefix
    }

    /// The key of the folder of `kind` (the prefix itself for `config`).
    fn folder(&self, kind: ObjectKind) -> String {
        let folder = match kind {
            ObjectKind::Config => "",
            ObjectKind::Key => "keys",
            ObjectKind::Pack => "data",
            ObjectKind::Index => "index",
            ObjectKind::Snapshot => "snapshots",
            ObjectKind::Forget => "forgotten",
            ObjectKind::Deletion => "deletions",
            ObjectKind::KeySlot => "keyslots",
            ObjectKind::Keyring => "keyring",
            ObjectKind::Annotation => "annotations",
        };
        match (self.location.prefix.as_str(), folder) {
            (prefix, "") => prefix.to_string(),
            ("", folder) => folder.to_string(),
            (prefix, folder) => format!("{prefix}/{folder}"),
        }
    }

    pub(super) fn path(&self, kind: ObjectKind, name: &str) -> Result<Path> {
        check_name(kind, name)?;
        let folder = self.folder(kind);
        let relative = match kind {
            ObjectKind::Pack if name.len() >= 2 => format!("{}/{name}", &name[..2]),
            _ => name.to_string(),
        };
        let key = if folder.is_empty() {
            relative
        } else {
            format!("{folder}/{relative}")
        };
        Path::parse(&key)
            .map_err(|error| StoreError::Invalid(format!("invalid S3 key {key:?}: {error}")))
    }

    /// An error that names the bucket, what was being done and to what,
    /// how many attempts were made, and for a bucket in another region
    /// both regions.
    fn failure(&self, action: &str, what: &str, error: &object_store::Error) -> StoreError {
        // Only these go through `reader`, with the idle-read timeout.
        let read_timeout =
            matches!(action, "reading" | "looking up" | "listing").then_some(self.read_timeout);
        let (kind, reason) = classify(error, &self.region, read_timeout);
        StoreError::io(
            format!("S3 bucket `{}`: {action} {what}", self.location.bucket),
            std::io::Error::new(kind, reason),
        )
    }

    /// `Missing` for an absent object (but not for an absent bucket).
    fn read_failure(
        &self,
        kind: ObjectKind,
        name: &str,
        error: &object_store::Error,
    ) -> StoreError {
        if is_missing_object(error) {
            missing(kind, name)
        } else {
            self.failure("reading", &format!("{} {name}", kind.label()), error)
        }
    }

    /// The object's size, or `None` if it does not exist.
    fn size(&self, kind: ObjectKind, name: &str) -> Result<Option<u64>> {
        let path = self.path(kind, name)?;
        // Made inside the runtime: a timer needs its reactor.
        let head = async { tokio::time::timeout(HEAD_TIMEOUT, self.reader.head(&path)).await };
        match self.runtime.block_on(head) {
            Ok(Ok(meta)) => Ok(Some(meta.size)),
            Ok(Err(error)) if is_missing_object(&error) => Ok(None),
            Ok(Err(error)) => {
                Err(self.failure("looking up", &format!("{} {name}", kind.label()), &error))
            }
            Err(_) => Err(StoreError::io(
                format!(
                    "S3 bucket `{}`: looking up {} {name}",
                    self.location.bucket,
                    kind.label()
                ),
                std::io::Error::new(
                    ErrorKind::TimedOut,
                    format!("no answer within {} s", HEAD_TIMEOUT.as_secs()),
                ),
            )),
        }
    }

    /// Fails clearly if the bucket does not exist. A HEAD's 404 has no body
    /// to tell a missing bucket from a missing object; a listing's has.
    fn check_bucket(&self) -> Result<()> {
        let probe = Path::from(
            format!("{}/config", self.folder(ObjectKind::Config)).trim_start_matches('/'),
        );
        let mut listing = self.reader.list(Some(&probe));
        match self.runtime.block_on(listing.next()) {
            Some(Err(error)) => Err(self.failure("looking up", "config", &error)),
            _ => Ok(()),
        }
    }

    /// What every write carries: the storage class, if one is set.
    fn attributes(&self) -> Attributes {
        let mut attributes = Attributes::new();
        if let Some(class) = &self.storage_class {
            attributes.insert(Attribute::StorageClass, class.clone().into());
        }
        attributes
    }

    /// A single PUT; `Ok(None)` if the service refuses the precondition
    /// as unsupported.
    fn put(
        &self,
        path: &Path,
        bytes: &[u8],
        create_only: bool,
    ) -> Result<Option<Created>, object_store::Error> {
        // A bucket under Object Lock with a default retention wants a
        // Content-MD5 that object_store cannot send: such puts go raw.
        if self.raw.content_md5() {
            return self.put_with_md5(path.as_ref(), bytes, create_only);
        }
        let mode = if create_only {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        let mut options = PutOptions::from(mode);
        options.attributes = self.attributes();
        let put = self
            .store
            .put_opts(path, PutPayload::from(bytes.to_vec()), options);
        match self.runtime.block_on(put) {
            Ok(_) => Ok(Some(Created::New)),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Some(Created::AlreadyExisted)),
            Err(error) if create_only && is_unsupported(&error) => Ok(None),
            Err(error) if needs_content_md5(&error) => {
                self.raw.require_content_md5();
                self.put_with_md5(path.as_ref(), bytes, create_only)
            }
            Err(error) => Err(error),
        }
    }

    /// Uploads `bytes` in parts, several at a time. Completing a multipart
    /// upload cannot be made conditional through `object_store`, so this
    /// overwrites; callers use it only for content-addressed objects, after
    /// checking that the object is absent.
    fn put_multipart(&self, path: &Path, bytes: &[u8]) -> Result<(), object_store::Error> {
        self.runtime.block_on(async {
            let options = PutMultipartOptions {
                attributes: self.attributes(),
                ..PutMultipartOptions::default()
            };
            let id = self.store.create_multipart_opts(path, options).await?;
            let parts = futures_util::stream::iter(bytes.chunks(PART_SIZE).enumerate())
                .map(|(index, part)| {
                    self.store
                        .put_part(path, &id, index, PutPayload::from(part.to_vec()))
                })
                .buffered(PART_CONCURRENCY)
                .try_collect::<Vec<_>>()
                .await;
            let completed = match parts {
                Ok(parts) => self.store.complete_multipart(path, &id, parts).await,
                Err(error) => Err(error),
            };
            if completed.is_err() {
                // Best effort: an upload left behind costs storage until a
                // lifecycle rule aborts it, and is never read.
                let _ = self.store.abort_multipart(path, &id).await;
            }
            completed.map(|_| ())
        })
    }
}

/// Picks ring as rustls's provider once per process; reqwest is built
/// without one so that aws-lc is not compiled.
pub(super) fn install_tls_provider() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // Fails only if another provider is already installed, which will do.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn client_options(endpoint: Option<&str>) -> ClientOptions {
    ClientOptions::new()
        .with_allow_http(endpoint.is_some_and(|endpoint| endpoint.starts_with("http://")))
        .with_pool_max_idle_per_host(S3_PARALLELISM)
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(REQUEST_TIMEOUT)
}

/// Why a request that timed out did: a silent connection (the idle-read
/// timeout, the setting that moves it named) or the whole request's limit.
pub(super) fn timed_out(read_timeout: Option<Duration>) -> String {
    let limit = REQUEST_TIMEOUT.as_secs();
    match read_timeout {
        Some(idle) => format!(
            "nothing came for {} s (read_timeout) or the request ran past {limit} s: \
             the S3 service went silent",
            idle.as_secs()
        ),
        None => format!("the S3 service did not answer within {limit} s"),
    }
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

/// The text between `<tag>` and `</tag>` in an S3 XML error body.
fn xml_field<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    let start = text.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = start + text[start..].find(&format!("</{tag}>"))?;
    Some(&text[start..end])
}

fn is_no_such_bucket(error: &object_store::Error) -> bool {
    chain(error).contains("NoSuchBucket")
}

fn is_missing_object(error: &object_store::Error) -> bool {
    matches!(error, object_store::Error::NotFound { .. }) && !is_no_such_bucket(error)
}

/// Whether the service refused a put for want of a Content-MD5 (a bucket
/// whose Object Lock sets a default retention).
fn needs_content_md5(error: &object_store::Error) -> bool {
    let text = chain(error);
    text.contains("MissingUploadObjectWithObjectLockHeaders")
        || (text.contains("Content-MD5") && text.contains("Object Lock"))
}

/// Whether a request failed for want of the service (it could not be
/// reached, or the connection broke or timed out before the answer was
/// whole) rather than with an answer from it. The same test as
/// [`classify`]'s "cannot reach the S3 service", plus a broken body.
fn is_unreachable(error: &object_store::Error) -> bool {
    let text = chain(error);
    text.contains("error sending request")
        || text.contains("onnection")
        || text.contains("error decoding response body")
        || text.contains("timed out")
}

/// Whether the service rejected a conditional put as not implemented.
fn is_unsupported(error: &object_store::Error) -> bool {
    let text = chain(error);
    matches!(error, object_store::Error::NotImplemented { .. })
        || text.contains("501 Not Implemented")
        || xml_field(&text, "Code") == Some("NotImplemented")
}

/// How many times the request was sent: object_store's retry error says
/// "after N retries"; one send when it does not.
fn attempts(text: &str) -> usize {
    text.split("after ")
        .skip(1)
        .find_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
        .map_or(1, |retries| retries + 1)
}

/// The region S3 says a bucket is in, when a request was signed for
/// another: a redirect's `x-amz-bucket-region`, or the `<Region>` of an
/// `AuthorizationHeaderMalformed` or `PermanentRedirect` body.
fn other_region(text: &str) -> Option<&str> {
    let code = xml_field(text, "Code");
    if !matches!(
        code,
        Some(
            "AuthorizationHeaderMalformed"
                | "PermanentRedirect"
                | "IllegalLocationConstraintException"
        )
    ) && !text.contains("x-amz-bucket-region")
    {
        return None;
    }
    xml_field(text, "Region").or_else(|| {
        let start = text.find("x-amz-bucket-region")? + "x-amz-bucket-region".len();
        let rest = text[start..].trim_start_matches([':', ' ', '"']);
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))?;
        Some(&rest[..end])
    })
}

/// The reason for a bucket that does not exist, with the region it was
/// looked for in (a name is unique per partition, not per region).
pub(super) fn no_such_bucket(region: &str) -> (ErrorKind, String) {
    (
        ErrorKind::NotFound,
        format!("no such bucket (looked for in region {region})"),
    )
}

/// The reason for a bucket in region `theirs` when requests are signed
/// for `ours`, and the setting that mends it.
pub(super) fn wrong_region(theirs: &str, ours: &str) -> (ErrorKind, String) {
    (
        ErrorKind::InvalidInput,
        format!(
            "the bucket is in region {theirs}, but this repository signs for region \
             {ours} (add ?region={theirs} to the location)"
        ),
    )
}

/// A short reason and an I/O kind for an S3 error, with the service's own
/// code and message (or the client's error) in brackets, and for errors a
/// retry might have cured, how many attempts were made.
/// `read_timeout` is the idle-read timeout of the client that made the
/// request, `None` for the one that writes (which has none).
fn classify(
    error: &object_store::Error,
    region: &str,
    read_timeout: Option<Duration>,
) -> (ErrorKind, String) {
    use object_store::Error as E;
    let text = chain(error);
    let mut retryable = false;
    let (kind, reason) = if is_no_such_bucket(error) {
        no_such_bucket(region)
    } else if let Some(theirs) = other_region(&text).filter(|theirs| *theirs != region) {
        wrong_region(theirs, region)
    } else if text.contains("timed out") {
        retryable = true;
        (ErrorKind::TimedOut, timed_out(read_timeout))
    } else {
        let (kind, reason) = match error {
            E::PermissionDenied { .. } => (ErrorKind::PermissionDenied, "access denied"),
            E::Unauthenticated { .. } => (
                ErrorKind::PermissionDenied,
                "not authenticated (check the AWS credentials)",
            ),
            E::NotFound { .. } => (ErrorKind::NotFound, "not found"),
            _ if text.contains("error sending request") || text.contains("onnection") => {
                retryable = true;
                (ErrorKind::ConnectionRefused, "cannot reach the S3 service")
            }
            _ => {
                retryable = true;
                (ErrorKind::Other, "request failed")
            }
        };
        (kind, reason.to_string())
    };
    let detail = match (xml_field(&text, "Code"), xml_field(&text, "Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => text.clone(),
    };
    let tries = match attempts(&text) {
        1 if !retryable => String::new(),
        1 => " after 1 attempt".to_string(),
        many => format!(" after {many} attempts"),
    };
    (kind, format!("{reason}{tries} ({detail})"))
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.location.url()
    }

    fn parallelism(&self) -> usize {
        S3_PARALLELISM
    }

    /// A conditional PUT (`If-None-Match: *`): the service refuses it if the
    /// key exists, which gives create-if-absent without a race. A service
    /// that does not support conditional puts gets a HEAD, then a plain PUT:
    /// two writers may then both write, which for a content-addressed name
    /// writes the same bytes twice, and for `config` is the race FORMAT.md
    /// §3.4 describes. Objects above [`MULTIPART_THRESHOLD`] (never
    /// `config`) are checked with a HEAD and uploaded in parts.
    fn create(&self, kind: ObjectKind, name: &str, bytes: &[u8]) -> Result<Created> {
        let path = self.path(kind, name)?;
        // Before the first object of this run: nothing is written into a
        // bucket of another region than the repository signs for.
        if !self.region_checked.swap(true, Ordering::Relaxed) {
            self.check_bucket_region()?;
        }
        // A service that silently ignores the condition would let two
        // `init`s race for the config unseen: find out first.
        if kind == ObjectKind::Config && !self.probed.load(Ordering::Relaxed) {
            self.probe_conditional_put()?;
        }
        let what = format!("{} {name}", kind.label());
        let multipart = bytes.len() > MULTIPART_THRESHOLD
            && kind != ObjectKind::Config
            && !self.raw.content_md5();
        if !multipart && self.conditional_put.load(Ordering::Relaxed) {
            match self.put(&path, bytes, true) {
                Ok(Some(created)) => return Ok(created),
                Ok(None) => self.conditional_put.store(false, Ordering::Relaxed),
                Err(error) => return Err(self.failure("writing", &what, &error)),
            }
        }
        if self.size(kind, name)?.is_some() {
            return Ok(Created::AlreadyExisted);
        }
        let written = if multipart {
            self.put_multipart(&path, bytes)
        } else {
            self.put(&path, bytes, false).map(|_| ())
        };
        written
            .map(|()| Created::New)
            .map_err(|error| self.failure("writing", &what, &error))
    }

    fn read(&self, kind: ObjectKind, name: &str, limit: u64) -> Result<Vec<u8>> {
        let path = self.path(kind, name)?;
        // The response's headers give the size; a larger object's body is
        // dropped unread.
        let read = async {
            let result = self.reader.get_opts(&path, GetOptions::default()).await?;
            let size = result.meta.size;
            if size > limit {
                return Ok(Err(size));
            }
            result.bytes().await.map(Ok)
        };
        match self.runtime.block_on(read) {
            Ok(Ok(bytes)) if bytes.len() as u64 > limit => {
                Err(too_large(kind, name, bytes.len() as u64, limit))
            }
            Ok(Ok(bytes)) => Ok(bytes.to_vec()),
            Ok(Err(size)) => Err(too_large(kind, name, size, limit)),
            Err(error) => Err(self.read_failure(kind, name, &error)),
        }
    }

    fn read_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>> {
        let path = self.path(kind, name)?;
        let beyond = |size: u64| past_end(kind, name, offset, length, size);
        let Some(end) = offset.checked_add(length) else {
            // No such range in any object, but an absent one is `Missing`,
            // as everywhere else.
            return match self.size(kind, name)? {
                Some(size) => Err(beyond(size)),
                None => Err(missing(kind, name)),
            };
        };
        if length == 0 {
            // S3 has no empty range; only the bounds need checking.
            return match self.size(kind, name)? {
                Some(size) if offset <= size => Ok(Vec::new()),
                Some(size) => Err(beyond(size)),
                None => Err(missing(kind, name)),
            };
        }
        let read = async {
            let options = GetOptions::default().with_range(Some(GetRange::Bounded(offset..end)));
            let result = self.reader.get_opts(&path, options).await?;
            let size = result.meta.size;
            Ok::<_, object_store::Error>((size, result.bytes().await?))
        };
        match self.runtime.block_on(read) {
            // S3 answers a range that runs past the end with what there is.
            Ok((size, _)) if size < end => Err(beyond(size)),
            Ok((size, bytes)) if bytes.len() as u64 != length => Err(beyond(size)),
            Ok((_, bytes)) => Ok(bytes.to_vec()),
            Err(error) if is_missing_object(&error) => Err(missing(kind, name)),
            // The service could not be reached (or went away mid-answer):
            // there is no one to ask the object's size either. Asking
            // anyway cost every failed read a second request on a dead
            // server, and such a HEAD once sat out the client's 300 s
            // timeout with no connection left, holding a whole restore.
            Err(error) if is_unreachable(&error) => Err(self.read_failure(kind, name, &error)),
            // A range that starts past the end is an error (416); say so
            // as corruption, like the local backend, if that is what it is.
            Err(error) => match self.size(kind, name) {
                Ok(Some(size)) if size < end => Err(beyond(size)),
                _ => Err(self.read_failure(kind, name, &error)),
            },
        }
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        if kind == ObjectKind::Config {
            let path = self.path(kind, crate::format::config::CONFIG_NAME)?;
            return match self.runtime.block_on(self.reader.head(&path)) {
                Ok(meta) => Ok(vec![ObjectInfo {
                    name: crate::format::config::CONFIG_NAME.into(),
                    size: meta.size,
                    modified: Some(SystemTime::from(meta.last_modified)),
                }]),
                Err(error) if is_missing_object(&error) => {
                    self.check_bucket()?;
                    Ok(Vec::new())
                }
                Err(error) => Err(self.failure("looking up", "config", &error)),
            };
        }
        let folder = self.folder(kind);
        let listed = self
            .runtime
            .block_on(
                self.reader
                    .list(Some(&Path::from(folder.as_str())))
                    .try_collect::<Vec<_>>(),
            )
            .map_err(|error| self.failure("listing", &format!("{folder}/"), &error))?;
        let mut objects = Vec::with_capacity(listed.len());
        for meta in listed {
            let key = meta.location.as_ref();
            let Some(relative) = key
                .strip_prefix(folder.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
            else {
                continue;
            };
            // Only keys in the layout: data/<2 hex>/<name>, <folder>/<name>,
            // and data/<name> for a pack name too short for a fan-out (as
            // `path` writes it).
            let name = match (kind, relative.split_once('/')) {
                (ObjectKind::Pack, Some((fan, name)))
                    if fan.len() == 2 && name.starts_with(fan) && !name.contains('/') =>
                {
                    name
                }
                (ObjectKind::Pack, None) if relative.len() < 2 => relative,
                (ObjectKind::Pack, _) | (_, Some(_)) => continue,
                (_, None) => relative,
            };
            if check_name(kind, name).is_ok() {
                objects.push(ObjectInfo {
                    name: name.to_string(),
                    size: meta.size,
                    modified: Some(SystemTime::from(meta.last_modified)),
                });
            }
        }
        Ok(objects)
    }

    /// With versioning on, a delete only hides the object behind a delete
    /// marker; [`Backend::purge`] removes its versions.
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        let path = self.path(kind, name)?;
        match self.runtime.block_on(self.store.delete(&path)) {
            Ok(()) => Ok(()),
            Err(error) if is_missing_object(&error) => Ok(()),
            Err(error) => {
                Err(self.failure("deleting", &format!("{} {name}", kind.label()), &error))
            }
        }
    }

    fn retained_until(&self, kind: ObjectKind, name: &str) -> Result<Option<SystemTime>> {
        Ok(self.retention(kind, name)?.map(SystemTime::from))
    }

    fn purge(&self, kind: ObjectKind, name: &str) -> Result<super::Purged> {
        self.purge_versions(kind, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        assert_eq!(
            S3Location::parse("s3://bucket/a/b/").unwrap(),
            S3Location {
                bucket: "bucket".into(),
                prefix: "a/b".into(),
                settings: S3Settings::default(),
            }
        );
        assert_eq!(S3Location::parse("s3://bucket").unwrap().prefix, "");
        assert_eq!(
            S3Location::parse("s3://bucket/a").unwrap().url(),
            "s3://bucket/a"
        );
        assert!(S3Location::parse("s3://").is_err());
        assert!(S3Location::parse("s3://b").is_err());
        assert!(S3Location::parse("s3://bucket/a//b").is_err());
        assert!(S3Location::parse("s3://bucket/../b").is_err());
    }

    #[test]
    fn service_error_codes_are_found() {
        let body = "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        assert_eq!(xml_field(body, "Code"), Some("AccessDenied"));
        assert_eq!(xml_field(body, "Message"), Some("Access Denied"));
        assert_eq!(xml_field(body, "Key"), None);
    }

    #[test]
    fn errors_say_how_many_attempts_and_which_regions() {
        let failed = |text: &str| object_store::Error::Generic {
            store: "S3",
            source: text.to_string().into(),
        };
        let (_, reason) = classify(
            &failed(
                "Error after 3 retries, max_retries: 3, retry_timeout: 120s - Server returned non-2xx status code: 503 Service Unavailable",
            ),
            "us-east-1",
            None,
        );
        assert!(reason.contains("after 4 attempts"), "{reason}");
        let (kind, reason) = classify(
            &failed(
                "<Error><Code>AuthorizationHeaderMalformed</Code><Message>the region 'us-east-1' is wrong; expecting 'eu-west-1'</Message><Region>eu-west-1</Region></Error>",
            ),
            "us-east-1",
            None,
        );
        assert_eq!(kind, ErrorKind::InvalidInput);
        assert!(
            reason.contains("region eu-west-1") && reason.contains("region us-east-1"),
            "{reason}"
        );
    }

    #[test]
    fn settings_are_not_part_of_the_identity() {
        let plain = S3Location::parse("s3://bucket/a").unwrap();
        let set = S3Location::parse("s3://bucket/a?region=eu-west-1&profile=eu").unwrap();
        assert_eq!(plain.identity(), set.identity());
        let elsewhere = S3Location::parse("s3://bucket/a?endpoint=http://127.0.0.1:9000").unwrap();
        assert_ne!(plain.identity(), elsewhere.identity());
        assert_eq!(set.settings.region.as_deref(), Some("eu-west-1"));
        let error = S3Location::parse("s3://AKIAXX:SuperSecret@bucket/a").unwrap_err();
        assert!(!error.to_string().contains("SuperSecret"), "{error}");
    }
}
