//! PostgreSQL, for production: dialect SQL and decoding for [`Backend`].
//!
//! Reads stream the window out with a binary `COPY (SELECT …) TO STDOUT`, every feature cast to
//! `double precision` by the server, parsed in `copy.rs`. Writes go one statement per batch of
//! scored chunks: binary `COPY … FROM STDIN` when an index probe shows no key of the batch can be
//! in the results table yet, `INSERT … ON CONFLICT` through `UNNEST` arrays when some can (see
//! `upsert_results`).

mod copy;

use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use polars::prelude::*;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{
    AssertSqlSafe, Column as _, ConnectOptions, Postgres, Row, SqlSafeStr, Transaction, TypeInfo,
};
use tokio::sync::mpsc;

use self::copy::{Tuple, TupleReader, TupleWriter};
use super::{Backend, Limits};
use crate::claim::{Claim, ClaimOutcome, Holder};
use crate::features::BadRow;
use crate::ident::TableName;
use crate::ledger::{RunRecord, RunStatus};
use crate::plan::Window;
use crate::sink::{ResultColumn, ResultType, ResultsTable, RunStamp, ScoredChunk};
use crate::source::{Cell, CellType, ChunkBuilder, ColumnKind, KeyKind, SourceChunk, SourceShape};
use crate::spec::{JobSpec, SourceFrom};

#[derive(Clone)]
pub struct PostgresBackend {
    pool: PgPool,
    /// For the claim's own connection, outside the pool (see [`Backend::claim`]).
    options: Arc<PgConnectOptions>,
    limits: Limits,
}

impl PostgresBackend {
    pub async fn connect(url: &str, limits: Limits) -> Result<Self, sqlx::Error> {
        let options = PgConnectOptions::from_str(url)?
            .application_name("batchscore")
            // Columns of type `timestamp` (without time zone) are read as UTC.
            .options([("TimeZone", "UTC")])
            // Streaming a window is a long statement by design, not a slow one worth a warning.
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(limits.connect)
            .connect_with(options.clone())
            .await?;
        Ok(PostgresBackend {
            pool,
            options: Arc::new(options),
            limits,
        })
    }
}

/// A claim's advisory lock, keyed by its claim id (unique, so no schema in the key): held by the
/// holder's claim connection for as long as the claim, it tells a live holder's session from a
/// gone one. It is only a hint that lets the next run take over before the lease lapses: a
/// holder whose lease lapsed loses the job whatever its session still holds.
const LOCK_CLAIM: &str = "SELECT pg_advisory_lock(hashtextextended('batchscore claim ' || $1, 0))";
const TRY_LOCK_CLAIM: &str =
    "SELECT pg_try_advisory_lock(hashtextextended('batchscore claim ' || $1, 0))";
const UNLOCK_CLAIM: &str =
    "SELECT pg_advisory_unlock(hashtextextended('batchscore claim ' || $1, 0))";
/// The `application_name` of a run's window sessions (its reader and its transaction), by which
/// a successor ends them (see [`PostgresBackend::end_sessions_of`]). Not the claim's own
/// connection, which the superseded holder needs to learn it was superseded.
fn session_tag(claim: &Claim) -> String {
    format!("batchscore {}", claim.claim_id)
}

/// Extend the claim by the server's clock, only if this run still holds it.
async fn renew<'e>(executor: impl sqlx::PgExecutor<'e>, claim: &Claim) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "UPDATE batchscore_claims SET expires_at = clock_timestamp() + make_interval(secs => $3) \
         WHERE job = $1 AND claim_id = $2",
    )
    .bind(&claim.job)
    .bind(&claim.claim_id)
    .bind(claim.lease.as_seconds_f64())
    .execute(executor)
    .await
    .context("renewing the claim")?;
    Ok(done.rows_affected() == 1)
}

/// Whether an error may go away by itself: the network, a timeout, a server that is starting,
/// shutting down or out of connections, a statement cancelled by a timeout (SQLSTATE classes 08,
/// 53, 57).
pub fn is_transient(err: &sqlx::Error) -> bool {
    super::is_transient_io(err)
        || matches!(err, sqlx::Error::Database(db)
            if db.code().is_some_and(|code| ["08", "53", "57"].iter().any(|c| code.starts_with(c))))
}

