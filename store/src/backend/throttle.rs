//! [`Throttled`]: a backend whose uploads and downloads are held to a rate
//! (`--limit-upload`, `--limit-download`), so a nightly backup does not
//! fill the office's uplink.
//!
//! Each direction is a token bucket shared by every thread using the
//! backend: a transfer of N bytes takes N tokens, the bucket refills at the
//! rate and holds at most one second's worth, so after a pause the first
//! second may go at full speed and the average never exceeds the rate. A
//! write and a ranged read wait before they are sent (their size is known);
//! a whole-object read is charged once its bytes are in (its size is not
//! known before), so the next transfer waits. Listings and
//! deletes are not charged: they are small. Never changes what is read or
//! written, only when.

use super::{Backend, Created, ObjectInfo, ObjectKind};
use crate::error::Result;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Byte rates per direction; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimits {
    /// Bytes per second written.
    pub upload: Option<u64>,
    /// Bytes per second read.
    pub download: Option<u64>,
}

impl RateLimits {
    pub fn is_unlimited(&self) -> bool {
        self.upload.is_none() && self.download.is_none()
    }
}

/// Parses a rate: a number of KiB/s (`512`), or a number with a unit
/// (`512K`, `512KiB`, `4M`, `4MiB/s`, `1G`); units are binary. Returns bytes
/// per second, at least 1.
pub fn parse_rate(text: &str) -> std::result::Result<u64, String> {
    let trimmed = text.trim();
    let trimmed = trimmed.strip_suffix("/s").unwrap_or(trimmed);
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a rate (e.g. 512, 512KiB, 4MiB)"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "k" | "kb" | "kib" => 1 << 10,
        "b" => 1,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{text:?}: unknown unit (B, KiB, MiB, GiB)")),
    };
    let rate = number * multiplier as f64;
    if !(rate >= 1.0 && rate.is_finite()) {
        return Err(format!("{text:?}: a rate must be at least 1 byte a second"));
    }
    Ok(rate as u64)
}

/// One direction's bucket, kept as the time at which it is next full
/// enough (the "virtual scheduling" form of a token bucket: one instant
/// instead of a count and a refill time).
struct Bucket {
    rate: f64,
    /// When the bytes granted so far have all been paid for.
    paid_until: Mutex<Instant>,
}

impl Bucket {
    fn new(rate: u64) -> Bucket {
        Bucket {
            rate: rate as f64,
            // Full at the start: the first second's worth goes at once.
            paid_until: Mutex::new(
                Instant::now()
                    .checked_sub(Duration::from_secs(1))
                    .unwrap_or_else(Instant::now),
            ),
        }
    }

    /// Charges `bytes` and sleeps until the rate allows them.
    fn take(&self, bytes: usize) {
        let now = Instant::now();
        let wait = {
            let mut paid = self
                .paid_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // A bucket idle for long holds at most one second's worth.
            let burst_start = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
            if *paid < burst_start {
                *paid = burst_start;
            }
            *paid += Duration::from_secs_f64(bytes as f64 / self.rate);
            paid.saturating_duration_since(now)
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

pub struct Throttled {
    inner: Arc<dyn Backend>,
    upload: Option<Bucket>,
    download: Option<Bucket>,
}

impl Throttled {
    pub fn new(inner: Arc<dyn Backend>, limits: RateLimits) -> Throttled {
        Throttled {
            inner,
            upload: limits.upload.map(Bucket::new),
            download: limits.download.map(Bucket::new),
        }
    }
}

impl Backend for Throttled {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn parallelism(&self) -> usize {
        self.inner.parallelism()
    }

    fn prefetch(&self, kind: ObjectKind, name: &str) {
        self.inner.prefetch(kind, name)
    }

    fn prefetches(&self) -> bool {
        self.inner.prefetches()
    }

    fn remove_stale_temporaries(&self) -> Result<usize> {
        self.inner.remove_stale_temporaries()
    }

    fn create(&self, kind: ObjectKind, name: &str, bytes: &[u8]) -> Result<Created> {
        if let Some(bucket) = &self.upload {
            bucket.take(bytes.len());
        }
        self.inner.create(kind, name, bytes)
    }

    fn read(&self, kind: ObjectKind, name: &str, limit: u64) -> Result<Vec<u8>> {
        let bytes = self.inner.read(kind, name, limit)?;
        if let Some(bucket) = &self.download {
            bucket.take(bytes.len());
        }
        Ok(bytes)
    }

    fn read_range(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>> {
        if let Some(bucket) = &self.download {
            bucket.take(usize::try_from(length).unwrap_or(usize::MAX));
        }
        self.inner.read_range(kind, name, offset, length)
    }

    fn read_range_into(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        length: u64,
        buffer: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some(bucket) = &self.download {
            bucket.take(usize::try_from(length).unwrap_or(usize::MAX));
        }
        self.inner
            .read_range_into(kind, name, offset, length, buffer)
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        self.inner.list(kind)
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        self.inner.delete(kind, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;

    #[test]
    fn rates_parse_with_and_without_units() {
        assert_eq!(parse_rate("512").unwrap(), 512 * 1024);
        assert_eq!(parse_rate("512KiB").unwrap(), 512 * 1024);
        assert_eq!(parse_rate("4MiB/s").unwrap(), 4 << 20);
        assert_eq!(parse_rate("1.5M").unwrap(), 3 << 19);
        assert_eq!(parse_rate("100B").unwrap(), 100);
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("3 parsecs").is_err());
    }

    #[test]
    fn transfers_are_held_to_the_rate() {
        let limits = RateLimits {
            upload: Some(100 * 1024),
            download: Some(200 * 1024),
        };
        let backend = Throttled::new(Arc::new(MemoryBackend::new()), limits);
        let block = vec![7u8; 50 * 1024];
        let started = Instant::now();
        // The first second's worth passes at once; 300 KiB more at
        // 100 KiB/s take about three seconds.
        for index in 0..8 {
            let name = format!("{:064x}", index);
            backend.create(ObjectKind::Pack, &name, &block).unwrap();
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(2800) && elapsed < Duration::from_secs(6),
            "400 KiB at 100 KiB/s took {elapsed:?}"
        );
        let started = Instant::now();
        for index in 0..8 {
            let name = format!("{:064x}", index);
            backend.read(ObjectKind::Pack, &name, 1 << 20).unwrap();
        }
        // Downloads have their own bucket: 400 KiB at 200 KiB/s, the first
        // 200 KiB at once, the last read's charge not waited for.
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
