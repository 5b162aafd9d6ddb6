//! The SQL of batchscore's ledger (`batchscore_runs`), watermarks and quarantine lookups, written
//! once for every backend (see [`super::dialect`]). Each function takes any executor: the pool,
//! or the window's transaction.

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::Executor;

use super::dialect::{self, Dialect, Param, Set, required};
use crate::ledger::{Lineage, RunRecord, RunStatus};
use crate::shard::Shard;

/// `batchscore_runs`' columns, in the order [`record_run`] binds them.
const RUN_COLUMNS: [&str; 22] = [
    "run_id",
    "job",
    "shard",
    "window_start",
    "window_end",
    "status",
    "rows_read",
    "rows_written",
    "model_sha256",
    "started_at",
    "finished_at",
    "error",
    "host",
    "pid",
    "rows_bad",
    "rows_quarantined",
    "rows_skipped",
    "bad_rows",
    "model_source",
    "challenger_sha256",
    "challenger_source",
    "challenger_error",
];

/// The columns a later record of the same run updates (how it ended).
const OUTCOME_COLUMNS: [&str; 10] = [
    "status",
    "rows_read",
    "rows_written",
    "finished_at",
    "error",
    "rows_bad",
    "rows_quarantined",
    "rows_skipped",
    "bad_rows",
    "challenger_error",
];

/// Which existing row of the same run a record replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Any: the run's start, then how it ended.
    Always,
    /// Only a row still `running`: a failure recorded after the window's transaction was rolled
    /// back must not overwrite what a commit that went through (its reply lost), or a
    /// successor that marked the run abandoned, wrote.
    IfRunning,
}

/// Insert the run's ledger row, or update how it ended: the one statement that records a run.
async fn write_run<'c, DB: Dialect>(
    executor: impl Executor<'c, Database = DB>,
    run: &RunRecord,
    replace: Replace,
) -> anyhow::Result<()> {
    let updates: Vec<Set> = OUTCOME_COLUMNS.iter().map(|c| Set::Inserted(c)).collect();
    let condition = match replace {
        Replace::Always => None,
        Replace::IfRunning => Some("batchscore_runs.status = 'running'"),
    };
    let sql = DB::upsert(
        "batchscore_runs",
        &RUN_COLUMNS,
        &dialect::placeholders(1, RUN_COLUMNS.len()),
        "run_id",
        &updates,
        condition,
    );
    let params = vec![
        Param::from(&run.run_id),
        Param::from(&run.job),
        Param::from(run.shard),
        Param::from(run.window_start),
        Param::from(run.window_end),
        Param::from(run.status.as_str()),
        Param::from(run.rows_read),
        Param::from(run.rows_written),
        Param::from(&run.lineage.model_sha256),
        Param::from(run.started_at),
        Param::from(run.finished_at),
        Param::from(&run.error),
        Param::from(&run.host),
        Param::from(run.pid),
        Param::from(run.rows_bad),
        Param::from(run.rows_quarantined),
        Param::from(run.rows_skipped),
        Param::from(&run.bad_rows),
        Param::from(&run.lineage.model_source),
        Param::from(&run.lineage.challenger_sha256),
        Param::from(&run.lineage.challenger_source),
        Param::from(&run.lineage.challenger_error),
    ];
    dialect::execute(executor, sql, params)
        .await
        .context("recording the run in batchscore_runs")?;
    Ok(())
}

/// Record a run in the ledger outside any window transaction: as started (committed at once,
/// so even a crashed run leaves a trace), as skipped, or as failed after its window was rolled
/// back ([`Replace::IfRunning`]).
pub(crate) async fn record_run<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    run: &RunRecord,
    replace: Replace,
) -> anyhow::Result<()> {
    write_run(DB::on_pool(pool), run, replace).await
}

