//! `batchscore status [NAME]`: the latest runs from the ledger, as a table, with the shard each
//! ran (0 for jobs that are not sharded).

use std::process::ExitCode;

use chrono::SecondsFormat;
use comfy_table::{Table, presets::NOTHING};

use crate::cli::{GlobalArgs, StatusArgs};
use crate::db::{self, Backend};
use crate::with_backend;

pub async fn run(global: &GlobalArgs, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let db = db::connect(&global.database_url).await?;
    let runs = with_backend!(&db, backend => async {
        backend.migrate().await?;
        backend.recent_runs(args.name.as_deref(), args.limit).await
    }.await)?;

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
    let time = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
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
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}
