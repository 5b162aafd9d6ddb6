//! The errors callers branch on, and the exit code each one means.
//!
//! Every module may fail with these, so this one depends on none of them: what an error says
//! about a window, a holder or a bad row, it holds as text.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::shutdown::Signal;

/// The run failed; nothing of the window was written.
pub const EXIT_RUN_FAILED: u8 = 1;
/// Usage or configuration error: the job, its model or the database needs fixing first.
pub const EXIT_CONFIG: u8 = 2;
/// Temporary failure (sysexits' EX_TEMPFAIL): another run holds the job, took it over, or holds
/// the database's write lock; try again later.
pub const EXIT_BUSY: u8 = 75;

/// Something a person must fix before the job can run: retrying will not help.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    #[error("no job named `{name}` in {dir} (known jobs: {known})")]
    UnknownJob {
        name: String,
        dir: PathBuf,
        known: String,
    },
    #[error("{}: {problem}", path.display())]
    JobFile { path: PathBuf, problem: String },
    #[error("job `{job}`: {problem}")]
    Job { job: String, problem: String },
    /// The database URL, credentials or database name are wrong (a server that is down or
    /// does not answer is [`Unreachable`], which retrying may fix).
    #[error("cannot connect to the database {target}: {problem}")]
    Database { target: String, problem: String },
    #[error("{0}")]
    OnnxRuntime(String),
    /// batchscore's own tables are not as this binary's migrations left them (an applied
    /// migration was edited, failed partway, or comes from a newer release).
    #[error("batchscore's schema: {0}")]
    Schema(String),
    /// The daemon cannot start as configured (no valid job, a bad `--listen` address).
    #[error("daemon: {0}")]
    Daemon(String),
    /// The alert routes file (`alerts.toml`) is unreadable, or a route in it is wrong.
    #[error("{}: {}{problem}", path.display(), route.as_ref().map(|r| format!("route `{r}`: ")).unwrap_or_default())]
    Alerts {
        path: PathBuf,
        route: Option<String>,
        problem: String,
    },
}

impl ConfigError {
    pub fn job(job: &str, problem: impl Into<String>) -> Self {
        ConfigError::Job {
            job: job.to_owned(),
            problem: problem.into(),
        }
    }
}

/// Another run got there first; this one wrote nothing and the job is in good hands.
#[derive(Debug, thiserror::Error)]
pub enum Contention {
    /// `holder` describes who holds the job, when that could be read.
    #[error("job `{job}` is busy: another run holds it ({}); nothing was done, try again later",
        holder.as_deref().unwrap_or("it is just starting or finishing"))]
    Busy { job: String, holder: Option<String> },
    #[error(
        "job `{job}`: window {window} was committed by another run first (the watermark moved); nothing of this run's window was written"
    )]
    WatermarkMoved { job: String, window: String },
    /// Another run took the job over after this run's lease lapsed (this one was paused, frozen
    /// or cut off from the database for longer than the lease). The fencing check in each
    /// window's transaction makes sure it writes nothing more.
    #[error(
        "job `{job}`: another run took the job over after this run's lease lapsed (this run was paused or cut off for longer than the lease); {what}"
    )]
    Superseded { job: String, what: String },
    /// SQLite: another connection kept the database's write lock for longer than the busy
    /// timeout (an application writing in a long transaction, or a frozen run).
    #[error(
        "job `{job}`: the SQLite database stayed locked by another writer for {}s (busy timeout); nothing was written, try again later",
        waited.as_secs()
    )]
    DatabaseLocked { job: String, waited: Duration },
    /// A backfill of every shard found some held by other runs: it scored the others, and the
    /// range of these is still to do.
    #[error(
        "job `{job}`: {what} left shard(s) {shards} to the runs that hold them, so their part was not re-scored; run it again, or with --shard for each"
    )]
    ShardsLeft {
        job: String,
        /// What was asked for: "the backfill of [from, to)", "the rescore of model …".
        what: String,
        shards: String,
    },
}

impl Contention {
    /// Another run holds the job (or shard): it is being run.
    pub fn is_busy(&self) -> bool {
        matches!(self, Contention::Busy { .. })
    }
}

/// A window whose bad rows its job does not accept: nothing of it was written.
#[derive(Debug, thiserror::Error)]
pub enum BadWindow {
    #[error("bad_rows.policy = \"fail\" and {first}")]
    Policy { first: String },
    #[error(
        "{bad} of {read} rows are bad ({:.2}%), more than bad_rows.max_fraction = {}%: {summary}; first: {first}",
        *bad as f64 * 100.0 / *read as f64,
        max_fraction * 100.0
    )]
    TooMany {
        bad: i64,
        read: i64,
        max_fraction: f64,
        summary: String,
        first: String,
    },
    #[error(
        "the window drifted from its reference and monitor.on_drift = \"fail\": {summary}. See `batchscore monitor {job}`; if the change is expected, take a new reference with `batchscore monitor set-reference {job} --from T --to T`"
    )]
    Drift { job: String, summary: String },
}

/// The run was stopped by a signal: its open window was rolled back, or it stopped between
/// windows (or shards) with nothing open.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {signal}: {what}")]
pub struct Interrupted {
    pub signal: Signal,
    pub what: String,
    /// Whether a window was open and rolled back (the daemon's exit code says so).
    pub rolled_back: bool,
}

/// The database stopped answering: no reply within the deadline the lease sets. The open
/// window, if any, was abandoned and rolled back (the server ends its transaction), so nothing
/// of it was written. Exit code 1, like any failed run: the next run retries.
#[derive(Debug, thiserror::Error)]
#[error(
    "the database did not answer {what} within {}s (deadlines follow --lease); nothing of the open window was written",
    waited.as_secs_f64().ceil()
)]
pub struct Unresponsive {
    pub what: String,
    pub waited: Duration,
}

/// The database could not be reached (refused, reset, timed out, starting up, out of
/// connections): exit 1, since a later run may well succeed.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to the database {target}: {problem}")]
pub struct Unreachable {
    pub target: String,
    pub problem: String,
}

/// Map an error to the process exit code, by the first typed error in its chain.
pub fn exit_code(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if cause.is::<ConfigError>() {
            return ExitCode::from(EXIT_CONFIG);
        }
        if cause.is::<Contention>() {
            return ExitCode::from(EXIT_BUSY);
        }
        if let Some(interrupted) = cause.downcast_ref::<Interrupted>() {
            return ExitCode::from(interrupted.signal.exit_code());
        }
    }
    ExitCode::from(EXIT_RUN_FAILED)
}
