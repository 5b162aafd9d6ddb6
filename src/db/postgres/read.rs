//! Reading a PostgreSQL source: describing it, counting a window, and streaming it out with a
//! binary `COPY (SELECT …) TO STDOUT`, every feature cast by the server to the type its cell
//! needs, parsed in `copy.rs`.

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use sqlx::AssertSqlSafe;
use tokio::sync::mpsc;

use super::claim::session_tag;
use super::copy::{Tuple, TupleReader};
use super::{PostgresBackend, is_transient, key_type};
use crate::claim::Claim;
use crate::db::source::{self, SourceHints, SourceReader};
use crate::plan::Window;
use crate::shard::{KeySql, Shard};
use crate::source::{
    Cell, CellType, ChunkBuilder, ColumnKind, KeyKind, SourceChunk, SourceColumns, SourceShape,
};
use crate::spec::{JobSpec, SourceFrom};

impl SourceReader for PostgresBackend {
    async fn describe_source(&self, spec: &JobSpec) -> anyhow::Result<SourceColumns> {
        let sql = format!("SELECT * FROM {} LIMIT 0", from_clause(spec, "$1", "$2"));
        let described = source::describe_select(&self.pool, sql, classify, is_transient).await?;
        described.map_err(|e| {
            let problem = match &spec.source.from {
                SourceFrom::Table(table) => format!("cannot read source table {table}: {e}"),
                SourceFrom::Query(_) => format!("source.query does not run: {e}"),
            };
            source::unusable(spec, problem)
        })
    }

    fn timestamp_ok(kind: &ColumnKind) -> bool {
        matches!(kind, ColumnKind::Timestamp)
    }

