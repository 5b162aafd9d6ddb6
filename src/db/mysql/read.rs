//! Reading a MySQL or MariaDB source: describing it, counting and streaming a window's rows.
//!
//! sqlx reads a result unbuffered, row by row off the socket, so a window streams in bounded
//! memory; the reader's connection is closed after the window rather than returned to the pool
//! (a half-read result would otherwise be drained by the connection's next user). The window's
//! bounds go into the SQL as `DATETIME` literals (made from a `DateTime`, so nothing to escape),
//! so a job's query may use `:window_start` and `:window_end` any number of times.

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use sqlx::mysql::MySqlRow;
use sqlx::{AssertSqlSafe, Column as _, Row, TypeInfo};
use tokio::sync::mpsc;

use super::MySqlBackend;
use crate::claim::Claim;
use crate::db::source::{self, SourceHints, SourceReader};
use crate::ident::TableName;
use crate::plan::Window;
use crate::shard::{KeySql, Shard};
use crate::source::{
    Cell, ChunkBuilder, ColumnKind, KeyKind, SourceChunk, SourceColumns, SourceShape,
};
use crate::spec::{JobSpec, SourceFrom};

/// A key as MySQL hashes it for a shard: the first 32 bits of `MD5()` of its UTF-8 text, the
/// value the other databases compute.
pub(super) const KEY_SQL: KeySql = KeySql {
    integer: |key| format!("CAST({key} AS SIGNED)"),
    text_hash: |key| {
        format!("CAST(CONV(LEFT(MD5(CONVERT({key} USING utf8mb4)), 8), 16, 10) AS UNSIGNED)")
    },
};

impl SourceReader for MySqlBackend {
    async fn describe_source(&self, spec: &JobSpec) -> anyhow::Result<SourceColumns> {
        match &spec.source.from {
            SourceFrom::Table(table) => {
                let declared = declared_columns(&self.pool, table).await.map(|rows| {
                    rows.into_iter()
                        .map(|(name, data_type, column_type)| {
                            (name, classify_declared(&data_type, &column_type))
                        })
                        .collect()
                });
                source::described_table(spec, table, declared, super::is_transient)
            }
            SourceFrom::Query(_) => {
                let now = Utc::now();
                let sql = format!("SELECT * FROM {} LIMIT 0", from_clause(spec, now, now));
                source::describe_select(&self.pool, sql, classify_name, super::is_transient)
                    .await?
                    .map_err(|e| source::unusable(spec, format!("source.query does not run: {e}")))
            }
        }
    }

    fn timestamp_ok(kind: &ColumnKind) -> bool {
        matches!(kind, ColumnKind::Timestamp)
    }

