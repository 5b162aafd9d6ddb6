//! Writing a PostgreSQL window: the [`WindowTx`]. Results go one statement per batch of scored
//! chunks: binary `COPY … FROM STDIN` when an index probe shows no key of the batch can be in
//! the results table yet, `INSERT … ON CONFLICT` through `UNNEST` arrays when some can (see
//! `upsert_results`).

use anyhow::Context;
use polars::prelude::*;
use sqlx::{AssertSqlSafe, Postgres, Transaction};

use super::PostgresBackend;
use super::claim::session_tag;
use super::copy::TupleWriter;
use super::key_type;
use crate::bad_row::BadRow;
use crate::claim::Claim;
use crate::db::{ResultsSink, WindowTx};
use crate::ident::TableName;
use crate::shard::Shard;
use crate::sink::{
    ResultColumn, ResultType, ResultsTable, RunStamp, ScoredChunk, StampValue, Written,
};
use crate::spec::MetaKind;

/// A PostgreSQL window's transaction, with its statement and idle timeouts set to the lease.
pub struct PgTx(pub(super) Transaction<'static, Postgres>);

fn pg_type(result: ResultType) -> &'static str {
    match result {
        ResultType::Float => "double precision",
        ResultType::Integer => "bigint",
        ResultType::Text => "text",
        ResultType::Boolean => "boolean",
    }
}

impl ResultsSink for PostgresBackend {
    type Tx = PgTx;

    async fn begin(&self, claim: &Claim) -> anyhow::Result<PgTx> {
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
        .bind(session_tag(&claim.claim_id))
        .execute(&mut *tx)
        .await
        .context("opening the window's transaction")?;
        Ok(PgTx(tx))
    }

    async fn table_columns(
        &self,
        table: &TableName,
    ) -> anyhow::Result<Option<Vec<(String, String)>>> {
        let names = declared_columns(&self.pool, table)
            .await
            .with_context(|| format!("describing results table {table}"))?;
        Ok((!names.is_empty()).then_some(names))
    }
}

impl WindowTx for PgTx {
    type Db = Postgres;

