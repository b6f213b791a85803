//! Object versions, retention and Object Lock for an [`S3Backend`]: the S3
//! calls `object_store` cannot make (CreateBucket with Object Lock,
//! Get/PutBucketVersioning, PutObjectLockConfiguration,
//! ListObjectVersions, GetObject and DeleteObject by version, Get and
//! PutObjectRetention), signed with rusty-s3's SigV4 signer (presigned
//! URLs, the payload unsigned) and sent through reqwest, on the backend's
//! own runtime and credentials. Also [`AsOfBackend`]: a repository read as
//! it was at a past time, from object versions.
//!
//! Owns the XML of these calls and the rule for "the version of a key at a
//! time". Never deletes an object version except in [`S3Backend::purge`]
//! (prune, on a repository with Object Lock) and [`S3Backend::undelete`]
//! (delete markers only); never shortens a retention.

use super::s3::S3Backend;
use super::{Backend, Created, ObjectInfo, ObjectKind, Purged, missing, past_end, too_large};
use crate::error::{Result, StoreError};
use base64::Engine as _;
use jiff::Timestamp;
use md5::Digest as _;
use rusty_s3::Method;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::time::SystemTime;

/// A signed URL is valid this long: one request's worth.
const SIGNATURE_LIFETIME: u64 = 300;
/// Replies other than object bodies (listings, retention, errors) larger
/// than this are refused: a listing page of 1000 versions is about 400 KiB.
const REPLY_LIMIT: usize = 8 * 1024 * 1024;
const NAMESPACE: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// Object Lock's two retention modes (FORMAT.md 4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// A role with `s3:BypassGovernanceRetention` may still delete or
    /// shorten; everyone else waits.
    Governance,
    /// Nobody, not even the account's root, deletes before the date.
    Compliance,
}

impl LockMode {
    pub fn parse(text: &str) -> Option<LockMode> {
        match text.to_ascii_lowercase().as_str() {
            "governance" => Some(LockMode::Governance),
            "compliance" => Some(LockMode::Compliance),
            _ => None,
        }
    }

    /// As the repository config and the CLI spell it.
    pub fn name(self) -> &'static str {
        match self {
            LockMode::Governance => "governance",
            LockMode::Compliance => "compliance",
        }
    }

    fn s3(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

/// One version of a key, or a delete marker, as ListObjectVersions gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectVersion {
    pub key: String,
    pub version_id: String,
    pub modified: Timestamp,
    pub size: u64,
    pub delete_marker: bool,
}

/// What [`S3Backend::undelete`] did.
#[derive(Clone, Debug, Default)]
pub struct Undeleted {
    /// Objects visible again, by kind label and name.
    pub objects: Vec<(ObjectKind, String)>,
    pub markers_removed: u64,
}

/// What [`S3Backend::extend_retention`] did.
#[derive(Clone, Debug, Default)]
pub struct Extended {
    pub extended: u64,
    pub already: u64,
}

/// A raw call's answer.
struct Reply {
    status: u16,
    body: Vec<u8>,
    /// The `x-amz-bucket-region` header: where S3 says the bucket is.
    bucket_region: Option<String>,
}

impl Reply {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The service's error code (`AccessDenied`, `NoSuchBucket`, ...).
    fn code(&self) -> String {
        let text = self.text();
        field(&text, "Code").unwrap_or_default()
    }

    /// Whether the service refused because a retention or legal hold
    /// protects the version: AWS says AccessDenied, some compatible
    /// services InvalidRequest.
    fn locked(&self) -> bool {
        matches!(self.code().as_str(), "AccessDenied" | "InvalidRequest") || self.status == 403
    }
}