    async fn window_notes(&self, spec: &JobSpec) -> anyhow::Result<Vec<String>> {
        let ts = &spec.source.timestamp;
        let mut notes = Vec::new();
        match &spec.source.from {
            SourceFrom::Table(table) => {
                if !indexed_first(&self.pool, table)
                    .await?
                    .contains(&ts.as_str().to_owned())
                {
                    let create = format!(
                        "CREATE INDEX `{}_{}` ON {} ({});",
                        table.name,
                        ts,
                        table.backticked(),
                        ts.backticked()
                    );
                    notes.push(crate::db::source::missing_index_note(
                        table,
                        ts.as_str(),
                        &create,
                    ));
                }
            }
            SourceFrom::Query(_) => {
                // Ask the server how it would read one window: a table read whole (`ALL`, or
                // `index`: every entry of an index) is read whole for every window.
                let now = Utc::now();
                let sql = format!(
                    "EXPLAIN FORMAT=JSON SELECT * FROM {} WHERE {}",
                    from_clause(spec, now - chrono::TimeDelta::hours(1), now),
                    window_predicate(spec, now - chrono::TimeDelta::hours(1), now)
                );
                let plan: String = sqlx::query_scalar(AssertSqlSafe(sql))
                    .fetch_one(&self.pool)
                    .await
                    .context("planning the window's query")?;
                let plan: serde_json::Value =
                    serde_json::from_str(&plan).context("reading the window's query plan")?;
                let mut scanned = Vec::new();
                full_scans(&plan, &mut scanned);
                for table in scanned {
                    notes.push(crate::db::source::query_scan_note(spec, &table));
                }
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
                "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY'",
            )
            .bind(table.schema.as_ref().map(|s| s.as_str()))
            .bind(table.name.as_str())
            .fetch_all(&self.pool)
            .await
            .with_context(|| format!("reading the primary key of {table}"))?;
            hints.primary_key = (keys.len() == 1).then(|| keys[0].clone());
            indexed = indexed_first(&self.pool, table).await?;
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
        let select = |what: &str| window_select(spec, what, window, shape, shard);
        let sql = crate::db::source::counting(select, at_most);
        sqlx::query_scalar(AssertSqlSafe(sql))
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
        let mut columns = vec![spec.source.key.backticked()];
        columns.extend(spec.source.features.iter().map(|f| f.backticked()));
        let sql = window_select(spec, &columns.join(", "), window, shape, shard);
        let mut conn = self
            .pool
            .acquire()
            .await
            .context("reading the window's rows")?;
        conn.close_on_drop();
        // No wait for a lock outlasts the lease (the keeper's heartbeat keeps the claim alive
        // meanwhile): a table's metadata lock (an ALTER TABLE), or rows a query of the job's
        // locks.
        super::bound_lock_waits(&mut conn, claim)
            .await
            .context("reading the window's rows")?;
        // Tag the session, so a run that takes the job over can end it (see `claim`).
        sqlx::query("SELECT GET_LOCK(?, 0)")
            .bind(&super::claim::session_tags(&claim.claim_id)[0])
            .execute(&mut *conn)
            .await
            .context("reading the window's rows")?;
        let mut rows = sqlx::query(AssertSqlSafe(sql))
            .persistent(false)
            .fetch(&mut *conn);
        let mut chunk = ChunkBuilder::new(spec, shape);
        let mut plan: Option<Vec<Read>> = None;
        while let Some(row) = rows.try_next().await.context("reading the window's rows")? {
            // How to read each column, from the result's column types, once per window.
            let plan = plan.get_or_insert_with(|| {
                row.columns()
                    .iter()
                    .map(|c| Read::of(c.type_info().name()))
                    .collect()
            });
            decode_row(&row, plan, spec, shape, &mut chunk)?;
            if chunk.is_full() && out.send(chunk.take()).await.is_err() {
                return Ok(()); // the consumer stopped; it reports why
            }
        }
        if !chunk.is_empty() {
            let _ = out.send(chunk.take()).await;
        }
        Ok(())
    }
}

/// The columns that start an index of `table`.
async fn indexed_first(pool: &sqlx::MySqlPool, table: &TableName) -> anyhow::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.STATISTICS \
         WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND SEQ_IN_INDEX = 1",
    )
    .bind(table.schema.as_ref().map(|s| s.as_str()))
    .bind(table.name.as_str())
    .fetch_all(pool)
    .await
    .with_context(|| format!("listing the indexes of {table}"))
}

/// A column's kind from `information_schema.COLUMNS` (`tinyint(1)` is MySQL's boolean).
fn classify_declared(data_type: &str, column_type: &str) -> ColumnKind {
    match data_type.to_ascii_lowercase().as_str() {
        "tinyint" if column_type.to_ascii_lowercase().starts_with("tinyint(1)") => {
            ColumnKind::Boolean
        }
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => ColumnKind::Integer,
        "float" | "double" | "real" => ColumnKind::Real,
        "decimal" | "numeric" => ColumnKind::Numeric,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" => {
            ColumnKind::Text
        }
        "datetime" | "timestamp" => ColumnKind::Timestamp,
        _ => ColumnKind::Other(column_type.to_owned()),
    }
}

/// A column's kind from the type name sqlx reports for a result column.
fn classify_name(name: &str) -> ColumnKind {
    let base = name.trim_end_matches(" UNSIGNED");
    match base {
        "BOOLEAN" => ColumnKind::Boolean,
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" => ColumnKind::Integer,
        "FLOAT" | "DOUBLE" => ColumnKind::Real,
        "DECIMAL" => ColumnKind::Numeric,
        "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" => {
            ColumnKind::Text
        }
        "DATETIME" | "TIMESTAMP" => ColumnKind::Timestamp,
        other => ColumnKind::Other(other.to_ascii_lowercase()),
    }
}

