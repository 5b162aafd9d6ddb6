//! `batchscore status [NAME]`: is every job healthy? One line per job (its state, last success,
//! watermark lag, next run, and what the last 24 hours held), and with NAME the job's recent
//! windows too; `--json` for scripts. Exits 1 when a job is `late` or `failing`, so it serves as
//! a cron or Nagios-style check.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::process::ExitCode;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use comfy_table::{Cell, Color, Table, presets::NOTHING};
use serde_json::{Value, json};

use crate::cli::{GlobalArgs, StatusArgs};
use crate::db::{self, Backend, JobHealth, ledger};
use crate::ledger::RunRecord;
use crate::schedule::next_fire;
use crate::spec::{JobSpec, job_names, load_job};
use crate::with_backend;

/// How far back "the last 24 hours" reaches.
const RECENT: TimeDelta = TimeDelta::hours(24);

/// A job's state, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// The latest finished window of a shard failed (or its process died).
    Failing,
    /// A scheduled run was due a whole schedule period ago and the watermark has not moved.
    Late,
    /// Running now (a shard's claim is held).
    Busy,
    /// No window committed yet.
    NeverRun,
    Ok,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Failing => "failing",
            State::Late => "late",
            State::Busy => "busy",
            State::NeverRun => "never run",
            State::Ok => "ok",
        }
    }

    fn colour(self) -> Color {
        match self {
            State::Failing => Color::Red,
            State::Late => Color::Yellow,
            State::Busy => Color::Cyan,
            State::NeverRun => Color::DarkGrey,
            State::Ok => Color::Green,
        }
    }

    /// Whether `status` exits 1 for it.
    fn unhealthy(self) -> bool {
        matches!(self, State::Failing | State::Late)
    }
}

/// What `status` says of one job.
#[derive(Debug, Clone)]
struct JobStatus {
    job: String,
    state: State,
    /// `None` when the job has no file (it is only in the ledger).
    spec: Option<JobSpec>,
    last_success: Option<DateTime<Utc>>,
    /// The oldest shard's.
    watermark: Option<DateTime<Utc>>,
    next_due: Option<DateTime<Utc>>,
    health: JobHealth,
    /// The latest window against the job's reference: `ok`, `drift: COLUMNS`, `no reference`,
    /// `off` (profiles turned off) or `-` (nothing profiled yet).
    drift: String,
    /// The headline realized metric of the latest final window (`auc 0.91`, `mae 3.2`), `-`
    /// without labels or a final window yet.
    metric: String,
    metric_value: Option<(String, f64)>,
}

/// What `monitor` says of the job's latest window, in a few words.
async fn drift_state<B: Backend>(db: &B, spec: &JobSpec) -> String {
    if !spec.monitor.profile {
        return "off".to_owned();
    }
    match super::monitor::latest(db, spec).await {
        Ok(None) => "-".to_owned(),
        Ok(Some(latest)) => {
            let drifted: Vec<&str> = latest.report.drifted().map(|c| c.column.as_str()).collect();
            if !drifted.is_empty() {
                format!("drift: {}", drifted.join(", "))
            } else if latest.reference.is_none_or(|r| r.windows == 0) {
                "no reference".to_owned()
            } else {
                "ok".to_owned()
            }
        }
        Err(err) => {
            tracing::warn!(job = %spec.name, error = %format!("{err:#}"), "could not judge drift");
            "unknown".to_owned()
        }
    }
}

/// The job's headline realized metric (AUC or MAE) of its latest final window, if it has
/// `[labels]` and one.
async fn headline<B: Backend>(db: &B, spec: &JobSpec) -> Option<(String, f64)> {
    let labels = spec.labels.as_ref()?;
    let metric = labels.task.headline();
    match crate::performance::summary(db, &spec.name).await {
        Ok(summary) => summary
            .latest("champion", metric)
            .map(|v| (metric.to_owned(), v)),
        Err(err) => {
            tracing::warn!(job = %spec.name, error = %format!("{err:#}"), "could not read realized performance");
            None
        }
    }
}