fn classify(type_name: &str) -> ColumnKind {
    match type_name.to_ascii_uppercase().as_str() {
        "INT2" | "INT4" | "INT8" | "SMALLINT" | "INTEGER" | "BIGINT" => ColumnKind::Integer,
        "FLOAT4" | "FLOAT8" | "REAL" | "DOUBLE PRECISION" => ColumnKind::Real,
        "NUMERIC" => ColumnKind::Numeric,
        "BOOL" | "BOOLEAN" => ColumnKind::Boolean,
        "TEXT" | "VARCHAR" | "BPCHAR" | "CHAR" | "NAME" => ColumnKind::Text,
        "TIMESTAMP" | "TIMESTAMPTZ" => ColumnKind::Timestamp,
        other => ColumnKind::Other(other.to_owned()),
    }
}

/// The source, with `start` and `end` the SQL of the window's bounds: parameters `$1` and `$2`,
/// or literals where the statement (a COPY) takes no parameters.
fn from_clause(spec: &JobSpec, start: &str, end: &str) -> String {
    match &spec.source.from {
        SourceFrom::Table(table) => table.quoted(),
        SourceFrom::Query(query) => format!(
            "({}) AS batchscore_source",
            crate::source::bind_placeholders(query, start, end)
        ),
    }
}

/// `SELECT columns` of the window's rows.
fn window_select(spec: &JobSpec, columns: &str, start: &str, end: &str) -> String {
    let ts = spec.source.timestamp.quoted();
    format!(
        "SELECT {columns} FROM {} WHERE {ts} >= {start} AND {ts} < {end}",
        from_clause(spec, start, end)
    )
}

/// A time as a `timestamptz` literal (made from a `DateTime`, so nothing to escape).
fn timestamptz_literal(t: DateTime<Utc>) -> String {
    format!(
        "'{}'::timestamptz",
        t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    )
}

fn pg_type(result: ResultType) -> &'static str {
    match result {
        ResultType::Float => "double precision",
        ResultType::Integer => "bigint",
        ResultType::Text => "text",
        ResultType::Boolean => "boolean",
    }
}

/// How a feature crosses the wire in the window's binary COPY: the server casts each column to
/// the type nearest its cell, and the [`ChunkBuilder`] converts the rest (an integer 0/1 for a
/// bool input, whose values it checks one by one rather than have the server cast 2 to true).
#[derive(Debug, Clone, Copy)]
enum Wire {
    Float8,
    Int8,
    Bool,
    Text,
}

fn wire(kind: &ColumnKind, cell: CellType) -> Wire {
    match (cell, kind) {
        // PostgreSQL casts boolean to integer only: booleans cross as booleans.
        (CellType::Float | CellType::Integer | CellType::Boolean, ColumnKind::Boolean) => {
            Wire::Bool
        }
        (CellType::Float, _) => Wire::Float8,
        (CellType::Integer | CellType::Boolean, _) => Wire::Int8,
        (CellType::Text, _) => Wire::Text,
    }
}

impl Wire {
    /// The SELECT expression that sends `column` (quoted) as this wire type.
    fn select(self, column: &str) -> String {
        match self {
            Wire::Float8 => format!("CAST({column} AS double precision)"),
            Wire::Int8 => format!("CAST({column} AS bigint)"),
            Wire::Bool => format!("CAST({column} AS boolean)"),
            Wire::Text => format!("CAST({column} AS text)"),
        }
    }
}

fn key_type(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Integer => "bigint",
        KeyKind::Text => "text",
    }
}

impl Backend for PostgresBackend {
    type Tx = Transaction<'static, Postgres>;
    type Lock = PgConnection;
    const RENEWS_DURING_WINDOW: bool = true;

