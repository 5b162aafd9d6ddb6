//! `batchscore run-job NAME`: validate the job, claim it, score its due windows (or a backfill).

use std::process::ExitCode;

use chrono::Utc;

use crate::cli::{GlobalArgs, RunJobArgs};
use crate::db::{self, Backend};
use crate::error::ConfigError;
use crate::job::{self, PreparedJob};
use crate::plan::{Plan, Window, WindowRequest, plan_windows};
use crate::run::ShardChoice;
use crate::shard::Shard;
use crate::shutdown::{Shutdown, Stop};
use crate::{run, spec, with_backend};

pub async fn run(global: &GlobalArgs, args: RunJobArgs) -> anyhow::Result<ExitCode> {
    let spec = spec::load_job(&global.jobs_dir, &args.name)?;
    // No wait on the database outlasts the lease (see `db::Limits`).
    let db = db::connect_with(&global.database_url, db::Limits::for_lease(args.lease)).await?;
    with_backend!(db, backend => run_with(&backend, spec, args, global).await)
}

/// The shards of a scheduled run, when none of them has a window due: then there is nothing to
/// claim, read or write, and the model is not even loaded (a cron tick that finds nothing to
/// do costs a process start and two reads). `None` when any shard has a window due, has no
/// watermark yet (its first run plans from now), or was counted for another number of shards
/// (the full path says why that is refused), and for jobs with `[labels]`, whose run also
/// evaluates what became due.
async fn nothing_due<B: Backend>(
    db: &B,
    spec: &spec::JobSpec,
    request: WindowRequest,
    only: Option<u32>,
) -> anyhow::Result<Option<Vec<Shard>>> {
    if spec.labels.is_some() {
        return Ok(None);
    }
    let Ok(shards) = Shard::select(spec.source.shards, only) else {
        return Ok(None); // the full path names the bad --shard
    };
    let watermarks = crate::db::ledger::watermarks(db.pool(), Some(&spec.name)).await?;
    for shard in &shards {
        let Some(found) = watermarks.iter().find(|w| w.shard == *shard) else {
            return Ok(None);
        };
        match plan_windows(&spec.window, Some(found.watermark), request) {
            Ok(plan) if plan.windows.is_empty() && plan.skipped.is_none() => {}
            _ => return Ok(None),
        }
    }
    Ok(Some(shards))
}