/// The job's state from what the ledger, the claims and the schedule say.
fn state(
    spec: Option<&JobSpec>,
    health: &JobHealth,
    watermark: Option<DateTime<Utc>>,
    running: bool,
    now: DateTime<Utc>,
) -> State {
    if health.failing {
        return State::Failing;
    }
    if let (Some(spec), Some(watermark)) = (spec, watermark) {
        // The first run that should have moved the watermark past where it is, and then a
        // whole period for that run to finish.
        let schedule = &spec.schedule;
        let due = next_fire(schedule, watermark + spec.window.lateness);
        let grace = due.and_then(|due| next_fire(schedule, due).map(|next| next - due));
        if let (Some(due), Some(grace)) = (due, grace)
            && due + grace < now
        {
            return State::Late;
        }
    }
    if running {
        State::Busy
    } else if health.last_success.is_none() {
        State::NeverRun
    } else {
        State::Ok
    }
}

pub async fn run(global: &GlobalArgs, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let now = Utc::now();
    let name = args.name.as_deref();
    let overview = gather(global, name, args.limit, now).await?;
    if args.json {
        let jobs: Vec<Value> = overview.statuses.iter().map(|s| to_json(s, now)).collect();
        let out = match name {
            Some(_) => {
                let mut job = jobs.into_iter().next().unwrap_or(Value::Null);
                job["runs"] = overview.runs.iter().map(run_json).collect();
                job
            }
            None => Value::Array(jobs),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}", summary_table(&overview.statuses, now));
        if name.is_some() {
            println!("\n{}", runs_table(overview.runs));
        }
    }
    let unhealthy = overview.statuses.iter().any(|s| s.state.unhealthy());
    Ok(if unhealthy {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Every job's status (or `name`'s, with its latest `limit` runs), as of `now`.
struct Overview {
    statuses: Vec<JobStatus>,
    runs: Vec<RunRecord>,
}

/// What the ledger, the claims and the job files say of every job, or of `name`.
async fn gather(
    global: &GlobalArgs,
    name: Option<&str>,
    limit: u32,
    now: DateTime<Utc>,
) -> anyhow::Result<Overview> {
    let db = db::connect(&global.database_url).await?;
    let (health, running, watermarks, runs) = with_backend!(&db, backend => async {
        crate::db::migrate(backend).await?;
        let runs = match name {
            Some(name) => ledger::recent_runs(backend.pool(), Some(name), limit).await?,
            None => Vec::new(),
        };
        anyhow::Ok((
            ledger::health(backend.pool(), now - RECENT).await?,
            ledger::running_jobs(backend.pool()).await?,
            ledger::watermarks(backend.pool(), name).await?,
            runs,
        ))
    }.await)?;
    let specs = known_jobs(&global.jobs_dir, name, &health)?;
    let mut drift: BTreeMap<String, String> = BTreeMap::new();
    let mut metrics: BTreeMap<String, (String, f64)> = BTreeMap::new();
    with_backend!(&db, backend => async {
        for spec in specs.values().flatten() {
            drift.insert(spec.name.clone(), drift_state(backend, spec).await);
            if let Some(headline) = headline(backend, spec).await {
                metrics.insert(spec.name.clone(), headline);
            }
        }
    }.await);
    let running: BTreeSet<String> = running.into_iter().collect();
    let statuses = specs
        .into_iter()
        .map(|(job, spec)| {
            let health = health
                .iter()
                .find(|h| h.job == job)
                .cloned()
                .unwrap_or_else(|| JobHealth {
                    job: job.clone(),
                    ..JobHealth::default()
                });
            let watermark = watermarks
                .iter()
                .filter(|w| w.job == job)
                .map(|w| w.watermark)
                .min();
            let is_running = running.contains(&job);
            let state = state(spec.as_ref(), &health, watermark, is_running, now);
            let next_due = spec.as_ref().and_then(|s| next_fire(&s.schedule, now));
            let metric_value = metrics.remove(&job);
            JobStatus {
                drift: drift.remove(&job).unwrap_or_else(|| "-".to_owned()),
                metric: metric_value.as_ref().map_or("-".to_owned(), |(m, v)| {
                    format!("{} {v:.3}", m.to_uppercase())
                }),
                metric_value,
                job,
                state,
                last_success: health.last_success,
                spec,
                watermark,
                next_due,
                health,
            }
        })
        .collect();
    Ok(Overview { statuses, runs })
}

/// Jobs with a file, and jobs only the ledger knows (their file was removed); or `name` alone.
/// A job file that does not load is `None`: `jobs validate` says why, and the ledger still
/// speaks for it.
fn known_jobs(
    jobs_dir: &std::path::Path,
    name: Option<&str>,
    health: &[JobHealth],
) -> anyhow::Result<BTreeMap<String, Option<JobSpec>>> {
    let mut specs: BTreeMap<String, Option<JobSpec>> = BTreeMap::new();
    let files = match name {
        Some(name) => vec![name.to_owned()],
        None => job_names(jobs_dir).unwrap_or_default(),
    };
    for job in files {
        let spec = match load_job(jobs_dir, &job) {
            Ok(spec) => Some(spec),
            // A job named by mistake, neither a file nor in the ledger.
            Err(err) if name.is_some() && !health.iter().any(|h| h.job == job) => {
                return Err(err.into());
            }
            Err(_) => None,
        };
        specs.insert(job, spec);
    }
    for h in health {
        if name.is_none_or(|n| n == h.job) {
            specs.entry(h.job.clone()).or_insert(None);
        }
    }
    Ok(specs)
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A length of time as people read it: `45s`, `12m`, `3h 5m`, `2d 4h`.
fn span(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn summary_table(statuses: &[JobStatus], now: DateTime<Utc>) -> Table {
    let mut table = Table::new();
    table.load_preset(NOTHING);
    // Colour for a person at a terminal only, never in files, pipes or cron mail.
    if std::io::stdout().is_terminal() {
        table.enforce_styling();
    } else {
        table.force_no_tty();
    }
    table.set_header([
        "JOB",
        "STATE",
        "LAST SUCCESS",
        "LAG",
        "NEXT RUN",
        "ROWS 24H",
        "FAILED 24H",
        "BAD ROWS 24H",
        "DRIFT",
        "METRIC",
    ]);
    for s in statuses {
        let last = s.last_success.map_or("-".to_owned(), |t| {
            format!("{} ({} ago)", time(t), span((now - t).num_seconds()))
        });
        let lag = s
            .watermark
            .map_or("-".to_owned(), |w| span((now - w).num_seconds()));
        let next = match (&s.spec, s.next_due) {
            (Some(_), Some(t)) => format!("{} (in {})", time(t), span((t - now).num_seconds())),
            (Some(_), None) => "never".to_owned(),
            (None, _) => "no job file".to_owned(),
        };
        table.add_row(vec![
            Cell::new(&s.job),
            Cell::new(s.state.as_str()).fg(s.state.colour()),
            Cell::new(last),
            Cell::new(lag),
            Cell::new(next),
            Cell::new(s.health.rows_written),
            Cell::new(s.health.failures),
            Cell::new(s.health.rows_bad),
            match s.drift.starts_with("drift") {
                true => Cell::new(&s.drift).fg(Color::Yellow),
                false => Cell::new(&s.drift),
            },
            Cell::new(&s.metric),
        ]);
    }
    table
}

fn to_json(s: &JobStatus, now: DateTime<Utc>) -> Value {
    json!({
        "job": s.job,
        "state": s.state.as_str(),
        "shards": s.spec.as_ref().map(|spec| spec.source.shards),
        "schedule": s.spec.as_ref().map(|spec| spec.schedule.expression.clone()),
        "last_success": s.last_success.map(time),
        "last_success_age_seconds": s.last_success.map(|t| (now - t).num_seconds()),
        "watermark": s.watermark.map(time),
        "lag_seconds": s.watermark.map(|w| (now - w).num_seconds()),
        "next_run": s.next_due.map(time),
        "rows_written_24h": s.health.rows_written,
        "failures_24h": s.health.failures,
        "bad_rows_24h": s.health.rows_bad,
        "drift": s.drift,
        "metric": s.metric_value.as_ref().map(|(metric, value)| json!({ "name": metric, "value": value })),
    })
}

fn run_json(run: &RunRecord) -> Value {
    json!({
        "run_id": run.run_id,
        "shard": run.shard,
        "window_start": time(run.window_start),
        "window_end": time(run.window_end),
        "status": run.status.as_str(),
        "rows_read": run.rows_read,
        "rows_written": run.rows_written,
        "rows_bad": run.rows_bad,
        "started_at": time(run.started_at),
        "finished_at": run.finished_at.map(time),
        "error": run.error,
        "bad_rows": run.bad_rows,
    })
}

/// The job's recent windows, newest first, with the shard each ran.
fn runs_table(runs: Vec<RunRecord>) -> Table {
    let mut table = Table::new();
    table.load_preset(NOTHING);
    table.set_header([
        "STARTED",
        "JOB",
        "SHARD",
        "WINDOW START",
        "WINDOW END",
        "STATUS",
        "READ",
        "WRITTEN",
        "BAD",
        "SECONDS",
        "RUN",
        "ERROR",
    ]);
    for run in runs {
        let seconds = run
            .finished_at
            .map(|end| format!("{:.1}", (end - run.started_at).as_seconds_f64()))
            .unwrap_or_default();
        let error: String = run
            .error
            .or(run.bad_rows)
            .unwrap_or_default()
            .chars()
            .take(80)
            .collect();
        table.add_row([
            time(run.started_at),
            run.job,
            run.shard.to_string(),
            time(run.window_start),
            time(run.window_end),
            run.status.to_string(),
            run.rows_read.to_string(),
            run.rows_written.to_string(),
            run.rows_bad.to_string(),
            seconds,
            run.run_id,
            error,
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(last_success: Option<DateTime<Utc>>, failing: bool) -> JobHealth {
        JobHealth {
            job: "job".into(),
            last_success,
            rows_written: 0,
            failures: 0,
            rows_bad: 0,
            failing,
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn states_follow_the_schedule_the_ledger_and_the_claims() {
        // Every 30 minutes, 2 minutes of lateness.
        let spec = crate::spec::parse_job(
            "job",
            "schedule = \"*/30 * * * *\"\n[source]\ntable = \"t\"\nkey = \"k\"\ntimestamp = \"ts\"\n\
             features = [\"f\"]\n[window]\nsize = \"30m\"\nlateness = \"2m\"\n[model]\npath = \"m.onnx\"\n\
             [outputs]\np = \"p\"\n[sink]\ntable = \"r\"\n",
            std::path::Path::new("/srv"),
        )
        .unwrap();
        let ok = health(Some(t("2026-11-25T09:58:00Z")), false);
        let mark = Some(t("2026-11-25T09:58:00Z"));
        // The 10:30 run moves the watermark to 10:28; until 11:00 (a period later) it is not late.
        assert_eq!(
            state(Some(&spec), &ok, mark, false, t("2026-11-25T10:45:00Z")),
            State::Ok
        );
        assert_eq!(
            state(Some(&spec), &ok, mark, false, t("2026-11-25T11:00:01Z")),
            State::Late
        );
        assert_eq!(
            state(Some(&spec), &ok, mark, true, t("2026-11-25T10:31:00Z")),
            State::Busy
        );
        let failing = health(Some(t("2026-11-25T09:58:00Z")), true);
        assert_eq!(
            state(Some(&spec), &failing, mark, true, t("2026-11-25T10:31:00Z")),
            State::Failing
        );
        let never = health(None, false);
        assert_eq!(
            state(Some(&spec), &never, None, false, t("2026-11-25T10:31:00Z")),
            State::NeverRun
        );
        assert_eq!(span(45), "45s");
        assert_eq!(span(3 * 3600 + 5 * 60), "3h 5m");
        assert_eq!(span(2 * 86_400 + 4 * 3600), "2d 4h");
    }
}
