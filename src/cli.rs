//! The command line: every clap type in one place, parsed before any work starts.

use chrono::{DateTime, Utc};
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

use crate::time::parse_time;

const EXIT_CODES: &str = "\
Exit codes:
  0   success (also when no window was due or it held no rows)
  1   the run failed, or the database is down, unreachable, out of connections or silent
      (a later run may succeed); nothing of the failing window was written
  2   usage or configuration error (job file, model, schema, database URL, credentials or
      name, a certificate that does not verify): fix it first
  75  the job is busy (another run holds it), another run committed the window first, or a
      backfill left shards that other runs held
  130 interrupted by SIGINT, 143 by SIGTERM; the open window was rolled back";

#[derive(Debug, Parser)]
#[command(name = "batchscore", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Database holding sources, results and the ledger: sqlite://PATH, postgres://... or
    /// mysql://...
    #[arg(
        long,
        env = "DATABASE_URL",
        global = true,
        default_value = "sqlite://batchscore.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Directory of job files (`NAME.toml`); model paths are relative to its parent.
    #[arg(
        long,
        env = "BATCHSCORE_JOBS_DIR",
        global = true,
        default_value = "jobs"
    )]
    pub jobs_dir: PathBuf,

    /// Alert routes (where failures, lateness, drift… are sent): default `alerts.toml` next to
    /// the jobs directory, if there is one.
    #[arg(
        long = "alerts",
        env = "BATCHSCORE_ALERTS",
        global = true,
        value_name = "PATH"
    )]
    pub alerts_file: Option<PathBuf>,

    /// The daemon's address as people reach it (http://host:port), linked from alerts.
    #[arg(long, env = "BATCHSCORE_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,

    /// Log format on stderr.
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// More logging (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Less logging (-q warnings only, -qq errors only).
    #[arg(short, long, action = ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one job once: read its window, score it, write the results.
    #[command(after_help = EXIT_CODES)]
    RunJob(RunJobArgs),
    /// List or validate job files.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Create or upgrade batchscore's own tables.
    Migrate,
    /// Is every job healthy? One line per job (exit 1 if one is late or failing); with NAME, its
    /// recent windows too.
    #[command(after_help = STATUS_EXIT_CODES)]
    Status(StatusArgs),
    /// Run every job on its schedule until SIGTERM (SIGHUP reloads the jobs).
    #[command(after_help = DAEMON_EXIT_CODES)]
    Daemon(DaemonArgs),
    /// Show or set job watermarks (the end of each job's last committed window).
    #[command(subcommand)]
    Watermark(WatermarkCommand),
    /// Alerts to webhooks, Slack and PagerDuty (alerts.toml): check lateness now, or test the
    /// routes.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Drift: the latest window's features and outputs against the job's reference, worst
    /// first (exit 1 when one is in drift); or set the reference.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true, after_help = MONITOR_HELP)]
    Monitor(MonitorArgs),
    /// Every model version a job has scored with, newest first: sha256, source, first and last
    /// window, windows and rows scored (its challengers' too).
    Models {
        /// Job name: the stem of a file in the jobs directory.
        name: String,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The job's model and its challenger side by side on the latest windows both scored: per
    /// result column, agreement and confusion for labels; mean and max absolute difference,
    /// correlation and PSI for numbers.
    Compare {
        /// Job name: the stem of a file in the jobs directory.
        name: String,
        /// How many of the latest windows the challenger scored to compare.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        windows: u32,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Realized performance: the job's committed windows joined with its `[labels]`, judged per
    /// model (AUC, log loss, … or MAE, RMSE, …) and stored in batchscore_performance;
    /// provisional until the labels' maturity has passed, then final.
    Evaluate {
        /// Job name: the stem of a file in the jobs directory.
        name: String,
        /// Only windows starting at or after this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        from: Option<DateTime<Utc>>,
        /// Only windows ending at or before this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        to: Option<DateTime<Utc>>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Delete batchscore's own rows (ledger, drift profiles, quarantine, realized performance)
    /// of windows that ended before a bound, in short statements. Kept whatever the bound: a
    /// window's latest run while its result rows point at it, the profiles a job's drift
    /// reference reads, and what an open alert is about.
    Prune {
        /// How old a window must be to go.
        #[arg(long, value_parser = parse_duration, default_value = "90d")]
        older_than: chrono::TimeDelta,
        /// Count what would be deleted, and delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Move a job to the number of shards its file now says, every shard starting where the
    /// old ones all stopped: no gap, no overlap. Needs every old shard's watermark level.
    #[command(after_help = RESHARD_HELP)]
    Reshard {
        /// Job name: the stem of a file in the jobs directory.
        name: String,
    },
}

const RESHARD_HELP: &str = "\
Resharding (changing [source] shards) in three steps:
  1. With the job file still at the old count, bring every shard to the same watermark:
       batchscore run-job NAME --at T      (the same T for all; runs every shard)
     (stop the schedule first, or pick T no later than the next scheduled run's)
  2. Change `shards` in the job file.
  3. batchscore reshard NAME
Runs refuse a job whose file and watermarks disagree on the count (exit 2) until step 3.";

#[derive(Debug, Args)]
pub struct RunJobArgs {
    /// Job name: the stem of a file in the jobs directory.
    pub name: String,

    /// Backfill from this time (RFC 3339), in window-size steps; needs --to. Leaves the watermark alone.
    #[arg(long, requires = "to", conflicts_with = "at", value_parser = parse_time)]
    pub from: Option<DateTime<Utc>>,

    /// Backfill up to this time, exclusive (RFC 3339). Needs --from.
    #[arg(long, requires = "from", value_parser = parse_time)]
    pub to: Option<DateTime<Utc>>,

    /// Plan from the watermark as if it were this time (RFC 3339) instead of now; not later than now.
    #[arg(long, value_parser = parse_time)]
    pub at: Option<DateTime<Utc>>,

    /// How long the job's claim outlives its last renewal: how long a frozen or cut-off run can
    /// keep the job from others, and the deadline of every wait on the database. PostgreSQL
    /// renews it every quarter lease; SQLite before each window, so there it must cover one.
    #[arg(long, default_value = crate::claim::DEFAULT_LEASE, value_parser = parse_duration)]
    pub lease: chrono::TimeDelta,

    /// Re-score, with the job's current model, exactly the committed windows the model with
    /// this sha256 (or a unique prefix of it) scored last: the repair after a bad release.
    /// With --from/--to, only the windows inside that range. Leaves the watermark alone.
    #[arg(long, value_name = "SHA256_PREFIX", conflicts_with = "at")]
    pub rescore_model: Option<String>,

    /// Print the plan (window, row count, model signature) and write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Run only this shard of a job with `[source] shards = N` (0 to N-1). Defaults to
    /// JOB_COMPLETION_INDEX, which a Kubernetes Indexed Job sets in each pod. Without it, the run
    /// takes every shard it can claim, one after another.
    #[arg(long, env = "JOB_COMPLETION_INDEX")]
    pub shard: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Name, schedule, model and results table of every job.
    List,
    /// Check job files against their models and the database, without scoring.
    #[command(after_help = EXIT_CODES)]
    Validate {
        /// Only this job (default: all).
        name: Option<String>,
    },
    /// Write jobs/NAME.toml from a model and a source table (or query): inputs matched to
    /// columns, the key and timestamp guessed from the catalog, one result column per output.
    New {
        /// The job's name (the file's stem).
        name: String,
        /// The ONNX model file, or a model in the MLflow registry at MLFLOW_TRACKING_URI
        /// (models:/NAME@ALIAS or models:/NAME/VERSION).
        #[arg(long)]
        model: String,
        /// The source table (`schema.table` allowed).
        #[arg(long, required_unless_present = "query", conflicts_with = "query")]
        table: Option<String>,
        /// A SELECT to read rows from instead of a table.
        #[arg(long)]
        query: Option<String>,
        /// Replace an existing job file.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this job (default: all).
    pub name: Option<String>,

    /// How many of the job's recent windows to show (with NAME).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,

    /// Print JSON instead of tables, for scripts.
    #[arg(long, conflicts_with = "html")]
    pub json: bool,

    /// Write the status page to FILE as one static HTML file (the daemon serves it at `/`),
    /// for cron users: every job, or with NAME the job's page.
    #[arg(long, value_name = "FILE")]
    pub html: Option<std::path::PathBuf>,

    /// With --html: reload the page every SECONDS (0: never).
    #[arg(long, value_name = "SECONDS", default_value_t = 30, requires = "html")]
    pub refresh: u32,
}

const MONITOR_HELP: &str = "\
Scores: PSI over the reference's deciles for numeric columns, Jensen-Shannon distance (base 2)
for text and boolean ones, the change of the null rate, and for numeric outputs the change of the
mean in the reference's standard deviations. Thresholds and the reference are set in [monitor].

Exit codes:
  0   no column is in drift (or there is nothing to judge yet)
  1   a column is in drift (or the database cannot be reached)
  2   usage or configuration error";

#[derive(Debug, Args)]
pub struct MonitorArgs {
    #[command(subcommand)]
    pub command: Option<MonitorCommand>,

    /// Job name: the stem of a file in the jobs directory.
    #[arg(required = true)]
    pub name: Option<String>,

    /// Print JSON for scripts: the window, the reference, and every column's scores and the
    /// bins or categories they come from.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum MonitorCommand {
    /// Store the merged profile of the job's committed windows inside [FROM, TO) as its
    /// reference, in place of the job file's; --clear goes back to the file's.
    SetReference {
        /// Job name: the stem of a file in the jobs directory
        name: String,
        /// Start of the range (RFC 3339): windows starting at or after it are taken
        #[arg(long, requires = "to", required_unless_present = "clear", value_parser = parse_time)]
        from: Option<DateTime<Utc>>,
        /// End of the range (RFC 3339): windows ending at or before it are taken
        #[arg(long, requires = "from", value_parser = parse_time)]
        to: Option<DateTime<Utc>>,
        /// Remove the stored reference.
        #[arg(long, conflicts_with_all = ["from", "to"])]
        clear: bool,
    },
}

const STATUS_EXIT_CODES: &str = "\
States: ok, busy (running now), never run, late (a run was due a whole schedule period ago and
the watermark has not moved), failing (a shard's latest window failed or its process died).

Exit codes:
  0   every job is ok, busy or never run
  1   a job is late or failing (or the database cannot be reached)
  2   usage or configuration error";

const DAEMON_EXIT_CODES: &str = "\
Exit codes:
  0   clean shutdown: every running window finished within the grace period
  1   shutdown had to roll back a window that did not finish within --shutdown-grace
  2   configuration error: no valid job (or any invalid job with --strict), bad --listen address";

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Refuse to start if any job is invalid (default: report it and schedule the rest).
    #[arg(long)]
    pub strict: bool,

    /// Most jobs running at once (default: the number of cores).
    #[arg(long)]
    pub max_concurrent: Option<usize>,

    /// On SIGTERM/SIGINT, how long running windows may take to finish before they are rolled back.
    #[arg(long, default_value = "30s", value_parser = parse_std_duration)]
    pub shutdown_grace: std::time::Duration,

    /// Serve GET /healthz and GET /metrics (Prometheus) on this address, e.g. 127.0.0.1:9464.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,

    /// How long a job's claim outlives its last renewal (see run-job --lease).
    #[arg(long, default_value = crate::claim::DEFAULT_LEASE, value_parser = parse_duration)]
    pub lease: chrono::TimeDelta,

    /// How often every job's lateness is checked for alerts (a minute; shorter in tests).
    #[arg(long, default_value = "1m", value_parser = parse_std_duration, hide = true)]
    pub late_check_every: std::time::Duration,
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Check every job's lateness and realized performance now and send what changed (for
    /// cron users without a daemon; failures and drift are sent by run-job itself).
    Check,
    /// Send a test alert to each route and print each answer (exit 1 if one failed).
    Test {
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
    },
}

fn parse_std_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration like 30s: {e}"))
}

#[derive(Debug, Subcommand)]
pub enum WatermarkCommand {
    /// Each job's watermark and how far it lags behind now.
    Show {
        /// Only this job (default: all).
        name: Option<String>,
    },
    /// Move a job's watermark to TIME, backwards or forwards (logged): the next scheduled run
    /// continues from there. Takes the job's claim, so no run is in flight meanwhile.
    Set {
        name: String,
        #[arg(value_parser = parse_time)]
        time: DateTime<Utc>,
        /// Only this shard (default: every shard of the job).
        #[arg(long)]
        shard: Option<u32>,
    },
}

fn parse_duration(s: &str) -> Result<chrono::TimeDelta, String> {
    humantime::parse_duration(s)
        .ok()
        .and_then(|d| chrono::TimeDelta::from_std(d).ok())
        .filter(|d| *d > chrono::TimeDelta::zero())
        .ok_or_else(|| format!("`{s}` is not a duration like 10m or 1h"))
}