    async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = sqlx::migrate!("migrations/postgres");
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
            .context("applying batchscore's PostgreSQL migrations")
    }

    async fn describe_source(
        &self,
        spec: &JobSpec,
    ) -> anyhow::Result<Result<Vec<(String, ColumnKind)>, String>> {
        let sql = format!("SELECT * FROM {} LIMIT 0", from_clause(spec, "$1", "$2"));
        let described =
            match sqlx::Executor::describe(&self.pool, AssertSqlSafe(sql).into_sql_str()).await {
                Ok(described) => described,
                Err(e) if is_transient(&e) => return Err(e.into()),
                Err(e) => {
                    return Ok(Err(match &spec.source.from {
                        SourceFrom::Table(table) => {
                            format!("cannot read source table {table}: {e}")
                        }
                        SourceFrom::Query(_) => format!("source.query does not run: {e}"),
                    }));
                }
            };
        Ok(Ok(described
            .columns()
            .iter()
            .map(|c| (c.name().to_owned(), classify(c.type_info().name())))
            .collect()))
    }

    fn timestamp_ok(kind: &ColumnKind) -> bool {
        matches!(kind, ColumnKind::Timestamp)
    }

    async fn table_columns(
        &self,
        table: &TableName,
    ) -> anyhow::Result<Option<Vec<(String, String)>>> {
        let names: Vec<(String, String)> = sqlx::query_as(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        )
        .bind(table.quoted())
        .fetch_all(&self.pool)
        .await
        .with_context(|| format!("describing results table {table}"))?;
        Ok((!names.is_empty()).then_some(names))
    }

    async fn count_window(&self, spec: &JobSpec, window: Window) -> anyhow::Result<i64> {
        let sql = window_select(spec, "count(*)", "$1", "$2");
        sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(window.start)
            .bind(window.end)
            .fetch_one(&self.pool)
            .await
            .context("counting the window's rows")
    }

    async fn read_window(
        &self,
        spec: &JobSpec,
        shape: &SourceShape,
        window: Window,
        claim: &Claim,
        out: mpsc::Sender<SourceChunk>,
    ) -> anyhow::Result<()> {
        let key = spec.source.key.quoted();
        let mut columns = vec![format!("CAST({key} AS {})", key_type(shape.key))];
        columns.extend(
            spec.source
                .features
                .iter()
                .zip(&shape.features)
                .zip(&shape.cells)
                .map(|((name, kind), cell)| wire(kind, *cell).select(&name.quoted())),
        );
        let select = window_select(
            spec,
            &columns.join(", "),
            &timestamptz_literal(window.start),
            &timestamptz_literal(window.end),
        );
        let sql = format!("COPY ({select}) TO STDOUT (FORMAT binary)");
        let mut conn = self
            .pool
            .acquire()
            .await
            .context("reading the window's rows")?;
        // A window that fails or is abandoned aborts its reader mid-COPY; such a connection must
        // not go back to the pool (its next user would read the rest of the COPY). So the
        // reader's connection is never reused: one connect per window.
        conn.close_on_drop();
        // Tagged like the window's transaction: a frozen reader holds the source table's share
        // lock, which would block an application's ALTER TABLE until the holder woke.
        sqlx::query("SELECT set_config('application_name', $1, false)")
            .bind(session_tag(claim))
            .execute(&mut *conn)
            .await
            .context("reading the window's rows")?;
        let mut pieces = conn
            .copy_out_raw(&sql)
            .await
            .context("reading the window's rows")?;
        let mut tuples = TupleReader::default();
        let mut chunk = ChunkBuilder::new(spec, shape);
        let mut full = Vec::new();
        while let Some(piece) = pieces
            .try_next()
            .await
            .context("reading the window's rows")?
        {
            tuples.feed(&piece, |tuple| {
                decode_tuple(tuple, spec, shape, &mut chunk)?;
                if chunk.is_full() {
                    full.push(chunk.take());
                }
                Ok(())
            })?;
            for ready in full.drain(..) {
                if out.send(ready).await.is_err() {
                    // The consumer stopped (it reports why); the connection closes on drop.
                    return Ok(());
                }
            }
        }
        tuples.finish()?;
        if !chunk.is_empty() {
            let _ = out.send(chunk.take()).await;
        }
        Ok(())
    }

    async fn begin(&self, claim: &Claim) -> anyhow::Result<Self::Tx> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("opening the window's transaction")?;
        // For this transaction only: if the run freezes or is cut off, the server ends it within
        // a lease and frees the result keys it holds, so the run's successor does not wait on
        // them. A live run never waits that long: it talks to the server every chunk. (The
        // server cannot time out a statement waiting for the client's COPY data: for that, the
        // successor ends the session by its tag, see `claim`.)
        let millis = claim.lease().as_millis().max(1).to_string();
        sqlx::query(
            "SELECT set_config('statement_timeout', $1, true), \
             set_config('idle_in_transaction_session_timeout', $1, true), \
             set_config('application_name', $2, true)",
        )
        .bind(millis)
        .bind(session_tag(claim))
        .execute(&mut *tx)
        .await
        .context("opening the window's transaction")?;
        Ok(tx)
    }

    async fn create_results_table(tx: &mut Self::Tx, table: &ResultsTable) -> anyhow::Result<()> {
        let columns: Vec<String> = created_columns(table)
            .iter()
            .enumerate()
            .map(|(i, (name, ty))| {
                let constraint = match i {
                    0 => " PRIMARY KEY",
                    i if i > table.outputs.len() => " NOT NULL",
                    _ => "",
                };
                format!("\"{name}\" {ty}{constraint}")
            })
            .collect();
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

    /// Three ways in, cheapest first, measured on 1M rows of the bench's shape (server time):
    /// binary COPY 1.4 s, `INSERT … SELECT` 1.5 s (2.2 s from `UNNEST` arrays), and
    /// `INSERT … ON CONFLICT` 3.0 s, whose speculative insertion checks and logs every row twice.
    /// The first two cannot replace a row, so they are used only when no key of the chunk can
    /// be in the table yet; a key that another writer commits meanwhile makes them fail, and
    /// the window roll back whole.
    async fn upsert_results(
        tx: &mut Self::Tx,
        table: &ResultsTable,
        stamp: &RunStamp,
        chunk: &ScoredChunk,
    ) -> anyhow::Result<()> {
        let fresh = keys_absent(tx, table, chunk).await?;
        let written = if fresh && binary_copy_fits(table) {
            copy_in(tx, table, stamp, chunk).await
        } else {
            insert(tx, table, stamp, chunk, !fresh).await
        };
        written.with_context(|| format!("writing results to {}", table.table))
    }

    async fn has_quarantined(tx: &mut Self::Tx, job: &str) -> anyhow::Result<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM batchscore_quarantine WHERE job = $1)")
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
        let column =
            |f: fn(&BadRow) -> &String| rows.iter().map(f).cloned().collect::<Vec<String>>();
        sqlx::query(
            "INSERT INTO batchscore_quarantine (job, key, run_id, column_name, reason, features, \
             window_start, window_end, quarantined_at) \
             SELECT $1, k, $2, c, r, f::jsonb, $3, $4, $5 FROM UNNEST($6::text[], $7::text[], $8::text[], $9::text[]) AS u(k, c, r, f) \
             ON CONFLICT (job, key) DO UPDATE SET run_id = excluded.run_id, column_name = excluded.column_name, \
             reason = excluded.reason, features = excluded.features, window_start = excluded.window_start, \
             window_end = excluded.window_end, quarantined_at = excluded.quarantined_at",
        )
        .bind(job)
        .bind(&stamp.run_id)
        .bind(stamp.window.start)
        .bind(stamp.window.end)
        .bind(stamp.scored_at)
        .bind(column(|r| &r.key))
        .bind(column(|r| &r.column))
        .bind(column(|r| &r.reason))
        .bind(column(|r| &r.features))
        .execute(&mut **tx)
        .await
        .context("writing to batchscore_quarantine")?;
        Ok(())
    }

    async fn release_quarantined(
        tx: &mut Self::Tx,
        job: &str,
        keys: Vec<String>,
    ) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM batchscore_quarantine WHERE job = $1 AND key = ANY($2)")
            .bind(job)
            .bind(keys)
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
            "UPDATE batchscore_runs SET status = 'abandoned', finished_at = now(), \
             error = 'the process running it stopped before finishing (killed, crashed or lost its claim)' \
             WHERE job = $1 AND status = 'running'",
        )
        .bind(job)
        .execute(&self.pool)
        .await
        .context("marking abandoned runs in batchscore_runs")?;
        Ok(done.rows_affected())
    }

    async fn watermark(&self, job: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
        sqlx::query_scalar("SELECT watermark FROM batchscore_watermarks WHERE job = $1")
            .bind(job)
            .fetch_optional(&self.pool)
            .await
            .context("reading the watermark")
    }

    async fn watermarks(&self) -> anyhow::Result<Vec<(String, DateTime<Utc>)>> {
        sqlx::query_as("SELECT job, watermark FROM batchscore_watermarks ORDER BY job")
            .fetch_all(&self.pool)
            .await
            .context("reading watermarks")
    }

    async fn advance_watermark(
        tx: &mut Self::Tx,
        job: &str,
        from: Option<DateTime<Utc>>,
        to: DateTime<Utc>,
        run_id: &str,
    ) -> anyhow::Result<bool> {
        // Under READ COMMITTED a concurrent mover makes this wait, then re-check the WHERE
        // against the committed row: exactly one of two racing runs moves it.
        let query = match from {
            None => sqlx::query(
                "INSERT INTO batchscore_watermarks (job, watermark, run_id, updated_at) \
                 VALUES ($1, $2, $3, now()) ON CONFLICT (job) DO NOTHING",
            ),
            Some(_) => sqlx::query(
                "UPDATE batchscore_watermarks SET watermark = $2, run_id = $3, updated_at = now() \
                 WHERE job = $1 AND watermark = $4 AND watermark < $2",
            ),
        };
        let done = query
            .bind(job)
            .bind(to)
            .bind(run_id)
            .bind(from)
            .execute(&mut **tx)
            .await
            .context("moving the watermark")?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_watermark(&self, job: &str, to: DateTime<Utc>) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO batchscore_watermarks (job, watermark, run_id, updated_at) VALUES ($1, $2, NULL, now()) \
             ON CONFLICT (job) DO UPDATE SET watermark = excluded.watermark, run_id = NULL, updated_at = now()",
        )
        .bind(job)
        .bind(to)
        .execute(&self.pool)
        .await
        .context("setting the watermark")?;
        Ok(())
    }

    /// The claim row, taken over by compare-and-set on the claim id it replaces, and a session
    /// advisory lock keyed by the new claim id, on a connection of its own that lives as long as
    /// the claim: the lock is taken before the row is committed, so whoever sees the row can
    /// tell whether its holder's session is still there.
    async fn claim(&self, claim: &Claim) -> anyhow::Result<ClaimOutcome<PgConnection>> {
        let mut conn = tokio::time::timeout(
            self.limits.connect,
            PgConnection::connect_with(&self.options),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {:?}", self.limits.connect))
        .and_then(|connected| Ok(connected?))
        .context("opening the claim's connection")?;
        // A holder releasing deletes its row between our read and our write: look again.
        for _ in 0..25 {
            let takeover = match self.judge_holder(&mut conn, &claim.job).await? {
                Judged::Free => None,
                Judged::Gone(claim_id) => Some(claim_id),
                Judged::Alive(holder) => {
                    let _ = conn.close().await;
                    return Ok(ClaimOutcome::Busy(Some(holder)));
                }
            };
            let mut tx = conn.begin().await.context("claiming the job")?;
            // A frozen holder may have the row locked (in its window's fencing check); its
            // transaction ends within its lease, but this run does not wait for that.
            sqlx::query("SELECT set_config('lock_timeout', '2s', true)")
                .execute(&mut *tx)
                .await
                .context("claiming the job")?;
            // Insert, or take over exactly the holder judged gone above: if anyone claimed the
            // job in between, the row's claim id differs and nothing is returned.
            let won: Option<String> = sqlx::query_scalar(
                "INSERT INTO batchscore_claims (job, claim_id, host, pid, claimed_at, expires_at) \
                 VALUES ($1, $2, $3, $4, clock_timestamp(), clock_timestamp() + make_interval(secs => $5)) \
                 ON CONFLICT (job) DO UPDATE SET claim_id = excluded.claim_id, host = excluded.host, \
                 pid = excluded.pid, claimed_at = excluded.claimed_at, expires_at = excluded.expires_at \
                 WHERE batchscore_claims.claim_id = $6 \
                 RETURNING claim_id",
            )
            .bind(&claim.job)
            .bind(&claim.claim_id)
            .bind(&claim.host)
            .bind(claim.pid)
            .bind(claim.lease.as_seconds_f64())
            .bind(&takeover)
            .fetch_optional(&mut *tx)
            .await
            .context("claiming the job")?;
            if won.is_some() {
                sqlx::query(LOCK_CLAIM)
                    .bind(&claim.claim_id)
                    .execute(&mut *tx)
                    .await
                    .context("taking the claim's advisory lock")?;
                tx.commit().await.context("claiming the job")?;
                if let Some(replaced) = &takeover {
                    self.end_sessions_of(&mut conn, replaced).await;
                }
                return Ok(ClaimOutcome::Acquired(conn));
            }
            tx.rollback().await.context("claiming the job")?;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let _ = conn.close().await;
        Ok(ClaimOutcome::Busy(None))
    }

    async fn renew_claim(&self, lock: &mut PgConnection, claim: &Claim) -> anyhow::Result<bool> {
        renew(lock, claim).await
    }

    async fn fence(tx: &mut Self::Tx, claim: &Claim) -> anyhow::Result<bool> {
        renew(&mut **tx, claim)
            .await
            .context("checking this run still holds the claim")
    }

    async fn release_claim(&self, lock: Option<PgConnection>, claim: &Claim) -> anyhow::Result<()> {
        let delete = sqlx::query("DELETE FROM batchscore_claims WHERE job = $1 AND claim_id = $2")
            .bind(&claim.job)
            .bind(&claim.claim_id);
        let Some(mut lock) = lock else {
            // The claim's connection is gone, and its lock with it.
            delete
                .execute(&self.pool)
                .await
                .context("releasing the claim")?;
            return Ok(());
        };
        delete
            .execute(&mut lock)
            .await
            .context("releasing the claim")?;
        sqlx::query(UNLOCK_CLAIM)
            .bind(&claim.claim_id)
            .execute(&mut lock)
            .await
            .context("releasing the claim's advisory lock")?;
        lock.close().await.context("closing the claim's connection")
    }

    fn lock_wait(&self, _err: &anyhow::Error) -> Option<std::time::Duration> {
        // Waits on row locks end by statement_timeout or lock_timeout, reported as failures.
        None
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
             WHERE $1::text IS NULL OR job = $1 ORDER BY started_at DESC LIMIT $2",
        )
        .bind(job)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .context("reading batchscore_runs")?;
        rows.iter().map(run_from_row).collect()
    }
}

