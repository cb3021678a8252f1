//! Progress on stderr for work that takes more than about a second: files,
//! bytes, rate and ETA (`indicatif`), only when stderr is a terminal.
//!
//! The engine's hook is deliberately tiny and free of I/O: [`stage`] names
//! what is going on (with totals when they are known) and [`advance`] adds to
//! two atomic counters. Nothing is drawn by the engine's threads; a separate
//! drawing thread, started by the run wrapper (`cli::run`) through
//! [`Display::start`], copies the counters into the bar ten times a second.
//! With no display (pipes, `--quiet`, tests in process) the hook costs two
//! relaxed atomic adds per file.
//!
//! The counters are process-global rather than threaded through every
//! options struct: one binary runs one operation, and a global keeps the
//! engine's signatures (and the structs other modules build) unchanged.
//! stdout is never touched, so `--json` consumers see exactly the same bytes.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Bumped on every [`stage`] call so the drawing thread notices a new stage.
static GENERATION: AtomicU64 = AtomicU64::new(0);
static ITEMS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static TOTAL_ITEMS: AtomicU64 = AtomicU64::new(0);
static TOTAL_BYTES: AtomicU64 = AtomicU64::new(0);
static NAME: Mutex<&'static str> = Mutex::new("");

/// Start a stage: `name` (`scanning`, `reading`, `restoring`, `verifying`)
/// and its totals (0 when unknown: a spinner instead of a bar). Resets the counters.
pub fn stage(name: &'static str, total_items: u64, total_bytes: u64) {
    if let Ok(mut n) = NAME.lock() {
        *n = name;
    }
    ITEMS.store(0, Ordering::Relaxed);
    BYTES.store(0, Ordering::Relaxed);
    TOTAL_ITEMS.store(total_items, Ordering::Relaxed);
    TOTAL_BYTES.store(total_bytes, Ordering::Relaxed);
    GENERATION.fetch_add(1, Ordering::Release);
}

/// Count `items` done and `bytes` processed in the current stage.
#[inline]
pub fn advance(items: u64, bytes: u64) {
    ITEMS.fetch_add(items, Ordering::Relaxed);
    BYTES.fetch_add(bytes, Ordering::Relaxed);
}

/// How long work must run before a bar appears, unless
/// `BACKUP_PROGRESS_DELAY_MS` says otherwise (tests use 0).
const DEFAULT_DELAY: Duration = Duration::from_millis(1000);
const REFRESH: Duration = Duration::from_millis(100);

/// Whether to show progress: stderr is a terminal, not `--quiet`, and
/// `BACKUP_PROGRESS` is not `0`.
pub fn wanted(quiet: bool) -> bool {
    let off = matches!(
        std::env::var("BACKUP_PROGRESS").as_deref(),
        Ok("0") | Ok("never") | Ok("false")
    );
    !off && !quiet && std::io::stderr().is_terminal()
}

/// The drawing thread; dropping it stops the thread and clears the bar, so
/// the summary printed afterwards starts on a clean line.
pub struct Display {
    stop: std::sync::Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Display {
    /// Start drawing (after the delay) to stderr.
    pub fn start() -> Display {
        let delay = std::env::var("BACKUP_PROGRESS_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_DELAY);
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || draw(&flag, delay))
            .ok();
        Display { stop, thread }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn style_for(total_bytes: u64, total_items: u64) -> ProgressStyle {
    let template = if total_bytes > 0 {
        "{prefix:>10} [{bar:30}] {bytes}/{total_bytes} {msg} {binary_bytes_per_sec} ETA {eta}"
    } else if total_items > 0 {
        "{prefix:>10} [{bar:30}] {msg} {elapsed}"
    } else {
        "{spinner} {prefix} {msg} {elapsed}"
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

fn draw(stop: &AtomicBool, delay: Duration) {
    let started = Instant::now();
    while started.elapsed() < delay {
        if stop.load(Ordering::Acquire) {
            return;
        }
        std::thread::sleep(REFRESH.min(delay));
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let mut seen = u64::MAX;
    loop {
        let generation = GENERATION.load(Ordering::Acquire);
        let (items, bytes) = (ITEMS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
        let (total_items, total_bytes) = (
            TOTAL_ITEMS.load(Ordering::Relaxed),
            TOTAL_BYTES.load(Ordering::Relaxed),
        );
        if generation != seen {
            seen = generation;
            bar.set_style(style_for(total_bytes, total_items));
            let name = NAME.lock().map(|n| *n).unwrap_or("");
            bar.set_prefix(if name.is_empty() { "working" } else { name });
            bar.reset();
            if total_bytes > 0 {
                bar.set_length(total_bytes);
            } else if total_items > 0 {
                bar.set_length(total_items);
            } else {
                bar.unset_length();
            }
        }
        bar.set_position(if total_bytes > 0 { bytes } else { items });
        bar.set_message(if total_items > 0 {
            format!("{items}/{total_items} files")
        } else if items > 0 {
            format!("{items} files")
        } else {
            String::new()
        });
        bar.tick();
        if stop.load(Ordering::Acquire) {
            break;
        }
        std::thread::sleep(REFRESH);
    }
    bar.finish_and_clear();
}
