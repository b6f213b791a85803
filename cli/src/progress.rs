//! Progress of any long operation, for people and programs: a bar on a
//! terminal (phase, component, bytes, items, rate, time left), JSON lines on
//! stderr with `--json`, nothing otherwise. Renders what the library reports
//! through [`cairn_store::progress::Progress`]; decides nothing itself.

use cairn_store::progress::{Amount, Phase, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct CliProgress {
    bar: Option<ProgressBar>,
    json: bool,
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
    /// `--json`; otherwise silent.
    pub fn new(json: bool) -> Self {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        CliProgress {
            bar,
            json,
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

    fn json_line(&self, force: bool) {
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
