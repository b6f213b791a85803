//! Progress of any long operation, for people and programs: a bar on a
//! terminal (phase, component, bytes, items, rate, time left), JSON lines on
//! stderr with `--json`, nothing otherwise unless `--progress` asks (then a
//! line of text every few seconds). Renders what the library reports
//! through [`cairn_store::progress::Progress`]; decides nothing itself.

use cairn_store::progress::{Amount, Phase, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// `--progress`: report even when stderr is not a terminal. Set once by
/// `main` from the global flag, so every command's progress obeys it.
static FORCED: AtomicBool = AtomicBool::new(false);

/// How often a line of text is written with `--progress` on a
/// non-terminal (a log file, journald).
const TEXT_LINE_INTERVAL: Duration = Duration::from_secs(5);

pub fn force(forced: bool) {
    FORCED.store(forced, Ordering::Relaxed);
}
use std::time::{Duration, Instant};

pub struct CliProgress {
    bar: Option<ProgressBar>,
    json: bool,
    /// Lines of text, for `--progress` where stderr is no terminal.
    text: bool,
    started: Instant,
    state: Mutex<State>,
    items_total: AtomicU64,
    items_done: AtomicU64,
    bytes_total: AtomicU64,
    bytes_done: AtomicU64,
    last_line: Mutex<Instant>,
}

/// What changes rarely: the phase and the component.
struct State {
    phase: Option<Phase>,
    component: Option<String>,
}

impl CliProgress {
    /// A bar when stderr is a terminal and `--json` is off; JSON lines with
    /// `--json`; lines of text with `--progress`; otherwise silent.
    pub fn new(json: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = (!json && terminal).then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            // Redrawn while nothing advances (a slow `pg_dump`), so the
            // time and the component stay current.
            bar.enable_steady_tick(Duration::from_millis(500));
            bar
        });
        CliProgress {
            bar,
            json,
            text: !json && !terminal && FORCED.load(Ordering::Relaxed),
            started: Instant::now(),
            state: Mutex::new(State {
                phase: None,
                component: None,
            }),
            items_total: AtomicU64::new(0),
            items_done: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            last_line: Mutex::new(Instant::now()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// `PHASE COMPONENT`, either left out while unknown.
    fn prefix(&self) -> String {
        let state = self.state();
        let phase = state.phase.map_or("", Phase::name);
        match &state.component {
            Some(component) if phase.is_empty() => component.clone(),
            Some(component) => format!("{phase} {component}"),
            None => phase.to_string(),
        }
    }

    fn unit(&self) -> &'static str {
        self.state().phase.map_or("items", Phase::unit)
    }

    /// `--progress` on a non-terminal: `PHASE COMPONENT: DONE/TOTAL, N/M
    /// UNIT, RATE/s, eta Ns`, at most every few seconds.
    fn text_line(&self, force: bool) {
        if !self.text {
            return;
        }
        let mut last = self
            .last_line
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if !force && last.elapsed() < TEXT_LINE_INTERVAL {
            return;
        }
        *last = Instant::now();
        let done = self.bytes_done.load(Ordering::Relaxed);
        let total = self.bytes_total.load(Ordering::Relaxed);
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = (done as f64 / seconds) as u64;
        let eta = match (total > done, rate) {
            (true, 1..) => format!(", eta {}s", (total - done) / rate),
            _ => String::new(),
        };
        eprintln!(
            "cairn: progress: {}: {}/{}, {}/{} {}, {}/s{eta}",
            self.prefix(),
            crate::output::bytes(done),
            crate::output::bytes(total),
            self.items_done.load(Ordering::Relaxed),
            self.items_total.load(Ordering::Relaxed),
            self.unit(),
            crate::output::bytes(rate),
        );
    }

    fn json_line(&self, force: bool) {
        self.text_line(force);
        if !self.json {
            return;
        }
        let mut last = self
            .last_line
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if !force && last.elapsed() < Duration::from_secs(1) {
            return;
        }
        *last = Instant::now();
        let (phase, component, unit) = {
            let state = self.state();
            (
                state.phase.map(Phase::name),
                state.component.clone(),
                state.phase.map_or("items", Phase::unit),
            )
        };
        let mut progress = serde_json::json!({
            "phase": phase,
            "component": component,
            "bytes_done": self.bytes_done.load(Ordering::Relaxed),
            "bytes_total": self.bytes_total.load(Ordering::Relaxed),
        });
        progress[format!("{unit}_done")] = self.items_done.load(Ordering::Relaxed).into();
        progress[format!("{unit}_total")] = self.items_total.load(Ordering::Relaxed).into();
        eprintln!("{}", serde_json::json!({ "progress": progress }));
    }

    fn update_message(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "{}/{} {}",
                self.items_done.load(Ordering::Relaxed),
                self.items_total.load(Ordering::Relaxed),
                self.unit()
            ));
        }
    }

    /// Clears the bar and writes the last JSON line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        self.json_line(true);
    }
}

impl Progress for CliProgress {
    fn phase(&self, phase: Phase, expected: Amount) {
        // The phase that ends gets its last line, complete, before the
        // counters are reset (a reader would otherwise see a short phase,
        // such as a prune's survey, only as it started).
        if self.state().phase.is_some() {
            self.json_line(true);
        }
        self.state().phase = Some(phase);
        self.items_total.store(expected.items, Ordering::Relaxed);
        self.bytes_total.store(expected.bytes, Ordering::Relaxed);
        self.items_done.store(0, Ordering::Relaxed);
        self.bytes_done.store(0, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.reset();
            bar.set_length(expected.bytes);
            bar.set_prefix(self.prefix());
        }
        self.update_message();
        self.json_line(true);
    }

    fn expect_more(&self, more: Amount) {
        self.items_total.fetch_add(more.items, Ordering::Relaxed);
        let total = self.bytes_total.fetch_add(more.bytes, Ordering::Relaxed) + more.bytes;
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
        self.update_message();
    }

    fn advance(&self, done: Amount) {
        self.bytes_done.fetch_add(done.bytes, Ordering::Relaxed);
        self.items_done.fetch_add(done.items, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(done.bytes);
        }
        if done.items > 0 {
            self.update_message();
        }
        self.json_line(false);
    }

    fn component(&self, name: &str) {
        self.state().component = Some(name.to_string());
        if let Some(bar) = &self.bar {
            bar.set_prefix(self.prefix());
        }
        self.json_line(true);
    }
}
