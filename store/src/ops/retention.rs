//! Retention policies: which snapshots `cairn forget` keeps, and why.
//!
//! Owns the policy (`--keep-last`, `--keep-hourly` … `--keep-yearly`,
//! `--keep-within`, `--keep-tag`), the `--group-by` choice, and the decision
//! for each snapshot with every rule that keeps it. The semantics are
//! restic's `forget` policies, which users already know: snapshots are
//! grouped, each group is walked newest first, a bucket rule keeps the
//! newest snapshot of each of its N most recent buckets, and `keep-within`
//! is measured from the newest snapshot of the group, not from now.
//!
//! Pure: it is handed the facts of each snapshot and returns decisions. It
//! never touches a repository, never deletes anything and never reads the
//! clock, so a `--dry-run` and the real run cannot disagree.

use crate::error::{Result, StoreError};
use crate::id::Id;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// What `forget` keeps. Every rule is optional; a snapshot kept by any rule
/// stays.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_within: Option<KeepWithin>,
    pub keep_tags: Vec<String>,
}

impl Policy {
    /// True when no rule is given at all (such a policy keeps nothing).
    pub fn is_empty(&self) -> bool {
        self.counts().iter().all(|(_, count)| count.is_none())
            && self.keep_within.is_none()
            && self.keep_tags.is_empty()
    }

    /// The policy in flag words, for the record, e.g.
    /// `keep-last 7, keep-daily 14, keep-within 30d, keep-tag important`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .counts()
            .iter()
            .filter_map(|(flag, count)| count.map(|count| format!("{flag} {count}")))
            .collect();
        if let Some(within) = &self.keep_within {
            parts.push(format!("keep-within {within}"));
        }
        parts.extend(self.keep_tags.iter().map(|tag| format!("keep-tag {tag}")));
        if parts.is_empty() {
            "no keep rules".to_string()
        } else {
            parts.join(", ")
        }
    }

    fn counts(&self) -> [(&'static str, Option<u32>); 6] {
        [
            ("keep-last", self.keep_last),
            ("keep-hourly", self.keep_hourly),
            ("keep-daily", self.keep_daily),
            ("keep-weekly", self.keep_weekly),
            ("keep-monthly", self.keep_monthly),
            ("keep-yearly", self.keep_yearly),
        ]
    }
}

/// Rejects rules that were given but can keep nothing, so a typo such as
/// `--keep-daily 0` does not silently turn into "forget these".
pub fn validate(policy: &Policy) -> Result<()> {
    for (flag, count) in policy.counts() {
        if count == Some(0) {
            return Err(StoreError::Invalid(format!(
                "--{flag} 0 keeps nothing; leave the flag out instead"
            )));
        }
    }
    if policy.keep_tags.iter().any(|tag| tag.is_empty()) {
        return Err(StoreError::Invalid(
            "--keep-tag needs a tag name; an empty tag matches no snapshot".to_string(),
        ));
    }
    Ok(())
}

/// The amounts of each unit of a `--keep-within` span; 0 means "not given".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct WithinUnits {
    years: u32,
    months: u32,
    weeks: u32,
    days: u32,
    hours: u32,
}

/// A `--keep-within` span such as `30d` or `1y6m`: keep every snapshot no
/// older than the group's newest snapshot minus this span. Only
/// [`parse_keep_within`] makes one, so it is always positive and within
/// jiff's limits.
#[derive(Clone, Copy, Debug)]
pub struct KeepWithin {
    units: WithinUnits,
    // Built once at parse time, where a span jiff cannot represent is
    // reported as an error naming the text.
    span: Span,
}

// `jiff::Span` has no `Eq` (1 day is not always 24 hours), so two spans are
// equal when they were written with the same units.
impl PartialEq for KeepWithin {
    fn eq(&self, other: &Self) -> bool {
        self.units == other.units
    }
}

impl Eq for KeepWithin {}

impl KeepWithin {
    /// The span as jiff calendar units (years and months stay calendar
    /// units, so `1m` back from March 31 is February 28 or 29).
    pub fn span(&self) -> Span {
        self.span
    }

    /// The oldest time kept when the group's newest snapshot is `newest`;
    /// `None` when the span reaches back past the earliest time jiff can
    /// represent, in which case every snapshot is within it.
    pub fn cutoff(&self, newest: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        newest
            .to_zoned(zone.clone())
            .checked_sub(self.span)
            .ok()
            .map(|zoned| zoned.timestamp())
    }
}