/// Record a run in the window's transaction: how the window ended, or a range a `latest`
/// catch-up skipped.
pub(crate) async fn record_run_in<DB: Dialect>(
    conn: &mut DB::Connection,
    run: &RunRecord,
) -> anyhow::Result<()> {
    write_run(DB::on_conn(conn), run, Replace::Always).await
}

/// Mark the shard's rows still `running` as `abandoned`; how many. Only this shard's: the
/// others may be running elsewhere right now.
pub(crate) async fn abandon_runs<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: &str,
    shard: Shard,
) -> anyhow::Result<u64> {
    let sql = format!(
        "UPDATE batchscore_runs SET status = 'abandoned', finished_at = {}, \
         error = 'the process running it stopped before finishing (killed, crashed or lost its claim)' \
         WHERE job = $1 AND shard = $2 AND status = 'running'",
        DB::NOW
    );
    dialect::execute(DB::on_pool(pool), sql, vec![job.into(), shard.index.into()])
        .await
        .context("marking abandoned runs in batchscore_runs")
}

/// ` WHERE job = $1` and its parameter for one job; nothing for all. Two texts rather than
/// `$1 IS NULL OR job = $1`, whose NULL parameter some databases cannot type.
fn job_filter(job: Option<&str>) -> (&'static str, Vec<Param>) {
    match job {
        Some(job) => (" WHERE job = $1", vec![job.into()]),
        None => ("", vec![]),
    }
}

/// The latest runs, newest first, of one job or all.
pub(crate) async fn recent_runs<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: Option<&str>,
    limit: u32,
) -> anyhow::Result<Vec<RunRecord>> {
    let (filter, params) = job_filter(job);
    latest_runs(pool, filter.to_owned(), params, limit).await
}

/// One job's runs, newest first: of one shard or all, started since `since` if given, at most
/// `limit`. What the status page lists and charts.
pub(crate) async fn job_runs<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: &str,
    shard: Option<u32>,
    since: Option<DateTime<Utc>>,
    limit: u32,
) -> anyhow::Result<Vec<RunRecord>> {
    let mut params: Vec<Param> = vec![job.into()];
    let mut filter = " WHERE job = $1".to_owned();
    if let Some(shard) = shard {
        params.push(shard.into());
        filter.push_str(&format!(" AND shard = ${}", params.len()));
    }
    if let Some(since) = since {
        params.push(since.into());
        filter.push_str(&format!(" AND started_at >= ${}", params.len()));
    }
    latest_runs(pool, filter, params, limit).await
}

/// The latest `limit` runs that `filter` (a WHERE clause on `params`) lets through.
async fn latest_runs<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    filter: String,
    mut params: Vec<Param>,
    limit: u32,
) -> anyhow::Result<Vec<RunRecord>> {
    params.push(i64::from(limit).into());
    let sql = format!(
        "SELECT {} FROM batchscore_runs{filter} ORDER BY started_at DESC LIMIT ${}",
        RUN_COLUMNS.join(", "),
        params.len()
    );
    let rows = dialect::fetch_all(DB::on_pool(pool), sql, params)
        .await
        .context("reading batchscore_runs")?;
    rows.iter()
        .map(run_from_row::<DB>)
        .collect::<anyhow::Result<_>>()
        .context("reading batchscore_runs")
}

fn run_from_row<DB: Dialect>(row: &DB::Row) -> anyhow::Result<RunRecord> {
    let text = |column| -> anyhow::Result<String> { required(DB::text(row, column)?, column) };
    let int = |column| -> anyhow::Result<i64> { required(DB::int(row, column)?, column) };
    let time =
        |column| -> anyhow::Result<DateTime<Utc>> { required(DB::time(row, column)?, column) };
    let status = text("status")?;
    Ok(RunRecord {
        run_id: text("run_id")?,
        job: text("job")?,
        shard: u32::try_from(int("shard")?).context("shard")?,
        window_start: time("window_start")?,
        window_end: time("window_end")?,
        status: RunStatus::parse(&status)
            .with_context(|| format!("unknown run status `{status}`"))?,
        rows_read: int("rows_read")?,
        rows_written: int("rows_written")?,
        rows_bad: int("rows_bad")?,
        rows_quarantined: int("rows_quarantined")?,
        rows_skipped: int("rows_skipped")?,
        bad_rows: DB::text(row, "bad_rows")?,
        lineage: Lineage {
            model_sha256: text("model_sha256")?,
            model_source: DB::text(row, "model_source")?,
            challenger_sha256: DB::text(row, "challenger_sha256")?,
            challenger_source: DB::text(row, "challenger_source")?,
            challenger_error: DB::text(row, "challenger_error")?,
        },
        started_at: time("started_at")?,
        finished_at: DB::time(row, "finished_at")?,
        error: DB::text(row, "error")?,
        host: text("host")?,
        pid: int("pid")?,
    })
}

