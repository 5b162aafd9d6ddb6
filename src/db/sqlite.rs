//! SQLite, the embedded default: dialect SQL and decoding for [`Backend`].
//!
//! SQLite types are per value, not per column, so times are accepted in every form people
//! store them in (ISO-8601 text with `T` or space, with or without `Z` or an offset, or integer
//! unix seconds), and each feature value is checked as it is read.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::TryStreamExt;
use polars::prelude::*;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous, SqliteValueRef,
};
use sqlx::{
    AssertSqlSafe, Column as _, ConnectOptions, Decode, Row, SqlSafeStr, Sqlite, Transaction,
    TypeInfo, ValueRef,
};
use tokio::sync::mpsc;

use super::{Backend, CONNECT_TIMEOUT};
use crate::claim::{Claim, ClaimOutcome, Holder};
use crate::features::BadRow;
use crate::ident::TableName;
use crate::ledger::{RunRecord, RunStatus};
use crate::plan::Window;
use crate::sink::{ResultType, ResultsTable, RunStamp, ScoredChunk};
use crate::source::{ChunkBuilder, ColumnKind, KeyKind, SourceChunk, SourceShape};
use crate::spec::{JobSpec, SourceFrom};

/// SQLite's limit on bound parameters in one statement.
const MAX_PARAMS: usize = 32_766;
/// Rows per multi-row INSERT: enough to amortise each statement, few enough to keep it cheap to
/// prepare once and reuse from the statement cache.
const ROWS_PER_INSERT: usize = 500;
/// Rows sqlx's SQLite worker may buffer ahead of the reader (its default is 50). Measured on a
/// 1M-row window: 50 → 3.7 s, 1,024 → 2.9 s, 8,192 → 2.8 s; a few megabytes of rows at most.
const ROW_BUFFER: usize = 4096;

#[derive(Clone)]
pub struct SqliteBackend {
    pool: SqlitePool,
}

impl SqliteBackend {
    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            // WAL: the window's reader and writer run at once, and application readers are never
            // blocked by a run.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            // Rows come from sqlx's worker thread one message at a time; a deep buffer lets the
            // worker run ahead instead of waking the reader for every few rows.
            .row_buffer_size(ROW_BUFFER)
            // Streaming a window is a long statement by design, not a slow one worth a warning.
            .disable_statement_logging();
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await?;
        Ok(SqliteBackend { pool })
    }
}

/// How times are stored in batchscore's own SQLite tables: fixed-width RFC 3339 in UTC, so
/// text order is time order.
fn to_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn from_text(text: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("bad time `{text}` in the ledger"))?
        .to_utc())
}

/// A window bound as SQLite compares it: unix seconds, fractional.
fn to_unix_seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_micros() as f64 / 1e6
}

/// The row's time in unix seconds, whatever form the column stores it in.
fn time_expr(column: &str) -> String {
    format!(
        "(CASE WHEN typeof({column}) IN ('integer', 'real') THEN {column} ELSE unixepoch({column}, 'subsec') END)"
    )
}

/// Map a declared column type to a kind, by SQLite's own affinity rules.
fn classify(declared: &str) -> ColumnKind {
    let t = declared.to_ascii_uppercase();
    if t.is_empty() || t == "NULL" {
        ColumnKind::Dynamic
    } else if t.contains("INT") {
        ColumnKind::Integer
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        ColumnKind::Text
    } else if t.contains("BLOB") {
        ColumnKind::Other(declared.to_owned())
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        ColumnKind::Real
    } else if t.contains("BOOL") {
        ColumnKind::Boolean
    } else if t.contains("DATE") || t.contains("TIME") {
        ColumnKind::Timestamp
    } else {
        ColumnKind::Numeric
    }
}

/// `FROM …` of the window's SELECT; the user's query has its placeholders bound as ?1 and ?2.
fn from_clause(spec: &JobSpec) -> String {
    match &spec.source.from {
        SourceFrom::Table(table) => table.quoted(),
        SourceFrom::Query(query) => format!(
            "({}) AS batchscore_source",
            crate::source::bind_placeholders(query, "?1", "?2")
        ),
    }
}

