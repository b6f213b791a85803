//! Preflight verdicts: checks a snapshot must pass before a restore writes
//! anything. Each check yields `ok` or names what is wrong; the CLI stops
//! on anything but `ok` unless the user overrides that one check.

use super::RestorePlan;
use crate::error::{Result, StoreError};
use crate::format::keys::PublicKey;
use crate::format::manifest::{SignedManifest, SnapshotBody, TrustFailure};
use serde::Serialize;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ok,
    Untrusted,
    BadSignature,
    TooOld,
    MissingChunks,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// `signature`, `age` or `chunks`.
    pub check: &'static str,
    pub status: Status,
    pub detail: String,
}

pub fn signature(manifest: &SignedManifest, trusted: &[PublicKey]) -> Verdict {
    let (status, detail) = match manifest.verify(trusted) {
        Ok(()) => (
            Status::Ok,
            format!("signed by trusted key {}", manifest.signer().to_hex()),
        ),
        Err(failure @ TrustFailure::UntrustedSigner(_)) => (Status::Untrusted, failure.to_string()),
        Err(failure @ TrustFailure::BadSignature) => (Status::BadSignature, failure.to_string()),
    };
    Verdict {
        check: "signature",
        status,
        detail,
    }
}

pub fn age(body: &SnapshotBody, max_age: Option<Duration>) -> Result<Verdict> {
    let taken: jiff::Timestamp = body.time.parse().map_err(|error| {
        StoreError::corrupt(
            "snapshot manifest",
            format!("bad time {:?}: {error}", body.time),
        )
    })?;
    let age = jiff::Timestamp::now().duration_since(taken);
    let age_text = format!("{}s", age.as_secs());
    Ok(match max_age {
        Some(limit) if age.as_secs() > 0 && age.unsigned_abs() > limit => Verdict {
            check: "age",
            status: Status::TooOld,
            detail: format!(
                "taken {age_text} ago, more than --max-age {}s",
                limit.as_secs()
            ),
        },
        _ => Verdict {
            check: "age",
            status: Status::Ok,
            detail: format!("taken {age_text} ago"),
        },
    })
}

pub fn chunks(plan: &RestorePlan) -> Verdict {
    let missing: Vec<String> =
        plan.components
            .iter()
            .flat_map(|component| {
                component
                    .missing_chunks
                    .iter()
                    .map(move |(path, chunk)| {
                        format!("{}/{path} needs chunk {}", component.name, chunk.short())
                    })
                    .chain(
                        component.unreadable.iter().map(move |(path, error)| {
                            format!("{}/{path}: {error}", component.name)
                        }),
                    )
            })
            .collect();
    if missing.is_empty() {
        Verdict {
            check: "chunks",
            status: Status::Ok,
            detail: "every chunk and tree it needs is indexed".into(),
        }
    } else {
        let shown: Vec<&str> = missing.iter().take(5).map(String::as_str).collect();
        Verdict {
            check: "chunks",
            status: Status::MissingChunks,
            detail: format!("{} missing: {}", missing.len(), shown.join("; ")),
        }
    }
}

/// Parses `90s`, `15m`, `36h`, `7d`, `2w`.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 36h or 7d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "{text:?} has an unknown unit (use s, m, h, d or w)"
            ));
        }
    };
    number
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("36h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("7 parsecs").is_err());
        assert!(parse_duration("-3d").is_err());
        assert!(parse_duration("").is_err());
    }
}
