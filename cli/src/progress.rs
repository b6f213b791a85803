//! Restore progress for people and programs: a bar on a terminal (files,
//! bytes, rate, time left), JSON lines on stderr with `--json`, nothing
//! otherwise.

use cairn_store::ops::restore::RestoreProgress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct CliProgress {
    bar: Option<ProgressBar>,
    json: bool,
    files_total: AtomicU64,
    files_done: AtomicU64,
    bytes_total: AtomicU64,
    bytes_done: AtomicU64,
    last_line: Mutex<Instant>,
}

impl CliProgress {
    pub fn new(json: bool) -> Self {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        CliProgress {
            bar,
            json,
            files_total: AtomicU64::new(0),
            files_done: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            last_line: Mutex::new(Instant::now()),
        }
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
        eprintln!(
            "{}",
            serde_json::json!({"progress": {
                "files_done": self.files_done.load(Ordering::Relaxed),
                "files_total": self.files_total.load(Ordering::Relaxed),
                "bytes_done": self.bytes_done.load(Ordering::Relaxed),
                "bytes_total": self.bytes_total.load(Ordering::Relaxed),
            }})
        );
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        self.json_line(true);
    }
}

impl RestoreProgress for CliProgress {
    fn start(&self, files: u64, bytes: u64) {
        self.files_total.store(files, Ordering::Relaxed);
        self.bytes_total.store(bytes, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_length(bytes);
            bar.set_message(format!("0/{files} files"));
        }
        self.json_line(true);
    }

    fn advance(&self, bytes: u64) {
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
        self.json_line(false);
    }

    fn file_done(&self) {
        let done = self.files_done.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "{done}/{} files",
                self.files_total.load(Ordering::Relaxed)
            ));
        }
        self.json_line(false);
    }
}