/// A shard's watermark: the end of its last committed window.
pub(crate) async fn watermark<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: &str,
    shard: Shard,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    let sql =
        "SELECT watermark FROM batchscore_watermarks WHERE job = $1 AND shard = $2".to_owned();
    let row = dialect::fetch_optional(DB::on_pool(pool), sql, vec![job.into(), shard.index.into()])
        .await
        .context("reading the watermark")?;
    match row {
        Some(row) => DB::time(&row, "watermark").context("reading the watermark"),
        None => Ok(None),
    }
}

/// One row of `batchscore_watermarks`: a shard's watermark, and how many shards the job had
/// when it moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardWatermark {
    pub job: String,
    pub shard: Shard,
    pub watermark: DateTime<Utc>,
}

/// The watermarks of one job or all, by job and shard.
pub(crate) async fn watermarks<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: Option<&str>,
) -> anyhow::Result<Vec<ShardWatermark>> {
    read_watermarks(DB::on_pool(pool), job).await
}

async fn read_watermarks<'c, DB: Dialect>(
    executor: impl Executor<'c, Database = DB>,
    job: Option<&str>,
) -> anyhow::Result<Vec<ShardWatermark>> {
    let (filter, params) = job_filter(job);
    let sql = format!(
        "SELECT job, shard, shards, watermark FROM batchscore_watermarks{filter} ORDER BY job, shard"
    );
    let rows = dialect::fetch_all(executor, sql, params)
        .await
        .context("reading watermarks")?;
    rows.iter()
        .map(|row| {
            let count = |column| -> anyhow::Result<u32> {
                u32::try_from(required(DB::int(row, column)?, column)?).context(column)
            };
            Ok(ShardWatermark {
                job: required(DB::text(row, "job")?, "job")?,
                shard: Shard {
                    index: count("shard")?,
                    count: count("shards")?,
                },
                watermark: required(DB::time(row, "watermark")?, "watermark")?,
            })
        })
        .collect()
}

/// A watermark row's columns, in the order the inserts give them.
const WATERMARK_COLUMNS: [&str; 6] = [
    "job",
    "shard",
    "shards",
    "watermark",
    "run_id",
    "updated_at",
];

/// Move the shard's watermark from `from` to `to`, only if it is still `from` and the job
/// still has the shards this run planned with (compare-and-set). Returns false when another
/// run moved it first, or the job was resharded meanwhile. On PostgreSQL (READ COMMITTED) a
/// concurrent mover makes this wait, then re-check the WHERE against the committed row; on
/// SQLite the window's write lock already keeps other movers out: either way exactly one of two
/// racing runs moves it.
pub(crate) async fn advance_watermark<DB: Dialect>(
    conn: &mut DB::Connection,
    job: &str,
    shard: Shard,
    from: Option<DateTime<Utc>>,
    to: DateTime<Utc>,
    run_id: &str,
) -> anyhow::Result<bool> {
    let (sql, mut params) = match from {
        None => (
            DB::upsert(
                "batchscore_watermarks",
                &WATERMARK_COLUMNS,
                &[&dialect::placeholders(1, 5)[..], &[DB::NOW.to_owned()]].concat(),
                "job, shard",
                &[],
                None,
            ),
            vec![],
        ),
        Some(from) => (
            format!(
                "UPDATE batchscore_watermarks SET watermark = $4, run_id = $5, updated_at = {} \
                 WHERE job = $1 AND shard = $2 AND shards = $3 AND watermark = $6 AND watermark < $4",
                DB::NOW
            ),
            vec![Param::from(from)],
        ),
    };
    params.splice(
        0..0,
        [
            job.into(),
            shard.index.into(),
            shard.count.into(),
            to.into(),
            run_id.into(),
        ],
    );
    let moved = dialect::execute(DB::on_conn(conn), sql, params)
        .await
        .context("moving the watermark")?;
    Ok(moved == 1)
}

