//! `batchscore watermark show [NAME]` and `batchscore watermark set NAME TIME [--shard I]`.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use comfy_table::{Table, presets::NOTHING};

use super::shard_claims::{ShardClaims, humantime_lease};
use crate::cli::GlobalArgs;
use crate::db::{self, Backend};
use crate::error::ConfigError;
use crate::shard::Shard;
use crate::shard::job_label;
use crate::{spec, with_backend};

pub async fn show(global: &GlobalArgs, name: Option<String>) -> anyhow::Result<ExitCode> {
    let db = db::connect(&global.database_url).await?;
    let watermarks = with_backend!(&db, backend => async {
        crate::db::migrate(backend).await?;
        crate::db::ledger::watermarks(backend.pool(), name.as_deref()).await
    }.await)?;
    let mut table = Table::new();
    table.load_preset(NOTHING);
    table.set_header(["JOB", "SHARD", "WATERMARK", "LAG SECONDS"]);
    let now = Utc::now();
    for row in watermarks {
        let shard = match row.shard.is_whole() {
            true => "-".to_owned(),
            false => row.shard.to_string(),
        };
        table.add_row([
            row.job,
            shard,
            crate::time::time_text(row.watermark),
            format!("{:.0}", (now - row.watermark).as_seconds_f64()),
        ]);
    }
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

/// Move watermarks by hand, the only way one ever moves backwards: one shard's, or every shard's
/// of the job. Each shard's claim is taken first, so no run of it is between planning and commit
/// meanwhile.
pub async fn set(
    global: &GlobalArgs,
    name: &str,
    time: DateTime<Utc>,
    only: Option<u32>,
) -> anyhow::Result<ExitCode> {
    let spec = spec::load_job(&global.jobs_dir, name)?;
    if time > Utc::now() {
        return Err(ConfigError::job(name, "a watermark cannot be set in the future").into());
    }
    let shards = Shard::select(spec.source.shards, only).map_err(|p| ConfigError::job(name, p))?;
    let db = db::connect(&global.database_url).await?;
    with_backend!(&db, backend => set_with(backend, &spec.name, &shards, time).await)?;
    Ok(ExitCode::SUCCESS)
}

async fn set_with<B: Backend>(
    db: &B,
    job: &str,
    shards: &[Shard],
    time: DateTime<Utc>,
) -> anyhow::Result<()> {
    crate::db::migrate(db).await?;
    let count = shards.first().map_or(1, |s| s.count);
    if let Some(other) = crate::db::ledger::watermarks(db.pool(), Some(job))
        .await?
        .into_iter()
        .find(|w| w.shard.count != count)
    {
        let problem = format!(
            "its watermarks are for {} shard(s), but the job file says shards = {count}: \
             finish the resharding first (`batchscore reshard {job}`)",
            other.shard.count
        );
        return Err(ConfigError::job(job, problem).into());
    }
    let held = ShardClaims::take(db, job, shards, humantime_lease()).await?;
    let mut outcome = Ok(Vec::new());
    for shard in shards {
        let previous = match crate::db::ledger::watermark(db.pool(), job, *shard).await {
            Ok(previous) => previous,
            Err(err) => {
                outcome = Err(err);
                break;
            }
        };
        if let Err(err) = crate::db::ledger::set_watermark(db.pool(), job, *shard, time).await {
            outcome = Err(err);
            break;
        }
        if let Ok(moved) = &mut outcome {
            moved.push((*shard, previous));
        }
    }
    held.release(db).await?;
    let time = crate::time::time_text(time);
    for (shard, previous) in outcome? {
        let previous = match previous {
            Some(t) => crate::time::time_text(t),
            None => "none".to_owned(),
        };
        let label = job_label(job, shard);
        tracing::warn!(job = %label, from = %previous, to = %time, "watermark set by hand");
        println!("{label}: watermark moved from {previous} to {time}");
    }
    Ok(())
}
