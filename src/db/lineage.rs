//! Lineage: which model scored which window, read from the ledger (`batchscore_runs`) for
//! `batchscore models`, `run-job --rescore-model` and `batchscore compare`. Written once for
//! every backend (see [`super::dialect`]).

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::dialect::{self, Dialect, Param, Set, required};
use crate::ledger::RunRef;
use crate::plan::Window;
use crate::shard::Shard;
use crate::spec::LineageColumns;

/// The number of the model `sha256` in `batchscore_models`, given it on first use. Asked once per
/// run, outside the window's transaction: shards starting together must not wait on each
/// other's uncommitted insert of the same model.
pub(crate) async fn model_number<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    sha256: &str,
) -> anyhow::Result<i64> {
    let columns = ["sha256", "first_seen_at"];
    let values = [String::from("$1"), DB::NOW.to_owned()];
    let no_change: [Set; 0] = [];
    let insert = DB::upsert(
        "batchscore_models",
        &columns,
        &values,
        "sha256",
        &no_change,
        None,
    );
    dialect::execute(DB::on_pool(pool), insert, vec![sha256.into()])
        .await
        .context("recording the model in batchscore_models")?;
    let select = "SELECT id FROM batchscore_models WHERE sha256 = $1".to_owned();
    let row = dialect::fetch_optional(DB::on_pool(pool), select, vec![sha256.into()])
        .await
        .context("reading the model's number from batchscore_models")?
        .context("the model is missing from batchscore_models after it was recorded")?;
    required(DB::int(&row, "id")?, "id")
}

/// The number (`batchscore_runs.id`) the database gave the run `run_id`.
pub(crate) async fn run_number<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    run_id: &str,
) -> anyhow::Result<i64> {
    let select = "SELECT id FROM batchscore_runs WHERE run_id = $1".to_owned();
    let row = dialect::fetch_optional(DB::on_pool(pool), select, vec![run_id.into()])
        .await
        .context("reading the run's number from batchscore_runs")?
        .context("the run is missing from batchscore_runs after it was recorded")?;
    required(DB::int(&row, "id")?, "id")
}

/// `runs` as the parameters of `IN (…)` on a results table with `lineage`.
pub(crate) fn run_params(lineage: LineageColumns, runs: &[RunRef]) -> Vec<Param> {
    runs.iter()
        .map(|run| match lineage {
            LineageColumns::Compact => Param::from(run.number),
            LineageColumns::Full => Param::from(&run.id),
        })
        .collect()
}

/// `SQL`: the row of table `left` (aliased, with `left`'s lineage) and the row of `right` were
/// written by the same run. The same column when both tables have the same lineage; otherwise
/// the compact side's number is turned into the run's id through the ledger.
pub(crate) fn same_run(left: (&str, LineageColumns), right: (&str, LineageColumns)) -> String {
    let expression =
        |(alias, lineage): (&str, LineageColumns), other: LineageColumns| match (lineage, other) {
            (LineageColumns::Compact, LineageColumns::Full) => {
                format!("(SELECT run_id FROM batchscore_runs WHERE id = {alias}.batchscore_run)")
            }
            _ => format!("{alias}.{}", lineage.run_column()),
        };
    format!(
        "{} = {}",
        expression(left, right.1),
        expression(right, left.1)
    )
}

/// A committed window's ledger row, as lineage reads it.
#[derive(Debug, Clone)]
pub struct ScoredWindow {
    pub run: RunRef,
    pub shard: u32,
    pub window: Window,
    pub rows_written: i64,
    pub finished_at: DateTime<Utc>,
    pub model_sha256: String,
    pub model_source: Option<String>,
    pub challenger_sha256: Option<String>,
    pub challenger_source: Option<String>,
    pub challenger_error: Option<String>,
}