/// The columns of a results table batchscore creates, with their types as `format_type`
/// names them: key, outputs, then the run's stamp.
fn created_columns(table: &ResultsTable) -> Vec<(&str, &'static str)> {
    const TIMESTAMPTZ: &str = "timestamp with time zone";
    let mut columns = vec![(table.key.as_str(), key_type(table.key_kind))];
    columns.extend(
        table
            .outputs
            .iter()
            .map(|(name, ty)| (name.as_str(), pg_type(*ty))),
    );
    columns.extend([
        ("model_version", "text"),
        ("run_id", "text"),
        ("window_start", TIMESTAMPTZ),
        ("window_end", TIMESTAMPTZ),
        ("scored_at", TIMESTAMPTZ),
    ]);
    columns
}

/// Binary COPY needs each column to be exactly the type its bytes encode: true for a table
/// batchscore created, not always for one a team made themselves (`integer` keys, `real`
/// scores), which go through `INSERT` and its casts instead.
fn binary_copy_fits(table: &ResultsTable) -> bool {
    table.existing.as_ref().is_none_or(|existing| {
        created_columns(table)
            .iter()
            .all(|(name, ty)| existing.iter().any(|(n, t)| n == name && t == ty))
    })
}

/// Write `chunk` by binary COPY: one statement, whatever the chunk's size (the server's cost
/// per statement is what batching saves), sent in pieces so the client's buffer stays small.
async fn copy_in(
    tx: &mut Transaction<'static, Postgres>,
    table: &ResultsTable,
    stamp: &RunStamp,
    chunk: &ScoredChunk,
) -> anyhow::Result<()> {
    const PIECE_ROWS: usize = 10_000;
    let quoted = table.quoted_column_names();
    let fields = i16::try_from(quoted.len()).context("too many result columns")?;
    let columns = chunk.typed_columns()?;
    let sql = format!(
        "COPY {} ({}) FROM STDIN (FORMAT binary)",
        table.table.quoted(),
        quoted.join(", ")
    );
    let mut copy = tx.copy_in_raw(&sql).await?;
    // Per row: a length and 8 bytes per number, the sha256 and the run id's UUID.
    let piece = PIECE_ROWS.min(chunk.rows()) * (quoted.len() * 12 + 110);
    let mut tuples = TupleWriter::with_capacity(piece);
    for row in 0..chunk.rows() {
        tuples.tuple(fields);
        for column in &columns {
            match column {
                ResultColumn::Float(values) => {
                    tuples.nullable(values.get(row), TupleWriter::float8)
                }
                ResultColumn::Integer(values) => {
                    tuples.nullable(values.get(row), TupleWriter::int8)
                }
                ResultColumn::Boolean(values) => {
                    tuples.nullable(values.get(row), TupleWriter::boolean)
                }
                ResultColumn::Text(values) => tuples.nullable(values.get(row), TupleWriter::text),
            }
        }
        tuples.text(&stamp.model_version);
        tuples.text(&stamp.run_id);
        tuples.timestamptz(stamp.window.start);
        tuples.timestamptz(stamp.window.end);
        tuples.timestamptz(stamp.scored_at);
        if (row + 1) % PIECE_ROWS == 0 {
            copy.send(tuples.bytes()).await?;
            tuples.clear();
        }
    }
    tuples.end();
    copy.send(tuples.bytes()).await?;
    copy.finish().await?;
    Ok(())
}

