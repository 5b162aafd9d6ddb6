//! What batchscore's own tables need from a SQL dialect, so their SQL is written once
//! ([`super::ledger`], [`super::claim_store`], [`super::profiles`], [`mod@super::migrate`]) for every backend.
//!
//! The statements use `$1`, `$2`… placeholders (PostgreSQL's, which SQLite reads as the same
//! numbered parameters), bind [`Param`]s that each dialect encodes as it stores that type, and
//! read rows through the dialect's accessors: times are `timestamptz` on PostgreSQL and
//! fixed-width RFC 3339 text on SQLite, where text order is time order.

use std::future::Future;

use chrono::{DateTime, Utc};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Executor, IntoArguments};

use super::migrate::SchemaSession;
use crate::ident::{Ident, TableName};

/// A statement parameter, encoded by each dialect in its own types.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Text(Option<String>),
    Int(Option<i64>),
    Time(Option<DateTime<Utc>>),
    /// A length of time in seconds, for [`Dialect::later`].
    Seconds(f64),
    Bytes(Vec<u8>),
    Float(Option<f64>),
}

impl From<&str> for Param {
    fn from(text: &str) -> Param {
        Param::Text(Some(text.to_owned()))
    }
}

impl From<&String> for Param {
    fn from(text: &String) -> Param {
        Param::Text(Some(text.clone()))
    }
}

impl From<Option<&str>> for Param {
    fn from(text: Option<&str>) -> Param {
        Param::Text(text.map(str::to_owned))
    }
}

impl From<&Option<String>> for Param {
    fn from(text: &Option<String>) -> Param {
        Param::Text(text.clone())
    }
}

impl From<i64> for Param {
    fn from(value: i64) -> Param {
        Param::Int(Some(value))
    }
}

impl From<u32> for Param {
    fn from(value: u32) -> Param {
        Param::Int(Some(i64::from(value)))
    }
}

impl From<Option<f64>> for Param {
    fn from(value: Option<f64>) -> Param {
        Param::Float(value)
    }
}

impl From<DateTime<Utc>> for Param {
    fn from(time: DateTime<Utc>) -> Param {
        Param::Time(Some(time))
    }
}

impl From<Option<DateTime<Utc>>> for Param {
    fn from(time: Option<DateTime<Utc>>) -> Param {
        Param::Time(time)
    }
}

/// What an upsert sets in a row whose key already exists.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Set<'a> {
    /// The column takes the value the insert would have written.
    Inserted(&'a str),
    /// The column takes this SQL expression (a literal, [`Dialect::NOW`]).
    To(&'a str, &'a str),
}