impl fmt::Display for KeepWithin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = self.units;
        for (amount, unit) in [
            (units.years, 'y'),
            (units.months, 'm'),
            (units.weeks, 'w'),
            (units.days, 'd'),
            (units.hours, 'h'),
        ] {
            if amount > 0 {
                write!(f, "{amount}{unit}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for KeepWithin {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self> {
        parse_keep_within(text)
    }
}

/// The units of a `--keep-within` span, in the only order they may appear.
const WITHIN_UNITS: [(char, &str); 5] = [
    ('y', "years"),
    ('m', "months"),
    ('w', "weeks"),
    ('d', "days"),
    ('h', "hours"),
];

/// Parses a `--keep-within` span: positive integers each followed by one of
/// the units `y`, `m` (months), `w`, `d`, `h`, each unit at most once and in
/// that order, e.g. `30d`, `1y6m`, `1y2m3d4h`.
pub fn parse_keep_within(text: &str) -> Result<KeepWithin> {
    let fail = |why: String| StoreError::Invalid(format!("invalid duration {text:?}: {why}"));
    if text.is_empty() {
        return Err(fail(
            "empty; give a span such as 30d, 2w, 1y6m or 12h".to_string(),
        ));
    }
    let mut amounts = [0u32; 5];
    let mut seen = [false; 5];
    // Index into WITHIN_UNITS of the last unit read, to enforce the order.
    let mut last: Option<usize> = None;
    let mut number_start = 0;
    for (at, ch) in text.char_indices() {
        if ch.is_ascii_digit() {
            continue;
        }
        if ch == '-' {
            return Err(fail(
                "negative numbers are not allowed; a span reaches back from the newest snapshot"
                    .to_string(),
            ));
        }
        if !ch.is_alphabetic() {
            return Err(fail(format!(
                "unexpected character {ch:?} (write numbers and units only, e.g. 1y6m)"
            )));
        }
        let Some(slot) = WITHIN_UNITS.iter().position(|(unit, _)| *unit == ch) else {
            return Err(fail(format!("unknown unit {ch:?} (use y, m, w, d, h)")));
        };
        let number = &text[number_start..at];
        if number.is_empty() {
            return Err(fail(format!("unit {ch:?} has no number before it")));
        }
        if seen[slot] {
            return Err(fail(format!("unit {ch:?} is given twice")));
        }
        if let Some(previous) = last.filter(|previous| *previous > slot) {
            return Err(fail(format!(
                "unit {ch:?} must come before {:?} (order: y, m, w, d, h)",
                WITHIN_UNITS[previous].0
            )));
        }
        // Only digits reach here, so the one way to fail is overflow.
        let amount: u32 = number
            .parse()
            .map_err(|_| fail(format!("{number}{ch} is too long")))?;
        if amount == 0 {
            return Err(fail(format!(
                "{number}{ch} is zero; each number must be positive"
            )));
        }
        amounts[slot] = amount;
        seen[slot] = true;
        last = Some(slot);
        number_start = at + ch.len_utf8();
    }
    if number_start < text.len() {
        return Err(fail(format!(
            "number {} has no unit (use y, m, w, d, h)",
            &text[number_start..]
        )));
    }
    let units = WithinUnits {
        years: amounts[0],
        months: amounts[1],
        weeks: amounts[2],
        days: amounts[3],
        hours: amounts[4],
    };
    let too_long = |slot: usize| {
        let (unit, name) = WITHIN_UNITS[slot];
        fail(format!(
            "{}{unit} is too long ({} {name} is beyond the supported range)",
            amounts[slot], amounts[slot]
        ))
    };
    let span = Span::new()
        .try_years(units.years)
        .map_err(|_| too_long(0))?
        .try_months(units.months)
        .map_err(|_| too_long(1))?
        .try_weeks(units.weeks)
        .map_err(|_| too_long(2))?
        .try_days(units.days)
        .map_err(|_| too_long(3))?
        .try_hours(units.hours)
        .map_err(|_| too_long(4))?;
    Ok(KeepWithin { units, span })
}

/// Which facts of a snapshot split the snapshots into groups; all false
/// means one group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupBy {
    pub host: bool,
    pub components: bool,
    pub tags: bool,
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<&str> = [
            (self.host, "host"),
            (self.components, "components"),
            (self.tags, "tags"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, word)| *word)
        .collect();
        if words.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&words.join(","))
        }
    }
}

/// Parses `--group-by`: a comma list of `host`, `components`, `tags`;
/// `""` or `none` means one group.
pub fn parse_group_by(text: &str) -> Result<GroupBy> {
    let fail = |why: String| {
        StoreError::Invalid(format!(
            "invalid --group-by {text:?}: {why} (use a comma list of host, components, tags, or none)"
        ))
    };
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed == "none" {
        return Ok(GroupBy::default());
    }
    let mut group_by = GroupBy::default();
    for word in trimmed.split(',') {
        match word.trim() {
            "host" => group_by.host = true,
            "components" => group_by.components = true,
            "tags" => group_by.tags = true,
            "none" => {
                return Err(fail(
                    "\"none\" cannot be combined with other words".to_string(),
                ));
            }
            "" => return Err(fail("empty entry".to_string())),
            other => return Err(fail(format!("unknown word {other:?}"))),
        }
    }
    Ok(group_by)
}

/// The facts of one snapshot that retention looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: Id,
    pub time: Timestamp,
    pub host: String,
    pub components: Vec<String>,
    pub tags: Vec<String>,
}

/// The values a group was formed by; a field is `None` when `--group-by`
/// does not use it. Lists are sorted and deduplicated so that the order in
/// which a snapshot names its components or tags does not split a group.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    pub host: Option<String>,
    pub components: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
}

