//! Reading a PostgreSQL source: describing it, counting a window, and streaming it out with a
//! binary `COPY (SELECT …) TO STDOUT`, every feature cast by the server to the type its cell
//! needs, parsed in `copy.rs`.

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use sqlx::{AssertSqlSafe, Column as _, SqlSafeStr, TypeInfo};
use tokio::sync::mpsc;

use super::claim::session_tag;
use super::copy::{Tuple, TupleReader};
use super::{PostgresBackend, is_transient, key_type};
use crate::claim::Claim;
use crate::plan::Window;
use crate::source::{Cell, CellType, ChunkBuilder, ColumnKind, KeyKind, SourceChunk, SourceShape};
use crate::spec::{JobSpec, SourceFrom};

impl PostgresBackend {
    pub(super) async fn describe(
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

    pub(super) async fn count(&self, spec: &JobSpec, window: Window) -> anyhow::Result<i64> {
        let sql = window_select(spec, "count(*)", "$1", "$2");
        sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(window.start)
            .bind(window.end)
            .fetch_one(&self.pool)
            .await
            .context("counting the window's rows")
    }

    pub(super) async fn read(
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
            .bind(session_tag(&claim.claim_id))
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
