//! The one reading of the retention flags (`RetentionArgs`) into the
//! library's policy, grouping and safety span, shared by `forget` (which
//! applies a policy) and `stats` (which prices one), so the same words
//! cannot mean two things or fail with two exit codes.
//!
//! Every fault here is the caller's: it is a usage error (exit 2) naming
//! the flag and the value. Never opens a repository and never decides what
//! a policy keeps; that is `cairn_store::ops::retention`.

use crate::args::RetentionArgs;
use crate::context::Usage;
use anyhow::Result;
use cairn_store::ops::retention::{
    GroupBy, KeepWithin, Policy, parse_group_by, parse_keep_within, validate,
};

/// What the retention flags ask for.
pub struct Retention {
    pub policy: Policy,
    pub group_by: GroupBy,
    /// `None` keeps safety snapshots forever.
    pub keep_safety: Option<KeepWithin>,
}

impl RetentionArgs {
    /// Parses and checks every retention flag; the first bad one is a
    /// usage error naming it.
    pub fn read(&self) -> Result<Retention> {
        let keep_within = self
            .keep_within
            .as_deref()
            .map(|text| {
                parse_keep_within(text).map_err(|error| Usage::flag("--keep-within", text, error))
            })
            .transpose()?;
        let policy = Policy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within,
            keep_tags: self.keep_tags.clone(),
        };
        // The library's message names the flag (`--keep-daily 0 ...`).
        validate(&policy).map_err(|error| Usage(error.to_string()))?;
        let group_by = parse_group_by(&self.group_by)
            .map_err(|error| Usage::flag("--group-by", &self.group_by, error))?;
        let keep_safety = match self.keep_safety.as_str() {
            "forever" => None,
            span => Some(parse_keep_within(span).map_err(|error| {
                Usage::flag("--keep-safety", span, format!("{error} (or \"forever\")"))
            })?),
        };
        Ok(Retention {
            policy,
            group_by,
            keep_safety,
        })
    }
}