/// One call: what it does to which target, for messages.
struct Call<'a> {
    method: Method,
    /// An object key, or `None` for the bucket itself.
    key: Option<&'a str>,
    /// Sorted by name, then value.
    query: Vec<(&'a str, String)>,
    /// Signed; lowercase names, sorted.
    headers: Vec<(&'a str, String)>,
    body: Vec<u8>,
    /// Unsigned (Range).
    range: Option<(u64, u64)>,
}

impl<'a> Call<'a> {
    fn new(method: Method, key: Option<&'a str>) -> Self {
        Call {
            method,
            key,
            query: Vec::new(),
            headers: Vec::new(),
            body: Vec::new(),
            range: None,
        }
    }

    fn query(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.query.push((name, value.into()));
        self
    }

    /// An XML body, with the Content-MD5 that retention and lock
    /// configuration calls require.
    fn xml(mut self, body: String) -> Self {
        let digest = md5::Md5::digest(body.as_bytes());
        self.headers.push((
            "content-md5",
            base64::engine::general_purpose::STANDARD.encode(digest),
        ));
        self.body = body.into_bytes();
        self
    }
}

impl S3Backend {
    fn raw_failure(&self, action: &str, what: &str, reason: String) -> StoreError {
        StoreError::io(
            format!("S3 bucket `{}`: {action} {what}", self.bucket()),
            std::io::Error::other(reason),
        )
    }

    /// Signs and sends `call`; the reply's body is read up to `limit`.
    fn send(&self, call: Call<'_>, limit: usize, what: &str) -> Result<Reply> {
        let access = &self.raw;
        let action = call.method.to_str();
        let failed = |reason: String| self.raw_failure(action, what, reason);
        self.runtime.block_on(async {
            let credential = self
                .store
                .credentials()
                .get_credential()
                .await
                .map_err(|error| failed(format!("no credentials: {error}")))?;
            let url = match call.key {
                Some(key) => access.bucket.object_url(key),
                None => access.bucket.base_url().clone(),
            };
            let mut query = call.query.clone();
            query.sort();
            let url = rusty_s3::signing::sign(
                &Timestamp::now(),
                call.method,
                url,
                &credential.key_id,
                &credential.secret_key,
                credential.token.as_deref(),
                access.bucket.region(),
                SIGNATURE_LIFETIME,
                query.iter().map(|(name, value)| (*name, value.as_str())),
                call.headers
                    .iter()
                    .map(|(name, value)| (*name, value.as_str())),
            );
            let method = match call.method {
                Method::Get => reqwest::Method::GET,
                Method::Put => reqwest::Method::PUT,
                Method::Delete => reqwest::Method::DELETE,
                Method::Head => reqwest::Method::HEAD,
                Method::Post => reqwest::Method::POST,
            };
            // A call that sends no body goes through the client with the
            // idle-read timeout (see `RawAccess`).
            let (client, read_timeout) = match call.body.is_empty() {
                true => (&access.reader, Some(access.read_timeout)),
                false => (&access.client, None),
            };
            let timed_out = |error: &reqwest::Error| {
                error
                    .is_timeout()
                    .then(|| super::s3::timed_out(read_timeout))
            };
            let mut request = client.request(method, url.as_str());
            for (name, value) in &call.headers {
                request = request.header(*name, value);
            }
            if let Some((start, end)) = call.range {
                request = request.header("range", format!("bytes={start}-{}", end - 1));
            }
            if call.body.is_empty() && matches!(call.method, Method::Put | Method::Post) {
                // Not sent for an empty body otherwise; S3 answers 411.
                request = request.header("content-length", "0");
            }
            let mut response =
                request
                    .body(call.body)
                    .send()
                    .await
                    .map_err(|error| match timed_out(&error) {
                        Some(reason) => failed(reason),
                        None => failed(format!("cannot reach the S3 service ({error})")),
                    })?;
            let status = response.status().as_u16();
            let bucket_region = response
                .headers()
                .get("x-amz-bucket-region")
                .and_then(|value| value.to_str().ok())
                .map(str::to_string);
            let mut body = Vec::new();
            while let Some(chunk) =
                response
                    .chunk()
                    .await
                    .map_err(|error| match timed_out(&error) {
                        Some(reason) => failed(format!("reading the reply: {reason}")),
                        None => failed(format!("reading the reply: {error}")),
                    })?
            {
                if body.len() + chunk.len() > limit {
                    return Err(failed(format!("reply longer than {limit} bytes; not read")));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Reply {
                status,
                body,
                bucket_region,
            })
        })
    }

    /// Asks where the bucket is (`HEAD` on the bucket) and fails, naming
    /// both regions, when it is not in the region this repository signs
    /// for, or naming the region looked in when there is no such bucket.
    /// Amazon S3 answers a request signed for the wrong region with a
    /// redirect, but S3-compatible services may serve it anyway, and a
    /// repository made so would later fail on AWS or sign for the wrong
    /// place; each run asks before its first write. Any other answer (a role without
    /// `s3:ListBucket`, say), or none (a service that cannot be reached),
    /// is left to the calls that follow, which retry and say how often.
    pub fn check_bucket_region(&self) -> Result<()> {
        let Ok(reply) = self.send(Call::new(Method::Head, None), 0, "the bucket") else {
            return Ok(());
        };
        let (kind, reason) = if reply.status == 404 {
            super::s3::no_such_bucket(self.region())
        } else {
            match &reply.bucket_region {
                Some(theirs) if theirs != self.region() => {
                    super::s3::wrong_region(theirs, self.region())
                }
                _ => return Ok(()),
            }
        };
        Err(StoreError::io(
            format!("S3 bucket `{}`", self.bucket()),
            std::io::Error::new(kind, reason),
        ))
    }

    /// Sends `call` and fails, naming the service's code and message,
    /// unless it succeeds.
    fn send_ok(&self, call: Call<'_>, what: &str) -> Result<Reply> {
        let action = call.method.to_str();
        let reply = self.send(call, REPLY_LIMIT, what)?;
        if reply.ok() {
            return Ok(reply);
        }
        let text = reply.text();
        let detail = match (field(&text, "Code"), field(&text, "Message")) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code,
            _ => format!("HTTP {}", reply.status),
        };
        let kind = match reply.status {
            403 => ErrorKind::PermissionDenied,
            404 => ErrorKind::NotFound,
            _ => ErrorKind::Other,
        };
        Err(StoreError::io(
            format!("S3 bucket `{}`: {action} {what}", self.bucket()),
            std::io::Error::new(kind, detail),
        ))
    }

    /// A single PUT with Content-MD5 (and `If-None-Match: *` when
    /// `create_only`), for buckets that require it; in `object_store`'s
    /// terms, as [`S3Backend::put`] answers. A whole object in one request
    /// (S3 takes up to 5 GiB so).
    pub(super) fn put_with_md5(
        &self,
        key: &str,
        bytes: &[u8],
        create_only: bool,
    ) -> std::result::Result<Option<Created>, object_store::Error> {
        let digest = md5::Md5::digest(bytes);
        let mut call = Call::new(Method::Put, Some(key));
        call.headers.push((
            "content-md5",
            base64::engine::general_purpose::STANDARD.encode(digest),
        ));
        if create_only {
            call.headers.push(("if-none-match", "*".into()));
        }
        call.body = bytes.to_vec();
        let generic = |reason: String| object_store::Error::Generic {
            store: "S3",
            source: reason.into(),
        };
        let reply = self
            .send(call, REPLY_LIMIT, key)
            .map_err(|error| generic(error.to_string()))?;
        match reply.status {
            200..=299 => Ok(Some(Created::New)),
            412 if create_only => Ok(Some(Created::AlreadyExisted)),
            501 if create_only => Ok(None),
            status => Err(generic(format!(
                "PUT {key}: HTTP {status}: <Code>{}</Code>",
                reply.code()
            ))),
        }
    }

    /// Makes the bucket hold objects under Object Lock with a default
    /// retention of `days` in `mode`: creates it with Object Lock if it does
    /// not exist, otherwise turns versioning on and sets the default
    /// retention (which S3 allows on a versioned bucket). Every object
    /// written from then on is retained at least `days`.
    pub fn ensure_object_lock(&self, days: u32, mode: LockMode) -> Result<()> {
        let bucket = format!("bucket {}", self.bucket());
        let head = self.send(Call::new(Method::Head, None), REPLY_LIMIT, &bucket)?;
        if head.status == 404 {
            let mut create = Call::new(Method::Put, None);
            create
                .headers
                .push(("x-amz-bucket-object-lock-enabled", "true".into()));
            let region = self.raw.bucket.region();
            if region != "us-east-1" {
                create = create.xml(format!(
                    "<CreateBucketConfiguration xmlns=\"{NAMESPACE}\"><LocationConstraint>{region}\
                     </LocationConstraint></CreateBucketConfiguration>"
                ));
                create.headers.sort();
            }
            self.send_ok(create, &bucket)?;
        } else {
            let versioning = Call::new(Method::Put, None)
                .query("versioning", "")
                .xml(format!(
                    "<VersioningConfiguration xmlns=\"{NAMESPACE}\"><Status>Enabled</Status>\
                 </VersioningConfiguration>"
                ));
            self.send_ok(versioning, &format!("the versioning of {bucket}"))?;
        }
        let lock = Call::new(Method::Put, None)
            .query("object-lock", "")
            .xml(format!(
                "<ObjectLockConfiguration xmlns=\"{NAMESPACE}\"><ObjectLockEnabled>Enabled\
             </ObjectLockEnabled><Rule><DefaultRetention><Mode>{}</Mode><Days>{days}</Days>\
             </DefaultRetention></Rule></ObjectLockConfiguration>",
                mode.s3()
            ));
        self.send_ok(lock, &format!("the Object Lock configuration of {bucket}"))?;
        Ok(())
    }

    /// Whether versioning is enabled on the bucket (GetBucketVersioning).
    pub fn versioning_enabled(&self) -> Result<bool> {
        let what = format!("the versioning of bucket {}", self.bucket());
        let reply = self.send_ok(Call::new(Method::Get, None).query("versioning", ""), &what)?;
        Ok(field(&reply.text(), "Status").as_deref() == Some("Enabled"))
    }

    /// Every version and delete marker of every key under `prefix`
    /// (ListObjectVersions, all pages), newest first within a key.
    pub fn list_versions(&self, prefix: &str) -> Result<Vec<ObjectVersion>> {
        let what = format!("the versions under {prefix:?}");
        let mut versions = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut call = Call::new(Method::Get, None)
                .query("prefix", prefix)
                .query("versions", "");
            if let Some((key, version)) = &markers {
                call = call
                    .query("key-marker", key.clone())
                    .query("version-id-marker", version.clone());
            }
            let reply = self.send_ok(call, &what)?;
            let text = reply.text();
            versions.extend(parse_versions(&text).map_err(|reason| {
                self.raw_failure("listing", &what, format!("unreadable reply: {reason}"))
            })?);
            if field(&text, "IsTruncated").as_deref() != Some("true") {
                return Ok(versions);
            }
            let next = (
                field(&text, "NextKeyMarker").unwrap_or_default(),
                field(&text, "NextVersionIdMarker").unwrap_or_default(),
            );
            if next.0.is_empty() || markers.as_ref() == Some(&next) {
                return Err(self.raw_failure(
                    "listing",
                    &what,
                    "a truncated page without a new marker".into(),
                ));
            }
            markers = Some(next);
        }
    }

    /// The versions of the repository's objects, each with its kind and
    /// name; keys outside the layout are left out.
    fn repository_versions(&self) -> Result<Vec<(ObjectKind, String, ObjectVersion)>> {
        let prefix = match self.location_prefix() {
            "" => String::new(),
            prefix => format!("{prefix}/"),
        };
        Ok(self
            .list_versions(&prefix)?
            .into_iter()
            .filter_map(|version| {
                let (kind, name) = self.object_of(&version.key)?;
                Some((kind, name, version))
            })
            .collect())
    }

    /// The kind and name a key holds, if it is one of the layout's.
    fn object_of(&self, key: &str) -> Option<(ObjectKind, String)> {
        use ObjectKind as K;
        const KINDS: [ObjectKind; 9] = [
            K::Config,
            K::Key,
            K::Pack,
            K::Index,
            K::Snapshot,
            K::Forget,
            K::Deletion,
            K::KeySlot,
            K::Keyring,
        ];
        let name = key.rsplit('/').next()?;
        KINDS.into_iter().find_map(|kind| {
            let path = self.path(kind, name).ok()?;
            (path.as_ref() == key).then(|| (kind, name.to_string()))
        })
    }

    /// The retention date of the object's current version, if it has one.
    pub fn retention(&self, kind: ObjectKind, name: &str) -> Result<Option<Timestamp>> {
        let key = self.path(kind, name)?;
        let what = format!("the retention of {} {name}", kind.label());
        let reply = self.send(
            Call::new(Method::Get, Some(key.as_ref())).query("retention", ""),
            REPLY_LIMIT,
            &what,
        )?;
        if !reply.ok() {
            // No retention on the object, or no Object Lock on the bucket.
            let code = reply.code();
            if code.contains("ObjectLockConfiguration") || code == "NoSuchObjectLockConfiguration" {
                return Ok(None);
            }
            return Err(self.raw_failure("GET", &what, format!("{code} (HTTP {})", reply.status)));
        }
        match field(&reply.text(), "RetainUntilDate") {
            None => Ok(None),
            Some(date) => parse_time(&date)
                .map(Some)
                .ok_or_else(|| self.raw_failure("GET", &what, format!("bad date {date:?}"))),
        }
    }

    /// Retains the object's current version until at least `until`
    /// (PutObjectRetention); never shortens one already longer.
    pub fn retain(
        &self,
        kind: ObjectKind,
        name: &str,
        mode: LockMode,
        until: Timestamp,
    ) -> Result<bool> {
        if self
            .retention(kind, name)?
            .is_some_and(|current| current >= until)
        {
            return Ok(false);
        }
        let key = self.path(kind, name)?;
        let date = until.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let call = Call::new(Method::Put, Some(key.as_ref()))
            .query("retention", "")
            .xml(format!(
                "<Retention xmlns=\"{NAMESPACE}\"><Mode>{}</Mode><RetainUntilDate>{date}\
                 </RetainUntilDate></Retention>",
                mode.s3()
            ));
        self.send_ok(call, &format!("the retention of {} {name}", kind.label()))?;
        Ok(true)
    }

    /// Retains every object of `kinds` (except `excluded` packs) until
    /// `until`: the maintenance step that keeps live data locked.
    pub fn extend_retention(
        &self,
        kinds: &[ObjectKind],
        excluded_packs: &std::collections::HashSet<String>,
        mode: LockMode,
        until: Timestamp,
    ) -> Result<Extended> {
        let mut outcome = Extended::default();
        for &kind in kinds {
            for object in self.list(kind)? {
                if kind == ObjectKind::Pack && excluded_packs.contains(&object.name) {
                    continue;
                }
                if self.retain(kind, &object.name, mode, until)? {
                    outcome.extended += 1;
                } else {
                    outcome.already += 1;
                }
            }
        }
        Ok(outcome)
    }

    /// Removes every version of the object, for good; `Retained` (nothing
    /// more removed) if the service refuses one because a retention still
    /// protects it.
    pub(super) fn purge_versions(&self, kind: ObjectKind, name: &str) -> Result<Purged> {
        let key = self.path(kind, name)?;
        let key = key.as_ref();
        let what = format!("{} {name}", kind.label());
        for version in self.list_versions(key)? {
            if version.key != key {
                continue;
            }
            let reply = self.send(
                Call::new(Method::Delete, Some(key)).query("versionId", version.version_id),
                REPLY_LIMIT,
                &what,
            )?;
            if reply.ok() || reply.status == 404 {
                continue;
            }
            if reply.locked() {
                return Ok(Purged::Retained);
            }
            return Err(self.raw_failure(
                "deleting",
                &what,
                format!("{} (HTTP {})", reply.code(), reply.status),
            ));
        }
        Ok(Purged::Gone)
    }

    /// Puts back objects that delete markers hide, by removing the markers
    /// (DeleteObject by version id; only markers are ever removed). With
    /// `as_of`, only markers made after it, and only for objects that
    /// existed then: the repository as it was at that time, plus what was
    /// written since. Without, every marker that hides a version.
    pub fn undelete(&self, as_of: Option<Timestamp>) -> Result<Undeleted> {
        let mut by_key: HashMap<String, (ObjectKind, String, Vec<ObjectVersion>)> = HashMap::new();
        for (kind, name, version) in self.repository_versions()? {
            by_key
                .entry(version.key.clone())
                .or_insert_with(|| (kind, name, Vec::new()))
                .2
                .push(version);
        }
        let mut outcome = Undeleted::default();
        let mut keys: Vec<_> = by_key.into_iter().collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, (kind, name, versions)) in keys {
            let Some(newest) = newest_at(&versions, None) else {
                continue;
            };
            if !newest.delete_marker {
                continue;
            }
            let (markers, restorable): (Vec<&ObjectVersion>, bool) = match as_of {
                Some(at) => match newest_at(&versions, Some(at)) {
                    Some(then) if !then.delete_marker => (
                        versions
                            .iter()
                            .filter(|version| version.delete_marker && version.modified > at)
                            .collect(),
                        true,
                    ),
                    _ => (Vec::new(), false),
                },
                None => {
                    let newest_real = versions
                        .iter()
                        .filter(|version| !version.delete_marker)
                        .map(|version| version.modified)
                        .max();
                    match newest_real {
                        Some(real) => (
                            versions
                                .iter()
                                .filter(|version| version.delete_marker && version.modified >= real)
                                .collect(),
                            true,
                        ),
                        None => (Vec::new(), false),
                    }
                }
            };
            if !restorable {
                continue;
            }
            for marker in markers {
                let call = Call::new(Method::Delete, Some(&key))
                    .query("versionId", marker.version_id.clone());
                self.send_ok(
                    call,
                    &format!("the delete marker of {} {name}", kind.label()),
                )?;
                outcome.markers_removed += 1;
            }
            outcome.objects.push((kind, name));
        }
        Ok(outcome)
    }

    /// `length` bytes from `offset` of one version (or all of it).
    fn read_version(
        &self,
        key: &str,
        version_id: &str,
        range: Option<(u64, u64)>,
        limit: usize,
        what: &str,
    ) -> Result<Vec<u8>> {
        let mut call = Call::new(Method::Get, Some(key)).query("versionId", version_id);
        call.range = range;
        let reply = self.send(call, limit, what)?;
        if !reply.ok() {
            return Err(self.raw_failure(
                "reading",
                what,
                format!("{} (HTTP {})", reply.code(), reply.status),
            ));
        }
        Ok(reply.body)
    }
}

