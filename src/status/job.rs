//! One job's page (`/jobs/NAME`, `status NAME --html`): its status, its latest windows, its drift
//! against the reference, the model versions that scored it, and a week of windows to chart.

use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};

use super::drift::{Latest, latest};
use super::{JobStatus, overview};
use crate::db::lineage::{ModelVersion, model_versions};
use crate::db::{Backend, ledger};
use crate::ledger::RunRecord;
use crate::spec::job_names;

/// The windows a job page lists.
pub const LISTED: u32 = 50;
/// How far back its charts reach.
pub const CHARTED: TimeDelta = TimeDelta::days(7);
/// The most windows a chart draws (a week of 1-minute windows, and more than enough bars).
const CHARTED_WINDOWS: u32 = 10_080;

/// What a job page shows.
pub struct Detail {
    pub status: JobStatus,
    /// The shard the page is about, or every shard.
    pub shard: Option<u32>,
    /// The latest [`LISTED`] windows, newest first.
    pub runs: Vec<RunRecord>,
    /// The latest profiled window against the reference, if profiles are on and one exists.
    pub drift: Option<Latest>,
    pub versions: Vec<ModelVersion>,
    /// The windows committed in the last [`CHARTED`] that ended in it, oldest run first.
    pub week: Vec<RunRecord>,
}

/// Whether `name` (and `shard`) name a job in `jobs_dir` and one of its shards: what a page's
/// URL may ask for. Anything else is not found, never looked up.
pub fn exists(jobs_dir: &Path, name: &str, shard: Option<u32>) -> bool {
    let known = job_names(jobs_dir).is_ok_and(|names| names.iter().any(|n| n == name));
    known
        && shard.is_none_or(|shard| {
            crate::spec::load_job(jobs_dir, name).is_ok_and(|spec| shard < spec.source.shards)
        })
}

/// The page of job `name` (one of its shards, or all), which the caller has found to
/// [`exist`](exists) in the jobs directory.
pub async fn detail<B: Backend>(
    db: &B,
    jobs_dir: &Path,
    name: &str,
    shard: Option<u32>,
    now: DateTime<Utc>,
) -> anyhow::Result<Detail> {
    let status = overview(db, jobs_dir, Some(name), now)
        .await?
        .pop()
        .with_context(|| format!("job `{name}` has no status"))?;
    let runs = ledger::job_runs(db.pool(), name, shard, None, LISTED).await?;
    let mut week =
        ledger::job_runs(db.pool(), name, shard, Some(now - CHARTED), CHARTED_WINDOWS).await?;
    // Charted by when each window ended: a catch-up's windows spread over the hours they cover.
    week.retain(|r| {
        r.status == crate::ledger::RunStatus::Succeeded && r.window_end >= now - CHARTED
    });
    week.reverse();
    let drift = match &status.spec {
        Some(spec) if spec.monitor.profile => latest(db, spec).await.unwrap_or_else(|err| {
            tracing::warn!(job = %name, error = %format!("{err:#}"), "could not judge drift");
            None
        }),
        _ => None,
    };
    let versions = model_versions(db.pool(), name).await?;
    Ok(Detail {
        status,
        shard,
        runs,
        drift,
        versions,
        week,
    })
}
