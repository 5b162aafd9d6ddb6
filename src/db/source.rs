//! Reading a job's source: the [`SourceReader`] each database implements in its `read.rs`, and
//! what the three share about describing a source and judging what a window costs.

use std::future::Future;

use tokio::sync::mpsc;

use super::dialect::Dialect;
use crate::claim::Claim;
use crate::ident::TableName;
use crate::plan::Window;
use crate::shard::Shard;
use crate::source::{ColumnKind, SourceChunk, SourceColumns, SourceShape};
use crate::spec::JobSpec;

/// Reading a job's source, in the database's dialect: its columns, what a window costs, and the
/// window's rows.
pub(crate) trait SourceReader {
    /// The source's columns and their kinds. A source that is not there or does not run (no
    /// such table, a query with an error) is a [`ConfigError`](crate::error::ConfigError)
    /// naming the job; any other error is the database failing to answer, which a retry may fix.
    fn describe_source(
        &self,
        spec: &JobSpec,
    ) -> impl Future<Output = anyhow::Result<SourceColumns>> + Send;

    /// Whether a column of this kind can hold the times a window slices on.
    fn timestamp_ok(kind: &ColumnKind) -> bool;

    /// What `jobs validate` should say about what a window costs: a table without an index
    /// whose first column is the timestamp (with the `CREATE INDEX` to run), a query that does
    /// not take the window, timestamps the index cannot find. Empty when a window's cost follows
    /// its rows.
    fn window_notes(
        &self,
        spec: &JobSpec,
    ) -> impl Future<Output = anyhow::Result<Vec<String>>> + Send;

    /// What `jobs new` guesses a job from: the source's single-column primary key, and the
    /// columns that can hold its timestamps, in column order, each with whether an index starts
    /// with it. `columns` is the source as [`SourceReader::describe_source`] described it.
    fn source_hints(
        &self,
        spec: &JobSpec,
        columns: &SourceColumns,
    ) -> impl Future<Output = anyhow::Result<SourceHints>> + Send;

    /// How many of the shard's source rows fall in the window (for `--dry-run` and progress),
    /// or up to `at_most` of them (`Some(1)`: whether it has a row, which the index answers
    /// without counting the rest).
    fn count_window(
        &self,
        spec: &JobSpec,
        shape: &SourceShape,
        window: Window,
        shard: Shard,
        at_most: Option<u32>,
    ) -> impl Future<Output = anyhow::Result<i64>> + Send;

    /// Stream the shard's rows of the window into `out`, `spec.source.chunk_rows` at a time, for
    /// the run holding `claim` (the servers tag the session with it, so a successor can end it).
    /// The shard's condition on the key ([`Shard::predicate`]) is part of the query: a shard
    /// reads only its own rows.
    fn read_window(
        &self,
        spec: &JobSpec,
        shape: &SourceShape,
        window: Window,
        shard: Shard,
        claim: &Claim,
        out: mpsc::Sender<SourceChunk>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The SQL that counts the rows `select` (given what to select) finds, up to `at_most`.
pub(crate) fn counting(select: impl Fn(&str) -> String, at_most: Option<u32>) -> String {
    match at_most {
        None => select("count(*)"),
        Some(limit) => format!(
            "SELECT count(*) FROM ({} LIMIT {limit}) AS probe",
            select("1")
        ),
    }
}

/// What a source's catalog says that a job file needs (see [`SourceReader::source_hints`]).
#[derive(Debug, Clone, Default)]
pub struct SourceHints {
    pub primary_key: Option<String>,
    /// Columns that can hold the window's timestamps, and whether an index starts with each.
    pub times: Vec<(String, bool)>,
}

/// The configuration error of a source that is not there or does not run.
pub(crate) fn unusable(spec: &JobSpec, problem: String) -> anyhow::Error {
    crate::error::ConfigError::job(&spec.name, problem).into()
}

/// A source table described by its declared columns (none: there is no such table): a table
/// that is not there, or cannot be described, is a configuration error; the database failing to
/// answer is not.
pub(crate) fn described_table(
    spec: &JobSpec,
    table: &TableName,
    declared: Result<SourceColumns, sqlx::Error>,
    transient: fn(&sqlx::Error) -> bool,
) -> anyhow::Result<SourceColumns> {
    match declared {
        Ok(columns) if columns.is_empty() => Err(unusable(
            spec,
            format!("source table {table} does not exist"),
        )),
        Ok(columns) => Ok(columns),
        Err(e) if transient(&e) => Err(e.into()),
        Err(e) => Err(unusable(
            spec,
            format!("cannot describe source table {table}: {e}"),
        )),
    }
}

/// The columns of `sql` (a `SELECT … LIMIT 0`) as the database describes them, each kind by
/// `classify` from its type's name. The inner error is the statement's own (it does not run: a
/// configuration error, worded by the caller); the outer one, the database failing to answer.
pub(crate) async fn describe_select<DB: Dialect>(
    pool: &sqlx::Pool<DB>,
    sql: String,
    classify: fn(&str) -> ColumnKind,
    transient: fn(&sqlx::Error) -> bool,
) -> anyhow::Result<Result<SourceColumns, sqlx::Error>> {
    use sqlx::{Column, Executor, SqlSafeStr, Statement, TypeInfo};
    let sql = sqlx::AssertSqlSafe(sql).into_sql_str();
    let named = |columns: &[DB::Column]| -> SourceColumns {
        columns
            .iter()
            .map(|c| (c.name().to_owned(), classify(c.type_info().name())))
            .collect()
    };
    let described = match DB::COLUMNS_BY_PREPARE {
        true => DB::on_pool(pool)
            .prepare(sql)
            .await
            .map(|statement| named(statement.columns())),
        false => DB::on_pool(pool)
            .describe(sql)
            .await
            .map(|described| named(described.columns())),
    };
    match described {
        Ok(columns) => Ok(Ok(columns)),
        Err(e) if transient(&e) => Err(e.into()),
        Err(e) => Ok(Err(e)),
    }
}

/// The time columns among a source's `columns`, each with whether an index starts with it
/// (`indexed`): what `jobs new` picks a job's timestamp from (see [`SourceHints::times`]).
pub(crate) fn indexed_times(
    columns: &[(String, ColumnKind)],
    indexed: &[String],
) -> Vec<(String, bool)> {
    columns
        .iter()
        .filter(|(_, kind)| *kind == ColumnKind::Timestamp)
        .map(|(name, _)| (name.clone(), indexed.contains(name)))
        .collect()
}

/// The note for a `source.query` whose window, as the database plans it, reads all of `table`.
pub(crate) fn query_scan_note(spec: &JobSpec, table: &str) -> String {
    format!(
        "source.query reads all of {table} for every window, whatever the window's size: index the \
         column it takes {ts} from, or push the window into the query (`WHERE … >= :window_start \
         AND … < :window_end` on an indexed column)",
        ts = spec.source.timestamp
    )
}

/// The note for a source table without an index on its timestamp column.
pub(crate) fn missing_index_note(table: &TableName, timestamp: &str, create: &str) -> String {
    format!(
        "{table} has no index whose first column is {timestamp}: every window reads the whole \
         table, so runs slow down as it grows. Create one: {create}"
    )
}
