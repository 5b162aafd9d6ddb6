//! Deleting what is kept no longer, in short statements: a job's result rows past `[sink]
//! retain`, and (`batchscore prune`) batchscore's own rows past `--older-than`, less what a
//! drift reference, an open alert or a results row still needs. Written once for every
//! backend (see [`super::dialect`]).

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::dialect::{self, Dialect, Param};
use crate::sink::ResultsTable;
use crate::spec::LineageColumns;

/// Rows per `DELETE`: each is its own short transaction, so a window waiting to write (on
/// SQLite, for the database's write lock) waits for at most one of them.
pub const DELETE_BATCH: usize = 10_000;

/// Run `delete`, one batch of at most [`DELETE_BATCH`] rows, until a batch comes back short;
/// how many rows went in all.
pub(crate) async fn in_batches<F, Fut>(mut delete: F) -> anyhow::Result<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
    let mut deleted = 0;
    loop {
        let batch = delete().await?;
        deleted += batch;
        if batch < DELETE_BATCH as u64 {
            return Ok(deleted);
        }
    }
}

/// Delete at most [`DELETE_BATCH`] rows of `job`'s results `table` whose window ended before
/// `cutoff`; how many.
pub(crate) async fn expire_results<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: &str,
    table: &ResultsTable,
    cutoff: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let (condition, params) = match table.lineage {
        LineageColumns::Compact => (
            "batchscore_run IN (SELECT id FROM batchscore_runs WHERE job = $1 AND window_end < $2)",
            vec![Param::from(job), Param::from(cutoff)],
        ),
        LineageColumns::Full => ("window_end < $1", vec![Param::from(cutoff)]),
    };
    let sql = DB::delete_some(
        &DB::table(&table.table),
        &DB::column(&table.key),
        condition,
        DELETE_BATCH,
    );
    dialect::execute(DB::on_pool(pool), sql, params)
        .await
        .with_context(|| format!("deleting expired rows from {}", table.table))
}

/// One of batchscore's own tables as `prune` sees it: its primary key, and which rows may go.
pub(crate) struct Prunable {
    pub table: &'static str,
    key: &'static str,
    /// SQL over the table's row (unaliased) that holds of the rows to delete.
    condition: String,
    params: Vec<Param>,
}

impl Prunable {
    /// How many rows would go.
    pub async fn count<DB: Dialect>(&self, pool: &sqlx::Pool<DB>) -> anyhow::Result<i64> {
        let sql = format!(
            "SELECT COUNT(*) AS n FROM {} WHERE {}",
            self.table, self.condition
        );
        let row = dialect::fetch_optional(DB::on_pool(pool), sql, self.params.clone())
            .await
            .with_context(|| format!("counting what to prune in {}", self.table))?
            .context("COUNT(*) returned no row")?;
        Ok(DB::int(&row, "n")?.unwrap_or(0))
    }

    /// Delete one batch; how many rows went.
    pub async fn delete_batch<DB: Dialect>(&self, pool: &sqlx::Pool<DB>) -> anyhow::Result<u64> {
        let sql = DB::delete_some(self.table, self.key, &self.condition, DELETE_BATCH);
        dialect::execute(DB::on_pool(pool), sql, self.params.clone())
            .await
            .with_context(|| format!("pruning {}", self.table))
    }
}

