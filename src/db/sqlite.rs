//! SQLite, the embedded default: dialect SQL and decoding for [`Backend`].
//!
//! SQLite types are per value, not per column, so times are accepted in every form people
//! store them in (ISO-8601 text with `T` or space, with or without `Z` or an offset, or integer
//! unix seconds), and each feature value is checked as it is read.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::ValueRef;
use sqlx::sqlite::{
    LockedSqliteHandle, SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{
    AssertSqlSafe, Column as _, ConnectOptions, Row, SqlSafeStr, Sqlite, Transaction, TypeInfo,
};
use tokio::sync::mpsc;

use super::{Backend, Limits};
use crate::claim::{Claim, ClaimOutcome, Holder};
use crate::features::BadRow;
use crate::ident::TableName;
use crate::ledger::{RunRecord, RunStatus};
use crate::plan::Window;
use crate::sink::{ResultColumn, ResultType, ResultsTable, RunStamp, ScoredChunk};
use crate::source::{Cell, CellType, ChunkBuilder, ColumnKind, KeyKind, SourceChunk, SourceShape};
use crate::spec::{JobSpec, SourceFrom};

/// Whether an error may go away by itself: the pool, I/O, or another writer holding the lock
/// (SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, with their extended codes).
pub fn is_transient(err: &sqlx::Error) -> bool {
    super::is_transient_io(err) || matches!(primary_code(err), Some(5 | 6 | 10))
}

/// SQLite's primary result code of a database error (the extended code's low byte).
fn primary_code(err: &sqlx::Error) -> Option<i32> {
    let sqlx::Error::Database(db) = err else {
        return None;
    };
    Some(db.code()?.parse::<i32>().ok()? & 0xff)
}

/// Rows per multi-row INSERT into the quarantine: enough to amortise each statement, few enough
/// to keep it cheap to prepare once and reuse from the statement cache.
const ROWS_PER_INSERT: usize = 500;

#[derive(Clone)]
pub struct SqliteBackend {
    pool: SqlitePool,
    limits: Limits,
}

impl SqliteBackend {
    pub async fn connect(url: &str, limits: Limits) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            // WAL: the window's reader and writer run at once, and application readers are never
            // blocked by a run.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // Another writer (an application's long transaction, a frozen run) holds the write
            // lock: wait this long, then report the job busy (see `is_locked`).
            .busy_timeout(limits.busy)
            // Streaming a window is a long statement by design, not a slow one worth a warning.
            .disable_statement_logging();
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(limits.connect)
            .connect_with(options)
            .await?;
        Ok(SqliteBackend { pool, limits })
    }

    /// A table's columns and declared types, in order; none if there is no such table.
    async fn declared_columns(
        &self,
        table: &TableName,
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        let schema = table.schema.as_ref().map_or("main", |s| s.as_str());
        sqlx::query_as("SELECT name, type FROM pragma_table_info(?1, ?2)")
            .bind(table.name.as_str())
            .bind(schema)
            .fetch_all(&self.pool)
            .await
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
    const RENEWS_DURING_WINDOW: bool = false;

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

    async fn describe_source(
        &self,
        spec: &JobSpec,
    ) -> anyhow::Result<Result<Vec<(String, ColumnKind)>, String>> {
        let described = match &spec.source.from {
            SourceFrom::Table(table) => match self.declared_columns(table).await {
                Ok(rows) if rows.is_empty() => Err(format!("source table {table} does not exist")),
                Ok(rows) => Ok(rows
                    .into_iter()
                    .map(|(name, ty)| (name, classify(&ty)))
                    .collect()),
                Err(e) if is_transient(&e) => return Err(e.into()),
                Err(e) => Err(format!("cannot describe source table {table}: {e}")),
            },
            SourceFrom::Query(_) => {
                let sql = format!("SELECT * FROM {} LIMIT 0", from_clause(spec));
                match sqlx::Executor::describe(&self.pool, AssertSqlSafe(sql).into_sql_str()).await
                {
                    Ok(described) => Ok(described
                        .columns()
                        .iter()
                        .map(|c| (c.name().to_owned(), classify(c.type_info().name())))
                        .collect()),
                    Err(e) if is_transient(&e) => return Err(e.into()),
                    Err(e) => Err(format!("source.query does not run: {e}")),
                }
            }
        };
        Ok(described)
    }

    fn timestamp_ok(kind: &ColumnKind) -> bool {
        !matches!(kind, ColumnKind::Boolean | ColumnKind::Other(_))
    }

    async fn table_columns(
        &self,
        table: &TableName,
    ) -> anyhow::Result<Option<Vec<(String, String)>>> {
        let names = self
            .declared_columns(table)
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
        _claim: &Claim,
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
        let mut conn = self
            .pool
            .acquire()
            .await
            .context("reading the window's rows")?;
        let (spec, shape) = (spec.clone(), shape.clone());
        let runtime = tokio::runtime::Handle::current();
        // The statement steps on a blocking thread, rows decoded straight off it: through sqlx,
        // every value was copied on its worker thread and every row handed across threads.
        tokio::task::spawn_blocking(move || {
            let mut locked = runtime
                .block_on(conn.lock_handle())
                .context("reading the window's rows")?;
            with_direct(&mut locked, |db| {
                let mut select = db.prepare(&sql)?;
                select.raw_bind_parameter(1, to_unix_seconds(window.start))?;
                select.raw_bind_parameter(2, to_unix_seconds(window.end))?;
                let mut rows = select.raw_query();
                let mut chunk = ChunkBuilder::new(&spec, &shape);
                while let Some(row) = rows.next()? {
                    decode_row(row, &spec, &shape, &mut chunk)?;
                    if chunk.is_full() && out.blocking_send(chunk.take()).is_err() {
                        return Ok(()); // the consumer stopped; it reports why
                    }
                }
                if !chunk.is_empty() {
                    let _ = out.blocking_send(chunk.take());
                }
                Ok(())
            })
            .context("reading the window's rows")
        })
        .await
        .context("the window's reader panicked")?
    }

    async fn begin(&self, _claim: &Claim) -> anyhow::Result<Self::Tx> {
        // No server to end a frozen run's transaction: the write lock it holds keeps every other
        // writer out (they give up after the busy timeout), and it commits nothing once
        // superseded (the fencing check).
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
        let columns = chunk.typed_columns()?;
        let sql = upsert_sql(table, columns.len());
        let stamp_values = [
            stamp.model_version.clone(),
            stamp.run_id.clone(),
            to_text(stamp.window.start),
            to_text(stamp.window.end),
            to_text(stamp.scored_at),
        ];
        let mut locked = tx
            .lock_handle()
            .await
            .with_context(|| format!("writing results to {}", table.table))?;
        // One prepared statement for the chunk, executed per row: no SQL text to build or parse
        // per row, and the stamp, the same for every row, is bound once (SQLite keeps bindings
        // across executions).
        on_this_thread(|| {
            with_direct(&mut locked, |db| {
                let mut insert = db.prepare(&sql)?;
                for (i, value) in stamp_values.iter().enumerate() {
                    insert.raw_bind_parameter(columns.len() + 1 + i, value.as_str())?;
                }
                for row in 0..chunk.rows() {
                    for (i, column) in columns.iter().enumerate() {
                        bind(&mut insert, i + 1, column, row)?;
                    }
                    insert.raw_execute()?;
                }
                Ok(())
            })
        })
        .with_context(|| format!("writing results to {}", table.table))
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
            // Anonymous `?`, in column order: SQLite finds each numbered `?NNN` by a linear
            // search, and sqlx asks for every parameter's name, which made binding a statement
            // of thousands of parameters quadratic.
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

    async fn renew_claim(&self, _lock: &mut (), claim: &Claim) -> anyhow::Result<bool> {
        renew(&self.pool, claim).await
    }

    async fn fence(tx: &mut Self::Tx, claim: &Claim) -> anyhow::Result<bool> {
        renew(&mut **tx, claim)
            .await
            .context("checking this run still holds the claim")
    }

    fn lock_wait(&self, err: &anyhow::Error) -> Option<Duration> {
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
        let locked = err.chain().any(|cause| {
            cause
                .downcast_ref::<sqlx::Error>()
                .is_some_and(|e| matches!(primary_code(e), Some(5 | 6)))
        });
        locked.then_some(self.limits.busy)
    }

    async fn release_claim(&self, _lock: Option<()>, claim: &Claim) -> anyhow::Result<()> {
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
        write_run_if_running(&self.pool, run).await
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

/// Extend the claim by this host's clock (SQLite's), only if this run still holds it.
async fn renew<'e>(executor: impl sqlx::SqliteExecutor<'e>, claim: &Claim) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "UPDATE batchscore_claims SET expires_at = ?3 WHERE job = ?1 AND claim_id = ?2",
    )
    .bind(&claim.job)
    .bind(&claim.claim_id)
    .bind(to_text(claim.expires_at()))
    .execute(executor)
    .await
    .context("renewing the claim")?;
    Ok(done.rows_affected() == 1)
}

/// Insert the ledger row, or update how it ended: the one statement for starting and finishing
/// a run.
async fn write_run<'e>(
    executor: impl sqlx::SqliteExecutor<'e>,
    run: &RunRecord,
) -> anyhow::Result<()> {
    upsert_run(executor, run, "").await
}

