//! `batchscore run-job NAME`: validate the job, plan its window, score it once.

use std::process::ExitCode;

use chrono::Utc;

use crate::cli::{GlobalArgs, RunJobArgs};
use crate::db::{self, Backend};
use crate::error::ConfigError;
use crate::job::{self, PreparedJob};
use crate::plan::{WindowRequest, plan_window};
use crate::{run, spec, with_backend};

pub async fn run(global: &GlobalArgs, args: RunJobArgs) -> anyhow::Result<ExitCode> {
    let spec = spec::load_job(&global.jobs_dir, &args.name)?;
    let db = db::connect(&global.database_url).await?;
    with_backend!(db, backend => run_with(&backend, spec, args).await)
}

async fn run_with<B: Backend>(
    db: &B,
    spec: spec::JobSpec,
    args: RunJobArgs,
) -> anyhow::Result<ExitCode> {
    let request = match (args.from, args.to) {
        (Some(from), Some(to)) => WindowRequest::Explicit { from, to },
        _ => WindowRequest::Latest {
            now: args.at.unwrap_or_else(Utc::now),
        },
    };
    let window = plan_window(&spec.window, request).map_err(|p| ConfigError::job(&spec.name, p))?;
    if !args.dry_run {
        // A dry run writes nothing, not even batchscore's own tables.
        db.migrate().await?;
    }
    let job = job::prepare(db, spec).await?;

    if args.dry_run {
        let rows = db.count_window(&job.spec, window).await?;
        print_plan(&job, window, rows);
        return Ok(ExitCode::SUCCESS);
    }
    let summary = run::run_window(db, &job, window).await?;
    println!(
        "{}: scored {} rows of window {} into {} (run {})",
        job.spec.name, summary.rows_written, summary.window, job.results.table, summary.run_id
    );
    Ok(ExitCode::SUCCESS)
}

fn print_plan(job: &PreparedJob, window: crate::plan::Window, rows: i64) {
    println!("job:     {}", job.spec.name);
    println!("window:  {window}");
    println!("rows:    {rows}");
    println!("source:  {}", crate::source::source_description(&job.spec));
    println!(
        "model:   {} (sha256 {})",
        job.model.path.display(),
        job.model.sha256
    );
    println!("         {}", job.model.signature());
    let outputs: Vec<String> = job
        .outputs
        .iter()
        .map(|o| format!("{} = {}", o.spec.column, o.spec.reference()))
        .collect();
    println!("results: {} ({})", job.results.table, outputs.join(", "));
    println!("dry run: nothing was written");
}
