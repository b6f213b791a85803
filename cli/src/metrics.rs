//! `--metrics-file`: Prometheus text-format metrics for node_exporter's
//! textfile collector. Owns the exposition format and the atomic write
//! (a temporary file renamed over the old one, so the collector never
//! reads half a file); never decides what to measure.

use anyhow::{Context as _, Result};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// Metrics being gathered, each family written once with its HELP and TYPE.
#[derive(Default)]
pub struct Metrics {
    text: String,
    families: Vec<String>,
}

impl Metrics {
    /// One gauge sample; `labels` are (name, value) pairs.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.sample("gauge", name, help, labels, value);
    }

    /// One counter sample (`cairn serve`'s job counts).
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.sample("counter", name, help, labels, value);
    }

    /// The metrics gathered, in the text format.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The gauges `finish` adds for a run of `command` that ended now,
    /// without a file to keep the last success time in (`cairn serve`
    /// keeps the last run's metrics in memory).
    pub fn run_outcome(&mut self, command: &str, success: bool, started: std::time::Instant) {
        let now = now_seconds();
        self.gauge(
            &format!("{command}_success"),
            &format!("1 if the last {command} succeeded, else 0."),
            &[],
            if success { 1.0 } else { 0.0 },
        );
        self.gauge(
            &format!("{command}_last_run_timestamp_seconds"),
            &format!("When the last {command} ended."),
            &[],
            now,
        );
        self.gauge(
            &format!("{command}_duration_seconds"),
            &format!("How long the last {command} took."),
            &[],
            started.elapsed().as_secs_f64(),
        );
    }

    fn sample(&mut self, kind: &str, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let name = format!("cairn_{name}");
        if !self.families.contains(&name) {
            // Families must be contiguous, so callers give all samples of a
            // family together.
            let _ = writeln!(self.text, "# HELP {name} {help}");
            let _ = writeln!(self.text, "# TYPE {name} {kind}");
            self.families.push(name.clone());
        }
        let labels: Vec<String> = labels
            .iter()
            .map(|(key, value)| format!("{key}=\"{}\"", escape(value)))
            .collect();
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", labels.join(","))
        };
        let _ = writeln!(self.text, "{name}{labels} {value}");
    }

    /// Writes all metrics to `path` atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let directory = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut temporary = tempfile::Builder::new()
            .prefix(".cairn-metrics-")
            .tempfile_in(directory)
            .with_context(|| format!("creating a metrics file in {}", directory.display()))?;
        temporary
            .write_all(self.text.as_bytes())
            .and_then(|()| temporary.as_file().sync_all())
            .with_context(|| format!("writing metrics for {}", path.display()))?;
        temporary
            .persist(path)
            .with_context(|| format!("replacing metrics file {}", path.display()))?;
        Ok(())
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Seconds since the Unix epoch, now.
pub fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs_f64())
        .unwrap_or(0.0)
}

/// The value of an unlabelled sample `name` in the metrics file at `path`,
/// if there is one: a failed run keeps the last success time it had.
pub fn previous_value(path: &Path, name: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("cairn_{name} ")))
        .and_then(|value| value.trim().parse().ok())
}

/// Writes `metrics` if `--metrics-file` was given, with the run's outcome
/// and time, keeping the previous last-success time on failure.
pub fn finish(
    context: &crate::context::Context,
    command: &str,
    mut metrics: Metrics,
    success: bool,
    started: std::time::Instant,
) -> Result<()> {
    let Some(path) = &context.global.metrics_file else {
        return Ok(());
    };
    let now = now_seconds();
    metrics.gauge(
        &format!("{command}_success"),
        &format!("1 if the last {command} succeeded, else 0."),
        &[],
        if success { 1.0 } else { 0.0 },
    );
    metrics.gauge(
        &format!("{command}_last_run_timestamp_seconds"),
        &format!("When the last {command} ended."),
        &[],
        now,
    );
    metrics.gauge(
        &format!("{command}_duration_seconds"),
        &format!("How long the last {command} took."),
        &[],
        started.elapsed().as_secs_f64(),
    );
    let success_name = format!("{command}_last_success_timestamp_seconds");
    let last_success = if success {
        Some(now)
    } else {
        previous_value(path, &success_name)
    };
    if let Some(last_success) = last_success {
        metrics.gauge(
            &success_name,
            &format!("When a {command} last succeeded."),
            &[],
            last_success,
        );
    }
    metrics.write(path)
}
