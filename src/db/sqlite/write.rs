//! Writing a SQLite window: the [`WindowTx`] (results, quarantine, ledger row, watermark and
//! fencing check in one `BEGIN IMMEDIATE` transaction).

use anyhow::Context;
use sqlx::sqlite::SqliteArguments;
use sqlx::{AssertSqlSafe, Sqlite, Transaction};

use super::SqliteBackend;
use super::dialect::to_text;
use super::direct::{on_this_thread, with_direct};
use crate::bad_row::BadRow;
use crate::claim::Claim;
use crate::db::{ResultsSink, WindowTx};
use crate::ident::TableName;
use crate::shard::Shard;
use crate::sink::{
    ResultColumn, ResultType, ResultsTable, RunStamp, ScoredChunk, StampValue, Written,
};
use crate::source::KeyKind;
use crate::spec::MetaKind;

/// Rows per multi-row INSERT into the quarantine: enough to amortise each statement, few enough
/// to keep it cheap to prepare once and reuse from the statement cache.
const ROWS_PER_INSERT: usize = 500;

/// A SQLite window's transaction, holding the database's write lock until it ends.
pub struct SqliteTx(pub(super) Transaction<'static, Sqlite>);

impl ResultsSink for SqliteBackend {
    type Tx = SqliteTx;

    async fn begin(&self, _claim: &Claim) -> anyhow::Result<SqliteTx> {
        // No server to end a frozen run's transaction: the write lock it holds keeps every other
        // writer out (they give up after the busy timeout), and it commits nothing once
        // superseded (the fencing check).
        // IMMEDIATE takes the write lock up front, so the run waits for it (busy_timeout) rather
        // than failing halfway when upgrading a read transaction.
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context("opening the window's transaction")?;
        Ok(SqliteTx(tx))
    }

    async fn table_columns(
        &self,
        table: &TableName,
    ) -> anyhow::Result<Option<Vec<(String, String)>>> {
        let names = super::read::declared_columns(&self.pool, table)
            .await
            .with_context(|| format!("describing results table {table}"))?;
        Ok((!names.is_empty()).then_some(names))
    }
}

fn sqlite_type(result: ResultType) -> &'static str {
    match result {
        ResultType::Float => "REAL",
        ResultType::Integer | ResultType::Boolean => "INTEGER",
        ResultType::Text => "TEXT",
    }
}

impl WindowTx for SqliteTx {
    type Db = Sqlite;

    fn tx(&mut self) -> &mut Transaction<'static, Sqlite> {
        &mut self.0
    }

    fn into_tx(self) -> Transaction<'static, Sqlite> {
        self.0
    }

    fn results_columns(table: &ResultsTable) -> Vec<String> {
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
        // Times as fixed-width RFC 3339 text, like batchscore's own tables.
        columns.extend(table.lineage.columns().iter().map(|(name, kind)| {
            let ty = match kind {
                MetaKind::Integer => "INTEGER",
                MetaKind::Text | MetaKind::Time => "TEXT",
            };
            format!("\"{name}\" {ty} NOT NULL")
        }));
        columns
    }

    /// SQLite names an attached database's index, not its table, by the schema.
    fn expiry_index(table: &ResultsTable) -> String {
        let column = table.expiry_column();
        let schema = table
            .table
            .schema
            .as_ref()
            .map(|s| format!("{}.", s.quoted()))
            .unwrap_or_default();
        format!(
            "CREATE INDEX IF NOT EXISTS {schema}\"{}_{column}\" ON {} (\"{column}\")",
            table.table.name.as_str(),
            table.table.name.quoted()
        )
    }

    /// SQLite stores any value in any column (its declared type only suggests an affinity).
    fn holds(_declared: &str, _value: Written) -> bool {
        true
    }

    /// The window holds the database's write lock (`BEGIN IMMEDIATE`): no other connection
    /// changes a schema until it ends.
    async fn pin_results_table(
        &mut self,
        table: &TableName,
    ) -> anyhow::Result<Option<Vec<(String, String)>>> {
        let columns = super::read::declared_columns(&mut *self.0, table)
            .await
            .with_context(|| format!("describing results table {table}"))?;
        Ok((!columns.is_empty()).then_some(columns))
    }

    async fn upsert_results(
        &mut self,
        table: &ResultsTable,
        stamp: &RunStamp,
        chunk: &ScoredChunk,
        _shard: Shard,
    ) -> anyhow::Result<()> {
        let columns = chunk.typed_columns()?;
        let sql = upsert_sql(table, columns.len());
        let stamp_values: Vec<rusqlite::types::Value> = stamp
            .values(table.lineage)
            .into_iter()
            .map(|value| match value {
                StampValue::Text(text) => text.to_owned().into(),
                StampValue::Time(time) => to_text(time).into(),
                StampValue::Integer(number) => number.into(),
            })
            .collect();
        let mut locked = self
            .0
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
                    insert.raw_bind_parameter(columns.len() + 1 + i, value)?;
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

    async fn quarantine(
        &mut self,
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
                .execute(&mut *self.0)
                .await
                .context("writing to batchscore_quarantine")?;
        }
        Ok(())
    }

    async fn release_quarantined(&mut self, job: &str, keys: Vec<String>) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM batchscore_quarantine WHERE job = ?1 AND key IN (SELECT value FROM json_each(?2))")
            .bind(job)
            .bind(serde_json::to_string(&keys)?)
            .execute(&mut *self.0)
            .await
            .context("releasing scored rows from batchscore_quarantine")?;
        Ok(())
    }
}

/// `INSERT … VALUES (?1, …) ON CONFLICT (key) DO UPDATE …` for one row of `per_row` values
/// and the stamp's.
fn upsert_sql(table: &ResultsTable, per_row: usize) -> String {
    let quoted = table.quoted_column_names();
    let placeholders: Vec<String> = (1..=per_row + table.lineage.columns().len())
        .map(|i| format!("?{i}"))
        .collect();
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