/// The newest entry of a key's versions at or before `at` (any time when
/// `None`): latest modification time wins; a tie goes to the one listed
/// first, as the service lists a key's newest first.
fn newest_at(versions: &[ObjectVersion], at: Option<Timestamp>) -> Option<&ObjectVersion> {
    let mut best: Option<&ObjectVersion> = None;
    for version in versions {
        if at.is_some_and(|at| version.modified > at) {
            continue;
        }
        if best.is_none_or(|best| version.modified > best.modified) {
            best = Some(version);
        }
    }
    best
}

/// A repository read as it was at a time: each object is the newest
/// version of its key at or before that time, unless that is a delete
/// marker; later versions and later delete markers are not seen. Read-only:
/// every write and delete is refused.
pub struct AsOfBackend {
    s3: S3Backend,
    at: Timestamp,
    objects: HashMap<(ObjectKind, String), ObjectVersion>,
}

impl AsOfBackend {
    /// Lists every version under the repository's prefix once (the view is
    /// fixed from then on).
    pub fn open(s3: S3Backend, at: Timestamp) -> Result<AsOfBackend> {
        let mut by_object: HashMap<(ObjectKind, String), Vec<ObjectVersion>> = HashMap::new();
        for (kind, name, version) in s3.repository_versions()? {
            by_object.entry((kind, name)).or_default().push(version);
        }
        let objects = by_object
            .into_iter()
            .filter_map(|(object, versions)| {
                let version = newest_at(&versions, Some(at))?;
                (!version.delete_marker).then(|| (object, version.clone()))
            })
            .collect();
        Ok(AsOfBackend { s3, at, objects })
    }

