//! `batchscore reshard NAME`: move a job to the number of shards its file now says.
//!
//! A shard's rows are those whose key hashes to its index modulo the count, so changing the
//! count changes every shard's rows. Done while the shards' watermarks differ, some rows would be
//! scored twice and others never. When they are level, at `T`, every row before `T` was scored
//! once, by its old shard, and none after: the new shards can all start at `T`. This command
//! checks that, then replaces the old shards' watermarks with the new ones in one transaction,
//! holding every shard's claim so that no run is in flight meanwhile. Runs of the old count that
//! start afterwards are refused (their job file disagrees), and any that planned before cannot
//! commit: the watermark's compare-and-set includes the count.

use std::process::ExitCode;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};

use super::shard_claims::{ShardClaims, humantime_lease};
use crate::cli::GlobalArgs;
use crate::db::{self, Backend, ShardWatermark};
use crate::error::{ConfigError, Contention};
use crate::shard::Shard;
use crate::spec::JobSpec;
use crate::{spec, with_backend};

pub async fn run(global: &GlobalArgs, name: &str) -> anyhow::Result<ExitCode> {
    let spec = spec::load_job(&global.jobs_dir, name)?;
    let db = db::connect(&global.database_url).await?;
    with_backend!(&db, backend => reshard(backend, &spec).await)?;
    Ok(ExitCode::SUCCESS)
}

async fn reshard<B: Backend>(db: &B, spec: &JobSpec) -> anyhow::Result<()> {
    crate::db::migrate(db).await?;
    let job = spec.name.as_str();
    let count = spec.source.shards;
    let watermarks = crate::db::ledger::watermarks(db.pool(), Some(job)).await?;
    let Some(old) = watermarks.first().map(|w| w.shard.count) else {
        println!(
            "{job}: no watermark yet, nothing to move: its first run starts all {count} shard(s)"
        );
        return Ok(());
    };
    if watermarks.iter().all(|w| w.shard.count == count) {
        // Some of its shards may not have run yet: they start as new shards do.
        println!("{job}: already has {count} shard(s)");
        return Ok(());
    }
    let at = level(spec, old, &watermarks)?;
    // Every shard of either count: runs of the old shards and any early run of the new ones.
    let touched: Vec<Shard> = Shard::all(old.max(count)).collect();
    let held = ShardClaims::take(db, job, &touched, humantime_lease()).await?;
    let moved = crate::db::ledger::reshard(db.pool(), job, &watermarks, count, at).await;
    held.release(db).await?;
    if !moved? {
        return Err(Contention::WatermarkMoved {
            job: job.to_owned(),
            window: "before the resharding".to_owned(),
        }
        .into());
    }
    let at = crate::time::time_text(at);
    tracing::warn!(job, from = old, to = count, watermark = %at, "job resharded");
    println!("{job}: moved from {old} to {count} shard(s); every shard continues from {at}");
    Ok(())
}

/// The watermark every old shard has, or why the job cannot be resharded yet.
fn level(spec: &JobSpec, old: u32, watermarks: &[ShardWatermark]) -> anyhow::Result<DateTime<Utc>> {
    let job = spec.name.as_str();
    let at = |index| {
        watermarks
            .iter()
            .find(|w| w.shard.index == index && w.shard.count == old)
            .map(|w| w.watermark)
    };
    let marks: Vec<Option<DateTime<Utc>>> = (0..old).map(at).collect();
    let mixed = watermarks.iter().any(|w| w.shard.count != old);
    if let (false, Some(Some(first))) = (mixed, marks.first())
        && marks.iter().all(|m| *m == Some(*first))
    {
        return Ok(*first);
    }
    let listed: Vec<String> = marks
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let m = m.map_or("none".to_owned(), crate::time::time_text);
            format!("shard {i}/{old} at {m}")
        })
        .collect();
    let newest = marks
        .iter()
        .flatten()
        .max()
        .copied()
        .unwrap_or_else(Utc::now);
    // `run-job --at T` plans up to T - lateness, in whole seconds.
    let mut t = newest + spec.window.lateness;
    if t.trunc_subsecs(0) != t {
        t = t.trunc_subsecs(0) + TimeDelta::seconds(1);
    }
    let problem = format!(
        "cannot reshard from {old} to {} shards: the shards' watermarks are not level ({}). \
         Level them first, scoring with the old count: set `shards = {old}` in the job file \
         again, run `batchscore run-job {job} --at {}` (repeat while it reports windows left \
         behind), then set `shards = {}` and run `batchscore reshard {job}` again",
        spec.source.shards,
        listed.join(", "),
        crate::time::time_text(t),
        spec.source.shards,
    );
    Err(ConfigError::job(job, problem).into())
}
