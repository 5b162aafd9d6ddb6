//! How a run shows its progress while a window is scored: on a terminal, a bar per window (rows
//! scored of rows expected, rows per second, ETA) under a bar for the run's windows; elsewhere
//! (cron, the daemon, `--log-format json`), a log line every few seconds for a window still
//! going, with the rows done and the rate. Nothing is shown for a window that ends sooner.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressState, ProgressStyle};
use tracing::Instrument;

/// How often a window still going is logged when no bar is shown.
pub const DEFAULT_LOG_EVERY: Duration = Duration::from_secs(10);

/// How a run reports progress.
#[derive(Clone)]
pub enum Progress {
    /// Bars, drawn through `multi` (which the log writer also goes through: see `logging`).
    Bars(MultiProgress),
    /// A log line every so often.
    Log(Duration),
}

impl Progress {
    /// Log lines every [`DEFAULT_LOG_EVERY`], or every `BATCHSCORE_PROGRESS_EVERY` (a duration
    /// like `2s`) when set.
    pub fn log() -> Progress {
        let every = std::env::var("BATCHSCORE_PROGRESS_EVERY")
            .ok()
            .and_then(|every| humantime::parse_duration(&every).ok())
            .unwrap_or(DEFAULT_LOG_EVERY);
        Progress::Log(every.max(Duration::from_millis(10)))
    }

    /// Whether the window's expected rows are worth counting first (only for a bar).
    pub fn wants_total(&self) -> bool {
        matches!(self, Progress::Bars(_))
    }

    /// A bar over the run's `windows`, when there is more than one (a catch-up or a backfill).
    pub fn run(&self, windows: usize) -> Option<ProgressBar> {
        let Progress::Bars(multi) = self else {
            return None;
        };
        (windows > 1).then(|| {
            let bar = multi.add(ProgressBar::new(windows as u64));
            bar.set_style(
                ProgressStyle::with_template(
                    "windows {pos}/{len} [{bar:30}] {elapsed} (ETA {eta})",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar
        })
    }

    /// Start tracking one window, whose `expected` rows were counted when a bar is shown.
    pub fn window(&self, label: String, expected: Option<u64>) -> WindowProgress {
        let done = Arc::new(AtomicU64::new(0));
        match self {
            Progress::Bars(multi) => {
                let bar = multi.add(ProgressBar::new(expected.unwrap_or(0)));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {human_pos}/{human_len} rows, {rate}, ETA {eta}",
                    )
                    .expect("a valid template")
                    .with_key(
                        "rate",
                        |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                            let _ = write!(w, "{:.0} rows/s", state.per_sec());
                        },
                    )
                    .progress_chars("=> "),
                );
                bar.set_message(label);
                WindowProgress {
                    done,
                    bar: Some(bar),
                    ticker: None,
                }
            }
            Progress::Log(every) => {
                let every = *every;
                let counted = Arc::clone(&done);
                // In the window's span: the line names the job, the window and the run.
                let ticker = tokio::spawn(
                    async move {
                        let started = Instant::now();
                        let mut ticks =
                            tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                        loop {
                            ticks.tick().await;
                            let rows = counted.load(Ordering::Relaxed);
                            let seconds = started.elapsed().as_secs_f64();
                            tracing::info!(
                                rows_done = rows,
                                seconds = seconds.round(),
                                rows_per_second = (rows as f64 / seconds).round(),
                                "window in progress"
                            );
                        }
                    }
                    .instrument(tracing::Span::current()),
                );
                WindowProgress {
                    done,
                    bar: None,
                    ticker: Some(ticker.abort_handle()),
                }
            }
        }
    }
}

/// One window's progress: rows scored so far.
pub struct WindowProgress {
    done: Arc<AtomicU64>,
    bar: Option<ProgressBar>,
    ticker: Option<tokio::task::AbortHandle>,
}

impl WindowProgress {
    /// `rows` more were scored (good or bad).
    pub fn add(&self, rows: u64) {
        self.done.fetch_add(rows, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(rows);
        }
    }
}

impl Drop for WindowProgress {
    fn drop(&mut self) {
        if let Some(ticker) = &self.ticker {
            ticker.abort();
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
