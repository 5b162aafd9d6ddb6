//! `batchscore prune [--older-than 90d] [--dry-run]`: delete batchscore's own rows of windows
//! past a bound, less what the job files say is still needed (see [`crate::db::prune`]).

use std::process::ExitCode;

use chrono::{TimeDelta, Utc};

use crate::cli::GlobalArgs;
use crate::db::prune::{KeptProfiles, KeptRuns, in_batches, prunable};
use crate::db::{self, Backend};
use crate::spec::monitor::ReferenceSpec;
use crate::{spec, with_backend};

pub async fn run(
    global: &GlobalArgs,
    older_than: TimeDelta,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    // Every job file, read first: what a job still needs is what its file says, and a file
    // that cannot be read could be keeping anything.
    let mut specs = Vec::new();
    for name in spec::job_names(&global.jobs_dir)? {
        specs.push(spec::load_job(&global.jobs_dir, &name)?);
    }
    let db = db::connect(&global.database_url).await?;
    with_backend!(&db, backend => prune(backend, &specs, older_than, dry_run).await)
}

async fn prune<B: Backend>(
    db: &B,
    specs: &[spec::JobSpec],
    older_than: TimeDelta,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    if !dry_run {
        crate::db::migrate(db).await?;
    }
    let now = Utc::now();
    let cutoff = now - older_than;
    let watermarks = crate::db::ledger::watermarks(db.pool(), None).await?;
    let mut retained = Vec::new();
    let mut references = Vec::new();
    for spec in specs {
        if let Some(retain) = spec.sink.retain {
            retained.push(KeptRuns {
                job: spec.name.clone(),
                results_after: now - retain,
            });
        }
        let Some(reference) = spec.monitor.reference else {
            continue;
        };
        let kept = match reference {
            ReferenceSpec::Fixed { from, to } => KeptProfiles {
                job: spec.name.clone(),
                after: None,
                range: Some((from, to)),
            },
            ReferenceSpec::Rolling { .. } => {
                // The next window judged is the one after the least advanced shard's watermark.
                let next = watermarks
                    .iter()
                    .filter(|w| w.job == spec.name)
                    .map(|w| w.watermark)
                    .min()
                    .unwrap_or(now);
                let (from, _) = reference.range(next, next + spec.window.size);
                KeptProfiles {
                    job: spec.name.clone(),
                    after: Some(from),
                    range: None,
                }
            }
        };
        references.push(kept);
    }
    for table in prunable(cutoff, &retained, &references) {
        if dry_run {
            let rows = table.count(db.pool()).await?;
            println!("{}: {rows} row(s) would be deleted", table.table);
            continue;
        }
        let rows = in_batches(|| table.delete_batch(db.pool())).await?;
        println!("{}: {rows} row(s) deleted", table.table);
    }
    println!(
        "windows that ended before {} (--older-than {})",
        crate::time::time_text(cutoff),
        humantime::format_duration(older_than.to_std().unwrap_or_default())
    );
    Ok(ExitCode::SUCCESS)
}
