//! Reading a SQLite source: describing it, counting and streaming a window's rows.
//!
//! SQLite types are per value, not per column, so times are accepted in every form people
//! store them in (ISO-8601 text with `T` or space, with or without `Z` or an offset, or integer
//! unix seconds), and each feature value is checked as it is read.

use anyhow::Context;
use rusqlite::types::ValueRef;
use sqlx::{AssertSqlSafe, Row};
use tokio::sync::mpsc;

use super::SqliteBackend;
use super::direct::{on_this_thread, with_direct};
use super::window;
use crate::claim::Claim;
use crate::db::source::{self, SourceHints, SourceReader};
use crate::ident::TableName;
use crate::plan::Window;
use crate::shard::{KeySql, Shard, text_hash};
use crate::source::{
    Cell, CellType, ChunkBuilder, ColumnKind, KeyKind, SourceChunk, SourceColumns, SourceShape,
};
use crate::spec::{JobSpec, SourceFrom};

impl SourceReader for SqliteBackend {
    async fn describe_source(&self, spec: &JobSpec) -> anyhow::Result<SourceColumns> {
        match &spec.source.from {
            SourceFrom::Table(table) => {
                let declared = declared_columns(&self.pool, table).await.map(|rows| {
                    rows.into_iter()
                        .map(|(name, ty)| (name, classify(&ty)))
                        .collect()
                });
                source::described_table(spec, table, declared, super::is_transient)
            }
            SourceFrom::Query(_) => {
                let sql = format!("SELECT * FROM {} LIMIT 0", from_clause(spec));
                source::describe_select(&self.pool, sql, classify, super::is_transient)
                    .await?
                    .map_err(|e| source::unusable(spec, format!("source.query does not run: {e}")))
            }
        }
    }

    fn timestamp_ok(kind: &ColumnKind) -> bool {
        !matches!(kind, ColumnKind::Boolean | ColumnKind::Other(_))
    }