/// Among the committed windows of `shard`, those whose latest commit was scored by `model` (a
/// full sha256), oldest first; within `range` if given (windows inside it). A window re-scored
/// since by another model is not listed: its rows are that model's now.
pub(crate) async fn windows_scored_by<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: &str,
    shard: Shard,
    model: &str,
    range: Option<Window>,
) -> anyhow::Result<Vec<Window>> {
    let mut params: Vec<Param> = vec![job.into(), shard.index.into(), model.into()];
    let within = match range {
        Some(range) => {
            params.push(range.start.into());
            params.push(range.end.into());
            " AND r.window_start >= $4 AND r.window_end <= $5"
        }
        None => "",
    };
    let sql = format!(
        "SELECT DISTINCT r.window_start, r.window_end FROM batchscore_runs r \
         WHERE r.job = $1 AND r.shard = $2 AND r.status = 'succeeded' AND r.model_sha256 = $3{within} \
         AND NOT EXISTS (SELECT 1 FROM batchscore_runs later WHERE later.job = r.job \
           AND later.shard = r.shard AND later.status = 'succeeded' \
           AND later.window_start = r.window_start AND later.window_end = r.window_end \
           AND later.finished_at > r.finished_at) \
         ORDER BY r.window_start"
    );
    let rows = dialect::fetch_all(DB::on_pool(pool), sql, params)
        .await
        .context("listing the windows a model scored, from batchscore_runs")?;
    rows.iter()
        .map(|row| {
            Ok(Window {
                start: required(DB::time(row, "window_start")?, "window_start")?,
                end: required(DB::time(row, "window_end")?, "window_end")?,
            })
        })
        .collect()
}

/// The sha256s of the models that scored committed windows of `job`, starting with `prefix`
/// (lowercase hex digits, checked by the caller).
pub(crate) async fn models_matching<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: &str,
    prefix: &str,
) -> anyhow::Result<Vec<String>> {
    let sql = "SELECT DISTINCT model_sha256 FROM batchscore_runs \
               WHERE job = $1 AND status = 'succeeded' AND model_sha256 LIKE $2 \
               ORDER BY model_sha256"
        .to_owned();
    let rows = dialect::fetch_all(
        DB::on_pool(pool),
        sql,
        vec![job.into(), (&format!("{prefix}%")).into()],
    )
    .await
    .context("looking up models in batchscore_runs")?;
    rows.iter()
        .map(|row| required(DB::text(row, "model_sha256")?, "model_sha256"))
        .collect()
}

/// Every committed window of `job`, oldest first: what `batchscore models` groups by model.
pub(crate) async fn scored_windows<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: &str,
) -> anyhow::Result<Vec<ScoredWindow>> {
    read_scored(pool, job, "", None).await
}

/// A model version that committed windows of a job, as the status page lists it.
#[derive(Debug, Clone)]
pub struct ModelVersion {
    pub model_sha256: String,
    pub model_source: Option<String>,
    pub windows: i64,
    pub rows_written: i64,
    pub first_used: DateTime<Utc>,
    pub last_used: DateTime<Utc>,
}

/// The models that committed windows of `job`, the latest used first.
pub(crate) async fn model_versions<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: &str,
) -> anyhow::Result<Vec<ModelVersion>> {
    let sql = format!(
        "SELECT model_sha256, model_source, CAST(COUNT(*) AS {int}) AS windows, \
         CAST(COALESCE(SUM(rows_written), 0) AS {int}) AS rows_written, \
         MIN(finished_at) AS first_used, MAX(finished_at) AS last_used \
         FROM batchscore_runs WHERE job = $1 AND status = 'succeeded' \
         GROUP BY model_sha256, model_source ORDER BY MAX(finished_at) DESC",
        int = DB::BIGINT
    );
    let rows = dialect::fetch_all(DB::on_pool(pool), sql, vec![job.into()])
        .await
        .context("reading model versions from batchscore_runs")?;
    rows.iter()
        .map(|row| {
            let int = |c| -> anyhow::Result<i64> { required(DB::int(row, c)?, c) };
            let time = |c| -> anyhow::Result<DateTime<Utc>> { required(DB::time(row, c)?, c) };
            Ok(ModelVersion {
                model_sha256: required(DB::text(row, "model_sha256")?, "model_sha256")?,
                model_source: DB::text(row, "model_source")?,
                windows: int("windows")?,
                rows_written: int("rows_written")?,
                first_used: time("first_used")?,
                last_used: time("last_used")?,
            })
        })
        .collect::<anyhow::Result<_>>()
        .context("reading model versions from batchscore_runs")
}

