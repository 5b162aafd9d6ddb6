//! Logging through `tracing` to stderr, so stdout stays clean for command output.

use crate::cli::{GlobalArgs, LogFormat};
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use indicatif::MultiProgress;
use tracing_subscriber::EnvFilter;

/// The progress bars of this process (`run-job` on a terminal). Log lines go through it, so a
/// line is printed above the bars rather than through them.
fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(MultiProgress::new)
}

/// Progress bars, when stderr is a terminal a person reads (pretty logs); `None` for cron,
/// pipes, files and `--log-format json`, which get progress as log lines instead.
pub fn progress_bars(args: &GlobalArgs) -> Option<MultiProgress> {
    (args.log_format == LogFormat::Pretty && std::io::stderr().is_terminal())
        .then(|| bars().clone())
}

/// stderr, with any progress bars cleared while a log line is written and drawn again after.
struct AboveBars;

impl Write for AboveBars {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        bars().suspend(|| std::io::stderr().write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Install the global subscriber: `-v`/`-q` pick the level, `RUST_LOG` overrides both.
pub fn init(args: &GlobalArgs) {
    let level = match (args.verbose, args.quiet) {
        (0, 0) => "info",
        (1, _) => "debug",
        (v, _) if v >= 2 => "trace",
        (_, 1) => "warn",
        _ => "error",
    };
    // Our own crate at the chosen level; dependencies only when they warn.
    let default = format!("warn,batchscore={level}");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| AboveBars)
        // Colours only for a person at a terminal, not in files, journald or cron mail.
        .with_ansi(std::io::stderr().is_terminal());
    match args.log_format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
}