    fn tx(&mut self) -> &mut Transaction<'static, Postgres> {
        &mut self.0
    }

    fn into_tx(self) -> Transaction<'static, Postgres> {
        self.0
    }

    fn results_columns(table: &ResultsTable) -> Vec<String> {
        created_columns(table)
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
            .collect()
    }

    /// By the type's name as `format_type` gives it (`double precision`, `numeric(10,2)`,
    /// `character varying(64)`, `timestamp with time zone`): numbers into numeric and text
    /// types (a float not into an integer column, whose cast would round it), booleans also
    /// into integers, times into timestamps and text. Anything else (a date, json, uuid, a
    /// domain or an enum) is refused.
    fn holds(declared: &str, value: Written) -> bool {
        let declared = declared.to_ascii_lowercase();
        let base = declared.split('(').next().unwrap_or_default().trim();
        let integer = matches!(base, "smallint" | "integer" | "bigint");
        let decimal = matches!(base, "real" | "double precision" | "numeric");
        let text = matches!(base, "text" | "character varying" | "character" | "name");
        match value {
            Written::Integer => integer || decimal || text,
            Written::Float => decimal || text,
            Written::Boolean => base == "boolean" || integer || text,
            Written::Text => text,
            Written::Time => base.starts_with("timestamp") || text,
        }
    }

    /// ROW EXCLUSIVE, the lock its writes take anyway, taken first: an `ALTER TABLE` waits for
    /// the window's commit, so the columns described here are the ones written.
    async fn pin_results_table(
        &mut self,
        table: &TableName,
    ) -> anyhow::Result<Option<Vec<(String, String)>>> {
        // A DO block takes no parameters; the name is a checked identifier, quoted.
        let quoted = table.quoted();
        let lock = format!(
            "DO $$ BEGIN IF to_regclass('{}') IS NOT NULL THEN \
             LOCK TABLE {quoted} IN ROW EXCLUSIVE MODE; END IF; END $$",
            quoted.replace('\'', "''")
        );
        sqlx::raw_sql(AssertSqlSafe(lock))
            .execute(&mut *self.0)
            .await
            .with_context(|| format!("locking results table {table}"))?;
        let columns = declared_columns(&mut *self.0, table)
            .await
            .with_context(|| format!("describing results table {table}"))?;
        Ok((!columns.is_empty()).then_some(columns))
    }

    /// Two windows creating the same table at once (the shards of a new job): the second would
    /// wait on the first's catalog rows, then fail on them. A transaction-scoped advisory lock
    /// on the table's name makes it wait for the first's commit instead, then find the table.
    async fn before_create(&mut self, table: &ResultsTable) -> anyhow::Result<()> {
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended('batchscore results ' || current_schema() || ' ' || $1, 0))",
        )
        .bind(table.table.to_string())
        .execute(&mut *self.0)
        .await
        .with_context(|| format!("waiting for another run creating {}", table.table))?;
        Ok(())
    }

    /// Three ways in, cheapest first, measured on 1M rows of the bench's shape (server time):
    /// binary COPY 1.4 s, `INSERT … SELECT` 1.5 s (2.2 s from `UNNEST` arrays), and
    /// `INSERT … ON CONFLICT` 3.0 s, whose speculative insertion checks and logs every row twice.
    /// The first two cannot replace a row, so they are used only when no key of the chunk can
    /// be in the table yet; a key that another writer commits meanwhile makes them fail, and
    /// the window roll back whole.
    async fn upsert_results(
        &mut self,
        table: &ResultsTable,
        stamp: &RunStamp,
        chunk: &ScoredChunk,
        shard: Shard,
    ) -> anyhow::Result<()> {
        let fresh = keys_absent(&mut self.0, table, chunk, shard).await?;
        let written = if fresh && binary_copy_fits(table) {
            copy_in(&mut self.0, table, stamp, chunk).await
        } else {
            insert(&mut self.0, table, stamp, chunk, !fresh).await
        };
        written.with_context(|| format!("writing results to {}", table.table))
    }

    async fn quarantine(
        &mut self,
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
        .execute(&mut *self.0)
        .await
        .context("writing to batchscore_quarantine")?;
        Ok(())
    }

    async fn release_quarantined(&mut self, job: &str, keys: Vec<String>) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM batchscore_quarantine WHERE job = $1 AND key = ANY($2)")
            .bind(job)
            .bind(keys)
            .execute(&mut *self.0)
            .await
            .context("releasing scored rows from batchscore_quarantine")?;
        Ok(())
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
    columns.extend(
        table
            .lineage
            .columns()
            .iter()
            .map(|(name, kind)| match kind {
                MetaKind::Text => (*name, "text"),
                MetaKind::Time => (*name, TIMESTAMPTZ),
                MetaKind::Integer => (*name, "bigint"),
            }),
    );
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
    // Per row: a length and 8 bytes per number, and with full lineage the sha256 and the run
    // id's UUID.
    let piece = PIECE_ROWS.min(chunk.rows()) * (quoted.len() * 12 + 110);
    let mut tuples = TupleWriter::with_capacity(piece);
    let stamp_values = stamp.values(table.lineage);
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
        for value in &stamp_values {
            match *value {
                StampValue::Text(text) => tuples.text(text),
                StampValue::Time(time) => tuples.timestamptz(time),
                StampValue::Integer(number) => tuples.int8(number),
            }
        }
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
    let stamp_values = stamp.values(table.lineage);
    let arrays: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let param = stamp_values.len() + 1 + i;
            format!("${param}::{}[]", array_type(c))
        })
        .collect();
    let stamp_placeholders: Vec<String> =
        (1..=stamp_values.len()).map(|i| format!("${i}")).collect();
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
        "INSERT INTO {} ({}) SELECT u.*, {} FROM UNNEST({}) AS u{on_conflict}",
        table.table.quoted(),
        quoted.join(", "),
        stamp_placeholders.join(", "),
        arrays.join(", "),
    );
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for value in stamp_values {
        query = match value {
            StampValue::Text(text) => query.bind(text.to_owned()),
            StampValue::Time(time) => query.bind(time),
            StampValue::Integer(number) => query.bind(number),
        };
    }
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
    shard: Shard,
) -> anyhow::Result<bool> {
    let keys = &chunk.frame.columns()[0];
    let (target, key) = (table.table.quoted(), table.key.quoted());
    let probe = match keys.dtype() {
        DataType::Int64 => {
            let keys = keys.i64()?;
            let (Some(least), Some(greatest)) = (keys.min(), keys.max()) else {
                return Ok(true);
            };
            // A shard's chunk spans the keys of every shard: only its own can conflict, and the
            // other shards' rows in the range must not send it down the slow path.
            let own = shard
                .predicate(&key, table.key_kind, &super::read::KEY_SQL)
                .map(|c| format!(" AND {c}"))
                .unwrap_or_default();
            sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT NOT EXISTS (SELECT 1 FROM {target} WHERE {key} BETWEEN $1 AND $2{own})"
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

/// A table's columns and their declared types (`format_type`'s names), in order (none: there
/// is no such table).
pub(super) async fn declared_columns<'c>(
    executor: impl sqlx::Executor<'c, Database = Postgres>,
    table: &TableName,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
         WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
    )
    .bind(table.quoted())
    .fetch_all(executor)
    .await
}