/// The latest `limit` committed windows of `job` its challenger scored, newest first: what
/// `batchscore compare` compares.
pub(crate) async fn challenged_windows<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: &str,
    limit: u32,
) -> anyhow::Result<Vec<ScoredWindow>> {
    let only = " AND challenger_sha256 IS NOT NULL AND challenger_error IS NULL";
    read_scored(pool, job, only, Some(limit)).await
}

async fn read_scored<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    job: &str,
    only: &str,
    limit: Option<u32>,
) -> anyhow::Result<Vec<ScoredWindow>> {
    let mut params: Vec<Param> = vec![job.into()];
    let (order, limit) = match limit {
        Some(limit) => {
            params.push(i64::from(limit).into());
            ("finished_at DESC", " LIMIT $2")
        }
        None => ("window_start, finished_at", ""),
    };
    let sql = format!(
        "SELECT run_id, id, shard, window_start, window_end, rows_written, finished_at, model_sha256, \
         model_source, challenger_sha256, challenger_source, challenger_error \
         FROM batchscore_runs WHERE job = $1 AND status = 'succeeded'{only} ORDER BY {order}{limit}"
    );
    let rows = dialect::fetch_all(DB::on_pool(pool), sql, params)
        .await
        .context("reading committed windows from batchscore_runs")?;
    rows.iter()
        .map(|row| {
            let text = |c| -> anyhow::Result<String> { required(DB::text(row, c)?, c) };
            let time = |c| -> anyhow::Result<DateTime<Utc>> { required(DB::time(row, c)?, c) };
            Ok(ScoredWindow {
                run: RunRef {
                    id: text("run_id")?,
                    number: required(DB::int(row, "id")?, "id")?,
                },
                shard: u32::try_from(required(DB::int(row, "shard")?, "shard")?)
                    .context("shard")?,
                window: Window {
                    start: time("window_start")?,
                    end: time("window_end")?,
                },
                rows_written: required(DB::int(row, "rows_written")?, "rows_written")?,
                finished_at: time("finished_at")?,
                model_sha256: text("model_sha256")?,
                model_source: DB::text(row, "model_source")?,
                challenger_sha256: DB::text(row, "challenger_sha256")?,
                challenger_source: DB::text(row, "challenger_source")?,
                challenger_error: DB::text(row, "challenger_error")?,
            })
        })
        .collect::<anyhow::Result<_>>()
        .context("reading committed windows from batchscore_runs")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tables of one lineage compare their run columns; a wide table and a compact one meet
    /// through the ledger, the compact side's number turned into the run's id.
    #[test]
    fn rows_of_the_same_run_are_matched_whatever_each_table_keeps() {
        use LineageColumns::{Compact, Full};
        assert_eq!(
            same_run(("m", Compact), ("c", Compact)),
            "m.batchscore_run = c.batchscore_run"
        );
        assert_eq!(same_run(("m", Full), ("c", Full)), "m.run_id = c.run_id");
        let through = "(SELECT run_id FROM batchscore_runs WHERE id = c.batchscore_run)";
        assert_eq!(
            same_run(("m", Full), ("c", Compact)),
            format!("m.run_id = {through}")
        );
        let run = RunRef {
            id: "01a2-run".to_owned(),
            number: 42,
        };
        let compact = run_params(Compact, std::slice::from_ref(&run));
        assert!(matches!(compact[..], [Param::Int(Some(42))]));
        let full = run_params(Full, &[run]);
        assert!(matches!(&full[..], [Param::Text(Some(id))] if id == "01a2-run"));
    }
}
