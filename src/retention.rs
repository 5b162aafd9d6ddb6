//! `[sink] retain`: after a run's windows commit, the job's result rows (and its challenger's)
//! whose window ended longer ago than `retain` are deleted, in statements of at most
//! [`DELETE_BATCH`](crate::db::prune::DELETE_BATCH) rows, each its own transaction: a window
//! that wants to write waits for one batch at most, never for the whole deletion.

use chrono::{DateTime, Utc};

use crate::db::Backend;
use crate::db::prune::{expire_results, in_batches};
use crate::job::PreparedJob;

/// Delete `job`'s expired result rows as of `now`; how many. Nothing for a job without
/// `retain`, or whose results table does not exist yet.
pub async fn expire<B: Backend>(
    db: &B,
    job: &PreparedJob,
    now: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let Some(retain) = job.spec.sink.retain else {
        return Ok(0);
    };
    let cutoff = now - retain;
    let mut deleted = 0;
    let tables = std::iter::once(&job.results).chain(job.challenger_table.as_ref());
    for table in tables {
        if db.table_columns(&table.table).await?.is_none() {
            continue;
        }
        deleted += in_batches(|| expire_results(db.pool(), &job.spec.name, table, cutoff)).await?;
    }
    if deleted > 0 {
        tracing::info!(job = %job.spec.name, rows = deleted, cutoff = %crate::time::time_text(cutoff), "expired result rows deleted ([sink] retain)");
    }
    Ok(deleted)
}