fn window_predicate(spec: &JobSpec) -> String {
    let time = time_expr(&spec.source.timestamp.quoted());
    format!("{time} >= ?1 AND {time} < ?2")
}

fn sqlite_type(result: ResultType) -> &'static str {
    match result {
        ResultType::Float => "REAL",
        ResultType::Integer | ResultType::Boolean => "INTEGER",
        ResultType::Text => "TEXT",
    }
}

impl Backend for SqliteBackend {
    type Tx = Transaction<'static, Sqlite>;
    // One machine: the claim row, with the holder's pid checked on this host, is enough.
    type Lock = ();

    async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = sqlx::migrate!("migrations/sqlite");
        // Nothing pending: touch nothing, so a role without CREATE can run jobs.
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
                .unwrap_or_default();
        if migrator.iter().all(|m| applied.contains(&m.version)) {
            return Ok(());
        }
        migrator
            .run(&self.pool)
            .await
            .context("applying batchscore's SQLite migrations")
    }

    async fn describe_source(&self, spec: &JobSpec) -> Result<Vec<(String, ColumnKind)>, String> {
        match &spec.source.from {
            SourceFrom::Table(table) => {
                let schema = table.schema.as_ref().map_or("main", |s| s.as_str());
                let rows: Vec<(String, String)> =
                    sqlx::query_as("SELECT name, type FROM pragma_table_info(?1, ?2)")
                        .bind(table.name.as_str())
                        .bind(schema)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(|e| format!("cannot describe source table {table}: {e}"))?;
                if rows.is_empty() {
                    return Err(format!("source table {table} does not exist"));
                }
                Ok(rows
                    .into_iter()
                    .map(|(name, ty)| (name, classify(&ty)))
                    .collect())
            }
            SourceFrom::Query(_) => {
                let sql = format!("SELECT * FROM {} LIMIT 0", from_clause(spec));
                let described =
                    sqlx::Executor::describe(&self.pool, AssertSqlSafe(sql).into_sql_str())
                        .await
                        .map_err(|e| format!("source.query does not run: {e}"))?;
                Ok(described
                    .columns()
                    .iter()
                    .map(|c| (c.name().to_owned(), classify(c.type_info().name())))
                    .collect())
            }
        }
    }

    fn timestamp_ok(kind: &ColumnKind) -> bool {
        !matches!(kind, ColumnKind::Boolean | ColumnKind::Other(_))
    }

    async fn table_columns(&self, table: &TableName) -> anyhow::Result<Option<Vec<String>>> {
        let schema = table.schema.as_ref().map_or("main", |s| s.as_str());
        let names: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?1, ?2)")
            .bind(table.name.as_str())
            .bind(schema)
            .fetch_all(&self.pool)
            .await
            .with_context(|| format!("describing results table {table}"))?;
        Ok((!names.is_empty()).then_some(names))
    }

    async fn count_window(&self, spec: &JobSpec, window: Window) -> anyhow::Result<i64> {
        let sql = format!(
            "SELECT count(*) FROM {} WHERE {}",
            from_clause(spec),
            window_predicate(spec)
        );
        sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(to_unix_seconds(window.start))
            .bind(to_unix_seconds(window.end))
            .fetch_one(&self.pool)
            .await
            .context("counting the window's rows")
    }

    async fn read_window(
        &self,
        spec: &JobSpec,
        shape: &SourceShape,
        window: Window,
        out: mpsc::Sender<SourceChunk>,
    ) -> anyhow::Result<()> {
        let mut columns = vec![spec.source.key.quoted()];
        columns.extend(spec.source.features.iter().map(|f| f.quoted()));
        let sql = format!(
            "SELECT {} FROM {} WHERE {}",
            columns.join(", "),
            from_clause(spec),
            window_predicate(spec)
        );
        let mut rows = sqlx::query(AssertSqlSafe(sql))
            .bind(to_unix_seconds(window.start))
            .bind(to_unix_seconds(window.end))
            .fetch(&self.pool);
        let mut chunk = ChunkBuilder::new(spec, shape);
        while let Some(row) = rows.try_next().await.context("reading the window's rows")? {
            decode_row(&row, spec, shape, &mut chunk)?;
            if chunk.is_full() && out.send(chunk.take()).await.is_err() {
                return Ok(()); // the consumer stopped; it reports why
            }
        }
        if !chunk.is_empty() {
            let _ = out.send(chunk.take()).await;
        }
        Ok(())
    }

    async fn begin(&self) -> anyhow::Result<Self::Tx> {
        // IMMEDIATE takes the write lock up front, so the run waits for it (busy_timeout) rather
        // than failing halfway when upgrading a read transaction.
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context("opening the window's transaction")
    }

    async fn create_results_table(tx: &mut Self::Tx, table: &ResultsTable) -> anyhow::Result<()> {
        let key_type = match table.key_kind {
            KeyKind::Integer => "INTEGER",
            KeyKind::Text => "TEXT",
        };
        let mut columns = vec![format!(
            "{} {key_type} PRIMARY KEY NOT NULL",
            table.key.quoted()
        )];
        columns.extend(
            table
                .outputs
                .iter()
                .map(|(name, ty)| format!("{} {}", name.quoted(), sqlite_type(*ty))),
        );
        columns.extend(
            [
                "model_version",
                "run_id",
                "window_start",
                "window_end",
                "scored_at",
            ]
            .map(|name| format!("\"{name}\" TEXT NOT NULL")),
        );
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} (\n  {}\n)",
            table.table.quoted(),
            columns.join(",\n  ")
        );
        sqlx::query(AssertSqlSafe(sql))
            .execute(&mut **tx)
            .await
            .with_context(|| format!("creating results table {}", table.table))?;
        Ok(())
    }

    async fn upsert_results(
        tx: &mut Self::Tx,
        table: &ResultsTable,
        stamp: &RunStamp,
        chunk: &ScoredChunk,
    ) -> anyhow::Result<()> {
        let columns = chunk.frame.columns();
        let per_row = columns.len();
        let rows_per_insert = ROWS_PER_INSERT.min(MAX_PARAMS / (per_row + 5));
        let window_start = to_text(stamp.window.start);
        let window_end = to_text(stamp.window.end);
        let scored_at = to_text(stamp.scored_at);
        let mut offset = 0;
        while offset < chunk.rows() {
            let rows = rows_per_insert.min(chunk.rows() - offset);
            let sql = upsert_sql(table, rows, per_row);
            let mut args = SqliteArguments::default();
            use sqlx::Arguments;
            let stamp_values = [
                stamp.model_version.as_str(),
                stamp.run_id.as_str(),
                window_start.as_str(),
                window_end.as_str(),
                scored_at.as_str(),
            ];
            for row in offset..offset + rows {
                for column in columns {
                    add_value(&mut args, column, row)?;
                }
                for value in stamp_values {
                    args.add(value).map_err(anyhow::Error::from_boxed)?;
                }
            }
            sqlx::query_with(AssertSqlSafe(sql), args)
                .execute(&mut **tx)
                .await
                .with_context(|| format!("writing results to {}", table.table))?;
            offset += rows;
        }
        Ok(())
    }

    async fn has_quarantined(tx: &mut Self::Tx, job: &str) -> anyhow::Result<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM batchscore_quarantine WHERE job = ?1)")
            .bind(job)
            .fetch_one(&mut **tx)
            .await
            .context("reading batchscore_quarantine")
    }

    async fn quarantine(
        tx: &mut Self::Tx,
        job: &str,
        stamp: &RunStamp,
        rows: &[BadRow],
    ) -> anyhow::Result<()> {
        use sqlx::Arguments;
        let constants = [
            job.to_owned(),
            stamp.run_id.clone(),
            to_text(stamp.window.start),
            to_text(stamp.window.end),
            to_text(stamp.scored_at),
        ];
        for batch in rows.chunks(ROWS_PER_INSERT) {
            // Anonymous `?`, in column order (see `upsert_sql` for why).
            let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?)"; batch.len()];
            let sql = format!(
                "INSERT INTO batchscore_quarantine (job, run_id, window_start, window_end, quarantined_at, \
                 key, column_name, reason, features) VALUES {} ON CONFLICT (job, key) DO UPDATE SET \
                 run_id = excluded.run_id, column_name = excluded.column_name, reason = excluded.reason, \
                 features = excluded.features, window_start = excluded.window_start, \
                 window_end = excluded.window_end, quarantined_at = excluded.quarantined_at",
                values.join(", ")
            );
            let mut args = SqliteArguments::default();
            for row in batch {
                for value in
                    constants
                        .iter()
                        .chain([&row.key, &row.column, &row.reason, &row.features])
                {
                    args.add(value.clone()).map_err(anyhow::Error::from_boxed)?;
                }
            }
            sqlx::query_with(AssertSqlSafe(sql), args)
                .execute(&mut **tx)
                .await
                .context("writing to batchscore_quarantine")?;
        }
        Ok(())
    }

    async fn release_quarantined(
        tx: &mut Self::Tx,
        job: &str,
        keys: Vec<String>,
    ) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM batchscore_quarantine WHERE job = ?1 AND key IN (SELECT value FROM json_each(?2))")
            .bind(job)
            .bind(serde_json::to_string(&keys)?)
            .execute(&mut **tx)
            .await
            .context("releasing scored rows from batchscore_quarantine")?;
        Ok(())
    }

    async fn insert_run(&self, run: &RunRecord) -> anyhow::Result<()> {
        write_run(&self.pool, run).await
    }

    async fn insert_run_in(tx: &mut Self::Tx, run: &RunRecord) -> anyhow::Result<()> {
        write_run(&mut **tx, run).await
    }

    async fn abandon_runs(&self, job: &str) -> anyhow::Result<u64> {
        let done = sqlx::query(
            "UPDATE batchscore_runs SET status = 'abandoned', finished_at = ?2, \
             error = 'the process running it stopped before finishing (killed, crashed or lost its claim)' \
             WHERE job = ?1 AND status = 'running'",
        )
        .bind(job)
        .bind(to_text(Utc::now()))
        .execute(&self.pool)
        .await
        .context("marking abandoned runs in batchscore_runs")?;
        Ok(done.rows_affected())
    }

    async fn watermark(&self, job: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT watermark FROM batchscore_watermarks WHERE job = ?1")
                .bind(job)
                .fetch_optional(&self.pool)
                .await
                .context("reading the watermark")?;
        text.as_deref().map(from_text).transpose()
    }

    async fn watermarks(&self) -> anyhow::Result<Vec<(String, DateTime<Utc>)>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT job, watermark FROM batchscore_watermarks ORDER BY job")
                .fetch_all(&self.pool)
                .await
                .context("reading watermarks")?;
        rows.into_iter()
            .map(|(job, text)| Ok((job, from_text(&text)?)))
            .collect()
    }

    async fn advance_watermark(
        tx: &mut Self::Tx,
        job: &str,
        from: Option<DateTime<Utc>>,
        to: DateTime<Utc>,
        run_id: &str,
    ) -> anyhow::Result<bool> {
        let query = match from {
            None => sqlx::query(
                "INSERT INTO batchscore_watermarks (job, watermark, run_id, updated_at) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (job) DO NOTHING",
            ),
            // Fixed-width UTC text: equality and order are those of the times.
            Some(_) => sqlx::query(
                "UPDATE batchscore_watermarks SET watermark = ?2, run_id = ?3, updated_at = ?4 \
                 WHERE job = ?1 AND watermark = ?5 AND watermark < ?2",
            ),
        };
        let done = query
            .bind(job)
            .bind(to_text(to))
            .bind(run_id)
            .bind(to_text(Utc::now()))
            .bind(from.map(to_text))
            .execute(&mut **tx)
            .await
            .context("moving the watermark")?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_watermark(&self, job: &str, to: DateTime<Utc>) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO batchscore_watermarks (job, watermark, run_id, updated_at) VALUES (?1, ?2, NULL, ?3) \
             ON CONFLICT (job) DO UPDATE SET watermark = excluded.watermark, run_id = NULL, updated_at = excluded.updated_at",
        )
        .bind(job)
        .bind(to_text(to))
        .bind(to_text(Utc::now()))
        .execute(&self.pool)
        .await
        .context("setting the watermark")?;
        Ok(())
    }

    async fn claim(&self, claim: &Claim) -> anyhow::Result<ClaimOutcome<()>> {
        // A holder that is finishing deletes its row between our two statements: look again.
        for _ in 0..25 {
            let takeover = match read_holder(&self.pool, &claim.job).await? {
                Some(holder) if !holder.is_gone(Utc::now(), &claim.host) => {
                    return Ok(ClaimOutcome::Busy(Some(holder)));
                }
                Some(gone) => Some(gone.claim_id),
                None => None,
            };
            // Insert, or take over exactly the holder judged gone above: if anyone claimed the
            // job in between, the row's claim_id differs and nothing is returned.
            let won: Option<String> = sqlx::query_scalar(
                "INSERT INTO batchscore_claims (job, claim_id, host, pid, claimed_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (job) DO UPDATE SET claim_id = excluded.claim_id, host = excluded.host, \
                 pid = excluded.pid, claimed_at = excluded.claimed_at, expires_at = excluded.expires_at \
                 WHERE batchscore_claims.claim_id IS ?7 \
                 RETURNING claim_id",
            )
            .bind(&claim.job)
            .bind(&claim.claim_id)
            .bind(&claim.host)
            .bind(claim.pid)
            .bind(to_text(claim.claimed_at))
            .bind(to_text(claim.expires_at()))
            .bind(takeover)
            .fetch_optional(&self.pool)
            .await
            .context("claiming the job")?;
            if won.is_some() {
                return Ok(ClaimOutcome::Acquired(()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(ClaimOutcome::Busy(None))
    }

    async fn renew_claim(&self, claim: &Claim) -> anyhow::Result<bool> {
        let done = sqlx::query(
            "UPDATE batchscore_claims SET expires_at = ?3 WHERE job = ?1 AND claim_id = ?2",
        )
        .bind(&claim.job)
        .bind(&claim.claim_id)
        .bind(to_text(claim.expires_at()))
        .execute(&self.pool)
        .await
        .context("renewing the claim")?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_claim(&self, _lock: (), claim: &Claim) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM batchscore_claims WHERE job = ?1 AND claim_id = ?2")
            .bind(&claim.job)
            .bind(&claim.claim_id)
            .execute(&self.pool)
            .await
            .context("releasing the claim")?;
        Ok(())
    }

    async fn finish_run(tx: &mut Self::Tx, run: &RunRecord) -> anyhow::Result<()> {
        write_run(&mut **tx, run).await
    }

    async fn fail_run(&self, run: &RunRecord) -> anyhow::Result<()> {
        write_run(&self.pool, run).await
    }

    async fn commit(tx: Self::Tx) -> anyhow::Result<()> {
        tx.commit().await.context("committing the window")
    }

    async fn recent_runs(&self, job: Option<&str>, limit: u32) -> anyhow::Result<Vec<RunRecord>> {
        let rows = sqlx::query(
            "SELECT run_id, job, window_start, window_end, status, rows_read, rows_written, \
             model_sha256, started_at, finished_at, error, host, pid, rows_bad, \
             rows_quarantined, rows_skipped, bad_rows FROM batchscore_runs \
             WHERE ?1 IS NULL OR job = ?1 ORDER BY started_at DESC LIMIT ?2",
        )
        .bind(job)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .context("reading batchscore_runs")?;
        rows.iter().map(run_from_row).collect()
    }
}

async fn read_holder(pool: &SqlitePool, job: &str) -> anyhow::Result<Option<Holder>> {
    let row: Option<(String, String, i64, String, String)> = sqlx::query_as(
        "SELECT claim_id, host, pid, claimed_at, expires_at FROM batchscore_claims WHERE job = ?1",
    )
    .bind(job)
    .fetch_optional(pool)
    .await
    .context("reading the job's claim")?;
    row.map(|(claim_id, host, pid, claimed_at, expires_at)| {
        Ok(Holder {
            claim_id,
            host,
            pid,
            claimed_at: from_text(&claimed_at)?,
            expires_at: from_text(&expires_at)?,
        })
    })
    .transpose()
}

/// Insert the ledger row, or update how it ended: the one statement for starting, finishing
/// and failing a run.
async fn write_run<'e>(
    executor: impl sqlx::SqliteExecutor<'e>,
    run: &RunRecord,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO batchscore_runs (run_id, job, window_start, window_end, status, rows_read, \
         rows_written, model_sha256, started_at, finished_at, error, host, pid, rows_bad, \
         rows_quarantined, rows_skipped, bad_rows) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
         ON CONFLICT (run_id) DO UPDATE SET status = excluded.status, rows_read = excluded.rows_read, \
         rows_written = excluded.rows_written, finished_at = excluded.finished_at, error = excluded.error, \
         rows_bad = excluded.rows_bad, rows_quarantined = excluded.rows_quarantined, \
         rows_skipped = excluded.rows_skipped, bad_rows = excluded.bad_rows",
    )
    .bind(&run.run_id)
    .bind(&run.job)
    .bind(to_text(run.window_start))
    .bind(to_text(run.window_end))
    .bind(run.status.as_str())
    .bind(run.rows_read)
    .bind(run.rows_written)
    .bind(&run.model_sha256)
    .bind(to_text(run.started_at))
    .bind(run.finished_at.map(to_text))
    .bind(&run.error)
    .bind(&run.host)
    .bind(run.pid)
    .bind(run.rows_bad)
    .bind(run.rows_quarantined)
    .bind(run.rows_skipped)
    .bind(&run.bad_rows)
    .execute(executor)
    .await
    .context("recording the run in batchscore_runs")?;
    Ok(())
}

fn run_from_row(row: &SqliteRow) -> anyhow::Result<RunRecord> {
    let status: String = row.try_get("status")?;
    let finished_at: Option<String> = row.try_get("finished_at")?;
    Ok(RunRecord {
        run_id: row.try_get("run_id")?,
        job: row.try_get("job")?,
        window_start: from_text(row.try_get("window_start")?)?,
        window_end: from_text(row.try_get("window_end")?)?,
        status: RunStatus::parse(&status)
            .with_context(|| format!("unknown run status `{status}`"))?,
        rows_read: row.try_get("rows_read")?,
        rows_written: row.try_get("rows_written")?,
        rows_bad: row.try_get("rows_bad")?,
        rows_quarantined: row.try_get("rows_quarantined")?,
        rows_skipped: row.try_get("rows_skipped")?,
        bad_rows: row.try_get("bad_rows")?,
        model_sha256: row.try_get("model_sha256")?,
        started_at: from_text(row.try_get("started_at")?)?,
        finished_at: finished_at.as_deref().map(from_text).transpose()?,
        error: row.try_get("error")?,
        host: row.try_get("host")?,
        pid: row.try_get("pid")?,
    })
}

/// `INSERT … VALUES (?, ?, …), … ON CONFLICT (key) DO UPDATE …` for `rows` rows of `per_row`
/// values and the stamp's five. Anonymous `?` on purpose: SQLite finds each numbered `?NNN` by a
/// linear search, and sqlx asks for every parameter's name, which made binding a 1,500-parameter
/// statement quadratic (58% of a run's time). Repeating the stamp per row costs far less.
fn upsert_sql(table: &ResultsTable, rows: usize, per_row: usize) -> String {
    let names = table.column_names();
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    let row = format!("({})", vec!["?"; per_row + 5].join(", "));
    let values = vec![row; rows];
    let updates: Vec<String> = quoted[1..]
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO {} ({}) VALUES {} ON CONFLICT ({}) DO UPDATE SET {}",
        table.table.quoted(),
        quoted.join(", "),
        values.join(", "),
        quoted[0],
        updates.join(", ")
    )
}