/// Write `chunk` as arrays through `UNNEST`, replacing rows of the same keys when `upsert`.
async fn insert(
    tx: &mut Transaction<'static, Postgres>,
    table: &ResultsTable,
    stamp: &RunStamp,
    chunk: &ScoredChunk,
    upsert: bool,
) -> anyhow::Result<()> {
    let quoted = table.quoted_column_names();
    let columns = chunk.typed_columns()?;
    let arrays: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}[]", i + 6, array_type(c)))
        .collect();
    let on_conflict = if upsert {
        let updates: Vec<String> = quoted[1..]
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        format!(
            " ON CONFLICT ({}) DO UPDATE SET {}",
            quoted[0],
            updates.join(", ")
        )
    } else {
        String::new()
    };
    let sql = format!(
        "INSERT INTO {} ({}) SELECT u.*, $1, $2, $3, $4, $5 FROM UNNEST({}) AS u{on_conflict}",
        table.table.quoted(),
        quoted.join(", "),
        arrays.join(", "),
    );
    let mut query = sqlx::query(AssertSqlSafe(sql))
        .bind(&stamp.model_version)
        .bind(&stamp.run_id)
        .bind(stamp.window.start)
        .bind(stamp.window.end)
        .bind(stamp.scored_at);
    for column in columns {
        query = match column {
            ResultColumn::Float(values) => query.bind(values.iter().collect::<Vec<_>>()),
            ResultColumn::Integer(values) => query.bind(values.iter().collect::<Vec<_>>()),
            ResultColumn::Boolean(values) => query.bind(values.iter().collect::<Vec<_>>()),
            ResultColumn::Text(values) => query.bind(values.iter().collect::<Vec<_>>()),
        };
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

/// Whether no row of `table` can hold a key of `chunk`, asked inside the window's transaction
/// (so earlier chunks count). Integer keys: no key between the chunk's least and greatest, one
/// index probe. Text keys: no key equal to one of the chunk's, since the order of text
/// depends on the column's collation but equality of a primary key does not.
async fn keys_absent(
    tx: &mut Transaction<'static, Postgres>,
    table: &ResultsTable,
    chunk: &ScoredChunk,
) -> anyhow::Result<bool> {
    let keys = &chunk.frame.columns()[0];
    let (target, key) = (table.table.quoted(), table.key.quoted());
    let probe = match keys.dtype() {
        DataType::Int64 => {
            let keys = keys.i64()?;
            let (Some(least), Some(greatest)) = (keys.min(), keys.max()) else {
                return Ok(true);
            };
            sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT NOT EXISTS (SELECT 1 FROM {target} WHERE {key} BETWEEN $1 AND $2)"
            )))
            .bind(least)
            .bind(greatest)
        }
        _ => sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT NOT EXISTS (SELECT 1 FROM {target} WHERE {key} = ANY($1::text[]))"
        )))
        .bind(chunk.keys_as_text()),
    };
    probe
        .fetch_one(&mut **tx)
        .await
        .with_context(|| format!("looking up the chunk's keys in {}", table.table))
}