/// Set a shard's watermark to any time (the explicit `watermark set` and `reshard` commands).
pub(crate) async fn set_watermark<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: &str,
    shard: Shard,
    to: DateTime<Utc>,
) -> anyhow::Result<()> {
    write_watermark(DB::on_pool(pool), job, shard, to).await
}

async fn write_watermark<'c, DB: Dialect>(
    executor: impl Executor<'c, Database = DB>,
    job: &str,
    shard: Shard,
    to: DateTime<Utc>,
) -> anyhow::Result<()> {
    let sql = DB::upsert(
        "batchscore_watermarks",
        &WATERMARK_COLUMNS,
        &[
            &dialect::placeholders(1, 4)[..],
            &["NULL".to_owned(), DB::NOW.to_owned()],
        ]
        .concat(),
        "job, shard",
        &[
            Set::Inserted("shards"),
            Set::Inserted("watermark"),
            Set::To("run_id", "NULL"),
            Set::To("updated_at", DB::NOW),
        ],
        None,
    );
    let params = vec![
        job.into(),
        shard.index.into(),
        shard.count.into(),
        to.into(),
    ];
    dialect::execute(executor, sql, params)
        .await
        .context("setting the watermark")?;
    Ok(())
}

/// Forget every watermark of the job (`reshard`, before it writes the new shards' rows in the
/// same transaction).
async fn clear_watermarks<'c, DB: Dialect>(
    executor: impl Executor<'c, Database = DB>,
    job: &str,
) -> anyhow::Result<u64> {
    let sql = "DELETE FROM batchscore_watermarks WHERE job = $1".to_owned();
    dialect::execute(executor, sql, vec![job.into()])
        .await
        .context("clearing the job's watermarks")
}

/// Whether the job has rows in the quarantine.
pub(crate) async fn has_quarantined<DB: Dialect>(
    conn: &mut DB::Connection,
    job: &str,
) -> anyhow::Result<bool> {
    let sql = "SELECT EXISTS (SELECT 1 FROM batchscore_quarantine WHERE job = $1) AS found";
    let row = dialect::fetch_optional(DB::on_conn(conn), sql.to_owned(), vec![job.into()])
        .await
        .context("reading batchscore_quarantine")?;
    match row {
        Some(row) => Ok(DB::flag(&row, "found")?),
        None => Ok(false),
    }
}

/// What the ledger says of one shard's health (`batchscore status`, the status page): its last
/// success, what the last day held, and whether its latest finished window failed. The default
/// is a shard the ledger has never seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardHealth {
    pub job: String,
    pub shard: u32,
    pub last_success: Option<DateTime<Utc>>,
    /// Rows written by windows that started since `since`.
    pub rows_written: i64,
    /// Windows that failed (or were abandoned) since `since`.
    pub failures: i64,
    /// Bad rows found since `since`.
    pub rows_bad: i64,
    /// Whether the shard's latest finished window failed or was abandoned.
    pub failing: bool,
}