/// Record how a run ended unless its row says it ended already (see [`Backend::fail_run`]).
async fn write_run_if_running<'e>(
    executor: impl sqlx::SqliteExecutor<'e>,
    run: &RunRecord,
) -> anyhow::Result<()> {
    upsert_run(executor, run, " WHERE batchscore_runs.status = 'running'").await
}

async fn upsert_run<'e>(
    executor: impl sqlx::SqliteExecutor<'e>,
    run: &RunRecord,
    condition: &'static str,
) -> anyhow::Result<()> {
    let sql = format!(
        "INSERT INTO batchscore_runs (run_id, job, window_start, window_end, status, rows_read, \
         rows_written, model_sha256, started_at, finished_at, error, host, pid, rows_bad, \
         rows_quarantined, rows_skipped, bad_rows) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
         ON CONFLICT (run_id) DO UPDATE SET status = excluded.status, rows_read = excluded.rows_read, \
         rows_written = excluded.rows_written, finished_at = excluded.finished_at, error = excluded.error, \
         rows_bad = excluded.rows_bad, rows_quarantined = excluded.rows_quarantined, \
         rows_skipped = excluded.rows_skipped, bad_rows = excluded.bad_rows{condition}"
    );
    sqlx::query(AssertSqlSafe(sql))
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

/// `INSERT … VALUES (?1, …) ON CONFLICT (key) DO UPDATE …` for one row of `per_row` values
/// and the stamp's five.
fn upsert_sql(table: &ResultsTable, per_row: usize) -> String {
    let quoted = table.quoted_column_names();
    let placeholders: Vec<String> = (1..=per_row + 5).map(|i| format!("?{i}")).collect();
    let updates: Vec<String> = quoted[1..]
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}",
        table.table.quoted(),
        quoted.join(", "),
        placeholders.join(", "),
        quoted[0],
        updates.join(", ")
    )
}

