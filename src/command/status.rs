//! `batchscore status [NAME]`: is every job healthy? One line per job (its state, last success,
//! watermark lag, next run, and what the last 24 hours held), and with NAME the job's recent
//! windows too; `--json` for scripts, `--html FILE` for the status page as one file. Exits 1
//! when a job is `late` or `failing`, so it serves as a cron or Nagios-style check.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use comfy_table::{Cell, Color, Table, presets::NOTHING};
use serde_json::{Value, json};

use crate::cli::{GlobalArgs, StatusArgs};
use crate::db::{self, Backend, ledger};
use crate::ledger::RunRecord;
use crate::status::page::{self, Links};
use crate::status::{JobStatus, State, job, span};
use crate::with_backend;

fn colour(state: State) -> Color {
    match state {
        State::Failing => Color::Red,
        State::Late => Color::Yellow,
        State::Busy => Color::Cyan,
        State::NeverRun => Color::DarkGrey,
        State::Ok => Color::Green,
    }
}

pub async fn run(global: &GlobalArgs, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let now = Utc::now();
    let name = args.name.as_deref();
    let db = db::connect(&global.database_url).await?;
    let (statuses, runs, html) = with_backend!(&db, backend => async {
        crate::db::migrate(backend).await?;
        gather(backend, global, &args, now).await
    }.await)?;
    if let Some(path) = &args.html {
        std::fs::write(path, html.unwrap_or_default())
            .with_context(|| format!("writing the status page to {}", path.display()))?;
    } else if args.json {
        let jobs: Vec<Value> = statuses.iter().map(|s| to_json(s, now)).collect();
        let out = match name {
            Some(_) => {
                let mut job = jobs.into_iter().next().unwrap_or(Value::Null);
                job["runs"] = runs.iter().map(run_json).collect();
                job
            }
            None => Value::Array(jobs),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}", summary_table(&statuses, now));
        if name.is_some() {
            println!("\n{}", runs_table(runs));
        }
    }
    let unhealthy = statuses.iter().any(|s| s.health.state.unhealthy());
    Ok(if unhealthy {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Every job's status (or NAME's, with its latest runs), and the page `--html` writes.
async fn gather<B: Backend>(
    db: &B,
    global: &GlobalArgs,
    args: &StatusArgs,
    now: DateTime<Utc>,
) -> anyhow::Result<(Vec<JobStatus>, Vec<RunRecord>, Option<String>)> {
    let name = args.name.as_deref();
    let statuses = crate::status::overview(db, &global.jobs_dir, name, now).await?;
    let runs = match name {
        Some(name) => ledger::recent_runs(db.pool(), Some(name), args.limit).await?,
        None => Vec::new(),
    };
    let html = match (&args.html, name) {
        (None, _) => None,
        (Some(_), None) => {
            Some(page::overview(&statuses, now, args.refresh, Links::None).into_string())
        }
        (Some(_), Some(name)) => {
            anyhow::ensure!(
                job::exists(&global.jobs_dir, name, None),
                "job `{name}` has no file in {}",
                global.jobs_dir.display()
            );
            let detail = job::detail(db, &global.jobs_dir, name, None, now).await?;
            Some(page::job(&detail, now, args.refresh, Links::None).into_string())
        }
    };
    Ok((statuses, runs, html))
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
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
        let last = s.health.last_success.map_or("-".to_owned(), |t| {
            format!("{} ({} ago)", time(t), span((now - t).num_seconds()))
        });
        let lag = s
            .health
            .watermark
            .map_or("-".to_owned(), |w| span((now - w).num_seconds()));
        let next = match (&s.spec, s.next_due) {
            (Some(_), Some(t)) => format!("{} (in {})", time(t), span((t - now).num_seconds())),
            (Some(_), None) => "never".to_owned(),
            (None, _) => "no job file".to_owned(),
        };
        table.add_row(vec![
            Cell::new(&s.job),
            Cell::new(s.health.state.as_str()).fg(colour(s.health.state)),
            Cell::new(last),
            Cell::new(lag),
            Cell::new(next),
            Cell::new(s.health.ledger.rows_written),
            Cell::new(s.health.ledger.failures),
            Cell::new(s.health.ledger.rows_bad),
            match s.drift.starts_with("drift") {
                true => Cell::new(&s.drift).fg(Color::Yellow),
                false => Cell::new(&s.drift),
            },
            Cell::new(s.metric_text()),
        ]);
    }
    table
}

fn to_json(s: &JobStatus, now: DateTime<Utc>) -> Value {
    json!({
        "job": s.job,
        "state": s.health.state.as_str(),
        "shards": s.spec.as_ref().map(|spec| spec.source.shards),
        "schedule": s.spec.as_ref().map(|spec| spec.schedule.expression.clone()),
        "last_success": s.health.last_success.map(time),
        "last_success_age_seconds": s.health.last_success.map(|t| (now - t).num_seconds()),
        "watermark": s.health.watermark.map(time),
        "lag_seconds": s.health.watermark.map(|w| (now - w).num_seconds()),
        "next_run": s.next_due.map(time),
        "rows_written_24h": s.health.ledger.rows_written,
        "failures_24h": s.health.ledger.failures,
        "bad_rows_24h": s.health.ledger.rows_bad,
        "drift": s.drift,
        "metric": s.metric.as_ref().map(|(metric, value)| json!({ "name": metric, "value": value })),
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