/// The dialect of one database, as batchscore's own tables use it.
pub(crate) trait Dialect:
    sqlx::Database<
        Arguments: IntoArguments<Self> + Send,
        Row: Send,
        QueryResult: Send,
        Connection: sqlx::migrate::Migrate,
    >
{
    /// The current time by the database's clock, as its times are stored.
    const NOW: &'static str;

    /// Whether a statement's columns are learnt by preparing it rather than by sqlx's
    /// `describe`, which on PostgreSQL adds catalog queries (and an `EXPLAIN`) to infer each
    /// column's nullability, which batchscore does not use: a few milliseconds of every run.
    /// SQLite's `describe` is what infers the types of a query's computed columns.
    const COLUMNS_BY_PREPARE: bool = false;

    /// Whether a label column of an integer type can cross as a 64-bit integer and be judged as
    /// its text would be (PostgreSQL). A SQLite column takes a value of any type; a MySQL
    /// `BIGINT UNSIGNED` can exceed a signed 64-bit integer, and a `ZEROFILL` column's text is
    /// `00001`: both stay text.
    const INTEGER_LABELS: bool = false;

    /// Whether `evaluate` reads every window and every label in one `FULL JOIN`, counting the
    /// labels of keys never scored on the way, rather than counting them after the join.
    /// PostgreSQL's hash join does it at no cost; SQLite's `FULL JOIN` reads the labels a second
    /// time (slower than counting), and MySQL and MariaDB have none.
    const FULL_JOIN: bool = false;

    /// Whether a join may return the results table's rows far from the order they were written
    /// in (PostgreSQL's hash join, in batches once the hash outgrows `work_mem`), so that a read
    /// of more rows than an evaluation holds asks for them in window order instead.
    const JOIN_REORDERS: bool = false;

    /// [`Dialect::NOW`] plus the seconds in `param` (a [`Param::Seconds`]).
    fn later(param: &str) -> String;

    /// A time column of an application's table (`expr`) as seconds since the epoch, a double:
    /// what orders its values as times, whatever form they are kept in.
    fn epoch(expr: &str) -> String;

    /// The type a `CAST` to a 64-bit integer names.
    const BIGINT: &'static str = "BIGINT";
    /// The type a `CAST` to a double-precision float names.
    const DOUBLE: &'static str = "DOUBLE PRECISION";
    /// The type a `CAST` to text names.
    const TEXT: &'static str = "TEXT";

    /// A job's table (the results, the challenger's) as it goes into SQL text: `"…"` quoting.
    fn table(name: &TableName) -> String {
        name.quoted()
    }

    /// A job's column as it goes into SQL text.
    fn column(name: &Ident) -> String {
        name.quoted()
    }

    /// `INSERT INTO table (columns) VALUES (values)`; where a row with the same `key` (its
    /// columns, comma-separated) exists, `set` its columns instead, only where `only_if` holds
    /// of the existing row; with nothing to set, leave it. The statement's row count says whether
    /// a row was written. This is the standard form (`ON CONFLICT`, PostgreSQL's and SQLite's).
    fn upsert(
        table: &str,
        columns: &[&str],
        values: &[String],
        key: &str,
        set: &[Set<'_>],
        only_if: Option<&str>,
    ) -> String {
        let insert = format!(
            "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT ({key})",
            columns.join(", "),
            values.join(", ")
        );
        if set.is_empty() {
            return format!("{insert} DO NOTHING");
        }
        let set: Vec<String> = set
            .iter()
            .map(|s| match s {
                Set::Inserted(column) => format!("{column} = excluded.{column}"),
                Set::To(column, value) => format!("{column} = {value}"),
            })
            .collect();
        let condition = only_if.map(|c| format!(" WHERE {c}")).unwrap_or_default();
        format!("{insert} DO UPDATE SET {}{condition}", set.join(", "))
    }

    /// `DELETE` at most `limit` rows of `table` where `condition` holds: one short statement of
    /// a longer deletion. `key` names the table's primary key (a column, or several
    /// comma-separated), by which the standard form picks the rows.
    fn delete_some(table: &str, key: &str, condition: &str, limit: usize) -> String {
        format!(
            "DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} WHERE {condition} LIMIT {limit})"
        )
    }

    /// The statement and its parameters as this database takes them. The shared SQL numbers its
    /// placeholders (`$1`, reused where a value appears twice), which PostgreSQL and SQLite read
    /// as they are.
    fn placeholders(sql: String, params: Vec<Param>) -> (String, Vec<Param>) {
        (sql, params)
    }

    /// Bind one parameter.
    fn bind(
        query: Query<'static, Self, Self::Arguments>,
        param: Param,
    ) -> Query<'static, Self, Self::Arguments>;

    fn rows_affected(done: &Self::QueryResult) -> u64;

    fn text(row: &Self::Row, column: &str) -> Result<Option<String>, sqlx::Error>;
    fn int(row: &Self::Row, column: &str) -> Result<Option<i64>, sqlx::Error>;
    fn flag(row: &Self::Row, column: &str) -> Result<bool, sqlx::Error>;
    fn bytes(row: &Self::Row, column: &str) -> Result<Vec<u8>, sqlx::Error>;
    fn float(row: &Self::Row, column: &str) -> Result<Option<f64>, sqlx::Error>;
    fn time(row: &Self::Row, column: &str) -> anyhow::Result<Option<DateTime<Utc>>>;

    /// Whether `err` says a table does not exist.
    fn is_undefined_table(err: &sqlx::Error) -> bool;

    /// The pool as an executor (each statement on a pooled connection).
    fn on_pool<'p>(pool: &'p sqlx::Pool<Self>) -> impl Executor<'p, Database = Self> + 'p;

    /// A connection, or an open transaction's, as an executor.
    fn on_conn<'c>(conn: &'c mut Self::Connection) -> impl Executor<'c, Database = Self> + 'c;

    /// Take the lock under which batchscore's schema is checked and migrated, one process at a
    /// time (see [`mod@super::migrate`]); waits while another process holds it.
    fn lock_schema(
        pool: &sqlx::Pool<Self>,
    ) -> impl Future<Output = Result<SchemaSession<Self>, sqlx::Error>> + Send;
}