fn add_value(args: &mut SqliteArguments, column: &Column, row: usize) -> anyhow::Result<()> {
    use sqlx::Arguments;
    let added = match column.dtype() {
        DataType::Float64 => args.add(column.f64()?.get(row)),
        DataType::Int64 => args.add(column.i64()?.get(row)),
        DataType::Boolean => args.add(column.bool()?.get(row)),
        DataType::String => args.add(column.str()?.get(row).map(str::to_owned)),
        other => anyhow::bail!(
            "result column `{}` has unexpected type {other}",
            column.name()
        ),
    };
    added.map_err(anyhow::Error::from_boxed)
}

/// Decode one source row: key first, then the features, checked value by value.
fn decode_row(
    row: &SqliteRow,
    spec: &JobSpec,
    shape: &SourceShape,
    chunk: &mut ChunkBuilder,
) -> anyhow::Result<()> {
    let key = row.try_get_raw(0)?;
    let key_problem = |what: &str| {
        anyhow::anyhow!(
            "a row of the window has {what} in key column `{}`: keys must be unique and not NULL",
            spec.source.key
        )
    };
    // Ask `is_null` first: for a NULL, sqlx reports the column's declared type, not NULL, and
    // decoding it would turn the NULL into 0.
    if key.is_null() {
        return Err(key_problem("NULL"));
    }
    match (shape.key, key.type_info().name()) {
        (KeyKind::Integer, "INTEGER") => chunk
            .push_int_key(<i64 as Decode<Sqlite>>::decode(key).map_err(anyhow::Error::from_boxed)?),
        (KeyKind::Text, "TEXT") => chunk.push_text_key(
            <&str as Decode<Sqlite>>::decode(key).map_err(anyhow::Error::from_boxed)?,
        ),
        (KeyKind::Text, "INTEGER") => chunk.push_text_key(
            &<i64 as Decode<Sqlite>>::decode(key)
                .map_err(anyhow::Error::from_boxed)?
                .to_string(),
        ),
        (_, other) => return Err(key_problem(&format!("a {} value", other.to_lowercase()))),
    }
    for feature in 0..shape.features.len() {
        let value: SqliteValueRef<'_> = row.try_get_raw(feature + 1)?;
        if value.is_null() {
            chunk.push_feature(feature, None);
            continue;
        }
        match value.type_info().name() {
            "INTEGER" | "REAL" => {
                let v =
                    <f64 as Decode<Sqlite>>::decode(value).map_err(anyhow::Error::from_boxed)?;
                chunk.push_feature(feature, Some(v));
            }
            "TEXT" => {
                let text = <&str as Decode<Sqlite>>::decode(value).unwrap_or("?");
                let shown: String = text.chars().take(40).collect();
                chunk.push_unreadable(
                    feature,
                    format!("holds text '{shown}', not a number"),
                    text.to_owned(),
                );
            }
            other => chunk.push_unreadable(
                feature,
                format!("holds a {} value, not a number", other.to_lowercase()),
                format!("({})", other.to_lowercase()),
            ),
        }
    }
    chunk.end_row();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_follow_sqlite_affinity() {
        assert_eq!(classify("BIGINT"), ColumnKind::Integer);
        assert_eq!(classify("varchar(20)"), ColumnKind::Text);
        assert_eq!(classify("DOUBLE PRECISION"), ColumnKind::Real);
        assert_eq!(classify("NUMERIC(8,3)"), ColumnKind::Numeric);
        assert_eq!(classify("BOOLEAN"), ColumnKind::Boolean);
        assert_eq!(classify(""), ColumnKind::Dynamic);
        assert_eq!(classify("BLOB"), ColumnKind::Other("BLOB".into()));
    }
}