impl GroupKey {
    fn of(candidate: &Candidate, group_by: GroupBy) -> Self {
        let sorted = |list: &[String]| {
            let mut list = list.to_vec();
            list.sort();
            list.dedup();
            list
        };
        GroupKey {
            host: group_by.host.then(|| candidate.host.clone()),
            components: group_by.components.then(|| sorted(&candidate.components)),
            tags: group_by.tags.then(|| sorted(&candidate.tags)),
        }
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |value: String| {
            if value.is_empty() {
                "(none)".to_string()
            } else {
                value
            }
        };
        let mut parts = Vec::new();
        if let Some(host) = &self.host {
            parts.push(format!("host={}", shown(host.clone())));
        }
        if let Some(components) = &self.components {
            parts.push(format!("components={}", shown(components.join(","))));
        }
        if let Some(tags) = &self.tags {
            parts.push(format!("tags={}", shown(tags.join(","))));
        }
        if parts.is_empty() {
            f.write_str("ungrouped")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

/// One rule that keeps a snapshot; bucket rules carry the bucket's label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeepReason {
    Last,
    /// e.g. `2026-11-20 13h`
    Hourly(String),
    /// e.g. `2026-11-20`
    Daily(String),
    /// The ISO week, e.g. `2026-W47`.
    Weekly(String),
    /// e.g. `2026-11`
    Monthly(String),
    /// e.g. `2026`
    Yearly(String),
    Within,
    Tag(String),
    /// A restore's safety snapshot younger than `--keep-safety`.
    Safety(String),
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::Last => f.write_str("keep-last"),
            KeepReason::Hourly(bucket) => write!(f, "keep-hourly {bucket}"),
            KeepReason::Daily(bucket) => write!(f, "keep-daily {bucket}"),
            KeepReason::Weekly(bucket) => write!(f, "keep-weekly {bucket}"),
            KeepReason::Monthly(bucket) => write!(f, "keep-monthly {bucket}"),
            KeepReason::Yearly(bucket) => write!(f, "keep-yearly {bucket}"),
            KeepReason::Within => f.write_str("keep-within"),
            KeepReason::Tag(tag) => write!(f, "keep-tag {tag}"),
            KeepReason::Safety(span) => write!(f, "keep-safety {span}"),
        }
    }
}

/// The verdict on one snapshot: kept (with every rule that keeps it) or
/// forgotten (`keep` false, no reasons).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub id: Id,
    pub keep: bool,
    pub reasons: Vec<KeepReason>,
}

/// The decisions for one group, newest snapshot first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDecision {
    pub key: GroupKey,
    pub decisions: Vec<Decision>,
}

/// The calendar buckets of the count rules other than `keep-last`.
#[derive(Clone, Copy)]
enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    /// The bucket's label in civil time, which is what users see and what
    /// restic buckets by; equal labels mean the same bucket.
    fn label(self, time: &DateTime) -> String {
        match self {
            Period::Hourly => format!(
                "{:04}-{:02}-{:02} {:02}h",
                time.year(),
                time.month(),
                time.day(),
                time.hour()
            ),
            Period::Daily => format!("{:04}-{:02}-{:02}", time.year(), time.month(), time.day()),
            Period::Weekly => {
                // The ISO week year, not the calendar year: 2027-01-01 is in
                // 2026-W53, the same bucket as 2026-12-31.
                let week = time.date().iso_week_date();
                format!("{:04}-W{:02}", week.year(), week.week())
            }
            Period::Monthly => format!("{:04}-{:02}", time.year(), time.month()),
            Period::Yearly => format!("{:04}", time.year()),
        }
    }

    fn reason(self, label: String) -> KeepReason {
        match self {
            Period::Hourly => KeepReason::Hourly(label),
            Period::Daily => KeepReason::Daily(label),
            Period::Weekly => KeepReason::Weekly(label),
            Period::Monthly => KeepReason::Monthly(label),
            Period::Yearly => KeepReason::Yearly(label),
        }
    }
}

/// Groups `candidates` by `group_by` and decides, in each group, which
/// snapshots `policy` keeps. Buckets are taken in `zone`. Groups come out
/// sorted by key; within a group, newest first, ties broken by id, so the
/// same input always gives the same output whatever its order.
pub fn apply(
    policy: &Policy,
    group_by: GroupBy,
    candidates: &[Candidate],
    zone: &TimeZone,
) -> Vec<GroupDecision> {
    let mut groups: BTreeMap<GroupKey, Vec<&Candidate>> = BTreeMap::new();
    for candidate in candidates {
        groups
            .entry(GroupKey::of(candidate, group_by))
            .or_default()
            .push(candidate);
    }
    groups
        .into_iter()
        .map(|(key, mut members)| {
            members.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.id.cmp(&b.id)));
            GroupDecision {
                key,
                decisions: decide(policy, &members, zone),
            }
        })
        .collect()
}