    fn found(&self, kind: ObjectKind, name: &str) -> Result<&ObjectVersion> {
        super::check_name(kind, name)?;
        self.objects
            .get(&(kind, name.to_string()))
            .ok_or_else(|| missing(kind, name))
    }

    fn refuse(&self, action: &str, kind: ObjectKind, name: &str) -> StoreError {
        StoreError::Invalid(format!(
            "{}: cannot {action} {} {name}: the repository is opened --as-of {} (read-only); \
             drop --as-of to write",
            self.location(),
            kind.label(),
            self.at
        ))
    }
}

impl Backend for AsOfBackend {
    fn location(&self) -> String {
        format!("{} as of {}", self.s3.location(), self.at)
    }

    fn parallelism(&self) -> usize {
        self.s3.parallelism()
    }

    fn create(&self, kind: ObjectKind, name: &str, _bytes: &[u8]) -> Result<Created> {
        Err(self.refuse("write", kind, name))
    }

    fn read(&self, kind: ObjectKind, name: &str, limit: u64) -> Result<Vec<u8>> {
        let version = self.found(kind, name)?;
        if version.size > limit {
            return Err(too_large(kind, name, version.size, limit));
        }
        let what = format!("{} {name}", kind.label());
        // The listing's size bounds the read; a longer body is refused.
        let limit = usize::try_from(version.size).unwrap_or(usize::MAX);
        self.s3
            .read_version(&version.key, &version.version_id, None, limit, &what)
    }

