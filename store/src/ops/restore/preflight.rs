//! Preflight verdicts: checks a snapshot must pass before a restore writes
//! anything. Each check yields `ok` or names what is wrong; a
//! [`PreflightPolicy`] says which of them stop the restore: anything but
//! `ok`, unless the policy overrides that one check. Judges; never reads
//! the target (only its filesystems' free space, for [`space`]) or writes
//! anything.

use super::plan::ComponentPlan;
use crate::error::{Result, StoreError};
use crate::format::keys::PublicKey;
use crate::format::manifest::{SignedManifest, SnapshotBody, TrustFailure};
use crate::id::Id;
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
    /// The snapshot was taken by a newer version of the application than
    /// the one running (or one that cannot be ordered against it).
    VersionAhead,
    /// A target filesystem has fewer free bytes or inodes than the restore
    /// writes.
    LowSpace,
}

/// Which verdicts stop a restore. The default stops on anything but `ok`
/// and sets no age limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PreflightPolicy {
    /// A snapshot taken longer ago than this is `too-old`.
    pub max_age: Option<Duration>,
    /// Restore a snapshot whose signer is not trusted, or whose signature
    /// does not verify.
    pub allow_untrusted: bool,
    pub allow_too_old: bool,
    /// Restore what can be restored though chunks or trees are missing.
    pub allow_missing_chunks: bool,
    /// Restore a snapshot taken by a newer application version.
    pub allow_version_ahead: bool,
    /// Restore though a target filesystem looks too full.
    pub allow_low_space: bool,
}

impl PreflightPolicy {
    /// Whether a verdict of this status lets the restore go on.
    pub fn allows(&self, status: Status) -> bool {
        match status {
            Status::Ok => true,
            Status::Untrusted | Status::BadSignature => self.allow_untrusted,
            Status::TooOld => self.allow_too_old,
            Status::MissingChunks => self.allow_missing_chunks,
            Status::VersionAhead => self.allow_version_ahead,
            Status::LowSpace => self.allow_low_space,
        }
    }

    /// The first verdict that stops the restore, if any.
    pub fn refusal<'v>(&self, verdicts: &'v [Verdict]) -> Option<&'v Verdict> {
        verdicts.iter().find(|verdict| !self.allows(verdict.status))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// `signature`, `age` or `chunks`.
    pub check: &'static str,
    pub status: Status,
    pub detail: String,
}