/// The retention of a restore's safety snapshots, apart from every
/// `--keep-*` rule (they are insurance for one restore, not history): each
/// taken within `keep` of `now` is kept, older ones are forgotten; `None`
/// keeps them all. One group, newest first; `now` is the caller's, so this
/// stays pure.
pub fn apply_safety(
    candidates: &[Candidate],
    keep: Option<&KeepWithin>,
    now: Timestamp,
    zone: &TimeZone,
) -> GroupDecision {
    let mut members: Vec<&Candidate> = candidates.iter().collect();
    members.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.id.cmp(&b.id)));
    let cutoff = keep.map(|keep| keep.cutoff(now, zone));
    let reason = KeepReason::Safety(keep.map_or("forever".to_string(), |keep| keep.to_string()));
    GroupDecision {
        key: GroupKey {
            tags: Some(vec![crate::format::manifest::SAFETY_TAG.to_string()]),
            ..GroupKey::default()
        },
        decisions: members
            .iter()
            .map(|member| {
                // A span reaching past jiff's earliest time keeps everything.
                let keep = match cutoff {
                    None | Some(None) => true,
                    Some(Some(cutoff)) => member.time >= cutoff,
                };
                Decision {
                    id: member.id,
                    keep,
                    reasons: if keep {
                        vec![reason.clone()]
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect(),
    }
}

/// Applies every rule to one group, sorted newest first.
fn decide(policy: &Policy, members: &[&Candidate], zone: &TimeZone) -> Vec<Decision> {
    let mut reasons: Vec<Vec<KeepReason>> = vec![Vec::new(); members.len()];

    if let Some(count) = policy.keep_last {
        for kept in reasons.iter_mut().take(count as usize) {
            kept.push(KeepReason::Last);
        }
    }

    let civil: Vec<DateTime> = members
        .iter()
        .map(|candidate| zone.to_datetime(candidate.time))
        .collect();
    for (period, count) in [
        (Period::Hourly, policy.keep_hourly),
        (Period::Daily, policy.keep_daily),
        (Period::Weekly, policy.keep_weekly),
        (Period::Monthly, policy.keep_monthly),
        (Period::Yearly, policy.keep_yearly),
    ] {
        let Some(mut remaining) = count else {
            continue;
        };
        // Each rule tracks only its own last bucket: a snapshot kept by
        // another rule does not use up this rule's bucket.
        let mut last_bucket: Option<String> = None;
        for (at, time) in civil.iter().enumerate() {
            if remaining == 0 {
                break;
            }
            let label = period.label(time);
            if last_bucket.as_deref() != Some(label.as_str()) {
                last_bucket = Some(label.clone());
                reasons[at].push(period.reason(label));
                remaining -= 1;
            }
        }
    }

    if let (Some(within), Some(newest)) = (&policy.keep_within, members.first()) {
        let cutoff = within.cutoff(newest.time, zone);
        for (at, candidate) in members.iter().enumerate() {
            if cutoff.is_none_or(|cutoff| candidate.time >= cutoff) {
                reasons[at].push(KeepReason::Within);
            }
        }
    }

    for (index, tag) in policy.keep_tags.iter().enumerate() {
        // A tag given twice is one rule, not two reasons.
        if policy.keep_tags[..index].contains(tag) {
            continue;
        }
        for (at, candidate) in members.iter().enumerate() {
            if candidate.tags.contains(tag) {
                reasons[at].push(KeepReason::Tag(tag.clone()));
            }
        }
    }

    members
        .iter()
        .zip(reasons)
        .map(|(candidate, reasons)| Decision {
            id: candidate.id,
            keep: !reasons.is_empty(),
            reasons,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::tz;

    fn id(n: u32) -> Id {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        Id(bytes)
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn snapshot(n: u32, time: &str) -> Candidate {
        Candidate {
            id: id(n),
            time: at(time),
            host: "db1".to_string(),
            components: vec!["db".to_string()],
            tags: Vec::new(),
        }
    }

    /// Snapshots at `hours` (UTC) on every day from `first` for `days`
    /// days, numbered in time order.
    fn series(first: &str, days: i64, hours: &[i8]) -> Vec<Candidate> {
        let start: jiff::civil::Date = first.parse().unwrap();
        let mut out = Vec::new();
        for day in 0..days {
            let date = start.checked_add(jiff::Span::new().days(day)).unwrap();
            for hour in hours {
                let time = date
                    .at(*hour, 0, 0, 0)
                    .to_zoned(TimeZone::UTC)
                    .unwrap()
                    .timestamp();
                let n = out.len() as u32;
                out.push(Candidate {
                    id: id(n),
                    time,
                    host: "db1".to_string(),
                    components: vec!["db".to_string()],
                    tags: Vec::new(),
                });
            }
        }
        out
    }

    #[test]
    fn safety_snapshots_older_than_keep_safety_are_forgotten_and_younger_kept() {
        let candidates = [
            snapshot(1, "2026-11-01T10:00:00Z"),
            snapshot(2, "2026-11-25T10:00:00Z"),
            snapshot(3, "2026-12-05T10:00:00Z"),
        ];
        let now = at("2026-12-06T10:00:00Z");
        let fortnight = parse_keep_within("14d").unwrap();
        let group = apply_safety(&candidates, Some(&fortnight), now, &TimeZone::UTC);
        let verdicts: Vec<(Id, bool)> = group
            .decisions
            .iter()
            .map(|decision| (decision.id, decision.keep))
            .collect();
        assert_eq!(verdicts, vec![(id(3), true), (id(2), true), (id(1), false)]);
        assert_eq!(
            group.decisions[0].reasons,
            vec![KeepReason::Safety("14d".into())]
        );
        let forever = apply_safety(&candidates, None, now, &TimeZone::UTC);
        assert!(forever.decisions.iter().all(|decision| decision.keep));
    }

    fn one_group(policy: &Policy, candidates: &[Candidate], zone: &TimeZone) -> Vec<Decision> {
        let mut groups = apply(policy, GroupBy::default(), candidates, zone);
        assert_eq!(groups.len(), 1);
        groups.remove(0).decisions
    }

    /// (time, reasons) of each kept snapshot, newest first.
    fn kept(decisions: &[Decision], candidates: &[Candidate]) -> Vec<(String, Vec<String>)> {
        decisions
            .iter()
            .filter(|decision| decision.keep)
            .map(|decision| {
                let candidate = candidates.iter().find(|c| c.id == decision.id).unwrap();
                (
                    candidate.time.to_string(),
                    decision.reasons.iter().map(|r| r.to_string()).collect(),
                )
            })
            .collect()
    }

    fn reasons(list: &[&str]) -> Vec<String> {
        list.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn daily_keeps_the_newest_of_each_of_the_last_n_days() {
        let candidates = series("2026-11-11", 10, &[0, 6, 12, 18]);
        let policy = Policy {
            keep_daily: Some(3),
            ..Policy::default()
        };
        let decisions = one_group(&policy, &candidates, &TimeZone::UTC);
        assert_eq!(decisions.len(), 40);
        assert_eq!(
            kept(&decisions, &candidates),
            vec![
                (
                    "2026-11-20T18:00:00Z".to_string(),
                    reasons(&["keep-daily 2026-11-20"])
                ),
                (
                    "2026-11-19T18:00:00Z".to_string(),
                    reasons(&["keep-daily 2026-11-19"])
                ),
                (
                    "2026-11-18T18:00:00Z".to_string(),
                    reasons(&["keep-daily 2026-11-18"])
                ),
            ]
        );
        for decision in decisions.iter().filter(|d| !d.keep) {
            assert!(decision.reasons.is_empty());
        }
        // Newest first throughout.
        let times: Vec<Timestamp> = decisions
            .iter()
            .map(|d| candidates.iter().find(|c| c.id == d.id).unwrap().time)
            .collect();
        assert!(times.windows(2).all(|pair| pair[0] > pair[1]));
    }

    #[test]
    fn daily_buckets_follow_the_zone() {
        let candidates = vec![
            snapshot(1, "2026-11-19T23:00:00Z"),
            snapshot(2, "2026-11-20T21:00:00Z"),
            snapshot(3, "2026-11-20T22:30:00Z"),
            snapshot(4, "2026-11-20T23:30:00Z"),
        ];
        let policy = Policy {
            keep_daily: Some(5),
            ..Policy::default()
        };
        let utc = one_group(&policy, &candidates, &TimeZone::UTC);
        assert_eq!(
            kept(&utc, &candidates),
            vec![
                (
                    "2026-11-20T23:30:00Z".to_string(),
                    reasons(&["keep-daily 2026-11-20"])
                ),
                (
                    "2026-11-19T23:00:00Z".to_string(),
                    reasons(&["keep-daily 2026-11-19"])
                ),
            ]
        );
        // At +02:00 the last two are already on the 21st and the first is
        // on the 20th, together with 21:00Z (23:00 local).
        let plus_two = TimeZone::fixed(tz::offset(2));
        let local = one_group(&policy, &candidates, &plus_two);
        assert_eq!(
            kept(&local, &candidates),
            vec![
                (
                    "2026-11-20T23:30:00Z".to_string(),
                    reasons(&["keep-daily 2026-11-21"])
                ),
                (
                    "2026-11-20T21:00:00Z".to_string(),
                    reasons(&["keep-daily 2026-11-20"])
                ),
            ]
        );
    }

    #[test]
    fn hourly_labels_name_the_hour() {
        let candidates = vec![
            snapshot(1, "2026-11-20T13:05:00Z"),
            snapshot(2, "2026-11-20T13:45:00Z"),
            snapshot(3, "2026-11-20T14:10:00Z"),
        ];
        let policy = Policy {
            keep_hourly: Some(24),
            ..Policy::default()
        };
        let decisions = one_group(&policy, &candidates, &TimeZone::UTC);
        assert_eq!(
            kept(&decisions, &candidates),
            vec![
                (
                    "2026-11-20T14:10:00Z".to_string(),
                    reasons(&["keep-hourly 2026-11-20 14h"])
                ),
                (
                    "2026-11-20T13:45:00Z".to_string(),
                    reasons(&["keep-hourly 2026-11-20 13h"])
                ),
            ]
        );
    }

    #[test]
    fn weekly_uses_iso_weeks_across_the_year_boundary() {
        // Noon every day from 2026-12-20 to 2027-01-12. 2026 starts on a
        // Thursday, so it has an ISO week 53: Mon 2026-12-28 to Sun
        // 2027-01-03.
        let candidates = series("2026-12-20", 24, &[12]);
        let policy = Policy {
            keep_weekly: Some(4),
            ..Policy::default()
        };
        let decisions = one_group(&policy, &candidates, &TimeZone::UTC);
        assert_eq!(
            kept(&decisions, &candidates),
            vec![
                (
                    "2027-01-12T12:00:00Z".to_string(),
                    reasons(&["keep-weekly 2027-W02"])
                ),
                (
                    "2027-01-10T12:00:00Z".to_string(),
                    reasons(&["keep-weekly 2027-W01"])
                ),
                (
                    "2027-01-03T12:00:00Z".to_string(),
                    reasons(&["keep-weekly 2026-W53"])
                ),
                (
                    "2026-12-27T12:00:00Z".to_string(),
                    reasons(&["keep-weekly 2026-W52"])
                ),
            ]
        );
    }

    #[test]
    fn monthly_and_yearly_keep_the_newest_of_each_bucket() {
        // 03:00 UTC on the 1st and the 15th of every month, 2023-01 to
        // 2026-06.
        let mut candidates = Vec::new();
        for year in 2023..=2026 {
            let last_month = if year == 2026 { 6 } else { 12 };
            for month in 1..=last_month {
                for day in [1, 15] {
                    let n = candidates.len() as u32;
                    candidates.push(snapshot(
                        n,
                        &format!("{year:04}-{month:02}-{day:02}T03:00:00Z"),
                    ));
                }
            }
        }
        let policy = Policy {
            keep_monthly: Some(3),
            keep_yearly: Some(3),
            ..Policy::default()
        };
        let decisions = one_group(&policy, &candidates, &TimeZone::UTC);
        assert_eq!(
            kept(&decisions, &candidates),
            vec![
                (
                    "2026-06-15T03:00:00Z".to_string(),
                    reasons(&["keep-monthly 2026-06", "keep-yearly 2026"])
                ),
                (
                    "2026-05-15T03:00:00Z".to_string(),
                    reasons(&["keep-monthly 2026-05"])
                ),
                (
                    "2026-04-15T03:00:00Z".to_string(),
                    reasons(&["keep-monthly 2026-04"])
                ),
                (
                    "2025-12-15T03:00:00Z".to_string(),
                    reasons(&["keep-yearly 2025"])
                ),
                (
                    "2024-12-15T03:00:00Z".to_string(),
                    reasons(&["keep-yearly 2024"])
                ),
            ]
        );

        // At -05:00, 2026-06-01T03:00Z is still May 31 and 2026-01-01T03:00Z
        // is still 2025.
        let minus_five = TimeZone::fixed(tz::offset(-5));
        let policy = Policy {
            keep_monthly: Some(1),
            keep_yearly: Some(2),
            ..Policy::default()
        };
        let edge = vec![
            snapshot(1, "2025-12-20T03:00:00Z"),
            snapshot(2, "2026-01-01T03:00:00Z"),
            snapshot(3, "2026-05-20T03:00:00Z"),
            snapshot(4, "2026-06-01T03:00:00Z"),
        ];
        let decisions = one_group(&policy, &edge, &minus_five);
        assert_eq!(
            kept(&decisions, &edge),
            vec![
                (
                    "2026-06-01T03:00:00Z".to_string(),
                    reasons(&["keep-monthly 2026-05", "keep-yearly 2026"])
                ),
                (
                    "2026-01-01T03:00:00Z".to_string(),
                    reasons(&["keep-yearly 2025"])
                ),
            ]
        );
    }

    #[test]
    fn buckets_without_snapshots_do_not_count() {
        let candidates = vec![
            snapshot(1, "2026-01-10T00:00:00Z"),
            snapshot(2, "2026-02-10T00:00:00Z"),
            snapshot(3, "2026-05-10T00:00:00Z"),
        ];
        let policy = Policy {
            keep_monthly: Some(3),
            ..Policy::default()
        };
        let decisions = one_group(&policy, &candidates, &TimeZone::UTC);
        assert!(decisions.iter().all(|d| d.keep));
        assert_eq!(
            decisions[2].reasons,
            vec![KeepReason::Monthly("2026-01".to_string())]
        );
    }

    #[test]
    fn keep_last_and_daily_accumulate_reasons() {
        let candidates = series("2026-03-01", 3, &[8, 12, 20]);
        let policy = Policy {
            keep_last: Some(2),
            keep_daily: Some(2),
            ..Policy::default()
        };
        let decisions = one_group(&policy, &candidates, &TimeZone::UTC);
        assert_eq!(
            kept(&decisions, &candidates),
            vec![
                (
                    "2026-03-03T20:00:00Z".to_string(),
                    reasons(&["keep-last", "keep-daily 2026-03-03"])
                ),
                ("2026-03-03T12:00:00Z".to_string(), reasons(&["keep-last"])),
                (
                    "2026-03-02T20:00:00Z".to_string(),
                    reasons(&["keep-daily 2026-03-02"])
                ),
            ]
        );
        assert_eq!(decisions.iter().filter(|d| !d.keep).count(), 6);
    }

    #[test]
    fn keep_within_is_measured_from_the_newest_snapshot() {
        // Long ago, so measuring from "now" would keep nothing.
        let candidates = series("2020-01-01", 91, &[12]);
        let newest = candidates.last().unwrap().time;
        assert_eq!(newest, at("2020-03-31T12:00:00Z"));
        let policy = Policy {
            keep_within: Some(parse_keep_within("1m").unwrap()),
            ..Policy::default()
        };
        let decisions = one_group(&policy, &candidates, &TimeZone::UTC);
        // March 31 minus one month is February 29 (2020 is a leap year),
        // and the boundary itself is kept: Feb 29 plus 31 days of March.
        let kept_times: Vec<String> = kept(&decisions, &candidates)
            .into_iter()
            .map(|(time, why)| {
                assert_eq!(why, reasons(&["keep-within"]));
                time
            })
            .collect();
        assert_eq!(kept_times.len(), 32);
        assert_eq!(kept_times.last().unwrap(), "2020-02-29T12:00:00Z");

        let policy = Policy {
            keep_within: Some(parse_keep_within("2w12h").unwrap()),
            ..Policy::default()
        };
        let decisions = one_group(&policy, &candidates, &TimeZone::UTC);
        let kept_times = kept(&decisions, &candidates);
        // Cut-off 2020-03-17T00:00Z: March 17 to 31 at noon.
        assert_eq!(kept_times.len(), 15);
        assert_eq!(kept_times.last().unwrap().0, "2020-03-17T12:00:00Z");
    }

    #[test]
    fn keep_within_months_use_the_zone_calendar() {
        // Newest is 2026-03-01T02:00Z, which at -05:00 is Feb 28 21:00, so
        // one month back is Jan 28 21:00 local (Jan 29 02:00Z); in UTC it
        // would be Feb 1 02:00Z.
        let candidates = vec![
            snapshot(1, "2026-01-29T01:59:00Z"),
            snapshot(2, "2026-01-29T02:00:00Z"),
            snapshot(3, "2026-03-01T02:00:00Z"),
        ];
        let policy = Policy {
            keep_within: Some(parse_keep_within("1m").unwrap()),
            ..Policy::default()
        };
        let local = one_group(&policy, &candidates, &TimeZone::fixed(tz::offset(-5)));
        let keeps: Vec<bool> = local.iter().map(|d| d.keep).collect();
        assert_eq!(keeps, vec![true, true, false]);
        let utc = one_group(&policy, &candidates, &TimeZone::UTC);
        let keeps: Vec<bool> = utc.iter().map(|d| d.keep).collect();
        assert_eq!(keeps, vec![true, false, false]);
    }

    #[test]
    fn keep_within_beyond_the_representable_range_keeps_everything() {
        let candidates = vec![
            snapshot(1, "1990-01-01T00:00:00Z"),
            snapshot(2, "2026-01-01T00:00:00Z"),
        ];
        let policy = Policy {
            keep_within: Some(parse_keep_within("19000y").unwrap()),
            ..Policy::default()
        };
        let decisions = one_group(&policy, &candidates, &TimeZone::UTC);
        assert!(
            decisions
                .iter()
                .all(|d| d.keep && d.reasons == vec![KeepReason::Within])
        );
    }

    #[test]
    fn keep_tag_keeps_every_tagged_snapshot() {
        let mut candidates = series("2026-05-01", 5, &[1]);
        candidates[0].tags = vec!["important".to_string()];
        candidates[2].tags = vec!["nightly".to_string(), "important".to_string()];
        candidates[3].tags = vec!["nightly".to_string()];
        let policy = Policy {
            keep_tags: vec![
                "important".to_string(),
                "release".to_string(),
                "important".to_string(),
                "nightly".to_string(),
            ],
            ..Policy::default()
        };
        let decisions = one_group(&policy, &candidates, &TimeZone::UTC);
        assert_eq!(
            kept(&decisions, &candidates),
            vec![
                (
                    "2026-05-04T01:00:00Z".to_string(),
                    reasons(&["keep-tag nightly"])
                ),
                (
                    "2026-05-03T01:00:00Z".to_string(),
                    reasons(&["keep-tag important", "keep-tag nightly"])
                ),
                (
                    "2026-05-01T01:00:00Z".to_string(),
                    reasons(&["keep-tag important"])
                ),
            ]
        );
    }

    #[test]
    fn empty_policy_keeps_nothing() {
        let candidates = series("2026-05-01", 3, &[1]);
        let policy = Policy::default();
        assert!(policy.is_empty());
        assert_eq!(policy.describe(), "no keep rules");
        let decisions = one_group(&policy, &candidates, &TimeZone::UTC);
        assert_eq!(decisions.len(), 3);
        assert!(decisions.iter().all(|d| !d.keep && d.reasons.is_empty()));
        assert!(apply(&policy, GroupBy::default(), &[], &TimeZone::UTC).is_empty());
    }

    #[test]
    fn ties_are_broken_by_id_whatever_the_input_order() {
        let mut candidates = vec![
            snapshot(7, "2026-05-01T00:00:00Z"),
            snapshot(3, "2026-05-01T00:00:00Z"),
            snapshot(5, "2026-05-01T00:00:00Z"),
        ];
        let policy = Policy {
            keep_last: Some(1),
            ..Policy::default()
        };
        let first = one_group(&policy, &candidates, &TimeZone::UTC);
        candidates.reverse();
        let second = one_group(&policy, &candidates, &TimeZone::UTC);
        assert_eq!(first, second);
        let order: Vec<Id> = first.iter().map(|d| d.id).collect();
        assert_eq!(order, vec![id(3), id(5), id(7)]);
        assert!(first[0].keep && !first[1].keep && !first[2].keep);
    }

    #[test]
    fn grouping_by_host_separates_groups() {
        let mut candidates = series("2026-05-01", 4, &[1]);
        candidates[1].host = "web2".to_string();
        candidates[3].host = "web2".to_string();
        let policy = Policy {
            keep_last: Some(1),
            ..Policy::default()
        };
        let group_by = parse_group_by("host").unwrap();
        let groups = apply(&policy, group_by, &candidates, &TimeZone::UTC);
        let keys: Vec<String> = groups.iter().map(|g| g.key.to_string()).collect();
        assert_eq!(keys, vec!["host=db1", "host=web2"]);
        assert_eq!(groups[0].decisions.len(), 2);
        assert_eq!(groups[0].decisions[0].id, id(2));
        assert!(groups[0].decisions[0].keep && !groups[0].decisions[1].keep);
        assert_eq!(groups[1].decisions[0].id, id(3));
        assert!(groups[1].decisions[0].keep && !groups[1].decisions[1].keep);

        // Ungrouped, only the overall newest is kept.
        let groups = apply(&policy, GroupBy::default(), &candidates, &TimeZone::UTC);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].key.to_string(), "ungrouped");
        assert_eq!(groups[0].decisions.iter().filter(|d| d.keep).count(), 1);
    }

    #[test]
    fn grouping_by_components_ignores_their_order() {
        let mut candidates = series("2026-05-01", 4, &[1]);
        candidates[0].components = vec!["vectors".to_string(), "db".to_string()];
        candidates[1].components = vec!["db".to_string(), "vectors".to_string()];
        candidates[2].components = vec!["memory".to_string()];
        candidates[3].components = vec!["db".to_string()];
        let policy = Policy {
            keep_last: Some(1),
            ..Policy::default()
        };
        let group_by = parse_group_by("host,components").unwrap();
        let groups = apply(&policy, group_by, &candidates, &TimeZone::UTC);
        let summary: Vec<(String, usize)> = groups
            .iter()
            .map(|g| (g.key.to_string(), g.decisions.len()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("host=db1 components=db".to_string(), 1),
                ("host=db1 components=db,vectors".to_string(), 2),
                ("host=db1 components=memory".to_string(), 1),
            ]
        );
        assert_eq!(groups[1].decisions[0].id, id(1));
        assert!(groups[1].decisions[0].keep && !groups[1].decisions[1].keep);

        let mut tagged = candidates.clone();
        tagged[0].tags = vec!["nightly".to_string()];
        let groups = apply(
            &policy,
            parse_group_by("tags").unwrap(),
            &tagged,
            &TimeZone::UTC,
        );
        let keys: Vec<String> = groups.iter().map(|g| g.key.to_string()).collect();
        assert_eq!(keys, vec!["tags=(none)", "tags=nightly"]);
    }

    #[test]
    fn parse_group_by_words() {
        assert_eq!(parse_group_by("").unwrap(), GroupBy::default());
        assert_eq!(parse_group_by("none").unwrap(), GroupBy::default());
        assert_eq!(
            parse_group_by("tags, host").unwrap(),
            GroupBy {
                host: true,
                components: false,
                tags: true
            }
        );
        assert_eq!(
            parse_group_by("host,components,tags").unwrap().to_string(),
            "host,components,tags"
        );
        assert_eq!(GroupBy::default().to_string(), "none");
        assert_eq!(
            parse_group_by("host,paths").unwrap_err().to_string(),
            "invalid --group-by \"host,paths\": unknown word \"paths\" \
             (use a comma list of host, components, tags, or none)"
        );
        assert!(
            parse_group_by("host,,tags")
                .unwrap_err()
                .to_string()
                .contains("empty entry")
        );
        assert!(
            parse_group_by("none,host")
                .unwrap_err()
                .to_string()
                .contains("cannot be combined")
        );
    }

    #[test]
    fn parse_keep_within_accepts_the_documented_forms() {
        for text in ["30d", "1y6m", "12h", "2w", "1y2m3d4h", "1y1m1w1d1h"] {
            let within = parse_keep_within(text).unwrap();
            assert_eq!(within.to_string(), text);
            assert_eq!(text.parse::<KeepWithin>().unwrap(), within);
        }
        let within = parse_keep_within("1y2m3d4h").unwrap();
        let span = within.span();
        assert_eq!(
            (span.get_years(), span.get_months(), span.get_weeks()),
            (1, 2, 0)
        );
        assert_eq!((span.get_days(), span.get_hours()), (3, 4));
        assert_eq!(parse_keep_within("07d").unwrap().to_string(), "7d");
    }

    #[test]
    fn parse_keep_within_errors_name_the_text_and_the_fault() {
        let error = |text: &str| parse_keep_within(text).unwrap_err().to_string();
        assert_eq!(
            error("3x"),
            "invalid duration \"3x\": unknown unit 'x' (use y, m, w, d, h)"
        );
        assert_eq!(
            error("1y3M"),
            "invalid duration \"1y3M\": unknown unit 'M' (use y, m, w, d, h)"
        );
        assert_eq!(
            error(""),
            "invalid duration \"\": empty; give a span such as 30d, 2w, 1y6m or 12h"
        );
        assert_eq!(
            error("-3d"),
            "invalid duration \"-3d\": negative numbers are not allowed; \
             a span reaches back from the newest snapshot"
        );
        assert_eq!(
            error("1d2d"),
            "invalid duration \"1d2d\": unit 'd' is given twice"
        );
        assert_eq!(
            error("0d"),
            "invalid duration \"0d\": 0d is zero; each number must be positive"
        );
        assert_eq!(
            error("1y0m"),
            "invalid duration \"1y0m\": 0m is zero; each number must be positive"
        );
        assert_eq!(
            error("1d2y"),
            "invalid duration \"1d2y\": unit 'y' must come before 'd' (order: y, m, w, d, h)"
        );
        assert_eq!(
            error("30"),
            "invalid duration \"30\": number 30 has no unit (use y, m, w, d, h)"
        );
        assert_eq!(
            error("1d12"),
            "invalid duration \"1d12\": number 12 has no unit (use y, m, w, d, h)"
        );
        assert_eq!(
            error("d"),
            "invalid duration \"d\": unit 'd' has no number before it"
        );
        assert_eq!(
            error("3 d"),
            "invalid duration \"3 d\": unexpected character ' ' \
             (write numbers and units only, e.g. 1y6m)"
        );
        assert_eq!(
            error("99999999999d"),
            "invalid duration \"99999999999d\": 99999999999d is too long"
        );
        assert_eq!(
            error("20000y"),
            "invalid duration \"20000y\": 20000y is too long \
             (20000 years is beyond the supported range)"
        );
    }

    #[test]
    fn validate_rejects_counts_of_zero() {
        let policy = Policy {
            keep_daily: Some(0),
            ..Policy::default()
        };
        assert_eq!(
            validate(&policy).unwrap_err().to_string(),
            "--keep-daily 0 keeps nothing; leave the flag out instead"
        );
        let policy = Policy {
            keep_last: Some(3),
            keep_yearly: Some(0),
            ..Policy::default()
        };
        assert_eq!(
            validate(&policy).unwrap_err().to_string(),
            "--keep-yearly 0 keeps nothing; leave the flag out instead"
        );
        let policy = Policy {
            keep_tags: vec![String::new()],
            ..Policy::default()
        };
        assert!(
            validate(&policy)
                .unwrap_err()
                .to_string()
                .contains("--keep-tag needs a tag name")
        );
        let policy = Policy {
            keep_last: Some(7),
            keep_daily: Some(14),
            keep_within: Some(parse_keep_within("30d").unwrap()),
            keep_tags: vec!["important".to_string()],
            ..Policy::default()
        };
        validate(&policy).unwrap();
        validate(&Policy::default()).unwrap();
        assert!(!policy.is_empty());
        assert_eq!(
            policy.describe(),
            "keep-last 7, keep-daily 14, keep-within 30d, keep-tag important"
        );
    }
}