    fn read_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>> {
        let version = self.found(kind, name)?;
        let end = offset
            .checked_add(length)
            .filter(|end| *end <= version.size)
            .ok_or_else(|| past_end(kind, name, offset, length, version.size))?;
        if length == 0 {
            return Ok(Vec::new());
        }
        let what = format!("{} {name}", kind.label());
        let limit = usize::try_from(length).unwrap_or(usize::MAX);
        let bytes = self.s3.read_version(
            &version.key,
            &version.version_id,
            Some((offset, end)),
            limit,
            &what,
        )?;
        if bytes.len() as u64 != length {
            return Err(past_end(kind, name, offset, length, version.size));
        }
        Ok(bytes)
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        Ok(self
            .objects
            .iter()
            .filter(|((of, _), _)| *of == kind)
            .map(|((_, name), version)| ObjectInfo {
                name: name.clone(),
                size: version.size,
                modified: Some(SystemTime::from(version.modified)),
            })
            .collect())
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        Err(self.refuse("delete", kind, name))
    }
}

/// The text of the first `<tag>` element in `text`, unescaped.
fn field(text: &str, tag: &str) -> Option<String> {
    let start = text.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = start + text[start..].find(&format!("</{tag}>"))?;
    Some(unescape(&text[start..end]))
}