fn array_type(column: &ResultColumn<'_>) -> &'static str {
    match column {
        ResultColumn::Float(_) => "double precision",
        ResultColumn::Integer(_) => "bigint",
        ResultColumn::Boolean(_) => "boolean",
        ResultColumn::Text(_) => "text",
    }
}

/// What a claimer makes of the job's current holder.
enum Judged {
    /// No one holds the job.
    Free,
    /// Someone held it and is gone (lease lapsed, or session ended): take over this claim id.
    Gone(String),
    Alive(Holder),
}

impl PostgresBackend {
    /// End the window sessions of the holder this run just took the job over from. It lost its
    /// lease, so it is frozen or cut off; the server has not ended its sessions because they
    /// are waiting on the client (a statement mid-COPY is not subject to `statement_timeout`),
    /// and they hold locks this run's writes would wait on. Best effort: a role that may not
    /// signal them leaves them to the server's own timeouts.
    async fn end_sessions_of(&self, conn: &mut PgConnection, claim_id: &str) {
        let tag = format!("batchscore {claim_id}");
        let ended: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&tag)
        .fetch_one(conn)
        .await;
        match ended {
            Ok(0) => {}
            Ok(ended) => tracing::warn!(
                ended,
                replaced = claim_id,
                "ended the server sessions of the run whose claim lapsed"
            ),
            Err(err) => tracing::warn!(
                error = %err,
                replaced = claim_id,
                "could not end the sessions of the run whose claim lapsed; the server's timeouts will"
            ),
        }
    }

    /// Read the job's claim and judge its holder: gone when its lease lapsed by the server's
    /// clock, or when its claim's advisory lock is free (its session ended).
    async fn judge_holder(&self, conn: &mut PgConnection, job: &str) -> anyhow::Result<Judged> {
        type HolderRow = (String, String, i64, DateTime<Utc>, DateTime<Utc>, bool);
        let row: Option<HolderRow> = sqlx::query_as(
            "SELECT claim_id, host, pid, claimed_at, expires_at, expires_at <= clock_timestamp() \
             FROM batchscore_claims WHERE job = $1",
        )
        .bind(job)
        .fetch_optional(&mut *conn)
        .await
        .context("reading the job's claim")?;
        let Some((claim_id, host, pid, claimed_at, expires_at, lapsed)) = row else {
            return Ok(Judged::Free);
        };
        if lapsed {
            return Ok(Judged::Gone(claim_id));
        }
        let session_gone: bool = sqlx::query_scalar(TRY_LOCK_CLAIM)
            .bind(&claim_id)
            .fetch_one(&mut *conn)
            .await
            .context("checking the holder's session")?;
        if session_gone {
            sqlx::query(UNLOCK_CLAIM)
                .bind(&claim_id)
                .execute(&mut *conn)
                .await
                .context("checking the holder's session")?;
            return Ok(Judged::Gone(claim_id));
        }
        Ok(Judged::Alive(Holder {
            claim_id,
            host,
            pid,
            claimed_at,
            expires_at,
        }))
    }
}

