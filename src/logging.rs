//! Logging through `tracing` to stderr, so stdout stays clean for command output.

use crate::cli::{GlobalArgs, LogFormat};
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

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
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in files, journald or cron mail.
        .with_ansi(std::io::stderr().is_terminal());
    match args.log_format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
}