/// What a job's drift reference reads from `batchscore_profiles`: windows ending after
/// `after`, or inside a fixed range.
#[derive(Debug, Clone)]
pub(crate) struct KeptProfiles {
    pub job: String,
    pub after: Option<DateTime<Utc>>,
    pub range: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// What a job's results table still points at: with `[sink] retain`, the runs of windows that
/// ended after `results_after`; without (`None`), every window's latest run.
#[derive(Debug, Clone)]
pub(crate) struct KeptRuns {
    pub job: String,
    pub results_after: DateTime<Utc>,
}

/// Batchscore's own rows older than `cutoff` (by the end of their window, or when they were
/// quarantined) that nothing needs: in the order they are deleted.
///
/// - `batchscore_runs`: not `running`, and not the latest succeeded run of its window, whose
///   number a results row may carry, unless the job's `retain` (`retained`) has deleted that
///   window's rows; never a run an open alert names.
/// - `batchscore_profiles`: not of a window a drift reference reads (`references`).
/// - `batchscore_quarantine`: quarantined before `cutoff`.
/// - `batchscore_performance`: not of a window an open alert is about.
pub(crate) fn prunable(
    cutoff: DateTime<Utc>,
    retained: &[KeptRuns],
    references: &[KeptProfiles],
) -> Vec<Prunable> {
    let mut runs_params = vec![Param::from(cutoff)];
    // A later succeeded run of the same window: through a derived table, which MySQL
    // materialises (it refuses a DELETE's subquery over its own table otherwise).
    let mut released = Vec::new();
    for kept in retained {
        runs_params.push(Param::from(kept.job.as_str()));
        runs_params.push(Param::from(kept.results_after));
        let n = runs_params.len();
        released.push(format!("(job = ${} AND window_end < ${n})", n - 1));
    }
    let released = match released.is_empty() {
        true => String::new(),
        false => format!(" OR {}", released.join(" OR ")),
    };
    let runs = format!(
        "window_end < $1 AND status <> 'running' \
         AND run_id NOT IN (SELECT run_id FROM (SELECT a.run_id FROM batchscore_alerts a \
             WHERE a.status = 'firing' AND a.run_id IS NOT NULL) AS alerting) \
         AND (status <> 'succeeded'{released} OR run_id IN (SELECT run_id FROM ( \
             SELECT r.run_id FROM batchscore_runs r JOIN batchscore_runs n ON n.job = r.job \
             AND n.shard = r.shard AND n.window_start = r.window_start \
             AND n.window_end = r.window_end AND n.status = 'succeeded' \
             AND n.finished_at > r.finished_at) AS superseded))"
    );

    let mut profile_params = vec![Param::from(cutoff)];
    let mut read = Vec::new();
    for kept in references {
        profile_params.push(Param::from(kept.job.as_str()));
        let job = profile_params.len();
        if let Some(after) = kept.after {
            profile_params.push(Param::from(after));
            read.push(format!("(job = ${job} AND window_end > ${})", job + 1));
        }
        if let Some((from, to)) = kept.range {
            profile_params.push(Param::from(from));
            profile_params.push(Param::from(to));
            let at = profile_params.len();
            read.push(format!(
                "(job = ${job} AND window_start >= ${} AND window_end <= ${at})",
                at - 1
            ));
        }
    }
    let profiles = match read.is_empty() {
        true => "window_end < $1".to_owned(),
        false => format!("window_end < $1 AND NOT ({})", read.join(" OR ")),
    };
    let open_windows = "EXISTS (SELECT 1 FROM batchscore_alerts a WHERE a.status = 'firing' \
         AND a.job = batchscore_performance.job AND a.window_start = batchscore_performance.window_start \
         AND a.window_end = batchscore_performance.window_end)";
    vec![
        Prunable {
            table: "batchscore_runs",
            key: "run_id",
            condition: runs,
            params: runs_params,
        },
        Prunable {
            table: "batchscore_profiles",
            key: "run_id, role, column_name",
            condition: profiles,
            params: profile_params,
        },
        Prunable {
            table: "batchscore_quarantine",
            key: "job, key",
            condition: "quarantined_at < $1".to_owned(),
            params: vec![Param::from(cutoff)],
        },
        Prunable {
            table: "batchscore_performance",
            key: "job, shard, window_start, window_end, model, metric",
            condition: format!("window_end < $1 AND NOT {open_windows}"),
            params: vec![Param::from(cutoff)],
        },
    ]
}