/// `sql` with `params` bound.
fn prepare<DB: Dialect>(sql: String, params: Vec<Param>) -> Query<'static, DB, DB::Arguments> {
    let (sql, params) = DB::placeholders(sql, params);
    params
        .into_iter()
        .fold(sqlx::query(AssertSqlSafe(sql)), DB::bind)
}

/// Run a statement; how many rows it changed.
pub(crate) async fn execute<'c, DB: Dialect>(
    executor: impl Executor<'c, Database = DB>,
    sql: String,
    params: Vec<Param>,
) -> Result<u64, sqlx::Error> {
    let done = prepare::<DB>(sql, params).execute(executor).await?;
    Ok(DB::rows_affected(&done))
}

pub(crate) async fn fetch_optional<'c, DB: Dialect>(
    executor: impl Executor<'c, Database = DB>,
    sql: String,
    params: Vec<Param>,
) -> Result<Option<DB::Row>, sqlx::Error> {
    prepare::<DB>(sql, params).fetch_optional(executor).await
}

/// The rows of a statement as they arrive, without holding them all.
pub(crate) fn stream<'e, 'c: 'e, DB: Dialect>(
    executor: impl Executor<'c, Database = DB> + 'e,
    sql: String,
    params: Vec<Param>,
) -> futures_util::stream::BoxStream<'e, Result<DB::Row, sqlx::Error>> {
    prepare::<DB>(sql, params).fetch(executor)
}

/// [`super::Backend::stream_fields`] through sqlx: each row's columns `c0`, `c1`, … read as
/// `kinds` say, by the dialect's accessors.
pub(crate) async fn stream_fields<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    sql: String,
    params: Vec<Param>,
    kinds: &[super::FieldKind],
    each: &mut (dyn FnMut(&[super::Field<'_>]) -> anyhow::Result<()> + Send),
) -> anyhow::Result<()> {
    use super::{Field, FieldKind};
    use futures_util::TryStreamExt;
    let names: Vec<String> = (0..kinds.len()).map(|i| format!("c{i}")).collect();
    let mut rows = stream(DB::on_pool(pool), sql, params);
    let mut texts: Vec<Option<String>> = vec![None; kinds.len()];
    while let Some(row) = rows.try_next().await? {
        for (i, kind) in kinds.iter().enumerate() {
            if *kind == FieldKind::Text {
                texts[i] = DB::text(&row, &names[i])?;
            }
        }
        let mut cells = [Field::Null; super::MAX_FIELDS];
        for (i, kind) in kinds.iter().enumerate() {
            cells[i] = match kind {
                FieldKind::Int => DB::int(&row, &names[i])?.map_or(Field::Null, Field::Int),
                FieldKind::Float => DB::float(&row, &names[i])?.map_or(Field::Null, Field::Float),
                FieldKind::Text => texts[i].as_deref().map_or(Field::Null, Field::Text),
            };
        }
        each(&cells[..kinds.len()])?;
    }
    Ok(())
}

pub(crate) async fn fetch_all<'c, DB: Dialect>(
    executor: impl Executor<'c, Database = DB>,
    sql: String,
    params: Vec<Param>,
) -> Result<Vec<DB::Row>, sqlx::Error> {
    prepare::<DB>(sql, params).fetch_all(executor).await
}

/// `$first`, `$first + 1`, … for `count` parameters.
pub(crate) fn placeholders(first: usize, count: usize) -> Vec<String> {
    (first..first + count).map(|i| format!("${i}")).collect()
}

/// A column that must not be NULL.
pub(crate) fn required<T>(value: Option<T>, column: &str) -> anyhow::Result<T> {
    value.ok_or_else(|| anyhow::anyhow!("column {column} is NULL"))
}