/// Bind row `row` of `column` to parameter `index`.
fn bind(
    statement: &mut rusqlite::Statement<'_>,
    index: usize,
    column: &ResultColumn<'_>,
    row: usize,
) -> rusqlite::Result<()> {
    match column {
        ResultColumn::Float(values) => statement.raw_bind_parameter(index, values.get(row)),
        ResultColumn::Integer(values) => statement.raw_bind_parameter(index, values.get(row)),
        ResultColumn::Boolean(values) => statement.raw_bind_parameter(index, values.get(row)),
        ResultColumn::Text(values) => statement.raw_bind_parameter(index, values.get(row)),
    }
}

/// Run `f` on a rusqlite view of a connection sqlx has handed over (`lock_handle`), for the
/// hot loops where a prepared statement stepped directly beats sqlx's per-row machinery. The
/// connection stays sqlx's, transaction included; statements `f` prepares end with it.
fn with_direct<T>(
    locked: &mut LockedSqliteHandle<'_>,
    f: impl FnOnce(&rusqlite::Connection) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    // SAFETY: the lock keeps sqlx's worker off the handle for as long as `locked` lives, which
    // outlives `direct`; `from_handle` makes a view that never closes the handle.
    let direct = unsafe { rusqlite::Connection::from_handle(locked.as_raw_handle().as_ptr()) }?;
    f(&direct)
}

/// Run blocking database work from async code: on a multi-threaded runtime the thread's other
/// tasks move elsewhere meanwhile; on a current-thread runtime (tests) it simply runs.
fn on_this_thread<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Decode one source row: key first, then the features, checked value by value (SQLite types
/// are per value: a REAL column may hold text), converted by the [`ChunkBuilder`].
fn decode_row(
    row: &rusqlite::Row<'_>,
    spec: &JobSpec,
    shape: &SourceShape,
    chunk: &mut ChunkBuilder,
) -> anyhow::Result<()> {
    let key_problem = |what: &str| {
        anyhow::anyhow!(
            "a row of the window has {what} in key column `{}`: keys must be unique and not NULL",
            spec.source.key
        )
    };
    match (shape.key, row.get_ref(0)?) {
        (_, ValueRef::Null) => return Err(key_problem("NULL")),
        (KeyKind::Integer, ValueRef::Integer(key)) => chunk.push_int_key(key),
        (KeyKind::Text, ValueRef::Integer(key)) => chunk.push_text_key(&key.to_string()),
        (KeyKind::Text, ValueRef::Text(key)) => chunk.push_text_key(
            std::str::from_utf8(key).map_err(|_| key_problem("text that is not UTF-8"))?,
        ),
        (_, other) => return Err(key_problem(&format!("a {} value", type_name(other)))),
    }
    for (feature, cell) in shape.cells.iter().enumerate() {
        match row.get_ref(feature + 1)? {
            ValueRef::Null => chunk.push(feature, Cell::Null),
            ValueRef::Integer(v) => chunk.push(feature, Cell::Integer(v)),
            ValueRef::Real(v) => chunk.push(feature, Cell::Float(v)),
            ValueRef::Text(bytes) => chunk.push(feature, Cell::Text(bytes)),
            other => {
                let kind = type_name(other);
                let wanted = match cell {
                    CellType::Text => "text",
                    _ => "a number",
                };
                chunk.push_unreadable(
                    feature,
                    format!("holds a {kind} value, not {wanted}"),
                    format!("({kind})"),
                );
            }
        }
    }
    chunk.end_row();
    Ok(())
}

/// A value's storage class, as messages name it ("real", "blob").
fn type_name(value: ValueRef<'_>) -> String {
    value.data_type().to_string().to_lowercase()
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