/// XML's five predefined entities; S3's replies use no others in the
/// fields read here (keys cairn writes are letters, digits, `/`, `-`, `_`).
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// A time given as `--as-of`: RFC 3339 (`2026-12-06T13:00:00Z`, or with
/// an offset).
pub fn parse_as_of(text: &str) -> Result<Timestamp> {
    parse_time(text).ok_or_else(|| {
        StoreError::Invalid(format!(
            "--as-of {text:?}: give a time as RFC 3339, e.g. 2026-12-06T13:00:00Z"
        ))
    })
}

fn parse_time(text: &str) -> Option<Timestamp> {
    text.trim().parse::<Timestamp>().ok()
}

/// The `<Version>` and `<DeleteMarker>` entries of a ListObjectVersions
/// page, in the order listed.
fn parse_versions(text: &str) -> std::result::Result<Vec<ObjectVersion>, String> {
    let mut entries = Vec::new();
    let mut rest = text;
    loop {
        let version = rest.find("<Version>").map(|at| (at, "Version"));
        let marker = rest.find("<DeleteMarker>").map(|at| (at, "DeleteMarker"));
        let (at, tag) = match (version, marker) {
            (Some(v), Some(m)) => {
                if v.0 < m.0 {
                    v
                } else {
                    m
                }
            }
            (Some(v), None) => v,
            (None, Some(m)) => m,
            (None, None) => return Ok(entries),
        };
        let body_start = at + tag.len() + 2;
        let close = format!("</{tag}>");
        let body_end = body_start
            + rest[body_start..]
                .find(&close)
                .ok_or_else(|| format!("an unclosed <{tag}>"))?;
        let body = &rest[body_start..body_end];
        let get = |name: &str| field(body, name).ok_or_else(|| format!("a <{tag}> without {name}"));
        let modified = get("LastModified")?;
        entries.push(ObjectVersion {
            key: get("Key")?,
            version_id: get("VersionId")?,
            modified: parse_time(&modified).ok_or_else(|| format!("bad date {modified:?}"))?,
            size: match tag {
                "Version" => get("Size")?
                    .parse()
                    .map_err(|_| format!("a <{tag}> with a bad Size"))?,
                _ => 0,
            },
            delete_marker: tag == "DeleteMarker",
        });
        rest = &rest[body_end + close.len()..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_listings_parse_in_order() {
        let page = "<ListVersionsResult><IsTruncated>false</IsTruncated>\
            <DeleteMarker><Key>r/config</Key><VersionId>m1</VersionId><IsLatest>true</IsLatest>\
            <LastModified>2026-12-06T13:00:02.000Z</LastModified></DeleteMarker>\
            <Version><Key>r/config</Key><VersionId>v1</VersionId><IsLatest>false</IsLatest>\
            <LastModified>2026-12-06T13:00:01.000Z</LastModified><Size>42</Size></Version>\
            </ListVersionsResult>";
        let versions = parse_versions(page).unwrap();
        assert_eq!(versions.len(), 2);
        assert!(versions[0].delete_marker && versions[0].version_id == "m1");
        assert_eq!((versions[1].size, versions[1].delete_marker), (42, false));
        let before = parse_time("2026-12-06T13:00:01.500Z");
        assert_eq!(newest_at(&versions, before).unwrap().version_id, "v1");
        assert!(newest_at(&versions, None).unwrap().delete_marker);
        assert!(newest_at(&versions, parse_time("2026-12-06T12:00:00Z")).is_none());
        assert!(parse_versions("<Version><Key>x</Key></Version>").is_err());
    }
}