/// Insert the ledger row, or update how it ended: the one statement for starting and finishing
/// a run.
async fn write_run<'e>(executor: impl sqlx::PgExecutor<'e>, run: &RunRecord) -> anyhow::Result<()> {
    upsert_run(executor, run, "").await
}

/// Record how a run ended unless its row says it ended already (see [`Backend::fail_run`]).
async fn write_run_if_running<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    run: &RunRecord,
) -> anyhow::Result<()> {
    upsert_run(executor, run, " WHERE batchscore_runs.status = 'running'").await
}

async fn upsert_run<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    run: &RunRecord,
    condition: &'static str,
) -> anyhow::Result<()> {
    let sql = format!(
        "INSERT INTO batchscore_runs (run_id, job, window_start, window_end, status, rows_read, \
         rows_written, model_sha256, started_at, finished_at, error, host, pid, rows_bad, \
         rows_quarantined, rows_skipped, bad_rows) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
         ON CONFLICT (run_id) DO UPDATE SET status = excluded.status, rows_read = excluded.rows_read, \
         rows_written = excluded.rows_written, finished_at = excluded.finished_at, error = excluded.error, \
         rows_bad = excluded.rows_bad, rows_quarantined = excluded.rows_quarantined, \
         rows_skipped = excluded.rows_skipped, bad_rows = excluded.bad_rows{condition}"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(&run.run_id)
        .bind(&run.job)
        .bind(run.window_start)
        .bind(run.window_end)
        .bind(run.status.as_str())
        .bind(run.rows_read)
        .bind(run.rows_written)
        .bind(&run.model_sha256)
        .bind(run.started_at)
        .bind(run.finished_at)
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

fn run_from_row(row: &PgRow) -> anyhow::Result<RunRecord> {
    let status: String = row.try_get("status")?;
    Ok(RunRecord {
        run_id: row.try_get("run_id")?,
        job: row.try_get("job")?,
        window_start: row.try_get::<DateTime<Utc>, _>("window_start")?,
        window_end: row.try_get("window_end")?,
        status: RunStatus::parse(&status)
            .with_context(|| format!("unknown run status `{status}`"))?,
        rows_read: row.try_get("rows_read")?,
        rows_written: row.try_get("rows_written")?,
        rows_bad: row.try_get("rows_bad")?,
        rows_quarantined: row.try_get("rows_quarantined")?,
        rows_skipped: row.try_get("rows_skipped")?,
        bad_rows: row.try_get("bad_rows")?,
        model_sha256: row.try_get("model_sha256")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        error: row.try_get("error")?,
        host: row.try_get("host")?,
        pid: row.try_get("pid")?,
    })
}

/// Decode one source row: the server already cast the key and every feature.
fn decode_tuple(
    tuple: &Tuple<'_>,
    spec: &JobSpec,
    shape: &SourceShape,
    chunk: &mut ChunkBuilder,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        tuple.len() == shape.features.len() + 1,
        "the window's COPY sent {} fields per row, not {}",
        tuple.len(),
        shape.features.len() + 1
    );
    let null_key = || {
        anyhow::anyhow!(
            "a row of the window has NULL in key column `{}`: keys must be unique and not NULL",
            spec.source.key
        )
    };
    match shape.key {
        KeyKind::Integer => chunk.push_int_key(tuple.int8(0)?.ok_or_else(null_key)?),
        KeyKind::Text => chunk.push_text_key(tuple.text(0)?.ok_or_else(null_key)?),
    }
    for (feature, (kind, cell)) in shape.features.iter().zip(&shape.cells).enumerate() {
        let i = feature + 1;
        let value = match (tuple.raw(i), wire(kind, *cell)) {
            (None, _) => Cell::Null,
            (Some(_), Wire::Float8) => Cell::Float(tuple.float8(i)?.expect("not NULL")),
            (Some(_), Wire::Int8) => Cell::Integer(tuple.int8(i)?.expect("not NULL")),
            (Some(_), Wire::Bool) => Cell::Boolean(tuple.boolean(i)?.expect("not NULL")),
            (Some(bytes), Wire::Text) => Cell::Text(bytes),
        };
        chunk.push(feature, value);
    }
    chunk.end_row();
    Ok(())
}