/// The tables a plan (`EXPLAIN FORMAT=JSON`, MySQL's or MariaDB's) reads whole: by a table
/// scan (`ALL`) or a full index scan (`index`). Derived tables (`<derived2>`) are not tables.
fn full_scans(plan: &serde_json::Value, found: &mut Vec<String>) {
    match plan {
        serde_json::Value::Object(map) => {
            if let (Some(serde_json::Value::String(table)), Some(access)) =
                (map.get("table_name"), map.get("access_type"))
                && (access == "ALL" || access == "index")
                && !table.starts_with('<')
                && !found.contains(table)
            {
                found.push(table.clone());
            }
            map.values().for_each(|v| full_scans(v, found));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| full_scans(v, found)),
        _ => {}
    }
}

/// A time as a `DATETIME(6)` literal in UTC.
fn literal(t: DateTime<Utc>) -> String {
    format!("'{}'", t.format("%Y-%m-%d %H:%M:%S%.6f"))
}

/// `FROM …` of the window's SELECT: the table, or the job's query with its placeholders filled.
fn from_clause(spec: &JobSpec, start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    match &spec.source.from {
        SourceFrom::Table(table) => table.backticked(),
        SourceFrom::Query(query) => format!(
            "({}) AS batchscore_source",
            crate::source::bind_placeholders(query, &literal(start), &literal(end))
        ),
    }
}

fn window_predicate(spec: &JobSpec, start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    let ts = spec.source.timestamp.backticked();
    format!("{ts} >= {} AND {ts} < {}", literal(start), literal(end))
}

/// `SELECT columns` of the shard's rows in the window.
fn window_select(
    spec: &JobSpec,
    columns: &str,
    window: Window,
    shape: &SourceShape,
    shard: Shard,
) -> String {
    let shard = shard
        .predicate(&spec.source.key.backticked(), shape.key, &KEY_SQL)
        .map(|c| format!(" AND {c}"))
        .unwrap_or_default();
    format!(
        "SELECT {columns} FROM {} WHERE {}{shard}",
        from_clause(spec, window.start, window.end),
        window_predicate(spec, window.start, window.end)
    )
}

/// How a column of the window's result is read, by its type.
enum Read {
    Integer {
        unsigned: bool,
    },
    Float,
    /// DECIMAL, which the protocol sends as its decimal text (and sqlx has no `f64` for):
    /// parsed to the nearest double.
    Decimal,
    Text,
    /// A type no feature can take (dates, blobs, JSON...): named in the bad row's reason.
    Other(String),
}

impl Read {
    fn of(name: &str) -> Read {
        let unsigned = name.ends_with(" UNSIGNED");
        match name.trim_end_matches(" UNSIGNED") {
            "BOOLEAN" | "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => {
                Read::Integer { unsigned }
            }
            "FLOAT" | "DOUBLE" => Read::Float,
            "DECIMAL" => Read::Decimal,
            "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" => {
                Read::Text
            }
            other => Read::Other(other.to_ascii_lowercase()),
        }
    }
}