async fn run_with<B: Backend>(
    db: &B,
    spec: spec::JobSpec,
    args: RunJobArgs,
    global: &GlobalArgs,
) -> anyhow::Result<ExitCode> {
    // Even before the claim, no wait on the database outlasts the lease.
    let deadline = args.lease.to_std().unwrap_or_default();
    if !args.dry_run {
        // A dry run writes nothing, not even batchscore's own tables.
        db::within(deadline, "applying migrations", crate::db::migrate(db)).await?;
    }
    let request = match (&args.rescore_model, args.from, args.to) {
        (Some(prefix), from, to) => {
            let range = from.zip(to).map(|(start, end)| Window { start, end });
            let finding = rescore_model(db, &spec.name, prefix);
            let model = db::within(deadline, "finding the model to re-score", finding).await?;
            WindowRequest::Rescore { model, range }
        }
        (None, Some(from), Some(to)) => WindowRequest::Backfill { from, to },
        _ => WindowRequest::Scheduled {
            now: args.at.unwrap_or_else(Utc::now),
        },
    };
    if !args.dry_run
        && let WindowRequest::Scheduled { .. } = request
        && let Some(shards) = db::within(
            deadline,
            "looking for windows due",
            nothing_due(db, &spec, request, args.shard),
        )
        .await?
    {
        for shard in shards {
            let name = crate::shard::job_label(&spec.name, shard);
            println!("{name}: up to date, no window is due");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.dry_run {
        db.claim_ahead();
    }
    let job = db::within(deadline, "checking the job", job::prepare(db, spec)).await?;

    if args.dry_run {
        // A dry run checks what a run would find: whether ONNX Runtime loads the models too.
        job.load_models().await?;
        print_plan(db, &job, request, args.shard).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let stop = Stop::at_once(Shutdown::listen()?);
    let choice = match args.shard {
        Some(index) => ShardChoice::One(index),
        None => ShardChoice::Every,
    };
    let progress = match crate::logging::progress_bars(global) {
        Some(bars) => run::Progress::Bars(bars),
        None => run::Progress::log(),
    };
    let alerts = super::alerts::load_for_scoring(global, crate::alerts::Counters::default());
    let (summary, _) = run::Run::new(db, &job, args.lease, &stop, &progress)
        .alerting(alerts.clone())
        .run_job(request, choice)
        .await;
    // Alerts go out after the windows' commits; the exit waits for them (each delivery is
    // bounded), and their outcome does not change it.
    let summary = match summary {
        Ok(summary) => summary,
        Err(err) => {
            if let Some(alerts) = &alerts {
                alerts.settle().await;
            }
            return Err(err);
        }
    };
    for run in &summary.runs {
        let name = crate::shard::job_label(&job.spec.name, run.shard);
        if run.windows.is_empty() {
            match request {
                WindowRequest::Rescore { model, .. } => println!(
                    "{name}: no committed window is left that model {} scored last",
                    hex::encode(model)
                ),
                _ => println!("{name}: up to date, no window is due"),
            }
        }
        for window in &run.windows {
            println!(
                "{name}: scored {} rows of window {} into {} (run {})",
                window.rows_written, window.window, job.results.table, window.run_id
            );
        }
        if let Some(skipped) = run.skipped {
            println!(
                "{name}: skipped missed range {skipped} (catch_up = \"latest\"), recorded in the ledger"
            );
        }
        if run.left_behind > 0 {
            println!(
                "{name}: {} more window(s) due, left for the next run (window.max_catch_up)",
                run.left_behind
            );
        }
    }
    evaluate_due(db, &job, deadline, alerts.as_ref()).await;
    expire_results(db, &job, deadline).await;
    if let Some(alerts) = &alerts {
        alerts.settle().await;
    }
    for shard in &summary.passed_over {
        let name = crate::shard::job_label(&job.spec.name, *shard);
        println!("{name}: left to the run that holds it");
    }
    if let Some(left) = summary.left_shards(&job.spec.name, request) {
        return Err(left.into());
    }
    Ok(ExitCode::SUCCESS)
}

/// After the windows: delete the job's result rows past `[sink] retain`. A failure is a
/// warning: the windows are committed, and the next run deletes what this one left.
async fn expire_results<B: Backend>(
    db: &B,
    job: &crate::job::PreparedJob,
    deadline: std::time::Duration,
) {
    let expiring = crate::retention::expire(db, job, Utc::now());
    match db::within(deadline, "deleting expired result rows", expiring).await {
        Ok(0) => {}
        Ok(rows) => println!(
            "{}: deleted {rows} result row(s) of windows older than [sink] retain",
            job.spec.name
        ),
        Err(err) => eprintln!(
            "warning: job `{}`: deleting expired result rows failed ({err:#}); its windows are committed",
            job.spec.name
        ),
    }
}

/// After the run's windows are committed (its claims released), evaluate the job's windows whose
/// labels are due, as the daemon does after a tick, so cron users get realized performance too.
/// A failure here is reported and leaves the run's exit code alone: its windows are committed.
async fn evaluate_due<B: Backend>(
    db: &B,
    job: &crate::job::PreparedJob,
    deadline: std::time::Duration,
    alerts: Option<&std::sync::Arc<crate::alerts::Alerts>>,
) {
    if job.spec.labels.is_none() {
        return;
    }
    let evaluating = async {
        let done = crate::performance::evaluate_due(db, job, Utc::now()).await?;
        if let Some(alerts) = alerts {
            let summary = crate::performance::summary(db, &job.spec.name).await?;
            let change = crate::alerts::performance_change(&job.spec, &summary);
            alerts.raise(db, change.into_iter().collect());
        }
        anyhow::Ok(done)
    };
    match db::within(deadline, "evaluating realized performance", evaluating).await {
        Ok(done) if !done.windows.is_empty() => println!(
            "{}: evaluated {} window(s) against its labels ({} figure(s) changed)",
            job.spec.name,
            done.windows
                .iter()
                .filter(|w| w.model == "champion")
                .count(),
            done.changed
        ),
        Ok(_) => {}
        Err(err) => eprintln!(
            "warning: job `{}`: evaluating realized performance failed ({err:#}); its windows are committed",
            job.spec.name
        ),
    }
}

/// The one model whose sha256 starts with `prefix` among those that scored the job's committed
/// windows. None, or more than one, is a configuration error listing what there is.
async fn rescore_model<B: Backend>(db: &B, job: &str, prefix: &str) -> anyhow::Result<[u8; 32]> {
    let prefix = prefix.to_ascii_lowercase();
    if prefix.is_empty() || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ConfigError::job(
            job,
            format!("--rescore-model `{prefix}` is not a sha256 or a prefix of one (hex digits)"),
        )
        .into());
    }
    let found = match migrated(db).await? {
        true => crate::db::lineage::models_matching(db.pool(), job, &prefix).await?,
        false => Vec::new(),
    };
    match found.as_slice() {
        [sha] => {
            let mut model = [0u8; 32];
            hex::decode_to_slice(sha, &mut model).map_err(|e| {
                anyhow::anyhow!("batchscore_runs holds model_sha256 `{sha}`, not a sha256: {e}")
            })?;
            Ok(model)
        }
        [] => Err(ConfigError::job(
            job,
            format!(
                "no committed window was scored by a model whose sha256 starts with `{prefix}` \
                 (`batchscore models {job}` lists the models it has used)"
            ),
        )
        .into()),
        many => Err(ConfigError::job(
            job,
            format!(
                "--rescore-model `{prefix}` is ambiguous: it starts {} sha256s: {}; give more digits",
                many.len(),
                many.join(", ")
            ),
        )
        .into()),
    }
}

/// Whether batchscore's tables exist: a dry run must not create them.
async fn migrated<B: Backend>(db: &B) -> anyhow::Result<bool> {
    let watermarks = crate::ident::TableName::parse("batchscore_watermarks").expect("a valid name");
    Ok(db.table_columns(&watermarks).await?.is_some())
}

async fn print_plan<B: Backend>(
    db: &B,
    job: &PreparedJob,
    request: WindowRequest,
    only: Option<u32>,
) -> anyhow::Result<()> {
    // Before the first migration there is no watermark table, and a dry run must not create it.
    let migrated = migrated(db).await?;
    println!("job:       {}", job.spec.name);
    if let WindowRequest::Rescore { model, .. } = request {
        println!(
            "rescore:   windows model {} scored last",
            hex::encode(model)
        );
    }
    let shards = Shard::select(job.spec.source.shards, only)
        .map_err(|p| ConfigError::job(&job.spec.name, p))?;
    for shard in shards {
        let watermark = match migrated {
            true => crate::db::ledger::watermark(db.pool(), &job.spec.name, shard).await?,
            false => None,
        };
        let plan = match request {
            WindowRequest::Rescore { model, range } => {
                let model = hex::encode(model);
                let listing = crate::db::lineage::windows_scored_by(
                    db.pool(),
                    &job.spec.name,
                    shard,
                    &model,
                    range,
                );
                Plan::rescore(listing.await?)
            }
            _ => plan_windows(&job.spec.window, watermark, request)
                .map_err(|p| ConfigError::job(&job.spec.name, p))?,
        };
        if !shard.is_whole() {
            println!("shard:     {shard}");
        }
        match watermark {
            Some(w) => println!("watermark: {}", crate::time::time_text(w)),
            None => println!("watermark: none yet"),
        }
        if plan.windows.is_empty() {
            match request {
                WindowRequest::Rescore { .. } => println!("windows:   none left to re-score"),
                _ => println!("windows:   none due (up to date)"),
            }
        }
        for window in &plan.windows {
            let rows = db
                .count_window(&job.spec, &job.shape, *window, shard, None)
                .await?;
            println!("window:    {window}  rows: {rows}");
        }
        if let Some(skipped) = plan.skipped {
            println!("skipped:   {skipped} (catch_up = \"latest\")");
        }
    }
    println!(
        "source:    {}",
        crate::source::source_description(&job.spec)
    );
    println!(
        "model:     {} (sha256 {})",
        job.model.origin, job.model.sha256
    );
    match &job.challenger {
        Some(Ok(c)) => println!(
            "challenger: {} (sha256 {}) -> {}",
            c.model.origin, c.model.sha256, c.results.table
        ),
        Some(Err(problem)) => println!("challenger: cannot score: {problem}"),
        None => {}
    }
    for line in job.describe_io() {
        println!("           {line}");
    }
    println!("results:   {}", job.results.table);
    println!("dry run:   nothing was written");
    Ok(())
}