/// Every shard's health, as the ledger says, counting what started since `since`; by job and
/// shard.
pub(crate) async fn health<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    since: DateTime<Utc>,
) -> anyhow::Result<Vec<ShardHealth>> {
    let sql = format!(
        "SELECT job, shard, MAX(CASE WHEN status = 'succeeded' THEN finished_at END) AS last_success, \
         CAST(COALESCE(SUM(CASE WHEN status = 'succeeded' AND started_at >= $1 THEN rows_written END), 0) AS {int}) AS rows_written, \
         CAST(COALESCE(SUM(CASE WHEN status IN ('failed', 'abandoned') AND started_at >= $1 THEN 1 END), 0) AS {int}) AS failures, \
         CAST(COALESCE(SUM(CASE WHEN started_at >= $1 THEN rows_bad END), 0) AS {int}) AS rows_bad \
         FROM batchscore_runs GROUP BY job, shard ORDER BY job, shard",
        int = DB::BIGINT
    );
    let rows = dialect::fetch_all(DB::on_pool(pool), sql, vec![since.into()])
        .await
        .context("reading batchscore_runs")?;
    // The latest finished window of each shard: failed or abandoned means it is failing.
    let latest = "SELECT job, shard, status FROM (SELECT job, shard, status, ROW_NUMBER() OVER \
                  (PARTITION BY job, shard ORDER BY started_at DESC) AS n FROM batchscore_runs \
                  WHERE status IN ('succeeded', 'failed', 'abandoned')) AS latest WHERE n = 1"
        .to_owned();
    let latest = dialect::fetch_all(DB::on_pool(pool), latest, vec![])
        .await
        .context("reading batchscore_runs")?;
    let mut failing = std::collections::BTreeSet::new();
    for row in &latest {
        if required(DB::text(row, "status")?, "status")? != "succeeded" {
            failing.insert(job_and_shard::<DB>(row)?);
        }
    }
    rows.iter()
        .map(|row| {
            let (job, shard) = job_and_shard::<DB>(row)?;
            Ok(ShardHealth {
                failing: failing.contains(&(job.clone(), shard)),
                last_success: DB::time(row, "last_success")?,
                rows_written: required(DB::int(row, "rows_written")?, "rows_written")?,
                failures: required(DB::int(row, "failures")?, "failures")?,
                rows_bad: required(DB::int(row, "rows_bad")?, "rows_bad")?,
                job,
                shard,
            })
        })
        .collect()
}

/// The shards whose claim's lease has not lapsed, by job: they are running now.
pub(crate) async fn running_shards<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
) -> anyhow::Result<Vec<(String, u32)>> {
    let sql = format!(
        "SELECT job, shard FROM batchscore_claims WHERE expires_at > {}",
        DB::NOW
    );
    let rows = dialect::fetch_all(DB::on_pool(pool), sql, vec![])
        .await
        .context("reading batchscore_claims")?;
    rows.iter().map(job_and_shard::<DB>).collect()
}

/// A row's `job` and `shard` columns.
fn job_and_shard<DB: Dialect>(row: &DB::Row) -> anyhow::Result<(String, u32)> {
    let shard = required(DB::int(row, "shard")?, "shard")?;
    Ok((
        required(DB::text(row, "job")?, "job")?,
        u32::try_from(shard).context("shard")?,
    ))
}

/// Move `job` to `count` shards, every one at `at`, in one transaction, provided its watermarks
/// are still `expected` (what the caller checked were level): the `reshard` command, run while
/// it holds every old shard's claim. Returns false, changing nothing, when they moved meanwhile.
pub(crate) async fn reshard<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: &str,
    expected: &[ShardWatermark],
    count: u32,
    at: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let mut tx = pool.begin().await.context("resharding")?;
    let now = read_watermarks(DB::on_conn(&mut tx), Some(job)).await?;
    if now != expected {
        return Ok(false);
    }
    clear_watermarks(DB::on_conn(&mut tx), job).await?;
    for shard in Shard::all(count) {
        write_watermark(DB::on_conn(&mut tx), job, shard, at).await?;
    }
    tx.commit().await.context("resharding")?;
    Ok(true)
}
