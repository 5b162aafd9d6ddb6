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
use super::{Backend, CONNECT_TIMEOUT};
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
}

impl PostgresBackend {
    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        let options = PgConnectOptions::from_str(url)?
            .application_name("batchscore")
            // Columns of type `timestamp` (without time zone) are read as UTC.
            .options([("TimeZone", "UTC")])
            // Streaming a window is a long statement by design, not a slow one worth a warning.
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        Ok(PostgresBackend {
            pool,
            options: Arc::new(options),
        })
    }
}

/// The job's advisory lock. Advisory locks are per database, so the key hashes the schema too:
/// like the claims table, a job's lock belongs to the schema batchscore's tables live in.
const LOCK_JOB: &str = "SELECT pg_try_advisory_lock(hashtextextended('batchscore job ' || current_schema() || '.' || $1, 0))";
const UNLOCK_JOB: &str = "SELECT pg_advisory_unlock(hashtextextended('batchscore job ' || current_schema() || '.' || $1, 0))";

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

    async fn describe_source(&self, spec: &JobSpec) -> Result<Vec<(String, ColumnKind)>, String> {
        let sql = format!("SELECT * FROM {} LIMIT 0", from_clause(spec, "$1", "$2"));
        let described = sqlx::Executor::describe(&self.pool, AssertSqlSafe(sql).into_sql_str())
            .await
            .map_err(|e| match &spec.source.from {
                SourceFrom::Table(table) => format!("cannot read source table {table}: {e}"),
                SourceFrom::Query(_) => format!("source.query does not run: {e}"),
            })?;
        Ok(described
            .columns()
            .iter()
            .map(|c| (c.name().to_owned(), classify(c.type_info().name())))
            .collect())
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
                    // The consumer stopped (it reports why). Close the connection rather than
                    // return it mid-COPY, which would make its next user drain the window.
                    drop(pieces);
                    let _ = conn.close().await;
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

    async fn begin(&self) -> anyhow::Result<Self::Tx> {
        self.pool
            .begin()
            .await
            .context("opening the window's transaction")
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

    /// A session advisory lock, on a connection of its own that lives as long as the claim:
    /// if the process dies the server closes the connection and the lock goes with it. The
    /// claim row beside it names the holder for whoever finds the job busy.
    async fn claim(&self, claim: &Claim) -> anyhow::Result<ClaimOutcome<PgConnection>> {
        let mut conn = PgConnection::connect_with(&self.options)
            .await
            .context("opening the claim's connection")?;
        // The holder writes its claim row just after taking the lock and deletes it just before
        // letting go: when the lock is taken but no row names a holder, it is starting or
        // finishing, so look again, then try the lock again.
        let mut attempts = 0;
        loop {
            let locked: bool = sqlx::query_scalar(LOCK_JOB)
                .bind(&claim.job)
                .fetch_one(&mut conn)
                .await
                .context("taking the job's advisory lock")?;
            if locked {
                break;
            }
            attempts += 1;
            if let Some(holder) = self.read_holder(&claim.job).await? {
                let _ = conn.close().await;
                return Ok(ClaimOutcome::Busy(Some(holder)));
            }
            if attempts == 25 {
                let _ = conn.close().await;
                return Ok(ClaimOutcome::Busy(None));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        sqlx::query(
            "INSERT INTO batchscore_claims (job, claim_id, host, pid, claimed_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (job) DO UPDATE SET claim_id = excluded.claim_id, host = excluded.host, \
             pid = excluded.pid, claimed_at = excluded.claimed_at, expires_at = excluded.expires_at",
        )
        .bind(&claim.job)
        .bind(&claim.claim_id)
        .bind(&claim.host)
        .bind(claim.pid)
        .bind(claim.claimed_at)
        .bind(claim.expires_at())
        .execute(&mut conn)
        .await
        .context("recording the claim")?;
        Ok(ClaimOutcome::Acquired(conn))
    }

    async fn renew_claim(&self, claim: &Claim) -> anyhow::Result<bool> {
        let done = sqlx::query(
            "UPDATE batchscore_claims SET expires_at = $3 WHERE job = $1 AND claim_id = $2",
        )
        .bind(&claim.job)
        .bind(&claim.claim_id)
        .bind(claim.expires_at())
        .execute(&self.pool)
        .await
        .context("renewing the claim")?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_claim(&self, mut lock: PgConnection, claim: &Claim) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM batchscore_claims WHERE job = $1 AND claim_id = $2")
            .bind(&claim.job)
            .bind(&claim.claim_id)
            .execute(&mut lock)
            .await
            .context("releasing the claim")?;
        sqlx::query(UNLOCK_JOB)
            .bind(&claim.job)
            .execute(&mut lock)
            .await
            .context("releasing the job's advisory lock")?;
        lock.close().await.context("closing the claim's connection")
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

impl PostgresBackend {
    async fn read_holder(&self, job: &str) -> anyhow::Result<Option<Holder>> {
        type HolderRow = (String, String, i64, DateTime<Utc>, DateTime<Utc>);
        let row: Option<HolderRow> = sqlx::query_as(
            "SELECT claim_id, host, pid, claimed_at, expires_at FROM batchscore_claims WHERE job = $1",
        )
        .bind(job)
        .fetch_optional(&self.pool)
        .await
        .context("reading the job's claim")?;
        Ok(
            row.map(|(claim_id, host, pid, claimed_at, expires_at)| Holder {
                claim_id,
                host,
                pid,
                claimed_at,
                expires_at,
            }),
        )
    }
}

/// Insert the ledger row, or update how it ended: the one statement for starting, finishing
/// and failing a run.
async fn write_run<'e>(executor: impl sqlx::PgExecutor<'e>, run: &RunRecord) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO batchscore_runs (run_id, job, window_start, window_end, status, rows_read, \
         rows_written, model_sha256, started_at, finished_at, error, host, pid, rows_bad, \
         rows_quarantined, rows_skipped, bad_rows) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
         ON CONFLICT (run_id) DO UPDATE SET status = excluded.status, rows_read = excluded.rows_read, \
         rows_written = excluded.rows_written, finished_at = excluded.finished_at, error = excluded.error, \
         rows_bad = excluded.rows_bad, rows_quarantined = excluded.rows_quarantined, \
         rows_skipped = excluded.rows_skipped, bad_rows = excluded.bad_rows",
    )
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