    async fn window_notes(&self, spec: &JobSpec) -> anyhow::Result<Vec<String>> {
        let ts = &spec.source.timestamp;
        let mut notes = Vec::new();
        if let SourceFrom::Query(_) = &spec.source.from {
            // How the server would read one window, were it free to pick any index: with
            // sequential scans priced out, one remains only where no index can serve.
            let mut tx = self
                .pool
                .begin()
                .await
                .context("planning the window's query")?;
            sqlx::query("SET LOCAL enable_seqscan = off")
                .execute(&mut *tx)
                .await
                .context("planning the window's query")?;
            let sql = format!(
                "EXPLAIN (FORMAT JSON) {}",
                window_select(spec, "*", "$1", "$2", None)
            );
            let plan: serde_json::Value = sqlx::query_scalar(AssertSqlSafe(sql))
                .bind(chrono::Utc::now() - chrono::TimeDelta::hours(1))
                .bind(chrono::Utc::now())
                .fetch_one(&mut *tx)
                .await
                .context("planning the window's query")?;
            let mut whole = Vec::new();
            whole_scans(&plan, &mut whole);
            notes.extend(
                whole
                    .iter()
                    .map(|table| crate::db::source::query_scan_note(spec, table)),
            );
        }
        if let SourceFrom::Table(table) = &spec.source.from {
            // Tables, partitioned tables and materialized views can have indexes; a view uses
            // those of its tables, which batchscore cannot see from here.
            let indexed: Option<bool> = sqlx::query_scalar(
                "SELECT CASE WHEN c.relkind IN ('r', 'p', 'm') THEN EXISTS (\
                   SELECT 1 FROM pg_index i JOIN pg_attribute a \
                   ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
                   WHERE i.indrelid = c.oid AND a.attname = $2 AND i.indpred IS NULL AND i.indisvalid) END \
                 FROM pg_class c WHERE c.oid = to_regclass($1)",
            )
            .bind(table.quoted())
            .bind(ts.as_str())
            .fetch_optional(&self.pool)
            .await
            .with_context(|| format!("listing the indexes of {table}"))?
            .flatten();
            if indexed == Some(false) {
                let create = format!("CREATE INDEX ON {} ({});", table.quoted(), ts.quoted());
                notes.push(crate::db::source::missing_index_note(
                    table,
                    ts.as_str(),
                    &create,
                ));
            }
        }
        Ok(notes)
    }

    async fn source_hints(
        &self,
        spec: &JobSpec,
        columns: &SourceColumns,
    ) -> anyhow::Result<SourceHints> {
        let mut hints = SourceHints::default();
        let mut indexed: Vec<String> = Vec::new();
        if let SourceFrom::Table(table) = &spec.source.from {
            let keys: Vec<String> = sqlx::query_scalar(
                "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a \
                 ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indrelid = to_regclass($1) AND i.indisprimary",
            )
            .bind(table.quoted())
            .fetch_all(&self.pool)
            .await
            .with_context(|| format!("reading the primary key of {table}"))?;
            hints.primary_key = (keys.len() == 1).then(|| keys[0].clone());
            indexed = sqlx::query_scalar(
                "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a \
                 ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
                 WHERE i.indrelid = to_regclass($1) AND i.indpred IS NULL AND i.indisvalid",
            )
            .bind(table.quoted())
            .fetch_all(&self.pool)
            .await
            .with_context(|| format!("listing the indexes of {table}"))?;
        }
        hints.times = crate::db::source::indexed_times(columns, &indexed);
        Ok(hints)
    }

    async fn count_window(
        &self,
        spec: &JobSpec,
        shape: &SourceShape,
        window: Window,
        shard: Shard,
        at_most: Option<u32>,
    ) -> anyhow::Result<i64> {
        let condition = shard_condition(spec, shape, shard);
        let select = |what: &str| window_select(spec, what, "$1", "$2", condition.clone());
        let sql = crate::db::source::counting(select, at_most);
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
        shard: Shard,
        claim: &Claim,
        out: mpsc::Sender<SourceChunk>,
    ) -> anyhow::Result<()> {
        let sql = copy_window(spec, shape, window, shard);
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
        // No parallel plan: its workers' rows arrive interleaved, so the chunks' key ranges
        // overlap and the writer's fast path (see `keys_absent` in `write`) is lost; and the
        // client, not the scan, sets the pace. A shard's condition on the key, which the planner
        // takes for very selective, would otherwise make most shard reads parallel.
        // And no wait for a lock (an application's ALTER TABLE or LOCK TABLE, a query of the
        // job's that locks) outlasts the lease: the keeper's heartbeat keeps the claim alive
        // meanwhile, so without it a blocked read waited forever.
        sqlx::query(
            "SELECT set_config('application_name', $1, false), \
             set_config('max_parallel_workers_per_gather', '0', false), \
             set_config('lock_timeout', $2, false)",
        )
        .bind(session_tag(&claim.claim_id))
        .bind(claim.lease().as_millis().max(1).to_string())
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

/// The binary `COPY` of the shard's rows of the window: the key, then each feature cast by the
/// server to the type its cell needs.
fn copy_window(spec: &JobSpec, shape: &SourceShape, window: Window, shard: Shard) -> String {
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
        shard_condition(spec, shape, shard),
    );
    format!("COPY ({select}) TO STDOUT (FORMAT binary)")
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

/// `SELECT columns` of the window's rows, and only those of one shard with its `condition`.
fn window_select(
    spec: &JobSpec,
    columns: &str,
    start: &str,
    end: &str,
    condition: Option<String>,
) -> String {
    let ts = spec.source.timestamp.quoted();
    let shard = condition.map(|c| format!(" AND {c}")).unwrap_or_default();
    format!(
        "SELECT {columns} FROM {} WHERE {ts} >= {start} AND {ts} < {end}{shard}",
        from_clause(spec, start, end)
    )
}

/// The shard's condition on the key (see [`Shard::predicate`]); text keys hash with `md5()`,
/// whose first 32 bits are the hash SQLite computes with its registered function.
fn shard_condition(spec: &JobSpec, shape: &SourceShape, shard: Shard) -> Option<String> {
    shard.predicate(&spec.source.key.quoted(), shape.key, &KEY_SQL)
}

/// A key as PostgreSQL hashes it for a shard: the first 32 bits of `md5()` of its text.
pub(super) const KEY_SQL: KeySql = KeySql {
    integer: |key| format!("CAST({key} AS BIGINT)"),
    text_hash: |key| format!("('x' || left(md5(CAST({key} AS TEXT)), 8))::bit(32)::bigint"),
};

/// A time as a `timestamptz` literal (made from a `DateTime`, so nothing to escape).
fn timestamptz_literal(t: DateTime<Utc>) -> String {
    format!(
        "'{}'::timestamptz",
        t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    )
}

/// The tables a plan (`EXPLAIN (FORMAT JSON)`) reads whole: sequential scans, and index scans
/// without an index condition (a bitmap heap scan always has one, in its bitmap index scan).
fn whole_scans(plan: &serde_json::Value, found: &mut Vec<String>) {
    match plan {
        serde_json::Value::Array(items) => items.iter().for_each(|item| whole_scans(item, found)),
        serde_json::Value::Object(node) => {
            let kind = node.get("Node Type").and_then(|t| t.as_str());
            let whole = match kind {
                Some("Seq Scan") => true,
                Some("Index Scan" | "Index Only Scan") => !node.contains_key("Index Cond"),
                _ => false,
            };
            if whole && let Some(table) = node.get("Relation Name").and_then(|t| t.as_str()) {
                found.push(table.to_owned());
            }
            node.values().for_each(|value| whole_scans(value, found));
        }
        _ => {}
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

/// [`crate::db::Backend::stream_fields`] on PostgreSQL: the statement as a binary `COPY`, its
/// parameters written in as literals (COPY takes none), each field borrowed from the received
/// bytes. The connection is closed, not pooled, if the stream stops early.
pub(super) async fn stream_fields(
    pool: &sqlx::PgPool,
    sql: String,
    params: Vec<crate::db::dialect::Param>,
    kinds: &[crate::db::FieldKind],
    each: &mut (dyn FnMut(&[crate::db::Field<'_>]) -> anyhow::Result<()> + Send),
) -> anyhow::Result<()> {
    use crate::db::dialect::Param;
    use crate::db::{Field, FieldKind};
    // The parameters are the trailing `IN (…)` list's (what `stream_fields` is used for): only
    // there are placeholders replaced, never inside a job's own labels query before it.
    let at = match params.is_empty() {
        true => sql.len(),
        false => sql
            .rfind(" IN (")
            .context("a COPY's parameters must be its trailing IN list")?,
    };
    let (head, mut tail) = (&sql[..at], sql[at..].to_owned());
    // From the last, so `$1` is not replaced inside `$10`.
    for (i, param) in params.iter().enumerate().rev() {
        let literal = match param {
            Param::Text(Some(text)) => format!("'{}'", text.replace('\'', "''")),
            Param::Int(Some(value)) => value.to_string(),
            Param::Float(Some(value)) if value.is_finite() => format!("{value:?}"),
            other => anyhow::bail!("no literal for {other:?} in a COPY"),
        };
        tail = tail.replace(&format!("${}", i + 1), &literal);
    }
    let sql = format!("{head}{tail}");
    let mut conn = pool.acquire().await?;
    let copied = async {
        let mut pieces = conn
            .copy_out_raw(&format!("COPY ({sql}) TO STDOUT (FORMAT binary)"))
            .await?;
        let mut tuples = TupleReader::default();
        while let Some(piece) = pieces.try_next().await? {
            tuples.feed(&piece, |tuple| {
                let mut fields = [Field::Null; crate::db::MAX_FIELDS];
                for (i, kind) in kinds.iter().enumerate() {
                    fields[i] = match kind {
                        FieldKind::Int => tuple.int8(i)?.map_or(Field::Null, Field::Int),
                        FieldKind::Float => tuple.float8(i)?.map_or(Field::Null, Field::Float),
                        FieldKind::Text => tuple.text(i)?.map_or(Field::Null, Field::Text),
                    };
                }
                each(&fields[..kinds.len()])
            })?;
        }
        tuples.finish()
    }
    .await;
    if copied.is_err() {
        // A COPY cut short leaves the connection mid-protocol: never hand it back.
        drop(conn.detach());
    }
    copied
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use sqlx::Connection;

    /// A connection on a schema of its own on the test server; `None` (skipped) when the server
    /// is unreachable, except under CI, where that is a failure.
    async fn connect() -> Option<(sqlx::PgConnection, String)> {
        let url = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let mut conn = match sqlx::PgConnection::connect(&url).await {
            Ok(conn) => conn,
            Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("skipping: PostgreSQL at {url} unreachable ({e})");
                return None;
            }
            Err(e) => panic!("PostgreSQL at {url} unreachable under CI: {e}"),
        };
        let schema = format!("bst_{}", uuid::Uuid::new_v4().simple());
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE SCHEMA {schema}; SET search_path = {schema}"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        Some((conn, schema))
    }

    /// The window's SELECT, as the binary COPY and `--dry-run` run it, is answered through the
    /// index on the timestamp column, for both timestamp types: 200,000 rows over 60 days,
    /// a 30-minute window.
    #[tokio::test]
    async fn a_table_window_is_read_through_the_timestamp_index() {
        let Some((mut conn, schema)) = connect().await else {
            return;
        };
        for ty in ["timestamptz", "timestamp"] {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP TABLE IF EXISTS readings; \
                 CREATE TABLE readings (id bigint PRIMARY KEY, ts {ty} NOT NULL, f double precision); \
                 INSERT INTO readings SELECT i, '2026-09-01'::timestamptz + i * interval '25.92 seconds', i \
                   FROM generate_series(1, 200000) AS i; \
                 CREATE INDEX readings_ts ON readings (ts); ANALYZE readings"
            )))
            .execute(&mut conn)
            .await
            .unwrap();
            let spec = crate::spec::parse_job(
                "job",
                "schedule = \"*/30 * * * *\"\n[source]\ntable = \"readings\"\nkey = \"id\"\n\
                 timestamp = \"ts\"\nfeatures = [\"f\"]\n[window]\nsize = \"30m\"\n\
                 [model]\npath = \"m.onnx\"\n[outputs]\nscore = \"variable\"\n[sink]\ntable = \"out\"\n",
                std::path::Path::new("/"),
            )
            .unwrap();
            let start = Utc.with_ymd_and_hms(2026, 10, 1, 12, 0, 0).unwrap();
            let end = start + chrono::TimeDelta::minutes(30);
            let copied = window_select(
                &spec,
                "id, CAST(f AS double precision)",
                &timestamptz_literal(start),
                &timestamptz_literal(end),
                None,
            );
            let plan: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!("EXPLAIN {copied}")))
                .fetch_all(&mut conn)
                .await
                .unwrap();
            let plan = plan.join("\n");
            assert!(
                plan.contains("Index") && plan.contains("readings_ts"),
                "{ty}:\n{plan}"
            );
            assert!(!plan.contains("Seq Scan"), "{ty}:\n{plan}");
            let counted = window_select(&spec, "count(*)", "$1", "$2", None);
            let plan: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!("EXPLAIN {counted}")))
                .bind(start)
                .bind(end)
                .fetch_all(&mut conn)
                .await
                .unwrap();
            let plan = plan.join("\n");
            assert!(
                plan.contains("readings_ts") && !plan.contains("Seq Scan"),
                "{ty}:\n{plan}"
            );
        }
        sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}