pub fn signature(manifest: &SignedManifest, repository: &Id, trusted: &[PublicKey]) -> Verdict {
    let (status, detail) = match manifest.verify(repository, trusted) {
        Ok(()) => (
            Status::Ok,
            format!("signed by trusted key {}", manifest.signer().to_hex()),
        ),
        // Another repository's manifest is untrusted here, however valid
        // its signature is there.
        Err(failure @ (TrustFailure::UntrustedSigner(_) | TrustFailure::OtherRepository(_))) => {
            (Status::Untrusted, failure.to_string())
        }
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

/// `2` and `2.4` as `2.0.0` and `2.4.0` (release numbers often leave
/// out what is zero); anything else as it is.
fn padded(version: &str) -> String {
    let end = version.find(['-', '+']).unwrap_or(version.len());
    let (core, rest) = version.split_at(end);
    let parts = core.split('.').count();
    let numeric = core
        .split('.')
        .all(|part| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit()));
    if numeric && parts < 3 {
        format!("{core}{}{rest}", ".0".repeat(3 - parts))
    } else {
        version.to_string()
    }
}

/// Compares the application version the snapshot records with the one
/// running (`current`). Both semantic versions (a leading `v` allowed, and
/// `2.4` read as `2.4.0`):
/// ahead when the snapshot's is newer by semver precedence (build metadata
/// ignored). Otherwise they can only be equal or not: equal is `ok`, and
/// unequal is `version-ahead`, since nothing shows the snapshot is not
/// newer and a runbook must not restore data from the future. A snapshot
/// that records no version is `ok`, said in the detail.
pub fn version(body: &SnapshotBody, current: &str) -> Verdict {
    let verdict = |status, detail| Verdict {
        check: "version",
        status,
        detail,
    };
    let Some(recorded) = &body.app_version else {
        return verdict(
            Status::Ok,
            format!("the snapshot records no application version; not compared with {current}"),
        );
    };
    let parse =
        |text: &str| semver::Version::parse(&padded(text.strip_prefix('v').unwrap_or(text))).ok();
    match (parse(recorded), parse(current)) {
        (Some(taken), Some(running)) => {
            let key = |v: &semver::Version| (v.major, v.minor, v.patch, v.pre.clone());
            if key(&taken) > key(&running) {
                verdict(
                    Status::VersionAhead,
                    format!("taken by version {recorded}, newer than the running {current}"),
                )
            } else {
                verdict(
                    Status::Ok,
                    format!("taken by version {recorded}; running {current}"),
                )
            }
        }
        _ if recorded == current => verdict(
            Status::Ok,
            format!("taken by version {recorded}, the running one"),
        ),
        _ => verdict(
            Status::VersionAhead,
            format!(
                "taken by version {recorded}, running {current}: not both semantic versions and not equal, so the snapshot cannot be shown not to be newer"
            ),
        ),
    }
}

pub fn chunks(components: &[ComponentPlan]) -> Verdict {
    let missing: Vec<String> = components
        .iter()
        .flat_map(|component| {
            component
                .missing_chunks
                .iter()
                .map(move |(path, chunk)| {
                    format!("{}/{path} needs chunk {}", component.name, chunk.short())
                })
                .chain(
                    component
                        .unreadable
                        .iter()
                        .map(move |(path, error)| format!("{}/{path}: {error}", component.name)),
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

/// Parses a point in time for `--at`: RFC 3339 with its offset
/// (`2026-12-01T14:00:00Z`, `2026-12-01T14:00:00+01:00`), or a local date
/// and time in this machine's time zone (`TZ`, else the system's):
/// `2026-12-01 14:00`, `2026-12-01 14:00:30`, `2026-12-01T14:00`. A local
/// time a clock change makes ambiguous is taken as the earlier instant,
/// and one it skips as the instant after the gap.
pub fn parse_point_in_time(text: &str) -> std::result::Result<jiff::Timestamp, String> {
    let text = text.trim();
    if let Ok(timestamp) = text.parse::<jiff::Timestamp>() {
        return Ok(timestamp);
    }
    let civil: jiff::civil::DateTime = text.parse().map_err(|_| {
        format!("{text:?} is not a time like 2026-12-01T14:00:00Z or 2026-12-01 14:00 (local)")
    })?;
    civil
        .to_zoned(jiff::tz::TimeZone::system())
        .map(|zoned| zoned.timestamp())
        .map_err(|error| format!("{text:?}: {error}"))
}

/// What the restore writes on one filesystem, and what it has free.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Needs {
    /// A path on it (the first destination planned there).
    path: std::path::PathBuf,
    bytes: u64,
    inodes: u64,
}

/// The nearest existing ancestor of `path` (itself if it exists): where
/// what is created below it will live.
fn existing_ancestor(path: &std::path::Path) -> &std::path::Path {
    path.ancestors()
        .find(|ancestor| std::fs::symlink_metadata(ancestor).is_ok())
        .unwrap_or(std::path::Path::new("/"))
}

/// Free bytes and inodes on every target filesystem against what the plan
/// writes there: every file it creates or rewrites (an update is written
/// whole beside the old file before it replaces it), rounded up to the
/// filesystem's block, and an inode for each file, directory and symlink
/// it creates or rewrites. Space that deletions free is not counted: they
/// may come after the writes.
pub fn space(components: &[ComponentPlan]) -> Verdict {
    use super::plan::Action;
    use crate::format::tree::EntryKind;
    use std::os::unix::fs::MetadataExt;
    let mut filesystems: std::collections::BTreeMap<u64, Needs> = Default::default();
    let mut unknown = Vec::new();
    for component in components {
        let on = existing_ancestor(&component.destination);
        let (device, block) = match (std::fs::metadata(on), rustix::fs::statvfs(on)) {
            (Ok(meta), Ok(stat)) => (meta.dev(), stat.f_frsize.max(1)),
            (Err(error), _) => {
                unknown.push(format!("{}: {error}", on.display()));
                continue;
            }
            (_, Err(error)) => {
                unknown.push(format!("{}: {error}", on.display()));
                continue;
            }
        };
        let needs = filesystems.entry(device).or_insert_with(|| Needs {
            path: on.to_path_buf(),
            ..Needs::default()
        });
        for item in &component.entries {
            if !matches!(
                item.action,
                Action::Create | Action::Update | Action::Replace
            ) {
                continue;
            }
            needs.inodes += 1;
            if item.entry.kind == EntryKind::File {
                needs.bytes = needs
                    .bytes
                    .saturating_add(item.entry.size.div_ceil(block).saturating_mul(block));
            }
        }
        // A staged component's staging directory.
        needs.inodes += u64::from(component.staging.is_some());
    }
    let mut short = Vec::new();
    let mut fine = Vec::new();
    for needs in filesystems.values() {
        let stat = match rustix::fs::statvfs(&needs.path) {
            Ok(stat) => stat,
            Err(error) => {
                unknown.push(format!("{}: {error}", needs.path.display()));
                continue;
            }
        };
        let free_bytes = stat.f_bavail.saturating_mul(stat.f_frsize);
        // A filesystem without an inode count (some report 0 files) has no
        // inode limit.
        let free_inodes = if stat.f_files == 0 {
            u64::MAX
        } else {
            stat.f_favail
        };
        let line = format!(
            "{}: needs {} bytes and {} inodes, has {} bytes and {} inodes free",
            needs.path.display(),
            needs.bytes,
            needs.inodes,
            free_bytes,
            if free_inodes == u64::MAX {
                "unlimited".to_string()
            } else {
                free_inodes.to_string()
            }
        );
        if needs.bytes > free_bytes || needs.inodes > free_inodes {
            short.push(line);
        } else {
            fine.push(line);
        }
    }
    let (status, mut detail) = if short.is_empty() {
        (Status::Ok, fine.join("; "))
    } else {
        (
            Status::LowSpace,
            format!("too little free space on {}", short.join("; ")),
        )
    };
    if !unknown.is_empty() {
        // Cannot be judged: said, and left to the writes to find out.
        detail.push_str(&format!("; not checked: {}", unknown.join("; ")));
    }
    Verdict {
        check: "space",
        status,
        detail,
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
    fn versions_compare_by_semver_precedence_else_only_as_equal() {
        let scene = crate::ops::restore::testing::Scene::new(|root| {
            std::fs::write(root.join("file"), b"x").expect("file");
            vec![("file", root.join("file"), false)]
        });
        let status = |recorded: Option<&str>, current: &str| {
            let body = SnapshotBody {
                app_version: recorded.map(str::to_string),
                ..scene.body.clone()
            };
            version(&body, current).status
        };
        assert_eq!(status(Some("2.10.0"), "2.9.1"), Status::VersionAhead);
        assert_eq!(status(Some("2.9.1"), "v2.10.0"), Status::Ok);
        assert_eq!(status(Some("2.1.0"), "2.1.0-rc.1"), Status::VersionAhead);
        assert_eq!(status(Some("2.1.0+build.9"), "2.1.0+build.1"), Status::Ok);
        assert_eq!(status(Some("1.2"), "1.1"), Status::VersionAhead);
        assert_eq!(status(Some("1.1"), "1.1.0"), Status::Ok);
        assert_eq!(status(Some("build-77"), "build-77"), Status::Ok);
        assert_eq!(status(Some("build-77"), "build-78"), Status::VersionAhead);
        assert_eq!(status(None, "3.0.0"), Status::Ok);
    }

    #[test]
    fn a_point_in_time_is_rfc_3339_or_local() {
        assert_eq!(
            parse_point_in_time("2026-12-01T14:00:00+01:00")
                .expect("rfc 3339")
                .to_string(),
            "2026-12-01T13:00:00Z"
        );
        let local = |text| parse_point_in_time(text).expect("local time");
        assert_eq!(local("2026-12-01 14:00"), local("2026-12-01T14:00:00"));
        assert!(parse_point_in_time("yesterday at noon").is_err());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("36h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("7 parsecs").is_err());
        assert!(parse_duration("-3d").is_err());
        assert!(parse_duration("").is_err());
    }

    fn verdict(check: &'static str, status: Status) -> Verdict {
        Verdict {
            check,
            status,
            detail: String::new(),
        }
    }

    #[test]
    fn the_default_policy_stops_on_every_status_but_ok() {
        let policy = PreflightPolicy::default();
        assert!(policy.allows(Status::Ok));
        for status in [
            Status::Untrusted,
            Status::BadSignature,
            Status::TooOld,
            Status::MissingChunks,
        ] {
            assert!(!policy.allows(status), "{status:?}");
        }
    }

    #[test]
    fn each_override_lets_through_its_own_check_and_no_other() {
        let untrusted = PreflightPolicy {
            allow_untrusted: true,
            ..PreflightPolicy::default()
        };
        assert!(untrusted.allows(Status::Untrusted) && untrusted.allows(Status::BadSignature));
        assert!(!untrusted.allows(Status::TooOld) && !untrusted.allows(Status::MissingChunks));
        let too_old = PreflightPolicy {
            allow_too_old: true,
            ..PreflightPolicy::default()
        };
        assert!(too_old.allows(Status::TooOld));
        assert!(!too_old.allows(Status::Untrusted) && !too_old.allows(Status::MissingChunks));
        let missing = PreflightPolicy {
            allow_missing_chunks: true,
            ..PreflightPolicy::default()
        };
        assert!(missing.allows(Status::MissingChunks));
        assert!(!missing.allows(Status::BadSignature) && !missing.allows(Status::TooOld));
    }

    #[test]
    fn the_refusal_is_the_first_verdict_the_policy_does_not_override() {
        let verdicts = [
            verdict("signature", Status::BadSignature),
            verdict("age", Status::TooOld),
            verdict("chunks", Status::Ok),
        ];
        let strict = PreflightPolicy::default();
        assert_eq!(
            strict.refusal(&verdicts).map(|v| v.check),
            Some("signature")
        );
        let untrusted = PreflightPolicy {
            allow_untrusted: true,
            ..PreflightPolicy::default()
        };
        assert_eq!(untrusted.refusal(&verdicts).map(|v| v.check), Some("age"));
        let both = PreflightPolicy {
            allow_too_old: true,
            ..untrusted
        };
        assert_eq!(both.refusal(&verdicts), None);
    }

    #[test]
    fn a_snapshot_older_than_the_policy_allows_is_too_old() {
        let scene = crate::ops::restore::testing::Scene::new(|root| {
            std::fs::write(root.join("file"), b"x").expect("file");
            vec![("file", root.join("file"), false)]
        });
        let body = |time: &str| SnapshotBody {
            time: time.into(),
            ..scene.body.clone()
        };
        let day = Some(Duration::from_secs(86_400));
        let old = age(&body("2020-01-01T00:00:00Z"), day).expect("a verdict");
        assert_eq!(old.status, Status::TooOld);
        assert!(
            old.detail.contains("more than --max-age 86400s"),
            "{}",
            old.detail
        );
        let now = crate::ops::common::now_rfc3339();
        assert_eq!(age(&body(&now), day).expect("a verdict").status, Status::Ok);
        assert_eq!(
            age(&body("2020-01-01T00:00:00Z"), None)
                .expect("a verdict")
                .status,
            Status::Ok,
            "no limit, no verdict against it"
        );
        assert!(age(&body("yesterday"), day).is_err());
    }
}