    async fn window_notes(&self, spec: &JobSpec) -> anyhow::Result<Vec<String>> {
        let ts = &spec.source.timestamp;
        let mut notes = Vec::new();
        if let SourceFrom::Query(_) = &spec.source.from {
            // SQLite flattens most queries into the window's SELECT: ask how it would read one.
            let sql = format!(
                "EXPLAIN QUERY PLAN SELECT * FROM {} WHERE {}",
                from_clause(spec),
                window_predicate(spec)
            );
            let now = chrono::Utc::now();
            let arguments = window::arguments(now - chrono::TimeDelta::hours(1), now)?;
            let steps = sqlx::query_with(AssertSqlSafe(sql), arguments)
                .fetch_all(&self.pool)
                .await
                .context("planning the window's query")?;
            for step in steps {
                let detail: String = step.try_get("detail")?;
                // "SCAN orders", but not "SCAN orders USING INDEX …" (an index walked whole is
                // still bounded by it) nor the scan of a subquery's result.
                if let Some(table) = detail.strip_prefix("SCAN ")
                    && !detail.contains("USING")
                    && !table.starts_with('(')
                {
                    notes.push(crate::db::source::query_scan_note(spec, table));
                }
            }
        }
        if let SourceFrom::Table(table) = &spec.source.from {
            let schema = table.schema.as_ref().map_or("main", |s| s.as_str());
            let indexed: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pragma_index_list(?1, ?2) AS l \
                 WHERE NOT l.partial AND (SELECT i.name FROM pragma_index_info(l.name, ?2) AS i \
                 WHERE i.seqno = 0) = ?3)",
            )
            .bind(table.name.as_str())
            .bind(schema)
            .bind(ts.as_str())
            .fetch_one(&self.pool)
            .await
            .with_context(|| format!("listing the indexes of {table}"))?;
            if !indexed {
                let index = format!("{}_{}", table.name, ts);
                let index = match &table.schema {
                    Some(schema) => format!("{}.\"{index}\"", schema.quoted()),
                    None => format!("\"{index}\""),
                };
                let create = format!(
                    "CREATE INDEX {index} ON {} ({});",
                    table.name.quoted(),
                    ts.quoted()
                );
                notes.push(crate::db::source::missing_index_note(
                    table,
                    ts.as_str(),
                    &create,
                ));
            }
        }
        // Values the window's index ranges cannot find (a form other than ISO-8601 with minutes,
        // or unix seconds): such rows are in no window.
        let sql = window::unsupported_forms(&ts.quoted(), &from_clause(spec));
        let (count, example): (i64, Option<String>) = sqlx::query_as(AssertSqlSafe(sql))
            .bind(-1e15)
            .bind(1e15)
            .fetch_one(&self.pool)
            .await
            .with_context(|| format!("checking the forms of {ts}"))?;
        if count > 0 {
            notes.push(format!(
                "{count} value(s) of {ts} are text in no supported form (for example {:?}): rows \
                 with such times are in no window and never scored. Store ISO-8601 \
                 (`2026-11-24T10:00:00Z`, `T` or space, optional seconds, fraction and `Z` or \
                 offset) or unix seconds",
                example.unwrap_or_default()
            ));
        }
        Ok(notes)
    }

    async fn source_hints(
        &self,
        spec: &JobSpec,
        columns: &SourceColumns,
    ) -> anyhow::Result<SourceHints> {
        let mut hints = SourceHints::default();
        let mut indexed = Vec::new();
        if let SourceFrom::Table(table) = &spec.source.from {
            let schema = table.schema.as_ref().map_or("main", |s| s.as_str());
            let keys: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM pragma_table_info(?1, ?2) WHERE pk > 0 ORDER BY pk",
            )
            .bind(table.name.as_str())
            .bind(schema)
            .fetch_all(&self.pool)
            .await
            .with_context(|| format!("reading the primary key of {table}"))?;
            hints.primary_key = (keys.len() == 1).then(|| keys[0].clone());
            indexed = sqlx::query_scalar::<_, Option<String>>(
                "SELECT (SELECT i.name FROM pragma_index_info(l.name, ?2) AS i WHERE i.seqno = 0) \
                 FROM pragma_index_list(?1, ?2) AS l WHERE NOT l.partial",
            )
            .bind(table.name.as_str())
            .bind(schema)
            .fetch_all(&self.pool)
            .await
            .with_context(|| format!("listing the indexes of {table}"))?
            .into_iter()
            .flatten()
            .collect();
        }
        // SQLite keeps times as text (or numbers): a text column is a time column when the
        // values it holds are times, as far as a sample shows.
        for (name, kind) in columns {
            let time = match kind {
                ColumnKind::Timestamp => true,
                ColumnKind::Text | ColumnKind::Dynamic => {
                    let column = crate::ident::Ident::parse(name).map(|c| c.quoted());
                    let Ok(column) = column else { continue };
                    let sql = format!(
                        "SELECT count(v), count(unixepoch(v)) FROM (SELECT {column} AS v FROM {} LIMIT 100)",
                        from_clause(spec)
                    );
                    let mut sample = sqlx::query_as::<_, (i64, i64)>(AssertSqlSafe(sql));
                    if let SourceFrom::Query(_) = &spec.source.from {
                        sample = sample.bind(0.0).bind(1e15); // a window over all time
                    }
                    let (values, times) = sample
                        .fetch_one(&self.pool)
                        .await
                        .with_context(|| format!("sampling column {name}"))?;
                    values > 0 && values == times
                }
                _ => false,
            };
            if time {
                hints.times.push((name.clone(), indexed.contains(name)));
            }
        }
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
        let (from, predicate) = (from_clause(spec), rows_predicate(spec, shape, shard));
        let select = |what: &str| format!("SELECT {what} FROM {from} WHERE {predicate}");
        let sql = crate::db::source::counting(select, at_most);
        let arguments = window::arguments(window.start, window.end)?;
        sqlx::query_scalar_with(AssertSqlSafe(sql), arguments)
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
        // On one machine, a successor does not end a frozen holder's sessions: the fencing
        // check keeps it from committing.
        _claim: &Claim,
        out: mpsc::Sender<SourceChunk>,
    ) -> anyhow::Result<()> {
        let mut columns = vec![spec.source.key.quoted()];
        columns.extend(spec.source.features.iter().map(|f| f.quoted()));
        let sql = format!(
            "SELECT {} FROM {} WHERE {}",
            columns.join(", "),
            from_clause(spec),
            rows_predicate(spec, shape, shard)
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
                for (i, bound) in window::bounds(window.start, window.end).iter().enumerate() {
                    select.raw_bind_parameter(i + 1, bound)?;
                }
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

/// `FROM …` of the window's SELECT; the user's query has its placeholders bound as ?1 and ?2
/// (the window in unix seconds).
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
    window::predicate(&spec.source.timestamp.quoted())
}

/// The window's predicate, and the shard's condition on the key when the job is sharded. The
/// text hash is the function [`register_functions`] adds to every connection.
fn rows_predicate(spec: &JobSpec, shape: &SourceShape, shard: Shard) -> String {
    let window = window_predicate(spec);
    let key_sql = KeySql {
        integer: |key| format!("CAST({key} AS BIGINT)"),
        text_hash: |key| format!("{TEXT_HASH}(CAST({key} AS TEXT))"),
    };
    match shard.predicate(&spec.source.key.quoted(), shape.key, &key_sql) {
        Some(shard) => format!("{window} AND {shard}"),
        None => window,
    }
}

/// The SQL name of [`crate::shard::text_hash`] on batchscore's SQLite connections.
const TEXT_HASH: &str = "batchscore_text_hash";

/// Add batchscore's SQL functions to a connection: [`TEXT_HASH`], which SQLite has no built-in
/// for (PostgreSQL computes the same value with `md5()`).
pub(super) fn register_functions(db: &rusqlite::Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    use rusqlite::types::ValueRef;
    db.create_scalar_function(
        TEXT_HASH,
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            Ok(match ctx.get_raw(0) {
                ValueRef::Null => None,
                ValueRef::Text(bytes) | ValueRef::Blob(bytes) => Some(text_hash(bytes)),
                ValueRef::Integer(i) => Some(text_hash(i.to_string().as_bytes())),
                ValueRef::Real(r) => Some(text_hash(r.to_string().as_bytes())),
            })
        },
    )
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

/// A table's columns and their declared types, in order (none: there is no such table).
pub(super) async fn declared_columns<'c>(
    executor: impl sqlx::Executor<'c, Database = sqlx::Sqlite>,
    table: &TableName,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let schema = table.schema.as_ref().map_or("main", |s| s.as_str());
    sqlx::query_as("SELECT name, type FROM pragma_table_info(?1, ?2)")
        .bind(table.name.as_str())
        .bind(schema)
        .fetch_all(executor)
        .await
}