/// Decode one source row: key first, then the features, each as `plan` says.
fn decode_row(
    row: &MySqlRow,
    plan: &[Read],
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
    let unsigned = |index: usize| matches!(plan[index], Read::Integer { unsigned: true });
    match shape.key {
        KeyKind::Integer => match integer(row, 0, unsigned(0))? {
            Some(Ok(key)) => chunk.push_int_key(key),
            Some(Err(_)) => return Err(key_problem("an integer beyond 64 bits")),
            None => return Err(key_problem("NULL")),
        },
        KeyKind::Text => match row.try_get::<Option<&str>, _>(0)? {
            Some(key) => chunk.push_text_key(key),
            None => return Err(key_problem("NULL")),
        },
    }
    for feature in 0..shape.cells.len() {
        let index = feature + 1;
        match &plan[index] {
            Read::Integer { unsigned } => match integer(row, index, *unsigned)? {
                None => chunk.push(feature, Cell::Null),
                Some(Ok(v)) => chunk.push(feature, Cell::Integer(v)),
                Some(Err(raw)) => chunk.push_unreadable(
                    feature,
                    "is an integer beyond 64 bits".to_owned(),
                    raw.to_string(),
                ),
            },
            Read::Float => match row.try_get::<Option<f64>, _>(index)? {
                None => chunk.push(feature, Cell::Null),
                Some(v) => chunk.push(feature, Cell::Float(v)),
            },
            Read::Decimal => match row.try_get_unchecked::<Option<&str>, _>(index)? {
                None => chunk.push(feature, Cell::Null),
                Some(text) => match text.parse::<f64>() {
                    Ok(v) => chunk.push(feature, Cell::Float(v)),
                    Err(_) => chunk.push_unreadable(
                        feature,
                        format!("holds decimal text '{text}' that is not a number"),
                        text.to_owned(),
                    ),
                },
            },
            Read::Text => match row.try_get::<Option<&str>, _>(index)? {
                None => chunk.push(feature, Cell::Null),
                Some(text) => chunk.push(feature, Cell::Text(text.as_bytes())),
            },
            Read::Other(name) => chunk.push_unreadable(
                feature,
                format!("holds a {name} value"),
                format!("({name})"),
            ),
        }
    }
    chunk.end_row();
    Ok(())
}

/// An integer column's value: `Err` with the value when it is unsigned beyond `i64`.
fn integer(
    row: &MySqlRow,
    index: usize,
    unsigned: bool,
) -> Result<Option<Result<i64, u64>>, sqlx::Error> {
    if unsigned {
        let value: Option<u64> = row.try_get(index)?;
        return Ok(value.map(|v| i64::try_from(v).map_err(|_| v)));
    }
    Ok(row.try_get::<Option<i64>, _>(index)?.map(Ok))
}

/// A table's columns, each with its data type and its full column type, in order (none: there
/// is no such table).
pub(super) async fn declared_columns<'c>(
    executor: impl sqlx::Executor<'c, Database = sqlx::MySql>,
    table: &TableName,
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR), CAST(COLUMN_TYPE AS CHAR) \
         FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
    )
    .bind(table.schema.as_ref().map(|s| s.as_str()))
    .bind(table.name.as_str())
    .fetch_all(executor)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_map_to_kinds() {
        assert_eq!(
            classify_declared("tinyint", "tinyint(1)"),
            ColumnKind::Boolean
        );
        assert_eq!(
            classify_declared("tinyint", "tinyint(4)"),
            ColumnKind::Integer
        );
        assert_eq!(
            classify_declared("bigint", "bigint(20) unsigned"),
            ColumnKind::Integer
        );
        assert_eq!(
            classify_declared("decimal", "decimal(10,2)"),
            ColumnKind::Numeric
        );
        assert_eq!(
            classify_declared("varchar", "varchar(16)"),
            ColumnKind::Text
        );
        assert_eq!(
            classify_declared("datetime", "datetime(6)"),
            ColumnKind::Timestamp
        );
        assert_eq!(
            classify_declared("date", "date"),
            ColumnKind::Other("date".into())
        );
        assert_eq!(classify_name("BIGINT UNSIGNED"), ColumnKind::Integer);
        assert_eq!(classify_name("BOOLEAN"), ColumnKind::Boolean);
    }

    #[test]
    fn a_plan_names_the_tables_it_reads_whole() {
        let plan: serde_json::Value = serde_json::from_str(
            r#"{"query_block": {"nested_loop": [
                {"table": {"table_name": "orders", "access_type": "ALL"}},
                {"table": {"table_name": "lines", "access_type": "ref"}},
                {"table": {"table_name": "by_key", "access_type": "index"}},
                {"table": {"table_name": "<derived2>", "access_type": "ALL"}}]}}"#,
        )
        .unwrap();
        let mut found = Vec::new();
        full_scans(&plan, &mut found);
        assert_eq!(found, ["orders", "by_key"]);
    }
}
