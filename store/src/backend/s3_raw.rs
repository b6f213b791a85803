//! The reach of S3 calls object_store cannot make (versions, retention,
//! Object Lock, puts with Content-MD5): the bucket's signed-URL base and
//! its HTTP clients (one for requests that send a body, one with the
//! idle-read timeout for those that do not, as the backend's own), built
//! with the S3 backend. Owns only that set-up; the
//! calls themselves are `s3_versions`'s, and it never reads credentials
//! or decides anything about objects.

use crate::error::{Result, StoreError};
use rusty_s3::{Bucket, UrlStyle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The reach of the raw calls: the bucket's URL and region, captured when
/// the backend is built, and the HTTP clients.
pub(super) struct RawAccess {
    pub(super) bucket: Bucket,
    /// For requests that send a body (puts with Content-MD5).
    pub(super) client: reqwest::Client,
    /// For requests that send none, with the idle-read timeout: apart from
    /// `client` because its read timer also runs while a body goes up.
    pub(super) reader: reqwest::Client,
    pub(super) read_timeout: Duration,
    /// Set once the bucket refused a put without Content-MD5 (Object Lock
    /// with a default retention): every put is then made here.
    content_md5: AtomicBool,
}

impl RawAccess {
    /// `endpoint` is the service URL (path-style addressing, as the
    /// backend uses for S3-compatible services); Amazon S3's regional,
    /// virtual-hosted endpoint when absent. `read_timeout` is the
    /// repository's idle-read timeout.
    pub(super) fn new(
        bucket: &str,
        region: Option<String>,
        endpoint: Option<&str>,
        read_timeout: Duration,
    ) -> Result<RawAccess> {
        let region = region.unwrap_or_else(|| "us-east-1".into());
        let invalid =
            |reason: String| StoreError::Invalid(format!("S3 bucket `{bucket}`: {reason}"));
        let (base, style) = match endpoint {
            Some(endpoint) => (endpoint.to_string(), UrlStyle::Path),
            None => (
                format!("https://s3.{region}.amazonaws.com"),
                UrlStyle::VirtualHost,
            ),
        };
        let url = url::Url::parse(&base).map_err(|error| invalid(format!("{base}: {error}")))?;
        let bucket = Bucket::new(url, style, bucket.to_string(), region)
            .map_err(|error| invalid(error.to_string()))?;
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .timeout(super::REQUEST_TIMEOUT)
        };
        let built = |built: reqwest::Result<reqwest::Client>| {
            built.map_err(|error| invalid(format!("cannot set up the HTTP client: {error}")))
        };
        let client = built(builder().build())?;
        let reader = built(builder().read_timeout(read_timeout).build())?;
        Ok(RawAccess {
            bucket,
            client,
            reader,
            read_timeout,
            content_md5: AtomicBool::new(false),
        })
    }

    pub(super) fn content_md5(&self) -> bool {
        self.content_md5.load(Ordering::Relaxed)
    }

    pub(super) fn require_content_md5(&self) {
        self.content_md5.store(true, Ordering::Relaxed);
    }
}