/// [`crate::db::Backend::stream_fields`] on SQLite: the statement stepped on this thread (the
/// runtime's other tasks move elsewhere), each value borrowed from SQLite, never copied.
pub(super) async fn stream_fields(
    pool: &sqlx::SqlitePool,
    sql: String,
    params: Vec<crate::db::dialect::Param>,
    kinds: &[crate::db::FieldKind],
    each: &mut (dyn FnMut(&[crate::db::Field<'_>]) -> anyhow::Result<()> + Send),
) -> anyhow::Result<()> {
    use crate::db::dialect::Param;
    use crate::db::{Field, FieldKind};
    let mut conn = pool.acquire().await?;
    let mut locked = conn.lock_handle().await?;
    on_this_thread(|| {
        with_direct(&mut locked, |db| {
            let mut select = db.prepare(&sql)?;
            for (i, param) in params.into_iter().enumerate() {
                let at = select
                    .parameter_index(&format!("${}", i + 1))?
                    .with_context(|| format!("no parameter ${} in the statement", i + 1))?;
                match param {
                    Param::Text(text) => select.raw_bind_parameter(at, text)?,
                    Param::Int(value) => select.raw_bind_parameter(at, value)?,
                    Param::Float(value) => select.raw_bind_parameter(at, value)?,
                    Param::Time(time) => {
                        select.raw_bind_parameter(at, time.map(super::dialect::to_text))?
                    }
                    Param::Seconds(seconds) => select.raw_bind_parameter(at, seconds)?,
                    Param::Bytes(bytes) => select.raw_bind_parameter(at, bytes)?,
                }
            }
            let mut rows = select.raw_query();
            while let Some(row) = rows.next()? {
                let mut fields = [Field::Null; crate::db::MAX_FIELDS];
                for (i, kind) in kinds.iter().enumerate() {
                    let value = row.get_ref(i)?;
                    fields[i] = match (kind, value) {
                        (_, ValueRef::Null) => Field::Null,
                        (FieldKind::Int, ValueRef::Integer(v)) => Field::Int(v),
                        (FieldKind::Float, ValueRef::Integer(v)) => Field::Float(v as f64),
                        (FieldKind::Float, ValueRef::Real(v)) => Field::Float(v),
                        (FieldKind::Text, ValueRef::Text(text)) => {
                            Field::Text(std::str::from_utf8(text)?)
                        }
                        (kind, value) => {
                            anyhow::bail!("column {i} holds {:?}, not {kind:?}", value.data_type())
                        }
                    };
                }
                each(&fields[..kinds.len()])?;
            }
            Ok(())
        })
    })
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
