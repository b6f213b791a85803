//! The reach of S3 calls object_store cannot make (versions, retention,
//! Object Lock, puts with Content-MD5): the bucket's signed-URL base and
//! one HTTP client, built with the S3 backend. Owns only that set-up; the
//! calls themselves are `s3_versions`'s, and it never reads credentials
//! or decides anything about objects.

use crate::error::{Result, StoreError};
use rusty_s3::{Bucket, UrlStyle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The reach of the raw calls: the bucket's URL and region, captured when
/// the backend is built, and one HTTP client.
pub(super) struct RawAccess {
    pub(super) bucket: Bucket,
    pub(super) client: reqwest::Client,
    /// Set once the bucket refused a put without Content-MD5 (Object Lock
    /// with a default retention): every put is then made here.
    content_md5: AtomicBool,
}

impl RawAccess {
    /// `endpoint` is the service URL (path-style addressing, as the
    /// backend uses for S3-compatible services); Amazon S3's regional,
    /// virtual-hosted endpoint when absent.
    pub(super) fn new(
        bucket: &str,
        region: Option<String>,
        endpoint: Option<&str>,
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
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|error| invalid(format!("cannot set up the HTTP client: {error}")))?;
        Ok(RawAccess {
            bucket,
            client,
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
